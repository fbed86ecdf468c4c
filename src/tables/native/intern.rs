//! Distinct strings with dense `u32` keys ([`Interner`]), the fixed hashes
//! that route ids to buckets, and the event_id hash ([`IdHasher`]).
//!
//! `user_id` and `conversation_id` are interned, never hashed alone: two
//! ids share a key only when their bytes are equal, so a hash collision can
//! never merge two users or two conversations. Each bucket segment has an
//! interner of its own; a bucket's segments are merged into one key space
//! when the bucket is processed ([`Interner::merge`]), one lookup per
//! distinct string of each segment, not per row.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, GenericStringArray, LargeStringArray, OffsetSizeTrait, StringArray,
};
use datafusion::arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use hashbrown::HashTable;

use crate::error::{Error, Result};

/// Distinct strings with dense `u32` ids, stored end to end in one buffer.
///
/// Strings of up to 12 bytes (ids usually are) are looked up by value:
/// their bytes live in the hash table itself, beside the key, so a lookup
/// is one probe and one compare, with no trip to the buffer
/// ([`slot_key`]). Longer strings are compared in the buffer.
#[derive(Default, Clone)]
pub struct Interner {
    short: ShortTable,
    long: HashTable<u32>,
    bytes: Vec<u8>,
    /// End offset of each string in `bytes`.
    ends: Vec<u64>,
    /// Its strings are not in the tables yet: an interner read back from
    /// disk is mostly only read by key, so its tables are built when it is
    /// first asked for a string's key.
    unindexed: bool,
}

/// A string's hash for routing and interning: the same in every task and
/// run (fixed seed).
#[inline]
pub fn hash_of(s: &[u8]) -> u64 {
    match pack(s) {
        Some(k) => packed_hash(k),
        None => str_hash(s),
    }
}

fn str_hash(s: &[u8]) -> u64 {
    let mut h = foldhash::fast::FixedState::with_seed(0x0dd_ba11).build_hasher();
    h.write(s);
    h.finish()
}

/// `s` packed with its length into 16 bytes, when it has at most 15: what
/// [`hash_of`] hashes (routing depends on it, so it stays as it is).
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

/// `s` as it is kept in a [`ShortTable`] slot: its bytes padded with
/// zeros to 12, when it has at most 12 and does not end in a zero byte
/// (else the padding could not be told from the string). Twelve bytes and
/// a `u32` key make a slot of 16 bytes, four to a cache line: at 20 bytes
/// (up to 15 bytes and the length) the tables took a fifth more memory,
/// and they are the largest thing the scan holds besides its columns
/// (docs/PERFORMANCE.md, "Memory").
#[inline]
fn slot_key(s: &[u8]) -> Option<[u8; 12]> {
    if s.len() > 12 || s.last() == Some(&0) {
        return None;
    }
    let mut k = [0u8; 12];
    k[..s.len()].copy_from_slice(s);
    // (no UTF-8 string is twelve 0xFF bytes, but the bytes are not checked)
    (k != NO_KEY).then_some(k)
}

/// [`hash_of`] the string that [`slot_key`] made `k` of.
#[inline]
fn slot_hash(k: &[u8; 12]) -> u64 {
    let len = k.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    hash_of(&k[..len])
}

#[inline]
fn packed_hash(k: [u8; 16]) -> u64 {
    foldhash::fast::FixedState::with_seed(0x0dd_ba11).hash_one(u128::from_le_bytes(k))
}

/// The table of short keys: open addressing with linear probing over
/// entries that hold the packed key itself, so that a scan can ask for the
/// cache line of a key it will look up a few rows later
/// ([`Interner::prefetch`]). Tables of millions of keys live in DRAM, and a
/// lookup that waits for its line costs more than everything else a row
/// does; issued ahead, the loads overlap.
#[derive(Default, Clone)]
struct ShortTable {
    slots: Vec<([u8; 12], u32)>,
    len: usize,
}

/// Slots of a table whose growth gives its old slots back to the system
/// at once (4 MiB of them): smaller ones are reused soon enough.
const BIG_TABLE_SLOTS: usize = 1 << 18;

