//! A full run's fold, routed while the operators' scan reads `events`.
//!
//! A job that builds its state folds every valid row of the history: its
//! event_id into the index, or the row into the live events (see
//! `queries/incremental/fold.sql`, `fold_places`). The scan already reads
//! and validates every row once, so a [`FoldTap`] handed to the build
//! routes them there, and the fold does not read the history again:
//!
//! * a row whose id hash is a repeat candidate may have copies: it is kept
//!   whole, for the fold to rank with the other copies (`repeated`);
//! * any other valid row is its id's only copy. At or after the new
//!   frontier it stays live; before it, its id is folded, unless it is a
//!   lifecycle row whose conversation has not started before the
//!   frontier (it may still find its start, spec §3). A lifecycle row whose
//!   start this task has seen (an only copy, before the frontier) is
//!   folded at once; the others are kept whole (`deferred`), settled when
//!   the task sees their start later, else left for the fold to decide
//!   with the build's `conversations` relation. Each task reads a range
//!   of the files of its own, and events arrive in time order in
//!   practice, so few rows wait: those whose start is in another task's
//!   range, at its edge, and under a memory limit those whose start came
//!   before the task handed its segments over (its keys start again).
//!
//! Ids and live rows go to the fold's writers through channels as the
//! scan reads them; the rows kept whole are counted in the memory pool.
//! The tap never fails the build: when it cannot follow (a writer failed,
//! the pool or its own cap refused what it keeps, the scan failed) it
//! says so and the fold reads the history itself, as it does without a
//! tap. `incremental::the_one_pass_fold_writes_the_reference_state` holds
//! the state it writes equal to the reference fold's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::compute::{cast, filter, filter_record_batch, not};
use datafusion::arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef, TimeUnit};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::runtime_env::RuntimeEnv;
use tokio::sync::mpsc::Sender;

use super::scan::EventColumns;
use crate::rules::{self, kind};

/// The columns of a live row, in the order of the state's live events.
pub const LIVE_COLUMNS: [&str; 9] = super::dedup::FULL_COLUMNS;

/// Where the tapped rows go as the scan reads them.
#[derive(Clone)]
pub struct Senders {
    /// Folded event_ids, one column named as the index's.
    pub index: Sender<RecordBatch>,
    /// Live rows, in the live events' schema.
    pub live: Sender<RecordBatch>,
}

/// What the scan left for the fold.
#[derive(Debug, Default)]
pub struct Tapped {
    /// Lifecycle rows before the frontier whose start the scan had not
    /// seen first, whole (live events' schema).
    pub deferred: Vec<RecordBatch>,
    /// Valid rows of ids that may have copies, whole.
    pub repeated: Vec<RecordBatch>,
    /// What was routed.
    pub counts: TapCounts,
    /// Their reservation in the pool: dropped with them.
    pub reservation: Option<MemoryReservation>,
}

/// Rows the tap routed.
#[derive(Debug, Default, Clone, Copy)]
pub struct TapCounts {
    /// Ids sent to the index.
    pub folded: u64,
    /// Rows sent to the live events.
    pub live: u64,
    /// Rows kept for the fold to decide.
    pub deferred: u64,
    /// Rows of ids that may have copies.
    pub repeated: u64,
}

impl TapCounts {
    fn add(&mut self, o: &TapCounts) {
        self.folded += o.folded;
        self.live += o.live;
        self.deferred += o.deferred;
        self.repeated += o.repeated;
    }
}

/// A full run's fold, handed to the next build's scan.
pub struct FoldTap {
    /// The new frontier, microseconds since the epoch.
    frontier_us: i64,
    /// The live events' schema.
    live_schema: SchemaRef,
    /// The index's column (its type is the scan's own: the state's file
    /// holds strings either way).
    index_field: FieldRef,
    /// Most bytes the rows kept whole may take before the tap gives up.
    cap: usize,
    senders: Mutex<Option<Senders>>,
    inner: Mutex<Inner>,
    /// Set with `Inner::failed`, read by the tasks at every batch.
    failed: AtomicBool,
}

#[derive(Default)]
struct Inner {
    /// The build that took the tap, by its key's digest.
    claimed: Option<u64>,
    reservation: Option<MemoryReservation>,
    tapped: Tapped,
    /// Every partition of the scan ended.
    complete: bool,
    /// Why the fold must read the history itself.
    failed: Option<String>,
}

impl std::fmt::Debug for FoldTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FoldTap(frontier {} us)", self.frontier_us)
    }
}

