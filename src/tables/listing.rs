//! Which files a contract table is, at each statement of a long-lived
//! session (`sql`'s prompt, each `serve` connection).
//!
//! DataFusion keeps the listing of a table's directory in its list-files
//! cache for the life of the process (no expiry by default): files added
//! later were never seen, and a file rewritten in place was read with its
//! old size, giving its old rows or "Requested range was invalid". Here the
//! list-files cache of a session is a [`PinnedListings`]: it holds, for each
//! contract table, exactly the files that were last listed *and validated*
//! for that session, and nothing else (other listings are not cached, so
//! ad-hoc external tables are listed at every scan).
//!
//! [`refresh`] runs at the start of each statement: it lists every contract
//! table again, and where the listing changed it validates the new files
//! (footers read once per file version; see [`crate::tables`]) and pins the
//! new listing. Every scan of the statement then reads exactly that
//! listing, the same one for `events`, for `messages` and for the cached
//! relations keyed on it ([`crate::cache`]), and Parquet footers, cached by
//! path, are only reused for a file of the same size and modification time.
//!
//! The listing rule is Hive's and Spark's: in a directory, files ending in
//! `.parquet`, not empty, and not hidden — no path component below the
//! table's root starting with `.` or with `_` (unless it is a `key=value`
//! partition directory), so Spark's `_temporary/` staging files, `_SUCCESS`
//! and `.crc` files are skipped — and every directory between the root and
//! the file a `key=value` partition directory. Data-looking files that are
//! skipped are named in a warning.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use datafusion::common::TableReference;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::cache::cache_manager::{CachedFileList, TableScopedPath};
use datafusion::execution::cache::{Cache, CacheEntryInfo};
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

/// The list-files cache of one session: the validated listing of each
/// contract table, pinned until the next [`refresh`].
#[derive(Debug, Default)]
pub struct PinnedListings {
    pins: RwLock<HashMap<TableScopedPath, Arc<Vec<ObjectMeta>>>>,
    /// Listings pinned by registration, not yet used by a statement: when
    /// (a one-statement `sql` run does not list its tables twice in a row;
    /// on a large S3 prefix a listing takes seconds).
    fresh: RwLock<HashMap<TableScopedPath, std::time::Instant>>,
}

/// How long a registration's listing counts as current for the first
/// statement.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

impl PinnedListings {
    /// A copy for another session (a `serve` connection): the same pins,
    /// refreshed from then on on their own.
    pub fn fork(&self) -> Self {
        Self {
            pins: RwLock::new(self.pins.read().expect("not poisoned").clone()),
            fresh: RwLock::default(),
        }
    }

    /// Makes `files` the listing scans of `key` see.
    pub fn pin(&self, key: TableScopedPath, files: Vec<ObjectMeta>) {
        self.pins
            .write()
            .expect("not poisoned")
            .insert(key, Arc::new(files));
    }

    /// [`pin`](Self::pin), by the table's registration: the first statement
    /// within [`FRESH_FOR`] takes it as current.
    pub fn pin_registered(&self, key: TableScopedPath, files: Vec<ObjectMeta>) {
        self.fresh
            .write()
            .expect("not poisoned")
            .insert(key.clone(), std::time::Instant::now());
        self.pin(key, files);
    }

    /// Whether the listing of `key` is a registration's, unused and recent
    /// (once: the next call says no).
    pub fn take_fresh(&self, key: &TableScopedPath) -> bool {
        self.fresh
            .write()
            .expect("not poisoned")
            .remove(key)
            .is_some_and(|t| t.elapsed() < FRESH_FOR)
    }

    /// The pinned listing of `key`.
    pub fn pinned(&self, key: &TableScopedPath) -> Option<Arc<Vec<ObjectMeta>>> {
        self.pins.read().expect("not poisoned").get(key).cloned()
    }
}

/// The key DataFusion's scans look a table's listing up under.
pub fn key_of(url: &ListingTableUrl) -> TableScopedPath {
    TableScopedPath {
        table: url.get_table_ref().clone(),
        path: url.prefix().clone(),
    }
}

/// `url` tagged with the table's name, so that its listing has a key of
/// its own even when two tables share a path in different stores.
pub fn tagged(url: ListingTableUrl, table: &str) -> ListingTableUrl {
    url.with_table_ref(TableReference::bare(table))
}

impl Cache<TableScopedPath, CachedFileList> for PinnedListings {
    fn get(&self, key: &TableScopedPath) -> Option<CachedFileList> {
        self.pinned(key).map(|files| CachedFileList { files })
    }

    /// Listings DataFusion makes on its own are not kept: only validated
    /// listings are served from here, every other one is made afresh.
    fn put(&self, _key: &TableScopedPath, _value: CachedFileList) -> Option<CachedFileList> {
        None
    }

