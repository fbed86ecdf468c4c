//! Against a real S3-compatible server (`s3s-fs`, which checks request
//! signatures) started on 127.0.0.1 by the tests themselves: the report read
//! from S3 equals the report from local files, results written to S3 read
//! back, one clear error for wrong credentials / a missing bucket / a missing
//! prefix, a job failing mid-write leaves no partial result, and a re-run of
//! a date leaves one result.
//!
//! The server runs inside the test process (`s3_server`): nothing to install.

use std::path::PathBuf;
use std::process::Command;

use chrono::NaiveDate;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::{cast, concat_batches};
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use supportfunnel::io::storage::s3_builder;
use supportfunnel::job::{result_location, run_job};
use supportfunnel::report::{report_schema, rows_of, run_report, ReportOptions};
use supportfunnel::settings::config::{Config, S3Config};
use supportfunnel::settings::{Env, Flags, Settings};
use supportfunnel::{build_context, EngineOptions};

use crate::s3_server::{Fault, Rule, S3Server, ACCESS_KEY, SECRET_KEY};

pub(crate) fn options(events: &str, messages: &str, s3: S3Config) -> EngineOptions {
    let mut o = EngineOptions::new(events, messages).unwrap();
    o.s3 = s3;
    o
}

pub(crate) async fn sample_on_s3(server: &S3Server) {
    let sample = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/sample");
    server
        .upload(&sample.join("events"), "lake", "support/events")
        .await;
    server
        .upload(&sample.join("messages"), "lake", "support/messages")
        .await;
}

#[tokio::test]
async fn report_from_s3_equals_report_from_local_files() {
    let server = S3Server::start(&["lake"]);
    sample_on_s3(&server).await;
    let opts = ReportOptions {
        from: NaiveDate::from_ymd_opt(2026, 2, 1),
        to: NaiveDate::from_ymd_opt(2026, 3, 1),
        ..ReportOptions::default()
    };
    let local = build_context(&crate::common::sample_options())
        .await
        .unwrap();
    let remote = build_context(&options(
        "s3://lake/support/events/",
        "s3://lake/support/messages/",
        server.settings(SECRET_KEY),
    ))
    .await
    .unwrap();
    let a = rows_of(&run_report(&local, &opts).await.unwrap().batch);
    let b = rows_of(&run_report(&remote, &opts).await.unwrap().batch);
    assert_eq!(a, b);
    // ad-hoc SQL over the S3 tables (Hive partition column included)
    let n = remote
        .ctx
        .sql("SELECT count(DISTINCT date) FROM events")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(n[0].num_rows(), 1);
}

#[tokio::test]
async fn wrong_credentials_missing_bucket_and_missing_prefix_fail_clearly() {
    let server = S3Server::start(&["lake"]);
    sample_on_s3(&server).await;
    let try_open = |events: &str, secret: &str| {
        let o = options(
            events,
            &crate::common::sample("messages"),
            server.settings(secret),
        );
        async move {
            build_context(&o)
                .await
                .err()
                .expect("must fail")
                .to_string()
        }
    };
    let wrong = try_open("s3://lake/support/events/", "not-the-secret").await;
    assert!(!wrong.contains("not-the-secret"), "secret leaked: {wrong}");
    assert!(
        wrong.contains("s3://lake/support/events/") && wrong.contains("events"),
        "{wrong}"
    );
    assert!(wrong.contains("access denied"), "{wrong}");
    let bucket = try_open("s3://no-such-bucket/events/", SECRET_KEY).await;
    assert!(
        bucket.contains("s3://no-such-bucket/events/") && bucket.contains("does not exist"),
        "{bucket}"
    );
    let prefix = try_open("s3://lake/support/nothing-here/", SECRET_KEY).await;
    assert!(
        prefix.contains("s3://lake/support/nothing-here/") && prefix.contains("no Parquet files"),
        "{prefix}"
    );
    for e in [&wrong, &bucket, &prefix] {
        assert!(!e.contains('\n'), "one line: {e}");
        assert!(!e.contains(SECRET_KEY), "secret leaked: {e}");
    }
}

