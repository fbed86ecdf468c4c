//! The report's numbers as a person reads them, the same in every
//! rendering (the terminal table; reports for people to come): rates as
//! percentages and their deltas in points, durations as `1h 12m`, counts
//! with thousands separators, ▲/▼ on percent changes, missing values as `–`.

use crate::settings::period::Periods;

/// What stands for a missing value.
pub const NONE: &str = "–";

/// How a metric's values read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A number of things: `1,234`.
    Count,
    /// A fraction shown in percent: `42.1%`; its deltas in points.
    Rate,
    /// A duration in seconds: `1h 12m`.
    Seconds,
    /// A 1–5 rating: `4.21`.
    Rating,
}

/// How `metric`'s values read, from its name (spec §5's naming: `*_rate`
/// and `csat` are fractions, `*_s` seconds).
pub fn value_kind(metric: &str) -> ValueKind {
    if metric.ends_with("_rate") || metric == "csat" {
        ValueKind::Rate
    } else if metric.ends_with("_s") {
        ValueKind::Seconds
    } else if metric == "avg_rating" {
        ValueKind::Rating
    } else {
        ValueKind::Count
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(v: f64) -> String {
    let neg = v < 0.0;
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if neg {
        format!("-{out}")
    } else {
        out
    }
}

/// Seconds as the two largest units: `45s`, `3m 20s`, `1h 12m`, `2d 4h`.
pub fn duration(secs: f64) -> String {
    let sign = if secs < 0.0 { "-" } else { "" };
    let s = secs.abs().round() as u64;
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3_600, s % 3_600 / 60, s % 60);
    let body = if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {sec}s")
    } else {
        format!("{sec}s")
    };
    format!("{sign}{body}")
}

/// A value for a person.
pub fn value(k: ValueKind, v: Option<f64>) -> String {
    let Some(v) = v else { return NONE.into() };
    match k {
        ValueKind::Count => thousands(v),
        ValueKind::Rate => format!("{:.1}%", v * 100.0),
        ValueKind::Seconds => duration(v),
        ValueKind::Rating => format!("{v:.2}"),
    }
}

/// A difference between two values, signed.
pub fn delta(k: ValueKind, v: Option<f64>) -> String {
    let Some(v) = v else { return NONE.into() };
    let sign = if v > 0.0 { "+" } else { "" };
    match k {
        ValueKind::Count => format!("{sign}{}", thousands(v)),
        ValueKind::Rate => format!("{sign}{:.1} pp", v * 100.0),
        ValueKind::Seconds => format!("{sign}{}", duration(v)),
        ValueKind::Rating => format!("{sign}{v:.2}"),
    }
}

/// A change in percent, with ▲ or ▼.
pub fn delta_pct(v: Option<f64>) -> String {
    match v {
        None => NONE.into(),
        Some(p) if p > 0.0 => format!("▲ {p:.1}%"),
        Some(p) if p < 0.0 => format!("▼ {:.1}%", -p),
        Some(_) => "0.0%".into(),
    }
}

/// The heading of a report for a person: both periods and the zone.
pub fn period_heading(periods: &Periods) -> String {
    let fmt = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
    let prev_from = periods.from - chrono::Duration::days(periods.days());
    format!(
        "Support funnel report: {} → {} ({} days, {}), compared with {} → {}",
        fmt(periods.from),
        fmt(periods.to),
        periods.days(),
        periods.tz,
        fmt(prev_from),
        fmt(periods.from),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_writes_them() {
        assert_eq!(duration(45.2), "45s");
        assert_eq!(duration(200.0), "3m 20s");
        assert_eq!(duration(4_320.0), "1h 12m");
        assert_eq!(duration(187_200.0), "2d 4h");
        assert_eq!(duration(-60.0), "-1m 0s");
    }

    #[test]
    fn values_deltas_and_arrows() {
        assert_eq!(value(ValueKind::Count, Some(1_234_567.0)), "1,234,567");
        assert_eq!(value(ValueKind::Rate, Some(0.4213)), "42.1%");
        assert_eq!(value(ValueKind::Count, None), "–");
        assert_eq!(delta(ValueKind::Rate, Some(0.012)), "+1.2 pp");
        assert_eq!(delta(ValueKind::Count, Some(-3.0)), "-3");
        assert_eq!(delta_pct(Some(12.34)), "▲ 12.3%");
        assert_eq!(delta_pct(Some(-4.0)), "▼ 4.0%");
        assert_eq!(delta_pct(None), "–");
        assert_eq!(value_kind("median_first_response_s"), ValueKind::Seconds);
        assert_eq!(value_kind("csat"), ValueKind::Rate);
    }
}
