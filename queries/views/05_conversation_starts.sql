-- conversation_starts: per conversation_id, the conversation_started row that
-- counts: the earliest (ties: smallest event_id), over the whole history.
-- Implements REPORT_SPEC §6 "If it has several conversation_started rows, the
-- earliest counts". Its event_id finds the conversation's session.
CREATE OR REPLACE VIEW conversation_starts AS
SELECT conversation_id, event_id AS start_event_id, user_id, channel, ts AS started_at
FROM (
    SELECT
        *,
        row_number() OVER (PARTITION BY conversation_id ORDER BY ts, event_id) AS start_rank
    FROM clean_events
    WHERE event_type = 'conversation_started'
)
WHERE start_rank = 1;
