# ruff: noqa: F811 - pytest fixtures imported from tests.fakes are test arguments here
"""An in-house rerank server (RAG_RERANKER_URL) reorders the fused candidates, in vLLM's
Cohere/Jina-style format or text-embeddings-inference's; when it is down, refused or confused,
search keeps fusion order and says so in the log."""

from __future__ import annotations

import logging

import pytest

from retrieval.search import search_collections
from tests.conftest import make_collection
from tests.documents import write_markdown
from tests.fakes.model_servers import fake_reranker  # noqa: F401

QUESTION = "What is the launch code for the Aurora satellite?"
PAGES = {
    "aurora.md": (
        "Aurora satellite",
        [("Launch code", "The launch code for the Aurora satellite is TANGERINE-7.")],
    ),
    "overview.md": (
        "Satellite overview",
        [("Satellites", "Our satellites are launched on schedule; each has a code name. FAVOURED")],
    ),
    "canteen.md": ("Canteen", [("Menu", "Soup of the day is served from noon.")]),
}


def favour_marked(query: str, text: str) -> float:
    """A reranker with an opinion fusion does not share: the FAVOURED passage is best."""
    return 5.0 if "FAVOURED" in text else 1.0 / (1 + len(text))


@pytest.fixture
def pages(db, ingest_file, tmp_path, settings) -> list[int]:
    settings.RAG_RERANKER_MODEL = ""
    settings.RAG_RERANKER_URL = ""
    collection = make_collection("Space", everyone=True)
    for name, (title, sections) in PAGES.items():
        ingest_file(collection, write_markdown(tmp_path / name, title, sections))
    return [collection.pk]


def fusion_order(ids: list[int]) -> list[int]:
    return [p.chunk_id for p in search_collections(ids, QUESTION)]


@pytest.mark.parametrize(
    ("url_tail", "api", "path", "fields"),
    [
        ("/v1", "auto", "/v1/rerank", {"query", "documents", "model"}),
        ("/v1", "cohere", "/v1/rerank", {"query", "documents", "model"}),
        ("", "auto", "/rerank", {"query", "texts", "truncate"}),
        ("", "tei", "/rerank", {"query", "texts", "truncate"}),
    ],
)
def test_the_server_reorders_the_fused_candidates(
    pages, settings, fake_reranker, url_tail, api, path, fields
):
    fused = fusion_order(pages)
    fake_reranker.score = favour_marked
    settings.RAG_RERANKER_URL = fake_reranker.root + url_tail
    settings.RAG_RERANKER_API = api
    settings.RAG_RERANKER_REMOTE_MODEL = "BAAI/bge-reranker-v2-m3"

    passages = search_collections(pages, QUESTION)

    assert "TANGERINE-7" in next(p.text for p in passages if p.chunk_id == fused[0])
    assert "FAVOURED" in passages[0].text  # the server's opinion won
    assert passages[0].rerank_score == 5.0
    assert sorted(p.chunk_id for p in passages) == sorted(fused)
    [request] = fake_reranker.requests
    assert request.path == path
    assert set(request.body) == fields
    assert request.body["query"] == QUESTION
    texts = request.body.get("documents") or request.body["texts"]
    assert len(texts) == len(fused)
    assert any("Aurora satellite" in t for t in texts)


def test_auto_detection_tries_the_other_format_and_remembers_the_one_that_worked(
    pages, settings, fake_reranker
):
    fake_reranker.score = favour_marked
    fake_reranker.speaks = ("cohere",)  # vLLM serves /rerank too, in its own format
    settings.RAG_RERANKER_URL = fake_reranker.root  # a bare host: the first guess is TEI
    settings.RAG_RERANKER_API = "auto"
    settings.RAG_RERANKER_REMOTE_MODEL = ""

    first = search_collections(pages, QUESTION)
    second = search_collections(pages, QUESTION)

    assert "FAVOURED" in first[0].text
    assert "FAVOURED" in second[0].text
    bodies = [sorted(r.body) for r in fake_reranker.requests]
    assert bodies == [
        ["query", "texts", "truncate"],  # the guess, refused with 422
        ["documents", "query"],
        ["documents", "query"],  # no second guess: the format was kept
    ]
    assert {r.path for r in fake_reranker.requests} == {"/rerank"}


@pytest.mark.parametrize("trouble", ["down", "500", "refused by the allow-list"])
def test_without_a_working_server_search_keeps_fusion_order_and_warns(
    pages, settings, fake_reranker, caplog, trouble
):
    fused = fusion_order(pages)
    fake_reranker.score = favour_marked
    settings.RAG_RERANKER_URL = fake_reranker.root + "/v1"
    if trouble == "down":
        fake_reranker.stop()
    elif trouble == "500":
        fake_reranker.failure = "500"
    else:
        settings.RAG_RERANKER_URL = "http://rerank.example.com/v1"
        settings.RAG_ALLOWED_HOSTS_EGRESS = []

    with caplog.at_level(logging.WARNING):
        passages = search_collections(pages, QUESTION)

    assert [p.chunk_id for p in passages] == fused
    assert all(p.rerank_score is None for p in passages)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("fusion order" in w for w in warnings), warnings
    if trouble == "500":
        assert len(fake_reranker.requests) == 1  # asked once, no retry in the question's path
    elif trouble != "down":
        assert fake_reranker.requests == []  # nothing sent outside the allowed hosts
