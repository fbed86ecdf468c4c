//! The operators ([`supportfunnel::tables::native`]) against the SQL views that
//! define the report: on generated data plus a file of every corner of the
//! spec (repeats that differ, ties broken by event_id, orphans, showcase
//! rows, rejects), over seeds, sizes, batch sizes, partitions, spilled or
//! not, and event-id hash widths (4 bits forces nearly every row through
//! the collision path), every relation must be identical, whole and under
//! the projections and filters that reach the operator.

use std::path::Path;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionContext;
use proptest::prelude::*;
use supportfunnel::datagen::{generate, GenOptions};
use supportfunnel::tables::native::node::NativeCache;
use supportfunnel::tables::native::NativeOptions;
use supportfunnel::{build_context, EngineOptions};

use super::common::{ev, events_batch, rows, write_one_message, write_parquet, Row};

/// Rows that exercise every rule the slim form cannot see by itself.
fn corners() -> Vec<Row> {
    let s = |id, user, ts, ty| ev(id, user, ts, ty);
    vec![
        // repeats: identical; earlier copy wins; same ts, user_id decides;
        // an invalid copy is a reject, not a repeat
        s("x1", "cu1", "2026-02-02 10:00:00", "article_view"),
        s("x1", "cu1", "2026-02-02 10:00:00", "article_view"),
        s("x2", "cu1", "2026-02-02 12:00:00", "article_search"),
        s("x2", "cu2", "2026-02-02 11:00:00", "help_center_visit"),
        s("x3", "cu3", "2026-02-02 11:00:00", "article_view"),
        s("x3", "cu2", "2026-02-02 11:00:00", "article_search"),
        Row {
            user_id: None,
            ..s("x3", "cu2", "2026-02-02 09:00:00", "article_search")
        },
        // a repeated start whose copies name different conversations
        s("x4", "cu4", "2026-02-03 08:00:00", "conversation_started").conv("cc4b"),
        s("x4", "cu4", "2026-02-03 08:00:01", "conversation_started").conv("cc4a"),
        // two starts of one conversation at one ts by different users: the
        // smaller event_id ("s10" < "s9") decides the user and the session
        s("s9", "cu5", "2026-02-04 09:00:00", "conversation_started").conv("cc5"),
        s("s10", "cu6", "2026-02-04 09:00:00", "conversation_started").conv("cc5"),
        s("r1", "cu6", "2026-02-04 09:05:00", "teammate_reply").conv("cc5"),
        // latest closes at one ts, bot vs teammate: greatest event_id wins
        s("k9", "cu7", "2026-02-05 09:00:00", "conversation_started").conv("cc7"),
        s("k8", "cu7", "2026-02-05 09:01:00", "bot_answer").conv("cc7"),
        s("k10", "cu7", "2026-02-05 10:00:00", "conversation_closed")
            .conv("cc7")
            .actor("bot"),
        s("k9x", "cu7", "2026-02-05 10:00:00", "conversation_closed")
            .conv("cc7")
            .actor("teammate"),
        // latest ratings at one ts disagree; a NULL rating can be the latest
        s("q1", "cu8", "2026-02-06 09:00:00", "conversation_started").conv("cc8"),
        s("q2", "cu8", "2026-02-06 10:00:00", "conversation_rated")
            .conv("cc8")
            .rating(5),
        s("q3", "cu8", "2026-02-06 10:00:00", "conversation_rated")
            .conv("cc8")
            .rating(2),
        s("q4", "cu8", "2026-02-06 11:00:00", "conversation_started").conv("cc9"),
        s("q5", "cu8", "2026-02-06 12:00:00", "conversation_rated")
            .conv("cc9")
            .rating(4),
        s("q6", "cu8", "2026-02-06 13:00:00", "conversation_rated").conv("cc9"),
        // H ties on started_at: conversation_id bytes decide
        s("h1", "cu9", "2026-02-07 09:00:00", "article_view"),
        s("h2", "cu9", "2026-02-07 10:00:00", "conversation_started").conv("hb"),
        s("h3", "cu9", "2026-02-07 10:00:00", "conversation_started").conv("hA"),
        s("h4", "cu9", "2026-02-07 10:30:00", "teammate_reply").conv("hA"),
        s("h5", "cu9", "2026-02-07 09:30:00", "bot_answer").conv("hb"),
        // a session boundary exactly 24 h later; equal-ts actions
        s("b1", "cu10", "2026-02-08 00:00:00", "help_center_visit"),
        s("b2", "cu10", "2026-02-09 00:00:00", "article_view"),
        s("b3", "cu10", "2026-02-09 00:00:00", "article_search"),
        // orphans, showcase rows, lifecycle under another user
        s("o1", "cu11", "2026-02-10 09:00:00", "bot_answer").conv("nobody"),
        s("o2", "cu11", "2026-02-10 09:00:00", "article_view").channel("content_showcase"),
        s("o3", "cu12", "2026-02-10 09:00:00", "conversation_started").conv("cc12"),
        s("o4", "someone", "2026-02-10 09:10:00", "teammate_reply").conv("cc12"),
        // rejects of every reason
        Row {
            event_id: None,
            ..s("z", "cu13", "2026-02-11 09:00:00", "article_view")
        },
        Row {
            ts: None,
            ..s("z1", "cu13", "2026-02-11 09:00:00", "article_view")
        },
        Row {
            event_type: None,
            ..s("z2", "cu13", "2026-02-11 09:00:00", "article_view")
        },
        s("z3", "cu13", "2026-02-11 09:00:00", "page_view"),
        s("z4", "cu13", "2026-02-11 09:00:00", "bot_answer"),
        s("z5", "cu13", "2026-02-11 09:00:00", "article_view").rating(9),
    ]
}

