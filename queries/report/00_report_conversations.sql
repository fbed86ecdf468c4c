-- report_conversations: every conversation (the `conversations` view) of the
-- sessions in report_sessions, with that session's period and status.
-- Implements REPORT_SPEC §2 "Conversations": a conversation belongs to the
-- session of its earliest conversation_started row.
-- Timestamp join keys are compared as Int64: under --memory-limit joins are
-- sort-merge joins (hash joins cannot spill), and DataFusion 55's sort-merge
-- join has no comparator for timestamps.
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
JOIN report_sessions s ON s.user_id = c.user_id AND arrow_cast(s.session_start, 'Int64') = arrow_cast(c.session_start, 'Int64')
