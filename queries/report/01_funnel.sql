-- funnel: how do your customers get support? (people)
-- Implements REPORT_SPEC §4 `funnel`. Output: one row per period
-- ('current', 'previous'), one column per metric, in the spec's order.
-- A person is counted in every group that fits, except that a person all of
-- whose sessions in the period are `stopped` is in people_stopped only.
-- Reads report_sessions and report_messages (tagged with their period).
WITH periods(period) AS (VALUES ('current'), ('previous')),
people AS (
    SELECT
        period,
        user_id,
        bool_and(status = 'stopped') AS all_stopped,
        bool_or(tried_self_serve) AS tried,
        bool_or(status = 'self_serve_resolved') AS resolved,
        bool_or(status = 'human_after_self_serve') AS after_self_serve,
        bool_or(status = 'human_from_start') AS from_start
    FROM report_sessions
    GROUP BY period, user_id
),
people_counts AS (
    SELECT
        period,
        count(*) AS seeking,
        count(*) FILTER (WHERE tried AND NOT all_stopped) AS tried,
        count(*) FILTER (WHERE resolved) AS resolved,
        count(*) FILTER (WHERE after_self_serve) AS after_self_serve,
        count(*) FILTER (WHERE from_start) AS from_start,
        count(*) FILTER (WHERE all_stopped) AS stopped
    FROM people
    GROUP BY period
),
deliveries AS (
    SELECT period, count(*) AS delivered
    FROM report_messages
    GROUP BY period
)
SELECT
    periods.period,
    CAST(coalesce(d.delivered, 0) AS DOUBLE) AS proactive_messages,
    CAST(coalesce(p.seeking, 0) AS DOUBLE) AS people_seeking_support,
    CAST(coalesce(p.tried, 0) AS DOUBLE) AS people_tried_self_serve,
    CAST(coalesce(p.resolved, 0) AS DOUBLE) AS people_resolved_self_serve,
    CAST(coalesce(p.after_self_serve, 0) AS DOUBLE) AS people_human_after_self_serve,
    CAST(coalesce(p.from_start, 0) AS DOUBLE) AS people_human_from_start,
    CAST(coalesce(p.stopped, 0) AS DOUBLE) AS people_stopped
FROM periods
LEFT JOIN people_counts p ON p.period = periods.period
LEFT JOIN deliveries d ON d.period = periods.period
