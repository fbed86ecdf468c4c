//! The slim rows the operators hold, one segment per (scan task, bucket):
//! customer actions by user ([`Actions`]), conversation rows by
//! conversation ([`ConvRows`]), event_id hashes by hash ([`IdHashes`]), and
//! conversation facts by their start user ([`Facts`]).
//!
//! A segment keeps its strings in interners of its own, so a segment is
//! whole by itself: it can be written out as one Arrow batch (strings as
//! dictionaries whose values are the interner's strings, keys the rows'
//! keys) when memory runs short, and read back as it was.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, Int64Array, RecordBatch, UInt32Array, UInt64Array,
    UInt8Array,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Int64Type, Schema, SchemaRef, UInt32Type, UInt64Type, UInt8Type,
};

use super::intern::{hash_of, Interner, Strings};
use crate::error::{Error, Result};

/// What every kind of segment does.
pub trait Segment: Default + Send + Sync + 'static {
    /// A name for spill files and messages.
    const NAME: &'static str;
    /// Rows held.
    fn len(&self) -> usize;
    /// Whether it holds no row.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Memory held, in bytes.
    fn bytes(&self) -> usize;
    /// The segment as one batch.
    fn to_batch(&self) -> Result<RecordBatch>;
    /// The inverse of [`Self::to_batch`].
    fn from_batch(batch: &RecordBatch) -> Result<Self>;
    /// Makes room for `rows` rows in all, and for their strings in the
    /// proportion of those held, so that the columns are not copied as
    /// they grow ([`super::scan`] sizes a task's segments once it has seen
    /// the mix of its first rows).
    fn reserve_rows(&mut self, _rows: usize) {}
    /// Lets go of what only adding rows needs (the interners' lookup
    /// tables): a segment handed to a [`super::store::Store`] is only read.
    fn seal(&mut self) {}
}

fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

/// Capacity for `total` elements in all.
fn reserve_total<T>(v: &mut Vec<T>, total: usize) {
    if total > v.capacity() {
        v.reserve_exact(total - v.len());
    }
}

fn dict_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::LargeUtf8))
}

/// A dictionary column of `keys` (None: null) over `interner`'s strings.
fn dict(interner: &Interner, keys: UInt32Array) -> Result<ArrayRef> {
    Ok(Arc::new(DictionaryArray::<UInt32Type>::try_new(
        keys,
        interner.to_array(),
    )?))
}

/// The keys and the interner of a dictionary column written by [`dict`].
fn undict(a: &ArrayRef) -> Result<(UInt32Array, Interner)> {
    let d = a
        .as_dictionary_opt::<UInt32Type>()
        .ok_or_else(|| Error::Internal(format!("a spilled column of type {}", a.data_type())))?;
    Ok((d.keys().clone(), Interner::from_array(d.values().as_ref())?))
}

fn col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    b.column_by_name(name)
        .ok_or_else(|| Error::Internal(format!("spilled batch without `{name}`")))
}

fn i64s(b: &RecordBatch, name: &str) -> Result<Vec<i64>> {
    Ok(col(b, name)?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| Error::Internal(format!("spilled `{name}` is not Int64")))?
        .values()
        .to_vec())
}

fn u32s(b: &RecordBatch, name: &str) -> Result<Vec<u32>> {
    Ok(col(b, name)?
        .as_primitive_opt::<UInt32Type>()
        .ok_or_else(|| Error::Internal(format!("spilled `{name}` is not UInt32")))?
        .values()
        .to_vec())
}

fn u8s(b: &RecordBatch, name: &str) -> Result<Vec<u8>> {
    Ok(col(b, name)?
        .as_primitive_opt::<UInt8Type>()
        .ok_or_else(|| Error::Internal(format!("spilled `{name}` is not UInt8")))?
        .values()
        .to_vec())
}

fn schema(fields: Vec<(&str, DataType, bool)>) -> SchemaRef {
    Arc::new(Schema::new(
        fields
            .into_iter()
            .map(|(n, t, null)| Field::new(n, t, null))
            .collect::<Vec<_>>(),
    ))
}

