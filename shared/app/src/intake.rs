//! Trigger intake: turns a verified event (a GitHub push or pull request, an EventBridge
//! scheduled event, an S3 object created, an ECR image pushed) into pipeline executions.
//!
//! Nothing here checks signatures: callers hand in events they have verified. What intake
//! guarantees:
//! - A delivery (GitHub's `X-GitHub-Delivery`, an EventBridge event id) is remembered for
//!   [`DELIVERY_TTL_SECONDS`]; the same delivery again starts nothing.
//! - Each start carries a `clientRequestToken` derived from the pipeline, the source action and
//!   the event's identity (not the delivery's), so two deliveries of the same push racing each
//!   other (a redelivery, a repository and an organization webhook) start exactly one
//!   execution per matching pipeline.
//! - The triggering source action is pinned to the event's revision (the pushed commit, the S3
//!   object version, the image digest).
//!
//! A delivery is remembered once its executions have started: if starting fails (the store is
//! down), GitHub is answered with an error and a redelivery of the same id is processed again
//! (the event-derived start tokens keep that from starting anything twice).
//!
//! Pipelines are found by listing them all and reading their declarations: fine for the
//! hundreds of pipelines a team has; a trigger index by repository can replace the scan later
//! without changing this interface.

use std::sync::Arc;

use async_trait::async_trait;
use penstock_core::engine::{SourceRevision, Timestamp, Trigger, TriggerType};
use penstock_core::triggers::{
    self, GitEvent, IMAGE_DIGEST, S3_OBJECT_VERSION_ID, match_git_event, start_token,
};
use serde::Serialize;
use serde_json::json;
use tracing::{info, warn};

use crate::control::{Control, StartOptions};
use crate::error::AppError;
use crate::repo::PipelineRecord;

/// How long a delivery id is remembered: GitHub lets a delivery be redelivered for three days;
/// a week leaves room.
pub const DELIVERY_TTL_SECONDS: i64 = 7 * 24 * 3600;

/// Idempotency scope of GitHub deliveries.
const GITHUB_DELIVERY_SCOPE: &str = "delivery#github";
/// Idempotency scope of EventBridge events (schedules, S3, ECR).
const EVENT_SCOPE: &str = "delivery#eventbridge";

/// How many pipelines one listing page reads.
const LIST_PAGE: usize = 100;

/// The files a pull request changes; GitHub's webhook payload does not carry them.
#[async_trait]
pub trait PullRequestFiles: Send + Sync {
    async fn changed_files(&self, repository: &str, number: u64) -> Result<Vec<String>, String>;
}

/// An execution an event started (or, for a repeated event, had started).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StartedExecution {
    pub pipeline: String,
    pub pipeline_execution_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_action: Option<String>,
    /// Which rule started it (`triggers[0].push[0]`, `pushes to branch main`...).
    pub rule: String,
}

/// What intake did with one event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IntakeReport {
    /// The delivery was seen before: nothing was started.
    pub duplicate: bool,
    pub started: Vec<StartedExecution>,
    /// Pipelines that matched but could not start, and filters that could not be evaluated.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl IntakeReport {
    fn duplicate() -> Self {
        Self {
            duplicate: true,
            ..Default::default()
        }
    }
}

/// An S3 object that was created (or overwritten).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3ObjectCreated {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
    pub etag: Option<String>,
    /// S3's ordering token for events about one key; tells two writes of one key apart when
    /// the bucket is not versioned.
    pub sequencer: Option<String>,
}

/// An image pushed to an ECR repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrImagePushed {
    pub repository: String,
    pub tag: String,
    pub digest: String,
}

/// The intake use case.
#[derive(Clone)]
pub struct Intake {
    control: Control,
    pull_request_files: Option<Arc<dyn PullRequestFiles>>,
}

impl Intake {
    pub fn new(control: Control) -> Self {
        Self {
            control,
            pull_request_files: None,
        }
    }

    /// Look up a pull request's changed files when a `filePaths` filter needs them.
    pub fn with_pull_request_files(mut self, files: Arc<dyn PullRequestFiles>) -> Self {
        self.pull_request_files = Some(files);
        self
    }

    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Whether the delivery `id` (when there is one) was handled before in `scope`.
    async fn seen_before(&self, scope: &str, id: Option<&str>) -> Result<bool, AppError> {
        let Some(id) = id else {
            return Ok(false);
        };
        Ok(self.control.engine.repo.recall(scope, id).await?.is_some())
    }

    /// Remember the delivery `id` (when there is one) as handled, once its starts succeeded.
    async fn handled(&self, scope: &str, id: Option<&str>) -> Result<bool, AppError> {
        let Some(id) = id else {
            return Ok(false);
        };
        let engine = &self.control.engine;
        let now = engine.clock.now();
        let expires = now.0 / 1000 + DELIVERY_TTL_SECONDS;
        let earlier = engine
            .repo
            .remember(scope, id, &json!({ "receivedAt": now.0 }), expires)
            .await?;
        Ok(earlier.is_some())
    }

