//! The one place a [`SessionContext`] is built: runtime (memory pool, spill
//! directory), configuration, object stores, the contract tables, our
//! functions and the derived views. The CLI, the tests and the benches all go
//! through [`build_context`], so what a test checks is what a user runs.

use std::sync::Arc;

use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use datafusion::execution::cache::cache_manager::CacheManagerConfig;

use crate::error::{Error, Result};
use crate::functions::register_functions;
use crate::io::readonly::Inputs;
use crate::settings::config::TableFormat;
use crate::settings::location::Location;
use crate::settings::options::{EngineOptions, MAX_TARGET_PARTITIONS, REMOTE_MIN_PARTITIONS};
use crate::tables::listing::PinnedListings;
use crate::tables::views;
use crate::tables::{self, Registry, TableInfo, EVENTS, MESSAGES};

/// A ready context plus what registration found about each table.
pub struct Engine {
    /// The DataFusion context with tables, functions and views registered.
    pub ctx: SessionContext,
    /// One entry per registered contract table.
    pub tables: Vec<TableInfo>,
    /// The options it was built from (the report reads the memory limit and
    /// temp directory to decide where intermediate results live).
    pub options: EngineOptions,
}

/// Share of `--memory-limit` given to DataFusion's memory pool; the rest is
/// headroom for memory the pool does not track (Parquet decoding and
/// writing, batches in flight). Chosen by measuring the process's peak
/// against the limit (docs/PERFORMANCE.md, "Memory").
pub const POOL_SHARE: f64 = 0.5;

/// A context with the runtime, config and functions, but no tables (the
/// UDWF tests and benches register their own).
pub fn context_without_tables(opts: &EngineOptions) -> Result<SessionContext> {
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(limit) = opts.memory_limit {
        if limit == 0 {
            return Err(Error::usage("--memory-limit must be more than 0 bytes"));
        }
        // FairSpillPool shares the pool among spilling operators so that
        // sorts and aggregations spill instead of failing one another. The
        // pool only sees what operators reserve; decoded Parquet pages,
        // batches in flight and the allocator's own slack come on top, so it
        // gets POOL_SHARE of the limit and the process stays near the limit.
        let pool = (limit as f64 * POOL_SHARE) as usize;
        runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(pool.max(1))));
    }
    // Spill files go into a directory of our own under the temp dir, known
    // to `scratch`, so an interrupt removes them even when DataFusion's
    // threads are still busy and its own clean-up never runs.
    // A temp dir the user named must work; when the system's does not (a
    // read-only container), queries still run and only spilling is off.
    let spill = match &opts.temp_dir {
        Some(dir) => {
            // Temporary files never go among the inputs either.
            inputs_of(opts)
                .check_output(&Location::Local(dir.clone()))
                .map_err(|e| Error::ReadOnly(format!("--temp-dir: {e}")))?;
            Some(crate::io::scratch::temp_dir_in(
                dir,
                "supportfunnel-spill-",
            )?)
        }
        None => crate::io::scratch::temp_dir_in(&std::env::temp_dir(), "supportfunnel-spill-").ok(),
    };
    let spill = Arc::new(spill);
    // Scans read the listing each table was validated with (see
    // `listing`), refreshed per statement by `refresh`.
    let pins = Arc::new(PinnedListings::default());
    runtime = runtime.with_cache_manager(
        CacheManagerConfig::default().with_list_files_cache(Some(Arc::clone(&pins) as _)),
    );
    runtime = match spill.as_ref() {
        Some(dir) => runtime.with_temp_file_path(dir.path()),
        None => runtime.with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        ),
    };
    let mut config = SessionConfig::new()
        .with_information_schema(true)
        // Strings are read as Utf8, not Utf8View: see `tables` for why.
        .set_bool(
            "datafusion.execution.parquet.schema_force_view_types",
            false,
        )
        .with_extension(Arc::new(opts.s3.clone()))
        // Lives as long as any context sharing this configuration.
        .with_extension(spill)
        .with_extension(pins)
        .with_extension(Arc::new(Registry::default()))
        .with_extension(Arc::new(Refreshing(opts.cluster.is_none())))
        .with_extension(Arc::new(Turns::default()))
        .with_extension(Arc::new(opts.clone()))
        .with_extension(Arc::new(inputs_of(opts)));
    for (key, value) in &opts.datafusion_options {
        config
            .options_mut()
            .set(key, value)
            .map_err(|e| Error::usage(format!("[datafusion] {key} = {value}: {e}")))?;
    }
    if let Some(n) = opts.target_partitions {
        if !(1..=MAX_TARGET_PARTITIONS).contains(&n) {
            return Err(Error::usage(format!(
                "--target-partitions {n} is out of range: give 1 to {MAX_TARGET_PARTITIONS} \
                 (each partition holds its own buffers: thousands exhaust memory)"
            )));
        }
        config = config.with_target_partitions(n);
    } else if opts.reads_object_store() {
        // Over an object store a scan waits on requests, one file at a time
        // per partition: more partitions keep more requests in flight
        // (docs/PERFORMANCE.md: the report over S3).
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        config = config.with_target_partitions(cores.max(REMOTE_MIN_PARTITIONS));
    }
    if let Some(n) = opts.batch_size {
        config = config.with_batch_size(n.max(1));
    }
    // `enable_url_table` lets ad-hoc SQL read a file directly:
    // SELECT * FROM 'result.parquet'.
    let ctx = SessionContext::new_with_state(crate::tables::native::node::session_state(
        config,
        runtime.build_arc()?,
    ));
    // On a cluster the URL tables are enabled on the cluster's session
    // ([`on_cluster`]): they are bound to the context that enables them.
    let ctx = if opts.no_url_tables || opts.cluster.is_some() {
        ctx
    } else {
        ctx.enable_url_table()
    };
    register_functions(&ctx);
    Ok(ctx)
}

