//! Exact incremental runs of the job (`[state] location`).
//!
//! A daily run should cost what the new files cost, not what the years of
//! history behind them cost, and still write exactly the rows a full
//! recompute would. The state kept between runs makes that possible.
//!
//! ## The frontier
//!
//! Every report of a run looks at sessions starting in its previous or
//! current period, so nothing before the earliest previous-period start `W`
//! of the run matters to it, except through three things: where each
//! user's session chain stands at `W`, whether an event id or message id was
//! already seen (duplicates), and whether a conversation was already started
//! (orphans). The state keeps history summarised at a *frontier* `C` (the
//! `W` of the run that wrote it) and everything after it in full:
//!
//! * **anchors**: per user, the last session start in `(C − 24h, C)`. A
//!   session starting earlier ended before `C`, so an action at or after `C`
//!   starts a new session whatever came before; one starting inside that
//!   window may still hold actions after `C`. Fed to the engine as one
//!   synthetic action at that start, an anchor makes the session chain after
//!   `C` come out exactly as over the whole history.
//! * **live events**: every valid event with `ts >= C`, copies included,
//!   plus lifecycle events of conversations not started before `C` (a
//!   conversation may start after its own lifecycle events, or never);
//! * **live messages**: every delivery with `sent_at >= C` or null;
//! * **event index, message index**: the ids whose surviving copy lies
//!   before `C` (a later copy of one is a duplicate and nothing else, since
//!   the copy with the smallest `ts`/`sent_at` wins);
//! * **started**: the conversations started before `C`;
//! * **counters**: rows read and rejected by reason per table, and the
//!   duplicates folded away before `C`;
//! * **the manifest**: every input file with its size, modification time and
//!   ETag.
//!
//! ## A run
//!
//! The files are listed and compared with the manifest. The new files are
//! validated alone (their rows read and rejects counted), their valid rows
//! checked against the indexes, and the engine runs the unchanged report
//! over *anchors + live rows + new rows*, a few days of data instead of the
//! whole history. `data_quality`, defined over the whole input, is then
//! made from the counters and the live rows. Afterwards the state moves its
//! frontier to this run's `W`: rows before it fold into the anchors, indexes
//! and counters.
//!
//! When the state cannot prove that this gives the full result, the run
//! recomputes everything from the files, rebuilds the state, and says why in
//! its summary: no state, a state of another format or engine version or of
//! other inputs, a file changed or deleted, a report period before the
//! frontier (a re-run of an old date), a new valid event before the
//! frontier, a new delivery (with an id) sent before it, or state files
//! that cannot be read. `run --full` does the same on request.
//!
//! A `conversation_started` after the frontier naming a conversation
//! started before it gets a synthetic start of a synthetic user just before
//! the frontier, so the conversation keeps its earliest start's session (one
//! no report shows) and the later row stays an action, as over the whole
//! history.
//!
//! ## Commits
//!
//! State files are written under `data/` with names never reused, and a run
//! becomes the state only when `state.json`, the manifest naming them, is
//! replaced in one atomic put. A run killed anywhere leaves the previous
//! manifest and its files intact; the next run redoes the work. Files no
//! manifest names any more are removed after the commit.

mod fold;
mod one_pass;
mod run;
mod sql;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, AsArray, Float64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::dataframe::{DataFrame, DataFrameWriteOptions};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::MemTable;
use datafusion::prelude::{cast, col, ParquetReadOptions, SessionContext};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use crate::engine::context::Engine;
use crate::engine::query::{self, Params};
use crate::error::{Error, Result};
use crate::render::output::put_atomically;
use crate::settings::location::Location;
use crate::tables::{self, EVENTS, MESSAGES};

/// Format of the state this build reads and writes; a state of another
/// format (or written by another version) is rebuilt by a full run.
pub const STATE_FORMAT: u32 = 2;

/// Event ids of the synthetic anchor actions. A real event id with this
/// prefix makes the run fall back to a full recompute rather than risk a
/// collision.
pub const ANCHOR_PREFIX: &str = "\u{1}supportfunnel-anchor:";

/// The function `winners_of_repeated` (queries/incremental/fold.sql)
/// calls: true for an event_id whose hash the operators saw on more than
/// one row (valid or not; false proves a valid row its id's only copy).
const REPEATED_ID_FN: &str = "supportfunnel_fold_repeated_id";

/// Index segments kept before they are merged into one.
const MAX_SEGMENTS: usize = 8;

/// The manifest's object name under the state location.
const MANIFEST: &str = "state.json";

/// One input file as the manifest remembers it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path in its object store.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Last modification, milliseconds since the epoch.
    pub modified_ms: i64,
    /// The store's ETag, when it gives one.
    pub e_tag: Option<String>,
}

impl FileEntry {
    fn of(meta: &ObjectMeta) -> Self {
        Self {
            path: meta.location.to_string(),
            size: meta.size,
            modified_ms: meta.last_modified.timestamp_millis(),
            e_tag: meta.e_tag.clone(),
        }
    }
}

/// The whole-input counts of `data_quality` that cannot be recomputed from
/// the live rows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Counters {
    /// `events` rows read, `content_showcase` included.
    pub events_rows_read: u64,
    /// `messages` rows read.
    pub messages_rows_read: u64,
    /// Rejected events by reason.
    pub rejects: BTreeMap<String, u64>,
    /// Valid events dropped as copies of an id that now lies before the
    /// frontier.
    pub folded_duplicate_events: u64,
    /// Deliveries dropped as copies of an id that now lies before it.
    pub folded_duplicate_messages: u64,
}