    async fn pipelines(&self) -> Result<Vec<PipelineRecord>, AppError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = self
                .control
                .engine
                .repo
                .list_pipelines(after, LIST_PAGE)
                .await?;
            all.extend(page);
            match next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// A GitHub push or pull request (verified by the caller). `delivery` is
    /// `X-GitHub-Delivery`, when the event came with one.
    pub async fn git_event(
        &self,
        delivery: Option<&str>,
        mut event: GitEvent,
    ) -> Result<IntakeReport, AppError> {
        if self.seen_before(GITHUB_DELIVERY_SCOPE, delivery).await? {
            info!(delivery, "GitHub delivery seen before; nothing started");
            return Ok(IntakeReport::duplicate());
        }
        let pipelines = self.pipelines().await?;
        let mut report = IntakeReport::default();
        self.fill_pull_request_files(&mut event, &pipelines, &mut report)
            .await;
        let identity = event.identity();
        for record in &pipelines {
            let declaration = &record.declaration;
            let outcome = match_git_event(declaration, &event);
            report.problems.extend(
                outcome
                    .problems
                    .into_iter()
                    .map(|p| format!("pipeline {}: {p}", declaration.name)),
            );
            for matched in outcome.matches {
                let token = start_token(&declaration.name, &matched.source_action, &identity);
                self.start(
                    &mut report,
                    &declaration.name,
                    Some(matched.source_action),
                    matched.rule,
                    StartOptions {
                        source_revisions: vec![matched.revision],
                        client_request_token: Some(token),
                        trigger: Some(matched.trigger),
                        ..Default::default()
                    },
                )
                .await?;
            }
        }
        info!(
            delivery = delivery.unwrap_or("-"),
            event = %event.describe(),
            repository = event.repository(),
            started = report.started.len(),
            "git event taken in"
        );
        self.handled(GITHUB_DELIVERY_SCOPE, delivery).await?;
        Ok(report)
    }

    /// Pull requests come without their changed files: ask for them, once, when some pipeline
    /// of the repository filters pull requests on file paths.
    async fn fill_pull_request_files(
        &self,
        event: &mut GitEvent,
        pipelines: &[PipelineRecord],
        report: &mut IntakeReport,
    ) {
        let GitEvent::PullRequest(pr) = event else {
            return;
        };
        let wanted = pipelines
            .iter()
            .any(|p| triggers::needs_pull_request_files(&p.declaration, &pr.repository));
        if !wanted {
            return;
        }
        match &self.pull_request_files {
            Some(files) => match files.changed_files(&pr.repository, pr.number).await {
                Ok(changed) => pr.changed_files = Some(changed),
                Err(e) => {
                    warn!(repository = %pr.repository, number = pr.number, error = %e, "pull request files unavailable; filePaths filters do not match");
                    report.problems.push(format!(
                        "the files of pull request #{} could not be listed ({e}); filePaths filters did not match",
                        pr.number
                    ));
                }
            },
            None => report.problems.push(format!(
                "the files of pull request #{} are unknown (no GitHub API access configured); filePaths filters did not match",
                pr.number
            )),
        }
    }

    /// An EventBridge scheduled event of `rule` (name or ARN): starts every pipeline the rule
    /// names (see [`triggers::schedule_rule_starts`]).
    pub async fn schedule_fired(
        &self,
        event_id: Option<&str>,
        rule: &str,
        fired_at: Timestamp,
    ) -> Result<IntakeReport, AppError> {
        if self.seen_before(EVENT_SCOPE, event_id).await? {
            return Ok(IntakeReport::duplicate());
        }
        let mut report = IntakeReport::default();
        for record in self.pipelines().await? {
            let name = &record.declaration.name;
            if triggers::schedule_rule_starts(rule, name, &record.tags) {
                self.start_scheduled_into(&mut report, name, rule, fired_at)
                    .await?;
            }
        }
        if report.started.is_empty() && report.problems.is_empty() {
            report
                .problems
                .push(format!("no pipeline is scheduled by rule {rule}"));
        }
        self.handled(EVENT_SCOPE, event_id).await?;
        Ok(report)
    }

    /// Start `pipeline` for one firing of `schedule` (a rule ARN, or the expression of a local
    /// schedule) at `fired_at`. The same firing twice starts one execution.
    pub async fn start_scheduled(
        &self,
        pipeline: &str,
        schedule: &str,
        fired_at: Timestamp,
    ) -> Result<IntakeReport, AppError> {
        let mut report = IntakeReport::default();
        self.start_scheduled_into(&mut report, pipeline, schedule, fired_at)
            .await?;
        Ok(report)
    }

    async fn start_scheduled_into(
        &self,
        report: &mut IntakeReport,
        pipeline: &str,
        schedule: &str,
        fired_at: Timestamp,
    ) -> Result<(), AppError> {
        let identity = vec![
            "schedule".to_string(),
            schedule.to_string(),
            fired_at.0.to_string(),
        ];
        self.start(
            report,
            pipeline,
            None,
            format!("schedule {schedule}"),
            StartOptions {
                client_request_token: Some(start_token(pipeline, "", &identity)),
                trigger: Some(Trigger {
                    trigger_type: TriggerType::CloudWatchEvent,
                    trigger_detail: schedule.to_string(),
                }),
                ..Default::default()
            },
        )
        .await
    }

