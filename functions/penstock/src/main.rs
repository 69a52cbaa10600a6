//! The `penstock` command: validate, run and serve pipelines on the embedded default.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    penstock::run(penstock::cli::Cli::parse())
}
