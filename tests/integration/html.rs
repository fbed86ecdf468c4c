//! The HTML report (`report --format html`, a job's `formats = ["html"]`):
//! the page of the bundled sample is parsed, every row of the JSON output
//! is found in it with the same number (exactly, in `<data value>`) and the
//! same text as the terminal table writes it, and the page references
//! nothing outside itself.

use std::path::Path;

use scraper::{ElementRef, Html, Selector};
use serde_json::Value;
use supportfunnel::render::display::{self, value_kind};

use crate::common::{files, run, stderr, stdout};

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

/// The JSON output's rows. Numbers are read from their text with Rust's
/// exact parser (serde_json's default one may miss the last bit).
fn json_rows(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["report", "--format", "json"];
    all.extend_from_slice(args);
    let out = run(&all);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            for key in ["current", "previous", "delta", "delta_pct"] {
                let at = l.find(&format!("\"{key}\":")).unwrap() + key.len() + 3;
                let text: String = l[at..]
                    .chars()
                    .take_while(|c| *c != ',' && *c != '}')
                    .collect();
                v[key] = match text.as_str() {
                    "null" => Value::Null,
                    t => Value::String(t.to_string()),
                };
            }
            v
        })
        .collect()
}

/// A number of a JSON row, exactly.
fn number(v: &Value) -> Option<f64> {
    v.as_str().map(|t| t.parse::<f64>().unwrap())
}

