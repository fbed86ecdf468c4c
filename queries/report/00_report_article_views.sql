-- report_article_views: the article views of the sessions that start in the
-- previous or the current period, one row each, with whether the view
-- resolved (for `report_detail`; the report itself reads the per-session
-- counts of the `sessions` relation).
-- Implements REPORT_SPEC §2 (an action belongs to the session whose 24 hours
-- hold it: a user's sessions never overlap, so the range join below finds
-- exactly the session that sessionization gave it) and §4 `self_serve` (a
-- view is resolved when no conversation_started of its session comes at a
-- strictly later ts: the session's last start is not after the view).
-- Output: period, status, event_id, user_id, session_start, ts, article_id,
-- resolved. Reads clean_events (the deduplicated valid events) and
-- report_sessions. Parameters: $prev_start, $views_end (the current
-- period's end plus 24 hours), events' ts type.
SELECT
    s.period,
    s.status,
    v.event_id,
    v.user_id,
    s.session_start,
    v.ts,
    v.article_id,
    (s.last_conversation_started_at IS NULL OR v.ts >= s.last_conversation_started_at)
        AS resolved
FROM clean_events v
JOIN report_sessions s
    ON s.user_id = v.user_id AND v.ts >= s.session_start AND v.ts < s.session_end
WHERE v.event_type = 'article_view' AND v.ts >= $prev_start AND v.ts < $views_end
