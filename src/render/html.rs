//! The report as one self-contained HTML page (`report --format html`, and
//! `formats = ["html"]` for a job's report): for support leads, readable
//! offline and as a mail attachment.
//!
//! The page references nothing outside itself: the CSS is inline, the charts
//! are SVG drawn here, there is no script, font or image to fetch. What it
//! shows follows the spec's order: the period, zone and filters; the funnel
//! in three colour-coded stages (proactive, self-serve, human support; the
//! people who stopped apart), each step's current bar over the previous
//! period's, its hover showing both and the change; sessions by status as
//! stacked bars; one table per section with current, previous and a
//! coloured ▲/▼ change; the two human segments side by side; data quality;
//! and every metric's definition, which each metric name links to.
//!
//! Every number is written by [`crate::render::display`], as in the terminal table,
//! inside a `<data value="…">` element whose `value` is the number of the
//! JSON output exactly (Rust's shortest round-trip form), so a reader copies
//! the text and a program reads the value. Charts carry their numbers as SVG
//! text and an `aria-label`. Each metric row is marked with `data-section`,
//! `data-metric` and `data-segment`, which is how the tests find them.
//!
//! The markup is one [minijinja] template (`templates/report.html`) with
//! HTML auto-escaping; the SVG is built here from numbers and fixed labels,
//! each label escaped.
//!
//! **Colours.** A change is green when it is good news for support, red when
//! it is bad, grey when it is neither (volumes): see [`polarity`]. The arrow
//! and the sign carry the direction too, so the colour is never the only
//! signal. Rates show their change in percentage points, everything else in
//! percent of the previous value (the JSON's `delta` and `delta_pct`).

use std::fmt::Write as _;

use serde::Serialize;

use datafusion::arrow::array::{Array, Float64Array, RecordBatch};

use crate::error::{Error, Result};
use crate::render::display::{self, ValueKind};
use crate::report::{rows_of, Report, Row};
use crate::settings::Filters;

/// The page template (HTML, auto-escaped).
const TEMPLATE: &str = include_str!("../../templates/report.html");

/// Which way of a change is good news for support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polarity {
    /// More is better (resolutions, ratings, engagement).
    Up,
    /// Less is better (people who stopped, waiting times).
    Down,
    /// Neither: a volume.
    Neutral,
}

/// Whether a rise of `metric` is good, bad or neither (see the module docs).
pub fn polarity(metric: &str) -> Polarity {
    match metric {
        "people_resolved_self_serve"
        | "people_tried_self_serve"
        | "sessions_self_serve_resolved"
        | "messages_opened"
        | "messages_clicked"
        | "messages_reacted"
        | "open_rate"
        | "click_rate"
        | "reaction_rate"
        | "self_serve_resolution_rate"
        | "article_views_resolved"
        | "articles_resolution_rate"
        | "automated_resolutions"
        | "sessions_automated_resolved"
        | "automated_resolution_rate"
        | "avg_rating"
        | "csat" => Polarity::Up,
        "people_stopped"
        | "sessions_stopped"
        | "median_first_response_s"
        | "median_time_to_close_s" => Polarity::Down,
        _ => Polarity::Neutral,
    }
}

