# ruff: noqa: F811 - pytest fixtures imported from tests.fakes are test arguments here
"""An in-house embedding server (RAG_EMBEDDING_URL, OpenAI's /v1/embeddings) embeds passages at
ingestion and questions at search time: batched, retried, its dimension checked against the
database column, and held to the same in-house egress rule as the LLM."""

from __future__ import annotations

import numpy as np
import pytest

from ingestion import embedding
from ingestion.chunking import embedding_text
from ingestion.models import Chunk, Document
from retrieval.search import search_collections
from tests.documents import write_markdown
from tests.fakes.model_servers import EMBEDDING_MODEL_ID, fake_embedder  # noqa: F401
from tests.fakes.proxy_server import proxy_everywhere  # noqa: F401

PAGE = (
    "Aurora satellite",
    [
        ("Launch code", "The launch code for the Aurora satellite is TANGERINE-7."),
        ("Orbit", "Aurora circles the earth every ninety-two minutes at 410 kilometres."),
        ("Crew", "Aurora carries no crew; it is operated from the ground station in Tromsø."),
        ("Power", "Two solar wings give Aurora four kilowatts in full sunlight."),
        ("Radio", "Aurora talks to the ground on the S band twice per orbit."),
    ],
)


@pytest.fixture
def small_chunks(settings):
    settings.RAG_CHUNK_TOKENS = 24  # one section a chunk: several passages from one page
    settings.RAG_CHUNK_OVERLAP = 0
    settings.RAG_EMBEDDING_REMOTE_BATCH_SIZE = 2


def test_ingestion_and_search_embed_through_the_server_in_batches(
    fake_embedder, small_chunks, collection, ingest_file, tmp_path
):
    document = ingest_file(collection, write_markdown(tmp_path / "aurora.md", *PAGE))

    assert document.status == Document.Status.READY, document.error
    chunks = list(Chunk.objects.filter(document=document).order_by("ordinal"))
    batches = fake_embedder.embedding_requests
    assert len(chunks) >= 3
    assert len(batches) == -(-len(chunks) // 2)  # ceil: batches of RAG_..._REMOTE_BATCH_SIZE
    assert all(len(r.body["input"]) <= 2 for r in batches)
    assert {r.body["model"] for r in batches} == {EMBEDDING_MODEL_ID}  # asked /v1/models once
    assert [r.path for r in fake_embedder.requests].count("/v1/models") == 1
    # The stored vectors are the server's, in input order, whatever order it answered in.
    local = embedding.get_model().encode(
        [embedding_text(c.title, c.heading, c.text) for c in chunks],
        normalize_embeddings=True,
    )
    stored = np.array([np.asarray(c.embedding) for c in chunks])
    assert np.allclose(stored, local, atol=1e-5)

    before = len(fake_embedder.embedding_requests)
    passages = search_collections([collection.pk], "What is the Aurora launch code?")

    assert "TANGERINE-7" in passages[0].text
    assert fake_embedder.embedding_requests[before].body["input"] == [
        "What is the Aurora launch code?"
    ]


def test_the_api_key_and_model_name_are_sent(fake_embedder, settings):
    settings.RAG_EMBEDDING_API_KEY = "emb-s3cret"
    settings.RAG_EMBEDDING_REMOTE_MODEL = "BAAI/bge-small-en-v1.5"

    embedding.embed_texts(["one", "two"])

    [request] = fake_embedder.requests
    assert request.headers["Authorization"] == "Bearer emb-s3cret"
    assert request.body == {"model": "BAAI/bge-small-en-v1.5", "input": ["one", "two"]}


def test_a_server_that_is_briefly_failing_is_retried(fake_embedder):
    fake_embedder.fail_next = 2  # e.g. still loading its model

    vectors = embedding.embed_texts(["retry me"])

    assert vectors.shape == (1, 384)
    assert len(fake_embedder.requests) == 4  # /models failed twice, then /models, /embeddings


def test_a_server_that_keeps_failing_is_reported_as_transient_after_the_retries(fake_embedder):
    from ingestion.pipeline import is_transient

    fake_embedder.fail_next = 100

    with pytest.raises(embedding.EmbeddingUnavailable) as raised:
        embedding.embed_texts(["anyone there?"])

    assert len(fake_embedder.requests) == embedding.REMOTE_RETRIES + 1
    assert "503" in str(raised.value)
    assert is_transient(raised.value)  # the ingestion task tries the document again later


def test_a_model_of_another_dimension_fails_the_document_with_the_reason(
    fake_embedder, collection, ingest_file, tmp_path
):
    fake_embedder.dimensions = 768

    document = ingest_file(collection, write_markdown(tmp_path / "aurora.md", *PAGE))

    assert document.status == Document.Status.FAILED
    assert "gives 768 dimensions; the database stores 384" in document.error
    assert "migration" in document.error
    assert not Chunk.objects.filter(document=document).exists()


def test_an_embedding_server_outside_the_allow_list_is_refused_before_any_connection(settings):
    settings.RAG_EMBEDDING_URL = "https://embeddings.example.com/v1"
    settings.RAG_ALLOWED_HOSTS_EGRESS = ["llm.internal"]

    with pytest.raises(embedding.EmbeddingModelError, match="RAG_ALLOWED_HOSTS_EGRESS"):
        embedding.embed_texts(["passage text must not leave"])


def test_embedding_traffic_ignores_proxy_variables(
    fake_embedder,
    proxy_everywhere,
):
    assert embedding.embed_query("straight to the server").shape == (384,)
    assert proxy_everywhere.requests == []
    assert len(fake_embedder.embedding_requests) == 1


@pytest.mark.parametrize(
    ("configured", "posted_to"),
    [
        ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1/embeddings"),
        ("http://127.0.0.1:8080/v1/", "http://127.0.0.1:8080/v1/embeddings"),
        ("http://127.0.0.1:8080/v1/embeddings", "http://127.0.0.1:8080/v1/embeddings"),
    ],
)
def test_the_url_may_be_the_base_or_the_endpoint(settings, configured, posted_to):
    settings.RAG_EMBEDDING_URL = configured
    assert embedding.embeddings_url() == posted_to


def test_a_question_that_cannot_be_embedded_gets_a_503_with_a_message(
    fake_embedder, collection, user, client
):
    fake_embedder.fail_next = 100
    client.force_login(user)

    response = client.post(
        "/api/v1/search", {"query": "Aurora launch code"}, content_type="application/json"
    )

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "search_unavailable"
    assert "unavailable" in response.json()["error"]["message"]
