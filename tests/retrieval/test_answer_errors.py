"""An answer whose search fails says why (timed out), instead of "Something went wrong"."""

from __future__ import annotations

from django.db import connection

from retrieval.answering import answer
from retrieval.models import Message
from retrieval.search import TIMEOUT_MESSAGE
from tests.conftest import make_collection
from tests.documents import write_markdown


def test_a_search_that_times_out_ends_the_answer_with_its_reason(
    db, tmp_path, ingest_file, user, settings
):
    settings.RAG_LLM_BASE_URL = ""
    collection = make_collection("Handbook", everyone=True)
    ingest_file(
        collection,
        write_markdown(tmp_path / "tea.md", "Tea", [("Steeping", "Green tea steeps 2 minutes.")]),
    )
    settings.RAG_SEARCH_TIMEOUT_MS = 50

    def slow_statement(execute, sql, params, many, context):
        if "weighted_terms" in sql:
            execute("SELECT pg_sleep(2)", None, False, context)  # slower than the limit
        return execute(sql, params, many, context)

    with connection.execute_wrapper(slow_statement):
        result = answer(user, "How long does green tea steep?")

    assert result.outcome == Message.Outcome.ERROR
    assert result.text == TIMEOUT_MESSAGE
    assert Message.objects.get(pk=result.message_id).content == TIMEOUT_MESSAGE
