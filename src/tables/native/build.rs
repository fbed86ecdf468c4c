//! The steps of the operators' build, in order, over one scan of `events`
//! and a read of its `event_id` column before it:
//!
//! 1. **ids** ([`super::scan::id_hashes`]): the event_id column alone, its
//!    hashes in `B` buckets by hash, and each bucket's repeated hashes:
//!    the repeat candidates;
//! 2. **scan** ([`super::scan`]): every input partition in its own task;
//!    rows validated and routed to `B` buckets by key; the valid rows of
//!    candidate hashes kept whole;
//!    **repeats** ([`super::dedup`]): those rows grouped by event_id and
//!    settled;
//! 3. **facts** ([`super::facts`]): each conversation bucket's facts, sent
//!    to the user buckets; tied conversations settled by one more read;
//! 4. **finalize** ([`super::sessions`]): each user bucket grouped by user,
//!    kept in memory when the pool grants it, else written out whole (so
//!    that each relation reads it back rather than finalizing it again).
//!
//! The buckets of steps 2–4 are processed by as many threads as there are
//! plan partitions, each reserving what it loads. `B` grows with the
//! history and shrinks with the pool, so one bucket's work always fits
//! within a share of `--memory-limit`.
//!
//! The result ([`Built`]) serves every relation of every statement that
//! reads the same files: the report's statements and a `sql` session's
//! queries build once.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::DataType;
use datafusion::datasource::TableProvider;
use datafusion::execution::{SessionStateBuilder, TaskContext};
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use super::dedup::{self, ActionKey, Dedup};
use super::facts;
use super::intern::IdHasher;
use super::scan::{self, ScanCounts, Stores};
use super::segments::{Actions, Facts, IdHashes};
use super::sessions::UserBucket;
use super::store::{Budget, Store};
use super::tap::FoldTap;
use super::{EventCounts, HashMap, HashSet, Relation};
use crate::error::{Error, Result};

/// Knobs of the build, a session config extension; the defaults are what
/// every command uses.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NativeOptions {
    /// Bits of the event_id hash kept (64; tests use fewer to force the
    /// candidate path through collisions).
    pub id_hash_bits: u32,
    /// Buckets per key; chosen from the history and the pool when `None`.
    pub buckets: Option<usize>,
    /// Write every segment to the spill directory (tests: the spilled path
    /// on small data).
    pub always_spill: bool,
    /// One task reads the whole input and emits the whole relation (one
    /// output partition). A cluster's scheduler sets it: Ballista gives
    /// each task of a partitioned stage only its slice of the files, and
    /// the operators need every row (docs/CLUSTER.md).
    pub single_task: bool,
}

impl Default for NativeOptions {
    fn default() -> Self {
        Self {
            id_hash_bits: 64,
            buckets: None,
            always_spill: false,
            single_task: false,
        }
    }
}

/// What a one-task build leaves of its task's pool to the operators above
/// it: a step's writer holds a few MiB, a sort reserves 10 MiB.
const SINGLE_TASK_HEADROOM: usize = 256 << 20;

/// Bytes a valid event holds in the buckets, about, for choosing `B`.
const BYTES_PER_EVENT: usize = 40;

/// The least `--memory-limit` a report over `rows` events is known to run
/// in: a fixed part (the scans' buffers, the sections' joins) and a part per
/// event (the buckets' working sets and the report's own tables), with
/// margin; the tests check that a run at this limit succeeds and that the
/// error naming it says so in one line.
pub fn least_memory_limit(rows: u64) -> u64 {
    const FIXED: u64 = 256 << 20;
    const PER_EVENT: u64 = 8;
    FIXED + rows.saturating_mul(PER_EVENT)
}

/// Buckets for `rows` events: enough that a bucket being processed by each
/// of `threads` threads, with room to work (4 times its rows), fits in the
/// pool; at least 4 per thread, so the threads share the work evenly.
pub fn buckets_for(rows: usize, limit: Option<usize>, threads: usize) -> usize {
    let least = (threads * 4).next_power_of_two();
    let Some(limit) = limit else {
        return least;
    };
    let need = rows
        .saturating_mul(BYTES_PER_EVENT)
        .saturating_mul(4)
        .saturating_mul(threads)
        / limit.max(1);
    need.next_power_of_two().clamp(least, 1 << 14)
}

