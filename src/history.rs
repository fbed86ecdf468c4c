//! The report's native path over the event history: one vectorized scan of
//! `events` that validates each row once and keeps it in a slim typed form,
//! then deduplication, conversation facts and sessionization on dense integer
//! keys, producing the same rows as the SQL views `sessions` and
//! `conversations` (spec §1, §2, §6).
//!
//! The SQL views in `queries/views/` stay the definitions: this module is a
//! faster way to compute them for the report, and the differential tests
//! (`tests/integration/history.rs`) hold it equal to them on generated data
//! with every corner of the spec.
//!
//! How it stays exact without keeping strings:
//! * `user_id` and `conversation_id` are interned ([`Interner`]): each
//!   distinct string gets a dense `u32`, compared as bytes in the hash table,
//!   so two ids share a key only when they are equal. Dense keys let
//!   sessionization group actions per user with a counting sort and keep
//!   per-conversation state in plain arrays.
//! * `event_id` is only hashed (64 bits, [`IdHasher`]). A hash seen once
//!   among valid rows proves its row unique; the hashes seen more than once
//!   are *candidates*, whose rows are read again with every column (a second
//!   scan that filters inside the Parquet decoder on the id alone) and
//!   deduplicated by the string itself with the views' rule (smallest `ts`,
//!   then the other columns). A hash collision therefore only costs a
//!   candidate; it can never merge two events.
//! * Ties the slim form cannot settle — two `conversation_started` rows of one
//!   conversation at the same `ts` from different users, two latest closes at
//!   the same `ts` that disagree on `actor = 'bot'`, two latest ratings at the
//!   same `ts` with different ratings — are broken by `event_id` bytes: the
//!   rows of such conversations are read again with their ids and settled
//!   exactly. Ties whose outcome is the same either way need nothing.
//!
//! Memory is the slim rows (about 25 bytes per valid event during the scan,
//! 17 after it) plus one entry per distinct user and conversation; nothing
//! spills, so the report takes this path only when the estimate fits (see
//! `report`), and the spilling SQL path otherwise.

/// Hash maps and sets with a fast fixed hasher (keys here are ids and
/// integers we produce, not attacker-chosen in a way that matters).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::FixedState>;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray,
    StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{
    col, lit, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use hashbrown::HashTable;

use crate::error::{Error, Result};

/// Event kinds as small integers, in the order of the spec's table. The
/// first four are customer actions, the rest lifecycle events.
mod kind {
    pub const VISIT: u8 = 0;
    pub const SEARCH: u8 = 1;
    pub const VIEW: u8 = 2;
    pub const STARTED: u8 = 3;
    pub const BOT_ANSWER: u8 = 4;
    pub const REPLY: u8 = 5;
    pub const CLOSED: u8 = 6;
    pub const RATED: u8 = 7;
    /// A row removed as a repeat of its event_id.
    pub const DELETED: u8 = u8::MAX;
}

/// Reject reasons, in the spec's order (§4 `data_quality`).
pub const REJECT_REASONS: [&str; 7] = [
    "null_event_id",
    "null_user_id",
    "null_ts",
    "null_event_type",
    "unknown_event_type",
    "missing_conversation_id",
    "invalid_rating",
];

/// `actor` of a `conversation_closed` row, as far as the report cares.
const ACTOR_NULL: u8 = 0;
const ACTOR_OTHER: u8 = 1;
const ACTOR_BOT: u8 = 2;

const NONE: u32 = u32::MAX;

fn kind_of(s: &[u8]) -> Option<u8> {
    Some(match s {
        b"help_center_visit" => kind::VISIT,
        b"article_search" => kind::SEARCH,
        b"article_view" => kind::VIEW,
        b"conversation_started" => kind::STARTED,
        b"bot_answer" => kind::BOT_ANSWER,
        b"teammate_reply" => kind::REPLY,
        b"conversation_closed" => kind::CLOSED,
        b"conversation_rated" => kind::RATED,
        _ => return None,
    })
}

/// The 64-bit hash of event ids. Fixed seed: the same id hashes the same in
/// every scan of one run. `mask` keeps fewer bits in tests, to force
/// collisions through the candidate path.
#[derive(Debug, Clone, Copy)]
pub struct IdHasher {
    mask: u64,
}

impl IdHasher {
    fn new(bits: u32) -> Self {
        let mask = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        Self { mask }
    }

    fn hash(&self, s: &[u8]) -> u64 {
        let mut h = foldhash::fast::FixedState::with_seed(0x5f0c_a11e_d1d5_eed5).build_hasher();
        h.write(s);
        h.finish() & self.mask
    }
}

/// Distinct strings with dense `u32` ids, stored end to end in one buffer.
///
/// Strings of up to 15 bytes (ids usually are) are looked up by value: the
/// bytes and the length packed in 16 bytes live in the hash table itself, so
/// a lookup is one probe and one integer compare, with no trip to the
/// buffer. Longer strings are compared in the buffer.
struct Interner {
    /// A small direct-mapped cache of recent short strings in front of the
    /// table: the events of one conversation or one session come close
    /// together in time, and this keeps their lookups in the core's cache.
    recent: Vec<([u8; 16], u32)>,
    short: HashTable<([u8; 16], u32)>,
    long: HashTable<u32>,
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

fn str_hash(s: &[u8]) -> u64 {
    let mut h = foldhash::fast::FixedState::with_seed(0x0dd_ba11).build_hasher();
    h.write(s);
    h.finish()
}

/// `s` packed with its length into 16 bytes, when it has at most 15. (Bytes,
/// not a `u128`: a table entry of 20 bytes instead of 32.)
#[inline]
fn pack(s: &[u8]) -> Option<[u8; 16]> {
    if s.len() > 15 {
        return None;
    }
    let mut b = [0u8; 16];
    b[..s.len()].copy_from_slice(s);
    b[15] = s.len() as u8;
    Some(b)
}

#[inline]
fn packed_hash(k: [u8; 16]) -> u64 {
    foldhash::fast::FixedState::with_seed(0x0dd_ba11).hash_one(u128::from_le_bytes(k))
}

/// Slots of [`Interner::recent`] (a power of two).
const RECENT: usize = 1 << 14;
/// A key no string packs to (its length byte is above 15).
const NO_KEY: [u8; 16] = [0xFF; 16];

impl Default for Interner {
    fn default() -> Self {
        Self {
            recent: vec![(NO_KEY, 0); RECENT],
            short: HashTable::new(),
            long: HashTable::new(),
            bytes: Vec::new(),
            ends: Vec::new(),
        }
    }
}

impl Interner {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, id: u32) -> &[u8] {
        Self::slice(&self.bytes, &self.ends, id)
    }

    fn str(&self, id: u32) -> &str {
        let bytes = self.get(id);
        // SAFETY: every interned string was copied whole from a Utf8 Arrow
        // array (`Chunk::add_batch`, `History::compute`), which holds
        // valid UTF-8, and the arena only ever appends whole strings.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    fn slice<'a>(bytes: &'a [u8], ends: &[usize], id: u32) -> &'a [u8] {
        let id = id as usize;
        let start = if id == 0 { 0 } else { ends[id - 1] };
        &bytes[start..ends[id]]
    }

    fn push(bytes: &mut Vec<u8>, ends: &mut Vec<usize>, s: &[u8]) -> u32 {
        let id = ends.len() as u32;
        bytes.extend_from_slice(s);
        ends.push(bytes.len());
        id
    }

    #[inline]
    fn intern(&mut self, s: &[u8]) -> u32 {
        let Interner {
            recent,
            short,
            long,
            bytes,
            ends,
        } = self;
        if let Some(k) = pack(s) {
            let h = packed_hash(k);
            let slot = &mut recent[(h >> 40) as usize & (RECENT - 1)];
            if slot.0 == k {
                return slot.1;
            }
            let entry = short.entry(h, |e| e.0 == k, |e| packed_hash(e.0));
            let id = match entry {
                hashbrown::hash_table::Entry::Occupied(e) => e.get().1,
                hashbrown::hash_table::Entry::Vacant(v) => {
                    let id = Self::push(bytes, ends, s);
                    v.insert((k, id));
                    id
                }
            };
            *slot = (k, id);
            return id;
        }
        let entry = long.entry(
            str_hash(s),
            |&id| Self::slice(bytes, ends, id) == s,
            |&id| str_hash(Self::slice(bytes, ends, id)),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(e) => *e.get(),
            hashbrown::hash_table::Entry::Vacant(v) => {
                let id = Self::push(bytes, ends, s);
                v.insert(id);
                id
            }
        }
    }

    fn lookup(&self, s: &[u8]) -> Option<u32> {
        match pack(s) {
            Some(k) => self.short.find(packed_hash(k), |e| e.0 == k).map(|e| e.1),
            None => self
                .long
                .find(str_hash(s), |&id| self.get(id) == s)
                .copied(),
        }
    }
}

/// The key space of all partitions: each partition's interner, its ids
/// offset by the sizes of those before it. A string a partition shares with
/// an earlier one keeps the earlier id (its later copy is never used, and
/// leaves an unused id: per-key arrays have a default entry there), so no
/// interner is rebuilt or grown to merge them.
#[derive(Default)]
struct Keys {
    parts: Vec<(u32, Interner)>,
}

impl Keys {
    /// One past the largest id.
    fn len(&self) -> usize {
        self.parts
            .last()
            .map_or(0, |(base, i)| *base as usize + i.len())
    }

    fn part(&self, id: u32) -> (&Interner, u32) {
        let at = self.parts.partition_point(|(base, _)| *base <= id) - 1;
        let (base, interner) = &self.parts[at];
        (interner, id - base)
    }

    fn get(&self, id: u32) -> &[u8] {
        let (interner, local) = self.part(id);
        interner.get(local)
    }

    fn str(&self, id: u32) -> &str {
        let (interner, local) = self.part(id);
        interner.str(local)
    }

    /// The id of `s`: its first partition's.
    fn lookup(&self, s: &[u8]) -> Option<u32> {
        self.parts
            .iter()
            .find_map(|(base, i)| i.lookup(s).map(|local| base + local))
    }

    /// Adds a partition's interner; returns the map from its ids to ids
    /// here.
    fn add(&mut self, interner: Interner) -> Vec<u32> {
        let base = self.len() as u32;
        let map = (0..interner.len() as u32)
            .map(|local| self.lookup(interner.get(local)).unwrap_or(base + local))
            .collect();
        self.parts.push((base, interner));
        map
    }
}

/// Customer actions in slim form.
#[derive(Default)]
struct Actions {
    /// The event_id's hash ([`IdHasher`]).
    id: Vec<u64>,
    user: Vec<u32>,
    ts: Vec<i64>,
    kind: Vec<u8>,
    /// The conversation of a `conversation_started`, else [`NONE`].
    conv: Vec<u32>,
}

impl Actions {
    fn slim(&self, i: usize) -> Slim {
        Slim::Action {
            user: self.user[i],
            ts: self.ts[i],
            kind: self.kind[i],
            conv: self.conv[i],
        }
    }
}

/// Lifecycle events in slim form.
#[derive(Default)]
struct Lifecycle {
    /// The event_id's hash ([`IdHasher`]).
    id: Vec<u64>,
    conv: Vec<u32>,
    ts: Vec<i64>,
    kind: Vec<u8>,
    /// Actor class for closes, rating (0 = NULL) for ratings.
    extra: Vec<u8>,
}

impl Lifecycle {
    fn slim(&self, i: usize) -> Slim {
        Slim::Lifecycle {
            conv: self.conv[i],
            ts: self.ts[i],
            kind: self.kind[i],
            extra: self.extra[i],
        }
    }
}

/// What one scan partition collected.
#[derive(Default)]
struct Chunk {
    rows_read: u64,
    rejected: [u64; 7],
    /// The latest valid `ts` not after the cutoff (see `HistoryOptions`).
    max_valid_ts: Option<i64>,
    /// Valid events after the cutoff.
    future_valid: u64,
    users: Interner,
    convs: Interner,
    actions: Actions,
    lifecycle: Lifecycle,
}

/// The event columns the scan reads, in this order.
const SCAN_COLUMNS: [&str; 8] = [
    "event_id",
    "user_id",
    "ts",
    "event_type",
    "channel",
    "conversation_id",
    "actor",
    "rating",
];

fn utf8(a: &ArrayRef) -> Result<StringArray> {
    Ok(match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().clone(),
        _ => cast(a, &DataType::Utf8)?.as_string::<i32>().clone(),
    })
}

