//! Throughput of `session_start` (rows/s).
//!
//! Two measurements over the same synthetic actions (heavy-tailed users,
//! sorted by user then time as the window operator sees them):
//! * `evaluator`: the partition evaluator alone, streaming row by row as
//!   `BoundedWindowAggExec` drives it, and its buffered `evaluate_all` path;
//! * `sql`: `session_start(ts) OVER (PARTITION BY user_id ORDER BY ts)` through
//!   DataFusion on an in-memory table, sort and partitioning included.
//!
//! Rows default to 10M; set `SF_BENCH_ROWS` for another size:
//! `cargo bench --bench udwf` (release build).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use supportfunnel::engine::context::context_without_tables;
use supportfunnel::functions::session_start::{
    session_starts, SessionRule, DEFAULT_MAX_SPAN_NANOS,
};
use supportfunnel::EngineOptions;

fn rows() -> usize {
    std::env::var("SF_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000)
}

/// (user, ts µs) pairs: ~rows/30 users, 1–200 actions each, minutes to days apart.
fn data(n: usize) -> (Vec<String>, Vec<i64>) {
    let mut users = Vec::with_capacity(n);
    let mut ts = Vec::with_capacity(n);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut u = 0u64;
    while ts.len() < n {
        let k = 1 + (next() % 60) as usize * (1 + (next() % 4) as usize);
        let mut t = 1_767_225_600_000_000i64 + (next() % 86_400_000_000) as i64;
        for _ in 0..k.min(n - ts.len()) {
            users.push(format!("u{u:08}"));
            ts.push(t);
            t += (next() % 7_200_000_000) as i64 * if next() % 10 == 0 { 24 } else { 1 };
        }
        u += 1;
    }
    (users, ts)
}

fn table(ctx: &SessionContext, users: &[String], ts: &[i64]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let batches: Vec<RecordBatch> = users
        .chunks(8192)
        .zip(ts.chunks(8192))
        .map(|(u, t)| {
            let u: ArrayRef = Arc::new(StringArray::from(u.to_vec()));
            let t: ArrayRef =
                Arc::new(TimestampMicrosecondArray::from(t.to_vec()).with_timezone("UTC"));
            RecordBatch::try_new(schema.clone(), vec![u, t]).unwrap()
        })
        .collect();
    // Two input partitions, as a 2-core scan would produce.
    let mid = batches.len() / 2;
    let parts = vec![batches[..mid].to_vec(), batches[mid..].to_vec()];
    ctx.register_table(
        "actions",
        Arc::new(MemTable::try_new(schema, parts).unwrap()),
    )
    .unwrap();
}

fn bench(c: &mut Criterion) {
    let n = rows();
    let (users, ts) = data(n);
    let rule = SessionRule::new(TimeUnit::Microsecond, Some(DEFAULT_MAX_SPAN_NANOS), None);

    let mut g = c.benchmark_group("session_start");
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(10);

    // Per-user runs, as the operator hands them over.
    let runs: Vec<Vec<Option<i64>>> = {
        let mut out = vec![];
        let mut i = 0;
        while i < n {
            let j = (i..n).find(|&j| users[j] != users[i]).unwrap_or(n);
            out.push(ts[i..j].iter().map(|&t| Some(t)).collect());
            i = j;
        }
        out
    };
    g.bench_function("evaluator", |b| {
        b.iter(|| {
            let mut total = 0usize;
            for r in &runs {
                total += session_starts(&rule, r).unwrap().len();
            }
            total
        })
    });

    let rt = tokio::runtime::Runtime::new().unwrap();
    let ctx = context_without_tables(&EngineOptions::default()).unwrap();
    table(&ctx, &users, &ts);
    // The same query shape with the built-in `lag` (also a bounded window
    // function) as the yardstick for the operator's own cost.
    for (name, f) in [
        ("sql", "session_start(ts)"),
        ("sql_lag_baseline", "lag(ts)"),
    ] {
        let sql = format!(
            "SELECT count(*) FROM (SELECT ts, {f} OVER (PARTITION BY user_id ORDER BY ts) AS s \
             FROM actions) WHERE s = ts"
        );
        g.bench_function(name, |b| {
            b.iter(|| rt.block_on(async { ctx.sql(&sql).await.unwrap().collect().await.unwrap() }))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
