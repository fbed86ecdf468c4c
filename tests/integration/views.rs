//! The derived views against hand-made events: the spec's worked example
//! (§7) and the row, conversation and status rules of §1, §2 and §6.

use super::common::{engine_for, ev, events_batch, rows, write_one_message, write_parquet, Row};
use supportfunnel::{build_context, EngineOptions};

#[tokio::test]
async fn worked_example_sessions_and_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_for(
        dir.path(),
        &[
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
        ],
    )
    .await;
    let s = rows(
        &e.ctx,
        "SELECT user_id, session_start, session_end, status, tried_self_serve, actions \
         FROM sessions ORDER BY session_start",
    )
    .await;
    assert_eq!(
        s,
        vec![
            "u1|2026-03-01T23:00:00Z|2026-03-02T23:00:00Z|self_serve_resolved|true|2",
            "u1|2026-03-02T23:30:00Z|2026-03-03T23:30:00Z|human_after_self_serve|true|2",
        ]
    );
    let c = rows(
        &e.ctx,
        "SELECT conversation_id, session_start, first_reply_at, closed_at, closed_by, automated, \
         arrow_cast(first_reply_at, 'Int64') - arrow_cast(started_at, 'Int64') \
         FROM conversations",
    )
    .await;
    assert_eq!(
        c,
        vec!["c1|2026-03-02T23:30:00Z|2026-03-02T23:41:00Z|2026-03-04T09:00:00Z|teammate|false|60000000"]
    );
}

#[tokio::test]
async fn rejects_duplicates_and_showcase_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut no_id = ev("x", "u1", "2026-03-01 10:00:00", "article_view");
    no_id.event_id = None;
    let mut no_user = ev("e2", "u1", "2026-03-01 10:00:00", "article_view");
    no_user.user_id = None;
    let mut no_ts = ev("e3", "u1", "2026-03-01 10:00:00", "article_view");
    no_ts.ts = None;
    let mut no_type = ev("e4", "u1", "2026-03-01 10:00:00", "article_view");
    no_type.event_type = None;
    // several problems: counted once, under the first reason (null_user_id)
    let mut many = no_user.clone();
    many.event_id = Some("e9");
    many.event_type = Some("bogus");
    let e = engine_for(
        dir.path(),
        &[
            no_id,
            no_user,
            no_ts,
            no_type,
            many,
            ev("e5", "u1", "2026-03-01 10:00:00", "page_view"),
            ev("e6", "u1", "2026-03-01 10:00:00", "teammate_reply"),
            ev("e7", "u1", "2026-03-01 10:00:00", "article_view").rating(6),
            // valid, then a later exact copy and an earlier invalid copy
            ev("d1", "u1", "2026-03-01 11:00:00", "article_view"),
            ev("d1", "u1", "2026-03-01 12:00:00", "article_view"),
            ev("d1", "u1", "2026-03-01 09:00:00", "article_view").rating(0),
            // showcase rows are ignored everywhere, even invalid ones
            ev("s1", "u1", "2026-03-01 08:00:00", "article_view").channel("content_showcase"),
            ev("s2", "u1", "2026-03-01 08:00:00", "bogus").channel("content_showcase"),
        ],
    )
    .await;
    let rejects = rows(
        &e.ctx,
        "SELECT reject_reason, count(*) FROM rejected_events GROUP BY 1 ORDER BY 1",
    )
    .await;
    assert_eq!(
        rejects,
        vec![
            "invalid_rating|2",
            "missing_conversation_id|1",
            "null_event_id|1",
            "null_event_type|1",
            "null_ts|1",
            "null_user_id|2",
            "unknown_event_type|1",
        ]
    );
    let clean = rows(
        &e.ctx,
        "SELECT event_id, ts FROM clean_events ORDER BY event_id",
    )
    .await;
    assert_eq!(
        clean,
        vec!["d1|2026-03-01T11:00:00Z"],
        "the smallest-ts valid copy is kept"
    );
    let valid = rows(
        &e.ctx,
        "SELECT count(*) FROM validated_events WHERE reject_reason IS NULL",
    )
    .await;
    assert_eq!(
        valid,
        vec!["2"],
        "two valid copies of d1: one kept, one duplicate"
    );
}

