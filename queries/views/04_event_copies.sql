-- event_copies: every valid copy of an event_id whose hash is a repeat
-- candidate (event_checks), ranked: copy_rank 1 is the copy that counts,
-- the others are dropped as duplicates; `copies` is the number of valid
-- rows carrying that event_id (1 when the hash collided with another id and
-- the id itself is not repeated).
-- Implements REPORT_SPEC §1 "Duplicates" and §6: the copy with the smallest
-- `ts` is kept; copies that share it but differ elsewhere (the spec says they
-- normally don't) are ordered by their other columns so the kept copy is
-- deterministic, NULLs last (written out: a session's default NULL
-- ordering must not change the copy kept; the operators' order is the
-- same). Only candidate rows are ranked, never the whole table.
-- duplicate_winners keeps rank 1; `report_detail('duplicate_events', …)`
-- lists the others.
-- Output: the event columns plus `copy_rank` and `copies`. Parameters: none.
CREATE OR REPLACE VIEW event_copies AS
SELECT
    event_id, user_id, ts, event_type, channel, article_id, conversation_id, actor, rating,
    row_number() OVER (
        PARTITION BY event_id
        ORDER BY ts, user_id, event_type, channel NULLS LAST, article_id NULLS LAST,
                 conversation_id NULLS LAST, actor NULLS LAST, rating NULLS LAST
    ) AS copy_rank,
    count(*) OVER (PARTITION BY event_id) AS copies
FROM validated_events
WHERE reject_reason IS NULL
  AND id_hash(event_id) IN (
      SELECT id_hash FROM event_checks WHERE reject_reason IS NULL
  );
