//! Report periods (spec §3): `[from 00:00, to 00:00)` in an IANA time zone,
//! and the previous period of the same number of calendar days.
//!
//! Local midnights are resolved to UTC instants with the zone's rules: a
//! midnight that does not exist (a DST jump over it) starts the day at the
//! first instant after the jump; a midnight that occurs twice starts it at the
//! first occurrence.

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::error::{Error, Result};

/// A half-open range of instants `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Inclusive start.
    pub start: DateTime<Utc>,
    /// Exclusive end.
    pub end: DateTime<Utc>,
}

/// The current and previous period of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Periods {
    /// First local day of the current period.
    pub from: NaiveDate,
    /// Day after the last local day of the current period.
    pub to: NaiveDate,
    /// The zone the days are read in.
    pub tz: Tz,
    /// The current period.
    pub current: Range,
    /// The period of the same number of days just before.
    pub previous: Range,
}

/// Parses an IANA zone name such as `UTC` or `America/New_York`.
pub fn parse_tz(name: &str) -> Result<Tz> {
    name.parse::<Tz>().map_err(|_| {
        Error::usage(format!(
            "unknown time zone `{name}` (use an IANA name such as UTC or America/New_York)"
        ))
    })
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Result<NaiveDate> {
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|e| Error::usage(format!("`{s}` is not a YYYY-MM-DD date: {e}")))?;
    // chrono reads signed years of six digits; the periods' arithmetic
    // (and any event history) lives in years 1..=9999.
    if !(1..=9999).contains(&chrono::Datelike::year(&d)) {
        return Err(Error::usage(format!(
            "`{s}`: the year must be between 1 and 9999"
        )));
    }
    Ok(d)
}

/// The UTC instant at which local `day` begins in `tz`.
pub fn day_start(tz: Tz, day: NaiveDate) -> Result<DateTime<Utc>> {
    let midnight = day.and_time(NaiveTime::MIN);
    match tz.from_local_datetime(&midnight) {
        LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, second) => Ok(first.min(second).with_timezone(&Utc)),
        LocalResult::None => {
            // Midnight falls in a gap. Walk forward a second at a time (gaps
            // begin and end on whole seconds in every real zone) to the first
            // local time that exists: that is the instant right after the jump.
            for s in 1..=(26 * 3600) {
                let t = midnight + Duration::seconds(s);
                match tz.from_local_datetime(&t) {
                    LocalResult::Single(x) => return Ok(x.with_timezone(&Utc)),
                    LocalResult::Ambiguous(a, b) => return Ok(a.min(b).with_timezone(&Utc)),
                    LocalResult::None => continue,
                }
            }
            Err(Error::usage(format!(
                "{day} has no start in time zone {tz}"
            )))
        }
    }
}

impl Periods {
    /// The periods for local days `[from, to)` in `tz`.
    pub fn new(from: NaiveDate, to: NaiveDate, tz: Tz) -> Result<Self> {
        if from >= to {
            return Err(Error::usage(format!(
                "--from {from} must be before --to {to} (--to is exclusive)"
            )));
        }
        let days = (to - from).num_days();
        let prev_from = from - Duration::days(days);
        Ok(Self {
            from,
            to,
            tz,
            current: Range {
                start: day_start(tz, from)?,
                end: day_start(tz, to)?,
            },
            previous: Range {
                start: day_start(tz, prev_from)?,
                end: day_start(tz, from)?,
            },
        })
    }

    /// The default period: the `days` full local days before the day of
    /// `latest` (the day holding the latest event is taken as incomplete).
    pub fn trailing(latest: DateTime<Utc>, days: i64, tz: Tz) -> Result<Self> {
        let to = latest.with_timezone(&tz).date_naive();
        Self::new(to - Duration::days(days), to, tz)
    }

    /// Number of calendar days in each period.
    pub fn days(&self) -> i64 {
        (self.to - self.from).num_days()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        parse_date(s).unwrap()
    }

    #[test]
    fn utc_periods() {
        let p = Periods::new(d("2026-03-02"), d("2026-03-03"), Tz::UTC).unwrap();
        assert_eq!(p.current.start.to_rfc3339(), "2026-03-02T00:00:00+00:00");
        assert_eq!(p.current.end.to_rfc3339(), "2026-03-03T00:00:00+00:00");
        assert_eq!(p.previous.start.to_rfc3339(), "2026-03-01T00:00:00+00:00");
        assert_eq!(p.previous.end, p.current.start);
    }

    #[test]
    fn dst_spring_forward_week_in_new_york() {
        // 2026-03-08: clocks jump 02:00 → 03:00; that day is 23 hours long.
        let tz = parse_tz("America/New_York").unwrap();
        let p = Periods::new(d("2026-03-08"), d("2026-03-09"), tz).unwrap();
        assert_eq!(p.current.start.to_rfc3339(), "2026-03-08T05:00:00+00:00");
        assert_eq!(p.current.end.to_rfc3339(), "2026-03-09T04:00:00+00:00");
        assert_eq!((p.current.end - p.current.start).num_hours(), 23);
        assert_eq!((p.previous.end - p.previous.start).num_hours(), 24);
    }

    #[test]
    fn missing_midnight_starts_after_the_jump() {
        // America/Santiago jumps from 2026-09-06 00:00 to 01:00 (UTC-4 → -3).
        let tz = parse_tz("America/Santiago").unwrap();
        let start = day_start(tz, d("2026-09-06")).unwrap();
        assert_eq!(start.to_rfc3339(), "2026-09-06T04:00:00+00:00");
    }

    #[test]
    fn repeated_midnight_starts_at_first_occurrence() {
        let tz = parse_tz("America/Havana").unwrap();
        // Havana falls back at 01:00 → 00:00 on 2026-11-01: midnight repeats.
        let start = day_start(tz, d("2026-11-01")).unwrap();
        assert_eq!(start.to_rfc3339(), "2026-11-01T04:00:00+00:00");
    }

    #[test]
    fn bad_inputs() {
        assert!(parse_tz("Mars/Olympus")
            .unwrap_err()
            .to_string()
            .contains("unknown time zone"));
        assert!(parse_date("2026-02-30")
            .unwrap_err()
            .to_string()
            .contains("YYYY-MM-DD"));
        let e = Periods::new(d("2026-03-03"), d("2026-03-02"), Tz::UTC).unwrap_err();
        assert!(e.to_string().contains("must be before"));
    }
}