#[tokio::test]
async fn conversation_attributes_follow_the_tie_rules() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine_for(
        dir.path(),
        &[
            // c1: started twice (earliest counts), closed twice at the same
            // instant (greatest event_id wins), last rating NULL → unrated.
            ev("a2", "u1", "2026-03-01 10:05:00", "conversation_started").conv("c1"),
            ev("a1", "u1", "2026-03-01 10:00:00", "conversation_started").conv("c1"),
            ev("a3", "u9", "2026-03-01 10:10:00", "teammate_reply")
                .conv("c1")
                .actor("teammate"),
            ev("a4", "u1", "2026-03-02 10:00:00", "conversation_closed")
                .conv("c1")
                .actor("teammate"),
            ev("a6", "u1", "2026-03-03 10:00:00", "conversation_closed")
                .conv("c1")
                .actor("bot"),
            ev("a5", "u1", "2026-03-03 10:00:00", "conversation_closed")
                .conv("c1")
                .actor("teammate"),
            ev("a7", "u1", "2026-03-03 11:00:00", "conversation_rated")
                .conv("c1")
                .rating(5),
            {
                let mut r = ev("a8", "u1", "2026-03-03 12:00:00", "conversation_rated").conv("c1");
                r.rating = None;
                r
            },
            // c2: bot answer, closed by the bot, no teammate reply → automated
            ev("b1", "u2", "2026-03-01 10:00:00", "conversation_started").conv("c2"),
            ev("b2", "u2", "2026-03-01 10:00:05", "bot_answer")
                .conv("c2")
                .actor("bot"),
            ev("b3", "u2", "2026-03-01 10:01:00", "conversation_closed")
                .conv("c2")
                .actor("bot"),
            // c3: same but the closer is "Bot": not the exact string → human
            ev("c1", "u3", "2026-03-01 10:00:00", "conversation_started").conv("c3"),
            ev("c2", "u3", "2026-03-01 10:00:05", "bot_answer")
                .conv("c3")
                .actor("bot"),
            ev("c3", "u3", "2026-03-01 10:01:00", "conversation_closed")
                .conv("c3")
                .actor("Bot"),
            // c4: two starts at the same instant by different users: the
            // smallest event_id in byte order ("s10" < "s9") counts; two
            // closes at one instant: the greatest event_id ("k9" > "k10")
            // wins, and its NULL actor leaves closed_by NULL.
            ev("s9", "u6", "2026-03-01 10:00:00", "conversation_started").conv("c4"),
            ev("s10", "u5", "2026-03-01 10:00:00", "conversation_started").conv("c4"),
            ev("k10", "u5", "2026-03-01 12:00:00", "conversation_closed")
                .conv("c4")
                .actor("teammate"),
            ev("k9", "u5", "2026-03-01 12:00:00", "conversation_closed").conv("c4"),
            // c5: an actor holding the key's separator character is kept whole
            ev("t1", "u7", "2026-03-01 10:00:00", "conversation_started").conv("c5"),
            ev("t2", "u7", "2026-03-01 11:00:00", "conversation_closed")
                .conv("c5")
                .actor("a\u{1}b"),
            // orphans: lifecycle events of a conversation never started
            ev("o1", "u4", "2026-03-01 10:00:00", "teammate_reply").conv("zz"),
            ev("o2", "u4", "2026-03-01 11:00:00", "conversation_closed").conv("zz"),
        ],
    )
    .await;
    let c = rows(
        &e.ctx,
        "SELECT conversation_id, user_id, started_at, closed_at, closed_by, rating, closes, automated \
         FROM conversations ORDER BY conversation_id",
    )
    .await;
    assert_eq!(
        c,
        vec![
            "c1|u1|2026-03-01T10:00:00Z|2026-03-03T10:00:00Z|bot|NULL|3|false",
            "c2|u2|2026-03-01T10:00:00Z|2026-03-01T10:01:00Z|bot|NULL|1|true",
            "c3|u3|2026-03-01T10:00:00Z|2026-03-01T10:01:00Z|Bot|NULL|1|false",
            "c4|u5|2026-03-01T10:00:00Z|2026-03-01T12:00:00Z|NULL|NULL|2|false",
            "c5|u7|2026-03-01T10:00:00Z|2026-03-01T11:00:00Z|a\u{1}b|NULL|1|false",
        ]
    );
    let o = rows(
        &e.ctx,
        "SELECT event_id FROM orphan_lifecycle_events ORDER BY 1",
    )
    .await;
    assert_eq!(o, vec!["o1", "o2"]);
    let s = rows(&e.ctx, "SELECT user_id, status FROM sessions ORDER BY 1").await;
    assert_eq!(
        s,
        vec![
            "u1|human_from_start",
            "u2|self_serve_resolved",
            "u3|human_after_self_serve",
            "u5|human_from_start",
            "u6|stopped",
            "u7|human_from_start",
        ],
        "u3: its bot answer came before H's (absent) first reply"
    );
}

