//! The pass over `events`: each input partition's task validates its
//! rows once (spec §1, in the order of [`rules::REJECT_REASONS`]), counts
//! the rejects, and routes every valid row, in slim form, to its buckets:
//! customer actions by user, conversation rows (starts and lifecycle
//! events) by conversation. A valid row whose event_id hash is a repeat
//! candidate is also kept whole, for the repeats to be settled without
//! reading it again.
//!
//! The candidates come from a read of the event_id column alone before it
//! ([`id_hashes`]): the hashes seen more than once, in buckets by hash.
//!
//! A task keeps one segment per bucket and kind. After each batch it
//! reserves what its segments grew by; when the pool refuses, it writes all
//! of them out and starts again with empty ones (their interners too), so a
//! task never holds more than the pool grants it.

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringViewArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;

use std::sync::Arc;

use super::dedup::{full_row, FullRow};
use super::intern::{bucket_of, hash_of, IdHasher, PREFETCH_AHEAD};
use super::segments::{Actions, ConvRows, IdHashes, Segment};
use super::store::{Budget, Store};
use super::tap::{self, TapTask};
use super::HashSet;
use crate::error::Result;
use crate::rules::{self, kind};

/// The event columns the scan reads, in this order (`article_id` only for
/// the rows kept whole).
pub const SCAN_COLUMNS: [&str; 9] = [
    "event_id",
    "user_id",
    "ts",
    "event_type",
    "channel",
    "conversation_id",
    "actor",
    "rating",
    "article_id",
];

/// What the build's scan fills: one store per kind of segment.
pub struct Stores {
    /// Customer actions, by user.
    pub actions: Store<Actions>,
    /// Conversation rows, by conversation.
    pub convs: Store<ConvRows>,
}

/// Counts over every row read.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScanCounts {
    /// Rows in `events`, showcase rows included.
    pub rows_read: u64,
    /// Rejected rows per reason, in [`rules::REJECT_REASONS`] order.
    pub rejected: [u64; 7],
}

impl ScanCounts {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &ScanCounts) {
        self.rows_read += other.rows_read;
        for (a, b) in self.rejected.iter_mut().zip(other.rejected) {
            *a += b;
        }
    }
}

/// The repeat candidates' hashes, with a bitmap in front of the set. Nearly
/// every row's id is no candidate; the bitmap, of 16 bits per candidate, is
/// small enough for the CPU's caches and answers for most of them, where a
/// lookup in the set would wait for memory at nearly every row.
pub struct Candidates {
    set: Arc<HashSet<u64>>,
    bits: Vec<u64>,
    /// Bit positions in `bits`, less one (a power of two less one).
    mask: u64,
}

impl Candidates {
    /// Bits of the bitmap per candidate: about one id in 16 that is no
    /// candidate finds its bit set and is looked up in the set.
    const BITS_PER_CANDIDATE: usize = 16;

    /// The bitmap in front of `set`.
    pub fn new(set: Arc<HashSet<u64>>) -> Self {
        let positions = (set.len() * Self::BITS_PER_CANDIDATE)
            .next_power_of_two()
            .max(64);
        let mask = positions as u64 - 1;
        let mut bits = vec![0u64; positions / 64];
        for &h in set.iter() {
            let at = h & mask;
            bits[(at / 64) as usize] |= 1 << (at % 64);
        }
        Self { set, bits, mask }
    }

    /// Whether no hash is a candidate.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Whether `h` is a candidate's hash.
    #[inline]
    pub fn contains(&self, h: u64) -> bool {
        let at = h & self.mask;
        self.bits[(at / 64) as usize] & (1 << (at % 64)) != 0 && self.set.contains(&h)
    }
}

/// Sizes a task's segments once, when it has read enough rows to know its
/// mix, for the rows it is expected to read: without a memory limit its
/// columns then grow in place rather than by doubling, which copied each
/// of them about once and left the old copies to the allocator
/// (docs/PERFORMANCE.md, "Memory"). Under a limit segments grow as their
/// rows come, since the pool counts what they reserve.
pub struct Sizer {
    /// Rows the task is expected to read; `None`: no sizing.
    expect: Option<usize>,
    /// Rows read so far.
    rows: usize,
}