/// What the build leaves for the relations.
pub struct Built {
    /// The data-quality counts.
    pub counts: EventCounts,
    /// The type of `events.ts`, whose ticks every time here is in.
    pub ts_type: DataType,
    actions: Store<Actions>,
    facts: Store<Facts>,
    action_losers: Vec<HashMap<ActionKey, u32>>,
    /// The event_id hashes seen on more than one row of `events` (valid or
    /// not: a superset of the repeated valid ids' hashes), and their
    /// hasher: every other valid row's id is unique.
    repeated: (Arc<HashSet<u64>>, IdHasher),
    /// Finalized user buckets: in memory where the pool keeps them, else
    /// written out, so that no relation finalizes a bucket again.
    finalized: Store<UserBucket>,
    /// The relation whose next reading is the buckets' last
    /// ([`Built::last_read_by`]), and which buckets it has taken.
    last_reader: std::sync::OnceLock<Relation>,
    taken: Vec<std::sync::atomic::AtomicBool>,
    budget: Arc<Budget>,
    /// Time per step, rows and spills, for `EXPLAIN ANALYZE` and the notes.
    pub profile: Profile,
}

/// What the build did.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// (step, time) in order.
    pub steps: Vec<(&'static str, Duration)>,
    /// Buckets per key.
    pub buckets: usize,
    /// Event_id hashes seen on more than one row of `events`.
    pub candidates: usize,
    /// Conversations whose ties were settled by event_id.
    pub tied: usize,
    /// Segments written to disk, and their bytes.
    pub spilled: (usize, u64),
    /// The most the build held at once in the pool, in bytes.
    pub peak: usize,
}

impl std::fmt::Display for Profile {
    /// One line: `operators: scan 1.20 s, …; 16 buckets, …`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "operators:")?;
        for (i, (step, t)) in self.steps.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{step} {:.2} s", t.as_secs_f64())?;
        }
        write!(
            f,
            "; {} MiB held at most, {} buckets, {} repeat candidates, {} tied conversations, \
             {} segments spilled ({} MiB)",
            self.peak >> 20,
            self.buckets,
            self.candidates,
            self.tied,
            self.spilled.0,
            self.spilled.1 >> 20
        )
    }
}

impl std::fmt::Debug for Built {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Built")
            .field("counts", &self.counts)
            .field("profile", &self.profile)
            .finish()
    }
}

impl Built {
    /// Buckets per key.
    pub fn buckets(&self) -> usize {
        self.finalized.len()
    }

    /// A function of an event_id, true when its hash was seen on more than
    /// one row of the build's `events`, valid or not (the ids that may have
    /// copies; false proves a valid row the only copy of its id).
    pub fn repeated_id_udf(&self) -> datafusion::logical_expr::ScalarUDF {
        dedup::hash_in_udf(Arc::clone(&self.repeated.0), self.repeated.1)
    }

    /// Says that the next reading of `relation` is the last that reads the
    /// buckets (a one-off report's last step over them): it takes each
    /// bucket out of the build as it reads it, so that the bucket's memory
    /// goes as soon as its rows are made, not when the whole build goes.
    /// The counts stay. Said once per build; a second call is ignored.
    pub fn last_read_by(&self, relation: Relation) {
        let _ = self.last_reader.set(relation);
    }

    /// Whether readings of `relation` take the buckets out of the build.
    fn takes(&self, relation: Relation) -> bool {
        self.last_reader.get() == Some(&relation)
    }

