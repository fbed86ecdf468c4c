-- report_detail: the items behind each metric of the report, both periods.
-- Each statement is named after the metric it lists (`-- name:`; a metric
-- with segments in data_quality has one statement per kind of segment) and
-- reads the same relations the sections read, so no rule is written here a
-- second time: the sections' numbers are these rows counted.
-- Implements REPORT_SPEC §4 (every metric) for docs/METRICS.md "Detail":
--   * a count: the rows are the items counted (in_numerator true);
--   * a rate: the rows are the denominator's items, in_numerator marks the
--     numerator's;
--   * an average or a median: the rows are the items it is taken over,
--     `value` their value;
--   * data_quality: the rows read, rejected or dropped themselves.
-- Output: `period`, `entity`, `in_numerator`, then the entity's columns;
-- the caller lays every statement out in one schema (the columns a
-- statement does not have are NULL). Parameters: $ticks_per_second (human
-- durations).

-- funnel --------------------------------------------------------------

-- name: proactive_messages
SELECT period, 'message' AS entity, true AS in_numerator, message_id, user_id, sent_at,
       content_type, sender, opened_at, clicked_at, reacted_at
FROM report_messages;

-- name: people_seeking_support
SELECT period, 'person' AS entity, true AS in_numerator, user_id, sessions
FROM report_people;

-- name: people_tried_self_serve
SELECT period, 'person' AS entity, true AS in_numerator, user_id, sessions
FROM report_people WHERE tried_self_serve;

-- name: people_resolved_self_serve
SELECT period, 'person' AS entity, true AS in_numerator, user_id, sessions
FROM report_people WHERE resolved_self_serve;

-- name: people_human_after_self_serve
SELECT period, 'person' AS entity, true AS in_numerator, user_id, sessions
FROM report_people WHERE human_after_self_serve;

-- name: people_human_from_start
SELECT period, 'person' AS entity, true AS in_numerator, user_id, sessions
FROM report_people WHERE human_from_start;

-- name: people_stopped
SELECT period, 'person' AS entity, true AS in_numerator, user_id, sessions
FROM report_people WHERE stopped;

-- sessions ------------------------------------------------------------

-- name: sessions_total
SELECT period, 'session' AS entity, true AS in_numerator, user_id, session_start, status,
       article_views, conversations
FROM report_sessions;

-- name: sessions_self_serve_resolved
SELECT period, 'session' AS entity, true AS in_numerator, user_id, session_start, status,
       article_views, conversations
FROM report_sessions WHERE status = 'self_serve_resolved';

-- name: sessions_human_supported
SELECT period, 'session' AS entity, true AS in_numerator, user_id, session_start, status,
       article_views, conversations
FROM report_sessions WHERE status IN ('human_after_self_serve', 'human_from_start');

-- name: sessions_human_after_self_serve
SELECT period, 'session' AS entity, true AS in_numerator, user_id, session_start, status,
       article_views, conversations
FROM report_sessions WHERE status = 'human_after_self_serve';

-- name: sessions_human_from_start
SELECT period, 'session' AS entity, true AS in_numerator, user_id, session_start, status,
       article_views, conversations
FROM report_sessions WHERE status = 'human_from_start';

-- name: sessions_stopped
SELECT period, 'session' AS entity, true AS in_numerator, user_id, session_start, status,
       article_views, conversations
FROM report_sessions WHERE status = 'stopped';

-- proactive -----------------------------------------------------------

-- name: messages_delivered
SELECT period, 'message' AS entity, true AS in_numerator, message_id, user_id, sent_at,
       content_type, sender, opened_at, clicked_at, reacted_at
FROM report_messages;

-- name: messages_opened
SELECT period, 'message' AS entity, true AS in_numerator, message_id, user_id, sent_at,
       content_type, sender, opened_at, clicked_at, reacted_at
FROM report_messages WHERE opened_at IS NOT NULL;

-- name: messages_clicked
SELECT period, 'message' AS entity, true AS in_numerator, message_id, user_id, sent_at,
       content_type, sender, opened_at, clicked_at, reacted_at
FROM report_messages WHERE clicked_at IS NOT NULL;

-- name: messages_reacted
SELECT period, 'message' AS entity, true AS in_numerator, message_id, user_id, sent_at,
       content_type, sender, opened_at, clicked_at, reacted_at
FROM report_messages WHERE reacted_at IS NOT NULL;

-- name: open_rate
SELECT period, 'message' AS entity, opened_at IS NOT NULL AS in_numerator, message_id,
       user_id, sent_at, content_type, sender, opened_at, clicked_at, reacted_at
FROM report_messages;

-- name: click_rate
SELECT period, 'message' AS entity, clicked_at IS NOT NULL AS in_numerator, message_id,
       user_id, sent_at, content_type, sender, opened_at, clicked_at, reacted_at
FROM report_messages;

-- name: reaction_rate
SELECT period, 'message' AS entity, reacted_at IS NOT NULL AS in_numerator, message_id,
       user_id, sent_at, content_type, sender, opened_at, clicked_at, reacted_at
FROM report_messages;

-- self_serve ----------------------------------------------------------