/// The tables and views `build_context` registers for `opts`, which
/// statements and results may not write into (see [`crate::io::readonly`]).
fn inputs_of(opts: &EngineOptions) -> Inputs {
    let tables = opts
        .tables
        .iter()
        .map(|t| (t.name.clone(), t.location.clone()))
        .collect();
    let views = views::EVENT_VIEWS
        .iter()
        .chain(views::MESSAGE_VIEWS)
        .map(|(n, _)| n.to_string())
        .collect();
    Inputs::new(tables, views)
}

/// `ctx` itself, or on a cluster (`opts.cluster`) a context with the same
/// configuration, runtime and tables whose queries run on the cluster.
pub async fn on_cluster(ctx: SessionContext, opts: &EngineOptions) -> Result<SessionContext> {
    let Some(url) = &opts.cluster else {
        return Ok(ctx);
    };
    #[cfg(feature = "cluster")]
    {
        let remote = crate::cluster::client::attach(&ctx, url, &opts.s3).await?;
        Ok(if opts.no_url_tables {
            remote
        } else {
            remote.enable_url_table()
        })
    }
    #[cfg(not(feature = "cluster"))]
    {
        drop(ctx);
        Err(Error::usage(format!(
            "--cluster {url}: this build has no cluster support (build with the `cluster` feature)"
        )))
    }
}

/// Builds the context: runtime, functions, tables (validated), and, when both
/// contract tables are there, the derived views. On a cluster the tables
/// are still checked here, by the client, before any query is sent.
pub async fn build_context(opts: &EngineOptions) -> Result<Engine> {
    let ctx = on_cluster(context_without_tables(opts)?, opts).await?;
    let mut infos = Vec::new();
    if let Some(events) = opts.table(EVENTS.name) {
        let info = tables::register_table(&ctx, &EVENTS, &events.location).await?;
        register_event_views(&ctx, opts).await?;
        infos.push((events, info));
    }
    if let Some(messages) = opts.table(MESSAGES.name) {
        let info = tables::register_table(&ctx, &MESSAGES, &messages.location).await?;
        views::register_message_views(&ctx).await?;
        infos.push((messages, info));
    }
    for (source, info) in &infos {
        // A cluster's scheduler lists the tables itself, with DataFusion's
        // rule: it would read what this process skips.
        if let (Some(cluster), Some(first)) = (&opts.cluster, info.read_elsewhere.first()) {
            return Err(Error::location(
                &info.location,
                format!(
                    "table `{}`: {} hidden file(s) such as {first} are skipped here but would be \
                     read by the cluster {cluster}, which lists the table itself; move them out \
                     of the table's directory",
                    info.name,
                    info.read_elsewhere.len()
                ),
            ));
        }
        if let Some(expected) = &source.partition_cols {
            if &info.partition_columns != expected {
                return Err(Error::location(
                    &info.location,
                    format!(
                        "table `{}`: the config says partition_cols = {expected:?}, \
                         the files are partitioned by {:?}",
                        info.name, info.partition_columns
                    ),
                ));
            }
        }
    }
    for t in &opts.tables {
        if t.name == EVENTS.name || t.name == MESSAGES.name {
            continue;
        }
        match t.format {
            TableFormat::Parquet => {
                tables::register_plain_parquet(&ctx, &t.name, &t.location).await?
            }
            #[cfg(feature = "delta")]
            TableFormat::Delta => {
                crate::tables::delta::register(&ctx, &t.name, &t.location).await?
            }
            #[cfg(not(feature = "delta"))]
            TableFormat::Delta => {
                return Err(Error::usage(format!(
                    "table `{}`: this build reads no Delta tables (build with the `delta` feature)",
                    t.name
                )))
            }
        }
    }
    Ok(Engine {
        ctx,
        tables: infos.into_iter().map(|(_, info)| info).collect(),
        options: opts.clone(),
    })
}