/// A metric's name for a person (the metric's own name when it has none).
pub fn label(metric: &str) -> &str {
    match metric {
        "proactive_messages" => "Proactive messages delivered (messages)",
        "people_seeking_support" => "People seeking support",
        "people_tried_self_serve" => "Tried self-serve",
        "people_resolved_self_serve" => "Resolved by self-serve",
        "people_human_after_self_serve" => "Human after self-serve",
        "people_human_from_start" => "Human from the start",
        "people_stopped" => "Stopped",
        "sessions_total" => "Sessions",
        "sessions_self_serve_resolved" => "Resolved by self-serve",
        "sessions_human_supported" => "Supported by a human",
        "sessions_human_after_self_serve" => "Human after self-serve",
        "sessions_human_from_start" => "Human from the start",
        "sessions_stopped" => "Stopped",
        "messages_delivered" => "Delivered",
        "messages_opened" => "Opened",
        "messages_clicked" => "Clicked",
        "messages_reacted" => "Reacted",
        "open_rate" => "Open rate",
        "click_rate" => "Click rate",
        "reaction_rate" => "Reaction rate",
        "self_serve_resolution_rate" => "Self-serve resolution rate",
        "article_views" => "Article views",
        "article_views_resolved" => "Article views that resolved",
        "articles_resolution_rate" => "Article resolution rate",
        "automated_resolutions" => "Automated resolutions",
        "sessions_with_bot_answer" => "Sessions with a bot answer",
        "sessions_automated_resolved" => "Sessions resolved by a bot",
        "automated_resolution_rate" => "Automated resolution rate",
        "conversations" => "Conversations",
        "rated_conversations" => "Rated conversations",
        "avg_rating" => "Average rating",
        "csat" => "CSAT (rating ≥ 4)",
        "median_first_response_s" => "Median first response",
        "median_time_to_close_s" => "Median time to close",
        "rows_read" => "Rows read",
        "rows_rejected" => "Rows rejected",
        "duplicate_events" => "Duplicate events",
        "duplicate_messages" => "Duplicate messages",
        "orphan_lifecycle_events" => "Orphan lifecycle events",
        other => other,
    }
}

/// A section's heading and the question it answers.
fn section_title(section: &str) -> (&'static str, &'static str) {
    match section {
        "funnel" => ("Funnel", "How do your customers get support? (people)"),
        "sessions" => (
            "Sessions",
            "Sessions supported by self-serve and human support",
        ),
        "proactive" => ("Proactive", "Proactive messages delivered"),
        "self_serve" => ("Self-serve", "Self-serve resolved sessions"),
        "human" => ("Human", "Served by a teammate"),
        "data_quality" => ("Data quality", "The whole input, not per period"),
        _ => ("", ""),
    }
}

/// A number as the page shows it: the text a person reads and the exact
/// value (empty when missing).
#[derive(Debug, Serialize)]
struct Num {
    text: String,
    value: String,
}

fn num(text: String, v: Option<f64>) -> Num {
    Num {
        text,
        value: v.map(exact).unwrap_or_default(),
    }
}

/// The shortest text that reads back as `v` (what the JSON holds).
fn exact(v: f64) -> String {
    format!("{v}")
}

/// A metric row of a section table.
#[derive(Debug, Serialize)]
struct MetricRow {
    section: &'static str,
    metric: String,
    segment: String,
    label: String,
    current: Num,
    previous: Num,
    delta: Num,
    delta_pct: Num,
    /// The change as shown: `▲ 3.9%`, `▼ 1.2 pp`, `–`.
    change: String,
    /// `good`, `bad`, `neutral` or `none` (no change known).
    tone: &'static str,
}

/// A section: its rows, or for `human` its two segments.
#[derive(Debug, Serialize)]
struct SectionView {
    name: &'static str,
    title: &'static str,
    question: &'static str,
    rows: Vec<MetricRow>,
    segments: Vec<SegmentView>,
}

/// One segment of the `human` section.
#[derive(Debug, Serialize)]
struct SegmentView {
    name: String,
    title: &'static str,
    rows: Vec<MetricRow>,
}

