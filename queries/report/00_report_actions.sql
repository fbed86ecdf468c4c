-- report_actions: the customer actions of every session that starts in the
-- previous or the current period, with their session. Materialized once per
-- report so that sessionization (the whole history, spec §2) runs once.
-- Implements REPORT_SPEC §2 and §3 "a session belongs to the period in which
-- it starts".
-- Parameters: $3 previous period start, $2 current period end (events' ts type).
SELECT *
FROM session_actions
WHERE session_start >= $3 AND session_start < $2