/// How the operators run in a comparison.
#[derive(Debug, Clone, Copy)]
struct Run {
    bits: u32,
    batch_size: usize,
    partitions: usize,
    spill: bool,
}

/// A context over `dir` whose views are the SQL reference definitions.
async fn reference(dir: &Path, batch_size: usize) -> SessionContext {
    let mut o = EngineOptions::new(
        dir.join("events").to_string_lossy(),
        dir.join("messages").to_string_lossy(),
    )
    .unwrap();
    o.batch_size = Some(batch_size);
    o.sql_views = true;
    build_context(&o).await.unwrap().ctx
}

/// A context over `dir` whose views are the operators, run as `run` says.
async fn operators(dir: &Path, run: Run) -> SessionContext {
    let mut o = EngineOptions::new(
        dir.join("events").to_string_lossy(),
        dir.join("messages").to_string_lossy(),
    )
    .unwrap();
    o.batch_size = Some(run.batch_size);
    o.target_partitions = Some(run.partitions);
    let ctx = build_context(&o).await.unwrap().ctx;
    let config = ctx
        .copied_config()
        .with_create_default_catalog_and_schema(false)
        .with_extension(Arc::new(NativeOptions {
            id_hash_bits: run.bits,
            always_spill: run.spill,
            ..NativeOptions::default()
        }));
    let state = SessionStateBuilder::new_from_existing(ctx.state())
        .with_config(config)
        .build();
    SessionContext::new_with_state(state)
}

/// The operators' cache of `ctx`'s sessions.
fn cache_of(ctx: &SessionContext) -> Arc<NativeCache> {
    ctx.state()
        .config()
        .get_extension::<NativeCache>()
        .expect("the operators are installed")
}

/// The operators' last build in `ctx`.
async fn last_build(ctx: &SessionContext) -> Arc<supportfunnel::tables::native::Built> {
    cache_of(ctx).last().await.expect("a build ran")
}

/// Every relation of the operators equals its SQL view.
async fn compare(dir: &Path, run: Run) {
    let want_ctx = reference(dir, run.batch_size).await;
    let got_ctx = operators(dir, run).await;
    let queries = [
        "SELECT * FROM sessions ORDER BY user_id, session_start".to_string(),
        "SELECT * FROM conversations ORDER BY conversation_id".to_string(),
        "SELECT * FROM session_conversations ORDER BY conversation_id".to_string(),
        "SELECT * FROM event_counts".to_string(),
        // projections and filters that reach the operator
        "SELECT status, count(*), sum(actions) FROM sessions GROUP BY 1 ORDER BY 1".to_string(),
        "SELECT user_id, session_start FROM sessions \
         WHERE session_start >= TIMESTAMP '2026-02-03 00:00:00' \
         AND session_start < TIMESTAMP '2026-02-06 00:00:00' ORDER BY 1, 2"
            .to_string(),
        "SELECT count(*), sum(bot_answers) FROM conversations WHERE automated".to_string(),
        // conversations without their session's start (made without the
        // sessions), as a state's fold reads them
        "SELECT conversation_id, user_id, started_at, first_reply_at, closed_at, closed_by, \
         rating, first_bot_answer_at, bot_answers, teammate_replies, closes, automated \
         FROM conversations ORDER BY conversation_id"
            .to_string(),
        "SELECT conversation_id FROM conversations \
         WHERE started_at < TIMESTAMP '2026-02-05 00:00:00' ORDER BY 1"
            .to_string(),
    ];
    for q in &queries {
        let want = rows(&want_ctx, q).await;
        let got = rows(&got_ctx, q).await;
        assert_eq!(got, want, "{q} differs ({run:?})");
    }
    let built = last_build(&got_ctx).await;
    assert!(built.profile.tied >= 3, "the corner ties were seen");
    if run.bits < 16 {
        assert!(built.profile.candidates > 0, "narrow hashes collide");
    }
    if run.spill {
        assert!(built.profile.spilled.0 > 0, "segments were spilled");
    }
    let plan = rows(&got_ctx, "EXPLAIN SELECT count(*) FROM sessions").await;
    assert!(
        plan.iter().any(|l| l.contains("NativeRelation")),
        "the plan shows the operator: {plan:?}"
    );
}

