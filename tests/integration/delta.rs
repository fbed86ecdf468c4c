//! Delta Lake results (`[output] format = "delta"`) on local disk and on the
//! loopback S3 server: read back through delta-rs and through our `sql`,
//! re-runs replace their partition, two concurrent committers never corrupt
//! the log; `format = "delta"` tables for SQL.

use std::path::Path;

use chrono::NaiveDate;
use datafusion::prelude::SessionContext;
use supportfunnel::build_context;
use supportfunnel::job::{run_job, JobSummary};
use supportfunnel::settings::config::Config;
use supportfunnel::settings::location::Location;
use supportfunnel::settings::{Env, Flags, Settings};
use supportfunnel::tables::delta;

use crate::common::{render, run, sample, stderr, stdout};
use crate::s3::sample_on_s3;
use crate::s3_server::{S3Server, ACCESS_KEY, SECRET_KEY};

fn config(tables: &str, storage: &str, out: &str, format: &str) -> Config {
    let text = format!(
        r#"
{tables}
{storage}
[output]
location = "{out}/report"
sessions_location = "{out}/sessions"
format = "{format}"

[[reports]]
name = "daily"
period = "daily"
sessions = true

[[reports]]
name = "weekly"
period = "weekly"
"#
    );
    Config::parse(&text, "job.toml").unwrap()
}

fn local_tables() -> String {
    format!(
        "[[tables]]\nname = \"events\"\nuri = \"{}\"\n\n[[tables]]\nname = \"messages\"\nuri = \"{}\"\n",
        sample("events"),
        sample("messages")
    )
}

async fn job(config: &Config, date: NaiveDate) -> supportfunnel::Result<JobSummary> {
    let settings = Settings::resolve(&Flags::default(), config, &Env::from_process()).unwrap();
    let engine = build_context(&settings.engine).await.unwrap();
    run_job(&engine, &settings, config, date).await
}

