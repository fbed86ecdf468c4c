//! The integration tests: one binary (DataFusion is linked once), one module
//! per concern.

mod cli;
mod cluster;
mod common;
#[cfg(feature = "delta")]
mod delta;
mod generator;
mod hostile;
mod html;
mod incremental;
mod native;
mod report;
mod s3;
mod s3_server;
#[cfg(feature = "serve")]
mod serve;
#[cfg(feature = "serve")]
mod serve_hostile;
mod slt;
mod tables;
mod udwf;
mod views;