/// A key [`slot_key`] gives no string: an empty slot.
const NO_KEY: [u8; 12] = [0xFF; 12];

impl ShortTable {
    #[inline]
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Asks the CPU to load the slot where `hash`'s search starts.
    #[inline]
    fn prefetch(&self, hash: u64) {
        if let Some(slot) = self.slots.get(hash as usize & self.mask()) {
            prefetch(slot);
        }
    }

    /// The id of `k`, or `new()`'s, inserted.
    #[inline]
    fn find_or_insert(&mut self, k: [u8; 12], hash: u64, new: impl FnOnce() -> u32) -> u32 {
        // grow at 3/4 full: linear probing stays short below that
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            let slot = &mut self.slots[i];
            if slot.0 == k {
                return slot.1;
            }
            if slot.0 == NO_KEY {
                let id = new();
                *slot = (k, id);
                self.len += 1;
                return id;
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    fn find(&self, k: [u8; 12], hash: u64) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            let slot = &self.slots[i];
            if slot.0 == k {
                return Some(slot.1);
            }
            if slot.0 == NO_KEY {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        self.grow_to((self.slots.len() * 2).max(64));
    }

    /// Room for `n` keys in all without growing.
    fn reserve(&mut self, n: usize) {
        let mut cap = self.slots.len().max(64);
        while n * 4 > cap * 3 {
            cap *= 2;
        }
        if cap > self.slots.len() {
            self.grow_to(cap);
        }
    }

    /// Puts key `k` with id `id` in; `k` must not be in yet.
    #[inline]
    fn insert_new(&mut self, k: [u8; 12], hash: u64, id: u32) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let mask = self.mask();
        let mut i = hash as usize & mask;
        while self.slots[i].0 != NO_KEY {
            i = (i + 1) & mask;
        }
        self.slots[i] = (k, id);
        self.len += 1;
    }

    fn grow_to(&mut self, cap: usize) {
        let old = std::mem::replace(&mut self.slots, vec![(NO_KEY, 0); cap]);
        let big = old.len() >= BIG_TABLE_SLOTS;
        let mask = cap - 1;
        for (k, id) in old.into_iter().filter(|s| s.0 != NO_KEY) {
            let mut i = slot_hash(&k) as usize & mask;
            while self.slots[i].0 != NO_KEY {
                i = (i + 1) & mask;
            }
            self.slots[i] = (k, id);
        }
        // Nothing wants a big table's old slots again soon (its next growth
        // needs twice their room); kept by the allocator, the old tables of
        // every scan task added to the build's peak (docs/PERFORMANCE.md,
        // "Memory").
        if big {
            crate::io::allocator::return_freed();
        }
    }

    fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<([u8; 12], u32)>()
    }
}

