//! The native path ([`supportfunnel::history`]) against the SQL views that
//! define the report: on generated data plus a file of every corner of the
//! spec (repeats that differ, ties broken by event_id, orphans, showcase
//! rows, rejects), over seeds, sizes, batch sizes and event-id hash widths
//! (4 bits forces nearly every row through the collision path), the
//! sessions, the conversations and the event counts must be identical.

use std::path::Path;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use proptest::prelude::*;
use supportfunnel::gen::{generate, GenOptions};
use supportfunnel::history::{Detail, History, HistoryOptions};
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

async fn compare(dir: &Path, bits: u32, batch_size: usize) {
    let mut o = EngineOptions::new(
        dir.join("events").to_string_lossy(),
        dir.join("messages").to_string_lossy(),
    )
    .unwrap();
    o.batch_size = Some(batch_size);
    let e = build_context(&o).await.unwrap();
    let opts = HistoryOptions {
        id_hash_bits: bits,
        ..HistoryOptions::default()
    };
    let h = History::compute(&e.ctx, &opts).await.unwrap();
    assert!(h.tied_conversations >= 3, "the corner ties were seen");
    if bits < 16 {
        assert!(h.candidate_rows > 0, "narrow hashes collide");
    }
    let (sessions, conversations) = h
        .tables(&[("all", i64::MIN, i64::MAX)], Detail::Full)
        .unwrap();
    let native = SessionContext::new();
    for (name, b) in [("s", sessions), ("c", conversations)] {
        let t = MemTable::try_new(b[0].schema(), b.into_iter().map(|b| vec![b]).collect()).unwrap();
        native.register_table(name, Arc::new(t)).unwrap();
    }
    let want = rows(
        &e.ctx,
        "SELECT * FROM sessions ORDER BY user_id, session_start",
    )
    .await;
    let got = rows(
        &native,
        "SELECT * EXCLUDE (period) FROM s ORDER BY user_id, session_start",
    )
    .await;
    assert!(want.len() > 10);
    assert_eq!(got, want, "sessions differ");
    let cols = "conversation_id, user_id, started_at, session_start, first_reply_at, closed_at, \
                rating, first_bot_answer_at, bot_answers, teammate_replies, closes, automated";
    let want = rows(
        &e.ctx,
        &format!("SELECT {cols} FROM conversations ORDER BY conversation_id"),
    )
    .await;
    let got = rows(
        &native,
        &format!("SELECT {cols} FROM c ORDER BY conversation_id"),
    )
    .await;
    assert_eq!(got, want, "conversations differ");
    let want = rows(
        &e.ctx,
        include_str!("../../queries/report/00_report_event_counts.sql"),
    )
    .await;
    let c = &h.counts;
    let mut n = vec![c.rows_read];
    n.extend(c.rejected);
    n.extend([c.duplicate_events, c.orphan_lifecycle_events]);
    let got = n.iter().map(u64::to_string).collect::<Vec<_>>().join("|");
    assert_eq!(vec![got], want, "event counts differ");
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
    fn native_path_equals_the_sql_views(
        seed in 0u64..10_000,
        users in 5u64..120,
        days in 2u32..12,
        batch_size in prop::sample::select(vec![3usize, 64, 8192]),
        bits in prop::sample::select(vec![4u32, 64]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("d");
        build(&out, seed, users, days);
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(compare(&out, bits, batch_size));
    }
}

#[tokio::test]
async fn collisions_on_every_row_still_give_exact_results() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d");
    build(&out, 7, 60, 6);
    // one bit: every valid row is a candidate and is deduplicated by string
    compare(&out, 1, 8192).await;
}

#[tokio::test]
async fn cached_sessions_equal_the_view_and_follow_the_files() {
    use supportfunnel::cache::CachedSessions;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d");
    build(&out, 11, 40, 5);
    let opts = EngineOptions::new(
        out.join("events").to_string_lossy(),
        out.join("messages").to_string_lossy(),
    )
    .unwrap();
    let cached_opts = EngineOptions {
        cached_sessions: true,
        ..opts.clone()
    };
    let q = "SELECT status, count(*), sum(actions) FROM sessions GROUP BY 1 ORDER BY 1";
    let all = "SELECT * FROM sessions ORDER BY user_id, session_start";
    let view = build_context(&opts).await.unwrap();
    let cached = build_context(&cached_opts).await.unwrap();
    let provider = cached.ctx.table_provider("sessions").await.unwrap();
    let computations = || {
        provider
            .downcast_ref::<CachedSessions>()
            .expect("sessions is the cached table")
            .computations()
    };
    assert_eq!(rows(&cached.ctx, q).await, rows(&view.ctx, q).await);
    assert_eq!(rows(&cached.ctx, all).await, rows(&view.ctx, all).await);
    assert_eq!(
        computations(),
        1,
        "the second query reused the first's rows"
    );
    // a new file: computed again, and the new rows are there
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
    // DataFusion keeps a session's file listings; once it lists again (here:
    // its listing cache cleared, as when its entries expire), `events` and
    // the cached sessions both see the new file.
    let q2 = rows(&cached.ctx, q).await;
    assert_eq!(computations(), 1, "same listing, same rows");
    if let Some(c) = cached
        .ctx
        .runtime_env()
        .cache_manager
        .get_list_files_cache()
    {
        c.clear();
    }
    let view = build_context(&opts).await.unwrap();
    assert_ne!(rows(&view.ctx, q).await, q2, "the new file counts");
    let got = rows(&cached.ctx, q).await;
    assert_eq!(computations(), 2);
    assert_eq!(got, rows(&view.ctx, q).await);
    assert_eq!(rows(&cached.ctx, all).await, rows(&view.ctx, all).await);
}