    fn remove(&self, key: &TableScopedPath) -> Option<CachedFileList> {
        self.pins
            .write()
            .expect("not poisoned")
            .remove(key)
            .map(|files| CachedFileList { files })
    }

    fn contains_key(&self, key: &TableScopedPath) -> bool {
        self.pins.read().expect("not poisoned").contains_key(key)
    }

    fn len(&self) -> usize {
        self.pins.read().expect("not poisoned").len()
    }

    fn clear(&self) {
        self.pins.write().expect("not poisoned").clear()
    }

    fn name(&self) -> String {
        "supportfunnel::PinnedListings".into()
    }

    fn cache_limit(&self) -> usize {
        usize::MAX
    }

    fn update_cache_limit(&self, _limit: usize) {}

    fn cache_ttl(&self) -> Option<Duration> {
        None
    }

    fn update_cache_ttl(&self, _ttl: Option<Duration>) {}

    fn drop_table_entries(&self, table_ref: &TableReference) -> datafusion::common::Result<()> {
        self.pins
            .write()
            .expect("not poisoned")
            .retain(|k, _| k.table.as_ref() != Some(table_ref));
        Ok(())
    }

    fn list_entries(
        &self,
    ) -> datafusion::common::HashMap<TableScopedPath, CacheEntryInfo<CachedFileList>> {
        self.pins
            .read()
            .expect("not poisoned")
            .iter()
            .map(|(k, files)| {
                let value = CachedFileList {
                    files: Arc::clone(files),
                };
                let size_bytes = files.len() * std::mem::size_of::<ObjectMeta>();
                (
                    k.clone(),
                    CacheEntryInfo {
                        value,
                        size_bytes,
                        hits: 0,
                        expires: None,
                    },
                )
            })
            .collect()
    }
}

/// The pinned listings of `ctx`'s session, when it has them (contexts made
/// by [`crate::engine::context`] do).
pub fn pins_of(ctx: &SessionContext) -> Option<Arc<PinnedListings>> {
    ctx.state().config().get_extension::<PinnedListings>()
}

/// Why a file under a table's root is not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Hidden or temporary: a component starting with `.` or `_`.
    Hidden,
    /// In a directory that is not a `key=value` partition directory.
    Nested,
    /// Not a `.parquet` file.
    NotParquet,
    /// Empty (a writer still at work, or a failed write).
    Empty,
}

impl Skip {
    fn says(self) -> &'static str {
        match self {
            Skip::Hidden => "hidden or temporary (a name starting with `_` or `.`)",
            Skip::Nested => "in a subdirectory that is not a key=value partition",
            Skip::NotParquet => "not ending in .parquet",
            Skip::Empty => "empty",
        }
    }
}

/// Whether the file at `parts` (its path below the table's root, file name
/// last) is read, and if not why. `nested_ok`: DataFusion's
/// `listing_table_ignore_subdirectory` is off, so files in plain
/// subdirectories are data too.
pub fn skip_of(parts: &[&str], nested_ok: bool) -> Option<Skip> {
    let (name, dirs) = parts.split_last()?;
    let hidden = |p: &&str| p.starts_with('.') || (p.starts_with('_') && !p.contains('='));
    if hidden(name) || dirs.iter().any(hidden) {
        return Some(Skip::Hidden);
    }
    if !name.ends_with(".parquet") {
        return Some(Skip::NotParquet);
    }
    if !nested_ok && dirs.iter().any(|d| !d.contains('=')) {
        return Some(Skip::Nested);
    }
    None
}

/// A table's files as listed now: those read, and those skipped that
/// look like data someone may expect to be read.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The files read, sorted by path.
    pub files: Vec<ObjectMeta>,
    /// Files skipped worth a warning: (path as the user knows it, why).
    pub skipped: Vec<(String, Skip)>,
    /// Of those, the ones DataFusion's own listing would read (a hidden
    /// `.parquet` file beside the data): where a cluster's scheduler lists
    /// the table itself, it would read them.
    pub read_elsewhere: Vec<String>,
}