/// Asks the CPU to load the cache line of `r`, which the caller will read
/// or write a few iterations later. Loops that go through big arrays in an
/// order of their own (a key's slot, a user's place) would otherwise wait
/// for DRAM at every row; issued [`PREFETCH_AHEAD`] rows ahead, the loads
/// overlap.
#[inline]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it reads nothing the program sees and
    // the address is that of a live value.
    #[allow(unused_unsafe)]
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((r as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = r;
}

/// [`prefetch`] of element `i` of `v`, if there is one.
#[inline]
pub fn prefetch_at<T>(v: &[T], i: usize) {
    if let Some(r) = v.get(i) {
        prefetch(r);
    }
}

/// [`prefetch`] of string `i`'s offsets in strings stored end to end
/// (`ends`, as [`Interner`] and [`Strings`] keep them).
#[inline]
fn prefetch_offsets(ends: &[u64], i: u32) {
    prefetch_at(ends, (i as usize).wrapping_sub(1));
    prefetch_at(ends, i as usize);
}

/// [`prefetch`] of string `i`'s first byte in `bytes`; reads its start
/// offset in `ends`.
#[inline]
fn prefetch_start(bytes: &[u8], ends: &[u64], i: u32) {
    let start = match i {
        0 => 0,
        _ => ends.get(i as usize - 1).map_or(usize::MAX, |&e| e as usize),
    };
    prefetch_at(bytes, start);
}

/// How many lookups ahead [`Interner::prefetch`] is asked for: enough for
/// a load from DRAM to arrive while the lookups in between run.
pub const PREFETCH_AHEAD: usize = 16;

/// The bucket of a hash among `buckets` (a power of two). Bits the hash
/// tables do not use for their slots, so one bucket's table stays spread.
#[inline]
pub fn bucket_of(hash: u64, buckets: usize) -> usize {
    (hash >> 32) as usize & (buckets - 1)
}

impl Interner {
    /// Makes room in the string buffer for the strings of `rows` rows, in
    /// the proportion of those interned for the first `seen` rows (an
    /// upper bound: ids repeat). The hash table grows as before: its slots
    /// are written when made, so room made ahead would be memory used.
    pub fn reserve_like(&mut self, seen: usize, rows: usize) {
        if seen == 0 || rows <= seen {
            return;
        }
        let scale = |n: usize| (n as u128 * rows as u128 / seen as u128) as usize;
        let (bytes, ends) = (scale(self.bytes.len()), scale(self.ends.len()));
        if bytes > self.bytes.capacity() {
            self.bytes.reserve_exact(bytes - self.bytes.len());
        }
        if ends > self.ends.capacity() {
            self.ends.reserve_exact(ends - self.ends.len());
        }
    }

    /// Number of distinct strings.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether it holds no string.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The bytes of key `id`.
    pub fn get(&self, id: u32) -> &[u8] {
        Self::slice(&self.bytes, &self.ends, id)
    }

    /// Key `id` as a string.
    pub fn str(&self, id: u32) -> &str {
        // SAFETY: every interned string was copied whole from a Utf8 Arrow
        // array, which holds valid UTF-8, and the buffer only ever appends
        // whole strings.
        unsafe { std::str::from_utf8_unchecked(self.get(id)) }
    }

    fn slice<'a>(bytes: &'a [u8], ends: &[u64], id: u32) -> &'a [u8] {
        let id = id as usize;
        let start = if id == 0 { 0 } else { ends[id - 1] as usize };
        &bytes[start..ends[id] as usize]
    }

    fn push(bytes: &mut Vec<u8>, ends: &mut Vec<u64>, s: &[u8]) -> u32 {
        let id = ends.len() as u32;
        bytes.extend_from_slice(s);
        ends.push(bytes.len() as u64);
        id
    }

    /// Memory held by the lookup tables, in bytes (what [`Self::seal`]
    /// lets go of).
    pub fn table_bytes(&self) -> usize {
        self.short.bytes() + self.long.capacity() * 4
    }

    /// Memory held, in bytes.
    pub fn bytes(&self) -> usize {
        self.table_bytes() + self.bytes.capacity() + self.ends.capacity() * 8
    }

    /// Asks the CPU to load what looking up a string of hash `hash` (its
    /// [`hash_of`]) will read first, so that the lookup, a few rows later,
    /// does not wait for memory.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        self.short.prefetch(hash);
    }

    /// Asks the CPU to load where key `id`'s string starts in the offsets
    /// ([`Self::get`] reads them first), for [`Self::prefetch_bytes`] a few
    /// rows later.
    #[inline]
    pub fn prefetch_key(&self, id: u32) {
        prefetch_offsets(&self.ends, id);
    }

    /// Asks the CPU to load the first bytes of key `id`'s string (its
    /// offsets should be in the cache: [`Self::prefetch_key`]).
    #[inline]
    pub fn prefetch_bytes(&self, id: u32) {
        prefetch_start(&self.bytes, &self.ends, id);
    }

    /// The key of `s`, added if new.
    #[inline]
    pub fn intern(&mut self, s: &[u8]) -> u32 {
        self.intern_hashed(s, hash_of(s))
    }

    /// [`Self::intern`] with `hash == hash_of(s)` already computed.
    #[inline]
    pub fn intern_hashed(&mut self, s: &[u8], hash: u64) -> u32 {
        if self.unindexed {
            self.index(0);
        }
        let Interner {
            short,
            long,
            bytes,
            ends,
            ..
        } = self;
        if let Some(k) = slot_key(s) {
            return short.find_or_insert(k, hash, || Self::push(bytes, ends, s));
        }
        match long.entry(
            hash,
            |&id| Self::slice(bytes, ends, id) == s,
            |&id| hash_of(Self::slice(bytes, ends, id)),
        ) {
            hashbrown::hash_table::Entry::Occupied(e) => *e.get(),
            hashbrown::hash_table::Entry::Vacant(v) => {
                let id = Self::push(bytes, ends, s);
                v.insert(id);
                id
            }
        }
    }

    /// Puts every string in the tables (see `unindexed`), each under the
    /// key it has. The tables are sized first for `room` strings (at least
    /// those held), in the mix of short and long ones held, so that they
    /// are made once and not copied as they grow.
    #[cold]
    fn index(&mut self, room: usize) {
        self.unindexed = false;
        let Interner {
            short,
            long,
            bytes,
            ends,
            ..
        } = self;
        let n = ends.len();
        let room = room.max(n);
        let shorts = (0..n as u32)
            .filter(|&id| slot_key(Self::slice(bytes, ends, id)).is_some())
            .count();
        let short_room = (shorts as u128 * room as u128 / n.max(1) as u128) as usize;
        short.reserve(short_room);
        long.reserve(room - short_room, |&id| {
            hash_of(Self::slice(bytes, ends, id))
        });
        // the hashes PREFETCH_AHEAD strings on, whose slots are asked for
        // ahead: the table is bigger than the caches
        let hash_at = |id: usize| hash_of(Self::slice(bytes, ends, id as u32));
        let mut ahead = [0u64; PREFETCH_AHEAD];
        for (id, h) in ahead.iter_mut().enumerate().take(n) {
            *h = hash_at(id);
        }
        for id in 0..n {
            let hash = ahead[id % PREFETCH_AHEAD];
            if id + PREFETCH_AHEAD < n {
                let next = hash_at(id + PREFETCH_AHEAD);
                short.prefetch(next);
                ahead[id % PREFETCH_AHEAD] = next;
            }
            let s = Self::slice(bytes, ends, id as u32);
            match slot_key(s) {
                Some(k) => short.insert_new(k, hash, id as u32),
                None => {
                    long.insert_unique(hash, id as u32, |&id| {
                        hash_of(Self::slice(bytes, ends, id))
                    });
                }
            }
        }
    }

    /// Lets go of the lookup tables, keeping the strings and their keys:
    /// a finished segment's interner is only read by key and merged, which
    /// reads its strings, so its tables would only take memory. Interning
    /// a string here builds them again; until then a lookup by value reads
    /// the strings one by one.
    pub fn seal(&mut self) {
        self.short = ShortTable::default();
        self.long = HashTable::new();
        self.unindexed = !self.is_empty();
    }

    /// The key of `s`, if interned.
    pub fn lookup(&self, s: &[u8]) -> Option<u32> {
        if self.unindexed {
            return (0..self.len() as u32).find(|&id| self.get(id) == s);
        }
        match slot_key(s) {
            Some(k) => self.short.find(k, hash_of(s)),
            None => self.long.find(hash_of(s), |&id| self.get(id) == s).copied(),
        }
    }

    /// Interns every string of `other` here; returns the map from
    /// `other`'s keys to keys here.
    pub fn merge(&mut self, other: &Interner) -> Vec<u32> {
        if self.is_empty() {
            // Every string is new and keeps its key: a copy of `other`'s
            // tables and strings, not a lookup per string.
            *self = other.clone();
            return (0..other.len() as u32).collect();
        }
        if self.unindexed {
            // its tables sized for both: a sealed segment merged with others
            self.index(self.len() + other.len());
        }
        let hashes: Vec<u64> = (0..other.len() as u32)
            .map(|k| hash_of(other.get(k)))
            .collect();
        (0..hashes.len())
            .map(|k| {
                if let Some(&ahead) = hashes.get(k + PREFETCH_AHEAD) {
                    self.prefetch(ahead);
                }
                self.intern_hashed(other.get(k as u32), hashes[k])
            })
            .collect()
    }

    /// The strings in key order, as one Arrow array (what a spilled
    /// segment's dictionary holds).
    pub fn to_array(&self) -> ArrayRef {
        let offsets: Vec<i64> = std::iter::once(0)
            .chain(self.ends.iter().map(|&e| e as i64))
            .collect();
        let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
        // SAFETY: the offsets are increasing and end at the buffer's end,
        // and every string is whole UTF-8 (see `str`).
        Arc::new(unsafe {
            LargeStringArray::new_unchecked(offsets, Buffer::from_slice_ref(&self.bytes), None)
        })
    }

    /// An interner of the strings of `array` (distinct, no nulls), keyed
    /// by their position: the inverse of [`Self::to_array`]. The strings
    /// are copied as they are; the tables are built on the first lookup
    /// (`unindexed`). A string given twice would make that lookup find
    /// the first one only: `array` must come from [`Self::to_array`].
    pub fn from_array(array: &dyn Array) -> Result<Self> {
        let strings = Strings::from_array(array)?;
        Ok(Interner {
            unindexed: !strings.is_empty(),
            bytes: strings.bytes,
            ends: strings.ends,
            ..Interner::default()
        })
    }
}

