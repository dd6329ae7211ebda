"""Permission fuzz: random users, groups and grants over really ingested documents; no surface
(search, answers, citations, downloads, lists, the API) ever shows a document the rules deny.

The expectation is computed here from the generated grants, independently of
ingestion/permissions.py. Grants are re-drawn between rounds, so access is also taken away.
RAG_FUZZ_SEED picks another world; the default seed keeps runs reproducible.
"""

from __future__ import annotations

import os
import random
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse

from core.models import AuditEvent
from ingestion import permissions, pipeline, services
from ingestion.models import Chunk, Collection, Document
from retrieval.models import Conversation
from retrieval.search import search

SEED = int(os.environ.get("RAG_FUZZ_SEED", "20261106"))
N_USERS, N_GROUPS, N_COLLECTIONS, ROUNDS = 12, 5, 8, 2
SHARED_QUERIES = [
    "travel budget policy",
    "holiday rules for every team",
    "who approves expenses",
    "codename office",
]
SHARED_TEXT = (
    "Travel budget policy and holiday rules apply to every team. "
    "Expenses are approved by the office named after the codename."
)
PREFIX = "fuzz"  # every object this module creates is named with it, so teardown finds them


# --- the generated world --------------------------------------------------------------------------


@dataclass
class UserSpec:
    name: str
    superuser: bool = False
    staff: bool = False
    active: bool = True
    groups: set[int] = field(default_factory=set)


@dataclass
class CollectionGrants:
    everyone: bool
    groups: set[int]
    users: set[int]
    managers: set[int]


@dataclass
class DocSpec:
    collection: int
    token: str
    document_id: int = 0


@dataclass
class World:
    users: list[UserSpec]
    docs: list[DocSpec]
    rng: random.Random
    db_users: list[User] = field(default_factory=list)
    db_groups: list[Group] = field(default_factory=list)
    db_collections: list[Collection] = field(default_factory=list)
    grants: list[CollectionGrants] = field(default_factory=list)

    def tokens(self) -> list[str]:
        return [d.token for d in self.docs]

    # The oracle: the rules of issue #6, written out again on the generated values.
    def may_read(self, user_index: int, collection_index: int) -> bool:
        user, grants = self.users[user_index], self.grants[collection_index]
        if not user.active:
            return False
        if user.superuser or grants.everyone:
            return True
        return (
            user_index in grants.users
            or user_index in grants.managers
            or bool(user.groups & grants.groups)
        )

    def allowed_documents(self, user_index: int) -> set[int]:
        return {d.document_id for d in self.docs if self.may_read(user_index, d.collection)}

    def denied_tokens(self, user_index: int) -> set[str]:
        allowed = self.allowed_documents(user_index)
        return {d.token for d in self.docs if d.document_id not in allowed}

    def draw_grants(self) -> None:
        """New random grants and group memberships, written to the database."""
        rng = self.rng
        for spec in self.users:
            spec.groups = set(rng.sample(range(N_GROUPS), rng.choice([0, 1, 1, 2])))
        self.grants = [
            CollectionGrants(
                everyone=rng.random() < 0.2,
                groups=set(rng.sample(range(N_GROUPS), rng.choice([0, 1, 1, 2]))),
                users=set(rng.sample(range(N_USERS), rng.choice([0, 1, 2]))),
                managers=set(rng.sample(range(N_USERS), rng.choice([0, 0, 1]))),
            )
            for _ in range(N_COLLECTIONS)
        ]
        for spec, user in zip(self.users, self.db_users, strict=True):
            user.groups.set([self.db_groups[g] for g in spec.groups])
        for grants, collection in zip(self.grants, self.db_collections, strict=True):
            collection.visibility = (
                Collection.Visibility.EVERYONE
                if grants.everyone
                else Collection.Visibility.RESTRICTED
            )
            collection.save(update_fields=["visibility"])
            collection.reader_groups.set([self.db_groups[g] for g in grants.groups])
            collection.reader_users.set([self.db_users[u] for u in grants.users])
            collection.managers.set([self.db_users[u] for u in grants.managers])


