//! Synthetic support data in the contract schema (spec §1), deterministic for
//! a seed, Hive-partitioned by day: `OUT/events/date=YYYY-MM-DD/part-N.parquet`
//! and `OUT/messages/date=…/part-N.parquet`.
//!
//! What it models, so that the report has something real to find:
//! * heavy-tailed activity: each user's daily episode rate is Pareto
//!   distributed (most users have a handful of episodes or none, a few have
//!   hundreds), lower on weekends, with diurnal timing;
//! * episodes mixing Help Center visits, searches, article views and
//!   conversations (Messenger or email), with bot answers, teammate replies
//!   minutes to hours later, closes hours to days later (so in later
//!   partitions), reopened conversations closed twice, and ratings;
//! * proactive messages with tags, content types, senders, opens, clicks and
//!   reactions;
//! * every edge case the spec names, at small rates: duplicate event ids in
//!   the same file and across files, `content_showcase` rows, each reject
//!   reason, invalid copies of valid events, orphan lifecycle events, actions
//!   exactly 24 h after an episode start, equal timestamps, sessions crossing
//!   midnight, duplicate and null message ids, null `sent_at`.
//!
//! Rows that would fall after the last day are not written, as in an export
//! taken at the end of that day.
//!
//! It streams day by day: only the current day and the lifecycle events
//! already scheduled for later days are in memory, and a day is written in
//! parts of at most [`ROWS_PER_FILE`] rows. Parquet encoding runs on a second
//! thread. The whole dataset is written under a temporary directory and
//! renamed into place at the end, so a failed run leaves nothing behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use chrono::{Datelike, NaiveDate, Weekday};
use datafusion::arrow::array::{
    ArrayRef, Int32Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use rand::distr::weighted::WeightedIndex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::weighted::WeightedAliasIndex;
use rand_distr::{Distribution, LogNormal, Pareto, Poisson, Zipf};

use crate::error::{Error, Result};

/// Most rows written to one Parquet file; a larger day is split into parts.
pub const ROWS_PER_FILE: usize = 1_000_000;

/// Average support episodes per user per weekday, before the heavy tail is
/// normalised: tuned so that 20,000 users over 90 days give about 1M events.
const EPISODES_PER_USER_DAY: f64 = 0.156;
/// Average proactive deliveries per user per day.
const MESSAGES_PER_USER_DAY: f64 = 0.05;
/// Rate of each kind of edge case, per episode.
const EDGE_RATE: f64 = 0.002;

const MICROS_PER_SEC: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOptions {
    /// Output directory (must not exist, or be empty, unless `overwrite`).
    pub out: PathBuf,
    /// Number of distinct users.
    pub users: u64,
    /// Number of days, starting at `start`.
    pub days: u32,
    /// Seed: the same seed and sizes give byte-identical data.
    pub seed: u64,
    /// First day (UTC).
    pub start: NaiveDate,
    /// Replace an existing non-empty output directory.
    pub overwrite: bool,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

/// What was generated.
#[derive(Debug, Clone, Default)]
pub struct GenStats {
    /// Rows written to `events`.
    pub events: u64,
    /// Rows written to `messages`.
    pub messages: u64,
    /// Parquet files written.
    pub files: u64,
    /// Wall time.
    pub seconds: f64,
}

/// The Arrow schema of generated `events` (the contract's, spec §1).
pub fn events_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, true),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("ts", ts, true),
        Field::new("event_type", DataType::Utf8, true),
        Field::new("channel", DataType::Utf8, true),
        Field::new("article_id", DataType::Utf8, true),
        Field::new("conversation_id", DataType::Utf8, true),
        Field::new("actor", DataType::Utf8, true),
        Field::new("rating", DataType::Int32, true),
    ]))
}

/// The Arrow schema of generated `messages` (the contract's, spec §1).
pub fn messages_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Arc::new(Schema::new(vec![
        Field::new("message_id", DataType::Utf8, true),
        Field::new("user_id", DataType::Utf8, true),
        Field::new("sent_at", ts.clone(), true),
        Field::new("content_type", DataType::Utf8, true),
        Field::new("sender", DataType::Utf8, true),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
        Field::new("opened_at", ts.clone(), true),
        Field::new("clicked_at", ts.clone(), true),
        Field::new("reacted_at", ts, true),
    ]))
}

