//! Commit statuses on GitHub for executions that build a GitHub commit: `pending` when the
//! commit is known (at start for a pinned commit, when the source action succeeds otherwise, and
//! again when a retry resumes the execution), then `success`, `failure` or `error` when the
//! execution ends, each with a link to the execution. One status context per pipeline
//! (`penstock/PIPELINE`), so pipelines of one repository do not overwrite each other.
//!
//! [`CommitStatuses`] decides which statuses a state change calls for and posts them; it is
//! shared by both runtimes. On the embedded default, [`CommitStatusReporter`] listens to the
//! runner's state changes on its own task and posts one status at a time (so a fast
//! execution's `success` never overtakes its `pending`). On AWS the advancer hands it the
//! state-change events EventBridge delivers (at least once, in any order), and checks each
//! status against the execution's current state before posting ([`is_current`]). A failed
//! post is logged and dropped: it never touches the execution.

use std::collections::BTreeSet;

use penstock_app::control::Control;
use penstock_core::engine::{EventKind, Execution, ExecutionStatus, event_state};
use penstock_core::triggers::{COMMIT_ID, github_sources};
use serde_json::Value;
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use crate::github_source::{CommitStatus, GitHubClient, RepositoryId};
use crate::runtime::ObservedChange;

/// The environment variable with the base of execution links (`http://127.0.0.1:7788`).
pub const PUBLIC_URL_ENV: &str = "PENSTOCK_PUBLIC_URL";

/// GitHub refuses status descriptions over 140 characters.
const MAX_DESCRIPTION: usize = 140;

/// GitHub's `pending` state; every other state is an end state.
const PENDING: &str = "pending";

/// One status to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusPost {
    pub repository: RepositoryId,
    pub sha: String,
    pub status: CommitStatus,
}

/// The GitHub state (and the verb of its description) a state change calls for, if any: the
/// state of the execution status the change announces.
pub fn github_state_for(kind: EventKind, detail: &Value) -> Option<(&'static str, &'static str)> {
    use ExecutionStatus as S;
    let state = detail.get("state").and_then(|s| s.as_str()).unwrap_or("");
    let is_source_action = detail.get("stage").and_then(|s| s.as_str()).is_some()
        && detail
            .get("type")
            .and_then(|t| t.get("category"))
            .and_then(|c| c.as_str())
            == Some("Source");
    let status = match (kind, state) {
        (EventKind::Pipeline, event_state::STARTED | event_state::RESUMED) => S::InProgress,
        (EventKind::Action, event_state::SUCCEEDED) if is_source_action => S::InProgress,
        (EventKind::Pipeline, event_state::SUCCEEDED) => S::Succeeded,
        (EventKind::Pipeline, event_state::FAILED) => S::Failed,
        (EventKind::Pipeline, event_state::STOPPED) => S::Stopped,
        (EventKind::Pipeline, event_state::SUPERSEDED) => S::Superseded,
        (EventKind::Pipeline, event_state::CANCELED) => S::Cancelled,
        _ => return None,
    };
    Some(github_state_of(status))
}

/// The GitHub state (and verb) an execution's status stands for.
fn github_state_of(status: ExecutionStatus) -> (&'static str, &'static str) {
    match status {
        ExecutionStatus::InProgress | ExecutionStatus::Stopping => (PENDING, "is running"),
        ExecutionStatus::Succeeded => ("success", "succeeded"),
        ExecutionStatus::Failed => ("failure", "failed"),
        ExecutionStatus::Stopped => ("error", "was stopped"),
        ExecutionStatus::Superseded => ("error", "was superseded by a newer execution"),
        ExecutionStatus::Cancelled => ("error", "was cancelled"),
    }
}

/// Whether a status still says what the execution is: events delivered late or twice (as
/// EventBridge may) must not turn an ended execution's status back to `pending`, nor report an
/// end the execution has left again (a retried stage resumes a failed execution).
pub fn is_current(post: &StatusPost, execution: &Execution) -> bool {
    post.status.state == github_state_of(execution.status).0
}

