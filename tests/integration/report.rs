//! The report end to end: the spec's worked example (§7), one test per rule
//! of §2–§6, invariants on generated data, and a snapshot of the JSON output
//! on the bundled sample.

use datafusion::arrow::array::Array;
use supportfunnel::datagen::{generate, GenOptions};
use supportfunnel::report::{rows_of, run_report, ReportOptions, Row};
use supportfunnel::settings::period::parse_tz;
use supportfunnel::{build_context, Engine, EngineOptions};

use super::common::{
    d, engine_with, ev, events_batch, msg, period, write_parquet, MsgRow, Row as Ev, Via,
};

/// The report each way ([`Via`]: the operators in memory and spilled, the
/// SQL views), which must agree row for row, number for number: every rule
/// below is checked each way.
async fn report(engine: &Engine, opts: &ReportOptions) -> Vec<Row> {
    let mut first: Option<Vec<Row>> = None;
    for via in Via::ALL {
        let got = rows_of(&run_report(&via.engine(engine), opts).await.unwrap().batch);
        match &first {
            None => first = Some(got),
            Some(want) => assert_eq!(&got, want, "{via:?} disagrees with the operators"),
        }
    }
    first.unwrap()
}

async fn report_for(events: &[Ev], messages: &[MsgRow], opts: &ReportOptions) -> Vec<Row> {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), events, messages).await;
    report(&e, opts).await
}

/// (current, previous) of one metric.
fn get(
    rows: &[Row],
    section: &str,
    metric: &str,
    segment: Option<&str>,
) -> (Option<f64>, Option<f64>) {
    let r = rows
        .iter()
        .find(|r| r.section == section && r.metric == metric && r.segment.as_deref() == segment)
        .unwrap_or_else(|| panic!("no row {section}.{metric} {segment:?}"));
    (r.current, r.previous)
}

fn cur(rows: &[Row], section: &str, metric: &str) -> Option<f64> {
    get(rows, section, metric, None).0
}

fn one_msg() -> Vec<MsgRow> {
    vec![msg(
        "m1",
        "2026-03-02 09:00:00",
        "chat",
        "support_team",
        Some(vec!["outage"]),
    )]
}

#[tokio::test]
async fn worked_example_of_the_spec() {
    let events = vec![
        ev("e1", "u1", "2026-03-01 23:00:00", "help_center_visit"),
        ev("e2", "u1", "2026-03-02 10:00:00", "article_view"),
        ev("e3", "u1", "2026-03-02 23:30:00", "article_search"),
        ev("e4", "u1", "2026-03-02 23:40:00", "conversation_started").conv("c1"),
        ev("e5", "u1", "2026-03-02 23:41:00", "teammate_reply")
            .conv("c1")
            .actor("teammate"),
        ev("e6", "u1", "2026-03-04 09:00:00", "conversation_closed")
            .conv("c1")
            .actor("teammate"),
    ];
    let r = report_for(&events, &one_msg(), &period("2026-03-02", "2026-03-03")).await;
    assert_eq!(
        get(&r, "sessions", "sessions_total", None),
        (Some(1.0), Some(1.0))
    );
    assert_eq!(
        cur(&r, "funnel", "people_human_after_self_serve"),
        Some(1.0)
    );
    assert_eq!(
        get(&r, "human", "conversations", Some("after_self_serve")).0,
        Some(1.0)
    );
    assert_eq!(
        get(
            &r,
            "human",
            "median_first_response_s",
            Some("after_self_serve")
        )
        .0,
        Some(60.0)
    );
    assert_eq!(
        get(
            &r,
            "human",
            "median_time_to_close_s",
            Some("after_self_serve")
        )
        .0,
        Some(120_000.0)
    );
    // Session A is self_serve_resolved and counts in the previous period.
    assert_eq!(
        get(&r, "sessions", "sessions_self_serve_resolved", None),
        (Some(0.0), Some(1.0))
    );
    assert_eq!(
        get(&r, "funnel", "people_resolved_self_serve", None),
        (Some(0.0), Some(1.0))
    );
    // Shape: the spec's order and every row present.
    let order: Vec<&str> = r.iter().map(|x| x.section).collect();
    let mut dedup = order.clone();
    dedup.dedup();
    assert_eq!(
        dedup,
        vec![
            "funnel",
            "sessions",
            "proactive",
            "self_serve",
            "human",
            "data_quality"
        ]
    );
    assert_eq!(r.len(), 7 + 6 + 7 + 8 + 12 + 2 + 7 + 3);
}

