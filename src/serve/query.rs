//! Running a client's statements: datafusion-postgres's handlers, with
//!
//! * the session brought up to date with the files before each statement
//!   that reads a table ([`crate::engine::context::refresh`]), and its time zone
//!   with the client's settings;
//! * PostgreSQL's column names ([`super::names`]);
//! * one statement per prepared statement (PostgreSQL's 42601 otherwise);
//! * every result stream watched: cancel request, statement timeout,
//!   hang-up of the client, and the count of running queries.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{visit_relations, Statement};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use datafusion_postgres::pgwire;
use datafusion_postgres::DfSessionService;
use futures::{Sink, Stream};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::messages::PgWireBackendMessage;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::{catalog, names, settings, ConnectionKey, Shared};

/// A connection's query handlers.
pub(super) struct Service {
    pub(super) inner: DfSessionService,
    pub(super) session: Arc<SessionContext>,
    pub(super) parser: Arc<OneStatementParser>,
    pub(super) shared: Arc<Shared>,
    /// Cancelled when the client's socket hangs up.
    pub(super) hung_up: CancellationToken,
    /// The server's time zone (the session's when the client set none).
    pub(super) default_zone: Option<String>,
}

impl Service {
    /// Starts watching a query of `client`: counted from now, cancellable
    /// through its connection's key, ended at the statement timeout.
    fn watch<C: ClientInfo + ?Sized>(&self, client: &C) -> Watch {
        let (pid, secret) = client.pid_and_secret_key();
        let key = (pid, secret.to_bytes().to_vec());
        // Cancelled with its connection (the client hung up) too.
        let token = self.hung_up.child_token();
        let id = self.shared.queries.fetch_add(1, Ordering::SeqCst);
        self.shared
            .cancels
            .lock()
            .expect("not poisoned")
            .insert(key.clone(), (id, token.clone()));
        self.shared.active_queries.fetch_add(1, Ordering::SeqCst);
        let timeout =
            settings::client_timeout(client).unwrap_or(self.shared.opts.statement_timeout);
        Watch {
            shared: self.shared.clone(),
            key,
            id,
            token,
            deadline: timeout.map(|t| tokio::time::Instant::now() + t),
        }
    }

    /// Brings the session up to date for a statement: the client's time
    /// zone, and, when it reads a table, the tables' files.
    async fn prepare(
        &self,
        client: &(dyn ClientInfo + Send + Sync),
        reads_tables: bool,
    ) -> PgWireResult<()> {
        settings::sync_session(client, &self.session, &self.default_zone);
        if reads_tables {
            let warnings = crate::engine::context::refresh(&self.session)
                .await
                .map_err(|e| user_error("58030", e.to_string()))?;
            for w in warnings {
                log::warn!("{w}");
            }
        }
        Ok(())
    }
}

/// The refusal of a subquery in a `SELECT` list
/// ([`names::has_select_list_subquery`]).
fn select_list_subquery() -> PgWireError {
    user_error(
        "0A000",
        "a subquery in a SELECT list is not run by serve: the PostgreSQL compatibility layer \
         would answer it as NULL, or with its first row only; write it as a join (the sql \
         command runs it)"
            .into(),
    )
}

fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message,
    )))
}

/// Whether a statement reads any relation outside the system catalogs (so
/// the tables' files must be current for it). `EXECUTE` of a statement
/// prepared with SQL names no table but may read any.
fn reads_tables(statement: &Statement) -> bool {
    if matches!(statement, Statement::Execute { .. }) {
        return true;
    }
    let mut found = false;
    let _ = visit_relations(statement, |name| {
        found |= !names::is_catalog(name);
        if found {
            std::ops::ControlFlow::Break(())
        } else {
            std::ops::ControlFlow::Continue(())
        }
    });
    found
}