def _token(rng: random.Random, taken: set[str]) -> str:
    # Consonant-vowel words: one English stem each, and never a real word.
    while True:
        word = "".join(
            rng.choice("bdfgklmnprtvz") + rng.choice("aeiou") for _ in range(4)
        ) + rng.choice("bdfgklmnprtvz")
        if word not in taken:
            taken.add(word)
            return word


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, tmp_path_factory) -> World:
    rng = random.Random(SEED)
    users = [UserSpec(f"{PREFIX}-user-{i:02d}") for i in range(N_USERS)]
    users[0].superuser = users[0].staff = True
    users[1].staff = True
    users[2].active = False  # will hold grants, and must still see nothing
    taken: set[str] = set()
    docs = [
        DocSpec(c, _token(rng, taken))
        for c in range(N_COLLECTIONS)
        for _ in range(rng.choice([2, 3]))
    ]
    world = World(users, docs, rng)
    folder = tmp_path_factory.mktemp("fuzz-docs")
    # One torch thread: thousands of one-line query embeddings are ~10x faster on a busy CPU than
    # with threads fighting over the cores (a test-speed setting; results are the same).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with django_db_blocker.unblock():
        last_row = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        world.db_groups = [
            Group.objects.create(name=f"{PREFIX}-group-{g}") for g in range(N_GROUPS)
        ]
        world.db_users = [
            User.objects.create_user(
                spec.name,
                password="a-long-test-password",
                is_superuser=spec.superuser,
                is_staff=spec.staff,
                is_active=spec.active,
            )
            for spec in users
        ]
        world.db_collections = [
            Collection.objects.create(name=f"{PREFIX}-collection-{c}") for c in range(N_COLLECTIONS)
        ]
        for number, doc in enumerate(docs):
            doc.document_id = _ingest(world.db_collections[doc.collection], doc, number, folder)
        # The vector surface's completeness check relies on all chunks fitting in one result page.
        assert Chunk.objects.filter(document__collection__name__startswith=PREFIX).count() <= 50
        AuditEvent.objects.filter(pk__gt=last_row).delete()  # the world's own upload rows
        yield world
        _teardown()
    torch.set_num_threads(threads)


def _ingest(collection: Collection, doc: DocSpec, number: int, folder: Path) -> int:
    if number % 2:
        path = folder / f"note-{number}.md"
        path.write_text(f"# Note {number}\n\n{doc.token} is the codename here.\n\n{SHARED_TEXT}\n")
    else:
        path = folder / f"note-{number}.txt"
        path.write_text(f"Note {number}\n\n{doc.token} is the codename here. {SHARED_TEXT}\n")
    result = services.register_path(collection, path, enqueue=False)
    pipeline.ingest(result.document.pk)
    document = Document.objects.get(pk=result.document.pk)
    assert document.status == Document.Status.READY, document.error
    return document.pk


def _teardown() -> None:
    users = User.objects.filter(username__startswith=PREFIX)
    Conversation.objects.filter(user__in=users).delete()
    AuditEvent.objects.filter(username__startswith=PREFIX).delete()
    Document.objects.filter(collection__name__startswith=PREFIX).delete()
    Collection.objects.filter(name__startswith=PREFIX).delete()
    users.delete()
    Group.objects.filter(name__startswith=PREFIX).delete()


# --- surfaces: everything a user can get documents through --------------------------------------


@dataclass(frozen=True)
class Exposure:
    """A document a surface showed, with the text it showed of it."""

    document_id: int
    text: str = ""


Surface = Callable[[User, Client, str], list[Exposure]]


def _search_surface(mode: str, widen: bool = False) -> Surface:
    def run(user: User, client: Client, query: str) -> list[Exposure]:
        widened = list(Collection.objects.values_list("pk", flat=True)) if widen else None
        return [
            Exposure(p.document_id, f"{p.document_title} {p.heading} {p.text}")
            for p in search(user, query, limit=50, collection_ids=widened, mode=mode)
        ]

    return run


def _answer_surface(user: User, client: Client, query: str) -> list[Exposure]:
    from retrieval.answering import answer

    result = answer(user, query, via="web")
    exposures = [
        Exposure(c.document_id, f"{c.document_title} {c.snippet}") for c in result.citations
    ]
    # The answer's own text counts as shown, attributed to no document: it must hold no
    # token of a denied document either.
    return [*exposures, Exposure(0, result.text)]


def _api_search_surface(user: User, client: Client, query: str) -> list[Exposure]:
    response = client.post(
        "/api/v1/search", {"query": query, "limit": 50}, content_type="application/json"
    )
    if not user.is_active:
        assert response.status_code in {401, 403}
        return []
    assert response.status_code == 200, response.content[:300]
    return [
        Exposure(r["document_id"], f"{r['document_title']} {r['text']}")
        for r in response.json()["results"]
    ]


