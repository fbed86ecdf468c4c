//! The support funnel report (spec §3–§5): every section, both periods, one
//! tidy table.
//!
//! How it runs:
//! 1. the periods are resolved in the report's time zone;
//! 2. every expensive view runs **once**, in order: `event_checks` (rejects
//!    and duplicate candidates, one pass), `duplicate_winners`,
//!    `conversation_facts` (one aggregation over all conversation events),
//!    the customer actions of the sessions that start in either period
//!    (sessionization, `queries/report/00_report_actions.sql`),
//!    `conversations` and `sessions`. Each result is written to Parquet in a
//!    private temp directory ([`Store`]) and replaces its view; the views
//!    after it are re-created over it, so the same SQL files define them for
//!    ad-hoc use and for the report;
//! 3. the proactive deliveries of both periods, filtered, are materialized;
//! 4. each section is one SQL file in `queries/report/` computing both periods
//!    in one pass (rows tagged `current` / `previous`); period bounds and
//!    filter values are bound as DataFusion placeholders, never pasted;
//! 5. the rows are assembled in the spec's order with `delta` and `delta_pct`.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::TableProvider;
use datafusion::physical_plan::{collect, ExecutionPlan};
use datafusion::prelude::SessionContext;

use crate::context::Engine;
use crate::error::{Error, Result};
use crate::period::Periods;
use crate::progress::{self, ProgressRef};
use crate::views;

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
}

/// A section of the report and its metrics, in the spec's order.
struct Section {
    name: &'static str,
    sql: &'static str,
    metrics: &'static [&'static str],
}

const SECTIONS: &[Section] = &[
    Section {
        name: "funnel",
        sql: include_str!("../queries/report/01_funnel.sql"),
        metrics: &[
            "proactive_messages",
            "people_seeking_support",
            "people_tried_self_serve",
            "people_resolved_self_serve",
            "people_human_after_self_serve",
            "people_human_from_start",
            "people_stopped",
        ],
    },
    Section {
        name: "sessions",
        sql: include_str!("../queries/report/02_sessions.sql"),
        metrics: &[
            "sessions_total",
            "sessions_self_serve_resolved",
            "sessions_human_supported",
            "sessions_human_after_self_serve",
            "sessions_human_from_start",
            "sessions_stopped",
        ],
    },
    Section {
        name: "proactive",
        sql: include_str!("../queries/report/03_proactive.sql"),
        metrics: &[
            "messages_delivered",
            "messages_opened",
            "messages_clicked",
            "messages_reacted",
            "open_rate",
            "click_rate",
            "reaction_rate",
        ],
    },
    Section {
        name: "self_serve",
        sql: include_str!("../queries/report/04_self_serve.sql"),
        metrics: &[
            "self_serve_resolution_rate",
            "article_views",
            "article_views_resolved",
            "articles_resolution_rate",
            "automated_resolutions",
            "sessions_with_bot_answer",
            "sessions_automated_resolved",
            "automated_resolution_rate",
        ],
    },
    Section {
        name: "human",
        sql: include_str!("../queries/report/05_human.sql"),
        metrics: &[
            "conversations",
            "rated_conversations",
            "avg_rating",
            "csat",
            "median_first_response_s",
            "median_time_to_close_s",
        ],
    },
];

/// The segments of the `human` section, in output order.
const HUMAN_SEGMENTS: &[&str] = &["after_self_serve", "from_start"];

const REPORT_ACTIONS_SQL: &str = include_str!("../queries/report/00_report_actions.sql");
const REPORT_MESSAGES_SQL: &str = include_str!("../queries/report/00_report_messages.sql");
const DATA_QUALITY_SQL: &str = include_str!("../queries/report/06_data_quality.sql");

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
    fn delta(&self) -> Option<f64> {
        Some(self.current? - self.previous?)
    }

    fn delta_pct(&self) -> Option<f64> {
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
    let tz = Some(Arc::from("UTC"));
    let nanos = t
        .timestamp_nanos_opt()
        .ok_or_else(|| Error::invalid(format!("{t} is out of the timestamp range")))?;
    Ok(match dt {
        DataType::Timestamp(TimeUnit::Second, _) => {
            ScalarValue::TimestampSecond(Some(t.timestamp()), tz)
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            ScalarValue::TimestampMillisecond(Some(t.timestamp_millis()), tz)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            ScalarValue::TimestampMicrosecond(Some(t.timestamp_micros()), tz)
        }
        _ => ScalarValue::TimestampNanosecond(Some(nanos), tz),
    })
}