/// Customer actions of one user bucket: what sessionization reads.
#[derive(Default)]
pub struct Actions {
    /// The users' ids.
    pub users: Interner,
    /// Key of the row's user in `users`.
    pub user: Vec<u32>,
    /// `ts` in the column's ticks.
    pub ts: Vec<i64>,
    /// Its [`super::rules::kind`].
    pub kind: Vec<u8>,
}

impl Actions {
    /// Appends a row of user `user` (whose [`super::intern::hash_of`] is
    /// `hash`).
    #[inline]
    pub fn push(&mut self, user: &[u8], hash: u64, ts: i64, kind: u8) {
        let u = self.users.intern_hashed(user, hash);
        self.push_key(u, ts, kind);
    }

    /// Appends a row of the user whose key in [`Self::users`] is `u`.
    #[inline]
    pub fn push_key(&mut self, u: u32, ts: i64, kind: u8) {
        self.user.push(u);
        self.ts.push(ts);
        self.kind.push(kind);
    }
}

impl Segment for Actions {
    const NAME: &'static str = "actions";
    fn len(&self) -> usize {
        self.user.len()
    }
    fn bytes(&self) -> usize {
        self.users.bytes() + vec_bytes(&self.user) + vec_bytes(&self.ts) + vec_bytes(&self.kind)
    }
    fn to_batch(&self) -> Result<RecordBatch> {
        let s = schema(vec![
            ("user", dict_type(), false),
            ("ts", DataType::Int64, false),
            ("kind", DataType::UInt8, false),
        ]);
        Ok(RecordBatch::try_new(
            s,
            vec![
                dict(&self.users, UInt32Array::from(self.user.clone()))?,
                Arc::new(Int64Array::from(self.ts.clone())),
                Arc::new(UInt8Array::from(self.kind.clone())),
            ],
        )?)
    }
    fn seal(&mut self) {
        self.users.seal();
    }
    fn reserve_rows(&mut self, rows: usize) {
        self.users.reserve_like(self.user.len(), rows);
        reserve_total(&mut self.user, rows);
        reserve_total(&mut self.ts, rows);
        reserve_total(&mut self.kind, rows);
    }
    fn from_batch(b: &RecordBatch) -> Result<Self> {
        let (keys, users) = undict(col(b, "user")?)?;
        Ok(Self {
            users,
            user: keys.values().to_vec(),
            ts: i64s(b, "ts")?,
            kind: u8s(b, "kind")?,
        })
    }
}

/// `conversation_started` and lifecycle rows of one conversation bucket:
/// what the conversation facts read.
#[derive(Default)]
pub struct ConvRows {
    /// The conversations' ids.
    pub convs: Interner,
    /// Users of start rows and actors of closes.
    pub others: Interner,
    /// Key of the row's conversation in `convs`.
    pub conv: Vec<u32>,
    /// `ts` in the column's ticks.
    pub ts: Vec<i64>,
    /// Its [`super::rules::kind`].
    pub kind: Vec<u8>,
    /// By kind: a start's user (key in `others`); a close's actor (key in
    /// `others` plus one, 0 for NULL); a rating (0 for NULL); else 0.
    pub extra: Vec<u32>,
}

impl ConvRows {
    /// Appends a row of conversation `conv` (hash `hash`); returns the
    /// conversation's key in [`Self::convs`].
    #[inline]
    pub fn push(&mut self, conv: &[u8], hash: u64, ts: i64, kind: u8, extra: u32) -> u32 {
        let c = self.convs.intern_hashed(conv, hash);
        self.push_key(c, ts, kind, extra);
        c
    }

    /// Appends a row of the conversation whose key in [`Self::convs`] is
    /// `c`.
    #[inline]
    pub fn push_key(&mut self, c: u32, ts: i64, kind: u8, extra: u32) {
        self.conv.push(c);
        self.ts.push(ts);
        self.kind.push(kind);
        self.extra.push(extra);
    }
}

