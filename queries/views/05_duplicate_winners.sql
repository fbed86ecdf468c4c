-- duplicate_winners: for every valid event_id whose hash is a repeat
-- candidate, the one copy that counts (event_copies' rank 1), with
-- `copies`, the number of valid rows carrying that event_id.
-- Implements REPORT_SPEC §1 "Duplicates" (the rule is in event_copies).
-- Output: the event columns plus `copies`. Parameters: none.
CREATE OR REPLACE VIEW duplicate_winners AS
SELECT event_id, user_id, ts, event_type, channel, article_id, conversation_id, actor, rating, copies
FROM event_copies
WHERE copy_rank = 1;
