-- human: conversations served by a teammate, per segment.
-- Implements REPORT_SPEC §4 `human`: every human conversation started in a
-- session of the period whose status is human_after_self_serve (segment
-- after_self_serve) or human_from_start (segment from_start). Medians are
-- exact (DataFusion's median; the mean of the two middle values for an even
-- count), in seconds with the input's precision.
-- Output: one row per (segment, period), one column per metric in order.
-- Reads report_conversations (tagged with their session's period and
-- status). Parameters: $ticks_per_second of the events' ts column.
-- segment_periods: every (segment, period) row the output must have.
WITH segment_periods(segment, period) AS (
    VALUES ('after_self_serve', 'current'), ('after_self_serve', 'previous'),
           ('from_start', 'current'), ('from_start', 'previous')
),
-- human_conversations: the human conversations of human sessions, with
-- their segment and durations in ticks of the ts column.
human_conversations AS (
    SELECT
        CASE status
            WHEN 'human_after_self_serve' THEN 'after_self_serve'
            WHEN 'human_from_start' THEN 'from_start'
        END AS segment,
        period,
        rating,
        CAST(arrow_cast(first_reply_at, 'Int64') - arrow_cast(started_at, 'Int64') AS DOUBLE)
            AS first_response_ticks,
        CAST(arrow_cast(closed_at, 'Int64') - arrow_cast(started_at, 'Int64') AS DOUBLE)
            AS close_ticks
    FROM report_conversations
    WHERE NOT automated AND status IN ('human_after_self_serve', 'human_from_start')
),
-- segment_stats: the counts and medians per (segment, period) present.
segment_stats AS (
    SELECT
        segment,
        period,
        count(*) AS conversations,
        count(rating) AS rated,
        avg(CAST(rating AS DOUBLE)) AS avg_rating,
        count(*) FILTER (WHERE rating >= 4) AS satisfied,
        median(first_response_ticks) AS median_first_response_ticks,
        median(close_ticks) AS median_close_ticks
    FROM human_conversations
    GROUP BY segment, period
)
SELECT
    segment_periods.segment,
    segment_periods.period,
    CAST(coalesce(conversations, 0) AS DOUBLE) AS conversations,
    CAST(coalesce(rated, 0) AS DOUBLE) AS rated_conversations,
    avg_rating,
    CASE WHEN coalesce(rated, 0) = 0 THEN NULL ELSE CAST(satisfied AS DOUBLE) / rated END AS csat,
    median_first_response_ticks / $ticks_per_second AS median_first_response_s,
    median_close_ticks / $ticks_per_second AS median_time_to_close_s
FROM segment_periods
LEFT JOIN segment_stats
    ON segment_stats.segment = segment_periods.segment
    AND segment_stats.period = segment_periods.period
