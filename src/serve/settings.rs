//! Session settings of a `serve` connection: `SET`, `SHOW`, `RESET`,
//! `DISCARD` and the startup packet's parameters (`PGOPTIONS='-c …'`).
//!
//! A setting is either honoured (`statement_timeout`, `TimeZone`, the
//! output formats), accepted where accepting it is the truth (`lock_timeout`
//! on a server without locks), or refused: a value PostgreSQL would refuse
//! gets SQLSTATE 22023 (`invalid_parameter_value`), a name it does not know
//! 42704 (`undefined_object`). Nothing is answered `SET` and then ignored,
//! and `SHOW` says what is in force. Values live in the client's metadata
//! (where pgwire's result encoder reads the output formats), under the
//! lowercase name.

use std::time::Duration;

use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Expr, Ident, ObjectName, Reset, Set, Statement, Value};
use datafusion_postgres::pgwire;
use pgwire::api::ClientInfo;
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::ParameterStatus;
use pgwire::messages::PgWireBackendMessage;

/// The PostgreSQL version clients are told (drivers parse it).
pub const SERVER_VERSION: &str = "16.6";
/// The same as a number (`server_version_num`).
pub const SERVER_VERSION_NUM: &str = "160006";

/// The metadata key of the client's statement timeout in milliseconds
/// (`0`: none); absent: the server's default.
const TIMEOUT_KEY: &str = "statement_timeout";

/// PostgreSQL's limit on identifier-like settings (`NAMEDATALEN - 1`).
const NAME_MAX: usize = 63;

/// How a setting's value is checked and put in its canonical form.
type Check = fn(&str) -> Result<String, String>;

/// One setting a client may `SET` and `SHOW`.
struct Setting {
    /// The name as PostgreSQL spells it in `SHOW ALL` and ParameterStatus.
    name: &'static str,
    /// Sent to the client as ParameterStatus when it changes.
    reported: bool,
    /// Its value when the client set none.
    default: &'static str,
    check: Check,
    description: &'static str,
}

fn any(v: &str) -> Result<String, String> {
    Ok(v.to_string())
}

fn on_only(v: &str) -> Result<String, String> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Ok("on".into()),
        _ => Err("this server is read-only and supports only \"on\"".into()),
    }
}

fn boolean(v: &str) -> Result<String, String> {
    match v.to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" | "t" | "y" => Ok("on".into()),
        "off" | "false" | "no" | "0" | "f" | "n" => Ok("off".into()),
        _ => Err("a Boolean (on or off) is expected".into()),
    }
}

fn one_of(v: &str, allowed: &[&str]) -> Result<String, String> {
    let lower = v.to_ascii_lowercase();
    allowed
        .iter()
        .find(|a| **a == lower)
        .map(|a| a.to_string())
        .ok_or_else(|| format!("available values: {}", allowed.join(", ")))
}

fn duration(v: &str) -> Result<String, String> {
    parse_duration(v).map(|d| show_duration(Some(d)))
}

fn time_zone(v: &str) -> Result<String, String> {
    check_time_zone(v)
}

fn date_style(v: &str) -> Result<String, String> {
    let (mut style, mut order) = ("ISO", "MDY");
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.to_ascii_uppercase().as_str() {
            "ISO" => style = "ISO",
            "SQL" => style = "SQL",
            "POSTGRES" => style = "Postgres",
            "GERMAN" => style = "German",
            "DMY" | "EURO" | "EUROPEAN" => order = "DMY",
            "MDY" | "US" | "NONEURO" | "NONEUROPEAN" => order = "MDY",
            "YMD" => order = "YMD",
            "DEFAULT" => (style, order) = ("ISO", "MDY"),
            _ => return Err(format!("unrecognized \"DateStyle\" key word: \"{part}\"")),
        }
    }
    Ok(format!("{style}, {order}"))
}

fn interval_style(v: &str) -> Result<String, String> {
    one_of(
        v,
        &["postgres", "postgres_verbose", "sql_standard", "iso_8601"],
    )
}

fn float_digits(v: &str) -> Result<String, String> {
    match v.trim().parse::<i32>() {
        Ok(n) if (-15..=3).contains(&n) => Ok(n.to_string()),
        _ => Err("an integer from -15 to 3 is expected".into()),
    }
}