    /// User bucket `b`, finalized, for a reading of `relation`: kept from
    /// the build, or read back where the build wrote it out; taken out of
    /// the build when that reading is the last ([`Self::last_read_by`]).
    /// A bucket already taken is an error, never an empty bucket: its
    /// rows would be missing from the answer.
    pub fn bucket(&self, b: usize, relation: Relation) -> Result<Arc<UserBucket>> {
        use std::sync::atomic::Ordering;
        let take = self.takes(relation);
        if self.taken[b].load(Ordering::Acquire)
            || (take && self.taken[b].swap(true, Ordering::AcqRel))
        {
            return Err(Error::Internal(format!(
                "bucket {b} of the operators' build was already read for the last time; \
                 the build must be made again"
            )));
        }
        let (mut parts, held) = self.finalized.load(b, &self.budget, !take)?;
        // What was read back is the caller's while it emits rows, as the
        // rows it emits are.
        self.budget.shrink(held);
        Ok(parts
            .pop()
            .unwrap_or_else(|| Arc::new(UserBucket::default())))
    }

    /// User bucket `b` made from its segments (spilled ones read back).
    fn finalize(&self, b: usize) -> Result<UserBucket> {
        let (actions, a_held) = self.actions.load(b, &self.budget, true)?;
        let (facts, f_held) = self.facts.load(b, &self.budget, true)?;
        let u = UserBucket::finalize(&actions, &facts, &self.action_losers[b]);
        drop((actions, facts));
        self.budget.shrink(a_held + f_held);
        Ok(u)
    }
}

impl Drop for Built {
    fn drop(&mut self) {
        self.budget.shrink(self.budget.held());
    }
}

/// What a build reads.
pub struct BuildInput {
    /// `events` with [`scan::SCAN_COLUMNS`], the plan being executed.
    pub input: Arc<dyn ExecutionPlan>,
    /// The `events` table, for reading a few rows again.
    pub events: Arc<dyn TableProvider>,
    /// The executing task's context (pool, spill directory, config).
    pub task: Arc<TaskContext>,
    /// Rows in `events`, if known (for choosing the buckets).
    pub rows: Option<usize>,
    /// Threads for the bucket steps.
    pub threads: usize,
    /// A full run's fold, routed by the scan ([`super::tap`]).
    pub tap: Option<Arc<FoldTap>>,
}

