//! The process around a command: the allocator's settings, signals, the
//! error line and the exit code.

use std::future::Future;
use std::process::ExitCode;

/// Runs `command` to its end and says how the process should exit: 0 on
/// success (also when a reader closed the pipe early, `| head`), 1 with the
/// error on one line, 130/143 on SIGINT/SIGTERM with the temporary files
/// removed, 2 when no runtime could start.
///
/// The command runs as a task of a multi-threaded runtime, so that this
/// thread stays free to notice a signal while the command's threads are
/// busy. Call before any other thread starts (see [`watch_signals`]).
///
/// `worker_threads`: the runtime's threads; the number of cores when `None`.
pub fn run<F>(command: F, worker_threads: Option<usize>) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let signals = watch_signals();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.enable_all().thread_stack_size(WORKER_STACK).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let mut work = runtime.spawn(command);
    let outcome = runtime.block_on(async {
        tokio::select! {
            done = &mut work => Ok(done),
            Ok(signal) = signals => Err(signal),
        }
    });
    // Jobs a failed command dropped are being cancelled in the background.
    #[cfg(feature = "cluster")]
    if outcome.is_ok() {
        runtime.block_on(supportfunnel::cluster::jobs::settle(STOP_GRACE));
    }
    match outcome {
        Ok(Ok(Ok(()))) => ExitCode::SUCCESS,
        Ok(Ok(Err(e))) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Ok(Ok(Err(e))) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
        Ok(Err(join)) => {
            supportfunnel::io::scratch::remove_all();
            eprintln!("error: internal error: {join}");
            ExitCode::from(101)
        }
        Err((name, code)) => {
            supportfunnel::io::scratch::interrupt();
            work.abort();
            runtime.shutdown_timeout(STOP_GRACE);
            let left = supportfunnel::io::scratch::remove_all() + remove_shared_now();
            if left == 0 {
                eprintln!("interrupted by {name}: stopped, temporary files removed");
            } else {
                eprintln!(
                    "interrupted by {name}: stopped; {left} temporary paths could not be removed"
                );
            }
            ExitCode::from(code)
        }
    }
}

/// Cancels the jobs the command left running on a cluster and removes what
/// is left of the report's shared scratch directories on an object store
/// (a report on a cluster interrupted), in a runtime of its own (the
/// command's was shut down), giving up after `STOP_GRACE` * 3. Returns how
/// many could not be cancelled or removed.
fn remove_shared_now() -> usize {
    #[cfg(feature = "cluster")]
    let jobs = supportfunnel::cluster::jobs::any_live();
    #[cfg(not(feature = "cluster"))]
    let jobs = false;
    if !supportfunnel::io::scratch::any_shared() && !jobs {
        return 0;
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return 1;
    };
    rt.block_on(async {
        let work = async {
            #[cfg(feature = "cluster")]
            let left = supportfunnel::cluster::jobs::cancel_live_jobs().await;
            #[cfg(not(feature = "cluster"))]
            let left = 0;
            left + supportfunnel::io::scratch::remove_all_shared().await
        };
        tokio::time::timeout(STOP_GRACE * 3, work)
            .await
            .unwrap_or(1)
    })
}

extern "C" {
    /// mimalloc's option setter (the C library linked for the allocator).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    /// mimalloc's collection: with `force`, the freed pages waiting for
    /// their purge delay are given back to the system now.
    fn mi_collect(force: bool);
}

/// `mi_option_allow_thp` in the option enum of the mimalloc linked by
/// libmimalloc-sys 0.1.49 (v3; Cargo.lock pins it).
const MI_OPTION_ALLOW_THP: std::ffi::c_int = 43;

/// `mi_option_purge_delay` in the same enum.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Under `--memory-limit`, memory freed is given back to the system after
/// a delay that grows with the limit instead of mimalloc's default second:
/// a report frees and allocates batches continuously, and the retained
/// pages made the process use twice what the operators held. Given back at
/// once, each new batch faults its pages in afresh, which slowed every
/// bounded run; a millisecond per [`PURGE_BYTES_PER_MS`] of the limit keeps
/// most of the reuse and the process within its bound (docs/PERFORMANCE.md,
/// "Freed memory").
pub fn purge_freed_memory_for(limit: usize) {
    // SAFETY: as in `tune_allocator`.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, purge_delay_ms(limit)) };
}

/// The purge delay for a memory limit: 1 ms per [`PURGE_BYTES_PER_MS`] of
/// it, at most [`PURGE_MAX_MS`]; none under [`PURGE_FROM_LIMIT`], where
/// the process's fixed memory leaves too little of the limit for freed
/// pages to wait in (sixteen `serve` reports under 256 MiB peaked at
/// 245–265 MiB with 6 ms).
fn purge_delay_ms(limit: usize) -> std::ffi::c_long {
    if limit < PURGE_FROM_LIMIT {
        return 0;
    }
    ((limit / PURGE_BYTES_PER_MS) as std::ffi::c_long).min(PURGE_MAX_MS)
}

/// The smallest memory limit under which freed memory waits.
const PURGE_FROM_LIMIT: usize = 512 << 20;

/// Bytes of a memory limit per millisecond of purge delay.
const PURGE_BYTES_PER_MS: usize = 40 << 20;

/// The longest purge delay under a limit, in ms (a tenth of the default).
const PURGE_MAX_MS: std::ffi::c_long = 100;

