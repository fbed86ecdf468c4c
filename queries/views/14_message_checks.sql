-- message_checks: the message_ids carried by more than one delivery row.
-- Implements REPORT_SPEC §1 `messages` and §6 (duplicates count once; a NULL
-- message_id is never a duplicate). Few ids repeat, so clean_messages ranks
-- only their rows instead of sorting every delivery.
-- Output: (message_id, n = its rows). Parameters: none.
CREATE OR REPLACE VIEW message_checks AS
SELECT message_id, count(*) AS n
FROM messages
WHERE message_id IS NOT NULL
GROUP BY message_id
HAVING count(*) > 1;
