-- conversations: one row per conversation that has a `conversation_started`,
-- with its session.
-- Implements REPORT_SPEC §2 "Conversations": a conversation is its
-- conversation_id alone; its earliest start row (conversation_facts) gives
-- its user, started_at and session: the session of that row in
-- session_actions. It is automated when it has at least one bot_answer, no
-- teammate_reply and closed_by = 'bot' exactly; every other conversation is
-- human (including open ones).
-- Output: one row per conversation (conversation_id, user_id, started_at,
-- session_start, reply/close/rating facts, automated). Parameters: none.
CREATE OR REPLACE VIEW conversations AS
SELECT
    facts.conversation_id,
    start_action.user_id,
    facts.started_at,
    start_action.session_start,
    facts.first_reply_at,
    facts.closed_at,
    facts.closed_by,
    facts.rating,
    facts.first_bot_answer_at,
    facts.bot_answers,
    facts.teammate_replies,
    facts.closes,
    coalesce(facts.bot_answers > 0 AND facts.teammate_replies = 0 AND facts.closed_by = 'bot', false)
        AS automated
FROM conversation_facts facts
JOIN session_actions start_action ON start_action.event_id = facts.start_event_id
WHERE facts.start_rows > 0;
