//! supportfunnel: the support funnel report on Apache DataFusion.
//!
//! The library is the engine. It registers a company's support `events` and
//! proactive `messages` (Parquet, local or S3) as DataFusion tables, adds
//! the `session_start` window function and the derived views of the report
//! spec, runs ad-hoc SQL and the report over them, and writes results. The
//! `supportfunnel` binary (`src/main.rs`, `src/cli/`) is a thin command line
//! over it; without default features (`cargo build --no-default-features
//! --lib`) the library builds alone, with none of the terminal's crates.
//!
//! Its folders are its layers, bottom to top; each uses only those below it
//! (`.ci/layers` checks it):
//!
//! * [`error`], [`rules`]: the errors, and the spec's rules written once;
//! * [`settings`]: flags over the config file over defaults, locations,
//!   periods and zones, the engine's options;
//! * [`io`]: object stores, temporary files and interrupts, the read-only
//!   rule;
//! * [`functions`]: `session_start`, `id_hash`, timestamps;
//! * [`tables`]: the data contract, file listings, the SQL views of
//!   `queries/views/` and the [`tables::native`] operators that compute
//!   the same relations, Delta input tables;
//! * [`cluster`]: the same queries on Apache Ballista;
//! * [`engine`]: the session context and how a statement runs;
//! * [`report`]: the report (`queries/report/`) and `report(…)` in SQL;
//! * [`render`]: numbers as text, the HTML page, result files;
//! * [`job`]: the scheduled job and its incremental state;
//! * [`serve`] (feature `serve`): the PostgreSQL-wire endpoint;
//! * [`datagen`] (feature `gen`): the synthetic data generator.
//!
//! Where to start: [`settings::Settings::resolve`], [`open`] (the engine
//! with every table, view and function, `report(…)` included; [`build_context`]
//! without `report(…)`), [`report::run_report`], [`job::run_job`].

pub mod error;
pub mod rules;

pub mod settings;

pub mod io;

pub mod functions;

pub mod tables;

pub mod cluster;

pub mod engine;

pub mod report;

pub mod render;

pub mod job;

#[cfg(feature = "serve")]
pub mod serve;

#[cfg(feature = "gen")]
pub mod datagen;

pub use engine::context::{build_context, Engine};
pub use error::{Error, Result};
pub use report::table_function::open;
pub use settings::options::EngineOptions;
