"""Per-collection term statistics for full-text search, kept by PostgreSQL triggers.

`ingestion_termstatistic` holds, per collection and lexeme, how many searchable passages (chunks
of ready documents) contain the lexeme, and under the empty lexeme how many searchable passages
the collection has. Search reads document frequencies from it instead of counting them per query.

Triggers keep it in the same transaction as the change, whatever the write path (the pipeline
storing chunks, re-ingest, `_fail`, the ORM's cascades, raw SQL, COPY):

- chunks inserted, deleted or updated (statement-level, with transition tables): counted for
  their document when that document is ready;
- documents becoming ready or ceasing to be (re-ingest queues them, `_fail` fails them), moving
  to another collection, or deleted while their chunks are still there: their chunks counted in
  or out;
- chunks truncated: the statistics too.

Both sides lock the document rows (the chunk side FOR SHARE, the document side by its UPDATE), so
a status change racing a chunk change is counted once. Deltas are applied sorted by (collection,
lexeme), so concurrent writers take the statistics' row locks in one order. A row that falls to
zero is deleted: a deleted document leaves none of its words behind.
"""

from django.db import migrations, models

# Every trigger ends in the same aggregate: (collection_id, search_vector, sign) rows of passages
# counted in (+1) or out (-1), their lexemes and '' (the passage itself) summed per collection.
FORWARD = r"""
CREATE FUNCTION ingestion_apply_term_deltas(
    p_collection bigint[], p_lexeme text[], p_delta bigint[]
) RETURNS void LANGUAGE sql VOLATILE AS $$
    INSERT INTO ingestion_termstatistic AS s (collection_id, lexeme, passages)
    SELECT u.c, u.l, u.d FROM unnest(p_collection, p_lexeme, p_delta) AS u(c, l, d)
    WHERE u.d <> 0
    ORDER BY u.c, u.l
    ON CONFLICT (collection_id, lexeme) DO UPDATE SET passages = s.passages + excluded.passages;
    DELETE FROM ingestion_termstatistic s
    USING unnest(p_collection, p_lexeme, p_delta) AS u(c, l, d)
    WHERE u.d < 0 AND s.collection_id = u.c AND s.lexeme = u.l AND s.passages <= 0;
$$;

-- Chunks in or out: counted for their document when it is ready. The documents are locked
-- first (FOR SHARE), so their status cannot change under the count until this transaction ends.
CREATE FUNCTION ingestion_chunk_insert_statistics() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM ingestion_document WHERE id IN (SELECT document_id FROM new_chunks) ORDER BY id FOR SHARE;
    PERFORM ingestion_apply_term_deltas(
        array_agg(collection_id ORDER BY collection_id, lexeme),
        array_agg(lexeme ORDER BY collection_id, lexeme),
        array_agg(delta ORDER BY collection_id, lexeme)
    )
    FROM (
        SELECT ch.collection_id, l.lexeme, sum(ch.sign)::bigint AS delta
        FROM (
            SELECT d.collection_id, c.search_vector, 1::bigint AS sign
            FROM new_chunks c
            JOIN ingestion_document d ON d.id = c.document_id AND d.status = 'ready'
        ) ch
        CROSS JOIN LATERAL unnest(array_append(tsvector_to_array(ch.search_vector), '')) l(lexeme)
        GROUP BY ch.collection_id, l.lexeme
    ) deltas;
    RETURN NULL;
END;
$$;

CREATE FUNCTION ingestion_chunk_delete_statistics() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM ingestion_document WHERE id IN (SELECT document_id FROM old_chunks) ORDER BY id FOR SHARE;
    PERFORM ingestion_apply_term_deltas(
        array_agg(collection_id ORDER BY collection_id, lexeme),
        array_agg(lexeme ORDER BY collection_id, lexeme),
        array_agg(delta ORDER BY collection_id, lexeme)
    )
    FROM (
        SELECT ch.collection_id, l.lexeme, sum(ch.sign)::bigint AS delta
        FROM (
            SELECT d.collection_id, c.search_vector, -1::bigint AS sign
            FROM old_chunks c
            JOIN ingestion_document d ON d.id = c.document_id AND d.status = 'ready'
        ) ch
        CROSS JOIN LATERAL unnest(array_append(tsvector_to_array(ch.search_vector), '')) l(lexeme)
        GROUP BY ch.collection_id, l.lexeme
    ) deltas;
    RETURN NULL;
END;
$$;

CREATE FUNCTION ingestion_chunk_update_statistics() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM ingestion_document WHERE id IN (SELECT document_id FROM old_chunks UNION SELECT document_id FROM new_chunks) ORDER BY id FOR SHARE;
    PERFORM ingestion_apply_term_deltas(
        array_agg(collection_id ORDER BY collection_id, lexeme),
        array_agg(lexeme ORDER BY collection_id, lexeme),
        array_agg(delta ORDER BY collection_id, lexeme)
    )
    FROM (
        SELECT ch.collection_id, l.lexeme, sum(ch.sign)::bigint AS delta
        FROM (
            SELECT d.collection_id, c.search_vector, -1::bigint AS sign
            FROM old_chunks c
            JOIN ingestion_document d ON d.id = c.document_id AND d.status = 'ready'
            UNION ALL
            SELECT d.collection_id, c.search_vector, 1::bigint AS sign
            FROM new_chunks c
            JOIN ingestion_document d ON d.id = c.document_id AND d.status = 'ready'
        ) ch
        CROSS JOIN LATERAL unnest(array_append(tsvector_to_array(ch.search_vector), '')) l(lexeme)
        GROUP BY ch.collection_id, l.lexeme
    ) deltas;
    RETURN NULL;
END;
$$;

-- Documents becoming ready (the pipeline, after storing the chunks), ceasing to be (re-ingest
-- queues them, a failure), or moving collection: all their chunks counted in or out.
CREATE FUNCTION ingestion_document_update_statistics() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ingestion_apply_term_deltas(
        array_agg(collection_id ORDER BY collection_id, lexeme),
        array_agg(lexeme ORDER BY collection_id, lexeme),
        array_agg(delta ORDER BY collection_id, lexeme)
    )
    FROM (
        SELECT ch.collection_id, l.lexeme, sum(ch.sign)::bigint AS delta
        FROM (
            SELECT s.collection_id, c.search_vector, s.sign
            FROM (
                SELECT o.id, o.collection_id, -1::bigint AS sign
                FROM old_documents o JOIN new_documents n ON n.id = o.id
                WHERE o.status = 'ready'
                  AND (n.status <> 'ready' OR n.collection_id <> o.collection_id)
                UNION ALL
                SELECT n.id, n.collection_id, 1
                FROM old_documents o JOIN new_documents n ON n.id = o.id
                WHERE n.status = 'ready'
                  AND (o.status <> 'ready' OR n.collection_id <> o.collection_id)
            ) s
            JOIN ingestion_chunk c ON c.document_id = s.id
        ) ch
        CROSS JOIN LATERAL unnest(array_append(tsvector_to_array(ch.search_vector), '')) l(lexeme)
        GROUP BY ch.collection_id, l.lexeme
    ) deltas;
    RETURN NULL;
END;
$$;

-- Documents deleted before their chunks (raw SQL; the ORM deletes the chunks first): counted out
-- here, as the chunk trigger will find no document for those chunks.
CREATE FUNCTION ingestion_document_delete_statistics() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ingestion_apply_term_deltas(
        array_agg(collection_id ORDER BY collection_id, lexeme),
        array_agg(lexeme ORDER BY collection_id, lexeme),
        array_agg(delta ORDER BY collection_id, lexeme)
    )
    FROM (
        SELECT ch.collection_id, l.lexeme, sum(ch.sign)::bigint AS delta
        FROM (
            SELECT o.collection_id, c.search_vector, -1::bigint AS sign
            FROM old_documents o JOIN ingestion_chunk c ON c.document_id = o.id
            WHERE o.status = 'ready'
        ) ch
        CROSS JOIN LATERAL unnest(array_append(tsvector_to_array(ch.search_vector), '')) l(lexeme)
        GROUP BY ch.collection_id, l.lexeme
    ) deltas;
    RETURN NULL;
END;
$$;

CREATE FUNCTION ingestion_truncate_statistics() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- DELETE, not TRUNCATE: Django's flush truncates both tables in one statement, which is
    -- still using this one while the trigger runs.
    DELETE FROM ingestion_termstatistic;
    RETURN NULL;
END;
$$;

CREATE TRIGGER term_statistics_insert AFTER INSERT ON ingestion_chunk
    REFERENCING NEW TABLE AS new_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION ingestion_chunk_insert_statistics();
CREATE TRIGGER term_statistics_delete AFTER DELETE ON ingestion_chunk
    REFERENCING OLD TABLE AS old_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION ingestion_chunk_delete_statistics();
CREATE TRIGGER term_statistics_update AFTER UPDATE ON ingestion_chunk
    REFERENCING OLD TABLE AS old_chunks NEW TABLE AS new_chunks
    FOR EACH STATEMENT EXECUTE FUNCTION ingestion_chunk_update_statistics();
CREATE TRIGGER term_statistics_truncate AFTER TRUNCATE ON ingestion_chunk
    FOR EACH STATEMENT EXECUTE FUNCTION ingestion_truncate_statistics();
CREATE TRIGGER term_statistics_update AFTER UPDATE ON ingestion_document
    REFERENCING OLD TABLE AS old_documents NEW TABLE AS new_documents
    FOR EACH STATEMENT EXECUTE FUNCTION ingestion_document_update_statistics();
CREATE TRIGGER term_statistics_delete AFTER DELETE ON ingestion_document
    REFERENCING OLD TABLE AS old_documents
    FOR EACH STATEMENT EXECUTE FUNCTION ingestion_document_delete_statistics();

-- What is already there.
INSERT INTO ingestion_termstatistic (collection_id, lexeme, passages)
SELECT d.collection_id, l.lexeme, count(*)
FROM ingestion_chunk c
JOIN ingestion_document d ON d.id = c.document_id AND d.status = 'ready'
CROSS JOIN LATERAL unnest(array_append(tsvector_to_array(c.search_vector), '')) l(lexeme)
GROUP BY d.collection_id, l.lexeme;
"""

