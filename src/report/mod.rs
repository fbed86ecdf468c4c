//! The support funnel report (spec §3–§5): every section, both periods, one
//! tidy table.
//!
//! How it runs, on a context of its own ([`run_report`]):
//! 1. the default period is placed by the latest valid event;
//! 2. the report's sessions, their conversations (tagged with their period
//!    once, there) and the event counts become `report_sessions`,
//!    `report_conversations` and `report_event_counts`, with only the
//!    columns the sections read when the report alone is asked for
//!    ([`columns_sections_read`]). In this process
//!    they are read from the operators ([`crate::tables::native`]): one scan of
//!    `events`, partitioned by key, counted in the memory pool and spilled
//!    when it refuses. On a cluster the views of `queries/views/` run
//!    first, once each, in order ([`VIEW_STEPS`]), each written to the
//!    shared scratch location ([`Intermediates`]) and put in place of its
//!    view for the steps after it;
//! 3. the proactive deliveries of both periods, filtered, are materialized;
//! 4. each section is one SQL file in `queries/report/` computing both periods
//!    in one pass over those tables; period bounds and filter values are
//!    bound as named DataFusion placeholders (`$cur_start`, `$tags`, …),
//!    never pasted;
//! 5. the rows are assembled in the spec's order with `delta` and `delta_pct`.
//!
//! A detail run ([`run_details`], [`detail`]) takes steps 1–3, then lists
//! the items behind a metric instead of step 4.

pub mod detail;
pub mod table_function;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::physical_plan::{collect, ExecutionPlan};
use datafusion::prelude::SessionContext;

use crate::engine::context::Engine;
use crate::engine::progress::{self, ProgressRef};
use crate::engine::query::{self, Params};
use crate::error::{Error, Result};
use crate::functions::timestamps;
use crate::settings::location::Location;
use crate::settings::period::Periods;
use crate::tables::views;

/// Days in the default period (without `--from/--to`).
pub const DEFAULT_DAYS: i64 = 28;

/// What the report is asked for.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    /// First local day (inclusive); with `to`, or neither.
    pub from: Option<NaiveDate>,
    /// Last local day (exclusive).
    pub to: Option<NaiveDate>,
    /// Time zone the days are read in; UTC when `None`.
    pub tz: Option<Tz>,
    /// Proactive filter: deliveries having any of these tags.
    pub tags: Vec<String>,
    /// Proactive filter: deliveries of any of these content types.
    pub content_types: Vec<String>,
    /// Proactive filter: deliveries from any of these senders.
    pub senders: Vec<String>,
    /// Told about each step and the rows it reads; `None` for silence.
    pub progress: Option<ProgressRef>,
    /// Also return the sessions that start in the current period.
    pub keep_sessions: bool,
    /// The current time, which the default period never goes past (see
    /// [`Anchor`]); the clock when `None` (tests fix it).
    pub now: Option<DateTime<Utc>>,
}

/// What placed the default period (no `from`/`to`): the latest valid event
/// dated up to now. Events dated after now are left out of placing it, so a
/// few rows with a wrong clock (a year 2200 `ts`) cannot move the period to
/// where there is no data; they are counted here, and in every metric of a
/// period that holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    /// The latest valid event not after `now`.
    pub latest: DateTime<Utc>,
    /// The instant taken as now.
    pub now: DateTime<Utc>,
    /// Valid events dated after `now`.
    pub future_events: u64,
}

/// A section of the report: its name and its SQL. The section's metrics
/// are the SQL's result columns other than `period` and `segment`, in
/// column order: the SQL file is the one list of them.
struct Section {
    name: &'static str,
    sql: &'static str,
}

/// The sections, in the spec's order.
const SECTIONS: &[Section] = &[
    Section {
        name: "funnel",
        sql: include_str!("../../queries/report/01_funnel.sql"),
    },
    Section {
        name: "sessions",
        sql: include_str!("../../queries/report/02_sessions.sql"),
    },
    Section {
        name: "proactive",
        sql: include_str!("../../queries/report/03_proactive.sql"),
    },
    Section {
        name: "self_serve",
        sql: include_str!("../../queries/report/04_self_serve.sql"),
    },
    Section {
        name: "human",
        sql: include_str!("../../queries/report/05_human.sql"),
    },
];

/// The name of the data quality section, computed by [`DATA_QUALITY_SQL`].
const DATA_QUALITY: &str = "data_quality";

/// Result columns of a section's SQL that are not metrics.
const KEY_COLUMNS: &[&str] = &["period", "segment"];

/// The segments of the `human` section, in output order.
const HUMAN_SEGMENTS: &[&str] = &["after_self_serve", "from_start"];

/// The default period's queries (named statements).
const DEFAULT_PERIOD_SQL: &str = include_str!("../../queries/report/00_default_period.sql");
const DEFAULT_PERIOD_FILE: &str = "queries/report/00_default_period.sql";
const SESSION_ACTIONS_SQL: &str = include_str!("../../queries/report/00_session_actions.sql");
const REPORT_SESSIONS_SQL: &str = include_str!("../../queries/report/00_report_sessions.sql");
const REPORT_CONVERSATIONS_SQL: &str =
    include_str!("../../queries/report/00_report_conversations.sql");
const REPORT_EVENT_COUNTS_SQL: &str =
    include_str!("../../queries/report/00_report_event_counts.sql");
const REPORT_MESSAGES_SQL: &str = include_str!("../../queries/report/00_report_messages.sql");
const DATA_QUALITY_SQL: &str = include_str!("../../queries/report/06_data_quality.sql");
const REPORT_ARTICLE_VIEWS_SQL: &str =
    include_str!("../../queries/report/00_report_article_views.sql");

/// The relations over the report's tables that a section and the detail
/// both read: views, so each rule they decide is written once.
const REPORT_VIEWS: &[(&str, &str)] = &[
    (
        "report_people",
        include_str!("../../queries/report/00_report_people.sql"),
    ),
    (
        "report_human",
        include_str!("../../queries/report/00_report_human.sql"),
    ),
];

/// The report: its periods and the tidy table (spec §5).
#[derive(Debug, Clone)]
pub struct Report {
    /// The periods it covers.
    pub periods: Periods,
    /// One row per (section, metric, segment).
    pub batch: RecordBatch,
    /// The current period's sessions (the `sessions` view's columns), when
    /// asked for with [`ReportOptions::keep_sessions`].
    pub sessions: Option<(SchemaRef, Vec<RecordBatch>)>,
    /// What placed the period, when it was the default one.
    pub anchor: Option<Anchor>,
}

/// The output schema of spec §5.
pub fn report_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("section", DataType::Utf8, false),
        Field::new("metric", DataType::Utf8, false),
        Field::new("segment", DataType::Utf8, true),
        Field::new("period_start", ts.clone(), false),
        Field::new("period_end", ts, false),
        Field::new("current", DataType::Float64, true),
        Field::new("previous", DataType::Float64, true),
        Field::new("delta", DataType::Float64, true),
        Field::new("delta_pct", DataType::Float64, true),
    ]))
}

/// One output row before it becomes Arrow.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Section name.
    pub section: &'static str,
    /// Metric name.
    pub metric: String,
    /// Segment, if the metric has one.
    pub segment: Option<String>,
    /// Value in the current period.
    pub current: Option<f64>,
    /// Value in the previous period.
    pub previous: Option<f64>,
}

impl Row {
    /// `current - previous`, when both are known.
    pub fn delta(&self) -> Option<f64> {
        Some(self.current? - self.previous?)
    }

    /// The delta in percent of `previous`, when that is known and not zero.
    pub fn delta_pct(&self) -> Option<f64> {
        let prev = self.previous?;
        if prev == 0.0 {
            return None;
        }
        Some(self.delta()? / prev * 100.0)
    }
}