/// `SELECT … ORDER BY …` over the Delta table at `location` as text rows.
async fn query_delta(ctx: &SessionContext, location: &str, sql: &str) -> Vec<String> {
    delta::register(ctx, "t", &Location::parse(location).unwrap())
        .await
        .unwrap();
    render(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
}

/// The Parquet results of the same job, as the Delta rows should be.
async fn parquet_rows(out: &Path, table: &str, report: &str, date: NaiveDate) -> Vec<String> {
    let ctx = SessionContext::new();
    let file = out
        .join(table)
        .join(format!("report={report}"))
        .join(format!("report_date={date}"))
        .join("data.parquet");
    let mut rows = render(
        &ctx.read_parquet(file.display().to_string(), Default::default())
            .await
            .unwrap()
            .collect()
            .await
            .unwrap(),
    );
    rows.sort();
    rows
}

#[tokio::test]
async fn delta_results_on_local_disk_replace_their_partitions_and_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("delta");
    let pq = tmp.path().join("parquet");
    let cfg = config(&local_tables(), "", &out.display().to_string(), "delta");
    let pq_cfg = config(&local_tables(), "", &pq.display().to_string(), "parquet");
    let d1 = NaiveDate::from_ymd_opt(2026, 2, 15).unwrap();
    let d2 = NaiveDate::from_ymd_opt(2026, 2, 16).unwrap();
    for d in [d1, d2] {
        assert!(job(&cfg, d).await.unwrap().ok);
        assert!(job(&pq_cfg, d).await.unwrap().ok);
    }
    let report = out.join("report").display().to_string();
    let sessions = out.join("sessions").display().to_string();
    assert!(out.join("report/_delta_log").is_dir());
    assert!(
        out.join("report/report=daily/report_date=2026-02-15")
            .is_dir(),
        "partitioned by report and report_date"
    );

    // the same rows as the Parquet results, partition by partition
    let ctx = SessionContext::new();
    for (name, d) in [("daily", d1), ("weekly", d1), ("daily", d2)] {
        let mut got = query_delta(
            &ctx,
            &report,
            &format!(
                "SELECT section, metric, segment, period_start, period_end, current, previous, \
                 delta, delta_pct FROM t WHERE report = '{name}' AND report_date = DATE '{d}'"
            ),
        )
        .await;
        got.sort();
        assert_eq!(
            got,
            parquet_rows(&pq, "report", name, d).await,
            "{name} {d}"
        );
    }
    let sessions_cols = "user_id, session_start, session_end, status";
    let mut got = query_delta(
        &ctx,
        &sessions,
        &format!("SELECT {sessions_cols} FROM t WHERE report = 'daily' AND start_date = DATE '2026-02-14'"),
    )
    .await;
    got.sort();
    let pq_ctx = SessionContext::new().enable_url_table();
    let mut want = render(
        &pq_ctx
            .sql(&format!(
                "SELECT {sessions_cols} FROM '{}'",
                pq.join("sessions/report=daily/report_date=2026-02-15/data.parquet")
                    .display()
            ))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap(),
    );
    want.sort();
    assert_eq!(got, want);
    assert!(!got.is_empty());

    // a re-run of a date replaces its partitions in one new version
    let counts = "SELECT report, CAST(report_date AS VARCHAR) AS d, count(*) AS n FROM t \
                  GROUP BY report, report_date ORDER BY report, d";
    let before = query_delta(&ctx, &report, counts).await;
    let version = delta::open(&ctx, &Location::parse(&report).unwrap())
        .await
        .unwrap()
        .unwrap()
        .version();
    assert!(job(&cfg, d1).await.unwrap().ok);
    assert_eq!(query_delta(&ctx, &report, counts).await, before);
    let after = delta::open(&ctx, &Location::parse(&report).unwrap())
        .await
        .unwrap()
        .unwrap()
        .version();
    assert_eq!(
        after,
        version.map(|v| v + 2),
        "daily and weekly: one commit each"
    );

    // `sql` reads it as a `format = "delta"` table, with partition filters
    let sql_cfg = tmp.path().join("sql.toml");
    std::fs::write(
        &sql_cfg,
        format!(
            "{}\n[[tables]]\nname = \"funnel\"\nuri = \"{report}\"\nformat = \"delta\"\n",
            local_tables()
        ),
    )
    .unwrap();
    let o = run(&[
        "sql",
        "--config",
        &sql_cfg.display().to_string(),
        "--format",
        "csv",
        "SELECT count(*) AS n FROM funnel WHERE report = 'weekly' AND report_date = DATE '2026-02-15'",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let weekly = parquet_rows(&pq, "report", "weekly", d1).await.len();
    assert_eq!(stdout(&o).trim(), format!("n\n{weekly}"));
    let o = run(&[
        "sql",
        "--config",
        &sql_cfg.display().to_string(),
        "EXPLAIN SELECT count(*) FROM funnel WHERE report_date = DATE '2026-02-16'",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("report_date"),
        "the partition filter reaches the scan: {}",
        stdout(&o)
    );

    // a Delta `[[tables]]` entry without a table says so
    std::fs::write(
        &sql_cfg,
        format!(
            "{}\n[[tables]]\nname = \"funnel\"\nuri = \"{}\"\nformat = \"delta\"\n",
            local_tables(),
            tmp.path().join("nothing").display()
        ),
    )
    .unwrap();
    let o = run(&[
        "sql",
        "--config",
        &sql_cfg.display().to_string(),
        "SELECT 1",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no Delta table"), "{}", stderr(&o));
}

/// Two jobs at once on one table, on other partitions and on the same ones:
/// both commit, in order; the log stays readable and no partition holds two
/// runs' rows.
async fn concurrent_committers(cfg: &Config, report: &str) {
    let d1 = NaiveDate::from_ymd_opt(2026, 2, 10).unwrap();
    let d2 = NaiveDate::from_ymd_opt(2026, 2, 11).unwrap();
    let (a, b) = tokio::join!(job(cfg, d1), job(cfg, d2));
    assert!(
        a.unwrap().ok && b.unwrap().ok,
        "other partitions both commit"
    );
    let (a, b) = tokio::join!(job(cfg, d1), job(cfg, d1));
    assert!(
        a.as_ref().unwrap().ok && b.as_ref().unwrap().ok,
        "the same partitions: both commit, one after the other: {a:?} {b:?}"
    );
    let ctx =
        supportfunnel::engine::context::context_without_tables(&supportfunnel::EngineOptions {
            s3: cfg.storage.s3.clone(),
            ..Default::default()
        })
        .unwrap();
    let counts = query_delta(
        &ctx,
        report,
        "SELECT report, CAST(report_date AS VARCHAR) AS d, count(*) AS n FROM t \
         GROUP BY report, report_date ORDER BY report, d",
    )
    .await;
    let rows = |r: &str| {
        counts
            .iter()
            .filter(|l| l.starts_with(r))
            .map(|l| l.rsplit('|').next().unwrap().trim().to_string())
            .collect::<Vec<_>>()
    };
    let daily = rows("daily");
    assert_eq!(daily.len(), 2, "{counts:?}");
    assert_eq!(
        daily[0], daily[1],
        "one run's rows per partition: {counts:?}"
    );
}

#[tokio::test]
async fn two_concurrent_jobs_on_one_local_delta_table() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("delta");
    let cfg = config(&local_tables(), "", &out.display().to_string(), "delta");
    concurrent_committers(&cfg, &out.join("report").display().to_string()).await;
}

#[tokio::test]
async fn delta_results_on_s3_with_two_concurrent_jobs() {
    let server = S3Server::start(&["lake", "out"]);
    sample_on_s3(&server).await;
    let tables = "[[tables]]\nname = \"events\"\nuri = \"s3://lake/support/events/\"\n\n\
                  [[tables]]\nname = \"messages\"\nuri = \"s3://lake/support/messages/\"\n";
    let storage = format!(
        "[storage.s3]\nregion = \"us-east-1\"\nendpoint = \"{}\"\naccess_key_id = \"{ACCESS_KEY}\"\n\
         secret_access_key = \"{SECRET_KEY}\"\nallow_http = true\n",
        server.endpoint
    );
    let cfg = config(tables, &storage, "s3://out/funnel", "delta");
    concurrent_committers(&cfg, "s3://out/funnel/report").await;

    // `sql` over the same table on S3
    let tmp = tempfile::tempdir().unwrap();
    let sql_cfg = tmp.path().join("sql.toml");
    std::fs::write(
        &sql_cfg,
        format!(
            "{tables}\n{storage}\n[[tables]]\nname = \"funnel\"\nuri = \"s3://out/funnel/report\"\nformat = \"delta\"\n"
        ),
    )
    .unwrap();
    let o = run(&[
        "sql",
        "--config",
        &sql_cfg.display().to_string(),
        "--format",
        "csv",
        "SELECT count(DISTINCT report_date) AS n FROM funnel WHERE report = 'daily'",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "n\n2");
}
