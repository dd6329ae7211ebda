"""Shared by the routing tests: two stand-in OpenAI-compatible servers configured as model
endpoints ("local" in-house, "hosted" external), and passages written straight into the database
with real embeddings (parsing is tested elsewhere and costs seconds a file on a busy machine)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator

import pytest

from core.endpoints import EXTERNAL, IN_HOUSE
from ingestion.chunking import embedding_text
from ingestion.embedding import embed_texts
from ingestion.models import Chunk, Collection, Document
from tests.fakes.openai_server import FakeOpenAIServer


def endpoints_json(local: FakeOpenAIServer, hosted: FakeOpenAIServer) -> str:
    return json.dumps(
        [
            {
                "name": "local",
                "base_url": local.base_url,
                "model": "fake-model",
                "roles": ["answer", "rewrite"],
                "location": IN_HOUSE,
                "label": "Local model",
            },
            {
                "name": "hosted",
                "base_url": hosted.base_url,
                "model": "fake-model",
                "roles": ["answer", "rewrite"],
                "location": EXTERNAL,
                "api_key_env": "HOSTED_TEST_KEY",
                "label": "Hosted model (external)",
            },
        ]
    )


def port_of(server: FakeOpenAIServer) -> str:
    return server.base_url.split(":")[2].split("/")[0]


@pytest.fixture
def stand_ins(settings) -> Iterator[tuple[FakeOpenAIServer, FakeOpenAIServer]]:
    """(local, hosted): both running, configured through RAG_MODEL_ENDPOINTS."""
    local = FakeOpenAIServer(answer="Local answer [1].").start()
    hosted = FakeOpenAIServer(answer="Hosted answer [1].").start()
    settings.RAG_MODEL_ENDPOINTS = endpoints_json(local, hosted)
    # Loopback, but external by declaration: it must be listed to be used at all.
    settings.RAG_ALLOWED_HOSTS_EGRESS = [f"127.0.0.1:{port_of(hosted)}"]
    settings.RAG_LLM_BASE_URL = ""
    settings.RAG_HYDE = False
    settings.RAG_MIN_SIMILARITY = -1.0  # every question reaches a model
    settings.RAG_LLM_TIMEOUT = 5.0
    yield local, hosted
    local.stop()
    hosted.stop()


def add_passages(collection: Collection, passages: list[tuple[str, str, str]]) -> list[Chunk]:
    """One ready document per (title, heading, text), one chunk each, embedded for real."""
    documents = [
        Document.objects.create(
            collection=collection,
            file=f"documents/routing-{collection.pk}-{number}",
            original_name=f"{title.lower()}.md",
            title=title,
            content_type="text/markdown",
            size=len(text),
            sha256=hashlib.sha256(text.encode()).hexdigest(),
            status=Document.Status.READY,
            chunk_count=1,
        )
        for number, (title, _heading, text) in enumerate(passages)
    ]
    vectors = embed_texts([embedding_text(t, h, x) for t, h, x in passages])
    return [
        Chunk.objects.create(
            document=document,
            ordinal=0,
            text=text,
            title=title,
            heading=heading,
            token_count=len(text.split()),
            embedding=vector.tolist(),
        )
        for document, (title, heading, text), vector in zip(
            documents, passages, vectors, strict=True
        )
    ]


AnswerFunction = Callable[[dict], str]
