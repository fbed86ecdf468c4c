//! Temporary files and directories, and stopping cleanly on an interrupt.
//!
//! Every temporary path the library creates (the report's intermediate
//! tables, the spill directory handed to DataFusion, a result's file before
//! it is renamed into place, `gen`'s dataset before it is renamed) is
//! registered here while it exists. Normally its owner removes it (a
//! `TempDir` dropped, a rename, an error path). When the process is
//! interrupted the owner may never get to run again — a thread busy in a
//! long computation is not cancelled by dropping a future — so the binary's
//! signal handler calls [`remove_all`] before it exits: whatever was left is
//! removed then.
//!
//! On a cluster the report's intermediate tables live in a [`SharedDir`]
//! (an S3 prefix or a shared mount every node reads), removed the same ways:
//! by its owner ([`SharedDir::remove`]), or after an interrupt by
//! [`remove_all_shared`].
//!
//! Long synchronous loops (`gen`) poll [`interrupted`] and give up with
//! [`Error::Interrupted`](crate::Error::Interrupted), cleaning up on their
//! error path as for any other failure.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

use crate::error::{Error, Result};
use crate::settings::location::Location;

/// The temporary paths that exist now.
static LIVE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Set once by [`interrupt`]; never cleared.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// A registered temporary path; dropping it unregisters the path (it does
/// not remove it: its owner does that, or [`remove_all`]).
#[derive(Debug)]
pub struct Registration {
    path: PathBuf,
}

impl Registration {
    /// The registered path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock().remove(&self.path);
    }
}