fn build(dir: &Path, seed: u64, users: u64, days: u32) {
    generate(&GenOptions {
        out: dir.to_path_buf(),
        users,
        days,
        seed,
        start: NaiveDate::from_ymd_opt(2026, 2, 1).unwrap(),
        overwrite: false,
        progress: None,
    })
    .unwrap();
    write_parquet(
        &dir.join("events")
            .join("date=2026-02-02")
            .join("corners.parquet"),
        &events_batch(&corners()),
    );
    // tiny histories may have no deliveries at all
    if !dir.join("messages").exists() {
        write_one_message(
            &dir.join("messages")
                .join("date=2026-02-02")
                .join("m.parquet"),
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn operators_equal_the_sql_views(
        seed in 0u64..10_000,
        users in 5u64..120,
        days in 2u32..12,
        batch_size in prop::sample::select(vec![3usize, 64, 8192]),
        bits in prop::sample::select(vec![4u32, 64]),
        partitions in prop::sample::select(vec![1usize, 2, 8]),
        spill in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("d");
        build(&out, seed, users, days);
        let run = Run { bits, batch_size, partitions, spill };
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(compare(&out, run));
    }
}

#[tokio::test]
async fn collisions_on_every_row_still_give_exact_results() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d");
    build(&out, 7, 60, 6);
    // one bit: every valid row is a candidate and is deduplicated by string
    for (partitions, spill) in [(1, false), (3, true)] {
        let run = Run {
            bits: 1,
            batch_size: 8192,
            partitions,
            spill,
        };
        compare(&out, run).await;
    }
}

#[tokio::test]
async fn a_build_serves_every_relation_until_the_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d");
    build(&out, 11, 40, 5);
    let run = Run {
        bits: 64,
        batch_size: 8192,
        partitions: 2,
        spill: false,
    };
    let ctx = operators(&out, run).await;
    let builds = || cache_of(&ctx).builds();
    let q = "SELECT status, count(*), sum(actions) FROM sessions GROUP BY 1 ORDER BY 1";
    supportfunnel::engine::context::refresh(&ctx).await.unwrap();
    let first = rows(&ctx, q).await;
    rows(&ctx, "SELECT count(*) FROM conversations").await;
    rows(&ctx, "SELECT * FROM event_counts").await;
    assert_eq!(builds(), 1, "one build served every relation");
    // a new file: built again, and the new rows are there
    let extra = vec![ev(
        "new1",
        "newcomer",
        "2026-02-03 10:00:00",
        "article_view",
    )];
    write_parquet(
        &out.join("events")
            .join("date=2026-02-03")
            .join("late.parquet"),
        &events_batch(&extra),
    );
    // as the prompt and `serve` do before each statement
    supportfunnel::engine::context::refresh(&ctx).await.unwrap();
    let got = rows(&ctx, q).await;
    assert_eq!(builds(), 2);
    assert_ne!(got, first, "the new file counts");
    assert_eq!(got, rows(&reference(&out, 8192).await, q).await);
}

