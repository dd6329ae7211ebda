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

# Every library we use switched to offline, telemetry-free mode: ragsite/offline.py sets these in
# every process before anything else is imported; privacy_check reports them.
OFFLINE_ENV = {
    # unstructured pings a remote analytics endpoint at import unless one of these is set.
    "DO_NOT_TRACK": "1",
    "SCARF_NO_ANALYTICS": "true",
    "UNSTRUCTURED_DISABLE_NOTICE": "1",
    # Hugging Face libraries: never reach the hub, never report usage.
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TOKENIZERS_PARALLELISM": "false",
}

_installed = False
violations: list[str] = []

# Set in the environment by tests/egress_guard.py; inherited by every child process.
LOG_ENV = "RAG_EGRESS_LOG"


class EgressBlocked(ConnectionRefusedError):
    pass


def is_loopback(host: str) -> bool:
    """True for "localhost" and loopback addresses: what cannot leave this machine without a name
    lookup. Other names ("llm.localhost" included: /etc/hosts or DNS may send it anywhere) are
    judged by the address they resolve to (`resolves_to_loopback`)."""
    host = host.strip().strip("[]").rstrip(".").lower()
    if host in {"localhost", ""}:
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False  # a name: it would be resolved and connected to elsewhere
    return _loopback_address(address)


def _loopback_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback, ::ffff:8.8.8.8 is not
    return address.is_loopback


def resolves_to_loopback(host: str) -> bool:
    """True when every address `host` resolves to is loopback (False when it does not resolve)."""
    addresses = resolve(host, 0)
    return bool(addresses) and all(_loopback_address(a) for a in addresses)


def resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses `host` resolves to, in the resolver's order; [] when it does not resolve."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []  # the egress guard's refusal is an OSError too: treated as "does not resolve"
    addresses = []
    for _family, _type, _proto, _name, sockaddr in infos:
        try:
            addresses.append(ipaddress.ip_address(str(sockaddr[0]).split("%")[0]))
        except ValueError:
            continue
    return addresses


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
    _install_more_lookups_and_sends()
    _installed = True


def _install_more_lookups_and_sends() -> None:
    """The rest of the socket module's ways out: sendmsg, the old resolver functions, reverse
    lookups, and sockets made from the C type `_socket.socket` (which bypass socket.socket)."""
    import _socket

    original_sendmsg = socket.socket.sendmsg
    original_gethostbyname = socket.gethostbyname
    original_gethostbyname_ex = socket.gethostbyname_ex
    original_gethostbyaddr = socket.gethostbyaddr
    original_getnameinfo = socket.getnameinfo
    original_getfqdn = socket.getfqdn

    def sendmsg(self, buffers, *args):
        # sendmsg(buffers[, ancdata[, flags[, address]]]): only the 4th argument names a peer.
        if len(args) >= 3 and args[2] is not None:
            _check(self, args[2])
        return original_sendmsg(self, buffers, *args)

    def _check_name(name, what: str) -> None:
        text = name.decode() if isinstance(name, bytes) else str(name)
        if not is_loopback(text) and not _is_ip(text):
            _refuse(f"{what} of {text!r} refused by the egress guard")

    def gethostbyname(name):
        _check_name(name, "name lookup (gethostbyname)")
        return original_gethostbyname(name)

    def gethostbyname_ex(name):
        _check_name(name, "name lookup (gethostbyname_ex)")
        return original_gethostbyname_ex(name)

    def gethostbyaddr(address):
        # A reverse lookup of any address but loopback asks a DNS server.
        text = address.decode() if isinstance(address, bytes) else str(address)
        if not is_loopback(text):
            _refuse(f"reverse lookup (gethostbyaddr) of {text!r} refused by the egress guard")
        return original_gethostbyaddr(address)

    def getnameinfo(sockaddr, flags):
        host = str(sockaddr[0]) if isinstance(sockaddr, tuple) and sockaddr else str(sockaddr)
        numeric = flags & socket.NI_NUMERICHOST and _is_ip(host)
        if not is_loopback(host) and not numeric:
            _refuse(f"lookup (getnameinfo) of {host!r} refused by the egress guard")
        return original_getnameinfo(sockaddr, flags)

    def getfqdn(name=""):
        # getfqdn never raises (it returns the name it was given when lookups fail): keep that,
        # but record the refusal so the test suite still sees it.
        text = name.strip() if isinstance(name, str) else name
        if not text or text in ("0.0.0.0", "::"):  # noqa: S104 (getfqdn's own rule)
            text = socket.gethostname()
        if not is_loopback(str(text)):
            try:
                _refuse(f"name lookup (getfqdn) of {text!r} refused by the egress guard")
            except EgressBlocked:
                return text
        return original_getfqdn(name)

    socket.socket.sendmsg = sendmsg
    socket.gethostbyname = gethostbyname
    socket.gethostbyname_ex = gethostbyname_ex
    socket.gethostbyaddr = gethostbyaddr
    socket.getnameinfo = getnameinfo
    socket.getfqdn = getfqdn
    _socket.socket = _socket.SocketType = _guarded_c_socket_type(_socket.socket)


def _guarded_c_socket_type(c_socket: type) -> type:
    """A stand-in for `_socket.socket` whose sends and connects are checked like socket.socket's.
    Everything else (and isinstance checks) still answers for the original C type."""

    class _SameAsCSocket(type):
        def __instancecheck__(cls, instance) -> bool:
            return isinstance(instance, c_socket)

        def __subclasscheck__(cls, subclass) -> bool:
            return issubclass(subclass, c_socket)

    class GuardedSocket(c_socket, metaclass=_SameAsCSocket):
        def connect(self, address):
            _check(self, address)
            return c_socket.connect(self, address)

        def connect_ex(self, address):
            _check(self, address)
            return c_socket.connect_ex(self, address)

        def sendto(self, data, *args):
            if args:
                _check(self, args[-1])
            return c_socket.sendto(self, data, *args)

        def sendmsg(self, buffers, *args):
            if len(args) >= 3 and args[2] is not None:
                _check(self, args[2])
            return c_socket.sendmsg(self, buffers, *args)

    GuardedSocket.__name__ = GuardedSocket.__qualname__ = "socket"
    GuardedSocket.__module__ = "_socket"
    return GuardedSocket


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
    if any(_host_matches(host, port, entry) for entry in allowed_hosts):
        return True
    # "llm.localhost" is loopback only where it resolves there (a hosts file may say otherwise).
    return host.endswith(".localhost") and resolves_to_loopback(host)


def endpoint_listed(url: str, allowed_hosts: list[str]) -> bool:
    """Whether an HTTP(S) endpoint URL's host is named by an allow-list entry itself; loopback
    counts only when listed. An external model endpoint must be listed to be used at all."""
    try:
        parts = urlsplit((url or "").strip())
        port = parts.port
    except ValueError:
        return False
    if parts.scheme.lower() not in {"http", "https"} or not parts.hostname:
        return False
    port = port or (443 if parts.scheme.lower() == "https" else 80)
    host = parts.hostname.rstrip(".").lower()
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