/// One `events` row.
#[derive(Debug, Clone, Default)]
struct Ev {
    event_id: Option<String>,
    user_id: Option<String>,
    ts: Option<i64>,
    event_type: Option<&'static str>,
    channel: Option<&'static str>,
    article_id: Option<String>,
    conversation_id: Option<String>,
    actor: Option<&'static str>,
    rating: Option<i32>,
}

/// One `messages` row.
#[derive(Debug, Clone, Default)]
struct Msg {
    message_id: Option<String>,
    user_id: String,
    sent_at: Option<i64>,
    content_type: &'static str,
    sender: String,
    tags: Option<Vec<&'static str>>,
    opened_at: Option<i64>,
    clicked_at: Option<i64>,
    reacted_at: Option<i64>,
}

/// Work for the writer thread.
enum Job {
    Write(PathBuf, RecordBatch),
}

fn writer_thread(rx: Receiver<Job>) -> Result<u64> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .build();
    let mut files = 0;
    for job in rx {
        let Job::Write(path, batch) = job;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props.clone()))?;
        w.write(&batch)?;
        w.close()?;
        files += 1;
    }
    Ok(files)
}

/// The per-run random model: user rates and the distributions drawn from.
struct Model {
    user_pick: WeightedAliasIndex<f64>,
    daily_episodes: f64,
    hour: WeightedIndex<f64>,
    article: Zipf<f64>,
    step: LogNormal<f64>,
    reply: LogNormal<f64>,
    close: LogNormal<f64>,
    open_delay: LogNormal<f64>,
}

impl Model {
    fn new(users: u64, seed: u64) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x05EE_D0F0_5E75);
        // Pareto(shape 1.2) capped at 400: median ~1.8, a few users ~100x
        // more active than the median.
        let pareto: Pareto<f64> = Pareto::new(1.0, 1.2).map_err(bad_param)?;
        let rates: Vec<f64> = (0..users)
            .map(|_| pareto.sample(&mut rng).min(400.0))
            .collect();
        let user_pick = WeightedAliasIndex::new(rates).map_err(bad_param)?;
        // UTC hour weights: quiet nights, busy working hours.
        let hour_w = [
            2.0, 1.5, 1.0, 1.0, 1.0, 1.5, 3.0, 5.0, 8.0, 10.0, 11.0, 11.0, 10.0, 10.0, 11.0, 11.0,
            10.0, 9.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.5,
        ];
        Ok(Self {
            user_pick,
            daily_episodes: users as f64 * EPISODES_PER_USER_DAY,
            hour: WeightedIndex::new(hour_w).map_err(bad_param)?,
            article: Zipf::new(2000.0, 1.1).map_err(bad_param)?,
            // between two actions of an episode: median ~50 s
            step: LogNormal::new(3.9, 1.0).map_err(bad_param)?,
            // first reply: median ~15 min, tail of hours
            reply: LogNormal::new(6.8, 1.2).map_err(bad_param)?,
            // close after the reply: median ~4 h, tail of days
            close: LogNormal::new(9.6, 1.3).map_err(bad_param)?,
            open_delay: LogNormal::new(7.0, 1.5).map_err(bad_param)?,
        })
    }
}

fn bad_param(e: impl std::fmt::Display) -> Error {
    Error::invalid(format!("generator model: {e}"))
}

