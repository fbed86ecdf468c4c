//! `report(from, to [, zone [, filter …]])`: the support funnel report as a
//! table function, in `sql` and `serve` alike, so a dashboard charts the
//! report straight from SQL:
//!
//! ```sql
//! SELECT * FROM report('2026-02-01', '2026-03-01', 'Europe/Paris', 'tag=outage');
//! SELECT metric, current, previous FROM report('2026-02-01', '2026-03-01')
//! WHERE section = 'funnel';
//! ```
//!
//! * `from`, `to`: `YYYY-MM-DD` strings (or `DATE` literals), `to` exclusive,
//!   local days in the zone — the same period as `report --from --to`;
//! * `zone`: an IANA name; without it, the zone of the config's `[defaults]`
//!   (else UTC), as for the `report` command;
//! * filters: any number of `'tag=…'`, `'content_type=…'`, `'sender=…'`
//!   strings. Values of one kind are alternatives, kinds must all hold
//!   (spec §4, `proactive`). Only the filters given as arguments apply: the
//!   config's default filters do not, so a query says everything it means.
//!
//! The rows are the tidy table of spec §5 (the columns of
//! [`crate::report::report_schema`]) in the spec's order, the same numbers
//! `report --format json` prints. Arguments must be constants: they decide
//! the period before any row is read. The report is computed when the
//! query's physical plan is made (so `EXPLAIN` computes it too, and a query
//! naming `report(…)` twice computes it twice), on the registered tables,
//! under the session's memory limit; it is not cached.
//!
//! `report_detail(metric, from, to [, zone [, 'segment=…' | 'period=…' |
//! filter …]])` lists the items behind one metric of that report
//! ([`crate::report::detail`]; docs/METRICS.md "Detail"):
//!
//! ```sql
//! SELECT user_id, sessions FROM report_detail('people_stopped', '2026-02-01', '2026-03-01');
//! SELECT avg(CAST(in_numerator AS DOUBLE)) FROM report_detail('csat', '2026-02-01',
//!     '2026-03-01', 'UTC', 'segment=after_self_serve', 'period=current');
//! ```

use std::sync::Arc;

use async_trait::async_trait;
use chrono_tz::Tz;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{plan_err, DataFusionError, ScalarValue};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::TableType;
use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use crate::engine::context::Engine;
use crate::report::detail::{detail_schema, DetailRequest, PeriodChoice};
use crate::report::{report_schema, run_details, run_report, ReportOptions};
use crate::settings::options::EngineOptions;
use crate::settings::period::{parse_date, parse_tz};
use crate::tables::TableInfo;
use datafusion::arrow::datatypes::{DataType, SchemaRef};

/// The name the function is registered under.
pub const NAME: &str = "report";

/// The name of the detail function.
pub const DETAIL_NAME: &str = "report_detail";

/// The `report` table function (see the module documentation).
#[derive(Debug)]
pub struct ReportFunction {
    tables: Vec<TableInfo>,
    options: EngineOptions,
    default_tz: Tz,
}

impl ReportFunction {
    /// A function computing the report over `engine`'s tables, with
    /// `default_tz` when a call names no zone.
    pub fn new(engine: &Engine, default_tz: Tz) -> Self {
        Self {
            tables: engine.tables.clone(),
            options: engine.options.clone(),
            default_tz,
        }
    }
}

/// The engine of `opts` ([`crate::build_context`]) with `report(…)` in its
/// SQL too, dated in `default_tz` when a call gives no zone: what a user
/// of the library, the CLI and the Python package open.
pub async fn open(opts: &crate::EngineOptions, default_tz: Tz) -> crate::Result<Engine> {
    let engine = crate::build_context(opts).await?;
    register(&engine, default_tz);
    Ok(engine)
}

/// Registers `report(…)` and `report_detail(…)` in `engine`'s context.
pub fn register(engine: &Engine, default_tz: Tz) {
    engine
        .ctx
        .register_udtf(NAME, Arc::new(ReportFunction::new(engine, default_tz)));
    engine.ctx.register_udtf(
        DETAIL_NAME,
        Arc::new(ReportDetailFunction(ReportFunction::new(
            engine, default_tz,
        ))),
    );
}

