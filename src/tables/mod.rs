//! Registering the contract tables (`events`, `messages`, spec §1) from
//! Parquet: one file, a directory, or a Hive-partitioned directory, on local
//! disk or in an object store.
//!
//! Registration reads every file's footer (concurrently) and checks it against
//! the contract, so a missing column or an incompatible type fails up front
//! with the table, the column and the file named, instead of half-way through
//! a report. The table is then exposed with one canonical schema and
//! DataFusion casts each file to it while scanning:
//!
//! * strings (Utf8, LargeUtf8, Utf8View, dictionaries of them) → Utf8. Not
//!   Utf8View: a filtered or joined view array keeps every Parquet page it
//!   was decoded from alive, and the memory pool counts those pages, so sorts
//!   spilled early, failed under `--memory-limit`, and the report's peak
//!   memory nearly doubled (docs/PERFORMANCE.md, the SQL path's steps);
//! * timestamps of any unit, with or without a zone → `Timestamp(unit, "UTC")`,
//!   where `unit` is the finest unit any file uses for that column, so no
//!   file loses precision (a zone-less timestamp is read as UTC);
//! * small integers → Int32 (Int64 when a file holds wider integers, so an
//!   out-of-range rating is rejected by the report rather than failing a cast);
//! * lists of strings → `List<Utf8>`.
//!
//! Columns outside the contract are not exposed. Hive partition directories
//! (`date=2026-03-01/…`) become extra Utf8 columns usable for pruning; the
//! report never trusts them for time (spec §6).

#[cfg(feature = "delta")]
pub mod delta;
pub mod listing;
pub mod native;
pub mod views;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::parquet::arrow::parquet_to_arrow_schema;
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore};

use crate::error::{Error, Result};
use crate::functions::timestamps::ticks_per_second;
use crate::io::storage;
use crate::settings::location::Location;
use listing::Listing;

/// The logical kind of a contract column; each accepts a family of physical
/// Arrow types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    /// Any string type.
    Str,
    /// Any integer type that fits in Int64.
    Int,
    /// Any timestamp.
    Timestamp,
    /// A list of strings.
    StrList,
}

/// One table of the data contract.
#[derive(Debug, Clone, Copy)]
pub struct Contract {
    /// Table name in SQL.
    pub name: &'static str,
    /// `(column, kind)` in contract order.
    pub columns: &'static [(&'static str, ColumnKind)],
}

/// `events` — customer actions and conversation lifecycle (spec §1).
pub const EVENTS: Contract = Contract {
    name: crate::rules::EVENTS_TABLE,
    columns: &[
        ("event_id", ColumnKind::Str),
        ("user_id", ColumnKind::Str),
        ("ts", ColumnKind::Timestamp),
        ("event_type", ColumnKind::Str),
        ("channel", ColumnKind::Str),
        ("article_id", ColumnKind::Str),
        ("conversation_id", ColumnKind::Str),
        ("actor", ColumnKind::Str),
        ("rating", ColumnKind::Int),
    ],
};

/// `messages` — proactive outbound deliveries (spec §1).
pub const MESSAGES: Contract = Contract {
    name: crate::rules::MESSAGES_TABLE,
    columns: &[
        ("message_id", ColumnKind::Str),
        ("user_id", ColumnKind::Str),
        ("sent_at", ColumnKind::Timestamp),
        ("content_type", ColumnKind::Str),
        ("sender", ColumnKind::Str),
        ("tags", ColumnKind::StrList),
        ("opened_at", ColumnKind::Timestamp),
        ("clicked_at", ColumnKind::Timestamp),
        ("reacted_at", ColumnKind::Timestamp),
    ],
};

/// What registration found out about a table.
#[derive(Debug, Clone)]
pub struct TableInfo {
    /// Table name.
    pub name: String,
    /// Where its files are.
    pub location: Location,
    /// Number of Parquet files.
    pub files: usize,
    /// Total bytes of those files.
    pub bytes: u64,
    /// Rows according to the footers.
    pub rows: u64,
    /// Hive partition columns found in the directory layout.
    pub partition_columns: Vec<String>,
    /// The canonical schema the table exposes (without partition columns).
    pub schema: SchemaRef,
    /// Files under the location that are not read and look like data
    /// (hidden, nested, not `.parquet`), as one line; `None` when none.
    pub warning: Option<String>,
    /// Hidden files skipped here that DataFusion's own listing (a
    /// cluster's scheduler) would read.
    pub read_elsewhere: Vec<String>,
}

