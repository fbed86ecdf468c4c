-- clean_events: valid events, one row per event_id, no `content_showcase`.
-- Implements REPORT_SPEC §1 "Duplicates" and §6: duplicates are removed among
-- valid rows only, keeping the copy with the smallest `ts`. Copies that share
-- the smallest `ts` but differ elsewhere (the spec says they normally don't)
-- are ordered by their other columns so the kept copy is deterministic.
-- Repeats are rare, so ids are first counted with a hash aggregate and only
-- the repeated ones are ranked: a window over every event_id would sort the
-- whole table.
CREATE OR REPLACE VIEW clean_events AS
WITH valid AS (
    SELECT event_id, user_id, ts, event_type, channel, article_id, conversation_id, actor, rating
    FROM validated_events
    WHERE reject_reason IS NULL
),
repeated AS (
    SELECT event_id
    FROM valid
    GROUP BY event_id
    HAVING count(*) > 1
)
SELECT *
FROM valid
WHERE NOT EXISTS (SELECT 1 FROM repeated r WHERE r.event_id = valid.event_id)
UNION ALL
SELECT event_id, user_id, ts, event_type, channel, article_id, conversation_id, actor, rating
FROM (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY event_id
            ORDER BY ts, user_id, event_type, channel, article_id, conversation_id, actor, rating
        ) AS copy_rank
    FROM valid
    WHERE EXISTS (SELECT 1 FROM repeated r WHERE r.event_id = valid.event_id)
)
WHERE copy_rank = 1;
