"""Generate step: one small interface, `stream(messages, passages) -> Iterator[str]`, with two
implementations: an OpenAI-compatible client (vLLM, llama.cpp server) and the extractive CPU default.

`get_generator()` picks one from settings. Both stream text pieces with [n] markers that number the
passages they were given, so citations and streaming follow one code path whichever answers.
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

from ragsite import egress, model_http
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


class LLMConfigurationError(ImproperlyConfigured):
    """RAG_LLM_BASE_URL points somewhere it may not (outside loopback and the egress allow-list)."""


class Generator(Protocol):
    name: str  # stored in Message.generator

    def stream(
        self, messages: list[dict], passages: Sequence[Passage], *, query: str = ""
    ) -> Iterator[str]: ...


# --- where an endpoint may live ---------------------------------------------------------------


def is_allowed_endpoint(url: str) -> bool:
    """True when `url` is http(s) on loopback or on a host RAG_ALLOWED_HOSTS_EGRESS allows.
    The rule itself lives in ragsite.egress, shared with `manage.py privacy_check`."""
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
        max_tokens=settings.RAG_LLM_MAX_ANSWER_TOKENS,
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
            return response.json()["choices"][0]["message"]["content"] or ""
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
        """Text pieces as the server produces them. Raises ModelUnavailable on any failure; a
        failure after the first piece is never retried (the reader has seen part of it)."""
        body = self._body(messages, stream=True)
        url = self.base_url + "/chat/completions"
        for attempt in range(CONNECT_RETRIES + 1):
            try:
                # The client ignores proxy settings and pins the connection (ragsite.model_http).
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


def _read_events(response: httpx.Response) -> Iterator[str]:
    """Content pieces of an SSE chat-completion stream, up to `data: [DONE]`."""
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
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                yield piece
            if choice.get("finish_reason"):
                finished = True
    if not finished:
        # The connection closed before [DONE] and before any finish_reason: a broken-off answer.
        raise ModelUnavailable("stream ended before [DONE]")
