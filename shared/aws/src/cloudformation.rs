//! `Deploy/AWS/CloudFormation`: stacks and change sets, configured as in CodePipeline
//! (`ActionMode`, `StackName`, `ChangeSetName`, `TemplatePath`, `TemplateConfiguration`,
//! `ParameterOverrides`, `Capabilities`, `RoleArn`, `OutputFileName`).
//!
//! The provider starts the stack operation and hands the attempt off; the sweeper polls the
//! stack or change set until it is terminal, so no function waits on CloudFormation. Every call,
//! reading the input artifacts included, acts with the action's `roleArn` credentials: the
//! cross-account pattern where a role in the target account reads the pipeline account's
//! KMS-encrypted artifacts and deploys there.
//!
//! Polling is stateless: each poll reads the stack (by name) or the change set (by id) and
//! decides from its status and the action mode alone, so a lost or repeated poll is harmless.

// Providers return early with the outcome that reports a failure (`Err(ProviderOutcome)`):
// the port's own type, built once per attempt, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_cloudformation::error::ProvideErrorMetadata;
use aws_sdk_cloudformation::types::{
    Capability, ChangeSetStatus, ChangeSetType, Parameter, Stack, StackStatus, Tag,
};
use aws_smithy_runtime_api::client::result::SdkError;
use penstock_app::dispatch::artifact_key;
use penstock_app::ports::{ActionProvider, ArtifactStore, JobContext, Polled, ProviderOutcome};
use penstock_core::engine::{ActionJob, ArtifactRef, ExternalExecution, Input};
use serde_json::Value;
use tracing::warn;

use crate::artifacts::{S3Object, download_file};
use crate::config::AwsClients;
use crate::providers::{ProviderDeps, failed_input, failure, pack, unpack};
use crate::sdk_error::describe;

/// CloudFormation's limit on an inline `TemplateBody`.
pub const MAX_TEMPLATE_BODY: usize = 51_200;

/// The five CodePipeline action modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionMode {
    CreateUpdate,
    ReplaceOnFailure,
    DeleteOnly,
    ChangeSetReplace,
    ChangeSetExecute,
}

impl ActionMode {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "CREATE_UPDATE" => Self::CreateUpdate,
            "REPLACE_ON_FAILURE" => Self::ReplaceOnFailure,
            "DELETE_ONLY" => Self::DeleteOnly,
            "CHANGE_SET_REPLACE" => Self::ChangeSetReplace,
            "CHANGE_SET_EXECUTE" => Self::ChangeSetExecute,
            other => {
                return Err(format!(
                    "ActionMode {other:?} is not one of CREATE_UPDATE, REPLACE_ON_FAILURE, \
                     DELETE_ONLY, CHANGE_SET_REPLACE, CHANGE_SET_EXECUTE"
                ));
            }
        })
    }

    /// Modes that need a template.
    fn needs_template(self) -> bool {
        matches!(
            self,
            Self::CreateUpdate | Self::ReplaceOnFailure | Self::ChangeSetReplace
        )
    }
}

/// A file inside an input artifact: `ArtifactName::path/in/zip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactPath {
    pub artifact: String,
    pub path: String,
}

impl ArtifactPath {
    fn parse(key: &str, text: &str) -> Result<Self, String> {
        match text.split_once("::") {
            Some((artifact, path)) if !artifact.is_empty() && !path.is_empty() => Ok(Self {
                artifact: artifact.to_string(),
                path: path.to_string(),
            }),
            _ => Err(format!(
                "{key} must read ArtifactName::path/in/artifact, not {text:?}"
            )),
        }
    }
}

/// The action's configuration, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub mode: ActionMode,
    pub stack_name: String,
    pub change_set_name: Option<String>,
    pub template_path: Option<ArtifactPath>,
    pub template_configuration: Option<ArtifactPath>,
    pub parameter_overrides: Option<String>,
    pub capabilities: Vec<Capability>,
    /// The service role CloudFormation acts with (not the action's own `roleArn`).
    pub role_arn: Option<String>,
    pub output_file: Option<String>,
}

impl Settings {
    pub fn from_configuration(configuration: &BTreeMap<String, String>) -> Result<Self, String> {
        let get = |key: &str| {
            configuration
                .get(key)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mode = ActionMode::parse(
            &get("ActionMode").ok_or("the action's configuration has no ActionMode")?,
        )?;
        let stack_name = get("StackName").ok_or("the action's configuration has no StackName")?;
        let change_set_name = get("ChangeSetName");
        if matches!(
            mode,
            ActionMode::ChangeSetReplace | ActionMode::ChangeSetExecute
        ) && change_set_name.is_none()
        {
            return Err("ChangeSetName is required with the CHANGE_SET_* action modes".into());
        }
        let template_path = get("TemplatePath")
            .map(|t| ArtifactPath::parse("TemplatePath", &t))
            .transpose()?;
        if mode.needs_template() && template_path.is_none() {
            return Err("TemplatePath is required with this ActionMode".into());
        }
        let template_configuration = get("TemplateConfiguration")
            .map(|t| ArtifactPath::parse("TemplateConfiguration", &t))
            .transpose()?;
        let capabilities = match get("Capabilities") {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(|c| {
                    if Capability::values().contains(&c) {
                        Ok(Capability::from(c))
                    } else {
                        Err(format!(
                            "Capabilities: {c:?} is not one of {}",
                            Capability::values().join(", ")
                        ))
                    }
                })
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        Ok(Self {
            mode,
            stack_name,
            change_set_name,
            template_path,
            template_configuration,
            parameter_overrides: get("ParameterOverrides"),
            capabilities,
            role_arn: get("RoleArn"),
            output_file: get("OutputFileName"),
        })
    }
}

/// A `path` inside `dir`, refusing absolute paths and `..` (a configuration must not read
/// outside its artifact).
fn inside(dir: &Path, path: &str) -> Result<PathBuf, String> {
    let relative = Path::new(path);
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "{path:?} must be a relative path inside its artifact"
        ));
    }
    Ok(dir.join(relative))
}

/// The input artifacts of an attempt, unpacked: what templates and parameters are read from.
pub struct InputFiles {
    artifacts: BTreeMap<String, (ArtifactRef, PathBuf)>,
}

