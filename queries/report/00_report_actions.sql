-- report_actions: the customer actions of every session that starts in the
-- previous or the current period, with their session. Materialized once per
-- report so that sessionization (the whole history, spec §2) runs once.
-- Implements REPORT_SPEC §2 and §3 "a session belongs to the period in which
-- it starts". Only the columns the report reads are kept (channel and
-- article_id are not), which also keeps them out of the sort.
-- Parameters: $3 previous period start, $2 current period end (events' ts type).
SELECT event_id, user_id, ts, event_type, conversation_id, session_start
FROM session_actions
WHERE session_start >= $3 AND session_start < $2
