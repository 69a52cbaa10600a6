//! `Deploy/AWS/CodeDeploy`: a deployment of the action's input artifact (a zip revision in the
//! pipeline's artifact bucket) to `DeploymentGroupName` of `ApplicationName`, as CodePipeline
//! runs it.
//!
//! The attempt calls `CreateDeployment` with the artifact as an S3 revision (at the exact
//! object version the execution stored) and hands off as `Pending` with the deployment id; the
//! sweeper polls `GetDeployment` until the deployment is terminal, so no function waits on the
//! instances. With a `roleArn` both calls act with that role's credentials.
//!
//! CreateDeployment takes no idempotency token, so an attempt first looks for a deployment of
//! this very action (same description: pipeline, execution, action) that is still going in
//! the group, and adopts it: an attempt retried after its function died between
//! CreateDeployment and its report waits for that deployment instead of starting a second one
//! (which CodeDeploy would also refuse while the first runs).
//!
//! The pure parts (the request from a job, what a status means) are functions with unit tests;
//! only `start`/`check` talk to AWS.

// Providers return early with the outcome that reports a failure (`Err(ProviderOutcome)`):
// the port's own type, built once per attempt, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_codedeploy::error::ProvideErrorMetadata;
use aws_sdk_codedeploy::types::{
    BundleType, DeploymentInfo, DeploymentStatus, RevisionLocation, RevisionLocationType,
    S3Location,
};
use penstock_app::ports::{ActionProvider, JobContext, Polled, ProviderOutcome};
use penstock_core::engine::{ActionJob, ExternalExecution, Input};
use tracing::warn;

use crate::artifacts::S3Object;
use crate::providers::{ProviderDeps, failed_input, failure};
use crate::sdk_error::describe;

/// What one attempt asks CodeDeploy for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRequest {
    pub application: String,
    pub deployment_group: String,
    /// The input artifact: a zip object, at its stored version when the bucket is versioned.
    pub revision: S3Object,
    pub description: String,
}

impl DeploymentRequest {
    /// The request of a job, or the `ConfigurationError` message saying what is missing.
    pub fn from_job(job: &ActionJob) -> Result<Self, String> {
        let value = |key: &str| {
            job.configuration
                .get(key)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .ok_or_else(|| format!("the action's configuration has no {key}"))
        };
        let application = value("ApplicationName")?;
        let deployment_group = value("DeploymentGroupName")?;
        let artifact = match job.input_artifacts.as_slice() {
            [artifact] => artifact,
            other => {
                return Err(format!(
                    "a CodeDeploy action takes exactly one input artifact (the revision), got {}",
                    other.len()
                ));
            }
        };
        let revision = S3Object::parse(&artifact.location)
            .map_err(|e| format!("input artifact {}: {e}", artifact.name))?;
        Ok(Self {
            application,
            deployment_group,
            revision,
            description: format!(
                "Penstock pipeline {}, execution {}, action {}.{}",
                job.pipeline_name, job.execution_id, job.stage, job.action
            ),
        })
    }

    /// The revision as CodeDeploy takes it: an S3 zip bundle.
    pub fn revision_location(&self) -> RevisionLocation {
        RevisionLocation::builder()
            .revision_type(RevisionLocationType::S3)
            .s3_location(
                S3Location::builder()
                    .bucket(&self.revision.bucket)
                    .key(&self.revision.key)
                    .bundle_type(BundleType::Zip)
                    .set_version(self.revision.version_id.clone())
                    .build(),
            )
            .build()
    }
}

/// Where a deployment is, by its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentPhase {
    Running,
    Succeeded,
    Failed,
}

/// `Created`, `Queued`, `InProgress`, `Baking` (blue/green traffic shifted, waiting) and `Ready`
/// (waiting to reroute traffic) are still going; `Succeeded` is done; `Failed` and `Stopped` are
/// failures. A status this SDK does not know yet is taken as still going: the attempt's
/// deadline bounds the wait, where guessing an end could report a result nobody saw.
pub fn phase_of(status: Option<&DeploymentStatus>) -> DeploymentPhase {
    match status {
        Some(DeploymentStatus::Succeeded) => DeploymentPhase::Succeeded,
        Some(DeploymentStatus::Failed | DeploymentStatus::Stopped) => DeploymentPhase::Failed,
        _ => DeploymentPhase::Running,
    }
}

