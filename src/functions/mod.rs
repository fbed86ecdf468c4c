//! Our SQL functions, registered in one place ([`register_functions`]) on
//! every context: one process, each `serve` connection, and every node of
//! a cluster.
//!
//! * [`session_start`]: the sessionization window function (24 h from a
//!   customer's first action, spec §2);
//! * [`id_hash`]: the fixed hash that routes ids to partitions, the same
//!   on every node;
//! * [`timestamps`]: reading the contract's timestamps in any unit.

use datafusion::prelude::SessionContext;

pub mod id_hash;
pub mod session_start;
pub mod timestamps;

/// Registers our SQL functions on `ctx`. (`report(…)`, the report as a
/// table function, needs the report and is registered by
/// `crate::report::table_function::register`.)
pub fn register_functions(ctx: &SessionContext) {
    ctx.register_udwf(session_start::session_start_udwf());
    ctx.register_udf(id_hash::id_hash_udf());
}
