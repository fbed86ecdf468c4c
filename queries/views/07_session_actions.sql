-- session_actions: customer actions (the events that start and fill
-- sessions), each with the start of its session.
-- Implements REPORT_SPEC §2 "Sessions": per user, over the whole history, a
-- session covers [start, start + 24h) and is never extended by activity;
-- lifecycle events take no part. `session_start` is the streaming UDWF.
-- Output: the action's event columns plus `session_start`. Parameters: none.
CREATE OR REPLACE VIEW session_actions AS
SELECT
    event_id,
    user_id,
    ts,
    event_type,
    channel,
    article_id,
    conversation_id,
    session_start(ts) OVER (PARTITION BY user_id ORDER BY ts) AS session_start
FROM clean_events
WHERE event_type IN ('help_center_visit', 'article_search', 'article_view', 'conversation_started');