fn client_encoding(v: &str) -> Result<String, String> {
    match v.to_ascii_uppercase().replace(['-', '_'], "").as_str() {
        "UTF8" | "UNICODE" => Ok("UTF8".into()),
        _ => Err(format!(
            "conversion between {v} and UTF8 is not supported (this server speaks UTF8)"
        )),
    }
}

/// PostgreSQL keeps the first 63 bytes of `application_name`, printable
/// ASCII only.
fn application_name(v: &str) -> Result<String, String> {
    let clean: String = v
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    Ok(clean.chars().take(NAME_MAX).collect())
}

fn isolation(v: &str) -> Result<String, String> {
    one_of(
        v,
        &[
            "serializable",
            "repeatable read",
            "read committed",
            "read uncommitted",
        ],
    )
}

fn min_messages(v: &str) -> Result<String, String> {
    one_of(
        v,
        &[
            "debug5", "debug4", "debug3", "debug2", "debug1", "debug", "log", "notice", "warning",
            "error",
        ],
    )
}

/// The server's default of setting `name` (any case), if it has one.
pub fn default_of(name: &str) -> Option<&'static str> {
    SETTINGS
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(name))
        .map(|s| s.default)
}

/// Every setting with its default and description, in `SHOW ALL` order
/// (what `pg_catalog.pg_settings` lists).
pub fn defaults() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    SETTINGS.iter().map(|s| (s.name, s.default, s.description))
}

/// Every setting, in `SHOW ALL` order.
const SETTINGS: &[Setting] = &[
    Setting {
        name: "application_name",
        reported: true,
        default: "",
        check: application_name,
        description: "Sets the application name to be reported in statistics and logs.",
    },
    Setting {
        name: "bytea_output",
        reported: false,
        default: "hex",
        check: |v| one_of(v, &["hex", "escape"]),
        description: "Sets the output format for bytea.",
    },
    Setting {
        name: "client_encoding",
        reported: true,
        default: "UTF8",
        check: client_encoding,
        description: "Sets the client's character set encoding.",
    },
    Setting {
        name: "client_min_messages",
        reported: false,
        default: "notice",
        check: min_messages,
        description: "Sets the message levels that are sent to the client.",
    },
    Setting {
        name: "DateStyle",
        reported: true,
        default: "ISO, MDY",
        check: date_style,
        description: "Sets the display format for date and time values.",
    },
    Setting {
        name: "default_transaction_isolation",
        reported: false,
        default: "read committed",
        check: isolation,
        description: "Sets the transaction isolation level of each new transaction.",
    },
    Setting {
        name: "default_transaction_read_only",
        reported: true,
        default: "on",
        check: on_only,
        description: "Sets the default read-only status of new transactions.",
    },
    Setting {
        name: "extra_float_digits",
        reported: false,
        default: "1",
        check: float_digits,
        description: "Sets the number of digits displayed for floating-point values.",
    },
    Setting {
        name: "idle_in_transaction_session_timeout",
        reported: false,
        default: "0",
        check: duration,
        description: "Accepted; transactions hold nothing on this server.",
    },
    Setting {
        name: "idle_session_timeout",
        reported: false,
        default: "0",
        check: duration,
        description: "Accepted; idle sessions are kept until the client leaves.",
    },
    Setting {
        name: "integer_datetimes",
        reported: true,
        default: "on",
        check: on_only,
        description: "Shows whether datetimes are integer based.",
    },
    Setting {
        name: "IntervalStyle",
        reported: true,
        default: "postgres",
        check: interval_style,
        description: "Sets the display format for interval values.",
    },
    Setting {
        name: "jit",
        reported: false,
        default: "off",
        check: boolean,
        description: "Accepted; queries are compiled by DataFusion, not by LLVM.",
    },
    Setting {
        name: "lock_timeout",
        reported: false,
        default: "0",
        check: duration,
        description: "Accepted; this read-only server takes no locks.",
    },
    Setting {
        name: "max_identifier_length",
        reported: false,
        default: "63",
        check: |_| Err("parameter \"max_identifier_length\" cannot be changed".into()),
        description: "Shows the maximum identifier length.",
    },
    // pgjdbc reads it (from pg_settings) before asking for foreign keys.
    Setting {
        name: "max_index_keys",
        reported: false,
        default: "32",
        check: |_| Err("parameter \"max_index_keys\" cannot be changed".into()),
        description: "Shows the maximum number of index keys.",
    },
    Setting {
        name: "search_path",
        reported: false,
        default: "public",
        check: any,
        description: "Sets the schema search order for names that are not schema-qualified.",
    },
    Setting {
        name: "server_encoding",
        reported: true,
        default: "UTF8",
        check: client_encoding,
        description: "Shows the server (database) character set encoding.",
    },
    Setting {
        name: "server_version",
        reported: true,
        default: SERVER_VERSION,
        check: |_| Err("parameter \"server_version\" cannot be changed".into()),
        description: "Shows the server version.",
    },
    Setting {
        name: "server_version_num",
        reported: false,
        default: SERVER_VERSION_NUM,
        check: |_| Err("parameter \"server_version_num\" cannot be changed".into()),
        description: "Shows the server version as an integer.",
    },
    Setting {
        name: "standard_conforming_strings",
        reported: true,
        default: "on",
        check: on_only,
        description: "Causes '...' strings to treat backslashes literally.",
    },
    Setting {
        name: "statement_timeout",
        reported: false,
        default: "0",
        check: duration,
        description: "Sets the maximum allowed duration of any statement (0: none).",
    },
    Setting {
        name: "TimeZone",
        reported: true,
        default: "UTC",
        check: time_zone,
        description: "Sets the time zone for displaying and interpreting time stamps.",
    },
    Setting {
        name: "transaction_isolation",
        reported: false,
        default: "read committed",
        check: isolation,
        description: "Sets the current transaction's isolation level.",
    },
    Setting {
        name: "transaction_read_only",
        reported: false,
        default: "on",
        check: on_only,
        description: "Sets the current transaction's read-only status.",
    },
];

