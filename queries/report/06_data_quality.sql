-- data_quality: what was read, rejected and dropped, over the whole input.
-- Implements REPORT_SPEC §4 `data_quality`. Output: (metric, segment, value)
-- rows in the spec's order; rows_rejected always has all seven reasons.
-- Reads report_event_counts (one row of event counts), and message_checks
-- for repeated message_ids (every row beyond the first of a message_id).
-- report_event_counts has one column per reject reason, named after it and
-- in the spec's order; on the native path Rust builds it, on the SQL path
-- views/13_event_counts.sql. SQL cannot turn a column name into a value,
-- so each rows_rejected row below names its reason and the CASE reads the
-- column of that name; the reasons themselves are defined in
-- views/01_validated_events.sql.
-- One row of counts, crossed with the list of rows to output: a plan of one
-- scan per input, which a cluster runs as it runs any query (a union of a
-- dozen one-row scans is a shape Ballista 55 fails to run, docs/CLUSTER.md).
-- Parameters: none.
WITH counts AS (
    SELECT e.*, m.messages_read, d.duplicate_messages
    FROM report_event_counts e
    CROSS JOIN (SELECT count(*) AS messages_read FROM messages) m
    CROSS JOIN (
        SELECT coalesce(sum(n - 1), 0) AS duplicate_messages FROM message_checks
    ) d
),
quality_rows(ord, metric, segment) AS (
    VALUES
        (1, 'rows_read', 'events'),
        (2, 'rows_read', 'messages'),
        (3, 'rows_rejected', 'null_event_id'),
        (4, 'rows_rejected', 'null_user_id'),
        (5, 'rows_rejected', 'null_ts'),
        (6, 'rows_rejected', 'null_event_type'),
        (7, 'rows_rejected', 'unknown_event_type'),
        (8, 'rows_rejected', 'missing_conversation_id'),
        (9, 'rows_rejected', 'invalid_rating'),
        (10, 'duplicate_events', CAST(NULL AS VARCHAR)),
        (11, 'duplicate_messages', CAST(NULL AS VARCHAR)),
        (12, 'orphan_lifecycle_events', CAST(NULL AS VARCHAR))
)
SELECT
    q.metric,
    q.segment,
    CAST(CASE q.ord
        WHEN 1 THEN c.rows_read
        WHEN 2 THEN c.messages_read
        WHEN 3 THEN c.null_event_id
        WHEN 4 THEN c.null_user_id
        WHEN 5 THEN c.null_ts
        WHEN 6 THEN c.null_event_type
        WHEN 7 THEN c.unknown_event_type
        WHEN 8 THEN c.missing_conversation_id
        WHEN 9 THEN c.invalid_rating
        WHEN 10 THEN c.duplicate_events
        WHEN 11 THEN c.duplicate_messages
        WHEN 12 THEN c.orphan_lifecycle_events
    END AS DOUBLE) AS value
FROM quality_rows q
CROSS JOIN counts c
ORDER BY q.ord
