-- The fold: what a run leaves for the next one (docs/INCREMENTAL.md,
-- "What the state holds"). Rows before the new frontier are folded into
-- indexes and counters; what a later report can still need stays live.
-- Each statement is named by the `-- name:` line above it.
-- Parameters: $new_frontier, $day_before (one day before it),
-- $anchor_prefix (the reserved prefix of the state's synthetic rows).

-- name: prefix_taken
-- Input events whose ids use the reserved prefix: a full run's state
-- cannot be written over them.
SELECT count(*) FROM events
WHERE starts_with(event_id, $anchor_prefix) OR starts_with(user_id, $anchor_prefix);

-- name: winners_of_repeated
-- The surviving copy of every valid event id (the `clean_events` view,
-- spec §1 "Duplicates"), from the operators' knowledge of which ids may
-- have copies: a valid row whose id hash was seen once is its id's only
-- copy; the others are ranked by the id itself, in the order of the
-- `duplicate_winners` view, and the first of each is kept. Only the
-- columns the fold reads. supportfunnel_fold_repeated_id is registered
-- for this statement alone.
SELECT event_id, user_id, ts, event_type, conversation_id
FROM validated_events
WHERE reject_reason IS NULL AND NOT supportfunnel_fold_repeated_id(event_id)
UNION ALL
SELECT event_id, user_id, ts, event_type, conversation_id
FROM (
    SELECT event_id, user_id, ts, event_type, channel, article_id, conversation_id, actor, rating,
        row_number() OVER (
            PARTITION BY event_id
            ORDER BY ts, user_id, event_type, channel NULLS LAST, article_id NULLS LAST,
                     conversation_id NULLS LAST, actor NULLS LAST, rating NULLS LAST
        ) AS copy_rank
    FROM validated_events
    WHERE reject_reason IS NULL AND supportfunnel_fold_repeated_id(event_id)
)
WHERE copy_rank = 1;

-- name: winners
-- The same from the view, where the operators did not build.
SELECT event_id, user_id, ts, event_type, conversation_id FROM clean_events;

-- name: started
-- Conversations started before the new frontier.
SELECT DISTINCT conversation_id
FROM fold_winners
WHERE event_type = 'conversation_started' AND ts < $new_frontier
  AND NOT starts_with(event_id, $anchor_prefix);

-- name: event_index
-- The ids folded by this run: every row before the new frontier, except a
-- lifecycle row whose conversation started nowhere yet (it may still
-- find its start, spec §3).
WITH due AS (
    SELECT event_id, event_type, conversation_id
    FROM fold_winners
    WHERE ts < $new_frontier AND NOT starts_with(event_id, $anchor_prefix)
)
SELECT event_id FROM due
WHERE event_type NOT IN ('bot_answer', 'teammate_reply', 'conversation_closed', 'conversation_rated')
UNION ALL
SELECT d.event_id FROM due d
WHERE d.event_type IN ('bot_answer', 'teammate_reply', 'conversation_closed', 'conversation_rated')
  AND EXISTS (SELECT 1 FROM state_started p WHERE p.conversation_id = d.conversation_id)
UNION ALL
SELECT d.event_id FROM due d
WHERE d.event_type IN ('bot_answer', 'teammate_reply', 'conversation_closed', 'conversation_rated')
  AND NOT EXISTS (SELECT 1 FROM state_started p WHERE p.conversation_id = d.conversation_id)
  AND EXISTS (SELECT 1 FROM fold_started f WHERE f.conversation_id = d.conversation_id);

-- name: kept_ids
-- The ids that stay live: the complement of the index among the winners,
-- a few days' worth (joining on them, not on the index, keeps every hash
-- table small).
WITH w AS (
    SELECT event_id, ts, event_type, conversation_id
    FROM fold_winners
    WHERE NOT starts_with(event_id, $anchor_prefix)
)
SELECT event_id FROM w WHERE ts >= $new_frontier
UNION ALL
SELECT d.event_id FROM w d
WHERE d.ts < $new_frontier
  AND d.event_type IN ('bot_answer', 'teammate_reply', 'conversation_closed', 'conversation_rated')
  AND NOT EXISTS (SELECT 1 FROM state_started p WHERE p.conversation_id = d.conversation_id)
  AND NOT EXISTS (SELECT 1 FROM fold_started f WHERE f.conversation_id = d.conversation_id);

-- name: live_events
-- Every valid row of a live id (all its copies: the next run settles them
-- again).
SELECT v.event_id, v.user_id, v.ts, v.event_type, v.channel, v.article_id,
       v.conversation_id, v.actor, v.rating
FROM validated_events v
WHERE v.reject_reason IS NULL
  AND EXISTS (SELECT 1 FROM fold_kept_ids k WHERE k.event_id = v.event_id);

-- One pass, for a full run whose operators' build is at hand (the rules
-- of `event_index`, `kept_ids` and `live_events` above, without writing
-- the winners first; the statements above stay the reference, and a test
-- holds the two ways' states equal). No earlier state exists, so only
-- `fold_started` says which conversations started before the frontier.

-- name: started_from_build
-- Conversations started before the new frontier: a conversation of the
-- `conversations` relation is one with a surviving start, its
-- `started_at` the earliest of them.
SELECT conversation_id FROM conversations WHERE started_at < $new_frontier;