fn setting(name: &str) -> Option<&'static Setting> {
    let lower = name.to_ascii_lowercase();
    let lower = match lower.as_str() {
        // PostgreSQL's aliases
        "time zone" | "time_zone" => "timezone",
        "transaction isolation level" => "transaction_isolation",
        other => other,
    }
    .to_string();
    SETTINGS
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(&lower))
}

fn invalid(name: &str, value: &str, why: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "22023".into(),
        format!("invalid value for parameter \"{name}\": \"{value}\" ({why})"),
    )))
}

fn unknown(name: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        "42704".into(),
        format!("unrecognized configuration parameter \"{name}\""),
    )))
}

/// A PostgreSQL time span: a number with an optional unit (`us`, `ms`, `s`,
/// `min`, `h`, `d`; none means milliseconds), spaces allowed between them.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().map_err(|_| {
        "a time such as 30s, 5min, 1h or 1500 (milliseconds) is expected".to_string()
    })?;
    let ms_per = match unit.trim() {
        "" | "ms" => 1.0,
        "us" => 0.001,
        "s" => 1_000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        other => {
            return Err(format!(
                "unit \"{other}\" is not one of us, ms, s, min, h, d"
            ))
        }
    };
    let ms = number * ms_per;
    if !ms.is_finite() || ms > i32::MAX as f64 {
        return Err(format!("at most {} milliseconds", i32::MAX));
    }
    Ok(Duration::from_micros((ms * 1000.0).round() as u64))
}

