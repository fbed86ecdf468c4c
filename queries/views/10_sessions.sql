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
-- Output: one row per session (user_id, session_start, session_end, status,
-- tried_self_serve, its action and conversation counts, ...: the columns of
-- the final SELECT). Parameters: none.
CREATE OR REPLACE VIEW sessions AS
-- action_counts: per session, its actions by type and the times that matter.
WITH action_counts AS (
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
-- resolved_views: per session, its article_views with no later
-- conversation_started in the session.
resolved_views AS (
    SELECT viewed.user_id, viewed.session_start, count(*) AS article_views_resolved
    FROM session_actions viewed
    JOIN action_counts
        ON action_counts.user_id = viewed.user_id
        AND arrow_cast(action_counts.session_start, 'Int64') = arrow_cast(viewed.session_start, 'Int64')
    WHERE viewed.event_type = 'article_view'
      AND (action_counts.last_conversation_started_at IS NULL
          OR viewed.ts >= action_counts.last_conversation_started_at)
    GROUP BY viewed.user_id, viewed.session_start
),
-- session_conversations: per session, its conversations by kind and H (the
-- earliest-started human conversation): its id, start and first reply.
session_conversations AS (
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
    action_counts.user_id,
    action_counts.session_start,
    action_counts.session_start + INTERVAL '86400 seconds' AS session_end,
    CASE
        WHEN session_conversations.h_conversation_id IS NOT NULL THEN
            CASE
                WHEN action_counts.first_self_serve_at < session_conversations.h_started_at
                    OR (session_conversations.first_bot_answer_at IS NOT NULL
                        AND (session_conversations.h_first_reply_at IS NULL
                            OR session_conversations.first_bot_answer_at < session_conversations.h_first_reply_at))
                    THEN 'human_after_self_serve'
                ELSE 'human_from_start'
            END
        WHEN action_counts.article_views > 0
            OR coalesce(session_conversations.automated_conversations, 0) > 0 THEN 'self_serve_resolved'
        ELSE 'stopped'
    END AS status,
    (action_counts.article_views > 0 OR action_counts.article_searches > 0
        OR coalesce(session_conversations.conversations_with_bot_answer, 0) > 0) AS tried_self_serve,
    action_counts.actions,
    action_counts.help_center_visits,
    action_counts.article_searches,
    action_counts.article_views,
    action_counts.conversation_starts,
    coalesce(session_conversations.conversations, 0) AS conversations,
    coalesce(session_conversations.human_conversations, 0) AS human_conversations,
    coalesce(session_conversations.automated_conversations, 0) AS automated_conversations,
    coalesce(session_conversations.conversations_with_bot_answer, 0) AS conversations_with_bot_answer,
    session_conversations.h_conversation_id AS first_human_conversation_id,
    action_counts.first_self_serve_at,
    action_counts.last_conversation_started_at,
    coalesce(resolved_views.article_views_resolved, 0) AS article_views_resolved
FROM action_counts
LEFT JOIN session_conversations
    ON session_conversations.user_id = action_counts.user_id
    AND arrow_cast(session_conversations.session_start, 'Int64') = arrow_cast(action_counts.session_start, 'Int64')
LEFT JOIN resolved_views
    ON resolved_views.user_id = action_counts.user_id
    AND arrow_cast(resolved_views.session_start, 'Int64') = arrow_cast(action_counts.session_start, 'Int64');
