//! The `penstock` command line: argument parsing and one module per subcommand, kept out of
//! `main.rs` so tests and other entry points call the same code.

pub mod cli;
pub mod validate_cmd;

use std::io::{self, Write};
use std::process::ExitCode;

use cli::{Cli, Command};

/// Exit status for input Penstock refuses (an invalid or unreadable pipeline file), matching
/// clap's status for bad arguments.
pub const EXIT_INVALID: u8 = 2;

/// Runs one parsed command line against the process's stdout and stderr.
pub fn run(cli: Cli) -> ExitCode {
    let stdout = io::stdout();
    let stderr = io::stderr();
    let status = dispatch(&cli, &mut stdout.lock(), &mut stderr.lock());
    match status {
        Ok(code) => code,
        Err(error) => {
            // Output failed (a closed pipe, a full disk): nothing useful can still be printed
            // to stdout, so say it once on stderr.
            let _ = writeln!(io::stderr(), "penstock: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command with explicit output streams.
pub fn dispatch(cli: &Cli, out: &mut dyn Write, err: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Validate(args) => validate_cmd::run(args, out, err),
    }
}
