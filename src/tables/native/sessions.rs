//! Sessionization and the relations built on it (spec §2, the `sessions`,
//! `conversations` and `session_conversations` views), one user bucket at a
//! time.
//!
//! A bucket is first *finalized*: its segments merged into one key space,
//! repeats deleted, actions grouped by user (a counting sort) and sorted by
//! `ts` within each user, facts grouped by user. Then each query walks its
//! users: sessions start at the first action and cover exactly
//! [`rules::SESSION_SECONDS`]; a conversation belongs to the session of
//! its earliest start row.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, Int64Array, ListArray, PrimitiveArray,
    RecordBatch, StringBuilder,
};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Int64Type, Schema, SchemaRef, UInt32Type, UInt8Type,
};

use super::dedup::ActionKey;
use super::intern::{prefetch_at, Interner, Strings, PREFETCH_AHEAD};
use super::rules::{self, kind, SessionSummary};
use super::segments::{Actions, Facts, Segment, NO_TIME_MAX, NO_TIME_MIN};
use super::{HashMap, HashSet, Relation};
use crate::error::{Error, Result};

/// One user bucket, ready for sessionization.
#[derive(Default)]
pub struct UserBucket {
    users: Interner,
    /// `user_start[u]..user_start[u + 1]` index `ts`/`kind`.
    user_start: Vec<u32>,
    ts: Vec<i64>,
    kind: Vec<u8>,
    /// `fact_start[u]..fact_start[u + 1]` index the fact columns.
    fact_start: Vec<u32>,
    convs: Strings,
    actors: Interner,
    started_at: Vec<i64>,
    first_reply: Vec<i64>,
    first_bot: Vec<i64>,
    closed_at: Vec<i64>,
    closed_by: Vec<u32>,
    rating: Vec<u8>,
    bot_answers: Vec<u32>,
    replies: Vec<u32>,
    closes: Vec<u32>,
}

fn vb<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

impl UserBucket {
    /// Memory held, in bytes.
    pub fn bytes(&self) -> usize {
        self.users.bytes()
            + vb(&self.user_start)
            + vb(&self.ts)
            + vb(&self.kind)
            + vb(&self.fact_start)
            + self.convs.bytes()
            + self.actors.bytes()
            + 4 * vb(&self.started_at)
            + vb(&self.closed_by)
            + vb(&self.rating)
            + 3 * vb(&self.bot_answers)
    }