impl InputFiles {
    pub fn new(inputs: impl IntoIterator<Item = (ArtifactRef, PathBuf)>) -> Self {
        Self {
            artifacts: inputs
                .into_iter()
                .map(|(artifact, dir)| (artifact.name.clone(), (artifact, dir)))
                .collect(),
        }
    }

    fn artifact(&self, name: &str) -> Result<&(ArtifactRef, PathBuf), String> {
        self.artifacts
            .get(name)
            .ok_or_else(|| format!("{name} is not an input artifact of this action"))
    }

    /// The text of `path` in artifact `name`.
    pub fn read(&self, name: &str, path: &str) -> Result<String, String> {
        let (_, dir) = self.artifact(name)?;
        let file = inside(dir, path)?;
        std::fs::read_to_string(&file).map_err(|e| format!("reading {name}::{path}: {e}"))
    }

    /// `Fn::GetArtifactAtt`: `BucketName`, `ObjectKey` or `URL` of an input artifact.
    pub fn attribute(&self, name: &str, attribute: &str) -> Result<String, String> {
        let (artifact, _) = self.artifact(name)?;
        let object = S3Object::parse(&artifact.location).map_err(|e| e.to_string())?;
        match attribute {
            "BucketName" => Ok(object.bucket),
            "ObjectKey" => Ok(object.key),
            "URL" => Ok(format!(
                "https://{}.s3.amazonaws.com/{}",
                object.bucket, object.key
            )),
            other => Err(format!(
                "Fn::GetArtifactAtt: {other:?} is not BucketName, ObjectKey or URL"
            )),
        }
    }
}

/// What a stack is created or updated with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackInput {
    pub template_body: String,
    pub parameters: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    pub stack_policy: Option<String>,
}

/// A parameter value that may be a string (or number, or boolean) or one of CodePipeline's
/// functions over the input artifacts.
fn parameter_value(key: &str, value: &Value, files: &InputFiles) -> Result<String, String> {
    let args = |function: &str, value: &Value, count: usize| -> Result<Vec<String>, String> {
        let list = value
            .as_array()
            .filter(|list| list.len() == count)
            .and_then(|list| {
                list.iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
            });
        list.ok_or_else(|| format!("parameter {key}: {function} takes a list of {count} strings"))
    };
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Object(map) if map.len() == 1 => {
            if let Some(args_value) = map.get("Fn::GetParam") {
                let a = args("Fn::GetParam", args_value, 3)?;
                let text = files.read(&a[0], &a[1])?;
                let json: Value = serde_json::from_str(&text)
                    .map_err(|e| format!("parameter {key}: {}::{} is not JSON: {e}", a[0], a[1]))?;
                match json.get(&a[2]) {
                    Some(Value::String(s)) => Ok(s.clone()),
                    Some(Value::Number(n)) => Ok(n.to_string()),
                    Some(Value::Bool(b)) => Ok(b.to_string()),
                    Some(_) => Err(format!(
                        "parameter {key}: {} in {}::{} is not a string",
                        a[2], a[0], a[1]
                    )),
                    None => Err(format!(
                        "parameter {key}: {}::{} has no key {}",
                        a[0], a[1], a[2]
                    )),
                }
            } else if let Some(args_value) = map.get("Fn::GetArtifactAtt") {
                let a = args("Fn::GetArtifactAtt", args_value, 2)?;
                files.attribute(&a[0], &a[1])
            } else {
                Err(format!(
                    "parameter {key}: only Fn::GetParam and Fn::GetArtifactAtt are supported"
                ))
            }
        }
        _ => Err(format!(
            "parameter {key}: expected a string, Fn::GetParam or Fn::GetArtifactAtt"
        )),
    }
}

/// A JSON object of string values (tags), or the error naming `what`.
fn string_map(what: &str, value: &Value) -> Result<BTreeMap<String, String>, String> {
    let object = value
        .as_object()
        .ok_or_else(|| format!("{what} must be a JSON object"))?;
    object
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            Value::Number(_) | Value::Bool(_) => Ok((k.clone(), v.to_string())),
            _ => Err(format!("{what}: {k} must be a string")),
        })
        .collect()
}

/// The template, the template configuration's parameters, tags and stack policy, and the
/// parameter overrides on top (they win over the template configuration, as in CodePipeline).
pub fn stack_input(settings: &Settings, files: &InputFiles) -> Result<StackInput, String> {
    let mut input = StackInput::default();
    if let Some(template) = &settings.template_path {
        input.template_body = files.read(&template.artifact, &template.path)?;
        if input.template_body.len() > MAX_TEMPLATE_BODY {
            return Err(format!(
                "template {}::{} is {} bytes; templates over {MAX_TEMPLATE_BODY} bytes are not \
                 supported (CloudFormation would need them in S3)",
                template.artifact,
                template.path,
                input.template_body.len()
            ));
        }
    }
    if let Some(location) = &settings.template_configuration {
        let what = format!("{}::{}", location.artifact, location.path);
        let text = files.read(&location.artifact, &location.path)?;
        let configuration: Value = serde_json::from_str(&text)
            .map_err(|e| format!("template configuration {what} is not JSON: {e}"))?;
        if let Some(parameters) = configuration.get("Parameters") {
            let object = parameters
                .as_object()
                .ok_or_else(|| format!("{what}: Parameters must be a JSON object"))?;
            for (key, value) in object {
                input
                    .parameters
                    .insert(key.clone(), parameter_value(key, value, files)?);
            }
        }
        if let Some(tags) = configuration.get("Tags") {
            input.tags = string_map(&format!("{what}: Tags"), tags)?;
        }
        if let Some(policy) = configuration.get("StackPolicy") {
            input.stack_policy = Some(match policy {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            });
        }
    }
    if let Some(text) = &settings.parameter_overrides {
        let overrides: Value = serde_json::from_str(text)
            .map_err(|e| format!("ParameterOverrides is not JSON: {e}"))?;
        let object = overrides
            .as_object()
            .ok_or("ParameterOverrides must be a JSON object")?;
        for (key, value) in object {
            input
                .parameters
                .insert(key.clone(), parameter_value(key, value, files)?);
        }
    }
    Ok(input)
}

