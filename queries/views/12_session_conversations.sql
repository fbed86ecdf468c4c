-- session_conversations: every conversation (the `conversations` view) with
-- the status of the session it belongs to.
-- Implements REPORT_SPEC §2 "Conversations" (a conversation belongs to the
-- session of its earliest conversation_started row) and §3 (a session's
-- status), for the human section's segments.
-- Timestamp join keys are compared as Int64: under a memory limit joins are
-- sort-merge joins, and DataFusion 55's sort-merge join has no comparator
-- for timestamps.
-- Output: the conversations columns, then status. Parameters: none.
CREATE OR REPLACE VIEW session_conversations AS
SELECT
    conversations.conversation_id,
    conversations.user_id,
    conversations.started_at,
    conversations.session_start,
    conversations.first_reply_at,
    conversations.closed_at,
    conversations.closed_by,
    conversations.rating,
    conversations.first_bot_answer_at,
    conversations.bot_answers,
    conversations.teammate_replies,
    conversations.closes,
    conversations.automated,
    sessions.status
FROM conversations
JOIN sessions
    ON sessions.user_id = conversations.user_id
    AND arrow_cast(sessions.session_start, 'Int64') = arrow_cast(conversations.session_start, 'Int64')