    /// Merges a bucket's action and fact segments, deleting the repeats in
    /// `losers`.
    pub fn finalize(
        actions: &[Arc<Actions>],
        facts: &[Arc<Facts>],
        losers: &HashMap<ActionKey, u32>,
    ) -> Self {
        let mut users = Interner::default();
        let amaps: Vec<Vec<u32>> = actions.iter().map(|a| users.merge(&a.users)).collect();
        let fmaps: Vec<Vec<u32>> = facts.iter().map(|f| users.merge(&f.users)).collect();
        let n_users = users.len();
        // Repeats to delete: flags per segment.
        let mut losers = losers.clone();
        let loser_ts: HashSet<i64> = losers.keys().map(|k| k.1).collect();
        let deleted: Vec<Vec<bool>> = actions
            .iter()
            .map(|a| {
                if loser_ts.is_empty() {
                    return Vec::new();
                }
                (0..a.user.len())
                    .map(|i| {
                        if !loser_ts.contains(&a.ts[i]) {
                            return false;
                        }
                        let key = (a.users.str(a.user[i]).to_string(), a.ts[i], a.kind[i]);
                        match losers.get_mut(&key).filter(|n| **n > 0) {
                            Some(n) => {
                                *n -= 1;
                                true
                            }
                            None => false,
                        }
                    })
                    .collect()
            })
            .collect();
        let is_deleted = |s: usize, i: usize| deleted[s].get(i).copied().unwrap_or(false);
        // Actions grouped by user (counting sort), each user's by ts.
        let mut user_start = vec![0u32; n_users + 1];
        for (s, (a, map)) in actions.iter().zip(&amaps).enumerate() {
            for (i, &u) in a.user.iter().enumerate() {
                if !is_deleted(s, i) {
                    user_start[map[u as usize] as usize + 1] += 1;
                }
            }
        }
        for u in 0..n_users {
            user_start[u + 1] += user_start[u];
        }
        let total = user_start[n_users] as usize;
        let mut ts = vec![0i64; total];
        let mut kinds = vec![0u8; total];
        let mut next = user_start.clone();
        for (s, (a, map)) in actions.iter().zip(&amaps).enumerate() {
            let place = |i: usize| a.user.get(i).and_then(|&u| map.get(u as usize));
            for i in 0..a.user.len() {
                // A user's place, then where its next action goes, loaded
                // rows ahead: users come in no order and the arrays outgrow
                // the caches. (A place read early can be a row behind when
                // the user has rows in between; it is only a hint.)
                if let Some(&u) = place(i + 2 * PREFETCH_AHEAD) {
                    prefetch_at(&next, u as usize);
                }
                if let Some(&u) = place(i + PREFETCH_AHEAD) {
                    if let Some(&at) = next.get(u as usize) {
                        prefetch_at(&ts, at as usize);
                        prefetch_at(&kinds, at as usize);
                    }
                }
                if is_deleted(s, i) {
                    continue;
                }
                let u = map[a.user[i] as usize] as usize;
                let at = next[u] as usize;
                next[u] += 1;
                ts[at] = a.ts[i];
                kinds[at] = a.kind[i];
            }
        }
        drop(next);
        let mut pairs: Vec<(i64, u8)> = Vec::new();
        for u in 0..n_users {
            let r = user_start[u] as usize..user_start[u + 1] as usize;
            if ts[r.clone()].is_sorted() {
                continue;
            }
            pairs.clear();
            pairs.extend(r.clone().map(|i| (ts[i], kinds[i])));
            pairs.sort_unstable();
            for (j, (t, k)) in r.zip(pairs.iter()) {
                ts[j] = *t;
                kinds[j] = *k;
            }
        }
        // Facts grouped by user.
        let mut fact_start = vec![0u32; n_users + 1];
        for (f, map) in facts.iter().zip(&fmaps) {
            for &u in &f.user {
                fact_start[map[u as usize] as usize + 1] += 1;
            }
        }
        for u in 0..n_users {
            fact_start[u + 1] += fact_start[u];
        }
        let nf = fact_start[n_users] as usize;
        let mut order = vec![(0u32, 0u32); nf];
        let mut next = fact_start.clone();
        for (s, (f, map)) in facts.iter().zip(&fmaps).enumerate() {
            for (i, &u) in f.user.iter().enumerate() {
                let u = map[u as usize] as usize;
                order[next[u] as usize] = (s as u32, i as u32);
                next[u] += 1;
            }
        }
        drop(next);
        let mut actors = Interner::default();
        let actor_maps: Vec<Vec<u32>> = facts.iter().map(|f| actors.merge(&f.actors)).collect();
        let mut out = UserBucket {
            users,
            user_start,
            ts,
            kind: kinds,
            fact_start,
            convs: Strings::with_capacity(nf, facts.iter().map(|f| f.convs.byte_len()).sum()),
            actors,
            started_at: Vec::with_capacity(nf),
            first_reply: Vec::with_capacity(nf),
            first_bot: Vec::with_capacity(nf),
            closed_at: Vec::with_capacity(nf),
            closed_by: Vec::with_capacity(nf),
            rating: Vec::with_capacity(nf),
            bot_answers: Vec::with_capacity(nf),
            replies: Vec::with_capacity(nf),
            closes: Vec::with_capacity(nf),
        };
        for (j, &(s, i)) in order.iter().enumerate() {
            // Facts are taken in their users' order, not where they lie:
            // the rows a few ahead are loaded first.
            if let Some(&(s, i)) = order.get(j + 2 * PREFETCH_AHEAD) {
                facts[s as usize].convs.prefetch_key(i);
            }
            if let Some(&(s, i)) = order.get(j + PREFETCH_AHEAD) {
                let (f, i) = (&facts[s as usize], i as usize);
                f.convs.prefetch_bytes(i as u32);
                prefetch_at(&f.started_at, i);
                prefetch_at(&f.first_reply, i);
                prefetch_at(&f.first_bot, i);
                prefetch_at(&f.closed_at, i);
                prefetch_at(&f.closed_by, i);
                prefetch_at(&f.rating, i);
                prefetch_at(&f.bot_answers, i);
                prefetch_at(&f.replies, i);
                prefetch_at(&f.closes, i);
            }
            let (f, i) = (&facts[s as usize], i as usize);
            out.convs.push(f.convs.str(i as u32).as_bytes());
            out.started_at.push(f.started_at[i]);
            out.first_reply.push(f.first_reply[i]);
            out.first_bot.push(f.first_bot[i]);
            out.closed_at.push(f.closed_at[i]);
            let by = f.closed_by[i];
            out.closed_by.push(if by == 0 {
                0
            } else {
                actor_maps[s as usize][by as usize - 1] + 1
            });
            out.rating.push(f.rating[i]);
            out.bot_answers.push(f.bot_answers[i]);
            out.replies.push(f.replies[i]);
            out.closes.push(f.closes[i]);
        }
        out
    }

