-- report_event_counts: one row with the whole input's event counts for the
-- data_quality section: rows read, rejects per reason, duplicates, orphans.
-- Implements REPORT_SPEC §1 "Rules for rows" and §4 `data_quality`, from the
-- event_checks, duplicate_winners and conversation_facts views (each valid
-- row beyond the first of its event_id is a duplicate; only repeat
-- candidates can have more than one row).
-- Output: one row: rows_read, one column per reject reason (named after it,
-- in the spec's order: the order of views/01_validated_events.sql's CASE),
-- duplicate_events, orphan_lifecycle_events. The native path builds the same
-- row in Rust, so the column names and order are fixed; SQL cannot derive
-- column names from the reason values, hence the list below.
-- Parameters: none.
WITH rejects_by_reason AS (
    SELECT reject_reason, sum(n) AS n
    FROM event_checks
    WHERE reject_reason IS NOT NULL
    GROUP BY reject_reason
)
SELECT
    (SELECT count(*) FROM events) AS rows_read,
    coalesce((SELECT n FROM rejects_by_reason WHERE reject_reason = 'null_event_id'), 0) AS null_event_id,
    coalesce((SELECT n FROM rejects_by_reason WHERE reject_reason = 'null_user_id'), 0) AS null_user_id,
    coalesce((SELECT n FROM rejects_by_reason WHERE reject_reason = 'null_ts'), 0) AS null_ts,
    coalesce((SELECT n FROM rejects_by_reason WHERE reject_reason = 'null_event_type'), 0) AS null_event_type,
    coalesce((SELECT n FROM rejects_by_reason WHERE reject_reason = 'unknown_event_type'), 0)
        AS unknown_event_type,
    coalesce((SELECT n FROM rejects_by_reason WHERE reject_reason = 'missing_conversation_id'), 0)
        AS missing_conversation_id,
    coalesce((SELECT n FROM rejects_by_reason WHERE reject_reason = 'invalid_rating'), 0) AS invalid_rating,
    (SELECT coalesce(sum(copies - 1), 0) FROM duplicate_winners) AS duplicate_events,
    (SELECT coalesce(sum(lifecycle_events), 0) FROM conversation_facts WHERE start_rows = 0)
        AS orphan_lifecycle_events
