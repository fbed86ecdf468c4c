//! The fold, phase by phase: after a run's reports, rows before the new
//! frontier are folded into the state's indexes, anchors and counters, and
//! what a later report can still need stays live. The statements are in
//! `queries/incremental/fold.sql` ([`super::sql`]); a full run with the
//! operators' build folds its events in one pass ([`super::one_pass`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use super::sql::statement;
use super::{
    count, data_name, register_empty_state, ts_param, write_df, write_scratch_df, Laps, Manifest,
    Pending, StateStore, ANCHOR_PREFIX, MAX_SEGMENTS, REPEATED_ID_FN, STATE_FORMAT,
};
use crate::engine::context::Engine;
use crate::engine::query::Params;
use crate::error::Result;
use crate::tables::{EVENTS, MESSAGES};

/// Whether `e` is the memory pool refusing a reservation.
fn exhausted(e: &crate::error::Error) -> bool {
    matches!(
        e,
        crate::error::Error::Query(d)
            if matches!(d.find_root(), datafusion::error::DataFusionError::ResourcesExhausted(_))
    )
}

/// The fold statements' parameters for a new frontier.
fn fold_params(new_frontier: DateTime<Utc>) -> Params {
    vec![
        ("new_frontier", ts_param(new_frontier)),
        ("day_before", ts_param(new_frontier - Duration::days(1))),
        (
            "anchor_prefix",
            ScalarValue::Utf8(Some(ANCHOR_PREFIX.into())),
        ),
    ]
}

/// What a full run's fold takes from the operators' build, taken before
/// the reports: under a memory limit each report lets go of the build
/// when its tables are made (its last steps need the pool), and the fold
/// would otherwise make it again for these two files.
pub(super) struct FromBuild {
    /// The conversations started before the new frontier.
    started: String,
    /// Each user's last session start in the day before it.
    anchors: String,
    _dir: crate::io::scratch::TempDir,
}

/// Writes [`FromBuild`]'s files under a temporary directory in `base`, from
/// the build of `engine` (made here; the reports then read the same one).
pub(super) async fn from_build(
    engine: &Engine,
    new_frontier: DateTime<Utc>,
    base: &std::path::Path,
) -> Result<FromBuild> {
    let dir = crate::io::scratch::temp_dir_in(base, "supportfunnel-fold-")?;
    let params = fold_params(new_frontier);
    let mut files = Vec::new();
    for (name, file) in [
        ("started_from_build", "started.parquet"),
        ("anchors_from_sessions", "anchors.parquet"),
    ] {
        let path = dir.path().join(file).display().to_string();
        let df = engine
            .ctx
            .sql(statement("fold", name))
            .await?
            .with_param_values(params.clone())?;
        write_scratch_df(df, &path).await?;
        files.push(path);
    }
    let anchors = files.pop().unwrap_or_default();
    let started = files.pop().unwrap_or_default();
    Ok(FromBuild {
        started,
        anchors,
        _dir: dir,
    })
}

