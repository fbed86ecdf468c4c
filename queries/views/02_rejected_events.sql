-- rejected_events: the rows left out of every metric, with their reason.
-- Implements REPORT_SPEC §1 "Rules for rows"; counted in §4 `data_quality`.
-- Output: the columns of validated_events. Parameters: none.
CREATE OR REPLACE VIEW rejected_events AS
SELECT *
FROM validated_events
WHERE reject_reason IS NOT NULL;
