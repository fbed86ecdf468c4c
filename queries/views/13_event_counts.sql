-- event_counts: one row with the whole input's event counts for the
-- data_quality section: rows read, rejects per reason, duplicates, orphans.
-- Implements REPORT_SPEC §1 "Rules for rows" and §4 `data_quality`, from the
-- event_checks, duplicate_winners and conversation_facts views (each valid
-- row beyond the first of its event_id is a duplicate; only repeat
-- candidates can have more than one row).
-- Output: one row: rows_read, one column per reject reason (named after it,
-- in the spec's order: the order of views/01_validated_events.sql's CASE;
-- src/rules.rs REJECT_REASONS is checked against both lists),
-- duplicate_events, orphan_lifecycle_events. SQL cannot derive column names
-- from the reason values, hence the list below.
-- Each count is a global aggregate (exactly one row) and the row is their
-- cross join: no scalar subquery, whose rewrite into outer joins a cluster
-- would run once per partition (docs/CLUSTER.md).
-- Parameters: none.
CREATE OR REPLACE VIEW event_counts AS
WITH reads AS (
    SELECT count(*) AS rows_read FROM events
),
rejects AS (
    SELECT
        coalesce(sum(n) FILTER (WHERE reject_reason = 'null_event_id'), 0) AS null_event_id,
        coalesce(sum(n) FILTER (WHERE reject_reason = 'null_user_id'), 0) AS null_user_id,
        coalesce(sum(n) FILTER (WHERE reject_reason = 'null_ts'), 0) AS null_ts,
        coalesce(sum(n) FILTER (WHERE reject_reason = 'null_event_type'), 0) AS null_event_type,
        coalesce(sum(n) FILTER (WHERE reject_reason = 'unknown_event_type'), 0) AS unknown_event_type,
        coalesce(sum(n) FILTER (WHERE reject_reason = 'missing_conversation_id'), 0) AS missing_conversation_id,
        coalesce(sum(n) FILTER (WHERE reject_reason = 'invalid_rating'), 0) AS invalid_rating
    FROM event_checks
    WHERE reject_reason IS NOT NULL
),
duplicates AS (
    SELECT coalesce(sum(copies - 1), 0) AS duplicate_events FROM duplicate_winners
),
orphans AS (
    SELECT coalesce(sum(lifecycle_events), 0) AS orphan_lifecycle_events
    FROM conversation_facts
    WHERE start_rows = 0
)
SELECT
    reads.rows_read,
    rejects.null_event_id,
    rejects.null_user_id,
    rejects.null_ts,
    rejects.null_event_type,
    rejects.unknown_event_type,
    rejects.missing_conversation_id,
    rejects.invalid_rating,
    duplicates.duplicate_events,
    orphans.orphan_lifecycle_events
FROM reads
CROSS JOIN rejects
CROSS JOIN duplicates
CROSS JOIN orphans