/// Everything the template needs.
#[derive(Debug, Serialize)]
struct Page {
    title: String,
    from: String,
    to_inclusive: String,
    days: i64,
    prev_from: String,
    prev_to_inclusive: String,
    tz: String,
    /// Each value given by a user apart, so the page isolates it (`<bdi>`).
    filters: Vec<(&'static str, Vec<String>)>,
    version: &'static str,
    funnel_svg: String,
    sessions_svg: String,
    sections: Vec<SectionView>,
    quality: Vec<MetricRow>,
    /// Every metric of the page once, in the report's order, with what it
    /// counts: the target of each metric name's link.
    definitions: Vec<Definition>,
}

/// A metric's definition on the page.
#[derive(Debug, Serialize)]
struct Definition {
    metric: String,
    label: String,
    text: &'static str,
}

/// Renders `report` as a complete HTML document. `filters` are the
/// proactive filters it was computed with (shown on top).
pub fn render(report: &Report, filters: &Filters) -> Result<String> {
    let rows = rows_of(&report.batch);
    // delta and delta_pct as the JSON has them (computed once, in the
    // report), not recomputed here: the last digit could differ.
    let deltas = float_column(&report.batch, "delta")?;
    let pcts = float_column(&report.batch, "delta_pct")?;
    let p = &report.periods;
    let day = |d: chrono::NaiveDate| d.format("%Y-%m-%d").to_string();
    let days = p.days();
    let prev_from = p.from - chrono::Duration::days(days);
    let mut filter_list = Vec::new();
    for (kind, values) in [
        ("Tags", &filters.tags),
        ("Content types", &filters.content_types),
        ("Senders", &filters.senders),
    ] {
        if !values.is_empty() {
            filter_list.push((kind, values.clone()));
        }
    }

    let mut sections: Vec<SectionView> = Vec::new();
    let mut quality = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let view = metric_row(r, deltas[i], pcts[i]);
        if r.section == "data_quality" {
            quality.push(view);
            continue;
        }
        if sections.last().map(|s| s.name) != Some(r.section) {
            let (title, question) = section_title(r.section);
            sections.push(SectionView {
                name: r.section,
                title,
                question,
                rows: Vec::new(),
                segments: Vec::new(),
            });
        }
        let section = sections.last_mut().expect("pushed above");
        match &r.segment {
            Some(seg) => {
                if section.segments.last().map(|s| &s.name) != Some(seg) {
                    section.segments.push(SegmentView {
                        name: seg.clone(),
                        title: match seg.as_str() {
                            "after_self_serve" => "After self-serve",
                            "from_start" => "From the start",
                            _ => "",
                        },
                        rows: Vec::new(),
                    });
                }
                section
                    .segments
                    .last_mut()
                    .expect("pushed above")
                    .rows
                    .push(view);
            }
            None => section.rows.push(view),
        }
    }

    let page = Page {
        title: format!("Support funnel report {} → {}", day(p.from), day(p.to)),
        from: day(p.from),
        to_inclusive: day(p.to - chrono::Duration::days(1)),
        days,
        prev_from: day(prev_from),
        prev_to_inclusive: day(p.from - chrono::Duration::days(1)),
        tz: p.tz.to_string(),
        filters: filter_list,
        version: env!("CARGO_PKG_VERSION"),
        funnel_svg: funnel_svg(&rows),
        sessions_svg: sessions_svg(&rows),
        sections,
        quality,
        definitions: definitions(&rows),
    };

    let mut env = minijinja::Environment::new();
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    env.add_template("report.html", TEMPLATE)?;
    Ok(env
        .get_template("report.html")?
        .render(minijinja::value::Serde(&page))?)
}

/// Each metric of `rows` once, in order, with its definition.
fn definitions(rows: &[Row]) -> Vec<Definition> {
    let mut out: Vec<Definition> = Vec::new();
    for r in rows {
        if out.iter().any(|d| d.metric == r.metric) {
            continue;
        }
        out.push(Definition {
            metric: r.metric.clone(),
            label: label(&r.metric).to_string(),
            text: crate::render::definitions::definition(&r.metric),
        });
    }
    out
}

