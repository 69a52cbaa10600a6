//! `CodeBuild` on the embedded default: the action's buildspec runs locally as real processes
//! (see [`crate::buildspec`]), and `Deploy/AWS/S3` into a local bucket directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use penstock_app::ports::{ActionProvider, JobContext, ProviderOutcome};
use penstock_core::engine::ExternalExecution;

use crate::buildspec::{self, BuildRequest, BuildStatus};
use crate::providers::{failure, required};

/// Lines of the build log a failure message carries.
const LOG_TAIL_LINES: usize = 40;

/// `Build|Test/AWS/CodeBuild`, run locally.
pub struct LocalCodeBuild {
    /// Where build logs are kept after the attempt's work directory is gone.
    pub logs: PathBuf,
}

/// One entry of the `EnvironmentVariables` configuration (a JSON array, as CodePipeline takes it).
#[derive(serde::Deserialize)]
struct EnvironmentVariable {
    name: String,
    value: String,
    #[serde(rename = "type", default)]
    variable_type: Option<String>,
}

#[allow(clippy::result_large_err)] // the error is the outcome to return at once
fn environment_variables(ctx: &JobContext) -> Result<Vec<(String, String)>, ProviderOutcome> {
    let Some(text) = ctx.job.configuration.get("EnvironmentVariables") else {
        return Ok(Vec::new());
    };
    let parsed: Vec<EnvironmentVariable> = serde_json::from_str(text).map_err(|e| {
        failure(
            "ConfigurationError",
            format!(
                "EnvironmentVariables must be a JSON array of {{\"name\", \"value\", \"type\"}}: {e}"
            ),
        )
    })?;
    let mut variables = Vec::new();
    for variable in parsed {
        match variable.variable_type.as_deref() {
            None | Some("PLAINTEXT") => variables.push((variable.name, variable.value)),
            Some(other) => {
                return Err(failure(
                    "ConfigurationError",
                    format!(
                        "environment variable {} has type {other}, which the embedded default cannot resolve (PLAINTEXT only)",
                        variable.name
                    ),
                ));
            }
        }
    }
    Ok(variables)
}

#[async_trait]
impl ActionProvider for LocalCodeBuild {
    async fn run(&self, ctx: &JobContext) -> ProviderOutcome {
        let Some((primary, primary_dir)) = ctx.inputs.first() else {
            return failure(
                "ConfigurationError",
                "a CodeBuild action needs at least one input artifact".into(),
            );
        };
        let variables = match environment_variables(ctx) {
            Ok(v) => v,
            Err(outcome) => return outcome,
        };
        let spec = match buildspec::load_buildspec(
            ctx.job.configuration.get("BuildSpec").map(String::as_str),
            primary_dir,
        ) {
            Ok(spec) => spec,
            Err(e) => return failure("JobFailed", format!("buildspec: {e}")),
        };
        let project = ctx
            .job
            .configuration
            .get("ProjectName")
            .cloned()
            .unwrap_or_else(|| format!("penstock-{}", ctx.job.pipeline_name));
        let build_id = format!("{project}:{}", ctx.job.action_execution_id);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let timeout_ms = (ctx.job.deadline.0 - now_ms).max(1_000);
        let request = BuildRequest {
            work_dir: ctx.work_dir.join("build"),
            primary_source_dir: primary_dir.clone(),
            secondary_sources: ctx.inputs[1..]
                .iter()
                .map(|(artifact, dir)| (artifact.name.clone(), dir.clone()))
                .collect(),
            variables,
            build_id: build_id.clone(),
            build_number: u64::from(ctx.job.attempt),
            build_arn: format!("arn:aws:codebuild:local:000000000000:build/{build_id}"),
            initiator: format!("codepipeline/{}", ctx.job.pipeline_name),
            resolved_source_version: primary.revision_id.clone().unwrap_or_default(),
            timeout: Duration::from_millis(timeout_ms as u64),
        };
        let outcome = match buildspec::run_build(&spec, &request, ctx.cancel.cancelled()).await {
            Ok(outcome) => outcome,
            Err(e) => return failure("JobFailed", format!("the build could not run: {e}")),
        };
        let log = keep_log(&outcome.log_path, &self.logs, &ctx.job.action_execution_id).await;
        let tail = outcome.log_tail(LOG_TAIL_LINES).unwrap_or_default();
        let external = |summary: &str| ExternalExecution {
            id: Some(build_id.clone()),
            summary: Some(summary.to_string()),
            url: log.as_ref().map(|p| format!("file://{}", p.display())),
        };
        match &outcome.status {
            BuildStatus::Succeeded => {}
            BuildStatus::Failed { phase } => {
                let phase = phase.map(|p| p.as_str()).unwrap_or("UPLOAD_ARTIFACTS");
                return ProviderOutcome::Failed {
                    code: "JobFailed".into(),
                    message: format!(
                        "Build failed in phase {phase}. Last lines of the log:\n{tail}"
                    ),
                    external: external("Build failed"),
                };
            }
            BuildStatus::TimedOut => {
                return ProviderOutcome::Failed {
                    code: "TimedOut".into(),
                    message: format!("Build timed out. Last lines of the log:\n{tail}"),
                    external: external("Build timed out"),
                };
            }
            BuildStatus::Cancelled => {
                return ProviderOutcome::Failed {
                    code: "Cancelled".into(),
                    message: "Build cancelled".into(),
                    external: external("Build cancelled"),
                };
            }
        }
        // The primary artifact fills the first output; secondary artifacts the output of the
        // same name.
        for (index, (name, out_dir)) in ctx.outputs.iter().enumerate() {
            let collected = outcome.artifacts.iter().find(|a| match &a.identifier {
                None => index == 0,
                Some(id) => id == name,
            });
            let Some(collected) = collected else {
                return ProviderOutcome::Failed {
                    code: "JobFailed".into(),
                    message: format!(
                        "the buildspec produced no artifact for output {name} (declare `artifacts`, or `secondary-artifacts` with identifier {name})"
                    ),
                    external: external("Build produced no artifacts"),
                };
            };
            if let Err(e) = move_dir(&collected.dir, out_dir).await {
                return failure("JobFailed", format!("collecting output {name}: {e}"));
            }
        }
        ProviderOutcome::Succeeded {
            output_variables: outcome.exported_variables.clone(),
            revisions: BTreeMap::new(),
            external: external("Build succeeded"),
        }
    }
}

