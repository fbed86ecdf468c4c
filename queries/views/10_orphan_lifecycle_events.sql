-- orphan_lifecycle_events: valid, deduplicated lifecycle events whose
-- conversation has no `conversation_started` row; they count nowhere else.
-- Implements REPORT_SPEC §1 (last rule) and §4 `data_quality` (which counts
-- them from conversation_facts.lifecycle_events without listing them).
CREATE OR REPLACE VIEW orphan_lifecycle_events AS
SELECT l.*
FROM clean_events l
JOIN conversation_facts f ON f.conversation_id = l.conversation_id
WHERE l.event_type IN ('bot_answer', 'teammate_reply', 'conversation_closed', 'conversation_rated')
  AND f.start_rows = 0;
