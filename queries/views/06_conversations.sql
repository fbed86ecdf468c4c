-- conversations: one row per conversation that has a `conversation_started`.
-- Implements REPORT_SPEC §2 "Conversations" and §6:
--   * a conversation is its conversation_id alone; its earliest start
--     (conversation_starts) gives its user, started_at and session: the
--     session of that start row in session_actions;
--   * lifecycle events join by conversation_id whenever they happen;
--   * first_reply_at = earliest teammate_reply; closed_at = latest close,
--     closed_by = that close's actor; rating = the latest rating's value (a
--     NULL rating, if latest, leaves it unrated); ties: greatest event_id;
--   * automated = at least one bot_answer, no teammate_reply and
--     closed_by = 'bot' exactly; every other conversation is human.
CREATE OR REPLACE VIEW conversations AS
WITH lifecycle AS (
    SELECT
        conversation_id,
        count(*) FILTER (WHERE event_type = 'bot_answer') AS bot_answers,
        count(*) FILTER (WHERE event_type = 'teammate_reply') AS teammate_replies,
        count(*) FILTER (WHERE event_type = 'conversation_closed') AS closes,
        min(ts) FILTER (WHERE event_type = 'bot_answer') AS first_bot_answer_at,
        min(ts) FILTER (WHERE event_type = 'teammate_reply') AS first_reply_at,
        max(ts) FILTER (WHERE event_type = 'conversation_closed') AS closed_at,
        last_value(actor ORDER BY ts, event_id)
            FILTER (WHERE event_type = 'conversation_closed') AS closed_by,
        last_value(rating ORDER BY ts, event_id)
            FILTER (WHERE event_type = 'conversation_rated') AS rating
    FROM clean_events
    WHERE event_type IN ('bot_answer', 'teammate_reply', 'conversation_closed', 'conversation_rated')
    GROUP BY conversation_id
)
SELECT
    s.conversation_id,
    s.user_id,
    s.channel,
    s.started_at,
    a.session_start,
    l.first_reply_at,
    l.closed_at,
    l.closed_by,
    l.rating,
    l.first_bot_answer_at,
    coalesce(l.bot_answers, 0) AS bot_answers,
    coalesce(l.teammate_replies, 0) AS teammate_replies,
    coalesce(l.closes, 0) AS closes,
    coalesce(
        coalesce(l.bot_answers, 0) > 0
        AND coalesce(l.teammate_replies, 0) = 0
        AND l.closed_by = 'bot',
        false
    ) AS automated
FROM conversation_starts s
JOIN session_actions a ON a.event_id = s.start_event_id
LEFT JOIN lifecycle l ON l.conversation_id = s.conversation_id;
