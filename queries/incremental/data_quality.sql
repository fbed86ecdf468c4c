-- data_quality (spec §6) of an incremental run, from the reduced input:
-- what the live rows add to the state's counters.
-- Each statement is named by the `-- name:` line above it.
-- Parameters: $anchor_prefix.

-- name: winners
-- The surviving copy of every id (spec §1 "Duplicates"), materialized once.
SELECT * FROM clean_events;

-- name: live_rows
-- Valid live rows, the state's synthetic rows left out.
SELECT count(*) FROM events WHERE NOT starts_with(event_id, $anchor_prefix);

-- name: live_winners
-- Distinct live ids, the synthetic rows left out.
SELECT count(*) FROM fold_winners WHERE NOT starts_with(event_id, $anchor_prefix);

-- name: live_message_duplicates
-- Repeated message ids among the live deliveries.
SELECT count(message_id) - count(DISTINCT message_id) FROM messages;

-- name: orphans
-- Lifecycle events of conversations started nowhere: not in the live
-- rows, not before the frontier (spec §6 orphan_lifecycle_events).
SELECT count(*)
FROM fold_winners l
WHERE l.event_type IN ('bot_answer', 'teammate_reply', 'conversation_closed', 'conversation_rated')
  AND NOT EXISTS (
      SELECT 1 FROM fold_winners s
      WHERE s.event_type = 'conversation_started' AND s.conversation_id = l.conversation_id)
  AND NOT EXISTS (
      SELECT 1 FROM state_started p WHERE p.conversation_id = l.conversation_id);
