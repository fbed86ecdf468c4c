-- report_event_counts: the `event_counts` view (views/13_event_counts.sql),
-- materialized once for the data_quality section.
-- Implements REPORT_SPEC §4 `data_quality` (its counts).
-- Output: one row, the view's columns. Parameters: none.
SELECT * FROM event_counts
