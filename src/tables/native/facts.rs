//! Conversation facts (spec §2 "Conversations", the `conversation_facts`
//! view), one conversation bucket at a time: the earliest start (its user
//! and time), the lifecycle counts, the first bot answer and teammate
//! reply, the latest close and its actor, the latest rating. A conversation
//! with no start row is not one: its lifecycle events are orphans (§1).
//!
//! Each started conversation's facts go to the user bucket of its start
//! user, where sessionization attaches them to that user's session.
//!
//! Ties the slim rows cannot settle — two earliest starts at one `ts` from
//! different users, two latest closes at one `ts` with different actors,
//! two latest ratings at one `ts` with different values — are broken by
//! `event_id` bytes as the view breaks them: those conversations' rows are
//! read again with their ids, once for all buckets ([`settle_ties`]).

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{col, lit};
use datafusion::prelude::SessionContext;

use super::dedup::{self, ConvKey, Dedup};
use super::intern::{bucket_of, hash_of, prefetch_at, Interner, PREFETCH_AHEAD};
use super::segments::{ConvRows, Fact, Facts, NO_TIME_MAX, NO_TIME_MIN};
use super::{HashMap, HashSet};
use crate::error::Result;
use crate::rules::{self, kind};

const NONE: u32 = u32::MAX;

/// One conversation's running aggregate (64 bytes: one cache line).
#[derive(Debug, Clone, Copy)]
struct Agg {
    /// The first start row's user (key in the bucket's `others`), NONE
    /// without a start row.
    start_user: u32,
    lifecycle: u32,
    bot_answers: u32,
    replies: u32,
    closes: u32,
    /// Latest close's actor: key in `others` plus one, 0 for NULL.
    closed_by: u32,
    started_at: i64,
    first_bot: i64,
    first_reply: i64,
    closed_at: i64,
    rating_at: i64,
    rating: u8,
    tied: bool,
}

impl Default for Agg {
    fn default() -> Self {
        Self {
            start_user: NONE,
            lifecycle: 0,
            bot_answers: 0,
            replies: 0,
            closes: 0,
            closed_by: 0,
            started_at: NO_TIME_MIN,
            first_bot: NO_TIME_MIN,
            first_reply: NO_TIME_MIN,
            closed_at: NO_TIME_MAX,
            rating_at: NO_TIME_MAX,
            rating: 0,
            tied: false,
        }
    }
}

/// A conversation whose facts wait for its ties to be settled.
#[derive(Debug, Clone)]
pub struct Tied {
    /// Its conversation_id.
    pub conv: String,
    /// The start user as the slim rows left it.
    pub user: String,
    /// The closes' actor as the slim rows left it.
    pub closed_by: Option<String>,
    started_at: i64,
    first_reply: i64,
    first_bot: i64,
    closed_at: i64,
    rating: u8,
    bot_answers: u32,
    replies: u32,
    closes: u32,
}

impl Tied {
    fn fact(&self) -> Fact<'_> {
        Fact {
            user: self.user.as_bytes(),
            conv: self.conv.as_bytes(),
            closed_by: self.closed_by.as_deref().map(str::as_bytes),
            started_at: self.started_at,
            first_reply: self.first_reply,
            first_bot: self.first_bot,
            closed_at: self.closed_at,
            rating: self.rating,
            bot_answers: self.bot_answers,
            replies: self.replies,
            closes: self.closes,
        }
    }
}

/// What one conversation bucket gives.
#[derive(Default)]
pub struct BucketFacts {
    /// Facts by user bucket.
    pub facts: Vec<Facts>,
    /// Valid, deduplicated lifecycle events without a start.
    pub orphans: u64,
    /// Conversations with ties to settle.
    pub tied: Vec<Tied>,
}