fn text_reads_tables(sql: &str) -> bool {
    match Parser::parse_sql(&PostgreSqlDialect {}, sql) {
        Ok(statements) => statements.iter().any(reads_tables),
        // The engine's parser will say what is wrong; refreshing costs a
        // listing, never a wrong answer.
        Err(_) => true,
    }
}

/// How many statements `sql` holds (tokens between semicolons).
fn statement_count(sql: &str) -> usize {
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return 1;
    };
    let mut count = 0;
    let mut in_statement = false;
    for t in tokens {
        match t {
            Token::SemiColon => in_statement = false,
            Token::Whitespace(_) => {}
            _ => {
                if !in_statement {
                    count += 1;
                    in_statement = true;
                }
            }
        }
    }
    count
}

/// One running query: its cancel token and deadline; counted until dropped.
struct Watch {
    shared: Arc<Shared>,
    key: ConnectionKey,
    id: u64,
    token: CancellationToken,
    /// When the statement timeout ends it.
    deadline: Option<tokio::time::Instant>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut cancels = self.shared.cancels.lock().expect("not poisoned");
        // Only this query's entry: a later query of the connection has
        // put its own in place.
        if cancels.get(&self.key).is_some_and(|(id, _)| *id == self.id) {
            cancels.remove(&self.key);
        }
        drop(cancels);
        self.shared.active_queries.fetch_sub(1, Ordering::SeqCst);
    }
}

fn canceled() -> PgWireError {
    user_error("57014", "canceling statement due to user request".into())
}

fn timed_out() -> PgWireError {
    user_error(
        "57014",
        "canceling statement due to statement timeout".into(),
    )
}

/// Runs `work` under `watch`: ends early on cancel or timeout.
async fn watched<T>(watch: &Watch, work: impl Future<Output = PgWireResult<T>>) -> PgWireResult<T> {
    let sleep = async {
        match watch.deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = work => r,
        _ = watch.token.cancelled() => Err(canceled()),
        _ = sleep => Err(timed_out()),
    }
}

/// The fields as a client is to see them: marker suffixes of duplicate
/// names dropped ([`names::client_name`]).
fn client_fields(fields: &[FieldInfo]) -> Vec<FieldInfo> {
    fields
        .iter()
        .map(|f| {
            if names::client_name(f.name()) == f.name() {
                return f.clone();
            }
            FieldInfo::new(
                names::client_name(f.name()).to_string(),
                f.table_id(),
                f.column_id(),
                f.datatype().clone(),
                f.format(),
            )
            .with_format_options(f.format_options().clone())
            .with_type_size(f.type_size())
            .with_type_modifier(f.type_modifier())
        })
        .collect()
}

/// Wraps the row stream of `response` so that the watch lives (and the
/// query can be cancelled or time out) until the last row is sent, and
/// gives its columns the names the client is to see.
fn watch_rows(response: Response, watch: &Arc<Watch>) -> Response {
    match response {
        Response::Query(mut q) => {
            let tag = q.command_tag().to_string();
            let inner = std::mem::replace(q.data_rows(), Box::pin(futures::stream::empty()));
            let mut watched = QueryResponse::new(
                Arc::new(client_fields(&q.row_schema())),
                WatchedRows {
                    inner,
                    cancelled: Box::pin(watch.token.clone().cancelled_owned()),
                    deadline: watch
                        .deadline
                        .map(|d| Box::pin(tokio::time::sleep_until(d))),
                    _watch: watch.clone(),
                    done: false,
                },
            );
            watched.set_command_tag(&tag);
            Response::Query(watched)
        }
        other => other,
    }
}

/// A row stream that ends with an error when its query is cancelled or
/// times out, and keeps the query counted while it lives.
struct WatchedRows {
    inner: Pin<Box<dyn Stream<Item = PgWireResult<DataRow>> + Send>>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    _watch: Arc<Watch>,
    done: bool,
}