fn ticks_per_second(dt: &DataType) -> f64 {
    match dt {
        DataType::Timestamp(TimeUnit::Second, _) => 1.0,
        DataType::Timestamp(TimeUnit::Millisecond, _) => 1e3,
        DataType::Timestamp(TimeUnit::Microsecond, _) => 1e6,
        _ => 1e9,
    }
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
        .ok_or_else(|| Error::invalid(format!("the report needs the `{table}` table")))?;
    Ok(info.schema.field_with_name(column)?.data_type().clone())
}

/// Runs `sql` with the report's parameters and collects it into one batch.
async fn query(ctx: &SessionContext, sql: &str, params: &[ScalarValue]) -> Result<RecordBatch> {
    let df = ctx.sql(sql).await?.with_param_values(params.to_vec())?;
    let plan = df.create_physical_plan().await?;
    let schema = plan.schema();
    let batches = collect(plan, ctx.task_ctx()).await?;
    Ok(concat_batches(&schema, &batches)?)
}

/// Where the report keeps its intermediate tables: Parquet files in a
/// private directory under the temp dir (`--temp-dir`), removed when the
/// report ends.
///
/// On disk rather than in memory, so the report's memory does not grow with
/// the history: only DataFusion's operators hold data, and under
/// `--memory-limit` those spill. Measured, this costs nothing in time: at 10M
/// events in-memory tables gave 18.7-20.2 s and 3.9 GB peak, Parquet files
/// 19.3 s; at 50M 113 s and 15.9 GB against 105 s and 2.1 GB.
struct Store {
    dir: tempfile::TempDir,
}

impl Store {
    fn for_engine(engine: &Engine) -> Result<Self> {
        let base = engine
            .options
            .temp_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&base).map_err(|e| Error::io(&base, e))?;
        let dir = tempfile::Builder::new()
            .prefix("supportfunnel-report-")
            .tempdir_in(&base)
            .map_err(|e| Error::io(&base, e))?;
        Ok(Store { dir })
    }

    /// Runs `sql` with the parameters and keeps the result as table `name`.
    async fn materialize(
        &self,
        ctx: &SessionContext,
        name: &str,
        sql: &str,
        params: &[ScalarValue],
        progress: Option<&ProgressRef>,
    ) -> Result<(Arc<dyn TableProvider>, usize)> {
        let df = ctx.sql(sql).await?.with_param_values(params.to_vec())?;
        // The physical plan's schema is the batches' schema (the logical one
        // may differ in nullability).
        let plan = df.create_physical_plan().await?;
        let schema = plan.schema();
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        let url = format!("{}/", path.to_string_lossy());
        let run = ctx.write_parquet(Arc::clone(&plan), &url, None);
        watch(&plan, run, progress).await?;
        let table_url = ListingTableUrl::parse(&url)?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new(table_url)
            .with_listing_options(options)
            .with_schema(schema);
        let table = Arc::new(ListingTable::try_new(config)?);
        Ok((table, progress::rows_read(&plan)))
    }
}

/// Drives `run` to completion, telling `progress` every [`progress::TICK`]
/// how many rows `plan` has read.
async fn watch<T, E>(
    plan: &Arc<dyn ExecutionPlan>,
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
            _ = tick.tick() => progress.rows_read(progress::rows_read(plan)),
        }
    }
}

/// Runs a one-value query returning a timestamp as Int64 nanoseconds.
async fn nanos(ctx: &SessionContext, sql: &str, params: &[ScalarValue]) -> Result<Option<i64>> {
    let b = query(ctx, sql, params).await?;
    let col = b
        .column(0)
        .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    Ok((b.num_rows() == 1 && col.is_valid(0)).then(|| col.value(0)))
}

