//! Timestamp ticks in every Arrow unit, written once.
//!
//! Contract timestamps keep the unit their files use (see [`crate::tables`]),
//! so the report's bounds, the window function's spans and the native operators'
//! arithmetic all convert between instants and ticks of a column's unit.
//! Types other than `Timestamp(..)` count as nanoseconds.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray};
use datafusion::arrow::buffer::{NullBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use datafusion::scalar::ScalarValue;

/// The unit of a timestamp type (nanoseconds for anything else).
pub fn unit_of(dt: &DataType) -> TimeUnit {
    match dt {
        DataType::Timestamp(unit, _) => *unit,
        _ => TimeUnit::Nanosecond,
    }
}

/// Ticks of `unit` in one second (a finer unit has more).
pub fn ticks_per_second(unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    }
}

/// Nanoseconds in one tick of `unit`.
pub fn nanos_per_tick(unit: TimeUnit) -> i64 {
    1_000_000_000 / ticks_per_second(unit)
}

/// An instant in ticks of `unit`; `None` when the unit cannot hold it (only
/// nanoseconds have a narrow range, 1677 to 2262).
pub fn to_ticks(t: DateTime<Utc>, unit: TimeUnit) -> Option<i64> {
    match unit {
        TimeUnit::Second => Some(t.timestamp()),
        TimeUnit::Millisecond => Some(t.timestamp_millis()),
        TimeUnit::Microsecond => Some(t.timestamp_micros()),
        TimeUnit::Nanosecond => t.timestamp_nanos_opt(),
    }
}

/// The instant `ticks` of `unit` stand for; `None` outside chrono's range.
pub fn from_ticks(ticks: i64, unit: TimeUnit) -> Option<DateTime<Utc>> {
    match unit {
        TimeUnit::Second => DateTime::from_timestamp(ticks, 0),
        TimeUnit::Millisecond => DateTime::from_timestamp_millis(ticks),
        TimeUnit::Microsecond => DateTime::from_timestamp_micros(ticks),
        TimeUnit::Nanosecond => Some(DateTime::from_timestamp_nanos(ticks)),
    }
}

/// A timestamp scalar of `unit` and zone `tz` (a null one for `None`).
pub fn scalar(ticks: Option<i64>, unit: TimeUnit, tz: Option<Arc<str>>) -> ScalarValue {
    match unit {
        TimeUnit::Second => ScalarValue::TimestampSecond(ticks, tz),
        TimeUnit::Millisecond => ScalarValue::TimestampMillisecond(ticks, tz),
        TimeUnit::Microsecond => ScalarValue::TimestampMicrosecond(ticks, tz),
        TimeUnit::Nanosecond => ScalarValue::TimestampNanosecond(ticks, tz),
    }
}

/// The raw i64 ticks and validity of a timestamp array of any unit; `None`
/// for other types.
pub fn ticks(array: &ArrayRef) -> Option<(&ScalarBuffer<i64>, Option<&NullBuffer>)> {
    fn parts<T>(a: &PrimitiveArray<T>) -> (&ScalarBuffer<i64>, Option<&NullBuffer>)
    where
        T: ArrowPrimitiveType<Native = i64>,
    {
        (a.values(), a.nulls())
    }
    Some(match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => {
            parts(array.as_primitive::<TimestampSecondType>())
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            parts(array.as_primitive::<TimestampMillisecondType>())
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            parts(array.as_primitive::<TimestampMicrosecondType>())
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            parts(array.as_primitive::<TimestampNanosecondType>())
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_every_unit() {
        let t = DateTime::from_timestamp(1_772_000_000, 0).unwrap();
        for unit in [
            TimeUnit::Second,
            TimeUnit::Millisecond,
            TimeUnit::Microsecond,
            TimeUnit::Nanosecond,
        ] {
            let ticks = to_ticks(t, unit).unwrap();
            assert_eq!(ticks / ticks_per_second(unit), 1_772_000_000);
            assert_eq!(from_ticks(ticks, unit), Some(t));
            assert_eq!(nanos_per_tick(unit) * ticks_per_second(unit), 1_000_000_000);
        }
        let far = DateTime::from_timestamp(20_000_000_000, 0).unwrap();
        assert_eq!(to_ticks(far, TimeUnit::Nanosecond), None);
        assert!(to_ticks(far, TimeUnit::Microsecond).is_some());
    }
}
