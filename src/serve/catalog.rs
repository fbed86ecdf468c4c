//! What drivers and BI tools ask of the system catalogs on connect and on
//! table sync, beyond what datafusion-postgres's `pg_catalog` answers:
//!
//! * `version()` in PostgreSQL's form (SQLAlchemy, pgjdbc and others parse
//!   it);
//! * functions of what a read-only table server has none of (sequences,
//!   collations) or that SQLAlchemy builds its answers with
//!   (`json_build_object`), so that a metadata query gets an empty or a
//!   true answer instead of an error;
//! * `pg_index` and `pg_constraint` with PostgreSQL's array columns
//!   (`indkey`, `conkey`, …), empty: our tables have no indexes and no
//!   constraints, and the catalog's copy of PostgreSQL's own rows (vectors
//!   as text) made `unnest(indkey)` fail to plan;
//! * `pg_settings` with the server's settings (pgjdbc reads
//!   `max_index_keys` there);
//! * rewrites of a statement's text ([`rewrite`]): `LIKE … ESCAPE` with an
//!   escape character other than backslash (DataFusion knows only
//!   backslash), `generate_subscripts(array, 1)`, and in catalog queries
//!   correlated subqueries DataFusion cannot plan,
//!   `information_schema._pg_expandarray` and `(composite).field`.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{MemTable, SchemaProvider, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::error::Result as DFResult;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::{create_udf, SessionContext};
use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Value,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::settings::SERVER_VERSION;

/// What `version()` answers: PostgreSQL's form first (drivers match
/// `PostgreSQL <major>.<minor>`), then what actually answers.
pub fn version_text() -> String {
    format!(
        "PostgreSQL {SERVER_VERSION} on {}-{}, compiled by supportfunnel {} (Apache DataFusion {}), \
         64-bit",
        std::env::consts::ARCH,
        std::env::consts::OS,
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION
    )
}

/// Registers the functions and the replaced catalogs on `ctx` (each connection's
/// session starts from it), after datafusion-postgres's `pg_catalog` in
/// catalog `catalog`.
pub fn register(ctx: &SessionContext, catalog: &str) -> DFResult<()> {
    ctx.register_udf(constant_text("version", vec![], Some(version_text())));
    // No table has a sequence behind a column, nor an index to describe;
    // the one collation there is, is visible.
    for (name, value) in [
        ("pg_get_serial_sequence", ScalarValue::Utf8(None)),
        ("pg_get_indexdef", ScalarValue::Utf8(None)),
        ("pg_collation_is_visible", ScalarValue::Boolean(Some(true))),
    ] {
        ctx.register_udf(ScalarUDF::new_from_impl(Constant::new(name, value)));
    }
    ctx.register_udf(ScalarUDF::new_from_impl(JsonBuildObject::new()));
    ctx.register_udf(create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(current_setting),
    ));
    if let Some(schema) = ctx
        .catalog(catalog)
        .and_then(|c| c.schema("pg_catalog").map(|s| (c, s)))
    {
        let (catalog, inner) = schema;
        let mut overrides = std::collections::HashMap::new();
        overrides.insert(
            "pg_index".to_string(),
            empty_catalog(
                &inner,
                "pg_index",
                &["indkey", "indoption"],
                &["indcollation", "indclass"],
            )?,
        );
        overrides.insert(
            "pg_constraint".to_string(),
            empty_catalog(
                &inner,
                "pg_constraint",
                &["conkey", "confkey", "confdelsetcols"],
                &["conpfeqop", "conppeqop", "conffeqop", "conexclop"],
            )?,
        );
        overrides.insert("pg_settings".to_string(), pg_settings(&inner)?);
        if let Some(class) = pg_class_with_options(&inner)? {
            overrides.insert("pg_class".to_string(), class);
        }
        catalog.register_schema("pg_catalog", Arc::new(PgCatalog { inner, overrides }))?;
    }
    Ok(())
}

/// `current_setting(name)`: the server's default of a setting (what
/// `SHOW` answers before a client's `SET`), and `heap` for the table
/// access method SQLAlchemy asks about; an unknown name is PostgreSQL's
/// error.
fn current_setting(args: &[ColumnarValue]) -> DFResult<ColumnarValue> {
    let names = ColumnarValue::values_to_arrays(args)?;
    let names = names[0]
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| {
            datafusion::error::DataFusionError::Execution(
                "current_setting takes a text argument".into(),
            )
        })?;
    let mut out = Vec::with_capacity(names.len());
    for name in names.iter() {
        out.push(match name {
            None => None,
            Some(n) if n.eq_ignore_ascii_case("default_table_access_method") => Some("heap"),
            Some(n) => Some(super::settings::default_of(n).ok_or_else(|| {
                datafusion::error::DataFusionError::Execution(format!(
                    "unrecognized configuration parameter \"{n}\""
                ))
            })?),
        });
    }
    Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
}