#[tokio::test]
async fn action_exactly_at_end_and_session_before_the_period() {
    let events = vec![
        // u1: session starts before the period; its actions inside the
        // period do not start a new one; the action at start + 24h does.
        ev("a1", "u1", "2026-03-01 12:00:00", "help_center_visit"),
        ev("a2", "u1", "2026-03-02 11:59:59", "article_view"),
        ev("a3", "u1", "2026-03-02 12:00:00", "article_search"),
    ];
    let r = report_for(&events, &one_msg(), &period("2026-03-02", "2026-03-03")).await;
    assert_eq!(
        get(&r, "sessions", "sessions_total", None),
        (Some(1.0), Some(1.0))
    );
    assert_eq!(
        get(&r, "sessions", "sessions_stopped", None),
        (Some(1.0), Some(0.0))
    );
    assert_eq!(
        get(&r, "sessions", "sessions_self_serve_resolved", None),
        (Some(0.0), Some(1.0))
    );
    // a2 belongs to the previous period's session
    assert_eq!(
        get(&r, "self_serve", "article_views", None),
        (Some(0.0), Some(1.0))
    );
}

#[tokio::test]
async fn duplicates_within_and_across_files_rejects_and_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let day1 = vec![
        ev("e1", "u1", "2026-03-02 10:00:00", "article_view"),
        ev("e1", "u1", "2026-03-02 10:00:00", "article_view"),
        ev("e2", "u1", "2026-03-02 10:05:00", "article_view"),
        ev("r1", "u1", "2026-03-02 10:00:00", "article_view").rating(7),
        ev("o1", "u1", "2026-03-02 10:00:00", "teammate_reply").conv("ghost"),
        ev("s1", "u1", "2026-03-02 10:00:00", "article_view").channel("content_showcase"),
    ];
    let day2 = vec![
        ev("e2", "u1", "2026-03-02 10:05:00", "article_view"),
        ev("e2", "u1", "2026-03-02 10:04:00", "page_view"),
    ];
    write_parquet(
        &dir.path().join("events/date=2026-03-02/p.parquet"),
        &events_batch(&day1),
    );
    write_parquet(
        &dir.path().join("events/date=2026-03-03/p.parquet"),
        &events_batch(&day2),
    );
    let mut msgs = one_msg();
    msgs.push(msgs[0].clone());
    let mut no_id = msgs[0].clone();
    no_id.message_id = None;
    msgs.push(no_id.clone());
    msgs.push(no_id);
    write_parquet(
        &dir.path().join("messages/m.parquet"),
        &super::common::messages_batch(&msgs),
    );
    let e = build_context(
        &EngineOptions::new(
            dir.path().join("events").to_string_lossy(),
            dir.path().join("messages").to_string_lossy(),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let r = report(&e, &period("2026-03-02", "2026-03-03")).await;
    assert_eq!(cur(&r, "self_serve", "article_views"), Some(2.0));
    let dq = |m: &str, s: Option<&str>| get(&r, "data_quality", m, s).0;
    assert_eq!(dq("rows_read", Some("events")), Some(8.0));
    assert_eq!(dq("rows_read", Some("messages")), Some(4.0));
    assert_eq!(dq("duplicate_events", None), Some(2.0));
    assert_eq!(
        dq("duplicate_messages", None),
        Some(1.0),
        "NULL ids are never duplicates"
    );
    assert_eq!(dq("orphan_lifecycle_events", None), Some(1.0));
    assert_eq!(dq("rows_rejected", Some("invalid_rating")), Some(1.0));
    assert_eq!(
        dq("rows_rejected", Some("unknown_event_type")),
        Some(1.0),
        "an invalid copy is a reject"
    );
    assert_eq!(
        dq("rows_rejected", Some("null_ts")),
        Some(0.0),
        "every reason is present"
    );
    assert_eq!(cur(&r, "proactive", "messages_delivered"), Some(3.0));
    let dq_row = r.iter().find(|x| x.section == "data_quality").unwrap();
    assert_eq!(dq_row.previous, None);
}

#[tokio::test]
async fn each_reject_reason_is_counted_once_in_order() {
    let mut rows = vec![];
    let mut a = ev("x", "u1", "2026-03-02 10:00:00", "article_view");
    a.event_id = None;
    a.user_id = None; // two problems: counted as null_event_id only
    rows.push(a);
    let mut b = ev("b", "u1", "2026-03-02 10:00:00", "article_view");
    b.user_id = None;
    rows.push(b);
    let mut c = ev("c", "u1", "2026-03-02 10:00:00", "article_view");
    c.ts = None;
    rows.push(c);
    let mut dd = ev("d", "u1", "2026-03-02 10:00:00", "article_view");
    dd.event_type = None;
    rows.push(dd);
    rows.push(ev("e", "u1", "2026-03-02 10:00:00", "Article_View"));
    rows.push(ev("f", "u1", "2026-03-02 10:00:00", "conversation_closed"));
    rows.push(
        ev("g", "u1", "2026-03-02 10:00:00", "conversation_rated")
            .conv("c")
            .rating(0),
    );
    let r = report_for(&rows, &one_msg(), &period("2026-03-02", "2026-03-03")).await;
    let reasons: Vec<(String, Option<f64>)> = r
        .iter()
        .filter(|x| x.metric == "rows_rejected")
        .map(|x| (x.segment.clone().unwrap(), x.current))
        .collect();
    let want: Vec<(String, Option<f64>)> = [
        "null_event_id",
        "null_user_id",
        "null_ts",
        "null_event_type",
        "unknown_event_type",
        "missing_conversation_id",
        "invalid_rating",
    ]
    .iter()
    .map(|s| (s.to_string(), Some(1.0)))
    .collect();
    assert_eq!(reasons, want);
    assert_eq!(cur(&r, "sessions", "sessions_total"), Some(0.0));
}

#[tokio::test]
async fn automated_human_and_bot_before_reply() {
    let events = vec![
        // u1: automated conversation → self-serve resolved
        ev("a1", "u1", "2026-03-02 10:00:00", "conversation_started").conv("c1"),
        ev("a2", "u1", "2026-03-02 10:00:10", "bot_answer")
            .conv("c1")
            .actor("bot"),
        ev("a3", "u1", "2026-03-02 10:05:00", "conversation_closed")
            .conv("c1")
            .actor("bot"),
        // u2: bot answer, then a teammate: human, after self-serve
        ev("b1", "u2", "2026-03-02 10:00:00", "conversation_started").conv("c2"),
        ev("b2", "u2", "2026-03-02 10:00:10", "bot_answer")
            .conv("c2")
            .actor("bot"),
        ev("b3", "u2", "2026-03-02 10:10:00", "teammate_reply")
            .conv("c2")
            .actor("teammate"),
        ev("b4", "u2", "2026-03-02 11:00:00", "conversation_closed")
            .conv("c2")
            .actor("teammate"),
        // u3: straight to a teammate, rated 3
        ev("c1", "u3", "2026-03-02 10:00:00", "conversation_started").conv("c3"),
        ev("c2", "u3", "2026-03-02 10:02:00", "teammate_reply").conv("c3"),
        ev("c3", "u3", "2026-03-02 12:00:00", "conversation_rated")
            .conv("c3")
            .rating(3),
    ];
    let r = report_for(&events, &one_msg(), &period("2026-03-02", "2026-03-03")).await;
    assert_eq!(
        cur(&r, "sessions", "sessions_self_serve_resolved"),
        Some(1.0)
    );
    assert_eq!(
        cur(&r, "sessions", "sessions_human_after_self_serve"),
        Some(1.0)
    );
    assert_eq!(cur(&r, "sessions", "sessions_human_from_start"), Some(1.0));
    assert_eq!(cur(&r, "self_serve", "automated_resolutions"), Some(1.0));
    assert_eq!(cur(&r, "self_serve", "sessions_with_bot_answer"), Some(2.0));
    assert_eq!(
        cur(&r, "self_serve", "sessions_automated_resolved"),
        Some(1.0)
    );
    assert_eq!(
        cur(&r, "self_serve", "automated_resolution_rate"),
        Some(0.5)
    );
    assert_eq!(
        cur(&r, "self_serve", "self_serve_resolution_rate"),
        Some(1.0 / 3.0)
    );
    assert_eq!(cur(&r, "funnel", "people_tried_self_serve"), Some(2.0));
    let h = |m: &str, s: &str| get(&r, "human", m, Some(s)).0;
    assert_eq!(h("conversations", "from_start"), Some(1.0));
    assert_eq!(h("rated_conversations", "from_start"), Some(1.0));
    assert_eq!(h("avg_rating", "from_start"), Some(3.0));
    assert_eq!(h("csat", "from_start"), Some(0.0));
    assert_eq!(
        h("median_time_to_close_s", "from_start"),
        None,
        "never closed"
    );
    assert_eq!(
        h("median_first_response_s", "after_self_serve"),
        Some(600.0)
    );
    assert_eq!(h("csat", "after_self_serve"), None, "no rated conversation");
}

#[tokio::test]
async fn stopped_and_served_person_is_not_stopped() {
    let events = vec![
        // u1: a stopped session, then (2 days later) a served one
        ev("a1", "u1", "2026-03-02 08:00:00", "help_center_visit"),
        ev("a2", "u1", "2026-03-04 08:00:00", "article_view"),
        // u2: only stopped sessions (searches are tries, but stopped wins)
        ev("b1", "u2", "2026-03-02 08:00:00", "article_search"),
        ev("b2", "u2", "2026-03-04 08:00:00", "help_center_visit"),
    ];
    let r = report_for(&events, &one_msg(), &period("2026-03-02", "2026-03-09")).await;
    assert_eq!(cur(&r, "funnel", "people_seeking_support"), Some(2.0));
    assert_eq!(cur(&r, "funnel", "people_stopped"), Some(1.0));
    assert_eq!(cur(&r, "funnel", "people_resolved_self_serve"), Some(1.0));
    assert_eq!(
        cur(&r, "funnel", "people_tried_self_serve"),
        Some(1.0),
        "u2 is stopped only"
    );
    assert_eq!(cur(&r, "sessions", "sessions_stopped"), Some(3.0));
}

#[tokio::test]
async fn even_count_medians_are_exact_means_of_the_middle_pair() {
    let events = vec![
        ev("a1", "u1", "2026-03-02 10:00:00", "conversation_started").conv("c1"),
        ev("a2", "u1", "2026-03-02 10:00:10.5", "teammate_reply").conv("c1"),
        ev("b1", "u2", "2026-03-02 10:00:00", "conversation_started").conv("c2"),
        ev("b2", "u2", "2026-03-02 10:00:21.000001", "teammate_reply").conv("c2"),
    ];
    let r = report_for(&events, &one_msg(), &period("2026-03-02", "2026-03-03")).await;
    let m = get(&r, "human", "median_first_response_s", Some("from_start"))
        .0
        .unwrap();
    assert!((m - 15.7500005).abs() < 1e-9, "{m}");
}

#[tokio::test]
async fn period_across_a_dst_change_in_new_york() {
    // 2026-03-08 is 23 hours long in New York: [05:00Z, 04:00Z next day).
    let events = vec![
        ev("a1", "u1", "2026-03-08 04:59:59", "article_view"), // 03-07 local: previous period
        ev("a2", "u2", "2026-03-08 05:00:00", "article_view"), // first instant of 03-08
        ev("a3", "u3", "2026-03-09 03:59:59", "article_view"), // last instant of 03-08
        ev("a4", "u4", "2026-03-09 04:00:00", "article_view"), // 03-09 local: outside
    ];
    let mut opts = period("2026-03-08", "2026-03-09");
    opts.tz = Some(parse_tz("America/New_York").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), &events, &one_msg()).await;
    let rep = run_report(&e, &opts).await.unwrap();
    let r = rows_of(&rep.batch);
    assert_eq!(
        get(&r, "sessions", "sessions_total", None),
        (Some(2.0), Some(1.0))
    );
    assert_eq!(
        rep.periods.current.start.to_rfc3339(),
        "2026-03-08T05:00:00+00:00"
    );
    assert_eq!(
        rep.periods.current.end.to_rfc3339(),
        "2026-03-09T04:00:00+00:00"
    );
    assert_eq!(
        rep.periods.previous.start.to_rfc3339(),
        "2026-03-07T05:00:00+00:00"
    );
}

