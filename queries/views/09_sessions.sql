-- sessions: one row per session (user_id, session_start) with its status.
-- Implements REPORT_SPEC §2 "Session status":
--   H = the session's earliest-started human conversation (ties: smallest
--   conversation_id, byte order). A self-serve attempt before H is an
--   article_view/article_search with ts < H.started_at, or a bot_answer of any
--   of the session's conversations with ts < H.first_reply_at (any bot answer
--   when H has no reply).
--   human_after_self_serve / human_from_start: H exists, with / without one;
--   self_serve_resolved: no human conversation, and an article_view or an
--   automated conversation; stopped: anything else.
-- tried_self_serve: an article_view, an article_search, or a conversation
-- with a bot_answer. session_end is exclusive: start + exactly 86,400 s.
-- article_views_resolved (§4 `self_serve`): the session's article_views with
-- no conversation_started of the session at a later ts (an equal ts is not
-- later).
-- Timestamp join keys are compared as Int64: under --memory-limit joins are
-- sort-merge joins (hash joins cannot spill), and DataFusion 55's sort-merge
-- join has no comparator for timestamps.
CREATE OR REPLACE VIEW sessions AS
WITH acts AS (
    SELECT
        user_id,
        session_start,
        count(*) AS actions,
        count(*) FILTER (WHERE event_type = 'help_center_visit') AS help_center_visits,
        count(*) FILTER (WHERE event_type = 'article_search') AS article_searches,
        count(*) FILTER (WHERE event_type = 'article_view') AS article_views,
        count(*) FILTER (WHERE event_type = 'conversation_started') AS conversation_starts,
        min(ts) FILTER (WHERE event_type IN ('article_view', 'article_search')) AS first_self_serve_at,
        max(ts) FILTER (WHERE event_type = 'conversation_started') AS last_conversation_started_at
    FROM session_actions
    GROUP BY user_id, session_start
),
resolved AS (
    SELECT a.user_id, a.session_start, count(*) AS article_views_resolved
    FROM session_actions a
    JOIN acts s ON s.user_id = a.user_id AND arrow_cast(s.session_start, 'Int64') = arrow_cast(a.session_start, 'Int64')
    WHERE a.event_type = 'article_view'
      AND (s.last_conversation_started_at IS NULL OR a.ts >= s.last_conversation_started_at)
    GROUP BY a.user_id, a.session_start
),
convs AS (
    SELECT
        user_id,
        session_start,
        count(*) AS conversations,
        count(*) FILTER (WHERE automated) AS automated_conversations,
        count(*) FILTER (WHERE NOT automated) AS human_conversations,
        count(*) FILTER (WHERE bot_answers > 0) AS conversations_with_bot_answer,
        min(first_bot_answer_at) AS first_bot_answer_at,
        first_value(conversation_id ORDER BY started_at, conversation_id)
            FILTER (WHERE NOT automated) AS h_conversation_id,
        first_value(started_at ORDER BY started_at, conversation_id)
            FILTER (WHERE NOT automated) AS h_started_at,
        first_value(first_reply_at ORDER BY started_at, conversation_id)
            FILTER (WHERE NOT automated) AS h_first_reply_at
    FROM conversations
    GROUP BY user_id, session_start
)
SELECT
    a.user_id,
    a.session_start,
    a.session_start + INTERVAL '86400 seconds' AS session_end,
    CASE
        WHEN c.h_conversation_id IS NOT NULL THEN
            CASE
                WHEN a.first_self_serve_at < c.h_started_at
                    OR (c.first_bot_answer_at IS NOT NULL
                        AND (c.h_first_reply_at IS NULL OR c.first_bot_answer_at < c.h_first_reply_at))
                    THEN 'human_after_self_serve'
                ELSE 'human_from_start'
            END
        WHEN a.article_views > 0 OR coalesce(c.automated_conversations, 0) > 0 THEN 'self_serve_resolved'
        ELSE 'stopped'
    END AS status,
    (a.article_views > 0 OR a.article_searches > 0
        OR coalesce(c.conversations_with_bot_answer, 0) > 0) AS tried_self_serve,
    a.actions,
    a.help_center_visits,
    a.article_searches,
    a.article_views,
    a.conversation_starts,
    coalesce(c.conversations, 0) AS conversations,
    coalesce(c.human_conversations, 0) AS human_conversations,
    coalesce(c.automated_conversations, 0) AS automated_conversations,
    coalesce(c.conversations_with_bot_answer, 0) AS conversations_with_bot_answer,
    c.h_conversation_id AS first_human_conversation_id,
    a.first_self_serve_at,
    a.last_conversation_started_at,
    coalesce(r.article_views_resolved, 0) AS article_views_resolved
FROM acts a
LEFT JOIN convs c ON c.user_id = a.user_id AND arrow_cast(c.session_start, 'Int64') = arrow_cast(a.session_start, 'Int64')
LEFT JOIN resolved r ON r.user_id = a.user_id AND arrow_cast(r.session_start, 'Int64') = arrow_cast(a.session_start, 'Int64');
