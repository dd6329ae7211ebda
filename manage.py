#!/usr/bin/env python
"""Django's command-line utility. Works on a fresh checkout: ragsite.bootstrap prepares the data
dir and, without DATABASE_URL, starts (or reuses) the embedded PostgreSQL under var/, whose schema
is brought up to date first."""

import os
import sys

# Commands that read only the code and the settings: they run without the bootstrap, so they
# create no file and start no database (collectstatic while the image is built, check in CI;
# and `makemigrations --check`, whose history check then only warns that it found no database).
_NO_BOOTSTRAP = {"help", "version", "check", "collectstatic", "findstatic", "diffsettings"}

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


def _command() -> str:
    name = sys.argv[1] if len(sys.argv) > 1 else "help"
    return "help" if name in {"-h", "--help"} else name


def _reads_only() -> bool:
    command = _command()
    if command == "makemigrations":
        return "--check" in sys.argv
    return command in _NO_BOOTSTRAP and "--database" not in sys.argv


def _bootstrap() -> None:
    if _reads_only():
        return
    from ragsite import bootstrap

    bootstrap.prepare()


def _migrate_embedded_database() -> None:
    """The embedded database belongs to this checkout: create its tables on first use, so that
    `manage.py ingest` or `shell` work before `make run` ever ran. A DATABASE_URL is left alone."""
    if os.environ.get("DATABASE_URL") or _command() in _NO_AUTO_MIGRATE or _reads_only():
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

    _bootstrap()
    _migrate_embedded_database()
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