/// The number of rows a call is for (1 when every argument is a scalar).
fn rows_of(args: &[ColumnarValue]) -> usize {
    args.iter()
        .find_map(|a| match a {
            ColumnarValue::Array(a) => Some(a.len()),
            ColumnarValue::Scalar(_) => None,
        })
        .unwrap_or(1)
}

/// Catalog `name` without rows, with its vector columns typed as
/// PostgreSQL types them: `int2[]` for `smallints`, `oid[]` for `oids`.
/// Our tables have no indexes and no constraints, and the catalog's copy of
/// PostgreSQL's own rows (vectors as text) made `unnest(indkey)` and
/// `conkey[n]` fail to plan.
fn empty_catalog(
    inner: &Arc<dyn SchemaProvider>,
    name: &str,
    smallints: &[&str],
    oids: &[&str],
) -> DFResult<Arc<dyn TableProvider>> {
    let fields: Vec<Field> = match futures::executor::block_on(inner.table(name))? {
        Some(table) => table
            .schema()
            .fields()
            .iter()
            .map(|f| {
                if smallints.contains(&f.name().as_str()) {
                    Field::new(f.name(), DataType::new_list(DataType::Int16, true), true)
                } else if oids.contains(&f.name().as_str()) {
                    Field::new(f.name(), DataType::new_list(DataType::UInt32, true), true)
                } else {
                    f.as_ref().clone()
                }
            })
            .collect(),
        None => vec![],
    };
    let schema = Arc::new(Schema::new(fields));
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![]])?))
}

/// `pg_settings` with a row per setting the server has (its default, as
/// `current_setting` answers): datafusion-postgres's lists one, and pgjdbc
/// reads `max_index_keys` from it.
fn pg_settings(inner: &Arc<dyn SchemaProvider>) -> DFResult<Arc<dyn TableProvider>> {
    use datafusion::arrow::array::new_null_array;
    use datafusion::arrow::record_batch::RecordBatch;
    let schema = match futures::executor::block_on(inner.table("pg_settings"))? {
        Some(table) => table.schema(),
        None => Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("setting", DataType::Utf8, true),
            Field::new("short_desc", DataType::Utf8, true),
        ])),
    };
    let settings: Vec<_> = super::settings::defaults().collect();
    let column = |values: Vec<&str>| -> ArrayRef { Arc::new(StringArray::from(values)) };
    let columns = schema
        .fields()
        .iter()
        .map(|f| match f.name().as_str() {
            "name" => column(settings.iter().map(|s| s.0).collect()),
            "setting" | "reset_val" | "boot_val" => column(settings.iter().map(|s| s.1).collect()),
            "short_desc" => column(settings.iter().map(|s| s.2).collect()),
            "source" => column(vec!["default"; settings.len()]),
            _ => new_null_array(f.data_type(), settings.len()),
        })
        .collect();
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// `pg_class` with `reloptions` (storage options, none here: NULL), which
/// SQLAlchemy's index reflection reads.
fn pg_class_with_options(
    inner: &Arc<dyn SchemaProvider>,
) -> DFResult<Option<Arc<dyn TableProvider>>> {
    use datafusion::datasource::{provider_as_source, ViewTable};
    use datafusion::logical_expr::{cast, col, lit, LogicalPlanBuilder};
    let Some(class) = futures::executor::block_on(inner.table("pg_class"))? else {
        return Ok(None);
    };
    if class.schema().field_with_name("reloptions").is_ok() {
        return Ok(None);
    }
    let mut columns: Vec<datafusion::prelude::Expr> = class
        .schema()
        .fields()
        .iter()
        .map(|f| col(datafusion::common::Column::new_unqualified(f.name())))
        .collect();
    columns.push(
        cast(
            lit(ScalarValue::Null),
            DataType::new_list(DataType::Utf8, true),
        )
        .alias("reloptions"),
    );
    let plan = LogicalPlanBuilder::scan("pg_class", provider_as_source(class), None)?
        .project(columns)?
        .build()?;
    Ok(Some(Arc::new(ViewTable::new(plan, None))))
}

