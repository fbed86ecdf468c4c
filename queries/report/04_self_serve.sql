-- self_serve: self-serve resolved sessions, articles and automation.
-- Implements REPORT_SPEC §4 `self_serve`:
--   * the resolution rate leaves stopped sessions out;
--   * a view is resolved when no conversation_started event of its session
--     comes at a later ts (per session: article_views_resolved);
--   * sessions_with_bot_answer / sessions_automated_resolved count sessions.
-- Output: one row per period, one column per metric in the spec's order.
-- Reads report_sessions. Parameters: none.
WITH periods(period) AS (VALUES ('current'), ('previous')),
session_totals AS (
    SELECT
        period,
        count(*) FILTER (WHERE status = 'self_serve_resolved') AS resolved,
        count(*) FILTER (WHERE status IN ('human_after_self_serve', 'human_from_start')) AS human,
        sum(article_views) AS article_views,
        sum(article_views_resolved) AS resolved_views,
        sum(automated_conversations) AS automated,
        count(*) FILTER (WHERE conversations_with_bot_answer > 0) AS with_bot,
        count(*) FILTER (WHERE automated_conversations > 0) AS automated_sessions
    FROM report_sessions
    GROUP BY period
),
-- period_totals: both periods, a missing one with zeros, as DOUBLE.
period_totals AS (
    SELECT
        periods.period,
        CAST(coalesce(resolved, 0) AS DOUBLE) AS resolved,
        CAST(coalesce(human, 0) AS DOUBLE) AS human,
        CAST(coalesce(article_views, 0) AS DOUBLE) AS article_views,
        CAST(coalesce(resolved_views, 0) AS DOUBLE) AS resolved_views,
        CAST(coalesce(automated, 0) AS DOUBLE) AS automated,
        CAST(coalesce(with_bot, 0) AS DOUBLE) AS with_bot,
        CAST(coalesce(automated_sessions, 0) AS DOUBLE) AS automated_sessions
    FROM periods
    LEFT JOIN session_totals ON session_totals.period = periods.period
)
SELECT
    period,
    CASE WHEN resolved + human = 0 THEN NULL ELSE resolved / (resolved + human) END
        AS self_serve_resolution_rate,
    article_views,
    resolved_views AS article_views_resolved,
    CASE WHEN article_views = 0 THEN NULL ELSE resolved_views / article_views END
        AS articles_resolution_rate,
    automated AS automated_resolutions,
    with_bot AS sessions_with_bot_answer,
    automated_sessions AS sessions_automated_resolved,
    CASE WHEN with_bot = 0 THEN NULL ELSE automated_sessions / with_bot END
        AS automated_resolution_rate
FROM period_totals