QUERY_SURFACES: dict[str, Surface] = {
    "search:hybrid": _search_surface("hybrid"),
    "search:vector": _search_surface("vector"),
    "search:fts": _search_surface("fts"),
    "search:widened-to-all-collections": _search_surface("hybrid", widen=True),
    "api:search": _api_search_surface,
    "answer": _answer_surface,
}


def _check(world: World, user_index: int, surface: str, exposures: list[Exposure], query: str):
    allowed = world.allowed_documents(user_index)
    denied = world.denied_tokens(user_index)
    for exposure in exposures:
        where = f"{surface} for {world.users[user_index].name} asking {query!r}"
        assert exposure.document_id in allowed | {0}, f"{where}: document {exposure.document_id}"
        # A token the user typed may be echoed back ("none of your documents mention X"); then
        # only the denied document's own sentence around it counts as a leak.
        leaked = {
            t
            for t in denied
            if (f"{t} is the codename" if t in query.lower() else t) in exposure.text.lower()
        }
        assert not leaked, f"{where}: text of denied documents {leaked} in {exposure.text[:500]!r}"


# --- the fuzz --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_no_surface_ever_shows_a_document_the_rules_deny(world, settings, capsys):
    settings.RAG_API_RATE = ""  # thousands of API calls from a dozen users, on purpose
    settings.RAG_ASK_RATE = ""
    queries = [*world.tokens(), *SHARED_QUERIES]
    rng = random.Random(SEED + 1)
    queries += [" ".join(rng.sample(world.tokens(), 2)) for _ in range(3)]

    queries = queries[: int(os.environ.get("RAG_FUZZ_MAX_QUERIES", len(queries)))]
    timings: dict[str, float] = {}
    checks: dict[str, int] = {}
    shown: dict[str, int] = {}  # exposures of readable documents each surface returned
    pairs = 0
    conversations_by_user: dict[int, list[int]] = {}
    for _ in range(ROUNDS):
        world.draw_grants()
        clients = []
        for user in world.db_users:
            client = Client()
            client.force_login(user)
            clients.append(client)
        # Every surface takes part: one that raises (NotImplementedError included) fails the fuzz.
        surfaces = dict(QUERY_SURFACES)

        for index, user in enumerate(world.db_users):
            user.refresh_from_db()
            started = time.perf_counter()
            _check_lists_and_downloads(world, index, user, clients[index])
            _check_old_citations(world, index, user, conversations_by_user.get(index, []))
            timings["lists"] = timings.get("lists", 0.0) + time.perf_counter() - started
            for query in queries:
                for name in _surfaces_for_pair(pairs, list(surfaces)):
                    started = time.perf_counter()
                    exposures = surfaces[name](user, clients[index], query)
                    timings[name] = timings.get(name, 0.0) + time.perf_counter() - started
                    checks[name] = checks.get(name, 0) + 1
                    _check(world, index, name, exposures, query)
                    _check_not_vacuous(world, index, name, exposures, query)
                    shown[name] = shown.get(name, 0) + sum(1 for e in exposures if e.document_id)
                pairs += 1
            conversations_by_user[index] = list(
                Conversation.objects.filter(user=user).values_list("pk", flat=True)
            )

    message = (
        f"permission fuzz (seed {SEED}): {pairs} (user, query) pairs checked over {ROUNDS} rounds "
        f"of grants, {len(world.db_users)} users, {len(world.docs)} documents in "
        f"{N_COLLECTIONS} collections; checks per surface: {checks}; documents shown: {shown}"
    )
    with capsys.disabled():
        print(f"\n{message}\n  seconds: { {k: round(v, 1) for k, v in timings.items()} }")
    # Not the loop's own count: every surface was really exercised, and each showed readable
    # documents (a surface that showed nothing would pass every leak check vacuously).
    assert set(checks) == set(QUERY_SURFACES), checks
    assert all(shown.get(name, 0) > 0 for name in QUERY_SURFACES), shown


def _surfaces_for_pair(pair: int, names: list[str]) -> list[str]:
    """Every pair goes through the main search; the other surfaces take turns, so each sees a
    fair share of the pairs and the whole fuzz stays within about a minute."""
    main, others = names[:1], names[1:]
    return [*main, others[pair % len(others)]] if others else main


