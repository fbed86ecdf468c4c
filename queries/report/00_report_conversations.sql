-- report_conversations: every conversation (the `conversations` view) of the
-- sessions in report_sessions, with that session's period and status.
-- Implements REPORT_SPEC §2 "Conversations": a conversation belongs to the
-- session of its earliest conversation_started row.
-- Timestamp join keys are compared as Int64: under --memory-limit joins are
-- sort-merge joins (hash joins cannot spill), and DataFusion 55's sort-merge
-- join has no comparator for timestamps.
-- Output: period, status, then the conversation's columns, as listed.
-- Parameters: none (reads the materialized report_sessions).
SELECT
    report_sessions.period,
    report_sessions.status,
    conversations.conversation_id,
    conversations.user_id,
    conversations.started_at,
    conversations.session_start,
    conversations.first_reply_at,
    conversations.closed_at,
    conversations.rating,
    conversations.first_bot_answer_at,
    conversations.bot_answers,
    conversations.teammate_replies,
    conversations.closes,
    conversations.automated
FROM conversations
JOIN report_sessions
    ON report_sessions.user_id = conversations.user_id
    AND arrow_cast(report_sessions.session_start, 'Int64') = arrow_cast(conversations.session_start, 'Int64')