/// The latest valid event time, for the default period.
///
/// Looked for first in the last day of data only: `max(ts)` over all rows
/// comes from the Parquet footers, and `ts >= that - 1 day` lets the scan
/// skip every older row group. If that day holds a valid event, the latest
/// of them is the latest of all; otherwise the whole table is scanned.
async fn latest_event(engine: &Engine) -> Result<Option<DateTime<Utc>>> {
    const SQL: &str =
        "SELECT arrow_cast(arrow_cast(max(ts), 'Timestamp(Nanosecond, None)'), 'Int64') \
         FROM validated_events WHERE reject_reason IS NULL";
    let ctx = &engine.ctx;
    let ts_type = column_type(engine, "events", "ts")?;
    // Native ticks, not nanoseconds: this maximum includes rejected rows, and
    // an absurd timestamp there must not make the conversion fail.
    let ticks = nanos(ctx, "SELECT arrow_cast(max(ts), 'Int64') FROM events", &[]).await?;
    let nanos_per_tick = (1e9 / ticks_per_second(&ts_type)) as i64;
    let since = ticks
        .and_then(|t| t.checked_mul(nanos_per_tick))
        .map(|n| DateTime::from_timestamp_nanos(n) - chrono::Duration::days(1));
    let recent = match since {
        Some(since) => {
            nanos(
                ctx,
                &format!("{SQL} AND ts >= $1"),
                &[ts_scalar(since, &ts_type)?],
            )
            .await?
        }
        None => None,
    };
    let latest = match recent {
        Some(t) => Some(t),
        None => nanos(ctx, SQL, &[]).await?,
    };
    Ok(latest.map(DateTime::from_timestamp_nanos))
}

/// Resolves the periods from the options (or the data, by default).
pub async fn resolve_periods(engine: &Engine, opts: &ReportOptions) -> Result<Periods> {
    let tz = opts.tz.unwrap_or(Tz::UTC);
    match (opts.from, opts.to) {
        (Some(from), Some(to)) => Periods::new(from, to, tz),
        (None, None) => {
            let latest = latest_event(engine).await?.ok_or_else(|| {
                Error::invalid(
                    "the events table has no valid event to place the default period; pass --from and --to",
                )
            })?;
            Periods::trailing(latest, DEFAULT_DAYS, tz)
        }
        _ => Err(Error::invalid(
            "--from and --to go together (or give neither for the last 28 full days)",
        )),
    }
}