fn html_page(dir: &Path, args: &[&str]) -> String {
    let path = dir.join("report.html");
    let mut all = vec![
        "report",
        "--format",
        "html",
        "--output",
        path.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    let out = run(&all);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::read_to_string(&path).unwrap()
}

/// The `<data>` of a row's cell: (value attribute, text).
fn cell(row: &ElementRef, col: &str) -> (String, String) {
    let data = row
        .select(&sel(&format!("td[data-col=\"{col}\"] data")))
        .next()
        .unwrap_or_else(|| panic!("no {col} cell in {}", row.html()));
    (
        data.value().attr("value").unwrap().to_string(),
        data.text().collect::<String>(),
    )
}

/// Checks one cell against the JSON value: the exact number in `value`,
/// and the text as the terminal table writes it.
fn check_cell(row: &ElementRef, col: &str, json: &Value, text: String, what: &str) {
    let (value, shown) = cell(row, col);
    match number(json) {
        Some(v) => assert_eq!(value.parse::<f64>().unwrap(), v, "{what} {col}"),
        None => assert_eq!(value, "", "{what} {col}: null in the JSON"),
    }
    assert_eq!(shown, text, "{what} {col}");
}

fn check_page_against_json(page: &str, rows: &[Value]) {
    let doc = Html::parse_document(page);
    assert!(!rows.is_empty());
    for r in rows {
        let section = r["section"].as_str().unwrap();
        let metric = r["metric"].as_str().unwrap();
        let segment = r["segment"].as_str().unwrap_or("");
        let what = format!("{section}.{metric}[{segment}]");
        let found: Vec<ElementRef> = doc
            .select(&sel(&format!(
                "tr[data-section=\"{section}\"][data-metric=\"{metric}\"][data-segment=\"{segment}\"]"
            )))
            .collect();
        assert_eq!(found.len(), 1, "{what}: one row in the page");
        let row = &found[0];
        let label: String = row.select(&sel("th")).next().unwrap().text().collect();
        assert!(label.contains(metric), "{what}: the row names its metric");
        let k = value_kind(metric);
        let cur = number(&r["current"]);
        check_cell(row, "current", &r["current"], display::value(k, cur), &what);
        if section == "data_quality" {
            continue;
        }
        let prev = number(&r["previous"]);
        check_cell(
            row,
            "previous",
            &r["previous"],
            display::value(k, prev),
            &what,
        );
        let delta = number(&r["delta"]);
        check_cell(row, "delta", &r["delta"], display::delta(k, delta), &what);
        // The change: percent for counts and durations, points for rates;
        // the exact delta_pct is in its value either way.
        let (value, shown) = cell(row, "change");
        match number(&r["delta_pct"]) {
            Some(v) => assert_eq!(value.parse::<f64>().unwrap(), v, "{what} delta_pct"),
            None => assert_eq!(value, ""),
        }
        let expected = if k == display::ValueKind::Rate {
            let d = display::delta(k, delta);
            match delta {
                Some(x) if x > 0.0 => format!("▲ {}", d.trim_start_matches('+')),
                Some(x) if x < 0.0 => format!("▼ {}", d.trim_start_matches('-')),
                _ => d,
            }
        } else {
            display::delta_pct(number(&r["delta_pct"]))
        };
        assert_eq!(shown, expected, "{what} change");
    }
    // Nothing but the JSON's rows: no metric row the JSON does not have.
    assert_eq!(doc.select(&sel("tr[data-metric]")).count(), rows.len());
}

/// Nothing in the page is fetched from elsewhere: no script, stylesheet,
/// image, frame, font or `url(…)`; links only within the page.
fn check_self_contained(page: &str) {
    let doc = Html::parse_document(page);
    for tag in [
        "script", "link", "img", "iframe", "object", "embed", "image", "use",
    ] {
        assert_eq!(doc.select(&sel(tag)).count(), 0, "<{tag}> in the page");
    }
    for e in doc.select(&sel("*")) {
        for (name, value) in e.value().attrs() {
            let n = name.to_ascii_lowercase();
            if n == "src" || n == "srcset" || n == "href" || n.ends_with(":href") || n == "action" {
                assert!(
                    value.starts_with('#'),
                    "{name}={value} points outside the page"
                );
            }
            assert!(!n.starts_with("on"), "inline script {name}");
        }
    }
    let lower = page.to_ascii_lowercase();
    for bad in ["url(", "@import", "http://", "https://", "@font-face"] {
        // SVG's namespace is an identifier, not a fetch.
        let count = lower.matches(bad).count()
            - lower.matches("http://www.w3.org/2000/svg").count() * usize::from(bad == "http://");
        assert_eq!(count, 0, "`{bad}` in the page");
    }
}

#[test]
fn the_sample_page_shows_every_number_of_the_json_output() {
    let dir = tempfile::tempdir().unwrap();
    let page = html_page(dir.path(), &[]);
    check_page_against_json(&page, &json_rows(&[]));
    check_self_contained(&page);

    let doc = Html::parse_document(&page);
    let title: String = doc.select(&sel("title")).next().unwrap().text().collect();
    assert_eq!(title, "Support funnel report 2026-02-01 → 2026-03-01");
    let field = |f: &str| -> String {
        doc.select(&sel(&format!("[data-field=\"{f}\"]")))
            .next()
            .unwrap()
            .text()
            .collect()
    };
    assert_eq!(field("tz"), "UTC");
    assert!(field("period").contains("2026-02-01") && field("period").contains("2026-02-28"));
    assert!(field("filters").starts_with("none"));
    // Both charts, each with its numbers as text too.
    let svgs: Vec<ElementRef> = doc.select(&sel("figure svg")).collect();
    assert_eq!(svgs.len(), 2);
    let funnel: String = svgs[0].text().collect();
    let sessions: String = svgs[1].text().collect();
    assert!(
        funnel.contains("1,613") && funnel.contains("1,624"),
        "{funnel}"
    );
    assert!(svgs[0]
        .value()
        .attr("aria-label")
        .unwrap()
        .contains("People seeking support: 1,613"));
    assert!(sessions.contains("Stopped"), "{sessions}");
    assert!(svgs[1]
        .value()
        .attr("aria-label")
        .unwrap()
        .contains("Stopped 647"));
    // The human segments side by side, in the spec's order.
    let segments: Vec<&str> = doc
        .select(&sel("#human .pair .segment"))
        .map(|e| e.value().attr("data-segment").unwrap())
        .collect();
    assert_eq!(segments, ["after_self_serve", "from_start"]);
    // Sections in the spec's order.
    let order: Vec<&str> = doc
        .select(&sel("main > section"))
        .map(|e| e.value().attr("id").unwrap())
        .collect();
    assert_eq!(
        order,
        [
            "funnel",
            "sessions",
            "proactive",
            "self_serve",
            "human",
            "data_quality",
            "definitions"
        ]
    );
    // The one good/bad colour rule, on two known rows of the sample.
    let tone = |metric: &str| -> String {
        doc.select(&sel(&format!(
            "tr[data-metric=\"{metric}\"] td[data-col=\"change\"]"
        )))
        .next()
        .unwrap()
        .value()
        .attr("class")
        .unwrap()
        .to_string()
    };
    assert!(
        tone("people_stopped").contains("good"),
        "fewer people stopped"
    );
    assert!(
        tone("messages_opened").contains("bad"),
        "fewer messages opened"
    );
}

#[test]
fn a_filtered_page_in_another_zone_says_so_and_still_matches_the_json() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--from",
        "2026-02-02",
        "--to",
        "2026-02-16",
        "--tz",
        "America/New_York",
        "--tag",
        "onboarding",
        "--sender",
        "Ann <b>&",
        // a right-to-left override must not reverse the values after it
        "--sender",
        "\u{202e}Bob",
    ];
    let page = html_page(dir.path(), &args);
    check_page_against_json(&page, &json_rows(&args));
    check_self_contained(&page);
    let doc = Html::parse_document(&page);
    let filters: String = doc
        .select(&sel("[data-field=\"filters\"]"))
        .next()
        .unwrap()
        .text()
        .collect();
    // Escaped as text, not markup.
    assert_eq!(filters, "Tags: onboarding; Senders: Ann <b>&, \u{202e}Bob");
    // each value isolated in its own <bdi>, so its direction stays its own
    let values: Vec<String> = doc
        .select(&sel("[data-field=\"filters\"] bdi"))
        .map(|e| e.text().collect())
        .collect();
    assert_eq!(values, ["onboarding", "Ann <b>&", "\u{202e}Bob"]);
    assert!(page.contains("Ann &lt;b&gt;&amp;"));
    assert!(page.contains("14 days"));
}