    /// The rows of `relation` for the sessions starting in `range`
    /// (`[lo, hi)` in ticks), with the columns `columns` of the relation's
    /// schema.
    pub fn emit(
        &self,
        relation: Relation,
        columns: &[usize],
        range: (i64, i64),
        ts_type: &DataType,
        schema: &SchemaRef,
    ) -> Result<RecordBatch> {
        let day =
            rules::SESSION_SECONDS.saturating_mul(crate::functions::timestamps::ticks_per_second(
                crate::functions::timestamps::unit_of(ts_type),
            ));
        let want = |name: &str| {
            let full = relation.schema(ts_type);
            columns.iter().any(|&c| full.field(c).name() == name)
        };
        let mut out = Columns::new(relation, &want);
        if relation == Relation::Conversations
            && !want("session_start")
            && range == (i64::MIN, i64::MAX)
        {
            // Every conversation, without its session's start: its row
            // reads its own facts alone, so no session need be made (a
            // state's fold reads every id and start this way). A
            // conversation belongs to the session it started in, so it is
            // in the relation when it started at or after the user's first
            // action (the actions are in time order), as in the loop below.
            for u in 0..self.users.len() {
                let (lo, hi) = (self.user_start[u] as usize, self.user_start[u + 1] as usize);
                if lo == hi {
                    continue;
                }
                let first = self.ts[lo];
                let user = self.users.str(u as u32);
                for p in self.fact_start[u] as usize..self.fact_start[u + 1] as usize {
                    if self.started_at[p] >= first {
                        out.conversation(self, p, user, first, "");
                    }
                }
            }
            return out.finish(relation, columns, ts_type, schema);
        }
        let mut starts: Vec<usize> = Vec::new();
        // (session index, fact) of the user's facts, one buffer for all
        // users: a vector per session would be an allocation per session.
        let mut by_session: Vec<(usize, usize)> = Vec::new();
        for u in 0..self.users.len() {
            let (lo, hi) = (self.user_start[u] as usize, self.user_start[u + 1] as usize);
            if lo == hi {
                continue;
            }
            let ts = &self.ts[lo..hi];
            let kinds = &self.kind[lo..hi];
            starts.clear();
            let mut start = ts[0];
            starts.push(0);
            for (i, &t) in ts.iter().enumerate().skip(1) {
                if t >= start.saturating_add(day) {
                    start = t;
                    starts.push(i);
                }
            }
            let inside = |t: i64| t >= range.0 && t < range.1;
            if !starts.iter().any(|&i| inside(ts[i])) {
                continue;
            }
            let facts = self.fact_start[u] as usize..self.fact_start[u + 1] as usize;
            by_session.clear();
            for p in facts {
                let t = self.started_at[p];
                let j = starts.partition_point(|&i| ts[i] <= t);
                if j > 0 {
                    by_session.push((j - 1, p));
                }
            }
            by_session.sort_unstable();
            let mut next = 0;
            let user = self.users.str(u as u32);
            for (j, &first) in starts.iter().enumerate() {
                let session_start = ts[first];
                let from = next;
                while next < by_session.len() && by_session[next].0 == j {
                    next += 1;
                }
                let cs = by_session[from..next].iter().map(|&(_, p)| p);
                if !inside(session_start) {
                    continue;
                }
                let end = starts.get(j + 1).copied().unwrap_or(ts.len());
                let mut n = [0i64; 4];
                let mut first_self_serve = None::<i64>;
                let mut last_started = None::<i64>;
                for i in first..end {
                    let k = kinds[i];
                    n[k as usize] += 1;
                    if k == kind::SEARCH || k == kind::VIEW {
                        first_self_serve = Some(first_self_serve.map_or(ts[i], |m| m.min(ts[i])));
                    }
                    if k == kind::STARTED {
                        last_started = Some(last_started.map_or(ts[i], |m| m.max(ts[i])));
                    }
                }
                let resolved_views = (first..end)
                    .filter(|&i| kinds[i] == kind::VIEW && last_started.is_none_or(|l| ts[i] >= l))
                    .count() as i64;
                let mut automated = 0i64;
                let mut with_bot = 0i64;
                let mut first_bot = None::<i64>;
                let mut h: Option<usize> = None;
                for p in cs.clone() {
                    if self.automated(p) {
                        automated += 1;
                    } else if h.is_none_or(|hp| {
                        (self.started_at[p], self.convs.str(p as u32).as_bytes())
                            < (self.started_at[hp], self.convs.str(hp as u32).as_bytes())
                    }) {
                        h = Some(p);
                    }
                    if self.bot_answers[p] > 0 {
                        with_bot += 1;
                    }
                    if self.first_bot[p] != NO_TIME_MIN {
                        first_bot =
                            Some(first_bot.map_or(self.first_bot[p], |m| m.min(self.first_bot[p])));
                    }
                }
                let summary = SessionSummary {
                    article_views: n[kind::VIEW as usize],
                    automated,
                    first_self_serve,
                    first_bot_answer: first_bot,
                    first_human: h.map(|h| {
                        (
                            self.started_at[h],
                            (self.first_reply[h] != NO_TIME_MIN).then_some(self.first_reply[h]),
                        )
                    }),
                };
                let status = summary.status().as_str();
                match relation {
                    Relation::Sessions => {
                        let tried = n[kind::VIEW as usize] > 0
                            || n[kind::SEARCH as usize] > 0
                            || with_bot > 0;
                        out.session(SessionRow {
                            user,
                            session_start,
                            session_end: session_start.saturating_add(day),
                            status,
                            tried,
                            actions: (end - first) as i64,
                            counts: n,
                            conversations: cs.len() as i64,
                            automated,
                            with_bot,
                            first_human: h.map(|h| self.convs.str(h as u32)),
                            first_self_serve,
                            last_started,
                            resolved_views,
                        });
                    }
                    Relation::Conversations | Relation::SessionConversations => {
                        for p in cs {
                            out.conversation(self, p, user, session_start, status);
                        }
                    }
                    Relation::EventCounts => {}
                }
            }
        }
        out.finish(relation, columns, ts_type, schema)
    }