/// A Float64 column of the report's batch, nulls as `None`.
fn float_column(batch: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>> {
    let col = batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
        .ok_or_else(|| Error::Internal(format!("report batch without Float64 `{name}`")))?;
    Ok(col.iter().collect())
}

fn metric_row(r: &Row, delta: Option<f64>, pct: Option<f64>) -> MetricRow {
    let k = display::value_kind(&r.metric);
    // Rates change in points, everything else in percent (module docs).
    let (change, dir) = if k == ValueKind::Rate {
        let text = display::delta(k, delta);
        let arrow = match delta {
            Some(d) if d > 0.0 => "▲ ",
            Some(d) if d < 0.0 => "▼ ",
            _ => "",
        };
        (
            format!("{arrow}{}", text.trim_start_matches(['+', '-'])),
            delta,
        )
    } else {
        (display::delta_pct(pct), pct)
    };
    let tone = match (dir, polarity(&r.metric)) {
        (None, _) => "none",
        (Some(0.0), _) => "neutral",
        (Some(_), Polarity::Neutral) => "neutral",
        (Some(d), Polarity::Up) if d > 0.0 => "good",
        (Some(d), Polarity::Down) if d < 0.0 => "good",
        (Some(_), _) => "bad",
    };
    MetricRow {
        section: r.section,
        metric: r.metric.clone(),
        segment: r.segment.clone().unwrap_or_default(),
        label: label(&r.metric).to_string(),
        current: num(display::value(k, r.current), r.current),
        previous: num(display::value(k, r.previous), r.previous),
        delta: num(display::delta(k, delta), delta),
        delta_pct: num(display::delta_pct(pct), pct),
        change,
        tone,
    }
}

/// Escapes text for SVG (XML) content and attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn find<'a>(rows: &'a [Row], section: &str, metric: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.section == section && r.metric == metric && r.segment.is_none())
}

/// Width of the charts' drawing, in SVG units: narrow enough that text stays
/// legible when a phone scales the chart to its screen.
const CHART_W: f64 = 440.0;

/// The funnel's stages, in the order support teams read them: (stage key,
/// title, colour class, its steps). People who stopped are set apart
/// below the stages.
const STAGES: [(&str, &str, &str, &[&str]); 3] = [
    (
        "proactive",
        "Proactive messages",
        "st1",
        &["proactive_messages"],
    ),
    (
        "self_serve",
        "Self-serve",
        "st2",
        &["people_tried_self_serve", "people_resolved_self_serve"],
    ),
    (
        "human",
        "Human support",
        "st3",
        &["people_human_after_self_serve", "people_human_from_start"],
    ),
];