/// What `state.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`STATE_FORMAT`].
    pub format: u32,
    /// The engine version that wrote it.
    pub version: String,
    /// Increases by one with each commit.
    pub generation: u64,
    /// The `events` location it was built from.
    pub events: String,
    /// The `messages` location it was built from.
    pub messages: String,
    /// The frontier, microseconds since the epoch (UTC).
    pub frontier_us: i64,
    /// `events` files taken in.
    pub events_files: Vec<FileEntry>,
    /// `messages` files taken in.
    pub messages_files: Vec<FileEntry>,
    /// Counts kept across runs.
    pub counters: Counters,
    /// Object names (under `data/`) of the state tables.
    pub anchors: String,
    /// Live events.
    pub live_events: String,
    /// Live messages.
    pub live_messages: String,
    /// Event-id index segments.
    pub event_index: Vec<String>,
    /// Message-id index segments.
    pub message_index: Vec<String>,
    /// Started-conversation segments.
    pub started: Vec<String>,
    /// Every data file named above, as it was written: a file missing,
    /// truncated, replaced or swapped with another is found before the
    /// state is used.
    pub checks: BTreeMap<String, DataCheck>,
    /// BLAKE3 of this manifest with `checksum` empty: an edited or damaged
    /// `state.json` (a counter changed by hand) is not trusted.
    pub checksum: String,
}

/// What the manifest knows of one of its data files: enough to tell that
/// it is the object written. The store's ETag changes with the content
/// (S3: a digest of it; a local file: its inode, modification time and
/// size), so a listing compares it without reading the file; where a store
/// gives none, the file's BLAKE3 is kept and compared instead.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DataCheck {
    /// Bytes.
    pub size: u64,
    /// The store's ETag when written.
    pub e_tag: Option<String>,
    /// BLAKE3 of the whole object, hex, when the store gives no ETag.
    pub blake3: Option<String>,
}

impl Manifest {
    /// The checksum this manifest's content has.
    fn content_checksum(&self) -> String {
        let mut unsealed = self.clone();
        unsealed.checksum = String::new();
        let bytes = serde_json::to_vec(&unsealed).unwrap_or_default();
        blake3::hash(&bytes).to_hex().to_string()
    }

    /// The manifest with its checksum set.
    fn sealed(mut self) -> Self {
        self.checksum = self.content_checksum();
        self
    }

    fn data_files(&self) -> HashSet<String> {
        let mut all: HashSet<String> = [&self.anchors, &self.live_events, &self.live_messages]
            .into_iter()
            .cloned()
            .collect();
        all.extend(self.event_index.iter().cloned());
        all.extend(self.message_index.iter().cloned());
        all.extend(self.started.iter().cloned());
        all
    }

    /// The frontier as an instant.
    pub fn frontier(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.frontier_us).unwrap_or_default()
    }
}

/// How a run used the state, for the job's summary line.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StateRun {
    /// `incremental` or `full`.
    pub mode: &'static str,
    /// Why a full recompute ran (`None` for incremental runs).
    pub reason: Option<String>,
    /// Input files new since the last state (all of them for a full run).
    pub new_files: usize,
    /// Rows read from new files (`events` + `messages`).
    pub new_rows: u64,
    /// The frontier of the state this run wrote (RFC 3339).
    pub frontier: String,
    /// Why no state was saved, when none was (the results may still have
    /// been written: see the summary's `written`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How the saved state's rows were folded: `scan` (routed by the
    /// operators' scan as it read them for the reports), `one pass` (one
    /// more read of the events) or `statements` (the reference statements,
    /// as every incremental run does). Absent when no state was saved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fold: Option<&'static str>,
}

impl StateRun {
    /// A run whose state could not be opened at all.
    pub fn unusable(windows_start: DateTime<Utc>, error: String) -> Self {
        Self {
            mode: "full",
            reason: Some("the state cannot be used".into()),
            new_files: 0,
            new_rows: 0,
            frontier: windows_start.to_rfc3339(),
            error: Some(error),
            fold: None,
        }
    }

    /// This run, with its state not saved because of `error`.
    pub fn not_saved(self, error: String) -> Self {
        Self {
            error: Some(error),
            fold: None,
            ..self
        }
    }
}

/// The state location: where `state.json` and `data/` live.
#[derive(Clone)]
pub struct StateStore {
    location: Location,
    /// `file:///abs/dir` or `s3://bucket/prefix`, without a trailing slash.
    base: String,
    store: Arc<dyn ObjectStore>,
    prefix: StorePath,
}

impl StateStore {
    /// Opens (and for a local path creates) the state location.
    pub fn open(ctx: &SessionContext, location: &Location) -> Result<Self> {
        let base = match location {
            Location::Local(p) => {
                std::fs::create_dir_all(p.join("data")).map_err(|e| Error::io(p, e))?;
                let abs = std::fs::canonicalize(p).map_err(|e| Error::io(p, e))?;
                format!("file://{}", abs.display())
            }
            Location::Remote(u) => u.as_str().trim_end_matches('/').to_string(),
        };
        let url = url::Url::parse(&format!("{base}/"))
            .map_err(|e| Error::location(location, e.to_string()))?;
        crate::io::storage::ensure_store(ctx, &url)?;
        let store_url = datafusion::execution::object_store::ObjectStoreUrl::parse(
            &url[..url::Position::BeforePath],
        )?;
        let store = ctx.runtime_env().object_store(&store_url)?;
        let prefix = StorePath::from_url_path(url.path())
            .map_err(|e| Error::location(location, e.to_string()))?;
        Ok(Self {
            location: location.clone(),
            base,
            store,
            prefix,
        })
    }