/// The least rows a task reads before its segments are sized.
const SIZE_AFTER_ROWS: usize = 1 << 16;

impl Sizer {
    /// For a task expected to read `expect` rows (`None` or zero: none).
    pub fn new(expect: Option<usize>) -> Self {
        Self {
            expect: expect.filter(|&e| e > 0),
            rows: 0,
        }
    }

    /// Counts `rows` more read; once enough are, and only once, returns
    /// the sizing to apply to each segment.
    pub fn read(&mut self, rows: usize) -> Option<Sizing> {
        self.rows += rows;
        let expect = self.expect?;
        if self.rows < SIZE_AFTER_ROWS.max(expect / 64) {
            return None;
        }
        self.expect = None;
        Some(Sizing {
            expect: expect as u128,
            read: self.rows as u128,
        })
    }
}

/// See [`Sizer::read`].
pub struct Sizing {
    expect: u128,
    read: u128,
}

impl Sizing {
    /// Sizes `s` for its rows so far scaled to the task's expected rows,
    /// with a quarter more for a task that reads more than its share.
    pub fn size<S: Segment>(&self, s: &mut S) {
        let want = s.len() as u128 * self.expect * 5 / (4 * self.read);
        s.reserve_rows(want as usize);
    }
}

/// One task's segments.
struct Router {
    buckets: usize,
    hasher: IdHasher,
    actions: Vec<Actions>,
    convs: Vec<ConvRows>,
    /// The event_id hashes seen more than once ([`id_hashes`]).
    candidates: Arc<Candidates>,
    /// The valid rows with one of them, whole. Not counted in the pool,
    /// as the rows a second read would return were not: they are the
    /// repeats and the few rows sharing their hashes (with every hash
    /// forced to collide, in tests, every row).
    copies: Vec<FullRow>,
    /// This batch's actions and conversation rows, found by the first pass
    /// and interned by the second.
    users_todo: Vec<(u32, u64, u8)>,
    convs_todo: Vec<(u32, u64, u8, u64)>,
    /// For a fold's tap: each row's kind ([`tap::SKIP`] when not routed),
    /// whether its id hash is a repeat candidate, and its conversation's
    /// key, this batch.
    marks: Option<tap::Marks>,
    /// Counts the times the segments were handed over (and their
    /// interners, whose keys the marks give, started again).
    generation: u64,
    /// Bytes of the segments reserved in the budget.
    held: usize,
    counts: ScanCounts,
}

/// A string column as Utf8View: what the operators' own scan reads (see
/// [`crate::tables::native::node::NativeView`]); another string type is
/// viewed without copying its bytes.
pub(super) fn strings(a: &ArrayRef) -> Result<StringViewArray> {
    Ok(match a.data_type() {
        DataType::Utf8View => a.as_string_view().clone(),
        _ => cast(a, &DataType::Utf8View)?.as_string_view().clone(),
    })
}

