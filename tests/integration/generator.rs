//! The data generator: deterministic, Hive-partitioned, contract schema, and
//! carrying every edge case the spec names.

use std::path::Path;

use supportfunnel::datagen::{generate, GenOptions};
use supportfunnel::{build_context, EngineOptions};

use super::common::{files, rows};

fn opts(out: &Path, users: u64, days: u32, seed: u64) -> GenOptions {
    GenOptions {
        out: out.to_path_buf(),
        users,
        days,
        seed,
        start: chrono::NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(),
        overwrite: false,
        progress: None,
    }
}

#[test]
fn same_seed_same_bytes_other_seed_other_data() {
    let dir = tempfile::tempdir().unwrap();
    let a = generate(&opts(&dir.path().join("a"), 300, 5, 7)).unwrap();
    let b = generate(&opts(&dir.path().join("b"), 300, 5, 7)).unwrap();
    let c = generate(&opts(&dir.path().join("c"), 300, 5, 8)).unwrap();
    assert!(a.events > 0 && a.messages > 0);
    assert_eq!(a.events, b.events);
    let fa = files(&dir.path().join("a"));
    assert_eq!(fa, files(&dir.path().join("b")));
    assert_ne!(fa, files(&dir.path().join("c")));
    let _ = c;
    assert!(
        fa.iter()
            .any(|(p, _)| p.starts_with("events/date=2026-03-01/")),
        "{:?}",
        fa.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert!(fa
        .iter()
        .any(|(p, _)| p.starts_with("messages/date=2026-03-05/")));
    assert!(
        !fa.iter().any(|(p, _)| p.contains("date=2026-03-06")),
        "nothing after the last day"
    );
}

#[test]
fn refuses_a_non_empty_output_and_leaves_it_alone() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), b"precious").unwrap();
    let err = generate(&opts(&out, 10, 1, 1)).unwrap_err().to_string();
    assert!(
        err.contains("not empty") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(std::fs::read(out.join("keep.txt")).unwrap(), b"precious");
    let mut o = opts(&out, 10, 1, 1);
    o.overwrite = true;
    generate(&o).unwrap();
    assert!(!out.join("keep.txt").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, vec!["out"], "no temporary directory left behind");
}

#[tokio::test]
async fn carries_every_edge_case_of_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d");
    let stats = generate(&opts(&out, 3000, 30, 11)).unwrap();
    let e = build_context(
        &EngineOptions::new(
            out.join("events").to_string_lossy(),
            out.join("messages").to_string_lossy(),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let n = rows(&e.ctx, "SELECT count(*) FROM events").await;
    assert_eq!(n, vec![stats.events.to_string()]);
    let reasons = rows(
        &e.ctx,
        "SELECT DISTINCT reject_reason FROM rejected_events ORDER BY 1",
    )
    .await;
    assert_eq!(
        reasons,
        vec![
            "invalid_rating",
            "missing_conversation_id",
            "null_event_id",
            "null_event_type",
            "null_ts",
            "null_user_id",
            "unknown_event_type",
        ]
    );
    let checks = [
        // duplicates, and duplicates that cross files
        "SELECT count(*) > 0 FROM (SELECT event_id FROM validated_events WHERE reject_reason IS NULL GROUP BY 1 HAVING count(*) > 1)",
        "SELECT count(*) > 0 FROM (SELECT event_id FROM events WHERE event_id IS NOT NULL GROUP BY 1 HAVING count(DISTINCT date) > 1)",
        "SELECT count(*) > 0 FROM events WHERE channel = 'content_showcase'",
        "SELECT count(*) > 0 FROM orphan_lifecycle_events",
        // an action exactly at start + 24h
        "SELECT count(*) > 0 FROM session_actions a JOIN session_actions b ON a.user_id = b.user_id \
         AND b.ts = a.session_start + INTERVAL '86400 seconds' AND b.session_start = b.ts",
        // equal timestamps for one user
        "SELECT count(*) > 0 FROM (SELECT user_id, ts FROM session_actions GROUP BY 1, 2 HAVING count(*) > 1)",
        // sessions crossing midnight
        "SELECT count(*) > 0 FROM session_actions WHERE date_trunc('day', ts) > date_trunc('day', session_start)",
        // reopened conversations closed twice, closes in later partitions
        "SELECT count(*) > 0 FROM conversations WHERE closes > 1",
        "SELECT count(*) > 0 FROM conversations WHERE date_trunc('day', closed_at) > date_trunc('day', started_at)",
        "SELECT count(*) > 0 FROM conversations WHERE automated",
        "SELECT count(*) > 0 FROM conversations WHERE rating IS NOT NULL",
        "SELECT count(DISTINCT status) = 4 FROM sessions",
        // messages: duplicates, null ids, null sent_at, empty and null tags
        "SELECT count(*) > count(DISTINCT message_id) + count(*) - count(message_id) FROM messages",
        "SELECT count(*) > 0 FROM messages WHERE message_id IS NULL",
        "SELECT count(*) > 0 FROM messages WHERE sent_at IS NULL",
        "SELECT count(*) > 0 FROM messages WHERE tags IS NULL",
        "SELECT count(*) > 0 FROM messages WHERE cardinality(tags) = 0",
        "SELECT count(*) > 0 FROM messages WHERE opened_at IS NOT NULL AND clicked_at IS NOT NULL",
    ];
    for sql in checks {
        assert_eq!(rows(&e.ctx, sql).await, vec!["true"], "{sql}");
    }
    // heavy tail: the busiest user has far more sessions than the median one
    let spread = rows(
        &e.ctx,
        "SELECT max(n) >= 10 * median(n) FROM (SELECT user_id, count(*) AS n FROM sessions GROUP BY 1)",
    )
    .await;
    assert_eq!(spread, vec!["true"]);
}
