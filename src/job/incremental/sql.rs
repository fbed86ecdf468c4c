//! The statements of `queries/incremental/`, by file and name: each file
//! holds the statements of one phase, each after a `-- name: NAME` line
//! (the yesql/aiosql convention), with its values as `$name` parameters.

use std::collections::HashMap;
use std::sync::OnceLock;

/// The files, by the name a caller gives.
const FILES: [(&str, &str); 4] = [
    (
        "new_files",
        include_str!("../../../queries/incremental/new_files.sql"),
    ),
    (
        "reduced_input",
        include_str!("../../../queries/incremental/reduced_input.sql"),
    ),
    (
        "data_quality",
        include_str!("../../../queries/incremental/data_quality.sql"),
    ),
    (
        "fold",
        include_str!("../../../queries/incremental/fold.sql"),
    ),
];

/// Statement `name` of file `file`. Every name the code asks for is one
/// the files hold (the tests below ask for each), so a missing one is a
/// bug, not an input error.
pub(super) fn statement(file: &str, name: &str) -> &'static str {
    static ALL: OnceLock<HashMap<String, String>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        FILES
            .iter()
            .flat_map(|(f, text)| {
                crate::engine::query::named_statements(text)
                    .into_iter()
                    .map(move |(n, s)| (format!("{f}/{n}"), s))
            })
            .collect()
    });
    all.get(&format!("{file}/{name}"))
        .map(String::as_str)
        .unwrap_or_else(|| panic!("queries/incremental/{file}.sql has no statement `{name}`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::EVENT_TYPES;
    use crate::tables::{EVENTS, MESSAGES};

    /// Every statement is one statement of PostgreSQL's syntax.
    #[test]
    fn every_statement_parses_alone() {
        use datafusion::sql::sqlparser::{dialect::PostgreSqlDialect, parser::Parser};
        for (file, text) in FILES {
            let named = crate::engine::query::named_statements(text);
            assert!(!named.is_empty(), "{file}");
            for (name, sql) in named {
                let parsed = Parser::parse_sql(&PostgreSqlDialect {}, &sql)
                    .unwrap_or_else(|e| panic!("{file}.sql `{name}`: {e}"));
                assert_eq!(parsed.len(), 1, "{file}.sql `{name}`");
            }
        }
    }

    /// The literal lists of the files are the contract's columns and the
    /// spec's event kinds (`crate::rules`), in their order.
    #[test]
    fn lists_match_the_contract_and_the_rules() {
        let quoted = |types: &[&str]| {
            types
                .iter()
                .map(|t| format!("'{t}'"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let lifecycle = format!("IN ({})", quoted(&EVENT_TYPES[4..]));
        let actions = format!("IN ({})", quoted(&EVENT_TYPES[..4]));
        let events: Vec<&str> = EVENTS.columns.iter().map(|(c, _)| *c).collect();
        let messages: Vec<&str> = MESSAGES.columns.iter().map(|(c, _)| *c).collect();
        let all: String = FILES.iter().map(|(_, t)| *t).collect();
        for list in all.split("IN ('").skip(1) {
            let list = format!("IN ('{}", &list[..=list.find(')').unwrap()]);
            assert!(list == lifecycle || list == actions, "{list}");
        }
        for (file, name) in [
            ("reduced_input", "live_events"),
            ("reduced_input", "kept_events"),
        ] {
            assert!(statement(file, name).contains(&events.join(", ")), "{name}");
        }
        for (file, name) in [
            ("reduced_input", "live_messages"),
            ("reduced_input", "kept_messages"),
            ("fold", "live_messages"),
            ("fold", "messages_not_before"),
        ] {
            assert!(
                statement(file, name).contains(&messages.join(", ")),
                "{name}"
            );
        }
    }
}
