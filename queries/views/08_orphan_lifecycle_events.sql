-- orphan_lifecycle_events: valid, deduplicated lifecycle events whose
-- conversation has no `conversation_started` row; they count nowhere else.
-- Implements REPORT_SPEC §1 (last rule) and §4 `data_quality`.
CREATE OR REPLACE VIEW orphan_lifecycle_events AS
SELECT l.*
FROM clean_events l
WHERE l.event_type IN ('bot_answer', 'teammate_reply', 'conversation_closed', 'conversation_rated')
  AND NOT EXISTS (
      SELECT 1
      FROM clean_events s
      WHERE s.event_type = 'conversation_started'
        AND s.conversation_id = l.conversation_id
  );
