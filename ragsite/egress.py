"""A process-wide guard that refuses outbound connections to anything but loopback and Unix
sockets. The test suite installs it in every process it starts (pytest, the Celery worker, the
web server), so a library that phones home or downloads at run time fails the build.
"""

from __future__ import annotations

import ipaddress
import socket

_installed = False
violations: list[str] = []


class EgressBlocked(ConnectionRefusedError):
    pass


def is_loopback(host: str) -> bool:
    if host in {"localhost", ""}:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False  # a name: it would be resolved and connected to elsewhere


def _check(sock: socket.socket, address) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # Unix sockets (the embedded PostgreSQL) stay local by construction
    host = address[0] if isinstance(address, tuple) else str(address)
    if not is_loopback(str(host)):
        message = f"outbound connection to {address!r} refused by the egress guard"
        violations.append(message)
        raise EgressBlocked(message)


def install() -> None:
    """Patch socket connects (and name lookups of non-local names) in this process."""
    global _installed
    if _installed:
        return
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex
    original_getaddrinfo = socket.getaddrinfo

    def connect(self, address):
        _check(self, address)
        return original_connect(self, address)

    def connect_ex(self, address):
        _check(self, address)
        return original_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and not is_loopback(str(name)) and not _is_ip(str(name)):
            message = f"name lookup of {name!r} refused by the egress guard"
            violations.append(message)
            raise EgressBlocked(message)
        return original_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.getaddrinfo = getaddrinfo
    _installed = True


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%")[0])
        return True
    except ValueError:
        return False