/// Strings appended one after another, not deduplicated (for values that
/// are unique anyway, such as a conversation's id among its bucket's
/// facts).
#[derive(Default, Clone)]
pub struct Strings {
    bytes: Vec<u8>,
    ends: Vec<u64>,
}

impl Strings {
    /// Room for `strings` strings of `bytes` bytes in all.
    pub fn with_capacity(strings: usize, bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(strings),
        }
    }

    /// Total length of the strings, in bytes.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Asks the CPU to load string `i`'s offsets, for
    /// [`Self::prefetch_bytes`] a few rows later.
    #[inline]
    pub fn prefetch_key(&self, i: u32) {
        prefetch_offsets(&self.ends, i);
    }

    /// Asks the CPU to load string `i`'s first bytes. It reads the offsets,
    /// so they should be in the cache ([`Self::prefetch_key`]).
    #[inline]
    pub fn prefetch_bytes(&self, i: u32) {
        prefetch_start(&self.bytes, &self.ends, i);
    }

    /// Appends `s`; returns its index.
    pub fn push(&mut self, s: &[u8]) -> u32 {
        Interner::push(&mut self.bytes, &mut self.ends, s)
    }

    /// String `i`.
    pub fn str(&self, i: u32) -> &str {
        // SAFETY: as for `Interner::str`.
        unsafe { std::str::from_utf8_unchecked(Interner::slice(&self.bytes, &self.ends, i)) }
    }

    /// Number of strings.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Memory held, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes.capacity() + self.ends.capacity() * 8
    }

    /// As one Arrow array.
    pub fn to_array(&self) -> ArrayRef {
        let offsets: Vec<i64> = std::iter::once(0)
            .chain(self.ends.iter().map(|&e| e as i64))
            .collect();
        // SAFETY: as for `Interner::to_array`.
        Arc::new(unsafe {
            LargeStringArray::new_unchecked(
                OffsetBuffer::new(ScalarBuffer::from(offsets)),
                Buffer::from_slice_ref(&self.bytes),
                None,
            )
        })
    }

    /// From an Arrow string array without nulls.
    pub fn from_array(array: &dyn Array) -> Result<Self> {
        /// The buffer and offsets copied whole, rebased to start at 0.
        fn bulk<O: OffsetSizeTrait>(a: &GenericStringArray<O>) -> Strings {
            let offsets = a.value_offsets();
            let first = offsets[0].as_usize();
            let last = offsets[offsets.len() - 1].as_usize();
            Strings {
                bytes: a.value_data()[first..last].to_vec(),
                ends: offsets[1..]
                    .iter()
                    .map(|o| (o.as_usize() - first) as u64)
                    .collect(),
            }
        }
        if array.null_count() == 0 {
            if let Some(a) = array.as_string_opt::<i64>() {
                return Ok(bulk(a));
            }
            if let Some(a) = array.as_string_opt::<i32>() {
                return Ok(bulk(a));
            }
        }
        let mut out = Strings::default();
        if let Some(a) = array.as_string_opt::<i64>() {
            a.iter().for_each(|s| {
                out.push(s.unwrap_or_default().as_bytes());
            });
        } else if let Some(a) = array.as_string_opt::<i32>() {
            a.iter().for_each(|s| {
                out.push(s.unwrap_or_default().as_bytes());
            });
        } else {
            return Err(Error::Internal(format!(
                "spilled strings of type {}",
                array.data_type()
            )));
        }
        Ok(out)
    }
}