/// Computes the report over the engine's tables.
pub async fn run_report(engine: &Engine, opts: &ReportOptions) -> Result<Report> {
    let periods = resolve_periods(engine, opts).await?;
    let ctx = &engine.ctx;
    let ts_type = column_type(engine, "events", "ts")?;
    let sent_type = column_type(engine, "messages", "sent_at")?;
    let (cur, prev) = (periods.current, periods.previous);
    // $1..$12, see the header of each SQL file.
    let params = vec![
        ts_scalar(cur.start, &ts_type)?,
        ts_scalar(cur.end, &ts_type)?,
        ts_scalar(prev.start, &ts_type)?,
        ts_scalar(prev.end, &ts_type)?,
        ts_scalar(cur.start, &sent_type)?,
        ts_scalar(cur.end, &sent_type)?,
        ts_scalar(prev.start, &sent_type)?,
        ts_scalar(prev.end, &sent_type)?,
        string_list(&opts.tags),
        string_list(&opts.content_types),
        string_list(&opts.senders),
        ScalarValue::Float64(Some(ticks_per_second(&ts_type))),
    ];

    // Each expensive step runs once: its result replaces its view, and the
    // views after it are re-created over the result.
    // Start from the views as defined: a previous report on this context
    // left its intermediate tables in their place.
    views::register_event_views(ctx).await?;
    views::register_message_views(ctx).await?;
    let store = Store::for_engine(engine)?;
    let mut swapped: HashMap<&str, Arc<dyn TableProvider>> = HashMap::new();
    let steps = [
        ("event_checks", "SELECT * FROM event_checks"),
        ("duplicate_winners", "SELECT * FROM duplicate_winners"),
        ("conversation_facts", "SELECT * FROM conversation_facts"),
        ("session_actions", REPORT_ACTIONS_SQL),
        ("conversations", "SELECT * FROM conversations"),
        ("sessions", "SELECT * FROM sessions"),
        ("message_checks", "SELECT * FROM message_checks"),
        ("report_messages", REPORT_MESSAGES_SQL),
    ];
    // +1: the sections themselves.
    let total = steps.len() + 1;
    let progress = opts.progress.as_ref();
    // Under a memory limit the joins between big intermediate tables
    // (conversations to actions, sessions to conversations, the sections)
    // use sort-merge joins, which spill; a hash join's build side cannot
    // spill and would fail the report once it outgrows the pool. The joins
    // before them have a small build side (repeat candidates) and stay hash
    // joins: as sort-merge joins they would sort the whole history.
    let spill_joins = engine.options.memory_limit.is_some();
    // The configured choice (not the context's current one, which a failed
    // earlier report may have left switched off).
    let prefer_hash = engine
        .options
        .datafusion_options
        .iter()
        .rev()
        .find(|(k, _)| k == "datafusion.optimizer.prefer_hash_join")
        .is_none_or(|(_, v)| v.eq_ignore_ascii_case("true"));
    let set_hash_join = |on: bool| async move {
        ctx.sql(&format!("SET datafusion.optimizer.prefer_hash_join = {on}"))
            .await
            .map(|_| ())
    };
    for (i, (name, sql)) in steps.into_iter().enumerate() {
        if spill_joins {
            set_hash_join(!matches!(name, "conversations" | "sessions") && prefer_hash).await?;
        }
        let started = std::time::Instant::now();
        if let Some(p) = progress {
            p.step_started(i + 1, total, name);
        }
        let (table, rows) = store.materialize(ctx, name, sql, &params, progress).await?;
        if let Some(p) = progress {
            p.step_finished(name, rows, started.elapsed());
        }
        swapped.insert(name, table);
        match name {
            "report_messages" => {}
            "message_checks" => {
                views::register_views_with(ctx, views::MESSAGE_VIEWS, &swapped).await?
            }
            _ => views::register_event_views_with(ctx, &swapped).await?,
        }
    }
    let messages = Arc::clone(&swapped["report_messages"]);
    for (name, table) in [
        ("report_actions", &swapped["session_actions"]),
        ("report_conversations", &swapped["conversations"]),
        ("report_sessions", &swapped["sessions"]),
        ("report_messages", &messages),
    ] {
        ctx.deregister_table(name)?;
        ctx.register_table(name, Arc::clone(table))?;
    }

    let started = std::time::Instant::now();
    if let Some(p) = progress {
        p.step_started(total, total, "sections");
    }
    if spill_joins {
        set_hash_join(false).await?;
    }
    let sections = compute_sections(ctx, &params).await;
    if spill_joins {
        set_hash_join(prefer_hash).await?;
    }
    let rows = sections?;
    if let Some(p) = progress {
        p.step_finished("sections", 0, started.elapsed());
    }
    let sessions = if opts.keep_sessions {
        let df = ctx
            .sql("SELECT * FROM report_sessions WHERE session_start >= $1 AND session_start < $2")
            .await?
            .with_param_values(params[..2].to_vec())?;
        let plan = df.create_physical_plan().await?;
        let schema = plan.schema();
        Some((schema, collect(plan, ctx.task_ctx()).await?))
    } else {
        None
    };
    // The intermediate files go with `store`: put the views back as defined
    // and drop the tables that point at them, so the context stays usable.
    for name in [
        "report_actions",
        "report_conversations",
        "report_sessions",
        "report_messages",
    ] {
        ctx.deregister_table(name)?;
    }
    views::register_event_views(ctx).await?;
    views::register_message_views(ctx).await?;
    drop(store);
    let batch = to_batch(&rows, &periods)?;
    Ok(Report {
        periods,
        batch,
        sessions,
    })
}

/// Runs every section and the data quality query over the registered
/// `report_*` tables, in the spec's row order.
async fn compute_sections(ctx: &SessionContext, params: &[ScalarValue]) -> Result<Vec<Row>> {
    let mut rows: Vec<Row> = Vec::new();
    for section in SECTIONS {
        let b = query(ctx, section.sql, params).await?;
        let segments: Vec<Option<&str>> = if section.name == "human" {
            HUMAN_SEGMENTS.iter().map(|s| Some(*s)).collect()
        } else {
            vec![None]
        };
        for segment in segments {
            for metric in section.metrics {
                rows.push(Row {
                    section: section.name,
                    metric: metric.to_string(),
                    segment: segment.map(str::to_string),
                    current: value(&b, metric, segment, "current")?,
                    previous: value(&b, metric, segment, "previous")?,
                });
            }
        }
    }
    let dq = query(ctx, DATA_QUALITY_SQL, &[]).await?;
    let metric = strings(&dq, "metric")?;
    let segment = strings(&dq, "segment")?;
    let val = floats(&dq, "value")?;
    for i in 0..dq.num_rows() {
        rows.push(Row {
            section: "data_quality",
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
fn value(
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
    Err(Error::invalid(format!(
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
                .chain(["data_quality"])
                .find(|n| *n == section.value(i))
                .unwrap_or("unknown"),
            metric: metric.value(i).to_string(),
            segment: segment.is_valid(i).then(|| segment.value(i).to_string()),
            current: opt(cur, i),
            previous: opt(prev, i),
        })
        .collect()
}