-- name: fold_places
-- Every valid row once, with where it goes: `maybe_copied` when its id
-- may have copies (those rows are ranked by `repeated_places`); else the
-- row is its id's only copy, and `folded` says whether the id goes into
-- the index (before the new frontier, and not a lifecycle row of a
-- conversation not started before it) or the row stays live.
-- supportfunnel_fold_repeated_id and supportfunnel_fold_started (whether
-- a conversation is in `fold_started`) are registered for this statement
-- and the next alone. No CASE: it would copy the rows left at each branch.
SELECT event_id, user_id, ts, event_type, channel, article_id,
       conversation_id, actor, rating,
       supportfunnel_fold_repeated_id(event_id) AS maybe_copied,
       ts < $new_frontier
           AND (event_type NOT IN ('bot_answer', 'teammate_reply', 'conversation_closed', 'conversation_rated')
                OR supportfunnel_fold_started(conversation_id)) AS folded
FROM validated_events
WHERE reject_reason IS NULL;

-- name: repeated_places
-- The rows `fold_places` marked `maybe_copied` (`fold_repeated`), each
-- with whether its id is folded, as its surviving copy decides it, and
-- whether it is that copy (ranked as the `duplicate_winners` view ranks
-- copies).
WITH ranked AS (
    SELECT event_id, user_id, ts, event_type, channel, article_id, conversation_id, actor, rating,
        row_number() OVER (
            PARTITION BY event_id
            ORDER BY ts, user_id, event_type, channel NULLS LAST, article_id NULLS LAST,
                     conversation_id NULLS LAST, actor NULLS LAST, rating NULLS LAST
        ) AS copy_rank
    FROM fold_repeated
),
places AS (
    SELECT event_id,
        ts < $new_frontier
            AND (event_type NOT IN ('bot_answer', 'teammate_reply', 'conversation_closed', 'conversation_rated')
                 OR supportfunnel_fold_started(conversation_id)) AS folded
    FROM ranked
    WHERE copy_rank = 1
)
SELECT r.event_id, r.user_id, r.ts, r.event_type, r.channel, r.article_id,
       r.conversation_id, r.actor, r.rating, p.folded, r.copy_rank = 1 AS winner
FROM ranked r
JOIN places p ON p.event_id = r.event_id;

-- name: message_index_of_full_run
-- Every delivery id of a full run (no earlier state) with its copies and
-- whether it is folded: one of its copies was sent before the new
-- frontier (the surviving copy is the earliest, `message_copies`), as
-- `message_index` says over `clean_messages`.
SELECT message_id, count(*) AS copies, bool_or(sent_at < $new_frontier) AS folded
FROM messages
WHERE message_id IS NOT NULL
GROUP BY message_id;

-- name: messages_not_before
-- The deliveries not sent before the new frontier: the only ones that
-- can stay live (those of ids not folded, and the id-less ones).
SELECT message_id, user_id, sent_at, content_type, sender, tags, opened_at, clicked_at, reacted_at
FROM messages
WHERE sent_at IS NULL OR sent_at >= $new_frontier;

-- name: winner_count
-- Distinct valid ids, the synthetic rows left out.
SELECT count(*) FROM fold_winners WHERE NOT starts_with(event_id, $anchor_prefix);

-- name: kept_id_count
SELECT count(*) FROM fold_kept_ids;

-- name: valid_count
-- Valid rows, the synthetic rows left out.
SELECT count(*) FROM validated_events
WHERE reject_reason IS NULL AND NOT starts_with(event_id, $anchor_prefix);

-- name: live_count
SELECT count(*) FROM fold_live;

-- name: anchors_from_sessions
-- Each user's last session started in the day before the new frontier,
-- from the `sessions` relation the reports built.
SELECT user_id, max(session_start) AS start
FROM sessions
WHERE session_start < $new_frontier AND session_start > $day_before
  AND NOT starts_with(user_id, $anchor_prefix)
GROUP BY user_id;

-- name: anchors_from_winners
-- The same by sessionizing the winners' customer actions again (spec §2),
-- when the build is no longer held.
SELECT user_id, max(s) AS start
FROM (
    SELECT user_id, session_start(ts) OVER (PARTITION BY user_id ORDER BY ts) AS s
    FROM fold_winners
    WHERE event_type IN ('help_center_visit', 'article_search', 'article_view', 'conversation_started')
)
WHERE s < $new_frontier AND s > $day_before AND NOT starts_with(user_id, $anchor_prefix)
GROUP BY user_id;

-- name: message_index
-- Message ids folded by this run.
SELECT DISTINCT message_id FROM clean_messages
WHERE message_id IS NOT NULL AND sent_at < $new_frontier;

-- name: message_index_count
SELECT count(*) FROM fold_message_ids;

-- name: folded_message_rows
SELECT count(*) FROM messages
WHERE message_id IN (SELECT message_id FROM fold_message_ids);

-- name: live_messages
-- Deliveries that stay live: not folded, or id-less and not before the
-- new frontier.
SELECT message_id, user_id, sent_at, content_type, sender, tags, opened_at, clicked_at, reacted_at
FROM messages
WHERE (message_id IS NULL AND (sent_at IS NULL OR sent_at >= $new_frontier))
   OR (message_id IS NOT NULL
       AND message_id NOT IN (SELECT message_id FROM fold_message_ids));
