//! `report_detail` and `report --detail`: every metric of the report,
//! recomputed from its detail rows as docs/METRICS.md says (`count(*)`,
//! `avg(in_numerator)`, `avg(value)`, the median of `value`), equals the
//! report's number, in both periods and every segment: on the worked
//! examples, across a DST change with filters, and on generated data
//! (a property test).

use std::collections::HashMap;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use proptest::prelude::*;
use supportfunnel::datagen::{generate, GenOptions};
use supportfunnel::report::detail::{
    Aggregate, Detail, DetailMetric, DetailRequest, PeriodChoice, METRICS,
};
use supportfunnel::report::{rows_of, run_details, run_report, ReportOptions, Row};
use supportfunnel::settings::period::parse_tz;
use supportfunnel::{build_context, Engine, EngineOptions};

use super::common::{self, d, engine_with, ev, msg, period, MsgRow, Row as Ev, Via};

/// (period, segment): the rows of one number.
type Key = (String, Option<String>);

/// (period, segment) -> the metric recomputed from the detail rows.
type Recomputed = HashMap<Key, Option<f64>>;

fn strings(b: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let c = cast(
        b.column(b.schema().index_of(name).unwrap()),
        &DataType::Utf8,
    )
    .unwrap();
    let s = c.as_string::<i32>();
    (0..s.len())
        .map(|i| s.is_valid(i).then(|| s.value(i).to_string()))
        .collect()
}

/// The metric again, from its rows, as docs/METRICS.md "Detail" says.
fn recompute(m: &DetailMetric, detail: &Detail) -> Recomputed {
    let mut groups: HashMap<Key, Vec<(bool, Option<f64>)>> = HashMap::new();
    for b in &detail.batches {
        let period = strings(b, "period");
        let segment = strings(b, "segment");
        let num = b
            .column(b.schema().index_of("in_numerator").unwrap())
            .as_boolean();
        let value = b
            .column(b.schema().index_of("value").unwrap())
            .as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            let p = period[i].clone().expect("every detail row has a period");
            assert!(p == "current" || p == "previous", "period {p}");
            groups
                .entry((p, segment[i].clone()))
                .or_default()
                .push((num.value(i), value.is_valid(i).then(|| value.value(i))));
        }
    }
    groups
        .into_iter()
        .map(|(k, rows)| {
            let values: Vec<f64> = rows.iter().filter_map(|r| r.1).collect();
            let n = rows.len() as f64;
            let v = match m.aggregate {
                Aggregate::Count => Some(n),
                Aggregate::Rate => Some(rows.iter().filter(|r| r.0).count() as f64 / n),
                Aggregate::Mean => {
                    assert_eq!(
                        values.len(),
                        rows.len(),
                        "{}: a row without value",
                        m.metric
                    );
                    Some(values.iter().sum::<f64>() / n)
                }
                Aggregate::Median => {
                    assert_eq!(
                        values.len(),
                        rows.len(),
                        "{}: a row without value",
                        m.metric
                    );
                    let mut v = values;
                    v.sort_by(f64::total_cmp);
                    let mid = v.len() / 2;
                    Some(if v.len() % 2 == 1 {
                        v[mid]
                    } else {
                        (v[mid - 1] + v[mid]) / 2.0
                    })
                }
            };
            (k, v)
        })
        .collect()
}

/// Equal: counts and rates exactly (both are quotients of the same
/// integers), means and medians to the last few bits (a sum's order may
/// differ).
fn same(m: &DetailMetric, got: Option<f64>, want: Option<f64>) -> bool {
    match (got, want) {
        (None, None) => true,
        (Some(g), Some(w)) => match m.aggregate {
            Aggregate::Count | Aggregate::Rate => g == w,
            Aggregate::Mean | Aggregate::Median => (g - w).abs() <= 1e-9 * w.abs().max(1.0),
        },
        _ => false,
    }
}

