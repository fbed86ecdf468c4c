//! An incremental run over a verified state, phase by phase: the new files
//! alone, their counts and checks, their rows against the indexes, the
//! reduced input (anchors + live rows + new rows), the engine over it and
//! `data_quality` from the counters and the live rows. The statements are
//! in `queries/incremental/` ([`super::sql`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use datafusion::arrow::array::AsArray;
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use object_store::ObjectMeta;

use super::sql::statement;
use super::{
    cast_i64, conform, count, register_files, register_state, ts_param, write_df, Counters,
    Fallback, FileEntry, Inputs, Laps, Manifest, Pending, Prepared, StateRun, StateStore,
    ANCHOR_PREFIX, REJECT_REASONS,
};
use crate::engine::context::{build_context, context_without_tables, Engine};
use crate::engine::query::{self, Params};
use crate::error::{Error, Result};
use crate::settings::location::Location;
use crate::settings::options::{EngineOptions, TableSource};
use crate::tables::views;
use crate::tables::{EVENTS, MESSAGES};

/// The incremental run over a verified state: the engine over anchors +
/// live rows + new rows. `Ok(Err(reason))` when the new files make it
/// impossible (rows before the frontier).
pub(super) async fn incremental_run(
    engine: &Engine,
    store: &StateStore,
    manifest: &Manifest,
    inputs: &Inputs<'_>,
    windows_start: DateTime<Utc>,
    laps: &mut Laps,
) -> Result<std::result::Result<Prepared, Fallback>> {
    let new = NewFiles::of(manifest, inputs);
    let nctx = new_files_context(engine, store, manifest, inputs, &new).await?;
    laps.lap("new files registered");
    // Private files of this run: the new rows, the reduced input.
    let dir = crate::io::scratch::temp_dir_in(
        engine
            .options
            .temp_dir
            .as_deref()
            .unwrap_or(&std::env::temp_dir()),
        "supportfunnel-incremental-",
    )?;
    let frontier = manifest.frontier();
    let params: Params = vec![
        ("frontier", ts_param(frontier)),
        (
            "anchor_prefix",
            ScalarValue::Utf8(Some(ANCHOR_PREFIX.into())),
        ),
    ];
    let mut counters = manifest.counters.clone();
    let new_rows = count_new_rows(&nctx, &mut counters).await?;
    let late = too_late(&nctx, &params, frontier).await?;
    laps.lap("counts and checks of new files");
    if let Some(reason) = late {
        return Ok(Err(reason));
    }
    mark_new_rows(&nctx, dir.path(), &mut counters).await?;
    laps.lap("new rows against the indexes");
    let (events_dir, messages_dir) =
        write_reduced_input(&nctx, dir.path(), &params, frontier, inputs).await?;
    laps.lap("reduced input written");
    // The reduced input lives in the temp directory, which as a temp
    // directory of its engine would hold that engine's own tables (refused
    // as writing among the inputs): its spills go beside the input instead.
    let reduced = build_context(&EngineOptions {
        tables: vec![
            TableSource::new(EVENTS.name, Location::Local(events_dir)),
            TableSource::new(MESSAGES.name, Location::Local(messages_dir)),
        ],
        cluster: None,
        scratch: None,
        temp_dir: Some(dir.path().join("spill")),
        ..engine.options.clone()
    })
    .await?;
    register_state(
        &reduced.ctx,
        store,
        manifest,
        inputs.events_schema,
        inputs.messages_schema,
    )
    .await?;
    laps.lap("reduced engine");
    let data_quality = data_quality(&reduced.ctx, &params, &counters).await?;
    laps.lap("data_quality from the state");
    let entries = |files: &[ObjectMeta]| files.iter().map(FileEntry::of).collect::<Vec<_>>();
    Ok(Ok(Prepared {
        engine: reduced,
        data_quality: Some(data_quality),
        run: StateRun {
            mode: "incremental",
            reason: None,
            new_files: new.events.len() + new.messages.len(),
            new_rows,
            frontier: windows_start.to_rfc3339(),
            error: None,
            fold: None,
        },
        store: store.clone(),
        pending: Pending {
            previous: Some(manifest.clone()),
            events_files: entries(inputs.events_files),
            messages_files: entries(inputs.messages_files),
            counters,
            new_frontier: windows_start,
            counters_from_report: false,
            from_build: None,
            scan: None,
        },
        _dir: Some(dir),
    }))
}