/// A timestamp bound in the unit and zone of a column, so that placeholders
/// compare with it without a cast.
fn ts_scalar(t: DateTime<Utc>, dt: &DataType) -> Result<ScalarValue> {
    let unit = timestamps::unit_of(dt);
    Ok(timestamps::scalar(
        Some(ts_ticks(t, dt)?),
        unit,
        Some(Arc::from("UTC")),
    ))
}

/// An instant in the ticks of a timestamp type.
fn ts_ticks(t: DateTime<Utc>, dt: &DataType) -> Result<i64> {
    timestamps::to_ticks(t, timestamps::unit_of(dt))
        .ok_or_else(|| Error::usage(format!("{t} is out of the timestamp range")))
}

/// Refuses periods that `column` (of timestamp type `dt`) cannot express:
/// only nanoseconds have a narrow range (1677 to 2262). The message names the
/// dates the user gave and the previous period they imply.
fn check_period(periods: &Periods, dt: &DataType, column: &str) -> Result<()> {
    let fits = |t: DateTime<Utc>| ts_ticks(t, dt).is_ok();
    if fits(periods.previous.start) && fits(periods.current.end) {
        return Ok(());
    }
    let day = |d: NaiveDate| d.format("%Y-%m-%d").to_string();
    let at = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    let prev_from = periods.from - chrono::Duration::days(periods.days());
    Err(Error::usage(format!(
        "the period {}..{} (compared with {}..{}) reaches outside what `{column}` can hold: \
         it is stored in nanoseconds, from {} to {}; choose --from and --to within that range",
        day(periods.from),
        day(periods.to),
        day(prev_from),
        day(periods.from),
        at(DateTime::from_timestamp_nanos(i64::MIN)),
        at(DateTime::from_timestamp_nanos(i64::MAX)),
    )))
}

/// The instant of `ticks` of a timestamp type.
fn ticks_to_time(ticks: i64, dt: &DataType) -> Option<DateTime<Utc>> {
    timestamps::from_ticks(ticks, timestamps::unit_of(dt))
}

fn string_list(values: &[String]) -> ScalarValue {
    let items: Vec<ScalarValue> = values
        .iter()
        .map(|v| ScalarValue::Utf8(Some(v.clone())))
        .collect();
    ScalarValue::List(ScalarValue::new_list_nullable(&items, &DataType::Utf8))
}

fn column_type(engine: &Engine, table: &str, column: &str) -> Result<DataType> {
    let info = engine
        .tables
        .iter()
        .find(|t| t.name == table)
        .ok_or_else(|| Error::usage(format!("the report needs the `{table}` table")))?;
    Ok(info.schema.field_with_name(column)?.data_type().clone())
}

/// Where the report keeps its intermediate tables.
///
/// Under `--memory-limit`, and for the SQL views' steps, they are Parquet
/// files in a private directory under the temp dir (`--temp-dir`), removed
/// when the report ends or fails, so they hold no memory. Otherwise the
/// report's tables (its sessions, conversations and deliveries: small next
/// to the history) stay in memory. On a cluster each step is written by the executors into a
/// directory they all reach (`[engine] scratch`), and the next step's plan
/// reads it there: no intermediate row passes through the client.
enum Intermediates<'a> {
    Memory,
    Disk(crate::io::scratch::TempDir),
    Shared(&'a crate::io::scratch::SharedDir),
}

impl Intermediates<'_> {
    fn on_disk(engine: &Engine) -> Result<Self> {
        let base = engine
            .options
            .temp_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        Ok(Intermediates::Disk(crate::io::scratch::temp_dir_in(
            &base,
            "supportfunnel-report-",
        )?))
    }

    /// Runs `sql` with the parameters and registers the result as table
    /// `name` of `ctx` (in place of the view of that name, if any), with
    /// only the columns `kept` lists for it, if any ([`Kept`]). Returns
    /// the rows read (the rows written on a cluster).
    async fn materialize(
        &self,
        ctx: &SessionContext,
        name: &str,
        sql: &str,
        params: &Params,
        kept: &Kept,
        progress: Option<&ProgressRef>,
    ) -> Result<usize> {
        let df = ctx.sql(sql).await?.with_param_values(params.clone())?;
        let df = match kept.get(name) {
            Some(columns) => {
                let df =
                    df.select_columns(&columns.iter().map(String::as_str).collect::<Vec<_>>())?;
                match self {
                    Intermediates::Shared(_) => df,
                    _ => labels_as_dictionary(df)?,
                }
            }
            None => df,
        };
        if let Intermediates::Shared(dir) = self {
            let url = dir.child(name);
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            // (A step the cluster cancelled is sent again by its client,
            // `cluster::jobs`; what an earlier attempt wrote is settled.)
            let written = df
                .write_parquet(
                    &url,
                    DataFrameWriteOptions::new(),
                    Some(crate::io::scratch::parquet_options()),
                )
                .await?;
            let rows = written
                .iter()
                .filter_map(|b| {
                    b.column(0)
                        .as_primitive_opt::<datafusion::arrow::datatypes::UInt64Type>()
                })
                .flat_map(|c| c.iter().flatten())
                .sum::<u64>();
            // The step reads exactly the files of the write kept: a task
            // of a cancelled attempt may still finish writing into the
            // directory after it was settled.
            let files = settle_step(ctx, name, &url, rows).await?;
            let table = match files.is_empty() {
                true => parquet_directory(&url, schema)?,
                false => parquet_files(&url, &files, schema)?,
            };
            ctx.deregister_table(name)?;
            ctx.register_table(name, table)?;
            return Ok(rows as usize);
        }
        let plan = df.create_physical_plan().await?;
        let schema = plan.schema();
        let table: Arc<dyn TableProvider> = match self {
            Intermediates::Disk(dir) => {
                let path = dir.path().join(name);
                std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
                let url = format!("{}/", path.to_string_lossy());
                let run = ctx.write_parquet(
                    Arc::clone(&plan),
                    &url,
                    Some(crate::io::scratch::writer_properties()),
                );
                run_reporting_scans(&plan, run, progress).await?;
                parquet_directory(&url, schema)?
            }
            _ => {
                let run = collect(Arc::clone(&plan), ctx.task_ctx());
                let batches = run_reporting_scans(&plan, run, progress).await?;
                Arc::new(MemTable::try_new(schema, vec![batches])?)
            }
        };
        ctx.deregister_table(name)?;
        ctx.register_table(name, table)?;
        Ok(progress::rows_read(&plan))
    }
}

/// The columns of the report's tables that hold one of a few labels: the
/// period and a status, spelled out on every row (a third of
/// `report_sessions`' memory, docs/PERFORMANCE.md, "Memory").
const LABEL_COLUMNS: &[&str] = &["period", "status"];

/// `df` with its [`LABEL_COLUMNS`] as dictionaries: each batch holds its
/// labels once and a small key per row. Only for tables that the sections
/// alone read (pruned ones): the sections compare, group and join on them
/// as on strings, and no user sees their type.
fn labels_as_dictionary(
    df: datafusion::dataframe::DataFrame,
) -> Result<datafusion::dataframe::DataFrame> {
    use datafusion::common::Column;
    use datafusion::logical_expr::{cast, Expr};
    let label = DataType::Dictionary(Box::new(DataType::Int16), Box::new(DataType::Utf8));
    let columns: Vec<Expr> = df
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let c = Expr::Column(Column::new_unqualified(f.name()));
            if LABEL_COLUMNS.contains(&f.name().as_str()) && f.data_type() == &DataType::Utf8 {
                cast(c, label.clone()).alias(f.name())
            } else {
                c
            }
        })
        .collect();
    Ok(df.select(columns)?)
}