#[tokio::test]
async fn proactive_filters_each_kind_and_combined() {
    let mut opened = msg(
        "m1",
        "2026-03-02 09:00:00",
        "chat",
        "support_team",
        Some(vec!["outage", "billing"]),
    );
    opened.opened_at = Some("2026-03-02 09:05:00");
    opened.clicked_at = Some("2026-03-02 09:06:00");
    let messages = vec![
        opened,
        msg(
            "m2",
            "2026-03-02 10:00:00",
            "email",
            "support_team",
            Some(vec!["maintenance"]),
        ),
        msg(
            "m3",
            "2026-03-02 11:00:00",
            "chat",
            "marketing_team",
            Some(vec![]),
        ),
        msg("m4", "2026-03-02 12:00:00", "post", "tm_1", None),
        msg(
            "m5",
            "2026-03-01 12:00:00",
            "chat",
            "support_team",
            Some(vec!["outage"]),
        ),
        {
            let mut m = msg(
                "m6",
                "2026-03-02 12:00:00",
                "chat",
                "support_team",
                Some(vec!["outage"]),
            );
            m.sent_at = None;
            m
        },
        msg(
            "m7",
            "2026-03-02 13:00:00",
            "Chat",
            "support_team",
            Some(vec!["Outage"]),
        ),
    ];
    let events = vec![ev("a", "u1", "2026-03-02 10:00:00", "article_view")];
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), &events, &messages).await;
    let base = period("2026-03-02", "2026-03-03");
    let delivered = |r: &[Row]| get(r, "proactive", "messages_delivered", None);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    let r = report(&e, &base).await;
    assert_eq!(delivered(&r), (Some(5.0), Some(1.0)));
    assert_eq!(cur(&r, "funnel", "proactive_messages"), Some(5.0));
    assert_eq!(cur(&r, "proactive", "open_rate"), Some(0.2));

    let r = report(
        &e,
        &ReportOptions {
            tags: s(&["outage", "maintenance"]),
            ..base.clone()
        },
    )
    .await;
    assert_eq!(
        delivered(&r),
        (Some(2.0), Some(1.0)),
        "any of the tags, case-sensitive"
    );
    let r = report(
        &e,
        &ReportOptions {
            content_types: s(&["chat"]),
            ..base.clone()
        },
    )
    .await;
    assert_eq!(delivered(&r).0, Some(2.0));
    let r = report(
        &e,
        &ReportOptions {
            senders: s(&["support_team", "tm_1"]),
            ..base.clone()
        },
    )
    .await;
    assert_eq!(delivered(&r).0, Some(4.0));
    let r = report(
        &e,
        &ReportOptions {
            tags: s(&["outage"]),
            content_types: s(&["chat", "email"]),
            senders: s(&["support_team"]),
            ..base.clone()
        },
    )
    .await;
    assert_eq!(delivered(&r), (Some(1.0), Some(1.0)));
    assert_eq!(cur(&r, "funnel", "proactive_messages"), Some(1.0));
    assert_eq!(cur(&r, "proactive", "click_rate"), Some(1.0));
    // a value with quotes or SQL in it is a plain value
    let r = report(
        &e,
        &ReportOptions {
            tags: s(&["x' OR '1'='1", "outage'); DROP TABLE events; --"]),
            ..base.clone()
        },
    )
    .await;
    assert_eq!(delivered(&r).0, Some(0.0));
}

