-- data_quality: what was read, rejected and dropped, over the whole input.
-- Implements REPORT_SPEC §4 `data_quality`. Output: (metric, segment, value)
-- rows in the spec's order; rows_rejected always has all seven reasons.
-- Reads report_event_counts (one row of event counts), and message_checks
-- for repeated message_ids (every row beyond the first of a message_id).
-- report_event_counts has one column per reject reason, named after it and
-- in the spec's order; on the native path Rust builds it, on the SQL path
-- 00_report_event_counts.sql. SQL cannot turn a column name into a value,
-- so each rows_rejected row below names its reason and reads the column of
-- that name; the reasons themselves are defined in
-- views/01_validated_events.sql.
-- Parameters: none.
WITH event_counts AS (SELECT * FROM report_event_counts),
message_duplicates AS (
    SELECT coalesce(sum(n - 1), 0) AS n FROM message_checks
),
quality_rows(ord, metric, segment, value) AS (
    SELECT 1, 'rows_read', 'events', CAST(rows_read AS DOUBLE) FROM event_counts
    UNION ALL
    SELECT 2, 'rows_read', 'messages', CAST(count(*) AS DOUBLE) FROM messages
    UNION ALL
    SELECT 3, 'rows_rejected', 'null_event_id', CAST(null_event_id AS DOUBLE) FROM event_counts
    UNION ALL
    SELECT 4, 'rows_rejected', 'null_user_id', CAST(null_user_id AS DOUBLE) FROM event_counts
    UNION ALL
    SELECT 5, 'rows_rejected', 'null_ts', CAST(null_ts AS DOUBLE) FROM event_counts
    UNION ALL
    SELECT 6, 'rows_rejected', 'null_event_type', CAST(null_event_type AS DOUBLE) FROM event_counts
    UNION ALL
    SELECT 7, 'rows_rejected', 'unknown_event_type', CAST(unknown_event_type AS DOUBLE) FROM event_counts
    UNION ALL
    SELECT 8, 'rows_rejected', 'missing_conversation_id', CAST(missing_conversation_id AS DOUBLE) FROM event_counts
    UNION ALL
    SELECT 9, 'rows_rejected', 'invalid_rating', CAST(invalid_rating AS DOUBLE) FROM event_counts
    UNION ALL
    SELECT 10, 'duplicate_events', CAST(NULL AS VARCHAR), CAST(duplicate_events AS DOUBLE) FROM event_counts
    UNION ALL
    SELECT 11, 'duplicate_messages', CAST(NULL AS VARCHAR), CAST(n AS DOUBLE) FROM message_duplicates
    UNION ALL
    SELECT 12, 'orphan_lifecycle_events', CAST(NULL AS VARCHAR), CAST(orphan_lifecycle_events AS DOUBLE) FROM event_counts
)
SELECT metric, segment, value FROM quality_rows ORDER BY ord
