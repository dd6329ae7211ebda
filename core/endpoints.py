"""Model endpoints as reviewable configuration, and the one rule deciding which of them may
receive a collection's text (`may_receive`).

RAG_MODEL_ENDPOINTS holds JSON text, or the path of a JSON file, listing the endpoints:

    [
      {"name": "local", "base_url": "http://vllm.internal:8000/v1", "model": "qwen3-8b",
       "roles": ["answer", "rewrite"], "location": "in_house", "label": "Qwen3 8B (in-house)"},
      {"name": "hosted", "base_url": "https://api.example.com/v1", "model": "big-model",
       "roles": ["answer"], "location": "external", "api_key_env": "HOSTED_API_KEY",
       "label": "Hosted model (external)"}
    ]

- name: what people pick (`model` in /api/v1/ask, the OpenAI endpoint, the chat UI); unique.
- base_url: one URL or a list of replicas serving the same model (turns and hand-over as for
  RAG_LLM_BASE_URL).
- model: the served model's name ("" asks the server's /models).
- roles: any of answer, rewrite (follow-up → standalone query), embed, rerank.
- location: in_house (the organisation's machines) or external (anyone else's).
- api_key_env: the NAME of an environment variable holding the key. Keys are never written in
  this file nor stored in the database; an entry carrying "api_key" is refused.
- label: shown to people ("" shows the name).

An external endpoint must also be listed by RAG_ALLOWED_HOSTS_EGRESS itself (loopback included);
otherwise the configuration is refused with an error naming it. The embed and rerank roles stay
in-house: every collection shares one vector index, and a rerank call scores passages of several
collections at once, so an external endpoint with either role is refused; an entry with one of
them describes the server RAG_EMBEDDING_URL / RAG_RERANKER_URL configure (same URL). When RAG_MODEL_ENDPOINTS is unset
the endpoints are exactly the in-house ones RAG_LLM_BASE_URL, RAG_EMBEDDING_URL and
RAG_RERANKER_URL configure (or the in-process extractive answerer, embedder and reranker).

The rule (`may_receive`): an in-house endpoint receives any collection's text; an external one
receives a `shareable` collection's text as is, a `redacted` collection's text only after
personal data is replaced by placeholders ("redact"), and an `in_house` collection's text never.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from core import egress

ANSWER, REWRITE, EMBED, RERANK = "answer", "rewrite", "embed", "rerank"
ROLES = (ANSWER, REWRITE, EMBED, RERANK)
IN_HOUSE, EXTERNAL = "in_house", "external"
LOCATIONS = (IN_HOUSE, EXTERNAL)
# Collection.Sensitivity values (ingestion is above core: spelled out here).
SENSITIVITY_IN_HOUSE, SENSITIVITY_REDACTED, SENSITIVITY_SHAREABLE = (
    "in_house",
    "redacted",
    "shareable",
)
REDACT: Literal["redact"] = "redact"
_FIELDS = {"name", "base_url", "model", "roles", "location", "api_key_env", "label"}


class EndpointConfigurationError(ImproperlyConfigured):
    """RAG_MODEL_ENDPOINTS cannot be used as written; `str()` names the entry and the problem."""


@dataclass(frozen=True)
class Endpoint:
    name: str
    base_urls: tuple[str, ...]  # () for an in-process model (extractive answerer, local models)
    model: str = ""
    roles: frozenset[str] = field(default_factory=frozenset)
    location: str = IN_HOUSE
    api_key_env: str = ""
    label: str = ""
    # The derived default endpoints take their key from a Django setting (RAG_LLM_API_KEY, ...).
    api_key_setting: str = ""

    @property
    def external(self) -> bool:
        return self.location == EXTERNAL

    @property
    def derived(self) -> bool:
        """One of today's default endpoints, derived from the older settings."""
        return bool(self.api_key_setting)

    @property
    def in_process(self) -> bool:
        return not self.base_urls

    @property
    def host(self) -> str:
        """The host of the first URL ("" in process), for ledger rows and notices."""
        if not self.base_urls:
            return ""
        try:
            return urlsplit(self.base_urls[0]).hostname or ""
        except ValueError:
            return ""

    @property
    def display(self) -> str:
        return self.label or self.name

    def api_key(self) -> str:
        if self.api_key_env:
            return os.environ.get(self.api_key_env, "")
        if self.api_key_setting:
            return str(getattr(settings, self.api_key_setting, "") or "")
        return ""


