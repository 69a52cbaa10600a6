//! `penstock run FILE`: create or update the pipeline from FILE, start an execution and follow
//! it to the end on the embedded default, answering approvals as told.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use penstock_app::control::StartOptions;
use penstock_core::engine::{ActionStatus, Execution, ExecutionStatus};
use penstock_local::runtime::{DataDir, Runner};

use crate::progress::{Progress, summary};

/// How approvals are answered during `penstock run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalMode {
    /// Ask on the terminal when attached to one; otherwise wait for `penstock approve`.
    Ask,
    Approve,
    Reject,
}

pub struct RunArgs {
    pub file: PathBuf,
    pub data_dir: PathBuf,
    pub approvals: ApprovalMode,
    pub variables: BTreeMap<String, String>,
}

/// Exit codes: 0 succeeded, 1 failed, 3 stopped/superseded/cancelled.
pub fn exit_code(status: ExecutionStatus) -> i32 {
    match status {
        ExecutionStatus::Succeeded => 0,
        ExecutionStatus::Failed => 1,
        _ => 3,
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let validated = match penstock_core::validate::parse_and_validate(&text) {
        Ok(v) => v,
        Err(errors) => {
            for error in errors {
                println!("{error}");
            }
            return Ok(2);
        }
    };
    let mut runner = Runner::open(DataDir::new(&args.data_dir))?;
    let _tasks = runner.start();
    let name = validated.declaration.name.clone();
    let record = runner
        .control
        .put_pipeline(validated.declaration, validated.tags)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", e.exception_name()))?;
    let execution_id = runner
        .control
        .start_execution(
            &name,
            StartOptions {
                variables: args.variables.clone(),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", e.exception_name()))?;
    println!(
        "Pipeline {name} (version {}), execution {execution_id}",
        record.declaration.version.unwrap_or(1)
    );
    println!("Data directory: {}", args.data_dir.display());
    let execution = follow(&runner, &name, &execution_id, args.approvals).await?;
    let mut out = std::io::stdout();
    summary(&execution, &mut out);
    print_links(&execution, &record.declaration, &mut out);
    Ok(exit_code(execution.status))
}

/// Follow an execution until it ends, printing progress; Ctrl-C stops it (abandoning what
/// runs) and waits for the stop to finish.
pub async fn follow(
    runner: &Runner,
    pipeline: &str,
    execution_id: &str,
    approvals: ApprovalMode,
) -> anyhow::Result<Execution> {
    let mut progress = Progress::default();
    let mut hinted = BTreeSet::new();
    let mut out = std::io::stdout();
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;
    loop {
        let execution = runner
            .control
            .get_execution(pipeline, execution_id)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", e.exception_name()))?;
        progress.update(&execution, &mut out);
        if execution.status.is_terminal() {
            return Ok(execution);
        }
        for (stage, action, token) in pending_approvals(&execution) {
            let decision = match approvals {
                ApprovalMode::Approve => {
                    Some((true, "approved by penstock run --approve".to_string()))
                }
                ApprovalMode::Reject => {
                    Some((false, "rejected by penstock run --reject".to_string()))
                }
                ApprovalMode::Ask if interactive => ask(&stage, &action).await?,
                ApprovalMode::Ask => {
                    if hinted.insert((stage.clone(), action.clone())) {
                        println!(
                            "        approval {stage}.{action} is waiting: penstock approve {pipeline} {stage} {action} (or reject)"
                        );
                    }
                    None
                }
            };
            if let Some((approved, summary)) = decision {
                let verdict = if approved { "approved" } else { "rejected" };
                println!("        {verdict} {stage}.{action}");
                runner
                    .control
                    .put_approval_result(pipeline, &stage, &action, &token, approved, summary)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: {e}", e.exception_name()))?;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = &mut ctrl_c, if !interrupted => {
                interrupted = true;
                println!("        interrupted: stopping the execution (abandoning running actions)");
                let _ = runner
                    .control
                    .stop_execution(pipeline, execution_id, true, Some("interrupted from the terminal".into()))
                    .await;
            }
        }
    }
}

/// Approval actions of the execution that wait for a decision: (stage, action, token).
pub fn pending_approvals(execution: &Execution) -> Vec<(String, String, String)> {
    execution
        .stages
        .iter()
        .flat_map(|stage| {
            stage
                .actions
                .iter()
                .filter_map(move |action| match (&action.token, action.status) {
                    (Some(token), ActionStatus::InProgress) => {
                        Some((stage.name.clone(), action.name.clone(), token.clone()))
                    }
                    _ => None,
                })
        })
        .collect()
}

async fn ask(stage: &str, action: &str) -> anyhow::Result<Option<(bool, String)>> {
    print!("        approve {stage}.{action}? [y/N] ");
    std::io::stdout().flush()?;
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await??;
    let approved = matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes");
    let verdict = if approved { "approved" } else { "rejected" };
    Ok(Some((approved, format!("{verdict} at the terminal"))))
}

/// Say where deploys put their result and where build logs are.
fn print_links(
    execution: &Execution,
    declaration: &penstock_core::model::PipelineDeclaration,
    out: &mut impl Write,
) {
    use penstock_core::model::ActionCategory;
    for stage in &execution.stages {
        for action in &stage.actions {
            let Some(path) = action
                .external
                .url
                .as_deref()
                .and_then(|url| url.strip_prefix("file://"))
            else {
                continue;
            };
            let category = declaration
                .stage(&stage.name)
                .and_then(|s| s.actions.iter().find(|a| a.name == action.name))
                .map(|a| a.action_type_id.category);
            let what = match (category, action.status) {
                (Some(ActionCategory::Deploy), ActionStatus::Succeeded) => "deployed to",
                (Some(ActionCategory::Build | ActionCategory::Test), _) => "log:",
                _ => continue,
            };
            let _ = writeln!(out, "{}.{} {what} {path}", stage.name, action.name);
        }
    }
}
