-- conversation_facts: one row per conversation_id seen on a valid,
-- deduplicated conversation event (conversation_started or lifecycle), over
-- the whole history, in one aggregation.
-- Implements REPORT_SPEC §2 "Conversations", §6 and the orphan rule of §1:
--   * start_rows: its conversation_started rows; the earliest counts
--     (started_at, start_event_id; ties: smallest event_id). A conversation
--     with no start row is not a conversation: its lifecycle events are
--     orphans (lifecycle_events counts them);
--   * lifecycle events join by conversation_id alone, whenever they happen;
--   * first_reply_at = earliest teammate_reply; closed_at = latest close,
--     closed_by = that close's actor; rating = the latest rating's value (a
--     NULL rating, if latest, leaves it unrated); ties: greatest event_id.
-- "The row with the smallest/greatest (ts, event_id)" is found with plain
-- min/max over a string key that sorts the same way: the ts as fixed-width
-- hex (sign first, so earlier always sorts lower), then the event_id, then
-- after a chr(1) separator the value wanted. Ordered first_value/last_value
-- aggregates cost several times more over millions of conversations. The
-- key assumes event_ids contain no control character below chr(2).
-- Parameters: none.
CREATE OR REPLACE VIEW conversation_facts AS
-- conversation_events: every conversation event with its kind code and, for
-- starts, closes and ratings, the order key described above.
WITH conversation_events AS (
    SELECT
        conversation_id,
        -- a small code, so the aggregate's filters compare integers
        CASE event_type
            WHEN 'conversation_started' THEN 0
            WHEN 'bot_answer' THEN 1
            WHEN 'teammate_reply' THEN 2
            WHEN 'conversation_closed' THEN 3
            WHEN 'conversation_rated' THEN 4
        END AS kind,
        ts,
        CASE
            WHEN event_type IN ('conversation_started', 'conversation_closed', 'conversation_rated')
            THEN
                CASE
                    WHEN arrow_cast(ts, 'Int64') >= 0
                        THEN '1' || lpad(to_hex(arrow_cast(ts, 'Int64')), 16, '0')
                    ELSE '0' || to_hex(arrow_cast(ts, 'Int64'))
                END || event_id || chr(1) || CASE event_type
                    WHEN 'conversation_closed' THEN coalesce('=' || actor, '')
                    WHEN 'conversation_rated' THEN coalesce(CAST(rating AS VARCHAR), '')
                    ELSE ''
                END
        END AS order_key
    FROM clean_events
    WHERE event_type IN (
        'conversation_started', 'bot_answer', 'teammate_reply', 'conversation_closed', 'conversation_rated'
    )
),
-- facts_per_conversation: the aggregates, with the order keys still packed.
facts_per_conversation AS (
    SELECT
        conversation_id,
        count(*) FILTER (WHERE kind = 0) AS start_rows,
        min(ts) FILTER (WHERE kind = 0) AS started_at,
        min(order_key) FILTER (WHERE kind = 0) AS first_start,
        count(*) FILTER (WHERE kind <> 0) AS lifecycle_events,
        count(*) FILTER (WHERE kind = 1) AS bot_answers,
        count(*) FILTER (WHERE kind = 2) AS teammate_replies,
        count(*) FILTER (WHERE kind = 3) AS closes,
        min(ts) FILTER (WHERE kind = 1) AS first_bot_answer_at,
        min(ts) FILTER (WHERE kind = 2) AS first_reply_at,
        max(ts) FILTER (WHERE kind = 3) AS closed_at,
        max(order_key) FILTER (WHERE kind = 3) AS last_close,
        max(order_key) FILTER (WHERE kind = 4) AS last_rating
    FROM conversation_events
    GROUP BY conversation_id
)
SELECT
    conversation_id,
    start_rows,
    started_at,
    -- after the 17-character ts, up to the separator
    split_part(substr(first_start, 18), chr(1), 1) AS start_event_id,
    lifecycle_events,
    bot_answers,
    teammate_replies,
    closes,
    first_bot_answer_at,
    first_reply_at,
    closed_at,
    -- '=' marks a non-NULL actor, so NULL and '' stay apart
    CASE
        WHEN substr(last_close, strpos(last_close, chr(1)) + 1) LIKE '=%'
        -- everything after the separator, so an actor may hold any character
        THEN substr(last_close, strpos(last_close, chr(1)) + 2)
    END AS closed_by,
    CAST(nullif(split_part(last_rating, chr(1), 2), '') AS INT) AS rating
FROM facts_per_conversation;
