-- session_actions (report): the customer actions of every session that
-- starts in the previous or the current period, with their session. The SQL
-- path materializes it once so that sessionization (the whole history,
-- spec §2) runs once, and the `conversations` and `sessions` views are
-- re-created over it.
-- Implements REPORT_SPEC §2 and §3 "a session belongs to the period in which
-- it starts". Only the columns those views read are kept.
-- Output: event_id, user_id, ts, event_type, conversation_id, session_start.
-- Parameters: $prev_start, $cur_end (events' ts type).
SELECT event_id, user_id, ts, event_type, conversation_id, session_start
FROM session_actions
WHERE session_start >= $prev_start AND session_start < $cur_end