/// A string array of `keys` into `interner`, for output columns.
pub fn lookup_array(interner: &Interner, keys: impl Iterator<Item = u32>) -> StringArray {
    keys.map(|k| Some(interner.str(k))).collect()
}

/// The 64-bit hash of event ids. Fixed seed: the same id hashes the same in
/// every scan of one run. `mask` keeps fewer bits in tests, to force
/// collisions through the candidate path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdHasher {
    mask: u64,
}

impl IdHasher {
    /// A hasher keeping `bits` bits (64: all).
    pub fn new(bits: u32) -> Self {
        let mask = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        Self { mask }
    }

    /// The hash of an event_id's bytes.
    #[inline]
    pub fn hash(&self, s: &[u8]) -> u64 {
        let mut h = foldhash::fast::FixedState::with_seed(0x5f0c_a11e_d1d5_eed5).build_hasher();
        h.write(s);
        h.finish() & self.mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_for_strings_in_proportion_to_rows() {
        let mut i = Interner::default();
        i.reserve_like(0, 1000);
        assert_eq!(i.bytes(), 0, "nothing seen, nothing reserved");
        for s in ["alpha", "beta"] {
            i.intern(s.as_bytes());
        }
        let before = i.bytes();
        // 2 strings of 9 bytes for 10 rows: room for 200 strings of 900
        i.reserve_like(10, 1000);
        assert!(i.bytes.capacity() >= 900 && i.ends.capacity() >= 200);
        assert!(i.bytes() > before);
        // fewer rows than seen: nothing to do
        let now = i.bytes();
        i.reserve_like(10, 5);
        assert_eq!(i.bytes(), now);
        assert_eq!(i.lookup(b"beta"), Some(1));
    }

    #[test]
    fn a_sealed_interner_keeps_its_keys_without_tables() {
        let long = "a-rather-long-identifier-0001";
        let strings: Vec<String> = (0..5000)
            .map(|n| format!("k{n}"))
            .chain([long.to_string(), String::new()])
            .collect();
        let mut i = Interner::default();
        for s in &strings {
            i.intern(s.as_bytes());
        }
        let indexed = i.bytes();
        i.seal();
        assert!(i.bytes() < indexed / 2, "the tables are let go");
        assert_eq!((i.len(), i.str(4999), i.str(5000)), (5002, "k4999", long));
        // merged into an empty interner and into one with strings of its own
        let mut a = Interner::default();
        assert_eq!(a.merge(&i), (0..5002).collect::<Vec<u32>>());
        let mut b = Interner::default();
        b.intern(b"k17");
        b.intern(b"new");
        let map = b.merge(&i);
        assert_eq!((map[17], map[0], map[5000]), (0, 2, 5001));
        assert_eq!(b.len(), 5003);
        // interning again builds the tables: every string keeps its key
        for (k, s) in strings.iter().enumerate() {
            assert_eq!(i.intern(s.as_bytes()), k as u32);
            assert_eq!(a.lookup(s.as_bytes()), Some(k as u32));
        }
        assert_eq!(i.intern(b"k5000"), 5002);
        assert_eq!(i.lookup(b"k5000"), Some(5002));
        // sealing an empty interner leaves it usable
        let mut e = Interner::default();
        e.seal();
        assert_eq!((e.intern(b"x"), e.lookup(b"x")), (0, Some(0)));
    }

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
        // longer than 12 bytes: compared in the buffer
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
    fn strings_kept_in_the_slots_and_beside_them_stay_apart() {
        // Up to 12 bytes without a trailing zero byte live in the slots;
        // the rest (longer, ending in zeros, twelve 0xFF bytes) in the long
        // table. Strings equal but for trailing zeros must get their own
        // keys, through growing tables, sealing and merging.
        let mut strings: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\0".to_vec(),
            b"\0\0".to_vec(),
            b"ab".to_vec(),
            b"ab\0".to_vec(),
            b"a\0b".to_vec(),
            b"123456789012".to_vec(),
            b"12345678901\0".to_vec(),
            b"1234567890123".to_vec(),
            vec![0xFF; 12],
            vec![0xFF; 11],
        ];
        for n in 0..5_000u32 {
            strings.push(format!("{n:012}").into_bytes());
            strings.push(format!("{n:013}").into_bytes());
            strings.push(format!("{n}").into_bytes());
        }
        let mut i = Interner::default();
        for (k, s) in strings.iter().enumerate() {
            assert_eq!(i.intern(s), k as u32, "{s:?}");
        }
        let check = |i: &Interner| {
            for (k, s) in strings.iter().enumerate() {
                assert_eq!(i.lookup(s), Some(k as u32), "{s:?}");
                assert_eq!(i.get(k as u32), s.as_slice());
            }
            assert_eq!(i.lookup(b"a\0"), None);
            assert_eq!(i.lookup(b"12345678901"), None);
        };
        check(&i);
        let mut sealed = i.clone();
        sealed.seal();
        let mut merged = Interner::default();
        merged.intern(b"first");
        let keys = merged.merge(&sealed);
        assert_eq!(keys, (1..=strings.len() as u32).collect::<Vec<_>>());
        assert_eq!(sealed.intern(b"ab\0"), 4);
        check(&sealed);
    }