/// Every metric of the report on `engine` for `opts`, recomputed from its
/// detail, equals the report's; returns the report's rows.
async fn details_match(engine: &Engine, opts: &ReportOptions, context: &str) -> Vec<Row> {
    let report = rows_of(&run_report(engine, opts).await.unwrap().batch);
    let requests: Vec<DetailRequest> = METRICS
        .iter()
        .map(|m| DetailRequest::new(m.metric, None, None).unwrap())
        .collect();
    let details = run_details(engine, opts, &requests).await.unwrap();
    let mut checked = 0;
    for (m, detail) in METRICS.iter().zip(&details) {
        let got = recompute(m, detail);
        let rows: Vec<&Row> = report
            .iter()
            .filter(|r| r.section == m.section && r.metric == m.metric)
            .collect();
        assert!(!rows.is_empty(), "the report has no {}", m.metric);
        for r in rows {
            for (p, want) in [("current", r.current), ("previous", r.previous)] {
                if m.whole_input() && p == "previous" {
                    continue;
                }
                let key = (p.to_string(), r.segment.clone());
                let value = match got.get(&key) {
                    Some(v) => *v,
                    // No rows: a count is 0, anything else undefined.
                    None if m.aggregate == Aggregate::Count => Some(0.0),
                    None => None,
                };
                assert!(
                    same(m, value, want),
                    "{context}: {}.{} {:?} {p}: the detail gives {value:?}, the report {want:?}",
                    m.section,
                    m.metric,
                    r.segment
                );
                checked += 1;
            }
        }
        // No rows outside the report's segments.
        for (_, seg) in got.keys() {
            assert!(
                seg.is_none() || m.segments().contains(&seg.as_deref().unwrap()),
                "{}: unexpected segment {seg:?}",
                m.metric
            );
        }
    }
    assert!(checked >= 80, "{context}: only {checked} numbers checked");
    report
}

fn worked_example() -> (Vec<Ev>, Vec<MsgRow>) {
    // Two customers over both periods: a stopped person who also read an
    // article in a later session, a human-after-self-serve session with a
    // rated, replied and closed conversation, a bot-resolved conversation,
    // a repeated event, a rejected row and an orphan reply.
    let events = vec![
        ev("e1", "u1", "2026-03-02 09:00:00", "help_center_visit"),
        ev("e2", "u1", "2026-03-02 09:05:00", "article_search"),
        ev("e3", "u1", "2026-03-04 10:00:00", "article_view"),
        ev("e4", "u1", "2026-03-04 10:10:00", "conversation_started").conv("c1"),
        ev("e5", "u1", "2026-03-04 10:12:00", "teammate_reply")
            .conv("c1")
            .actor("tm_1"),
        ev("e6", "u1", "2026-03-04 11:00:00", "conversation_closed")
            .conv("c1")
            .actor("tm_1"),
        ev("e7", "u1", "2026-03-04 11:01:00", "conversation_rated")
            .conv("c1")
            .rating(5),
        ev("e7", "u1", "2026-03-04 11:01:00", "conversation_rated")
            .conv("c1")
            .rating(5),
        ev("e8", "u2", "2026-03-03 08:00:00", "conversation_started").conv("c2"),
        ev("e9", "u2", "2026-03-03 08:01:00", "bot_answer")
            .conv("c2")
            .actor("bot"),
        ev("e10", "u2", "2026-03-03 08:02:00", "conversation_closed")
            .conv("c2")
            .actor("bot"),
        ev("e11", "u2", "2026-02-25 08:00:00", "article_view"),
        ev("e12", "u2", "2026-02-25 08:03:00", "conversation_started").conv("c3"),
        ev("e13", "u2", "2026-02-25 09:00:00", "teammate_reply")
            .conv("c3")
            .actor("tm_2"),
        ev("e14", "u3", "2026-03-05 12:00:00", "teammate_reply")
            .conv("c_orphan")
            .actor("tm_2"),
        ev("e15", "u3", "2026-03-05 12:00:00", "conversation_started"),
    ];
    let messages = vec![
        msg(
            "m1",
            "2026-03-02 09:00:00",
            "chat",
            "support_team",
            Some(vec!["outage"]),
        ),
        msg(
            "m1",
            "2026-03-02 09:30:00",
            "chat",
            "support_team",
            Some(vec!["outage"]),
        ),
        msg("m2", "2026-02-27 10:00:00", "email", "marketing_team", None),
    ];
    (events, messages)
}

