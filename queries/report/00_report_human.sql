-- report_human: the human conversations of human sessions, one row each,
-- with their segment and durations. The `human` section aggregates these
-- rows and `report_detail` lists them: which conversations a segment holds
-- is decided here only.
-- Implements REPORT_SPEC §4 `human`: every human (not automated)
-- conversation started in a session of the period whose status is
-- human_after_self_serve (segment after_self_serve) or human_from_start
-- (segment from_start). Durations are in ticks of the events' ts column
-- (NULL when never replied to / never closed); the section turns them into
-- seconds.
-- Output: segment, period, the conversation's keys and times, rating,
-- first_response_ticks, close_ticks. Reads report_conversations.
-- Parameters: none.
SELECT
    CASE status
        WHEN 'human_after_self_serve' THEN 'after_self_serve'
        WHEN 'human_from_start' THEN 'from_start'
    END AS segment,
    period,
    status,
    conversation_id,
    user_id,
    session_start,
    started_at,
    first_reply_at,
    closed_at,
    rating,
    CAST(arrow_cast(first_reply_at, 'Int64') - arrow_cast(started_at, 'Int64') AS DOUBLE)
        AS first_response_ticks,
    CAST(arrow_cast(closed_at, 'Int64') - arrow_cast(started_at, 'Int64') AS DOUBLE)
        AS close_ticks
FROM report_conversations
WHERE NOT automated AND status IN ('human_after_self_serve', 'human_from_start')
