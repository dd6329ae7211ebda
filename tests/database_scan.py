"""Scanning every column of every table for a text: the proof that a deleted document's words
are gone, used by the deletion and forgetting tests."""

from __future__ import annotations

from django.db import connection

TEXT_TYPES = ("text", "character varying", "character", "json", "jsonb")


def columns(data_types: tuple[str, ...] = TEXT_TYPES) -> list[tuple[str, str]]:
    """(table, column) of every column of these types in every table of the schema."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT c.table_name, c.column_name FROM information_schema.columns c
            JOIN information_schema.tables t
              ON t.table_schema = c.table_schema AND t.table_name = c.table_name
            WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
              AND c.data_type = ANY(%s)
            ORDER BY 1, 2
            """,
            [list(data_types)],
        )
        return cursor.fetchall()


def tsvector_columns() -> list[tuple[str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT table_name, column_name FROM information_schema.columns
            WHERE table_schema = current_schema() AND udt_name = 'tsvector'
            """
        )
        return cursor.fetchall()


def columns_containing(needles: list[str], cols: list[tuple[str, str]]) -> list[str]:
    """ "table.column" for every column holding any of `needles` (case-insensitive)."""
    found = []
    with connection.cursor() as cursor:
        for table, column in cols:
            for needle in needles:
                cursor.execute(
                    f'SELECT count(*) FROM "{table}" WHERE "{column}"::text ILIKE %s',  # noqa: S608
                    [f"%{needle}%"],
                )
                if cursor.fetchone()[0]:
                    found.append(f"{table}.{column}")
                    break
    return found