/// datafusion-postgres's `pg_catalog` schema with some of its tables
/// replaced ([`empty_catalog`], [`pg_settings`], [`pg_class_with_options`]).
#[derive(Debug)]
struct PgCatalog {
    inner: Arc<dyn SchemaProvider>,
    overrides: std::collections::HashMap<String, Arc<dyn TableProvider>>,
}

#[async_trait::async_trait]
impl SchemaProvider for PgCatalog {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        if let Some(table) = self.overrides.get(name) {
            return Ok(Some(Arc::clone(table)));
        }
        self.inner.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// A function of any arguments that answers one value.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Constant {
    name: String,
    value: ScalarValue,
    signature: Signature,
}

impl Constant {
    fn new(name: &str, value: ScalarValue) -> Self {
        Self {
            name: name.into(),
            value,
            signature: Signature::variadic_any(Volatility::Stable),
        }
    }
}

impl ScalarUDFImpl for Constant {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DFResult<DataType> {
        Ok(self.value.data_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        Ok(ColumnarValue::Array(
            self.value.to_array_of_size(args.number_rows)?,
        ))
    }
}

/// `json_build_object(key, value, …)`: a JSON object of the pairs, as text
/// (SQLAlchemy builds a column's identity and collation with it).
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: Signature,
}

impl JsonBuildObject {
    fn new() -> Self {
        Self {
            signature: Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DFResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        if arrays.len() % 2 != 0 {
            return Err(datafusion::error::DataFusionError::Execution(
                "argument list must have even number of elements".into(),
            ));
        }
        let mut out = Vec::with_capacity(rows);
        for row in 0..rows {
            let mut text = String::from("{");
            for (i, pair) in arrays.chunks(2).enumerate() {
                if i > 0 {
                    text.push_str(", ");
                }
                let key = ScalarValue::try_from_array(&pair[0], row)?;
                let value = ScalarValue::try_from_array(&pair[1], row)?;
                text.push_str(&json_string(&key.to_string()));
                text.push_str(" : ");
                text.push_str(&json_value(&value));
            }
            text.push('}');
            out.push(text);
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
    }
}

/// `value` as a JSON value: numbers and booleans bare, NULL as `null`,
/// everything else a string.
fn json_value(value: &ScalarValue) -> String {
    if value.is_null() {
        return "null".into();
    }
    match value {
        ScalarValue::Boolean(_)
        | ScalarValue::Int8(_)
        | ScalarValue::Int16(_)
        | ScalarValue::Int32(_)
        | ScalarValue::Int64(_)
        | ScalarValue::UInt8(_)
        | ScalarValue::UInt16(_)
        | ScalarValue::UInt32(_)
        | ScalarValue::UInt64(_)
        | ScalarValue::Float32(_)
        | ScalarValue::Float64(_) => value.to_string(),
        other => json_string(&other.to_string()),
    }
}

/// `text` as a JSON string.
fn json_string(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

/// `sql` with what DataFusion cannot run but means the same rewritten (see
/// the module's doc), or `None` when there is nothing to rewrite.
pub fn rewrite(sql: &str) -> Option<String> {
    let lower = sql.to_ascii_lowercase();
    let subquery = lower.contains("(select") && lower.contains("pg_catalog");
    if !subquery
        && !lower.contains("escape")
        && !lower.contains("generate_subscripts")
        && !lower.contains("_pg_expandarray")
    {
        return None;
    }
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let mut changed = false;
    for statement in &mut statements {
        let catalog = super::names::reads_catalog(statement);
        let _ = visit_expressions_mut(statement, |expr| {
            changed |= rewrite_expr(expr)
                || (catalog
                    && (no_column_extras(expr)
                        || aggregate_subquery(expr)
                        || expand_array(expr)
                        || field_access(expr)));
            ControlFlow::<()>::Continue(())
        });
    }
    changed.then(|| super::names::text_of(&statements))
}

fn rewrite_expr(expr: &mut Expr) -> bool {
    match expr {
        Expr::Like {
            pattern,
            escape_char: escape @ Some(_),
            ..
        }
        | Expr::ILike {
            pattern,
            escape_char: escape @ Some(_),
            ..
        } => {
            let Some(Value::SingleQuotedString(e)) = escape.clone().map(|v| v.value) else {
                return false;
            };
            let mut chars = e.chars();
            let (Some(c), None) = (chars.next(), chars.next()) else {
                return false;
            };
            if c == '\\' {
                return false;
            }
            // A backslash stands for itself, and `c` followed by a
            // character for that character: both as backslash escapes.
            let Some(escaped) = parse_expr(&format!(
                "regexp_replace(replace({pattern}, '\\', '\\\\'), '{}(.)', '\\\\\\1', 'g')",
                regex_escape(c)
            )) else {
                return false;
            };
            **pattern = escaped;
            *escape = None;
            true
        }
        Expr::Function(f)
            if f.name
                .to_string()
                .eq_ignore_ascii_case("generate_subscripts") =>
        {
            let FunctionArguments::List(list) = &f.args else {
                return false;
            };
            let Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(array))) = list.args.first() else {
                return false;
            };
            // The subscripts of a one-dimensional array: 1 to its length.
            let Some(subscripts) = parse_expr(&format!(
                "unnest(range(1, CAST(cardinality({array}) AS BIGINT) + 1))"
            )) else {
                return false;
            };
            *expr = subscripts;
            true
        }
        _ => false,
    }
}

/// The catalogs that hold nothing for our tables' columns: defaults,
/// sequences (identity columns) and collations other than the default.
const NO_ROWS_FOR_OUR_COLUMNS: [&str; 3] = ["pg_attrdef", "pg_sequence", "pg_collation"];

/// `CASE WHEN … THEN (SELECT … FROM pg_attrdef | pg_sequence |
/// pg_collation …) ELSE NULL END` as a NULL text: a column's default,
/// identity and collation, of which our tables' columns have none.
/// SQLAlchemy asks for them so, and DataFusion cannot plan a correlated
/// subquery inside a `CASE`.
fn no_column_extras(expr: &mut Expr) -> bool {
    let Expr::Case {
        conditions,
        else_result,
        ..
    } = &*expr
    else {
        return false;
    };
    let null_else = match else_result.as_deref() {
        None => true,
        Some(Expr::Value(v)) => matches!(v.value, Value::Null),
        _ => false,
    };
    let from_empty = |e: &Expr| {
        let Expr::Subquery(q) = e else {
            return false;
        };
        let mut names = Vec::new();
        let _ = datafusion::sql::sqlparser::ast::visit_relations(q.as_ref(), |n| {
            names.push(n.to_string().to_ascii_lowercase());
            ControlFlow::<()>::Continue(())
        });
        names.iter().any(|n| {
            NO_ROWS_FOR_OUR_COLUMNS
                .iter()
                .any(|t| n.trim_matches('"').ends_with(t))
        })
    };
    if !null_else || conditions.len() != 1 || !from_empty(&conditions[0].result) {
        return false;
    }
    match parse_expr("CAST(NULL AS TEXT)") {
        Some(null) => {
            *expr = null;
            true
        }
        None => false,
    }
}

/// A scalar subquery of the catalogs that is not aggregated, with its one
/// item wrapped in `max()`: DataFusion plans a correlated scalar subquery
/// only when aggregated, and these (a column's default, its collation)
/// have at most one row, as PostgreSQL requires of them.
fn aggregate_subquery(expr: &mut Expr) -> bool {
    use datafusion::sql::sqlparser::ast::{GroupByExpr, SelectItem, SetExpr};
    let Expr::Subquery(query) = expr else {
        return false;
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return false;
    };
    let grouped = match &select.group_by {
        GroupByExpr::All(_) => true,
        GroupByExpr::Expressions(e, _) => !e.is_empty(),
    };
    if grouped || select.projection.len() != 1 || select.having.is_some() {
        return false;
    }
    let item = match &mut select.projection[0] {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
        _ => return false,
    };
    const AGGREGATES: [&str; 9] = [
        "count",
        "sum",
        "min",
        "max",
        "avg",
        "array_agg",
        "bool_and",
        "bool_or",
        "string_agg",
    ];
    if let Expr::Function(f) = &*item {
        let name = f.name.to_string().to_ascii_lowercase();
        if AGGREGATES.iter().any(|a| name.ends_with(a)) {
            return false;
        }
    }
    let Some(wrapped) = parse_expr(&format!("max({item})")) else {
        return false;
    };
    *item = wrapped;
    true
}

/// `information_schema._pg_expandarray(a)`, PostgreSQL's set-returning
/// function of one row `(x, n)` per element `x` at position `n`, as
/// `unnest`s that DataFusion runs (several in one select list advance
/// together, as PostgreSQL's set-returning functions do). pgjdbc's
/// `getPrimaryKeys` and `getIndexInfo` expand `pg_index.indkey` with it.
fn expand_array(expr: &mut Expr) -> bool {
    let Expr::Function(f) = expr else {
        return false;
    };
    if !f
        .name
        .to_string()
        .to_ascii_lowercase()
        .ends_with("_pg_expandarray")
    {
        return false;
    }
    let FunctionArguments::List(list) = &f.args else {
        return false;
    };
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(array))] = list.args.as_slice() else {
        return false;
    };
    let Some(rows) = parse_expr(&format!(
        "named_struct('x', unnest({array}), \
         'n', CAST(unnest(range(1, CAST(cardinality({array}) AS BIGINT) + 1)) AS INT))"
    )) else {
        return false;
    };
    *expr = rows;
    true
}