/// A constant string argument (a string or a date literal) of function
/// `f`.
fn text_arg(f: &str, i: usize, e: &Expr) -> datafusion::common::Result<String> {
    let value = match e {
        Expr::Literal(v, _) => v,
        Expr::Cast(c) => match c.expr.as_ref() {
            Expr::Literal(v, _) => v,
            _ => return not_constant(f, i, e),
        },
        _ => return not_constant(f, i, e),
    };
    match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Ok(s.clone()),
        ScalarValue::Date32(Some(_)) => Ok(value.to_string()),
        _ => plan_err!(
            "{f}(): argument {} must be a string such as '2026-02-01', got {value}",
            i + 1
        ),
    }
}

fn not_constant<T>(f: &str, i: usize, e: &Expr) -> datafusion::common::Result<T> {
    plan_err!(
        "{f}(): argument {} must be a constant, got {e} (the arguments choose the period \
         and filters when the query is planned, before parameters are bound: write the dates \
         in the query)",
        i + 1
    )
}

fn usage(f: &str, e: crate::Error) -> DataFusionError {
    DataFusionError::Plan(format!("{f}(): {e}"))
}

/// What `report_detail` takes beyond `report`'s arguments.
#[derive(Debug, Default)]
struct DetailArgs {
    segment: Option<String>,
    period: Option<PeriodChoice>,
}

/// The report of `texts` (from, to, zone, then `kind=value` filters) for
/// function `f`; with `detail`, `segment=` and `period=` are taken too.
fn report_args(
    f: &str,
    texts: &[String],
    default_tz: Tz,
    mut detail: Option<&mut DetailArgs>,
) -> datafusion::common::Result<ReportOptions> {
    let from = parse_date(&texts[0]).map_err(|e| usage(f, e))?;
    let to = parse_date(&texts[1]).map_err(|e| usage(f, e))?;
    if to <= from {
        return plan_err!("{f}(): `to` ({to}) must be after `from` ({from}); to is exclusive");
    }
    let tz = match texts.get(2) {
        Some(z) => parse_tz(z).map_err(|e| usage(f, e))?,
        None => default_tz,
    };
    let mut opts = ReportOptions {
        from: Some(from),
        to: Some(to),
        tz: Some(tz),
        ..Default::default()
    };
    let kinds = if detail.is_some() {
        "'tag=…', 'content_type=…', 'sender=…', 'segment=…' or 'period=…'"
    } else {
        "'tag=…', 'content_type=…' or 'sender=…'"
    };
    for text in texts.iter().skip(3) {
        let Some((kind, value)) = text.split_once('=') else {
            return plan_err!("{f}(): argument `{text}` must be {kinds}");
        };
        let list = match (kind.trim(), detail.as_deref_mut()) {
            ("tag", _) => &mut opts.tags,
            ("content_type", _) => &mut opts.content_types,
            ("sender", _) => &mut opts.senders,
            ("segment", Some(d)) => {
                d.segment = Some(value.to_string());
                continue;
            }
            ("period", Some(d)) => {
                d.period = Some(PeriodChoice::parse(value).map_err(|e| usage(f, e))?);
                continue;
            }
            (other, _) => return plan_err!("{f}(): unknown filter `{other}` (use {kinds})"),
        };
        list.push(value.to_string());
    }
    Ok(opts)
}

impl TableFunctionImpl for ReportFunction {
    fn call_with_args(
        &self,
        args: TableFunctionArgs,
    ) -> datafusion::common::Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.len() < 2 {
            return plan_err!(
                "report(from, to [, zone [, 'tag=…' | 'content_type=…' | 'sender=…' …]]) \
                 needs at least from and to, e.g. report('2026-02-01', '2026-03-01', 'UTC')"
            );
        }
        let texts = exprs
            .iter()
            .enumerate()
            .map(|(i, e)| text_arg(NAME, i, e))
            .collect::<datafusion::common::Result<Vec<_>>>()?;
        let opts = report_args(NAME, &texts, self.default_tz, None)?;
        Ok(Arc::new(ReportTable {
            tables: self.tables.clone(),
            options: self.options.clone(),
            report: opts,
        }))
    }
}

