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
//! It streams day by day: only the current day and the rows already
//! scheduled for later days are in memory, and a day is written in parts of
//! at most [`ROWS_PER_FILE`] rows. Parquet encoding runs on a second thread.
//! The whole dataset is written under a temporary directory and renamed into
//! place at the end, so a failed run leaves nothing behind.
//!
//! Determinism: each day draws from two random streams of its own (episodes,
//! messages) seeded from the run seed, and ids come from counters carried
//! across days. Any change to the order or number of draws, or to the order
//! in which ids are taken, changes the output for every seed.

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

/// Salt of each day's random stream for episodes (and their events).
const EPISODE_STREAM: u64 = 1;
/// Salt of each day's random stream for proactive messages.
const MESSAGE_STREAM: u64 = 2;

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
    /// Told after each day is generated.
    pub progress: Option<DayProgress>,
}

/// Receives the generator's progress after each day: days done, days in
/// all, events so far. (The binary draws a bar from it on a terminal.)
#[derive(Clone)]
pub struct DayProgress(pub Arc<dyn Fn(u32, u32, u64) + Send + Sync>);

impl std::fmt::Debug for DayProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DayProgress")
    }
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

/// One `events` row; `None` is written as null (the edge cases null even
/// the columns the report requires).
#[derive(Debug, Clone, Default)]
struct EventRow {
    event_id: Option<String>,
    user_id: Option<String>,
    /// Microseconds since the Unix epoch, UTC.
    ts: Option<i64>,
    event_type: Option<&'static str>,
    channel: Option<&'static str>,
    article_id: Option<String>,
    conversation_id: Option<String>,
    actor: Option<&'static str>,
    rating: Option<i32>,
}

/// One `messages` row; `None` is written as null.
#[derive(Debug, Clone, Default)]
struct MessageRow {
    message_id: Option<String>,
    user_id: String,
    /// Microseconds since the Unix epoch, UTC, as are the other times.
    sent_at: Option<i64>,
    content_type: &'static str,
    sender: String,
    tags: Option<Vec<&'static str>>,
    opened_at: Option<i64>,
    clicked_at: Option<i64>,
    reacted_at: Option<i64>,
}

/// A finished batch for the writer thread to encode as one Parquet file.
struct FileToWrite {
    path: PathBuf,
    batch: RecordBatch,
}

/// Encodes every file it receives until the sending side is dropped, and
/// returns how many it wrote.
fn writer_thread(files_to_write: Receiver<FileToWrite>) -> Result<u64> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .build();
    let mut files = 0;
    for FileToWrite { path, batch } in files_to_write {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props.clone()))?;
        writer.write(&batch)?;
        writer.close()?;
        files += 1;
    }
    Ok(files)
}

/// Hands a file to the writer thread (waits while its queue is full).
fn queue_write(tx: &SyncSender<FileToWrite>, path: PathBuf, batch: RecordBatch) -> Result<()> {
    tx.send(FileToWrite { path, batch })
        .map_err(|_| Error::Internal("generator: the Parquet writer thread stopped".into()))
}

