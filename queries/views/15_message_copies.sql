-- message_copies: every row of a repeated message_id (message_checks),
-- ranked: copy_rank 1 is the copy kept, the others are dropped as
-- duplicates.
-- Implements REPORT_SPEC §1 `messages` and §6: of the copies of one
-- message_id the one with the smallest sent_at is kept (NULL last), then the
-- earliest opened/clicked/reacted times, then the other columns (tags
-- too: a tag filter sees them), NULLs last written out, so the kept copy
-- is deterministic. Only the rows of repeated ids are ranked.
-- clean_messages keeps rank 1; `report_detail('duplicate_messages', …)`
-- lists the others.
-- Output: the `messages` columns plus `copy_rank`. Parameters: none.
CREATE OR REPLACE VIEW message_copies AS
SELECT
    message_id, user_id, sent_at, content_type, sender, tags, opened_at, clicked_at, reacted_at,
    row_number() OVER (
        PARTITION BY message_id
        ORDER BY sent_at NULLS LAST, opened_at NULLS LAST, clicked_at NULLS LAST,
                 reacted_at NULLS LAST, user_id NULLS LAST, content_type NULLS LAST,
                 sender NULLS LAST, tags NULLS LAST
    ) AS copy_rank
FROM messages m
WHERE EXISTS (SELECT 1 FROM message_checks repeated WHERE repeated.message_id = m.message_id);
