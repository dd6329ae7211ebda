"""Model traffic stays in-house whatever the environment says: proxy variables are ignored, and
the address actually connected to must be inside the allowed networks (issue 10, "Proxies")."""

from __future__ import annotations

import socket

import pytest

from core import egress, model_http
from retrieval import llm
from tests.fakes.proxy_server import RecordingProxy, proxy_everywhere  # noqa: F401

MESSAGES = [{"role": "user", "content": "Question: why?"}]
OUTSIDE = "203.0.113.7"  # TEST-NET-3 (RFC 5737): stands for a public address; never connected to


def resolve_as(monkeypatch, names: dict[str, str]) -> None:
    """Make the resolver answer `names` (name → address) the way a hosts file or DNS would."""
    original = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name in names:
            return original(names[name], port, *args, **kwargs)
        return original(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_model_traffic_never_goes_through_the_environments_proxy(
    fake_llm,
    proxy_everywhere: RecordingProxy,  # noqa: F811 - the fixture imported above
):
    fake_llm.answer = "Straight to the model [1]."
    generator = llm.get_generator()

    assert "".join(generator.stream(MESSAGES, [])) == fake_llm.answer
    assert generator.complete(MESSAGES) == fake_llm.answer

    assert proxy_everywhere.requests == []
    assert len(fake_llm.chat_requests) == 2


def test_an_allow_listed_name_resolving_outside_the_allowed_networks_is_refused(
    fake_llm, settings, monkeypatch
):
    port = fake_llm.base_url.split(":")[2].split("/")[0]
    settings.RAG_ALLOWED_HOSTS_EGRESS = ["llm.internal"]
    settings.RAG_LLM_BASE_URL = f"http://llm.internal:{port}/v1"
    resolve_as(monkeypatch, {"llm.internal": OUTSIDE})
    violations_before = len(egress.violations)

    with pytest.raises(llm.ModelUnavailable) as raised:
        list(llm.get_generator().stream(MESSAGES, []))

    assert f"resolves to {OUTSIDE}" in raised.value.detail
    assert fake_llm.requests == []
    # Refused before any connect: the test suite's egress guard never saw an attempt.
    assert len(egress.violations) == violations_before


def test_an_allow_listed_name_resolving_in_house_connects_to_the_address_it_resolved(
    fake_llm, settings, monkeypatch
):
    port = fake_llm.base_url.split(":")[2].split("/")[0]
    settings.RAG_ALLOWED_HOSTS_EGRESS = ["llm.internal"]
    settings.RAG_LLM_BASE_URL = f"http://llm.internal:{port}/v1"
    resolve_as(monkeypatch, {"llm.internal": "127.0.0.1"})
    fake_llm.answer = "Reached in-house."

    assert "".join(llm.get_generator().stream(MESSAGES, [])) == "Reached in-house."
    assert fake_llm.chat_requests[0].headers["Host"] == f"llm.internal:{port}"


@pytest.mark.parametrize(
    ("resolved", "allowed"), [("127.0.0.1", True), ("198.51.100.2", False), (None, False)]
)
def test_a_dot_localhost_name_is_loopback_only_where_it_resolves_there(
    monkeypatch, resolved, allowed
):
    if resolved:
        resolve_as(monkeypatch, {"llm.localhost": resolved})
    else:

        def unresolvable(*args, **kwargs):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        monkeypatch.setattr(socket, "getaddrinfo", unresolvable)

    assert egress.endpoint_allowed("http://llm.localhost:8000/v1", []) is allowed
    assert not egress.is_loopback("llm.localhost")


@pytest.mark.parametrize(
    ("address", "allow_list", "allowed"),
    [
        ("127.0.0.1", [], True),
        ("::1", [], True),
        ("10.2.3.4", [], True),
        ("172.20.0.5", [], True),
        ("192.168.1.9", [], True),
        ("fd12:3456::1", [], True),
        ("::ffff:10.0.0.1", [], True),
        ("8.8.8.8", [], False),
        ("8.8.8.8", ["llm.internal"], False),  # a listed name does not bless its address
        ("8.8.8.8", ["8.8.8.0/24"], True),
        ("8.8.8.8", ["8.8.8.8:8000"], True),
        ("203.0.113.7", [], False),
        ("::ffff:8.8.8.8", [], False),
        ("100.64.1.1", [], False),  # carrier-grade NAT: the provider's network, not ours
    ],
)
def test_addresses_model_traffic_may_connect_to(address, allow_list, allowed):
    import ipaddress

    assert model_http.address_allowed(ipaddress.ip_address(address), allow_list) is allowed
