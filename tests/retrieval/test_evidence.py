"""Declining: a question naming something that no readable passage mentions is declined with
that reason, whatever the nearest passage looks like; words only an unreadable collection holds
count as absent (and the reply never says where they are)."""

from __future__ import annotations

import pytest

from retrieval import evidence
from retrieval.answering import answer
from retrieval.models import Citation, Message
from tests.conftest import make_collection
from tests.documents import write_markdown


@pytest.fixture
def config_docs(db, tmp_path, ingest_file, user):
    readable = make_collection("Handbook", everyone=True)
    secret = make_collection("Secret")
    ingest_file(
        readable,
        write_markdown(
            tmp_path / "json.md",
            "Configuration files",
            [
                ("JSON", "Load a JSON configuration file into a dict with json.load(file)."),
                ("INI", "The configparser module reads INI configuration files."),
            ],
        ),
    )
    ingest_file(
        secret,
        write_markdown(
            tmp_path / "yaml.md",
            "YAML notes",
            [("Loading", "Use yaml.safe_load from PyYAML to read a YAML configuration file.")],
        ),
    )
    return readable, secret


def test_specific_words_are_names_and_rare_words_not_plain_english(db):
    assert evidence.is_specific("YAML")
    assert evidence.is_specific("DataFrame")
    assert evidence.is_specific("pydantic")
    assert evidence.is_specific("safe_load")
    assert not evidence.is_specific("file")
    assert not evidence.is_specific("configuration")
    assert not evidence.is_specific("in")
    assert not evidence.is_specific("2024")
    # Everyday words that a paraphrase may use although the documents do not.
    assert not evidence.is_specific("accented")
    assert not evidence.is_specific("prerequisites")
    assert evidence.specific_words("a string like -rwxr-xr-x from aiohttp") == ["aiohttp"]
    # Markup pasted into a question is not what it asks about.
    assert evidence.specific_words("Why? <img src=x onerror=alert(2)>") == []


def test_assess_names_the_specific_words_no_readable_passage_holds(config_docs):
    readable, secret = config_docs

    found = evidence.assess("How do I load a YAML configuration file into a dict?", [readable.pk])
    known = evidence.assess("How do I load a JSON configuration file into a dict?", [readable.pk])

    assert found.missing == ("YAML",)
    assert known.missing == ()
    # The same words are there once the collection that holds them may be read.
    assert evidence.assess("How to load YAML?", [readable.pk, secret.pk]).missing == ()


def test_the_extractive_answerer_declines_a_question_about_an_absent_subject(
    config_docs, user, settings
):
    settings.RAG_LLM_BASE_URL = ""

    declined = answer(user, "How do I load a YAML configuration file into a dict?")
    answered = answer(user, "How do I load a JSON configuration file into a dict?")

    assert declined.outcome == Message.Outcome.NO_ANSWER
    assert "“YAML”" in declined.text
    assert "Secret" not in declined.text
    assert not Citation.objects.filter(message_id=declined.message_id).exists()
    assert answered.outcome == Message.Outcome.ANSWERED
    assert "json.load" in answered.text


def test_a_model_is_not_second_guessed_by_the_word_check(config_docs, user, fake_llm, settings):
    fake_llm.answer = "The documents do not cover YAML [1]."

    result = answer(user, "How do I load a YAML configuration file into a dict?")

    assert result.outcome == Message.Outcome.ANSWERED
    assert len(fake_llm.chat_requests) == 1