/// The views over `events`: the derived relations are the operators
/// ([`crate::tables::native`]; on a cluster, run by its executors) unless `opts`
/// asks for the SQL views.
async fn register_event_views(ctx: &SessionContext, opts: &EngineOptions) -> Result<()> {
    views::register_event_views(ctx).await?;
    if !opts.sql_views {
        crate::tables::native::register_views(ctx).await?;
    }
    Ok(())
}

/// Reports of one process take turns under `--memory-limit`: each uses
/// every core and the whole pool (one build of the operators serves them
/// all), and memory the pool does not see (decoded pages, batches in
/// flight) grows with every report running at once. A configuration
/// extension, so every session of one engine shares it.
#[derive(Debug, Default)]
pub struct Turns(pub tokio::sync::Mutex<()>);

/// Whether [`refresh`] lists the tables of a context again (not on a
/// cluster, where the scheduler lists them for each query).
#[derive(Debug)]
struct Refreshing(bool);

/// Brings `ctx`'s session up to date with the files, at the start of a
/// statement of a long-lived session (the `sql` prompt, a `serve`
/// connection): lists every contract table again and, where files were
/// added, removed or rewritten, validates them and pins the new listing, so
/// every scan of the statement — tables, views and cached relations alike
/// — reads the same, current files ([`crate::tables::listing`]). When new files
/// change a table's schema (a finer timestamp unit, wider integers), the
/// table and its views are registered again. Returns warnings about files
/// that are not read, each given once.
pub async fn refresh(ctx: &SessionContext) -> Result<Vec<String>> {
    let state = ctx.state();
    if !state
        .config()
        .get_extension::<Refreshing>()
        .is_some_and(|r| r.0)
    {
        return Ok(vec![]);
    }
    let (changes, warnings) = tables::refresh(ctx).await?;
    for (table, change) in changes {
        if change != tables::Refreshed::Schema {
            continue;
        }
        if table == EVENTS.name {
            let opts = state
                .config()
                .get_extension::<EngineOptions>()
                .map(|o| o.as_ref().clone())
                .unwrap_or_default();
            register_event_views(ctx, &opts).await?;
        } else if table == MESSAGES.name {
            views::register_message_views(ctx).await?;
        }
    }
    Ok(warnings)
}

/// A session of its own over `base`'s tables, functions and settings, for
/// one client of a long-lived server: the memory pool, spill directory,
/// object stores and footer cache are shared, the pinned listings are the
/// session's own (so [`refresh`] at one client's statement never changes
/// the files another client's running statement reads).
pub fn fork_session(base: &SessionContext, session_id: String) -> Result<SessionContext> {
    let state = base.state();
    let pins = Arc::new(
        state
            .config()
            .get_extension::<PinnedListings>()
            .map(|p| p.fork())
            .unwrap_or_default(),
    );
    let mut runtime = RuntimeEnvBuilder::from_runtime_env(base.runtime_env().as_ref());
    runtime.cache_manager.list_files_cache = Some(Arc::clone(&pins) as _);
    // The catalog is the base's: the copy must not make a new default one
    // (which would replace the shared catalog's tables for every session).
    let config = state
        .config()
        .clone()
        .with_create_default_catalog_and_schema(false)
        .with_extension(pins);
    let forked = datafusion::execution::SessionStateBuilder::new_from_existing(state)
        .with_session_id(session_id)
        .with_config(config)
        .with_runtime_env(runtime.build_arc()?)
        .build();
    Ok(SessionContext::new_with_state(forked))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_tables_get_more_partitions_unless_set() {
        let parts = |o: &EngineOptions| {
            context_without_tables(o)
                .unwrap()
                .state()
                .config()
                .options()
                .execution
                .target_partitions
        };
        let remote = EngineOptions::new("s3://lake/events/", "data/sample/messages").unwrap();
        assert!(remote.reads_object_store());
        assert!(parts(&remote) >= REMOTE_MIN_PARTITIONS);
        let local = EngineOptions::new("data/sample/events", "data/sample/messages").unwrap();
        assert!(!local.reads_object_store());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(parts(&local), cores);
        let mut set = remote.clone();
        set.target_partitions = Some(3);
        assert_eq!(parts(&set), 3);
    }
}
