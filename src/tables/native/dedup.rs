//! Repeated event_ids, settled exactly (spec §1 "Duplicates", §6).
//!
//! Before the scan, the event_id column alone is read and every id's hash
//! goes to a hash bucket. A bucket's hashes, sorted, show which hashes
//! occur more than once: the *candidates*. A hash seen once proves its row
//! unique. The scan keeps the valid rows of candidate hashes whole, and
//! they are grouped here by the event_id string itself, so a hash
//! collision (or a copy that is not a valid row) only costs a candidate.
//! Each id's copies are ranked as the `event_copies` view ranks them; the
//! losers become slim keys to delete from the buckets they went to. Copies
//! equal in slim form are interchangeable for everything computed from the
//! buckets, so deleting any row with a loser's slim key is exact.

use std::hash::Hasher;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, BooleanArray, StringViewArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

use super::intern::{bucket_of, hash_of, IdHasher};
use super::scan::{strings, EventColumns};
use super::segments::IdHashes;
use super::store::{Budget, Store};
use super::{HashMap, HashSet};
use crate::error::Result;
use crate::rules::{self, kind};

/// The hashes that occur more than once in hash bucket `b`, in ascending
/// order.
///
/// The bucket's hashes are first placed in ranges by their top bits (a
/// counting sort, while copying them out of their segments), then each
/// range's repeats are found on their own, in a table small enough for the
/// CPU's caches, where one sort of millions of hashes would go back and
/// forth through memory.
pub fn repeated_in(store: &Store<IdHashes>, b: usize, budget: &Budget) -> Result<Vec<u64>> {
    let (parts, held) = store.load(b, budget, false)?;
    let n: usize = parts.iter().map(|p| p.hash.len()).sum();
    // ranges of about RANGE_LEN hashes (uniform hashes), at most 2^16
    const RANGE_LEN: usize = 2048;
    let top_bits = (n / RANGE_LEN).next_power_of_two().trailing_zeros().min(16);
    let range_of = |h: u64| match top_bits {
        0 => 0,
        k => (h >> (64 - k)) as usize,
    };
    let mut starts = vec![0usize; (1 << top_bits) + 1];
    for p in &parts {
        for &h in &p.hash {
            starts[range_of(h) + 1] += 1;
        }
    }
    for r in 1..starts.len() {
        starts[r] += starts[r - 1];
    }
    let mut all = vec![0u64; n];
    let mut next = starts.clone();
    // the hashes and the two arrays of range starts; below, the table of
    // the largest range so far (every hash when all share their top bits,
    // as the tests' forced collisions make them)
    let base = (all.capacity() + 2 * starts.capacity()) * 8;
    let mut table_counted = 0;
    budget.grow(base);
    for p in &parts {
        for &h in &p.hash {
            let r = range_of(h);
            all[next[r]] = h;
            next[r] += 1;
        }
    }
    drop(parts);
    budget.shrink(held);
    // Each range's hashes go into an open-addressing table of twice as many
    // slots (a few KiB, in the L1 cache for the usual ranges); a hash that
    // finds itself there is a repeat.
    let mut out = Vec::new();
    let mut table: Vec<u64> = Vec::new();
    for r in starts.windows(2) {
        let range = &all[r[0]..r[1]];
        if range.len() < 2 {
            continue;
        }
        let slots = (range.len() * 2).next_power_of_two();
        let shift = 64 - slots.trailing_zeros();
        table.clear();
        table.resize(slots, EMPTY_SLOT);
        if table.capacity() * 8 > table_counted {
            budget.grow(table.capacity() * 8 - table_counted);
            table_counted = table.capacity() * 8;
        }
        let mut empty_values = 0usize;
        for &h in range {
            if h == EMPTY_SLOT {
                empty_values += 1;
                if empty_values == 2 {
                    out.push(h);
                }
                continue;
            }
            // multiplied: the range's hashes share their top bits, and the
            // tests' hashes keep only their low bits
            let mut i = (h.wrapping_mul(SLOT_MIX) >> shift) as usize;
            loop {
                match table[i] {
                    EMPTY_SLOT => {
                        table[i] = h;
                        break;
                    }
                    s if s == h => {
                        out.push(h);
                        break;
                    }
                    _ => i = (i + 1) & (slots - 1),
                }
            }
        }
    }
    budget.shrink(base + table_counted);
    // a hash seen three times or more was pushed more than once
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// An empty slot of [`repeated_in`]'s tables (a hash of this value is
/// counted beside them).
const EMPTY_SLOT: u64 = u64::MAX;

/// An odd constant (2^64 / φ) that spreads a hash's bits over the top ones.
const SLOT_MIX: u64 = 0x9E37_79B9_7F4A_7C15;

/// One events row with every column, for the few rows read a second time.
#[derive(Debug, Clone, PartialEq)]
pub struct FullRow {
    /// `event_id`.
    pub event_id: String,
    /// `user_id`.
    pub user_id: String,
    /// `ts` in the column's ticks.
    pub ts: i64,
    /// `event_type`.
    pub event_type: String,
    /// `channel`.
    pub channel: Option<String>,
    /// `article_id`.
    pub article_id: Option<String>,
    /// `conversation_id`.
    pub conversation_id: Option<String>,
    /// `actor`.
    pub actor: Option<String>,
    /// `rating`.
    pub rating: Option<i64>,
}

/// `a < b` in the order `event_copies` ranks copies: ts, user_id,
/// event_type, channel, article_id, conversation_id, actor, rating, each
/// ascending with NULLs last (as the view's SQL says explicitly, whatever
/// the session's default NULL ordering).
pub fn copy_order(a: &FullRow, b: &FullRow) -> std::cmp::Ordering {
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
        let out = str_test(&arr, |v| self.set.contains(&self.hasher.hash(v)))?;
        Ok(ColumnarValue::Array(Arc::new(out)))
    }
}

