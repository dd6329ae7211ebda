#!/usr/bin/env python
"""Django's command-line utility. Works on a fresh checkout: without DATABASE_URL the settings
start (or reuse) the embedded PostgreSQL under var/."""

import os
import sys


def main() -> None:
    import ragsite.offline  # noqa: F401  (telemetry off before anything else is imported)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ragsite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
