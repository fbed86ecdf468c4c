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
//! and, with `formats = ["html"]`, the report as one HTML page
//! ([`crate::render::html`]) at
//!
//! ```text
//! <output.html_location>/report=<name>/report_date=<D>/report.html
//! ```
//!
//! (by default under `<output.location>/_html`, which table readers skip).
//! The first two are Hive-partitioned tables a dashboard reads as a whole. Each result
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

pub mod incremental;

use std::time::Instant;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;

use crate::engine::context::Engine;
use crate::error::{Error, Result};
use crate::render::output::{encode, put_atomically, Format};
use crate::report::{run_report, Report, ReportOptions};
use crate::settings::config::{Config, OutputConfig, TableFormat};
use crate::settings::location::Location;
use crate::settings::period::day_start;
use crate::settings::Settings;

/// One object the job wrote.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Written {
    /// Report name.
    pub report: String,
    /// `report`, `sessions`, or `html` (the report's page).
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
    /// With `[state]`: whether the run was incremental, and if not why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<crate::job::incremental::StateRun>,
}

/// An error as one line (the summary is one JSON line).
fn one_line(e: &Error) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// `<base>/report=<name>/report_date=<date>/data.parquet`.
pub fn result_location(base: &str, name: &str, date: NaiveDate) -> String {
    format!(
        "{}/report={name}/report_date={}/data.parquet",
        base.trim_end_matches('/'),
        date.format("%Y-%m-%d")
    )
}

/// How a run is asked for beyond its date.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Recompute everything even when the state could serve the run
    /// (`run --full`).
    pub full: bool,
}

/// Runs every report of `config` for `date`, in the zone and with the
/// filters of `settings` (resolved from the same config).
pub async fn run_job(
    engine: &Engine,
    settings: &Settings,
    config: &Config,
    date: NaiveDate,
) -> Result<JobSummary> {
    run_job_with(engine, settings, config, date, &RunOptions::default()).await
}

/// The earliest instant any report of the run looks at: the start of the
/// longest report's previous period.
fn windows_start(config: &Config, settings: &Settings, date: NaiveDate) -> Result<DateTime<Utc>> {
    let mut days = 0;
    for job in &config.reports {
        days = days.max(job.days()?);
    }
    day_start(settings.tz, date - Duration::days(2 * i64::from(days)))
}

/// [`run_job`] with [`RunOptions`]. With `[state]`, the reports run on the
/// state plus the new files ([`crate::job::incremental`]), and the new state is
/// committed once every report is written.
pub async fn run_job_with(
    engine: &Engine,
    settings: &Settings,
    config: &Config,
    date: NaiveDate,
    run: &RunOptions,
) -> Result<JobSummary> {
    let started = Instant::now();
    let output = config
        .output
        .as_ref()
        .ok_or_else(|| config.error("no [output] location for the job"))?;
    if config.reports.is_empty() {
        return Err(config.error("no [[reports]]: nothing for the job to do"));
    }
    // A state that cannot be used does not stop the job: its reports run
    // over every file, and the summary says the state was not saved.
    let mut unusable_state = None;
    let mut prepared = match &config.state {
        Some(state) => {
            let location = Location::parse(&state.location)
                .map_err(|e| config.error(format!("[state] location: {e}")))?;
            let start = windows_start(config, settings, date)?;
            match crate::job::incremental::prepare(engine, &location, start, run.full).await {
                Ok(p) => Some(p),
                Err(e) => {
                    unusable_state = Some(crate::job::incremental::StateRun::unusable(
                        start,
                        format!(
                            "the state at {location} could not be prepared ({}); the reports \
                             ran over every file and no state was saved",
                            one_line(&e)
                        ),
                    ));
                    None
                }
            }
        }
        None => None,
    };
    if let Some(p) = &mut prepared {
        p.tap_the_scan().await;
        p.take_from_build().await;
    }
    let engine = prepared.as_ref().map_or(engine, |p| &p.engine);
    let mut summary = JobSummary {
        date: date.format("%Y-%m-%d").to_string(),
        written: Vec::new(),
        failed: Vec::new(),
        seconds: 0.0,
        ok: false,
        state: None,
    };
    let mut first_report = None;
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
                now: Some(settings.now),
            };
            let mut report = run_report(engine, &opts).await?;
            if let Some(p) = &prepared {
                report.batch = p.complete(report.batch)?;
            }
            if first_report.is_none() {
                first_report = Some(report.batch.clone());
            }
            let written = match output.format {
                TableFormat::Parquet => {
                    write_parquet_results(engine, output, sessions_base, &job.name, date, &report)
                        .await?
                }
                TableFormat::Delta => {
                    write_delta_results(
                        engine,
                        output,
                        sessions_base,
                        &job.name,
                        (date - Duration::days(i64::from(days)), date),
                        settings,
                        &report,
                    )
                    .await?
                }
            };
            let mut written = written;
            if job.wants_html()? {
                written.push(write_html(engine, output, &job.name, date, settings, &report).await?);
            }
            Ok::<_, Error>(written)
        }
        .await;
        match result {
            Ok(w) => summary.written.extend(w),
            Err(e) => summary.failed.push(Failed {
                report: job.name.clone(),
                error: one_line(&e),
            }),
        }
    }
    summary.ok = summary.failed.is_empty() && unusable_state.is_none();
    summary.state = unusable_state;
    // The state moves on only when every result of the run is written: a
    // failed run is redone from the same state.
    if let Some(p) = prepared {
        let run = p.run.clone();
        summary.state = Some(match (&first_report, summary.ok) {
            (Some(first), true) => {
                crate::job::incremental::fail_point("before-state");
                let location = p.location().to_string();
                match p.commit(first).await {
                    Ok(run) => run,
                    Err(e) => {
                        summary.ok = false;
                        run.not_saved(format!(
                            "the results were written, but the state at {location} was not \
                             saved ({}); the next run starts from the previous state",
                            one_line(&e)
                        ))
                    }
                }
            }
            _ => run.not_saved(
                "a report failed, so the state was not saved; the next run starts from the \
                 previous state"
                    .into(),
            ),
        });
    }
    summary.seconds = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
    Ok(summary)
}

