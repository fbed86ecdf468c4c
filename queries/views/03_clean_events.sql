-- clean_events: valid events, one row per event_id, no `content_showcase`.
-- Implements REPORT_SPEC §1 "Duplicates" and §6: duplicates are removed among
-- valid rows only, keeping the copy with the smallest `ts`. Copies that share
-- the smallest `ts` but differ elsewhere (the spec says they normally don't)
-- are ordered by their other columns so the kept copy is deterministic.
CREATE OR REPLACE VIEW clean_events AS
SELECT event_id, user_id, ts, event_type, channel, article_id, conversation_id, actor, rating
FROM (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY event_id
            ORDER BY ts, user_id, event_type, channel, article_id, conversation_id, actor, rating
        ) AS copy_rank
    FROM validated_events
    WHERE reject_reason IS NULL
)
WHERE copy_rank = 1;
