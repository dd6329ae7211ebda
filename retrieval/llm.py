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

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core import egress, endpoints, metrics, model_http
from retrieval.search import Passage

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

UNAVAILABLE_MESSAGE = "The model is unavailable right now."
# RAG_LLM_BASE_URL may list several replicas (comma-separated): requests take turns over them, and
# a replica that failed before answering anything is skipped this long, unless all of them failed.
REPLICA_COOL_DOWN_S = 30.0
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


class _ReplicaFailed(Exception):
    """A replica failed before anything was streamed from it (connect error, timeout, 5xx): the
    next replica may be asked. Never leaves this module; the last one becomes ModelUnavailable."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


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


def base_urls() -> list[str]:
    """The LLM replicas RAG_LLM_BASE_URL lists (one URL, or several separated by commas)."""
    return [url.strip() for url in settings.RAG_LLM_BASE_URL.split(",") if url.strip()]


def get_generator() -> Generator:
    """The configured generator: the OpenAI-compatible client when RAG_LLM_BASE_URL is set,
    else the extractive answerer. Raises LLMConfigurationError when any replica is forbidden."""
    urls = base_urls()
    if not urls:
        from retrieval.extractive import ExtractiveGenerator

        return ExtractiveGenerator()
    for url in urls:
        if not is_allowed_endpoint(url):
            raise LLMConfigurationError(
                f"RAG_LLM_BASE_URL entry {url!r} is neither loopback nor a host listed in "
                "RAG_ALLOWED_HOSTS_EGRESS; refusing to send documents there."
            )
    return OpenAICompatibleGenerator(
        base_url=urls,
        model=settings.RAG_LLM_MODEL,
        api_key=settings.RAG_LLM_API_KEY,
        timeout=settings.RAG_LLM_TIMEOUT,
        connect_timeout=settings.RAG_LLM_CONNECT_TIMEOUT,
        max_tokens=settings.RAG_LLM_MAX_ANSWER_TOKENS + settings.RAG_LLM_REASONING_TOKENS,
        temperature=settings.RAG_LLM_TEMPERATURE,
    )


def generator_for(endpoint: endpoints.Endpoint) -> Generator:
    """The generator talking to a configured endpoint (core.endpoints): the extractive answerer
    for an in-process one, else the OpenAI-compatible client with the endpoint's model and key."""
    if endpoint.in_process:
        from retrieval.extractive import ExtractiveGenerator

        return ExtractiveGenerator()
    for url in endpoint.base_urls:
        allowed = (
            egress.endpoint_listed(url, settings.RAG_ALLOWED_HOSTS_EGRESS)
            if endpoint.external
            else is_allowed_endpoint(url)
        )
        if not allowed:
            raise LLMConfigurationError(
                f"model endpoint {endpoint.name!r}: {url!r} is not allowed by "
                "RAG_ALLOWED_HOSTS_EGRESS; refusing to send documents there."
            )
    generator: Generator = OpenAICompatibleGenerator(  # type: ignore[assignment]
        base_url=list(endpoint.base_urls),
        model=endpoint.model,
        api_key=endpoint.api_key(),
        timeout=settings.RAG_LLM_TIMEOUT,
        connect_timeout=settings.RAG_LLM_CONNECT_TIMEOUT,
        max_tokens=settings.RAG_LLM_MAX_ANSWER_TOKENS + settings.RAG_LLM_REASONING_TOKENS,
        temperature=settings.RAG_LLM_TEMPERATURE,
        external_host=endpoint.host if endpoint.external else "",
    )
    return generator


# --- which replica answers ---------------------------------------------------------------------

_turns = itertools.count()  # round-robin over the replicas, per process
_down_until: dict[str, float] = {}  # replica base URL -> monotonic time its cool-down ends
_down_lock = threading.Lock()


