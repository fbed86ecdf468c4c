//! The session that runs SQL: [`context`] builds it (runtime, memory pool,
//! tables, functions, views) for one process or a cluster, [`query`] runs a
//! statement with bound parameters, [`progress`] reports what is running.

pub mod context;
pub mod progress;
pub mod query;

pub use context::{build_context, Engine};