/// Calls `f` with every value of a string column. Views and large strings
/// are read in place: a cast would copy every value of the batch.
pub fn each_str(
    a: &datafusion::arrow::array::ArrayRef,
    f: impl FnMut(Option<&str>),
) -> datafusion::common::Result<()> {
    match a.data_type() {
        DataType::Utf8View => a.as_string_view().iter().for_each(f),
        DataType::LargeUtf8 => a.as_string::<i64>().iter().for_each(f),
        _ => {
            let a = cast(a, &DataType::Utf8)?;
            a.as_string::<i32>().iter().for_each(f);
        }
    }
    Ok(())
}

/// `test` of every value of a string column (false for NULL), read in
/// place as [`each_str`] reads it.
pub fn str_test(
    a: &datafusion::arrow::array::ArrayRef,
    test: impl Fn(&[u8]) -> bool,
) -> datafusion::common::Result<BooleanArray> {
    let mut out = datafusion::arrow::array::BooleanBuilder::with_capacity(a.len());
    each_str(a, |v| {
        out.append_value(v.is_some_and(|v| test(v.as_bytes())))
    })?;
    Ok(out.finish())
}

/// A function of one string, true when its event_id hash is in `set`.
pub fn hash_in_udf(set: Arc<HashSet<u64>>, hasher: IdHasher) -> ScalarUDF {
    ScalarUDF::from(HashIn {
        set,
        hasher,
        signature: Signature::any(1, Volatility::Immutable),
    })
}

/// The columns of a whole `events` row, in the contract's order (also the
/// state's live events, [`super::tap::LIVE_COLUMNS`]).
pub const FULL_COLUMNS: [&str; 9] = [
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

/// The valid, non-showcase rows of `events` matching `filter`, with every
/// column. Each batch is converted as it comes and dropped: the operators
/// read `events` with views into the Parquet pages
/// ([`super::node::viewed`]), so a batch kept would keep its pages, and
/// with every row a candidate (forced hash collisions) the batches are the
/// whole table.
pub async fn read_full_rows(ctx: &SessionContext, filter: Expr) -> Result<Vec<FullRow>> {
    use futures::StreamExt;
    let mut batches = ctx
        .table("events")
        .await?
        .select_columns(&FULL_COLUMNS)?
        .filter(filter)?
        .execute_stream()
        .await?;
    let mut rows = Vec::new();
    while let Some(b) = batches.next().await {
        let b = &b?;
        let cols = EventColumns::of(b)?;
        let article = strings(b.column(b.schema().index_of("article_id")?))?;
        for i in 0..b.num_rows() {
            if matches!(cols.check(i), Some(Ok(_))) {
                rows.push(full_row(&cols, &article, i));
            }
        }
    }
    Ok(rows)
}

/// Row `i` of a batch with every column: `cols` and its `article_id`.
pub(super) fn full_row(cols: &EventColumns, article: &StringViewArray, i: usize) -> FullRow {
    let opt = |a: &StringViewArray| a.is_valid(i).then(|| a.value(i).to_string());
    FullRow {
        event_id: cols.id.value(i).to_string(),
        user_id: cols.user.value(i).to_string(),
        ts: cols.ts.value(i),
        event_type: cols.ty.value(i).to_string(),
        channel: opt(&cols.channel),
        article_id: opt(article),
        conversation_id: opt(&cols.conv),
        actor: opt(&cols.actor),
        rating: cols.rating.is_valid(i).then(|| cols.rating.value(i)),
    }
}

/// A conversation row in slim form with its strings, to find it among a
/// bucket's rows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConvKey {
    /// `conversation_id`.
    pub conv: String,
    /// `ts` ticks.
    pub ts: i64,
    /// Its kind.
    pub kind: u8,
    /// A start's user, a close's actor.
    pub other: Option<String>,
    /// A rating's value (0 for NULL).
    pub rating: u32,
}

/// A customer action in slim form with its user: (user_id, ts, kind).
pub type ActionKey = (String, i64, u8);