/// Leaves in a step's directory on the cluster only the files of the write
/// that succeeded. A step's result is written by one task (DataFusion
/// writes a query's files from one partition), its files named
/// `<write id>_<n>.parquet` with a write id of its own. When the task runs
/// twice (its executor was lost while writing or before it said it was
/// done), the first attempt's files stay beside the second's and would be
/// read twice: numbers counted double. The attempt whose files hold
/// exactly the `rows` the job reported is kept and the others removed; when
/// none does, the step fails rather than give a wrong report. Returns the
/// names of the kept files (none when the step wrote no file).
async fn settle_step(
    ctx: &SessionContext,
    name: &str,
    url: &str,
    rows: u64,
) -> Result<Vec<String>> {
    use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    let table = ListingTableUrl::parse(url)?;
    let store = ctx.runtime_env().object_store(table.object_store())?;
    let files: Vec<object_store::ObjectMeta> =
        store.list(Some(table.prefix())).try_collect().await?;
    // write id -> (rows, newest write, files); rows None when a footer
    // cannot be read (an attempt killed half-way).
    let mut attempts: BTreeMap<String, (Option<u64>, i64, Vec<object_store::path::Path>)> =
        BTreeMap::new();
    for meta in &files {
        let Some(file) = meta.location.filename() else {
            continue;
        };
        let write_id = file.split('_').next().unwrap_or(file).to_string();
        let footer = DFParquetMetadata::new(store.as_ref(), meta)
            .fetch_metadata()
            .await
            .ok()
            .map(|m| m.file_metadata().num_rows().max(0) as u64);
        let entry = attempts
            .entry(write_id)
            .or_insert((Some(0), i64::MIN, vec![]));
        entry.0 = entry.0.zip(footer).map(|(a, b)| a + b);
        entry.1 = entry
            .1
            .max(meta.last_modified.timestamp_nanos_opt().unwrap_or(0));
        entry.2.push(meta.location.clone());
    }
    if attempts.is_empty() {
        return Ok(Vec::new());
    }
    let keep = attempts
        .iter()
        .filter(|(_, (r, _, _))| *r == Some(rows))
        .max_by_key(|(_, (_, newest, _))| *newest)
        .map(|(id, _)| id.clone())
        .ok_or_else(|| {
            Error::usage(format!(
                "step {name} of the report holds no complete copy of the {rows} rows the \
                 cluster reported (an executor was lost while writing it); the report is not \
                 trusted: run it again"
            ))
        })?;
    let mut kept = Vec::new();
    for (id, (_, _, paths)) in attempts {
        if id == keep {
            kept.extend(
                paths
                    .iter()
                    .filter_map(|p| p.filename().map(str::to_string)),
            );
            continue;
        }
        for path in paths {
            store.delete(&path).await?;
        }
    }
    Ok(kept)
}