def may_receive(endpoint: Endpoint, sensitivity: str) -> bool | Literal["redact"]:
    """Whether `endpoint` may receive text of a collection with this sensitivity: True as is,
    "redact" after personal data is replaced, False never. Unknown sensitivities count as
    in-house only."""
    if not endpoint.external:
        return True
    if sensitivity == SENSITIVITY_SHAREABLE:
        return True
    if sensitivity == SENSITIVITY_REDACTED:
        return REDACT
    return False


# --- reading the configuration ------------------------------------------------------------------


def configured() -> list[Endpoint]:
    """Every endpoint, in configuration order; roles the configuration leaves out are served by
    the derived in-house endpoints. Raises EndpointConfigurationError."""
    raw = (settings.RAG_MODEL_ENDPOINTS or "").strip()
    if not raw:
        return derived_defaults()
    endpoints = [_endpoint(entry, index) for index, entry in enumerate(_entries(raw))]
    # A role the file does not mention keeps today's in-house setup (e.g. the embedder).
    covered = {role for e in endpoints for role in e.roles}
    names = {e.name for e in endpoints}
    endpoints += [e for e in derived_defaults() if not (e.roles & covered) and e.name not in names]
    _check(endpoints)
    return endpoints


def derived_defaults() -> list[Endpoint]:
    """Today's setup as endpoints, all in-house: the LLM (or the extractive answerer), the
    embedder and the reranker the older settings configure."""
    llm_urls = tuple(u.strip() for u in settings.RAG_LLM_BASE_URL.split(",") if u.strip())
    endpoints = [
        Endpoint(
            name="llm" if llm_urls else "extractive",
            base_urls=llm_urls,
            model=settings.RAG_LLM_MODEL if llm_urls else "",
            roles=frozenset({ANSWER, REWRITE} if llm_urls else {ANSWER}),
            label="In-house model" if llm_urls else "Extractive answerer (in-house)",
            api_key_setting="RAG_LLM_API_KEY",
        ),
        Endpoint(
            name="embedder",
            base_urls=(settings.RAG_EMBEDDING_URL,) if settings.RAG_EMBEDDING_URL else (),
            model=settings.RAG_EMBEDDING_REMOTE_MODEL,
            roles=frozenset({EMBED}),
            label="In-house embedder",
            api_key_setting="RAG_EMBEDDING_API_KEY",
        ),
    ]
    if settings.RAG_RERANKER_URL or settings.RAG_RERANKER_MODEL:
        endpoints.append(
            Endpoint(
                name="reranker",
                base_urls=(settings.RAG_RERANKER_URL,) if settings.RAG_RERANKER_URL else (),
                model=settings.RAG_RERANKER_REMOTE_MODEL,
                roles=frozenset({RERANK}),
                label="In-house reranker",
                api_key_setting="RAG_RERANKER_API_KEY",
            )
        )
    return endpoints


def _entries(raw: str) -> list:
    text = raw
    if not raw.lstrip().startswith(("[", "{")):
        try:
            text = Path(raw).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise EndpointConfigurationError(
                f"RAG_MODEL_ENDPOINTS is neither JSON nor a readable file: {exc}"
            ) from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise EndpointConfigurationError(f"RAG_MODEL_ENDPOINTS is not valid JSON: {exc}") from exc
    if isinstance(data, dict):
        data = data.get("endpoints")
    if not isinstance(data, list):
        raise EndpointConfigurationError(
            'RAG_MODEL_ENDPOINTS must be a list of endpoints (or {"endpoints": [...]})'
        )
    return data


