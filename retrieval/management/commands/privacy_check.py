"""manage.py privacy_check [--json]: print the effective privacy posture and the routing table
(collection → model endpoints that may receive its text, per role); exit 1 on a violation (an
LLM, embedding or reranker endpoint outside loopback and RAG_ALLOWED_HOSTS_EGRESS, telemetry left
on, an unusable RAG_MODEL_ENDPOINTS, an in-house-only collection that could reach an external
endpoint).
"""

from __future__ import annotations

import json
import os
import threading
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


def routing_findings() -> list[Finding]:
    """The model endpoints (core.endpoints) and the routing table: per collection and role, the
    endpoints that may receive its text. FAIL for a configuration that cannot be used, an
    endpoint declared in-house at a public address, or an in-house-only collection that could
    reach an external endpoint through any role."""
    from core import endpoints

    try:
        configured = endpoints.configured()
    except endpoints.EndpointConfigurationError as exc:
        return [Finding(FAIL, "model endpoints", str(exc))]
    findings = [
        Finding(
            NOTE,
            "model endpoints",
            "; ".join(
                f"{e.name} ({e.location}, {'/'.join(sorted(e.roles))}, {e.host or 'in process'})"
                for e in configured
            ),
        )
    ]
    for endpoint in configured:
        if not endpoint.external and any(_public_address(url) for url in endpoint.base_urls):
            findings.append(
                Finding(
                    FAIL,
                    "model endpoints",
                    f"{endpoint.name} is declared in_house but its URL is a public address; "
                    "declare it external so only the collections that allow it reach it",
                )
            )
    try:
        collections = _collections()
    except Exception as exc:  # no database here: the table cannot be printed, say so
        return [*findings, Finding(WARN, "routing", f"collections could not be read: {exc}")]
    for name, sensitivity in collections:
        roles = []
        leaks = []
        for role in endpoints.ROLES:
            receivers = []
            for endpoint in (e for e in configured if role in e.roles):
                verdict = endpoints.may_receive(endpoint, sensitivity)
                if verdict is False:
                    continue
                if endpoint.external and sensitivity == endpoints.SENSITIVITY_IN_HOUSE:
                    leaks.append(f"{role} → {endpoint.name}")
                receivers.append(endpoint.name + (" (redacted)" if verdict == "redact" else ""))
            roles.append(f"{role}: {', '.join(receivers) or '-'}")
        if leaks:
            findings.append(
                Finding(
                    FAIL,
                    "routing",
                    f"{name} is in-house only but could reach external endpoints: "
                    + ", ".join(leaks),
                )
            )
        else:
            findings.append(Finding(OK, "routing", f"{name} ({sensitivity}): " + "; ".join(roles)))
    return findings


DATABASE_WAIT_S = 5.0


def _collections() -> list[tuple[str, str]]:
    """(name, sensitivity) of every collection. A process not yet connected asks from a helper
    thread and gives up after DATABASE_WAIT_S: the check must still report on a machine whose
    database is down (the pool would wait RAG_DB_POOL_TIMEOUT for it)."""
    from django.db import connection, connections

    from ingestion.models import Collection

    def read() -> list[tuple[str, str]]:
        return list(Collection.objects.order_by("name").values_list("name", "sensitivity"))

    if connection.connection is not None or connection.in_atomic_block:
        return read()
    result: dict = {}

    def in_thread() -> None:
        try:
            result["rows"] = read()
        except Exception as exc:
            result["error"] = exc
        finally:
            connections.close_all()

    worker = threading.Thread(target=in_thread, daemon=True)
    worker.start()
    worker.join(DATABASE_WAIT_S)
    if worker.is_alive():
        raise TimeoutError(f"the database did not answer within {DATABASE_WAIT_S:.0f} s")
    if "error" in result:
        raise result["error"]
    return result["rows"]


def _public_address(url: str) -> bool:
    """A URL whose host is an IP address outside loopback and the private ranges."""
    import ipaddress

    try:
        host = urlsplit(url).hostname or ""
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name: judged where it is connected to (core.model_http)
    return not model_http.address_allowed(address, [])


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
        findings = collect_findings() + routing_findings()
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
