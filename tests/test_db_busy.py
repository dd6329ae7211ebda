"""A request that finds every database connection of the server in use, and none free within
RAG_DB_POOL_TIMEOUT, is told the server is busy (503, Retry-After) instead of failing with a 500;
the server goes on as soon as a connection comes free. Real uvicorn, real pool, real lock."""

from __future__ import annotations

import os
import threading
import time

import httpx
import psycopg
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connection

from core import apikeys
from tests.conftest import database_url, load_bench, stop_worker

pytestmark = pytest.mark.django_db(transaction=True)


load = load_bench()


def _waiting_on_a_lock(application: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND wait_event_type = 'Lock'",
            [application],
        )
        return cursor.fetchone()[0] > 0


def test_a_request_finding_every_connection_taken_gets_503_and_the_server_recovers(tmp_path):
    cache.clear()
    user = User.objects.create_user("busy")
    _, key = apikeys.create_key(user, "busy")
    auth = {"Authorization": f"Bearer {key}"}
    application = "ragsite-busy-test"
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "RAG_MEDIA_ROOT": str(settings.MEDIA_ROOT),
        "CELERY_BROKER_URL": "filesystem://",
        "RAG_BROKER_DIR": str(tmp_path / "broker"),
        "RAG_EGRESS_GUARD": "1",
        "RAG_API_RATE": "",
        "RAG_DB_POOL_SIZE": "1",
        "RAG_DB_POOL_TIMEOUT": "1",
        "PGAPPNAME": application,
    }
    log = tmp_path / "uvicorn.log"
    process, url = load.serve("ragsite.asgi:application", env, log)
    collections = url + "/api/v1/collections/"
    try:
        assert httpx.get(collections, headers=auth, timeout=30).status_code == 200

        first: dict = {}
        with psycopg.connect(database_url()) as locker:
            # The API key lookup waits behind this lock, holding the server's only connection.
            locker.execute("LOCK TABLE core_apikey IN ACCESS EXCLUSIVE MODE")
            waiting = threading.Thread(
                target=lambda: first.update(
                    response=httpx.get(collections, headers=auth, timeout=60)
                ),
                daemon=True,
            )
            waiting.start()
            deadline = time.monotonic() + 30
            while not _waiting_on_a_lock(application):
                assert time.monotonic() < deadline, "the first request never reached the lock"
                time.sleep(0.1)

            busy = httpx.get(collections, headers=auth, timeout=30)
            locker.rollback()
        waiting.join(30)

        assert busy.status_code == 503, busy.text
        assert busy.headers["Retry-After"] == "5"
        assert busy.json()["error"]["code"] == "busy"
        assert first["response"].status_code == 200  # the held request finishes once let go
        assert httpx.get(collections, headers=auth, timeout=30).status_code == 200
    finally:
        stop_worker(process)
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