/// The Parquet files `files` of directory `url`, as a table of `schema`.
fn parquet_files(url: &str, files: &[String], schema: SchemaRef) -> Result<Arc<dyn TableProvider>> {
    let base = url.trim_end_matches('/');
    let urls = files
        .iter()
        .map(|f| ListingTableUrl::parse(format!("{base}/{f}")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    parquet_table(urls, schema)
}

/// The Parquet files written into directory `url`, as a table of `schema`.
fn parquet_directory(url: &str, schema: SchemaRef) -> Result<Arc<dyn TableProvider>> {
    parquet_table(vec![ListingTableUrl::parse(url)?], schema)
}

/// The Parquet files under `urls` (files or directories), as a table of
/// `schema`.
fn parquet_table(urls: Vec<ListingTableUrl>, schema: SchemaRef) -> Result<Arc<dyn TableProvider>> {
    let options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// Drives `run` to completion, telling `progress` every [`progress::TICK`]
/// how many rows have been read so far (`rows()`).
async fn run_reporting_rows<T, E>(
    rows: impl Fn() -> usize,
    run: impl std::future::Future<Output = std::result::Result<T, E>>,
    progress: Option<&ProgressRef>,
) -> Result<T>
where
    Error: From<E>,
{
    let Some(progress) = progress else {
        return Ok(run.await?);
    };
    tokio::pin!(run);
    let mut tick = tokio::time::interval(progress::TICK);
    loop {
        tokio::select! {
            out = &mut run => return Ok(out?),
            _ = tick.tick() => progress.rows_read(rows()),
        }
    }
}

/// [`run_reporting_rows`] with the rows read by `plan`'s scans.
async fn run_reporting_scans<T, E>(
    plan: &Arc<dyn ExecutionPlan>,
    run: impl std::future::Future<Output = std::result::Result<T, E>>,
    progress: Option<&ProgressRef>,
) -> Result<T>
where
    Error: From<E>,
{
    run_reporting_rows(|| progress::rows_read(plan), run, progress).await
}

/// Runs a one-value query returning a timestamp as Int64 nanoseconds.
async fn query_i64(ctx: &SessionContext, sql: &str, params: &Params) -> Result<Option<i64>> {
    let b = query::collect_one(ctx, sql, params).await?;
    let col = b
        .column(0)
        .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    Ok((b.num_rows() == 1 && col.is_valid(0)).then(|| col.value(0)))
}

/// The latest valid event time not after `now`, and the number of valid
/// events after it, for the default period (the SQL path).
///
/// Looked for first in the last day of data only: `max(ts)` over all rows
/// comes from the Parquet footers, and `ts >= that - 1 day` lets the scan
/// skip every older row group. If that day holds a valid event, the latest
/// of them is the latest of all; otherwise the whole table is scanned.
async fn latest_event(
    ctx: &SessionContext,
    ts_type: &DataType,
    now: DateTime<Utc>,
) -> Result<(Option<DateTime<Utc>>, u64)> {
    let sql = |name| query::named_statement(DEFAULT_PERIOD_FILE, DEFAULT_PERIOD_SQL, name);
    let now_param = ("now", ts_scalar(now, ts_type)?);
    // Native ticks, not nanoseconds: this maximum includes rejected rows, and
    // an absurd timestamp there must not make the conversion fail.
    let ticks = query_i64(ctx, &sql("max_ticks"), &vec![]).await?;
    let since = ticks
        .and_then(|t| ticks_to_time(t, ts_type))
        .map(|t| t.min(now) - chrono::Duration::days(1));
    let recent = match since {
        Some(since) => {
            query_i64(
                ctx,
                &sql("latest_valid_since"),
                &vec![("since", ts_scalar(since, ts_type)?), now_param.clone()],
            )
            .await?
        }
        None => None,
    };
    let latest = match recent {
        Some(t) => Some(t),
        None => query_i64(ctx, &sql("latest_valid"), &vec![now_param.clone()]).await?,
    };
    // Row groups whose footer says nothing is after now are skipped.
    let future = query::collect_one(ctx, &sql("future_events"), &vec![now_param]).await?;
    let future = future
        .column(0)
        .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
        .value(0);
    Ok((
        latest.map(DateTime::from_timestamp_nanos),
        u64::try_from(future).unwrap_or(0),
    ))
}

/// The [`Anchor`] of the default period (`None` when `from`/`to` are
/// given), or why there is none.
fn default_anchor(
    opts: &ReportOptions,
    latest: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    future_events: u64,
) -> Result<Option<Anchor>> {
    if opts.from.is_some() || opts.to.is_some() {
        return Ok(None);
    }
    match latest {
        Some(latest) => Ok(Some(Anchor {
            latest,
            now,
            future_events,
        })),
        None if future_events > 0 => Err(Error::usage(format!(
            "every valid event is dated after now ({} events after {}), so there is no \
             default period; pass --from and --to",
            future_events,
            now.format("%Y-%m-%d %H:%M:%S UTC")
        ))),
        None => Err(Error::usage(
            "the events table has no valid event to place the default period; pass --from and --to",
        )),
    }
}

/// The periods asked for, or, without `--from/--to`, the last
/// [`DEFAULT_DAYS`] full days before the day of the anchor's latest event.
fn periods_for(opts: &ReportOptions, anchor: Option<Anchor>) -> Result<Periods> {
    let tz = opts.tz.unwrap_or(Tz::UTC);
    match (opts.from, opts.to, anchor) {
        (Some(from), Some(to), _) => Periods::new(from, to, tz),
        (None, None, Some(a)) => Periods::trailing(a.latest, DEFAULT_DAYS, tz),
        (None, None, None) => Err(Error::usage(
            "the events table has no valid event to place the default period; pass --from and --to",
        )),
        _ => Err(Error::usage(
            "--from and --to go together (or give neither for the last 28 full days)",
        )),
    }
}

/// Memory limit per plan partition when the SQL views run the report
/// under `--memory-limit`.
pub const SQL_BYTES_PER_PARTITION: usize = 2 << 30;

/// Whether the derived relations of `engine` are the operators
/// ([`crate::tables::native`]) rather than the SQL views run step by step (when
/// asked for with [`crate::EngineOptions::sql_views`]). On a cluster the
/// executors run the operators.
pub(crate) fn uses_operators(engine: &Engine) -> bool {
    !engine.options.sql_views
}

/// Whether the operators' build is made in this process (not on a
/// cluster's executors), so that what it knows can be asked of it here.
pub(crate) fn builds_here(engine: &Engine) -> bool {
    uses_operators(engine) && engine.options.cluster.is_none()
}

/// A context of the report's own: the user's configuration, runtime (memory
/// pool, spill directory), functions and tables, but a catalog of its own, so
/// the intermediate tables it registers are never seen by the user's context,
/// whatever happens during the report.
async fn private_context(engine: &Engine) -> Result<SessionContext> {
    let user = &engine.ctx;
    // A catalog of its own (the user's configuration says not to create one:
    // the user's context already had it when it was copied).
    // The operators' cache is the user's (in the configuration): the
    // report and the user's queries share one build per state of the files.
    let config = user
        .copied_config()
        .with_create_default_catalog_and_schema(true);
    let ctx = SessionContext::new_with_state(crate::tables::native::node::session_state(
        config,
        user.runtime_env(),
    ));
    let ctx = crate::engine::context::on_cluster(ctx, &engine.options).await?;
    crate::functions::register_functions(&ctx);
    for t in &engine.tables {
        ctx.register_table(t.name.as_str(), user.table_provider(t.name.as_str()).await?)?;
    }
    views::register_event_views(&ctx).await?;
    if uses_operators(engine) {
        crate::tables::native::register_views(&ctx).await?;
    }
    views::register_message_views(&ctx).await?;
    Ok(ctx)
}

/// Tells `progress` about one step.
struct Steps<'a> {
    progress: Option<&'a ProgressRef>,
    total: usize,
    done: usize,
}

impl Steps<'_> {
    fn start(&mut self, name: &str) -> std::time::Instant {
        self.done += 1;
        if let Some(p) = self.progress {
            p.step_started(self.done, self.total, name);
        }
        std::time::Instant::now()
    }

    fn finish(&self, name: &str, rows: usize, started: std::time::Instant) {
        if let Some(p) = self.progress {
            p.step_finished(name, rows, started.elapsed());
        }
    }
}

/// What a run computes after the report's steps.
#[derive(Clone, Copy)]
enum Goal<'a> {
    /// The report's sections.
    Report,
    /// The items behind these metrics.
    Details(&'a [detail::DetailRequest]),
}

/// What a run gave.
enum Outcome {
    Report(Report),
    Details(Vec<detail::Detail>),
}

/// Computes the report over the engine's tables.
///
/// The report runs on a private context ([`private_context`]): nothing the
/// user's context holds changes, during the report or after it, even when it
/// fails; its intermediate files go with it.
pub async fn run_report(engine: &Engine, opts: &ReportOptions) -> Result<Report> {
    match run(engine, opts, Goal::Report).await? {
        Outcome::Report(r) => Ok(r),
        Outcome::Details(_) => Err(Error::Internal("a report run gave details".into())),
    }
}

/// The items behind each of `requests`' metrics, for the report `opts`
/// describes (same periods, zone and filters): the report's steps run
/// once for all of them, on a private context as for [`run_report`].
pub async fn run_details(
    engine: &Engine,
    opts: &ReportOptions,
    requests: &[detail::DetailRequest],
) -> Result<Vec<detail::Detail>> {
    match run(engine, opts, Goal::Details(requests)).await? {
        Outcome::Details(d) => Ok(d),
        Outcome::Report(_) => Err(Error::Internal("a detail run gave a report".into())),
    }
}

/// One run: in turn with the other bounded runs under a memory limit, its
/// steps in the cluster's scratch on a cluster, its errors explained.
async fn run(engine: &Engine, opts: &ReportOptions, goal: Goal<'_>) -> Result<Outcome> {
    let turns = engine
        .ctx
        .state()
        .config()
        .get_extension::<crate::engine::context::Turns>();
    let _turn = match (&turns, engine.options.memory_limit) {
        (Some(t), Some(_)) => Some(t.0.lock().await),
        _ => None,
    };
    let Some(cluster) = &engine.options.cluster else {
        return compute_report(engine, opts, None, goal)
            .await
            .map_err(|e| explain_memory(engine, e));
    };
    let shared = shared_scratch(engine)?;
    let result = compute_report(engine, opts, Some(&shared), goal).await;
    // Removed whatever happened; a failure to remove is reported only when
    // the report itself succeeded (its own error says more).
    let removed = shared.remove().await;
    #[cfg(feature = "cluster")]
    let result =
        result.map_err(|e| crate::cluster::client::explain(cluster, &engine.options.tables, e));
    #[cfg(not(feature = "cluster"))]
    let _ = cluster;
    let outcome = result?;
    removed?;
    Ok(outcome)
}

/// A private directory for the report's steps under the cluster's scratch
/// location, which every executor reads and writes.
fn shared_scratch(engine: &Engine) -> Result<crate::io::scratch::SharedDir> {
    let cluster = engine.options.cluster.as_ref().map(ToString::to_string);
    let base = engine.options.scratch.as_ref().ok_or_else(|| {
        Error::usage(format!(
            "the report on cluster {} needs a scratch location every executor can read and \
             write: give --scratch s3://bucket/prefix or [engine] scratch (docs/CLUSTER.md)",
            cluster.unwrap_or_default()
        ))
    })?;
    crate::io::readonly::Inputs::of(&engine.ctx)
        .check_output(base)
        .map_err(|e| Error::ReadOnly(format!("--scratch: {e}")))?;
    let store = match base {
        Location::Remote(url) => {
            crate::io::storage::ensure_store(&engine.ctx, url)?;
            let table_url = ListingTableUrl::parse(url.as_str())?;
            Some(
                engine
                    .ctx
                    .runtime_env()
                    .object_store(table_url.object_store())?,
            )
        }
        Location::Local(_) => None,
    };
    crate::io::scratch::SharedDir::create(base, "supportfunnel-report-", store)
}

fn events_rows(engine: &Engine) -> u64 {
    engine
        .tables
        .iter()
        .filter(|t| t.name == crate::tables::EVENTS.name)
        .map(|t| t.rows)
        .sum()
}

/// Whole MiB, rounded up, so the figure given always suffices and can be
/// passed back as it is (`--memory-limit 2505MiB`).
fn iec(bytes: u64) -> String {
    if bytes < 1 << 20 {
        return format!("{bytes}B");
    }
    format!("{}MiB", bytes.div_ceil(1 << 20))
}

/// A run that the memory pool refused under `--memory-limit`, said in one
/// line with a limit that works for this many events
/// ([`crate::tables::native::build::least_memory_limit`]), never with DataFusion's
/// own advice (which names its settings, not ours).
fn explain_memory(engine: &Engine, e: Error) -> Error {
    let Some(limit) = engine.options.memory_limit else {
        return e;
    };
    if !e.is_resources_exhausted() {
        return e;
    }
    let rows = events_rows(engine);
    let needed = crate::tables::native::build::least_memory_limit(rows).max(limit as u64 * 2);
    Error::MemoryLimit(format!(
        "the report over {rows} events does not fit in --memory-limit {}: a limit of {} or \
         more works for this many events",
        iec(limit as u64),
        iec(needed)
    ))
}

/// The report (or the details), its intermediate tables in `shared` when
/// on a cluster.
async fn compute_report(
    engine: &Engine,
    opts: &ReportOptions,
    shared: Option<&crate::io::scratch::SharedDir>,
    goal: Goal<'_>,
) -> Result<Outcome> {
    let ctx = private_context(engine).await?;
    let ts_type = column_type(engine, "events", "ts")?;
    let sent_type = column_type(engine, "messages", "sent_at")?;
    let progress = opts.progress.as_ref();
    // Data quality details read the whole input, not the periods' steps.
    let steps_needed = match goal {
        Goal::Report => true,
        Goal::Details(requests) => requests.iter().any(|r| !r.metric.whole_input()),
    };
    let event_steps = REPORT_STEPS.len() + VIEW_STEPS.len() * usize::from(!uses_operators(engine));
    let mut steps = Steps {
        progress,
        total: if steps_needed { event_steps + 3 } else { 2 },
        done: 0,
    };
    let (periods, anchor) = report_periods(&ctx, opts, &ts_type, &mut steps).await?;
    check_period(&periods, &sent_type, "messages.sent_at")?;
    let params = message_params(&periods, &sent_type, &ts_type, opts)?;
    let store = match shared {
        Some(dir) => Intermediates::Shared(dir),
        // The report's tables are small next to the history; under a
        // memory limit they still go to disk, where they need no memory.
        None if uses_operators(engine) && engine.options.memory_limit.is_none() => {
            Intermediates::Memory
        }
        None => Intermediates::on_disk(engine)?,
    };
    if steps_needed {
        let mut message_progress = Steps {
            progress,
            total: steps.total,
            done: steps.done + event_steps,
        };
        let kept = match goal {
            Goal::Report => columns_sections_read(&ctx, &params, opts.keep_sessions).await?,
            Goal::Details(_) => Kept::new(),
        };
        let events = report_tables(engine, &ctx, &periods, &ts_type, &store, &kept, &mut steps);
        let messages = message_steps(&ctx, &store, &params, &kept, &mut message_progress);
        // On a cluster the message steps (which need no build) run beside the
        // event steps, on the executors the build leaves free; the scheduler
        // sends every operator task to the executor holding the build
        // (`cluster::scheduler`). In one process the build takes every core:
        // one after the other.
        if shared.is_some() {
            tokio::try_join!(events, messages)?;
        } else {
            events.await?;
            messages.await?;
        }
        steps.done = message_progress.done;
        for (name, sql) in REPORT_VIEWS {
            let view = ctx.sql(sql).await?.into_view();
            ctx.register_table(*name, view)?;
        }
    }
    if engine.options.memory_limit.is_some() && engine.options.cluster.is_none() {
        // The sections and details join the report's tables: sort-merge
        // joins spill, hash joins cannot (only this private context is
        // switched).
        ctx.state_ref()
            .write()
            .config_mut()
            .options_mut()
            .optimizer
            .prefer_hash_join = false;
    }
    let outcome = match goal {
        Goal::Report => {
            let (batch, sessions) =
                report_sections(&ctx, opts, &params, &periods, shared.is_some(), &mut steps)
                    .await?;
            Outcome::Report(Report {
                periods,
                batch,
                sessions,
                anchor,
            })
        }
        Goal::Details(requests) => {
            let ctx = DetailContext {
                ctx: &ctx,
                periods: &periods,
                ts_type: &ts_type,
                sent_type: &sent_type,
                params: &params,
            };
            Outcome::Details(ctx.list(requests, &mut steps).await?)
        }
    };
    drop(store);
    Ok(outcome)
}

/// The sections over the registered report tables: the tidy batch, and the
/// current period's sessions when asked for.
async fn report_sections(
    ctx: &SessionContext,
    opts: &ReportOptions,
    params: &Params,
    periods: &Periods,
    together: bool,
    steps: &mut Steps<'_>,
) -> Result<(RecordBatch, Option<(SchemaRef, Vec<RecordBatch>)>)> {
    let started = steps.start("sections");
    let rows = compute_sections(ctx, params, together).await?;
    steps.finish("sections", 0, started);
    let sessions = if opts.keep_sessions {
        let df = ctx
            .sql("SELECT * EXCLUDE (period) FROM report_sessions WHERE period = 'current'")
            .await?;
        let plan = df.create_physical_plan().await?;
        let schema = plan.schema();
        Some(sort_sessions((
            schema,
            collect(plan, ctx.task_ctx()).await?,
        ))?)
    } else {
        None
    };
    Ok((to_batch(&rows, periods)?, sessions))
}

/// What a detail run lists from, after the report's steps.
struct DetailContext<'a> {
    ctx: &'a SessionContext,
    periods: &'a Periods,
    ts_type: &'a DataType,
    sent_type: &'a DataType,
    params: &'a Params,
}