/// What a stack status means to the action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackPhase {
    /// An operation is under way.
    InProgress,
    /// Created, updated or imported: the last operation succeeded.
    Stable,
    /// Rolled back after a failed update: the stack works and can be updated again, but the
    /// last operation failed.
    UpdateRolledBack,
    /// Created by a change set that was not executed yet.
    Review,
    /// Failed and needing a delete (or a continued rollback) before it can be used again.
    Failed,
    Deleted,
}

pub fn phase_of(status: &StackStatus) -> StackPhase {
    let text = status.as_str();
    match text {
        "CREATE_COMPLETE" | "UPDATE_COMPLETE" | "IMPORT_COMPLETE" => StackPhase::Stable,
        "UPDATE_ROLLBACK_COMPLETE" | "IMPORT_ROLLBACK_COMPLETE" => StackPhase::UpdateRolledBack,
        "REVIEW_IN_PROGRESS" => StackPhase::Review,
        "DELETE_COMPLETE" => StackPhase::Deleted,
        _ if text.ends_with("_IN_PROGRESS") => StackPhase::InProgress,
        _ => StackPhase::Failed,
    }
}

/// One stack event, as far as failure reports need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventView {
    pub logical_id: String,
    pub resource_type: String,
    pub status: String,
    pub reason: String,
    /// Whether this is the stack's own event (the stack's logical id is its name).
    pub is_stack: bool,
}

/// The first resource that failed in the stack's latest operation, as "Logical (Type):
/// reason". `events` come newest first, as `DescribeStackEvents` returns them; the latest
/// operation starts at the newest stack-level `*_IN_PROGRESS` event. Cancellations caused by
/// another failure are skipped: they name a victim, not the cause.
pub fn first_failure(events: &[EventView]) -> Option<String> {
    let start = events
        .iter()
        .position(|e| {
            e.is_stack
                && e.status.ends_with("_IN_PROGRESS")
                && !e.status.contains("ROLLBACK")
                && !e.status.contains("CLEANUP")
        })
        .map_or(events.len(), |p| p + 1);
    events[..start]
        .iter()
        .rev()
        .filter(|e| !e.is_stack && e.status.ends_with("_FAILED"))
        .find(|e| !e.reason.contains("cancelled"))
        .or_else(|| {
            events[..start]
                .iter()
                .rev()
                .find(|e| !e.is_stack && e.status.ends_with("_FAILED"))
        })
        .map(|e| format!("{} ({}): {}", e.logical_id, e.resource_type, e.reason))
}

/// The code and message of a service error.
fn service_error<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> Option<(String, String)> {
    let service = error.as_service_error()?;
    Some((
        service.code().unwrap_or_default().to_string(),
        service.message().unwrap_or_default().to_string(),
    ))
}

fn is_missing_stack<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    service_error(error).is_some_and(|(code, message)| {
        code == "ValidationError" && message.contains("does not exist")
    })
}

fn is_no_updates<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    service_error(error)
        .is_some_and(|(_, message)| message.contains("No updates are to be performed"))
}

/// Change sets that failed only because nothing would change (CodePipeline treats them as a
/// success: there is nothing to deploy).
fn is_no_change_reason(reason: &str) -> bool {
    reason.contains("didn't contain changes") || reason.contains("No updates are to be performed")
}

fn console_url(region: &str, stack_id: &str) -> String {
    format!(
        "https://{region}.console.aws.amazon.com/cloudformation/home?region={region}#/stacks/stackinfo?stackId={stack_id}"
    )
}

/// A stack's outputs as a map.
fn outputs_of(stack: &Stack) -> BTreeMap<String, String> {
    stack
        .outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value()?.to_string())))
        .collect()
}

/// `Deploy/AWS/CloudFormation`.
pub(crate) struct CloudFormation {
    pub(crate) deps: Arc<ProviderDeps>,
}

/// The clients and region acting for a job, with the error message when the role is refused.
struct Session {
    clients: AwsClients,
    region: String,
}

impl CloudFormation {
    async fn session(&self, job: &ActionJob) -> Result<Session, ProviderOutcome> {
        let clients = self.deps.clients_for(job).await?;
        let region = clients
            .sdk_config()
            .region()
            .map(|r| r.to_string())
            .unwrap_or_default();
        Ok(Session { clients, region })
    }

    /// Download and unpack the job's input artifacts with the session's (assumed)
    /// credentials into `dir`.
    async fn read_inputs(
        &self,
        session: &Session,
        job: &ActionJob,
        dir: &Path,
    ) -> Result<InputFiles, ProviderOutcome> {
        let mut inputs = Vec::new();
        for (index, artifact) in job.input_artifacts.iter().enumerate() {
            let object = S3Object::parse(&artifact.location).map_err(|e| {
                failure(
                    "ConfigurationError",
                    format!("input artifact {}: {e}", artifact.name),
                )
            })?;
            let zip = dir.join(format!("input-{index}.zip"));
            let out = dir.join(format!("input-{index}"));
            tokio::fs::create_dir_all(&out)
                .await
                .map_err(|e| failure("JobFailed", format!("creating {}: {e}", out.display())))?;
            download_file(&session.clients.s3, &object, &zip)
                .await
                .map_err(|e| {
                    failure(
                        "JobFailed",
                        format!(
                            "reading input artifact {} with the action's credentials: {e}",
                            artifact.name
                        ),
                    )
                })?;
            unpack(&self.deps.archiver, &zip, &out).await?;
            inputs.push((artifact.clone(), out));
        }
        Ok(InputFiles::new(inputs))
    }

    async fn prepare(
        &self,
        session: &Session,
        job: &ActionJob,
        settings: &Settings,
        dir: &Path,
    ) -> Result<StackInput, ProviderOutcome> {
        let files = self.read_inputs(session, job, dir).await?;
        let input = stack_input(settings, &files).map_err(|e| failure("ConfigurationError", e))?;
        // A malformed template fails here with CloudFormation's own reason, before any stack
        // is touched.
        session
            .clients
            .cloudformation
            .validate_template()
            .template_body(&input.template_body)
            .send()
            .await
            .map_err(|e| {
                let reason = service_error(&e)
                    .map(|(_, message)| message)
                    .unwrap_or_else(|| describe(&e));
                let template = settings
                    .template_path
                    .as_ref()
                    .map(|t| format!("{}::{}", t.artifact, t.path))
                    .unwrap_or_default();
                failure(
                    "ConfigurationError",
                    format!("template {template} is invalid: {reason}"),
                )
            })?;
        Ok(input)
    }