def replica_order(urls: Sequence[str]) -> list[str]:
    """The order to ask `urls` in for one request: starting one further along each time, the
    replicas in their cool-down after the others (tried only when the others fail too)."""
    if len(urls) <= 1:
        return list(urls)
    start = next(_turns) % len(urls)
    turn = [*urls[start:], *urls[:start]]
    now = time.monotonic()
    with _down_lock:
        cooling = {url for url in turn if _down_until.get(url, 0.0) > now}
    return [u for u in turn if u not in cooling] + [u for u in turn if u in cooling]


def _redact(url: str) -> str:
    """scheme://host:port of a replica, for logs and error details (no credentials, no query)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"


def _mark(url: str, *, failed: bool) -> None:
    with _down_lock:
        if failed:
            _down_until[url] = time.monotonic() + REPLICA_COOL_DOWN_S
        else:
            _down_until.pop(url, None)


# --- OpenAI-compatible chat completions over HTTP ---------------------------------------------

_model_ids: dict[str, str] = {}
_model_ids_lock = threading.Lock()


class OpenAICompatibleGenerator:
    """POST {base}/chat/completions with stream=true and read the server-sent events.

    With several base URLs (replicas serving one model) each request starts at the next replica
    in turn; a replica that fails before anything was streamed from it (connect error, timeout,
    5xx) passes the request on to the next and sits out REPLICA_COOL_DOWN_S. A failure after the
    first piece is never retried. Quick connect retries are made on the last replica asked only."""

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str = "",
        api_key: str = "",
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        max_tokens: int = 768,
        temperature: float = 0.1,
        external_host: str = "",
    ):
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        # A configured external endpoint's host may resolve to public addresses (model_http).
        self.external_host = external_host
        self.base_urls = [url.rstrip("/") for url in urls]
        self.base_url = self.base_urls[0]
        self._model = model
        self.api_key = api_key
        # `timeout` bounds each wait for bytes (the first token included), not the whole answer.
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self.max_tokens = max_tokens
        self.temperature = temperature

    @property
    def name(self) -> str:
        known = (_model_ids[url] for url in self.base_urls if url in _model_ids)
        return f"openai:{self._model or next(known, '')}"

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def model_id(self, base: str | None = None, retries: int = CONNECT_RETRIES) -> str:
        """RAG_LLM_MODEL, else the first model the replica `base` lists (asked once per process
        and replica; without `base`, of the replicas in turn)."""
        if self._model:
            return self._model
        if base is None:
            return self._over_replicas(self.model_id)
        with _model_ids_lock:
            if base not in _model_ids:
                response = self._request_one(base, retries, "GET", "/models")
                try:
                    _model_ids[base] = response.json()["data"][0]["id"]
                except (ValueError, KeyError, IndexError, TypeError) as exc:
                    raise ModelUnavailable(f"GET /models answered {response.text[:200]!r}") from exc
        return _model_ids[base]

    def _over_replicas(self, call: Callable[[str, int], _T]) -> _T:
        """`call(base, connect_retries)` on each replica in turn until one does not raise
        _ReplicaFailed; ModelUnavailable (one, with every replica's detail) when none answers."""
        failures: list[str] = []
        order = replica_order(self.base_urls)
        for index, base in enumerate(order):
            last = index == len(order) - 1
            try:
                result = call(base, CONNECT_RETRIES if last else 0)
            except _ReplicaFailed as exc:
                failures.append(self._failed(base, exc, last=last))
                continue
            _mark(base, failed=False)
            return result
        raise ModelUnavailable("; ".join(failures))

    def _failed(self, base: str, exc: _ReplicaFailed, *, last: bool) -> str:
        _mark(base, failed=True)
        if len(self.base_urls) == 1:
            return exc.detail
        if not last:
            logger.warning("LLM replica %s failed (%s); asking the next", _redact(base), exc.detail)
        return f"{_redact(base)}: {exc.detail}"

    def _request(self, method: str, path: str, **kwargs) -> httpx.Response:
        """A non-streaming request with the same replica, retry and error rules as `stream`."""
        return self._over_replicas(
            lambda base, retries: self._request_one(base, retries, method, path, **kwargs)
        )

    def _request_one(
        self, base: str, retries: int, method: str, path: str, **kwargs
    ) -> httpx.Response:
        for attempt in range(retries + 1):
            try:
                with model_http.model_client(
                    self.timeout, external_host=self.external_host
                ) as client:
                    response = client.request(
                        method, base + path, headers=self._headers(), **kwargs
                    )
            except model_http.EgressRefused as exc:
                raise _ReplicaFailed(f"{method} {path}: {exc}") from exc
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt < retries:
                    time.sleep(RETRY_PAUSE_S * (attempt + 1))
                    continue
                raise _ReplicaFailed(f"{method} {path}: {exc!r}") from exc
            except httpx.HTTPError as exc:
                raise _ReplicaFailed(f"{method} {path}: {exc!r}") from exc
            _raise_for_status(response, f"{method} {path}")
            return response
        raise AssertionError("unreachable")

    def complete(self, messages: list[dict], max_tokens: int | None = None) -> str:
        """The whole answer in one response (used for short jobs such as query rewriting)."""

        def ask(base: str, retries: int) -> httpx.Response:
            body = self._body(base, retries, messages, stream=False, max_tokens=max_tokens)
            return self._request_one(base, retries, "POST", "/chat/completions", json=body)

        response = self._over_replicas(ask)
        try:
            # reasoning_content, if the server splits it off, is simply not read.
            return strip_thinking(response.json()["choices"][0]["message"]["content"] or "")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ModelUnavailable(f"unexpected completion {response.text[:200]!r}") from exc

    def _body(
        self,
        base: str,
        retries: int,
        messages: list[dict],
        stream: bool,
        max_tokens: int | None = None,
    ) -> dict:
        return {
            "model": self.model_id(base, retries),
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
        failures: list[str] = []
        order = replica_order(self.base_urls)
        for index, base in enumerate(order):
            last = index == len(order) - 1
            try:
                yield from self._stream_one(base, CONNECT_RETRIES if last else 0, messages)
            except _ReplicaFailed as exc:  # raised before any piece only
                failures.append(self._failed(base, exc, last=last))
                continue
            _mark(base, failed=False)
            return
        raise ModelUnavailable("; ".join(failures))

    def _stream_one(self, base: str, retries: int, messages: list[dict]) -> Iterator[str]:
        """One replica's answer; _ReplicaFailed when it fails before the first piece,
        ModelUnavailable after (the reader has seen part of it)."""
        body = self._body(base, retries, messages, stream=True)
        url = base + "/chat/completions"
        for attempt in range(retries + 1):
            streamed = False
            try:
                # The client ignores proxy settings and pins the connection (core.model_http).
                with (
                    model_http.model_client(
                        self.timeout, external_host=self.external_host
                    ) as client,
                    client.stream("POST", url, json=body, headers=self._headers()) as response,
                ):
                    if response.status_code >= 400:
                        response.read()
                    _raise_for_status(response, "POST /chat/completions")
                    for piece in _read_events(response):
                        streamed = True
                        yield piece
                return
            except model_http.EgressRefused as exc:
                raise _ReplicaFailed(f"connect {url}: {exc}") from exc
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing reached the server, so nothing was generated: a quick retry is safe.
                if attempt < retries:
                    time.sleep(RETRY_PAUSE_S * (attempt + 1))
                    continue
                raise _ReplicaFailed(f"connect {url}: {exc!r}") from exc
            except httpx.HTTPError as exc:
                if streamed:
                    raise ModelUnavailable(f"{url}: {exc!r}") from exc
                raise _ReplicaFailed(f"{url}: {exc!r}") from exc


def _raise_for_status(response: httpx.Response, what: str) -> None:
    if response.status_code >= 500:  # this replica is in trouble: another may answer
        raise _ReplicaFailed(f"{what} answered {response.status_code}: {response.text[:300]!r}")
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