#[test]
fn html_goes_to_stdout_and_is_refused_for_query_rows() {
    let out = run(&["report", "--format", "html"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("<!DOCTYPE html>"));
    let out = run(&["sql", "SELECT 1", "--format", "html"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("report --format html"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_job_writes_the_page_beside_its_table_result() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let config = dir.path().join("job.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[output]
location = "{}"

[[reports]]
name = "weekly"
period = "weekly"
formats = ["parquet", "html"]

[[reports]]
name = "daily"
period = "daily"
"#,
            out_dir.display()
        ),
    )
    .unwrap();
    let run_job = || {
        run(&[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--date",
            "2026-02-20",
        ])
    };
    let out = run_job();
    assert!(out.status.success(), "{}", stderr(&out));
    let summary: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let written = summary["written"].as_array().unwrap();
    let html: Vec<&Value> = written.iter().filter(|w| w["table"] == "html").collect();
    assert_eq!(html.len(), 1, "only the weekly report asks for a page");
    let path = out_dir.join("_html/report=weekly/report_date=2026-02-20/report.html");
    assert_eq!(html[0]["location"], path.to_str().unwrap());
    let page = std::fs::read_to_string(&path).unwrap();
    check_self_contained(&page);
    check_page_against_json(
        &page,
        &json_rows(&["--from", "2026-02-13", "--to", "2026-02-20"]),
    );
    // Nothing but the page and the Parquet results: no temporary left.
    let names: Vec<String> = files(&out_dir).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        names,
        [
            "_html/report=weekly/report_date=2026-02-20/report.html",
            "report=daily/report_date=2026-02-20/data.parquet",
            "report=weekly/report_date=2026-02-20/data.parquet",
        ]
    );

    // An unknown rendering is a config error naming the report.
    std::fs::write(
        &config,
        "[output]\nlocation = \"x\"\n[[reports]]\nname = \"w\"\nperiod = \"weekly\"\nformats = [\"pdf\"]\n",
    )
    .unwrap();
    let out = run_job();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("report `w`: format `pdf` is not html"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_funnel_has_three_stages_hovers_and_every_metric_links_to_its_definition() {
    let dir = tempfile::tempdir().unwrap();
    let page = html_page(dir.path(), &[]);
    let doc = Html::parse_document(&page);
    let stages: Vec<&str> = doc
        .select(&sel("#funnel svg g.stage"))
        .map(|e| e.value().attr("data-stage").unwrap())
        .collect();
    assert_eq!(stages, ["proactive", "self_serve", "human", "stopped"]);
    let steps: Vec<(String, ElementRef)> = doc
        .select(&sel("#funnel svg g.step"))
        .map(|e| (e.value().attr("data-metric").unwrap().to_string(), e))
        .collect();
    let names: Vec<&str> = steps.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(
        names,
        [
            "proactive_messages",
            "people_tried_self_serve",
            "people_resolved_self_serve",
            "people_human_after_self_serve",
            "people_human_from_start",
            "people_stopped"
        ]
    );
    // Every part of a step (name, bar, number, previous bar) hovers with
    // both periods and the change.
    for (m, step) in &steps {
        let titles: Vec<String> = step
            .select(&sel("title"))
            .map(|t| t.text().collect())
            .collect();
        assert_eq!(titles.len(), 4, "{m}");
        for t in &titles {
            assert!(
                t.contains("(previous period ") && t.contains(", change "),
                "{m}: {t}"
            );
        }
    }
    // People seeking support: 1,613 now, 1,624 before (the sample's JSON).
    let seeking: String = doc
        .select(&sel(
            "#funnel svg a[href=\"#def-people_seeking_support\"] title",
        ))
        .next()
        .unwrap()
        .text()
        .collect();
    assert!(
        seeking.contains("1,613") && seeking.contains("previous period 1,624"),
        "{seeking}"
    );
    // Every link lands on a definition on the page, and every metric row
    // and funnel step links to its own.
    let ids: std::collections::HashSet<&str> = doc
        .select(&sel("[id]"))
        .map(|e| e.value().attr("id").unwrap())
        .collect();
    let mut links = 0;
    for a in doc.select(&sel("a[href]")) {
        let href = a.value().attr("href").unwrap();
        let target = href.strip_prefix('#').unwrap();
        assert!(ids.contains(target), "{href} goes nowhere");
        links += 1;
    }
    for row in doc.select(&sel("tr[data-metric]")) {
        let m = row.value().attr("data-metric").unwrap();
        let link = row.select(&sel("a")).next().unwrap();
        assert_eq!(
            link.value().attr("href"),
            Some(format!("#def-{m}").as_str())
        );
        let def: String = doc
            .select(&sel(&format!("dt[id=\"def-{m}\"] + dd")))
            .next()
            .unwrap_or_else(|| panic!("no definition of {m}"))
            .text()
            .collect();
        assert!(def.len() > 20, "{m}: {def}");
    }
    assert!(links >= 52 + 7, "{links} links");
}