fn int64(a: &ArrayRef) -> Result<Int64Array> {
    Ok(cast(a, &DataType::Int64)?
        .as_primitive::<Int64Type>()
        .clone())
}

/// A row's reject reason (index into [`REJECT_REASONS`]) or its kind.
#[inline]
fn classify(
    id_null: bool,
    user_null: bool,
    ts_null: bool,
    ty: Option<&str>,
    conv_null: bool,
    rating: Option<i64>,
) -> std::result::Result<u8, usize> {
    if id_null {
        return Err(0);
    }
    if user_null {
        return Err(1);
    }
    if ts_null {
        return Err(2);
    }
    let Some(ty) = ty else { return Err(3) };
    let Some(k) = kind_of(ty.as_bytes()) else {
        return Err(4);
    };
    if k >= kind::STARTED && conv_null {
        return Err(5);
    }
    if matches!(rating, Some(r) if !(1..=5).contains(&r)) {
        return Err(6);
    }
    Ok(k)
}

impl Chunk {
    fn add_batch(&mut self, b: &RecordBatch, hasher: IdHasher, cutoff: i64) -> Result<()> {
        let id = utf8(b.column(0))?;
        let user = utf8(b.column(1))?;
        let ts = int64(b.column(2))?;
        let ty = utf8(b.column(3))?;
        let channel = utf8(b.column(4))?;
        let conv = utf8(b.column(5))?;
        let actor = utf8(b.column(6))?;
        let rating = int64(b.column(7))?;
        let n = b.num_rows();
        self.rows_read += n as u64;
        for i in 0..n {
            if channel.is_valid(i) && channel.value(i) == "content_showcase" {
                continue;
            }
            let k = match classify(
                id.is_null(i),
                user.is_null(i),
                ts.is_null(i),
                ty.is_valid(i).then(|| ty.value(i)),
                conv.is_null(i),
                rating.is_valid(i).then(|| rating.value(i)),
            ) {
                Ok(k) => k,
                Err(reason) => {
                    self.rejected[reason] += 1;
                    continue;
                }
            };
            let t = ts.value(i);
            if t <= cutoff {
                self.max_valid_ts = Some(self.max_valid_ts.map_or(t, |m| m.max(t)));
            } else {
                self.future_valid += 1;
            }
            let h = hasher.hash(id.value(i).as_bytes());
            if k <= kind::STARTED {
                let a = &mut self.actions;
                a.id.push(h);
                a.user.push(self.users.intern(user.value(i).as_bytes()));
                a.ts.push(t);
                a.kind.push(k);
                a.conv.push(if k == kind::STARTED {
                    self.convs.intern(conv.value(i).as_bytes())
                } else {
                    NONE
                });
            } else {
                let l = &mut self.lifecycle;
                l.id.push(h);
                l.conv.push(self.convs.intern(conv.value(i).as_bytes()));
                l.ts.push(t);
                l.kind.push(k);
                l.extra.push(match k {
                    kind::CLOSED => actor_class(actor.is_valid(i).then(|| actor.value(i))),
                    kind::RATED if rating.is_valid(i) => rating.value(i) as u8,
                    _ => 0,
                });
            }
        }
        Ok(())
    }
}

fn actor_class(actor: Option<&str>) -> u8 {
    match actor {
        None => ACTOR_NULL,
        Some("bot") => ACTOR_BOT,
        Some(_) => ACTOR_OTHER,
    }
}

async fn scan_partition(
    mut stream: SendableRecordBatchStream,
    hasher: IdHasher,
    cutoff: i64,
    seen: Option<Arc<AtomicUsize>>,
) -> Result<Chunk> {
    let mut chunk = Chunk::default();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        chunk.add_batch(&batch, hasher, cutoff)?;
        if let Some(seen) = &seen {
            seen.fetch_add(batch.num_rows(), Ordering::Relaxed);
        }
    }
    Ok(chunk)
}

