"""manage.py privacy_check [--json]: print the effective privacy posture; exit 1 on a violation
(an LLM, embedding or reranker endpoint outside loopback and RAG_ALLOWED_HOSTS_EGRESS, telemetry
left on).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core import egress, model_http

OK, NOTE, WARN, FAIL = "ok", "note", "warn", "FAIL"


@dataclass(frozen=True)
class Finding:
    level: str  # ok | note | warn | FAIL (FAIL makes the command exit 1)
    area: str
    message: str


def redact(url: str) -> str:
    """scheme://host:port/path of a URL: no credentials, no query (keys hide there)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparseable URL)"
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _endpoint(area: str, url: str, allowed: list[str], absent: str) -> Finding:
    if not url:
        return Finding(OK, area, absent)
    if egress.endpoint_allowed(url, allowed):
        return Finding(OK, area, f"{redact(url)} (loopback or on RAG_ALLOWED_HOSTS_EGRESS)")
    return Finding(
        FAIL,
        area,
        f"{redact(url)} is outside loopback and RAG_ALLOWED_HOSTS_EGRESS: questions and document "
        "passages would leave the organisation",
    )


def _service(area: str, url: str, allowed: list[str]) -> Finding:
    """Infrastructure the app talks to (database, broker): reported, not failed."""
    if not url or url.startswith("filesystem://"):
        return Finding(OK, area, "local (no network)")
    parts = urlsplit(url)
    host = parts.hostname or (parts.query and "unix socket") or ""
    if not parts.hostname or egress.endpoint_allowed(f"http://{parts.hostname}", allowed):
        return Finding(OK, area, f"{parts.scheme}://{host} (local or allow-listed)")
    return Finding(
        WARN,
        area,
        f"{parts.scheme}://{host} is not on RAG_ALLOWED_HOSTS_EGRESS; make sure it is internal",
    )


def collect_findings() -> list[Finding]:
    """Every privacy-relevant setting of this installation, judged."""
    allowed = list(settings.RAG_ALLOWED_HOSTS_EGRESS)
    findings = [
        Finding(
            NOTE,
            "egress allow-list",
            "loopback" + (f" + {', '.join(allowed)}" if allowed else " only"),
        ),
        # One finding per replica when RAG_LLM_BASE_URL lists several (comma-separated).
        *(
            _endpoint(
                "LLM endpoint",
                url,
                allowed,
                "none: answers come from the in-process extractive answerer",
            )
            for url in [u.strip() for u in settings.RAG_LLM_BASE_URL.split(",") if u.strip()]
            or [""]
        ),
        _endpoint(
            "embedding endpoint",
            settings.RAG_EMBEDDING_URL,
            allowed,
            f"none: embeddings computed in-process by {settings.RAG_EMBEDDING_MODEL!r}",
        ),
        _local_model("embedding model", settings.RAG_EMBEDDING_MODEL),
    ]
    if settings.RAG_RERANKER_URL:
        findings.append(_endpoint("reranker endpoint", settings.RAG_RERANKER_URL, allowed, "none"))
    elif settings.RAG_RERANKER_MODEL:
        findings.append(_local_model("reranker model", settings.RAG_RERANKER_MODEL))
    findings.append(_proxies())
    findings.append(_service("database", os.environ.get("DATABASE_URL", ""), allowed))
    findings.append(_service("task broker", settings.CELERY_BROKER_URL, allowed))

    for name, expected in egress.OFFLINE_ENV.items():
        actual = os.environ.get(name)
        if actual == expected:
            continue
        findings.append(
            Finding(
                FAIL, "telemetry", f"{name}={actual!r}, expected {expected!r} (ragsite.offline)"
            )
        )
    if all(os.environ.get(k) == v for k, v in egress.OFFLINE_ENV.items()):
        switches = ", ".join(f"{k}={v}" for k, v in egress.OFFLINE_ENV.items())
        findings.append(Finding(OK, "telemetry", f"off and hubs offline: {switches}"))

    findings.append(
        Finding(
            WARN, "prompt logging", "RAG_LOG_PROMPTS=1: prompts with document text go to the logs"
        )
        if settings.RAG_LOG_PROMPTS
        else Finding(OK, "prompt logging", "off (RAG_LOG_PROMPTS=0)")
    )
    findings.append(
        Finding(
            NOTE,
            "audit log",
            "question text recorded (RAG_AUDIT_QUESTIONS=1)"
            if settings.RAG_AUDIT_QUESTIONS
            else "question text not recorded (RAG_AUDIT_QUESTIONS=0)",
        )
    )
    days = settings.RAG_RETENTION_DAYS
    findings.append(
        Finding(
            OK,
            "retention",
            f"conversations, audit events and sign-in records deleted after {days} days",
        )
        if days > 0
        else Finding(
            NOTE, "retention", "RAG_RETENTION_DAYS=0: conversations and audit rows kept forever"
        )
    )
    findings.append(
        Finding(WARN, "debug", "DJANGO_DEBUG is on: error pages show settings and data")
        if settings.DEBUG
        else Finding(OK, "debug", "off")
    )
    findings.append(
        Finding(OK, "transport", "DJANGO_SECURE=1: HTTPS only, secure cookies, HSTS")
        if settings.SECURE
        else Finding(NOTE, "transport", "DJANGO_SECURE=0 (fine on a laptop; set it behind TLS)")
    )
    findings.append(
        Finding(
            OK,
            "sign-in",
            f"locked after {settings.AXES_FAILURE_LIMIT} failures (django-axes)",
        )
        if getattr(settings, "AXES_ENABLED", False)
        else Finding(WARN, "sign-in", "login rate limiting is off (RAG_LOGIN_LOCKOUT=0)")
    )
    return findings