/// The failure message of a deployment that ended `Failed` or `Stopped`, with CodeDeploy's
/// `errorInformation` when it has one.
pub fn failure_message(deployment_id: &str, info: &DeploymentInfo) -> String {
    let status = info.status().map_or("Failed", |s| s.as_str());
    let error =
        info.error_information()
            .map(|e| match (e.code().map(|c| c.as_str()), e.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_string(),
                (None, Some(message)) => message.to_string(),
                (None, None) => String::new(),
            });
    match error.filter(|e| !e.is_empty()) {
        Some(error) => format!("deployment {deployment_id} {status}: {error}"),
        None => format!("deployment {deployment_id} {status}"),
    }
}

fn console_url(region: &str, deployment_id: &str) -> String {
    format!(
        "https://{region}.console.aws.amazon.com/codesuite/codedeploy/deployments/{deployment_id}"
    )
}

/// The attempt waits for `deployment_id`, which the sweep polls.
fn pending(
    clients: &crate::config::AwsClients,
    request: &DeploymentRequest,
    deployment_id: String,
) -> ProviderOutcome {
    let region = clients
        .sdk_config()
        .region()
        .map(|r| r.to_string())
        .unwrap_or_default();
    ProviderOutcome::Pending {
        external: ExternalExecution {
            url: Some(console_url(&region, &deployment_id)),
            summary: Some(format!(
                "Deployment of {} to {}",
                request.application, request.deployment_group
            )),
            id: Some(deployment_id),
        },
        approval_token: None,
    }
}

/// `Deploy/AWS/CodeDeploy`.
pub(crate) struct CodeDeploy {
    pub(crate) deps: Arc<ProviderDeps>,
}

impl CodeDeploy {
    /// The deployment of this action that an earlier attempt started and that is still going,
    /// if any. Not finding out (an error) is not fatal: the attempt creates one.
    async fn in_flight(
        &self,
        clients: &crate::config::AwsClients,
        request: &DeploymentRequest,
    ) -> Option<String> {
        let listed = clients
            .codedeploy
            .list_deployments()
            .application_name(&request.application)
            .deployment_group_name(&request.deployment_group)
            .set_include_only_statuses(Some(vec![
                DeploymentStatus::Created,
                DeploymentStatus::Queued,
                DeploymentStatus::InProgress,
                DeploymentStatus::Baking,
                DeploymentStatus::Ready,
            ]))
            .send()
            .await
            .map_err(|e| {
                warn!(
                    reason = describe(&e),
                    "listing deployments in flight failed"
                )
            })
            .ok()?;
        // BatchGetDeployments takes 25 ids; a group runs one deployment at a time.
        let ids: Vec<String> = listed.deployments().iter().take(25).cloned().collect();
        if ids.is_empty() {
            return None;
        }
        let found = clients
            .codedeploy
            .batch_get_deployments()
            .set_deployment_ids(Some(ids))
            .send()
            .await
            .map_err(|e| {
                warn!(
                    reason = describe(&e),
                    "reading deployments in flight failed"
                )
            })
            .ok()?;
        found
            .deployments_info()
            .iter()
            .find(|d| d.description() == Some(request.description.as_str()))
            .and_then(|d| d.deployment_id())
            .map(str::to_string)
    }

