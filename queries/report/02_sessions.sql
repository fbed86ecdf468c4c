-- sessions: sessions supported by self-serve and human support.
-- Implements REPORT_SPEC §4 `sessions`. Output: one row per period, one
-- column per metric in the spec's order.
-- Parameters: $1/$2 current and $3/$4 previous period [start, end).
WITH periods(period) AS (VALUES ('current'), ('previous')),
s AS (
    SELECT
        CASE
            WHEN session_start >= $1 AND session_start < $2 THEN 'current'
            WHEN session_start >= $3 AND session_start < $4 THEN 'previous'
        END AS period,
        status
    FROM report_sessions
),
agg AS (
    SELECT
        period,
        count(*) AS total,
        count(*) FILTER (WHERE status = 'self_serve_resolved') AS resolved,
        count(*) FILTER (WHERE status = 'human_after_self_serve') AS after_self_serve,
        count(*) FILTER (WHERE status = 'human_from_start') AS from_start,
        count(*) FILTER (WHERE status = 'stopped') AS stopped
    FROM s
    WHERE period IS NOT NULL
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
LEFT JOIN agg ON agg.period = periods.period
