-- report_messages: deduplicated deliveries sent in the previous or the
-- current period that pass the proactive filters, tagged with their period.
-- Implements REPORT_SPEC §4 `proactive` (filters: OR within a kind, AND
-- across kinds; a tag filter matches a delivery having any of the tags and
-- never one with NULL or empty tags; exact, case-sensitive) and §6 (a NULL
-- sent_at falls in no period).
-- Output: period ('current' / 'previous'), the delivery's keys and kind
-- (message_id, user_id, sent_at, content_type, sender: for report_detail),
-- opened_at, clicked_at, reacted_at.
-- Parameters: $msg_prev_start, $msg_cur_start, $msg_cur_end (sent_at's type);
-- $tags, $content_types, $senders (lists; empty = no filter).
SELECT
    CASE WHEN sent_at >= $msg_cur_start THEN 'current' ELSE 'previous' END AS period,
    message_id,
    user_id,
    sent_at,
    content_type,
    sender,
    opened_at,
    clicked_at,
    reacted_at
FROM clean_messages
WHERE sent_at >= $msg_prev_start AND sent_at < $msg_cur_end
  AND (cardinality($tags) = 0 OR array_has_any(tags, $tags))
  AND (cardinality($content_types) = 0 OR array_has($content_types, content_type))
  AND (cardinality($senders) = 0 OR array_has($senders, sender))
