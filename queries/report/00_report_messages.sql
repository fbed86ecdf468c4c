-- report_messages: deduplicated deliveries sent in the previous or the
-- current period that pass the proactive filters, tagged with their period.
-- Implements REPORT_SPEC §4 `proactive` (filters: OR within a kind, AND
-- across kinds; a tag filter matches a delivery having any of the tags and
-- never one with NULL or empty tags; exact, case-sensitive) and §6 (a NULL
-- sent_at falls in no period).
-- Parameters: $5/$6 current and $7/$8 previous [start, end) in sent_at's
-- type; $9 tags, $10 content types, $11 senders (lists, empty = no filter).
SELECT
    CASE WHEN sent_at >= $5 AND sent_at < $6 THEN 'current' ELSE 'previous' END AS period,
    message_id,
    user_id,
    sent_at,
    content_type,
    sender,
    tags,
    opened_at,
    clicked_at,
    reacted_at
FROM clean_messages
WHERE sent_at >= $7 AND sent_at < $6
  AND (cardinality($9) = 0 OR array_has_any(tags, $9))
  AND (cardinality($10) = 0 OR array_has($10, content_type))
  AND (cardinality($11) = 0 OR array_has($11, sender))