    /// The stack named `name`, or `None` when there is none.
    async fn find_stack(session: &Session, name: &str) -> Result<Option<Stack>, String> {
        match session
            .clients
            .cloudformation
            .describe_stacks()
            .stack_name(name)
            .send()
            .await
        {
            Ok(output) => Ok(output.stacks().first().cloned()),
            Err(e) if is_missing_stack(&e) => Ok(None),
            Err(e) => Err(format!("describing stack {name}: {}", describe(&e))),
        }
    }

    async fn create_stack(
        session: &Session,
        job: &ActionJob,
        settings: &Settings,
        input: &StackInput,
        token_suffix: &str,
    ) -> Result<String, String> {
        let output = session
            .clients
            .cloudformation
            .create_stack()
            .stack_name(&settings.stack_name)
            .template_body(&input.template_body)
            .set_parameters(Some(parameters(input)))
            .set_tags((!input.tags.is_empty()).then(|| tags(input)))
            .set_stack_policy_body(input.stack_policy.clone())
            .set_capabilities(Some(settings.capabilities.clone()))
            .set_role_arn(settings.role_arn.clone())
            .client_request_token(token(job, token_suffix))
            .send()
            .await
            .map_err(|e| format!("creating stack {}: {}", settings.stack_name, reason(&e)))?;
        Ok(output.stack_id().unwrap_or_default().to_string())
    }

