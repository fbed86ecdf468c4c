//! Report progress on stderr: a live line on a terminal, and with
//! `--verbose` one line per finished step.

use std::io::IsTerminal;
use std::sync::Arc;

use supportfunnel::engine::progress::Progress;

/// Shows report progress on stderr: a live line on a terminal, and with
/// `--verbose` one line per finished step.
#[derive(Debug)]
pub struct CliProgress {
    bar: indicatif::ProgressBar,
    verbose: bool,
}

impl CliProgress {
    /// A receiver for a report, or `None` when nothing would be shown.
    pub fn new(verbose: bool) -> Option<Arc<Self>> {
        let tty = std::io::stderr().is_terminal();
        if !tty && !verbose {
            return None;
        }
        let bar = if tty {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        Some(Arc::new(Self { bar, verbose }))
    }
}

impl Progress for CliProgress {
    fn step_started(&self, index: usize, total: usize, name: &str) {
        self.bar
            .set_message(format!("step {index}/{total}: {name}"));
        self.bar.set_prefix(format!("step {index}/{total}: {name}"));
    }

    fn rows_read(&self, rows: usize) {
        self.bar
            .set_message(format!("{}: {} rows read", self.bar.prefix(), rows));
    }

    fn step_finished(&self, name: &str, rows: usize, elapsed: std::time::Duration) {
        if self.verbose {
            self.bar
                .suspend(|| eprintln!("{name}: {:.2} s, {rows} rows read", elapsed.as_secs_f64()));
        }
    }
}

impl Drop for CliProgress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
