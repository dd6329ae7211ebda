"""Model-assisted query steps, used only when a generator is configured (RAG_LLM_BASE_URL):
rewriting a follow-up into a standalone search query (RAG_LLM_REWRITE) and HyDE, a hypothetical
answer passage whose embedding is searched beside the question's (RAG_HYDE).

Both are short jobs with their own short timeout (RAG_LLM_QUERY_TIMEOUT). Any failure (a model
that is down, slow, or answers nonsense) returns None and the caller falls back: the rule-based
rewrite for follow-ups, the question alone for search. A warning is logged, nothing is raised.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import httpx
from django.conf import settings

from core import endpoints
from retrieval import llm

logger = logging.getLogger(__name__)

REWRITE_MAX_TOKENS = 64
REWRITE_MAX_CHARS = 300  # a standalone query, not an essay: longer means the model misbehaved
HYDE_MAX_TOKENS = 160
HYDE_MAX_CHARS = 1500
HISTORY_CHARS = 600  # of each earlier turn shown to the rewriter: enough to resolve "it"

REWRITE_SYSTEM = (
    "You rewrite the user's last question into one standalone search query for a document "
    "search engine. Resolve pronouns and references using the conversation. Keep names, "
    "identifiers and numbers exactly. Answer with the query only: one line, no quotes, no "
    "explanation. If the question already stands alone, repeat it unchanged."
)
HYDE_SYSTEM = (
    "Write one short passage, three or four sentences, as it could appear in internal "
    "documentation, that answers the question. Write the passage only, no preamble. If you do "
    "not know, write what such a passage would plausibly say."
)


def _short_job_generator(
    endpoint: endpoints.Endpoint | None = None,
) -> llm.OpenAICompatibleGenerator | None:
    """The model client (of `endpoint`, else the configured one) with the short-job timeout, or
    None without one."""
    if endpoint is not None:
        generator: llm.Generator = llm.generator_for(endpoint)
    elif not settings.RAG_LLM_BASE_URL:
        return None
    else:
        generator = llm.get_generator()  # raises LLMConfigurationError for a forbidden endpoint
    if not isinstance(generator, llm.OpenAICompatibleGenerator):
        return None
    seconds = settings.RAG_LLM_QUERY_TIMEOUT
    generator.timeout = httpx.Timeout(seconds, connect=min(seconds, generator.timeout.connect))
    return generator


def _ask(
    job: str, messages: list[dict], max_tokens: int, endpoint: endpoints.Endpoint | None = None
) -> str | None:
    try:
        generator = _short_job_generator(endpoint)
        if generator is None:
            return None
        # A reasoning model thinks first: its budget comes on top, as for answers.
        return generator.complete(messages, max_tokens + settings.RAG_LLM_REASONING_TOKENS)
    except (llm.LLMError, llm.LLMConfigurationError) as exc:
        logger.warning(
            "%s by the model failed (%s); falling back", job, getattr(exc, "detail", exc)
        )
        return None


def model_rewrite(
    question: str,
    history: Sequence[tuple[str, str]],
    endpoint: endpoints.Endpoint | None = None,
) -> str | None:
    """A standalone query for `question` written by the model (`endpoint`, else the configured
    one) from the conversation `history` ((role, content) pairs, oldest first, already screened
    for that endpoint by retrieval.routing); None when RAG_LLM_REWRITE is off, there is no
    history, or the model fails or answers something that is not a query."""
    if not settings.RAG_LLM_REWRITE or not history:
        return None
    lines = [
        f"{'User' if role == 'user' else 'Assistant'}: {' '.join(content.split())[:HISTORY_CHARS]}"
        for role, content in history
    ]
    messages = [
        {"role": "system", "content": REWRITE_SYSTEM},
        {
            "role": "user",
            "content": "Conversation:\n"
            + "\n".join(lines)
            + f"\n\nLast question: {question}\n\nStandalone query:",
        },
    ]
    reply = _ask("query rewriting", messages, REWRITE_MAX_TOKENS, endpoint)
    if reply is None:
        return None
    query = _one_line(reply)
    if not query or len(query) > REWRITE_MAX_CHARS:
        logger.warning("query rewriting by the model gave %r; falling back", reply[:200])
        return None
    return query


def hypothetical_passage(question: str) -> str | None:
    """HyDE: a passage the model imagines answering `question`, to be embedded and searched
    beside the question; None when RAG_HYDE is off or the model fails."""
    if not settings.RAG_HYDE:
        return None
    messages = [
        {"role": "system", "content": HYDE_SYSTEM},
        {"role": "user", "content": f"Question: {question}"},
    ]
    reply = _ask("query expansion (HyDE)", messages, HYDE_MAX_TOKENS)
    passage = " ".join((reply or "").split())[:HYDE_MAX_CHARS]
    return passage or None


def _one_line(reply: str) -> str:
    """The query out of a reply: the first non-empty line, without a "Query:" label or quotes."""
    line = next((ln.strip() for ln in reply.splitlines() if ln.strip()), "")
    for label in ("standalone query:", "query:", "search query:"):
        if line.lower().startswith(label):
            line = line[len(label) :].strip()
    return line.strip("\"'`“”").strip()