    async fn start(&self, ctx: &JobContext) -> Result<ProviderOutcome, ProviderOutcome> {
        let job = &ctx.job;
        let settings = Settings::from_configuration(&job.configuration)
            .map_err(|e| failure("ConfigurationError", e))?;
        let session = self.session(job).await?;
        let dir = ctx.work_dir.join("cloudformation");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| failure("JobFailed", format!("creating {}: {e}", dir.display())))?;
        let job_failed = |message: String| failure("JobFailed", message);
        let stack = Self::find_stack(&session, &settings.stack_name)
            .await
            .map_err(job_failed)?;
        let name = &settings.stack_name;
        match settings.mode {
            ActionMode::CreateUpdate | ActionMode::ReplaceOnFailure => {
                let input = self.prepare(&session, job, &settings, &dir).await?;
                let Some(stack) = stack else {
                    let id = Self::create_stack(&session, job, &settings, &input, "create")
                        .await
                        .map_err(job_failed)?;
                    return Ok(self.pending(&session, id, format!("creating stack {name}")));
                };
                let status = stack
                    .stack_status()
                    .cloned()
                    .unwrap_or(StackStatus::CreateComplete);
                let id = stack.stack_id().unwrap_or_default().to_string();
                match phase_of(&status) {
                    StackPhase::InProgress => Err(job_failed(format!(
                        "stack {name} is busy ({status}): another operation is under way"
                    ))),
                    StackPhase::Failed | StackPhase::Review
                        if settings.mode == ActionMode::ReplaceOnFailure =>
                    {
                        session
                            .clients
                            .cloudformation
                            .delete_stack()
                            .stack_name(&id)
                            .set_role_arn(settings.role_arn.clone())
                            .client_request_token(token(job, "replace"))
                            .send()
                            .await
                            .map_err(|e| {
                                job_failed(format!("deleting failed stack {name}: {}", reason(&e)))
                            })?;
                        Ok(self.pending(
                            &session,
                            id,
                            format!("replacing stack {name} (was {status})"),
                        ))
                    }
                    StackPhase::Failed | StackPhase::Review => Err(job_failed(format!(
                        "stack {name} is in {status} and cannot be updated; delete it, or use \
                         ActionMode REPLACE_ON_FAILURE to have it replaced{}",
                        stack
                            .stack_status_reason()
                            .map(|r| format!(" (reason: {r})"))
                            .unwrap_or_default()
                    ))),
                    StackPhase::Deleted => {
                        let id = Self::create_stack(&session, job, &settings, &input, "create")
                            .await
                            .map_err(job_failed)?;
                        Ok(self.pending(&session, id, format!("creating stack {name}")))
                    }
                    StackPhase::Stable | StackPhase::UpdateRolledBack => {
                        let updated = session
                            .clients
                            .cloudformation
                            .update_stack()
                            .stack_name(&id)
                            .template_body(&input.template_body)
                            .set_parameters(Some(parameters(&input)))
                            .set_tags((!input.tags.is_empty()).then(|| tags(&input)))
                            .set_stack_policy_body(input.stack_policy.clone())
                            .set_capabilities(Some(settings.capabilities.clone()))
                            .set_role_arn(settings.role_arn.clone())
                            .client_request_token(token(job, "update"))
                            .send()
                            .await;
                        match updated {
                            Ok(_) => {
                                Ok(self.pending(&session, id, format!("updating stack {name}")))
                            }
                            Err(e) if is_no_updates(&e) => self.succeeded_now(
                                ctx,
                                &settings,
                                &session,
                                &stack,
                                format!("stack {name}: no updates to perform"),
                            ),
                            Err(e) => {
                                Err(job_failed(format!("updating stack {name}: {}", reason(&e))))
                            }
                        }
                    }
                }
            }
            ActionMode::DeleteOnly => {
                let Some(stack) = stack.filter(|s| {
                    s.stack_status()
                        .is_some_and(|s| phase_of(s) != StackPhase::Deleted)
                }) else {
                    return Ok(ProviderOutcome::Succeeded {
                        output_variables: BTreeMap::new(),
                        revisions: BTreeMap::new(),
                        external: ExternalExecution {
                            id: None,
                            summary: Some(format!("stack {name} does not exist")),
                            url: None,
                        },
                    });
                };
                let id = stack.stack_id().unwrap_or_default().to_string();
                session
                    .clients
                    .cloudformation
                    .delete_stack()
                    .stack_name(&id)
                    .set_role_arn(settings.role_arn.clone())
                    .client_request_token(token(job, "delete"))
                    .send()
                    .await
                    .map_err(|e| job_failed(format!("deleting stack {name}: {}", reason(&e))))?;
                Ok(self.pending(&session, id, format!("deleting stack {name}")))
            }
            ActionMode::ChangeSetReplace => {
                let input = self.prepare(&session, job, &settings, &dir).await?;
                let change_set = settings.change_set_name.clone().unwrap_or_default();
                let change_set_type = match stack.as_ref().and_then(|s| s.stack_status()) {
                    None => ChangeSetType::Create,
                    Some(status) => match phase_of(status) {
                        StackPhase::Review | StackPhase::Deleted => ChangeSetType::Create,
                        StackPhase::Stable | StackPhase::UpdateRolledBack => ChangeSetType::Update,
                        StackPhase::InProgress | StackPhase::Failed => {
                            return Err(job_failed(format!(
                                "stack {name} is in {status}: no change set can be made for it"
                            )));
                        }
                    },
                };
                if change_set_type == ChangeSetType::Update
                    || stack
                        .as_ref()
                        .is_some_and(|s| s.stack_status().map(phase_of) == Some(StackPhase::Review))
                {
                    // Replace: an earlier change set of this name goes first (looked up
                    // before, so only one that exists is deleted).
                    let existing = session
                        .clients
                        .cloudformation
                        .describe_change_set()
                        .stack_name(name)
                        .change_set_name(&change_set)
                        .send()
                        .await;
                    if let Ok(existing) = existing {
                        let id = existing.change_set_id().unwrap_or(&change_set).to_string();
                        session
                            .clients
                            .cloudformation
                            .delete_change_set()
                            .change_set_name(&id)
                            .send()
                            .await
                            .map_err(|e| {
                                job_failed(format!(
                                    "deleting the earlier change set {change_set} of stack \
                                     {name}: {}",
                                    reason(&e)
                                ))
                            })?;
                    }
                }
                let output = session
                    .clients
                    .cloudformation
                    .create_change_set()
                    .stack_name(name)
                    .change_set_name(&change_set)
                    .change_set_type(change_set_type.clone())
                    .template_body(&input.template_body)
                    .set_parameters(Some(parameters(&input)))
                    .set_tags((!input.tags.is_empty()).then(|| tags(&input)))
                    .set_capabilities(Some(settings.capabilities.clone()))
                    .set_role_arn(settings.role_arn.clone())
                    .send()
                    .await
                    .map_err(|e| {
                        job_failed(format!(
                            "creating change set {change_set} of stack {name}: {}",
                            reason(&e)
                        ))
                    })?;
                let id = output.id().unwrap_or_default().to_string();
                Ok(self.pending(
                    &session,
                    id,
                    format!(
                        "creating change set {change_set} ({}) of stack {name}",
                        change_set_type.as_str()
                    ),
                ))
            }
            ActionMode::ChangeSetExecute => {
                let change_set = settings.change_set_name.clone().unwrap_or_default();
                let described = session
                    .clients
                    .cloudformation
                    .describe_change_set()
                    .stack_name(name)
                    .change_set_name(&change_set)
                    .send()
                    .await
                    .map_err(|e| {
                        job_failed(format!(
                            "change set {change_set} of stack {name}: {}",
                            reason(&e)
                        ))
                    })?;
                let reason_text = described.status_reason().unwrap_or_default().to_string();
                if described.status() == Some(&ChangeSetStatus::Failed)
                    && is_no_change_reason(&reason_text)
                {
                    let stack =
                        stack.ok_or_else(|| job_failed(format!("stack {name} does not exist")))?;
                    return self.succeeded_now(
                        ctx,
                        &settings,
                        &session,
                        &stack,
                        format!("change set {change_set} of stack {name} has no changes"),
                    );
                }
                if described.status() != Some(&ChangeSetStatus::CreateComplete) {
                    return Err(job_failed(format!(
                        "change set {change_set} of stack {name} cannot be executed: it is {}{}",
                        described
                            .status()
                            .map(|s| s.as_str().to_string())
                            .unwrap_or_else(|| "of unknown status".into()),
                        if reason_text.is_empty() {
                            String::new()
                        } else {
                            format!(" ({reason_text})")
                        }
                    )));
                }
                session
                    .clients
                    .cloudformation
                    .execute_change_set()
                    .stack_name(name)
                    .change_set_name(&change_set)
                    .client_request_token(token(job, "execute"))
                    .send()
                    .await
                    .map_err(|e| {
                        job_failed(format!(
                            "executing change set {change_set} of stack {name}: {}",
                            reason(&e)
                        ))
                    })?;
                let id = described.stack_id().unwrap_or(name).to_string();
                Ok(self.pending(
                    &session,
                    id,
                    format!("executing change set {change_set} of stack {name}"),
                ))
            }
        }
    }

    fn pending(&self, session: &Session, id: String, summary: String) -> ProviderOutcome {
        ProviderOutcome::Pending {
            external: ExternalExecution {
                url: Some(console_url(&session.region, &id)),
                id: Some(id),
                summary: Some(summary),
            },
            approval_token: None,
        }
    }

    /// Success at once (nothing to change): outputs as variables, and into the output
    /// artifact's directory (the dispatcher stores it).
    fn succeeded_now(
        &self,
        ctx: &JobContext,
        settings: &Settings,
        session: &Session,
        stack: &Stack,
        summary: String,
    ) -> Result<ProviderOutcome, ProviderOutcome> {
        let outputs = outputs_of(stack);
        if let Some(file) = &settings.output_file {
            for (_, dir) in &ctx.outputs {
                write_outputs(dir, file, &outputs).map_err(|e| failure("JobFailed", e))?;
            }
        }
        let id = stack.stack_id().unwrap_or_default().to_string();
        Ok(ProviderOutcome::Succeeded {
            output_variables: outputs,
            revisions: BTreeMap::new(),
            external: ExternalExecution {
                url: Some(console_url(&session.region, &id)),
                id: Some(id),
                summary: Some(summary),
            },
        })
    }

    /// How the work handed off is going; `Err` when CloudFormation could not be asked (the
    /// next sweep asks again).
    async fn check(&self, job: &ActionJob, external: &ExternalExecution) -> Result<Polled, String> {
        let settings = match Settings::from_configuration(&job.configuration) {
            Ok(settings) => settings,
            Err(e) => {
                return Ok(Polled::Finished(failed_input(
                    job,
                    "ConfigurationError",
                    e,
                    external.clone(),
                )));
            }
        };
        let session = match self.session(job).await {
            Ok(session) => session,
            Err(ProviderOutcome::Failed { message, .. }) => return Err(message),
            Err(_) => return Err("no session".into()),
        };
        let id = external.id.clone().unwrap_or_default();
        let name = settings.stack_name.clone();
        let finished_failed = |message: String| {
            Ok(Polled::Finished(failed_input(
                job,
                "JobFailed",
                message,
                external.clone(),
            )))
        };
        match settings.mode {
            ActionMode::ChangeSetReplace => {
                let described = session
                    .clients
                    .cloudformation
                    .describe_change_set()
                    .change_set_name(&id)
                    .send()
                    .await
                    .map_err(|e| describe(&e))?;
                let reason_text = described.status_reason().unwrap_or_default();
                match described.status() {
                    Some(ChangeSetStatus::CreateComplete) => {
                        self.finished(
                            job,
                            &settings,
                            BTreeMap::new(),
                            external,
                            "change set created",
                        )
                        .await
                    }
                    Some(ChangeSetStatus::Failed) if is_no_change_reason(reason_text) => {
                        self.finished(
                            job,
                            &settings,
                            BTreeMap::new(),
                            external,
                            "change set has no changes",
                        )
                        .await
                    }
                    Some(ChangeSetStatus::Failed) => finished_failed(format!(
                        "change set {} of stack {name} failed: {reason_text}",
                        settings.change_set_name.unwrap_or_default()
                    )),
                    Some(ChangeSetStatus::DeleteComplete) => finished_failed(format!(
                        "change set {} of stack {name} was deleted",
                        settings.change_set_name.unwrap_or_default()
                    )),
                    _ => Ok(Polled::Running),
                }
            }
            ActionMode::DeleteOnly => {
                let stack = match Self::find_stack(&session, &id).await? {
                    Some(stack) => stack,
                    None => {
                        return self
                            .finished(job, &settings, BTreeMap::new(), external, "stack deleted")
                            .await;
                    }
                };
                let status = stack
                    .stack_status()
                    .cloned()
                    .unwrap_or(StackStatus::DeleteComplete);
                match phase_of(&status) {
                    StackPhase::Deleted => {
                        self.finished(job, &settings, BTreeMap::new(), external, "stack deleted")
                            .await
                    }
                    StackPhase::InProgress => Ok(Polled::Running),
                    _ => {
                        let cause = self.failure_cause(&session, &id).await;
                        finished_failed(format!("deleting stack {name} ended {status}{cause}"))
                    }
                }
            }
            ActionMode::CreateUpdate
            | ActionMode::ReplaceOnFailure
            | ActionMode::ChangeSetExecute => {
                let Some(stack) = Self::find_stack(&session, &name).await? else {
                    if settings.mode == ActionMode::ReplaceOnFailure {
                        // The failed stack is gone: create its replacement now.
                        let dir = tempfile::tempdir().map_err(|e| format!("scratch dir: {e}"))?;
                        let input = match self.prepare(&session, job, &settings, dir.path()).await {
                            Ok(input) => input,
                            Err(ProviderOutcome::Failed { code, message, .. }) => {
                                return Ok(Polled::Finished(failed_input(
                                    job,
                                    &code,
                                    message,
                                    external.clone(),
                                )));
                            }
                            Err(_) => return Err("preparing the stack failed".into()),
                        };
                        return match Self::create_stack(
                            &session, job, &settings, &input, "recreate",
                        )
                        .await
                        {
                            Ok(_) => Ok(Polled::Running),
                            Err(e) => finished_failed(e),
                        };
                    }
                    return finished_failed(format!("stack {name} no longer exists"));
                };
                let status = stack
                    .stack_status()
                    .cloned()
                    .unwrap_or(StackStatus::CreateComplete);
                let stack_id = stack.stack_id().unwrap_or_default().to_string();
                match phase_of(&status) {
                    StackPhase::InProgress | StackPhase::Review => Ok(Polled::Running),
                    StackPhase::Stable => {
                        let external = ExternalExecution {
                            url: Some(console_url(&session.region, &stack_id)),
                            id: Some(stack_id),
                            summary: external.summary.clone(),
                        };
                        let summary = format!("stack is {}", status.as_str());
                        self.finished(job, &settings, outputs_of(&stack), &external, &summary)
                            .await
                    }
                    StackPhase::Deleted => finished_failed(format!("stack {name} was deleted")),
                    StackPhase::UpdateRolledBack | StackPhase::Failed => {
                        let cause = self.failure_cause(&session, &stack_id).await;
                        let advice = match status.as_str() {
                            "ROLLBACK_FAILED" | "UPDATE_ROLLBACK_FAILED" => {
                                "; the stack needs attention (continue the rollback or delete it) \
                                 before it can be deployed again"
                            }
                            "ROLLBACK_COMPLETE" if settings.mode == ActionMode::CreateUpdate => {
                                "; a stack in ROLLBACK_COMPLETE cannot be updated: delete it or \
                                 use ActionMode REPLACE_ON_FAILURE"
                            }
                            _ => "",
                        };
                        finished_failed(format!("stack {name} ended {status}{cause}{advice}"))
                    }
                }
            }
        }
    }

    /// `: Logical (Type): reason` of the first failing resource, or the empty string.
    async fn failure_cause(&self, session: &Session, stack: &str) -> String {
        let output = match session
            .clients
            .cloudformation
            .describe_stack_events()
            .stack_name(stack)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) => {
                warn!(stack, error = %describe(&e), "reading stack events failed");
                return String::new();
            }
        };
        let events: Vec<EventView> = output
            .stack_events()
            .iter()
            .map(|e| EventView {
                logical_id: e.logical_resource_id().unwrap_or_default().to_string(),
                resource_type: e.resource_type().unwrap_or_default().to_string(),
                status: e
                    .resource_status()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                reason: e.resource_status_reason().unwrap_or_default().to_string(),
                is_stack: e.resource_type() == Some("AWS::CloudFormation::Stack"),
            })
            .collect();
        first_failure(&events)
            .map(|f| format!(": first failure {f}"))
            .unwrap_or_default()
    }

    /// The success input: outputs as variables, and as a JSON file in the output artifact,
    /// stored in the pipeline's artifact store.
    async fn finished(
        &self,
        job: &ActionJob,
        settings: &Settings,
        outputs: BTreeMap<String, String>,
        external: &ExternalExecution,
        summary: &str,
    ) -> Result<Polled, String> {
        let mut output_artifacts = Vec::new();
        for name in &job.output_artifacts {
            let dir = tempfile::tempdir().map_err(|e| format!("scratch dir: {e}"))?;
            let content = dir.path().join("content");
            tokio::fs::create_dir_all(&content)
                .await
                .map_err(|e| format!("scratch dir: {e}"))?;
            if let Some(file) = &settings.output_file {
                write_outputs(&content, file, &outputs)?;
            }
            let zip = dir.path().join("output.zip");
            if let Err(ProviderOutcome::Failed { message, .. }) =
                pack(&self.deps.archiver, &content, &zip).await
            {
                return Err(message);
            }
            let location = self
                .deps
                .artifacts
                .put(job.artifact_store.as_ref(), &artifact_key(job, name), &zip)
                .await
                .map_err(|e| format!("storing output artifact {name}: {e}"))?;
            output_artifacts.push(ArtifactRef {
                name: name.clone(),
                location,
                revision_id: None,
                revision_summary: None,
            });
        }
        Ok(Polled::Finished(Input::ActionSucceeded {
            execution_id: job.execution_id.clone(),
            stage: job.stage.clone(),
            action: job.action.clone(),
            attempt: job.attempt,
            output_artifacts,
            output_variables: outputs,
            external: ExternalExecution {
                summary: Some(match &external.summary {
                    Some(started) => format!("{started}: {summary}"),
                    None => summary.to_string(),
                }),
                ..external.clone()
            },
        }))
    }
}