-- name: self_serve_resolution_rate
-- Stopped sessions are left out of the denominator.
SELECT period, 'session' AS entity, status = 'self_serve_resolved' AS in_numerator, user_id,
       session_start, status, article_views, conversations
FROM report_sessions WHERE status <> 'stopped';

-- name: article_views
SELECT period, 'article_view' AS entity, true AS in_numerator, event_id, user_id,
       session_start, status, ts, article_id
FROM report_article_views;

-- name: article_views_resolved
SELECT period, 'article_view' AS entity, true AS in_numerator, event_id, user_id,
       session_start, status, ts, article_id
FROM report_article_views WHERE resolved;

-- name: articles_resolution_rate
SELECT period, 'article_view' AS entity, resolved AS in_numerator, event_id, user_id,
       session_start, status, ts, article_id
FROM report_article_views;

-- name: automated_resolutions
SELECT period, 'conversation' AS entity, true AS in_numerator, conversation_id, user_id,
       session_start, status, started_at, first_reply_at, closed_at, rating
FROM report_conversations WHERE automated;

-- name: sessions_with_bot_answer
SELECT period, 'session' AS entity, true AS in_numerator, user_id, session_start, status,
       article_views, conversations
FROM report_sessions WHERE conversations_with_bot_answer > 0;

-- name: sessions_automated_resolved
SELECT period, 'session' AS entity, true AS in_numerator, user_id, session_start, status,
       article_views, conversations
FROM report_sessions WHERE automated_conversations > 0;

-- name: automated_resolution_rate
SELECT period, 'session' AS entity, automated_conversations > 0 AS in_numerator, user_id,
       session_start, status, article_views, conversations
FROM report_sessions WHERE conversations_with_bot_answer > 0;

-- human (per segment) -------------------------------------------------

-- name: conversations
SELECT segment, period, 'conversation' AS entity, true AS in_numerator, conversation_id,
       user_id, session_start, status, started_at, first_reply_at, closed_at, rating
FROM report_human;

-- name: rated_conversations
SELECT segment, period, 'conversation' AS entity, true AS in_numerator, conversation_id,
       user_id, session_start, status, started_at, first_reply_at, closed_at, rating
FROM report_human WHERE rating IS NOT NULL;

-- name: avg_rating
SELECT segment, period, 'conversation' AS entity, true AS in_numerator,
       CAST(rating AS DOUBLE) AS value, conversation_id, user_id, session_start, status,
       started_at, first_reply_at, closed_at, rating
FROM report_human WHERE rating IS NOT NULL;

-- name: csat
SELECT segment, period, 'conversation' AS entity, rating >= 4 AS in_numerator,
       CAST(rating AS DOUBLE) AS value, conversation_id, user_id, session_start, status,
       started_at, first_reply_at, closed_at, rating
FROM report_human WHERE rating IS NOT NULL;

-- name: median_first_response_s
SELECT segment, period, 'conversation' AS entity, true AS in_numerator,
       first_response_ticks / $ticks_per_second AS value, conversation_id, user_id,
       session_start, status, started_at, first_reply_at, closed_at, rating
FROM report_human WHERE first_response_ticks IS NOT NULL;

-- name: median_time_to_close_s
SELECT segment, period, 'conversation' AS entity, true AS in_numerator,
       close_ticks / $ticks_per_second AS value, conversation_id, user_id, session_start,
       status, started_at, first_reply_at, closed_at, rating
FROM report_human WHERE close_ticks IS NOT NULL;

-- data_quality (the whole input; period `current`) --------------------

-- name: rows_read_events
SELECT 'events' AS segment, 'current' AS period, 'event' AS entity, true AS in_numerator,
       event_id, user_id, ts, event_type, conversation_id, article_id
FROM events;

-- name: rows_read_messages
SELECT 'messages' AS segment, 'current' AS period, 'message' AS entity,
       true AS in_numerator, message_id, user_id, sent_at, content_type, sender, opened_at,
       clicked_at, reacted_at
FROM messages;

-- name: rows_rejected
SELECT reject_reason AS segment, 'current' AS period, 'event' AS entity,
       true AS in_numerator, reject_reason AS reason, event_id, user_id, ts, event_type,
       conversation_id, article_id
FROM rejected_events;

-- name: duplicate_events
-- The copies dropped: every valid copy of an event_id but the one kept.
SELECT 'current' AS period, 'event' AS entity, true AS in_numerator,
       'duplicate of a kept copy' AS reason, event_id, user_id, ts, event_type,
       conversation_id, article_id
FROM event_copies WHERE copy_rank > 1;

-- name: duplicate_messages
-- The rows dropped: every row of a message_id but the one kept.
SELECT 'current' AS period, 'message' AS entity, true AS in_numerator,
       'duplicate of a kept copy' AS reason, message_id, user_id, sent_at, content_type,
       sender, opened_at, clicked_at, reacted_at
FROM message_copies WHERE copy_rank > 1;

-- name: orphan_lifecycle_events
SELECT 'current' AS period, 'event' AS entity, true AS in_numerator,
       'conversation never started' AS reason, event_id, user_id, ts, event_type,
       conversation_id, article_id
FROM orphan_lifecycle_events;
