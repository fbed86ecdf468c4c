-- conversations: one row per conversation that has a `conversation_started`,
-- with its session.
-- Implements REPORT_SPEC §2 "Conversations": a conversation is its
-- conversation_id alone; its earliest start row (conversation_facts) gives
-- its user, started_at and session: the session of that row in
-- session_actions. It is automated when it has at least one bot_answer, no
-- teammate_reply and closed_by = 'bot' exactly; every other conversation is
-- human (including open ones).
CREATE OR REPLACE VIEW conversations AS
SELECT
    f.conversation_id,
    a.user_id,
    f.started_at,
    a.session_start,
    f.first_reply_at,
    f.closed_at,
    f.closed_by,
    f.rating,
    f.first_bot_answer_at,
    f.bot_answers,
    f.teammate_replies,
    f.closes,
    coalesce(f.bot_answers > 0 AND f.teammate_replies = 0 AND f.closed_by = 'bot', false)
        AS automated
FROM conversation_facts f
JOIN session_actions a ON a.event_id = f.start_event_id
WHERE f.start_rows > 0;