/// Write the outputs as a JSON object to `file` under `dir`.
fn write_outputs(dir: &Path, file: &str, outputs: &BTreeMap<String, String>) -> Result<(), String> {
    let path = inside(dir, file).map_err(|e| format!("OutputFileName: {e}"))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("writing {file}: {e}"))?;
    }
    let text = serde_json::to_string_pretty(outputs).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("writing {file}: {e}"))
}

fn parameters(input: &StackInput) -> Vec<Parameter> {
    input
        .parameters
        .iter()
        .map(|(k, v)| {
            Parameter::builder()
                .parameter_key(k)
                .parameter_value(v)
                .build()
        })
        .collect()
}

fn tags(input: &StackInput) -> Vec<Tag> {
    input
        .tags
        .iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// A client request token for one operation of an attempt (CloudFormation takes up to 128
/// characters of `[a-zA-Z0-9-]`).
fn token(job: &ActionJob, operation: &str) -> String {
    let text: String = format!("penstock-{}-{operation}", job.action_execution_id)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    text.chars().take(128).collect()
}

/// CloudFormation's own message for a service error, else the whole error chain.
fn reason<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match service_error(error) {
        Some((code, message)) if !message.is_empty() => format!("{code}: {message}"),
        _ => describe(error),
    }
}

#[async_trait]
impl ActionProvider for CloudFormation {
    async fn run(&self, ctx: &JobContext) -> ProviderOutcome {
        self.start(ctx).await.unwrap_or_else(|outcome| outcome)
    }

