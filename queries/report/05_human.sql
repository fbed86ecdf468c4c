-- human: conversations served by a teammate, per segment.
-- Implements REPORT_SPEC §4 `human`; which conversations a segment holds is
-- decided by report_human (one row per human conversation of a human
-- session, with its segment and durations). Medians are exact (DataFusion's
-- median; the mean of the two middle values for an even count), in seconds
-- with the input's precision.
-- Output: one row per (segment, period), one column per metric in order.
-- Reads report_human. Parameters: $ticks_per_second of the events' ts
-- column.
-- segment_periods: every (segment, period) row the output must have.
WITH segment_periods(segment, period) AS (
    VALUES ('after_self_serve', 'current'), ('after_self_serve', 'previous'),
           ('from_start', 'current'), ('from_start', 'previous')
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
    FROM report_human
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