#[tokio::test]
async fn every_metric_recomputed_from_its_detail_equals_the_report() {
    let (events, messages) = worked_example();
    let dir = tempfile::tempdir().unwrap();
    let engine = engine_with(dir.path(), &events, &messages).await;
    for via in Via::ALL {
        let e = via.engine(&engine);
        let opts = period("2026-03-01", "2026-03-08");
        let r = details_match(&e, &opts, &format!("{via:?}")).await;
        // The example is not empty where it matters.
        let cur = |m: &str| {
            r.iter()
                .find(|x| x.metric == m && x.segment.is_none())
                .and_then(|x| x.current)
        };
        assert_eq!(cur("people_seeking_support"), Some(2.0));
        assert_eq!(cur("automated_resolutions"), Some(1.0));
        assert_eq!(cur("duplicate_events"), Some(1.0));
        assert_eq!(cur("orphan_lifecycle_events"), Some(1.0));
        assert_eq!(cur("duplicate_messages"), Some(1.0));
    }
}

#[tokio::test]
async fn details_on_the_sample_unfiltered_and_filtered() {
    let engine = build_context(&common::sample_options()).await.unwrap();
    for (tz, filters) in [
        ("UTC", vec![]),
        ("America/New_York", vec!["outage".to_string()]),
    ] {
        let opts = ReportOptions {
            tz: Some(parse_tz(tz).unwrap()),
            tags: filters.clone(),
            ..period("2026-02-01", "2026-03-01")
        };
        details_match(&engine, &opts, tz).await;
    }
}

#[tokio::test]
async fn segment_and_period_choices_narrow_the_rows() {
    let engine = build_context(&common::sample_options()).await.unwrap();
    let opts = period("2026-02-01", "2026-03-01");
    let all = run_details(
        &engine,
        &opts,
        &[DetailRequest::new("human.conversations", None, None).unwrap()],
    )
    .await
    .unwrap();
    let some = run_details(
        &engine,
        &opts,
        &[DetailRequest::new(
            "conversations",
            Some("from_start".into()),
            Some(PeriodChoice::Previous),
        )
        .unwrap()],
    )
    .await
    .unwrap();
    let count = |d: &Detail, seg: Option<&str>, p: Option<&str>| -> usize {
        d.batches
            .iter()
            .map(|b| {
                let s = strings(b, "segment");
                let q = strings(b, "period");
                (0..b.num_rows())
                    .filter(|&i| {
                        seg.is_none_or(|x| s[i].as_deref() == Some(x))
                            && p.is_none_or(|x| q[i].as_deref() == Some(x))
                    })
                    .count()
            })
            .sum()
    };
    let want = count(&all[0], Some("from_start"), Some("previous"));
    assert!(want > 0);
    assert_eq!(count(&some[0], None, None), want);
    assert!(count(&all[0], None, None) > want);
}

#[tokio::test]
async fn report_detail_in_sql_recomputes_the_report() {
    let engine = supportfunnel::open(&common::sample_options(), chrono_tz::UTC)
        .await
        .unwrap();
    let report = rows_of(
        &run_report(&engine, &period("2026-02-01", "2026-03-01"))
            .await
            .unwrap()
            .batch,
    );
    let want = |m: &str, seg: Option<&str>| {
        let r = report
            .iter()
            .find(|r| r.metric == m && r.segment.as_deref() == seg)
            .unwrap();
        (r.current, r.previous)
    };
    let sessions = common::rows(
        &engine.ctx,
        "SELECT period, count(*) FROM report_detail('sessions_total', '2026-02-01', '2026-03-01') \
         GROUP BY period ORDER BY period",
    )
    .await
    .join("\n");
    let (c, p) = want("sessions_total", None);
    assert_eq!(
        sessions,
        format!("current|{}\nprevious|{}", c.unwrap(), p.unwrap())
    );
    let rate = common::rows(
        &engine.ctx,
        "SELECT avg(CAST(in_numerator AS DOUBLE)) FROM report_detail('csat', '2026-02-01', \
         '2026-03-01', 'UTC', 'segment=after_self_serve', 'period=current')",
    )
    .await
    .join("\n");
    assert_eq!(
        rate.parse::<f64>().ok(),
        want("csat", Some("after_self_serve")).0
    );
    let err = engine
        .ctx
        .sql("SELECT * FROM report_detail('nope', '2026-02-01', '2026-03-01')")
        .await
        .map(|_| ());
    let message = match err {
        Err(e) => e.to_string(),
        Ok(()) => {
            let df = engine
                .ctx
                .sql("SELECT * FROM report_detail('nope', '2026-02-01', '2026-03-01')")
                .await
                .unwrap();
            df.collect().await.unwrap_err().to_string()
        }
    };
    assert!(message.contains("unknown metric `nope`"), "{message}");
}