impl DetailContext<'_> {
    /// Each request's rows, in order.
    async fn list(
        &self,
        requests: &[detail::DetailRequest],
        steps: &mut Steps<'_>,
    ) -> Result<Vec<detail::Detail>> {
        let started = steps.start("detail");
        if requests
            .iter()
            .any(|r| detail::needs_article_views(r.metric))
        {
            self.register_article_views().await?;
        }
        let schema = detail::detail_schema(self.ts_type, self.sent_type);
        let mut out = Vec::with_capacity(requests.len());
        let mut rows = 0;
        for req in requests {
            let batches = detail::list(self.ctx, req, &schema, self.params).await?;
            rows += batches.iter().map(RecordBatch::num_rows).sum::<usize>();
            out.push(detail::Detail {
                periods: self.periods.clone(),
                schema: Arc::clone(&schema),
                batches,
            });
        }
        steps.finish("detail", rows, started);
        Ok(out)
    }

    /// `report_article_views` for the periods: the views of the report's
    /// sessions, from the current period's end plus a session's length.
    async fn register_article_views(&self) -> Result<()> {
        let (cur, prev) = (self.periods.current, self.periods.previous);
        let views_end = cur.end + chrono::Duration::seconds(crate::rules::SESSION_SECONDS);
        let params: Params = vec![
            ("prev_start", ts_scalar(prev.start, self.ts_type)?),
            ("views_end", ts_scalar(views_end, self.ts_type)?),
        ];
        let view = self
            .ctx
            .sql(REPORT_ARTICLE_VIEWS_SQL)
            .await?
            .with_param_values(params)?
            .into_view();
        self.ctx.register_table("report_article_views", view)?;
        Ok(())
    }
}

/// The message steps, in order: the repeated message ids, then the
/// deliveries the proactive section reads.
const MESSAGE_STEPS: &[(&str, &str)] = &[
    ("message_checks", "SELECT * FROM message_checks"),
    ("report_messages", REPORT_MESSAGES_SQL),
];

/// The message steps: the checks, then the report's deliveries.
async fn message_steps(
    ctx: &SessionContext,
    store: &Intermediates<'_>,
    params: &Params,
    kept: &Kept,
    steps: &mut Steps<'_>,
) -> Result<()> {
    for &(name, sql) in MESSAGE_STEPS {
        let started = steps.start(name);
        let rows = store
            .materialize(ctx, name, sql, params, kept, steps.progress)
            .await?;
        if name == "message_checks" {
            // clean_messages reads the materialized checks from now on.
            views::register_views_with(ctx, &views::MESSAGE_VIEWS[1..], &HashMap::new()).await?;
        }
        steps.finish(name, rows, started);
    }
    Ok(())
}

/// Sessions by user, then start: they are computed in parallel pieces
/// in no fixed order, and a written result must come out byte-identical
/// when run again. A user's sessions never share a start.
fn sort_sessions(
    (schema, batches): (SchemaRef, Vec<RecordBatch>),
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    use datafusion::arrow::compute::{lexsort_to_indices, take_record_batch, SortColumn};
    let all = concat_batches(&schema, &batches)?;
    let key = |name: &str| -> Result<SortColumn> {
        Ok(SortColumn {
            values: Arc::clone(all.column(schema.index_of(name)?)),
            options: None,
        })
    };
    let order = lexsort_to_indices(&[key("user_id")?, key("session_start")?], None)?;
    Ok((Arc::clone(&schema), vec![take_record_batch(&all, &order)?]))
}

