"""Operations endpoints: /healthz (the process answers), /readyz (what it depends on answers)
and /metrics (Prometheus).

/healthz touches nothing: a liveness probe. /readyz checks the database, the broker, the local
embedding model and each configured model endpoint (RAG_LLM_BASE_URL, RAG_EMBEDDING_URL,
RAG_RERANKER_URL), each within RAG_READY_TIMEOUT seconds and at the same time, and answers 503
naming what failed. It never loads the embedding model (90 MB, seconds of CPU): "loaded" says
whether this process has it in memory yet, and the check passes when it is loaded or can be
(its files are there); the first search or document loads it. Model endpoints are asked a cheap
GET (/models, the reranker's base URL) through core.model_http, under the egress rules; with
several LLM replicas, the check passes while one of them answers.
The reasons shown are short and name no address; the details go to the log.

/metrics serves core.metrics' counters and histograms, merged over every process that writes
under RAG_METRICS_DIR (web workers and the Celery worker's pool on this data dir), plus figures
computed at scrape time: documents by state and the broker queue's length. It answers a bearer
RAG_METRICS_TOKEN, or a client address on RAG_METRICS_ALLOW (loopback only by default).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from core import egress, metrics, model_http
from core.audit import client_ip
from ingestion import embedding
from ingestion.models import Document

logger = logging.getLogger(__name__)


class CheckFailed(Exception):
    """A readiness check's short reason, fit to show anyone (no address, no credentials)."""


# --- /healthz ------------------------------------------------------------------------------------


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving requests. No database, no model: a liveness probe."""
    return JsonResponse({"status": "ok"})


# --- /readyz -------------------------------------------------------------------------------------


# A table the migrations make: missing, the database is reachable but not migrated yet.
MIGRATED_TABLE = Document._meta.db_table


def check_database(timeout: float) -> dict:
    """A connection of its own (not the pool, which would wait RAG_DB_POOL_TIMEOUT for a server
    that is down) with the settings' parameters, and whether the tables are there."""
    import psycopg

    params = connection.get_connection_params()
    try:
        with (
            psycopg.connect(**params, connect_timeout=max(1, round(timeout))) as conn,
            conn.cursor() as cursor,
        ):
            cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [MIGRATED_TABLE])
            row = cursor.fetchone()
    except psycopg.Error as exc:
        logger.warning("readiness: database: %s", exc)
        raise CheckFailed(f"cannot connect ({type(exc).__name__})") from exc
    if not row or not row[0]:
        raise CheckFailed("not migrated (manage.py migrate)")
    return {}


def check_broker(timeout: float) -> dict:
    from ragsite.celery import app

    try:
        with app.connection_for_read(
            connect_timeout=timeout,
            transport_options={"socket_timeout": timeout, "socket_connect_timeout": timeout},
        ) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
            queue = app.conf.task_default_queue  # RAG_CELERY_QUEUE
            queued = conn.default_channel.queue_declare(queue=queue).message_count
    except Exception as exc:  # noqa: BLE001  (kombu raises its own and the transport's errors)
        logger.warning("readiness: broker: %r", exc)
        raise CheckFailed(f"cannot reach the broker ({type(exc).__name__})") from exc
    return {"queued": queued}


def check_embedding_model(timeout: float) -> dict:
    """Loaded in this process, or loadable (its files are there): never loaded here."""
    loaded = embedding.get_model.cache_info().currsize > 0
    if not loaded:
        try:
            embedding.resolve_model_path(settings.RAG_EMBEDDING_MODEL)
        except embedding.EmbeddingModelError as exc:
            logger.warning("readiness: embedding model: %s", exc)
            raise CheckFailed("model files not found (RAG_EMBEDDING_MODEL)") from exc
    return {"loaded": loaded}


def _endpoint_check(url: str, *, any_answer: bool) -> Callable[[float], dict]:
    """GET `url` through the model client: 2xx passes, or with `any_answer` any answer but a
    5xx or a refused key (a base URL may well answer 404 while the server is up)."""

    def check(timeout: float) -> dict:
        if not egress.endpoint_allowed(url, settings.RAG_ALLOWED_HOSTS_EGRESS):
            raise CheckFailed("not allowed by the egress rules (RAG_ALLOWED_HOSTS_EGRESS)")
        try:
            with model_http.model_client(httpx.Timeout(timeout)) as client:
                response = client.get(url, headers=_auth_headers(url))
        except model_http.EgressRefused as exc:
            logger.warning("readiness: %s: %s", _redacted(url), exc)
            raise CheckFailed("resolves outside the allowed networks") from exc
        except httpx.TimeoutException as exc:
            logger.warning("readiness: %s: %r", _redacted(url), exc)
            raise CheckFailed("timed out") from exc
        except httpx.HTTPError as exc:
            logger.warning("readiness: %s: %r", _redacted(url), exc)
            raise CheckFailed(f"unreachable ({type(exc).__name__})") from exc
        status = response.status_code
        if status >= 500 or status in (401, 403) or (not any_answer and status >= 300):
            logger.warning("readiness: %s answered %s", _redacted(url), status)
            raise CheckFailed(f"answered HTTP {status}")
        return {}

    return check


def _auth_headers(url: str) -> dict[str, str]:
    for base, key in (
        *((replica, settings.RAG_LLM_API_KEY) for replica in _llm_replicas()),
        (settings.RAG_EMBEDDING_URL, settings.RAG_EMBEDDING_API_KEY),
        (settings.RAG_RERANKER_URL, settings.RAG_RERANKER_API_KEY),
    ):
        if base and key and url.startswith(base.strip().rstrip("/")):
            return {"Authorization": f"Bearer {key}"}
    return {}