/// The per-run random model: how active each user is, and the distributions
/// of times and articles.
struct Model {
    /// Picks the user of an episode, in proportion to their activity.
    user_pick: WeightedAliasIndex<f64>,
    /// Mean number of episodes on a weekday, all users together.
    daily_episodes: f64,
    /// UTC hour of an episode start or a message delivery.
    hour_of_day: WeightedIndex<f64>,
    /// Rank of a viewed article: a few articles get most views.
    article_rank: Zipf<f64>,
    /// Seconds between two actions of an episode.
    step_secs: LogNormal<f64>,
    /// Seconds to the first teammate reply, and between replies.
    reply_secs: LogNormal<f64>,
    /// Seconds from the last reply to the close, and from a close to a
    /// reopening.
    close_secs: LogNormal<f64>,
    /// Seconds from a message delivery to its opening.
    open_secs: LogNormal<f64>,
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
        let hour_weights = [
            2.0, 1.5, 1.0, 1.0, 1.0, 1.5, 3.0, 5.0, 8.0, 10.0, 11.0, 11.0, 10.0, 10.0, 11.0, 11.0,
            10.0, 9.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.5,
        ];
        Ok(Self {
            user_pick,
            daily_episodes: users as f64 * EPISODES_PER_USER_DAY,
            hour_of_day: WeightedIndex::new(hour_weights).map_err(bad_param)?,
            article_rank: Zipf::new(2000.0, 1.1).map_err(bad_param)?,
            // median ~50 s
            step_secs: LogNormal::new(3.9, 1.0).map_err(bad_param)?,
            // median ~15 min, tail of hours
            reply_secs: LogNormal::new(6.8, 1.2).map_err(bad_param)?,
            // median ~4 h, tail of days
            close_secs: LogNormal::new(9.6, 1.3).map_err(bad_param)?,
            // median ~18 min, tail of days
            open_secs: LogNormal::new(7.0, 1.5).map_err(bad_param)?,
        })
    }

    /// Microseconds between two actions of an episode.
    fn step_delay(&self, rng: &mut ChaCha8Rng) -> i64 {
        delay_micros(&self.step_secs, rng)
    }

    /// Microseconds to a teammate reply.
    fn reply_delay(&self, rng: &mut ChaCha8Rng) -> i64 {
        delay_micros(&self.reply_secs, rng)
    }

    /// Microseconds to a close (or a reopening).
    fn close_delay(&self, rng: &mut ChaCha8Rng) -> i64 {
        delay_micros(&self.close_secs, rng)
    }

    /// Microseconds from a message delivery to its opening.
    fn open_delay(&self, rng: &mut ChaCha8Rng) -> i64 {
        delay_micros(&self.open_secs, rng)
    }

    /// A UTC time within the day starting at `day_start`, at a diurnal hour.
    fn time_of_day(&self, rng: &mut ChaCha8Rng, day_start: i64) -> i64 {
        day_start
            + self.hour_of_day.sample(rng) as i64 * 3600 * MICROS_PER_SEC
            + rng.random_range(0..3600 * MICROS_PER_SEC)
    }
}

/// A delay drawn from `secs` (in seconds), in microseconds: clamped to one
/// second .. 20 days, plus a uniform fraction of a second.
fn delay_micros(secs: &LogNormal<f64>, rng: &mut ChaCha8Rng) -> i64 {
    let s = secs.sample(rng).clamp(1.0, 20.0 * 86_400.0);
    (s * MICROS_PER_SEC as f64) as i64 + rng.random_range(0..MICROS_PER_SEC)
}

fn bad_param(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("generator model: {e}"))
}