impl Stream for WatchedRows {
    type Item = PgWireResult<DataRow>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.cancelled.as_mut().poll(cx).is_ready() {
            self.done = true;
            return Poll::Ready(Some(Err(canceled())));
        }
        if let Some(d) = self.deadline.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                self.done = true;
                return Poll::Ready(Some(Err(timed_out())));
            }
        }
        self.inner.as_mut().poll_next(cx)
    }
}

#[async_trait]
impl SimpleQueryHandler for Service {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if names::has_select_list_subquery(query) {
            return Err(select_list_subquery());
        }
        let watch = Arc::new(self.watch(client));
        let rewritten = catalog::rewrite(query);
        let query = rewritten.as_deref().unwrap_or(query);
        let named = names::with_pg_names(query);
        let text = named.as_deref().unwrap_or(query);
        let responses = watched(&watch, async {
            self.prepare(client, text_reads_tables(text)).await?;
            SimpleQueryHandler::do_query(&self.inner, client, text).await
        })
        .await?;
        Ok(responses
            .into_iter()
            .map(|r| watch_rows(r, &watch))
            .collect())
    }
}

/// The statement type of datafusion-postgres's parser.
type DfStatement = <DfSessionService as ExtendedQueryHandler>::Statement;

/// datafusion-postgres's parser of prepared statements, refusing a text of
/// several statements (it would run the first and drop the rest) and giving
/// columns PostgreSQL's names.
pub(super) struct OneStatementParser {
    pub(super) inner: Arc<<DfSessionService as ExtendedQueryHandler>::QueryParser>,
}

#[async_trait]
impl QueryParser for OneStatementParser {
    type Statement = DfStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        if statement_count(sql) > 1 {
            return Err(user_error(
                "42601",
                "cannot insert multiple commands into a prepared statement".into(),
            ));
        }
        if names::has_select_list_subquery(sql) {
            return Err(select_list_subquery());
        }
        let rewritten = catalog::rewrite(sql);
        let sql = rewritten.as_deref().unwrap_or(sql);
        let named = names::with_pg_names(sql);
        self.inner
            .parse_sql(client, named.as_deref().unwrap_or(sql), types)
            .await
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.inner.get_parameter_types(stmt)
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(client_fields(
            &self.inner.get_result_schema(stmt, column_format)?,
        ))
    }
}

#[async_trait]
impl ExtendedQueryHandler for Service {
    type Statement = DfStatement;
    type QueryParser = OneStatementParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let watch = Arc::new(self.watch(client));
        let reads = match &portal.statement.statement.1 {
            Some((statement, _)) => reads_tables(statement),
            None => false,
        };
        let response = watched(&watch, async {
            self.prepare(client, reads).await?;
            ExtendedQueryHandler::do_query(&self.inner, client, portal, max_rows).await
        })
        .await?;
        Ok(watch_rows(response, &watch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_counted_as_postgresql_does() {
        assert_eq!(statement_count("SELECT 1"), 1);
        assert_eq!(statement_count("SELECT 1;"), 1);
        assert_eq!(statement_count("SELECT 1; SELECT 2"), 2);
        assert_eq!(statement_count("SELECT ';'; -- a comment; here\n"), 1);
        assert_eq!(statement_count("SELECT 1; DROP TABLE events"), 2);
    }

    #[test]
    fn catalog_queries_need_no_listing() {
        let reads = |sql: &str| text_reads_tables(sql);
        assert!(!reads("SELECT 1"));
        assert!(!reads("SELECT version()"));
        assert!(!reads("SELECT * FROM pg_catalog.pg_class"));
        assert!(!reads("SELECT * FROM pg_type"));
        assert!(!reads("SELECT * FROM information_schema.tables"));
        assert!(reads("SELECT count(*) FROM sessions"));
        assert!(reads("SELECT * FROM report('2026-01-01', '2026-02-01')"));
        assert!(reads("SELECT * FROM pg_class JOIN events ON true"));
    }
}
