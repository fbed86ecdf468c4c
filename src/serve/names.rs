//! Result column names as PostgreSQL gives them, and duplicate names.
//!
//! DataFusion names an unaliased expression after its text (`Int64(1)`,
//! `count(*)`) and refuses two output columns of one name (`SELECT ts,
//! ts::date`, `SELECT current_user, session_user`). PostgreSQL names them
//! `?column?`, `count`, `ts` and `ts`, and BI tools show and key on those
//! names. Before a statement is planned, each unaliased computed item of its
//! outermost `SELECT` list, and each item whose name repeats an earlier
//! one, gets an alias: PostgreSQL's name, a [`MARKER`] and its position.
//! The marker keeps the alias unique (so it never captures a name `ORDER
//! BY` or a `*` means: the query reads as it did), and the row description
//! sent to the client drops it ([`client_name`]). Queries of the system
//! catalogs are left as they are: tools send them, and the catalog layer
//! recognizes some by their exact text.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_relations, DataType, Expr, Ident, ObjectName, ObjectNamePart, Query, SelectItem, SetExpr,
    Statement,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// Separates a column's name from the position that made it unique.
pub const MARKER: char = '\u{1}';

/// The name a client sees for a column DataFusion calls `name`.
pub fn client_name(name: &str) -> &str {
    name.split(MARKER).next().unwrap_or(name)
}

/// Whether a relation is one of the system catalogs' (`pg_catalog.*`,
/// `information_schema.*`, an unqualified `pg_*`).
pub fn is_catalog(name: &ObjectName) -> bool {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| p.to_string().trim_matches('"').to_lowercase())
        .collect();
    match parts.as_slice() {
        [schema, _] | [_, schema, _] => schema == "pg_catalog" || schema == "information_schema",
        [table] => table.starts_with("pg_"),
        _ => false,
    }
}

/// Whether `statement` reads a system catalog.
pub fn reads_catalog(statement: &Statement) -> bool {
    let mut found = false;
    let _ = visit_relations(statement, |name| {
        found |= is_catalog(name);
        ControlFlow::<()>::Continue(())
    });
    found
}

/// Whether a query of the user's tables holds a subquery in a `SELECT`
/// list. datafusion-postgres's compatibility layer answers such a subquery
/// as NULL when it is correlated, and with its first row otherwise (where
/// PostgreSQL fails on several): numbers that are wrong without a word.
/// `serve` refuses these queries; catalog queries are left to that layer.
pub fn has_select_list_subquery(sql: &str) -> bool {
    use datafusion::sql::sqlparser::ast::{visit_expressions, Visit, Visitor};
    struct Finder(bool);
    impl Visitor for Finder {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            if let SetExpr::Select(select) = query.body.as_ref() {
                for item in &select.projection {
                    let expr = match item {
                        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
                        _ => continue,
                    };
                    let _ = visit_expressions(expr, |e| {
                        if matches!(e, Expr::Subquery(_)) {
                            self.0 = true;
                            return ControlFlow::Break(());
                        }
                        ControlFlow::Continue(())
                    });
                }
            }
            ControlFlow::Continue(())
        }
    }
    let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return false;
    };
    statements.iter().filter(|s| !reads_catalog(s)).any(|s| {
        let mut f = Finder(false);
        let _ = s.visit(&mut f);
        f.0
    })
}

/// `sql` with PostgreSQL's column names made explicit (see the module
/// docs); `None` when nothing changes or the text does not parse here (it
/// then goes on as it is, and the engine's parser says what is wrong).
pub fn with_pg_names(sql: &str) -> Option<String> {
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let mut changed = false;
    for statement in &mut statements {
        if reads_catalog(statement) {
            continue;
        }
        if let Statement::Query(q) = statement {
            changed |= name_query(q);
        }
    }
    changed.then(|| text_of(&statements))
}

/// `statements` as SQL text again (after a rewrite).
pub fn text_of(statements: &[Statement]) -> String {
    statements
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(";\n")
}

/// Names the output columns of `q` (its leftmost `SELECT`, as PostgreSQL
/// takes names from it); true when an alias was added.
fn name_query(q: &mut Query) -> bool {
    let mut body = q.body.as_mut();
    loop {
        match body {
            SetExpr::Select(select) => return name_items(&mut select.projection),
            SetExpr::SetOperation { left, .. } => body = left.as_mut(),
            SetExpr::Query(inner) => body = inner.body.as_mut(),
            _ => return false,
        }
    }
}

fn name_items(items: &mut [SelectItem]) -> bool {
    let mut changed = false;
    let mut seen: Vec<String> = Vec::new();
    for (i, item) in items.iter_mut().enumerate() {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e.clone(), None),
            SelectItem::ExprWithAlias { expr, alias } => (expr.clone(), Some(alias.clone())),
            _ => continue,
        };
        let plain_column = matches!(expr, Expr::Identifier(_) | Expr::CompoundIdentifier(_));
        let name = match &alias {
            Some(a) => folded(a),
            None => pg_name(&expr),
        };
        let repeated = seen.contains(&name);
        seen.push(name.clone());
        if repeated || (alias.is_none() && !plain_column) {
            *item = SelectItem::ExprWithAlias {
                expr,
                alias: Ident::with_quote('"', format!("{name}{MARKER}{i}")),
            };
            changed = true;
        }
    }
    changed
}

/// An identifier as the engine resolves it: unquoted ones in lower case.
fn folded(i: &Ident) -> String {
    match i.quote_style {
        Some(_) => i.value.clone(),
        None => i.value.to_lowercase(),
    }
}