    fn automated(&self, p: usize) -> bool {
        let by_bot = self.closed_by[p] > 0
            && self.actors.get(self.closed_by[p] - 1) == rules::BOT_ACTOR.as_bytes();
        rules::automated(self.bot_answers[p], self.replies[p], by_bot)
    }
}

/// A whole array as the one value of a list column.
fn one_list(values: ArrayRef) -> ArrayRef {
    let field = Arc::new(Field::new_list_field(values.data_type().clone(), false));
    Arc::new(ListArray::new(
        field,
        OffsetBuffer::from_lengths([values.len()]),
        values,
        None,
    ))
}

fn list_of<T: ArrowPrimitiveType>(v: &[T::Native]) -> ArrayRef {
    one_list(Arc::new(PrimitiveArray::<T>::from_iter_values(
        v.iter().copied(),
    )))
}

/// The array that column `name` of `b` holds as its one list value.
fn unlist(b: &RecordBatch, name: &str) -> Result<ArrayRef> {
    let c = b
        .column_by_name(name)
        .ok_or_else(|| Error::Internal(format!("written bucket without `{name}`")))?;
    let l = c
        .as_list_opt::<i32>()
        .filter(|l| l.len() == 1)
        .ok_or_else(|| Error::Internal(format!("written bucket's `{name}` is not one list")))?;
    Ok(l.value(0))
}