#[tokio::test]
async fn zero_denominators_give_null_rates_and_null_delta_pct() {
    let events = vec![ev("a", "u1", "2026-03-02 10:00:00", "help_center_visit")];
    let r = report_for(&events, &one_msg(), &period("2026-03-10", "2026-03-11")).await;
    for row in r.iter().filter(|x| x.section != "data_quality") {
        let rate = row.metric.ends_with("_rate")
            || row.metric == "csat"
            || row.metric.starts_with("median")
            || row.metric == "avg_rating";
        if rate {
            assert_eq!((row.current, row.previous), (None, None), "{}", row.metric);
        } else {
            assert_eq!(
                (row.current, row.previous),
                (Some(0.0), Some(0.0)),
                "{}",
                row.metric
            );
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), &events, &one_msg()).await;
    let b = run_report(&e, &period("2026-03-10", "2026-03-11"))
        .await
        .unwrap()
        .batch;
    let pct = b
        .column(8)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Float64Array>()
        .unwrap();
    assert_eq!(
        pct.null_count(),
        b.num_rows(),
        "previous is 0 or null everywhere"
    );
}

/// Conservation laws that follow from the spec, on generated data.
#[tokio::test]
async fn invariants_on_generated_data() {
    for seed in [3u64, 17, 29] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("d");
        generate(&GenOptions {
            out: out.clone(),
            users: 800,
            days: 20,
            seed,
            start: d("2026-02-01"),
            overwrite: false,
            progress: None,
        })
        .unwrap();
        let e = build_context(
            &EngineOptions::new(
                out.join("events").to_string_lossy(),
                out.join("messages").to_string_lossy(),
            )
            .unwrap(),
        )
        .await
        .unwrap();
        let r = report(&e, &period("2026-02-11", "2026-02-18")).await;
        for p in [0, 1] {
            let v = |s: &str, m: &str, seg: Option<&str>| {
                let x = get(&r, s, m, seg);
                if p == 0 {
                    x.0
                } else {
                    x.1
                }
            };
            let n = |s: &str, m: &str| v(s, m, None).unwrap();
            let total = n("sessions", "sessions_total");
            assert!(total > 0.0, "seed {seed}");
            assert_eq!(
                total,
                n("sessions", "sessions_self_serve_resolved")
                    + n("sessions", "sessions_human_after_self_serve")
                    + n("sessions", "sessions_human_from_start")
                    + n("sessions", "sessions_stopped")
            );
            assert_eq!(
                n("sessions", "sessions_human_supported"),
                n("sessions", "sessions_human_after_self_serve")
                    + n("sessions", "sessions_human_from_start")
            );
            let seeking = n("funnel", "people_seeking_support");
            for m in [
                "people_tried_self_serve",
                "people_resolved_self_serve",
                "people_human_after_self_serve",
                "people_human_from_start",
                "people_stopped",
            ] {
                assert!(n("funnel", m) <= seeking, "{m} > seeking, seed {seed}");
            }
            assert!(
                n("funnel", "people_stopped") + n("funnel", "people_tried_self_serve") <= seeking
            );
            assert!(
                n("funnel", "people_resolved_self_serve")
                    <= n("sessions", "sessions_self_serve_resolved")
            );
            assert_eq!(
                n("funnel", "proactive_messages"),
                n("proactive", "messages_delivered")
            );
            assert!(n("proactive", "messages_clicked") <= n("proactive", "messages_delivered"));
            assert!(n("self_serve", "article_views_resolved") <= n("self_serve", "article_views"));
            assert!(
                n("self_serve", "sessions_automated_resolved")
                    <= n("self_serve", "sessions_with_bot_answer")
            );
            assert!(
                n("self_serve", "sessions_automated_resolved")
                    <= n("self_serve", "automated_resolutions")
            );
            for seg in ["after_self_serve", "from_start"] {
                let c = v("human", "conversations", Some(seg)).unwrap();
                let sess = n("sessions", &format!("sessions_human_{seg}"));
                assert!(
                    c >= sess,
                    "every human session has at least one human conversation"
                );
                assert!(v("human", "rated_conversations", Some(seg)).unwrap() <= c);
            }
        }
    }
}