impl Segment for ConvRows {
    const NAME: &'static str = "conversation rows";
    fn len(&self) -> usize {
        self.conv.len()
    }
    fn bytes(&self) -> usize {
        self.convs.bytes()
            + self.others.bytes()
            + vec_bytes(&self.conv)
            + vec_bytes(&self.ts)
            + vec_bytes(&self.kind)
            + vec_bytes(&self.extra)
    }
    fn to_batch(&self) -> Result<RecordBatch> {
        // The `others` strings ride as a dictionary column whose keys
        // are all null: only its values matter.
        let s = schema(vec![
            ("conv", dict_type(), false),
            ("ts", DataType::Int64, false),
            ("kind", DataType::UInt8, false),
            ("extra", DataType::UInt32, false),
            ("others", dict_type(), true),
        ]);
        let n = self.conv.len();
        Ok(RecordBatch::try_new(
            s,
            vec![
                dict(&self.convs, UInt32Array::from(self.conv.clone()))?,
                Arc::new(Int64Array::from(self.ts.clone())),
                Arc::new(UInt8Array::from(self.kind.clone())),
                Arc::new(UInt32Array::from(self.extra.clone())),
                dict(&self.others, UInt32Array::new_null(n))?,
            ],
        )?)
    }
    fn seal(&mut self) {
        self.convs.seal();
        self.others.seal();
    }
    fn reserve_rows(&mut self, rows: usize) {
        self.convs.reserve_like(self.conv.len(), rows);
        reserve_total(&mut self.conv, rows);
        reserve_total(&mut self.ts, rows);
        reserve_total(&mut self.kind, rows);
        reserve_total(&mut self.extra, rows);
    }
    fn from_batch(b: &RecordBatch) -> Result<Self> {
        let (keys, convs) = undict(col(b, "conv")?)?;
        let (_, others) = undict(col(b, "others")?)?;
        Ok(Self {
            convs,
            others,
            conv: keys.values().to_vec(),
            ts: i64s(b, "ts")?,
            kind: u8s(b, "kind")?,
            extra: u32s(b, "extra")?,
        })
    }
}

/// Event_id hashes of one hash bucket (of every row with an id, valid or
/// not: see [`super::scan::id_hashes`]).
#[derive(Default)]
pub struct IdHashes {
    /// The hashes ([`super::intern::IdHasher`]).
    pub hash: Vec<u64>,
}

impl Segment for IdHashes {
    const NAME: &'static str = "event id hashes";
    fn len(&self) -> usize {
        self.hash.len()
    }
    fn bytes(&self) -> usize {
        vec_bytes(&self.hash)
    }
    fn reserve_rows(&mut self, rows: usize) {
        reserve_total(&mut self.hash, rows);
    }
    fn to_batch(&self) -> Result<RecordBatch> {
        let s = schema(vec![("hash", DataType::UInt64, false)]);
        Ok(RecordBatch::try_new(
            s,
            vec![Arc::new(UInt64Array::from(self.hash.clone()))],
        )?)
    }
    fn from_batch(b: &RecordBatch) -> Result<Self> {
        Ok(Self {
            hash: col(b, "hash")?
                .as_primitive_opt::<UInt64Type>()
                .ok_or_else(|| Error::Internal("spilled hashes are not UInt64".into()))?
                .values()
                .to_vec(),
        })
    }
}

/// No time: for the facts' optional times.
pub const NO_TIME_MIN: i64 = i64::MAX;
/// No time, for maxima.
pub const NO_TIME_MAX: i64 = i64::MIN;

/// Conversation facts (rows of the `conversation_facts` view that have a
/// start), sent to the bucket of their start row's user.
#[derive(Default)]
pub struct Facts {
    /// The start users' ids.
    pub users: Interner,
    /// The conversations' ids, one per row.
    pub convs: Strings,
    /// The closes' actors.
    pub actors: Interner,
    /// Key of the start user in `users`.
    pub user: Vec<u32>,
    /// Earliest start.
    pub started_at: Vec<i64>,
    /// Earliest teammate reply, [`NO_TIME_MIN`] without one.
    pub first_reply: Vec<i64>,
    /// Earliest bot answer, [`NO_TIME_MIN`] without one.
    pub first_bot: Vec<i64>,
    /// Latest close, [`NO_TIME_MAX`] without one.
    pub closed_at: Vec<i64>,
    /// The latest close's actor: key in `actors` plus one, 0 for NULL.
    pub closed_by: Vec<u32>,
    /// The latest rating's value, 0 when unrated.
    pub rating: Vec<u8>,
    /// Bot answers.
    pub bot_answers: Vec<u32>,
    /// Teammate replies.
    pub replies: Vec<u32>,
    /// Closes.
    pub closes: Vec<u32>,
}