    async fn start(&self, ctx: &JobContext) -> Result<ProviderOutcome, ProviderOutcome> {
        let job = &ctx.job;
        let request =
            DeploymentRequest::from_job(job).map_err(|e| failure("ConfigurationError", e))?;
        let clients = self.deps.clients_for(job).await?;
        if let Some(deployment_id) = self.in_flight(&clients, &request).await {
            return Ok(pending(&clients, &request, deployment_id));
        }
        let output = clients
            .codedeploy
            .create_deployment()
            .application_name(&request.application)
            .deployment_group_name(&request.deployment_group)
            .revision(request.revision_location())
            .description(&request.description)
            .send()
            .await
            .map_err(|e| {
                let reason = match e.as_service_error() {
                    Some(service) if service.message().is_some() => format!(
                        "{}: {}",
                        service.code().unwrap_or("Error"),
                        service.message().unwrap_or_default()
                    ),
                    _ => describe(&e),
                };
                failure(
                    "JobFailed",
                    format!(
                        "creating a deployment of {} to {}: {reason}",
                        request.application, request.deployment_group
                    ),
                )
            })?;
        let deployment_id = output
            .deployment_id()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| failure("JobFailed", "CodeDeploy returned no deployment id".into()))?
            .to_string();
        Ok(pending(&clients, &request, deployment_id))
    }

    /// How the deployment is going; `Err` when CodeDeploy could not be asked (the next sweep
    /// asks again).
    async fn check(&self, job: &ActionJob, deployment_id: &str) -> Result<Polled, String> {
        let clients = match self.deps.clients_for(job).await {
            Ok(clients) => clients,
            Err(ProviderOutcome::Failed { message, .. }) => return Err(message),
            Err(_) => return Err("no clients".into()),
        };
        let region = clients
            .sdk_config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_default();
        let external = ExternalExecution {
            id: Some(deployment_id.to_string()),
            summary: None,
            url: Some(console_url(&region, deployment_id)),
        };
        let output = match clients
            .codedeploy
            .get_deployment()
            .deployment_id(deployment_id)
            .send()
            .await
        {
            Ok(output) => output,
            // A deployment that does not exist will not appear later: waiting for the
            // deadline (days for CodeDeploy) would only hide that.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_deployment_does_not_exist_exception()) =>
            {
                return Ok(Polled::Finished(failed_input(
                    job,
                    "JobFailed",
                    format!("deployment {deployment_id} no longer exists"),
                    external,
                )));
            }
            Err(e) => return Err(describe(&e)),
        };
        let Some(info) = output.deployment_info() else {
            return Err(format!(
                "GetDeployment of {deployment_id} answered without the deployment"
            ));
        };
        Ok(match phase_of(info.status()) {
            DeploymentPhase::Running => Polled::Running,
            DeploymentPhase::Succeeded => Polled::Finished(Input::ActionSucceeded {
                execution_id: job.execution_id.clone(),
                stage: job.stage.clone(),
                action: job.action.clone(),
                attempt: job.attempt,
                output_artifacts: Vec::new(),
                output_variables: BTreeMap::new(),
                external: ExternalExecution {
                    summary: Some(success_summary(deployment_id, info)),
                    ..external
                },
            }),
            DeploymentPhase::Failed => Polled::Finished(failed_input(
                job,
                "JobFailed",
                failure_message(deployment_id, info),
                external,
            )),
        })
    }
}

/// `Deployment d-123 succeeded (3 instances)`, with the count when CodeDeploy reports one.
fn success_summary(deployment_id: &str, info: &DeploymentInfo) -> String {
    match info.deployment_overview().map(|o| o.succeeded()) {
        Some(count) if count > 0 => {
            format!("Deployment {deployment_id} succeeded ({count} targets)")
        }
        _ => format!("Deployment {deployment_id} succeeded"),
    }
}

#[async_trait]
impl ActionProvider for CodeDeploy {
    async fn run(&self, ctx: &JobContext) -> ProviderOutcome {
        self.start(ctx).await.unwrap_or_else(|outcome| outcome)
    }

