-- report_sessions: the sessions (the `sessions` view's columns) that start in
-- the previous or the current period, each tagged with its period. This is
-- the one place the SQL path tags periods; every section reads the tag.
-- Implements REPORT_SPEC §2 and §3: sessions are computed over the whole
-- history and a session belongs to the period in which it starts. The
-- previous period ends where the current one begins.
-- Output: period ('current' / 'previous'), then the sessions columns listed.
-- Parameters: $prev_start, $cur_start, $cur_end (events' ts type).
SELECT
    CASE WHEN session_start >= $cur_start THEN 'current' ELSE 'previous' END AS period,
    user_id,
    session_start,
    session_end,
    status,
    tried_self_serve,
    actions,
    help_center_visits,
    article_searches,
    article_views,
    conversation_starts,
    conversations,
    human_conversations,
    automated_conversations,
    conversations_with_bot_answer,
    first_human_conversation_id,
    first_self_serve_at,
    last_conversation_started_at,
    article_views_resolved
FROM sessions
WHERE session_start >= $prev_start AND session_start < $cur_end
