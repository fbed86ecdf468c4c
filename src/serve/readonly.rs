//! The read-only rule of `serve`: which statements a client may run.
//!
//! Every statement is checked before DataFusion sees it: queries,
//! `EXPLAIN`, `SHOW`, cursors, transactions (which only answer; there is
//! nothing to commit) and `SET` of session settings run; DDL, `INSERT`/
//! `UPDATE`/`DELETE`, `COPY`, `SELECT … INTO` and `SET`/`RESET` of engine
//! options (any dotted name such as `datafusion.execution.batch_size`) are
//! refused with SQLSTATE 25006 (`read_only_sql_transaction`), or 42501 for
//! engine options. The plan is checked again after planning
//! ([`super::query`]), whatever the statement looked like.

use datafusion::sql::sqlparser::ast::{Query, Reset, Set, SetExpr, Statement};
use datafusion_postgres::pgwire;
use pgwire::error::{ErrorInfo, PgWireError};

/// Why a statement is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// It writes or defines something: the statement's first words.
    Write(String),
    /// It changes an engine option: the option's name.
    EngineOption(String),
}

/// Whether `statement` may run on the read-only server (module docs).
pub fn check_statement(statement: &Statement) -> std::result::Result<(), Refusal> {
    match statement {
        Statement::Query(q) => check_query(q),
        Statement::Declare { stmts } => stmts
            .iter()
            .filter_map(|d| d.for_query.as_deref())
            .try_for_each(check_query),
        Statement::ExplainTable { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCharset(_)
        | Statement::ShowObjects(_)
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowCollation { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Deallocate { .. }
        | Statement::Execute { .. }
        | Statement::Discard { .. } => Ok(()),
        Statement::Explain { statement, .. } | Statement::Prepare { statement, .. } => {
            check_statement(statement)
        }
        Statement::Set(set) => check_set(set),
        Statement::Reset(reset) => match &reset.reset {
            Reset::ConfigurationParameter(name) if name.to_string().contains('.') => {
                Err(Refusal::EngineOption(name.to_string()))
            }
            _ => Ok(()),
        },
        other => Err(Refusal::Write(first_words(other))),
    }
}

/// A query writes when a `SELECT … INTO t` (DataFusion: a new table) or a
/// data-modifying statement hides in it, at any depth of its set
/// operations and CTEs.
fn check_query(q: &Query) -> std::result::Result<(), Refusal> {
    if let Some(with) = &q.with {
        for cte in &with.cte_tables {
            check_query(&cte.query)?;
        }
    }
    check_set_expr(&q.body)
}

fn check_set_expr(e: &SetExpr) -> std::result::Result<(), Refusal> {
    match e {
        SetExpr::Select(select) if select.into.is_some() => {
            Err(Refusal::Write("SELECT … INTO".into()))
        }
        SetExpr::Query(q) => check_query(q),
        SetExpr::SetOperation { left, right, .. } => {
            check_set_expr(left)?;
            check_set_expr(right)
        }
        SetExpr::Insert(s) | SetExpr::Update(s) | SetExpr::Delete(s) | SetExpr::Merge(s) => {
            Err(Refusal::Write(first_words(s)))
        }
        _ => Ok(()),
    }
}

fn check_set(set: &Set) -> std::result::Result<(), Refusal> {
    let dotted = |name: String| {
        if name.contains('.') {
            Err(Refusal::EngineOption(name))
        } else {
            Ok(())
        }
    };
    match set {
        Set::SingleAssignment { variable, .. } => dotted(variable.to_string()),
        Set::ParenthesizedAssignments { variables, .. } => {
            variables.iter().try_for_each(|v| dotted(v.to_string()))
        }
        Set::MultipleAssignments { assignments } => assignments
            .iter()
            .try_for_each(|a| dotted(a.name.to_string())),
        _ => Ok(()),
    }
}

/// `CREATE TABLE`, `COPY`, `INSERT INTO`: the statement's leading keywords.
pub(super) fn first_words(statement: &Statement) -> String {
    let text = statement.to_string();
    let words: Vec<&str> = text
        .split_whitespace()
        .take_while(|w| w.chars().all(|c| c.is_ascii_alphabetic() || c == '_'))
        .take(2)
        .collect();
    if words.is_empty() {
        "this statement".into()
    } else {
        words.join(" ").to_uppercase()
    }
}

/// The error a client gets for a refused statement.
pub(super) fn refused(e: Refusal) -> PgWireError {
    let (code, message) = match e {
        Refusal::Write(what) => (
            "25006",
            format!(
                "supportfunnel serve is read-only: {what} is refused \
                 (SELECT, EXPLAIN, SHOW, cursors, transactions and SET of session settings run)"
            ),
        ),
        Refusal::EngineOption(name) => (
            "42501",
            format!(
                "supportfunnel serve: engine option `{name}` cannot be changed by a client; \
                 the server's [datafusion] options hold for every connection"
            ),
        ),
    };
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn check(sql: &str) -> std::result::Result<(), Refusal> {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        check_statement(&statements[0])
    }

    #[test]
    fn reads_run_and_writes_are_refused() {
        for ok in [
            "SELECT 1",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "EXPLAIN SELECT * FROM sessions",
            "SHOW TABLES",
            "SHOW TIME ZONE",
            "SET statement_timeout = 1000",
            "SET TIME ZONE 'UTC'",
            "SET extra_float_digits = 3",
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "DECLARE c CURSOR FOR SELECT 1",
            "FETCH 10 FROM c",
            "CLOSE c",
            "PREPARE p AS SELECT $1",
            "DISCARD ALL",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for (sql, what) in [
            ("CREATE TABLE t (a INT)", "CREATE TABLE"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
            ("DROP TABLE events", "DROP TABLE"),
            ("INSERT INTO events VALUES (1)", "INSERT INTO"),
            ("DELETE FROM events", "DELETE FROM"),
            ("UPDATE events SET a = 1", "UPDATE EVENTS"),
            ("COPY (SELECT 1) TO '/tmp/x.csv'", "COPY"),
            ("EXPLAIN INSERT INTO t VALUES (1)", "INSERT INTO"),
            ("PREPARE p AS INSERT INTO t VALUES ($1)", "INSERT INTO"),
            ("SELECT 1 INTO t", "SELECT … INTO"),
            ("SELECT 1 UNION SELECT 2 INTO t", "SELECT … INTO"),
            ("EXPLAIN SELECT 1 INTO t", "SELECT … INTO"),
            ("DECLARE c CURSOR FOR SELECT 1 INTO t", "SELECT … INTO"),
        ] {
            assert_eq!(check(sql), Err(Refusal::Write(what.into())), "{sql}");
        }
        assert_eq!(
            check("SET datafusion.execution.target_partitions = 64"),
            Err(Refusal::EngineOption(
                "datafusion.execution.target_partitions".into()
            ))
        );
        assert!(matches!(
            check("RESET datafusion.execution.batch_size"),
            Err(Refusal::EngineOption(_))
        ));
    }
}
