"""Routing fuzz: two stand-in model servers over HTTP, one configured as an external (hosted)
endpoint, many collections of every sensitivity, users with different grants, questions and
follow-ups with a model picked at random. From what each stand-in RECORDED:

- no passage of an in-house-only collection ever reaches the external stand-in (nor one of a
  redacted collection while redaction is unavailable), and no personal data of a redacted
  collection arrives un-redacted;
- the disclosure ledger is exactly what each stand-in received: every passage in a request has a
  row for that message, endpoint and role, and no row names a passage that was not sent.

Each passage carries a unique code word; the stand-ins answer by quoting every code word of their
prompt, so earlier answers quote passages and follow-up history is tested too. RAG_FUZZ_SEED picks
another world; the default keeps runs reproducible.
"""

from __future__ import annotations

import json
import os
import random
import re
import string
from collections import defaultdict

import pytest
from django.contrib.auth.models import User

from core.endpoints import EXTERNAL, IN_HOUSE
from ingestion.models import Chunk, Collection
from retrieval import routing
from retrieval.answering import answer
from retrieval.models import Disclosure, Message
from retrieval.query_expansion import REWRITE_SYSTEM
from tests.routing_world import add_passages, stand_ins

__all__ = ["stand_ins"]  # a fixture

SEED = int(os.environ.get("RAG_FUZZ_SEED", "20261130"))
N_USERS, CONVERSATIONS, MAX_FOLLOW_UPS = 5, 30, 3
SENSITIVITIES = ["in_house", "in_house", "redacted", "redacted", "shareable", "shareable"]
TOPICS = [
    ("Travel expenses", "Travel expenses are refunded within thirty days of the trip report."),
    ("Annual leave", "Annual leave requests go to the team lead two weeks ahead."),
    ("Laptop security", "Laptops must use full disk encryption and lock after five minutes."),
]
QUESTIONS = [
    "How are travel expenses refunded?",
    "When do annual leave requests go to the team lead?",
    "What must laptops use for security?",
    "Who is the contact for travel expenses?",
]
FOLLOW_UPS = ["And who is the contact for that?", "What about its deadline?", "Why is that?"]
# "ref-kw…": a form the name recogniser never takes for a name (plain "kwabcdef" sometimes is).
CODE = re.compile(r"\bref-kw[a-z]{6}\b")
# Names the shipped spaCy model finds in these sentences. Its recall on names is measured by
# tests/retrieval/test_redaction.py; here the question is only where text is routed.
FIRST = ["Margaret", "Oliver", "Henrik", "Daniel", "John", "Mary", "Peter", "Anna"]
LAST = ["Thompson", "Fernandez", "Brennan", "Keller", "Smith", "Johnson"]


def quote_codes(body: dict) -> str:
    """The stand-ins' answer: every code word of the prompt, cited; a rewrite job gets a query."""
    if not body.get("stream"):
        return "standalone question about the policy contact"
    found = sorted(set(CODE.findall(json.dumps(body["messages"]))))
    return f"Quoted: {' '.join(found)} [1]"