/// The hashes that occur more than once in `lists`.
///
/// The hashes are split into buckets by their low bits; each bucket is
/// copied out, sorted and scanned on its own, the buckets shared among the
/// cores. This needs only one bucket's copy of memory per core, not a copy of
/// every hash.
fn repeated(lists: &[&[u64]]) -> HashSet<u64> {
    const BUCKETS: u64 = 8;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(BUCKETS as usize) as u64;
    let total: usize = lists.iter().map(|l| l.len()).sum();
    let found: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut out = Vec::new();
                    let mut bucket: Vec<u64> = Vec::with_capacity(total / BUCKETS as usize * 9 / 8);
                    for b in (t..BUCKETS).step_by(threads as usize) {
                        bucket.clear();
                        for l in lists {
                            bucket.extend(l.iter().copied().filter(|h| h % BUCKETS == b));
                        }
                        bucket.sort_unstable();
                        for w in bucket.windows(2) {
                            if w[0] == w[1] && out.last() != Some(&w[0]) {
                                out.push(w[0]);
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    found.into_iter().flatten().collect()
}

/// One events row with every column, for the few rows read a second time.
#[derive(Debug, Clone, PartialEq)]
struct FullRow {
    event_id: String,
    user_id: String,
    ts: i64,
    event_type: String,
    channel: Option<String>,
    article_id: Option<String>,
    conversation_id: Option<String>,
    actor: Option<String>,
    rating: Option<i64>,
}

/// `a < b` in the order `duplicate_winners` ranks copies: ts, user_id,
/// event_type, channel, article_id, conversation_id, actor, rating, each
/// ascending with NULLs last (DataFusion's default).
fn copy_order(a: &FullRow, b: &FullRow) -> std::cmp::Ordering {
    fn nl<T: Ord>(a: &Option<T>, b: &Option<T>) -> std::cmp::Ordering {
        match (a, b) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        }
    }
    a.ts.cmp(&b.ts)
        .then_with(|| a.user_id.as_bytes().cmp(b.user_id.as_bytes()))
        .then_with(|| a.event_type.cmp(&b.event_type))
        .then_with(|| nl(&a.channel, &b.channel))
        .then_with(|| nl(&a.article_id, &b.article_id))
        .then_with(|| nl(&a.conversation_id, &b.conversation_id))
        .then_with(|| nl(&a.actor, &b.actor))
        .then_with(|| nl(&a.rating, &b.rating))
}

/// A filter function that keeps rows whose event_id hash is in a set.
#[derive(Debug)]
struct HashIn {
    set: Arc<HashSet<u64>>,
    hasher: IdHasher,
    signature: Signature,
}

impl PartialEq for HashIn {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.set, &other.set)
    }
}
impl Eq for HashIn {}
impl std::hash::Hash for HashIn {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.set) as usize).hash(state)
    }
}

impl ScalarUDFImpl for HashIn {
    fn name(&self) -> &str {
        "supportfunnel_id_hash_in"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let arr = args.args[0].to_array(args.number_rows)?;
        let s = cast(&arr, &DataType::Utf8)?;
        let s = s.as_string::<i32>();
        let out: BooleanArray = (0..s.len())
            .map(|i| {
                Some(s.is_valid(i) && self.set.contains(&self.hasher.hash(s.value(i).as_bytes())))
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

const FULL_COLUMNS: [&str; 9] = [
    "event_id",
    "user_id",
    "ts",
    "event_type",
    "channel",
    "article_id",
    "conversation_id",
    "actor",
    "rating",
];

/// The valid, non-showcase rows matching `filter`, with every column.
async fn read_full_rows(
    ctx: &SessionContext,
    filter: datafusion::logical_expr::Expr,
) -> Result<Vec<FullRow>> {
    let batches = ctx
        .table("events")
        .await?
        .select_columns(&FULL_COLUMNS)?
        .filter(filter)?
        .collect()
        .await?;
    let mut rows = Vec::new();
    for b in &batches {
        let s = |i: usize| utf8(b.column(i));
        let (id, user, ty, channel, article, conv, actor) =
            (s(0)?, s(1)?, s(3)?, s(4)?, s(5)?, s(6)?, s(7)?);
        let ts = int64(b.column(2))?;
        let rating = int64(b.column(8))?;
        let opt = |a: &StringArray, i: usize| a.is_valid(i).then(|| a.value(i).to_string());
        for i in 0..b.num_rows() {
            if channel.is_valid(i) && channel.value(i) == "content_showcase" {
                continue;
            }
            let valid = classify(
                id.is_null(i),
                user.is_null(i),
                ts.is_null(i),
                ty.is_valid(i).then(|| ty.value(i)),
                conv.is_null(i),
                rating.is_valid(i).then(|| rating.value(i)),
            )
            .is_ok();
            if !valid {
                continue;
            }
            rows.push(FullRow {
                event_id: id.value(i).to_string(),
                user_id: user.value(i).to_string(),
                ts: ts.value(i),
                event_type: ty.value(i).to_string(),
                channel: opt(&channel, i),
                article_id: opt(&article, i),
                conversation_id: opt(&conv, i),
                actor: opt(&actor, i),
                rating: rating.is_valid(i).then(|| rating.value(i)),
            });
        }
    }
    Ok(rows)
}

/// How the repeats of each candidate event_id were settled, for reading
/// their rows again ([`settle_ties`]).
#[derive(Default)]
struct Dedup {
    /// Candidates settled on their slim rows: hash -> the kept copies' ts.
    kept_ts: HashMap<u64, i64>,
    /// Candidates settled on full rows: event_id -> the winning row.
    winners: HashMap<String, FullRow>,
}

/// The event_id strings of the (valid or not) rows whose id hash is in
/// `set`: per hash, one of them and whether there are several.
async fn read_id_strings(
    ctx: &SessionContext,
    set: Arc<HashSet<u64>>,
    hasher: IdHasher,
) -> Result<HashMap<u64, (String, bool)>> {
    let udf = ScalarUDF::from(HashIn {
        set,
        hasher,
        signature: Signature::any(1, Volatility::Immutable),
    });
    let batches = ctx
        .table("events")
        .await?
        .select_columns(&["event_id"])?
        .filter(udf.call(vec![col("event_id")]))?
        .collect()
        .await?;
    let mut out: HashMap<u64, (String, bool)> = HashMap::default();
    for b in &batches {
        let ids = utf8(b.column(0))?;
        for i in 0..ids.len() {
            if ids.is_null(i) {
                continue;
            }
            let v = ids.value(i);
            match out.entry(hasher.hash(v.as_bytes())) {
                std::collections::hash_map::Entry::Occupied(mut e) => {
                    if e.get().0 != v {
                        e.get_mut().1 = true;
                    }
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert((v.to_string(), false));
                }
            }
        }
    }
    Ok(out)
}

/// The slim form of a row, as a key to find its copies among the slim rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slim {
    Action {
        user: u32,
        ts: i64,
        kind: u8,
        conv: u32,
    },
    Lifecycle {
        conv: u32,
        ts: i64,
        kind: u8,
        extra: u8,
    },
}

impl Slim {
    fn ts(&self) -> i64 {
        match self {
            Slim::Action { ts, .. } | Slim::Lifecycle { ts, .. } => *ts,
        }
    }
}

/// One conversation's facts over the whole history (a row of the
/// `conversation_facts` view). One struct per conversation, 64 bytes, so
/// that reading a conversation costs one cache line, not one per field.
#[derive(Debug, Clone, Copy)]
struct Conv {
    /// The user of the first start row, [`NONE`] without a start row.
    start_user: u32,
    lifecycle: u32,
    bot_answers: u32,
    replies: u32,
    closes: u32,
    started_at: i64,
    first_bot: i64,
    first_reply: i64,
    closed_at: i64,
    rating_at: i64,
    close_actor: u8,
    /// 0 for a NULL rating.
    rating: u8,
}

impl Default for Conv {
    fn default() -> Self {
        Self {
            start_user: NONE,
            lifecycle: 0,
            bot_answers: 0,
            replies: 0,
            closes: 0,
            started_at: i64::MAX,
            first_bot: i64::MAX,
            first_reply: i64::MAX,
            closed_at: i64::MIN,
            rating_at: i64::MIN,
            close_actor: ACTOR_NULL,
            rating: 0,
        }
    }
}

impl Conv {
    fn started(&self) -> bool {
        self.start_user != NONE
    }

    fn automated(&self) -> bool {
        self.bot_answers > 0 && self.replies == 0 && self.close_actor == ACTOR_BOT
    }
}

/// Counts for the `data_quality` section (spec §4).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventCounts {
    /// Rows in `events`, content_showcase rows included.
    pub rows_read: u64,
    /// Rejected rows per reason, in [`REJECT_REASONS`] order.
    pub rejected: [u64; 7],
    /// Valid rows dropped as repeats of an event_id.
    pub duplicate_events: u64,
    /// Valid, deduplicated lifecycle events without a `conversation_started`.
    pub orphan_lifecycle_events: u64,
}

/// Everything the report needs from `events`, computed over the whole
/// history; [`History::tables`] cuts the report's periods out of it.
pub struct History {
    /// The data-quality counts.
    pub counts: EventCounts,
    /// The latest `ts` of a valid event (not after
    /// [`HistoryOptions::valid_until`]), in the column's ticks.
    pub latest_valid_ts: Option<i64>,
    /// Valid events after [`HistoryOptions::valid_until`].
    pub future_valid_events: u64,
    /// Valid rows whose event_id hash was seen more than once (the
    /// candidates for repeats).
    pub candidate_rows: usize,
    /// Conversations whose ties were settled by event_id.
    pub tied_conversations: usize,
    users: Keys,
    convs: Keys,
    /// Started conversations grouped by the user of their first start row:
    /// `conv_user_start[u]..conv_user_start[u+1]` index `facts` and
    /// `conv_by_user` (their interned ids).
    facts: Vec<Conv>,
    /// Actions grouped by user: `user_start[u]..user_start[u+1]` index
    /// `ts`/`kind`, sorted by ts within each user.
    user_start: Vec<usize>,
    ts: Vec<i64>,
    kind: Vec<u8>,
    conv_user_start: Vec<usize>,
    conv_by_user: Vec<u32>,
    ts_type: DataType,
    ticks_per_day: i64,
}

/// Knobs of [`History::compute`]; the defaults are what the report uses.
#[derive(Debug, Clone)]
pub struct HistoryOptions {
    /// Bits of the event_id hash kept (64; tests use fewer to force the
    /// candidate path through collisions).
    pub id_hash_bits: u32,
    /// Counts the rows the first scan has read, for progress.
    pub rows_seen: Option<Arc<AtomicUsize>>,
    /// Valid events after this instant are counted in
    /// [`History::future_valid_events`] and left out of
    /// [`History::latest_valid_ts`] (the report passes the current time, so
    /// that a few events dated in the future cannot move the default
    /// period); `None`: no cutoff.
    pub valid_until: Option<DateTime<Utc>>,
}

impl Default for HistoryOptions {
    fn default() -> Self {
        Self {
            id_hash_bits: 64,
            rows_seen: None,
            valid_until: None,
        }
    }
}

/// Memory the native path needs under `--memory-limit`, whole process:
/// a fixed part (runtime, scan buffers) plus a part per events row (slim
/// rows, id tables, per-conversation state). Measured peaks with the
/// binary's allocator settings under a limit (freed memory returned at once;
/// docs/PERFORMANCE.md), rounded up so that a report chosen by this estimate
/// stays within its limit.
pub const NATIVE_FIXED_BYTES: u64 = 160 << 20;
/// See [`NATIVE_FIXED_BYTES`].
pub const NATIVE_BYTES_PER_EVENT: u64 = 48;
/// Per events row without a limit, when the allocator keeps freed memory
/// for reuse (the measured peaks are about twice as high).
pub const NATIVE_BYTES_PER_EVENT_UNBOUNDED: u64 = 100;

/// What the native path over `rows` events needs under a memory limit.
pub fn native_estimate(rows: u64) -> u64 {
    NATIVE_FIXED_BYTES.saturating_add(rows.saturating_mul(NATIVE_BYTES_PER_EVENT))
}

/// Whether the native path over `rows` events fits: in `memory_limit` when
/// one is set, else in half the machine's memory.
pub fn native_fits(rows: u64, memory_limit: Option<usize>) -> bool {
    match memory_limit {
        Some(limit) => native_estimate(rows) <= limit as u64,
        None => rows.saturating_mul(NATIVE_BYTES_PER_EVENT_UNBOUNDED) <= physical_memory() / 2,
    }
}

/// Takes `bytes` of `pool` for `name`, waiting while other work holds what
/// is needed: the native path's memory is not tracked by DataFusion's
/// operators, so this reservation stands for it, and concurrent reports
/// (several clients' `report()` calls on one server) take their turns
/// within `--memory-limit` instead of each assuming the whole of it. The
/// wait ends when the caller's future is dropped (a cancelled query).
/// With no limit the pool grants everything at once.
pub async fn reserve_memory(
    pool: &std::sync::Arc<dyn datafusion::execution::memory_pool::MemoryPool>,
    name: &str,
    bytes: usize,
) -> datafusion::execution::memory_pool::MemoryReservation {
    use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit};
    // More than the whole pool can never be granted: then the whole pool,
    // once the others are done.
    let bytes = match pool.memory_limit() {
        MemoryLimit::Finite(limit) => bytes.min(limit),
        _ => bytes,
    };
    let reservation = MemoryConsumer::new(name).register(pool);
    let mut wait = std::time::Duration::from_millis(5);
    while reservation.try_grow(bytes).is_err() {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_millis(200));
    }
    reservation
}