/// `(composite).field` as `get_field(composite, 'field')`: DataFusion 55
/// plans a field access only on a column name, and pgjdbc reads the fields
/// of [`expand_array`]'s rows so.
fn field_access(expr: &mut Expr) -> bool {
    use datafusion::sql::sqlparser::ast::AccessExpr;
    let Expr::CompoundFieldAccess { root, access_chain } = expr else {
        return false;
    };
    let [AccessExpr::Dot(Expr::Identifier(field))] = access_chain.as_slice() else {
        return false;
    };
    if !matches!(root.as_ref(), Expr::Nested(_)) {
        return false;
    }
    // An unquoted name folds to lower case, as PostgreSQL folds it.
    let name = match field.quote_style {
        None => field.value.to_ascii_lowercase(),
        Some(_) => field.value.clone(),
    }
    .replace('\'', "''");
    let Some(get) = parse_expr(&format!("get_field({root}, '{name}')")) else {
        return false;
    };
    *expr = get;
    true
}

/// `c` as a regular expression matching itself.
fn regex_escape(c: char) -> String {
    if c.is_ascii_alphanumeric() {
        c.to_string()
    } else {
        format!("\\{c}")
    }
}

/// The expression `sql` (`None` if it does not parse).
fn parse_expr(sql: &str) -> Option<Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .ok()?
        .parse_expr()
        .ok()
}

