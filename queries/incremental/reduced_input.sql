-- The reduced input of an incremental run (docs/INCREMENTAL.md, "The
-- reduced input"): the state's anchors and live rows plus the new rows
-- kept, which the report runs over instead of the whole history.
-- Each statement is named by the `-- name:` line above it; each `events`
-- statement gives the contract's columns in the contract's order.
-- Parameters: $anchor_prefix, $frontier, $before_frontier (one second
-- before the frontier).

-- name: anchors
-- One synthetic customer action per user whose last session started in
-- the day before the frontier: it starts that session again, so the
-- 24 h rule (spec §2) sees it.
SELECT concat($anchor_prefix, user_id) AS event_id, user_id, start AS ts,
       'help_center_visit' AS event_type, CAST(NULL AS VARCHAR) AS channel,
       CAST(NULL AS VARCHAR) AS article_id, CAST(NULL AS VARCHAR) AS conversation_id,
       CAST(NULL AS VARCHAR) AS actor, CAST(NULL AS INT) AS rating
FROM state_anchors;

-- name: live_events
-- The state's live event rows (not folded yet).
SELECT event_id, user_id, ts, event_type, channel, article_id, conversation_id, actor, rating
FROM state_live_events;

-- name: kept_events
-- The new valid rows that are not copies of folded ids.
SELECT event_id, user_id, ts, event_type, channel, article_id, conversation_id, actor, rating
FROM new_events
WHERE NOT known;

-- name: restarts
-- A conversation started before the frontier keeps its session there even
-- when a later `conversation_started` names it again: the earliest start
-- counts (spec §3). Its first start is folded, so a synthetic start of a
-- synthetic user just before the frontier stands in for it (a session no
-- report shows); the later rows stay actions of their own sessions.
SELECT concat($anchor_prefix, 'start:', r.conversation_id) AS event_id,
       concat($anchor_prefix, 'conversation:', r.conversation_id) AS user_id,
       $before_frontier AS ts, 'conversation_started' AS event_type,
       CAST(NULL AS VARCHAR) AS channel, CAST(NULL AS VARCHAR) AS article_id,
       r.conversation_id, CAST(NULL AS VARCHAR) AS actor, CAST(NULL AS INT) AS rating
FROM (
    SELECT DISTINCT conversation_id
    FROM (
        SELECT conversation_id, event_type FROM state_live_events
        UNION ALL
        SELECT conversation_id, event_type FROM new_events WHERE NOT known
    )
    WHERE event_type = 'conversation_started'
) r
WHERE r.conversation_id IN (SELECT s.conversation_id FROM state_started s);

-- name: live_messages
-- The state's live deliveries.
SELECT message_id, user_id, sent_at, content_type, sender, tags, opened_at, clicked_at, reacted_at
FROM state_live_messages;

-- name: kept_messages
-- The new deliveries that are not copies of folded ids (an id-less one
-- before the frontier belongs to no report window).
SELECT message_id, user_id, sent_at, content_type, sender, tags, opened_at, clicked_at, reacted_at
FROM new_messages
WHERE NOT known AND NOT (message_id IS NULL AND sent_at < $frontier);