fn is_string(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => true,
        DataType::Dictionary(_, v) => matches!(
            v.as_ref(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ),
        _ => false,
    }
}

/// Per-column accumulator of what the files hold, to pick the canonical type.
#[derive(Debug, Clone, Default)]
struct TypesSeen {
    finest: Option<TimeUnit>,
    /// Timestamp columns: each file's unit and, from its footer statistics,
    /// the least and greatest raw value (`None`: no statistics).
    ranges: Vec<(TimeUnit, Option<(i64, i64)>)>,
    wide_int: bool,
}

/// The multiplier from ticks of `from` to ticks of `to` when `to` is finer
/// (1 otherwise: dividing never overflows).
fn unit_factor(from: TimeUnit, to: TimeUnit) -> i64 {
    (ticks_per_second(to) / ticks_per_second(from)).max(1)
}

/// The unit a timestamp column is exposed in: the finest unit any file uses,
/// so no file loses precision, unless a file of a coarser unit holds a value
/// that unit cannot represent (a year-2500 millisecond timestamp does not
/// fit in nanoseconds, whose range ends in 2262); then the finest unit that
/// holds every value the footers report. Casting one file would otherwise
/// fail every query over the table for one row. Files without statistics
/// are assumed to fit.
fn fitting_unit(types_seen: &TypesSeen) -> TimeUnit {
    const COARSER: [TimeUnit; 4] = [
        TimeUnit::Nanosecond,
        TimeUnit::Microsecond,
        TimeUnit::Millisecond,
        TimeUnit::Second,
    ];
    let finest = types_seen.finest.unwrap_or(TimeUnit::Microsecond);
    COARSER
        .into_iter()
        .skip_while(|u| *u != finest)
        .find(|to| {
            types_seen.ranges.iter().all(|(from, range)| {
                let f = unit_factor(*from, *to);
                range.is_none_or(|(lo, hi)| {
                    lo.checked_mul(f).is_some() && hi.checked_mul(f).is_some()
                })
            })
        })
        .unwrap_or(TimeUnit::Second)
}

/// The least and greatest raw value of an INT64 leaf column `column` over
/// all row groups, from the footer's statistics; `None` when a row group has
/// none (a row group of nulls only has nothing to fit and is skipped).
fn int64_range(
    md: &datafusion::parquet::file::metadata::ParquetMetaData,
    column: &str,
) -> Option<(i64, i64)> {
    use datafusion::parquet::file::statistics::Statistics;
    let descr = md.file_metadata().schema_descr();
    let index = (0..descr.num_columns()).find(|&i| {
        let path = descr.column(i).path().parts().to_vec();
        path.len() == 1 && path[0] == column
    })?;
    let mut range: Option<(i64, i64)> = None;
    for rg in md.row_groups() {
        match rg.column(index).statistics()? {
            Statistics::Int64(v) => {
                if let (Some(lo), Some(hi)) = (v.min_opt(), v.max_opt()) {
                    range = Some(range.map_or((*lo, *hi), |(a, b)| (a.min(*lo), b.max(*hi))));
                }
            }
            _ => return None,
        }
    }
    range
}

/// Checks one file's type for a contract column; returns a problem sentence.
fn check_type(kind: ColumnKind, t: &DataType, types_seen: &mut TypesSeen) -> Option<String> {
    let ok = match kind {
        ColumnKind::Str => is_string(t),
        ColumnKind::Int => match t {
            DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::UInt8
            | DataType::UInt16 => true,
            DataType::Int64 | DataType::UInt32 => {
                types_seen.wide_int = true;
                true
            }
            DataType::Null => true,
            _ => false,
        },
        ColumnKind::Timestamp => match t {
            DataType::Timestamp(unit, _) => {
                if types_seen
                    .finest
                    .is_none_or(|f| ticks_per_second(*unit) > ticks_per_second(f))
                {
                    types_seen.finest = Some(*unit);
                }
                types_seen.ranges.push((*unit, None));
                true
            }
            DataType::Null => true,
            _ => false,
        },
        ColumnKind::StrList => match t {
            DataType::List(f) | DataType::LargeList(f) | DataType::ListView(f) => {
                is_string(f.data_type())
            }
            DataType::Null => true,
            _ => false,
        },
    };
    if ok {
        return None;
    }
    let expected = match kind {
        ColumnKind::Str => "a string",
        ColumnKind::Int => "an integer",
        ColumnKind::Timestamp => "a timestamp",
        ColumnKind::StrList => "a list of strings",
    };
    Some(format!("has type {t}, expected {expected}"))
}