def _proxies() -> Finding:
    """Proxy variables: model traffic ignores them (core.model_http), but other HTTP clients
    in the process (a library's update check) may not, so an admin should know they are there."""
    present = model_http.proxy_variables_set()
    if not present:
        return Finding(OK, "proxy", "no HTTP(S)_PROXY / ALL_PROXY in the environment")
    shown = ", ".join(f"{name}={redact(value)}" for name, value in sorted(present.items()))
    return Finding(
        WARN,
        "proxy",
        f"{shown} set: model traffic (LLM, embedding, reranker) ignores proxies and connects "
        "directly; other outbound HTTP from libraries could use them",
    )


def _local_model(area: str, name: str) -> Finding:
    if "://" in name:
        return Finding(FAIL, area, f"{name!r} is a URL; models are loaded from local files only")
    from ingestion.embedding import EmbeddingModelError, resolve_model_path

    try:
        return Finding(OK, area, f"local files at {resolve_model_path(name)}")
    except EmbeddingModelError as exc:
        return Finding(WARN, area, f"not found locally ({exc}); it is never downloaded")


class Command(BaseCommand):
    help = "Print the effective privacy posture; exit 1 if a setting sends data outside."

    def add_arguments(self, parser):
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="machine-readable output"
        )

    def handle(self, *args, as_json: bool = False, **options):
        findings = collect_findings()
        failures = [f for f in findings if f.level == FAIL]
        if as_json:
            self.stdout.write(json.dumps([asdict(f) for f in findings], indent=2))
        else:
            width = max(len(f.area) for f in findings)
            for finding in findings:
                line = f"[{finding.level:>4}] {finding.area:<{width}}  {finding.message}"
                style = {FAIL: self.style.ERROR, WARN: self.style.WARNING}.get(finding.level)
                self.stdout.write(style(line) if style else line)
        if failures:
            raise CommandError(
                f"{len(failures)} privacy violation(s): "
                + "; ".join(f"{f.area}: {f.message}" for f in failures)
            )