/// One conversation's facts, as [`Facts`] holds them, with its strings.
#[derive(Debug, Clone, PartialEq)]
pub struct Fact<'a> {
    /// The start user's id.
    pub user: &'a [u8],
    /// Its conversation_id.
    pub conv: &'a [u8],
    /// The latest close's actor.
    pub closed_by: Option<&'a [u8]>,
    /// See [`Facts`].
    pub started_at: i64,
    /// See [`Facts`].
    pub first_reply: i64,
    /// See [`Facts`].
    pub first_bot: i64,
    /// See [`Facts`].
    pub closed_at: i64,
    /// See [`Facts`].
    pub rating: u8,
    /// See [`Facts`].
    pub bot_answers: u32,
    /// See [`Facts`].
    pub replies: u32,
    /// See [`Facts`].
    pub closes: u32,
}

impl Facts {
    /// Appends one conversation's facts.
    pub fn push(&mut self, f: &Fact<'_>) {
        self.push_hashed(f, hash_of(f.user));
    }

    /// [`Self::push`] with `user_hash == hash_of(f.user)` already computed
    /// (the caller chose the bucket by it).
    pub fn push_hashed(&mut self, f: &Fact<'_>, user_hash: u64) {
        let u = self.users.intern_hashed(f.user, user_hash);
        self.user.push(u);
        self.convs.push(f.conv);
        self.closed_by
            .push(f.closed_by.map_or(0, |a| self.actors.intern(a) + 1));
        self.started_at.push(f.started_at);
        self.first_reply.push(f.first_reply);
        self.first_bot.push(f.first_bot);
        self.closed_at.push(f.closed_at);
        self.rating.push(f.rating);
        self.bot_answers.push(f.bot_answers);
        self.replies.push(f.replies);
        self.closes.push(f.closes);
    }
}

