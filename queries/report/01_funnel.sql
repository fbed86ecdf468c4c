-- funnel: how do your customers get support? (people)
-- Implements REPORT_SPEC §4 `funnel`. Output: one row per period
-- ('current', 'previous'), one column per metric, in the spec's order.
-- Which groups a person is in is decided by report_people (one row per
-- person and period); this counts them. Reads report_people and
-- report_messages (tagged with their period). Parameters: none.
WITH periods(period) AS (VALUES ('current'), ('previous')),
people_counts AS (
    SELECT
        period,
        count(*) AS seeking,
        count(*) FILTER (WHERE tried_self_serve) AS tried,
        count(*) FILTER (WHERE resolved_self_serve) AS resolved,
        count(*) FILTER (WHERE human_after_self_serve) AS after_self_serve,
        count(*) FILTER (WHERE human_from_start) AS from_start,
        count(*) FILTER (WHERE stopped) AS stopped
    FROM report_people
    GROUP BY period
),
deliveries AS (
    SELECT period, count(*) AS delivered
    FROM report_messages
    GROUP BY period
)
SELECT
    periods.period,
    CAST(coalesce(deliveries.delivered, 0) AS DOUBLE) AS proactive_messages,
    CAST(coalesce(people_counts.seeking, 0) AS DOUBLE) AS people_seeking_support,
    CAST(coalesce(people_counts.tried, 0) AS DOUBLE) AS people_tried_self_serve,
    CAST(coalesce(people_counts.resolved, 0) AS DOUBLE) AS people_resolved_self_serve,
    CAST(coalesce(people_counts.after_self_serve, 0) AS DOUBLE) AS people_human_after_self_serve,
    CAST(coalesce(people_counts.from_start, 0) AS DOUBLE) AS people_human_from_start,
    CAST(coalesce(people_counts.stopped, 0) AS DOUBLE) AS people_stopped
FROM periods
LEFT JOIN people_counts ON people_counts.period = periods.period
LEFT JOIN deliveries ON deliveries.period = periods.period