/// A span as `SHOW` writes it: `0` for none, else the largest unit that
/// divides it (`1h`, `90s`, `250ms`).
pub fn show_duration(d: Option<Duration>) -> String {
    let Some(d) = d.filter(|d| !d.is_zero()) else {
        return "0".into();
    };
    let ms = d.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("min", 60_000),
        ("s", 1_000),
    ] {
        if ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// A zone DataFusion and Arrow accept: an IANA name or a `±HH:MM` offset.
pub fn check_time_zone(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("utc") || t.eq_ignore_ascii_case("z") {
        return Ok("UTC".into());
    }
    t.parse::<datafusion::arrow::array::timezone::Tz>()
        .map(|_| t.to_string())
        .map_err(|_| "not a time zone name (such as Europe/Paris) or offset (+02:00)".into())
}

/// The client's statement timeout: `Some(None)` when it switched it off,
/// `None` when it set none (the server's default holds).
pub fn client_timeout<C: ClientInfo + ?Sized>(client: &C) -> Option<Option<Duration>> {
    let ms: u64 = client.metadata().get(TIMEOUT_KEY)?.parse().ok()?;
    Some((ms > 0).then(|| Duration::from_millis(ms)))
}

/// The value of `name` in force for `client` (`default_timeout`: the
/// server's statement timeout).
fn value_of<C: ClientInfo + ?Sized>(
    s: &Setting,
    client: &C,
    default_timeout: Option<Duration>,
) -> String {
    if s.name == "statement_timeout" {
        return show_duration(client_timeout(client).unwrap_or(default_timeout));
    }
    client
        .metadata()
        .get(&s.name.to_ascii_lowercase())
        .cloned()
        .unwrap_or_else(|| s.default.to_string())
}

/// A statement's value as the text PostgreSQL would take: strings
/// unquoted, identifiers and numbers as written, lists joined by `, `.
fn value_text(values: &[Expr]) -> String {
    values
        .iter()
        .map(|v| match v {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
                other => other.to_string(),
            },
            Expr::Identifier(Ident { value, .. }) => value.clone(),
            Expr::UnaryOp { op, expr } => format!("{op}{}", value_text(std::slice::from_ref(expr))),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a client's setting statement changes.
pub enum Change {
    /// Set `name` (canonical) to `value` (canonical).
    Set(&'static str, String),
    /// Back to the default: one setting, or all.
    Reset(Option<&'static str>),
}

/// The change a `SET`/`RESET` statement asks for; `Ok(None)` when the
/// statement is not one of ours (`SET ROLE`, transactions, …).
pub fn change_of(statement: &Statement) -> PgWireResult<Option<Change>> {
    let (name, values): (String, Vec<Expr>) = match statement {
        Statement::Set(Set::SingleAssignment {
            variable, values, ..
        }) => (name_text(variable), values.clone()),
        Statement::Set(Set::SetTimeZone { value, .. }) => ("TimeZone".into(), vec![value.clone()]),
        Statement::Set(Set::SetNames { charset_name, .. }) => (
            "client_encoding".into(),
            vec![Expr::Identifier(charset_name.clone())],
        ),
        Statement::Reset(r) => {
            return Ok(Some(match &r.reset {
                Reset::ALL => Change::Reset(None),
                Reset::ConfigurationParameter(name) => {
                    let text = name_text(name);
                    let s = setting(&text).ok_or_else(|| unknown(&text))?;
                    Change::Reset(Some(s.name))
                }
            }))
        }
        Statement::Discard { .. } => return Ok(Some(Change::Reset(None))),
        _ => return Ok(None),
    };
    let s = setting(&name).ok_or_else(|| unknown(&name))?;
    let text = value_text(&values);
    if text.eq_ignore_ascii_case("default")
        || (s.name == "TimeZone" && text.eq_ignore_ascii_case("local"))
    {
        return Ok(Some(Change::Reset(Some(s.name))));
    }
    let value = (s.check)(&text).map_err(|why| invalid(s.name, &text, &why))?;
    Ok(Some(Change::Set(s.name, value)))
}

fn name_text(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|p| p.to_string().trim_matches('"').to_string())
        .collect::<Vec<_>>()
        .join(".")
}

/// Applies `change` to the client's metadata and the session (its time
/// zone), and returns the ParameterStatus messages the client must get.
pub fn apply<C: ClientInfo + ?Sized>(
    change: Change,
    client: &mut C,
    session: &SessionContext,
    default_zone: &Option<String>,
) -> Vec<PgWireBackendMessage> {
    let names: Vec<&'static str> = match &change {
        Change::Set(name, _) => vec![name],
        Change::Reset(Some(name)) => vec![name],
        Change::Reset(None) => SETTINGS.iter().map(|s| s.name).collect(),
    };
    let before: Vec<String> = names
        .iter()
        .map(|n| value_of(setting(n).expect("known"), client, None))
        .collect();
    match change {
        Change::Set("statement_timeout", v) => {
            let ms = parse_duration(&v).map(|d| d.as_millis()).unwrap_or(0);
            client
                .metadata_mut()
                .insert(TIMEOUT_KEY.into(), ms.to_string());
        }
        Change::Set(name, v) => {
            client.metadata_mut().insert(name.to_ascii_lowercase(), v);
        }
        Change::Reset(_) => {
            for n in &names {
                client.metadata_mut().remove(&n.to_ascii_lowercase());
            }
        }
    }
    sync_session(client, session, default_zone);
    names
        .iter()
        .zip(before)
        .filter_map(|(n, old)| {
            let s = setting(n).expect("known");
            let now = value_of(s, client, None);
            (s.reported && now != old).then(|| {
                PgWireBackendMessage::ParameterStatus(ParameterStatus::new(s.name.into(), now))
            })
        })
        .collect()
}

/// Makes the session's DataFusion time zone the client's (`default_zone`,
/// the server's, when the client set none).
pub fn sync_session<C: ClientInfo + ?Sized>(
    client: &C,
    session: &SessionContext,
    default_zone: &Option<String>,
) {
    let zone = client
        .metadata()
        .get("timezone")
        .cloned()
        .or_else(|| default_zone.clone());
    let state = session.state_ref();
    let current = state.read().config().options().execution.time_zone.clone();
    if current != zone {
        state.write().config_mut().options_mut().execution.time_zone = zone;
    }
}

/// Checks and applies the startup packet's settings: its own parameters
/// (`TimeZone`, `DateStyle`, `application_name`, …) and `options` (`-c
/// name=value`, `--name=value`). A value that is not valid fails the login
/// (as in PostgreSQL).
pub fn apply_startup<C: ClientInfo + ?Sized>(client: &mut C) -> PgWireResult<()> {
    // (name, value, from `options`)
    let mut given: Vec<(String, String, bool)> = client
        .metadata()
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "user" | "database" | "options" | "replication"))
        .map(|(k, v)| (k.clone(), v.clone(), false))
        .collect();
    if let Some(options) = client.metadata().get("options").cloned() {
        given.extend(
            parse_options(&options)?
                .into_iter()
                .map(|(k, v)| (k, v, true)),
        );
    }
    for (name, value, from_options) in given {
        let Some(s) = setting(&name) else {
            // A parameter of the startup packet this server does not know
            // is left alone (drivers send some of their own); one asked
            // for with -c is refused, as PostgreSQL does.
            if from_options {
                return Err(fatal(unknown(&name)));
            }
            continue;
        };
        if matches!(
            s.name,
            "server_version" | "server_version_num" | "server_encoding" | "integer_datetimes"
        ) {
            continue;
        }
        let value = (s.check)(&value).map_err(|why| fatal(invalid(s.name, &value, &why)))?;
        client.metadata_mut().remove(&name);
        if s.name == "statement_timeout" {
            let ms = parse_duration(&value).map(|d| d.as_millis()).unwrap_or(0);
            client
                .metadata_mut()
                .insert(TIMEOUT_KEY.into(), ms.to_string());
        } else {
            client
                .metadata_mut()
                .insert(s.name.to_ascii_lowercase(), value);
        }
    }
    Ok(())
}

fn fatal(e: PgWireError) -> PgWireError {
    match e {
        PgWireError::UserError(info) => PgWireError::UserError(Box::new(ErrorInfo::new(
            "FATAL".into(),
            info.code.clone(),
            info.message.clone(),
        ))),
        other => other,
    }
}

/// `-c name=value --other=value`, backslash escaping a space.
fn parse_options(text: &str) -> PgWireResult<Vec<(String, String)>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let pair = if w == "-c" {
            it.next()
        } else if let Some(rest) = w.strip_prefix("-c") {
            Some(rest.to_string())
        } else {
            w.strip_prefix("--").map(str::to_string)
        };
        let Some((name, value)) = pair.as_deref().and_then(|p| p.split_once('=')) else {
            return Err(fatal(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "22023".into(),
                format!("invalid startup option \"{w}\" (use -c name=value)"),
            )))));
        };
        out.push((name.replace('-', "_"), value.to_string()));
    }
    Ok(out)
}

