-- data_quality: what was read, rejected and dropped, over the whole input.
-- Implements REPORT_SPEC §4 `data_quality`. Output: (metric, segment, value)
-- rows in the spec's order; rows_rejected always has all seven reasons.
WITH reasons(ord, reason) AS (
    VALUES (3, 'null_event_id'), (4, 'null_user_id'), (5, 'null_ts'), (6, 'null_event_type'),
           (7, 'unknown_event_type'), (8, 'missing_conversation_id'), (9, 'invalid_rating')
),
rejected AS (
    SELECT reject_reason, sum(n) AS n
    FROM event_checks
    WHERE reject_reason IS NOT NULL
    GROUP BY reject_reason
),
-- Every valid row beyond the first of its event_id is a duplicate; only ids
-- among the repeat candidates can have more than one row.
dups AS (
    SELECT coalesce(sum(copies - 1), 0) AS n FROM duplicate_winners
),
orphans AS (
    SELECT coalesce(sum(lifecycle_events), 0) AS n FROM conversation_facts WHERE start_rows = 0
),
msgs AS (
    SELECT coalesce(sum(n - 1), 0) AS n FROM message_checks
),
rows_out(ord, metric, segment, value) AS (
    SELECT 1, 'rows_read', 'events', CAST(count(*) AS DOUBLE) FROM events
    UNION ALL
    SELECT 2, 'rows_read', 'messages', CAST(count(*) AS DOUBLE) FROM messages
    UNION ALL
    SELECT r.ord, 'rows_rejected', r.reason, CAST(coalesce(j.n, 0) AS DOUBLE)
    FROM reasons r LEFT JOIN rejected j ON j.reject_reason = r.reason
    UNION ALL
    SELECT 10, 'duplicate_events', CAST(NULL AS VARCHAR), CAST(n AS DOUBLE) FROM dups
    UNION ALL
    SELECT 11, 'duplicate_messages', CAST(NULL AS VARCHAR), CAST(n AS DOUBLE) FROM msgs
    UNION ALL
    SELECT 12, 'orphan_lifecycle_events', CAST(NULL AS VARCHAR), CAST(n AS DOUBLE) FROM orphans
)
SELECT metric, segment, value FROM rows_out ORDER BY ord
