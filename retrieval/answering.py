"""Answer step: rewrite → search → prompt → generate → cite, streamed as events.

The web UI, the API and the OpenAI-compatible endpoint all call `stream_answer` (or `answer`,
which collects the stream) and turn its events into their output with retrieval.answer_stream;
they hold no answering logic.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator, Sequence

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.utils import timezone

from core import audit, endpoints
from core.audit import Action, Via
from ingestion.permissions import readable_collection_ids
from retrieval import evidence, extractive, llm, prompts, routing, services
from retrieval.answer_events import (
    AnswerEvent,
    Citations,
    CitationView,
    CollectedAnswer,
    Done,
    Error,
    Meta,
    Thinking,
    Token,
    collect,
)
from retrieval.citations import CITATION_MARKER
from retrieval.limits import MAX_QUESTION_CHARS
from retrieval.models import Citation, Conversation, Message
from retrieval.search import Passage, SearchTimeout, SearchUnavailable

logger = logging.getLogger(__name__)


SNIPPET_CHARS = 1500
NO_ANSWER_TEXT = (
    "I could not find anything about this in the documents you can access, so I cannot answer it."
)
ERROR_TEXT = "Something went wrong while answering. Please try again."

# Words that make a question lean on the one before it ("what about its default?").
_ANAPHORA = frozenset(
    {"it", "its", "it's", "this", "that", "these", "those", "they", "them", "their", "there"}
    | {"he", "she", "him", "her", "same", "former", "latter", "one", "ones", "above"}
)
_FOLLOW_UP_OPENERS = ("and ", "what about", "how about", "also", "but ", "or ", "then ", "why not")
REWRITE_MAX_TERMS = 8


def stream_answer(
    user: User,
    question: str,
    *,
    conversation: Conversation | None = None,
    collection_id: int | None = None,
    via: Via = Via.WEB,
    model: str | None = None,
) -> Iterator[AnswerEvent]:
    """Answer `question` for `user`, streamed as AnswerEvents; `model` names the answer
    endpoint a person picked (core.endpoints), else the collection's default or the default.

    Checks run before the first event, when this is called: ValueError for an empty or over-long
    question, routing.UnknownModel (a ValueError) for a model that may not answer,
    PermissionDenied for another user's conversation. Everything after that (no passages, a
    model that is down, a bug) ends the stream with a `done` or an `error` event.
    """
    question = question.strip()
    if not question:
        raise ValueError("Please type a question.")
    if len(question) > MAX_QUESTION_CHARS:
        raise ValueError(f"Questions are limited to {MAX_QUESTION_CHARS} characters.")
    if conversation is not None and conversation.user_id != user.pk:
        raise PermissionDenied("This conversation belongs to someone else.")
    scope = collection_id
    if scope is None and conversation is not None:
        scope = conversation.collection_id
    try:
        endpoint: endpoints.Endpoint | Exception = routing.answer_endpoint(model, scope)
    except endpoints.EndpointConfigurationError as exc:
        endpoint = exc  # reported by the stream, like a model that is down
    return _stream(user, question, conversation, collection_id, via, endpoint)


def answer(
    user: User,
    question: str,
    *,
    conversation: Conversation | None = None,
    collection_id: int | None = None,
    via: Via = Via.WEB,
    model: str | None = None,
) -> CollectedAnswer:
    """`stream_answer`, collected. A failed answer has outcome model_unavailable or error and
    the friendly message as its text."""
    return collect(
        stream_answer(
            user,
            question,
            conversation=conversation,
            collection_id=collection_id,
            via=via,
            model=model,
        )
    )


# --- rewrite ------------------------------------------------------------------------------------


def is_follow_up(question: str) -> bool:
    """A question that leans on the previous one: a pronoun, a "what about" opener, or so few
    meaningful words that it cannot stand alone."""
    lowered = question.lower().strip()
    words = set(re.findall(r"[a-z']+", lowered))
    return (
        bool(words & _ANAPHORA)
        or lowered.startswith(_FOLLOW_UP_OPENERS)
        or len(extractive.content_words(question)) <= 2
    )


def rewrite_query(
    question: str,
    previous_queries: Sequence[str],
    history: Sequence[tuple[str, str]] = (),
    endpoint: endpoints.Endpoint | None = None,
) -> str:
    """A standalone search query for `question`. With RAG_LLM_REWRITE and a model configured,
    the model writes it from the conversation (retrieval.query_expansion). Otherwise, and when
    the model fails, deterministic: a follow-up gets the key terms of the previous standalone
    query (which already carries its own context) put in front."""
    if not previous_queries:
        return question
    from retrieval import query_expansion

    if rewritten := query_expansion.model_rewrite(question, history, endpoint):
        return rewritten
    if not is_follow_up(question):
        return question
    present = set(extractive.content_words(question))
    terms: list[str] = []
    for word in extractive.content_words(previous_queries[-1]):
        if word not in present and word not in terms:
            terms.append(word)
    if not terms:
        return question
    return f"{' '.join(terms[:REWRITE_MAX_TERMS])} {question}"


# --- cite -------------------------------------------------------------------------------------


class MarkerFilter:
    """Passes streamed text through, keeping [n] markers that name a passage of the prompt
    (1..count) and dropping others with the space before them. Works across piece boundaries."""

    def __init__(self, count: int):
        self.count = count
        self.used: list[int] = []  # passage numbers cited, in order of first mention
        self._pending = ""  # an opened "[..." not yet closed
        self._space = ""  # whitespace held back until we know whether a dropped marker follows

    def feed(self, piece: str) -> str:
        out: list[str] = []
        for char in piece:
            if self._pending:
                if char == "]":
                    marker = self._resolve(self._pending + char)
                    out.append(self._space + marker if marker else "")
                    self._pending = self._space = ""
                elif char.isdigit() or char in ", ":
                    self._pending += char
                    if len(self._pending) > 40:
                        out.append(self._release())
                else:
                    out.append(self._release())
                    out.append(self.feed(char))
            elif char == "[":
                self._pending = char
            elif char.isspace():
                self._space += char
            else:
                out.append(self._space + char)
                self._space = ""
        return "".join(out)

    def flush(self) -> str:
        return self._release() + self._space

    def _release(self) -> str:
        text = self._space + self._pending
        self._space = self._pending = ""
        return text

    def _resolve(self, marker: str) -> str:
        match = CITATION_MARKER.fullmatch(marker)
        if not match:
            return marker  # "[]", "[ ]": not a citation, keep as written
        numbers = [int(n) for n in match.group(1).split(",")]
        kept = [n for n in numbers if 1 <= n <= self.count]
        for number in kept:
            if number not in self.used:
                self.used.append(number)
        return "".join(f"[{n}]" for n in kept)


def citation_view(citation: Citation) -> CitationView:
    return CitationView(
        number=citation.number,
        document_id=citation.document_id,
        chunk_id=citation.chunk_id,
        document_title=citation.document_title,
        page=citation.page,
        heading=citation.heading,
        snippet=citation.snippet,
    )


def _store_citations(message: Message, numbers: list[int], passages: list[Passage]) -> list:
    rows = [
        Citation(
            message=message,
            number=number,
            document_id=passages[number - 1].document_id,
            chunk_id=passages[number - 1].chunk_id,
            document_title=passages[number - 1].document_title[:500],
            page=passages[number - 1].page_start,
            heading=passages[number - 1].heading,
            snippet=passages[number - 1].text[:SNIPPET_CHARS],
            score=passages[number - 1].similarity,
        )
        for number in sorted(numbers)
    ]
    return Citation.objects.bulk_create(rows)


# --- evidence ----------------------------------------------------------------------------------


def _unknown_subject(generator, user: User, query: str, collection_id: int | None) -> str:
    """For the extractive answerer, the reply to give when the question names something that
    no passage the user may read mentions (see retrieval.evidence); "" otherwise. A model is
    told to decline on its own and may know a synonym, so it is not second-guessed here."""
    if not isinstance(generator, extractive.ExtractiveGenerator):
        return ""
    collections = readable_collection_ids(user)
    if collection_id is not None:
        collections = [cid for cid in collections if cid == collection_id]
    found = evidence.assess(query, collections)
    if not found.missing:
        return ""
    names = ", ".join(f"“{word}”" for word in found.missing[:3])
    return (
        f"None of the documents you can access mention {names}, so I cannot answer this from them."
    )


# --- the pipeline -------------------------------------------------------------------------------


def _generator_label(endpoint: endpoints.Endpoint, generator: llm.Generator) -> str:
    """Message.generator: the generator's own name for today's default endpoints, with the
    endpoint's name in front for configured ones, so an answer says which model wrote it."""
    if endpoint.derived or endpoint.in_process:
        return generator.name
    return f"{endpoint.name} ({generator.name})"