def _check_not_vacuous(world: World, index: int, surface: str, exposures: list[Exposure], query):
    """The filter must not pass by showing nothing: readable documents are found."""
    found = {e.document_id for e in exposures}
    allowed = world.allowed_documents(index)
    if surface in {"search:hybrid", "search:fts"} and query in world.tokens():
        owner = next(d for d in world.docs if d.token == query)
        if owner.document_id in allowed:
            assert owner.document_id in found, (surface, world.users[index].name, query)
    if surface == "search:vector":
        # Every chunk fits within the limit of 50, so the nearest neighbours are all of them.
        assert found == allowed, (surface, world.users[index].name, query)


def _check_lists_and_downloads(world: World, index: int, user: User, client: Client) -> None:
    allowed_docs = world.allowed_documents(index)
    allowed_collections = {
        world.db_collections[c].pk for c in range(N_COLLECTIONS) if world.may_read(index, c)
    }
    mine = Document.objects.filter(collection__name__startswith=PREFIX)
    readable = set(
        permissions.readable_documents(user).filter(pk__in=mine).values_list("pk", flat=True)
    )
    assert readable == allowed_docs, user.username
    for doc in world.docs:
        document = Document.objects.get(pk=doc.document_id)
        assert permissions.can_read_document(user, document) == (doc.document_id in allowed_docs)
    ours = {c.pk for c in world.db_collections}
    assert set(permissions.readable_collection_ids(user)) & ours == allowed_collections

    # Downloads: the file for readers, a 404 (not a 403: existence is not revealed) otherwise.
    for doc in world.docs:
        response = client.get(reverse("web:download", args=[doc.document_id]))
        if doc.document_id in allowed_docs:
            assert response.status_code == 200, (user.username, doc.token)
            assert doc.token in b"".join(response.streaming_content).decode()
        elif user.is_active:
            assert response.status_code == 404, (user.username, doc.token, response.status_code)
        else:
            # An inactive account is not signed in at all: sent to the sign-in page, like anyone.
            assert response.status_code == 302, (user.username, doc.token)
            assert response["Location"].startswith(settings.LOGIN_URL), response["Location"]

    # API lists and their counters.
    documents = client.get("/api/v1/documents/", {"page_size": 200})
    collections = client.get("/api/v1/collections/", {"page_size": 200})
    if not user.is_active:
        assert documents.status_code in {401, 403}
        assert collections.status_code in {401, 403}
        return
    listed = {d["id"] for d in documents.json()["results"]}
    assert listed & {d.document_id for d in world.docs} == allowed_docs
    counts = {c["id"]: c["document_count"] for c in collections.json()["results"]}
    assert set(counts) & ours == allowed_collections
    for collection in world.db_collections:
        if collection.pk in counts:
            expected = sum(
                1 for d in world.docs if world.db_collections[d.collection] == collection
            )
            assert counts[collection.pk] == expected, (user.username, collection.name)


def _check_old_citations(world: World, index: int, user: User, conversation_ids: list[int]) -> None:
    """Conversations from the previous round: citations now show only still-readable documents;
    nobody else's conversation is reachable."""
    from retrieval.selectors import get_conversation, messages_with_citations

    allowed = world.allowed_documents(index)
    for conversation in Conversation.objects.filter(pk__in=conversation_ids):
        for message in messages_with_citations(user, conversation):
            for citation in message.citations:
                if citation.document_id is not None:
                    assert citation.document_id in allowed
                denied = world.denied_tokens(index)
                assert not {t for t in denied if t in citation.snippet.lower()}
    others = Conversation.objects.filter(user__username__startswith=PREFIX).exclude(user=user)
    for other in others[:5]:
        assert get_conversation(user, other.pk) is None


def test_tokens_are_distinct_words():
    rng = random.Random(SEED)
    taken: set[str] = set()
    tokens = [_token(rng, taken) for _ in range(50)]
    assert len(set(tokens)) == 50
    assert all(set(t) <= set(string.ascii_lowercase) for t in tokens)


# --- many closer matches the user may not read -----------------------------------------------------