/// A column as Int64 (timestamps as their ticks).
pub(super) fn int64(a: &ArrayRef) -> Result<Int64Array> {
    Ok(cast(a, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

/// The columns of an events batch that a row's validity reads, typed once
/// per batch, found by name.
pub(super) struct EventColumns {
    pub id: StringViewArray,
    pub user: StringViewArray,
    pub ts: Int64Array,
    pub ty: StringViewArray,
    pub channel: StringViewArray,
    pub conv: StringViewArray,
    pub actor: StringViewArray,
    pub rating: Int64Array,
}

impl EventColumns {
    pub fn of(b: &RecordBatch) -> Result<Self> {
        let col = |name: &str| -> Result<&ArrayRef> { Ok(b.column(b.schema().index_of(name)?)) };
        Ok(Self {
            id: strings(col("event_id")?)?,
            user: strings(col("user_id")?)?,
            ts: int64(col("ts")?)?,
            ty: strings(col("event_type")?)?,
            channel: strings(col("channel")?)?,
            conv: strings(col("conversation_id")?)?,
            actor: strings(col("actor")?)?,
            rating: int64(col("rating")?)?,
        })
    }

    /// Row `i`'s kind, or its reject reason (spec §1); `None` for a
    /// content_showcase row, which is not an event.
    #[inline]
    pub fn check(&self, i: usize) -> Option<std::result::Result<u8, usize>> {
        if self.channel.is_valid(i) && self.channel.value(i) == rules::SHOWCASE_CHANNEL {
            return None;
        }
        Some(rules::classify(
            self.id.is_null(i),
            self.user.is_null(i),
            self.ts.is_null(i),
            self.ty.is_valid(i).then(|| self.ty.value(i).as_bytes()),
            self.conv.is_null(i),
            self.rating.is_valid(i).then(|| self.rating.value(i)),
        ))
    }
}

impl Router {
    fn new(buckets: usize, hasher: IdHasher, candidates: Arc<Candidates>) -> Self {
        Self {
            buckets,
            hasher,
            actions: (0..buckets).map(|_| Actions::default()).collect(),
            convs: (0..buckets).map(|_| ConvRows::default()).collect(),
            candidates,
            copies: Vec::new(),
            users_todo: Vec::new(),
            convs_todo: Vec::new(),
            marks: None,
            generation: 0,
            held: 0,
            counts: ScanCounts::default(),
        }
    }

    /// Routes a batch in two passes: the first checks every row, routes its
    /// event_id hash and notes the rows to intern with their hashes; the
    /// second interns them in order, each lookup's table slot asked for
    /// [`PREFETCH_AHEAD`] rows before it is needed (the tables of a long
    /// history do not fit in the CPU's caches).
    /// Returns the batch's typed columns.
    fn add_batch(&mut self, b: &RecordBatch) -> Result<EventColumns> {
        let cols = EventColumns::of(b)?;
        let article = match self.candidates.is_empty() {
            true => None,
            false => Some(strings(b.column(b.schema().index_of("article_id")?))?),
        };
        let n = b.num_rows();
        self.counts.rows_read += n as u64;
        let mut users_todo = std::mem::take(&mut self.users_todo);
        let mut convs_todo = std::mem::take(&mut self.convs_todo);
        users_todo.clear();
        convs_todo.clear();
        let mut marks = self.marks.take();
        if let Some(m) = &mut marks {
            m.clear(n);
        }
        for i in 0..n {
            let k = match cols.check(i) {
                None => continue,
                Some(Ok(k)) => k,
                Some(Err(reason)) => {
                    self.counts.rejected[reason] += 1;
                    continue;
                }
            };
            let candidate = match &article {
                Some(article) => {
                    let repeat = self
                        .candidates
                        .contains(self.hasher.hash(cols.id.value(i).as_bytes()));
                    if repeat {
                        self.copies.push(full_row(&cols, article, i));
                    }
                    repeat
                }
                None => false,
            };
            if let Some(m) = &mut marks {
                m.kinds[i] = k;
                m.candidate[i] = candidate;
            }
            if rules::is_action(k) {
                users_todo.push((i as u32, hash_of(cols.user.value(i).as_bytes()), k));
            }
            if rules::needs_conversation(k) {
                // a start's user goes to the bucket's `others`, as big a
                // table as the users'
                let uh = if k == kind::STARTED {
                    hash_of(cols.user.value(i).as_bytes())
                } else {
                    0
                };
                convs_todo.push((i as u32, hash_of(cols.conv.value(i).as_bytes()), k, uh));
            }
        }
        self.add_actions(&cols, &users_todo);
        self.add_conv_rows(&cols, &convs_todo, marks.as_mut());
        self.users_todo = users_todo;
        self.convs_todo = convs_todo;
        self.marks = marks;
        Ok(cols)
    }

    fn add_actions(&mut self, cols: &EventColumns, todo: &[(u32, u64, u8)]) {
        let nb = self.buckets;
        for (j, &(i, uh, kind)) in todo.iter().enumerate() {
            if let Some(&(_, ahead, _)) = todo.get(j + PREFETCH_AHEAD) {
                self.actions[bucket_of(ahead, nb)].users.prefetch(ahead);
            }
            let i = i as usize;
            let seg = &mut self.actions[bucket_of(uh, nb)];
            seg.push(cols.user.value(i).as_bytes(), uh, cols.ts.value(i), kind);
        }
    }

    fn add_conv_rows(
        &mut self,
        cols: &EventColumns,
        todo: &[(u32, u64, u8, u64)],
        mut marks: Option<&mut tap::Marks>,
    ) {
        let nb = self.buckets;
        let EventColumns {
            user,
            ts,
            conv,
            actor,
            rating,
            ..
        } = cols;
        for (j, &(i, ch, k, uh)) in todo.iter().enumerate() {
            if let Some(&(_, ahead, ak, auh)) = todo.get(j + PREFETCH_AHEAD) {
                let seg = &self.convs[bucket_of(ahead, nb)];
                seg.convs.prefetch(ahead);
                if ak == kind::STARTED {
                    seg.others.prefetch(auh);
                }
            }
            let i = i as usize;
            let bucket = bucket_of(ch, nb);
            let seg = &mut self.convs[bucket];
            let extra = match k {
                kind::STARTED => seg.others.intern_hashed(user.value(i).as_bytes(), uh),
                kind::CLOSED if actor.is_valid(i) => {
                    seg.others.intern(actor.value(i).as_bytes()) + 1
                }
                kind::RATED if rating.is_valid(i) => rating.value(i) as u32,
                _ => 0,
            };
            let key = seg.push(conv.value(i).as_bytes(), ch, ts.value(i), k, extra);
            if let Some(m) = marks.as_deref_mut() {
                m.conv[i] = (bucket as u32, key);
            }
        }
    }

    fn bytes(&self) -> usize {
        self.actions.iter().map(Segment::bytes).sum::<usize>()
            + self.convs.iter().map(Segment::bytes).sum::<usize>()
    }

    /// Reserves what the segments grew by, or writes them all out.
    fn settle(&mut self, budget: &Budget, stores: &Stores) -> Result<()> {
        let now = self.bytes();
        if now <= self.held {
            return Ok(());
        }
        if budget.try_grow(now - self.held) {
            self.held = now;
            return Ok(());
        }
        self.hand_over(budget, stores, true)
    }

    /// Moves every segment into the stores: written out (`spill`) or
    /// kept in memory where the budget grants it.
    fn hand_over(&mut self, budget: &Budget, stores: &Stores, spill: bool) -> Result<()> {
        let nb = self.buckets;
        let actions = std::mem::take(&mut self.actions);
        let convs = std::mem::take(&mut self.convs);
        self.generation += 1;
        budget.shrink(self.held);
        self.held = 0;
        for (b, s) in actions.into_iter().enumerate() {
            stores.actions.add(b, s, budget, spill)?;
        }
        for (b, s) in convs.into_iter().enumerate() {
            stores.convs.add(b, s, budget, spill)?;
        }
        self.actions = (0..nb).map(|_| Actions::default()).collect();
        self.convs = (0..nb).map(|_| ConvRows::default()).collect();
        Ok(())
    }
}

/// Scans one input partition into `stores`, each batch also routed by
/// `tap` when a full run's fold taps the scan; returns its counts and its
/// valid rows whose event_id hash is in `candidates`, whole.
#[allow(clippy::too_many_arguments)]
pub(super) async fn scan_partition(
    mut stream: SendableRecordBatchStream,
    buckets: usize,
    hasher: IdHasher,
    candidates: Arc<Candidates>,
    budget: &Budget,
    stores: &Stores,
    rows_seen: &std::sync::atomic::AtomicUsize,
    mut tap: Option<TapTask>,
    mut sizer: Sizer,
) -> Result<(ScanCounts, Vec<FullRow>)> {
    let mut router = Router::new(buckets, hasher, candidates);
    if tap.is_some() {
        router.marks = Some(tap::Marks::default());
    }
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let cols = router.add_batch(&batch)?;
        if let (Some(t), Some(marks)) = (&mut tap, &router.marks) {
            if !t.route(&batch, &cols, marks, router.generation).await {
                // the tap failed: the fold reads the history itself
                tap = None;
                router.marks = None;
            }
        }
        if let Some(sizing) = sizer.read(batch.num_rows()) {
            router.actions.iter_mut().for_each(|s| sizing.size(s));
            router.convs.iter_mut().for_each(|s| sizing.size(s));
        }
        router.settle(budget, stores)?;
        rows_seen.fetch_add(batch.num_rows(), std::sync::atomic::Ordering::Relaxed);
    }
    router.hand_over(budget, stores, false)?;
    if let Some(t) = tap {
        t.finish().await;
    }
    Ok((router.counts, router.copies))
}

/// Routes the event_id hashes of one partition of a read of `event_id`
/// alone to `store`'s `buckets` buckets by hash. Every non-null id counts,
/// of a valid row or not: the hashes seen more than once are then a
/// superset of those of the repeated valid ids, which is all the scan
/// needs (a candidate with one valid row settles nothing). Segments are
/// reserved in the pool as they grow and written out when it refuses.
pub async fn id_hashes(
    mut stream: SendableRecordBatchStream,
    buckets: usize,
    hasher: IdHasher,
    budget: &Budget,
    store: &Store<IdHashes>,
    mut sizer: Sizer,
    tasks: usize,
) -> Result<()> {
    // Under a limit each of the `tasks` keeps to its share of the budget.
    // Writing out only when the shared pool refused let one task hold
    // nearly all of it while the other, refused again and again, wrote
    // ever smaller segments, a file each: thousands of open spill files
    // in seconds, and at 200M now and then more than the process may
    // open.
    let share = budget.limit.map(|l| l / tasks.max(1));
    let fresh = || {
        (0..buckets)
            .map(|_| IdHashes::default())
            .collect::<Vec<_>>()
    };
    let mut segments = fresh();
    let mut held = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let ids = strings(batch.column(0))?;
        for i in 0..ids.len() {
            if ids.is_valid(i) {
                let h = hasher.hash(ids.value(i).as_bytes());
                segments[bucket_of(h, buckets)].hash.push(h);
            }
        }
        if let Some(sizing) = sizer.read(batch.num_rows()) {
            segments.iter_mut().for_each(|s| sizing.size(s));
        }
        let now: usize = segments.iter().map(Segment::bytes).sum();
        if now <= held {
            continue;
        }
        if share.is_none_or(|s| now <= s) && budget.try_grow(now - held) {
            held = now;
            continue;
        }
        budget.shrink(held);
        held = 0;
        for (b, s) in std::mem::replace(&mut segments, fresh())
            .into_iter()
            .enumerate()
        {
            store.add(b, s, budget, true)?;
        }
    }
    budget.shrink(held);
    for (b, s) in segments.into_iter().enumerate() {
        store.add(b, s, budget, false)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(rows: usize, users: usize) -> Actions {
        let mut a = Actions::default();
        for i in 0..rows {
            let u = format!("u{}", i % users);
            a.push(u.as_bytes(), hash_of(u.as_bytes()), i as i64, kind::VIEW);
        }
        a
    }

    #[test]
    fn a_task_sizes_its_segments_once_for_its_expected_rows() {
        // expected 1M rows: sized after 64K read, each segment for its rows
        // scaled to 1M plus a quarter
        let mut sizer = Sizer::new(Some(1 << 20));
        assert!(sizer.read(40_000).is_none());
        let mut a = actions(10_000, 100);
        let sizing = sizer.read(30_000).expect("70K rows read: sized");
        sizing.size(&mut a);
        let want = 10_000 * (1 << 20) * 5 / (4 * 70_000);
        assert!(
            a.user.capacity() >= want && a.ts.capacity() >= want,
            "{}",
            a.ts.capacity()
        );
        assert!(a.user.capacity() < want * 2);
        // strings in proportion: 100 of 10K rows
        assert!(a.users.bytes() > 0);
        assert!(sizer.read(1 << 20).is_none(), "only once");
        // rows held are untouched, and rows still come
        let b = actions(10_000, 100);
        assert_eq!(
            (a.user.as_slice(), a.ts.as_slice()),
            (b.user.as_slice(), b.ts.as_slice())
        );
        a.push(b"u1", hash_of(b"u1"), 7, kind::VIEW);
        assert_eq!(a.users.lookup(b"u1"), Some(a.user[a.len() - 1]));
    }

    #[test]
    fn no_expectation_no_sizing() {
        let mut sizer = Sizer::new(None);
        assert!(sizer.read(1 << 30).is_none());
        let mut sizer = Sizer::new(Some(0));
        assert!(sizer.read(1 << 30).is_none());
    }
}