#[tokio::test]
async fn session_status_rules() {
    let dir = tempfile::tempdir().unwrap();
    let rows_in: Vec<Row> = vec![
        // u1: only a visit and a search → stopped (but tried self-serve)
        ev("a1", "u1", "2026-03-01 10:00:00", "help_center_visit"),
        ev("a2", "u1", "2026-03-01 10:01:00", "article_search"),
        // u2: a bot answer in conversation k2 before H's (k1) first reply
        ev("b1", "u2", "2026-03-01 10:00:00", "conversation_started").conv("k1"),
        ev("b2", "u2", "2026-03-01 10:00:00", "conversation_started").conv("k2"),
        ev("b3", "u2", "2026-03-01 10:02:00", "bot_answer")
            .conv("k2")
            .actor("bot"),
        ev("b4", "u2", "2026-03-01 10:05:00", "teammate_reply").conv("k1"),
        ev("b5", "u2", "2026-03-01 10:06:00", "teammate_reply").conv("k2"),
        // u3: an article view after H started does not count
        ev("c1", "u3", "2026-03-01 10:00:00", "conversation_started").conv("m1"),
        ev("c2", "u3", "2026-03-01 10:01:00", "article_view"),
        ev("c3", "u3", "2026-03-01 10:02:00", "teammate_reply").conv("m1"),
        // u4: a bot answer after H's first reply does not count either
        ev("d1", "u4", "2026-03-01 10:00:00", "conversation_started").conv("n1"),
        ev("d2", "u4", "2026-03-01 10:01:00", "teammate_reply").conv("n1"),
        ev("d3", "u4", "2026-03-01 10:02:00", "bot_answer")
            .conv("n1")
            .actor("bot"),
        // u5: an action exactly 24h after the start opens a second session
        ev("f1", "u5", "2026-03-01 10:00:00", "article_view"),
        ev("f2", "u5", "2026-03-02 10:00:00", "help_center_visit"),
    ];
    let dir2 = dir.path();
    let e = engine_for(dir2, &rows_in).await;
    let s = rows(
        &e.ctx,
        "SELECT user_id, session_start, status, tried_self_serve, first_human_conversation_id \
         FROM sessions ORDER BY user_id, session_start",
    )
    .await;
    assert_eq!(
        s,
        vec![
            "u1|2026-03-01T10:00:00Z|stopped|true|NULL",
            "u2|2026-03-01T10:00:00Z|human_after_self_serve|true|k1",
            "u3|2026-03-01T10:00:00Z|human_from_start|true|m1",
            "u4|2026-03-01T10:00:00Z|human_from_start|true|n1",
            "u5|2026-03-01T10:00:00Z|self_serve_resolved|true|NULL",
            "u5|2026-03-02T10:00:00Z|stopped|false|NULL",
        ]
    );
}