DENSE_QUERY = "zoltrana quarterly mileage allowance for drivers"
READABLE_TEXT = (
    "Staff who drive their own car are paid the zoltrana mileage allowance once a quarter, "
    "after the office checks the log book."
)
# Near-duplicates of the question: each closer to it than the readable passage, by both measures.
DENSE_VARIANTS = [
    f"{DENSE_QUERY}. {DENSE_QUERY}.",
    f"The {DENSE_QUERY}: the zoltrana quarterly mileage allowance.",
    f"Zoltrana quarterly mileage allowance. {DENSE_QUERY}, quarterly.",
    f"{DENSE_QUERY} (zoltrana mileage allowance, quarterly, drivers).",
]


def _dense_row_count() -> int:
    """More unreadable matches than every depth the search has: its result limit, the candidates
    each method takes before fusion, and the HNSW scan's ef_search."""
    from django.db import connection

    from retrieval.search import CANDIDATES

    with connection.cursor() as cursor:
        cursor.execute("SHOW hnsw.ef_search")
        ef_search = int(cursor.fetchone()[0])
    return 3 * max(settings.RAG_SEARCH_TOP_K, CANDIDATES, ef_search)


@pytest.mark.django_db
def test_the_readable_passage_comes_back_under_many_closer_unreadable_matches(
    user, ingest_file, tmp_path
):
    """Filtering after the LIMIT, or an HNSW scan that stops before enough rows pass the
    permission filter, would return nothing readable here: every unreadable row is a closer match
    than the one readable passage, and there are three times more of them than any search depth."""
    from django.db import connection

    from ingestion.embedding import embed_query, embed_texts
    from retrieval.search import MODES

    readable = make_collection_for(user, "Open to this user")
    path = tmp_path / "allowance.txt"
    path.write_text(f"Mileage\n\n{READABLE_TEXT}\n")
    document = ingest_file(readable, path)
    assert document.status == Document.Status.READY, document.error

    rows = _dense_row_count()
    # Embedded once; each row then gets a slightly different vector, since the HNSW index keeps
    # identical vectors as one graph node and that would hide an early stop.
    vectors = embed_texts(DENSE_VARIANTS)
    noise = np.random.default_rng(SEED).normal(scale=0.004, size=(rows, vectors.shape[1]))
    row_vectors = vectors[np.arange(rows) % len(DENSE_VARIANTS)] + noise
    row_vectors /= np.linalg.norm(row_vectors, axis=1, keepdims=True)
    query_vector = embed_query(DENSE_QUERY)
    readable_vector = np.asarray(Chunk.objects.get(document=document).embedding)
    # The premise: every near-duplicate is closer to the question than the readable passage.
    assert min(row_vectors @ query_vector) > float(readable_vector @ query_vector)
    per_document = 25
    chunks = []
    for number in range(rows // per_document):
        secret = Collection.objects.create(name=f"Secret {number}")  # restricted, no readers
        hidden = Document.objects.create(
            collection=secret,
            file=f"documents/secret-{number}",
            original_name=f"secret-{number}.txt",
            title=f"Zoltrana mileage {number}",
            content_type="text/plain",
            size=1,
            sha256=f"{number:064x}",
            status=Document.Status.READY,
            chunk_count=per_document,
        )
        for ordinal in range(per_document):
            row = number * per_document + ordinal
            chunks.append(
                Chunk(
                    document=hidden,
                    ordinal=ordinal,
                    text=DENSE_VARIANTS[row % len(DENSE_VARIANTS)],
                    title=hidden.title,
                    token_count=16,
                    embedding=row_vectors[row].tolist(),
                )
            )
    Chunk.objects.bulk_create(chunks)
    assert Chunk.objects.exclude(document__collection=readable).count() >= rows

    for planner in ("default plan", "indexes forced"):
        if planner == "indexes forced":
            # With few readable rows the planner rightly sorts them all; here the HNSW scan (the
            # one that could stop early under a filter, as in a large corpus) must do the work.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL enable_seqscan = off")
                cursor.execute("SET LOCAL enable_sort = off")
        for mode in MODES:
            passages = search(user, DENSE_QUERY, mode=mode)
            found = [p.document_id for p in passages]
            assert document.pk in found, (planner, mode, found)
            assert set(found) == {document.pk}, (planner, mode)

    client = Client()
    client.force_login(user)
    response = client.post(
        "/api/v1/search", {"query": DENSE_QUERY}, content_type="application/json"
    )
    assert response.status_code == 200, response.content[:300]
    assert [r["document_id"] for r in response.json()["results"]] == [document.pk]


def make_collection_for(user: User, name: str) -> Collection:
    collection = Collection.objects.create(name=name)
    collection.reader_users.set([user])
    return collection
