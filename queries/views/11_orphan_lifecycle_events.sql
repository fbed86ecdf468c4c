-- orphan_lifecycle_events: valid, deduplicated lifecycle events whose
-- conversation has no `conversation_started` row; they count nowhere else.
-- Implements REPORT_SPEC §1 (last rule) and §4 `data_quality` (which counts
-- them from conversation_facts.lifecycle_events without listing them).
-- Output: the clean_events columns. Parameters: none.
CREATE OR REPLACE VIEW orphan_lifecycle_events AS
SELECT lifecycle.*
FROM clean_events lifecycle
JOIN conversation_facts facts ON facts.conversation_id = lifecycle.conversation_id
WHERE lifecycle.event_type IN ('bot_answer', 'teammate_reply', 'conversation_closed', 'conversation_rated')
  AND facts.start_rows = 0;