    async fn poll(&self, job: &ActionJob, external: &ExternalExecution) -> Option<Polled> {
        external.id.as_deref()?;
        match self.check(job, external).await {
            Ok(polled) => Some(polled),
            Err(reason) => {
                // Unknown is not failed: the next sweep asks again, the deadline bounds it.
                warn!(stack = ?external.id, reason, "polling a CloudFormation stack failed");
                Some(Polled::Running)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configuration(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_are_read_and_checked() {
        let settings = Settings::from_configuration(&configuration(&[
            ("ActionMode", "CREATE_UPDATE"),
            ("StackName", "app"),
            ("TemplatePath", "Build::out/template.json"),
            ("Capabilities", "CAPABILITY_IAM, CAPABILITY_AUTO_EXPAND"),
            ("RoleArn", "arn:aws:iam::222222222222:role/cfn"),
        ]))
        .expect("settings");
        assert_eq!(settings.mode, ActionMode::CreateUpdate);
        assert_eq!(
            settings.template_path,
            Some(ArtifactPath {
                artifact: "Build".into(),
                path: "out/template.json".into()
            })
        );
        assert_eq!(
            settings.capabilities,
            vec![Capability::CapabilityIam, Capability::CapabilityAutoExpand]
        );
        for (bad, expected) in [
            (vec![("ActionMode", "UPSERT"), ("StackName", "s")], "UPSERT"),
            (
                vec![("ActionMode", "CREATE_UPDATE"), ("StackName", "s")],
                "TemplatePath",
            ),
            (
                vec![("ActionMode", "CHANGE_SET_EXECUTE"), ("StackName", "s")],
                "ChangeSetName",
            ),
            (
                vec![
                    ("ActionMode", "DELETE_ONLY"),
                    ("StackName", "s"),
                    ("Capabilities", "CAPABILITY_EVERYTHING"),
                ],
                "CAPABILITY_EVERYTHING",
            ),
            (
                vec![
                    ("ActionMode", "CREATE_UPDATE"),
                    ("StackName", "s"),
                    ("TemplatePath", "template.json"),
                ],
                "ArtifactName::path",
            ),
        ] {
            let error = Settings::from_configuration(&configuration(&bad)).expect_err("invalid");
            assert!(error.contains(expected), "{error}");
        }
    }

    fn files(dir: &Path) -> InputFiles {
        std::fs::create_dir_all(dir.join("config")).expect("dir");
        std::fs::write(
            dir.join("config/params.json"),
            r#"{"Size": "large", "Count": 3}"#,
        )
        .expect("write");
        std::fs::write(
            dir.join("config/stack.json"),
            r#"{"Parameters": {"Size": "small", "Env": "prod"}, "Tags": {"team": "core"},
                "StackPolicy": {"Statement": []}}"#,
        )
        .expect("write");
        std::fs::write(dir.join("template.json"), r#"{"Resources": {}}"#).expect("write");
        InputFiles::new([(
            ArtifactRef {
                name: "Src".into(),
                location: "s3://artifacts/p/e/a/Src.zip#v1".into(),
                revision_id: None,
                revision_summary: None,
            },
            dir.to_path_buf(),
        )])
    }

    #[test]
    fn overrides_win_over_the_template_configuration_and_read_artifacts() {
        let dir = tempfile::tempdir().expect("dir");
        let files = files(dir.path());
        let settings = Settings::from_configuration(&configuration(&[
            ("ActionMode", "CREATE_UPDATE"),
            ("StackName", "app"),
            ("TemplatePath", "Src::template.json"),
            ("TemplateConfiguration", "Src::config/stack.json"),
            (
                "ParameterOverrides",
                r#"{"Size": {"Fn::GetParam": ["Src", "config/params.json", "Size"]},
                    "Count": {"Fn::GetParam": ["Src", "config/params.json", "Count"]},
                    "Bucket": {"Fn::GetArtifactAtt": ["Src", "BucketName"]},
                    "Key": {"Fn::GetArtifactAtt": ["Src", "ObjectKey"]}}"#,
            ),
        ]))
        .expect("settings");
        let input = stack_input(&settings, &files).expect("input");
        assert_eq!(input.template_body, r#"{"Resources": {}}"#);
        assert_eq!(
            input.parameters,
            configuration(&[
                ("Bucket", "artifacts"),
                ("Count", "3"),
                ("Env", "prod"),
                ("Key", "p/e/a/Src.zip"),
                ("Size", "large"),
            ])
        );
        assert_eq!(input.tags, configuration(&[("team", "core")]));
        assert_eq!(input.stack_policy.as_deref(), Some(r#"{"Statement":[]}"#));
    }

    #[test]
    fn bad_references_are_named() {
        let dir = tempfile::tempdir().expect("dir");
        let files = files(dir.path());
        for (overrides, expected) in [
            (
                r#"{"A": {"Fn::GetParam": ["Other", "x.json", "k"]}}"#,
                "Other is not an input",
            ),
            (
                r#"{"A": {"Fn::GetParam": ["Src", "../x.json", "k"]}}"#,
                "relative path",
            ),
            (
                r#"{"A": {"Fn::GetParam": ["Src", "config/params.json", "Nope"]}}"#,
                "no key Nope",
            ),
            (r#"{"A": {"Fn::GetParam": ["Src", "x.json"]}}"#, "list of 3"),
            (
                r#"{"A": {"Fn::GetArtifactAtt": ["Src", "Size"]}}"#,
                "BucketName",
            ),
            (r#"{"A": {"Fn::Sub": "x"}}"#, "only Fn::GetParam"),
            (r#"["A"]"#, "JSON object"),
            ("{", "not JSON"),
        ] {
            let settings = Settings::from_configuration(&configuration(&[
                ("ActionMode", "CREATE_UPDATE"),
                ("StackName", "app"),
                ("TemplatePath", "Src::template.json"),
                ("ParameterOverrides", overrides),
            ]))
            .expect("settings");
            let error = stack_input(&settings, &files).expect_err(overrides);
            assert!(error.contains(expected), "{overrides}: {error}");
        }
    }

    #[test]
    fn stack_statuses_map_to_phases() {
        for (status, phase) in [
            ("CREATE_COMPLETE", StackPhase::Stable),
            ("UPDATE_COMPLETE", StackPhase::Stable),
            (
                "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
                StackPhase::InProgress,
            ),
            ("UPDATE_ROLLBACK_IN_PROGRESS", StackPhase::InProgress),
            ("UPDATE_ROLLBACK_COMPLETE", StackPhase::UpdateRolledBack),
            ("ROLLBACK_COMPLETE", StackPhase::Failed),
            ("ROLLBACK_FAILED", StackPhase::Failed),
            ("UPDATE_ROLLBACK_FAILED", StackPhase::Failed),
            ("CREATE_FAILED", StackPhase::Failed),
            ("DELETE_FAILED", StackPhase::Failed),
            ("REVIEW_IN_PROGRESS", StackPhase::Review),
            ("DELETE_COMPLETE", StackPhase::Deleted),
        ] {
            assert_eq!(phase_of(&StackStatus::from(status)), phase, "{status}");
        }
    }

    fn event(logical_id: &str, status: &str, reason: &str) -> EventView {
        EventView {
            logical_id: logical_id.into(),
            resource_type: if logical_id == "app" {
                "AWS::CloudFormation::Stack".into()
            } else {
                "AWS::SQS::Queue".into()
            },
            status: status.into(),
            reason: reason.into(),
            is_stack: logical_id == "app",
        }
    }

    #[test]
    fn the_first_failure_of_the_latest_operation_is_reported() {
        // Newest first, as DescribeStackEvents answers.
        let events = vec![
            event("app", "ROLLBACK_COMPLETE", ""),
            event("Topic", "DELETE_COMPLETE", ""),
            event(
                "app",
                "ROLLBACK_IN_PROGRESS",
                "The following resource(s) failed",
            ),
            event("Topic", "CREATE_FAILED", "Resource creation cancelled"),
            event("Queue", "CREATE_FAILED", "Queue name already exists"),
            event("Topic", "CREATE_IN_PROGRESS", ""),
            event("app", "CREATE_IN_PROGRESS", "User Initiated"),
            // An older operation's failure must not be reported.
            event("Old", "UPDATE_FAILED", "old reason"),
            event("app", "UPDATE_IN_PROGRESS", "User Initiated"),
        ];
        assert_eq!(
            first_failure(&events).as_deref(),
            Some("Queue (AWS::SQS::Queue): Queue name already exists")
        );
        assert_eq!(first_failure(&events[..2]), None);
    }
}
