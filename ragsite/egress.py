"""A process-wide guard that refuses outbound connections to anything but loopback and Unix
sockets, and the allow-list check for the LLM and embedding endpoints we may talk to.

The test suite installs the guard in every process it starts (pytest, the Celery worker, the web
server), so a library that phones home or downloads at run time fails the build. A child process
installs it through ragsite/offline.py when RAG_EGRESS_GUARD=1; with RAG_EGRESS_LOG set, every
refusal is also appended to that file, so a refusal a library swallowed in a child is still seen.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from urllib.parse import urlsplit

_installed = False
violations: list[str] = []

# Set in the environment by tests/egress_guard.py; inherited by every child process.
LOG_ENV = "RAG_EGRESS_LOG"


class EgressBlocked(ConnectionRefusedError):
    pass


def is_loopback(host: str) -> bool:
    """True for names and addresses that cannot leave this machine."""
    host = host.strip().strip("[]").rstrip(".").lower()
    if host in {"localhost", ""} or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False  # a name: it would be resolved and connected to elsewhere
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback, ::ffff:8.8.8.8 is not
    return address.is_loopback


def _refuse(message: str) -> None:
    violations.append(message)
    log = os.environ.get(LOG_ENV)
    if log:
        try:
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(f"{os.getpid()} {message}\n")
        except OSError:
            pass  # the in-process list and the raised error still report it
    raise EgressBlocked(message)


def _check(sock: socket.socket, address) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # Unix sockets (the embedded PostgreSQL) stay local by construction
    host = address[0] if isinstance(address, tuple) else str(address)
    if not is_loopback(str(host)):
        _refuse(f"outbound connection to {address!r} refused by the egress guard")


def install() -> None:
    """Patch socket connects, datagram sends and name lookups of non-local names in this process."""
    global _installed
    if _installed:
        return
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex
    original_sendto = socket.socket.sendto
    original_getaddrinfo = socket.getaddrinfo

    def connect(self, address):
        _check(self, address)
        return original_connect(self, address)

    def connect_ex(self, address):
        _check(self, address)
        return original_connect_ex(self, address)

    def sendto(self, data, *args):
        # UDP needs no connect: sendto(data, address) or sendto(data, flags, address).
        if args:
            _check(self, args[-1])
        return original_sendto(self, data, *args)

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and not is_loopback(str(name)) and not _is_ip(str(name)):
            _refuse(f"name lookup of {name!r} refused by the egress guard")
        return original_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.socket.sendto = sendto
    socket.getaddrinfo = getaddrinfo
    _installed = True


def is_installed() -> bool:
    return _installed


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]").split("%")[0])
        return True
    except ValueError:
        return False


def endpoint_allowed(url: str, allowed_hosts: list[str]) -> bool:
    """Whether an HTTP(S) endpoint URL points at loopback or at a host on the allow-list.

    Allow-list entries are host names ("llm.internal"), host:port ("llm.internal:8000"), domain
    suffixes (".internal" or "*.internal": any host under it), IP addresses or networks in CIDR
    notation ("10.0.0.0/8"). Matching is case-insensitive and on the host the URL really
    connects to ("https://llm.internal@evil.example" is evil.example). Anything else is refused,
    as is a URL that is not http(s) or has no host.
    """
    if not url or not url.strip():
        return False
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return False  # a malformed port or bracket: refuse rather than guess
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
        return False
    host = parts.hostname.rstrip(".").lower()
    if is_loopback(host):
        return True
    port = port or (443 if parts.scheme.lower() == "https" else 80)
    return any(_host_matches(host, port, entry) for entry in allowed_hosts)


def _host_matches(host: str, port: int, entry: str) -> bool:
    entry = entry.strip().lower()
    if not entry:
        return False
    if "/" in entry:  # a network
        try:
            network = ipaddress.ip_network(entry, strict=False)
            return _is_ip(host) and ipaddress.ip_address(host) in network
        except ValueError:
            return False
    entry_port: int | None = None
    if entry.startswith("["):  # [v6]:port
        address, _, rest = entry[1:].partition("]")
        entry, entry_port = address, int(rest[1:]) if rest.startswith(":") else None
    elif entry.count(":") == 1:
        name, _, number = entry.partition(":")
        if not number.isdigit():
            return False
        entry, entry_port = name, int(number)
    if entry_port is not None and entry_port != port:
        return False
    entry = entry.rstrip(".")
    if entry.startswith("*."):
        entry = entry[1:]
    if entry.startswith("."):
        return host.endswith(entry) and host != entry.lstrip(".")
    if _is_ip(entry) and _is_ip(host):
        return ipaddress.ip_address(entry) == ipaddress.ip_address(host)
    return host == entry
