-- report_people: one row per person and period, with the funnel groups
-- their sessions of that period put them in. The `funnel` section counts
-- these rows and `report_detail` lists them: the person rules live here
-- only.
-- Implements REPORT_SPEC §4 `funnel`: a person is in every group that fits,
-- except that a person all of whose sessions in the period are `stopped` is
-- in the stopped group only (so `tried_self_serve` leaves them out).
-- Output: period, user_id, sessions (in the period), then one boolean per
-- group. Reads report_sessions. Parameters: none.
SELECT
    period,
    user_id,
    count(*) AS sessions,
    bool_or(tried_self_serve) AND NOT bool_and(status = 'stopped') AS tried_self_serve,
    bool_or(status = 'self_serve_resolved') AS resolved_self_serve,
    bool_or(status = 'human_after_self_serve') AS human_after_self_serve,
    bool_or(status = 'human_from_start') AS human_from_start,
    bool_and(status = 'stopped') AS stopped
FROM report_sessions
GROUP BY period, user_id
