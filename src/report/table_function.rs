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
use crate::report::{report_schema, run_report, ReportOptions};
use crate::settings::options::EngineOptions;
use crate::settings::period::{parse_date, parse_tz};
use crate::tables::TableInfo;
use datafusion::arrow::datatypes::SchemaRef;

/// The name the function is registered under.
pub const NAME: &str = "report";

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

/// Registers `report(…)` in `engine`'s context.
pub fn register(engine: &Engine, default_tz: Tz) {
    engine
        .ctx
        .register_udtf(NAME, Arc::new(ReportFunction::new(engine, default_tz)));
}

/// A constant string argument (a string or a date literal).
fn text_arg(i: usize, e: &Expr) -> datafusion::common::Result<String> {
    let value = match e {
        Expr::Literal(v, _) => v,
        Expr::Cast(c) => match c.expr.as_ref() {
            Expr::Literal(v, _) => v,
            _ => return not_constant(i, e),
        },
        _ => return not_constant(i, e),
    };
    match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Ok(s.clone()),
        ScalarValue::Date32(Some(_)) => Ok(value.to_string()),
        _ => plan_err!(
            "report(): argument {} must be a string such as '2026-02-01', got {value}",
            i + 1
        ),
    }
}

fn not_constant<T>(i: usize, e: &Expr) -> datafusion::common::Result<T> {
    plan_err!(
        "report(): argument {} must be a constant, got {e} (the arguments choose the period \
         and filters when the query is planned, before parameters are bound: write the dates \
         in the query)",
        i + 1
    )
}

fn usage(e: crate::Error) -> DataFusionError {
    DataFusionError::Plan(format!("report(): {e}"))
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
            .map(|(i, e)| text_arg(i, e))
            .collect::<datafusion::common::Result<Vec<_>>>()?;
        let from = parse_date(&texts[0]).map_err(usage)?;
        let to = parse_date(&texts[1]).map_err(usage)?;
        if to <= from {
            return plan_err!(
                "report(): `to` ({to}) must be after `from` ({from}); to is exclusive"
            );
        }
        let tz = match texts.get(2) {
            Some(z) => parse_tz(z).map_err(usage)?,
            None => self.default_tz,
        };
        let mut opts = ReportOptions {
            from: Some(from),
            to: Some(to),
            tz: Some(tz),
            ..Default::default()
        };
        for f in texts.iter().skip(3) {
            let Some((kind, value)) = f.split_once('=') else {
                return plan_err!(
                    "report(): filter `{f}` must be 'tag=…', 'content_type=…' or 'sender=…'"
                );
            };
            let list = match kind.trim() {
                "tag" => &mut opts.tags,
                "content_type" => &mut opts.content_types,
                "sender" => &mut opts.senders,
                other => {
                    return plan_err!(
                        "report(): unknown filter `{other}` (use tag, content_type or sender)"
                    )
                }
            };
            list.push(value.to_string());
        }
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
        let Some(state) = state.as_any().downcast_ref::<SessionState>() else {
            return plan_err!("report(): needs a DataFusion session");
        };
        // The caller's session: its tables, memory pool and options (a
        // `serve` connection's own session, or the `sql` prompt's).
        let ctx = SessionContext::new_with_state(state.clone());
        // The tables as the session's last refresh found them (their
        // schema and size may have changed since start).
        let tables = crate::tables::registry_of(&ctx)
            .map(|r| r.infos())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| self.tables.clone());
        let engine = Engine {
            ctx,
            tables,
            options: self.options.clone(),
        };
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