fn values_of<T: ArrowPrimitiveType>(b: &RecordBatch, name: &str) -> Result<Vec<T::Native>> {
    let a = unlist(b, name)?;
    Ok(a.as_primitive_opt::<T>()
        .ok_or_else(|| Error::Internal(format!("written bucket's `{name}` has another type")))?
        .values()
        .to_vec())
}

/// A finalized bucket is written out whole when the pool cannot keep it,
/// so that each relation that reads it later reads it back instead of
/// finalizing it again: one row whose columns are lists, each holding one
/// of its vectors.
impl Segment for UserBucket {
    const NAME: &'static str = "finalized";
    fn len(&self) -> usize {
        self.users.len()
    }
    fn bytes(&self) -> usize {
        UserBucket::bytes(self)
    }
    fn seal(&mut self) {
        self.users.seal();
        self.actors.seal();
    }
    fn to_batch(&self) -> Result<RecordBatch> {
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("users", one_list(self.users.to_array())),
            ("user_start", list_of::<UInt32Type>(&self.user_start)),
            ("ts", list_of::<Int64Type>(&self.ts)),
            ("kind", list_of::<UInt8Type>(&self.kind)),
            ("fact_start", list_of::<UInt32Type>(&self.fact_start)),
            ("convs", one_list(self.convs.to_array())),
            ("actors", one_list(self.actors.to_array())),
            ("started_at", list_of::<Int64Type>(&self.started_at)),
            ("first_reply", list_of::<Int64Type>(&self.first_reply)),
            ("first_bot", list_of::<Int64Type>(&self.first_bot)),
            ("closed_at", list_of::<Int64Type>(&self.closed_at)),
            ("closed_by", list_of::<UInt32Type>(&self.closed_by)),
            ("rating", list_of::<UInt8Type>(&self.rating)),
            ("bot_answers", list_of::<UInt32Type>(&self.bot_answers)),
            ("replies", list_of::<UInt32Type>(&self.replies)),
            ("closes", list_of::<UInt32Type>(&self.closes)),
        ];
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|(n, a)| Field::new(*n, a.data_type().clone(), false))
                .collect::<Vec<_>>(),
        ));
        Ok(RecordBatch::try_new(
            schema,
            columns.into_iter().map(|(_, a)| a).collect(),
        )?)
    }
    fn from_batch(b: &RecordBatch) -> Result<Self> {
        Ok(Self {
            users: Interner::from_array(unlist(b, "users")?.as_ref())?,
            user_start: values_of::<UInt32Type>(b, "user_start")?,
            ts: values_of::<Int64Type>(b, "ts")?,
            kind: values_of::<UInt8Type>(b, "kind")?,
            fact_start: values_of::<UInt32Type>(b, "fact_start")?,
            convs: Strings::from_array(unlist(b, "convs")?.as_ref())?,
            actors: Interner::from_array(unlist(b, "actors")?.as_ref())?,
            started_at: values_of::<Int64Type>(b, "started_at")?,
            first_reply: values_of::<Int64Type>(b, "first_reply")?,
            first_bot: values_of::<Int64Type>(b, "first_bot")?,
            closed_at: values_of::<Int64Type>(b, "closed_at")?,
            closed_by: values_of::<UInt32Type>(b, "closed_by")?,
            rating: values_of::<UInt8Type>(b, "rating")?,
            bot_answers: values_of::<UInt32Type>(b, "bot_answers")?,
            replies: values_of::<UInt32Type>(b, "replies")?,
            closes: values_of::<UInt32Type>(b, "closes")?,
        })
    }
}