/// What [`CommitStatuses::report`] did with one state change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reported {
    /// Statuses GitHub accepted.
    pub posted: usize,
    /// Statuses GitHub refused or that could not be sent (logged).
    pub failed: usize,
    /// Statuses the execution had already left behind (a late or repeated event).
    pub outdated: usize,
}

/// Decides the statuses of state changes and posts them.
#[derive(Clone)]
pub struct CommitStatuses {
    client: GitHubClient,
    control: Control,
    /// Links read `{link_base}/pipelines/{pipeline}/executions/{id}`.
    link_base: Option<String>,
}

impl CommitStatuses {
    pub fn new(client: GitHubClient, control: Control, link_base: Option<String>) -> Self {
        Self {
            client,
            control,
            link_base: link_base
                .map(|b| b.trim().trim_end_matches('/').to_string())
                .filter(|b| !b.is_empty()),
        }
    }

    /// The statuses a state change of `execution_id` calls for, with the execution as it is
    /// now; `None` when the change calls for none or the execution builds no GitHub commit.
    pub async fn statuses_for(
        &self,
        pipeline: &str,
        execution_id: &str,
        kind: EventKind,
        detail: &Value,
    ) -> Option<(Execution, Vec<StatusPost>)> {
        let (github_state, verb) = github_state_for(kind, detail)?;
        let execution = self.execution(pipeline, execution_id).await?;
        // A source action's success names a commit only when the execution was not pinned to
        // one (the pinned ones were reported at the start).
        let only_fetched = kind == EventKind::Action;
        let posts = self
            .posts(&execution, github_state, verb, only_fetched)
            .await?;
        Some((execution, posts))
    }

    /// Report one state change delivered at least once and in any order (EventBridge): each
    /// status is posted only while it is the execution's current state, and a `pending` is
    /// checked again once posted, so an end that happened meanwhile (its own event may have
    /// been handled first) is posted after it. Failures are logged, never returned.
    pub async fn report(
        &self,
        pipeline: &str,
        execution_id: &str,
        kind: EventKind,
        detail: &Value,
    ) -> Reported {
        let mut reported = Reported::default();
        let Some((execution, posts)) = self
            .statuses_for(pipeline, execution_id, kind, detail)
            .await
        else {
            return reported;
        };
        let mut pending_posted = false;
        for post in posts {
            if !is_current(&post, &execution) {
                debug!(
                    pipeline,
                    execution_id,
                    state = %post.status.state,
                    status = ?execution.status,
                    "commit status outdated; not posted"
                );
                reported.outdated += 1;
                continue;
            }
            pending_posted |= post.status.state == PENDING;
            self.post_counted(&post, &mut reported).await;
        }
        if pending_posted
            && let Some(now) = self.execution(pipeline, execution_id).await
            && now.status.is_terminal()
        {
            let (state, verb) = github_state_of(now.status);
            for post in self
                .posts(&now, state, verb, false)
                .await
                .unwrap_or_default()
            {
                self.post_counted(&post, &mut reported).await;
            }
        }
        reported
    }

    async fn post_counted(&self, post: &StatusPost, reported: &mut Reported) {
        if self.post(post).await {
            reported.posted += 1;
        } else {
            reported.failed += 1;
        }
    }

    /// Post one status; a failure is logged (the client's errors never carry the token) and
    /// reported to the caller, which goes on regardless.
    pub async fn post(&self, post: &StatusPost) -> bool {
        match self
            .client
            .create_status(&post.repository, &post.sha, &post.status)
            .await
        {
            Ok(()) => {
                info!(
                    repository = %post.repository.full_name(),
                    sha = %post.sha,
                    state = %post.status.state,
                    "commit status posted"
                );
                true
            }
            Err(e) => {
                warn!(
                    repository = %post.repository.full_name(),
                    sha = %post.sha,
                    state = %post.status.state,
                    error = %e,
                    "commit status not posted"
                );
                false
            }
        }
    }

