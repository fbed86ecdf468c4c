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
//! Where to start:
//! * [`settings::Settings::resolve`]: flags over config over defaults;
//! * [`context::build_context`]: the session with tables, functions, views;
//! * [`report::run_report`]: the report; [`job::run_job`]: the scheduled job;
//! * [`udwf`]: the `session_start` window function.
//!
//! The modules by layer:
//! * settings: [`config`] (the TOML file), [`settings`], [`location`];
//! * tables: [`tables`] (the data contract), [`listing`] (which files a
//!   table is, per statement), [`views`] (`queries/views/`: the
//!   reference definitions), [`native`] (the derived relations as
//!   partitioned, spilling operators), [`readonly`];
//! * functions: [`udwf`], [`udf`], [`udtf`] (the `report(…)` table function),
//!   [`timestamps`];
//! * queries: [`query`], [`report`] (`queries/report/`), [`period`],
//!   [`progress`];
//! * io: [`storage`] (object stores), [`output`], [`job`], [`display`],
//!   [`html`] (the report as a page),
//!   [`scratch`] (temporary files and interrupts), [`incremental`] (the
//!   job's state between runs);
//! * [`cluster`] (feature `cluster`): the same queries on Apache Ballista;
//! * [`delta`] (feature `delta`): Delta Lake result and input tables;
//! * [`serve`] (feature `serve`): the PostgreSQL-wire endpoint;
//! * [`gen`] (feature `gen`): the synthetic data generator.

pub mod cluster;
pub mod config;
pub mod context;
#[cfg(feature = "delta")]
pub mod delta;
pub mod display;
pub mod error;
#[cfg(feature = "gen")]
pub mod gen;
pub mod html;
pub mod incremental;
pub mod job;
pub mod listing;
pub mod location;
pub mod native;
pub mod output;
pub mod period;
pub mod progress;
pub mod query;
pub mod readonly;
pub mod report;
pub mod scratch;
#[cfg(feature = "serve")]
pub mod serve;
pub mod settings;
pub mod storage;
pub mod tables;
pub mod timestamps;
pub mod udf;
pub mod udtf;
pub mod udwf;
pub mod views;

pub use context::{build_context, Engine, EngineOptions};
pub use error::{Error, Result};