/// Mixes the run seed with a day number into an independent stream seed.
fn day_seed(seed: u64, day: u32, salt: u64) -> u64 {
    // splitmix64 finaliser
    let mut z = seed ^ (u64::from(day) << 20) ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Generator state carried across days.
struct Gen {
    model: Model,
    next_event: u64,
    next_conversation: u64,
    next_message: u64,
    /// Rows already produced for a later day (closes, late replies, copies).
    pending: BTreeMap<i64, Vec<Ev>>,
}

impl Gen {
    fn event_id(&mut self) -> String {
        self.next_event += 1;
        format!("e{:012}", self.next_event)
    }

    fn conversation_id(&mut self) -> String {
        self.next_conversation += 1;
        format!("c{:010}", self.next_conversation)
    }

    fn ev(&mut self, user: &str, ts: i64, event_type: &'static str) -> Ev {
        Ev {
            event_id: Some(self.event_id()),
            user_id: Some(user.to_string()),
            ts: Some(ts),
            event_type: Some(event_type),
            ..Ev::default()
        }
    }

    fn secs(d: &LogNormal<f64>, rng: &mut ChaCha8Rng) -> i64 {
        // at least one second, at most 20 days
        let s = d.sample(rng).clamp(1.0, 20.0 * 86_400.0);
        (s * MICROS_PER_SEC as f64) as i64 + rng.random_range(0..MICROS_PER_SEC)
    }

    fn article(&self, rng: &mut ChaCha8Rng) -> String {
        format!("a{:05}", self.model.article.sample(rng) as u64)
    }

    /// A conversation: start, then bot answers / teammate replies / closes /
    /// rating according to `kind`. Returns the rows (any day).
    fn conversation(
        &mut self,
        rng: &mut ChaCha8Rng,
        user: &str,
        start: i64,
        bot_first: bool,
        out: &mut Vec<Ev>,
    ) {
        let cid = self.conversation_id();
        let channel = if rng.random_bool(0.8) {
            "messenger"
        } else {
            "email"
        };
        let mut e = self.ev(user, start, "conversation_started");
        e.channel = Some(channel);
        e.conversation_id = Some(cid.clone());
        out.push(e);
        let mut t = start;
        let mut escalated = true;
        if bot_first && channel == "messenger" {
            t += rng.random_range(2..30) * MICROS_PER_SEC;
            let mut b = self.ev(user, t, "bot_answer");
            b.conversation_id = Some(cid.clone());
            b.actor = Some("bot");
            b.channel = Some(channel);
            out.push(b);
            if rng.random_bool(0.15) {
                t += Self::secs(&self.model.step, rng);
                let mut b = self.ev(user, t, "bot_answer");
                b.conversation_id = Some(cid.clone());
                b.actor = Some("bot");
                b.channel = Some(channel);
                out.push(b);
            }
            escalated = rng.random_bool(0.4);
            if !escalated {
                // resolved by the bot: closed by it (most of the time)
                t += Self::secs(&self.model.step, rng) * 3;
                let mut c = self.ev(user, t, "conversation_closed");
                c.conversation_id = Some(cid.clone());
                c.actor = Some(if rng.random_bool(0.9) {
                    "bot"
                } else {
                    "teammate"
                });
                out.push(c);
            }
        }
        if escalated {
            if rng.random_bool(0.93) {
                t += Self::secs(&self.model.reply, rng);
                let replies = 1 + rng.random_range(0..3);
                for _ in 0..replies {
                    let mut r = self.ev(user, t, "teammate_reply");
                    r.conversation_id = Some(cid.clone());
                    r.actor = Some("teammate");
                    r.channel = Some(channel);
                    out.push(r);
                    t += Self::secs(&self.model.reply, rng);
                }
            }
            if rng.random_bool(0.85) {
                t += Self::secs(&self.model.close, rng);
                let mut c = self.ev(user, t, "conversation_closed");
                c.conversation_id = Some(cid.clone());
                c.actor = Some(if rng.random_bool(0.97) {
                    "teammate"
                } else {
                    "bot"
                });
                out.push(c);
                if rng.random_bool(0.03) {
                    // reopened, answered and closed again later
                    t += Self::secs(&self.model.close, rng);
                    let mut r = self.ev(user, t, "teammate_reply");
                    r.conversation_id = Some(cid.clone());
                    r.actor = Some("teammate");
                    out.push(r);
                    t += Self::secs(&self.model.step, rng);
                    let mut c = self.ev(user, t, "conversation_closed");
                    c.conversation_id = Some(cid.clone());
                    c.actor = Some("teammate");
                    out.push(c);
                }
            }
        }
        if rng.random_bool(0.35) {
            t += Self::secs(&self.model.step, rng) * 10;
            let mut r = self.ev(user, t, "conversation_rated");
            r.conversation_id = Some(cid);
            r.rating = if rng.random_bool(0.03) {
                None
            } else {
                Some(
                    *[1, 2, 3, 4, 4, 5, 5, 5]
                        .get(rng.random_range(0..8))
                        .unwrap_or(&5),
                )
            };
            out.push(r);
        }
    }

    /// One support episode of `user` starting at `t0`.
    fn episode(&mut self, rng: &mut ChaCha8Rng, user: &str, t0: i64, out: &mut Vec<Ev>) {
        let first = out.len();
        let mut t = t0;
        let kind = rng.random_range(0..100);
        let step = |rng: &mut ChaCha8Rng, m: &Model| Self::secs(&m.step, rng);
        let push_search = |g: &mut Self, t: i64, ch: &'static str, out: &mut Vec<Ev>| {
            let mut e = g.ev(user, t, "article_search");
            e.channel = Some(ch);
            out.push(e);
        };
        let ch = if rng.random_bool(0.6) {
            "help_center"
        } else {
            "messenger"
        };
        if ch == "help_center" || rng.random_bool(0.2) {
            let mut e = self.ev(user, t, "help_center_visit");
            e.channel = Some("help_center");
            out.push(e);
            t += step(rng, &self.model);
        }
        match kind {
            // visits and maybe a search, then nothing: a stopped session
            0..=17 => {
                if out.len() == first || rng.random_bool(0.5) {
                    push_search(self, t, ch, out);
                }
            }
            // self-serve with articles
            18..=49 => {
                if rng.random_bool(0.7) {
                    push_search(self, t, ch, out);
                    t += step(rng, &self.model);
                }
                for _ in 0..1 + rng.random_range(0..3) {
                    let mut e = self.ev(user, t, "article_view");
                    e.channel = Some(ch);
                    e.article_id = Some(self.article(rng));
                    out.push(e);
                    t += step(rng, &self.model);
                }
            }
            // articles, then a conversation
            50..=62 => {
                push_search(self, t, ch, out);
                t += step(rng, &self.model);
                if rng.random_bool(0.6) {
                    let mut e = self.ev(user, t, "article_view");
                    e.channel = Some(ch);
                    e.article_id = Some(self.article(rng));
                    out.push(e);
                    t += step(rng, &self.model);
                }
                let bot = rng.random_bool(0.4);
                self.conversation(rng, user, t, bot, out);
            }
            // straight to a human
            63..=79 => self.conversation(rng, user, t, false, out),
            // a bot first
            _ => self.conversation(rng, user, t, true, out),
        }
        // A follow-up the next day: sometimes inside the 24 h, sometimes not,
        // sometimes exactly at the end of the first session.
        let follow = rng.random_range(0..1000);
        if follow < 80 {
            let at = if follow < 10 {
                t0 + MICROS_PER_DAY
            } else {
                t0 + rng.random_range(18 * 3600..32 * 3600) * MICROS_PER_SEC
            };
            if rng.random_bool(0.7) {
                let mut e = self.ev(user, at, "article_view");
                e.channel = Some("help_center");
                e.article_id = Some(self.article(rng));
                out.push(e);
            } else {
                let bot = rng.random_bool(0.5);
                self.conversation(rng, user, at, bot, out);
            }
        }
        self.edge_cases(rng, user, t0, first, out);
    }

    /// Adds the spec's corner cases, each at [`EDGE_RATE`] per episode.
    fn edge_cases(
        &mut self,
        rng: &mut ChaCha8Rng,
        user: &str,
        t0: i64,
        first: usize,
        out: &mut Vec<Ev>,
    ) {
        let n = out.len() - first;
        if n == 0 {
            return;
        }
        let hit = |rng: &mut ChaCha8Rng| rng.random_bool(EDGE_RATE);
        if hit(rng) {
            // exact duplicate in the same file
            let c = out[first + rng.random_range(0..n)].clone();
            out.push(c);
        }
        if hit(rng) {
            // duplicate in the next day's file (the partition is only a location)
            let c = out[first + rng.random_range(0..n)].clone();
            let day = c.ts.unwrap_or(t0).div_euclid(MICROS_PER_DAY) + 1;
            self.pending.entry(day).or_default().push(c);
        }
        if hit(rng) {
            // an invalid copy of a valid event: a reject, not a duplicate
            let mut c = out[first + rng.random_range(0..n)].clone();
            c.rating = Some(9);
            out.push(c);
        }
        if hit(rng) {
            let mut e = self.ev(user, t0 + 5 * MICROS_PER_SEC, "article_view");
            e.channel = Some("content_showcase");
            e.article_id = Some(self.article(rng));
            out.push(e);
        }
        if hit(rng) {
            // two actions at the same instant
            let mut e = self.ev(user, t0, "article_search");
            e.channel = Some("help_center");
            out.push(e);
        }
        if hit(rng) {
            let mut e = self.ev(user, t0 + 1, "article_view");
            e.event_id = None;
            out.push(e);
        }
        if hit(rng) {
            let mut e = self.ev(user, t0 + 2, "article_search");
            e.user_id = None;
            out.push(e);
        }
        if hit(rng) {
            let mut e = self.ev(user, t0, "help_center_visit");
            e.ts = None;
            out.push(e);
        }
        if hit(rng) {
            let mut e = self.ev(user, t0 + 3, "help_center_visit");
            e.event_type = None;
            out.push(e);
        }
        if hit(rng) {
            let mut e = self.ev(user, t0 + 4, "help_center_visit");
            e.event_type = Some("page_view");
            out.push(e);
        }
        if hit(rng) {
            let mut e = self.ev(user, t0 + 5, "teammate_reply");
            e.actor = Some("teammate");
            out.push(e);
        }
        if hit(rng) {
            let cid = self.conversation_id();
            let mut e = self.ev(user, t0 + 6 * MICROS_PER_SEC, "conversation_rated");
            e.conversation_id = Some(cid);
            e.rating = Some(if rng.random_bool(0.5) { 0 } else { 6 });
            out.push(e);
        }
        if hit(rng) {
            // lifecycle events of a conversation that never started
            let cid = format!("orphan-{}", self.conversation_id());
            let mut e = self.ev(user, t0 + 60 * MICROS_PER_SEC, "teammate_reply");
            e.conversation_id = Some(cid.clone());
            e.actor = Some("teammate");
            out.push(e);
            let mut e = self.ev(user, t0 + 3600 * MICROS_PER_SEC, "conversation_closed");
            e.conversation_id = Some(cid);
            e.actor = Some("teammate");
            out.push(e);
        }
    }

    fn messages(
        &mut self,
        rng: &mut ChaCha8Rng,
        users: u64,
        day_start: i64,
        out: &mut Vec<Msg>,
    ) -> Result<()> {
        const TYPES: [(&str, f64); 6] = [
            ("chat", 30.0),
            ("post", 20.0),
            ("email", 25.0),
            ("tooltip_group", 8.0),
            ("banner", 10.0),
            ("push", 7.0),
        ];
        const TAGS: [&str; 6] = [
            "outage",
            "maintenance",
            "billing",
            "onboarding",
            "feature",
            "security",
        ];
        let type_pick = WeightedIndex::new(TYPES.iter().map(|t| t.1)).map_err(bad_param)?;
        let n = Poisson::new((users as f64 * MESSAGES_PER_USER_DAY).max(1e-9))
            .map_err(bad_param)?
            .sample(rng) as u64;
        for _ in 0..n {
            self.next_message += 1;
            let sent = day_start
                + self.model.hour.sample(rng) as i64 * 3600 * MICROS_PER_SEC
                + rng.random_range(0..3600 * MICROS_PER_SEC);
            let sender = match rng.random_range(0..10) {
                0..=3 => "support_team".to_string(),
                4..=6 => "marketing_team".to_string(),
                _ => format!("tm_{:03}", rng.random_range(0..40)),
            };
            let tags = match rng.random_range(0..100) {
                0..=19 => None,
                20..=24 => Some(vec![]),
                _ => {
                    let mut v = vec![TAGS[rng.random_range(0..TAGS.len())]];
                    if rng.random_bool(0.3) {
                        let t = TAGS[rng.random_range(0..TAGS.len())];
                        if !v.contains(&t) {
                            v.push(t);
                        }
                    }
                    Some(v)
                }
            };
            let opened_at = rng
                .random_bool(0.45)
                .then(|| sent + Self::secs(&self.model.open_delay, rng));
            let clicked_at = opened_at
                .filter(|_| rng.random_bool(0.25))
                .map(|o| o + Self::secs(&self.model.step, rng));
            let reacted_at = opened_at
                .filter(|_| rng.random_bool(0.1))
                .map(|o| o + Self::secs(&self.model.step, rng));
            let mut m = Msg {
                message_id: Some(format!("m{:012}", self.next_message)),
                user_id: format!("u{:08}", rng.random_range(0..users)),
                sent_at: Some(sent),
                content_type: TYPES[type_pick.sample(rng)].0,
                sender,
                tags,
                opened_at,
                clicked_at,
                reacted_at,
            };
            match rng.random_range(0..1000) {
                0..=2 => out.push(m.clone()), // duplicate delivery row
                3 => m.message_id = None,
                4 => m.sent_at = None,
                _ => {}
            }
            out.push(m);
        }
        Ok(())
    }
}