/// The funnel as support teams know it: three colour-coded stages —
/// proactive messages, self-serve (people who tried, people resolved),
/// human support (after self-serve, from the start) — under the people
/// seeking support, with the people who stopped set apart. Each step is
/// the current period's bar over a faint bar of the previous period, on
/// one scale for people (deliveries on their own); hovering any part shows
/// both periods and the change (an SVG `<title>`), and every step's name
/// links to its definition on the page.
fn funnel_svg(rows: &[Row]) -> String {
    let get = |m: &str| find(rows, "funnel", m);
    let people_max = rows
        .iter()
        .filter(|r| r.section == "funnel" && r.metric.starts_with("people_"))
        .flat_map(|r| [r.current, r.previous])
        .flatten()
        .fold(0.0_f64, f64::max);
    // Steps are indented past their stage's colour band.
    let (x0, bar_w, step_h, bar_h, stage_gap) = (10.0, CHART_W - 80.0, 40.0, 14.0, 6.0);
    let mut aria = String::from("Support funnel, current period with the previous one: ");
    let mut body = String::new();
    let mut y = 4.0;
    if let Some(r) = get("people_seeking_support") {
        let hover = hover_text(r);
        let _ = write!(
            body,
            r##"<a href="#def-people_seeking_support"><text x="0" y="{}" class="label strong">{}<title>{}</title></text></a>"##,
            y + 12.0,
            esc(&format!(
                "{}: {}",
                label(&r.metric),
                display::value(display::value_kind(&r.metric), r.current)
            )),
            esc(&hover)
        );
        let _ = write!(aria, "{hover}; ");
        y += 22.0;
    }
    let step = |body: &mut String, aria: &mut String, y: f64, r: &Row, class: &str| {
        let max = if r.metric.starts_with("people_") {
            people_max
        } else {
            r.current.unwrap_or(0.0).max(r.previous.unwrap_or(0.0))
        };
        let width = |v: Option<f64>| match v {
            Some(v) if max > 0.0 => (v / max * bar_w).max(1.0),
            _ => 0.0,
        };
        let k = display::value_kind(&r.metric);
        let hover = esc(&hover_text(r));
        let _ = write!(aria, "{}; ", hover_text(r));
        let (cw, pw) = (width(r.current), width(r.previous));
        let _ = write!(
            body,
            r##"<g class="step" data-metric="{m}"><a href="#def-{m}"><text x="{x0}" y="{ly}" class="label">{name}<title>{hover}</title></text></a><rect x="{x0}" y="{by}" width="{cw:.1}" height="{bar_h}" class="{class}"><title>{hover}</title></rect><text x="{nx:.1}" y="{ny}" class="num">{cur}<title>{hover}</title></text><rect x="{x0}" y="{py}" width="{pw:.1}" height="4" class="{class} prevbar"><title>{hover}</title></rect></g>"##,
            m = esc(&r.metric),
            ly = y + 11.0,
            name = esc(label(&r.metric)),
            by = y + 15.0,
            nx = x0 + cw + 5.0,
            ny = y + 15.0 + bar_h - 3.0,
            cur = esc(&display::value(k, r.current)),
            py = y + 16.0 + bar_h,
        );
    };
    for (key, title, class, metrics) in STAGES {
        let _ = write!(
            body,
            r##"<g class="stage" data-stage="{key}"><rect x="0" y="{}" width="4" height="{}" class="{class}"/><text x="{x0}" y="{}" class="stagetitle {class}t">{}</text>"##,
            y,
            18.0 + step_h * metrics.len() as f64 - 8.0,
            y + 13.0,
            esc(title)
        );
        let mut sy = y + 18.0;
        for m in metrics.iter().copied() {
            if let Some(r) = get(m) {
                step(&mut body, &mut aria, sy, r, class);
            }
            sy += step_h;
        }
        body.push_str("</g>");
        y = sy + stage_gap;
    }
    // Stopped: apart, under a rule.
    let _ = write!(
        body,
        r##"<line x1="0" x2="{CHART_W}" y1="{y}" y2="{y}" class="rule"/>"##
    );
    y += 8.0;
    if let Some(r) = get("people_stopped") {
        body.push_str(r##"<g class="stage stopped" data-stage="stopped">"##);
        step(&mut body, &mut aria, y, r, "st4");
        body.push_str("</g>");
        y += step_h;
    }
    svg(CHART_W, y + 4.0, &aria, &body)
}

/// What hovering a funnel step shows: its name, both periods and the
/// change, as the tables write them.
fn hover_text(r: &Row) -> String {
    let k = display::value_kind(&r.metric);
    format!(
        "{}: {} (previous period {}, change {})",
        label(&r.metric),
        display::value(k, r.current),
        display::value(k, r.previous),
        display::delta_pct(r.delta_pct())
    )
}

/// Sessions by status: one stacked bar per period, the four statuses in
/// the spec's order; each part's count and share written under the bar
/// (inside it too when it is wide enough).
fn sessions_svg(rows: &[Row]) -> String {
    const PARTS: [(&str, &str, &str); 4] = [
        ("sessions_self_serve_resolved", "Self-serve resolved", "s1"),
        (
            "sessions_human_after_self_serve",
            "Human after self-serve",
            "s2",
        ),
        ("sessions_human_from_start", "Human from start", "s3"),
        ("sessions_stopped", "Stopped", "s4"),
    ];
    let (bar_h, block) = (26.0, 100.0);
    let height = 2.0 * block + 4.0;
    let mut aria = String::from("Sessions by status: ");
    let mut body = String::new();
    for (i, (period, name)) in [(0, "Current"), (1, "Previous")].into_iter().enumerate() {
        let y = i as f64 * block;
        let value = |metric: &str| {
            find(rows, "sessions", metric).and_then(|r| {
                if period == 0 {
                    r.current
                } else {
                    r.previous
                }
            })
        };
        let total: f64 = PARTS.iter().filter_map(|(m, _, _)| value(m)).sum();
        let _ = write!(
            body,
            r##"<text x="0" y="{}" class="label">{name} period · {} sessions</text>"##,
            y + 12.0,
            esc(&display::thousands(total))
        );
        let _ = write!(aria, "{name} period: ");
        let bar_y = y + 18.0;
        let mut x = 0.0;
        for (j, (metric, text, class)) in PARTS.iter().enumerate() {
            let v = value(metric).unwrap_or(0.0);
            let share = if total > 0.0 { v / total } else { 0.0 };
            let w = share * CHART_W;
            let count = display::thousands(v);
            let pct = format!("{:.1}%", share * 100.0);
            let _ = write!(aria, "{text} {count} ({pct}); ");
            let _ = write!(
                body,
                r##"<rect x="{x:.1}" y="{bar_y}" width="{w:.1}" height="{bar_h}" class="{class}"><title>{}: {} ({})</title></rect>"##,
                esc(text),
                esc(&count),
                esc(&pct)
            );
            if w > 44.0 {
                let _ = write!(
                    body,
                    r##"<text x="{:.1}" y="{}" class="inbar">{}</text>"##,
                    x + 4.0,
                    bar_y + bar_h / 2.0 + 4.0,
                    esc(&pct)
                );
            }
            x += w;
            // The part's swatch, name, count and share: two per line.
            let (lx, ly) = (
                (j % 2) as f64 * (CHART_W / 2.0),
                bar_y + bar_h + 16.0 + (j / 2) as f64 * 17.0,
            );
            let _ = write!(
                body,
                r##"<rect x="{lx:.1}" y="{}" width="10" height="10" class="{class}"/><text x="{:.1}" y="{ly}" class="legend">{} {} ({})</text>"##,
                ly - 9.0,
                lx + 14.0,
                esc(text),
                esc(&count),
                esc(&pct)
            );
        }
    }
    svg(CHART_W, height, &aria, &body)
}

fn svg(width: f64, height: f64, aria: &str, body: &str) -> String {
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" aria-label="{}" preserveAspectRatio="xMinYMin meet">{body}</svg>"##,
        esc(aria.trim_end_matches("; "))
    )
}