/// The share of the memory pool the native path over `rows` events stands
/// for: its estimate scaled as the pool is scaled from `--memory-limit`.
pub fn native_pool_bytes(rows: u64) -> usize {
    (native_estimate(rows) as f64 * crate::context::POOL_SHARE) as usize
}

/// The machine's physical memory, from /proc/meminfo (8 GiB if unknown).
fn physical_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(8 << 30, |kb| kb * 1024)
}

/// Ticks of a timestamp type per second.
pub fn ticks_per_second(dt: &DataType) -> i64 {
    crate::timestamps::ticks_per_second(crate::timestamps::unit_of(dt))
}

impl History {
    /// Scans `events` of `ctx` once (twice more only for candidate ids and
    /// tied conversations) and computes every per-conversation and
    /// per-session fact.
    pub async fn compute(ctx: &SessionContext, opts: &HistoryOptions) -> Result<Self> {
        let hasher = IdHasher::new(opts.id_hash_bits);
        let df = ctx.table("events").await?.select_columns(&SCAN_COLUMNS)?;
        let ts_type = df
            .schema()
            .field_with_unqualified_name("ts")?
            .data_type()
            .clone();
        let cutoff = opts.valid_until.map_or(i64::MAX, |t| {
            let tps = ticks_per_second(&ts_type);
            t.timestamp()
                .saturating_mul(tps)
                .saturating_add(i64::from(t.timestamp_subsec_nanos()) / (1_000_000_000 / tps))
        });
        let streams = df.execute_stream_partitioned().await?;
        let tasks: Vec<_> = streams
            .into_iter()
            .map(|s| tokio::spawn(scan_partition(s, hasher, cutoff, opts.rows_seen.clone())))
            .collect();
        let mut chunks = Vec::with_capacity(tasks.len());
        for t in tasks {
            chunks.push(
                t.await
                    .map_err(|e| Error::Internal(format!("event scan task failed: {e}")))??,
            );
        }
        // Counts, and the event_id hashes seen twice.
        let mut counts = EventCounts::default();
        let mut latest_valid_ts = None::<i64>;
        let mut future_valid_events = 0;
        for c in &chunks {
            future_valid_events += c.future_valid;
            counts.rows_read += c.rows_read;
            for (a, b) in counts.rejected.iter_mut().zip(c.rejected) {
                *a += b;
            }
            if let Some(t) = c.max_valid_ts {
                latest_valid_ts = Some(latest_valid_ts.map_or(t, |m| m.max(t)));
            }
        }
        // One key space: the first partition's interners, the others mapped
        // in; each partition's rows stay where they are, their keys
        // rewritten in place (no second copy of the rows).
        let mut users = Keys::default();
        let mut convs = Keys::default();
        let mut actions = Vec::with_capacity(chunks.len());
        let mut lifecycle = Vec::with_capacity(chunks.len());
        for mut c in chunks {
            let (cu, cc) = (std::mem::take(&mut c.users), std::mem::take(&mut c.convs));
            let (umap, cmap) = std::thread::scope(|scope| {
                let u = scope.spawn(|| users.add(cu));
                let cmap = convs.add(cc);
                let umap = u.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
                (umap, cmap)
            });
            let cm = |k: u32| if k == NONE { NONE } else { cmap[k as usize] };
            c.actions
                .user
                .iter_mut()
                .for_each(|u| *u = umap[*u as usize]);
            c.actions.conv.iter_mut().for_each(|k| *k = cm(*k));
            c.lifecycle.conv.iter_mut().for_each(|k| *k = cm(*k));
            actions.push(c.actions);
            lifecycle.push(c.lifecycle);
        }
        let id_lists: Vec<&[u64]> = actions
            .iter()
            .map(|a| a.id.as_slice())
            .chain(lifecycle.iter().map(|l| l.id.as_slice()))
            .collect();
        let candidates = repeated(&id_lists);
        drop(id_lists);
        // Exact deduplication of the candidates.
        let mut dedup = Dedup::default();
        let mut candidate_rows = 0;
        if !candidates.is_empty() {
            // The event_id strings behind each candidate hash: only the id
            // column is read again, filtered inside the Parquet decoder.
            let strings = read_id_strings(ctx, Arc::new(candidates.clone()), hasher).await?;
            let mut fallback: HashSet<u64> = strings
                .iter()
                .filter(|(_, (_, several))| *several)
                .map(|(h, _)| *h)
                .collect();
            // A hash with one string: its rows are copies of one event.
            // (hash, lifecycle?, segment, index) of every candidate row.
            let mut rows: Vec<(u64, bool, usize, usize)> = Vec::new();
            for (seg, a) in actions.iter().enumerate() {
                for (i, h) in a.id.iter().enumerate() {
                    if candidates.contains(h) {
                        rows.push((*h, false, seg, i));
                    }
                }
            }
            for (seg, l) in lifecycle.iter().enumerate() {
                for (i, h) in l.id.iter().enumerate() {
                    if candidates.contains(h) {
                        rows.push((*h, true, seg, i));
                    }
                }
            }
            candidate_rows = rows.len();
            rows.sort_unstable_by_key(|r| r.0);
            let slim_at = |&(_, life, seg, i): &(u64, bool, usize, usize)| -> Slim {
                if life {
                    lifecycle[seg].slim(i)
                } else {
                    actions[seg].slim(i)
                }
            };
            let mut delete: Vec<(bool, usize, usize)> = Vec::new();
            for group in rows.chunk_by(|a, b| a.0 == b.0) {
                let h = group[0].0;
                if fallback.contains(&h) {
                    continue;
                }
                // The copy with the smallest ts is kept. Copies that tie on
                // it but differ in what the report reads need the views' full
                // ordering: their event is settled from its full rows.
                let min = group
                    .iter()
                    .map(|r| slim_at(r).ts())
                    .min()
                    .unwrap_or(i64::MIN);
                let at_min: Vec<&(u64, bool, usize, usize)> =
                    group.iter().filter(|r| slim_at(r).ts() == min).collect();
                let kept = slim_at(at_min[0]);
                if at_min.iter().any(|r| slim_at(r) != kept) {
                    fallback.insert(h);
                    continue;
                }
                counts.duplicate_events += group.len() as u64 - 1;
                dedup.kept_ts.insert(h, min);
                delete.extend(
                    group
                        .iter()
                        .filter(|r| !std::ptr::eq(*r, at_min[0]))
                        .map(|r| (r.1, r.2, r.3)),
                );
            }
            for (life, seg, i) in delete {
                if life {
                    lifecycle[seg].kind[i] = kind::DELETED;
                } else {
                    actions[seg].kind[i] = kind::DELETED;
                }
            }
            if !fallback.is_empty() {
                // Collisions and real ties: full rows, ranked as
                // `duplicate_winners` ranks them.
                let udf = ScalarUDF::from(HashIn {
                    set: Arc::new(fallback),
                    hasher,
                    signature: Signature::any(1, Volatility::Immutable),
                });
                let rows = read_full_rows(ctx, udf.call(vec![col("event_id")])).await?;
                let mut groups: HashMap<String, Vec<FullRow>> = HashMap::default();
                for r in rows {
                    groups.entry(r.event_id.clone()).or_default().push(r);
                }
                let mut losers: HashMap<Slim, u32> = HashMap::default();
                for (id, mut copies) in groups {
                    copies.sort_by(copy_order);
                    counts.duplicate_events += copies.len() as u64 - 1;
                    for r in &copies[1..] {
                        *losers.entry(slim(r, &users, &convs)?).or_default() += 1;
                    }
                    dedup.winners.insert(id, copies.swap_remove(0));
                }
                if !losers.is_empty() {
                    remove_slim(&mut actions, &mut lifecycle, losers);
                }
            }
        }
        actions.iter_mut().for_each(|a| a.id = Vec::new());
        lifecycle.iter_mut().for_each(|l| l.id = Vec::new());
        // Conversation facts, the conversations split among the cores by
        // key range (each core reads every row, writes only its own range).
        let mut facts = vec![Conv::default(); convs.len()];
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let per = facts.len().div_ceil(threads).max(1);
        let tied: HashSet<u32> = std::thread::scope(|scope| {
            let handles: Vec<_> = facts
                .chunks_mut(per)
                .enumerate()
                .map(|(t, part)| {
                    let (actions, lifecycle) = (&actions, &lifecycle);
                    scope.spawn(move || aggregate(part, (t * per) as u32, actions, lifecycle))
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        drop(lifecycle);
        let tied_conversations = tied.len();
        if !tied.is_empty() {
            settle_ties(ctx, &tied, &convs, &users, &dedup, hasher, &mut facts).await?;
        }
        counts.orphan_lifecycle_events = facts
            .iter()
            .filter(|f| !f.started())
            .map(|f| f.lifecycle as u64)
            .sum();
        // Actions grouped by user (counting sort), each user's sorted by ts.
        let n_users = users.len();
        let mut user_start = vec![0usize; n_users + 1];
        for a in &actions {
            for (i, &u) in a.user.iter().enumerate() {
                if a.kind[i] != kind::DELETED {
                    user_start[u as usize + 1] += 1;
                }
            }
        }
        for u in 0..n_users {
            user_start[u + 1] += user_start[u];
        }
        let total = user_start[n_users];
        let mut ts = vec![0i64; total];
        let mut kinds = vec![0u8; total];
        let mut next = user_start.clone();
        // Segment by segment, each freed once scattered.
        for a in actions {
            for i in 0..a.user.len() {
                let k = a.kind[i];
                if k == kind::DELETED {
                    continue;
                }
                let u = a.user[i] as usize;
                let at = next[u];
                next[u] += 1;
                ts[at] = a.ts[i];
                kinds[at] = k;
            }
        }
        drop(next);
        let mut pairs: Vec<(i64, u8)> = Vec::new();
        for u in 0..n_users {
            let r = user_start[u]..user_start[u + 1];
            if ts[r.clone()].is_sorted() {
                continue;
            }
            pairs.clear();
            pairs.extend(r.clone().map(|i| (ts[i], kinds[i])));
            pairs.sort_unstable_by_key(|p| p.0);
            for (j, (t, k)) in r.zip(pairs.iter()) {
                ts[j] = *t;
                kinds[j] = *k;
            }
        }
        // Conversations grouped by the user of their first start row.
        // Their facts are copied in that order, so that sessionization
        // reads them sequentially.
        let mut conv_user_start = vec![0usize; n_users + 1];
        for f in facts.iter().filter(|f| f.started()) {
            conv_user_start[f.start_user as usize + 1] += 1;
        }
        for u in 0..n_users {
            conv_user_start[u + 1] += conv_user_start[u];
        }
        let mut conv_by_user = vec![0u32; conv_user_start[n_users]];
        let mut by_user = vec![Conv::default(); conv_user_start[n_users]];
        let mut next = conv_user_start.clone();
        for (c, f) in facts.iter().enumerate() {
            if f.started() {
                let u = f.start_user as usize;
                conv_by_user[next[u]] = c as u32;
                by_user[next[u]] = *f;
                next[u] += 1;
            }
        }
        drop(facts);
        let facts = by_user;

        let ticks_per_day = 86_400 * ticks_per_second(&ts_type);
        Ok(History {
            counts,
            latest_valid_ts,
            future_valid_events,
            candidate_rows,
            tied_conversations,
            users,
            convs,
            facts,
            user_start,
            ts,
            kind: kinds,
            conv_user_start,
            conv_by_user,
            ts_type,
            ticks_per_day,
        })
    }

    /// The `events.ts` type, whose ticks every timestamp here is in.
    pub fn ts_type(&self) -> &DataType {
        &self.ts_type
    }

    /// The sessions (and their conversations) that start in one of
    /// `periods` — `(tag, start, end)` in ts ticks, half-open — as the
    /// `report_sessions` and `report_conversations` tables, each in one
    /// batch per core (the users are split between threads by their number
    /// of actions).
    pub fn tables(
        &self,
        periods: &[(&str, i64, i64)],
        detail: Detail,
    ) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
        let full = detail == Detail::Full;
        let parts = std::thread::available_parallelism().map_or(1, |n| n.get());
        let total = self.ts.len();
        let mut bounds = vec![0usize];
        for k in 1..parts {
            let target = total * k / parts;
            let u = self
                .user_start
                .partition_point(|&at| at < target)
                .min(self.users.len());
            if u > *bounds.last().unwrap_or(&0) {
                bounds.push(u);
            }
        }
        bounds.push(self.users.len());
        let results: Vec<Result<(RecordBatch, RecordBatch)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = bounds
                .windows(2)
                .map(|w| {
                    let (lo, hi) = (w[0], w[1]);
                    scope.spawn(move || self.tables_for(lo..hi, periods, full))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::Internal("session thread panicked".into())))
                })
                .collect()
        });
        let mut sessions = Vec::new();
        let mut conversations = Vec::new();
        for r in results {
            let (s, c) = r?;
            sessions.push(s);
            conversations.push(c);
        }
        Ok((sessions, conversations))
    }

    fn tables_for(
        &self,
        users: std::ops::Range<usize>,
        periods: &[(&str, i64, i64)],
        full: bool,
    ) -> Result<(RecordBatch, RecordBatch)> {
        let mut s = SessionRows::default();
        let mut c = ConversationRows::default();
        let f = &self.facts;
        let day = self.ticks_per_day;
        let mut starts: Vec<usize> = Vec::new();
        let mut by_session: Vec<Vec<usize>> = Vec::new();
        for u in users {
            let (lo, hi) = (self.user_start[u], self.user_start[u + 1]);
            if lo == hi {
                continue;
            }
            let ts = &self.ts[lo..hi];
            let kinds = &self.kind[lo..hi];
            // Session boundaries (indices into the user's actions).
            starts.clear();
            let mut start = ts[0];
            starts.push(0);
            for (i, &t) in ts.iter().enumerate().skip(1) {
                if t >= start.saturating_add(day) {
                    start = t;
                    starts.push(i);
                }
            }
            let tag = |t: i64| {
                periods
                    .iter()
                    .find(|(_, a, b)| t >= *a && t < *b)
                    .map(|(p, _, _)| *p)
            };
            if starts.iter().all(|&i| tag(ts[i]).is_none()) {
                continue;
            }
            let convs = self.conv_user_start[u]..self.conv_user_start[u + 1];
            // Each conversation's session: the last start at or before it.
            by_session.clear();
            by_session.resize(starts.len(), Vec::new());
            for p in convs {
                let t = f[p].started_at;
                let j = starts.partition_point(|&i| ts[i] <= t);
                if j > 0 {
                    by_session[j - 1].push(p);
                }
            }
            for (j, &first) in starts.iter().enumerate() {
                let session_start = ts[first];
                let Some(period) = tag(session_start) else {
                    continue;
                };
                let end = starts.get(j + 1).copied().unwrap_or(ts.len());
                let mut n = [0i64; 4];
                let mut first_self_serve = i64::MAX;
                let mut last_started = i64::MIN;
                for i in first..end {
                    let k = kinds[i];
                    n[k as usize] += 1;
                    if k == kind::SEARCH || k == kind::VIEW {
                        first_self_serve = first_self_serve.min(ts[i]);
                    }
                    if k == kind::STARTED {
                        last_started = last_started.max(ts[i]);
                    }
                }
                let resolved_views = (first..end)
                    .filter(|&i| kinds[i] == kind::VIEW && ts[i] >= last_started)
                    .count() as i64;
                let cs = &by_session[j];
                let mut automated = 0i64;
                let mut with_bot = 0i64;
                let mut first_bot = i64::MAX;
                let mut h: Option<usize> = None;
                for &p in cs {
                    let c = &f[p];
                    if c.automated() {
                        automated += 1;
                    } else if h.is_none_or(|hp| {
                        (c.started_at, self.convs.get(self.conv_by_user[p]))
                            < (f[hp].started_at, self.convs.get(self.conv_by_user[hp]))
                    }) {
                        h = Some(p);
                    }
                    if c.bot_answers > 0 {
                        with_bot += 1;
                    }
                    first_bot = first_bot.min(c.first_bot);
                }
                let status = match h {
                    Some(h) => {
                        let before = first_self_serve < f[h].started_at
                            || (first_bot != i64::MAX && first_bot < f[h].first_reply);
                        if before {
                            "human_after_self_serve"
                        } else {
                            "human_from_start"
                        }
                    }
                    None if n[kind::VIEW as usize] > 0 || automated > 0 => "self_serve_resolved",
                    None => "stopped",
                };
                let tried =
                    n[kind::VIEW as usize] > 0 || n[kind::SEARCH as usize] > 0 || with_bot > 0;
                let user = self.users.str(u as u32);
                s.period.append_value(period);
                s.user_id.append_value(user);
                s.status.append_value(status);
                s.tried.push(tried);
                s.views.push(n[kind::VIEW as usize]);
                s.automated.push(automated);
                s.with_bot.push(with_bot);
                s.resolved_views.push(resolved_views);
                if full {
                    s.session_start.push(session_start);
                    s.session_end.push(session_start.saturating_add(day));
                    s.actions.push((end - first) as i64);
                    s.visits.push(n[kind::VISIT as usize]);
                    s.searches.push(n[kind::SEARCH as usize]);
                    s.starts.push(n[kind::STARTED as usize]);
                    s.conversations.push(cs.len() as i64);
                    s.human.push(cs.len() as i64 - automated);
                    s.first_human
                        .append_option(h.map(|h| self.convs.str(self.conv_by_user[h])));
                    s.first_self_serve
                        .push((first_self_serve != i64::MAX).then_some(first_self_serve));
                    s.last_started
                        .push((last_started != i64::MIN).then_some(last_started));
                }
                for &p in cs {
                    let cf = &f[p];
                    let opt = |v: i64, none: i64| (v != none).then_some(v);
                    c.period.append_value(period);
                    c.status.append_value(status);
                    c.started_at.push(cf.started_at);
                    c.first_reply_at.push(opt(cf.first_reply, i64::MAX));
                    c.closed_at.push(opt(cf.closed_at, i64::MIN));
                    c.rating.push(
                        (cf.rating_at != i64::MIN && cf.rating != 0).then_some(cf.rating as i32),
                    );
                    c.automated.push(cf.automated());
                    if full {
                        c.conversation_id
                            .append_value(self.convs.str(self.conv_by_user[p]));
                        c.user_id.append_value(user);
                        c.session_start.push(session_start);
                        c.first_bot_answer_at.push(opt(cf.first_bot, i64::MAX));
                        c.bot_answers.push(cf.bot_answers as i64);
                        c.teammate_replies.push(cf.replies as i64);
                        c.closes.push(cf.closes as i64);
                    }
                }
            }
        }
        Ok((
            s.finish(&self.ts_type, full)?,
            c.finish(&self.ts_type, full)?,
        ))
    }
}

