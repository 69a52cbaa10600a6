//! Commit statuses on GitHub for executions that build a GitHub commit: `pending` when the
//! commit is known (at start for a pinned commit, when the source action succeeds otherwise),
//! then `success`, `failure` or `error` when the execution ends, each with a link to the
//! execution. One status context per pipeline (`penstock/PIPELINE`), so pipelines of one
//! repository do not overwrite each other.
//!
//! The reporter listens to the runner's state changes on its own task and posts one status at
//! a time (so a fast execution's `success` never overtakes its `pending`). A failed post is
//! logged and dropped: it never touches the execution.

use std::collections::BTreeSet;

use penstock_app::control::Control;
use penstock_core::engine::{EventKind, Execution, event_state};
use penstock_core::triggers::{COMMIT_ID, github_sources};
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use crate::github_source::{CommitStatus, GitHubClient, RepositoryId};
use crate::runtime::ObservedChange;

/// The environment variable with the base of execution links (`http://127.0.0.1:7788`).
pub const PUBLIC_URL_ENV: &str = "PENSTOCK_PUBLIC_URL";

/// GitHub refuses status descriptions over 140 characters.
const MAX_DESCRIPTION: usize = 140;

/// Posts commit statuses for executions as they start and end.
pub struct CommitStatusReporter {
    client: GitHubClient,
    control: Control,
    /// Links read `{link_base}/pipelines/{pipeline}/executions/{id}`.
    link_base: Option<String>,
    /// Statuses already posted: (execution, repository, sha, state).
    posted: BTreeSet<(String, String, String, String)>,
}

/// One status to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusPost {
    pub repository: RepositoryId,
    pub sha: String,
    pub status: CommitStatus,
}

impl CommitStatusReporter {
    pub fn new(client: GitHubClient, control: Control, link_base: Option<String>) -> Self {
        Self {
            client,
            control,
            link_base: link_base.map(|b| b.trim_end_matches('/').to_string()),
            posted: BTreeSet::new(),
        }
    }

    /// Report on every change `changes` carries, until the runner goes away.
    pub fn spawn(
        mut self,
        mut changes: broadcast::Receiver<ObservedChange>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(change) => {
                        for post in self.statuses_for(&change).await {
                            self.post(post).await;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        warn!(
                            missed,
                            "commit status reporter fell behind; some statuses were skipped"
                        );
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }

    async fn post(&mut self, post: StatusPost) {
        match self
            .client
            .create_status(&post.repository, &post.sha, &post.status)
            .await
        {
            Ok(()) => info!(
                repository = %post.repository.full_name(),
                sha = %post.sha,
                state = %post.status.state,
                "commit status posted"
            ),
            Err(e) => warn!(
                repository = %post.repository.full_name(),
                sha = %post.sha,
                state = %post.status.state,
                error = %e,
                "commit status not posted"
            ),
        }
    }

    /// The statuses a state change calls for, not yet posted.
    pub async fn statuses_for(&mut self, change: &ObservedChange) -> Vec<StatusPost> {
        let detail = &change.change.detail;
        let state = detail.get("state").and_then(|s| s.as_str()).unwrap_or("");
        let (github_state, verb) = match (change.change.kind, state) {
            (EventKind::Pipeline, event_state::STARTED) => ("pending", "is running"),
            (EventKind::Action, event_state::SUCCEEDED)
                if detail.get("stage").and_then(|s| s.as_str()).is_some()
                    && detail
                        .get("type")
                        .and_then(|t| t.get("category"))
                        .and_then(|c| c.as_str())
                        == Some("Source") =>
            {
                ("pending", "is running")
            }
            (EventKind::Pipeline, event_state::SUCCEEDED) => ("success", "succeeded"),
            (EventKind::Pipeline, event_state::FAILED) => ("failure", "failed"),
            (EventKind::Pipeline, event_state::STOPPED) => ("error", "was stopped"),
            (EventKind::Pipeline, event_state::SUPERSEDED) => {
                ("error", "was superseded by a newer execution")
            }
            (EventKind::Pipeline, event_state::CANCELED) => ("error", "was cancelled"),
            _ => return Vec::new(),
        };
        let execution = match self
            .control
            .get_execution(&change.pipeline, &change.execution_id)
            .await
        {
            Ok(e) => e,
            Err(e) => {
                debug!(pipeline = %change.pipeline, error = %e, "no execution for a commit status");
                return Vec::new();
            }
        };
        let commits = match self.commits(&execution).await {
            Some(c) => c,
            None => return Vec::new(),
        };
        let terminal = github_state != "pending";
        let mut posts = Vec::new();
        for (repository, sha) in commits {
            let key = (
                execution.id.clone(),
                repository.full_name(),
                sha.clone(),
                github_state.to_string(),
            );
            if !self.posted.insert(key) {
                continue;
            }
            let mut description = format!("Penstock: pipeline {} {verb}", execution.pipeline_name);
            description.truncate(MAX_DESCRIPTION);
            posts.push(StatusPost {
                repository,
                sha,
                status: CommitStatus {
                    state: github_state.to_string(),
                    target_url: self.link_base.as_ref().map(|base| {
                        format!(
                            "{base}/pipelines/{}/executions/{}",
                            execution.pipeline_name, execution.id
                        )
                    }),
                    description,
                    context: format!("penstock/{}", execution.pipeline_name),
                },
            });
        }
        if terminal {
            // The execution is over: forget it, so the set stays as small as the live work.
            self.posted.retain(|(id, ..)| id != &execution.id);
        }
        posts
    }

    /// The GitHub commits an execution builds: each GitHub source action's pinned commit, or
    /// the commit it fetched.
    async fn commits(&self, execution: &Execution) -> Option<Vec<(RepositoryId, String)>> {
        let (declaration, _) = self
            .control
            .get_pipeline(&execution.pipeline_name, Some(execution.pipeline_version))
            .await
            .ok()?;
        let fetched = |action: &str| {
            execution
                .stages
                .first()?
                .actions
                .iter()
                .find(|a| a.name == action)?
                .output_variables
                .get("CommitId")
                .cloned()
        };
        let commits = github_sources(&declaration)
            .into_iter()
            .filter_map(|source| {
                let repository = RepositoryId::parse(&source.repository).ok()?;
                let pinned = execution
                    .source_revisions
                    .iter()
                    .find(|r| r.action_name == source.action.name && r.revision_type == COMMIT_ID)
                    .map(|r| r.revision_value.clone());
                let sha = pinned.or_else(|| fetched(&source.action.name))?;
                Some((repository, sha))
            })
            .collect();
        Some(commits)
    }
}