/// One call of `report(…)`: the report of one period as a table.
#[derive(Debug)]
struct ReportTable {
    tables: Vec<TableInfo>,
    options: EngineOptions,
    report: ReportOptions,
}

#[async_trait]
impl TableProvider for ReportTable {
    fn schema(&self) -> SchemaRef {
        report_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let engine = caller_engine(state, &self.tables, &self.options)?;
        let report = run_report(&engine, &self.report)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let batch = report.batch;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            report_schema(),
            projection.cloned(),
        )?)
    }
}

/// The `report_detail` table function: the items behind one metric
/// ([`crate::report::detail`]), with `report`'s arguments after the
/// metric's name, plus `'segment=…'` and `'period=current|previous'`.
#[derive(Debug)]
pub struct ReportDetailFunction(ReportFunction);

impl TableFunctionImpl for ReportDetailFunction {
    fn call_with_args(
        &self,
        args: TableFunctionArgs,
    ) -> datafusion::common::Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if exprs.len() < 3 {
            return plan_err!(
                "report_detail(metric, from, to [, zone [, 'segment=…' | 'period=…' | \
                 'tag=…' | 'content_type=…' | 'sender=…' …]]) needs at least a metric, from \
                 and to, e.g. report_detail('people_stopped', '2026-02-01', '2026-03-01')"
            );
        }
        let texts = exprs
            .iter()
            .enumerate()
            .map(|(i, e)| text_arg(DETAIL_NAME, i, e))
            .collect::<datafusion::common::Result<Vec<_>>>()?;
        let mut extra = DetailArgs::default();
        let report = report_args(
            DETAIL_NAME,
            &texts[1..],
            self.0.default_tz,
            Some(&mut extra),
        )?;
        let request = DetailRequest::new(&texts[0], extra.segment, extra.period)
            .map_err(|e| usage(DETAIL_NAME, e))?;
        let column = |table: &str, column: &str| -> datafusion::common::Result<DataType> {
            let info = self
                .0
                .tables
                .iter()
                .find(|t| t.name == table)
                .ok_or_else(|| {
                    DataFusionError::Plan(format!("report_detail(): needs the `{table}` table"))
                })?;
            Ok(info.schema.field_with_name(column)?.data_type().clone())
        };
        let schema = detail_schema(&column("events", "ts")?, &column("messages", "sent_at")?);
        Ok(Arc::new(DetailTable {
            tables: self.0.tables.clone(),
            options: self.0.options.clone(),
            report,
            request,
            schema,
        }))
    }
}

/// One call of `report_detail(…)`.
#[derive(Debug)]
struct DetailTable {
    tables: Vec<TableInfo>,
    options: EngineOptions,
    report: ReportOptions,
    request: DetailRequest,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for DetailTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::common::Result<Arc<dyn ExecutionPlan>> {
        let engine = caller_engine(state, &self.tables, &self.options)?;
        let mut details = run_details(&engine, &self.report, std::slice::from_ref(&self.request))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let detail = details.pop().ok_or_else(|| {
            DataFusionError::Internal("report_detail(): no detail came back".into())
        })?;
        Ok(MemorySourceConfig::try_new_exec(
            &[detail.batches],
            Arc::clone(&self.schema),
            projection.cloned(),
        )?)
    }
}

/// The engine of the caller's session: its tables, memory pool and options
/// (a `serve` connection's own session, or the `sql` prompt's), with the
/// tables as the session's last refresh found them (their schema and size
/// may have changed since start).
fn caller_engine(
    state: &dyn Session,
    tables: &[TableInfo],
    options: &EngineOptions,
) -> datafusion::common::Result<Engine> {
    let Some(state) = state.as_any().downcast_ref::<SessionState>() else {
        return plan_err!("report(): needs a DataFusion session");
    };
    let ctx = SessionContext::new_with_state(state.clone());
    let tables = crate::tables::registry_of(&ctx)
        .map(|r| r.infos())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| tables.to_vec());
    Ok(Engine {
        ctx,
        tables,
        options: options.clone(),
    })
}