fn slim(r: &FullRow, users: &Keys, convs: &Keys) -> Result<Slim> {
    let missing = || {
        Error::Internal(format!(
            "event {} was not seen by the first scan",
            r.event_id
        ))
    };
    let k = kind_of(r.event_type.as_bytes()).ok_or_else(missing)?;
    let conv = |c: &Option<String>| -> Result<u32> {
        convs
            .lookup(c.as_deref().unwrap_or_default().as_bytes())
            .ok_or_else(missing)
    };
    Ok(if k <= kind::STARTED {
        Slim::Action {
            user: users.lookup(r.user_id.as_bytes()).ok_or_else(missing)?,
            ts: r.ts,
            kind: k,
            conv: if k == kind::STARTED {
                conv(&r.conversation_id)?
            } else {
                NONE
            },
        }
    } else {
        Slim::Lifecycle {
            conv: conv(&r.conversation_id)?,
            ts: r.ts,
            kind: k,
            extra: match k {
                kind::CLOSED => actor_class(r.actor.as_deref()),
                kind::RATED => r.rating.map(|v| v as u8).unwrap_or(0),
                _ => 0,
            },
        }
    })
}

/// Marks one slim row per entry of `losers` as deleted. Copies that are
/// equal in slim form are interchangeable, so which one goes is irrelevant.
fn remove_slim(
    actions: &mut [Actions],
    lifecycle: &mut [Lifecycle],
    mut losers: HashMap<Slim, u32>,
) {
    let times: HashSet<i64> = losers
        .keys()
        .map(|s| match s {
            Slim::Action { ts, .. } | Slim::Lifecycle { ts, .. } => *ts,
        })
        .collect();
    let mut take = |key: Slim| -> bool {
        match losers.get_mut(&key) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    };
    for actions in actions.iter_mut() {
        for i in 0..actions.kind.len() {
            if times.contains(&actions.ts[i]) && take(actions.slim(i)) {
                actions.kind[i] = kind::DELETED;
            }
        }
    }
    for lifecycle in lifecycle.iter_mut() {
        for i in 0..lifecycle.kind.len() {
            if times.contains(&lifecycle.ts[i]) && take(lifecycle.slim(i)) {
                lifecycle.kind[i] = kind::DELETED;
            }
        }
    }
}

