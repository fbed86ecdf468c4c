//! Running SQL: the report's own queries with named parameters, and a
//! user's script of statements (checked against the read-only rule). Also
//! how a file of `queries/` that holds several statements names them
//! ([`named_statements`]).

use std::sync::Arc;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::physical_plan::{collect, ExecutionPlan};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use datafusion::sql::parser::DFParser;

use crate::error::{Error, Result};
use crate::io::readonly::Inputs;

/// Named SQL parameters (`$cur_start`, …; see each SQL file's header),
/// bound by DataFusion, never pasted into the text.
pub type Params = Vec<(&'static str, ScalarValue)>;

/// The statements of a `queries/` file that holds several, each after a
/// `-- name: NAME` line (the yesql/aiosql convention): (name, statement),
/// comment lines dropped, the final `;` removed.
pub fn named_statements(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.trim().strip_prefix("-- name:") {
            out.push((name.trim().to_string(), String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            if !line.trim_start().starts_with("--") {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    for (_, body) in &mut out {
        *body = body.trim().trim_end_matches(';').trim().to_string();
    }
    out
}

/// Statement `name` of `text` ([`named_statements`]). The names the code
/// asks for are fixed and tested, so a missing one is a bug: it panics,
/// naming the file.
pub fn named_statement(file: &str, text: &str, name: &str) -> String {
    named_statements(text)
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("{file} has no statement `{name}`"))
}

/// Plans `sql` with `params` bound. The physical plan's schema is the
/// batches' schema (the logical one may differ in nullability).
pub async fn plan(
    ctx: &SessionContext,
    sql: &str,
    params: &Params,
) -> Result<Arc<dyn ExecutionPlan>> {
    let df = ctx.sql(sql).await?.with_param_values(params.clone())?;
    Ok(df.create_physical_plan().await?)
}

/// Runs `sql` with `params` and collects the result into one batch.
pub async fn collect_one(ctx: &SessionContext, sql: &str, params: &Params) -> Result<RecordBatch> {
    let plan = plan(ctx, sql, params).await?;
    let schema = plan.schema();
    let batches = collect(plan, ctx.task_ctx()).await?;
    Ok(concat_batches(&schema, &batches)?)
}

/// The result of one statement.
#[derive(Debug, Clone)]
pub struct StatementResult {
    /// Output schema (empty for DDL).
    pub schema: SchemaRef,
    /// Output rows.
    pub batches: Vec<RecordBatch>,
    /// Files of the tables that the statement did not read, one line per
    /// table, said once (see [`crate::engine::context::refresh`]).
    pub warnings: Vec<String>,
}

impl StatementResult {
    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// Runs every statement of `sql` in order and returns each one's result.
/// Statements are planned one at a time, so a script may create a view and
/// query it, and each reads the files its tables hold when it starts
/// ([`crate::engine::context::refresh`]).
pub async fn run_script(ctx: &SessionContext, sql: &str) -> Result<Vec<StatementResult>> {
    let statements = DFParser::parse_sql(sql)?;
    if statements.is_empty() {
        return Err(Error::usage("no SQL statement given"));
    }
    let inputs = Inputs::of(ctx);
    let mut results = Vec::with_capacity(statements.len());
    for statement in statements {
        let warnings = crate::engine::context::refresh(ctx).await?;
        let plan = ctx.state().statement_to_plan(statement).await?;
        inputs.check_plan(&plan)?;
        #[cfg(feature = "cluster")]
        crate::cluster::client::check_plan(ctx, &plan)?;
        let df = ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = df.schema().inner().clone();
        let batches = df.collect().await?;
        results.push(StatementResult {
            schema,
            batches,
            warnings,
        });
    }
    Ok(results)
}
