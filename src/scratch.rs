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
//! Long synchronous loops (`gen`) poll [`interrupted`] and give up with
//! [`Error::Interrupted`](crate::Error::Interrupted), cleaning up on their
//! error path as for any other failure.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};

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

/// A new temporary directory named `<prefix>XXXXXX` inside `base` (created if
/// missing), registered while the returned handle lives and removed when it
/// is dropped.
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
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(base)
        .map_err(unusable)?;
    let registration = register(dir.path());
    Ok(TempDir {
        _registration: registration,
        dir,
    })
}

/// A temporary directory removed on drop, and on interrupt (see the module
/// documentation).
#[derive(Debug)]
pub struct TempDir {
    // Field order: the directory is removed before it is unregistered, so
    // there is no moment when it exists unregistered.
    dir: tempfile::TempDir,
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

#[cfg(test)]
mod tests {
    use super::*;

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