fn events_batch(rows: &[Ev]) -> Result<RecordBatch> {
    let mut id = StringBuilder::new();
    let mut user = StringBuilder::new();
    let mut ts = TimestampMicrosecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
    let mut ty = StringBuilder::new();
    let mut ch = StringBuilder::new();
    let mut art = StringBuilder::new();
    let mut conv = StringBuilder::new();
    let mut actor = StringBuilder::new();
    let mut rating = Int32Builder::with_capacity(rows.len());
    for r in rows {
        id.append_option(r.event_id.as_deref());
        user.append_option(r.user_id.as_deref());
        ts.append_option(r.ts);
        ty.append_option(r.event_type);
        ch.append_option(r.channel);
        art.append_option(r.article_id.as_deref());
        conv.append_option(r.conversation_id.as_deref());
        actor.append_option(r.actor);
        rating.append_option(r.rating);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(user.finish()),
        Arc::new(ts.finish()),
        Arc::new(ty.finish()),
        Arc::new(ch.finish()),
        Arc::new(art.finish()),
        Arc::new(conv.finish()),
        Arc::new(actor.finish()),
        Arc::new(rating.finish()),
    ];
    Ok(RecordBatch::try_new(events_schema(), cols)?)
}

fn messages_batch(rows: &[Msg]) -> Result<RecordBatch> {
    let ts = || TimestampMicrosecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
    let mut id = StringBuilder::new();
    let mut user = StringBuilder::new();
    let mut sent = ts();
    let mut ctype = StringBuilder::new();
    let mut sender = StringBuilder::new();
    let mut tags = ListBuilder::new(StringBuilder::new());
    let (mut opened, mut clicked, mut reacted) = (ts(), ts(), ts());
    for m in rows {
        id.append_option(m.message_id.as_deref());
        user.append_value(&m.user_id);
        sent.append_option(m.sent_at);
        ctype.append_value(m.content_type);
        sender.append_value(&m.sender);
        match &m.tags {
            None => tags.append_null(),
            Some(v) => {
                for t in v {
                    tags.values().append_value(t);
                }
                tags.append(true);
            }
        }
        opened.append_option(m.opened_at);
        clicked.append_option(m.clicked_at);
        reacted.append_option(m.reacted_at);
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(id.finish()),
        Arc::new(user.finish()),
        Arc::new(sent.finish()),
        Arc::new(ctype.finish()),
        Arc::new(sender.finish()),
        Arc::new(tags.finish()),
        Arc::new(opened.finish()),
        Arc::new(clicked.finish()),
        Arc::new(reacted.finish()),
    ];
    // The list builder names its item field "item", as the schema does.
    Ok(RecordBatch::try_new(messages_schema(), cols)?)
}

