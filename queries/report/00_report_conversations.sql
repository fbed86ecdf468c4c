-- report_conversations: every conversation (the `conversations` view) of the
-- sessions in report_sessions, with that session's period and status.
-- Implements REPORT_SPEC §2 "Conversations": a conversation belongs to the
-- session of its earliest conversation_started row.
SELECT
    s.period,
    s.status,
    c.conversation_id,
    c.user_id,
    c.started_at,
    c.session_start,
    c.first_reply_at,
    c.closed_at,
    c.rating,
    c.first_bot_answer_at,
    c.bot_answers,
    c.teammate_replies,
    c.closes,
    c.automated
FROM conversations c
JOIN report_sessions s ON s.user_id = c.user_id AND s.session_start = c.session_start