    #[test]
    fn merged_interners_keep_the_first_keys() {
        let mut a = Interner::default();
        a.intern(b"u1");
        a.intern(b"u2");
        let mut b = Interner::default();
        b.intern(b"u3");
        b.intern(b"u1");
        assert_eq!(a.merge(&b), vec![2, 0]);
        assert_eq!(a.len(), 3);
        assert_eq!(a.str(2), "u3");
        // merged into an empty interner: the same keys, found by lookup and
        // by interning, and new strings after them
        let mut c = Interner::default();
        assert_eq!(c.merge(&a), vec![0, 1, 2]);
        let long = b"a-rather-long-identifier-0001";
        a.intern(long);
        let mut d = Interner::default();
        assert_eq!(d.merge(&a), vec![0, 1, 2, 3]);
        assert_eq!((d.lookup(b"u3"), d.lookup(long)), (Some(2), Some(3)));
        assert_eq!(
            (d.intern(b"u2"), d.intern(long), d.intern(b"u4")),
            (1, 3, 4)
        );
        // an interner read back from disk, merged into an empty one
        let back = Interner::from_array(a.to_array().as_ref()).unwrap();
        let mut e = Interner::default();
        assert_eq!(e.merge(&back), vec![0, 1, 2, 3]);
        assert_eq!(
            (e.intern(long), e.intern(b"u1"), e.intern(b"u5")),
            (3, 0, 4)
        );
        assert_eq!(e.lookup(b"u5"), Some(4));
    }

