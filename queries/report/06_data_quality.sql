-- data_quality: what was read, rejected and dropped, over the whole input.
-- Implements REPORT_SPEC §4 `data_quality`. Output: (metric, segment, value)
-- rows in the spec's order; rows_rejected always has all seven reasons.
WITH reasons(ord, reason) AS (
    VALUES (3, 'null_event_id'), (4, 'null_user_id'), (5, 'null_ts'), (6, 'null_event_type'),
           (7, 'unknown_event_type'), (8, 'missing_conversation_id'), (9, 'invalid_rating')
),
rejected AS (
    SELECT reject_reason, count(*) AS n FROM rejected_events GROUP BY reject_reason
),
valid AS (
    SELECT count(*) AS n, count(DISTINCT event_id) AS ids
    FROM validated_events
    WHERE reject_reason IS NULL
),
msgs AS (
    SELECT count(message_id) AS n, count(DISTINCT message_id) AS ids FROM messages
),
rows_out(ord, metric, segment, value) AS (
    SELECT 1, 'rows_read', 'events', CAST(count(*) AS DOUBLE) FROM events
    UNION ALL
    SELECT 2, 'rows_read', 'messages', CAST(count(*) AS DOUBLE) FROM messages
    UNION ALL
    SELECT r.ord, 'rows_rejected', r.reason, CAST(coalesce(j.n, 0) AS DOUBLE)
    FROM reasons r LEFT JOIN rejected j ON j.reject_reason = r.reason
    UNION ALL
    SELECT 10, 'duplicate_events', CAST(NULL AS VARCHAR), CAST(n - ids AS DOUBLE) FROM valid
    UNION ALL
    SELECT 11, 'duplicate_messages', CAST(NULL AS VARCHAR), CAST(n - ids AS DOUBLE) FROM msgs
    UNION ALL
    SELECT 12, 'orphan_lifecycle_events', CAST(NULL AS VARCHAR), CAST(count(*) AS DOUBLE)
    FROM orphan_lifecycle_events
)
SELECT metric, segment, value FROM rows_out ORDER BY ord
