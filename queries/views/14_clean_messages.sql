-- clean_messages: deliveries with repeated message_ids counted once.
-- Implements REPORT_SPEC §1 `messages` and §6: messages have no reject rules;
-- a NULL message_id is never a duplicate. Of the copies of one message_id the
-- one with the smallest sent_at is kept (NULL last), then the earliest
-- opened/clicked/reacted times, so the kept copy is deterministic. Only the
-- rows of repeated ids (message_checks) are ranked.
-- Output: the `messages` columns. Parameters: none.
CREATE OR REPLACE VIEW clean_messages AS
SELECT message_id, user_id, sent_at, content_type, sender, tags, opened_at, clicked_at, reacted_at
FROM messages m
WHERE message_id IS NULL
   OR NOT EXISTS (SELECT 1 FROM message_checks repeated WHERE repeated.message_id = m.message_id)
UNION ALL
SELECT message_id, user_id, sent_at, content_type, sender, tags, opened_at, clicked_at, reacted_at
FROM (
    SELECT
        *,
        row_number() OVER (
            PARTITION BY message_id
            ORDER BY sent_at NULLS LAST, opened_at NULLS LAST, clicked_at NULLS LAST,
                     reacted_at NULLS LAST, user_id, content_type, sender
        ) AS copy_rank
    FROM messages m
    WHERE EXISTS (SELECT 1 FROM message_checks repeated WHERE repeated.message_id = m.message_id)
)
WHERE copy_rank = 1;
