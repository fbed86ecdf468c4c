//! The first hook every statement of a `serve` connection meets: the
//! read-only rule ([`super::readonly`]), then the session statements
//! DataFusion has no plan for — `SET`, `SHOW`, `RESET`, `DISCARD`,
//! savepoints, `DEALLOCATE ALL` — answered here ([`super::settings`]) the
//! same way in the simple and the extended protocol.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::{ParamValues, ToDFSchema};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Set, Statement};
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire;
use datafusion_postgres::QueryHook;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::ClientInfo;
use pgwire::api::Type;
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};

use super::readonly::{check_statement, first_words, refused, Refusal};
use super::settings;

/// The hook (see the module docs). `default_timeout` is the server's
/// statement timeout, which `SHOW statement_timeout` reports when the
/// client set none.
pub(super) struct ServeHook {
    pub(super) default_timeout: Option<Duration>,
    /// The server's time zone, which `RESET TimeZone` goes back to.
    pub(super) default_zone: Option<String>,
    /// Names of statements the client prepared with SQL `PREPARE`, which
    /// `DEALLOCATE ALL` removes.
    prepared: Mutex<BTreeSet<String>>,
}

impl ServeHook {
    pub(super) fn new(default_timeout: Option<Duration>, default_zone: Option<String>) -> Self {
        Self {
            default_timeout,
            default_zone,
            prepared: Mutex::new(BTreeSet::new()),
        }
    }
}

fn tag(t: &str) -> PgWireResult<Response> {
    Ok(Response::Execution(Tag::new(t)))
}

fn not_supported(what: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "0A000".into(),
        format!("{what} is not supported by supportfunnel serve"),
    )))
}

/// A plan with the given text columns and no rows: what a prepared `SET`
/// or `SHOW` describes.
fn columns_plan(columns: &[&str]) -> PgWireResult<LogicalPlan> {
    let schema = Schema::new(
        columns
            .iter()
            .map(|c| Field::new(*c, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    );
    let schema = schema
        .to_dfschema()
        .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    Ok(LogicalPlan::EmptyRelation(
        datafusion::logical_expr::EmptyRelation {
            produce_one_row: false,
            schema: Arc::new(schema),
        },
    ))
}

/// Rows of text as a query response.
fn text_rows(columns: &[&str], rows: Vec<Vec<String>>) -> PgWireResult<Response> {
    let fields: Arc<Vec<FieldInfo>> = Arc::new(
        columns
            .iter()
            .map(|c| FieldInfo::new(c.to_string(), None, None, Type::TEXT, FieldFormat::Text))
            .collect(),
    );
    let mut encoded = Vec::with_capacity(rows.len());
    for row in rows {
        let mut encoder = DataRowEncoder::new(Arc::clone(&fields));
        for value in &row {
            encoder.encode_field(&Some(value.as_str()))?;
        }
        encoded.push(Ok(encoder.take_row()));
    }
    Ok(Response::Query(QueryResponse::new(
        fields,
        Box::pin(futures::stream::iter(encoded)),
    )))
}

impl ServeHook {
    /// The answer to a session statement, or `None` for any other.
    async fn answer(
        &self,
        statement: &Statement,
        session: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        match statement {
            Statement::Savepoint { .. } => Some(tag("SAVEPOINT")),
            Statement::ReleaseSavepoint { .. } => Some(tag("RELEASE")),
            Statement::Set(Set::SetTransaction { .. }) => Some(tag("SET")),
            Statement::Set(
                Set::SingleAssignment { .. } | Set::SetTimeZone { .. } | Set::SetNames { .. },
            )
            | Statement::Reset(_)
            | Statement::Discard { .. } => {
                let result = async {
                    let change = settings::change_of(statement)?
                        .ok_or_else(|| not_supported(&first_words(statement)))?;
                    for message in settings::apply(change, client, session, &self.default_zone) {
                        client.send_message(message).await?;
                    }
                    if matches!(statement, Statement::Discard { .. }) {
                        self.deallocate_all(session).await;
                    }
                    tag(match statement {
                        Statement::Reset(_) => "RESET",
                        Statement::Discard { .. } => "DISCARD ALL",
                        _ => "SET",
                    })
                }
                .await;
                Some(result)
            }
            Statement::Set(_) => Some(Err(not_supported(&first_words(statement)))),
            Statement::ShowVariable { variable } => Some(
                settings::show(variable, client, self.default_timeout)
                    .and_then(|(columns, rows)| text_rows(&columns, rows)),
            ),
            Statement::Deallocate { name, .. }
                if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") =>
            {
                self.deallocate_all(session).await;
                Some(tag("DEALLOCATE ALL"))
            }
            Statement::Prepare { name, .. } => {
                self.prepared
                    .lock()
                    .expect("not poisoned")
                    .insert(name.value.clone());
                None
            }
            _ => None,
        }
    }

    async fn deallocate_all(&self, session: &SessionContext) {
        let names = std::mem::take(&mut *self.prepared.lock().expect("not poisoned"));
        for name in names {
            // Statements deallocated one by one already are simply gone.
            let _ = session.sql(&format!("DEALLOCATE \"{name}\"")).await;
        }
    }
}

#[async_trait]
impl QueryHook for ServeHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Err(e) = check_statement(statement) {
            return Some(Err(refused(e)));
        }
        self.answer(statement, session_context, client).await
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if let Err(e) = check_statement(statement) {
            return Some(Err(refused(e)));
        }
        match statement {
            Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
            | Statement::Set(_)
            | Statement::Reset(_)
            | Statement::Discard { .. } => Some(columns_plan(&[])),
            Statement::Deallocate { name, .. } if name.value.eq_ignore_ascii_case("all") => {
                Some(columns_plan(&[]))
            }
            Statement::ShowVariable { variable } => {
                Some(settings::show_columns(variable).and_then(|c| columns_plan(&c)))
            }
            _ => None,
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        logical_plan: &LogicalPlan,
        _params: &ParamValues,
        session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Err(e) = check_statement(statement) {
            return Some(Err(refused(e)));
        }
        if let Some(answer) = self.answer(statement, session_context, client).await {
            return Some(answer);
        }
        // The plan too, whatever the statement looked like.
        if matches!(
            logical_plan,
            LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Copy(_)
        ) {
            return Some(Err(refused(Refusal::Write(first_words(statement)))));
        }
        None
    }
}
