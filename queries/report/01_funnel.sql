-- funnel: how do your customers get support? (people)
-- Implements REPORT_SPEC §4 `funnel`. Output: one row per period
-- ('current', 'previous'), one column per metric, in the spec's order.
-- A person is counted in every group that fits, except that a person all of
-- whose sessions in the period are `stopped` is in people_stopped only.
-- Reads report_sessions and report_messages (tagged with their period).
-- Parameters: none.
WITH periods(period) AS (VALUES ('current'), ('previous')),
-- person_flags: one row per person and period, with what their sessions did.
person_flags AS (
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
    FROM person_flags
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