impl Segment for Facts {
    const NAME: &'static str = "conversation facts";
    fn len(&self) -> usize {
        self.user.len()
    }
    fn seal(&mut self) {
        self.users.seal();
        self.actors.seal();
    }
    fn bytes(&self) -> usize {
        self.users.bytes()
            + self.convs.bytes()
            + self.actors.bytes()
            + vec_bytes(&self.user)
            + 4 * vec_bytes(&self.started_at)
            + vec_bytes(&self.closed_by)
            + vec_bytes(&self.rating)
            + 3 * vec_bytes(&self.bot_answers)
    }
    fn to_batch(&self) -> Result<RecordBatch> {
        let i = |n: &'static str| (n, DataType::Int64, false);
        let u = |n: &'static str| (n, DataType::UInt32, false);
        let s = schema(vec![
            ("user", dict_type(), false),
            ("conv", DataType::LargeUtf8, false),
            i("started_at"),
            i("first_reply"),
            i("first_bot"),
            i("closed_at"),
            u("closed_by"),
            ("rating", DataType::UInt8, false),
            u("bot_answers"),
            u("replies"),
            u("closes"),
            ("actors", dict_type(), true),
        ]);
        let n = self.user.len();
        let i64a = |v: &Vec<i64>| Arc::new(Int64Array::from(v.clone())) as ArrayRef;
        let u32a = |v: &Vec<u32>| Arc::new(UInt32Array::from(v.clone())) as ArrayRef;
        Ok(RecordBatch::try_new(
            s,
            vec![
                dict(&self.users, UInt32Array::from(self.user.clone()))?,
                self.convs.to_array(),
                i64a(&self.started_at),
                i64a(&self.first_reply),
                i64a(&self.first_bot),
                i64a(&self.closed_at),
                u32a(&self.closed_by),
                Arc::new(UInt8Array::from(self.rating.clone())),
                u32a(&self.bot_answers),
                u32a(&self.replies),
                u32a(&self.closes),
                dict(&self.actors, UInt32Array::new_null(n))?,
            ],
        )?)
    }
    fn from_batch(b: &RecordBatch) -> Result<Self> {
        let (keys, users) = undict(col(b, "user")?)?;
        let (_, actors) = undict(col(b, "actors")?)?;
        Ok(Self {
            users,
            convs: Strings::from_array(col(b, "conv")?.as_ref())?,
            actors,
            user: keys.values().to_vec(),
            started_at: i64s(b, "started_at")?,
            first_reply: i64s(b, "first_reply")?,
            first_bot: i64s(b, "first_bot")?,
            closed_at: i64s(b, "closed_at")?,
            closed_by: u32s(b, "closed_by")?,
            rating: u8s(b, "rating")?,
            bot_answers: u32s(b, "bot_answers")?,
            replies: u32s(b, "replies")?,
            closes: u32s(b, "closes")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_segment_keeps_its_strings_and_lets_go_of_its_tables() {
        use super::super::store::{Budget, Store};
        let env = Arc::new(datafusion::execution::runtime_env::RuntimeEnv::default());
        let budget = Budget::new(env, "test", false);
        let mut c = ConvRows::default();
        for n in 0..2000 {
            let conv = format!("c{n}");
            let h = super::super::intern::hash_of(conv.as_bytes());
            c.convs.intern_hashed(conv.as_bytes(), h);
        }
        c.others.intern(b"u9");
        assert!(c.convs.table_bytes() > 0 && c.others.table_bytes() > 0);
        let rows = ConvRows {
            convs: c.convs.clone(),
            others: c.others.clone(),
            conv: vec![1999, 0],
            ts: vec![1, 2],
            kind: vec![0, 0],
            extra: vec![0, 0],
        };
        let store = Store::<ConvRows>::new(1);
        store.add(0, rows, &budget, false).unwrap();
        let (parts, _) = store.load(0, &budget, false).unwrap();
        let p = &parts[0];
        assert_eq!((p.convs.table_bytes(), p.others.table_bytes()), (0, 0));
        assert_eq!((p.convs.str(p.conv[0]), p.others.str(0)), ("c1999", "u9"));
        // merged as before: the same keys
        let mut merged = Interner::default();
        merged.intern(b"c5");
        let map = merged.merge(&p.convs);
        assert_eq!((map[5], map[0], merged.len()), (0, 1, 2000));
    }

    #[test]
    fn segments_come_back_from_their_batches() {
        let mut a = Actions::default();
        for (u, t, k) in [("u1", 5, 0), ("u2", 1, 3), ("u1", 2, 2)] {
            a.push(
                u.as_bytes(),
                super::super::intern::hash_of(u.as_bytes()),
                t,
                k,
            );
        }
        let back = Actions::from_batch(&a.to_batch().unwrap()).unwrap();
        assert_eq!((back.user, back.ts, back.kind), (a.user, a.ts, a.kind));
        assert_eq!(back.users.str(1), "u2");

        let mut c = ConvRows::default();
        let who = c.others.intern(b"u9");
        c.push(b"c1", super::super::intern::hash_of(b"c1"), 7, 3, who);
        c.push(b"c1", super::super::intern::hash_of(b"c1"), 9, 7, 4);
        let back = ConvRows::from_batch(&c.to_batch().unwrap()).unwrap();
        assert_eq!((back.conv, back.extra), (c.conv, c.extra));
        assert_eq!(back.others.str(who), "u9");

        let mut f = Facts::default();
        f.push(&Fact {
            user: b"u1",
            conv: b"c1",
            closed_by: Some(b"bot"),
            started_at: 1,
            first_reply: NO_TIME_MIN,
            first_bot: 3,
            closed_at: 4,
            rating: 5,
            bot_answers: 1,
            replies: 0,
            closes: 1,
        });
        let back = Facts::from_batch(&f.to_batch().unwrap()).unwrap();
        assert_eq!(back.convs.str(0), "c1");
        assert_eq!(back.actors.str(back.closed_by[0] - 1), "bot");
        assert_eq!(back.first_reply, vec![NO_TIME_MIN]);
    }
}
