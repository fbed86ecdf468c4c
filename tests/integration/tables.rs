//! Registering `events` / `messages`: the accepted layouts, timestamp units
//! and zones, and a clear error for each kind of bad input.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, StringArray, TimestampMillisecondArray, TimestampNanosecondArray,
};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use supportfunnel::{build_context, EngineOptions, Error};

use super::common::{ev, events_batch, rows, with_ts, write_one_message, write_parquet, Row};

fn sample_rows() -> Vec<Row> {
    vec![
        ev("e1", "u1", "2026-03-01 10:00:00", "help_center_visit"),
        ev("e2", "u1", "2026-03-02 11:00:00", "article_view"),
    ]
}

fn opts(dir: &std::path::Path, events: &str) -> EngineOptions {
    let messages = dir.join("messages");
    if !messages.exists() {
        write_one_message(&messages.join("m.parquet"));
    }
    EngineOptions::new(events, messages.to_string_lossy()).unwrap()
}

#[tokio::test]
async fn single_file_directory_and_hive_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let batch = events_batch(&sample_rows());
    // single file, odd name
    let single = dir.path().join("one.data");
    write_parquet(&single, &batch);
    // plain directory of files, with a non-Parquet file beside them
    write_parquet(&dir.path().join("flat/a.parquet"), &batch);
    std::fs::write(dir.path().join("flat/_SUCCESS"), b"").unwrap();
    // Hive partitions
    write_parquet(
        &dir.path().join("hive/date=2026-03-01/part-0.parquet"),
        &batch,
    );
    write_parquet(
        &dir.path().join("hive/date=2026-03-02/part-0.parquet"),
        &batch,
    );

    for (loc, want) in [("one.data", 2), ("flat", 2), ("hive", 4)] {
        let p = dir.path().join(loc);
        let e = build_context(&opts(dir.path(), &p.to_string_lossy()))
            .await
            .unwrap();
        let n = rows(&e.ctx, "SELECT count(*) FROM events").await;
        assert_eq!(n, vec![want.to_string()], "{loc}");
    }
    let e = build_context(&opts(
        dir.path(),
        &dir.path().join("hive").to_string_lossy(),
    ))
    .await
    .unwrap();
    assert_eq!(e.tables[0].partition_columns, vec!["date".to_string()]);
    let by_date = rows(
        &e.ctx,
        "SELECT date, count(*) FROM events GROUP BY date ORDER BY date",
    )
    .await;
    assert_eq!(by_date, vec!["2026-03-01|2", "2026-03-02|2"]);
}

#[tokio::test]
async fn timestamps_in_any_unit_and_zone_read_as_utc() {
    let dir = tempfile::tempdir().unwrap();
    let batch = events_batch(&sample_rows());
    let ms =
        TimestampMillisecondArray::from(vec![Some(1_772_359_200_000), Some(1_772_449_200_000)]);
    // naive milliseconds in one file, nanoseconds in another zone in a second
    write_parquet(
        &dir.path().join("ev/a.parquet"),
        &with_ts(&batch, Arc::new(ms)),
    );
    let ns = TimestampNanosecondArray::from(vec![Some(1_772_359_200_000_000_001), None])
        .with_timezone("+02:00");
    write_parquet(
        &dir.path().join("ev/b.parquet"),
        &with_ts(&batch, Arc::new(ns)),
    );
    let e = build_context(&opts(dir.path(), &dir.path().join("ev").to_string_lossy()))
        .await
        .unwrap();
    assert_eq!(
        e.tables[0]
            .schema
            .field_with_name("ts")
            .unwrap()
            .data_type(),
        &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        "the finest unit wins so nothing is truncated"
    );
    let got = rows(
        &e.ctx,
        "SELECT ts FROM events WHERE ts IS NOT NULL ORDER BY ts",
    )
    .await;
    assert_eq!(
        got,
        vec![
            "2026-03-01T10:00:00Z",
            "2026-03-01T10:00:00.000000001Z",
            "2026-03-02T11:00:00Z"
        ]
    );
}

#[tokio::test]
async fn missing_column_names_table_column_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let batch = events_batch(&sample_rows());
    let idx = batch.schema().index_of("actor").unwrap();
    let mut b = batch.clone();
    b.remove_column(idx);
    let bad = dir.path().join("ev/date=2026-03-02/bad.parquet");
    write_parquet(&dir.path().join("ev/date=2026-03-01/good.parquet"), &batch);
    write_parquet(&bad, &b);
    let err = build_context(&opts(dir.path(), &dir.path().join("ev").to_string_lossy()))
        .await
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(matches!(err, Error::Schema { .. }), "{msg}");
    assert!(
        msg.contains("`events`") && msg.contains("`actor`") && msg.contains("is missing"),
        "{msg}"
    );
    assert!(msg.contains("bad.parquet"), "{msg}");
}

#[tokio::test]
async fn incompatible_type_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let batch = events_batch(&sample_rows());
    let ts_as_text: ArrayRef = Arc::new(StringArray::from(vec!["2026-03-01", "2026-03-02"]));
    write_parquet(
        &dir.path().join("ev/a.parquet"),
        &with_ts(&batch, ts_as_text),
    );
    let msg = build_context(&opts(dir.path(), &dir.path().join("ev").to_string_lossy()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("column `ts` has type Utf8, expected a timestamp"),
        "{msg}"
    );
    assert!(msg.contains("a.parquet"), "{msg}");
}

#[tokio::test]
async fn missing_empty_and_corrupt_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let msg = build_context(&opts(dir.path(), &missing.to_string_lossy()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("`events`") && msg.contains("does not exist"),
        "{msg}"
    );

    std::fs::create_dir_all(dir.path().join("empty")).unwrap();
    let msg = build_context(&opts(
        dir.path(),
        &dir.path().join("empty").to_string_lossy(),
    ))
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(msg.contains("no Parquet files found"), "{msg}");

    std::fs::create_dir_all(dir.path().join("corrupt")).unwrap();
    std::fs::write(
        dir.path().join("corrupt/x.parquet"),
        b"this is not parquet at all",
    )
    .unwrap();
    let msg = build_context(&opts(
        dir.path(),
        &dir.path().join("corrupt").to_string_lossy(),
    ))
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(
        msg.contains("cannot read Parquet file") && msg.contains("x.parquet"),
        "{msg}"
    );
}
