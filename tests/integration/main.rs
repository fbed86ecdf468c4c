//! The integration tests: one binary (DataFusion is linked once), one module
//! per concern.

mod cli;
#[cfg(feature = "cluster")]
mod cluster;
mod common;
#[cfg(feature = "delta")]
mod delta;
mod detail;
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

/// The tests cover the cluster, Delta Lake and the endpoint: without them
/// built in, say how to run them rather than pass on less.
#[cfg(not(all(feature = "cluster", feature = "delta", feature = "serve")))]
#[test]
fn the_tests_need_every_feature() {
    panic!("run the tests with every part built in: cargo test --features full");
}
