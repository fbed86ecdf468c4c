//! Criterion benchmark of the whole report on ~1M generated events.
//!
//! The dataset (20,000 users over 90 days, seed 1) is generated once into
//! `$SF_DATA/m1` (default `~/.cache/supportfunnel-data/m1`), the same cache
//! `benches/scale.sh` uses, and reused afterwards. Each iteration builds the
//! context and runs every section for the default period, as the CLI does.
//!
//!     cargo bench --bench report

use std::path::PathBuf;

use chrono::NaiveDate;
use criterion::{criterion_group, criterion_main, Criterion};
use supportfunnel::datagen::{generate, GenOptions};
use supportfunnel::report::{run_report, ReportOptions};
use supportfunnel::{build_context, EngineOptions};

fn dataset() -> PathBuf {
    let base = std::env::var_os("SF_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/supportfunnel-data")
        });
    let dir = base.join("m1");
    if !dir.join(".complete").exists() {
        generate(&GenOptions {
            out: dir.clone(),
            users: 20_000,
            days: 90,
            seed: 1,
            start: NaiveDate::from_ymd_opt(2026, 1, 1).expect("valid date"),
            overwrite: true,
            progress: None,
        })
        .expect("generate the 1M-event dataset");
        std::fs::write(dir.join(".complete"), b"").expect("mark the dataset complete");
    }
    dir
}

fn bench_report(c: &mut Criterion) {
    let dir = dataset();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let opts = EngineOptions::new(
        dir.join("events").to_string_lossy(),
        dir.join("messages").to_string_lossy(),
    )
    .unwrap();
    let mut group = c.benchmark_group("report");
    group.sample_size(10);
    group.bench_function("1M_events_default_period", |b| {
        b.iter(|| {
            rt.block_on(async {
                let engine = build_context(&opts).await.expect("context");
                run_report(&engine, &ReportOptions::default())
                    .await
                    .expect("report")
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench_report);
criterion_main!(benches);
