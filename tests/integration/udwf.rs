//! `session_start` through SQL: the plan streams, and a property test against
//! a naive reference over random inputs with ties, NULLs, several users and
//! many batch boundaries.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use proptest::prelude::*;
use supportfunnel::engine::context::context_without_tables;
use supportfunnel::EngineOptions;

const HOUR: i64 = 3_600_000_000;

/// The spec's definition read literally: per user, the first session starts
/// at the earliest action; each next session starts at the earliest action at
/// or after the previous start + span (or, with a gap, after a pause of at
/// least `gap`). A row's session is the latest start at or before it.
fn reference(rows: &[(u8, Option<i64>)], span: Option<i64>, gap: Option<i64>) -> Vec<Option<i64>> {
    let mut by_user: BTreeMap<u8, Vec<i64>> = BTreeMap::new();
    for (u, t) in rows {
        if let Some(t) = t {
            by_user.entry(*u).or_default().push(*t);
        }
    }
    let mut starts: BTreeMap<u8, Vec<i64>> = BTreeMap::new();
    for (u, mut ts) in by_user {
        ts.sort();
        let mut s: Vec<i64> = vec![];
        let mut prev: Option<i64> = None;
        for t in ts {
            let new = match (s.last(), prev) {
                (None, _) => true,
                (Some(&start), Some(p)) => {
                    span.is_some_and(|sp| t >= start + sp) || gap.is_some_and(|g| t - p >= g)
                }
                _ => unreachable!(),
            };
            if new {
                s.push(t);
            }
            prev = Some(t);
        }
        starts.insert(u, s);
    }
    rows.iter()
        .map(|(u, t)| t.map(|t| *starts[u].iter().rev().find(|&&s| s <= t).unwrap()))
        .collect()
}

async fn via_sql(
    rows: &[(u8, Option<i64>)],
    span_h: Option<i64>,
    gap_h: Option<i64>,
    batch_size: usize,
    partitions: usize,
) -> Vec<Option<i64>> {
    let ctx = context_without_tables(&EngineOptions {
        batch_size: Some(batch_size),
        target_partitions: Some(partitions),
        ..EngineOptions::default()
    })
    .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("row_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ),
    ]));
    // Split the input over several batches of the memory table as well.
    let mut batches = vec![];
    for (chunk_no, chunk) in rows.chunks(5).enumerate() {
        let ids: ArrayRef = Arc::new(StringArray::from(
            (0..chunk.len())
                .map(|i| format!("{:06}", chunk_no * 5 + i))
                .collect::<Vec<_>>(),
        ));
        let users: ArrayRef = Arc::new(StringArray::from(
            chunk
                .iter()
                .map(|(u, _)| format!("u{u}"))
                .collect::<Vec<_>>(),
        ));
        let ts: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(chunk.iter().map(|(_, t)| *t).collect::<Vec<_>>())
                .with_timezone("UTC"),
        );
        batches.push(RecordBatch::try_new(schema.clone(), vec![ids, users, ts]).unwrap());
    }
    let table = MemTable::try_new(schema, vec![batches]).unwrap();
    ctx.register_table("a", Arc::new(table)).unwrap();
    let span = match span_h {
        Some(h) => format!("INTERVAL '{h} hours'"),
        None => "NULL".into(),
    };
    let args = match gap_h {
        Some(g) => format!("ts, {span}, INTERVAL '{g} hours'"),
        None => format!("ts, {span}"),
    };
    let sql = format!(
        "SELECT row_id, arrow_cast(session_start({args}) OVER (PARTITION BY user_id ORDER BY ts), 'Int64') \
         FROM a ORDER BY row_id"
    );
    let out = super::common::rows(&ctx, &sql).await;
    out.iter()
        .map(|l| {
            let v = l.split('|').nth(1).unwrap();
            (v != "NULL").then(|| v.parse().unwrap())
        })
        .collect()
}

fn input() -> impl Strategy<Value = Vec<(u8, Option<i64>)>> {
    // Hour-granular times make ties and exact "start + span" hits common;
    // a sprinkle of sub-hour offsets covers the rest.
    let ts = prop_oneof![
        8 => (0i64..200).prop_map(|h| Some(h * HOUR)),
        2 => (0i64..200 * HOUR).prop_map(Some),
        1 => Just(None),
    ];
    proptest::collection::vec((0u8..4, ts), 0..120)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn matches_reference(
        rows in input(),
        span_h in prop_oneof![Just(Some(24i64)), (1i64..48).prop_map(Some), Just(None)],
        gap_h in prop_oneof![Just(None), (1i64..12).prop_map(Some)],
        batch_size in 1usize..9,
        partitions in 1usize..4,
    ) {
        // NULL span needs a gap.
        let gap_h = if span_h.is_none() && gap_h.is_none() { Some(3) } else { gap_h };
        let want = reference(&rows, span_h.map(|h| h * HOUR), gap_h.map(|h| h * HOUR));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let got = rt.block_on(via_sql(&rows, span_h, gap_h, batch_size, partitions));
        prop_assert_eq!(got, want);
    }
}

#[tokio::test]
async fn plan_is_bounded_and_streams() {
    let ctx = context_without_tables(&EngineOptions::default()).unwrap();
    ctx.sql("CREATE TABLE a (user_id VARCHAR, ts TIMESTAMP) AS VALUES ('u', TIMESTAMP '2026-01-01 00:00:00')")
        .await
        .unwrap();
    let plan = super::common::rows(
        &ctx,
        "EXPLAIN SELECT session_start(ts) OVER (PARTITION BY user_id ORDER BY ts) FROM a",
    )
    .await
    .join("\n");
    assert!(plan.contains("BoundedWindowAggExec"), "{plan}");
    assert!(!plan.contains(" WindowAggExec"), "{plan}");
}
