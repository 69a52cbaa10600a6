//! The action providers of the embedded default, named and configured as a CodePipeline user
//! writes them: `Source/Custom/LocalGit`, `Build|Test/AWS/CodeBuild` (the buildspec run
//! locally), `Deploy/AWS/S3` (into a local bucket directory), `Approval/AWS/Manual`, and the
//! GitHub sources `Source/AWS/CodeStarSourceConnection` and `Source/ThirdParty/GitHub` (through
//! the GitHub API, see `github_source`).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use penstock_app::ports::{
    ActionProvider, IdGenerator, JobContext, ProviderOutcome, ProviderRegistry,
};
use penstock_core::engine::ExternalExecution;
use penstock_core::model::{ActionCategory, ActionOwner, ActionTypeId};

use crate::runtime::DataDir;

/// Looks providers up by action type.
pub struct LocalProviders {
    source: Arc<dyn ActionProvider>,
    build: Arc<dyn ActionProvider>,
    s3_deploy: Arc<dyn ActionProvider>,
    approval: Arc<dyn ActionProvider>,
    github: Arc<dyn ActionProvider>,
}

impl LocalProviders {
    pub fn new(data_dir: &DataDir, ids: Arc<dyn IdGenerator>) -> Self {
        Self {
            source: Arc::new(LocalGitSource),
            build: Arc::new(crate::build_provider::LocalCodeBuild {
                logs: data_dir.root.join("logs"),
            }),
            s3_deploy: Arc::new(crate::build_provider::LocalS3Deploy {
                buckets: data_dir.buckets(),
            }),
            approval: Arc::new(ManualApproval { ids }),
            github: Arc::new(crate::github_source::GitHubSource::new(
                &crate::github_source::GitHubSettings::from_env(),
            )),
        }
    }
}

impl ProviderRegistry for LocalProviders {
    fn provider_for(&self, type_id: &ActionTypeId) -> Option<Arc<dyn ActionProvider>> {
        use ActionCategory as C;
        use ActionOwner as O;
        match (type_id.category, type_id.owner, type_id.provider.as_str()) {
            (C::Source, O::Custom, "LocalGit") => Some(self.source.clone()),
            (C::Build | C::Test, O::Aws, "CodeBuild") => Some(self.build.clone()),
            (C::Deploy, O::Aws, "S3") => Some(self.s3_deploy.clone()),
            (C::Approval, O::Aws, "Manual") => Some(self.approval.clone()),
            (C::Source, O::Aws, "CodeStarSourceConnection")
            | (C::Source, O::ThirdParty, "GitHub") => Some(self.github.clone()),
            _ => None,
        }
    }
}

/// A configuration value the action must have; the error is the outcome to return at once.
#[allow(clippy::result_large_err)]
pub(crate) fn required<'a>(ctx: &'a JobContext, key: &str) -> Result<&'a str, ProviderOutcome> {
    match ctx.job.configuration.get(key) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(failure(
            "ConfigurationError",
            format!("the action's configuration has no {key}"),
        )),
    }
}

pub(crate) fn failure(code: &str, message: String) -> ProviderOutcome {
    ProviderOutcome::Failed {
        code: code.to_string(),
        message,
        external: ExternalExecution::default(),
    }
}

/// `Source/Custom/LocalGit`: the exact commit of a git repository.
struct LocalGitSource;

#[async_trait]
impl ActionProvider for LocalGitSource {
    async fn run(&self, ctx: &JobContext) -> ProviderOutcome {
        let repository = match required(ctx, "RepositoryPath") {
            Ok(r) => r.to_string(),
            Err(outcome) => return outcome,
        };
        let branch = match required(ctx, "BranchName") {
            Ok(b) => b.to_string(),
            Err(outcome) => return outcome,
        };
        let commit = ctx
            .job
            .source_revision
            .as_ref()
            .filter(|r| r.revision_type == "COMMIT_ID")
            .map(|r| r.revision_value.clone());
        let Some((artifact, out_dir)) = ctx.outputs.first() else {
            return failure(
                "ConfigurationError",
                "a source action needs one output artifact".into(),
            );
        };
        let zip = ctx.work_dir.join("source.zip");
        let request = crate::git_source::GitSourceRequest {
            repository: repository.clone(),
            branch,
            commit,
        };
        let variables = match crate::git_source::fetch_source(&request, &zip).await {
            Ok(v) => v,
            Err(e) => return failure("JobFailed", e.to_string()),
        };
        let (zip_path, dir) = (zip.clone(), out_dir.clone());
        let unpacked = tokio::task::spawn_blocking(move || {
            crate::archive::extract_zip(&zip_path, &dir, &crate::archive::ExtractLimits::default())
        })
        .await;
        match unpacked {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return failure("JobFailed", e.to_string()),
            Err(e) => return failure("JobFailed", e.to_string()),
        }
        let output_variables: BTreeMap<String, String> = variables
            .to_pairs()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let summary = variables
            .commit_message
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        let mut revisions = BTreeMap::new();
        revisions.insert(
            artifact.clone(),
            (variables.commit_id.clone(), Some(summary.clone())),
        );
        ProviderOutcome::Succeeded {
            output_variables,
            revisions,
            external: ExternalExecution {
                id: Some(variables.commit_id.clone()),
                summary: Some(summary),
                url: absolute_url(&repository),
            },
        }
    }
}

/// A link to the repository when it is a URL (local paths have none worth showing).
fn absolute_url(repository: &str) -> Option<String> {
    repository.contains("://").then(|| repository.to_string())
}

/// `Approval/AWS/Manual`: issues a fresh token; the attempt waits for `PutApprovalResult` (or
/// its deadline, which the sweeper enforces).
struct ManualApproval {
    ids: Arc<dyn IdGenerator>,
}

#[async_trait]
impl ActionProvider for ManualApproval {
    async fn run(&self, ctx: &JobContext) -> ProviderOutcome {
        let summary = ctx.job.configuration.get("CustomData").cloned();
        ProviderOutcome::Pending {
            external: ExternalExecution {
                id: None,
                summary,
                url: ctx.job.configuration.get("ExternalEntityLink").cloned(),
            },
            approval_token: Some(self.ids.uuid()),
        }
    }
}
