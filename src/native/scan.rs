//! The one pass over `events`: each input partition's task validates its
//! rows once (spec §1, in the order of [`rules::REJECT_REASONS`]), counts
//! the rejects, and routes every valid row, in slim form, to its buckets:
//! customer actions by user, conversation rows (starts and lifecycle
//! events) by conversation, event_id hashes by hash.
//!
//! A task keeps one segment per bucket and kind. After each batch it
//! reserves what its segments grew by; when the pool refuses, it writes all
//! of them out and starts again with empty ones (their interners too), so a
//! task never holds more than the pool grants it.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;

use super::intern::{bucket_of, hash_of, IdHasher, Recent};
use super::rules::{self, kind};
use super::segments::{Actions, ConvRows, IdHashes, Segment};
use super::store::{Budget, Store};
use crate::error::Result;

/// The event columns the scan reads, in this order.
pub const SCAN_COLUMNS: [&str; 8] = [
    "event_id",
    "user_id",
    "ts",
    "event_type",
    "channel",
    "conversation_id",
    "actor",
    "rating",
];

/// What the build's scan fills: one store per kind of segment.
pub struct Stores {
    /// Customer actions, by user.
    pub actions: Store<Actions>,
    /// Conversation rows, by conversation.
    pub convs: Store<ConvRows>,
    /// Event_id hashes, by hash.
    pub ids: Store<IdHashes>,
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

/// One task's segments.
struct Router {
    buckets: usize,
    hasher: IdHasher,
    actions: Vec<Actions>,
    convs: Vec<ConvRows>,
    ids: Vec<IdHashes>,
    /// Recent users and conversations, in front of the segments' interners.
    recent_users: Recent,
    recent_convs: Recent,
    /// Bytes of the segments reserved in the budget.
    held: usize,
    counts: ScanCounts,
}

/// A column as Utf8 (the contract allows the other string types).
pub(super) fn utf8(a: &ArrayRef) -> Result<StringArray> {
    Ok(match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().clone(),
        _ => cast(a, &DataType::Utf8)?.as_string::<i32>().clone(),
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
    pub id: StringArray,
    pub user: StringArray,
    pub ts: Int64Array,
    pub ty: StringArray,
    pub channel: StringArray,
    pub conv: StringArray,
    pub actor: StringArray,
    pub rating: Int64Array,
}

impl EventColumns {
    pub fn of(b: &RecordBatch) -> Result<Self> {
        let col = |name: &str| -> Result<&ArrayRef> { Ok(b.column(b.schema().index_of(name)?)) };
        Ok(Self {
            id: utf8(col("event_id")?)?,
            user: utf8(col("user_id")?)?,
            ts: int64(col("ts")?)?,
            ty: utf8(col("event_type")?)?,
            channel: utf8(col("channel")?)?,
            conv: utf8(col("conversation_id")?)?,
            actor: utf8(col("actor")?)?,
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
    fn new(buckets: usize, hasher: IdHasher) -> Self {
        Self {
            buckets,
            hasher,
            actions: (0..buckets).map(|_| Actions::default()).collect(),
            convs: (0..buckets).map(|_| ConvRows::default()).collect(),
            ids: (0..buckets).map(|_| IdHashes::default()).collect(),
            recent_users: Recent::default(),
            recent_convs: Recent::default(),
            held: 0,
            counts: ScanCounts::default(),
        }
    }

    fn add_batch(&mut self, b: &RecordBatch) -> Result<()> {
        let cols = EventColumns::of(b)?;
        let EventColumns {
            id,
            user,
            ts,
            conv,
            actor,
            rating,
            ..
        } = &cols;
        let n = b.num_rows();
        self.counts.rows_read += n as u64;
        let nb = self.buckets;
        for i in 0..n {
            let k = match cols.check(i) {
                None => continue,
                Some(Ok(k)) => k,
                Some(Err(reason)) => {
                    self.counts.rejected[reason] += 1;
                    continue;
                }
            };
            let t = ts.value(i);
            let h = self.hasher.hash(id.value(i).as_bytes());
            self.ids[bucket_of(h, nb)].hash.push(h);
            if rules::is_action(k) {
                let u = user.value(i).as_bytes();
                let uh = hash_of(u);
                let seg = &mut self.actions[bucket_of(uh, nb)];
                let key = self.recent_users.intern(&mut seg.users, u, uh);
                seg.push_key(key, t, k);
            }
            if rules::needs_conversation(k) {
                let c = conv.value(i).as_bytes();
                let ch = hash_of(c);
                let seg = &mut self.convs[bucket_of(ch, nb)];
                let extra = match k {
                    kind::STARTED => seg.others.intern(user.value(i).as_bytes()),
                    kind::CLOSED if actor.is_valid(i) => {
                        seg.others.intern(actor.value(i).as_bytes()) + 1
                    }
                    kind::RATED if rating.is_valid(i) => rating.value(i) as u32,
                    _ => 0,
                };
                let key = self.recent_convs.intern(&mut seg.convs, c, ch);
                seg.push_key(key, t, k, extra);
            }
        }
        Ok(())
    }

    fn bytes(&self) -> usize {
        self.actions.iter().map(Segment::bytes).sum::<usize>()
            + self.convs.iter().map(Segment::bytes).sum::<usize>()
            + self.ids.iter().map(Segment::bytes).sum::<usize>()
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
        let ids = std::mem::take(&mut self.ids);
        budget.shrink(self.held);
        self.held = 0;
        for (b, s) in actions.into_iter().enumerate() {
            stores.actions.add(b, s, budget, spill)?;
        }
        for (b, s) in convs.into_iter().enumerate() {
            stores.convs.add(b, s, budget, spill)?;
        }
        for (b, s) in ids.into_iter().enumerate() {
            stores.ids.add(b, s, budget, spill)?;
        }
        self.actions = (0..nb).map(|_| Actions::default()).collect();
        self.convs = (0..nb).map(|_| ConvRows::default()).collect();
        self.ids = (0..nb).map(|_| IdHashes::default()).collect();
        self.recent_users.clear();
        self.recent_convs.clear();
        Ok(())
    }
}

/// Scans one input partition into `stores`; returns its counts.
pub async fn scan_partition(
    mut stream: SendableRecordBatchStream,
    buckets: usize,
    hasher: IdHasher,
    budget: &Budget,
    stores: &Stores,
    rows_seen: &std::sync::atomic::AtomicUsize,
) -> Result<ScanCounts> {
    let mut router = Router::new(buckets, hasher);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        router.add_batch(&batch)?;
        router.settle(budget, stores)?;
        rows_seen.fetch_add(batch.num_rows(), std::sync::atomic::Ordering::Relaxed);
    }
    router.hand_over(budget, stores, false)?;
    Ok(router.counts)
}
