//! The report for a person (`--format table`): rows grouped by section,
//! current / previous / delta / delta %, with ▲/▼, rates as percentages,
//! durations as `1h 12m` and missing values as `–`.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, Table};

use crate::period::Periods;
use crate::report::Row;

const NONE: &str = "–";

/// How a metric's values read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Count,
    Rate,
    Seconds,
    Rating,
}

fn kind(metric: &str) -> Kind {
    if metric.ends_with("_rate") || metric == "csat" {
        Kind::Rate
    } else if metric.ends_with("_s") {
        Kind::Seconds
    } else if metric == "avg_rating" {
        Kind::Rating
    } else {
        Kind::Count
    }
}

/// `1234567` → `1,234,567`.
fn thousands(v: f64) -> String {
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

fn value(k: Kind, v: Option<f64>) -> String {
    let Some(v) = v else { return NONE.into() };
    match k {
        Kind::Count => thousands(v),
        Kind::Rate => format!("{:.1}%", v * 100.0),
        Kind::Seconds => duration(v),
        Kind::Rating => format!("{v:.2}"),
    }
}

fn delta(k: Kind, v: Option<f64>) -> String {
    let Some(v) = v else { return NONE.into() };
    let sign = if v > 0.0 { "+" } else { "" };
    match k {
        Kind::Count => format!("{sign}{}", thousands(v)),
        Kind::Rate => format!("{sign}{:.1} pp", v * 100.0),
        Kind::Seconds => format!("{sign}{}", duration(v)),
        Kind::Rating => format!("{sign}{v:.2}"),
    }
}

fn delta_pct(v: Option<f64>) -> String {
    match v {
        None => NONE.into(),
        Some(p) if p > 0.0 => format!("▲ {p:.1}%"),
        Some(p) if p < 0.0 => format!("▼ {:.1}%", -p),
        Some(_) => "0.0%".into(),
    }
}

/// Renders the report as text tables, one per section.
pub fn render(rows: &[Row], periods: &Periods) -> String {
    let mut out = String::new();
    let fmt = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
    let prev_from = periods.from - chrono::Duration::days(periods.days());
    out.push_str(&format!(
        "Support funnel report: {} → {} ({} days, {}), compared with {} → {}\n",
        fmt(periods.from),
        fmt(periods.to),
        periods.days(),
        periods.tz,
        fmt(prev_from),
        fmt(periods.from),
    ));
    let mut sections: Vec<&str> = Vec::new();
    for r in rows {
        if !sections.contains(&r.section) {
            sections.push(r.section);
        }
    }
    for section in sections {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        let dq = section == "data_quality";
        if dq {
            t.set_header(vec!["metric", "count"]);
        } else {
            t.set_header(vec!["metric", "current", "previous", "delta", "delta %"]);
        }
        for r in rows.iter().filter(|r| r.section == section) {
            let k = kind(&r.metric);
            let name = match &r.segment {
                Some(s) => format!("{} ({s})", r.metric),
                None => r.metric.clone(),
            };
            let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
            if dq {
                t.add_row(vec![Cell::new(name), right(value(k, r.current))]);
            } else {
                let d = match (r.current, r.previous) {
                    (Some(c), Some(p)) => Some(c - p),
                    _ => None,
                };
                let pct = match (d, r.previous) {
                    (Some(d), Some(p)) if p != 0.0 => Some(d / p * 100.0),
                    _ => None,
                };
                t.add_row(vec![
                    Cell::new(name),
                    right(value(k, r.current)),
                    right(value(k, r.previous)),
                    right(delta(k, d)),
                    right(delta_pct(pct)),
                ]);
            }
        }
        out.push_str(&format!("\n{section}\n{t}\n"));
    }
    out
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
        assert_eq!(value(Kind::Count, Some(1_234_567.0)), "1,234,567");
        assert_eq!(value(Kind::Rate, Some(0.4213)), "42.1%");
        assert_eq!(value(Kind::Count, None), "–");
        assert_eq!(delta(Kind::Rate, Some(0.012)), "+1.2 pp");
        assert_eq!(delta(Kind::Count, Some(-3.0)), "-3");
        assert_eq!(delta_pct(Some(12.34)), "▲ 12.3%");
        assert_eq!(delta_pct(Some(-4.0)), "▼ 4.0%");
        assert_eq!(delta_pct(None), "–");
        assert_eq!(kind("median_first_response_s"), Kind::Seconds);
        assert_eq!(kind("csat"), Kind::Rate);
    }
}