def _rewrite(
    user: User,
    reply: Message,
    question: str,
    previous_queries: list[str],
    turns: list[tuple[str, str]],
    turn_ids: list[int | None],
    answering: endpoints.Endpoint,
) -> str:
    """The standalone query. A model rewrite sees only the earlier turns its endpoint may
    receive (routing.screen_history), and its call is in the ledger like an answer's."""
    rewriter = routing.rewrite_endpoint(answering)
    if rewriter is None or not previous_queries:
        return rewrite_query(question, previous_queries)
    history, redactor = routing.screen_history(rewriter, turns, turn_ids)
    if history.turns and settings.RAG_LLM_REWRITE:
        routing.record(rewriter, endpoints.REWRITE, user=user, message_id=reply.pk, history=history)
    query = rewrite_query(question, previous_queries, history.turns, rewriter)
    # Redacted turns reach the rewriter with placeholders; the query searched has the names back.
    return redactor.restore(query) if redactor is not None else query


def release_connection() -> None:
    """Give this thread's database connection back (to the pool, else closed) while the model
    writes: seconds to minutes in which the answer asks the database nothing. Held, a hundred
    answers at once would hold a hundred connections, and PostgreSQL refuses clients past its
    max_connections; the next query after the model takes one again. Inside a transaction (a
    caller's atomic block, a test's) the connection stays: the transaction needs it."""
    if not connection.in_atomic_block:
        connection.close()