/// `<base>/report=<name>/report_date=<date>/report.html`, where `base` is
/// `[output] html_location`, by default `<output.location>/_html`.
pub fn html_location(output: &OutputConfig, name: &str, date: NaiveDate) -> String {
    let base = match &output.html_location {
        Some(base) => base.trim_end_matches('/').to_string(),
        None => format!("{}/_html", output.location.trim_end_matches('/')),
    };
    format!(
        "{base}/report={name}/report_date={}/report.html",
        date.format("%Y-%m-%d")
    )
}

/// The report's HTML page ([`crate::render::html`]), one object written atomically
/// as the table results are, after them.
async fn write_html(
    engine: &Engine,
    output: &OutputConfig,
    name: &str,
    date: NaiveDate,
    settings: &Settings,
    report: &Report,
) -> Result<Written> {
    let page = crate::render::html::render(report, &settings.filters)?;
    let location = html_location(output, name, date);
    let loc = Location::parse(&location)?;
    crate::io::readonly::Inputs::of(&engine.ctx).check_output(&loc)?;
    put_atomically(&engine.ctx, &loc, page.into_bytes()).await?;
    Ok(Written {
        report: name.to_string(),
        table: "html",
        location,
        rows: report.batch.num_rows(),
    })
}

/// Parquet results: one object per report and date (see the module docs).
async fn write_parquet_results(
    engine: &Engine,
    output: &OutputConfig,
    sessions_base: Option<&str>,
    name: &str,
    date: NaiveDate,
    report: &Report,
) -> Result<Vec<Written>> {
    let mut written = Vec::new();
    let mut bytes = Vec::new();
    encode(
        Format::Parquet,
        &report.batch.schema(),
        std::slice::from_ref(&report.batch),
        &mut bytes,
    )?;
    let location = result_location(&output.location, name, date);
    put_atomically(&engine.ctx, &Location::parse(&location)?, bytes).await?;
    written.push(Written {
        report: name.to_string(),
        table: "report",
        location,
        rows: report.batch.num_rows(),
    });
    if let (Some(base), Some((schema, batches))) = (sessions_base, &report.sessions) {
        let mut bytes = Vec::new();
        encode(Format::Parquet, schema, batches, &mut bytes)?;
        let location = result_location(base, name, date);
        put_atomically(&engine.ctx, &Location::parse(&location)?, bytes).await?;
        written.push(Written {
            report: name.to_string(),
            table: "sessions",
            location,
            rows: batches.iter().map(|b| b.num_rows()).sum(),
        });
    }
    Ok(written)
}

/// Delta results: the report's partition `(report, report_date)` of the
/// report table, and its sessions (partitions `(report, start_date)` of the
/// period's days) of the sessions table, each replaced in one commit.
#[cfg(feature = "delta")]
async fn write_delta_results(
    engine: &Engine,
    output: &OutputConfig,
    sessions_base: Option<&str>,
    name: &str,
    (from, to): (NaiveDate, NaiveDate),
    settings: &Settings,
    report: &Report,
) -> Result<Vec<Written>> {
    use crate::tables::delta;
    let mut written = Vec::new();
    let location = Location::parse(&output.location)?;
    crate::io::readonly::Inputs::of(&engine.ctx).check_output(&location)?;
    let batch = delta::report_partition(&report.batch, name, to)?;
    let version = delta::replace_where(
        &engine.ctx,
        &location,
        &batch.schema(),
        vec![batch.clone()],
        &["report", "report_date"],
        delta::report_predicate(name, to),
    )
    .await?;
    written.push(Written {
        report: name.to_string(),
        table: "report",
        location: format!("{} (Delta version {version})", output.location),
        rows: batch.num_rows(),
    });
    if let (Some(base), Some((schema, batches))) = (sessions_base, &report.sessions) {
        let location = Location::parse(base)?;
        crate::io::readonly::Inputs::of(&engine.ctx).check_output(&location)?;
        let parts = batches
            .iter()
            .map(|b| delta::sessions_partition(b, name, settings.tz))
            .collect::<Result<Vec<_>>>()?;
        let empty = datafusion::arrow::array::RecordBatch::new_empty(schema.clone());
        let schema = delta::sessions_partition(&empty, name, settings.tz)?.schema();
        let rows = parts.iter().map(|b| b.num_rows()).sum();
        let version = delta::replace_where(
            &engine.ctx,
            &location,
            &schema,
            parts,
            &["report", "start_date"],
            delta::sessions_predicate(name, from, to),
        )
        .await?;
        written.push(Written {
            report: name.to_string(),
            table: "sessions",
            location: format!("{base} (Delta version {version})"),
            rows,
        });
    }
    Ok(written)
}

#[cfg(not(feature = "delta"))]
async fn write_delta_results(
    _engine: &Engine,
    _output: &OutputConfig,
    _sessions_base: Option<&str>,
    _name: &str,
    _days: (NaiveDate, NaiveDate),
    _settings: &Settings,
    _report: &Report,
) -> Result<Vec<Written>> {
    Err(Error::usage(
        "[output] format = \"delta\": this build has no Delta Lake support (feature `delta`)",
    ))
}
