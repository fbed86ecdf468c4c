-- validated_events: every `events` row except `content_showcase` ones, with
-- `reject_reason` saying why the row is rejected (NULL for a valid row).
-- Implements REPORT_SPEC §1 "Rules for rows" and §6: showcase rows are set
-- aside first, then rows are validated; a row with several problems gets its
-- first reason in the spec's order. "Conversation events" are the five event
-- types that carry a conversation: conversation_started and the lifecycle
-- events. A rating outside 1..5 rejects the row whatever its event type.
-- This CASE is where the reject rules and reason codes are defined, in the
-- spec's order. Three other files spell the codes again, each for a reason
-- SQL cannot avoid: views/03_event_checks.sql (a small integer per reason,
-- so its one pass over the events groups on a single UInt64 key), and
-- views/13_event_counts.sql and report/06_data_quality.sql (the
-- codes are the column names of report_event_counts, a one-row table that
-- the native path builds in Rust). A new reason must be added to all four,
-- and to the Rust list.
-- Output: the `events` columns plus reject_reason. Parameters: none.
CREATE OR REPLACE VIEW validated_events AS
SELECT
    event_id,
    user_id,
    ts,
    event_type,
    channel,
    article_id,
    conversation_id,
    actor,
    rating,
    CASE
        -- The common case first, as one cheap conjunction: the reasons below
        -- are then worked out only for the few rows that fail it.
        WHEN event_id IS NOT NULL AND user_id IS NOT NULL AND ts IS NOT NULL
            AND event_type IN (
                'help_center_visit', 'article_search', 'article_view', 'conversation_started',
                'bot_answer', 'teammate_reply', 'conversation_closed', 'conversation_rated'
            )
            AND (conversation_id IS NOT NULL
                OR event_type IN ('help_center_visit', 'article_search', 'article_view'))
            AND (rating IS NULL OR rating BETWEEN 1 AND 5)
            THEN NULL
        WHEN event_id IS NULL THEN 'null_event_id'
        WHEN user_id IS NULL THEN 'null_user_id'
        WHEN ts IS NULL THEN 'null_ts'
        WHEN event_type IS NULL THEN 'null_event_type'
        WHEN event_type NOT IN (
            'help_center_visit', 'article_search', 'article_view', 'conversation_started',
            'bot_answer', 'teammate_reply', 'conversation_closed', 'conversation_rated'
        ) THEN 'unknown_event_type'
        WHEN event_type IN (
            'conversation_started', 'bot_answer', 'teammate_reply',
            'conversation_closed', 'conversation_rated'
        ) AND conversation_id IS NULL THEN 'missing_conversation_id'
        WHEN rating < 1 OR rating > 5 THEN 'invalid_rating'
    END AS reject_reason
FROM events
WHERE channel IS DISTINCT FROM 'content_showcase';