fn lock() -> std::sync::MutexGuard<'static, BTreeSet<PathBuf>> {
    // A panic while holding the lock cannot leave the set inconsistent
    // (inserts and removes are single calls), so a poisoned lock is used as is.
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Makes `path` (a file or a directory) by building it under a temporary
/// name beside it, `.<name>.tmp-<pid>`, then renaming it into place, so that
/// `path` is the previous one or the complete new one, never a part (for a
/// file; a directory that exists is removed just before the rename).
///
/// `build` gets the temporary path, which does not exist yet. On an error,
/// or an interrupt noticed after `build`, the temporary is removed and
/// `path` left as it was. While it exists the temporary is registered, so an
/// interrupt removes it too.
pub fn publish<T>(path: &Path, build: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    remove_path(&tmp);
    let _registered = register(&tmp);
    let result = build(&tmp).and_then(|value| {
        // An interrupted command publishes nothing, even a finished result.
        check()?;
        if tmp.is_dir() && path.exists() {
            std::fs::remove_dir_all(path).map_err(|e| Error::io(path, e))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        Ok(value)
    });
    if result.is_err() {
        remove_path(&tmp);
    }
    result
}

/// Removes a file or a directory tree, if there.
fn remove_path(path: &Path) {
    if path.is_dir() {
        let _ = std::fs::remove_dir_all(path);
    } else {
        let _ = std::fs::remove_file(path);
    }
}

/// Registers `path` (a file or a directory) as temporary until the returned
/// value is dropped.
pub fn register(path: impl Into<PathBuf>) -> Registration {
    let path = path.into();
    lock().insert(path.clone());
    Registration { path }
}

/// A new temporary directory named `<prefix><pid>-XXXXXX` inside `base`
/// (created if missing), registered while the returned handle lives and
/// removed when it is dropped. The first time a process uses `base`, the
/// directories of ours there whose process is gone (killed before it could
/// clean up) are removed ([`sweep`]).
pub fn temp_dir_in(base: &Path, prefix: &str) -> Result<TempDir> {
    let unusable = |e: std::io::Error| {
        Error::location(
            base.display(),
            format!(
                "cannot create a temporary directory here: {e} (choose another with \
                 --temp-dir or [engine] temp_dir)"
            ),
        )
    };
    std::fs::create_dir_all(base).map_err(unusable)?;
    sweep_once(base);
    let dir = tempfile::Builder::new()
        .prefix(&format!("{prefix}{}-", std::process::id()))
        .tempdir_in(base)
        .map_err(unusable)?;
    let registration = register(dir.path());
    // The owner holds a lock on a file inside for as long as it lives: a
    // sweep removes only directories whose lock it can take.
    let lock = std::fs::File::create(dir.path().join(OWNER_LOCK)).map_err(unusable)?;
    lock.lock().map_err(unusable)?;
    Ok(TempDir {
        dir,
        _lock: lock,
        _registration: registration,
    })
}

/// The file a temporary directory's owner holds locked.
const OWNER_LOCK: &str = ".owner.lock";

/// The name prefixes of our temporary directories, each followed by the
/// owner's process id and `-`.
pub const TEMP_PREFIXES: [&str; 4] = [
    "supportfunnel-spill-",
    "supportfunnel-report-",
    "supportfunnel-incremental-",
    "supportfunnel-executor-",
];

/// Bases swept by this process already.
static SWEPT: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

fn sweep_once(base: &Path) {
    let first = SWEPT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(base.to_path_buf());
    if first {
        sweep(base);
    }
}

/// The process id in the name of one of our temporary directories.
fn owner_of(name: &str) -> Option<u32> {
    let rest = TEMP_PREFIXES.iter().find_map(|p| name.strip_prefix(p))?;
    rest.split_once('-')?.0.parse().ok()
}

/// Removes the temporary directories of ours in `base` whose owner is gone
/// (a process killed with SIGKILL cleans up nothing); returns how many were
/// removed. An owner holds a lock on the directory's `.owner.lock` for its
/// whole life, so a directory whose lock can be taken has no owner, whatever
/// process ids other containers or hosts sharing the directory use. A
/// directory without that file (being created, or of an older version)
/// stays.
pub fn sweep(base: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(base) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        if owner_of(&entry.file_name().to_string_lossy()).is_none()
            || !entry.file_type().is_ok_and(|t| t.is_dir())
        {
            continue;
        }
        let Ok(lock) = std::fs::File::open(entry.path().join(OWNER_LOCK)) else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue;
        }
        if std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// A temporary directory removed on drop, and on interrupt (see the module
/// documentation).
#[derive(Debug)]
pub struct TempDir {
    // Field order: the directory is removed before it is unregistered, so
    // there is no moment when it exists unregistered.
    dir: tempfile::TempDir,
    /// Held locked while the directory is ours (see [`sweep`]).
    _lock: std::fs::File,
    _registration: Registration,
}

impl TempDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Marks the process as interrupted: loops that poll [`interrupted`] stop.
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether [`interrupt`] was called.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// `Err(Error::Interrupted)` once [`interrupt`] was called.
pub fn check() -> Result<()> {
    if interrupted() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// Removes every registered path that still exists, and returns how many
/// could not be removed. A thread still writing into a directory can add a
/// file while it is being removed, so a directory is tried a few times.
pub fn remove_all() -> usize {
    let paths: Vec<PathBuf> = lock().iter().cloned().collect();
    let mut failed = 0;
    for p in paths {
        let mut removed = false;
        for _ in 0..5 {
            let r = match std::fs::symlink_metadata(&p) {
                Err(_) => Ok(()),
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
                Ok(_) => std::fs::remove_file(&p),
            };
            if r.is_ok() || !p.exists() {
                removed = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if removed {
            lock().remove(&p);
        } else {
            failed += 1;
        }
    }
    failed
}

/// The shared directories on object stores that exist now, by id.
type LiveShared = Vec<(u64, Arc<dyn ObjectStore>, ObjectPath)>;
static LIVE_SHARED: Mutex<LiveShared> = Mutex::new(Vec::new());

fn lock_shared() -> std::sync::MutexGuard<'static, LiveShared> {
    LIVE_SHARED.lock().unwrap_or_else(|p| p.into_inner())
}

/// A temporary directory that every node of a cluster can read and write:
/// a run's own prefix under an S3 location, or a directory under a shared
/// mount. Its owner removes it ([`SharedDir::remove`]); after an interrupt,
/// [`remove_all_shared`] (and [`remove_all`] for a mount) does.
#[derive(Debug)]
pub struct SharedDir {
    /// The directory, `<base>/<prefix><unique>`.
    location: Location,
    place: SharedPlace,
}

#[derive(Debug)]
enum SharedPlace {
    /// `None` once removed.
    Local(Option<Registration>),
    Remote {
        id: u64,
        store: Arc<dyn ObjectStore>,
        prefix: ObjectPath,
    },
}

impl SharedDir {
    /// A new directory named `<prefix><unique>` under `base`, through the
    /// object store `store` when `base` is remote (nothing is created there
    /// until something is written: object stores have no directories).
    pub fn create(
        base: &Location,
        prefix: &str,
        store: Option<Arc<dyn ObjectStore>>,
    ) -> Result<Self> {
        use std::sync::atomic::AtomicU64;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("{prefix}{}-{stamp:x}-{id}", std::process::id());
        match base {
            Location::Local(dir) => {
                let path = dir.join(&name);
                std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
                Ok(Self {
                    location: Location::Local(path.clone()),
                    place: SharedPlace::Local(Some(register(path))),
                })
            }
            Location::Remote(url) => {
                let store = store
                    .ok_or_else(|| Error::Internal(format!("no object store given for {url}")))?;
                let joined = format!("{}/{name}/", url.as_str().trim_end_matches('/'));
                let url = url::Url::parse(&joined)
                    .map_err(|e| Error::location(&joined, e.to_string()))?;
                let prefix = ObjectPath::from_url_path(url.path())
                    .map_err(|e| Error::location(&joined, e.to_string()))?;
                lock_shared().push((id, Arc::clone(&store), prefix.clone()));
                Ok(Self {
                    location: Location::Remote(url),
                    place: SharedPlace::Remote { id, store, prefix },
                })
            }
        }
    }

    /// The directory.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The URL or path of `name` inside it, as a directory (`…/name/`).
    pub fn child(&self, name: &str) -> String {
        match &self.location {
            Location::Local(p) => format!("{}/", p.join(name).display()),
            Location::Remote(u) => format!("{u}{name}/"),
        }
    }

    /// Removes the directory and everything in it.
    pub async fn remove(mut self) -> Result<()> {
        match &mut self.place {
            SharedPlace::Local(registration) => remove_local(registration),
            SharedPlace::Remote { id, store, prefix } => {
                let result = delete_prefix(store.as_ref(), prefix).await;
                if result.is_ok() {
                    let id = *id;
                    lock_shared().retain(|(i, _, _)| *i != id);
                }
                result.map_err(|e| Error::location(&self.location, format!("cannot remove: {e}")))
            }
        }
    }
}

/// Removes a shared directory on a mount, once.
fn remove_local(registration: &mut Option<Registration>) -> Result<()> {
    let Some(r) = registration.take() else {
        return Ok(());
    };
    let path = r.path().to_path_buf();
    match std::fs::remove_dir_all(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&path, e)),
        _ => Ok(()),
    }
}

/// A shared directory on a mount dropped without [`SharedDir::remove`] (a
/// report abandoned by an interrupt) is removed now; one on an object
/// store needs a request, left to [`remove_all_shared`].
impl Drop for SharedDir {
    fn drop(&mut self) {
        if let SharedPlace::Local(registration) = &mut self.place {
            let _ = remove_local(registration);
        }
    }
}

/// Deletes every object under `prefix`.
async fn delete_prefix(store: &dyn ObjectStore, prefix: &ObjectPath) -> object_store::Result<()> {
    let locations = store.list(Some(prefix)).map_ok(|m| m.location).boxed();
    store
        .delete_stream(locations)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Removes every shared directory on an object store that still exists
/// (after an interrupt) and returns how many could not be removed.
pub async fn remove_all_shared() -> usize {
    let live: LiveShared = lock_shared().clone();
    let mut failed = 0;
    for (id, store, prefix) in live {
        if delete_prefix(store.as_ref(), &prefix).await.is_ok() {
            lock_shared().retain(|(i, _, _)| *i != id);
        } else {
            failed += 1;
        }
    }
    failed
}

/// Whether any shared directory on an object store still exists.
pub fn any_shared() -> bool {
    !lock_shared().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_of_dead_processes_are_swept_and_others_kept() {
        let base = tempfile::tempdir().unwrap();
        // a live owner: its lock held (as `temp_dir_in` holds it; not a
        // registered directory, which another test's `remove_all` removes)
        let live = base.path().join("supportfunnel-report-12-live");
        std::fs::create_dir_all(&live).unwrap();
        let held = std::fs::File::create(live.join(OWNER_LOCK)).unwrap();
        held.lock().unwrap();
        // an owner gone: its lock file is there, nobody holds it
        let dead = base.path().join("supportfunnel-spill-4194305-abc");
        let foreign = base.path().join("supportfunnel-spill-abcdef");
        let other = base.path().join("someone-elses-4194305-abc");
        let unlocked = base.path().join("supportfunnel-report-77-nolock");
        for d in [&dead, &foreign, &other, &unlocked] {
            std::fs::create_dir_all(d.join("sub")).unwrap();
        }
        std::fs::write(dead.join(OWNER_LOCK), b"").unwrap();
        std::fs::write(other.join(OWNER_LOCK), b"").unwrap();
        assert_eq!(sweep(base.path()), 1);
        assert!(!dead.exists());
        assert!(live.exists() && foreign.exists() && other.exists() && unlocked.exists());
        drop(held);
        assert_eq!(owner_of("supportfunnel-incremental-77-x"), Some(77));
        assert_eq!(owner_of("supportfunnel-spill-abcdef"), None);
    }

    #[test]
    fn registered_paths_are_removed_and_dropped_ones_forgotten() {
        let base = tempfile::tempdir().unwrap();
        let kept = base.path().join("left-behind");
        std::fs::create_dir_all(kept.join("deep")).unwrap();
        std::fs::write(kept.join("deep/file"), b"x").unwrap();
        let file = base.path().join("file.tmp");
        std::fs::write(&file, b"x").unwrap();
        let gone = base.path().join("forgotten");
        std::fs::create_dir_all(&gone).unwrap();

        let _a = register(&kept);
        let _b = register(&file);
        drop(register(&gone));
        assert_eq!(remove_all(), 0);
        assert!(!kept.exists() && !file.exists());
        // unregistered paths are not touched
        assert!(gone.exists());
    }

    #[test]
    fn temp_dir_is_removed_on_drop() {
        let base = tempfile::tempdir().unwrap();
        let t = temp_dir_in(&base.path().join("new"), "x-").unwrap();
        let p = t.path().to_path_buf();
        assert!(p.is_dir() && lock().contains(&p));
        drop(t);
        assert!(!p.exists() && !lock().contains(&p));
    }
}

#[cfg(test)]
mod shared_tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn shared_dirs_are_removed_with_their_contents() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let base = Location::parse("s3://lake/scratch").unwrap();
        let dir = SharedDir::create(&base, "t-", Some(Arc::clone(&store))).unwrap();
        let child = dir.child("step");
        assert!(child.starts_with("s3://lake/scratch/t-") && child.ends_with("/step/"));
        let url = url::Url::parse(&child).unwrap();
        let file = ObjectPath::from_url_path(format!("{}part-0.parquet", url.path())).unwrap();
        store.put(&file, "x".into()).await.unwrap();
        let other = ObjectPath::from("scratch/kept");
        store.put(&other, "y".into()).await.unwrap();
        assert!(any_shared());
        dir.remove().await.unwrap();
        assert!(store.head(&file).await.is_err());
        assert!(store.head(&other).await.is_ok());

        let local = tempfile::tempdir().unwrap();
        let dir = SharedDir::create(&Location::Local(local.path().into()), "t-", None).unwrap();
        let path = dir.location().as_path().unwrap().to_path_buf();
        std::fs::write(path.join("f"), b"x").unwrap();
        dir.remove().await.unwrap();
        assert!(!path.exists() && local.path().exists());
    }
}