fn send(tx: &SyncSender<Job>, path: PathBuf, batch: RecordBatch) -> Result<()> {
    tx.send(Job::Write(path, batch))
        .map_err(|_| Error::invalid("generator: the Parquet writer thread stopped"))
}

/// Most users `gen` accepts: the per-user model holds 8 bytes a user, and
/// 50M users over 90 days are about 2.5 billion events already.
pub const MAX_USERS: u64 = 50_000_000;
/// Most days `gen` accepts (ten years).
pub const MAX_DAYS: u32 = 3_660;
/// Earliest first day `gen` accepts.
pub const MIN_START: NaiveDate = NaiveDate::from_ymd_opt(1900, 1, 1).expect("valid date");
/// Latest last day `gen` accepts: four-digit years only, so every day
/// partition name is `date=YYYY-MM-DD`.
pub const MAX_END: NaiveDate = NaiveDate::from_ymd_opt(9999, 12, 31).expect("valid date");

/// Every option in its range, with a one-line error naming the flag.
fn check_options(opts: &GenOptions) -> Result<()> {
    if !(1..=MAX_USERS).contains(&opts.users) {
        return Err(Error::invalid(format!(
            "--users {} is out of range: give 1 to {MAX_USERS}",
            opts.users
        )));
    }
    if !(1..=MAX_DAYS).contains(&opts.days) {
        return Err(Error::invalid(format!(
            "--days {} is out of range: give 1 to {MAX_DAYS}",
            opts.days
        )));
    }
    let last = opts
        .start
        .checked_add_signed(chrono::Duration::days(i64::from(opts.days) - 1));
    if opts.start < MIN_START || last.is_none_or(|l| l > MAX_END) {
        return Err(Error::invalid(format!(
            "--start {} with --days {} is out of range: the days must lie within {MIN_START}..{MAX_END}",
            opts.start, opts.days
        )));
    }
    Ok(())
}

