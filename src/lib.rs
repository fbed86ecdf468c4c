//! supportfunnel: the support funnel report on Apache DataFusion.
//!
//! The library registers a company's support `events` and proactive
//! `messages` (Parquet, local or S3) as DataFusion tables, adds the
//! `session_start` window function and the derived views of the report spec,
//! and runs SQL over them. The binary (`src/main.rs`) is a thin CLI over it.
//!
//! Start with [`context::build_context`].

pub mod cache;
pub mod config;
pub mod context;
pub mod error;
pub mod gen;
pub mod history;
pub mod job;
pub mod output;
pub mod period;
pub mod progress;
pub mod readonly;
pub mod render;
pub mod report;
pub mod scratch;
pub mod sql;
pub mod storage;
pub mod tables;
pub mod udf;
pub mod udwf;
pub mod views;

pub use context::{build_context, Engine, EngineOptions};
pub use error::{Error, Result};