/// A function of `args` that answers `value` (NULL when `None`) for every
/// row.
fn constant_text(name: &str, args: Vec<DataType>, value: Option<String>) -> ScalarUDF {
    let func = move |args: &[ColumnarValue]| {
        let rows = rows_of(args);
        let array: ArrayRef = Arc::new(StringArray::from(vec![value.clone(); rows]));
        Ok(ColumnarValue::Array(array))
    };
    create_udf(
        name,
        args,
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(func),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_reads_as_postgresql() {
        let v = version_text();
        assert!(
            v.starts_with(&format!("PostgreSQL {SERVER_VERSION} ")),
            "{v}"
        );
        assert!(v.contains("supportfunnel"), "{v}");
    }

    #[test]
    fn like_escapes_and_subscripts_are_rewritten() {
        let sql = "SELECT n FROM t WHERE n NOT LIKE 'pg/_' || '%' ESCAPE '/'";
        let out = rewrite(sql).unwrap();
        assert!(!out.contains("ESCAPE"), "{out}");
        assert!(out.contains("regexp_replace"), "{out}");
        let out = rewrite("SELECT generate_subscripts(a, 1) FROM t").unwrap();
        assert!(out.contains("unnest(range(1"), "{out}");
        assert_eq!(rewrite("SELECT 1"), None);
        assert_eq!(
            rewrite("SELECT x FROM t WHERE x LIKE 'a\\_%' ESCAPE '\\'"),
            None
        );
    }

    /// pgjdbc's shape (`getPrimaryKeys`): the expanded elements and their
    /// positions advance together, and `(row).field` reads them.
    #[tokio::test]
    async fn expanded_arrays_give_elements_with_their_positions() {
        let ctx = SessionContext::new();
        ctx.sql("CREATE SCHEMA pg_catalog").await.unwrap();
        ctx.sql("CREATE TABLE pg_catalog.pg_index AS SELECT make_array(7, 9) AS indkey")
            .await
            .unwrap();
        let sql = "SELECT r.n, (r.keys).x AS x FROM (SELECT \
                   (information_schema._pg_expandarray(i.indkey)).n AS n, \
                   information_schema._pg_expandarray(i.indkey) AS keys \
                   FROM pg_catalog.pg_index i) r ORDER BY r.n";
        let out = rewrite(sql).unwrap();
        assert!(!out.contains("_pg_expandarray"), "{out}");
        let batches = ctx.sql(&out).await.unwrap().collect().await.unwrap();
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("| ") && !l.contains(" n "))
            .collect();
        assert_eq!(rows, ["| 1 | 7 |", "| 2 | 9 |"], "{text}");
    }
}
