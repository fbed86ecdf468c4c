-- clean_messages: deliveries with repeated message_ids counted once.
-- Implements REPORT_SPEC §1 `messages` and §6: messages have no reject rules;
-- a NULL message_id is never a duplicate. Of the copies of a repeated
-- message_id the one message_copies ranks first is kept.
-- Output: the `messages` columns. Parameters: none.
CREATE OR REPLACE VIEW clean_messages AS
SELECT message_id, user_id, sent_at, content_type, sender, tags, opened_at, clicked_at, reacted_at
FROM messages m
WHERE message_id IS NULL
   OR NOT EXISTS (SELECT 1 FROM message_checks repeated WHERE repeated.message_id = m.message_id)
UNION ALL
SELECT message_id, user_id, sent_at, content_type, sender, tags, opened_at, clicked_at, reacted_at
FROM message_copies
WHERE copy_rank = 1;