/// Folds the run's input into a new manifest of generation `generation`
/// (its files written, not yet committed); also says how
/// ([`super::StateRun::fold`]).
pub(super) async fn fold(
    engine: &Engine,
    store: &StateStore,
    previous: Option<&Manifest>,
    mut pending: Pending,
    generation: u64,
) -> Result<(Manifest, &'static str)> {
    let mut laps = Laps::new();
    let ctx = &engine.ctx;
    let new_frontier = pending.new_frontier;
    let params = fold_params(new_frontier);
    if previous.is_none() {
        // A full run: no earlier state tables. The synthetic rows' prefix
        // must be free in the input.
        let taken = count(ctx, statement("fold", "prefix_taken"), &params).await?;
        if taken > 0 {
            return Err(store.err(format!(
                "{taken} events have an event_id or user_id starting with the state's reserved \
                 prefix {ANCHOR_PREFIX:?}; the state is not written (run without [state])"
            )));
        }
        register_empty_state(ctx).await?;
    }
    store.attach(ctx)?;
    let fold = Fold {
        engine,
        ctx,
        store,
        params,
        generation,
    };
    // A full run with the operators' build at hand folds in one pass; an
    // incremental one (a few days of rows, and an earlier state to take
    // into account) with the reference statements.
    let repeated = match previous {
        None if crate::report::builds_here(engine) => {
            crate::tables::native::node::repeated_ids(ctx).await?
        }
        _ => None,
    };
    // The deliveries' pass reads only `messages`: it runs on a task of its
    // own beside the events' steps, each of which leaves a core idle for
    // part of its time (one writer, one set). Under a limit it does so
    // only when the fold's inputs were taken before the reports, which let
    // go of the build: the events' steps then hold little of the pool (the
    // few conversations the scan's rows need, the rows it kept); without
    // them the fold makes the build again, and the pass runs after it.
    let beside_ok = engine.options.memory_limit.is_none() || pending.from_build.is_some();
    let mut beside = match &repeated {
        Some(_) if beside_ok => {
            let (ctx, store, params) = (ctx.clone(), store.clone(), fold.params.clone());
            Some(Beside(tokio::spawn(async move {
                super::one_pass::messages(&ctx, &store, &params, generation).await
            })))
        }
        _ => None,
    };
    let mut one_pass = None;
    if let Some(repeated) = &repeated {
        match fold
            .in_one_pass(
                repeated,
                pending.from_build.as_ref(),
                pending.scan.take(),
                &mut laps,
            )
            .await
        {
            Ok(done) => one_pass = Some(done),
            // The reference statements spill where the pass's set of
            // started conversations must fit the pool; under a limit the
            // deliveries' pass is stopped, not to hold the pool beside
            // them (the statements write its files too).
            Err(e) if exhausted(&e) => {
                if engine.options.memory_limit.is_some() {
                    beside = None;
                }
                laps.lap("fold: one pass refused by the pool")
            }
            Err(e) => return Err(e),
        }
    }
    let one_pass_ran = one_pass.is_some();
    let how = match &one_pass {
        Some((_, placed, _)) if placed.from_scan => "scan",
        Some(_) => "one pass",
        None => "statements",
    };
    let (started, index, live_events, anchors) = match one_pass {
        Some((started, placed, anchors)) => {
            pending.counters.folded_duplicate_events += placed.folded_duplicates;
            (started, placed.index, placed.live, anchors)
        }
        None => {
            let winners = fold.winners(&mut laps).await?;
            laps.lap("fold: winners");
            let started = fold
                .write_and_register("started", "started", "fold_started")
                .await?;
            laps.lap("fold: started");
            let index = fold.event_index().await?;
            laps.lap("fold: event index");
            let (live_events, folded) = fold.live_events().await?;
            pending.counters.folded_duplicate_events += folded;
            laps.lap("fold: live events");
            let anchors = fold.anchors(false).await?;
            laps.lap("fold: anchors");
            // The winners were only a step.
            if let Some(name) = winners {
                let _ = store.delete(&name).await;
            }
            (started, index, live_events, anchors)
        }
    };
    // A full run writes both files from one aggregation of the deliveries
    // and one read of those not sent before the frontier; where the pool
    // refuses the ids that pass keeps, and in incremental runs, the
    // reference statements write them.
    let (messages, lap) = match beside {
        Some(beside) => (
            Some(beside.join().await),
            "fold: message index and live messages (the wait for the pass beside)",
        ),
        None if one_pass_ran => (
            Some(super::one_pass::messages(ctx, store, &fold.params, generation).await),
            "fold: message index and live messages",
        ),
        None => (None, ""),
    };
    let in_one_read = match messages {
        Some(Ok(placed)) => Some(placed),
        Some(Err(e)) if exhausted(&e) => {
            laps.lap("fold: the deliveries' pass refused by the pool");
            None
        }
        Some(Err(e)) => return Err(e),
        None => None,
    };
    let (message_index, live_messages) = match in_one_read {
        Some(placed) => {
            pending.counters.folded_duplicate_messages += placed.folded_duplicates;
            laps.lap(lap);
            (placed.index, placed.live)
        }
        None => {
            let name = fold
                .write_and_register("message_index", "message-index", "fold_message_ids")
                .await?;
            let folded_m = count(ctx, statement("fold", "message_index_count"), &vec![]).await?;
            let folded_m_rows =
                count(ctx, statement("fold", "folded_message_rows"), &vec![]).await?;
            pending.counters.folded_duplicate_messages += folded_m_rows.saturating_sub(folded_m);
            laps.lap("fold: message index");
            let live_messages = data_name(generation, "live-messages");
            fold.write("live_messages", &live_messages).await?;
            laps.lap("fold: live messages");
            (name, live_messages)
        }
    };
    let (event_index, message_index, started) = fold
        .segments(previous, index, message_index, started)
        .await?;
    let events = engine_location(previous, EVENTS.name, engine);
    let messages = engine_location(previous, MESSAGES.name, engine);
    laps.lap("fold: segments");
    let manifest = Manifest {
        format: STATE_FORMAT,
        version: env!("CARGO_PKG_VERSION").to_string(),
        generation,
        events,
        messages,
        frontier_us: new_frontier.timestamp_micros(),
        events_files: pending.events_files,
        messages_files: pending.messages_files,
        counters: pending.counters,
        anchors,
        live_events,
        live_messages,
        event_index,
        message_index,
        started,
        checks: BTreeMap::new(),
        checksum: String::new(),
    };
    Ok((manifest, how))
}