@pytest.fixture
def one_torch_thread():
    """Query embeddings one at a time are faster on a busy CPU without threads fighting."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def quoting(stand_ins, settings):
    """The stand-ins answer by quoting the code words of their prompt; rewrites are on."""
    for server in stand_ins:
        server.answer = quote_codes
    settings.RAG_LLM_REWRITE = True
    return stand_ins


def build_world(rng: random.Random) -> dict:
    """Collections of every sensitivity with two one-passage documents each; every passage has a
    code word and a person's name, e-mail address and phone number. Rows are written directly
    with real embeddings (the pipeline's parsing is tested elsewhere and costs seconds a file)."""
    codes: dict[str, int] = {}  # code word -> chunk id
    personal: dict[int, list[str]] = {}  # chunk id -> personal data in it
    sensitivities = list(SENSITIVITIES)
    rng.shuffle(sensitivities)
    collections = []
    # Every passage names someone else: personal data identifies its passage.
    names = rng.sample([(f, la) for f in FIRST for la in LAST], 2 * len(sensitivities))
    for index, sensitivity in enumerate(sensitivities):
        collection = Collection.objects.create(
            name=f"routing-fuzz-{index}",
            sensitivity=sensitivity,
            # Some collections default to the hosted model: the default is a choice too.
            default_model=rng.choice(["", "", "hosted"]),
        )
        collections.append(collection)
        passages, data, code_words = [], [], []
        for number in range(2):
            heading, sentence = rng.choice(TOPICS)
            code = "ref-kw" + "".join(rng.choices(string.ascii_lowercase, k=6))
            first, last = names.pop()
            email = f"{first.lower()}.{last.lower()}{index}{number}@example.org"
            phone = f"+44 20 7946 0{rng.randint(100, 999)}"
            text = (
                f"{sentence} Reference {code}. The contact is {first} {last}, {email}, "
                f"phone {phone}."
            )
            passages.append((heading, heading, text))
            data.append([f"{first} {last}", email, phone])
            code_words.append(code)
        for chunk, personal_data, code in zip(
            add_passages(collection, passages), data, code_words, strict=True
        ):
            codes[code] = chunk.pk
            personal[chunk.pk] = personal_data
    users = []
    for number in range(N_USERS):
        user = User.objects.create_user(f"routing-fuzz-{number}")
        readable = rng.sample(collections, rng.randint(2, len(collections)))
        for collection in readable:
            collection.reader_users.add(user)
        users.append((user, readable))
    chunk_collection = dict(Chunk.objects.values_list("pk", "document__collection_id"))
    return {
        "codes": codes,
        "personal": personal,
        "users": users,
        "sensitivity": {c.pk: c.sensitivity for c in collections},
        "collections": collections,
        "chunk_collection": chunk_collection,
    }


def role_of(body: dict) -> str:
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    return "rewrite" if system == REWRITE_SYSTEM else "answer"


def test_no_passage_reaches_an_endpoint_its_collection_does_not_allow(
    db, quoting, one_torch_thread
):
    local, hosted = quoting
    rng = random.Random(SEED)
    world = build_world(rng)
    redaction = routing.new_redactor() is not None
    servers = {"local": local, "hosted": hosted}
    chunk_sensitivity = {
        chunk: world["sensitivity"][collection]
        for chunk, collection in world["chunk_collection"].items()
        if collection in world["sensitivity"]
    }
    pairs = hosted_requests = redacted_rows = withheld_notes = changes = 0

    for _ in range(CONVERSATIONS):
        user, readable = rng.choice(world["users"])
        scope = rng.choice([None, None, None, rng.choice(readable).pk])
        conversation = None
        for turn in range(rng.randint(1, 1 + MAX_FOLLOW_UPS)):
            question = rng.choice(QUESTIONS) if turn == 0 else rng.choice(FOLLOW_UPS)
            if turn and rng.random() < 0.2:
                # An admin changes a collection's sensitivity mid-conversation: earlier answers
                # that drew on it follow its sensitivity now.
                changed = rng.choice(world["collections"])
                changed.sensitivity = rng.choice(["in_house", "redacted", "shareable"])
                changed.save(update_fields=["sensitivity"])
                changes += 1
                for chunk, collection in world["chunk_collection"].items():
                    if collection == changed.pk:
                        chunk_sensitivity[chunk] = changed.sensitivity
            model = rng.choice([None, "local", "hosted", "hosted"])
            before = {name: len(s.chat_requests) for name, s in servers.items()}
            result = answer(
                user,
                question,
                conversation=conversation,
                collection_id=scope if conversation is None else None,
                model=model,
            )
            assert result.outcome in (Message.Outcome.ANSWERED, Message.Outcome.NO_ANSWER), (
                result.text
            )
            withheld_notes += "may not be sent to" in result.text
            if conversation is None:
                conversation = Message.objects.get(pk=result.message_id).conversation
            pairs += 1

            # What each stand-in received for this answer, per role, as chunk ids.
            received: dict[tuple[str, str], set[int]] = defaultdict(set)
            for name, server in servers.items():
                for request in server.chat_requests[before[name] :]:
                    text = json.dumps(request.body)
                    chunks = {world["codes"][code] for code in CODE.findall(text)}
                    received[(name, role_of(request.body))] |= chunks
                    if name != "hosted":
                        continue
                    hosted_requests += 1
                    for chunk in chunks:
                        sensitivity = chunk_sensitivity[chunk]
                        assert sensitivity != "in_house", (chunk, question, text[:500])
                        assert redaction or sensitivity == "shareable", (chunk, text[:500])
                    for chunk, data in world["personal"].items():
                        if chunk_sensitivity[chunk] == "shareable":
                            continue
                        for item in data:
                            assert item not in text, (item, chunk_sensitivity[chunk])
            ledger: dict[tuple[str, str], set[int]] = defaultdict(set)
            for row in Disclosure.objects.filter(message_id=result.message_id):
                ledger[(row.endpoint, row.role)].add(row.chunk_id)
                assert row.user_id == user.pk
                assert row.location == (EXTERNAL if row.endpoint == "hosted" else IN_HOUSE)
                assert row.sensitivity == chunk_sensitivity[row.chunk_id]
                if row.endpoint != "hosted":
                    assert not row.redacted, row  # in-house endpoints get the text as it is
                elif row.sensitivity == "redacted":
                    assert row.redacted, row
                redacted_rows += row.redacted
            expected = {k: v for k, v in received.items() if v}
            assert dict(ledger) == expected, (
                question,
                model,
                {
                    k: (
                        ledger.get(k, set()) - expected.get(k, set()),
                        "rows not received",
                        expected.get(k, set()) - ledger.get(k, set()),
                        "received without row",
                    )
                    for k in {*ledger, *expected}
                },
            )

    print(
        f"routing fuzz: seed {SEED}, {pairs} (user, question) pairs checked, {hosted_requests} "
        f"requests to the external stand-in, {redacted_rows} redacted ledger rows, "
        f"{withheld_notes} answers noting withheld passages, {changes} sensitivity changes "
        f"mid-conversation, redaction "
        f"{'on' if redaction else 'unavailable (redacted collections stay in-house)'}"
    )
    assert pairs >= CONVERSATIONS
    assert hosted_requests > 10  # the external endpoint was really exercised
    assert withheld_notes > 0  # and refused something