/// Keep the build log under the data directory; the work directory is removed afterwards.
async fn keep_log(log: &Path, logs: &Path, attempt_id: &str) -> Option<PathBuf> {
    tokio::fs::create_dir_all(logs).await.ok()?;
    let kept = logs.join(format!("{attempt_id}.log"));
    tokio::fs::copy(log, &kept).await.ok()?;
    Some(kept)
}

/// Replace `to` (an empty output directory) with the directory `from`.
async fn move_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    match tokio::fs::remove_dir(to).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    tokio::fs::rename(from, to).await
}

/// `Deploy/AWS/S3` into `buckets/BUCKET/`.
pub struct LocalS3Deploy {
    pub buckets: PathBuf,
}

#[async_trait]
impl ActionProvider for LocalS3Deploy {
    async fn run(&self, ctx: &JobContext) -> ProviderOutcome {
        let bucket = match required(ctx, "BucketName") {
            Ok(b) => b.to_string(),
            Err(outcome) => return outcome,
        };
        let extract = match required(ctx, "Extract") {
            Ok(v) if v.eq_ignore_ascii_case("true") => true,
            Ok(v) if v.eq_ignore_ascii_case("false") => false,
            Ok(v) => {
                return failure(
                    "ConfigurationError",
                    format!("Extract must be true or false, not {v:?}"),
                );
            }
            Err(outcome) => return outcome,
        };
        let object_key = ctx.job.configuration.get("ObjectKey").cloned();
        let Some((artifact, input_dir)) = ctx.inputs.first() else {
            return failure(
                "ConfigurationError",
                "an S3 deploy needs one input artifact".into(),
            );
        };
        let zip = ctx.work_dir.join("deploy.zip");
        let (dir, zip_path) = (input_dir.clone(), zip.clone());
        match tokio::task::spawn_blocking(move || crate::archive::zip_directory(&dir, &zip_path))
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return failure("JobFailed", format!("packing {}: {e}", artifact.name)),
            Err(e) => return failure("JobFailed", e.to_string()),
        }
        let buckets = self.buckets.clone();
        let deployed = tokio::task::spawn_blocking(move || {
            crate::bucket::deploy(
                &buckets,
                &bucket,
                extract,
                object_key.as_deref(),
                &zip,
                &crate::archive::ExtractLimits::default(),
            )
        })
        .await;
        match deployed {
            Ok(Ok(outcome)) => {
                let target = match outcome {
                    crate::bucket::DeployOutcome::Extracted { dir, .. } => dir,
                    crate::bucket::DeployOutcome::Stored { path, .. } => path,
                };
                ProviderOutcome::Succeeded {
                    output_variables: BTreeMap::new(),
                    revisions: BTreeMap::new(),
                    external: ExternalExecution {
                        id: None,
                        summary: Some(format!("Deployed to {}", target.display())),
                        url: Some(format!("file://{}", target.display())),
                    },
                }
            }
            Ok(Err(e)) => failure("JobFailed", e.to_string()),
            Err(e) => failure("JobFailed", e.to_string()),
        }
    }
}
