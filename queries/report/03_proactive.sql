-- proactive: proactive messages delivered, opened, clicked and reacted to.
-- Implements REPORT_SPEC §4 `proactive`; the filters are applied in
-- report_messages. Rates are fractions, NULL when nothing was delivered.
-- Output: one row per period, one column per metric in the spec's order.
-- Reads report_messages. Parameters: none (the filters are bound there).
WITH periods(period) AS (VALUES ('current'), ('previous')),
delivery_counts AS (
    SELECT
        period,
        count(*) AS delivered,
        count(opened_at) AS opened,
        count(clicked_at) AS clicked,
        count(reacted_at) AS reacted
    FROM report_messages
    GROUP BY period
),
-- period_counts: both periods, a missing one with zero counts.
period_counts AS (
    SELECT
        periods.period,
        CAST(coalesce(delivered, 0) AS DOUBLE) AS delivered,
        CAST(coalesce(opened, 0) AS DOUBLE) AS opened,
        CAST(coalesce(clicked, 0) AS DOUBLE) AS clicked,
        CAST(coalesce(reacted, 0) AS DOUBLE) AS reacted
    FROM periods
    LEFT JOIN delivery_counts ON delivery_counts.period = periods.period
)
SELECT
    period,
    delivered AS messages_delivered,
    opened AS messages_opened,
    clicked AS messages_clicked,
    reacted AS messages_reacted,
    CASE WHEN delivered = 0 THEN NULL ELSE opened / delivered END AS open_rate,
    CASE WHEN delivered = 0 THEN NULL ELSE clicked / delivered END AS click_rate,
    CASE WHEN delivered = 0 THEN NULL ELSE reacted / delivered END AS reaction_rate
FROM period_counts
