//! The `supportfunnel` binary's own modules: what a terminal needs and the
//! library does not (flags, the prompt, the progress line, text tables, the
//! process's signals and exit codes).

pub mod args;
pub mod commands;
pub mod process;
pub mod progress;
pub mod prompt;
pub mod table;