/// `SHOW`'s words as one name (`TIME ZONE`, `TimeZone`, `ALL`).
fn variable_name(variable: &[Ident]) -> String {
    variable
        .iter()
        .map(|i| i.value.clone())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The rows of `SHOW name` (`SHOW ALL`: every setting, with a description)
/// as (column names, rows).
pub fn show<C: ClientInfo + ?Sized>(
    variable: &[Ident],
    client: &C,
    default_timeout: Option<Duration>,
) -> PgWireResult<(Vec<&'static str>, Vec<Vec<String>>)> {
    let name = variable_name(variable);
    if name.eq_ignore_ascii_case("all") {
        let rows = SETTINGS
            .iter()
            .map(|s| {
                vec![
                    s.name.to_string(),
                    value_of(s, client, default_timeout),
                    s.description.to_string(),
                ]
            })
            .collect();
        return Ok((vec!["name", "setting", "description"], rows));
    }
    let s = setting(&name).ok_or_else(|| unknown(&name))?;
    Ok((
        vec![s.name],
        vec![vec![value_of(s, client, default_timeout)]],
    ))
}

/// The column names `SHOW` gives before it runs (for a prepared `SHOW`).
pub fn show_columns(variable: &[Ident]) -> PgWireResult<Vec<&'static str>> {
    let name = variable_name(variable);
    if name.eq_ignore_ascii_case("all") {
        return Ok(vec!["name", "setting", "description"]);
    }
    Ok(vec![setting(&name).ok_or_else(|| unknown(&name))?.name])
}

