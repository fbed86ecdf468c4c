-- clean_events: valid events, one row per event_id, no `content_showcase`.
-- Implements REPORT_SPEC §1 "Duplicates" and §6: duplicates are removed among
-- valid rows only (see duplicate_winners for which copy is kept).
-- Rows whose event_id hash is not a repeat candidate are unique and pass
-- straight through (the anti join's hash table holds only the few
-- candidates); the candidates are replaced by their winners.
-- Output: the event columns (without reject_reason). Parameters: none.
CREATE OR REPLACE VIEW clean_events AS
SELECT event_id, user_id, ts, event_type, channel, article_id, conversation_id, actor, rating
FROM validated_events v
WHERE reject_reason IS NULL
  AND NOT EXISTS (
      SELECT 1
      FROM event_checks chk
      WHERE chk.reject_reason IS NULL AND chk.id_hash = id_hash(v.event_id)
  )
UNION ALL
SELECT event_id, user_id, ts, event_type, channel, article_id, conversation_id, actor, rating
FROM duplicate_winners;
