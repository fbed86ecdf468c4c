-- The default period's end (docs/METRICS.md "Choices": the 28 full days
-- before the day of the latest valid event dated up to now), when no
-- --from/--to is given. Each statement is named by the `-- name:` line
-- above it. Parameters: $now, $since (ts's type).

-- name: max_ticks
-- The latest timestamp of any row, in the column's own ticks (from the
-- Parquet footers; rejected rows included, so no conversion may fail).
SELECT arrow_cast(max(ts), 'Int64') FROM events;

-- name: latest_valid
-- The latest valid event dated up to now, as Int64 nanoseconds.
SELECT arrow_cast(arrow_cast(max(ts), 'Timestamp(Nanosecond, None)'), 'Int64')
FROM validated_events
WHERE reject_reason IS NULL AND ts <= $now;

-- name: latest_valid_since
-- The same within the last day of data only: the scan skips every older
-- row group.
SELECT arrow_cast(arrow_cast(max(ts), 'Timestamp(Nanosecond, None)'), 'Int64')
FROM validated_events
WHERE reject_reason IS NULL AND ts <= $now AND ts >= $since;

-- name: future_events
-- Valid events dated after now (counted, reported in a warning, and never
-- moving the period).
SELECT count(*) FROM validated_events WHERE reject_reason IS NULL AND ts > $now;