/// The operators' own scan reads the strings of `events` as views (nothing
/// copied out of the Parquet pages), the partition column still after the
/// files' columns; the registered table, which every other query reads,
/// stays Utf8.
#[tokio::test]
async fn the_operators_scan_reads_strings_as_views() {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::physical_plan::ExecutionPlan;
    use supportfunnel::tables::native::node::NativeExec;
    fn native(p: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
        if (p.as_ref() as &dyn std::any::Any)
            .downcast_ref::<NativeExec>()
            .is_some()
        {
            return Some(Arc::clone(p));
        }
        p.children().into_iter().find_map(native)
    }
    let e = build_context(&crate::common::sample_options())
        .await
        .unwrap();
    let plan = e
        .ctx
        .sql("SELECT status, count(*) FROM sessions GROUP BY 1")
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let operator = native(&plan).expect("the operators are planned");
    let scan = operator.children()[0].schema();
    for c in [
        "event_id",
        "user_id",
        "event_type",
        "channel",
        "conversation_id",
        "actor",
    ] {
        assert_eq!(
            scan.field_with_name(c).unwrap().data_type(),
            &DataType::Utf8View,
            "{c}"
        );
    }
    let events = e.ctx.table_provider("events").await.unwrap().schema();
    assert_eq!(
        events.field_with_name("user_id").unwrap().data_type(),
        &DataType::Utf8
    );
    let ts = |s: &datafusion::arrow::datatypes::Schema| s.field_with_name("ts").unwrap().clone();
    assert_eq!(ts(&scan), ts(&events));
    // The operators' `events`, for their second reads: views too, the
    // partition column after the files' columns, as in the table.
    let viewed = (operator.as_ref() as &dyn std::any::Any)
        .downcast_ref::<NativeExec>()
        .unwrap()
        .events()
        .schema();
    let names = |s: &datafusion::arrow::datatypes::Schema| {
        s.fields()
            .iter()
            .map(|f| f.name().clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&viewed), names(&events));
    assert_eq!(
        viewed.field_with_name("event_id").unwrap().data_type(),
        &DataType::Utf8View
    );
    assert_eq!(
        viewed.field_with_name("date").unwrap().data_type(),
        &DataType::Utf8
    );
    // Every relation as the SQL views have it.
    let mut o = crate::common::sample_options();
    o.sql_views = true;
    let reference = build_context(&o).await.unwrap();
    for q in [
        "SELECT * FROM sessions ORDER BY user_id, session_start",
        "SELECT * FROM conversations ORDER BY conversation_id",
        "SELECT * FROM session_conversations ORDER BY conversation_id",
        "SELECT * FROM event_counts",
    ] {
        let got = rows(&e.ctx, q).await;
        assert!(!got.is_empty(), "{q}");
        assert_eq!(got, rows(&reference.ctx, q).await, "{q}");
    }
}

/// A one-off report (the `report` command) lets go of the build once its
/// tables are made, as a report under a memory limit does; a report in a
/// process that may query the files again keeps it. The numbers are the
/// same either way.
#[tokio::test]
async fn a_one_off_report_lets_go_of_the_build() {
    use supportfunnel::report::{rows_of, run_report};
    let opts = crate::common::period("2026-02-01", "2026-03-01");
    let held = |e: &supportfunnel::Engine| {
        let cache = cache_of(&e.ctx);
        async move { (cache.last().await.is_some(), cache.builds()) }
    };
    let kept = build_context(&crate::common::sample_options())
        .await
        .unwrap();
    let a = rows_of(&run_report(&kept, &opts).await.unwrap().batch);
    assert_eq!(held(&kept).await, (true, 1), "kept for later queries");

    let once = build_context(&crate::common::sample_options())
        .await
        .unwrap();
    supportfunnel::tables::native::node::single_use(&once.ctx);
    let b = rows_of(&run_report(&once, &opts).await.unwrap().batch);
    assert_eq!(held(&once).await, (false, 1), "let go after the report");
    assert_eq!(a, b);
}

/// The last reading of the buckets (a one-off report's last step over
/// them) takes each out of the build as it reads it: its rows are all
/// there, a later reading of the buckets fails rather than answering
/// without them, and the build's counts stay readable.
#[tokio::test]
async fn the_last_reading_of_the_buckets_takes_them() {
    let e = build_context(&crate::common::sample_options())
        .await
        .unwrap();
    let cache = cache_of(&e.ctx);
    let count = "SELECT count(*), count(DISTINCT status) FROM session_conversations";
    let want = rows(&e.ctx, count).await;
    let counts = rows(&e.ctx, "SELECT * FROM event_counts").await;
    cache
        .last_read_by(supportfunnel::tables::native::Relation::SessionConversations)
        .await;
    // other relations still read the buckets and leave them
    assert!(!rows(&e.ctx, "SELECT count(*) FROM sessions")
        .await
        .is_empty());
    assert_eq!(
        rows(&e.ctx, count).await,
        want,
        "the last reading has every row"
    );
    let again = e.ctx.sql(count).await.unwrap().collect().await;
    let err = again.expect_err("the buckets were taken").to_string();
    assert!(err.contains("already read for the last time"), "{err}");
    let err = e
        .ctx
        .sql("SELECT count(*) FROM sessions")
        .await
        .unwrap()
        .collect()
        .await
        .expect_err("no relation reads a taken bucket")
        .to_string();
    assert!(err.contains("already read for the last time"), "{err}");
    assert_eq!(rows(&e.ctx, "SELECT * FROM event_counts").await, counts);
    assert_eq!(cache.builds(), 1, "nothing was built again");
}
