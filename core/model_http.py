"""The one HTTP client model traffic goes through (LLM, embedding server, reranker): it never
takes proxy settings from the environment and pins every connection to an allowed address.

`egress.endpoint_allowed` judges a configured URL; this module makes sure the address really
connected to is in-house too: a name on the allow-list that resolves to a public address is
refused before anything is sent.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Iterable
from functools import lru_cache

import httpcore
import httpx

from core import egress

# Proxy variables HTTP clients read from the environment. Model traffic ignores all of them;
# `manage.py privacy_check` reports any that are set (other libraries may still honour them).
PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)

# Address ranges that never route on the public internet: where in-house servers live. Spelled
# out rather than `is_private`, which also counts documentation and reserved ranges.
IN_HOUSE_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
    )
)


class EgressRefused(Exception):
    """A model endpoint's host resolved to an address outside the allowed networks: nothing was
    sent. Not an OSError, so no client mistakes it for a transient connect failure and retries."""


def proxy_variables_set() -> dict[str, str]:
    """The proxy variables present in this process's environment (name → value)."""
    return {name: os.environ[name] for name in PROXY_VARIABLES if os.environ.get(name)}


def address_allowed(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, allowed_hosts: Iterable[str]
) -> bool:
    """Whether model traffic may connect to `address`: loopback, a private (in-house) range
    (RFC 1918, RFC 4193 unique-local, link-local), or an address or network on the allow-list.
    A public address is allowed only when the allow-list names it (as an address or a network):
    a host name on the allow-list does not make whatever it resolves to in-house."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback or any(address in network for network in IN_HOUSE_NETWORKS):
        return True
    for entry in allowed_hosts:
        entry = entry.strip().lower()
        if entry.startswith("["):
            entry = entry[1:].partition("]")[0]
        elif entry.count(":") == 1:
            entry = entry.partition(":")[0]
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except (ValueError, TypeError):
            continue  # a name or a suffix: says nothing about addresses
    return False


class PinnedBackend(httpcore.NetworkBackend):
    """httpcore's network backend, resolving the host itself and connecting to the first address
    the allowed networks hold: the address checked is the address connected to. TLS still
    verifies the certificate against the URL's host name (httpcore passes it as SNI)."""

    def __init__(self, allowed_hosts: Iterable[str], external_host: str = ""):
        self.allowed_hosts = list(allowed_hosts)
        # A configured external endpoint (core.endpoints) is a public host by design: only
        # connections to that very name may go to public addresses.
        self.external_host = external_host.rstrip(".").lower()
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable | None = None,
    ) -> httpcore.NetworkStream:
        addresses = egress.resolve(host, port)
        if not addresses:
            raise httpcore.ConnectError(f"{host!r} does not resolve")
        external = bool(self.external_host) and host.rstrip(".").lower() == self.external_host
        permitted = [a for a in addresses if external or address_allowed(a, self.allowed_hosts)]
        if not permitted:
            shown = ", ".join(str(a) for a in addresses[:4])
            raise EgressRefused(
                f"{host} resolves to {shown}, outside loopback, the private ranges and the "
                "networks on RAG_ALLOWED_HOSTS_EGRESS; nothing was sent"
            )
        return self._inner.connect_tcp(
            str(permitted[0]), port, timeout, local_address, socket_options
        )

    def connect_unix_socket(self, path, timeout=None, socket_options=None):  # pragma: no cover
        raise EgressRefused("model traffic goes over TCP only")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


@lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    """Built once per process (loading the CA bundle takes tens of milliseconds). trust_env here
    only concerns CA bundles (SSL_CERT_FILE / SSL_CERT_DIR), which an in-house HTTPS endpoint with
    a private CA needs; proxies are the client's business, and it ignores them."""
    return httpx.create_ssl_context(trust_env=True)


class PinnedTransport(httpx.HTTPTransport):
    """httpx's transport with the pinned backend and no proxy."""

    def __init__(self, allowed_hosts: Iterable[str], external_host: str = ""):
        super().__init__(verify=_ssl_context())
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(),
            max_connections=10,
            max_keepalive_connections=5,
            keepalive_expiry=5.0,
            network_backend=PinnedBackend(allowed_hosts, external_host),
        )


def model_client(
    timeout: httpx.Timeout | float,
    allowed_hosts: Iterable[str] | None = None,
    external_host: str = "",
) -> httpx.Client:
    """The HTTP client every model call uses: trust_env=False, so HTTP(S)_PROXY, ALL_PROXY and
    .netrc never route prompts, passages or keys anywhere, and every connection pinned to an
    allowed address (PinnedBackend). `external_host`: the host of a configured external endpoint,
    which may resolve to public addresses. Use it as a context manager."""
    if allowed_hosts is None:
        from django.conf import settings

        allowed_hosts = settings.RAG_ALLOWED_HOSTS_EGRESS
    return httpx.Client(
        timeout=timeout,
        trust_env=False,
        transport=PinnedTransport(allowed_hosts, external_host),
    )