/// The input files the manifest does not know.
struct NewFiles<'a> {
    events: Vec<&'a ObjectMeta>,
    messages: Vec<&'a ObjectMeta>,
}

impl<'a> NewFiles<'a> {
    fn of(manifest: &Manifest, inputs: &Inputs<'a>) -> Self {
        let known = |list: &[FileEntry]| -> HashSet<String> {
            list.iter().map(|f| f.path.clone()).collect()
        };
        let new = |files: &'a [ObjectMeta], known: HashSet<String>| {
            files
                .iter()
                .filter(|m| !known.contains(m.location.as_ref()))
                .collect()
        };
        Self {
            events: new(inputs.events_files, known(&manifest.events_files)),
            messages: new(inputs.messages_files, known(&manifest.messages_files)),
        }
    }
}

/// The new files, alone, on a context of their own, with the views over
/// them and the state's tables beside them.
async fn new_files_context(
    engine: &Engine,
    store: &StateStore,
    manifest: &Manifest,
    inputs: &Inputs<'_>,
    new: &NewFiles<'_>,
) -> Result<SessionContext> {
    let nctx = context_without_tables(&EngineOptions {
        tables: vec![],
        cluster: None,
        scratch: None,
        ..engine.options.clone()
    })?;
    for url in [inputs.events_url, inputs.messages_url] {
        crate::io::storage::ensure_store(&nctx, url.get_url())?;
    }
    register_files(
        &nctx,
        EVENTS.name,
        inputs.events_url,
        &new.events,
        inputs.events_schema,
    )?;
    register_files(
        &nctx,
        MESSAGES.name,
        inputs.messages_url,
        &new.messages,
        inputs.messages_schema,
    )?;
    views::register_event_views(&nctx).await?;
    views::register_message_views(&nctx).await?;
    register_state(
        &nctx,
        store,
        manifest,
        inputs.events_schema,
        inputs.messages_schema,
    )
    .await?;
    Ok(nctx)
}

/// Adds the new files' rows read and rejected to `counters`; returns the
/// rows read.
async fn count_new_rows(nctx: &SessionContext, counters: &mut Counters) -> Result<u64> {
    let none: Params = vec![];
    let events = count(nctx, statement("new_files", "event_rows"), &none).await?;
    let messages = count(nctx, statement("new_files", "message_rows"), &none).await?;
    counters.events_rows_read += events;
    counters.messages_rows_read += messages;
    let rejects = query::collect_one(nctx, statement("new_files", "rejects"), &none).await?;
    for i in 0..rejects.num_rows() {
        let reason = rejects.column(0).as_string::<i32>().value(i).to_string();
        let n = cast_i64(&rejects.column(1).slice(i, 1))?;
        *counters.rejects.entry(reason).or_default() += n as u64;
    }
    Ok(events + messages)
}

/// Why the new files cannot be folded in (rows before the frontier), if
/// they cannot.
async fn too_late(
    nctx: &SessionContext,
    params: &Params,
    frontier: DateTime<Utc>,
) -> Result<Option<Fallback>> {
    let late = count(nctx, statement("new_files", "late_events"), params).await?;
    if late > 0 {
        return Ok(Some(format!(
            "{late} new valid events lie before the state's frontier {}",
            frontier.to_rfc3339()
        )));
    }
    let late_messages = count(nctx, statement("new_files", "late_messages"), params).await?;
    if late_messages > 0 {
        return Ok(Some(format!(
            "{late_messages} new deliveries were sent before the state's frontier {}",
            frontier.to_rfc3339()
        )));
    }
    Ok(None)
}

/// The new rows, each marked when a copy of its id already lies before the
/// frontier: such a row is a duplicate and nothing else. One pass over the
/// indexes (their ids are distinct: an id is folded once, and later copies
/// never reach the live rows). Registers them as `new_events` and
/// `new_messages` and counts the duplicates.
async fn mark_new_rows(nctx: &SessionContext, dir: &Path, counters: &mut Counters) -> Result<()> {
    for (name, file, table) in [
        ("marked_events", "new_events.parquet", "new_events"),
        ("marked_messages", "new_messages.parquet", "new_messages"),
    ] {
        let path = dir.join(file).display().to_string();
        write_df(nctx.sql(statement("new_files", name)).await?, &path).await?;
        nctx.register_parquet(table, &path, ParquetReadOptions::default())
            .await?;
    }
    let none: Params = vec![];
    counters.folded_duplicate_events +=
        count(nctx, statement("new_files", "known_events"), &none).await?;
    counters.folded_duplicate_messages +=
        count(nctx, statement("new_files", "known_messages"), &none).await?;
    Ok(())
}