/// Mixes the run seed with a day number into an independent stream seed.
fn day_seed(seed: u64, day: u32, salt: u64) -> u64 {
    // splitmix64 finaliser
    let mut z = seed ^ (u64::from(day) << 20) ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The `user_id` of the user numbered `n`, in both tables.
fn user_id(n: u64) -> String {
    format!("u{n:08}")
}

/// Ratings a conversation gets, drawn uniformly: mostly 4 and 5.
const RATINGS: [i32; 8] = [1, 2, 3, 4, 4, 5, 5, 5];

/// The generator's state carried across days: the model, the id counters
/// (ids are unique over the whole run) and the rows already produced for
/// later days.
struct Generator {
    model: Model,
    /// Number in the last event id handed out (0: none yet).
    last_event: u64,
    /// Number in the last conversation id handed out (0: none yet).
    last_conversation: u64,
    /// Number in the last message id handed out (0: none yet).
    last_message: u64,
    /// Rows already produced for a later day (closes, late replies, copies),
    /// by day number since the Unix epoch.
    pending: BTreeMap<i64, Vec<EventRow>>,
}

impl Generator {
    fn new(model: Model) -> Self {
        Self {
            model,
            last_event: 0,
            last_conversation: 0,
            last_message: 0,
            pending: BTreeMap::new(),
        }
    }

    fn event_id(&mut self) -> String {
        self.last_event += 1;
        format!("e{:012}", self.last_event)
    }

    fn conversation_id(&mut self) -> String {
        self.last_conversation += 1;
        format!("c{:010}", self.last_conversation)
    }

    fn message_id(&mut self) -> String {
        self.last_message += 1;
        format!("m{:012}", self.last_message)
    }

    /// A new event of `user` at `ts`, with a fresh id and nothing else set.
    fn event(&mut self, user: &str, ts: i64, event_type: &'static str) -> EventRow {
        EventRow {
            event_id: Some(self.event_id()),
            user_id: Some(user.to_string()),
            ts: Some(ts),
            event_type: Some(event_type),
            ..EventRow::default()
        }
    }

    /// A new event of `user` at `ts` on `channel`.
    fn event_on(
        &mut self,
        user: &str,
        ts: i64,
        event_type: &'static str,
        channel: &'static str,
    ) -> EventRow {
        EventRow {
            channel: Some(channel),
            ..self.event(user, ts, event_type)
        }
    }

    /// A view of a random article on `channel`.
    fn article_view(
        &mut self,
        rng: &mut ChaCha8Rng,
        user: &str,
        ts: i64,
        channel: &'static str,
    ) -> EventRow {
        let mut view = self.event_on(user, ts, "article_view", channel);
        view.article_id = Some(self.article_id(rng));
        view
    }

    /// A new event of conversation `conversation_id` (start, bot answer,
    /// reply, close, rating), by `actor` and on `channel` when given.
    fn lifecycle(
        &mut self,
        user: &str,
        ts: i64,
        event_type: &'static str,
        conversation_id: &str,
        actor: Option<&'static str>,
        channel: Option<&'static str>,
    ) -> EventRow {
        EventRow {
            conversation_id: Some(conversation_id.to_string()),
            actor,
            channel,
            ..self.event(user, ts, event_type)
        }
    }

    fn article_id(&self, rng: &mut ChaCha8Rng) -> String {
        format!("a{:05}", self.model.article_rank.sample(rng) as u64)
    }

    /// A conversation of `user` started at `start`: on Messenger a bot may
    /// answer first (when `bot_first`) and resolve it; otherwise teammates
    /// reply and close it, now and then twice after a reopening; then the
    /// user may rate it. Its rows may fall on later days.
    fn conversation(
        &mut self,
        rng: &mut ChaCha8Rng,
        user: &str,
        start: i64,
        bot_first: bool,
        out: &mut Vec<EventRow>,
    ) {
        let id = self.conversation_id();
        let channel = if rng.random_bool(0.8) {
            "messenger"
        } else {
            "email"
        };
        // The start, bot answers and first replies carry the channel;
        // closes, ratings and a reply after a reopening do not.
        let (on_channel, bot, teammate) = (Some(channel), Some("bot"), Some("teammate"));
        out.push(self.lifecycle(user, start, "conversation_started", &id, None, on_channel));
        let mut t = start;
        let mut escalated = true;
        if bot_first && channel == "messenger" {
            t += rng.random_range(2..30) * MICROS_PER_SEC;
            out.push(self.lifecycle(user, t, "bot_answer", &id, bot, on_channel));
            if rng.random_bool(0.15) {
                t += self.model.step_delay(rng);
                out.push(self.lifecycle(user, t, "bot_answer", &id, bot, on_channel));
            }
            escalated = rng.random_bool(0.4);
            if !escalated {
                // resolved by the bot, which closes it most of the time
                t += self.model.step_delay(rng) * 3;
                let closer = if rng.random_bool(0.9) { bot } else { teammate };
                out.push(self.lifecycle(user, t, "conversation_closed", &id, closer, None));
            }
        }
        if escalated {
            if rng.random_bool(0.93) {
                t += self.model.reply_delay(rng);
                let replies = 1 + rng.random_range(0..3);
                for _ in 0..replies {
                    out.push(self.lifecycle(user, t, "teammate_reply", &id, teammate, on_channel));
                    t += self.model.reply_delay(rng);
                }
            }
            if rng.random_bool(0.85) {
                t += self.model.close_delay(rng);
                let closer = if rng.random_bool(0.97) { teammate } else { bot };
                out.push(self.lifecycle(user, t, "conversation_closed", &id, closer, None));
                if rng.random_bool(0.03) {
                    // reopened, answered and closed again later
                    t += self.model.close_delay(rng);
                    out.push(self.lifecycle(user, t, "teammate_reply", &id, teammate, None));
                    t += self.model.step_delay(rng);
                    out.push(self.lifecycle(user, t, "conversation_closed", &id, teammate, None));
                }
            }
        }
        if rng.random_bool(0.35) {
            t += self.model.step_delay(rng) * 10;
            let mut rated = self.lifecycle(user, t, "conversation_rated", &id, None, None);
            // a few ratings come without a score
            rated.rating = if rng.random_bool(0.03) {
                None
            } else {
                Some(RATINGS[rng.random_range(0..RATINGS.len())])
            };
            out.push(rated);
        }
    }

    /// One support episode of `user` starting at `t0`: Help Center browsing,
    /// maybe a conversation, maybe a follow-up about a day later, then the
    /// edge cases. Its rows may fall on later days.
    fn episode(&mut self, rng: &mut ChaCha8Rng, user: &str, t0: i64, out: &mut Vec<EventRow>) {
        let first = out.len();
        let mut t = t0;
        let kind = rng.random_range(0..100);
        let channel = if rng.random_bool(0.6) {
            "help_center"
        } else {
            "messenger"
        };
        if channel == "help_center" || rng.random_bool(0.2) {
            out.push(self.event_on(user, t, "help_center_visit", "help_center"));
            t += self.model.step_delay(rng);
        }
        match kind {
            // visits and maybe a search, then nothing: a stopped session
            0..=17 => {
                if out.len() == first || rng.random_bool(0.5) {
                    out.push(self.event_on(user, t, "article_search", channel));
                }
            }
            // self-serve with articles
            18..=49 => {
                if rng.random_bool(0.7) {
                    out.push(self.event_on(user, t, "article_search", channel));
                    t += self.model.step_delay(rng);
                }
                for _ in 0..1 + rng.random_range(0..3) {
                    out.push(self.article_view(rng, user, t, channel));
                    t += self.model.step_delay(rng);
                }
            }
            // articles, then a conversation
            50..=62 => {
                out.push(self.event_on(user, t, "article_search", channel));
                t += self.model.step_delay(rng);
                if rng.random_bool(0.6) {
                    out.push(self.article_view(rng, user, t, channel));
                    t += self.model.step_delay(rng);
                }
                let bot_first = rng.random_bool(0.4);
                self.conversation(rng, user, t, bot_first, out);
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
                out.push(self.article_view(rng, user, at, "help_center"));
            } else {
                let bot_first = rng.random_bool(0.5);
                self.conversation(rng, user, at, bot_first, out);
            }
        }
        self.edge_cases(rng, user, t0, first, out);
    }

    /// Adds the spec's corner cases, each at [`EDGE_RATE`] per episode, to
    /// the episode whose rows are `out[first..]`.
    fn edge_cases(
        &mut self,
        rng: &mut ChaCha8Rng,
        user: &str,
        t0: i64,
        first: usize,
        out: &mut Vec<EventRow>,
    ) {
        let episode_rows = out.len() - first;
        if episode_rows == 0 {
            return;
        }
        let hit = |rng: &mut ChaCha8Rng| rng.random_bool(EDGE_RATE);
        // index in `out` of a random row of this episode
        let pick = |rng: &mut ChaCha8Rng| first + rng.random_range(0..episode_rows);
        if hit(rng) {
            // exact duplicate in the same file
            let copy = out[pick(rng)].clone();
            out.push(copy);
        }
        if hit(rng) {
            // duplicate in the next day's file (the partition is only a location)
            let copy = out[pick(rng)].clone();
            let day = copy.ts.unwrap_or(t0).div_euclid(MICROS_PER_DAY) + 1;
            self.pending.entry(day).or_default().push(copy);
        }
        if hit(rng) {
            // an invalid copy of a valid event: a reject, not a duplicate
            let mut copy = out[pick(rng)].clone();
            copy.rating = Some(9);
            out.push(copy);
        }
        if hit(rng) {
            // counted as read, ignored by every metric
            out.push(self.article_view(rng, user, t0 + 5 * MICROS_PER_SEC, "content_showcase"));
        }
        if hit(rng) {
            // two actions at the same instant
            out.push(self.event_on(user, t0, "article_search", "help_center"));
        }
        // one row for each reject reason, in the order of the rules
        if hit(rng) {
            let mut row = self.event(user, t0 + 1, "article_view");
            row.event_id = None;
            out.push(row);
        }
        if hit(rng) {
            let mut row = self.event(user, t0 + 2, "article_search");
            row.user_id = None;
            out.push(row);
        }
        if hit(rng) {
            let mut row = self.event(user, t0, "help_center_visit");
            row.ts = None;
            out.push(row);
        }
        if hit(rng) {
            let mut row = self.event(user, t0 + 3, "help_center_visit");
            row.event_type = None;
            out.push(row);
        }
        if hit(rng) {
            let mut row = self.event(user, t0 + 4, "help_center_visit");
            row.event_type = Some("page_view");
            out.push(row);
        }
        if hit(rng) {
            // a conversation event without a conversation id
            let mut row = self.event(user, t0 + 5, "teammate_reply");
            row.actor = Some("teammate");
            out.push(row);
        }
        if hit(rng) {
            // a rating outside 1..=5
            let id = self.conversation_id();
            let at = t0 + 6 * MICROS_PER_SEC;
            let mut rated = self.lifecycle(user, at, "conversation_rated", &id, None, None);
            rated.rating = Some(if rng.random_bool(0.5) { 0 } else { 6 });
            out.push(rated);
        }
        if hit(rng) {
            // lifecycle events of a conversation that never started
            let id = format!("orphan-{}", self.conversation_id());
            let (replied, closed) = (t0 + 60 * MICROS_PER_SEC, t0 + 3600 * MICROS_PER_SEC);
            let teammate = Some("teammate");
            out.push(self.lifecycle(user, replied, "teammate_reply", &id, teammate, None));
            out.push(self.lifecycle(user, closed, "conversation_closed", &id, teammate, None));
        }
    }

    /// The proactive messages delivered on the day starting at `day_start`
    /// to random users among `users`.
    fn messages(
        &mut self,
        rng: &mut ChaCha8Rng,
        users: u64,
        day_start: i64,
        out: &mut Vec<MessageRow>,
    ) -> Result<()> {
        const CONTENT_TYPES: [(&str, f64); 6] = [
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
        let content_type_pick =
            WeightedIndex::new(CONTENT_TYPES.iter().map(|t| t.1)).map_err(bad_param)?;
        let deliveries = Poisson::new((users as f64 * MESSAGES_PER_USER_DAY).max(1e-9))
            .map_err(bad_param)?
            .sample(rng) as u64;
        for _ in 0..deliveries {
            let message_id = self.message_id();
            let sent = self.model.time_of_day(rng, day_start);
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
                .then(|| sent + self.model.open_delay(rng));
            let clicked_at = opened_at
                .filter(|_| rng.random_bool(0.25))
                .map(|o| o + self.model.step_delay(rng));
            let reacted_at = opened_at
                .filter(|_| rng.random_bool(0.1))
                .map(|o| o + self.model.step_delay(rng));
            let user = user_id(rng.random_range(0..users));
            let content_type = CONTENT_TYPES[content_type_pick.sample(rng)].0;
            let mut message = MessageRow {
                message_id: Some(message_id),
                user_id: user,
                sent_at: Some(sent),
                content_type,
                sender,
                tags,
                opened_at,
                clicked_at,
                reacted_at,
            };
            match rng.random_range(0..1000) {
                0..=2 => out.push(message.clone()), // duplicate delivery row
                3 => message.message_id = None,
                4 => message.sent_at = None,
                _ => {}
            }
            out.push(message);
        }
        Ok(())
    }
}

fn events_batch(rows: &[EventRow]) -> Result<RecordBatch> {
    let mut event_id = StringBuilder::new();
    let mut user_id = StringBuilder::new();
    let mut ts = TimestampMicrosecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
    let mut event_type = StringBuilder::new();
    let mut channel = StringBuilder::new();
    let mut article_id = StringBuilder::new();
    let mut conversation_id = StringBuilder::new();
    let mut actor = StringBuilder::new();
    let mut rating = Int32Builder::with_capacity(rows.len());
    for row in rows {
        event_id.append_option(row.event_id.as_deref());
        user_id.append_option(row.user_id.as_deref());
        ts.append_option(row.ts);
        event_type.append_option(row.event_type);
        channel.append_option(row.channel);
        article_id.append_option(row.article_id.as_deref());
        conversation_id.append_option(row.conversation_id.as_deref());
        actor.append_option(row.actor);
        rating.append_option(row.rating);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(event_id.finish()),
        Arc::new(user_id.finish()),
        Arc::new(ts.finish()),
        Arc::new(event_type.finish()),
        Arc::new(channel.finish()),
        Arc::new(article_id.finish()),
        Arc::new(conversation_id.finish()),
        Arc::new(actor.finish()),
        Arc::new(rating.finish()),
    ];
    Ok(RecordBatch::try_new(events_schema(), columns)?)
}

fn messages_batch(rows: &[MessageRow]) -> Result<RecordBatch> {
    let ts = || TimestampMicrosecondBuilder::with_capacity(rows.len()).with_timezone("UTC");
    let mut message_id = StringBuilder::new();
    let mut user_id = StringBuilder::new();
    let mut sent_at = ts();
    let mut content_type = StringBuilder::new();
    let mut sender = StringBuilder::new();
    let mut tags = ListBuilder::new(StringBuilder::new());
    let (mut opened_at, mut clicked_at, mut reacted_at) = (ts(), ts(), ts());
    for row in rows {
        message_id.append_option(row.message_id.as_deref());
        user_id.append_value(&row.user_id);
        sent_at.append_option(row.sent_at);
        content_type.append_value(row.content_type);
        sender.append_value(&row.sender);
        match &row.tags {
            None => tags.append_null(),
            Some(v) => {
                for t in v {
                    tags.values().append_value(t);
                }
                tags.append(true);
            }
        }
        opened_at.append_option(row.opened_at);
        clicked_at.append_option(row.clicked_at);
        reacted_at.append_option(row.reacted_at);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(message_id.finish()),
        Arc::new(user_id.finish()),
        Arc::new(sent_at.finish()),
        Arc::new(content_type.finish()),
        Arc::new(sender.finish()),
        Arc::new(tags.finish()),
        Arc::new(opened_at.finish()),
        Arc::new(clicked_at.finish()),
        Arc::new(reacted_at.finish()),
    ];
    // The list builder names its item field "item", as the schema does.
    Ok(RecordBatch::try_new(messages_schema(), columns)?)
}

/// `DIR/TABLE/date=YYYY-MM-DD/part-NNNNN.parquet`.
fn part_path(dir: &Path, table: &str, date: NaiveDate, part: usize) -> PathBuf {
    dir.join(table)
        .join(format!("date={}", date.format("%Y-%m-%d")))
        .join(format!("part-{part:05}.parquet"))
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
        return Err(Error::usage(format!(
            "--users {} is out of range: give 1 to {MAX_USERS}",
            opts.users
        )));
    }
    if !(1..=MAX_DAYS).contains(&opts.days) {
        return Err(Error::usage(format!(
            "--days {} is out of range: give 1 to {MAX_DAYS}",
            opts.days
        )));
    }
    let last = opts
        .start
        .checked_add_signed(chrono::Duration::days(i64::from(opts.days) - 1));
    if opts.start < MIN_START || last.is_none_or(|l| l > MAX_END) {
        return Err(Error::usage(format!(
            "--start {} with --days {} is out of range: the days must lie within {MIN_START}..{MAX_END}",
            opts.start, opts.days
        )));
    }
    Ok(())
}

/// Checks `out` and returns the temporary sibling directory to write into.
fn check_out(out: &Path, overwrite: bool) -> Result<()> {
    if out.exists() {
        let non_empty = std::fs::read_dir(out)
            .map_err(|e| Error::io(out, e))?
            .next()
            .is_some();
        if non_empty && !overwrite {
            return Err(Error::usage(format!(
                "{}: exists and is not empty (pass --overwrite to replace it)",
                out.display()
            )));
        }
    }
    Ok(())
}

/// Generates the dataset described by `opts`: into a temporary directory
/// beside `opts.out`, renamed into place when complete.
pub fn generate(opts: &GenOptions) -> Result<GenStats> {
    check_options(opts)?;
    let started = Instant::now();
    check_out(&opts.out, opts.overwrite)?;
    let mut stats = crate::io::scratch::publish(&opts.out, |tmp| generate_into(opts, tmp))?;
    stats.seconds = started.elapsed().as_secs_f64();
    Ok(stats)
}

/// Produces the dataset into `dir` while a second thread encodes the files.
fn generate_into(opts: &GenOptions, dir: &Path) -> Result<GenStats> {
    // A short queue keeps at most a few finished batches in memory.
    let (tx, rx) = sync_channel::<FileToWrite>(4);
    let writer = std::thread::spawn(move || writer_thread(rx));
    let produced = produce(opts, dir, &tx);
    drop(tx);
    let files = writer
        .join()
        .map_err(|_| Error::Internal("generator: the Parquet writer thread panicked".into()))?;
    let mut stats = produced?;
    stats.files = files?;
    Ok(stats)
}

/// Generates every day in turn and queues its files for the writer.
fn produce(opts: &GenOptions, dir: &Path, tx: &SyncSender<FileToWrite>) -> Result<GenStats> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    let first_day = (opts.start - epoch).num_days();
    let mut generator = Generator::new(Model::new(opts.users, opts.seed)?);
    let mut stats = GenStats::default();
    let mut today: Vec<EventRow> = Vec::new();
    let mut episode_rows: Vec<EventRow> = Vec::new();
    let mut messages: Vec<MessageRow> = Vec::new();
    for d in 0..opts.days {
        crate::io::scratch::check()?;
        let day = first_day + i64::from(d);
        let date = epoch + chrono::Duration::days(day);
        let day_start = day * MICROS_PER_DAY;
        let mut rng = ChaCha8Rng::seed_from_u64(day_seed(opts.seed, d, EPISODE_STREAM));
        let weekend = matches!(date.weekday(), Weekday::Sat | Weekday::Sun);
        let lambda = generator.model.daily_episodes * if weekend { 0.6 } else { 1.0 };
        let episodes = Poisson::new(lambda.max(1e-9))
            .map_err(bad_param)?
            .sample(&mut rng) as u64;
        let mut part = 0usize;
        for i in 0..episodes {
            if i % 4096 == 4095 {
                crate::io::scratch::check()?;
            }
            let user = user_id(generator.model.user_pick.sample(&mut rng) as u64);
            let t0 = generator.model.time_of_day(&mut rng, day_start);
            episode_rows.clear();
            generator.episode(&mut rng, &user, t0, &mut episode_rows);
            for row in episode_rows.drain(..) {
                let row_day = row.ts.map_or(day, |t| t.div_euclid(MICROS_PER_DAY));
                if row_day > day {
                    generator.pending.entry(row_day).or_default().push(row);
                } else {
                    today.push(row);
                }
            }
            if today.len() >= ROWS_PER_FILE {
                stats.events += today.len() as u64;
                flush_events(tx, dir, date, &mut part, &mut today)?;
            }
        }
        if let Some(mut later) = generator.pending.remove(&day) {
            today.append(&mut later);
        }
        stats.events += today.len() as u64;
        flush_events(tx, dir, date, &mut part, &mut today)?;

        let mut message_rng = ChaCha8Rng::seed_from_u64(day_seed(opts.seed, d, MESSAGE_STREAM));
        generator.messages(&mut message_rng, opts.users, day_start, &mut messages)?;
        stats.messages += messages.len() as u64;
        if !messages.is_empty() {
            let path = part_path(dir, "messages", date, 0);
            queue_write(tx, path, messages_batch(&messages)?)?;
            messages.clear();
        }
        if let Some(progress) = &opts.progress {
            (progress.0)(d + 1, opts.days, stats.events);
        }
    }
    // Rows scheduled after the last day are dropped, as in a real export
    // taken at the end of that day.
    // A table with no rows still gets one (empty) file, so the dataset has
    // both tables with their schemas and reads as empty, not as missing.
    let first = epoch + chrono::Duration::days(first_day);
    if stats.events == 0 {
        let path = part_path(dir, "events", first, 0);
        queue_write(tx, path, events_batch(&[])?)?;
    }
    if stats.messages == 0 {
        let path = part_path(dir, "messages", first, 0);
        queue_write(tx, path, messages_batch(&[])?)?;
    }
    Ok(stats)
}

/// Queues `rows` (if any) as the day's next `events` part and empties it.
fn flush_events(
    tx: &SyncSender<FileToWrite>,
    dir: &Path,
    date: NaiveDate,
    part: &mut usize,
    rows: &mut Vec<EventRow>,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    // Rows in time order, as an event pipeline would land them.
    rows.sort_by_key(|e| (e.ts.is_none(), e.ts));
    let path = part_path(dir, "events", date, *part);
    *part += 1;
    let batch = events_batch(rows)?;
    rows.clear();
    queue_write(tx, path, batch)
}