/// Runs `f` over `0..n` on `threads` threads, outside the async runtime's
/// workers.
async fn par<T, F>(n: usize, threads: usize, f: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Result<T> + Send + Sync + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..threads.clamp(1, n.max(1)) {
        let (f, next) = (Arc::clone(&f), Arc::clone(&next));
        handles.push(tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, Error>(out);
                }
                out.push((i, f(i)?));
            }
        }));
    }
    let mut all = Vec::with_capacity(n);
    for h in handles {
        all.extend(
            h.await
                .map_err(|e| Error::Internal(format!("a bucket task failed: {e}")))??,
        );
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

/// A context over `events` alone, for the second reads (filters pushed
/// into the Parquet decoder).
fn reread_context(task: &TaskContext, events: Arc<dyn TableProvider>) -> Result<SessionContext> {
    // A catalog of its own: the task's configuration may say not to make
    // one (a forked session shares its base's).
    let mut config = task
        .session_config()
        .clone()
        .with_create_default_catalog_and_schema(true);
    config.options_mut().execution.parquet.pushdown_filters = true;
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(task.runtime_env())
        .with_default_features()
        .build();
    let ctx = SessionContext::new_with_state(state);
    ctx.register_table("events", events)?;
    Ok(ctx)
}

/// Runs the build.
pub async fn build(input: BuildInput, opts: &NativeOptions) -> Result<Built> {
    let mut profile = Profile::default();
    let mut lap = Instant::now();
    let mut step = |profile: &mut Profile, name: &'static str| {
        profile.steps.push((name, lap.elapsed()));
        // each step lets go of what the one before it made (the ids'
        // hashes, the conversations' rows, the unsorted segments)
        crate::io::allocator::return_freed();
        lap = Instant::now();
    };
    let env = input.task.runtime_env();
    let mut budget = Budget::new(
        Arc::clone(&env),
        "supportfunnel native operators",
        opts.always_spill,
    );
    if opts.single_task {
        // The build stays held while the operators above it in the same
        // task run (a cluster's task filters the relation and writes the
        // report's step): they get SINGLE_TASK_HEADROOM of the task's pool,
        // or half of a smaller one.
        budget = budget.capped(SINGLE_TASK_HEADROOM);
    }
    let budget = Arc::new(budget);
    let threads = input.threads.max(1);
    let b = opts
        .buckets
        .map(|n| n.max(1).next_power_of_two())
        .unwrap_or_else(|| buckets_for(input.rows.unwrap_or(0), budget.limit, threads));
    profile.buckets = b;
    let hasher = IdHasher::new(opts.id_hash_bits);
    let ts_type = input
        .input
        .schema()
        .field_with_name("ts")
        .map_err(|e| Error::Internal(e.to_string()))?
        .data_type()
        .clone();
    let reread = reread_context(&input.task, Arc::clone(&input.events))?;

    // 1. the hashes of the ids seen more than once
    let candidates =
        Arc::new(repeated_ids(&reread, b, hasher, &budget, threads, input.rows).await?);
    profile.candidates = candidates.len();
    step(&mut profile, "ids");

    // 2. the scan, then the repeats among the rows it kept whole
    let scanned = scan_events(
        &input,
        b,
        hasher,
        Arc::clone(&candidates),
        &budget,
        &ts_type,
    )
    .await;
    if let Some(tap) = &input.tap {
        match &scanned {
            Ok(_) => tap.scan_done(),
            Err(e) => tap.fail(format!("the scan failed: {e}")),
        }
    }
    let (stores, counts, copies) = scanned?;
    step(&mut profile, "scan");
    let dedup = Arc::new(dedup::settle(copies, b));
    step(&mut profile, "repeats");

    let (fact_store, orphans, tied) =
        conversation_facts(&stores, &budget, &dedup, &reread, b, threads).await?;
    profile.tied = tied;
    step(&mut profile, "facts");

    // 4. finalize, kept where the pool allows, else written out
    let stores = Arc::try_unwrap(stores)
        .map_err(|_| Error::Internal("the scan's stores are still shared".into()))?;
    let fact_store = Arc::try_unwrap(fact_store)
        .map_err(|_| Error::Internal("the facts are still shared".into()))?;
    let dedup = Arc::try_unwrap(dedup)
        .map_err(|_| Error::Internal("the repeats are still shared".into()))?;
    let Dedup {
        action_losers,
        duplicate_events,
        ..
    } = dedup;
    let built = Arc::new(Built {
        counts: EventCounts {
            rows_read: counts.rows_read,
            rejected: counts.rejected,
            duplicate_events,
            orphan_lifecycle_events: orphans,
        },
        ts_type,
        actions: stores.actions,
        facts: fact_store,
        action_losers,
        repeated: (candidates, hasher),
        finalized: Store::new(b),
        last_reader: std::sync::OnceLock::new(),
        taken: (0..b).map(|_| Default::default()).collect(),
        budget: Arc::clone(&budget),
        profile: Profile::default(),
    });
    {
        let built = Arc::clone(&built);
        par(b, threads, move |i| {
            let u = built.finalize(i)?;
            built.actions.clear(i, &built.budget);
            built.facts.clear(i, &built.budget);
            built.finalized.add(i, u, &built.budget, false)
        })
        .await?;
    }
    step(&mut profile, "finalize");
    let mut built = Arc::try_unwrap(built)
        .map_err(|_| Error::Internal("the finalized buckets are still shared".into()))?;
    profile.spilled = budget.spilled();
    profile.peak = budget.peak();
    built.profile = profile;
    Ok(built)
}