/// The facts of one conversation bucket's rows (`parts`), after deleting
/// the repeats in `losers`.
pub fn bucket_facts(
    parts: &[Arc<ConvRows>],
    losers: &HashMap<ConvKey, u32>,
    user_buckets: usize,
) -> Result<BucketFacts> {
    // One key space for the bucket's conversations and other strings.
    let mut convs = Interner::default();
    let mut others = Interner::default();
    let maps: Vec<(Vec<u32>, Vec<u32>)> = parts
        .iter()
        .map(|p| (convs.merge(&p.convs), others.merge(&p.others)))
        .collect();
    let mut losers = losers.clone();
    let loser_ts: HashSet<i64> = losers.keys().map(|k| k.ts).collect();
    let mut aggs = vec![Agg::default(); convs.len()];
    for (p, (cmap, omap)) in parts.iter().zip(&maps) {
        for i in 0..p.conv.len() {
            // the aggregate of a row a few rows on: rows come in no order of
            // their conversations', and the bucket's aggregates outgrow the
            // caches
            if let Some(&c) = p.conv.get(i + PREFETCH_AHEAD) {
                if let Some(&k) = cmap.get(c as usize) {
                    prefetch_at(&aggs, k as usize);
                }
            }
            let k = p.kind[i];
            let t = p.ts[i];
            let extra = p.extra[i];
            if !loser_ts.is_empty() && loser_ts.contains(&t) {
                let key = ConvKey {
                    conv: p.convs.str(p.conv[i]).to_string(),
                    ts: t,
                    kind: k,
                    other: match k {
                        kind::STARTED => Some(p.others.str(extra).to_string()),
                        kind::CLOSED if extra > 0 => Some(p.others.str(extra - 1).to_string()),
                        _ => None,
                    },
                    rating: if k == kind::RATED { extra } else { 0 },
                };
                if let Some(n) = losers.get_mut(&key).filter(|n| **n > 0) {
                    *n -= 1;
                    continue;
                }
            }
            let a = &mut aggs[cmap[p.conv[i] as usize] as usize];
            match k {
                kind::STARTED => {
                    let u = omap[extra as usize];
                    if t < a.started_at {
                        a.started_at = t;
                        a.start_user = u;
                    } else if t == a.started_at && u != a.start_user {
                        a.tied = true;
                    }
                }
                _ => {
                    a.lifecycle += 1;
                    match k {
                        kind::BOT_ANSWER => {
                            a.bot_answers += 1;
                            a.first_bot = a.first_bot.min(t);
                        }
                        kind::REPLY => {
                            a.replies += 1;
                            a.first_reply = a.first_reply.min(t);
                        }
                        kind::CLOSED => {
                            a.closes += 1;
                            let actor = if extra > 0 {
                                omap[extra as usize - 1] + 1
                            } else {
                                0
                            };
                            if t > a.closed_at {
                                a.closed_at = t;
                                a.closed_by = actor;
                            } else if t == a.closed_at && actor != a.closed_by {
                                a.tied = true;
                            }
                        }
                        kind::RATED => {
                            let r = extra as u8;
                            if t > a.rating_at {
                                a.rating_at = t;
                                a.rating = r;
                            } else if t == a.rating_at && r != a.rating {
                                a.tied = true;
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    let mut out = BucketFacts {
        facts: (0..user_buckets).map(|_| Facts::default()).collect(),
        ..BucketFacts::default()
    };
    for (c, a) in aggs.iter().enumerate() {
        // the start user's string, in two steps: its offsets, then its bytes
        if let Some(ahead) = aggs.get(c + 2 * PREFETCH_AHEAD) {
            if ahead.start_user != NONE {
                others.prefetch_key(ahead.start_user);
            }
        }
        if let Some(ahead) = aggs.get(c + PREFETCH_AHEAD) {
            if ahead.start_user != NONE {
                others.prefetch_bytes(ahead.start_user);
            }
        }
        if a.start_user == NONE {
            out.orphans += a.lifecycle as u64;
            continue;
        }
        let user = others.get(a.start_user);
        let closed_by = (a.closed_by > 0).then(|| others.get(a.closed_by - 1));
        let fact = Fact {
            user,
            conv: convs.get(c as u32),
            closed_by,
            started_at: a.started_at,
            first_reply: a.first_reply,
            first_bot: a.first_bot,
            closed_at: a.closed_at,
            rating: if a.rating_at == NO_TIME_MAX {
                0
            } else {
                a.rating
            },
            bot_answers: a.bot_answers,
            replies: a.replies,
            closes: a.closes,
        };
        if a.tied {
            out.tied.push(Tied {
                conv: convs.str(c as u32).to_string(),
                user: others.str(a.start_user).to_string(),
                closed_by: closed_by.map(|b| String::from_utf8_lossy(b).into_owned()),
                started_at: fact.started_at,
                first_reply: fact.first_reply,
                first_bot: fact.first_bot,
                closed_at: fact.closed_at,
                rating: fact.rating,
                bot_answers: fact.bot_answers,
                replies: fact.replies,
                closes: fact.closes,
            });
            continue;
        }
        let h = hash_of(user);
        out.facts[bucket_of(h, user_buckets)].push_hashed(&fact, h);
    }
    Ok(out)
}

/// Reads the rows of the tied conversations again, with their event_ids,
/// and settles the first start, the latest close and the latest rating as
/// the `conversation_facts` view does; returns the settled facts by user
/// bucket.
pub async fn settle_ties(
    ctx: &SessionContext,
    mut tied: Vec<Tied>,
    dedup: &Dedup,
    user_buckets: usize,
) -> Result<Vec<Facts>> {
    let mut out: Vec<Facts> = (0..user_buckets).map(|_| Facts::default()).collect();
    if tied.is_empty() {
        return Ok(out);
    }
    let ids: Vec<datafusion::logical_expr::Expr> = tied
        .iter()
        .map(|t| lit(ScalarValue::Utf8(Some(t.conv.clone()))))
        .collect();
    let rows = dedup::read_full_rows(ctx, col("conversation_id").in_list(ids, false)).await?;
    let mut seen: std::collections::HashSet<String> = Default::default();
    // (ts, event_id, value) of the first start, last close, last rating.
    type Best = Option<(i64, String, Option<String>)>;
    let mut best: HashMap<String, [Best; 3]> = HashMap::default();
    for r in rows {
        // A repeated event_id counts once, as its winning copy.
        if !dedup::counts(dedup, &r) || !seen.insert(r.event_id.clone()) {
            continue;
        }
        let Some(conv) = r.conversation_id.clone() else {
            continue;
        };
        let slot = best.entry(conv).or_default();
        let key = (r.ts, r.event_id.as_bytes());
        let earlier = |b: &Best| b.as_ref().is_none_or(|b| key < (b.0, b.1.as_bytes()));
        let later = |b: &Best| b.as_ref().is_none_or(|b| key > (b.0, b.1.as_bytes()));
        match rules::kind_of(r.event_type.as_bytes()) {
            Some(kind::STARTED) if earlier(&slot[0]) => {
                slot[0] = Some((r.ts, r.event_id.clone(), Some(r.user_id.clone())));
            }
            Some(kind::CLOSED) if later(&slot[1]) => {
                slot[1] = Some((r.ts, r.event_id.clone(), r.actor.clone()));
            }
            Some(kind::RATED) if later(&slot[2]) => {
                slot[2] = Some((r.ts, r.event_id.clone(), r.rating.map(|v| v.to_string())));
            }
            _ => {}
        }
    }
    for t in &mut tied {
        if let Some([start, close, rating]) = best.remove(&t.conv) {
            if let Some((_, _, Some(u))) = start {
                t.user = u;
            }
            if let Some((_, _, actor)) = close {
                t.closed_by = actor;
            }
            if let Some((_, _, v)) = rating {
                t.rating = v.and_then(|v| v.parse().ok()).unwrap_or(0);
            }
        }
        out[bucket_of(hash_of(t.user.as_bytes()), user_buckets)].push(&t.fact());
    }
    Ok(out)
}
