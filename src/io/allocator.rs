//! What the library tells the allocator the binary links: that it has just
//! let go of a large part of what it held (a step of the native build, or
//! the whole build once the report's tables are made).
//!
//! The allocator (mimalloc in the `supportfunnel` binary) keeps freed pages
//! for a while before it gives them back to the system, so that memory
//! freed and allocated again in a loop is not faulted in afresh each time.
//! That is right while batches come and go, but after a step that frees
//! hundreds of MiB that nothing will reuse soon, the kept pages add to the
//! process's peak for no gain. The library cannot know which allocator it
//! runs on, so the binary installs what to do ([`set_return_freed`]); a
//! library user that installs nothing loses nothing.

use std::sync::OnceLock;

static RETURN_FREED: OnceLock<fn()> = OnceLock::new();

/// Installs what [`return_freed`] calls: for example the allocator's
/// "give freed pages back now". The first call wins; returns whether this
/// one did.
pub fn set_return_freed(f: fn()) -> bool {
    RETURN_FREED.set(f).is_ok()
}

/// Says that a large part of what the process held was just freed and
/// nothing is about to use it again: the installed hook, if any, runs.
pub fn return_freed() {
    if let Some(f) = RETURN_FREED.get() {
        f();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn the_installed_hook_runs_when_memory_is_let_go() {
        let before = CALLS.load(Ordering::SeqCst);
        assert!(set_return_freed(|| {
            CALLS.fetch_add(1, Ordering::SeqCst);
        }));
        assert!(!set_return_freed(|| {}), "the first hook stays");
        return_freed();
        assert!(CALLS.load(Ordering::SeqCst) > before);
    }
}