def _endpoint(entry: object, index: int) -> Endpoint:
    if not isinstance(entry, dict):
        raise EndpointConfigurationError(f"RAG_MODEL_ENDPOINTS entry {index} is not an object")
    name = str(entry.get("name") or "").strip()
    where = f"RAG_MODEL_ENDPOINTS entry {name or index!r}"
    if not name:
        raise EndpointConfigurationError(f"{where} has no name")
    secrets = [key for key in entry if "key" in key.lower() and key != "api_key_env"]
    if secrets or "token" in entry or "password" in entry:
        raise EndpointConfigurationError(
            f"{where} holds a secret ({', '.join(secrets) or 'token/password'}); put the key in "
            "an environment variable and name that variable in api_key_env"
        )
    unknown = set(entry) - _FIELDS
    if unknown:
        raise EndpointConfigurationError(
            f"{where} has unknown fields: {', '.join(sorted(unknown))}"
        )
    urls = entry.get("base_url") or []
    urls = [urls] if isinstance(urls, str) else list(urls)
    urls = [str(u).strip().rstrip("/") for u in urls if str(u).strip()]
    roles = entry.get("roles") or []
    roles = [roles] if isinstance(roles, str) else list(roles)
    if not roles or any(role not in ROLES for role in roles):
        raise EndpointConfigurationError(f"{where}: roles must be some of {', '.join(ROLES)}")
    location = str(entry.get("location") or "")
    if location not in LOCATIONS:
        raise EndpointConfigurationError(f"{where}: location must be in_house or external")
    if location == EXTERNAL and not urls:
        raise EndpointConfigurationError(f"{where}: an external endpoint needs a base_url")
    return Endpoint(
        name=name,
        base_urls=tuple(urls),
        model=str(entry.get("model") or ""),
        roles=frozenset(roles),
        location=location,
        api_key_env=str(entry.get("api_key_env") or ""),
        label=str(entry.get("label") or ""),
    )


def _check(endpoints: list[Endpoint]) -> None:
    allowed = list(settings.RAG_ALLOWED_HOSTS_EGRESS)
    names = [e.name for e in endpoints]
    for name in sorted({n for n in names if names.count(n) > 1}):
        raise EndpointConfigurationError(f"RAG_MODEL_ENDPOINTS names {name!r} more than once")
    for endpoint in endpoints:
        for url in endpoint.base_urls:
            if endpoint.external and not egress.endpoint_listed(url, allowed):
                raise EndpointConfigurationError(
                    f"external endpoint {endpoint.name!r} ({_shown(url)}) is not listed in "
                    "RAG_ALLOWED_HOSTS_EGRESS; it cannot be used"
                )
            if not endpoint.external and not egress.endpoint_allowed(url, allowed):
                raise EndpointConfigurationError(
                    f"in-house endpoint {endpoint.name!r} ({_shown(url)}) is neither loopback nor "
                    "on RAG_ALLOWED_HOSTS_EGRESS"
                )
    for role, setting in ((EMBED, "RAG_EMBEDDING_URL"), (RERANK, "RAG_RERANKER_URL")):
        holders = [e for e in endpoints if role in e.roles]
        if len(holders) > 1:
            # One vector space: questions and passages must be embedded by the same model.
            raise EndpointConfigurationError(
                f"RAG_MODEL_ENDPOINTS gives the {role} role to "
                f"{', '.join(e.name for e in holders)}; only one may have it"
            )
        for endpoint in holders:
            if endpoint.external:
                # Every collection shares one index (embed) and a rerank call scores passages
                # of several collections at once: an external one would receive in-house text.
                raise EndpointConfigurationError(
                    f"endpoint {endpoint.name!r}: the {role} role stays in-house (every "
                    "collection's text goes through it); declare it in_house or drop the role"
                )
            configured_url = str(getattr(settings, setting, "") or "").strip().rstrip("/")
            if not endpoint.derived and endpoint.base_urls != (
                (configured_url,) if configured_url else ()
            ):
                raise EndpointConfigurationError(
                    f"endpoint {endpoint.name!r} has the {role} role but {setting} names "
                    "another server; the client is configured by that setting, so give both "
                    "the same URL (or leave the role out)"
                )


def _shown(url: str) -> str:
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname or ''}{port}"
    except ValueError:
        return "(unparseable URL)"


# --- looking endpoints up -----------------------------------------------------------------------


def with_role(role: str) -> list[Endpoint]:
    return [e for e in configured() if role in e.roles]


def by_name(name: str) -> Endpoint | None:
    return next((e for e in configured() if e.name == name), None)


def default_for(role: str) -> Endpoint | None:
    """The endpoint a role uses when nobody chose: the first in-house one listed for it, else
    None (an external endpoint is never a default; a collection or a person picks it)."""
    return next((e for e in with_role(role) if not e.external), None)