/// Step 1: the event_id hashes seen more than once in `events`, read
/// with that column alone, every partition at once, and settled bucket by
/// bucket (each bucket's hashes sorted). The hashes are let go before the
/// scan starts.
async fn repeated_ids(
    reread: &SessionContext,
    b: usize,
    hasher: IdHasher,
    budget: &Arc<Budget>,
    threads: usize,
    rows: Option<usize>,
) -> Result<HashSet<u64>> {
    let ids = Arc::new(Store::<IdHashes>::new(b));
    let plan = reread
        .table("events")
        .await?
        .select_columns(&["event_id"])?
        .create_physical_plan()
        .await?;
    let task = reread.task_ctx();
    let mut tasks = Vec::new();
    let partitions = plan.properties().output_partitioning().partition_count();
    for p in 0..partitions {
        let stream = plan.execute(p, Arc::clone(&task))?;
        let (budget, ids) = (Arc::clone(budget), Arc::clone(&ids));
        let sizer = sizer(rows, partitions, &budget);
        tasks.push(tokio::spawn(async move {
            scan::id_hashes(stream, b, hasher, &budget, &ids, sizer, partitions).await
        }));
    }
    joined(tasks, "event id").await?;
    let repeated = {
        let budget = Arc::clone(budget);
        par(b, threads, move |i| dedup::repeated_in(&ids, i, &budget)).await?
    };
    Ok(repeated.into_iter().flatten().collect())
}

/// Step 2: every partition of `events` scanned at once, rows routed to
/// the buckets of `stores` by key; returns them, the counts and the valid
/// rows of `candidates`' hashes, whole.
async fn scan_events(
    input: &BuildInput,
    b: usize,
    hasher: IdHasher,
    candidates: Arc<HashSet<u64>>,
    budget: &Arc<Budget>,
    ts_type: &DataType,
) -> Result<(Arc<Stores>, ScanCounts, Vec<dedup::FullRow>)> {
    let stores = Arc::new(Stores {
        actions: Store::new(b),
        convs: Store::new(b),
    });
    let seen = Arc::new(AtomicUsize::new(0));
    let candidates = Arc::new(scan::Candidates::new(candidates));
    let partitions = input
        .input
        .properties()
        .output_partitioning()
        .partition_count();
    // A full run's fold taps the scan: each task then reads its own range
    // of the files, as planned, not files taken from the other tasks'
    // ranges as they finish. Files come in time order in practice, so a
    // conversation's rows stay with one task, which settles them by its
    // own keys (`tap`); taking each other's files, the tasks would read
    // alternate days and need each other's starts.
    let (plan, task) = match &input.tap {
        Some(_) => {
            let mut config = input.task.session_config().clone();
            config
                .options_mut()
                .execution
                .enable_file_stream_work_stealing = false;
            let t = &input.task;
            let task = TaskContext::new(
                t.task_id(),
                t.session_id(),
                config,
                t.scalar_functions().clone(),
                t.higher_order_functions().clone(),
                t.aggregate_functions().clone(),
                t.window_functions().clone(),
                t.runtime_env(),
            );
            (reset_plan_states(Arc::clone(&input.input))?, Arc::new(task))
        }
        None => (Arc::clone(&input.input), Arc::clone(&input.task)),
    };
    let mut tasks = Vec::with_capacity(partitions);
    for p in 0..partitions {
        let stream = plan.execute(p, Arc::clone(&task))?;
        let (budget, stores, seen) = (Arc::clone(budget), Arc::clone(&stores), Arc::clone(&seen));
        let candidates = Arc::clone(&candidates);
        let tap = input.tap.as_ref().and_then(|t| t.task(ts_type));
        let sizer = sizer(input.rows, partitions, &budget);
        tasks.push(tokio::spawn(async move {
            scan::scan_partition(
                stream, b, hasher, candidates, &budget, &stores, &seen, tap, sizer,
            )
            .await
        }));
    }
    let mut counts = ScanCounts::default();
    let mut copies = Vec::new();
    for (c, rows) in joined(tasks, "event scan").await? {
        counts.add(&c);
        copies.extend(rows);
    }
    Ok((stores, counts, copies))
}

/// The sizing of a scan task's segments ([`scan::Sizer`]): for its share
/// of `rows` when the pool has no limit, else none.
fn sizer(rows: Option<usize>, partitions: usize, budget: &Budget) -> scan::Sizer {
    let unbounded = budget.limit.is_none() && !budget.always_spill;
    scan::Sizer::new(rows.filter(|_| unbounded).map(|r| r / partitions.max(1)))
}