def _llm_replicas() -> list[str]:
    """The LLM base URLs RAG_LLM_BASE_URL lists (several replicas are separated by commas)."""
    return [url.strip().rstrip("/") for url in settings.RAG_LLM_BASE_URL.split(",") if url.strip()]


def _any_replica_check(checks: list[Callable[[float], dict]]) -> Callable[[float], dict]:
    """Passes when at least one replica passes its check; reports each replica by its place in
    RAG_LLM_BASE_URL (1, 2, …), never by address."""

    def check(timeout: float) -> dict:
        with ThreadPoolExecutor(len(checks), thread_name_prefix="readyz-llm") as pool:
            results = list(pool.map(lambda one: _run(one, timeout), checks))
        if not any(result["ok"] for result in results):
            reasons = "; ".join(f"{n}: {r['error']}" for n, r in enumerate(results, 1))
            raise CheckFailed(f"no replica answers ({reasons})")
        return {"replicas": {str(n): result for n, result in enumerate(results, 1)}}

    return check


def _redacted(url: str) -> str:
    return embedding._redacted(url)


def readiness_checks() -> dict[str, Callable[[float], dict]]:
    """The checks for this configuration, by name: model endpoints only where configured."""
    checks: dict[str, Callable[[float], dict]] = {
        "database": check_database,
        "broker": check_broker,
        "embedding_model": check_embedding_model,
    }
    replicas = [_endpoint_check(url + "/models", any_answer=False) for url in _llm_replicas()]
    if replicas:
        checks["llm"] = replicas[0] if len(replicas) == 1 else _any_replica_check(replicas)
    if settings.RAG_EMBEDDING_URL:
        url = embedding.embeddings_url()[: -len("/embeddings")] + "/models"
        checks["embedding_server"] = _endpoint_check(url, any_answer=False)
    if settings.RAG_RERANKER_URL:
        checks["reranker"] = _endpoint_check(settings.RAG_RERANKER_URL.strip(), any_answer=True)
    return checks


def _run(check: Callable[[float], dict], timeout: float) -> dict:
    started = time.monotonic()
    try:
        result = {"ok": True, **check(timeout)}
    except CheckFailed as exc:
        result = {"ok": False, "error": str(exc)}
    except Exception as exc:  # a bug in a check must say "not ready", not answer 500
        logger.exception("readiness check failed unexpectedly")
        result = {"ok": False, "error": f"check failed ({type(exc).__name__})"}
    result["ms"] = round((time.monotonic() - started) * 1000)
    return result


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """200 when every check passes, else 503; the JSON names each check and what failed."""
    timeout = settings.RAG_READY_TIMEOUT
    checks = readiness_checks()
    with ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="readyz") as pool:
        futures = {name: pool.submit(_run, check, timeout) for name, check in checks.items()}
        results = {name: future.result() for name, future in futures.items()}
    failed = [name for name, result in results.items() if not result["ok"]]
    return JsonResponse(
        {"status": "not ready" if failed else "ready", "failed": failed, "checks": results},
        status=503 if failed else 200,
    )


# --- /metrics ------------------------------------------------------------------------------------


def metrics_allowed(request: HttpRequest) -> bool:
    """A bearer RAG_METRICS_TOKEN, or a client address RAG_METRICS_ALLOW lists."""
    token = settings.RAG_METRICS_TOKEN
    if token:
        scheme, _, offered = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            offered.strip().encode(), token.encode()
        ):
            return True
    address = client_ip(request)
    if not address:
        return False
    try:
        client = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(client, ipaddress.IPv6Address) and client.ipv4_mapped is not None:
        client = client.ipv4_mapped
    for entry in settings.RAG_METRICS_ALLOW:
        try:
            if client in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            logger.warning("RAG_METRICS_ALLOW: %r is not an address or network", entry)
    return False


class ScrapeTimeCollector:
    """Figures read when Prometheus asks: documents by state, the broker queue's length."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        documents = GaugeMetricFamily(
            "ragsite_documents", "Documents by processing state.", labels=["state"]
        )
        try:
            rows = Document.objects.values_list("status").annotate(n=Count("id")).order_by()
            counts = dict(rows)
        except DatabaseError as exc:
            # The other figures still go out; the gap says it, /readyz says why.
            logger.warning("metrics: documents by state: %s", exc)
        else:
            for state in Document.Status.values:
                documents.add_metric([state], counts.get(state, 0))
            yield documents
        try:
            queued = check_broker(settings.RAG_READY_TIMEOUT)["queued"]
        except CheckFailed:
            return  # the gap in the series says it; /readyz says why
        yield GaugeMetricFamily(
            "ragsite_queue_length",
            "Messages waiting in the broker's ingestion queue (RAG_CELERY_QUEUE).",
            value=queued,
        )


def _metrics_root() -> Path | None:
    """Where the value files are: the folder holding every host's folder when
    PROMETHEUS_MULTIPROC_DIR is bootstrap's, else the operator's folder itself."""
    own = metrics.this_process_dir()
    if own is None:
        return None
    return settings.RAG_METRICS_DIR if own.parent == settings.RAG_METRICS_DIR else own


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        response = HttpResponse("Forbidden: metrics need a token or an allowed address.\n")
        if settings.RAG_METRICS_TOKEN:
            response.status_code = 401
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        else:
            response.status_code = 403
        response["Content-Type"] = "text/plain; charset=utf-8"
        return response
    scraped = CollectorRegistry()
    scraped.register(ScrapeTimeCollector())
    body = generate_latest(metrics.registry(_metrics_root())) + generate_latest(scraped)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