/// The parameters of the message and section queries.
fn message_params(
    periods: &Periods,
    sent_type: &DataType,
    ts_type: &DataType,
    opts: &ReportOptions,
) -> Result<Params> {
    let (cur, prev) = (periods.current, periods.previous);
    Ok(vec![
        ("msg_prev_start", ts_scalar(prev.start, sent_type)?),
        ("msg_cur_start", ts_scalar(cur.start, sent_type)?),
        ("msg_cur_end", ts_scalar(cur.end, sent_type)?),
        ("tags", string_list(&opts.tags)),
        ("content_types", string_list(&opts.content_types)),
        ("senders", string_list(&opts.senders)),
        (
            "ticks_per_second",
            ScalarValue::Float64(Some(crate::functions::timestamps::ticks_per_second(
                crate::functions::timestamps::unit_of(ts_type),
            ) as f64)),
        ),
    ])
}

/// The views the SQL path materializes, in order, before the report's own
/// tables: each runs once, is written to the step store and replaces its
/// view for the steps after it. With the operators none of them runs.
const VIEW_STEPS: &[(&str, &str)] = &[
    ("event_checks", "SELECT * FROM event_checks"),
    ("duplicate_winners", "SELECT * FROM duplicate_winners"),
    ("conversation_facts", "SELECT * FROM conversation_facts"),
    ("session_actions", SESSION_ACTIONS_SQL),
    ("conversations", "SELECT * FROM conversations"),
    ("sessions", "SELECT * FROM sessions"),
];

/// The columns each of the report's tables is materialized with, by table
/// name; a table not named keeps every column.
type Kept = HashMap<String, Vec<String>>;

/// The columns of the report's tables that the sections and the data
/// quality query read, directly or through [`REPORT_VIEWS`], as
/// DataFusion's projection pushdown finds them: the queries are planned
/// over empty tables of the same schemas, in a context of their own, and
/// each scan's columns (and its filters', if any) are collected; a view
/// that names more keeps what it names. A plain
/// report materializes those alone: the rest (the detail's and the
/// sessions table's columns) would only take memory, about half of
/// `report_sessions` (docs/PERFORMANCE.md, "Memory"). With `keep_sessions`
/// the sessions keep every column, for the sessions table.
async fn columns_sections_read(
    ctx: &SessionContext,
    params: &Params,
    keep_sessions: bool,
) -> Result<Kept> {
    let queries: Vec<&str> = SECTIONS
        .iter()
        .map(|s| s.sql)
        .chain([DATA_QUALITY_SQL])
        .collect();
    columns_read_by(ctx, &queries, params, keep_sessions).await
}

/// [`columns_sections_read`] for any `queries` over the report's tables
/// and views.
async fn columns_read_by(
    ctx: &SessionContext,
    queries: &[&str],
    params: &Params,
    keep_sessions: bool,
) -> Result<Kept> {
    let mut schemas: Vec<(&str, SchemaRef)> = Vec::new();
    let messages = ("messages", "SELECT * FROM messages");
    for (name, sql) in REPORT_STEPS.iter().chain(MESSAGE_STEPS).chain([&messages]) {
        schemas.push((
            name,
            Arc::new(ctx.sql(sql).await?.schema().as_arrow().clone()),
        ));
    }
    let planner = empty_tables(ctx, &schemas, &Kept::new()).await?;
    for (name, sql) in REPORT_VIEWS {
        let view = planner.sql(sql).await?.into_view();
        planner.register_table(*name, view)?;
    }
    let mut read: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    for sql in queries {
        scans_of(&planner, sql, params, &mut read).await?;
    }
    // A view names its columns when it is registered: one naming a column
    // that no section reads through it would not plan over the pruned
    // tables, so such a view reads every column it names.
    let pruned = empty_tables(ctx, &schemas, &kept_of(&schemas, &read, keep_sessions)).await?;
    for (_, sql) in REPORT_VIEWS {
        if pruned.sql(sql).await.is_err() {
            scans_of(&planner, sql, params, &mut read).await?;
        }
    }
    let kept = kept_of(&schemas, &read, keep_sessions);
    // The columns come from optimized plans, which can drop a column the
    // SQL names (a condition the optimizer found always true): every query
    // must still plan over the tables as they will be, else nothing is
    // pruned.
    let pruned = empty_tables(ctx, &schemas, &kept).await?;
    let mut plans = true;
    for (name, sql) in REPORT_VIEWS {
        match pruned.sql(sql).await {
            Ok(view) => {
                pruned.register_table(*name, view.into_view())?;
            }
            Err(_) => plans = false,
        }
    }
    for sql in queries {
        plans = plans
            && match pruned.sql(sql).await {
                Ok(df) => df.with_param_values(params.clone()).is_ok(),
                Err(_) => false,
            };
    }
    Ok(if plans { kept } else { Kept::new() })
}

/// The tables the data quality query reads whole beside the report's own.
const WHOLE_TABLES: &[&str] = &["message_checks", "messages"];

/// What a plain report keeps of each of its tables: the columns `read`
/// names, unless that is every column, none, a table of
/// [`WHOLE_TABLES`] or, with `keep_sessions`, the sessions.
fn kept_of(
    schemas: &[(&str, SchemaRef)],
    read: &HashMap<String, std::collections::HashSet<String>>,
    keep_sessions: bool,
) -> Kept {
    let mut kept = Kept::new();
    for (name, schema) in schemas {
        if WHOLE_TABLES.contains(name) || (keep_sessions && *name == "report_sessions") {
            continue;
        }
        let Some(columns) = read.get(*name).filter(|c| !c.is_empty()) else {
            continue;
        };
        let columns: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|f| columns.contains(f))
            .collect();
        if columns.len() < schema.fields().len() {
            kept.insert(name.to_string(), columns);
        }
    }
    kept
}

/// A planning context of its own holding empty tables of `schemas`, each
/// with the columns `kept` names for it (all when it names none).
async fn empty_tables(
    ctx: &SessionContext,
    schemas: &[(&str, SchemaRef)],
    kept: &Kept,
) -> Result<SessionContext> {
    // (A cluster client's configuration leaves the default catalog out.)
    let planner = SessionContext::new_with_config(
        ctx.copied_config()
            .with_create_default_catalog_and_schema(true),
    );
    for (name, schema) in schemas {
        let schema = match kept.get(*name) {
            Some(columns) => Arc::new(
                schema.project(
                    &columns
                        .iter()
                        .map(|c| schema.index_of(c))
                        .collect::<std::result::Result<Vec<_>, _>>()?,
                )?,
            ),
            None => Arc::clone(schema),
        };
        planner.register_table(*name, Arc::new(MemTable::try_new(schema, vec![vec![]])?))?;
    }
    Ok(planner)
}

/// Adds the columns each table scan of `sql`'s optimized plan reads
/// (its filters' too) to `read`, by table name.
async fn scans_of(
    planner: &SessionContext,
    sql: &str,
    params: &Params,
    read: &mut HashMap<String, std::collections::HashSet<String>>,
) -> Result<()> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::LogicalPlan;
    let plan = planner
        .sql(sql)
        .await?
        .with_param_values(params.clone())?
        .into_optimized_plan()?;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let columns = read.entry(scan.table_name.table().to_string()).or_default();
            columns.extend(
                scan.projected_schema
                    .fields()
                    .iter()
                    .map(|f| f.name().clone()),
            );
            for filter in &scan.filters {
                columns.extend(filter.column_refs().into_iter().map(|c| c.name.clone()));
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(())
}

/// The last of [`REPORT_STEPS`] that reads the build's buckets (through
/// `session_conversations`); `report_event_counts` reads only its counts.
const LAST_BUCKET_STEP: &str = "report_conversations";