    /// Makes sure `ctx` can read and write the state location.
    fn attach(&self, ctx: &SessionContext) -> Result<()> {
        let url = url::Url::parse(&format!("{}/", self.base))
            .map_err(|e| Error::location(&self.location, e.to_string()))?;
        crate::io::storage::ensure_store(ctx, &url)
    }

    fn url_of(&self, name: &str) -> String {
        format!("{}/data/{name}", self.base)
    }

    /// The object store the state lives in.
    fn store_arc(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.store)
    }

    /// Removes data file `name`.
    async fn delete(&self, name: &str) -> Result<()> {
        self.store.delete(&self.data_path(name)).await?;
        Ok(())
    }

    fn err(&self, problem: impl Into<String>) -> Error {
        Error::location(&self.location, format!("state: {}", problem.into()))
    }

    /// The committed manifest, or why there is none that can be used
    /// (`Ok(Err(reason))`: none yet, another format, unreadable).
    pub async fn manifest(&self) -> Result<std::result::Result<Manifest, String>> {
        let path = self.prefix.clone().join(MANIFEST);
        match self.store.get(&path).await {
            Ok(got) => {
                let bytes = got
                    .bytes()
                    .await
                    .map_err(|e| self.err(format!("cannot read {MANIFEST}: {e}")))?;
                Ok(parse_manifest(&bytes))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(Err("there is no state yet".into())),
            Err(e) => Err(self.err(format!("cannot read {MANIFEST}: {e}"))),
        }
    }

    fn data_path(&self, name: &str) -> StorePath {
        self.prefix.clone().join("data").join(name)
    }

    /// The check of data file `name` as it is now: its size and ETag, and
    /// its BLAKE3 (the file read whole) when the store gives no ETag.
    async fn check_of(&self, name: &str) -> Result<DataCheck> {
        let meta = self
            .store
            .head(&self.data_path(name))
            .await
            .map_err(|e| self.err(format!("cannot read data/{name}: {e}")))?;
        if meta.e_tag.is_some() {
            return Ok(DataCheck {
                size: meta.size,
                e_tag: meta.e_tag,
                blake3: None,
            });
        }
        Ok(DataCheck {
            size: meta.size,
            e_tag: None,
            blake3: Some(self.blake3_of(name).await?),
        })
    }

    /// BLAKE3 of data file `name`, read whole.
    async fn blake3_of(&self, name: &str) -> Result<String> {
        let got = self
            .store
            .get(&self.data_path(name))
            .await
            .map_err(|e| self.err(format!("cannot read data/{name}: {e}")))?;
        let mut stream = got.into_stream();
        let mut hasher = blake3::Hasher::new();
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| self.err(format!("cannot read data/{name}: {e}")))?
        {
            hasher.update(&chunk);
        }
        Ok(hasher.finalize().to_hex().to_string())
    }

    /// Checks every file `m` names against what was written, before any
    /// is used: `Err(reason)` when one is missing or differs in size or
    /// content, or when the manifest itself was changed.
    async fn verify(&self, m: &Manifest) -> std::result::Result<(), Fallback> {
        if m.checksum != m.content_checksum() {
            return Err(format!(
                "{MANIFEST} does not match its checksum (edited or damaged)"
            ));
        }
        let names = m.data_files();
        for name in &names {
            if !m.checks.contains_key(name) {
                return Err(format!("{MANIFEST} names data/{name} without its checksum"));
            }
        }
        let data = self.prefix.clone().join("data");
        let listed: Vec<ObjectMeta> = self
            .store
            .list(Some(&data))
            .try_collect()
            .await
            .map_err(|e| format!("the state's files cannot be listed ({e})"))?;
        let listed: HashMap<&str, &ObjectMeta> = listed
            .iter()
            .filter_map(|o| Some((o.location.filename()?, o)))
            .collect();
        let mut sorted: Vec<String> = names.iter().cloned().collect();
        sorted.sort();
        let changed =
            |name: &str| format!("state file data/{name} was changed since it was written");
        let mut to_hash = Vec::new();
        let mut to_head = Vec::new();
        for name in &sorted {
            let want = &m.checks[name];
            let Some(meta) = listed.get(name.as_str()) else {
                return Err(format!("state file data/{name} is missing"));
            };
            if meta.size != want.size {
                return Err(format!(
                    "state file data/{name} has {} bytes, {MANIFEST} says {}",
                    meta.size, want.size
                ));
            }
            match (&want.e_tag, &want.blake3) {
                // Some stores list no ETags: a HEAD says it.
                (Some(_), _) if meta.e_tag.is_none() => to_head.push(name.clone()),
                (Some(tag), _) if !same_tag(meta.e_tag.as_deref(), tag) => {
                    return Err(changed(name))
                }
                (Some(_), _) => {}
                (None, Some(_)) => to_hash.push(name.clone()),
                (None, None) => return Err(format!("{MANIFEST} has no check of data/{name}")),
            }
        }
        for name in to_head {
            let tag = self
                .store
                .head(&self.data_path(&name))
                .await
                .map_err(|e| format!("state file data/{name} cannot be read ({e})"))?
                .e_tag;
            let want = m.checks[&name].e_tag.as_deref().unwrap_or_default();
            if !same_tag(tag.as_deref(), want) {
                return Err(changed(&name));
            }
        }
        // Files of a store without ETags are read whole, a few at a time.
        let hashed: Vec<(String, Result<String>)> = futures::stream::iter(to_hash)
            .map(|name| {
                let store = self.clone();
                async move {
                    let got = store.blake3_of(&name).await;
                    (name, got)
                }
            })
            .buffered(4)
            .collect()
            .await;
        for (name, got) in hashed {
            match got {
                Err(e) => return Err(format!("state file data/{name} cannot be read ({e})")),
                Ok(h) if m.checks[&name].blake3.as_ref() != Some(&h) => return Err(changed(&name)),
                Ok(_) => {}
            }
        }
        Ok(())
    }

    async fn commit(&self, ctx: &SessionContext, manifest: &Manifest) -> Result<()> {
        let text = serde_json::to_vec_pretty(manifest)
            .map_err(|e| Error::Internal(format!("state manifest: {e}")))?;
        let location = Location::parse(&format!("{}/{MANIFEST}", self.base))?;
        put_atomically(ctx, &location, text).await
    }

    /// The highest generation of any file under `data/` (0 when none).
    async fn highest_generation(&self) -> Result<u64> {
        let data = self.prefix.clone().join("data");
        let listed: Vec<ObjectMeta> = self.store.list(Some(&data)).try_collect().await?;
        Ok(listed
            .iter()
            .filter_map(|m| generation_of(m.location.filename()?))
            .max()
            .unwrap_or(0))
    }

    /// Removes data files of earlier generations that `keep` does not name.
    async fn collect_garbage(&self, keep: &HashSet<String>, generation: u64) -> Result<usize> {
        let data = self.prefix.clone().join("data");
        let listed: Vec<ObjectMeta> = self.store.list(Some(&data)).try_collect().await?;
        let mut removed = 0;
        for meta in listed {
            let Some(name) = meta.location.filename() else {
                continue;
            };
            let old = generation_of(name).is_some_and(|g| g <= generation);
            if old && !keep.contains(name) {
                self.store.delete(&meta.location).await?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Whether an ETag listed now is the one recorded: S3 quotes ETags, and
/// may mark them weak, in a listing and a HEAD differently.
fn same_tag(listed: Option<&str>, recorded: &str) -> bool {
    let bare = |t: &str| t.trim_start_matches("W/").trim_matches('"').to_string();
    listed.is_some_and(|l| bare(l) == bare(recorded))
}

/// A manifest from `state.json`'s bytes, or why it cannot be used.
fn parse_manifest(bytes: &[u8]) -> std::result::Result<Manifest, Fallback> {
    serde_json::from_slice::<Manifest>(bytes).map_err(|e| {
        // A state of another format says so, rather than which field of
        // this format it lacks.
        let format = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| v.get("format")?.as_u64());
        match format {
            Some(f) if f != u64::from(STATE_FORMAT) => format!(
                "the state was written by another version (format {f}; this version reads \
                 format {STATE_FORMAT})"
            ),
            _ => format!("the state's manifest cannot be read ({e})"),
        }
    })
}

/// The generation a new state's files get: after the highest generation
/// anywhere in `data/`, so that a manifest that could not be read does not
/// make names repeat.
async fn next_generation(store: &StateStore, previous: Option<&Manifest>) -> Result<u64> {
    Ok(previous
        .map_or(0, |m| m.generation)
        .max(store.highest_generation().await?)
        + 1)
}

/// `g000012-…` → 12.
fn generation_of(name: &str) -> Option<u64> {
    name.strip_prefix('g')?.split('-').next()?.parse().ok()
}

/// A fresh object name for generation `generation`.
fn data_name(generation: u64, kind: &str) -> String {
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    format!(
        "g{generation:06}-{kind}-{:x}-{nanos:x}.parquet",
        std::process::id()
    )
}

/// Step timings on stderr when `SUPPORTFUNNEL_STATE_TIMINGS` is set: where
/// an incremental run spends its time (docs/PERFORMANCE.md).
struct Laps {
    on: bool,
    last: std::time::Instant,
}

impl Laps {
    fn new() -> Self {
        Self {
            on: std::env::var_os("SUPPORTFUNNEL_STATE_TIMINGS").is_some(),
            last: std::time::Instant::now(),
        }
    }

    fn lap(&mut self, step: &str) {
        if self.on {
            eprintln!("state: {step}: {:.3}s", self.last.elapsed().as_secs_f64());
        }
        self.last = std::time::Instant::now();
    }
}

/// A fail point for the crash tests: `SUPPORTFUNNEL_FAILPOINT=<name>`
/// aborts the process there, as a kill would.
pub fn fail_point(name: &str) {
    if std::env::var("SUPPORTFUNNEL_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("fail point {name}: aborting");
        std::process::abort();
    }
}

/// The state's part of one job run: the engine the reports run on, how the
/// `data_quality` rows are made whole, and the state to commit afterwards.
pub struct Prepared {
    /// The engine the reports run on: over anchors + live + new rows for an
    /// incremental run, the input tables' own for a full one.
    pub engine: Engine,
    /// `data_quality` values replacing the engine's (incremental runs).
    pub data_quality: Option<HashMap<(String, Option<String>), f64>>,
    /// What the summary says.
    pub run: StateRun,
    store: StateStore,
    pending: Pending,
    /// Keeps the reduced input's files until the reports are written.
    _dir: Option<crate::io::scratch::TempDir>,
}

/// What `commit` still needs.
struct Pending {
    previous: Option<Manifest>,
    events_files: Vec<FileEntry>,
    messages_files: Vec<FileEntry>,
    counters: Counters,
    new_frontier: DateTime<Utc>,
    /// Counters come from the first report's `data_quality` rows (full run).
    counters_from_report: bool,
    /// What the fold takes from the operators' build, taken before the
    /// reports let go of it ([`Prepared::take_from_build`]).
    from_build: Option<fold::FromBuild>,
    /// The fold's rows routed by the build's scan ([`Prepared::tap_the_scan`]).
    scan: Option<one_pass::ScanFold>,
}

/// Why the state cannot be used as it is (the run recomputes everything).
type Fallback = String;

/// Lists a contract table's files.
async fn list_files(
    ctx: &SessionContext,
    contract: &tables::Contract,
    location: &Location,
) -> Result<(ListingTableUrl, Vec<ObjectMeta>)> {
    tables::list_table_files(ctx, contract, location).await
}

fn file_url(table: &ListingTableUrl, meta: &ObjectMeta) -> String {
    format!("{}{}", table.object_store().as_str(), meta.location)
}

/// Registers `name` as the given files (or an empty table) with `schema`.
fn register_files(
    ctx: &SessionContext,
    name: &str,
    table: &ListingTableUrl,
    files: &[&ObjectMeta],
    schema: &SchemaRef,
) -> Result<()> {
    let provider: Arc<dyn datafusion::datasource::TableProvider> = if files.is_empty() {
        Arc::new(MemTable::try_new(Arc::clone(schema), vec![vec![]])?)
    } else {
        let urls = files
            .iter()
            .map(|m| ListingTableUrl::parse(file_url(table, m)))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension("");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(Arc::clone(schema));
        Arc::new(ListingTable::try_new(config)?)
    };
    ctx.deregister_table(name)?;
    ctx.register_table(name, provider)?;
    Ok(())
}

/// Registers state table `name` from its segments (an empty table of
/// `schema` when there are none).
async fn register_state_table(
    ctx: &SessionContext,
    store: &StateStore,
    name: &str,
    files: &[String],
    schema: SchemaRef,
) -> Result<()> {
    ctx.deregister_table(name)?;
    if files.is_empty() {
        ctx.register_table(name, Arc::new(MemTable::try_new(schema, vec![vec![]])?))?;
        return Ok(());
    }
    store.attach(ctx)?;
    let urls: Vec<String> = files.iter().map(|f| store.url_of(f)).collect();
    let df = ctx
        .read_parquet(urls, ParquetReadOptions::default())
        .await
        .map_err(|e| store.err(format!("table {name}: {e}")))?;
    ctx.register_table(name, df.into_view())?;
    Ok(())
}

/// Casts `df` to `schema`'s columns, in order.
fn conform(df: DataFrame, schema: &SchemaRef) -> Result<DataFrame> {
    let exprs = schema
        .fields()
        .iter()
        .map(|f| cast(col(f.name()), f.data_type().clone()).alias(f.name()))
        .collect::<Vec<_>>();
    Ok(df.select(exprs)?)
}

/// [`write_df`] for a file the run deletes when done with it: compressed
/// for speed (LZ4) rather than size.
async fn write_scratch_df(df: DataFrame, url: &str) -> Result<()> {
    df.write_parquet(
        url,
        DataFrameWriteOptions::new().with_single_file_output(true),
        Some(crate::io::scratch::parquet_options()),
    )
    .await?;
    Ok(())
}

async fn write_df(df: DataFrame, url: &str) -> Result<()> {
    df.write_parquet(
        url,
        DataFrameWriteOptions::new().with_single_file_output(true),
        None,
    )
    .await?;
    Ok(())
}

async fn count(ctx: &SessionContext, sql: &str, params: &Params) -> Result<u64> {
    let batch = query::collect_one(ctx, sql, params).await?;
    if batch.num_rows() == 0 {
        return Ok(0);
    }
    let c = cast_i64(batch.column(0))?;
    Ok(u64::try_from(c.max(0)).unwrap_or(0))
}

fn cast_i64(a: &dyn Array) -> Result<i64> {
    let a = datafusion::arrow::compute::cast(a, &DataType::Int64)?;
    let a = a.as_primitive::<Int64Type>();
    Ok(if a.is_null(0) { 0 } else { a.value(0) })
}

fn ts_param(t: DateTime<Utc>) -> ScalarValue {
    ScalarValue::TimestampMicrosecond(Some(t.timestamp_micros()), Some("UTC".into()))
}

/// Prepares a run: decides between an incremental and a full run and
/// builds the engine the reports run on. `engine` has the input tables
/// registered; `windows_start` is the earliest previous-period start of the
/// run's reports, the frontier the new state gets.
pub async fn prepare(
    engine: &Engine,
    state: &Location,
    windows_start: DateTime<Utc>,
    full: bool,
) -> Result<Prepared> {
    let mut laps = Laps::new();
    let ctx = &engine.ctx;
    let store = StateStore::open(ctx, state)?;
    let events_loc = engine
        .options
        .table(EVENTS.name)
        .ok_or_else(|| Error::usage("the job needs an events table"))?
        .location
        .clone();
    let messages_loc = engine
        .options
        .table(MESSAGES.name)
        .ok_or_else(|| Error::usage("the job needs a messages table"))?
        .location
        .clone();
    let (events_url, events_files) = list_files(ctx, &EVENTS, &events_loc).await?;
    let (messages_url, messages_files) = list_files(ctx, &MESSAGES, &messages_loc).await?;
    let schema_of = |name: &str| -> Result<SchemaRef> {
        engine
            .tables
            .iter()
            .find(|t| t.name == name)
            .map(|t| Arc::clone(&t.schema))
            .ok_or_else(|| Error::Internal(format!("table {name} is not registered")))
    };
    let events_schema = schema_of(EVENTS.name)?;
    let messages_schema = schema_of(MESSAGES.name)?;
    // The run reads exactly the files its manifest will list, even if more
    // arrive while it runs (a directory table would list them again).
    let all_events: Vec<&ObjectMeta> = events_files.iter().collect();
    let all_messages: Vec<&ObjectMeta> = messages_files.iter().collect();
    register_files(ctx, EVENTS.name, &events_url, &all_events, &events_schema)?;
    register_files(
        ctx,
        MESSAGES.name,
        &messages_url,
        &all_messages,
        &messages_schema,
    )?;

    laps.lap("list and register inputs");
    let previous = if full {
        Err("asked for (--full)".to_string())
    } else {
        store.manifest().await?
    };
    let checked = previous.and_then(|m| {
        check_manifest(
            &m,
            &events_loc,
            &messages_loc,
            &events_files,
            &messages_files,
            windows_start,
        )
        .map(|()| m)
    });
    let entries = |files: &[ObjectMeta]| files.iter().map(FileEntry::of).collect::<Vec<_>>();
    let all_rows = engine.tables.iter().map(|t| t.rows).sum();
    let full_run = |reason: String, previous: Option<Manifest>| Prepared {
        engine: Engine {
            ctx: engine.ctx.clone(),
            tables: engine.tables.clone(),
            options: engine.options.clone(),
        },
        data_quality: None,
        run: StateRun {
            mode: "full",
            reason: Some(reason),
            new_files: events_files.len() + messages_files.len(),
            new_rows: all_rows,
            frontier: windows_start.to_rfc3339(),
            error: None,
            fold: None,
        },
        pending: Pending {
            previous,
            events_files: entries(&events_files),
            messages_files: entries(&messages_files),
            counters: Counters::default(),
            new_frontier: windows_start,
            counters_from_report: true,
            from_build: None,
            scan: None,
        },
        _dir: None,
        store: store.clone(),
    };
    let manifest = match checked {
        Ok(m) => m,
        Err(reason) => {
            // A manifest that is there but unusable still tells which
            // generation comes next (and which files to collect).
            let previous = store.manifest().await?.ok();
            return Ok(full_run(reason, previous));
        }
    };
    // Every file the state names is checked before any is used: a state
    // file lost or changed would otherwise give wrong numbers quietly.
    if let Err(reason) = store.verify(&manifest).await {
        return Ok(full_run(reason, Some(manifest)));
    }
    laps.lap("state verified");
    let inputs = Inputs {
        events_url: &events_url,
        events_files: &events_files,
        messages_url: &messages_url,
        messages_files: &messages_files,
        events_schema: &events_schema,
        messages_schema: &messages_schema,
    };
    match run::incremental_run(engine, &store, &manifest, &inputs, windows_start, &mut laps).await {
        Ok(Ok(prepared)) => Ok(prepared),
        Ok(Err(reason)) => Ok(full_run(reason, Some(manifest))),
        // Whatever went wrong on the way, the full recompute gives the
        // right result (and fails in turn if the inputs are at fault).
        Err(e) => Ok(full_run(
            format!("the incremental run failed ({e})"),
            Some(manifest),
        )),
    }
}

/// The input files of a run, as listed once at its start.
struct Inputs<'a> {
    events_url: &'a ListingTableUrl,
    events_files: &'a [ObjectMeta],
    messages_url: &'a ListingTableUrl,
    messages_files: &'a [ObjectMeta],
    events_schema: &'a SchemaRef,
    messages_schema: &'a SchemaRef,
}

/// The seven reject reasons, in the spec's order.
pub use crate::rules::REJECT_REASONS;

/// `Err(reason)` when the manifest cannot serve this run.
fn check_manifest(
    m: &Manifest,
    events: &Location,
    messages: &Location,
    events_files: &[ObjectMeta],
    messages_files: &[ObjectMeta],
    windows_start: DateTime<Utc>,
) -> std::result::Result<(), Fallback> {
    if m.format != STATE_FORMAT || m.version != env!("CARGO_PKG_VERSION") {
        return Err(format!(
            "the state was written by another version (format {}, version {})",
            m.format, m.version
        ));
    }
    if m.events != events.to_string() || m.messages != messages.to_string() {
        return Err(format!(
            "the state was built from other inputs ({} and {})",
            m.events, m.messages
        ));
    }
    if windows_start < m.frontier() {
        return Err(format!(
            "a report period starts at {}, before the state's frontier {} (a re-run of an \
             earlier date)",
            windows_start.to_rfc3339(),
            m.frontier().to_rfc3339()
        ));
    }
    for (table, old, now) in [
        ("events", &m.events_files, events_files),
        ("messages", &m.messages_files, messages_files),
    ] {
        let now: HashMap<&str, &ObjectMeta> =
            now.iter().map(|f| (f.location.as_ref(), f)).collect();
        for f in old {
            match now.get(f.path.as_str()) {
                None => return Err(format!("{table} file {} was deleted", f.path)),
                Some(meta) if FileEntry::of(meta) != *f => {
                    return Err(format!("{table} file {} changed", f.path))
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

/// Registers the state's tables (`state_*`) on `ctx`.
async fn register_state(
    ctx: &SessionContext,
    store: &StateStore,
    m: &Manifest,
    events_schema: &SchemaRef,
    messages_schema: &SchemaRef,
) -> Result<()> {
    use datafusion::arrow::datatypes::{Field, Schema};
    let one = |name: &str| Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, true)]));
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let anchors = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, true),
        Field::new("start", ts, true),
    ]));
    register_state_table(
        ctx,
        store,
        "state_event_index",
        &m.event_index,
        one("event_id"),
    )
    .await?;
    register_state_table(
        ctx,
        store,
        "state_message_index",
        &m.message_index,
        one("message_id"),
    )
    .await?;
    register_state_table(
        ctx,
        store,
        "state_started",
        &m.started,
        one("conversation_id"),
    )
    .await?;
    register_state_table(
        ctx,
        store,
        "state_anchors",
        std::slice::from_ref(&m.anchors),
        anchors,
    )
    .await?;
    register_state_table(
        ctx,
        store,
        "state_live_events",
        std::slice::from_ref(&m.live_events),
        Arc::clone(events_schema),
    )
    .await?;
    register_state_table(
        ctx,
        store,
        "state_live_messages",
        std::slice::from_ref(&m.live_messages),
        Arc::clone(messages_schema),
    )
    .await?;
    Ok(())
}

