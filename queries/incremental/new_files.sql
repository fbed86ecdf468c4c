-- The new input files of an incremental run, alone (docs/INCREMENTAL.md,
-- "What a run does"): what they add to the counters, whether they can be
-- folded in at all, and their rows against the state's indexes.
-- Each statement is named by the `-- name:` line above it.
-- Parameters: $frontier (the state's frontier, timestamp UTC),
-- $anchor_prefix (the reserved prefix of the state's synthetic rows).

-- name: event_rows
-- Rows of the new event files (spec §6 rows_read).
SELECT count(*) FROM events;

-- name: message_rows
-- Rows of the new message files (spec §6 rows_read).
SELECT count(*) FROM messages;

-- name: rejects
-- Rejected rows of the new files, per reason (spec §1).
SELECT reject_reason, count(*) AS n
FROM validated_events
WHERE reject_reason IS NOT NULL
GROUP BY reject_reason;

-- name: late_events
-- Valid new events the state cannot take: before its frontier, or using
-- the state's reserved prefix. Any makes the run a full one.
SELECT count(*) FROM validated_events
WHERE reject_reason IS NULL
  AND (ts < $frontier
       OR starts_with(event_id, $anchor_prefix)
       OR starts_with(user_id, $anchor_prefix));

-- name: late_messages
-- New deliveries sent before the frontier: any makes the run a full one.
SELECT count(*) FROM messages WHERE sent_at < $frontier AND message_id IS NOT NULL;

-- name: marked_events
-- The new valid events, each marked `known` when a copy of its id lies
-- before the frontier (such a row is a duplicate and nothing else).
SELECT v.*, i.event_id IS NOT NULL AS known
FROM (
    SELECT event_id, user_id, ts, event_type, channel, article_id, conversation_id, actor, rating
    FROM validated_events
    WHERE reject_reason IS NULL
) v
LEFT JOIN state_event_index i ON v.event_id = i.event_id;

-- name: marked_messages
-- The new deliveries, marked `known` when their id was folded before.
SELECT m.message_id, m.user_id, m.sent_at, m.content_type, m.sender, m.tags,
       m.opened_at, m.clicked_at, m.reacted_at,
       i.message_id IS NOT NULL AS known
FROM messages m
LEFT JOIN state_message_index i ON m.message_id = i.message_id;

-- name: known_events
-- New event rows that are copies of folded ids.
SELECT count(*) FROM new_events WHERE known;

-- name: known_messages
-- New deliveries that are copies of folded ids.
SELECT count(*) FROM new_messages WHERE known;