/// The report's own tables, which the sections read.
const REPORT_STEPS: &[(&str, &str)] = &[
    ("report_sessions", REPORT_SESSIONS_SQL),
    ("report_conversations", REPORT_CONVERSATIONS_SQL),
    ("report_event_counts", REPORT_EVENT_COUNTS_SQL),
];

/// The periods and what placed them (the latest event, for the default
/// period).
async fn report_periods(
    ctx: &SessionContext,
    opts: &ReportOptions,
    ts_type: &DataType,
    steps: &mut Steps<'_>,
) -> Result<(Periods, Option<Anchor>)> {
    let started = steps.start("period");
    let anchor = match (opts.from, opts.to) {
        (None, None) => {
            let now = opts.now.unwrap_or_else(Utc::now);
            let (latest, future) = latest_event(ctx, ts_type, now).await?;
            default_anchor(opts, latest, now, future)?
        }
        _ => None,
    };
    steps.finish("period", 0, started);
    let periods = periods_for(opts, anchor)?;
    check_period(&periods, ts_type, "events.ts")?;
    Ok((periods, anchor))
}

/// The report's sessions, conversations and event counts as tables of
/// `ctx`, kept in `store`: read from the operators' relations; with the
/// SQL views the expensive views run first, one step each
/// ([`VIEW_STEPS`]).
async fn report_tables(
    engine: &Engine,
    ctx: &SessionContext,
    periods: &Periods,
    ts_type: &DataType,
    store: &Intermediates<'_>,
    kept: &Kept,
    steps: &mut Steps<'_>,
) -> Result<()> {
    let (cur, prev) = (periods.current, periods.previous);
    let params: Params = vec![
        ("prev_start", ts_scalar(prev.start, ts_type)?),
        ("cur_start", ts_scalar(cur.start, ts_type)?),
        ("cur_end", ts_scalar(cur.end, ts_type)?),
    ];
    let operators = uses_operators(engine);
    let shared = matches!(store, Intermediates::Shared(_));
    let mut plan: Vec<(&str, &str)> = Vec::new();
    if !operators {
        plan.extend(VIEW_STEPS);
    }
    plan.extend(REPORT_STEPS);
    // On a cluster the executors' own memory limits and Ballista's join
    // planning apply; the settings below are for this process.
    let local = !shared;
    // Under a memory limit the SQL views' joins between big intermediate
    // tables (conversations to actions, sessions to conversations) use
    // sort-merge joins, which spill; a hash join's build side cannot spill
    // and would fail the report once it outgrows the pool. The joins before
    // them have a small build side (repeat candidates) and stay hash joins:
    // as sort-merge joins they would sort the whole history.
    let spill_joins = local && !operators && engine.options.memory_limit.is_some();
    let prefer_hash = ctx.state().config().options().optimizer.prefer_hash_join;
    if let Some(limit) = engine.options.memory_limit.filter(|_| local && !operators) {
        // Every partition runs its own sorts at once, and the pool is shared
        // fairly among them: with too little each, a sort cannot even merge
        // its spill files. One partition per SQL_BYTES_PER_PARTITION of the
        // limit (measured, docs/PERFORMANCE.md).
        let cores = ctx.state().config().options().execution.target_partitions;
        let parts = (limit / SQL_BYTES_PER_PARTITION).clamp(1, cores.max(1));
        ctx.state_ref()
            .write()
            .config_mut()
            .options_mut()
            .execution
            .target_partitions = parts;
    }
    // Under a limit the rest of the report needs the pool more than a
    // later query needs the build; a one-off report has no later query.
    // Such a build goes once the report's tables are made. In a one-off
    // report the last step over its buckets also lets go of each as it
    // reads it: no other query can be reading them (under a limit in a
    // server, one may be).
    let release = builds_here(engine)
        .then(|| {
            ctx.state()
                .config()
                .get_extension::<crate::tables::native::node::NativeCache>()
        })
        .flatten()
        .filter(|c| engine.options.memory_limit.is_some() || c.is_single_use());
    let mut swapped: HashMap<&str, Arc<dyn TableProvider>> = HashMap::new();
    for (name, sql) in plan {
        if let (Some(cache), LAST_BUCKET_STEP) =
            (release.as_ref().filter(|c| c.is_single_use()), name)
        {
            cache
                .last_read_by(crate::tables::native::Relation::SessionConversations)
                .await;
        }
        if spill_joins {
            let hash = prefer_hash && !matches!(name, "conversations" | "sessions");
            ctx.sql(&format!(
                "SET datafusion.optimizer.prefer_hash_join = {hash}"
            ))
            .await?;
        }
        let started = steps.start(name);
        let rows = store
            .materialize(ctx, name, sql, &params, kept, steps.progress)
            .await?;
        steps.finish(name, rows, started);
        if !operators && views::EVENT_VIEWS.iter().any(|(v, _)| *v == name) {
            swapped.insert(name, ctx.table_provider(name).await?);
            views::register_event_views_with(ctx, &swapped).await?;
        }
    }
    if let Some(cache) = release {
        cache.release().await;
        crate::io::allocator::return_freed();
    }
    Ok(())
}

/// Runs every section and the data quality query over the registered
/// `report_*` tables, in the spec's row order.
///
/// `together`: run the queries at once (on a cluster, where each is a job
/// whose latency is mostly waiting); else one after the other (in one
/// process each uses every core, and they share the memory pool).
async fn compute_sections(
    ctx: &SessionContext,
    params: &Params,
    together: bool,
) -> Result<Vec<Row>> {
    let queries = SECTIONS
        .iter()
        .map(|section| query::collect_one(ctx, section.sql, params));
    let results = if together {
        futures::future::try_join_all(queries).await?
    } else {
        let mut done = Vec::new();
        for q in queries {
            done.push(q.await?);
        }
        done
    };
    let mut rows: Vec<Row> = Vec::new();
    for (section, b) in SECTIONS.iter().zip(results) {
        let schema = b.schema();
        let metrics: Vec<&str> = schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|name| !KEY_COLUMNS.contains(name))
            .collect();
        let segments: Vec<Option<&str>> = if section.name == "human" {
            HUMAN_SEGMENTS.iter().map(|s| Some(*s)).collect()
        } else {
            vec![None]
        };
        for segment in segments {
            for metric in &metrics {
                rows.push(Row {
                    section: section.name,
                    metric: metric.to_string(),
                    segment: segment.map(str::to_string),
                    current: metric_value(&b, metric, segment, "current")?,
                    previous: metric_value(&b, metric, segment, "previous")?,
                });
            }
        }
    }
    let dq = query::collect_one(ctx, DATA_QUALITY_SQL, &vec![]).await?;
    let metric = strings(&dq, "metric")?;
    let segment = strings(&dq, "segment")?;
    let val = floats(&dq, "value")?;
    for i in 0..dq.num_rows() {
        rows.push(Row {
            section: DATA_QUALITY,
            metric: metric.value(i).to_string(),
            segment: segment.is_valid(i).then(|| segment.value(i).to_string()),
            current: val.is_valid(i).then(|| val.value(i)),
            previous: None,
        });
    }
    Ok(rows)
}

/// A result column as plain strings, whatever string type the plan chose.
fn strings(b: &RecordBatch, name: &str) -> Result<StringArray> {
    let col = b.column(b.schema().index_of(name)?);
    Ok(cast(col, &DataType::Utf8)?.as_string::<i32>().clone())
}

/// A result column as Float64.
fn floats(b: &RecordBatch, name: &str) -> Result<Float64Array> {
    let col = b.column(b.schema().index_of(name)?);
    Ok(cast(col, &DataType::Float64)?
        .as_primitive::<Float64Type>()
        .clone())
}

/// Reads `metric` for (`segment`, `period`) from a section's result.
fn metric_value(
    b: &RecordBatch,
    metric: &str,
    segment: Option<&str>,
    period: &str,
) -> Result<Option<f64>> {
    let periods = strings(b, "period")?;
    let segments = match segment {
        Some(_) => Some(strings(b, "segment")?),
        None => None,
    };
    let values = floats(b, metric)?;
    for i in 0..b.num_rows() {
        let seg_ok = match (segment, &segments) {
            (Some(s), Some(col)) => col.value(i) == s,
            _ => true,
        };
        if periods.value(i) == period && seg_ok {
            return Ok(values.is_valid(i).then(|| values.value(i)));
        }
    }
    Err(Error::Internal(format!(
        "report query returned no {period} row for {metric}"
    )))
}