impl FoldTap {
    /// A tap for the frontier `frontier_us`, writing through `senders`;
    /// the rows it keeps whole may take `cap` bytes of the pool at most.
    pub fn new(
        frontier_us: i64,
        live_schema: SchemaRef,
        index_field: FieldRef,
        senders: Senders,
        cap: usize,
    ) -> Self {
        Self {
            frontier_us,
            live_schema,
            index_field,
            cap,
            senders: Mutex::new(Some(senders)),
            inner: Mutex::new(Inner::default()),
            failed: AtomicBool::new(false),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Taken by the build of key digest `key`: only the first build taps.
    pub(super) fn claim(&self, key: u64, env: &RuntimeEnv) -> bool {
        let mut inner = self.inner();
        if inner.claimed.is_some() {
            return false;
        }
        inner.claimed = Some(key);
        inner.reservation =
            Some(MemoryConsumer::new("fold tap: rows kept whole").register(&env.memory_pool));
        true
    }

    /// One scan task's part, its times in `ts_type`; `None` (and the tap
    /// failed) when that type has no ticks to compare.
    pub(super) fn task(self: &Arc<Self>, ts_type: &DataType) -> Option<TapTask> {
        let frontier = match ts_type {
            DataType::Timestamp(unit, _) => ticks_before(self.frontier_us, *unit),
            _ => None,
        };
        let senders = self
            .senders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match (frontier, senders) {
            (Some(frontier), Some(senders)) => Some(TapTask {
                tap: Arc::clone(self),
                frontier,
                senders,
                kept: Tapped::default(),
                deferred_keys: Vec::new(),
                seen: SeenByKey::default(),
                held: 0,
                reserved: 0,
                index_schema: None,
            }),
            (None, _) => {
                self.fail(format!("events.ts is of type {ts_type}"));
                None
            }
            (_, None) => None,
        }
    }

    /// Every partition of the scan ended: the writers get no more rows.
    pub(super) fn scan_done(&self) {
        self.close();
        self.inner().complete = true;
    }

    /// The fold reads the history itself, for `why`.
    pub fn fail(&self, why: String) {
        self.close();
        self.failed.store(true, Ordering::Relaxed);
        let mut inner = self.inner();
        if inner.failed.is_none() {
            inner.failed = Some(why);
        }
        inner.tapped = Tapped::default();
        if let Some(r) = &mut inner.reservation {
            r.free();
        }
    }

    /// Lets go of the writers' channels (they end once the scan's tasks
    /// have let go of theirs).
    pub fn close(&self) {
        self.senders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// What the scan left, if the build of key digest `key` read every
    /// partition through it; else why not.
    pub fn take(&self, key: Option<u64>) -> std::result::Result<Tapped, String> {
        self.close();
        let mut inner = self.inner();
        if let Some(why) = inner.failed.take() {
            return Err(why);
        }
        if inner.claimed.is_none() {
            return Err("no build read the events through it".into());
        }
        if key.is_none() || inner.claimed != key {
            return Err("the events changed since the build".into());
        }
        if !inner.complete {
            return Err("the scan did not end".into());
        }
        let mut tapped = std::mem::take(&mut inner.tapped);
        tapped.reservation = inner.reservation.take();
        Ok(tapped)
    }

    /// Reserves `bytes` more for a task's rows kept whole; false (and the
    /// tap failed) when the pool or the cap refuses.
    fn reserve(&self, bytes: usize) -> bool {
        let mut inner = self.inner();
        if inner.failed.is_some() {
            return false;
        }
        let reservation = &mut inner.reservation;
        let total = reservation.as_ref().map_or(0, |r| r.size()) + bytes;
        let granted = total <= self.cap
            && reservation
                .as_mut()
                .is_some_and(|r| r.try_grow(bytes).is_ok());
        if granted {
            return true;
        }
        drop(inner);
        self.fail(format!(
            "the rows it keeps whole passed {} MiB or the pool refused them",
            self.cap >> 20
        ));
        false
    }

    /// Gives back `bytes` of a task's reservation.
    fn release(&self, bytes: usize) {
        if let Some(r) = &mut self.inner().reservation {
            r.shrink(bytes.min(r.size()));
        }
    }

    /// Adds a task's rows kept whole (reserved already).
    fn keep(&self, kept: Tapped) {
        let mut inner = self.inner();
        if inner.failed.is_some() {
            return;
        }
        inner.tapped.deferred.extend(kept.deferred);
        inner.tapped.repeated.extend(kept.repeated);
        inner.tapped.counts.add(&kept.counts);
    }
}

/// The first tick of `unit` at or after `frontier_us`: a time of that unit
/// is before the frontier exactly when it is before this tick.
fn ticks_before(frontier_us: i64, unit: TimeUnit) -> Option<i64> {
    let ceil_div = |d: i64| frontier_us.div_euclid(d) + i64::from(frontier_us.rem_euclid(d) != 0);
    match unit {
        TimeUnit::Second => Some(ceil_div(1_000_000)),
        TimeUnit::Millisecond => Some(ceil_div(1_000)),
        TimeUnit::Microsecond => Some(frontier_us),
        TimeUnit::Nanosecond => frontier_us.checked_mul(1_000),
    }
}

/// A row the scan does not route: not an event, or rejected.
pub const SKIP: u8 = u8::MAX;

/// What the scan says of each row of a batch, for the tap.
#[derive(Default)]
pub struct Marks {
    /// The row's kind, or [`SKIP`].
    pub kinds: Vec<u8>,
    /// Whether its id hash is a repeat candidate.
    pub candidate: Vec<bool>,
    /// Its conversation's bucket and key in the scan task's segment of
    /// that bucket (a conversation row's; else `NO_CONV`).
    pub conv: Vec<(u32, u32)>,
}

/// [`Marks::conv`] of a row without a conversation.
const NO_CONV: (u32, u32) = (u32::MAX, 0);

impl Marks {
    /// Empty marks for a batch of `n` rows.
    pub(super) fn clear(&mut self, n: usize) {
        self.kinds.clear();
        self.kinds.resize(n, SKIP);
        self.candidate.clear();
        self.candidate.resize(n, false);
        self.conv.clear();
        self.conv.resize(n, NO_CONV);
    }
}

/// Conversations of one scan task's segments whose start (an only copy,
/// before the frontier) the task has seen, by their keys in the segments:
/// a lookup is one bit, where a set of the conversations' ids would wait
/// for memory. The segments' interners start again when the task hands
/// them over, and so does this.
#[derive(Default)]
struct SeenByKey {
    /// The scan's generation of segments the keys belong to.
    generation: u64,
    /// Per bucket, a bit per key.
    bits: Vec<Vec<u64>>,
}

impl SeenByKey {
    fn follow(&mut self, generation: u64) {
        if generation != self.generation {
            self.generation = generation;
            self.bits.clear();
        }
    }

    fn insert(&mut self, (bucket, key): (u32, u32)) {
        if (bucket, key) == NO_CONV {
            return;
        }
        let (b, k) = (bucket as usize, key as usize);
        if self.bits.len() <= b {
            self.bits.resize_with(b + 1, Vec::new);
        }
        let words = &mut self.bits[b];
        if words.len() <= k / 64 {
            words.resize(k / 64 + 1, 0);
        }
        words[k / 64] |= 1 << (k % 64);
    }

    fn contains(&self, (bucket, key): (u32, u32)) -> bool {
        let (b, k) = (bucket as usize, key as usize);
        self.bits
            .get(b)
            .and_then(|w| w.get(k / 64))
            .is_some_and(|w| w & (1 << (k % 64)) != 0)
    }
}

/// Bytes of rows a task keeps whole between two looks at its waiting
/// lifecycle rows (whose starts the task may have seen since).
const KEEP_EVERY: usize = 8 << 20;

/// Where the tap sends a row.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Skip,
    Index,
    Live,
    Deferred,
    Repeated,
}

/// One scan task's part of the tap.
pub(super) struct TapTask {
    tap: Arc<FoldTap>,
    /// The frontier in ticks of `events.ts`.
    frontier: i64,
    senders: Senders,
    /// Rows kept whole, and what was routed.
    kept: Tapped,
    /// For each batch of `kept.deferred`, the scan's generation of
    /// segments and its rows' conversations' keys in them: a start the
    /// task sees later settles them by key.
    deferred_keys: Vec<(u64, Vec<(u32, u32)>)>,
    /// The starts this task saw, by their keys in its segments.
    seen: SeenByKey,
    /// Bytes of `kept`'s rows.
    held: usize,
    /// Bytes reserved for them.
    reserved: usize,
    index_schema: Option<SchemaRef>,
}

impl TapTask {
    /// Routes batch `b` (its columns typed in `cols`) as the scan marked
    /// its rows, the conversations' keys being those of the scan's
    /// `generation` of segments. False once the tap has failed (the task
    /// stops tapping).
    pub(super) async fn route(
        &mut self,
        b: &RecordBatch,
        cols: &EventColumns,
        marks: &Marks,
        generation: u64,
    ) -> bool {
        if self.tap.failed.load(Ordering::Relaxed) {
            return false;
        }
        self.seen.follow(generation);
        match self.route_batch(b, cols, marks).await {
            Ok(()) => true,
            Err(why) => {
                self.tap.fail(why);
                false
            }
        }
    }

    async fn route_batch(
        &mut self,
        b: &RecordBatch,
        cols: &EventColumns,
        marks: &Marks,
    ) -> std::result::Result<(), String> {
        let Marks {
            kinds,
            candidate,
            conv,
        } = marks;
        let n = b.num_rows();
        let mut place = vec![Place::Skip; n];
        let (mut starts, mut lifecycle) = (Vec::new(), Vec::new());
        for i in 0..n {
            let k = kinds[i];
            place[i] = if k == SKIP {
                Place::Skip
            } else if candidate[i] {
                Place::Repeated
            } else if cols.ts.value(i) >= self.frontier {
                Place::Live
            } else if rules::needs_conversation(k) && k != kind::STARTED {
                lifecycle.push(i);
                Place::Deferred
            } else {
                if k == kind::STARTED {
                    starts.push(i);
                }
                Place::Index
            };
        }
        // Whether a conversation started before the frontier is a fact of
        // the data, not of the order rows come in: this batch's starts go
        // in first.
        for &i in &starts {
            self.seen.insert(conv[i]);
        }
        for &i in &lifecycle {
            if self.seen.contains(conv[i]) {
                place[i] = Place::Index;
            }
        }
        let mut counts = TapCounts::default();
        let mask = |p: Place, count: &mut u64| {
            let m = BooleanArray::from(place.iter().map(|&q| q == p).collect::<Vec<bool>>());
            *count = m.true_count() as u64;
            m
        };
        let index = mask(Place::Index, &mut counts.folded);
        let live = mask(Place::Live, &mut counts.live);
        let deferred = mask(Place::Deferred, &mut counts.deferred);
        let repeated = mask(Place::Repeated, &mut counts.repeated);
        if counts.folded > 0 {
            let ids = b
                .column_by_name("event_id")
                .ok_or("the scan has no event_id")?;
            self.send_ids(filter(ids, &index).map_err(arrow_err)?)
                .await?;
        }
        if counts.live > 0 {
            let rows = self.whole(b, &live)?;
            self.senders
                .live
                .send(rows)
                .await
                .map_err(|_| "the live events' writer stopped".to_string())?;
        }
        if counts.deferred > 0 {
            let rows = self.whole(b, &deferred)?;
            self.held += rows.get_array_memory_size();
            self.kept.deferred.push(rows);
            let keys = (0..n)
                .filter(|&i| place[i] == Place::Deferred)
                .map(|i| conv[i])
                .collect();
            self.deferred_keys.push((self.seen.generation, keys));
        }
        if counts.repeated > 0 {
            let rows = self.whole(b, &repeated)?;
            self.held += rows.get_array_memory_size();
            self.kept.repeated.push(rows);
        }
        self.kept.counts.add(&counts);
        if self.held >= self.reserved + KEEP_EVERY {
            self.settle().await?;
        }
        Ok(())
    }

    /// Sends folded ids to the index's writer.
    async fn send_ids(&mut self, ids: ArrayRef) -> std::result::Result<(), String> {
        let field = self.tap.index_field.as_ref();
        let schema = match &self.index_schema {
            Some(s) if s.field(0).data_type() == ids.data_type() => Arc::clone(s),
            _ => {
                let s = Arc::new(Schema::new(vec![field
                    .clone()
                    .with_data_type(ids.data_type().clone())]));
                self.index_schema = Some(Arc::clone(&s));
                s
            }
        };
        let batch = RecordBatch::try_new(schema, vec![ids]).map_err(arrow_err)?;
        self.senders
            .index
            .send(batch)
            .await
            .map_err(|_| "the index's writer stopped".to_string())
    }

    /// Folds the waiting lifecycle rows whose start the task has seen
    /// since, then reserves what it still keeps.
    async fn settle(&mut self) -> std::result::Result<(), String> {
        let waiting = std::mem::take(&mut self.kept.deferred);
        let keys = std::mem::take(&mut self.deferred_keys);
        for (rows, (generation, keys)) in waiting.into_iter().zip(keys) {
            // Keys of segments handed over name nothing now: those rows
            // wait for the fold.
            let found = BooleanArray::from(match generation == self.seen.generation {
                true => keys.iter().map(|&k| self.seen.contains(k)).collect(),
                false => vec![false; keys.len()],
            });
            let n = found.true_count();
            if n == 0 {
                self.kept.deferred.push(rows);
                self.deferred_keys.push((generation, keys));
                continue;
            }
            self.held -= rows.get_array_memory_size().min(self.held);
            self.send_ids(filter(rows.column(0), &found).map_err(arrow_err)?)
                .await?;
            self.kept.counts.folded += n as u64;
            self.kept.counts.deferred -= n as u64;
            if n < rows.num_rows() {
                let rest = filter_record_batch(&rows, &not(&found).map_err(arrow_err)?)
                    .map_err(arrow_err)?;
                self.held += rest.get_array_memory_size();
                self.kept.deferred.push(rest);
                let rest_keys = keys
                    .iter()
                    .zip(found.values().iter())
                    .filter(|(_, f)| !f)
                    .map(|(k, _)| *k)
                    .collect();
                self.deferred_keys.push((generation, rest_keys));
            }
        }
        if self.held > self.reserved {
            if !self.tap.reserve(self.held - self.reserved) {
                return Err("the tap failed".into());
            }
        } else {
            self.tap.release(self.reserved - self.held);
        }
        self.reserved = self.held;
        Ok(())
    }

    /// The rows of `b` where `mask` holds, in the live events' schema (own
    /// copies of their strings, not views into the scan's buffers).
    fn whole(
        &self,
        b: &RecordBatch,
        mask: &BooleanArray,
    ) -> std::result::Result<RecordBatch, String> {
        let schema = &self.tap.live_schema;
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| {
                let c = b
                    .column_by_name(f.name())
                    .ok_or_else(|| format!("the scan has no {}", f.name()))?;
                let c = filter(c, mask).map_err(arrow_err)?;
                cast(&c, f.data_type()).map_err(arrow_err)
            })
            .collect::<std::result::Result<_, _>>()?;
        RecordBatch::try_new(Arc::clone(schema), columns).map_err(arrow_err)
    }

    /// The task's partition ended: what it kept goes to the tap.
    pub(super) async fn finish(mut self) {
        match self.settle().await {
            Ok(()) => self.tap.keep(std::mem::take(&mut self.kept)),
            Err(why) => self.tap.fail(why),
        }
    }
}

fn arrow_err(e: datafusion::arrow::error::ArrowError) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_seen_by_key_are_forgotten_with_their_segments() {
        let mut seen = SeenByKey::default();
        seen.follow(0);
        seen.insert((1, 70));
        seen.insert((0, 3));
        seen.insert(NO_CONV);
        assert!(seen.contains((1, 70)) && seen.contains((0, 3)));
        assert!(!seen.contains((1, 71)) && !seen.contains((0, 70)) && !seen.contains((2, 3)));
        assert!(!seen.contains(NO_CONV));
        seen.follow(0);
        assert!(seen.contains((1, 70)), "same segments, same keys");
        // the segments were handed over: their keys name other conversations
        seen.follow(1);
        assert!(!seen.contains((1, 70)) && !seen.contains((0, 3)));
    }

    #[test]
    fn the_frontier_in_each_unit_splits_times_as_microseconds_do() {
        // 2026-03-02T00:00:00.000001Z: a frontier off every coarser tick.
        let f = 1_772_409_600_000_001i64;
        for (unit, per_us) in [
            (TimeUnit::Second, 1e-6),
            (TimeUnit::Millisecond, 1e-3),
            (TimeUnit::Microsecond, 1.0),
        ] {
            let t = ticks_before(f, unit).unwrap();
            let d = (1.0 / per_us) as i64;
            // the tick before it is before the frontier, it is not
            assert!((t - 1) * d < f, "{unit:?}");
            assert!(t * d >= f, "{unit:?}");
        }
        assert_eq!(ticks_before(f, TimeUnit::Nanosecond), Some(f * 1000));
        assert_eq!(ticks_before(i64::MAX, TimeUnit::Nanosecond), None);
        // on a tick, the tick itself
        assert_eq!(ticks_before(-2_000_000, TimeUnit::Second), Some(-2));
        assert_eq!(ticks_before(-1_500_000, TimeUnit::Second), Some(-1));
    }
}