/// Reads the rows of the tied conversations again, with their event_ids,
/// and settles the first start, the latest close and the latest rating
/// exactly as the `conversation_facts` view does.
async fn settle_ties(
    ctx: &SessionContext,
    tied: &HashSet<u32>,
    convs: &Keys,
    users: &Keys,
    dedup: &Dedup,
    hasher: IdHasher,
    facts: &mut [Conv],
) -> Result<()> {
    let ids: Vec<datafusion::logical_expr::Expr> = tied
        .iter()
        .map(|&c| lit(ScalarValue::Utf8(Some(convs.str(c).to_string()))))
        .collect();
    let rows = read_full_rows(ctx, col("conversation_id").in_list(ids, false)).await?;
    let mut kept: HashSet<String> = HashSet::default();
    // (ts, event_id, value) of the first start, last close, last rating.
    type Best = Option<(i64, String, u32)>;
    let mut best: HashMap<u32, [Best; 3]> = HashMap::default();
    for r in rows {
        // A repeat of an event_id counts only as its winning copy.
        // A repeated event_id counts once, as the copy deduplication kept:
        // a copy with the kept ts (all such copies read the same), or the
        // winning full row. Other ids are unique.
        if dedup.winners.get(&r.event_id).is_some_and(|w| w != &r) {
            continue;
        }
        let h = hasher.hash(r.event_id.as_bytes());
        if dedup.kept_ts.get(&h).is_some_and(|&t| t != r.ts) {
            continue;
        }
        if !kept.insert(r.event_id.clone()) {
            continue;
        }
        let Some(c) = r
            .conversation_id
            .as_deref()
            .and_then(|c| convs.lookup(c.as_bytes()))
        else {
            continue;
        };
        let slot = best.entry(c).or_default();
        let key = (r.ts, r.event_id.clone());
        match kind_of(r.event_type.as_bytes()) {
            Some(kind::STARTED) => {
                let u = users.lookup(r.user_id.as_bytes()).unwrap_or(NONE);
                if slot[0]
                    .as_ref()
                    .is_none_or(|b| (key.0, key.1.as_bytes()) < (b.0, b.1.as_bytes()))
                {
                    slot[0] = Some((key.0, key.1, u));
                }
            }
            Some(kind::CLOSED) => {
                let a = actor_class(r.actor.as_deref()) as u32;
                if slot[1]
                    .as_ref()
                    .is_none_or(|b| (key.0, key.1.as_bytes()) > (b.0, b.1.as_bytes()))
                {
                    slot[1] = Some((key.0, key.1, a));
                }
            }
            Some(kind::RATED) => {
                let v = r.rating.unwrap_or(0) as u32;
                if slot[2]
                    .as_ref()
                    .is_none_or(|b| (key.0, key.1.as_bytes()) > (b.0, b.1.as_bytes()))
                {
                    slot[2] = Some((key.0, key.1, v));
                }
            }
            _ => {}
        }
    }
    for (c, [start, close, rating]) in best {
        let c = c as usize;
        if let Some((_, _, u)) = start {
            facts[c].start_user = u;
        }
        if let Some((_, _, a)) = close {
            facts[c].close_actor = a as u8;
        }
        if let Some((_, _, v)) = rating {
            facts[c].rating = v as u8;
        }
    }
    Ok(())
}