BACKWARD = """
DROP TRIGGER term_statistics_insert ON ingestion_chunk;
DROP TRIGGER term_statistics_delete ON ingestion_chunk;
DROP TRIGGER term_statistics_update ON ingestion_chunk;
DROP TRIGGER term_statistics_truncate ON ingestion_chunk;
DROP TRIGGER term_statistics_update ON ingestion_document;
DROP TRIGGER term_statistics_delete ON ingestion_document;
DROP FUNCTION ingestion_document_update_statistics();
DROP FUNCTION ingestion_document_delete_statistics();
DROP FUNCTION ingestion_chunk_insert_statistics();
DROP FUNCTION ingestion_chunk_delete_statistics();
DROP FUNCTION ingestion_chunk_update_statistics();
DROP FUNCTION ingestion_truncate_statistics();
DROP FUNCTION ingestion_apply_term_deltas(bigint[], text[], bigint[]);
"""


class Migration(migrations.Migration):
    dependencies = [
        ("ingestion", "0003_document_unfinished_runs"),
    ]

    operations = [
        migrations.CreateModel(
            name="TermStatistic",
            fields=[
                (
                    "pk",
                    models.CompositePrimaryKey(
                        "collection_id",
                        "lexeme",
                        blank=True,
                        editable=False,
                        primary_key=True,
                        serialize=False,
                    ),
                ),
                ("collection_id", models.BigIntegerField()),
                ("lexeme", models.TextField()),
                ("passages", models.IntegerField()),
            ],
        ),
        migrations.RunSQL(FORWARD, BACKWARD),
    ]