    async fn execution(&self, pipeline: &str, execution_id: &str) -> Option<Execution> {
        match self.control.get_execution(pipeline, execution_id).await {
            Ok(e) => Some(e),
            Err(e) => {
                debug!(pipeline, execution_id, error = %e, "no execution for a commit status");
                None
            }
        }
    }

    /// `state` for each GitHub commit the execution builds (only those its source actions
    /// fetched, without a pinned revision, when `only_fetched`); `None` when there are none.
    async fn posts(
        &self,
        execution: &Execution,
        state: &str,
        verb: &str,
        only_fetched: bool,
    ) -> Option<Vec<StatusPost>> {
        let commits: Vec<_> = self
            .commits(execution)
            .await?
            .into_iter()
            .filter(|(_, _, pinned)| !(only_fetched && *pinned))
            .map(|(repository, sha, _)| (repository, sha))
            .collect();
        if commits.is_empty() {
            return None;
        }
        let mut description = format!("Penstock: pipeline {} {verb}", execution.pipeline_name);
        truncate_at_char(&mut description, MAX_DESCRIPTION);
        let target_url = self.link_base.as_ref().map(|base| {
            format!(
                "{base}/pipelines/{}/executions/{}",
                execution.pipeline_name, execution.id
            )
        });
        Some(
            commits
                .into_iter()
                .map(|(repository, sha)| StatusPost {
                    repository,
                    sha,
                    status: CommitStatus {
                        state: state.to_string(),
                        target_url: target_url.clone(),
                        description: description.clone(),
                        context: format!("penstock/{}", execution.pipeline_name),
                    },
                })
                .collect(),
        )
    }

    /// The GitHub commits an execution builds: each GitHub source action's pinned commit, or
    /// the commit it fetched; with whether it was pinned.
    async fn commits(&self, execution: &Execution) -> Option<Vec<(RepositoryId, String, bool)>> {
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
        let commits: Vec<_> = github_sources(&declaration)
            .into_iter()
            .filter_map(|source| {
                let repository = RepositoryId::parse(&source.repository).ok()?;
                let pinned = execution
                    .source_revisions
                    .iter()
                    .find(|r| r.action_name == source.action.name && r.revision_type == COMMIT_ID)
                    .map(|r| r.revision_value.clone());
                match pinned {
                    Some(sha) => Some((repository, sha, true)),
                    None => Some((repository, fetched(&source.action.name)?, false)),
                }
            })
            .collect();
        (!commits.is_empty()).then_some(commits)
    }
}

/// Cut `text` to at most `max` bytes, on a character boundary (pipeline names may be UTF-8).
fn truncate_at_char(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// Posts commit statuses for the runner's executions as they start and end, in order.
pub struct CommitStatusReporter {
    statuses: CommitStatuses,
    /// Statuses already posted: (execution, repository, sha, state).
    posted: BTreeSet<(String, String, String, String)>,
}

impl CommitStatusReporter {
    pub fn new(client: GitHubClient, control: Control, link_base: Option<String>) -> Self {
        Self {
            statuses: CommitStatuses::new(client, control, link_base),
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
                            self.statuses.post(&post).await;
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

    /// The statuses a state change calls for, not yet posted.
    pub async fn statuses_for(&mut self, change: &ObservedChange) -> Vec<StatusPost> {
        let Some((execution, posts)) = self
            .statuses
            .statuses_for(
                &change.pipeline,
                &change.execution_id,
                change.change.kind,
                &change.change.detail,
            )
            .await
        else {
            return Vec::new();
        };
        let mut fresh = Vec::new();
        let mut terminal = false;
        for post in posts {
            terminal |= post.status.state != PENDING;
            let key = (
                execution.id.clone(),
                post.repository.full_name(),
                post.sha.clone(),
                post.status.state.clone(),
            );
            if self.posted.insert(key) {
                fresh.push(post);
            }
        }
        if terminal {
            // The execution is over: forget it, so the set stays as small as the live work.
            self.posted.retain(|(id, ..)| id != &execution.id);
        }
        fresh
    }
}