/// Aggregates the start rows and lifecycle events of the conversations
/// `base..base + facts.len()` into `facts`; returns the conversations with
/// ties the slim rows cannot settle.
fn aggregate(
    facts: &mut [Conv],
    base: u32,
    actions: &[Actions],
    lifecycle: &[Lifecycle],
) -> Vec<u32> {
    let mut tied = Vec::new();
    let end = base as u64 + facts.len() as u64;
    let mine = |c: u32| (c as u64) < end && c >= base;
    for actions in actions {
        for i in 0..actions.kind.len() {
            let c = actions.conv[i];
            if actions.kind[i] != kind::STARTED || !mine(c) {
                continue;
            }
            let f = &mut facts[(c - base) as usize];
            let (t, u) = (actions.ts[i], actions.user[i]);
            if t < f.started_at {
                f.started_at = t;
                f.start_user = u;
            } else if t == f.started_at && u != f.start_user {
                tied.push(c);
            }
        }
    }
    for lifecycle in lifecycle {
        for i in 0..lifecycle.kind.len() {
            let k = lifecycle.kind[i];
            let c = lifecycle.conv[i];
            if k == kind::DELETED || !mine(c) {
                continue;
            }
            let f = &mut facts[(c - base) as usize];
            let t = lifecycle.ts[i];
            f.lifecycle += 1;
            match k {
                kind::BOT_ANSWER => {
                    f.bot_answers += 1;
                    f.first_bot = f.first_bot.min(t);
                }
                kind::REPLY => {
                    f.replies += 1;
                    f.first_reply = f.first_reply.min(t);
                }
                kind::CLOSED => {
                    f.closes += 1;
                    let a = lifecycle.extra[i];
                    if t > f.closed_at {
                        f.closed_at = t;
                        f.close_actor = a;
                    } else if t == f.closed_at && (a == ACTOR_BOT) != (f.close_actor == ACTOR_BOT) {
                        tied.push(c);
                    }
                }
                kind::RATED => {
                    let r = lifecycle.extra[i];
                    if t > f.rating_at {
                        f.rating_at = t;
                        f.rating = r;
                    } else if t == f.rating_at && r != f.rating {
                        tied.push(c);
                    }
                }
                _ => {}
            }
        }
    }
    tied
}

/// Builds a timestamp column of the events' type from ticks.
fn timestamps(values: Vec<Option<i64>>, ts_type: &DataType) -> Result<ArrayRef> {
    let a: ArrayRef = Arc::new(Int64Array::from(values));
    Ok(cast(&a, ts_type)?)
}

#[derive(Default)]
struct SessionRows {
    period: StringBuilder,
    user_id: StringBuilder,
    session_start: Vec<i64>,
    session_end: Vec<i64>,
    status: StringBuilder,
    tried: Vec<bool>,
    actions: Vec<i64>,
    visits: Vec<i64>,
    searches: Vec<i64>,
    views: Vec<i64>,
    starts: Vec<i64>,
    conversations: Vec<i64>,
    human: Vec<i64>,
    automated: Vec<i64>,
    with_bot: Vec<i64>,
    first_human: StringBuilder,
    first_self_serve: Vec<Option<i64>>,
    last_started: Vec<Option<i64>>,
    resolved_views: Vec<i64>,
}