def _history(
    conversation: Conversation,
) -> tuple[list[tuple[str, str]], list[str], list[int | None]]:
    """Earlier (role, content) turns worth showing the model, earlier standalone queries, and
    per turn the assistant message's id (None for a question). An answer citing a document its
    reader can no longer read is left out: it may quote it."""
    from retrieval import selectors  # selectors imports this module

    recent = list(conversation.messages.order_by("-created_at", "-id")[: 2 * prompts.HISTORY_TURNS])
    recent.reverse()
    withheld = selectors.answers_quoting_unreadable(conversation.user, [m.pk for m in recent])
    turns: list[tuple[str, str]] = []
    queries: list[str] = []
    ids: list[int | None] = []
    for message in recent:
        if message.role == Message.Role.USER:
            turns.append((message.role, message.content))
            ids.append(None)
            queries.append(message.content)
        elif (
            message.outcome == Message.Outcome.ANSWERED
            and message.content
            and message.pk not in withheld
        ):
            turns.append((message.role, message.content))
            ids.append(message.pk)
            if message.search_query and queries:
                queries[-1] = message.search_query  # the standalone form of that question
    return turns, queries, ids


def _stream(
    user: User,
    question: str,
    conversation: Conversation | None,
    collection_id: int | None,
    via: Via,
    endpoint: endpoints.Endpoint | Exception,
) -> Iterator[AnswerEvent]:
    started = time.monotonic()
    if conversation is None:
        conversation = services.create_conversation(user, question, collection_id)
    elif collection_id is None:
        collection_id = conversation.collection_id
    turns, previous_queries, turn_ids = _history(conversation)
    with transaction.atomic():
        Message.objects.create(conversation=conversation, role=Message.Role.USER, content=question)
        reply = Message.objects.create(
            conversation=conversation, role=Message.Role.ASSISTANT, content=""
        )
        Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now())
    query = question
    if isinstance(endpoint, endpoints.Endpoint):
        query = _rewrite(user, reply, question, previous_queries, turns, turn_ids, endpoint)
    text_parts: list[str] = []
    cited_documents: list[int] = []
    outcome = ""
    generator_name = ""
    try:
        yield Meta(conversation_id=conversation.pk, message_id=reply.pk)
        if not isinstance(endpoint, endpoints.Endpoint):
            raise llm.LLMConfigurationError(str(endpoint))
        passages = services.timed_search(
            user,
            query,
            via="answer",
            collection_ids=[collection_id] if collection_id is not None else None,
        )
        best = max((p.similarity or 0.0 for p in passages), default=0.0)
        if best < settings.RAG_MIN_SIMILARITY:
            # Nothing relevant: say so without asking the model to make something up.
            outcome = Message.Outcome.NO_ANSWER
            text_parts.append(NO_ANSWER_TEXT)
            yield Token(NO_ANSWER_TEXT)
            yield Citations([])
        else:
            # Only what this endpoint may receive goes into its prompt (retrieval.routing).
            screened = routing.screen(endpoint, passages)
            if not screened.sent:
                outcome = Message.Outcome.NO_ANSWER
                refusal = routing.nothing_allowed_text(endpoint, len(screened.withheld))
                text_parts.append(refusal)
                yield Token(refusal)
                yield Citations([])
            else:
                history, redactor = routing.screen_history(
                    endpoint, turns, turn_ids, screened.redactor
                )
                prompt = prompts.build_prompt(question, screened.sent, history.turns)
                carried = screened.subset(prompt.passages)
                if settings.RAG_LOG_PROMPTS:
                    logger.info("prompt for message %s: %s", reply.pk, json.dumps(prompt.messages))
                generator = llm.generator_for(endpoint)
                generator_name = _generator_label(endpoint, generator)
                unknown = _unknown_subject(generator, user, query, collection_id)
                if unknown:
                    # The question names something no readable document mentions: say so
                    # rather than quote a look-alike passage.
                    outcome = Message.Outcome.NO_ANSWER
                    text_parts.append(unknown)
                    yield Token(unknown)
                    yield Citations([])
                else:
                    # The ledger row is written before anything is sent.
                    routing.record(
                        endpoint,
                        endpoints.ANSWER,
                        user=user,
                        message_id=reply.pk,
                        screened=carried,
                        history=history,
                        history_turns=len(prompt.messages) - 2,
                    )
                    markers = MarkerFilter(len(prompt.passages))
                    if not isinstance(generator, extractive.ExtractiveGenerator):
                        release_connection()  # a remote model: from here on, waiting for tokens
                    thinking = False  # a reasoning model thinks first: told once a stretch
                    pieces = generator.stream(prompt.messages, prompt.passages, query=query)
                    for piece in routing.restore(redactor, pieces):
                        if isinstance(piece, llm.Thinking):
                            if not thinking:
                                yield Thinking()
                            thinking = True
                            continue
                        thinking = False
                        if text := markers.feed(piece):
                            text_parts.append(text)
                            yield Token(text)
                    if text := markers.flush():
                        text_parts.append(text)
                        yield Token(text)
                    if note := routing.withheld_note(
                        endpoint, len(screened.withheld), history.withheld
                    ):
                        text_parts.append(f"\n\n{note}")
                        yield Token(f"\n\n{note}")
                    # the model id is known once it has answered
                    generator_name = _generator_label(endpoint, generator)
                    rows = _store_citations(reply, markers.used, carried.originals)
                    cited_documents = [row.document_id for row in rows]
                    outcome = Message.Outcome.ANSWERED
                    if generator_name == extractive.ExtractiveGenerator.name and not rows:
                        outcome = Message.Outcome.NO_ANSWER
                    yield Citations([citation_view(row) for row in rows])
    except (SearchTimeout, SearchUnavailable) as exc:
        # Say what happened: a search that timed out or could not embed the question.
        logger.warning("answer %s: search failed: %s", reply.pk, exc)
        outcome = Message.Outcome.ERROR
        text_parts = [str(exc.detail)]
        yield Error(str(exc.detail), outcome)
    except (llm.LLMError, llm.LLMConfigurationError, endpoints.EndpointConfigurationError) as exc:
        logger.warning(
            "answer %s: model unavailable: %s", reply.pk, getattr(exc, "detail", "") or exc
        )
        outcome = Message.Outcome.MODEL_UNAVAILABLE
        text_parts = [llm.UNAVAILABLE_MESSAGE]
        yield Error(llm.UNAVAILABLE_MESSAGE, outcome)
    except Exception:
        logger.exception("answer %s failed", reply.pk)
        outcome = Message.Outcome.ERROR
        text_parts = [ERROR_TEXT]
        yield Error(ERROR_TEXT, outcome)
    finally:
        # Also reached when the reader goes away mid-stream: keep what was written so far.
        reply.content = "".join(text_parts).strip()
        reply.outcome = outcome or Message.Outcome.ERROR
        reply.generator = generator_name[:200]
        reply.search_query = query
        reply.latency_ms = int((time.monotonic() - started) * 1000)
        with transaction.atomic():  # the answer and its audit row: both or neither
            reply.save(
                update_fields=["content", "outcome", "generator", "latency_ms", "search_query"]
            )
            audit.record(
                Action.ASK,
                user=user,
                via=via,
                question=question,
                document_ids=cited_documents,
                detail={
                    "conversation_id": conversation.pk,
                    "message_id": reply.pk,
                    "outcome": reply.outcome,
                },
            )
    if outcome in (Message.Outcome.ANSWERED, Message.Outcome.NO_ANSWER):
        yield Done(outcome)
