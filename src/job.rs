//! The scheduled job: `supportfunnel run --config job.toml [--date DATE]`.
//!
//! For the run date D, every report of the config's `[[reports]]` covers the
//! N local days before D (`daily`: D-1; `weekly`: D-7..D; ...) and is
//! written as one Parquet object
//!
//! ```text
//! <output.location>/report=<name>/report_date=<D>/data.parquet
//! ```
//!
//! and, with `sessions = true`, the sessions of that period as
//!
//! ```text
//! <output.sessions_location>/report=<name>/report_date=<D>/data.parquet
//! ```
//!
//! Both are Hive-partitioned tables a dashboard reads as a whole. Each result
//! is **one object under a fixed name**, which is what makes the job
//!
//! * **atomic**: the object is sent with a single PUT or a multipart upload
//!   that becomes visible only when completed (locally: a temporary file
//!   renamed into place), so a reader sees the previous result or the new
//!   one, never a part, and a failure leaves the previous result alone;
//! * **idempotent**: re-running a date overwrites the same object instead of
//!   adding another file to the partition.
//!
//! A failing report does not stop the others; the job reports what it wrote
//! and fails as a whole.

use std::time::Instant;

use chrono::{Duration, NaiveDate};
use serde::Serialize;

use crate::config::Config;
use crate::context::Engine;
use crate::error::{Error, Result};
use crate::location::Location;
use crate::output::{encode, put_atomically, Format};
use crate::report::{run_report, ReportOptions};
use crate::settings::Settings;

/// One object the job wrote.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Written {
    /// Report name.
    pub report: String,
    /// `report` or `sessions`.
    pub table: &'static str,
    /// Where.
    pub location: String,
    /// Rows in it.
    pub rows: usize,
}

/// A report the job could not write.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Failed {
    /// Report name.
    pub report: String,
    /// Why, in one line.
    pub error: String,
}

/// What a run did: the line printed on stdout.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    /// The run date.
    pub date: String,
    /// Everything written, in order.
    pub written: Vec<Written>,
    /// Reports that failed, with the error.
    pub failed: Vec<Failed>,
    /// Wall seconds.
    pub seconds: f64,
    /// True when every report was written.
    pub ok: bool,
}

/// `<base>/report=<name>/report_date=<date>/data.parquet`.
pub fn result_location(base: &str, name: &str, date: NaiveDate) -> String {
    format!(
        "{}/report={name}/report_date={}/data.parquet",
        base.trim_end_matches('/'),
        date.format("%Y-%m-%d")
    )
}

/// Runs every report of `config` for `date`, in the zone and with the
/// filters of `settings` (resolved from the same config).
pub async fn run_job(
    engine: &Engine,
    settings: &Settings,
    config: &Config,
    date: NaiveDate,
) -> Result<JobSummary> {
    let started = Instant::now();
    let output = config
        .output
        .as_ref()
        .ok_or_else(|| config.error("no [output] location for the job"))?;
    if config.reports.is_empty() {
        return Err(config.error("no [[reports]]: nothing for the job to do"));
    }
    let mut summary = JobSummary {
        date: date.format("%Y-%m-%d").to_string(),
        written: Vec::new(),
        failed: Vec::new(),
        seconds: 0.0,
        ok: false,
    };
    for job in &config.reports {
        let result = async {
            let days = job.days()?;
            let sessions_base = if job.sessions {
                Some(output.sessions_location.as_deref().ok_or_else(|| {
                    config.error(format!(
                        "report `{}` wants sessions but [output] has no sessions_location",
                        job.name
                    ))
                })?)
            } else {
                None
            };
            let opts = ReportOptions {
                from: Some(date - Duration::days(i64::from(days))),
                to: Some(date),
                tz: Some(settings.tz),
                tags: settings.filters.tags.clone(),
                content_types: settings.filters.content_types.clone(),
                senders: settings.filters.senders.clone(),
                progress: None,
                keep_sessions: job.sessions,
                path: Default::default(),
                now: Some(settings.now),
            };
            let report = run_report(engine, &opts).await?;
            let mut written = Vec::new();
            let mut bytes = Vec::new();
            encode(
                Format::Parquet,
                &report.batch.schema(),
                std::slice::from_ref(&report.batch),
                &mut bytes,
            )?;
            let location = result_location(&output.location, &job.name, date);
            put_atomically(&engine.ctx, &Location::parse(&location)?, bytes).await?;
            written.push(Written {
                report: job.name.clone(),
                table: "report",
                location,
                rows: report.batch.num_rows(),
            });
            if let (Some(base), Some((schema, batches))) = (sessions_base, &report.sessions) {
                let mut bytes = Vec::new();
                encode(Format::Parquet, schema, batches, &mut bytes)?;
                let location = result_location(base, &job.name, date);
                put_atomically(&engine.ctx, &Location::parse(&location)?, bytes).await?;
                written.push(Written {
                    report: job.name.clone(),
                    table: "sessions",
                    location,
                    rows: batches.iter().map(|b| b.num_rows()).sum(),
                });
            }
            Ok::<_, Error>(written)
        }
        .await;
        match result {
            Ok(w) => summary.written.extend(w),
            Err(e) => summary.failed.push(Failed {
                report: job.name.clone(),
                error: e
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            }),
        }
    }
    summary.ok = summary.failed.is_empty();
    summary.seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    Ok(summary)
}
