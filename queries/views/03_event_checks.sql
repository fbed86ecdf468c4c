-- event_checks: one pass over `events` that both counts the rejected rows by
-- reason and finds the event_ids that may be repeated among valid rows.
-- Output: (reject_reason, id_hash, n):
--   * one row per reject reason present (id_hash NULL, n = rows rejected);
--   * one row per id_hash (64-bit hash of event_id, see `id_hash`) seen on
--     more than one valid row (reject_reason NULL, n = those rows).
-- Implements REPORT_SPEC §1 "Rules for rows" / "Duplicates" and §6 (rows are
-- validated before duplicates are looked for). A hash collision only adds a
-- candidate: `duplicate_winners` deduplicates candidates by the event_id
-- itself, so counts stay exact. Counting hashes instead of strings is what
-- makes this pass cheap over billions of rows: the single UInt64 key is the
-- id's hash for a valid row (top bit always set) or the reason's position
-- 1..7 for a rejected one, so the two never collide.
-- The reason codes are defined in 01_validated_events.sql; they are listed
-- here again only to give each one its small key (and back its name).
-- Grouping on (reject_reason, id_hash) instead needs no list, but that
-- two-column key made this pass ~7-10% slower in CPU time and up to ~10%
-- bigger in peak memory (measured on the 50M-row m50 dataset).
-- Parameters: none.
CREATE OR REPLACE VIEW event_checks AS
-- reasons: each reject reason's key, its position in the spec's order.
WITH reasons(code, reason) AS (
    VALUES (1, 'null_event_id'), (2, 'null_user_id'), (3, 'null_ts'), (4, 'null_event_type'),
           (5, 'unknown_event_type'), (6, 'missing_conversation_id'), (7, 'invalid_rating')
),
-- check_keys: one key per row: the reason's code or the event_id's hash.
check_keys AS (
    SELECT
        CASE reject_reason
            WHEN 'null_event_id' THEN arrow_cast(1, 'UInt64')
            WHEN 'null_user_id' THEN arrow_cast(2, 'UInt64')
            WHEN 'null_ts' THEN arrow_cast(3, 'UInt64')
            WHEN 'null_event_type' THEN arrow_cast(4, 'UInt64')
            WHEN 'unknown_event_type' THEN arrow_cast(5, 'UInt64')
            WHEN 'missing_conversation_id' THEN arrow_cast(6, 'UInt64')
            WHEN 'invalid_rating' THEN arrow_cast(7, 'UInt64')
            ELSE id_hash(event_id)
        END AS k
    FROM validated_events
),
-- key_counts: rows per key, keeping reasons and repeated hashes only.
key_counts AS (
    SELECT k, count(*) AS n
    FROM check_keys
    GROUP BY k
    HAVING k <= 7 OR count(*) > 1
)
SELECT
    reasons.reason AS reject_reason,
    CASE WHEN key_counts.k > 7 THEN key_counts.k END AS id_hash,
    key_counts.n
FROM key_counts
LEFT JOIN reasons ON arrow_cast(reasons.code, 'UInt64') = key_counts.k;
