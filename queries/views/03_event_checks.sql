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
CREATE OR REPLACE VIEW event_checks AS
WITH reasons(code, reason) AS (
    VALUES (1, 'null_event_id'), (2, 'null_user_id'), (3, 'null_ts'), (4, 'null_event_type'),
           (5, 'unknown_event_type'), (6, 'missing_conversation_id'), (7, 'invalid_rating')
),
keyed AS (
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
counted AS (
    SELECT k, count(*) AS n
    FROM keyed
    GROUP BY k
    HAVING k <= 7 OR count(*) > 1
)
SELECT r.reason AS reject_reason, CASE WHEN c.k > 7 THEN c.k END AS id_hash, c.n
FROM counted c
LEFT JOIN reasons r ON arrow_cast(r.code, 'UInt64') = c.k;