    async fn poll(&self, job: &ActionJob, external: &ExternalExecution) -> Option<Polled> {
        let deployment_id = external.id.as_deref()?;
        match self.check(job, deployment_id).await {
            Ok(polled) => Some(polled),
            Err(reason) => {
                // Unknown is not failed: the next sweep asks again, the deadline bounds it.
                warn!(
                    deployment_id,
                    reason, "polling a CodeDeploy deployment failed"
                );
                Some(Polled::Running)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_codedeploy::types::{ErrorCode, ErrorInformation};
    use serde_json::json;

    use super::*;

    fn job(configuration: serde_json::Value, inputs: serde_json::Value) -> ActionJob {
        serde_json::from_value(json!({
            "pipeline_name": "MyWebAppPipeline",
            "pipeline_version": 1,
            "execution_id": "e-1",
            "stage": "Deploy",
            "action": "DeployAction",
            "attempt": 1,
            "action_execution_id": "a-1",
            "action_type_id": { "category": "Deploy", "owner": "AWS", "provider": "CodeDeploy", "version": "1" },
            "configuration": configuration,
            "input_artifacts": inputs,
            "output_artifacts": [],
            "deadline": 0
        }))
        .expect("job")
    }

    fn input(location: &str) -> serde_json::Value {
        json!([{ "name": "BuildArtifact", "location": location }])
    }

    #[test]
    fn the_request_names_the_revision_at_its_version() {
        let request = DeploymentRequest::from_job(&job(
            json!({ "ApplicationName": "MyApp", "DeploymentGroupName": "Prod" }),
            input("s3://artifacts/pipe/e-1/a-0/BuildArtifact.zip#v42"),
        ))
        .expect("request");
        assert_eq!(request.application, "MyApp");
        assert_eq!(request.deployment_group, "Prod");
        assert!(
            request.description.contains("MyWebAppPipeline") && request.description.contains("e-1"),
            "{}",
            request.description
        );
        let location = request.revision_location();
        assert_eq!(location.revision_type(), Some(&RevisionLocationType::S3));
        let s3 = location.s3_location().expect("s3 location");
        assert_eq!(s3.bucket(), Some("artifacts"));
        assert_eq!(s3.key(), Some("pipe/e-1/a-0/BuildArtifact.zip"));
        assert_eq!(s3.bundle_type(), Some(&BundleType::Zip));
        assert_eq!(s3.version(), Some("v42"));

        let unversioned = DeploymentRequest::from_job(&job(
            json!({ "ApplicationName": "MyApp", "DeploymentGroupName": "Prod" }),
            input("s3://artifacts/key.zip"),
        ))
        .expect("request");
        assert_eq!(
            unversioned
                .revision_location()
                .s3_location()
                .and_then(|s| s.version()),
            None
        );
    }

    #[test]
    fn missing_configuration_and_artifacts_are_named() {
        let missing = |configuration: serde_json::Value, inputs: serde_json::Value| {
            DeploymentRequest::from_job(&job(configuration, inputs)).expect_err("refused")
        };
        assert_eq!(
            missing(
                json!({ "DeploymentGroupName": "Prod" }),
                input("s3://b/k.zip")
            ),
            "the action's configuration has no ApplicationName"
        );
        assert_eq!(
            missing(
                json!({ "ApplicationName": " ", "DeploymentGroupName": "Prod" }),
                input("s3://b/k.zip")
            ),
            "the action's configuration has no ApplicationName"
        );
        assert_eq!(
            missing(json!({ "ApplicationName": "MyApp" }), input("s3://b/k.zip")),
            "the action's configuration has no DeploymentGroupName"
        );
        let configuration = json!({ "ApplicationName": "MyApp", "DeploymentGroupName": "Prod" });
        assert!(missing(configuration.clone(), json!([])).contains("exactly one input artifact"));
        assert!(missing(configuration, input("file:///tmp/a.zip")).contains("BuildArtifact"));
    }

    #[test]
    fn statuses_map_to_phases() {
        use DeploymentPhase::*;
        for (status, phase) in [
            ("Created", Running),
            ("Queued", Running),
            ("InProgress", Running),
            ("Baking", Running),
            ("Ready", Running),
            ("Succeeded", Succeeded),
            ("Failed", Failed),
            ("Stopped", Failed),
            ("SomethingNew", Running),
        ] {
            assert_eq!(
                phase_of(Some(&DeploymentStatus::from(status))),
                phase,
                "{status}"
            );
        }
        assert_eq!(phase_of(None), Running);
    }

    #[test]
    fn a_failure_carries_codedeploys_error_information() {
        let info = DeploymentInfo::builder()
            .status(DeploymentStatus::Failed)
            .error_information(
                ErrorInformation::builder()
                    .code(ErrorCode::HealthConstraints)
                    .message("The overall deployment failed because too many individual instances failed deployment")
                    .build(),
            )
            .build();
        assert_eq!(
            failure_message("d-1", &info),
            "deployment d-1 Failed: HEALTH_CONSTRAINTS: The overall deployment failed because too many individual instances failed deployment"
        );
        let stopped = DeploymentInfo::builder()
            .status(DeploymentStatus::Stopped)
            .build();
        assert_eq!(failure_message("d-2", &stopped), "deployment d-2 Stopped");
    }
}
