-- report_conversations: the conversations (the `session_conversations`
-- view: conversations with their session's status) of the sessions that
-- start in the previous or the current period, each tagged with its period.
-- Implements REPORT_SPEC §2 "Conversations" (a conversation belongs to the
-- session of its earliest conversation_started row) and §3 (a session
-- belongs to the period in which it starts).
-- Output: period, status, then the conversation's columns, as listed.
-- Parameters: $prev_start, $cur_start, $cur_end (events' ts type).
SELECT
    CASE WHEN session_start >= $cur_start THEN 'current' ELSE 'previous' END AS period,
    status,
    conversation_id,
    user_id,
    started_at,
    session_start,
    first_reply_at,
    closed_at,
    rating,
    first_bot_answer_at,
    bot_answers,
    teammate_replies,
    closes,
    automated
FROM session_conversations
WHERE session_start >= $prev_start AND session_start < $cur_end
