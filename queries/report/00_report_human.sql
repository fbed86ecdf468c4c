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
-- Output: segment, every column of report_conversations (period, status,
-- the conversation's keys and times, rating, ...), first_response_ticks,
-- close_ticks. Reads report_conversations. Its columns come through `*`:
-- a plain report materializes report_conversations with only the columns
-- a section reads (src/report/mod.rs, `columns_sections_read`), and this
-- view must plan over that table as well as over the whole one the
-- detail reads.
-- Parameters: none.
SELECT
    CASE status
        WHEN 'human_after_self_serve' THEN 'after_self_serve'
        WHEN 'human_from_start' THEN 'from_start'
    END AS segment,
    *,
    CAST(arrow_cast(first_reply_at, 'Int64') - arrow_cast(started_at, 'Int64') AS DOUBLE)
        AS first_response_ticks,
    CAST(arrow_cast(closed_at, 'Int64') - arrow_cast(started_at, 'Int64') AS DOUBLE)
        AS close_ticks
FROM report_conversations
WHERE NOT automated AND status IN ('human_after_self_serve', 'human_from_start')