    #[test]
    fn interners_and_strings_survive_arrow() {
        let mut a = Interner::default();
        for s in ["x", "", "a-rather-long-identifier-0001", "é"] {
            a.intern(s.as_bytes());
        }
        let mut back = Interner::from_array(a.to_array().as_ref()).unwrap();
        assert_eq!(back.len(), 4);
        for k in 0..4 {
            assert_eq!(back.get(k), a.get(k));
            assert_eq!(back.lookup(a.get(k)), Some(k));
        }
        // read back unindexed: interning finds the strings it holds
        for k in 0..4 {
            assert_eq!(back.intern(a.get(k)), k);
        }
        assert_eq!(back.intern(b"new"), 4);
        assert_eq!(back.lookup(b"new"), Some(4));
        // a slice of an array comes back as its own strings
        let sliced = a.to_array().slice(1, 2);
        let part = Interner::from_array(sliced.as_ref()).unwrap();
        assert_eq!(
            (part.str(0), part.str(1)),
            ("", "a-rather-long-identifier-0001")
        );
        let mut s = Strings::default();
        s.push(b"c1");
        s.push(b"c1");
        s.push(b"");
        let back = Strings::from_array(s.to_array().as_ref()).unwrap();
        assert_eq!((back.str(0), back.str(1), back.str(2)), ("c1", "c1", ""));
    }
}
