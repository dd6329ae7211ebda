"""The MCP server at /mcp, driven by the official SDK's own client against uvicorn serving the
real ASGI app: its four tools, each as the API key's owner with exactly their permissions, and
no way in without a live key. Answers come from the extractive answerer (no model server)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from core import apikeys
from core.models import AuditEvent
from ingestion.models import Chunk
from tests.conftest import database_url, make_collection, stop_worker
from tests.documents import FACT, write_markdown
from tests.e2e.conftest import serve_asgi

TOOLS = {"search", "ask", "list_collections", "get_document"}
SECRET = "The Halcyon merger closes on 14 March 2028 at 9.7 billion kroner."
SECRET_QUESTION = "When does the Halcyon merger close, and at what price?"
QUESTION = "What is the Zephyr project budget for 2027?"


@pytest.fixture
def site(request, transactional_db, ingest_file, tmp_path) -> Iterator[dict[str, Any]]:
    """uvicorn serving ragsite.asgi against the test database (with the settings in the test's
    parameter, if any). Everyone reads "Handbook" (the Zephyr budget); only `insider` reads
    "Board" (the Halcyon merger); `outsider` does not."""
    from django.conf import settings

    cache.clear()
    insider = User.objects.create_user("insider", password="a-long-test-password")
    outsider = User.objects.create_user("outsider", password="a-long-test-password")
    handbook = make_collection("Handbook", everyone=True)
    board = make_collection("Board", users=[insider])
    public = ingest_file(
        handbook, write_markdown(tmp_path / "zephyr.md", "Zephyr report", [("Budget", FACT)])
    )
    secret = ingest_file(
        board, write_markdown(tmp_path / "halcyon.md", "Halcyon memo", [("Merger", SECRET)])
    )
    assert public.status == secret.status == "ready"

    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "RAG_MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "RAG_LLM_BASE_URL": "",
        "RAG_EGRESS_GUARD": "1",
        **getattr(request, "param", {}),
    }
    log = tmp_path / "uvicorn.log"
    process, base = serve_asgi(env, log)
    try:
        yield {
            "url": base + "/mcp",
            "insider": apikeys.create_key(insider, "agent")[1],
            "outsider": apikeys.create_key(outsider, "agent")[1],
            "insider_user": insider,
            "board": board,
            "handbook": handbook,
            "secret": secret,
            "public": public,
        }
    finally:
        stop_worker(process)
    text = log.read_text()
    assert "SynchronousOnlyOperation" not in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]


async def _session(url: str, key: str, calls: list[tuple[str, dict]]) -> list:
    """Each (tool, arguments) called in order in one session; ("", {}) lists the tools."""
    results: list[Any] = []
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        for name, arguments in calls:
            if name:
                results.append(await client.call_tool(name, arguments))
            else:
                results.append(await client.list_tools())
    return results


def call(url: str, key: str, *calls: tuple[str, dict]) -> list:
    return asyncio.run(_session(url, key, list(calls)))


def secret_chunk_ids(site) -> set[int]:
    return set(Chunk.objects.filter(document=site["secret"]).values_list("pk", flat=True))


def test_the_four_tools_are_listed_with_their_arguments(site):
    [listed] = call(site["url"], site["outsider"], ("", {}))
    tools = {tool.name: tool for tool in listed.tools}
    assert set(tools) == TOOLS
    assert all(tools[name].annotations.read_only_hint for name in TOOLS - {"ask"})
    assert tools["ask"].annotations.destructive_hint is False
    assert set(tools["search"].input_schema["required"]) == {"query"}
    assert set(tools["get_document"].input_schema["required"]) == {"chunk_id"}


def test_each_tool_answers_its_caller_from_what_they_may_read(site):
    searched, asked, collections = call(
        site["url"],
        site["insider"],
        ("search", {"query": SECRET_QUESTION}),
        ("ask", {"question": QUESTION}),
        ("list_collections", {}),
    )
    assert not searched.is_error, searched.content
    top = searched.structured_content["passages"][0]
    assert top["document_id"] == site["secret"].pk
    assert "9.7 billion kroner" in top["text"]
    assert top["document_title"] == "Halcyon memo"
    assert "9.7 billion kroner" in searched.content[0].text  # the same JSON, for text-only clients

    assert not asked.is_error, asked.content
    answer = asked.structured_content
    assert answer["outcome"] == "answered"
    assert "4.2 million euros" in answer["answer"]
    assert answer["citations"][0]["document_id"] == site["public"].pk

    names = [c["name"] for c in collections.structured_content["collections"]]
    assert names == ["Board", "Handbook"]

    [document] = call(site["url"], site["insider"], ("get_document", {"chunk_id": top["chunk_id"]}))
    assert not document.is_error, document.content
    assert document.structured_content["document"]["id"] == site["secret"].pk
    assert document.structured_content["document"]["collection"] == "Board"
    assert "9.7 billion kroner" in document.structured_content["passage"]["text"]

    # Audited like the API's, under their own entry point.
    audited = AuditEvent.objects.filter(via=AuditEvent.Via.MCP, user=site["insider_user"])
    assert set(audited.values_list("action", flat=True)) >= {
        AuditEvent.Action.SEARCH,
        AuditEvent.Action.ASK,
    }


def test_a_user_who_cannot_read_a_collection_never_gets_its_passages(site):
    [secret_chunk, *_] = sorted(secret_chunk_ids(site))
    missing = max(Chunk.objects.values_list("pk", flat=True)) + 1000
    results = call(
        site["url"],
        site["outsider"],
        ("search", {"query": SECRET_QUESTION, "limit": 50}),
        ("ask", {"question": SECRET_QUESTION}),
        ("get_document", {"chunk_id": secret_chunk}),
        ("get_document", {"chunk_id": missing}),
        ("list_collections", {}),
        ("search", {"query": SECRET_QUESTION, "collection_id": site["board"].pk}),
        ("ask", {"question": SECRET_QUESTION, "collection_id": site["board"].pk}),
    )
    searched, asked, guessed, unknown, collections, narrowed, narrowed_ask = results
    for result in results:
        assert "9.7 billion" not in str(result.content)
        assert "Halcyon memo" not in str(result.content)

    assert not searched.is_error, searched.content
    found = {p["document_id"] for p in searched.structured_content["passages"]}
    assert site["secret"].pk not in found

    assert not asked.is_error, asked.content
    assert "9.7 billion" not in asked.structured_content["answer"]
    cited = {c["document_id"] for c in asked.structured_content["citations"]}
    assert site["secret"].pk not in cited

    # A guessed passage id of another's document reads exactly like one that does not exist.
    assert guessed.is_error
    assert unknown.is_error
    assert guessed.content[0].text == unknown.content[0].text
    assert guessed.content[0].text.endswith("No such passage.")

    names = [c["name"] for c in collections.structured_content["collections"]]
    assert names == ["Handbook"]

    assert narrowed.is_error
    assert narrowed.content[0].text.endswith("No such collection.")
    assert narrowed_ask.is_error
    assert narrowed_ask.content[0].text.endswith("No such collection.")


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "probe", "version": "1"},
    },
}
MCP_ACCEPT = "application/json, text/event-stream"


def post(url: str, **headers: str) -> httpx.Response:
    return httpx.post(url, json=INITIALIZE, headers={"Accept": MCP_ACCEPT, **headers}, timeout=30)


def test_no_key_a_revoked_key_or_a_deactivated_user_is_refused(site):
    url = site["url"]
    assert post(url, Authorization=f"Bearer {site['outsider']}").status_code == 200

    refused = {
        "none": post(url),
        "not bearer": post(url, Authorization=f"Basic {site['outsider']}"),
        "garbage": post(url, Authorization="Bearer rsk_not-a-real-key-at-all"),
    }
    key = apikeys.verify_key(site["outsider"])
    assert key is not None
    apikeys.revoke_key(key)
    refused["revoked"] = post(url, Authorization=f"Bearer {site['outsider']}")
    insider = site["insider_user"]
    insider.is_active = False
    insider.save(update_fields=["is_active"])
    refused["deactivated"] = post(url, Authorization=f"Bearer {site['insider']}")

    for why, response in refused.items():
        assert response.status_code == 401, why
        assert response.headers["www-authenticate"].startswith("Bearer"), why
        assert response.json()["error"]["code"] == "not_authenticated", why

    # The SDK's client is refused too, before any tool runs.
    with pytest.raises(ExceptionGroup) as refusal:
        call(url, site["outsider"], ("search", {"query": QUESTION}))
    assert refusal.group_contains(MCPError)
    # No tool ran for the refused key: its only MCP row is the key's first (accepted) use.
    rows = AuditEvent.objects.filter(via=AuditEvent.Via.MCP, user=key.user)
    assert set(rows.values_list("action", flat=True)) <= {AuditEvent.Action.API_KEY_USED}


def test_a_host_outside_allowed_hosts_is_refused(site):
    response = post(
        site["url"], Authorization=f"Bearer {site['outsider']}", Host="attacker.example"
    )
    assert response.status_code == 400


def test_an_oversized_body_is_refused_before_it_is_read(site):
    from django.conf import settings

    body = b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    # The status is read from the response head: the server answers and closes without reading
    # the body it refused, so the kernel may reset the connection (unread data) before the
    # client has read the rest of the response.
    with httpx.stream(
        "POST",
        site["url"],
        content=body,
        headers={
            "Authorization": f"Bearer {site['outsider']}",
            "Content-Type": "application/json",
            "Accept": MCP_ACCEPT,
        },
        timeout=30,
    ) as response:
        status = response.status_code
    assert status == 413


@pytest.mark.parametrize(
    "site", [{"RAG_API_RATE": "6/min", "RAG_ASK_RATE": "1/min"}], indirect=True
)
def test_the_api_rate_limits_hold_for_mcp_too(site):
    first, second = call(
        site["url"],
        site["insider"],
        ("ask", {"question": QUESTION}),
        ("ask", {"question": QUESTION}),
    )
    assert not first.is_error, first.content
    assert second.is_error
    assert "Too many questions" in second.content[0].text

    answers = [post(site["url"], Authorization=f"Bearer {site['outsider']}") for _ in range(7)]
    assert [r.status_code for r in answers] == [200] * 6 + [429]
    assert int(answers[-1].headers["retry-after"]) > 0
