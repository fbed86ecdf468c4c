//! The `supportfunnel` command: parse the flags, then run the command they
//! name (`src/cli/commands.rs`, one function per command) under the
//! process's signal handling and exit codes (`src/cli/process.rs`).

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// Large aggregations are several times faster with mimalloc than with the
/// system allocator (docs/PERFORMANCE.md); datafusion-cli uses it too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::process::tune_allocator();
    let args = cli::args::Cli::parse();
    let threads = cli::commands::worker_threads(&args);
    cli::process::run(cli::commands::dispatch(args), threads)
}