/// One session's values.
struct SessionRow<'a> {
    user: &'a str,
    session_start: i64,
    session_end: i64,
    status: &'static str,
    tried: bool,
    actions: i64,
    counts: [i64; 4],
    conversations: i64,
    automated: i64,
    with_bot: i64,
    first_human: Option<&'a str>,
    first_self_serve: Option<i64>,
    last_started: Option<i64>,
    resolved_views: i64,
}

/// Output columns being built; strings only when asked for.
struct Columns {
    user: Option<StringBuilder>,
    status: Option<StringBuilder>,
    conv: Option<StringBuilder>,
    closed_by: Option<StringBuilder>,
    first_human: Option<StringBuilder>,
    /// Numeric and time columns by name, in the relation's order.
    ints: Vec<(&'static str, Vec<Option<i64>>)>,
    bools: Vec<(&'static str, Vec<bool>)>,
    rating: Vec<Option<i32>>,
    /// Rows so far (a query may ask for no column at all).
    n: usize,
}

fn sb(yes: bool) -> Option<StringBuilder> {
    yes.then(StringBuilder::new)
}

impl Columns {
    fn new(relation: Relation, want: &dyn Fn(&str) -> bool) -> Self {
        let ints: &[&'static str] = match relation {
            Relation::Sessions => &[
                "session_start",
                "session_end",
                "actions",
                "help_center_visits",
                "article_searches",
                "article_views",
                "conversation_starts",
                "conversations",
                "human_conversations",
                "automated_conversations",
                "conversations_with_bot_answer",
                "first_self_serve_at",
                "last_conversation_started_at",
                "article_views_resolved",
            ],
            _ => &[
                "started_at",
                "session_start",
                "first_reply_at",
                "closed_at",
                "first_bot_answer_at",
                "bot_answers",
                "teammate_replies",
                "closes",
            ],
        };
        let bools: &[&'static str] = match relation {
            Relation::Sessions => &["tried_self_serve"],
            _ => &["automated"],
        };
        Self {
            user: sb(want("user_id")),
            status: sb(want("status")),
            conv: sb(want("conversation_id")),
            closed_by: sb(want("closed_by")),
            first_human: sb(want("first_human_conversation_id")),
            ints: ints
                .iter()
                .filter(|n| want(n))
                .map(|n| (*n, Vec::new()))
                .collect(),
            bools: bools
                .iter()
                .filter(|n| want(n))
                .map(|n| (*n, Vec::new()))
                .collect(),
            rating: Vec::new(),
            n: 0,
        }
    }

    fn int(&mut self, name: &str, v: Option<i64>) {
        if let Some((_, c)) = self.ints.iter_mut().find(|(n, _)| *n == name) {
            c.push(v);
        }
    }

    fn boolean(&mut self, name: &str, v: bool) {
        if let Some((_, c)) = self.bools.iter_mut().find(|(n, _)| *n == name) {
            c.push(v);
        }
    }

    fn session(&mut self, s: SessionRow<'_>) {
        self.n += 1;
        if let Some(b) = &mut self.user {
            b.append_value(s.user);
        }
        if let Some(b) = &mut self.status {
            b.append_value(s.status);
        }
        if let Some(b) = &mut self.first_human {
            b.append_option(s.first_human);
        }
        let n = s.counts;
        self.int("session_start", Some(s.session_start));
        self.int("session_end", Some(s.session_end));
        self.int("actions", Some(s.actions));
        self.int("help_center_visits", Some(n[kind::VISIT as usize]));
        self.int("article_searches", Some(n[kind::SEARCH as usize]));
        self.int("article_views", Some(n[kind::VIEW as usize]));
        self.int("conversation_starts", Some(n[kind::STARTED as usize]));
        self.int("conversations", Some(s.conversations));
        self.int("human_conversations", Some(s.conversations - s.automated));
        self.int("automated_conversations", Some(s.automated));
        self.int("conversations_with_bot_answer", Some(s.with_bot));
        self.int("first_self_serve_at", s.first_self_serve);
        self.int("last_conversation_started_at", s.last_started);
        self.int("article_views_resolved", Some(s.resolved_views));
        self.boolean("tried_self_serve", s.tried);
    }

    fn conversation(
        &mut self,
        b: &UserBucket,
        p: usize,
        user: &str,
        session_start: i64,
        status: &'static str,
    ) {
        self.n += 1;
        if let Some(c) = &mut self.conv {
            c.append_value(b.convs.str(p as u32));
        }
        if let Some(c) = &mut self.user {
            c.append_value(user);
        }
        if let Some(c) = &mut self.status {
            c.append_value(status);
        }
        if let Some(c) = &mut self.closed_by {
            let by = b.closed_by[p];
            c.append_option((by > 0).then(|| b.actors.str(by - 1)));
        }
        let opt_min = |v: i64| (v != NO_TIME_MIN).then_some(v);
        self.int("started_at", Some(b.started_at[p]));
        self.int("session_start", Some(session_start));
        self.int("first_reply_at", opt_min(b.first_reply[p]));
        self.int(
            "closed_at",
            (b.closed_at[p] != NO_TIME_MAX).then_some(b.closed_at[p]),
        );
        self.int("first_bot_answer_at", opt_min(b.first_bot[p]));
        self.int("bot_answers", Some(b.bot_answers[p] as i64));
        self.int("teammate_replies", Some(b.replies[p] as i64));
        self.int("closes", Some(b.closes[p] as i64));
        self.boolean("automated", b.automated(p));
        self.rating
            .push((b.rating[p] != 0).then_some(b.rating[p] as i32));
    }

    fn finish(
        mut self,
        relation: Relation,
        columns: &[usize],
        ts_type: &DataType,
        schema: &SchemaRef,
    ) -> Result<RecordBatch> {
        let rows = self.n;
        let full = relation.schema(ts_type);
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len());
        for &c in columns {
            let field = full.field(c);
            let name = field.name().as_str();
            let take = |b: &mut Option<StringBuilder>| -> ArrayRef {
                Arc::new(
                    b.as_mut()
                        .map(|b| b.finish())
                        .unwrap_or_else(|| datafusion::arrow::array::StringArray::new_null(0)),
                )
            };
            let a: ArrayRef = match name {
                "user_id" => take(&mut self.user),
                "status" => take(&mut self.status),
                "conversation_id" => take(&mut self.conv),
                "closed_by" => take(&mut self.closed_by),
                "first_human_conversation_id" => take(&mut self.first_human),
                "rating" => Arc::new(Int32Array::from(std::mem::take(&mut self.rating))),
                "tried_self_serve" | "automated" => {
                    let v = self
                        .bools
                        .iter_mut()
                        .find(|(n, _)| *n == name)
                        .map(|(_, v)| std::mem::take(v))
                        .unwrap_or_default();
                    Arc::new(BooleanArray::from(v))
                }
                _ => {
                    let v = self
                        .ints
                        .iter_mut()
                        .find(|(n, _)| *n == name)
                        .map(|(_, v)| std::mem::take(v))
                        .unwrap_or_default();
                    let a: ArrayRef = Arc::new(Int64Array::from(v));
                    if field.data_type() == &DataType::Int64 {
                        a
                    } else {
                        cast(&a, field.data_type())?
                    }
                }
            };
            arrays.push(a);
        }
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(schema),
            arrays,
            &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows)),
        )?)
    }
}
