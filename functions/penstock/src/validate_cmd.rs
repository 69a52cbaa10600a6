//! `penstock validate FILE`: checks a pipeline declaration without running it.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use penstock_core::model::{ExecutionMode, PipelineType};
use penstock_core::validate::{Validated, parse_and_validate};

use crate::EXIT_INVALID;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The pipeline JSON file; `-` reads standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Prints a summary and the notes of a valid declaration (exit 0), or one line per error
/// (exit 2).
pub fn run(
    args: &ValidateArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let text = match read(&args.file) {
        Ok(text) => text,
        Err(error) => {
            writeln!(
                err,
                "penstock: cannot read {}: {error}",
                args.file.display()
            )
            .context("writing to stderr")?;
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    match parse_and_validate(&text) {
        Ok(validated) => {
            writeln!(out, "{}", summary(&validated)).context("writing to stdout")?;
            for note in &validated.notes {
                writeln!(out, "note: {note}").context("writing to stdout")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for error in &errors {
                writeln!(out, "{error}").context("writing to stdout")?;
            }
            Ok(ExitCode::from(EXIT_INVALID))
        }
    }
}

fn read(file: &Path) -> std::io::Result<String> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
    }
}

/// `MyWebAppPipeline: valid (V1, SUPERSEDED, 3 stages, 3 actions)`.
pub fn summary(validated: &Validated) -> String {
    let d = &validated.declaration;
    let actions: usize = d.stages.iter().map(|s| s.actions.len()).sum();
    let pipeline_type = match d.effective_pipeline_type() {
        PipelineType::V1 => "V1",
        PipelineType::V2 => "V2",
    };
    let mode = match d.effective_execution_mode() {
        ExecutionMode::Superseded => "SUPERSEDED",
        ExecutionMode::Queued => "QUEUED",
        ExecutionMode::Parallel => "PARALLEL",
    };
    format!(
        "{}: valid ({pipeline_type}, {mode}, {} stages, {actions} actions)",
        d.name,
        d.stages.len()
    )
}