#[tokio::test]
async fn default_period_is_the_last_28_full_days() {
    let events = vec![
        ev("a", "u1", "2026-03-02 10:00:00", "help_center_visit"),
        ev("b", "u1", "2026-04-10 10:00:00", "help_center_visit"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), &events, &one_msg()).await;
    let rep = run_report(&e, &ReportOptions::default()).await.unwrap();
    assert_eq!(rep.periods.from, d("2026-03-13"));
    assert_eq!(rep.periods.to, d("2026-04-10"));

    // later rows that do not count (a reject, a showcase row far beyond the
    // nanosecond range) do not move the period, nor break it
    let mut later = events.clone();
    let mut reject = ev("c", "u1", "2026-04-20 10:00:00", "help_center_visit");
    reject.user_id = None;
    later.push(reject);
    later.push(ev("d", "u1", "2400-01-01 00:00:00", "article_view").channel("content_showcase"));
    let dir = tempfile::tempdir().unwrap();
    let e = engine_with(dir.path(), &later, &one_msg()).await;
    let rep = run_report(&e, &ReportOptions::default()).await.unwrap();
    assert_eq!(
        (rep.periods.from, rep.periods.to),
        (d("2026-03-13"), d("2026-04-10"))
    );
}

#[test]
fn json_snapshot_on_the_sample() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_supportfunnel"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["report", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = String::from_utf8(out.stdout).unwrap();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/report_sample.json");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
    }
    let want =
        std::fs::read_to_string(&path).expect("snapshot exists (UPDATE_SNAPSHOTS=1 writes it)");
    assert_eq!(
        got, want,
        "report JSON changed; review and rerun with UPDATE_SNAPSHOTS=1"
    );
}