fn to_batch(rows: &[Row], periods: &Periods) -> Result<RecordBatch> {
    let n = rows.len();
    let start = periods.current.start.timestamp_micros();
    let end = periods.current.end.timestamp_micros();
    let f = |g: &dyn Fn(&Row) -> Option<f64>| -> ArrayRef {
        Arc::new(rows.iter().map(g).collect::<Float64Array>())
    };
    let cols: Vec<ArrayRef> = vec![
        Arc::new(
            rows.iter()
                .map(|r| Some(r.section))
                .collect::<StringArray>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| Some(r.metric.as_str()))
                .collect::<StringArray>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| r.segment.as_deref())
                .collect::<StringArray>(),
        ),
        Arc::new(TimestampMicrosecondArray::from(vec![start; n]).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from(vec![end; n]).with_timezone("UTC")),
        f(&|r| r.current),
        f(&|r| r.previous),
        f(&|r| r.delta()),
        f(&|r| r.delta_pct()),
    ];
    Ok(RecordBatch::try_new(report_schema(), cols)?)
}

/// The rows of a report batch, for tests and renderers.
pub fn rows_of(batch: &RecordBatch) -> Vec<Row> {
    let s = |i: usize| batch.column(i).as_string::<i32>();
    let f = |i: usize| batch.column(i).as_primitive::<Float64Type>();
    let opt = |a: &Float64Array, i: usize| a.is_valid(i).then(|| a.value(i));
    let (section, metric, segment) = (s(0), s(1), s(2));
    let (cur, prev) = (f(5), f(6));
    (0..batch.num_rows())
        .map(|i| Row {
            section: SECTIONS
                .iter()
                .map(|x| x.name)
                .chain([DATA_QUALITY])
                .find(|n| *n == section.value(i))
                .unwrap_or("unknown"),
            metric: metric.value(i).to_string(),
            segment: segment.is_valid(i).then(|| segment.value(i).to_string()),
            current: opt(cur, i),
            previous: opt(prev, i),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::options::EngineOptions;

    /// A step written twice keeps the copy with the rows the cluster
    /// reported, and its table reads only that copy's files: a file of a
    /// cancelled attempt that lands in the directory afterwards (its task
    /// finished writing late) is not read.
    #[tokio::test]
    async fn a_step_reads_only_the_write_it_kept() {
        let dir = tempfile::tempdir().unwrap();
        let step = dir.path().join("report_sessions");
        std::fs::create_dir_all(&step).unwrap();
        let ctx = SessionContext::new();
        let write = |id: &str, rows: i64| {
            let batch = RecordBatch::try_from_iter([(
                "n",
                Arc::new(datafusion::arrow::array::Int64Array::from_iter_values(
                    0..rows,
                )) as datafusion::arrow::array::ArrayRef,
            )])
            .unwrap();
            let file = std::fs::File::create(step.join(format!("{id}_0.parquet"))).unwrap();
            let mut w =
                datafusion::parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)
                    .unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
            batch.schema()
        };
        // an attempt cut short, and the one whose rows the cluster reported
        write("aaaaaaaaaaaaaaaa", 3);
        let schema = write("bbbbbbbbbbbbbbbb", 5);
        let url = format!("{}/", step.to_string_lossy());
        let kept = settle_step(&ctx, "report_sessions", &url, 5).await.unwrap();
        assert_eq!(kept, vec!["bbbbbbbbbbbbbbbb_0.parquet".to_string()]);
        assert!(!step.join("aaaaaaaaaaaaaaaa_0.parquet").exists());
        // a cancelled attempt's task writes its whole copy afterwards
        write("cccccccccccccccc", 5);
        ctx.register_table("step", parquet_files(&url, &kept, schema).unwrap())
            .unwrap();
        let n = ctx
            .sql("SELECT count(*) FROM step")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let n = n[0]
            .column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .value(0);
        assert_eq!(n, 5, "the late copy is not read");
        // no copy with the rows reported: the step fails
        let e = settle_step(&ctx, "report_sessions", &url, 7)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("run it again"), "{e}");
    }

    /// A report's context over the sample, and the parameters of a report
    /// of February 2026.
    async fn report_context() -> (SessionContext, Params) {
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample");
        let table = |t: &str| data.join(t).to_string_lossy().into_owned();
        let engine = crate::engine::context::build_context(
            &EngineOptions::new(table("events"), table("messages")).unwrap(),
        )
        .await
        .unwrap();
        let ctx = private_context(&engine).await.unwrap();
        let opts = ReportOptions {
            from: NaiveDate::from_ymd_opt(2026, 2, 1),
            to: NaiveDate::from_ymd_opt(2026, 3, 1),
            ..Default::default()
        };
        let periods = periods_for(&opts, None).unwrap();
        let ts = column_type(&engine, "events", "ts").unwrap();
        let sent = column_type(&engine, "messages", "sent_at").unwrap();
        let params = message_params(&periods, &sent, &ts, &opts).unwrap();
        (ctx, params)
    }

    /// The report's tables as a report of February 2026 keeps them.
    async fn kept_columns(keep_sessions: bool) -> Kept {
        let (ctx, params) = report_context().await;
        columns_sections_read(&ctx, &params, keep_sessions)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_plain_report_keeps_only_the_columns_its_sections_and_views_read() {
        let kept = kept_columns(false).await;
        let sessions = &kept["report_sessions"];
        // Read by the sections, or by the report_people view.
        for read in [
            "period",
            "user_id",
            "status",
            "tried_self_serve",
            "article_views",
        ] {
            assert!(
                sessions.iter().any(|c| c == read),
                "{read} missing: {sessions:?}"
            );
        }
        // Read by the detail and the sessions table only.
        for unread in ["session_end", "actions", "first_human_conversation_id"] {
            assert!(
                !sessions.iter().any(|c| c == unread),
                "{unread} kept: {sessions:?}"
            );
        }
        // report_human takes the conversations' columns through `*`: only
        // what the human section reads of it is kept; report_people names
        // its columns, and every one is read.
        let conversations = &kept["report_conversations"];
        for read in ["period", "status", "started_at", "rating", "automated"] {
            assert!(conversations.iter().any(|c| c == read), "{read} missing");
        }
        for unread in ["bot_answers", "conversation_id", "user_id"] {
            assert!(!conversations.iter().any(|c| c == unread), "{unread} kept");
        }
        // Kept in their schema's order.
        assert_eq!(sessions[0], "period");
    }

    #[tokio::test]
    async fn a_column_the_optimizer_drops_but_the_sql_names_is_never_pruned() {
        let (ctx, params) = report_context().await;
        // `OR true` makes the filter go: its column reaches no scan of the
        // optimized plan, yet the statement names it and would not plan
        // over a table without it.
        let always = "SELECT count(*) FROM report_sessions                       WHERE (session_end IS NULL OR true) AND status = 'stopped'";
        let kept = columns_read_by(&ctx, &[always], &params, false)
            .await
            .unwrap();
        assert!(kept.is_empty(), "{kept:?}");
        let plain = "SELECT count(*) FROM report_sessions WHERE status = 'stopped'";
        let kept = columns_read_by(&ctx, &[plain], &params, false)
            .await
            .unwrap();
        // With the columns report_people names (it must still plan).
        assert_eq!(
            kept["report_sessions"],
            ["period", "user_id", "status", "tried_self_serve"]
        );
    }

    #[tokio::test]
    async fn kept_sessions_keep_every_column() {
        let kept = kept_columns(true).await;
        assert!(!kept.contains_key("report_sessions"));
        assert!(kept.contains_key("report_conversations"));
    }
}