fn job_config(server: &S3Server) -> Config {
    let text = format!(
        r#"
[[tables]]
name = "events"
uri = "s3://lake/support/events/"
partition_cols = ["date"]

[[tables]]
name = "messages"
uri = "s3://lake/support/messages/"

[storage.s3]
region = "us-east-1"
endpoint = "{endpoint}"
access_key_id = "{ACCESS_KEY}"
secret_access_key = "{SECRET_KEY}"
allow_http = true

[output]
location = "s3://out/funnel_report"
sessions_location = "s3://out/funnel_sessions"

[[reports]]
name = "daily"
period = "daily"
sessions = true

[[reports]]
name = "weekly"
period = "weekly"
"#,
        endpoint = server.endpoint
    );
    Config::parse(&text, "job.toml").unwrap()
}

/// What `supportfunnel run --config` resolves to, without flags.
fn job_settings(config: &Config) -> Settings {
    Settings::resolve(&Flags::default(), config, &Env::from_process()).unwrap()
}

/// Every object key under `s3://out/<prefix>`.
async fn keys(server: &S3Server, prefix: &str) -> Vec<String> {
    let store = s3_builder(&server.settings(SECRET_KEY))
        .unwrap()
        .with_bucket_name("out")
        .build()
        .unwrap();
    let mut keys: Vec<String> = store
        .list(Some(&object_store::path::Path::from(prefix)))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    keys.sort();
    keys
}

pub(crate) async fn get(server: &S3Server, key: &str) -> Vec<u8> {
    let store = s3_builder(&server.settings(SECRET_KEY))
        .unwrap()
        .with_bucket_name("out")
        .build()
        .unwrap();
    let key = object_store::path::Path::from(key);
    store
        .get(&key)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn job_writes_to_s3_reads_back_and_reruns_replace() {
    let server = S3Server::start(&["lake", "out"]);
    sample_on_s3(&server).await;
    let config = job_config(&server);
    let settings = job_settings(&config);
    let engine = build_context(&settings.engine).await.unwrap();
    let date = NaiveDate::from_ymd_opt(2026, 2, 15).unwrap();
    let summary = run_job(&engine, &settings, &config, date).await.unwrap();
    assert!(summary.ok, "{summary:?}");
    assert_eq!(summary.written.len(), 3, "daily + its sessions + weekly");
    let expected = vec![
        "funnel_report/report=daily/report_date=2026-02-15/data.parquet".to_string(),
        "funnel_report/report=weekly/report_date=2026-02-15/data.parquet".to_string(),
    ];
    assert_eq!(keys(&server, "funnel_report").await, expected);

    // read back through the engine: the daily result is the daily report
    let daily = run_report(
        &engine,
        &ReportOptions {
            from: NaiveDate::from_ymd_opt(2026, 2, 14),
            to: Some(date),
            keep_sessions: true,
            ..ReportOptions::default()
        },
    )
    .await
    .unwrap();
    let back = engine
        .ctx
        .sql(&format!("SELECT * FROM 's3://out/{}'", expected[0]))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let schema = report_schema();
    let back: Vec<_> = back
        .iter()
        .map(|b| {
            let cols = b
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(c, f)| cast(c, f.data_type()).unwrap())
                .collect();
            RecordBatch::try_new(schema.clone(), cols).unwrap()
        })
        .collect();
    let back = concat_batches(&schema, &back).unwrap();
    assert_eq!(rows_of(&back), rows_of(&daily.batch));
    let total = rows_of(&daily.batch)
        .into_iter()
        .find(|r| r.metric == "sessions_total")
        .unwrap()
        .current
        .unwrap();
    let sessions_rows = summary
        .written
        .iter()
        .find(|w| w.table == "sessions")
        .unwrap()
        .rows;
    assert_eq!(sessions_rows as f64, total);
    let kept: usize = daily.sessions.unwrap().1.iter().map(|b| b.num_rows()).sum();
    assert_eq!(kept, sessions_rows);

    // a re-run of the same date replaces, never adds
    let before = get(&server, &expected[0]).await;
    let again = run_job(&engine, &settings, &config, date).await.unwrap();
    assert!(again.ok);
    assert_eq!(keys(&server, "funnel_report").await, expected);
    assert_eq!(
        get(&server, &expected[0]).await,
        before,
        "same input, same bytes"
    );
    assert_eq!(keys(&server, "funnel_sessions").await.len(), 1);
}

