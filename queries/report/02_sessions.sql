-- sessions: sessions supported by self-serve and human support.
-- Implements REPORT_SPEC §4 `sessions`. Output: one row per period, one
-- column per metric in the spec's order. Reads report_sessions.
-- Parameters: none.
WITH periods(period) AS (VALUES ('current'), ('previous')),
status_counts AS (
    SELECT
        period,
        count(*) AS total,
        count(*) FILTER (WHERE status = 'self_serve_resolved') AS resolved,
        count(*) FILTER (WHERE status = 'human_after_self_serve') AS after_self_serve,
        count(*) FILTER (WHERE status = 'human_from_start') AS from_start,
        count(*) FILTER (WHERE status = 'stopped') AS stopped
    FROM report_sessions
    GROUP BY period
)
SELECT
    periods.period,
    CAST(coalesce(total, 0) AS DOUBLE) AS sessions_total,
    CAST(coalesce(resolved, 0) AS DOUBLE) AS sessions_self_serve_resolved,
    CAST(coalesce(after_self_serve, 0) + coalesce(from_start, 0) AS DOUBLE) AS sessions_human_supported,
    CAST(coalesce(after_self_serve, 0) AS DOUBLE) AS sessions_human_after_self_serve,
    CAST(coalesce(from_start, 0) AS DOUBLE) AS sessions_human_from_start,
    CAST(coalesce(stopped, 0) AS DOUBLE) AS sessions_stopped
FROM periods
LEFT JOIN status_counts ON status_counts.period = periods.period
