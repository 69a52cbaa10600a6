//! The command-line grammar: global options and the subcommands.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

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
}