/// How the repeated event_ids were settled.
#[derive(Default)]
pub struct Dedup {
    /// Valid rows dropped as repeats.
    pub duplicate_events: u64,
    /// Every repeated valid event_id: its winning copy.
    pub winners: HashMap<String, FullRow>,
    /// Per user bucket, the losing actions to delete (with counts).
    pub action_losers: Vec<HashMap<ActionKey, u32>>,
    /// Per conversation bucket, the losing conversation rows to delete.
    pub conv_losers: Vec<HashMap<ConvKey, u32>>,
}

/// Settles every repeated event_id among `rows`: the valid rows whose
/// event_id hash is a candidate, each with every column (the scan keeps
/// them whole).
pub fn settle(rows: Vec<FullRow>, buckets: usize) -> Dedup {
    let mut out = Dedup {
        action_losers: vec![HashMap::default(); buckets],
        conv_losers: vec![HashMap::default(); buckets],
        ..Dedup::default()
    };
    let mut groups: HashMap<String, Vec<FullRow>> = HashMap::default();
    for r in rows {
        groups.entry(r.event_id.clone()).or_default().push(r);
    }
    for (id, mut copies) in groups {
        if copies.len() < 2 {
            continue;
        }
        copies.sort_by(copy_order);
        out.duplicate_events += copies.len() as u64 - 1;
        for r in &copies[1..] {
            let Some(k) = rules::kind_of(r.event_type.as_bytes()) else {
                continue;
            };
            if rules::is_action(k) {
                let b = bucket_of(hash_of(r.user_id.as_bytes()), buckets);
                *out.action_losers[b]
                    .entry((r.user_id.clone(), r.ts, k))
                    .or_default() += 1;
            }
            if rules::needs_conversation(k) {
                let conv = r.conversation_id.clone().unwrap_or_default();
                let b = bucket_of(hash_of(conv.as_bytes()), buckets);
                let key = ConvKey {
                    conv,
                    ts: r.ts,
                    kind: k,
                    other: match k {
                        kind::STARTED => Some(r.user_id.clone()),
                        kind::CLOSED => r.actor.clone(),
                        _ => None,
                    },
                    rating: match k {
                        kind::RATED => r.rating.unwrap_or(0) as u32,
                        _ => 0,
                    },
                };
                *out.conv_losers[b].entry(key).or_default() += 1;
            }
        }
        copies.truncate(1);
        if let Some(w) = copies.pop() {
            out.winners.insert(id, w);
        }
    }
    out
}

/// Whether `r` counts: a unique event_id, or the winning copy of a
/// repeated one. (Equal copies all say yes; callers keep one per id.)
pub fn counts(dedup: &Dedup, r: &FullRow) -> bool {
    dedup.winners.get(&r.event_id).is_none_or(|w| w == r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::native::scan::Candidates;
    use datafusion::execution::runtime_env::RuntimeEnv;
    use std::sync::Arc;

    /// The repeated hashes of `parts`, the simple way.
    fn reference(parts: &[Vec<u64>]) -> Vec<u64> {
        let mut all: Vec<u64> = parts.concat();
        all.sort_unstable();
        let mut out: Vec<u64> = all
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .collect();
        out.dedup();
        out
    }

    #[test]
    fn repeated_hashes_are_found_in_every_range_and_with_few_bits() {
        let budget = Budget::new(Arc::new(RuntimeEnv::default()), "test", false);
        // splitmix64: random enough hashes, with no crate of the `gen` feature
        let mut state = 7u64;
        let mut random = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        // empty, below one range, many ranges, and hashes of few bits (the
        // tests' forced collisions: every hash in the lowest range)
        for (n, mask) in [
            (0, u64::MAX),
            (100, u64::MAX),
            (50_000, u64::MAX),
            (20_000, 0xFF),
        ] {
            let mut parts: Vec<Vec<u64>> = vec![vec![], vec![], vec![]];
            for i in 0..n {
                // now and then the value the tables mark empty slots with
                let h = match i % 1000 {
                    999 => u64::MAX,
                    _ => random() & mask,
                };
                parts[i % 3].push(h);
                if i % 97 == 0 {
                    // a repeat in another part, and one three times
                    parts[(i + 1) % 3].push(h);
                    if i % 2 == 0 {
                        parts[(i + 2) % 3].push(h);
                    }
                }
            }
            let store = Store::<IdHashes>::new(1);
            for p in &parts {
                let seg = IdHashes { hash: p.clone() };
                store.add(0, seg, &budget, false).unwrap();
            }
            let found = repeated_in(&store, 0, &budget).unwrap();
            assert_eq!(found, reference(&parts), "n = {n}");
            // every one of them passes the bitmap, and none of the others
            let set: Arc<HashSet<u64>> = Arc::new(found.iter().copied().collect());
            let candidates = Candidates::new(Arc::clone(&set));
            assert!(parts
                .concat()
                .iter()
                .all(|h| candidates.contains(*h) == set.contains(h)));
        }
    }
}