/// Checks `out` and returns the temporary sibling directory to write into.
fn prepare_out(out: &Path, overwrite: bool) -> Result<PathBuf> {
    if out.exists() {
        let non_empty = std::fs::read_dir(out)
            .map_err(|e| Error::io(out, e))?
            .next()
            .is_some();
        if non_empty && !overwrite {
            return Err(Error::invalid(format!(
                "{}: exists and is not empty (pass --overwrite to replace it)",
                out.display()
            )));
        }
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    Ok(tmp)
}

/// Generates the dataset described by `opts`.
pub fn generate(opts: &GenOptions) -> Result<GenStats> {
    check_options(opts)?;
    let started = Instant::now();
    let tmp = prepare_out(&opts.out, opts.overwrite)?;
    let _registered = crate::scratch::register(&tmp);
    // An interrupt that came as the last file was written still publishes
    // nothing.
    let result = generate_into(opts, &tmp).and_then(|stats| {
        crate::scratch::check()?;
        Ok(stats)
    });
    match result {
        Ok(mut stats) => {
            if opts.out.exists() {
                std::fs::remove_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
            }
            std::fs::rename(&tmp, &opts.out).map_err(|e| Error::io(&opts.out, e))?;
            stats.seconds = started.elapsed().as_secs_f64();
            Ok(stats)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn generate_into(opts: &GenOptions, dir: &Path) -> Result<GenStats> {
    let (tx, rx) = sync_channel::<Job>(4);
    let writer = std::thread::spawn(move || writer_thread(rx));
    let produced = produce(opts, dir, &tx);
    drop(tx);
    let files = writer
        .join()
        .map_err(|_| Error::invalid("generator: the Parquet writer thread panicked"))?;
    let mut stats = produced?;
    stats.files = files?;
    Ok(stats)
}

fn produce(opts: &GenOptions, dir: &Path, tx: &SyncSender<Job>) -> Result<GenStats> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    let first_day = (opts.start - epoch).num_days();
    let mut g = Gen {
        model: Model::new(opts.users, opts.seed)?,
        next_event: 0,
        next_conversation: 0,
        next_message: 0,
        pending: BTreeMap::new(),
    };
    let bar = if opts.progress {
        indicatif::ProgressBar::new(u64::from(opts.days))
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} days {msg} [{elapsed_precise}]",
        )
        .expect("valid template"),
    );
    let mut stats = GenStats::default();
    let mut today: Vec<Ev> = Vec::new();
    let mut messages: Vec<Msg> = Vec::new();
    for d in 0..opts.days {
        crate::scratch::check()?;
        let day = first_day + i64::from(d);
        let date = epoch + chrono::Duration::days(day);
        let day_start = day * MICROS_PER_DAY;
        let mut rng = ChaCha8Rng::seed_from_u64(day_seed(opts.seed, d, 1));
        let weekend = matches!(date.weekday(), Weekday::Sat | Weekday::Sun);
        let lambda = g.model.daily_episodes * if weekend { 0.6 } else { 1.0 };
        let episodes = Poisson::new(lambda.max(1e-9))
            .map_err(bad_param)?
            .sample(&mut rng) as u64;
        let mut part = 0usize;
        let mut produced: Vec<Ev> = Vec::new();
        for i in 0..episodes {
            if i % 4096 == 4095 {
                crate::scratch::check()?;
            }
            let u = g.model.user_pick.sample(&mut rng);
            let user = format!("u{u:08}");
            let t0 = day_start
                + g.model.hour.sample(&mut rng) as i64 * 3600 * MICROS_PER_SEC
                + rng.random_range(0..3600 * MICROS_PER_SEC);
            produced.clear();
            g.episode(&mut rng, &user, t0, &mut produced);
            for e in produced.drain(..) {
                let e_day = e.ts.map_or(day, |t| t.div_euclid(MICROS_PER_DAY));
                if e_day > day {
                    g.pending.entry(e_day).or_default().push(e);
                } else {
                    today.push(e);
                }
            }
            if today.len() >= ROWS_PER_FILE {
                stats.events += today.len() as u64;
                flush_events(tx, dir, date, &mut part, &mut today)?;
            }
        }
        if let Some(mut later) = g.pending.remove(&day) {
            today.append(&mut later);
        }
        stats.events += today.len() as u64;
        flush_events(tx, dir, date, &mut part, &mut today)?;

        let mut mrng = ChaCha8Rng::seed_from_u64(day_seed(opts.seed, d, 2));
        g.messages(&mut mrng, opts.users, day_start, &mut messages)?;
        stats.messages += messages.len() as u64;
        if !messages.is_empty() {
            let path = dir
                .join("messages")
                .join(format!("date={}", date.format("%Y-%m-%d")))
                .join("part-00000.parquet");
            send(tx, path, messages_batch(&messages)?)?;
            messages.clear();
        }
        bar.inc(1);
        bar.set_message(format!("{} events", stats.events));
    }
    // Rows scheduled after the last day are dropped, as in a real export
    // taken at the end of that day.
    bar.finish_and_clear();
    // A table with no rows still gets one (empty) file, so the dataset has
    // both tables with their schemas and reads as empty, not as missing.
    let first = epoch + chrono::Duration::days(first_day);
    if stats.events == 0 {
        let path = dir
            .join("events")
            .join(format!("date={}", first.format("%Y-%m-%d")))
            .join("part-00000.parquet");
        send(tx, path, events_batch(&[])?)?;
    }
    if stats.messages == 0 {
        let path = dir
            .join("messages")
            .join(format!("date={}", first.format("%Y-%m-%d")))
            .join("part-00000.parquet");
        send(tx, path, messages_batch(&[])?)?;
    }
    Ok(stats)
}

fn flush_events(
    tx: &SyncSender<Job>,
    dir: &Path,
    date: NaiveDate,
    part: &mut usize,
    rows: &mut Vec<Ev>,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    // Rows in time order, as an event pipeline would land them.
    rows.sort_by_key(|e| (e.ts.is_none(), e.ts));
    let path = dir
        .join("events")
        .join(format!("date={}", date.format("%Y-%m-%d")))
        .join(format!("part-{:05}.parquet", *part));
    *part += 1;
    let batch = events_batch(rows)?;
    rows.clear();
    send(tx, path, batch)
}