fn canonical(kind: ColumnKind, types_seen: &TypesSeen) -> DataType {
    match kind {
        ColumnKind::Str => DataType::Utf8,
        ColumnKind::Int if types_seen.wide_int => DataType::Int64,
        ColumnKind::Int => DataType::Int32,
        ColumnKind::Timestamp => DataType::Timestamp(fitting_unit(types_seen), Some("UTC".into())),
        ColumnKind::StrList => DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
    }
}

/// What one file's footer says: its Arrow schema, its rows, and for each
/// timestamp column of the contract the range of its raw values.
#[derive(Debug, Clone)]
struct FileFacts {
    schema: SchemaRef,
    rows: u64,
    ts_ranges: Vec<(&'static str, Option<(i64, i64)>)>,
}

/// Reads one file's facts from its footer. The footer goes into
/// DataFusion's metadata cache, so the scans that follow do not fetch it
/// again.
async fn file_schema(
    ctx: &SessionContext,
    contract: &Contract,
    store: &dyn ObjectStore,
    meta: &ObjectMeta,
    display: &str,
) -> Result<FileFacts> {
    let table = contract.name;
    let bad = |message: String| Error::BadFile {
        table: table.to_string(),
        file: display.to_string(),
        message,
    };
    let cache = ctx.runtime_env().cache_manager.get_file_metadata_cache();
    let md = DFParquetMetadata::new(store, meta)
        .with_file_metadata_cache(Some(cache))
        .fetch_metadata()
        .await
        .map_err(|e| bad(e.strip_backtrace()))?;
    let fmd = md.file_metadata();
    let schema = parquet_to_arrow_schema(fmd.schema_descr(), fmd.key_value_metadata())
        .map_err(|e| bad(e.to_string()))?;
    let ts_ranges = contract
        .columns
        .iter()
        .filter(|(_, k)| *k == ColumnKind::Timestamp)
        .map(|(c, _)| (*c, int64_range(&md, c)))
        .collect();
    Ok(FileFacts {
        schema: Arc::new(schema),
        rows: fmd.num_rows().max(0) as u64,
        ts_ranges,
    })
}

/// Renders an object path as the user would recognise it.
fn display_path(url: &ListingTableUrl, meta: &ObjectMeta) -> String {
    if url.scheme() == "file" {
        format!("/{}", meta.location)
    } else {
        let u = url.get_url();
        format!(
            "{}://{}/{}",
            u.scheme(),
            u.host_str().unwrap_or(""),
            meta.location
        )
    }
}

/// Turns a table's location into a listing URL; directories get a
/// trailing slash so they are listed rather than looked up as one object.
fn table_url(contract: &Contract, location: &Location) -> Result<ListingTableUrl> {
    let normalized = match location {
        Location::Remote(url) => {
            let text = url.as_str();
            if text.ends_with('/') || text.ends_with(".parquet") {
                text.to_string()
            } else {
                format!("{text}/")
            }
        }
        Location::Local(p) => {
            if !p.exists() {
                return Err(Error::MissingLocation {
                    table: contract.name.to_string(),
                    location: location.to_string(),
                });
            }
            let abs = std::fs::canonicalize(p).map_err(|e| Error::io(p, e))?;
            let mut s = abs.to_string_lossy().into_owned();
            if abs.is_dir() && !s.ends_with('/') {
                s.push('/');
            }
            s
        }
    };
    ListingTableUrl::parse(&normalized).map_err(|e| {
        Error::location(
            location,
            format!("table `{}`: not a valid path or URL: {e}", contract.name),
        )
    })
}

/// Hive partition keys of one file (`k=v` directories between the table root
/// and the file).
fn partition_keys(url: &ListingTableUrl, meta: &ObjectMeta) -> Vec<String> {
    let Some(parts) = url.strip_prefix(&meta.location) else {
        return vec![];
    };
    let parts: Vec<&str> = parts.collect();
    parts
        .iter()
        .take(parts.len().saturating_sub(1))
        .filter_map(|p| p.split_once('=').map(|(k, _)| k.to_string()))
        .collect()
}

/// The table's URL and its Parquet files (non-empty, sorted by path), as
/// registration sees them (the rule of [`crate::tables::listing`]), listed now.
pub async fn list_table_files(
    ctx: &SessionContext,
    contract: &Contract,
    location: &Location,
) -> Result<(ListingTableUrl, Vec<ObjectMeta>)> {
    let (url, listing) = list(ctx, contract, location).await?;
    Ok((url, listing.files))
}

/// The table's URL (tagged with its name) and its listing now.
async fn list(
    ctx: &SessionContext,
    contract: &Contract,
    location: &Location,
) -> Result<(ListingTableUrl, Listing)> {
    let url = listing::tagged(table_url(contract, location)?, contract.name);
    storage::ensure_store(ctx, url.get_url())?;
    let store = ctx.runtime_env().object_store(url.object_store())?;
    let nested_ok = !ctx
        .state()
        .config_options()
        .execution
        .listing_table_ignore_subdirectory;
    let listed = listing::list_now(store.as_ref(), &url, nested_ok, |m| display_path(&url, m))
        .await
        .map_err(|e| {
            map_listing_error(
                contract,
                location,
                datafusion::error::DataFusionError::ObjectStore(Box::new(e)),
            )
        })?;
    Ok((url, listed))
}

/// The error for a table whose listing holds no file.
fn no_files(contract: &Contract, location: &Location, url: &ListingTableUrl) -> Error {
    if url.scheme() == "file" || url.is_collection() {
        Error::EmptyTable {
            table: contract.name.to_string(),
            location: location.to_string(),
        }
    } else {
        Error::MissingLocation {
            table: contract.name.to_string(),
            location: location.to_string(),
        }
    }
}

/// A file version: path, size, modification time.
type FileVersion = (String, u64, i64);

fn version_of(meta: &ObjectMeta) -> FileVersion {
    (
        meta.location.to_string(),
        meta.size,
        meta.last_modified.timestamp_nanos_opt().unwrap_or_default(),
    )
}

/// What a table's files, validated together, make: its schema and layout.
#[derive(Debug, Clone, PartialEq)]
struct Validated {
    schema: SchemaRef,
    partition_columns: Vec<String>,
    rows: u64,
}

/// Checks `files` against the contract: one partition layout, every
/// column present with an accepted type; gives the canonical schema.
/// Footers of file versions in `known` are not read again; the ones read
/// are added to it.
async fn validate(
    ctx: &SessionContext,
    contract: &Contract,
    location: &Location,
    url: &ListingTableUrl,
    files: &[ObjectMeta],
    known: &mut HashMap<FileVersion, Arc<FileFacts>>,
) -> Result<Validated> {
    let store = ctx.runtime_env().object_store(url.object_store())?;
    // Partition layout must be the same for every file.
    let keys = partition_keys(url, &files[0]);
    for f in &files[1..] {
        let k = partition_keys(url, f);
        if k != keys {
            return Err(Error::location(
                location,
                format!(
                    "table `{}`: mixed partition layouts: {} has [{}], {} has [{}]",
                    contract.name,
                    display_path(url, &files[0]),
                    keys.join(", "),
                    display_path(url, f),
                    k.join(", ")
                ),
            ));
        }
    }

    // Read the footers not read before, a few at a time (object stores
    // reward concurrency). Owned metas: a closure over borrowed ones makes
    // the future not `Send` (a higher-ranked lifetime the compiler cannot
    // prove), and the binary runs commands as spawned tasks.
    let unread: Vec<ObjectMeta> = files
        .iter()
        .filter(|m| !known.contains_key(&version_of(m)))
        .cloned()
        .collect();
    let read: Vec<(FileVersion, FileFacts)> = futures::stream::iter(unread)
        .map(|meta: ObjectMeta| {
            let store = Arc::clone(&store);
            let display = display_path(url, &meta);
            let (ctx, contract) = (ctx.clone(), *contract);
            async move {
                let facts = file_schema(&ctx, &contract, store.as_ref(), &meta, &display).await?;
                Ok::<_, Error>((version_of(&meta), facts))
            }
        })
        .buffered(16)
        .try_collect()
        .await?;
    for (version, facts) in read {
        known.insert(version, Arc::new(facts));
    }

    let mut types_seen = vec![TypesSeen::default(); contract.columns.len()];
    let mut rows = 0u64;
    for meta in files {
        let facts = &known[&version_of(meta)];
        let file = display_path(url, meta);
        rows += facts.rows;
        for (i, (col, kind)) in contract.columns.iter().enumerate() {
            let problem = match facts.schema.field_with_name(col) {
                Err(_) => Some("is missing".to_string()),
                Ok(f) => {
                    let before = types_seen[i].ranges.len();
                    let problem = check_type(*kind, f.data_type(), &mut types_seen[i]);
                    // This file's timestamp unit was just recorded: add its range.
                    if types_seen[i].ranges.len() > before {
                        let range = facts.ts_ranges.iter().find(|(c, _)| c == col);
                        if let (Some(last), Some((_, range))) =
                            (types_seen[i].ranges.last_mut(), range)
                        {
                            last.1 = *range;
                        }
                    }
                    problem
                }
            };
            if let Some(problem) = problem {
                return Err(Error::Schema {
                    table: contract.name.to_string(),
                    column: col.to_string(),
                    problem,
                    file,
                });
            }
        }
    }

    let fields: Vec<Field> = contract
        .columns
        .iter()
        .zip(&types_seen)
        .map(|((col, kind), s)| Field::new(*col, canonical(*kind, s), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));

    // A partition key that is also a contract column would shadow it: the
    // file's value wins and the directory name is ignored.
    let partition_columns: Vec<String> = keys
        .into_iter()
        .filter(|k| schema.field_with_name(k).is_err())
        .collect();
    Ok(Validated {
        schema,
        partition_columns,
        rows,
    })
}

/// The table DataFusion scans: the directory (its files come from the
/// session's pinned listing) with the canonical schema.
fn provider(url: &ListingTableUrl, v: &Validated) -> Result<Arc<ListingTable>> {
    let extension = if url.is_collection() { ".parquet" } else { "" };
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(extension)
        .with_table_partition_cols(
            v.partition_columns
                .iter()
                .map(|k| (k.clone(), DataType::Utf8))
                .collect(),
        );
    let config = ListingTableConfig::new(url.clone())
        .with_listing_options(options)
        .with_schema(Arc::clone(&v.schema));
    Ok(Arc::new(ListingTable::try_new(config)?))
}

fn info_of(
    contract: &Contract,
    location: &Location,
    listing: &Listing,
    v: &Validated,
) -> TableInfo {
    TableInfo {
        name: contract.name.to_string(),
        location: location.clone(),
        files: listing.files.len(),
        bytes: listing.files.iter().map(|f| f.size).sum(),
        rows: v.rows,
        partition_columns: v.partition_columns.clone(),
        schema: Arc::clone(&v.schema),
        warning: listing::skipped_warning(contract.name, &listing.skipped),
        read_elsewhere: listing.read_elsewhere.clone(),
    }
}

/// Registers `contract.name` from `location` after validating every file,
/// and pins the files validated as the ones the session's scans read.
pub async fn register_table(
    ctx: &SessionContext,
    contract: &Contract,
    location: &Location,
) -> Result<TableInfo> {
    let (url, listing) = list(ctx, contract, location).await?;
    if listing.files.is_empty() {
        return Err(no_files(contract, location, &url));
    }
    let mut known = HashMap::new();
    let validated = validate(ctx, contract, location, &url, &listing.files, &mut known).await?;
    let table = provider(&url, &validated)?;
    if let Some(pins) = listing::pins_of(ctx) {
        pins.pin_registered(listing::key_of(&url), listing.files.clone());
    }
    ctx.deregister_table(contract.name)?;
    ctx.register_table(contract.name, table)?;
    let info = info_of(contract, location, &listing, &validated);
    if let Some(registry) = registry_of(ctx) {
        registry.tables.lock().expect("not poisoned").insert(
            contract.name.to_string(),
            Registered {
                contract: *contract,
                location: location.clone(),
                validated,
                known,
                info: info.clone(),
                warned: info.warning.clone(),
            },
        );
    }
    Ok(info)
}

/// The contract tables registered in a context, with what their validation
/// found, shared by every session copied from it (each `serve`
/// connection), so that a file's footer is read once per version.
#[derive(Debug, Default)]
pub struct Registry {
    tables: std::sync::Mutex<BTreeMap<String, Registered>>,
}

#[derive(Debug)]
struct Registered {
    contract: Contract,
    location: Location,
    validated: Validated,
    known: HashMap<FileVersion, Arc<FileFacts>>,
    info: TableInfo,
    /// The last warning given about skipped files, not repeated.
    warned: Option<String>,
}

impl Registry {
    /// What registration found about each contract table, as of the last
    /// [`refresh`] of any session.
    pub fn infos(&self) -> Vec<TableInfo> {
        self.tables
            .lock()
            .expect("not poisoned")
            .values()
            .map(|r| r.info.clone())
            .collect()
    }
}

/// Rows of `events` as the last refresh of `ctx`'s tables counted them (0
/// when it has none).
pub fn events_rows(ctx: &SessionContext) -> u64 {
    registry_of(ctx)
        .map(|r| r.infos())
        .unwrap_or_default()
        .iter()
        .filter(|t| t.name == EVENTS.name)
        .map(|t| t.rows)
        .sum()
}

/// The registry of `ctx` (contexts made by [`crate::engine::context`] have one).
pub fn registry_of(ctx: &SessionContext) -> Option<Arc<Registry>> {
    ctx.state().config().get_extension::<Registry>()
}

/// What [`refresh`] did to one table.
#[derive(Debug, Clone, PartialEq)]
pub enum Refreshed {
    /// The files are those pinned already.
    Same,
    /// Other files, same schema: the new listing is pinned.
    Files,
    /// Other files that change the table's schema or layout: the table was
    /// registered again (its views must be too).
    Schema,
}

/// Lists every contract table of `ctx` again and, where its files changed,
/// validates them and pins the new listing for `ctx`'s session (see
/// [`crate::tables::listing`]). Returns, per table, what changed, and the warnings
/// about skipped files not given before.
pub async fn refresh(ctx: &SessionContext) -> Result<(Vec<(String, Refreshed)>, Vec<String>)> {
    let (Some(registry), Some(pins)) = (registry_of(ctx), listing::pins_of(ctx)) else {
        return Ok((vec![], vec![]));
    };
    let entries: Vec<(Contract, Location)> = registry
        .tables
        .lock()
        .expect("not poisoned")
        .values()
        .map(|r| (r.contract, r.location.clone()))
        .collect();
    let mut changes = Vec::new();
    let mut warnings = Vec::new();
    for (contract, location) in entries {
        let pinned_key = listing::key_of(&listing::tagged(
            table_url(&contract, &location)?,
            contract.name,
        ));
        if pins.take_fresh(&pinned_key) {
            changes.push((contract.name.to_string(), Refreshed::Same));
            continue;
        }
        let (url, listing) = list(ctx, &contract, &location).await?;
        let key = listing::key_of(&url);
        if pins
            .pinned(&key)
            .is_some_and(|p| listing::same_files(&p, &listing.files))
        {
            // The same files are read; files skipped may still be new.
            let warning = listing::skipped_warning(contract.name, &listing.skipped);
            let mut tables = registry.tables.lock().expect("not poisoned");
            if let Some(entry) = tables.get_mut(contract.name) {
                if warning.is_some() && warning != entry.warned {
                    warnings.extend(warning.clone());
                }
                entry.warned = warning;
            }
            changes.push((contract.name.to_string(), Refreshed::Same));
            continue;
        }
        if listing.files.is_empty() {
            return Err(no_files(&contract, &location, &url));
        }
        let mut known = registry
            .tables
            .lock()
            .expect("not poisoned")
            .get(contract.name)
            .map(|r| r.known.clone())
            .unwrap_or_default();
        let validated =
            validate(ctx, &contract, &location, &url, &listing.files, &mut known).await?;
        // Footers of files gone are forgotten.
        let now: std::collections::HashSet<FileVersion> =
            listing.files.iter().map(version_of).collect();
        known.retain(|v, _| now.contains(v));
        let info = info_of(&contract, &location, &listing, &validated);
        let mut tables = registry.tables.lock().expect("not poisoned");
        let Some(entry) = tables.get_mut(contract.name) else {
            continue;
        };
        let change = if entry.validated.schema == validated.schema
            && entry.validated.partition_columns == validated.partition_columns
        {
            Refreshed::Files
        } else {
            Refreshed::Schema
        };
        if info.warning.is_some() && info.warning != entry.warned {
            warnings.extend(info.warning.clone());
        }
        entry.warned = info.warning.clone();
        entry.validated = validated.clone();
        entry.known = known;
        entry.info = info;
        drop(tables);
        if change == Refreshed::Schema {
            ctx.deregister_table(contract.name)?;
            ctx.register_table(contract.name, provider(&url, &validated)?)?;
        }
        pins.pin(key, listing.files);
        changes.push((contract.name.to_string(), change));
    }
    Ok((changes, warnings))
}

/// Object-store listing errors, reworded to name the table.
fn map_listing_error(
    contract: &Contract,
    location: &Location,
    e: datafusion::error::DataFusionError,
) -> Error {
    match storage::explain_listing_error(&location.to_string(), &e) {
        Some(Error::S3 {
            location,
            code,
            problem,
        }) => Error::S3 {
            location,
            code,
            problem: format!("cannot list table `{}`: {problem}", contract.name),
        },
        Some(other) => other,
        None => Error::location(
            location,
            format!("table `{}`: cannot list: {e}", contract.name),
        ),
    }
}

/// Registers a Parquet dataset outside the contract as table `name`, for
/// ad-hoc SQL (a config file's extra `[[tables]]`). Its schema is the files'
/// own; nothing is validated beyond DataFusion's schema inference.
pub async fn register_plain_parquet(
    ctx: &SessionContext,
    name: &str,
    location: &Location,
) -> Result<()> {
    let text = location.to_string();
    let url = ListingTableUrl::parse(&text)?;
    storage::ensure_store(ctx, url.get_url())?;
    ctx.register_parquet(name, &text, Default::default())
        .await
        .map_err(|e| Error::location(location, format!("table `{name}`: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn types_seen(files: &[(TimeUnit, Option<(i64, i64)>)]) -> TypesSeen {
        let mut s = TypesSeen::default();
        for (u, r) in files {
            check_type(
                ColumnKind::Timestamp,
                &DataType::Timestamp(*u, None),
                &mut s,
            );
            s.ranges.last_mut().unwrap().1 = *r;
        }
        s
    }

    #[test]
    fn the_finest_unit_unless_a_coarser_file_does_not_fit_in_it() {
        use TimeUnit::*;
        let y2026_ms = 1_780_000_000_000;
        let y2500_ms = 16_725_225_600_000;
        let ns = (Nanosecond, Some((0, 1)));
        assert_eq!(
            fitting_unit(&types_seen(&[
                ns,
                (Millisecond, Some((y2026_ms, y2026_ms)))
            ])),
            Nanosecond
        );
        assert_eq!(
            fitting_unit(&types_seen(&[ns, (Millisecond, Some((0, y2500_ms)))])),
            Microsecond
        );
        // before 1677 does not fit either
        assert_eq!(
            fitting_unit(&types_seen(&[ns, (Millisecond, Some((-y2500_ms, 0)))])),
            Microsecond
        );
        // beyond what microseconds hold: milliseconds
        assert_eq!(
            fitting_unit(&types_seen(&[ns, (Millisecond, Some((0, i64::MAX / 10)))])),
            Millisecond
        );
        assert_eq!(
            fitting_unit(&types_seen(&[ns, (Second, Some((0, i64::MAX / 10)))])),
            Second
        );
        // no statistics: assumed to fit
        assert_eq!(
            fitting_unit(&types_seen(&[ns, (Millisecond, None)])),
            Nanosecond
        );
        assert_eq!(fitting_unit(&TypesSeen::default()), Microsecond);
    }
}