/// Copies that share the smallest `ts` are ranked by their other columns
/// with NULLs last, written out in the SQL: a `[datafusion]` default NULL
/// ordering of `nulls_first` does not change the copy kept (nor make the
/// views disagree with the operators, whose order is NULLs last).
#[tokio::test]
async fn the_copy_kept_does_not_follow_the_default_null_ordering() {
    for ordering in ["nulls_max", "nulls_first", "nulls_last"] {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events").join("part-0.parquet");
        write_parquet(
            &events,
            &events_batch(&[
                ev("d1", "u1", "2026-03-01 10:00:00", "article_view"),
                ev("d1", "u1", "2026-03-01 10:00:00", "article_view").channel("web"),
            ]),
        );
        write_one_message(&dir.path().join("messages").join("part-0.parquet"));
        let e = engine_over(
            dir.path(),
            &[("datafusion.sql_parser.default_null_ordering", ordering)],
        )
        .await;
        let kept = rows(
            &e.ctx,
            "SELECT event_id, channel FROM clean_events ORDER BY event_id",
        )
        .await;
        assert_eq!(kept, vec!["d1|web"], "default NULL ordering {ordering}");
    }
}

/// Copies of a delivery that differ only in their tags keep the same copy
/// whatever order the files give them (a tag filter sees the kept copy's
/// tags): the smallest tags.
#[tokio::test]
async fn the_copy_of_a_delivery_kept_does_not_follow_the_row_order() {
    use datafusion::arrow::array::{
        ArrayRef, ListBuilder, StringArray, StringBuilder, TimestampMicrosecondArray,
    };
    use datafusion::arrow::record_batch::RecordBatch;
    use std::sync::Arc;
    for order in [["b", "a"], ["a", "b"]] {
        let dir = tempfile::tempdir().unwrap();
        write_parquet(
            &dir.path().join("events").join("part-0.parquet"),
            &events_batch(&[ev("e1", "u1", "2026-03-01 10:00:00", "article_view")]),
        );
        let ts = |v: Option<i64>| -> ArrayRef {
            Arc::new(TimestampMicrosecondArray::from(vec![v, v]).with_timezone("UTC"))
        };
        let mut tags = ListBuilder::new(StringBuilder::new());
        for t in order {
            tags.values().append_value(t);
            tags.append(true);
        }
        let sent = Some(1_772_442_000_000_000);
        let batch = RecordBatch::try_new(
            supportfunnel::datagen::messages_schema(),
            vec![
                Arc::new(StringArray::from(vec!["m1", "m1"])),
                Arc::new(StringArray::from(vec!["u1", "u1"])),
                ts(sent),
                Arc::new(StringArray::from(vec!["chat", "chat"])),
                Arc::new(StringArray::from(vec!["support_team", "support_team"])),
                Arc::new(tags.finish()),
                ts(None),
                ts(None),
                ts(None),
            ],
        )
        .unwrap();
        write_parquet(&dir.path().join("messages").join("part-0.parquet"), &batch);
        let e = engine_over(dir.path(), &[]).await;
        let kept = rows(
            &e.ctx,
            "SELECT message_id, array_to_string(tags, ',') FROM clean_messages",
        )
        .await;
        assert_eq!(kept, vec!["m1|a"], "rows in the order {order:?}");
    }
}

/// The engine over the `events` and `messages` files under `dir`, with
/// `settings` as the `[datafusion]` table would give them.
async fn engine_over(dir: &std::path::Path, settings: &[(&str, &str)]) -> supportfunnel::Engine {
    let mut options = EngineOptions::new(
        dir.join("events").to_string_lossy(),
        dir.join("messages").to_string_lossy(),
    )
    .unwrap();
    options.datafusion_options = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    build_context(&options).await.unwrap()
}