#[test]
fn report_detail_on_the_command_line() {
    let o = common::run(&[
        "report",
        "--from",
        "2026-02-01",
        "--to",
        "2026-03-01",
        "--detail",
        "people_stopped",
        "--period",
        "current",
        "--format",
        "csv",
    ]);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let out = common::stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("section,metric,segment,period,entity,in_numerator"));
    assert!(lines[1..]
        .iter()
        .all(|l| l.starts_with("funnel,people_stopped,,current,person,true")));
    let report = common::run(&[
        "report",
        "--from",
        "2026-02-01",
        "--to",
        "2026-03-01",
        "--format",
        "csv",
    ]);
    let stopped = common::stdout(&report)
        .lines()
        .find(|l| l.starts_with("funnel,people_stopped,"))
        .map(|l| l.split(',').nth(5).unwrap().to_string())
        .unwrap();
    assert_eq!(stopped.parse::<f64>().unwrap(), (lines.len() - 1) as f64);

    let bad = common::run(&[
        "report",
        "--from",
        "2026-02-01",
        "--to",
        "2026-03-01",
        "--detail",
        "csat",
        "--segment",
        "stopped",
    ]);
    assert_eq!(bad.status.code(), Some(1), "{}", common::stderr(&bad));
    let e = common::stderr(&bad);
    assert!(e.contains("has no segment `stopped`"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
}

async fn generated(seed: u64, dir: &std::path::Path) -> Engine {
    let out = dir.join("d");
    generate(&GenOptions {
        out: out.clone(),
        users: 250,
        days: 24,
        seed,
        start: d("2026-02-24"),
        overwrite: false,
        progress: None,
    })
    .unwrap();
    build_context(
        &EngineOptions::new(
            out.join("events").to_string_lossy(),
            out.join("messages").to_string_lossy(),
        )
        .unwrap(),
    )
    .await
    .unwrap()
}

/// New York moves its clocks on 2026-03-08: a 23-hour day in the current
/// period, with and without a sender filter.
#[tokio::test]
async fn details_on_generated_data_across_a_dst_change() {
    let dir = tempfile::tempdir().unwrap();
    let engine = generated(7, dir.path()).await;
    for senders in [vec![], vec!["support_team".to_string()]] {
        let opts = ReportOptions {
            tz: Some(parse_tz("America/New_York").unwrap()),
            senders,
            ..period("2026-03-05", "2026-03-12")
        };
        details_match(&engine, &opts, "New York").await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, failure_persistence: None, ..ProptestConfig::default() })]

    /// Generated histories, random periods, zones and filters: every metric
    /// recomputed from its detail equals the report's.
    #[test]
    fn details_recompute_the_report_on_generated_data(
        seed in 0u64..10_000,
        start in 0i64..8,
        days in 1i64..8,
        zone in prop::sample::select(vec!["UTC", "America/New_York", "Europe/Paris", "Australia/Lord_Howe"]),
        tag in prop::option::of(prop::sample::select(vec!["outage", "billing", "nope"])),
    ) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let engine = generated(seed, dir.path()).await;
            let from = d("2026-03-04") + chrono::Duration::days(start);
            let opts = ReportOptions {
                from: Some(from),
                to: Some(from + chrono::Duration::days(days)),
                tz: Some(parse_tz(zone).unwrap()),
                tags: tag.map(|t| vec![t.to_string()]).unwrap_or_default(),
                ..ReportOptions::default()
            };
            details_match(&engine, &opts, &format!("seed {seed} {zone} {opts:?}")).await;
        });
    }
}
