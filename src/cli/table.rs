//! The report for a person at a terminal (`report --format table`): one
//! table per section with current / previous / delta / delta %, the numbers
//! written as [`supportfunnel::render::display`] writes them.

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, CellAlignment, Table};
use supportfunnel::render::display::{delta, delta_pct, period_heading, value, value_kind};
use supportfunnel::report::Row;
use supportfunnel::settings::period::Periods;

/// The section whose rows are counts of the current period only.
const DATA_QUALITY: &str = "data_quality";

/// Renders the report as text tables, one per section, in row order.
pub fn render(rows: &[Row], periods: &Periods) -> String {
    let mut out = format!("{}\n", period_heading(periods));
    let mut sections: Vec<&str> = Vec::new();
    for r in rows {
        if !sections.contains(&r.section) {
            sections.push(r.section);
        }
    }
    for section in sections {
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        let dq = section == DATA_QUALITY;
        if dq {
            t.set_header(vec!["metric", "count"]);
        } else {
            t.set_header(vec!["metric", "current", "previous", "delta", "delta %"]);
        }
        for r in rows.iter().filter(|r| r.section == section) {
            let k = value_kind(&r.metric);
            let name = match &r.segment {
                Some(s) => format!("{} ({s})", r.metric),
                None => r.metric.clone(),
            };
            let right = |s: String| Cell::new(s).set_alignment(CellAlignment::Right);
            if dq {
                t.add_row(vec![Cell::new(name), right(value(k, r.current))]);
            } else {
                t.add_row(vec![
                    Cell::new(name),
                    right(value(k, r.current)),
                    right(value(k, r.previous)),
                    right(delta(k, r.delta())),
                    right(delta_pct(r.delta_pct())),
                ]);
            }
        }
        out.push_str(&format!("\n{section}\n{t}\n"));
    }
    out
}