/// The ParameterStatus a client gets at login: every reported setting as in
/// force for it.
pub fn startup_parameters<C: ClientInfo + ?Sized>(client: &C) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = SETTINGS
        .iter()
        .filter(|s| s.reported)
        .map(|s| (s.name.to_string(), value_of(s, client, None)))
        .collect();
    params.push(("is_superuser".into(), "off".into()));
    params.push(("in_hot_standby".into(), "off".into()));
    if let Some(user) = client.metadata().get("user") {
        params.push(("session_authorization".into(), user.clone()));
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_postgresql_forms() {
        let ms = |t: &str| parse_duration(t).map(|d| d.as_millis());
        assert_eq!(ms("1h"), Ok(3_600_000));
        assert_eq!(ms("10 s"), Ok(10_000));
        assert_eq!(ms("1500"), Ok(1_500));
        assert_eq!(ms("5min"), Ok(300_000));
        assert_eq!(ms("0"), Ok(0));
        assert_eq!(ms(" 250ms "), Ok(250));
        assert!(ms("1 hour").is_err());
        assert!(ms("forever").is_err());
        assert!(ms("1e99").is_err());
        assert_eq!(show_duration(Some(Duration::from_secs(3600))), "1h");
        assert_eq!(show_duration(Some(Duration::from_secs(90))), "90s");
        assert_eq!(show_duration(Some(Duration::from_millis(250))), "250ms");
        assert_eq!(show_duration(None), "0");
    }

    #[test]
    fn values_are_checked_and_made_canonical() {
        assert_eq!(date_style("iso, dmy"), Ok("ISO, DMY".into()));
        assert!(date_style("garbage").is_err());
        assert_eq!(check_time_zone("Europe/Paris"), Ok("Europe/Paris".into()));
        assert_eq!(check_time_zone("+02:00"), Ok("+02:00".into()));
        assert!(check_time_zone("Mars/Olympus").is_err());
        assert_eq!(application_name(&"x".repeat(65_000)).unwrap().len(), 63);
        assert!(client_encoding("LATIN1").is_err());
        assert_eq!(setting("timezone").map(|s| s.name), Some("TimeZone"));
        assert_eq!(setting("TIME ZONE").map(|s| s.name), Some("TimeZone"));
        assert!(setting("no_such_thing").is_none());
    }

    #[test]
    fn startup_options_as_libpq_sends_them() {
        let got =
            parse_options("-c statement_timeout=5s --DateStyle=ISO,\\ DMY -cjit=off").unwrap();
        assert_eq!(
            got,
            [
                ("statement_timeout".to_string(), "5s".to_string()),
                ("DateStyle".to_string(), "ISO, DMY".to_string()),
                ("jit".to_string(), "off".to_string()),
            ]
        );
        assert!(parse_options("-c nonsense").is_err());
    }
}
