"""Full-text search weighs words by document frequencies from the term statistics, summed over the
collections the caller may read: what an unreadable collection holds changes neither what a
reader finds nor in which order, and its passages never come back."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from django.conf import settings
from django.contrib.auth.models import User

from ingestion.models import Chunk, Collection, Document, TermStatistic
from retrieval.search import search, search_collections
from tests.conftest import make_collection

QUESTION = "zorblat quimzy"
# zorblat in every one: counted with these, zorblat would weigh less than quimzy. The first holds
# both words, the best match of all.
SECRET_TEXTS = ["Zorblat quimzy summary: zorblat readings."] + [
    f"Zorblat reading number {n}." for n in range(30)
]


def _document(collection: Collection, texts: list[str]) -> Document:
    """A ready document with one chunk per text, stored directly (the triggers count them)."""
    document = Document.objects.create(
        collection=collection,
        original_name=f"{uuid.uuid4().hex[:8]}.txt",
        title="Notes",
        content_type="text/plain",
        size=0,
        sha256=uuid.uuid4().hex * 2,
        status=Document.Status.READY,
        chunk_count=len(texts),
    )
    rng = np.random.default_rng(len(texts))
    vectors = rng.standard_normal((len(texts), settings.RAG_EMBEDDING_DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    Chunk.objects.bulk_create(
        Chunk(
            document=document,
            ordinal=n,
            text=text,
            title="Notes",
            token_count=len(text.split()),
            embedding=vector.tolist(),
        )
        for n, (text, vector) in enumerate(zip(texts, vectors, strict=True))
    )
    return document


@pytest.fixture
def reader(db) -> User:
    return User.objects.create_user("reader", password="a-long-test-password")


@pytest.fixture
def public(db) -> Collection:
    """zorblat is the rarer word here (one passage), quimzy the commoner (three)."""
    collection = make_collection("Public notes", everyone=True)
    _document(
        collection,
        [
            "The zorblat gauge sits by the door.",
            "A quimzy valve controls the flow.",
            "Every quimzy valve is checked weekly.",
            "Spare quimzy parts are in the store room.",
        ],
    )
    return collection


def _order(user: User, mode: str) -> list[str]:
    return [p.text for p in search(user, QUESTION, mode=mode)]


@pytest.mark.parametrize("mode", ["fts", "hybrid"])
def test_an_unreadable_collection_changes_neither_the_results_nor_their_order(public, reader, mode):
    before = _order(reader, mode)
    if mode == "fts":
        assert before[0] == "The zorblat gauge sits by the door."  # the rarer word weighs more

    secret = make_collection("Secret notes")
    _document(secret, SECRET_TEXTS)
    assert TermStatistic.objects.get(collection_id=secret.pk, lexeme="zorblat").passages == 31
    # Searched together, secret passages come back: the test can tell a leak.
    together = search_collections([public.pk, secret.pk], QUESTION, mode=mode)
    assert secret.pk in {p.collection_id for p in together}
    if mode == "fts":
        together = [p.text for p in search_collections([public.pk, secret.pk], QUESTION, 50, mode)]
        mixed = [t for t in together if t not in SECRET_TEXTS]
        assert mixed != before  # with the secret counts, quimzy outweighs zorblat

    after = search(reader, QUESTION, mode=mode)

    assert [p.text for p in after] == before
    assert {p.collection_id for p in after} == {public.pk}


def test_granting_the_collection_brings_its_passages_and_its_statistics_in(public, reader):
    secret = make_collection("Secret notes", users=[reader])
    _document(secret, SECRET_TEXTS)

    passages = search(reader, QUESTION, mode="fts")

    assert passages[0].collection_id == secret.pk
    assert {p.collection_id for p in passages} == {public.pk, secret.pk}
