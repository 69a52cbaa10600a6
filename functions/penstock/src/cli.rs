//! The command-line grammar: global options and the subcommands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::validate_cmd::ValidateArgs;

#[derive(Debug, Parser)]
#[command(
    name = "penstock",
    version,
    about = "Run AWS CodePipeline pipelines on your own machine or account"
)]
pub struct Cli {
    /// Where the embedded default keeps its state (database, artifacts, keys).
    #[arg(long, global = true, value_name = "DIR", default_value = ".penstock")]
    pub data_dir: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a pipeline declaration (create-pipeline JSON or a bare pipeline) and print every
    /// problem with CodePipeline's exception name and its JSON path.
    Validate(ValidateArgs),
    /// Create or update the pipeline from FILE, start an execution and follow it to the end.
    Run(RunCli),
    /// Keep executing the data directory's pipelines (and finish what a killed runner left).
    Serve(ServeCli),
    /// Show the pipelines, or one pipeline's latest (or a given) execution.
    Status(StatusCli),
    /// Approve a waiting Manual approval action.
    Approve(DecideCli),
    /// Reject a waiting Manual approval action.
    Reject(DecideCli),
    /// Start an execution of a stored pipeline.
    Start(StartCli),
    /// Stop an execution (wait for running actions, or abandon them with --abandon).
    Stop(StopCli),
    /// Print the shell lines that point the aws CLI at `penstock serve`'s API.
    Credentials(CredentialsCli),
}

#[derive(Debug, Args)]
pub struct CredentialsCli {
    /// The API's address as `penstock serve` printed it.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:7788")]
    pub endpoint_url: String,
}

/// `NAME=VALUE` pipeline variable overrides.
fn parse_variable(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

#[derive(Debug, Args)]
pub struct RunCli {
    /// The pipeline JSON file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Approve every Manual approval as it comes (unattended runs).
    #[arg(long, conflicts_with = "reject")]
    pub approve: bool,
    /// Reject every Manual approval as it comes.
    #[arg(long)]
    pub reject: bool,
    /// Pipeline variable override (V2 pipelines), repeatable.
    #[arg(long = "variable", value_name = "NAME=VALUE", value_parser = parse_variable)]
    pub variables: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct ServeCli {
    /// Address of the HTTP API (loopback by default).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7788")]
    pub listen: String,
}

#[derive(Debug, Args)]
pub struct StatusCli {
    /// The pipeline; all pipelines when omitted.
    pub pipeline: Option<String>,
    /// A specific execution instead of the latest.
    #[arg(long, value_name = "ID")]
    pub execution: Option<String>,
}

#[derive(Debug, Args)]
pub struct DecideCli {
    pub pipeline: String,
    pub stage: String,
    pub action: String,
    /// The summary recorded with the decision.
    #[arg(long)]
    pub summary: Option<String>,
}

#[derive(Debug, Args)]
pub struct StartCli {
    pub pipeline: String,
    /// Pipeline variable override (V2 pipelines), repeatable.
    #[arg(long = "variable", value_name = "NAME=VALUE", value_parser = parse_variable)]
    pub variables: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct StopCli {
    pub pipeline: String,
    pub execution_id: String,
    /// Abandon running actions instead of waiting for them.
    #[arg(long)]
    pub abandon: bool,
    /// Why the execution is stopped.
    #[arg(long)]
    pub reason: Option<String>,
}