    /// An S3 object was created: starts pipelines whose S3 source watches that bucket and key,
    /// pinned to the object version when the bucket is versioned.
    pub async fn s3_object_created(
        &self,
        event_id: Option<&str>,
        object: &S3ObjectCreated,
    ) -> Result<IntakeReport, AppError> {
        if self.seen_before(EVENT_SCOPE, event_id).await? {
            return Ok(IntakeReport::duplicate());
        }
        let identity = vec![
            "s3".to_string(),
            object.bucket.clone(),
            object.key.clone(),
            object.version_id.clone().unwrap_or_default(),
            object.etag.clone().unwrap_or_default(),
            object.sequencer.clone().unwrap_or_default(),
        ];
        let mut report = IntakeReport::default();
        for record in self.pipelines().await? {
            let declaration = &record.declaration;
            for action in triggers::s3_sources_watching(declaration, &object.bucket, &object.key) {
                let revisions = object
                    .version_id
                    .iter()
                    .filter(|v| !v.is_empty() && v.as_str() != "null")
                    .map(|version| SourceRevision {
                        action_name: action.name.clone(),
                        revision_type: S3_OBJECT_VERSION_ID.into(),
                        revision_value: version.clone(),
                    })
                    .collect();
                self.start(
                    &mut report,
                    &declaration.name,
                    Some(action.name.clone()),
                    format!("s3://{}/{}", object.bucket, object.key),
                    StartOptions {
                        source_revisions: revisions,
                        client_request_token: Some(start_token(
                            &declaration.name,
                            &action.name,
                            &identity,
                        )),
                        trigger: Some(Trigger {
                            trigger_type: TriggerType::CloudWatchEvent,
                            trigger_detail: format!("s3://{}/{}", object.bucket, object.key),
                        }),
                        ..Default::default()
                    },
                )
                .await?;
            }
        }
        self.handled(EVENT_SCOPE, event_id).await?;
        Ok(report)
    }

    /// An image was pushed to ECR: starts pipelines whose ECR source watches that repository and
    /// tag, pinned to the pushed digest.
    pub async fn ecr_image_pushed(
        &self,
        event_id: Option<&str>,
        image: &EcrImagePushed,
    ) -> Result<IntakeReport, AppError> {
        if self.seen_before(EVENT_SCOPE, event_id).await? {
            return Ok(IntakeReport::duplicate());
        }
        let identity = vec![
            "ecr".to_string(),
            image.repository.clone(),
            image.tag.clone(),
            image.digest.clone(),
        ];
        let mut report = IntakeReport::default();
        for record in self.pipelines().await? {
            let declaration = &record.declaration;
            for action in triggers::ecr_sources_watching(declaration, &image.repository, &image.tag)
            {
                self.start(
                    &mut report,
                    &declaration.name,
                    Some(action.name.clone()),
                    format!("ecr {}:{}", image.repository, image.tag),
                    StartOptions {
                        source_revisions: vec![SourceRevision {
                            action_name: action.name.clone(),
                            revision_type: IMAGE_DIGEST.into(),
                            revision_value: image.digest.clone(),
                        }],
                        client_request_token: Some(start_token(
                            &declaration.name,
                            &action.name,
                            &identity,
                        )),
                        trigger: Some(Trigger {
                            trigger_type: TriggerType::CloudWatchEvent,
                            trigger_detail: format!(
                                "ecr {}:{} {}",
                                image.repository, image.tag, image.digest
                            ),
                        }),
                        ..Default::default()
                    },
                )
                .await?;
            }
        }
        self.handled(EVENT_SCOPE, event_id).await?;
        Ok(report)
    }

    /// Start one execution and record it. Refusals that concern only this pipeline (it was
    /// deleted meanwhile, the engine refused) become problems; store and bus failures end the
    /// intake with an error, so the caller answers with one.
    async fn start(
        &self,
        report: &mut IntakeReport,
        pipeline: &str,
        source_action: Option<String>,
        rule: String,
        options: StartOptions,
    ) -> Result<(), AppError> {
        match self.control.start_execution(pipeline, options).await {
            Ok(execution_id) => {
                info!(pipeline, execution_id = %execution_id, rule = %rule, "execution started by a trigger");
                report.started.push(StartedExecution {
                    pipeline: pipeline.to_string(),
                    pipeline_execution_id: execution_id,
                    source_action,
                    rule,
                });
                Ok(())
            }
            Err(
                e @ (AppError::PipelineNotFound(_)
                | AppError::Engine(_)
                | AppError::Validation(_)
                | AppError::InvalidStructure(_)),
            ) => {
                warn!(pipeline, error = %e, "a matching pipeline did not start");
                report.problems.push(format!(
                    "pipeline {pipeline} did not start: {}: {e}",
                    e.exception_name()
                ));
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
