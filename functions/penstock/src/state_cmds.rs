//! Commands that read or change state while a runner (`run` or `serve`) may be executing in
//! another process: `status`, `approve`, `reject`, `stop`, `start`. They take no runner lock;
//! the effects they cause wait in the outbox until the runner publishes them.

use std::path::Path;

use penstock_app::control::{Control, StartOptions};
use penstock_core::engine::{ActionStatus, Execution};
use penstock_local::runtime::{DataDir, LocalParts};

use crate::run_cmd::pending_approvals;

fn control(data_dir: &Path) -> anyhow::Result<Control> {
    let parts = LocalParts::open(DataDir::new(data_dir))?;
    Ok(parts.detached_control())
}

fn app_error(e: penstock_app::error::AppError) -> anyhow::Error {
    anyhow::anyhow!("{}: {e}", e.exception_name())
}

/// Whether a runner holds the data directory (so a change will be acted on now).
fn runner_active(data_dir: &Path) -> bool {
    let path = DataDir::new(data_dir).lock_file();
    match std::fs::File::options().write(true).open(path) {
        Ok(file) => match file.try_lock() {
            Ok(()) => false,
            Err(std::fs::TryLockError::WouldBlock) => true,
            Err(_) => false,
        },
        Err(_) => false,
    }
}

fn note_if_no_runner(data_dir: &Path) {
    if !runner_active(data_dir) {
        println!(
            "note: no penstock is running on {}; the execution continues when `penstock serve` or `penstock run` starts there",
            data_dir.display()
        );
    }
}

/// `penstock approve|reject PIPELINE STAGE ACTION`.
pub async fn decide(
    data_dir: &Path,
    pipeline: &str,
    stage: &str,
    action: &str,
    approved: bool,
    summary: Option<String>,
) -> anyhow::Result<i32> {
    let control = control(data_dir)?;
    let runtime = control.runtime(pipeline).await.map_err(app_error)?;
    let pending = runtime
        .value
        .state
        .executions
        .values()
        .flat_map(|execution| {
            pending_approvals(execution)
                .into_iter()
                .map(move |p| (execution.id.clone(), p))
        })
        .find(|(_, (s, a, _))| s == stage && a == action);
    let Some((execution_id, (_, _, token))) = pending else {
        eprintln!("no approval is waiting at {pipeline}/{stage}/{action}");
        return Ok(1);
    };
    let verdict = if approved { "approved" } else { "rejected" };
    let summary = summary.unwrap_or_else(|| {
        format!(
            "{verdict} with penstock {}",
            if approved { "approve" } else { "reject" }
        )
    });
    control
        .put_approval_result(pipeline, stage, action, &token, approved, summary)
        .await
        .map_err(app_error)?;
    println!("{verdict} {stage}.{action} of execution {execution_id}");
    note_if_no_runner(data_dir);
    Ok(0)
}

/// `penstock stop PIPELINE EXECUTION_ID`.
pub async fn stop(
    data_dir: &Path,
    pipeline: &str,
    execution_id: &str,
    abandon: bool,
    reason: Option<String>,
) -> anyhow::Result<i32> {
    let control = control(data_dir)?;
    control
        .stop_execution(pipeline, execution_id, abandon, reason)
        .await
        .map_err(app_error)?;
    let how = if abandon { "stop and abandon" } else { "stop" };
    println!("{how} requested for execution {execution_id}");
    note_if_no_runner(data_dir);
    Ok(0)
}

/// `penstock start PIPELINE`: start an execution of a stored pipeline.
pub async fn start(
    data_dir: &Path,
    pipeline: &str,
    variables: std::collections::BTreeMap<String, String>,
) -> anyhow::Result<i32> {
    let control = control(data_dir)?;
    let id = control
        .start_execution(
            pipeline,
            StartOptions {
                variables,
                ..Default::default()
            },
        )
        .await
        .map_err(app_error)?;
    println!("{id}");
    note_if_no_runner(data_dir);
    Ok(0)
}

/// `penstock status [PIPELINE] [--execution ID]`.
pub async fn status(
    data_dir: &Path,
    pipeline: Option<&str>,
    execution_id: Option<&str>,
) -> anyhow::Result<i32> {
    let control = control(data_dir)?;
    let Some(pipeline) = pipeline else {
        let (records, _) = control
            .engine
            .repo
            .list_pipelines(None, 1000)
            .await
            .map_err(app_error)?;
        if records.is_empty() {
            println!("no pipelines in {}", data_dir.display());
        }
        for record in records {
            let name = &record.declaration.name;
            let (executions, _) = control
                .list_executions(name, None, 1)
                .await
                .map_err(app_error)?;
            match executions.first() {
                Some(latest) => println!(
                    "{name:<32} v{:<4} latest {} {:?}",
                    record.declaration.version.unwrap_or(1),
                    latest.id,
                    latest.status
                ),
                None => println!(
                    "{name:<32} v{:<4} no executions",
                    record.declaration.version.unwrap_or(1)
                ),
            }
        }
        return Ok(0);
    };
    let execution = match execution_id {
        Some(id) => control
            .get_execution(pipeline, id)
            .await
            .map_err(app_error)?,
        None => {
            let (executions, _) = control
                .list_executions(pipeline, None, 1)
                .await
                .map_err(app_error)?;
            match executions.into_iter().next() {
                Some(e) => e,
                None => {
                    control
                        .engine
                        .repo
                        .get_pipeline(pipeline)
                        .await
                        .map_err(app_error)?;
                    println!("{pipeline}: no executions yet");
                    return Ok(0);
                }
            }
        }
    };
    print_execution(&execution);
    for (stage, action, _) in pending_approvals(&execution) {
        println!(
            "waiting for approval: penstock approve {pipeline} {stage} {action}   (or: penstock reject ...)"
        );
    }
    Ok(0)
}

fn print_execution(execution: &Execution) {
    println!(
        "{} execution {} {:?} (attempt {}, version {})",
        execution.pipeline_name,
        execution.id,
        execution.status,
        execution.attempt,
        execution.pipeline_version
    );
    for stage in &execution.stages {
        let status = stage
            .status
            .map(|s| format!("{s:?}"))
            .unwrap_or_else(|| "-".into());
        println!("  {:<28} {status}", stage.name);
        for action in &stage.actions {
            if action.status == ActionStatus::NotStarted {
                println!("    {:<26} -", action.name);
                continue;
            }
            let error = action
                .error
                .as_ref()
                .map(|e| format!("  {}: {}", e.code, e.message.lines().next().unwrap_or("")))
                .unwrap_or_default();
            println!("    {:<26} {:?}{error}", action.name, action.status);
        }
    }
}