/// No transparent huge pages for mimalloc's memory. With them (the kernel's
/// `madvise` mode, which mimalloc asks for) every fresh 64 KiB mimalloc page
/// made the kernel zero a whole 2 MiB huge page, and a scan allocates and
/// frees batch buffers continuously: a third of the report's CPU went to
/// zeroing pages (docs/PERFORMANCE.md). Set before anything large is mapped.
///
/// Also installs the library's "memory let go" hook
/// ([`supportfunnel::io::allocator`]): after a step of the build, or the
/// whole build, mimalloc gives the freed pages back at once instead of
/// after its purge delay.
pub fn tune_allocator() {
    // SAFETY: sets a plain integer option that mimalloc reads on each mapping.
    unsafe { mi_option_set(MI_OPTION_ALLOW_THP, 0) };
    // SAFETY: `mi_collect` takes a plain flag and only frees memory that no
    // allocation holds.
    supportfunnel::io::allocator::set_return_freed(|| unsafe { mi_collect(true) });
    // The arena mimalloc reserved at start-up was already advised for huge
    // pages: turn THP off for the whole process (what mimalloc itself does
    // when the option is set before it starts).
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Waits for SIGINT and SIGTERM on a thread of its own, outside the async
/// runtime: the runtime's signal driver only runs when a worker is idle, and
/// a command keeping every worker busy (or swapping) would never hear one.
/// The signals are blocked in every thread (the mask is inherited, so this
/// runs before any other thread starts) and taken here with `sigwait`.
///
/// On the first signal the interrupt flag is set and the main thread told;
/// if the process is still alive `STOP_GRACE` + 2 s later, or on a second
/// signal, this thread removes the temporary files and exits itself.
#[cfg(unix)]
fn watch_signals() -> tokio::sync::oneshot::Receiver<(&'static str, u8)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use;
    // pthread_sigmask only changes this thread's mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let named = |sig: i32| {
        if sig == libc::SIGINT {
            ("SIGINT", 130u8)
        } else {
            ("SIGTERM", 143u8)
        }
    };
    let wait = move || {
        let mut sig = 0;
        // SAFETY: `set` is a valid signal set; `sig` a valid out-pointer.
        while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
        named(sig)
    };
    std::thread::spawn(move || {
        let (name, code) = wait();
        supportfunnel::io::scratch::interrupt();
        let _ = tx.send((name, code));
        // The main thread normally exits within STOP_GRACE; this is the
        // backstop, and a second signal means "now".
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(wait());
        });
        let _ = done_rx.recv_timeout(STOP_GRACE + std::time::Duration::from_secs(2));
        let left = supportfunnel::io::scratch::remove_all();
        eprintln!(
            "interrupted by {name}: stopped{}",
            if left == 0 {
                ", temporary files removed".to_string()
            } else {
                format!("; {left} temporary paths could not be removed")
            }
        );
        std::process::exit(i32::from(code));
    });
    rx
}

/// Without Unix signals: Ctrl-C through the runtime.
#[cfg(not(unix))]
fn watch_signals() -> tokio::sync::oneshot::Receiver<(&'static str, u8)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(rt) = rt {
            if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
                supportfunnel::io::scratch::interrupt();
                let _ = tx.send(("Ctrl-C", 130));
            }
        }
    });
    rx
}

/// Stack of the runtime's threads: planning a query over the derived views,
/// and on a cluster decoding its plan, recurse once per operator, and the
/// views stack hundreds of them (tokio's default is 2 MiB).
const WORKER_STACK: usize = 16 << 20;

/// How long an interrupted command gets to stop by itself (futures dropped,
/// `gen` noticing the flag) before what is left of its temporary files is
/// removed under it.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// The error chain on one line ([`supportfunnel::error::one_line`]), with
/// DataFusion's memory advice put in terms of our flag.
fn one_line(e: &anyhow::Error) -> String {
    let line = supportfunnel::error::one_line(e.as_ref());
    // Ours already says which limit works.
    let ours = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<supportfunnel::Error>(),
            Some(supportfunnel::Error::MemoryLimit(_))
        )
    });
    if ours {
        return line;
    }
    if e.chain().any(supportfunnel::error::memory_refused) {
        // DataFusion's advice names its own settings; ours are the flag and
        // the config key that set them.
        let advice = line
            .find(" Consider increasing")
            .and_then(|i| line[i..].find("caused by").map(|j| i..i + j));
        let mut line = line.clone();
        if let Some(r) = advice {
            line.replace_range(r, " ");
        }
        return format!(
            "{line}; the query needs more memory than --memory-limit ([engine] memory_limit) \
             allows: raise it"
        );
    }
    line
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The process's peak resident memory so far (`VmHWM`, Linux), in KiB.
/// Not getrusage: its maximum includes the parent's memory before `exec`.
pub fn peak_memory_kib() -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_grows_with_the_limit_up_to_its_maximum() {
        assert_eq!(purge_delay_ms(0), 0);
        assert_eq!(purge_delay_ms(256 << 20), 0);
        assert_eq!(purge_delay_ms(512 << 20), 12);
        assert_eq!(purge_delay_ms(2 << 30), 51);
        assert_eq!(purge_delay_ms(64 << 30), PURGE_MAX_MS);
    }
}