#[tokio::test]
async fn a_job_failing_mid_write_leaves_no_partial_result() {
    let server = S3Server::start(&["lake", "out"]);
    sample_on_s3(&server).await;
    let mut config = job_config(&server);
    // No retries: an upload cut half-way fails the write at once.
    config.storage.s3.max_retries = Some(0);
    let settings = job_settings(&config);
    let engine = build_context(&settings.engine).await.unwrap();
    let date = NaiveDate::from_ymd_opt(2026, 2, 15).unwrap();
    let cut_every_upload = || Rule {
        method: "PUT",
        path_contains: "/out/".into(),
        fault: Fault::CutUpload,
        times: usize::MAX,
    };

    // nothing there yet: a failed write leaves nothing
    server.faults.add(cut_every_upload());
    let failed = run_job(&engine, &settings, &config, date).await.unwrap();
    server.faults.clear();
    assert!(!failed.ok && failed.written.is_empty(), "{failed:?}");
    assert_eq!(failed.failed.len(), 2);
    assert!(
        keys(&server, "").await.is_empty(),
        "{:?}",
        keys(&server, "").await
    );

    // a good result, then a failing re-run: the good result stays as it was
    assert!(run_job(&engine, &settings, &config, date).await.unwrap().ok);
    let key = result_location("funnel_report", "daily", date);
    let good = get(&server, &key).await;
    server.faults.add(cut_every_upload());
    let failed = run_job(&engine, &settings, &config, date).await.unwrap();
    server.faults.clear();
    assert!(!failed.ok);
    assert_eq!(get(&server, &key).await, good);
    assert_eq!(keys(&server, "funnel_report").await.len(), 2);
}

#[test]
fn cli_run_and_s3_output() {
    let server = S3Server::start(&["lake", "out"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(sample_on_s3(&server));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("job.toml");
    let config_text = format!(
        "[[tables]]\nname = \"events\"\nuri = \"s3://lake/support/events/\"\n\
         [[tables]]\nname = \"messages\"\nuri = \"s3://lake/support/messages/\"\n\
         [storage.s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\nallow_http = true\n\
         [output]\nlocation = \"s3://out/r\"\n\
         [[reports]]\nname = \"trailing\"\nperiod = \"trailing_28d\"\n",
        server.endpoint
    );
    std::fs::write(&cfg, config_text).unwrap();
    let run = |args: &[&str], secret: &str| {
        Command::new(env!("CARGO_BIN_EXE_supportfunnel"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env_remove("AWS_ENDPOINT_URL")
            .output()
            .unwrap()
    };
    let cfg_s = cfg.to_string_lossy().into_owned();
    let o = run(
        &["run", "--config", &cfg_s, "--date", "2026-03-01"],
        SECRET_KEY,
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(out.lines().count(), 1, "one-line summary: {out}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["ok"], true);
    assert_eq!(
        summary["written"][0]["location"],
        "s3://out/r/report=trailing/report_date=2026-03-01/data.parquet"
    );
    // report --output to S3, credentials from the environment
    let o = run(
        &[
            "report",
            "--config",
            &cfg_s,
            "--from",
            "2026-02-01",
            "--to",
            "2026-03-01",
            "--format",
            "csv",
            "--output",
            "s3://out/adhoc/report.csv",
        ],
        SECRET_KEY,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = rt.block_on(get(&server, "adhoc/report.csv"));
    assert!(String::from_utf8_lossy(&csv).starts_with("section,metric,segment"));
    // wrong secret: one line, non-zero, the secret not shown
    let o = run(
        &["run", "--config", &cfg_s, "--date", "2026-03-01"],
        "wrong-secret-xyz",
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("wrong-secret-xyz"), "{err}");
}
