//! The `penstock` command line: argument parsing and one module per subcommand, kept out of
//! `main.rs` so tests and other entry points call the same code.

pub mod api_keys;
pub mod cli;
pub mod progress;
pub mod run_cmd;
pub mod serve_cmd;
pub mod state_cmds;
pub mod validate_cmd;

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Context;

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
        other => {
            init_logging();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let code = runtime.block_on(run_async(&cli.data_dir, other))?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
    }
}

/// Logs go to stderr; `RUST_LOG` sets the level (warnings by default).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .try_init();
}

async fn run_async(data_dir: &std::path::Path, command: &Command) -> anyhow::Result<i32> {
    match command {
        Command::Validate(_) => unreachable_validate(),
        Command::Run(args) => {
            let approvals = if args.approve {
                run_cmd::ApprovalMode::Approve
            } else if args.reject {
                run_cmd::ApprovalMode::Reject
            } else {
                run_cmd::ApprovalMode::Ask
            };
            run_cmd::run(run_cmd::RunArgs {
                file: args.file.clone(),
                data_dir: data_dir.to_path_buf(),
                approvals,
                variables: args.variables.iter().cloned().collect(),
            })
            .await
        }
        Command::Serve(args) => serve_cmd::serve(data_dir, &args.listen).await,
        Command::Status(args) => {
            state_cmds::status(
                data_dir,
                args.pipeline.as_deref(),
                args.execution.as_deref(),
            )
            .await
        }
        Command::Approve(args) | Command::Reject(args) => {
            let approved = matches!(command, Command::Approve(_));
            state_cmds::decide(
                data_dir,
                &args.pipeline,
                &args.stage,
                &args.action,
                approved,
                args.summary.clone(),
            )
            .await
        }
        Command::Start(args) => {
            state_cmds::start(
                data_dir,
                &args.pipeline,
                args.variables.iter().cloned().collect(),
            )
            .await
        }
        Command::Credentials(args) => {
            let keys = api_keys::load_or_create(data_dir)?;
            let region = std::env::var("PENSTOCK_REGION").unwrap_or_else(|_| "us-east-1".into());
            print!("{}", keys.shell_lines(&args.endpoint_url, &region));
            Ok(0)
        }
        Command::Stop(args) => {
            state_cmds::stop(
                data_dir,
                &args.pipeline,
                &args.execution_id,
                args.abandon,
                args.reason.clone(),
            )
            .await
        }
    }
}

/// `validate` is synchronous and handled before the async runtime starts.
fn unreachable_validate() -> anyhow::Result<i32> {
    Err(anyhow::anyhow!("validate runs without the async runtime"))
}
