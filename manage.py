#!/usr/bin/env python
"""Django's command-line utility. Works on a fresh checkout: without DATABASE_URL the settings
start (or reuse) the embedded PostgreSQL under var/, and its schema is brought up to date first."""

import os
import sys

# Commands that manage the schema themselves, or need no database.
_NO_AUTO_MIGRATE = {
    "migrate",
    "makemigrations",
    "sqlmigrate",
    "showmigrations",
    "squashmigrations",
    "test",
    "help",
    "version",
    "check",
}


def _migrate_embedded_database() -> None:
    """The embedded database belongs to this checkout: create its tables on first use, so that
    `manage.py ingest` or `shell` work before `make run` ever ran. A DATABASE_URL is left alone."""
    if os.environ.get("DATABASE_URL") or len(sys.argv) < 2 or sys.argv[1] in _NO_AUTO_MIGRATE:
        return
    import django
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    django.setup()
    executor = MigrationExecutor(connection)
    if executor.migration_plan(executor.loader.graph.leaf_nodes()):
        call_command("migrate", interactive=False, verbosity=0)


def main() -> None:
    import ragsite.offline  # noqa: F401  (telemetry off before anything else is imported)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")
    from django.core.management import execute_from_command_line

    _migrate_embedded_database()
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