#[tokio::test]
async fn memory_limited_report_keeps_intermediates_on_disk_and_agrees() {
    let sample = |limit: Option<usize>, temp: Option<std::path::PathBuf>| {
        let mut o = crate::common::sample_options();
        o.memory_limit = limit;
        o.temp_dir = temp;
        o
    };
    let opts = period("2026-02-01", "2026-03-01");
    let free = build_context(&sample(None, None)).await.unwrap();
    let expected = report(&free, &opts).await;
    let spill = tempfile::tempdir().unwrap();
    let limited = build_context(&sample(Some(256 << 20), Some(spill.path().to_path_buf())))
        .await
        .unwrap();
    // each way under the limit, intermediates on disk, agrees with the
    // unlimited report
    assert_eq!(report(&limited, &opts).await, expected);
    // the context is still usable: the views are back, not pointing at the
    // report's deleted files
    let count = |e: &Engine| {
        let ctx = e.ctx.clone();
        async move {
            let b = ctx
                .sql("SELECT count(*) FROM sessions")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            datafusion::arrow::util::pretty::pretty_format_batches(&b)
                .unwrap()
                .to_string()
        }
    };
    assert_eq!(count(&limited).await, count(&free).await);
    // the report's private directory is gone once it is done (DataFusion's
    // own spill directory lives as long as the engine)
    let left: Vec<String> = std::fs::read_dir(spill.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("supportfunnel-report-"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn a_failed_report_leaves_the_users_context_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let events = vec![
        ev("e1", "u1", "2026-03-02 10:00:00", "article_view"),
        ev("e2", "u2", "2026-03-02 11:00:00", "help_center_visit"),
    ];
    // messages as one named file, so that its loss fails the scan
    write_parquet(
        &dir.path().join("events").join("e.parquet"),
        &events_batch(&events),
    );
    let messages = dir.path().join("messages.parquet");
    write_parquet(&messages, &super::common::messages_batch(&one_msg()));
    let e = build_context(
        &EngineOptions::new(
            dir.path().join("events").to_string_lossy(),
            messages.to_string_lossy(),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let tables = |e: &Engine| {
        let mut t = e
            .ctx
            .catalog("datafusion")
            .unwrap()
            .schema("public")
            .unwrap()
            .table_names();
        t.sort();
        t
    };
    let before = tables(&e);
    let sessions = "SELECT user_id, status FROM sessions ORDER BY user_id";
    let want = super::common::rows(&e.ctx, sessions).await;
    // The messages file is corrupted after registration (same size, pages
    // overwritten): both paths fail part way, after the events steps, when
    // they read it.
    let mut bytes = std::fs::read(&messages).unwrap();
    let n = bytes.len();
    bytes[4..n / 2].fill(0xAB);
    std::fs::write(&messages, &bytes).unwrap();
    for via in Via::ALL {
        let opts = period("2026-03-02", "2026-03-03");
        let r = run_report(&via.engine(&e), &opts).await;
        assert!(r.is_err(), "{via:?}: {:?}", r.map(|r| rows_of(&r.batch)));
        assert_eq!(tables(&e), before, "{via:?}");
        assert_eq!(super::common::rows(&e.ctx, sessions).await, want, "{via:?}");
    }
}

#[tokio::test]
async fn kept_sessions_are_the_same_every_way() {
    let e = build_context(&crate::common::sample_options())
        .await
        .unwrap();
    let kept = |via: Via| {
        let e = via.engine(&e);
        async move {
            let opts = ReportOptions {
                keep_sessions: true,
                ..period("2026-02-01", "2026-02-08")
            };
            let (schema, batches) = run_report(&e, &opts).await.unwrap().sessions.unwrap();
            let mut rows = super::common::render(&batches);
            rows.sort();
            (
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect::<Vec<_>>(),
                rows,
            )
        }
    };
    let native = kept(Via::Operators).await;
    assert!(native.1.len() > 50);
    assert_eq!(native, kept(Via::Spilled).await);
    assert_eq!(native, kept(Via::Views).await);
}

#[tokio::test]
async fn every_timestamp_unit_gives_the_same_report_every_way() {
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::arrow::record_batch::RecordBatch;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    generate(&GenOptions {
        out: src.clone(),
        users: 300,
        days: 20,
        seed: 5,
        start: d("2026-02-01"),
        overwrite: false,
        progress: None,
    })
    .unwrap();
    // All events in one batch, then rewritten with `ts` in each unit.
    let probe = build_context(
        &EngineOptions::new(
            src.join("events").to_string_lossy(),
            src.join("messages").to_string_lossy(),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let batches = probe
        .ctx
        .sql("SELECT event_id, user_id, ts, event_type, channel, article_id, conversation_id, actor, rating FROM events")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let opts = period("2026-02-10", "2026-02-17");
    let mut reports = Vec::new();
    for unit in [
        TimeUnit::Second,
        TimeUnit::Millisecond,
        TimeUnit::Microsecond,
        TimeUnit::Nanosecond,
    ] {
        let out = dir.path().join(format!("{unit:?}"));
        for (i, b) in batches.iter().enumerate() {
            let ts_type = DataType::Timestamp(unit, Some("UTC".into()));
            let ts = cast(b.column(2), &ts_type).unwrap();
            let mut fields: Vec<Field> = b
                .schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields[2] = Field::new("ts", ts_type, true);
            let mut cols = b.columns().to_vec();
            cols[2] = ts;
            let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
            write_parquet(
                &out.join("events").join(format!("part-{i}.parquet")),
                &batch,
            );
        }
        let e = build_context(
            &EngineOptions::new(
                out.join("events").to_string_lossy(),
                src.join("messages").to_string_lossy(),
            )
            .unwrap(),
        )
        .await
        .unwrap();
        // `report` asserts that the native and the SQL path agree.
        reports.push((unit, report(&e, &opts).await));
    }
    // µs and ns hold the same instants: the same report.
    assert_eq!(reports[2].1, reports[3].1);
    assert!(cur(&reports[2].1, "sessions", "sessions_total").unwrap() > 10.0);
}