/// PostgreSQL's name for an unaliased output expression (its
/// `FigureColname`): a column's name, a function's name, a cast's inner
/// name or else its type's, `case`, `array`, `exists`; otherwise
/// `?column?`.
pub fn pg_name(e: &Expr) -> String {
    const UNNAMED: &str = "?column?";
    match e {
        Expr::Identifier(i) => folded(i),
        Expr::CompoundIdentifier(parts) => parts.last().map(folded).unwrap_or(UNNAMED.into()),
        Expr::Function(f) => match f.name.0.last() {
            Some(ObjectNamePart::Identifier(i)) => folded(i),
            _ => UNNAMED.into(),
        },
        Expr::Nested(inner) | Expr::Collate { expr: inner, .. } => pg_name(inner),
        Expr::Cast {
            expr, data_type, ..
        } => {
            let inner = pg_name(expr);
            if inner == UNNAMED {
                type_name(data_type)
            } else {
                inner
            }
        }
        Expr::Case { .. } => "case".into(),
        Expr::Array(_) => "array".into(),
        Expr::Exists { .. } => "exists".into(),
        Expr::Extract { .. } => "extract".into(),
        Expr::Substring { .. } => "substring".into(),
        Expr::Position { .. } => "position".into(),
        Expr::Trim { .. } => "btrim".into(),
        Expr::Overlay { .. } => "overlay".into(),
        Expr::Ceil { .. } => "ceil".into(),
        Expr::Floor { .. } => "floor".into(),
        Expr::TypedString(t) => type_name(&t.data_type),
        Expr::Interval(_) => "interval".into(),
        _ => UNNAMED.into(),
    }
}

/// PostgreSQL's `typname` of a cast's target, for the common types.
fn type_name(t: &DataType) -> String {
    let text = t.to_string().to_lowercase();
    let base = text.split('(').next().unwrap_or(&text).trim();
    match base {
        "int" | "integer" | "int4" => "int4",
        "bigint" | "int8" => "int8",
        "smallint" | "int2" => "int2",
        "real" | "float4" => "float4",
        "double precision" | "double" | "float8" | "float" => "float8",
        "boolean" | "bool" => "bool",
        "character varying" | "varchar" => "varchar",
        "character" | "char" => "bpchar",
        "timestamp with time zone" | "timestamptz" => "timestamptz",
        "timestamp without time zone" | "timestamp" => "timestamp",
        "decimal" | "numeric" => "numeric",
        other => other,
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(sql: &str) -> Vec<String> {
        let text = with_pg_names(sql).unwrap_or_else(|| sql.to_string());
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, &text).unwrap();
        let Statement::Query(q) = &statements[0] else {
            panic!()
        };
        let SetExpr::Select(s) = q.body.as_ref() else {
            panic!()
        };
        s.projection
            .iter()
            .map(|i| match i {
                SelectItem::ExprWithAlias { alias, .. } => client_name(&alias.value).to_string(),
                SelectItem::UnnamedExpr(e) => pg_name(e),
                other => other.to_string(),
            })
            .collect()
    }

    #[test]
    fn names_as_postgresql_gives_them() {
        assert_eq!(names("SELECT 1"), ["?column?"]);
        assert_eq!(names("SELECT 1, 2"), ["?column?", "?column?"]);
        assert_eq!(names("SELECT ts, ts::date FROM events"), ["ts", "ts"]);
        assert_eq!(
            names("SELECT current_user, session_user"),
            ["current_user", "session_user"]
        );
        assert_eq!(
            names("SELECT count(*), Upper(x) FROM t"),
            ["count", "upper"]
        );
        assert_eq!(
            names("SELECT '1'::int, CAST(NULL AS TEXT)"),
            ["int4", "text"]
        );
        assert_eq!(names("SELECT CASE WHEN a THEN 1 END AS \"Big\""), ["Big"]);
        assert_eq!(names("SELECT a.b FROM a"), ["b"]);
    }

    #[test]
    fn subqueries_in_select_lists_are_found() {
        assert!(has_select_list_subquery(
            "SELECT user_id, (SELECT count(*) FROM sessions s WHERE s.user_id = e.user_id) FROM events e"
        ));
        assert!(has_select_list_subquery(
            "SELECT * FROM (SELECT (SELECT max(ts) FROM events) AS m) x"
        ));
        assert!(!has_select_list_subquery(
            "SELECT user_id FROM events WHERE ts > (SELECT min(ts) FROM events)"
        ));
        assert!(!has_select_list_subquery(
            "SELECT (SELECT 1 FROM pg_catalog.pg_class LIMIT 1)"
        ));
    }

    #[test]
    fn only_what_needs_it_is_rewritten() {
        assert_eq!(with_pg_names("SELECT ts, user_id FROM events"), None);
        assert_eq!(with_pg_names("SHOW TIME ZONE"), None);
        assert_eq!(with_pg_names("not sql at all"), None);
        let dup = with_pg_names("SELECT 1 AS a, 2 AS a").unwrap();
        assert!(dup.contains(MARKER), "{dup}");
        // the leftmost SELECT of a UNION names the columns
        let union = with_pg_names("SELECT 1 UNION ALL SELECT 2").unwrap();
        assert!(
            union.starts_with("SELECT 1 AS \"?column?\u{1}0\" UNION ALL SELECT 2"),
            "{union}"
        );
        // catalog queries, which tools send word for word, stay as they are
        assert_eq!(
            with_pg_names("SELECT count(*) FROM pg_catalog.pg_class"),
            None
        );
        // a computed column never captures a name a `*` or ORDER BY means
        let star = with_pg_names("SELECT *, ts::date FROM events ORDER BY ts").unwrap();
        assert!(
            star.contains("AS \"ts\u{1}1\"") && star.ends_with("ORDER BY ts"),
            "{star}"
        );
    }
}