impl From<minijinja::Error> for Error {
    fn from(e: minijinja::Error) -> Self {
        Error::Internal(format!("HTML report template: {e:#}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tones_follow_what_is_good_news() {
        let row = |metric: &str, cur: f64, prev: f64| {
            let r = Row {
                section: "funnel",
                metric: metric.into(),
                segment: None,
                current: Some(cur),
                previous: Some(prev),
            };
            (r.clone(), r.delta(), r.delta_pct())
        };
        let metric_row = |(r, d, p): (Row, Option<f64>, Option<f64>)| metric_row(&r, d, p);
        assert_eq!(metric_row(row("csat", 0.6, 0.5)).tone, "good");
        assert_eq!(metric_row(row("csat", 0.6, 0.5)).change, "▲ 10.0 pp");
        assert_eq!(metric_row(row("people_stopped", 10.0, 5.0)).tone, "bad");
        assert_eq!(
            metric_row(row("people_stopped", 10.0, 5.0)).change,
            "▲ 100.0%"
        );
        assert_eq!(
            metric_row(row("median_time_to_close_s", 50.0, 100.0)).tone,
            "good"
        );
        assert_eq!(
            metric_row(row("sessions_total", 50.0, 100.0)).tone,
            "neutral"
        );
        assert_eq!(metric_row(row("sessions_total", 5.0, 0.0)).tone, "none");
        assert_eq!(metric_row(row("sessions_total", 5.0, 0.0)).change, "–");
    }

    #[test]
    fn exact_values_read_back_as_the_same_number() {
        for v in [2770.0, -3.8861901457321304, 0.1 + 0.2, 964.224797, 1e-9] {
            assert_eq!(exact(v).parse::<f64>().unwrap(), v);
        }
        assert_eq!(esc("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
