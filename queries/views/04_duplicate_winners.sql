-- duplicate_winners: for every valid event_id whose hash is a repeat
-- candidate (event_checks), the one copy that counts, with `copies`, the
-- number of valid rows carrying that event_id (1 when the hash collided with
-- another id and the id itself is not repeated).
-- Implements REPORT_SPEC §1 "Duplicates" and §6: the copy with the smallest
-- `ts` is kept; copies that share it but differ elsewhere (the spec says they
-- normally don't) are ordered by their other columns so the kept copy is
-- deterministic. Only candidate rows are ranked, never the whole table.
-- Output: the event columns plus `copies`. Parameters: none.
CREATE OR REPLACE VIEW duplicate_winners AS
SELECT event_id, user_id, ts, event_type, channel, article_id, conversation_id, actor, rating, copies
FROM (
    SELECT
        event_id, user_id, ts, event_type, channel, article_id, conversation_id, actor, rating,
        row_number() OVER (
            PARTITION BY event_id
            ORDER BY ts, user_id, event_type, channel, article_id, conversation_id, actor, rating
        ) AS copy_rank,
        count(*) OVER (PARTITION BY event_id) AS copies
    FROM validated_events
    WHERE reject_reason IS NULL
      AND id_hash(event_id) IN (
          SELECT id_hash FROM event_checks WHERE reject_reason IS NULL
      )
)
WHERE copy_rank = 1;