/// Lists the files under `url` now, from the store (never from a cache),
/// and applies the rule of the module documentation. A single-file URL is
/// that file, whatever its name.
pub async fn list_now(
    store: &dyn ObjectStore,
    url: &ListingTableUrl,
    nested_ok: bool,
    display: impl Fn(&ObjectMeta) -> String,
) -> object_store::Result<Listing> {
    let listed: Vec<ObjectMeta> = if url.is_collection() {
        store.list(Some(url.prefix())).try_collect().await?
    } else {
        match store.head(url.prefix()).await {
            Ok(meta) => {
                return Ok(Listing {
                    files: if meta.size > 0 { vec![meta] } else { vec![] },
                    skipped: vec![],
                    read_elsewhere: vec![],
                })
            }
            // As DataFusion does: a name that is no object may be a prefix.
            Err(object_store::Error::NotFound { .. }) => {
                store.list(Some(url.prefix())).try_collect().await?
            }
            Err(e) => return Err(e),
        }
    };
    let mut files = Vec::with_capacity(listed.len());
    let mut skipped = Vec::new();
    let mut read_elsewhere = Vec::new();
    for meta in listed {
        let Some(parts) = url.strip_prefix(&meta.location) else {
            continue;
        };
        let parts: Vec<&str> = parts.collect();
        let skip = skip_of(&parts, nested_ok).or((meta.size == 0).then_some(Skip::Empty));
        // DataFusion's rule: `.parquet`, every directory a partition.
        let datafusion_reads = meta.location.as_ref().ends_with(".parquet")
            && parts
                .split_last()
                .is_some_and(|(_, dirs)| dirs.iter().all(|d| d.contains('=')));
        if skip == Some(Skip::Hidden) && datafusion_reads {
            read_elsewhere.push(display(&meta));
        }
        match skip {
            None => files.push(meta),
            // Hidden files that are not data (markers, checksums) and
            // empty files (a writer at work) are skipped without a word.
            Some(Skip::Hidden) if !meta.location.as_ref().ends_with(".parquet") => {}
            Some(Skip::Empty) => {}
            Some(why) => skipped.push((display(&meta), why)),
        }
    }
    files.sort_by(|a, b| a.location.cmp(&b.location));
    skipped.sort_by(|a, b| a.0.cmp(&b.0));
    read_elsewhere.sort();
    Ok(Listing {
        files,
        skipped,
        read_elsewhere,
    })
}

/// One warning line for the files of `table` skipped (empty when none).
pub fn skipped_warning(table: &str, skipped: &[(String, Skip)]) -> Option<String> {
    if skipped.is_empty() {
        return None;
    }
    let mut kinds: Vec<Skip> = skipped.iter().map(|(_, s)| *s).collect();
    kinds.dedup();
    let examples: Vec<String> = skipped
        .iter()
        .take(3)
        .map(|(p, s)| format!("{p} ({})", s.says()))
        .collect();
    let more = skipped.len().saturating_sub(3);
    Some(format!(
        "table `{table}`: {} file{} not read: {}{}",
        skipped.len(),
        if skipped.len() == 1 { "" } else { "s" },
        examples.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    ))
}

/// Whether two listings name the same versions of the same files.
pub fn same_files(a: &[ObjectMeta], b: &[ObjectMeta]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.location == y.location
                && x.size == y.size
                && x.last_modified == y.last_modified
                && x.e_tag == y.e_tag
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip(path: &str) -> Option<Skip> {
        skip_of(&path.split('/').collect::<Vec<_>>(), false)
    }

    #[test]
    fn hive_and_spark_hidden_files_and_nested_directories_are_skipped() {
        assert_eq!(skip("part-0.parquet"), None);
        assert_eq!(skip("date=2026-03-01/part-0.parquet"), None);
        assert_eq!(skip("date=2026-03-01/h=1/part-0.parquet"), None);
        assert_eq!(
            skip("_temporary/0/_temporary/attempt_1/part-0.parquet"),
            Some(Skip::Hidden)
        );
        assert_eq!(
            skip("date=2026-03-01/_temporary/part-0.parquet"),
            Some(Skip::Hidden)
        );
        assert_eq!(skip(".part-0.parquet"), Some(Skip::Hidden));
        assert_eq!(skip("_SUCCESS"), Some(Skip::Hidden));
        assert_eq!(
            skip("date=2026-03-01/.part-0.parquet.crc"),
            Some(Skip::Hidden)
        );
        // a partition directory may start with an underscore
        assert_eq!(skip("_p=1/part-0.parquet"), None);
        assert_eq!(
            skip("date=2026-03-01/copy/part-0.parquet"),
            Some(Skip::Nested)
        );
        assert_eq!(skip("backup/part-0.parquet"), Some(Skip::Nested));
        assert_eq!(
            skip_of(&["backup", "part-0.parquet"], true),
            None,
            "subdirectories read when DataFusion is told to"
        );
        assert_eq!(skip("000000_0"), Some(Skip::NotParquet));
        assert_eq!(skip("README.md"), Some(Skip::NotParquet));
    }

    #[test]
    fn one_warning_line_names_the_first_files_and_counts_the_rest() {
        let skipped: Vec<(String, Skip)> = (0..5)
            .map(|i| (format!("/d/_temporary/p{i}.parquet"), Skip::Hidden))
            .collect();
        let w = skipped_warning("events", &skipped).unwrap();
        assert!(
            w.starts_with("table `events`: 5 files not read: /d/_temporary/p0.parquet"),
            "{w}"
        );
        assert!(w.ends_with("and 2 more"), "{w}");
        assert_eq!(skipped_warning("events", &[]), None);
    }
}
