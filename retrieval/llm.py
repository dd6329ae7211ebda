"""Generate step: one small interface, `stream(messages, passages) -> Iterator[str]`, with two
implementations: an OpenAI-compatible client (vLLM, llama.cpp server) and the extractive CPU default.

`get_generator()` picks one from settings. Both stream text pieces with [n] markers that number the
passages they were given, so citations and streaming follow one code path whichever answers.

Reasoning models think before they answer: vLLM's reasoning parser sends the thinking as
`delta.reasoning_content` (or `delta.reasoning`), without it the model writes `<think>…</think>`
into the content. Neither reaches the caller: the stream yields `THINKING` (an empty string that
says "the model is thinking") in its place, so readers, stored answers and the citation parser
only ever see the answer.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Protocol

import httpx
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core import egress, metrics, model_http
from retrieval.search import Passage

logger = logging.getLogger(__name__)

UNAVAILABLE_MESSAGE = "The model is unavailable right now."
# Connection refused or connect timeout before anything was sent: safe to try again quickly.
CONNECT_RETRIES = 2
RETRY_PAUSE_S = 0.25


class LLMError(Exception):
    """Base of the errors a generator raises; `str()` is fit to show a person."""


class ModelUnavailable(LLMError):
    """The server is down, timed out, answered with an error, or broke off the answer."""

    def __init__(self, detail: str = ""):
        super().__init__(UNAVAILABLE_MESSAGE)
        self.detail = detail  # for logs, never for users
        metrics.model_error("llm")  # every failure raises this once: counted for /metrics


class LLMConfigurationError(ImproperlyConfigured):
    """RAG_LLM_BASE_URL points somewhere it may not (outside loopback and the egress allow-list)."""


class Thinking(str):
    """The type of `THINKING`: a piece of no text, yielded while the model thinks."""


THINKING = Thinking("")

_OPEN, _CLOSE = "<think>", "</think>"


class ThinkFilter:
    """Removes `<think>…</think>` from streamed content, across piece boundaries ("<thi" + "nk>"
    is a tag). `feed` returns the visible text of a piece and whether any of it was thinking;
    `flush` ends the stream: an unclosed `<think>` yields nothing of what followed it. Leading
    whitespace of the answer (the blank line after `</think>`) is dropped. Linear in the input:
    at most a tag's length is held back between pieces.

    `starts_inside`: for a model whose chat template opens the thinking itself (DeepSeek-R1 served
    without a reasoning parser), so its output begins mid-thought and only `</think>` shows."""

    def __init__(self, starts_inside: bool = False) -> None:
        self.inside = starts_inside
        self._carry = ""  # the end of the last piece, when it may start a tag
        self._started = False  # visible text has begun

    def feed(self, piece: str) -> tuple[str, bool]:
        text, self._carry = self._carry + piece, ""
        out: list[str] = []
        thought = False
        while text:
            tag = _CLOSE if self.inside else _OPEN
            index = text.find(tag)
            if index >= 0:
                if not self.inside:
                    out.append(text[:index])
                thought = True
                self.inside = not self.inside
                text = text[index + len(tag) :]
                continue
            keep = _partial_tag_length(text, tag)
            if self.inside:
                thought = thought or len(text) > keep
            else:
                out.append(text[: len(text) - keep])
            self._carry = text[len(text) - keep :] if keep else ""
            break
        return self._visible("".join(out)), thought

    def flush(self) -> str:
        carry, self._carry = self._carry, ""
        return "" if self.inside else self._visible(carry)

    def _visible(self, text: str) -> str:
        if not self._started:
            text = text.lstrip()
            self._started = bool(text)
        return text


def _partial_tag_length(text: str, tag: str) -> int:
    """The length of the longest end of `text` that is a proper beginning of `tag`."""
    for length in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:length]):
            return length
    return 0


def strip_thinking(text: str) -> str:
    """A whole (non-streamed) reply without its `<think>` blocks."""
    think = ThinkFilter(settings.RAG_LLM_STARTS_THINKING)
    visible, _ = think.feed(text)
    return (visible + think.flush()).strip()


class Generator(Protocol):
    name: str  # stored in Message.generator

    def stream(
        self, messages: list[dict], passages: Sequence[Passage], *, query: str = ""
    ) -> Iterator[str]: ...


# --- where an endpoint may live ---------------------------------------------------------------


def is_allowed_endpoint(url: str) -> bool:
    """True when `url` is http(s) on loopback or on a host RAG_ALLOWED_HOSTS_EGRESS allows.
    The rule itself lives in core.egress, shared with `manage.py privacy_check`."""
    return egress.endpoint_allowed(url, settings.RAG_ALLOWED_HOSTS_EGRESS)


def get_generator() -> Generator:
    """The configured generator: the OpenAI-compatible client when RAG_LLM_BASE_URL is set,
    else the extractive answerer. Raises LLMConfigurationError for a forbidden endpoint."""
    base_url = settings.RAG_LLM_BASE_URL
    if not base_url:
        from retrieval.extractive import ExtractiveGenerator

        return ExtractiveGenerator()
    if not is_allowed_endpoint(base_url):
        raise LLMConfigurationError(
            f"RAG_LLM_BASE_URL={base_url!r} is neither loopback nor a host listed in "
            "RAG_ALLOWED_HOSTS_EGRESS; refusing to send documents there."
        )
    return OpenAICompatibleGenerator(
        base_url=base_url,
        model=settings.RAG_LLM_MODEL,
        api_key=settings.RAG_LLM_API_KEY,
        timeout=settings.RAG_LLM_TIMEOUT,
        connect_timeout=settings.RAG_LLM_CONNECT_TIMEOUT,
        max_tokens=settings.RAG_LLM_MAX_ANSWER_TOKENS + settings.RAG_LLM_REASONING_TOKENS,
        temperature=settings.RAG_LLM_TEMPERATURE,
    )


# --- OpenAI-compatible chat completions over HTTP ---------------------------------------------

_model_ids: dict[str, str] = {}
_model_ids_lock = threading.Lock()


class OpenAICompatibleGenerator:
    """POST {base}/chat/completions with stream=true and read the server-sent events."""

    def __init__(
        self,
        base_url: str,
        model: str = "",
        api_key: str = "",
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        max_tokens: int = 768,
        temperature: float = 0.1,
    ):
        self.base_url = base_url.rstrip("/")
        self._model = model
        self.api_key = api_key
        # `timeout` bounds each wait for bytes (the first token included), not the whole answer.
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self.max_tokens = max_tokens
        self.temperature = temperature

    @property
    def name(self) -> str:
        return f"openai:{self._model or _model_ids.get(self.base_url, '')}"

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def model_id(self) -> str:
        """RAG_LLM_MODEL, else the first model the server lists (asked once per process)."""
        if self._model:
            return self._model
        with _model_ids_lock:
            if self.base_url not in _model_ids:
                response = self._request("GET", "/models")
                try:
                    _model_ids[self.base_url] = response.json()["data"][0]["id"]
                except (ValueError, KeyError, IndexError, TypeError) as exc:
                    raise ModelUnavailable(f"GET /models answered {response.text[:200]!r}") from exc
        return _model_ids[self.base_url]

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """A non-streaming request with the same retry and error rules as `stream`."""
        for attempt in range(CONNECT_RETRIES + 1):
            try:
                with model_http.model_client(self.timeout) as client:
                    response = client.request(
                        method, self.base_url + path, headers=self._headers(), **kwargs
                    )
            except model_http.EgressRefused as exc:
                raise ModelUnavailable(f"{method} {path}: {exc}") from exc
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt < CONNECT_RETRIES:
                    time.sleep(RETRY_PAUSE_S * (attempt + 1))
                    continue
                raise ModelUnavailable(f"{method} {path}: {exc!r}") from exc
            except httpx.HTTPError as exc:
                raise ModelUnavailable(f"{method} {path}: {exc!r}") from exc
            _raise_for_status(response, f"{method} {path}")
            return response
        raise AssertionError("unreachable")

    def complete(self, messages: list[dict], max_tokens: int | None = None) -> str:
        """The whole answer in one response (used for short jobs such as query rewriting)."""
        body = self._body(messages, stream=False, max_tokens=max_tokens)
        response = self._request("POST", "/chat/completions", json=body)
        try:
            # reasoning_content, if the server splits it off, is simply not read.
            return strip_thinking(response.json()["choices"][0]["message"]["content"] or "")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ModelUnavailable(f"unexpected completion {response.text[:200]!r}") from exc

    def _body(self, messages: list[dict], stream: bool, max_tokens: int | None = None) -> dict:
        return {
            "model": self.model_id(),
            "messages": messages,
            "stream": stream,
            "max_tokens": max_tokens or self.max_tokens,
            "temperature": self.temperature,
        }

    def stream(
        self, messages: list[dict], passages: Sequence[Passage] = (), *, query: str = ""
    ) -> Iterator[str]:
        """The answer's text pieces as the server produces them, `THINKING` while it thinks.
        Raises ModelUnavailable on any failure; a failure after the first piece is never retried
        (the reader has seen part of it)."""
        think = ThinkFilter(settings.RAG_LLM_STARTS_THINKING)
        visible = False
        finish = ""
        for piece in self._raw_stream(messages):
            if isinstance(piece, Thinking):
                yield THINKING
                continue
            if isinstance(piece, _Finish):
                finish = piece.reason
                continue
            text, thought = think.feed(piece)
            if thought:
                yield THINKING
            if text:
                visible = True
                yield text
        if text := think.flush():
            visible = True
            yield text
        if not visible and finish == "length":
            # Every token went to thinking: an empty answer would look like "nothing to say".
            raise ModelUnavailable(
                "the answer budget ran out while the model was thinking; "
                "raise RAG_LLM_REASONING_TOKENS"
            )

    def _raw_stream(self, messages: list[dict]) -> Iterator[str]:
        body = self._body(messages, stream=True)
        url = self.base_url + "/chat/completions"
        for attempt in range(CONNECT_RETRIES + 1):
            try:
                # The client ignores proxy settings and pins the connection (core.model_http).
                with (
                    model_http.model_client(self.timeout) as client,
                    client.stream("POST", url, json=body, headers=self._headers()) as response,
                ):
                    if response.status_code >= 400:
                        response.read()
                    _raise_for_status(response, "POST /chat/completions")
                    yield from _read_events(response)
                return
            except model_http.EgressRefused as exc:
                raise ModelUnavailable(f"connect {url}: {exc}") from exc
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing reached the server, so nothing was generated: a quick retry is safe.
                if attempt < CONNECT_RETRIES:
                    time.sleep(RETRY_PAUSE_S * (attempt + 1))
                    continue
                raise ModelUnavailable(f"connect {url}: {exc!r}") from exc
            except httpx.HTTPError as exc:
                raise ModelUnavailable(f"{url}: {exc!r}") from exc


def _raise_for_status(response: httpx.Response, what: str) -> None:
    if response.status_code >= 400:
        # 4xx too: a wrong model name or an over-long prompt is a fault a reader cannot fix.
        raise ModelUnavailable(f"{what} answered {response.status_code}: {response.text[:300]!r}")


class _Finish(str):
    """A choice's finish_reason, passed from the event reader to `stream` (never yielded out)."""

    @property
    def reason(self) -> str:
        return str(self)


def _read_events(response: httpx.Response) -> Iterator[str]:
    """Content pieces of an SSE chat-completion stream, up to `data: [DONE]`; `THINKING` for a
    reasoning delta, a `_Finish` for the finish reason."""
    finished = False
    for line in response.iter_lines():
        if not line.startswith("data:"):
            continue  # blank separators, comments (": ping"), event names
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        try:
            event = json.loads(payload)
        except ValueError as exc:
            raise ModelUnavailable(f"malformed event {payload[:200]!r}") from exc
        if "error" in event:
            raise ModelUnavailable(f"error event {payload[:300]!r}")
        for choice in event.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content") or delta.get("reasoning"):
                yield THINKING  # the text of the thinking is never kept
            piece = delta.get("content")
            if piece:
                yield piece
            if choice.get("finish_reason"):
                finished = True
                yield _Finish(choice["finish_reason"])
    if not finished:
        # The connection closed before [DONE] and before any finish_reason: a broken-off answer.
        raise ModelUnavailable("stream ended before [DONE]")