/// The schema of `report_sessions`: the `sessions` view's columns after a
/// `period` tag.
pub fn sessions_schema(ts: &DataType) -> SchemaRef {
    let i = |n: &str| Field::new(n, DataType::Int64, false);
    let t = |n: &str, null: bool| Field::new(n, ts.clone(), null);
    Arc::new(Schema::new(vec![
        Field::new("period", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        t("session_start", false),
        t("session_end", false),
        Field::new("status", DataType::Utf8, false),
        Field::new("tried_self_serve", DataType::Boolean, false),
        i("actions"),
        i("help_center_visits"),
        i("article_searches"),
        i("article_views"),
        i("conversation_starts"),
        i("conversations"),
        i("human_conversations"),
        i("automated_conversations"),
        i("conversations_with_bot_answer"),
        Field::new("first_human_conversation_id", DataType::Utf8, true),
        t("first_self_serve_at", true),
        t("last_conversation_started_at", true),
        i("article_views_resolved"),
    ]))
}

/// The schema of `report_conversations`: the conversations of the report's
/// sessions, with the session's period and status.
pub fn conversations_schema(ts: &DataType) -> SchemaRef {
    let i = |n: &str| Field::new(n, DataType::Int64, false);
    let t = |n: &str, null: bool| Field::new(n, ts.clone(), null);
    Arc::new(Schema::new(vec![
        Field::new("period", DataType::Utf8, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("conversation_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        t("started_at", false),
        t("session_start", false),
        t("first_reply_at", true),
        t("closed_at", true),
        Field::new("rating", DataType::Int32, true),
        t("first_bot_answer_at", true),
        i("bot_answers"),
        i("teammate_replies"),
        i("closes"),
        Field::new("automated", DataType::Boolean, false),
    ]))
}

/// Columns of `report_sessions` in [`Detail::Report`]: what the sections read.
const SESSION_REPORT_COLUMNS: [usize; 8] = [0, 1, 4, 5, 9, 13, 14, 18];
/// Columns of `report_conversations` in [`Detail::Report`].
const CONVERSATION_REPORT_COLUMNS: [usize; 7] = [0, 1, 4, 6, 7, 8, 13];

/// Which columns [`History::tables`] fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Only what the report's sections read (see the `*_REPORT_COLUMNS`);
    /// the per-session strings and counts the sections never read are
    /// left out, which at 50M events is most of the tables' memory.
    Report,
    /// Every column of [`sessions_schema`] / [`conversations_schema`].
    Full,
}

impl Detail {
    /// The schemas of the tables in this detail.
    pub fn schemas(self, ts: &DataType) -> Result<(SchemaRef, SchemaRef)> {
        let (s, c) = (sessions_schema(ts), conversations_schema(ts));
        Ok(match self {
            Detail::Full => (s, c),
            Detail::Report => (
                Arc::new(s.project(&SESSION_REPORT_COLUMNS)?),
                Arc::new(c.project(&CONVERSATION_REPORT_COLUMNS)?),
            ),
        })
    }
}

/// `cols` as a batch of the full `schema`, or of the report's `keep`.
fn batch_of(
    schema: SchemaRef,
    cols: Vec<ArrayRef>,
    full: bool,
    keep: &[usize],
) -> Result<RecordBatch> {
    if full {
        return Ok(RecordBatch::try_new(schema, cols)?);
    }
    let schema = Arc::new(schema.project(keep)?);
    let cols = keep.iter().map(|&i| Arc::clone(&cols[i])).collect();
    Ok(RecordBatch::try_new(schema, cols)?)
}

impl SessionRows {
    fn finish(mut self, ts: &DataType, full: bool) -> Result<RecordBatch> {
        let some = |v: Vec<i64>| v.into_iter().map(Some).collect::<Vec<_>>();
        let int = |v: Vec<i64>| Arc::new(Int64Array::from(v)) as ArrayRef;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.period.finish()),
            Arc::new(self.user_id.finish()),
            timestamps(some(self.session_start), ts)?,
            timestamps(some(self.session_end), ts)?,
            Arc::new(self.status.finish()),
            Arc::new(BooleanArray::from(self.tried)),
            int(self.actions),
            int(self.visits),
            int(self.searches),
            int(self.views),
            int(self.starts),
            int(self.conversations),
            int(self.human),
            int(self.automated),
            int(self.with_bot),
            Arc::new(self.first_human.finish()),
            timestamps(self.first_self_serve, ts)?,
            timestamps(self.last_started, ts)?,
            int(self.resolved_views),
        ];
        batch_of(sessions_schema(ts), cols, full, &SESSION_REPORT_COLUMNS)
    }
}

#[derive(Default)]
struct ConversationRows {
    period: StringBuilder,
    status: StringBuilder,
    conversation_id: StringBuilder,
    user_id: StringBuilder,
    started_at: Vec<i64>,
    session_start: Vec<i64>,
    first_reply_at: Vec<Option<i64>>,
    closed_at: Vec<Option<i64>>,
    rating: Vec<Option<i32>>,
    first_bot_answer_at: Vec<Option<i64>>,
    bot_answers: Vec<i64>,
    teammate_replies: Vec<i64>,
    closes: Vec<i64>,
    automated: Vec<bool>,
}

impl ConversationRows {
    fn finish(mut self, ts: &DataType, full: bool) -> Result<RecordBatch> {
        let some = |v: Vec<i64>| v.into_iter().map(Some).collect::<Vec<_>>();
        let int = |v: Vec<i64>| Arc::new(Int64Array::from(v)) as ArrayRef;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.period.finish()),
            Arc::new(self.status.finish()),
            Arc::new(self.conversation_id.finish()),
            Arc::new(self.user_id.finish()),
            timestamps(some(self.started_at), ts)?,
            timestamps(some(self.session_start), ts)?,
            timestamps(self.first_reply_at, ts)?,
            timestamps(self.closed_at, ts)?,
            Arc::new(Int32Array::from(self.rating)),
            timestamps(self.first_bot_answer_at, ts)?,
            int(self.bot_answers),
            int(self.teammate_replies),
            int(self.closes),
            Arc::new(BooleanArray::from(self.automated)),
        ];
        batch_of(
            conversations_schema(ts),
            cols,
            full,
            &CONVERSATION_REPORT_COLUMNS,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interner_gives_dense_ids_and_finds_them_again() {
        let mut i = Interner::default();
        assert_eq!(i.intern(b"u1"), 0);
        assert_eq!(i.intern(b"u2"), 1);
        assert_eq!(i.intern(b"u1"), 0);
        assert_eq!(i.intern(b""), 2);
        assert_eq!(i.lookup(b"u2"), Some(1));
        assert_eq!(i.lookup(b"u3"), None);
        assert_eq!(i.str(1), "u2");
        for n in 0..10_000u32 {
            assert_eq!(i.intern(format!("k{n}").as_bytes()), n + 3);
        }
        assert_eq!(i.str(10_002), "k9999");
        // longer than 15 bytes: compared in the buffer
        let long = b"a-rather-long-identifier-0001";
        let id = i.intern(long);
        assert_eq!(i.intern(long), id);
        assert_eq!(i.lookup(long), Some(id));
        assert_eq!(i.lookup(b"a-rather-long-identifier-0002"), None);
        assert_eq!(i.get(id), long);
        // 15 and 16 bytes, and a string with a NUL byte, stay apart
        let a = i.intern(b"123456789012345");
        let b = i.intern(b"1234567890123456");
        let c = i.intern(b"12345678901234\0");
        assert!(a != b && b != c && a != c);
        assert_eq!(i.lookup(b"123456789012345"), Some(a));
    }

    #[test]
    fn chained_keys_keep_the_first_partitions_id() {
        let mut a = Interner::default();
        a.intern(b"u1");
        a.intern(b"u2");
        let mut b = Interner::default();
        b.intern(b"u3");
        b.intern(b"u1");
        let mut keys = Keys::default();
        assert_eq!(keys.add(a), vec![0, 1]);
        // u3 is new (2 + its local id 0); u1 keeps the first partition's id
        assert_eq!(keys.add(b), vec![2, 0]);
        assert_eq!(keys.len(), 4);
        assert_eq!(keys.lookup(b"u1"), Some(0));
        assert_eq!(keys.lookup(b"u3"), Some(2));
        assert_eq!(keys.lookup(b"u9"), None);
        assert_eq!(keys.str(2), "u3");
        assert_eq!(keys.get(1), b"u2");
    }

    #[test]
    fn repeated_hashes_across_sorted_lists() {
        let got = repeated(&[&[1, 2, 2, 5], &[3, 5, 7, 99, 99, 99]]);
        let got: std::collections::BTreeSet<u64> = got.into_iter().collect();
        assert_eq!(got, std::collections::BTreeSet::from([2, 5, 99]));
        assert!(repeated(&[&[], &[1]]).is_empty());
    }

    #[test]
    fn reasons_in_spec_order() {
        assert_eq!(classify(true, true, true, None, true, Some(9)), Err(0));
        assert_eq!(classify(false, true, true, None, true, None), Err(1));
        assert_eq!(classify(false, false, false, Some("x"), true, None), Err(4));
        assert_eq!(
            classify(false, false, false, Some("bot_answer"), true, None),
            Err(5)
        );
        assert_eq!(
            classify(false, false, false, Some("article_view"), true, Some(0)),
            Err(6)
        );
        assert_eq!(
            classify(false, false, false, Some("article_view"), true, Some(5)),
            Ok(kind::VIEW)
        );
    }
}