/// Rows in a row group of an intermediate table: a writer holds a whole
/// row group until it is complete, so the default (about a million rows)
/// would hold tens of MiB per writer, which a task under a small memory
/// limit (a cluster's executor) does not have.
const SCRATCH_ROW_GROUP: usize = 64 * 1024;

/// How intermediate tables are written (a report's steps, a state's
/// temporary files): LZ4, which writes several times faster than the
/// default zstd and is read once or a few times before it is deleted, in
/// row groups of [`SCRATCH_ROW_GROUP`] rows, without dictionaries (their
/// ids are mostly distinct, so a dictionary is built and given up on) and
/// with statistics per row group only.
pub fn parquet_options() -> datafusion::config::TableParquetOptions {
    let mut options = datafusion::config::TableParquetOptions::default();
    options.global.compression = Some("lz4_raw".into());
    options.global.max_row_group_size = SCRATCH_ROW_GROUP;
    options.global.dictionary_enabled = Some(false);
    options.global.statistics_enabled = Some("chunk".into());
    options
}

/// [`parquet_options`] for a physical plan's writer.
pub fn writer_properties() -> parquet::file::properties::WriterProperties {
    parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::LZ4_RAW)
        .set_max_row_group_row_count(Some(SCRATCH_ROW_GROUP))
        .set_dictionary_enabled(false)
        .set_statistics_enabled(parquet::file::properties::EnabledStatistics::Chunk)
        .build()
}