impl Prepared {
    /// The state's location.
    pub fn location(&self) -> &Location {
        &self.store.location
    }

    /// Replaces the `data_quality` values of a report batch with the
    /// whole-input ones (incremental runs); other rows are untouched.
    pub fn complete(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let Some(dq) = &self.data_quality else {
            return Ok(batch);
        };
        let section = batch.column(0).as_string::<i32>();
        let metric = batch.column(1).as_string::<i32>();
        let segment = batch.column(2).as_string::<i32>();
        let current = batch
            .column(5)
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        let values: Float64Array = (0..batch.num_rows())
            .map(|i| {
                if section.value(i) != "data_quality" {
                    return Ok(current.is_valid(i).then(|| current.value(i)));
                }
                let key = (
                    metric.value(i).to_string(),
                    segment.is_valid(i).then(|| segment.value(i).to_string()),
                );
                dq.get(&key).copied().map(Some).ok_or_else(|| {
                    Error::Internal(format!("data_quality row {key:?} has no state value"))
                })
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .collect();
        let mut columns = batch.columns().to_vec();
        columns[5] = Arc::new(values);
        Ok(RecordBatch::try_new(batch.schema(), columns)?)
    }

    /// A full run in one process with the operators hands their next build
    /// a tap: its scan, which reads every row for the reports, routes the
    /// fold's rows as it reads them ([`one_pass::ScanFold`]). Not handed (the
    /// fold reads the events itself, as it would anyway) when it cannot be
    /// set up.
    pub async fn tap_the_scan(&mut self) {
        if self.run.mode != "full" || !crate::report::builds_here(&self.engine) {
            return;
        }
        let installed = async {
            let generation = next_generation(&self.store, self.pending.previous.as_ref()).await?;
            one_pass::ScanFold::install(
                &self.engine.ctx,
                &self.store,
                generation,
                self.pending.new_frontier.timestamp_micros(),
            )
            .await
        }
        .await;
        match installed {
            Ok(scan) => self.pending.scan = scan,
            Err(e) if std::env::var_os("SUPPORTFUNNEL_STATE_TIMINGS").is_some() => {
                eprintln!("state: the scan was not tapped for the fold: {e}")
            }
            Err(_) => {}
        }
    }

    /// Under a memory limit, a full run in one process with the operators
    /// takes what its fold needs from the operators' build (the
    /// conversations started before the new frontier and the anchors) now,
    /// before the reports: each report lets go of the build when its
    /// tables are made, and the fold would otherwise make it again. The
    /// reports then read the build made here. Not taken (the fold makes the
    /// build again, as without this) when it fails: the reports say why
    /// if the build itself cannot be made.
    pub async fn take_from_build(&mut self) {
        if self.run.mode != "full"
            || self.engine.options.memory_limit.is_none()
            || !crate::report::builds_here(&self.engine)
        {
            return;
        }
        let base = self
            .engine
            .options
            .temp_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        match fold::from_build(&self.engine, self.pending.new_frontier, &base).await {
            Ok(taken) => self.pending.from_build = Some(taken),
            Err(e) if std::env::var_os("SUPPORTFUNNEL_STATE_TIMINGS").is_some() => {
                eprintln!("state: the fold's inputs were not taken before the reports: {e}")
            }
            Err(_) => {}
        }
    }

    /// Writes the new state and makes it current. `first_report` is a
    /// report batch of this run (a full run takes its whole-input counts
    /// from its `data_quality` rows).
    pub async fn commit(self, first_report: &RecordBatch) -> Result<StateRun> {
        let Prepared {
            engine,
            mut run,
            store,
            mut pending,
            _dir,
            ..
        } = self;
        if pending.counters_from_report {
            pending.counters = counters_from_report(first_report)?;
        }
        // The scan's tap writes its files with the generation it was given.
        let generation = match &pending.scan {
            Some(scan) => scan.generation,
            None => next_generation(&store, pending.previous.as_ref()).await?,
        };
        let previous = pending
            .previous
            .clone()
            .filter(|_| run.mode == "incremental");
        let (mut manifest, how) =
            fold::fold(&engine, &store, previous.as_ref(), pending, generation).await?;
        run.fold = Some(how);
        // Files kept from the verified previous state keep their checks;
        // the new ones are read back once.
        let mut checks = BTreeMap::new();
        for name in manifest.data_files() {
            let known = previous.as_ref().and_then(|m| m.checks.get(&name)).cloned();
            let check = match known {
                Some(c) => c,
                None => store.check_of(&name).await?,
            };
            checks.insert(name, check);
        }
        manifest.checks = checks;
        let manifest = manifest.sealed();
        fail_point("before-state-commit");
        store.commit(&engine.ctx, &manifest).await?;
        fail_point("after-state-commit");
        // Garbage only costs space; a failure to collect it is not the run's.
        let _ = store
            .collect_garbage(&manifest.data_files(), generation)
            .await;
        drop(_dir);
        Ok(run)
    }
}

fn counters_from_report(batch: &RecordBatch) -> Result<Counters> {
    let section = batch.column(0).as_string::<i32>();
    let metric = batch.column(1).as_string::<i32>();
    let segment: &StringArray = batch.column(2).as_string::<i32>();
    let current = batch
        .column(5)
        .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
    let mut c = Counters::default();
    for i in 0..batch.num_rows() {
        if section.value(i) != "data_quality" || current.is_null(i) {
            continue;
        }
        let v = current.value(i) as u64;
        match (
            metric.value(i),
            segment.is_valid(i).then(|| segment.value(i)),
        ) {
            ("rows_read", Some("events")) => c.events_rows_read = v,
            ("rows_read", Some("messages")) => c.messages_rows_read = v,
            ("rows_rejected", Some(reason)) => {
                c.rejects.insert(reason.to_string(), v);
            }
            _ => {}
        }
    }
    Ok(c)
}

/// Empty index tables, for a full run's fold.
async fn register_empty_state(ctx: &SessionContext) -> Result<()> {
    use datafusion::arrow::datatypes::{Field, Schema};
    for (name, column) in [
        ("state_event_index", "event_id"),
        ("state_message_index", "message_id"),
        ("state_started", "conversation_id"),
    ] {
        let schema = Arc::new(Schema::new(vec![Field::new(column, DataType::Utf8, true)]));
        ctx.deregister_table(name)?;
        ctx.register_table(name, Arc::new(MemTable::try_new(schema, vec![vec![]])?))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn meta(path: &str, size: u64) -> ObjectMeta {
        ObjectMeta {
            location: StorePath::from(path),
            last_modified: DateTime::from_timestamp_millis(1_000).unwrap(),
            size,
            e_tag: Some("t".into()),
            version: None,
        }
    }

    fn manifest(files: &[ObjectMeta], frontier: DateTime<Utc>) -> Manifest {
        Manifest {
            format: STATE_FORMAT,
            version: env!("CARGO_PKG_VERSION").into(),
            generation: 3,
            events: "ev".into(),
            messages: "msg".into(),
            frontier_us: frontier.timestamp_micros(),
            events_files: files.iter().map(FileEntry::of).collect(),
            messages_files: vec![],
            counters: Counters::default(),
            anchors: "a".into(),
            live_events: "l".into(),
            live_messages: "m".into(),
            event_index: vec![],
            message_index: vec![],
            started: vec![],
            checks: BTreeMap::new(),
            checksum: String::new(),
        }
    }

    #[test]
    fn the_state_serves_a_run_only_when_it_can_prove_the_result() {
        let c = DateTime::from_timestamp(1_780_000_000, 0).unwrap();
        let files = [meta("ev/a.parquet", 10), meta("ev/b.parquet", 20)];
        let m = manifest(&files, c);
        let (ev, msg) = (
            Location::parse("ev").unwrap(),
            Location::parse("msg").unwrap(),
        );
        let check = |files: &[ObjectMeta], start| check_manifest(&m, &ev, &msg, files, &[], start);
        assert_eq!(check(&files, c), Ok(()));
        // a new file is fine
        let more = [files[0].clone(), files[1].clone(), meta("ev/c.parquet", 5)];
        assert_eq!(check(&more, c + Duration::days(1)), Ok(()));
        let e = check(&files[..1], c).unwrap_err();
        assert!(e.contains("ev/b.parquet was deleted"), "{e}");
        let e = check(&[files[0].clone(), meta("ev/b.parquet", 21)], c).unwrap_err();
        assert!(e.contains("ev/b.parquet changed"), "{e}");
        let e = check(&files, c - Duration::days(1)).unwrap_err();
        assert!(e.contains("before the state's frontier"), "{e}");
        let other = Location::parse("elsewhere").unwrap();
        let e = check_manifest(&m, &other, &msg, &files, &[], c).unwrap_err();
        assert!(e.contains("other inputs"), "{e}");
        let old = Manifest {
            format: STATE_FORMAT + 1,
            ..m.clone()
        };
        let e = check_manifest(&old, &ev, &msg, &files, &[], c).unwrap_err();
        assert!(e.contains("another version"), "{e}");
    }

    #[test]
    fn a_manifest_changed_after_sealing_is_found_out() {
        let m = manifest(&[meta("ev/a.parquet", 10)], Utc::now()).sealed();
        assert_eq!(m.checksum, m.content_checksum());
        let text = serde_json::to_string(&m).unwrap();
        let back = parse_manifest(text.as_bytes()).unwrap();
        assert_eq!(
            back.checksum,
            back.content_checksum(),
            "survives a round trip"
        );
        let mut edited = back.clone();
        edited.counters.events_rows_read += 1;
        assert_ne!(edited.checksum, edited.content_checksum());
        // a state of format 1 had neither checks nor checksum
        let mut older: serde_json::Value = serde_json::from_str(&text).unwrap();
        let fields = older.as_object_mut().unwrap();
        fields.remove("checks");
        fields.remove("checksum");
        fields.insert("format".into(), 1.into());
        let e = parse_manifest(older.to_string().as_bytes()).unwrap_err();
        assert!(e.contains("another version (format 1"), "{e}");
    }

    #[test]
    fn etags_compare_without_quotes_or_weakness() {
        assert!(same_tag(Some("\"abc\""), "abc"));
        assert!(same_tag(Some("W/\"abc\""), "\"abc\""));
        assert!(!same_tag(Some("abd"), "abc"));
        assert!(!same_tag(None, "abc"));
    }

    #[test]
    fn data_files_carry_their_generation() {
        let name = data_name(12, "event-index");
        assert_eq!(generation_of(&name), Some(12));
        assert_ne!(name, data_name(12, "event-index"), "never reused");
        assert_eq!(generation_of("state.json"), None);
        let m = manifest(&[], Utc::now());
        assert!(m.data_files().contains("l") && m.data_files().contains("a"));
    }
}