/// Writes the reduced input (anchors + restarts + live rows + new rows
/// kept, and the deliveries likewise) as one Parquet file per table;
/// returns the two tables' directories.
async fn write_reduced_input(
    nctx: &SessionContext,
    dir: &Path,
    params: &Params,
    frontier: DateTime<Utc>,
    inputs: &Inputs<'_>,
) -> Result<(PathBuf, PathBuf)> {
    let mut values = params.clone();
    values.push(("before_frontier", ts_param(frontier - Duration::seconds(1))));
    let part = |name: &str| {
        let df = nctx.sql(statement("reduced_input", name));
        let values = values.clone();
        async move { Ok::<_, Error>(df.await?.with_param_values(values)?) }
    };
    let schema = inputs.events_schema;
    let events = conform(part("anchors").await?, schema)?
        .union(conform(part("restarts").await?, schema)?)?
        .union(conform(part("live_events").await?, schema)?)?
        .union(conform(part("kept_events").await?, schema)?)?;
    let schema = inputs.messages_schema;
    let messages = conform(part("live_messages").await?, schema)?
        .union(conform(part("kept_messages").await?, schema)?)?;
    let mut dirs = Vec::new();
    for (df, table) in [(events, "events"), (messages, "messages")] {
        let table_dir = dir.join(table);
        std::fs::create_dir_all(&table_dir).map_err(|e| Error::io(&table_dir, e))?;
        write_df(df, &table_dir.join("part-0.parquet").display().to_string()).await?;
        dirs.push(table_dir);
    }
    let messages_dir = dirs.pop().expect("two tables");
    let events_dir = dirs.pop().expect("two tables");
    Ok((events_dir, messages_dir))
}

/// data_quality over the whole input: the counters plus what the live
/// rows say. The surviving copy of every id is materialized once, here;
/// the fold reads it again. (In memory: a few days of rows; encoding them
/// as Parquet cost more than the queries reading them.)
async fn data_quality(
    ctx: &SessionContext,
    params: &Params,
    counters: &Counters,
) -> Result<HashMap<(String, Option<String>), f64>> {
    let winners = ctx.sql(statement("data_quality", "winners")).await?;
    let schema = Arc::new(winners.schema().as_arrow().clone());
    let batches = winners.collect_partitioned().await?;
    ctx.register_table(
        "fold_winners",
        Arc::new(MemTable::try_new(schema, batches)?),
    )?;
    let none: Params = vec![];
    let live_rows = count(ctx, statement("data_quality", "live_rows"), params).await?;
    let live_winners = count(ctx, statement("data_quality", "live_winners"), params).await?;
    let live_duplicates = live_rows.saturating_sub(live_winners);
    let live_message_duplicates = count(
        ctx,
        statement("data_quality", "live_message_duplicates"),
        &none,
    )
    .await?;
    let orphans = count(ctx, statement("data_quality", "orphans"), &none).await?;
    let mut dq: HashMap<(String, Option<String>), f64> = HashMap::new();
    let mut put = |metric: &str, segment: Option<&str>, v: u64| {
        dq.insert((metric.to_string(), segment.map(String::from)), v as f64);
    };
    put("rows_read", Some("events"), counters.events_rows_read);
    put("rows_read", Some("messages"), counters.messages_rows_read);
    for reason in REJECT_REASONS {
        put(
            "rows_rejected",
            Some(reason),
            counters.rejects.get(reason).copied().unwrap_or(0),
        );
    }
    put(
        "duplicate_events",
        None,
        counters.folded_duplicate_events + live_duplicates,
    );
    put(
        "duplicate_messages",
        None,
        counters.folded_duplicate_messages + live_message_duplicates,
    );
    put("orphan_lifecycle_events", None, orphans);
    Ok(dq)
}