/// The deliveries' pass running on a task of its own; stopped if the fold
/// returns without it (its files are then abandoned unwritten).
struct Beside(tokio::task::JoinHandle<Result<super::one_pass::MessagesPlaced>>);

impl Beside {
    /// What the pass wrote.
    async fn join(mut self) -> Result<super::one_pass::MessagesPlaced> {
        (&mut self.0).await.map_err(|e| {
            crate::error::Error::Internal(format!("the fold's deliveries' pass failed: {e}"))
        })?
    }
}

impl Drop for Beside {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What every phase of one fold reads.
struct Fold<'a> {
    engine: &'a Engine,
    ctx: &'a SessionContext,
    store: &'a StateStore,
    params: Params,
    generation: u64,
}

impl Fold<'_> {
    /// Statement `name` of fold.sql with the fold's values bound.
    async fn plan(&self, name: &str) -> Result<datafusion::dataframe::DataFrame> {
        Ok(self
            .ctx
            .sql(statement("fold", name))
            .await?
            .with_param_values(self.params.clone())?)
    }

    /// Writes statement `name`'s rows to the state file `file`.
    async fn write(&self, name: &str, file: &str) -> Result<()> {
        write_df(self.plan(name).await?, &self.store.url_of(file)).await
    }

    /// Writes statement `name`'s rows to a new state file of kind `kind`
    /// and registers it as `table`; returns the file's name.
    async fn write_and_register(&self, name: &str, kind: &str, table: &str) -> Result<String> {
        let file = data_name(self.generation, kind);
        self.write(name, &file).await?;
        self.register(table, &file).await?;
        Ok(file)
    }

    /// Registers the state file `file` as `table`.
    async fn register(&self, table: &str, file: &str) -> Result<()> {
        self.ctx.deregister_table(table)?;
        self.ctx
            .register_parquet(
                table,
                &self.store.url_of(file),
                ParquetReadOptions::default(),
            )
            .await?;
        Ok(())
    }

    /// Copies the local Parquet file `path` to a new state file of kind
    /// `kind`; returns the file's name.
    async fn copy(&self, path: &str, kind: &str) -> Result<String> {
        let file = data_name(self.generation, kind);
        let df = self
            .ctx
            .read_parquet(path, ParquetReadOptions::default())
            .await?;
        write_df(df, &self.store.url_of(&file)).await?;
        Ok(file)
    }

    /// The surviving copy of every id as `fold_winners`, once: every phase
    /// below reads it (an incremental run made it already). Returns the
    /// name of the file written for it, to be removed after the fold.
    async fn winners(&self, laps: &mut Laps) -> Result<Option<String>> {
        if self.ctx.table_exist("fold_winners")? {
            return Ok(None);
        }
        let name = data_name(self.generation, "winners-tmp");
        let url = self.store.url_of(&name);
        // The operators' build (the reports made it) knows which ids may
        // have copies: only those are ranked; the `clean_events` view
        // would count every id of the history again to find them.
        let repeated = if crate::report::builds_here(self.engine) {
            crate::tables::native::node::repeated_ids(self.ctx).await?
        } else {
            None
        };
        let statement = match &repeated {
            Some(udf) => {
                self.ctx
                    .register_udf(udf.clone().with_aliases([REPEATED_ID_FN]));
                "winners_of_repeated"
            }
            None => "winners",
        };
        laps.lap("fold: repeated ids");
        let written = match self.plan(statement).await {
            Ok(df) => write_scratch_df(df, &url).await,
            Err(e) => Err(e),
        };
        if let Some(udf) = &repeated {
            self.ctx.deregister_udf(udf.name());
            self.ctx.deregister_udf(REPEATED_ID_FN);
        }
        written?;
        self.ctx
            .register_parquet("fold_winners", &url, ParquetReadOptions::default())
            .await?;
        Ok(Some(name))
    }

    /// The ids folded by this run (a new index segment), and the ids that
    /// stay live as `fold_kept_ids`; returns the segment's name.
    async fn event_index(&self) -> Result<String> {
        let index = data_name(self.generation, "event-index");
        self.write("event_index", &index).await?;
        // The ids that stay live: a few days' worth, in memory.
        let kept = self.plan("kept_ids").await?;
        let schema = Arc::new(kept.schema().as_arrow().clone());
        let kept = kept.collect_partitioned().await?;
        self.ctx.deregister_table("fold_kept_ids")?;
        self.ctx
            .register_table("fold_kept_ids", Arc::new(MemTable::try_new(schema, kept)?))?;
        Ok(index)
    }

    /// Writes the live events (registered as `fold_live`); returns their
    /// file's name and the duplicates folded: valid rows of folded ids,
    /// less one per id.
    async fn live_events(&self) -> Result<(String, u64)> {
        let live_events = data_name(self.generation, "live-events");
        self.write("live_events", &live_events).await?;
        let winners = count(self.ctx, statement("fold", "winner_count"), &self.params).await?;
        let kept_ids = count(self.ctx, statement("fold", "kept_id_count"), &vec![]).await?;
        let valid = count(self.ctx, statement("fold", "valid_count"), &self.params).await?;
        self.ctx.deregister_table("fold_live")?;
        self.ctx
            .register_parquet(
                "fold_live",
                &self.store.url_of(&live_events),
                ParquetReadOptions::default(),
            )
            .await?;
        let live = count(self.ctx, statement("fold", "live_count"), &vec![]).await?;
        let folded_ids = winners.saturating_sub(kept_ids);
        let folded_rows = valid.saturating_sub(live);
        Ok((live_events, folded_rows.saturating_sub(folded_ids)))
    }

    /// The one-pass fold of a full run: the started conversations and the
    /// anchors, copied from `from_build` (taken before the reports, under
    /// a limit) or read from the operators' build (held since the reports,
    /// or made again), then (under a limit, with the build let go: the
    /// pass needs the pool) the events in one pass.
    /// Returns the started file, what the pass wrote, and the anchors file.
    async fn in_one_pass(
        &self,
        repeated: &datafusion::logical_expr::ScalarUDF,
        from_build: Option<&FromBuild>,
        scan: Option<super::one_pass::ScanFold>,
        laps: &mut Laps,
    ) -> Result<(String, super::one_pass::Placed, String)> {
        // What the scan routed first: the conversations of the rows it
        // left are the only ones the fold looks up.
        let scan = match scan {
            Some(scan) => Some(scan.finish(self.ctx).await?),
            None => None,
        };
        let needed = match &scan {
            Some(Ok(from_scan)) => Some(from_scan.conversations()?),
            _ => None,
        };
        let started = data_name(self.generation, "started");
        let (started_rows, anchors) = match from_build {
            Some(taken) => {
                let rows = self
                    .ctx
                    .read_parquet(taken.started.as_str(), ParquetReadOptions::default())
                    .await?;
                let anchors = self.copy(&taken.anchors, "anchors").await?;
                (rows, anchors)
            }
            None => {
                let anchors = self.anchors(true).await?;
                laps.lap("fold: anchors");
                (self.plan("started_from_build").await?, anchors)
            }
        };
        let set = super::one_pass::started(
            self.ctx,
            self.store,
            started_rows,
            &started,
            needed.as_ref(),
        )
        .await?;
        laps.lap(match needed {
            Some(_) => "fold: started (the scan's rows' looked up)",
            None => "fold: started",
        });
        if self.engine.options.memory_limit.is_some() {
            if let Some(cache) = self
                .ctx
                .state()
                .config()
                .get_extension::<crate::tables::native::node::NativeCache>()
            {
                cache.release().await;
            }
        }
        let placed = super::one_pass::fold(
            self.ctx,
            self.store,
            &self.params,
            self.generation,
            repeated,
            scan,
            &set,
        )
        .await?;
        laps.lap("fold: event index and live events, in one pass");
        Ok((started, placed, anchors))
    }

    /// Writes the anchors; returns their file's name. The `sessions`
    /// relation is the sessionization of these same winners' actions: read
    /// from the operators' build when `from_build` (the one-pass fold, which
    /// writes no winners) or the session still holds it, else (a report
    /// under a memory limit lets go of it) sessionizing the winners again
    /// costs less than a new build.
    async fn anchors(&self, from_build: bool) -> Result<String> {
        let anchors = data_name(self.generation, "anchors");
        let from_build = from_build
            || (crate::report::builds_here(self.engine)
                && crate::tables::native::node::holds_build(self.ctx).await?);
        let name = if from_build {
            "anchors_from_sessions"
        } else {
            "anchors_from_winners"
        };
        self.write(name, &anchors).await?;
        Ok(anchors)
    }

    /// The index segments after this run's: one segment a run would make
    /// every run open hundreds of files, so past a few they are merged
    /// into one.
    async fn segments(
        &self,
        previous: Option<&Manifest>,
        index: String,
        message_index: String,
        started: String,
    ) -> Result<(Vec<String>, Vec<String>, Vec<String>)> {
        let (mut event_list, mut message_list, mut started_list) = previous
            .map(|m| {
                (
                    m.event_index.clone(),
                    m.message_index.clone(),
                    m.started.clone(),
                )
            })
            .unwrap_or_default();
        event_list.push(index);
        message_list.push(message_index);
        started_list.push(started);
        for (list, column, kind) in [
            (&mut event_list, "event_id", "event-index"),
            (&mut message_list, "message_id", "message-index"),
            (&mut started_list, "conversation_id", "started"),
        ] {
            if list.len() > MAX_SEGMENTS {
                let merged = data_name(self.generation, kind);
                let urls: Vec<String> = list.iter().map(|f| self.store.url_of(f)).collect();
                let df = self
                    .ctx
                    .read_parquet(urls, ParquetReadOptions::default())
                    .await?
                    .select_columns(&[column])?;
                write_df(df, &self.store.url_of(&merged)).await?;
                *list = vec![merged];
            }
        }
        Ok((event_list, message_list, started_list))
    }
}

/// The input location the manifest records: the previous state's (the
/// engine of an incremental run reads the reduced input) or the engine's.
fn engine_location(previous: Option<&Manifest>, table: &str, engine: &Engine) -> String {
    match previous {
        Some(m) if table == EVENTS.name => m.events.clone(),
        Some(m) => m.messages.clone(),
        None => engine
            .options
            .table(table)
            .map(|t| t.location.to_string())
            .unwrap_or_default(),
    }
}