/// The results of the partitions' `tasks`, in order. At the first failure
/// the tasks not yet done are stopped (they would read their partitions to
/// the end and write spill files for nothing) and the failure returned.
async fn joined<T>(
    mut tasks: Vec<tokio::task::JoinHandle<Result<T>>>,
    what: &str,
) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(tasks.len());
    for i in 0..tasks.len() {
        let done = (&mut tasks[i])
            .await
            .map_err(|e| Error::Internal(format!("{what} task failed: {e}")))
            .and_then(|r| r);
        match done {
            Ok(t) => out.push(t),
            Err(e) => {
                tasks[i + 1..].iter().for_each(|t| t.abort());
                return Err(e);
            }
        }
    }
    Ok(out)
}

/// Phase 3: conversation facts, bucket by bucket, added to a store by user
/// bucket; ties the slim rows cannot settle are re-read. Returns the
/// facts, the orphan lifecycle rows and how many ties were re-read.
async fn conversation_facts(
    stores: &Arc<Stores>,
    budget: &Arc<Budget>,
    dedup: &Arc<Dedup>,
    reread: &SessionContext,
    b: usize,
    threads: usize,
) -> Result<(Arc<Store<Facts>>, u64, usize)> {
    let fact_store = Arc::new(Store::<Facts>::new(b));
    let outs = {
        let (stores, budget, dedup, fact_store) = (
            Arc::clone(stores),
            Arc::clone(budget),
            Arc::clone(dedup),
            Arc::clone(&fact_store),
        );
        par(b, threads, move |i| {
            make_room(
                &stores,
                &fact_store,
                &budget,
                i,
                stores.convs.size(i).1 as usize,
            )?;
            let (parts, held) = stores.convs.load(i, &budget, false)?;
            let out = facts::bucket_facts(&parts, &dedup.conv_losers[i], b)?;
            drop(parts);
            budget.shrink(held);
            for (ub, f) in out.facts.into_iter().enumerate() {
                fact_store.add(ub, f, &budget, false)?;
            }
            Ok((out.orphans, out.tied))
        })
        .await?
    };
    let mut orphans = 0;
    let mut tied = Vec::new();
    for (o, t) in outs {
        orphans += o;
        tied.extend(t);
    }
    let ties = tied.len();
    for (ub, f) in facts::settle_ties(reread, tied, dedup, b)
        .await?
        .into_iter()
        .enumerate()
    {
        fact_store.add(ub, f, budget, false)?;
    }
    Ok((fact_store, orphans, ties))
}

/// Frees memory for loading `bytes` of bucket `i`'s spilled segments, by
/// writing out other buckets' segments if the pool has not got them.
fn make_room(
    stores: &Stores,
    facts: &Store<Facts>,
    budget: &Budget,
    i: usize,
    bytes: usize,
) -> Result<()> {
    if bytes == 0 || budget.try_grow(bytes) {
        budget.shrink(bytes);
        return Ok(());
    }
    let busy = [i];
    let mut freed = stores.convs.make_room(bytes, &busy, budget)?;
    if freed < bytes {
        freed += stores.actions.make_room(bytes - freed, &[], budget)?;
    }
    if freed < bytes {
        facts.make_room(bytes - freed, &[], budget)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_partition_stops_the_others() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let failing = tokio::spawn(async { Err::<(), _>(Error::Internal("boom".into())) });
        let endless = tokio::spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
            Ok(())
        });
        let err = joined(vec![failing, endless], "test").await.unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
        // the endless task was stopped: its end of the channel is dropped
        let closed = tokio::time::timeout(Duration::from_secs(10), rx).await;
        assert!(matches!(closed, Ok(Err(_))), "the other task still runs");
        let ok: Vec<u8> = joined(vec![tokio::spawn(async { Ok(1u8) })], "test")
            .await
            .unwrap();
        assert_eq!(ok, vec![1]);
    }
}
