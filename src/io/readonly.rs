//! The tables the engine registers are inputs: nothing run through it writes
//! into them.
//!
//! DataFusion lets SQL write: `INSERT INTO events …` adds a Parquet file to
//! the events dataset, and `COPY … TO 'data/events/x.parquet'` can put a
//! file among the inputs or overwrite one. The report would then read what a
//! query wrote. So:
//!
//! * `INSERT`, `UPDATE`, `DELETE` into a registered table or view, or into
//!   any table whose files live where a registered table's do, are refused;
//! * a result (`COPY … TO`, `--output`, the job's output location) is never
//!   written inside a registered table's location, nor to a directory that
//!   holds one.
//!
//! Writing elsewhere stays possible, as in datafusion-cli: `COPY (SELECT …)
//! TO 'result.parquet'`, or `CREATE EXTERNAL TABLE` over a new directory and
//! `INSERT INTO` it.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::datasource::listing::ListingTable;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::settings::location::Location;

/// The registered tables (name, location) and views of a context, kept in
/// its configuration as an extension.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    tables: Vec<(String, Location)>,
    views: Vec<String>,
}

impl Inputs {
    /// Inputs with the given tables (name, location) and view names.
    pub fn new(tables: Vec<(String, Location)>, views: Vec<String>) -> Self {
        Self { tables, views }
    }

    /// The inputs recorded in `ctx`'s configuration (none if it has none).
    pub fn of(ctx: &SessionContext) -> Arc<Inputs> {
        ctx.state()
            .config()
            .get_extension::<Inputs>()
            .unwrap_or_default()
    }

    /// Refuses a statement that writes into an input (see the module
    /// documentation); everything else passes.
    pub fn check_plan(&self, plan: &LogicalPlan) -> Result<()> {
        match plan {
            LogicalPlan::Dml(dml) => {
                let name = dml.table_name.table();
                let in_schema = matches!(dml.table_name.schema(), None | Some("public"));
                if in_schema && self.tables.iter().any(|(t, _)| t == name) {
                    return Err(Error::ReadOnly(format!(
                        "table `{name}` is read-only: it is an input of the report; \
                         write results with COPY (…) TO 'file' or --output, outside the inputs"
                    )));
                }
                if in_schema && self.views.iter().any(|v| v == name) {
                    return Err(Error::ReadOnly(format!(
                        "`{name}` is a view of the report and read-only"
                    )));
                }
                if let Ok(provider) = source_as_provider(&dml.target) {
                    if let Some(listing) = provider.downcast_ref::<ListingTable>() {
                        for url in listing.table_paths() {
                            self.check_output(&Location::parse(url.as_str())?)
                                .map_err(|e| Error::ReadOnly(format!("table `{name}`: {e}")))?;
                        }
                    }
                }
                Ok(())
            }
            LogicalPlan::Copy(copy) => self.check_output(&Location::parse(&copy.output_url)?),
            _ => Ok(()),
        }
    }

    /// Refuses writing to `location` when it is inside a registered table's
    /// location, is that location, or holds it.
    pub fn check_output(&self, location: &Location) -> Result<()> {
        let target = normalize(location);
        // A directory written into may already hold links into an input
        // (a `p=x` partition directory that is a symlink): those count too.
        let mut targets = vec![];
        if let Place::Local(dir) = &target {
            linked_dirs(dir, &mut targets);
        }
        targets.push(target);
        for (name, input) in &self.tables {
            let input_n = normalize(input);
            if targets
                .iter()
                .any(|t| nested(t, &input_n) || nested(&input_n, t))
            {
                return Err(Error::ReadOnly(format!(
                    "refusing to write to {location}: table `{name}` is read from {input}, \
                     and results are never written among the inputs"
                )));
            }
        }
        Ok(())
    }
}

/// A location in comparable form.
#[derive(Debug, Clone, PartialEq)]
enum Place {
    /// Absolute, `.` and `..` dropped, symbolic links resolved as far as the
    /// path exists.
    Local(PathBuf),
    /// The URL without a trailing `/`.
    Remote(String),
}

/// The comparable form of `location`.
fn normalize(location: &Location) -> Place {
    let local = match location {
        Location::Remote(url) => return Place::Remote(url.as_str().trim_end_matches('/').into()),
        Location::Local(p) => p,
    };
    let path = std::path::absolute(local).unwrap_or_else(|_| local.clone());
    // Lexically drop `.` and `..`, then resolve the longest existing prefix.
    let mut clean = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    let mut existing = clean.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = existing.canonicalize() {
            let mut p = real;
            for r in rest.iter().rev() {
                p.push(r);
            }
            return Place::Local(p);
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return Place::Local(clean),
        }
    }
}

/// The resolved targets of the symbolic links to directories below `dir`
/// (an existing directory), a few levels deep, as partitioned writes go.
fn linked_dirs(dir: &Path, out: &mut Vec<Place>) {
    fn walk(dir: &Path, depth: usize, budget: &mut usize, out: &mut Vec<Place>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if *budget == 0 {
                return;
            }
            *budget -= 1;
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.file_type().is_symlink() {
                if let Ok(real) = p.canonicalize() {
                    out.push(Place::Local(real));
                }
            } else if meta.is_dir() && depth > 0 {
                walk(&p, depth - 1, budget, out);
            }
        }
    }
    let mut budget = 100_000;
    walk(dir, 8, &mut budget, out);
}

/// Whether `inner` is `outer` or lies below it.
fn nested(inner: &Place, outer: &Place) -> bool {
    match (inner, outer) {
        (Place::Remote(i), Place::Remote(o)) => i == o || i.starts_with(&format!("{o}/")),
        (Place::Local(i), Place::Local(o)) => i.starts_with(o),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_inside_around_or_at_an_input_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("lake/events");
        std::fs::create_dir_all(&events).unwrap();
        let inputs = Inputs::new(
            vec![
                ("events".into(), Location::Local(events.clone())),
                (
                    "messages".into(),
                    Location::parse("s3://bucket/messages/").unwrap(),
                ),
            ],
            vec![],
        );
        let refused = |loc: &str| inputs.check_output(&Location::parse(loc).unwrap()).is_err();
        let under = |rel: &str| dir.path().join(rel).to_string_lossy().into_owned();
        assert!(refused(&under("lake/events/date=2026-01-01/x.parquet")));
        assert!(refused(&under("lake/events")));
        assert!(refused(&under("lake/x/../events/new.parquet")));
        assert!(refused(&under("lake")));
        assert!(refused(&format!(
            "file://{}",
            under("lake/events/a.parquet")
        )));
        assert!(refused("s3://bucket/messages/part.parquet"));
        assert!(refused("s3://bucket"));
        assert!(!refused(&under("lake/events-copy.parquet")));
        assert!(!refused(&under("out/result.parquet")));
        assert!(!refused("s3://bucket/messages-out/x.parquet"));
        assert!(!refused("s3://other/messages/x.parquet"));
        // a partition directory under the target that links into the input
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        assert!(!refused(&under("out")));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&events, out.join("p=x")).unwrap();
            assert!(refused(&under("out")));
            assert!(refused(&under("out/")));
        }
    }
}
