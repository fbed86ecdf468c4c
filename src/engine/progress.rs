//! Progress of a long report: which step runs and how many rows it has read.
//!
//! The library only reports; the binary decides how to show it (a spinner
//! on a terminal, step timings with `--verbose`, nothing otherwise). Rows
//! read are taken from the running plan's own metrics (the `output_rows` of
//! its leaf scans), so reporting costs nothing on the hot path.

use std::sync::Arc;
use std::time::Duration;

use datafusion::physical_plan::ExecutionPlan;

/// Receives progress while a report runs. Calls come from the report's task;
/// implementations should be quick.
pub trait Progress: std::fmt::Debug + Send + Sync {
    /// Step `index` (1-based) of `total`, named `name`, begins.
    fn step_started(&self, index: usize, total: usize, name: &str);
    /// The running step has read `rows` input rows so far.
    fn rows_read(&self, rows: usize);
    /// The step finished after `elapsed`, having read `rows` input rows.
    fn step_finished(&self, name: &str, rows: usize, elapsed: Duration);
}

/// A shared progress receiver.
pub type ProgressRef = Arc<dyn Progress>;

/// How often a running step's rows are reported.
pub const TICK: Duration = Duration::from_millis(250);

/// Rows read so far by the leaves (scans) of `plan`.
pub fn rows_read(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let children = plan.children();
    if children.is_empty() {
        plan.metrics().and_then(|m| m.output_rows()).unwrap_or(0)
    } else {
        children.into_iter().map(rows_read).sum()
    }
}
