//! The CodePipeline operations: each reads its input shape, calls the control use cases and
//! answers with its output shape. Refusals carry CodePipeline's exception names.

use std::collections::{BTreeMap, HashMap};

use penstock_app::control::StartOptions;
use penstock_app::error::AppError;
use penstock_app::repo::{PipelineRecord, Versioned};
use penstock_app::store::StoreError;
use penstock_core::engine::{Execution, SourceRevision, Trigger, TriggerType};
use penstock_core::model::{PipelineDeclaration, StageRetryMode, Tag};
use penstock_core::shape::{self, ViolationKind};
use penstock_core::validate;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Api;
use crate::auth::Caller;
use crate::paging::{self, TokenKind};
use crate::protocol::ApiError;
use crate::views;

/// The operations this control plane serves.
const SERVED_OPERATIONS: &[&str] = &[
    "CreatePipeline",
    "GetPipeline",
    "UpdatePipeline",
    "DeletePipeline",
    "ListPipelines",
    "StartPipelineExecution",
    "StopPipelineExecution",
    "GetPipelineExecution",
    "ListPipelineExecutions",
    "GetPipelineState",
    "ListActionExecutions",
    "PutApprovalResult",
    "EnableStageTransition",
    "DisableStageTransition",
    "RetryStageExecution",
    "TagResource",
    "UntagResource",
    "ListTagsForResource",
];

/// Operations of the service model that this control plane does not serve (custom action
/// types, job workers, webhooks, rule executions, rollbacks, condition overrides).
const UNSUPPORTED_OPERATIONS: &[&str] = &[
    "AcknowledgeJob",
    "AcknowledgeThirdPartyJob",
    "CreateCustomActionType",
    "DeleteCustomActionType",
    "DeleteWebhook",
    "DeregisterWebhookWithThirdParty",
    "GetActionType",
    "GetJobDetails",
    "GetThirdPartyJobDetails",
    "ListActionTypes",
    "ListDeployActionExecutionTargets",
    "ListRuleExecutions",
    "ListRuleTypes",
    "ListWebhooks",
    "OverrideStageCondition",
    "PollForJobs",
    "PollForThirdPartyJobs",
    "PutActionRevision",
    "PutJobFailureResult",
    "PutJobSuccessResult",
    "PutThirdPartyJobFailureResult",
    "PutThirdPartyJobSuccessResult",
    "PutWebhook",
    "RegisterWebhookWithThirdParty",
    "RollbackStage",
    "UpdateActionType",
];

/// Most tags a pipeline may carry (CodePipeline's quota).
const MAX_TAGS: usize = 50;
/// Default and largest page of `ListPipelines`.
const MAX_PIPELINES_PAGE: usize = 1000;
/// Default and largest page of the other lists (`MaxResults` in the model).
const MAX_RESULTS_PAGE: usize = 100;
/// How often a tag change is tried again when the pipeline record changed meanwhile.
const TAG_WRITE_ATTEMPTS: usize = 5;

/// Who is calling, for the records an operation leaves.
pub struct Context<'a> {
    pub caller: &'a Caller,
}

/// Run `operation` on `input` (a JSON object).
pub async fn dispatch(
    api: &Api,
    context: &Context<'_>,
    operation: &str,
    mut input: Value,
) -> Result<Value, ApiError> {
    if !SERVED_OPERATIONS.contains(&operation) {
        return Err(if UNSUPPORTED_OPERATIONS.contains(&operation) {
            ApiError::client(
                "UnknownOperationException",
                format!("{operation} is not supported by this endpoint."),
            )
        } else {
            ApiError::client(
                "UnknownOperationException",
                format!("{operation} is not a CodePipeline operation."),
            )
        });
    }
    check_shape(operation, &input)?;
    strip_nulls(&mut input);
    match operation {
        "CreatePipeline" => create_pipeline(api, parse(input)?).await,
        "GetPipeline" => get_pipeline(api, parse(input)?).await,
        "UpdatePipeline" => update_pipeline(api, parse(input)?).await,
        "DeletePipeline" => delete_pipeline(api, parse(input)?).await,
        "ListPipelines" => list_pipelines(api, parse(input)?).await,
        "StartPipelineExecution" => start_execution(api, context, parse(input)?).await,
        "StopPipelineExecution" => stop_execution(api, parse(input)?).await,
        "GetPipelineExecution" => get_execution(api, parse(input)?).await,
        "ListPipelineExecutions" => list_executions(api, parse(input)?).await,
        "GetPipelineState" => get_state(api, parse(input)?).await,
        "ListActionExecutions" => list_action_executions(api, parse(input)?).await,
        "PutApprovalResult" => put_approval_result(api, parse(input)?).await,
        "EnableStageTransition" => enable_transition(api, parse(input)?).await,
        "DisableStageTransition" => disable_transition(api, parse(input)?).await,
        "RetryStageExecution" => retry_stage(api, parse(input)?).await,
        "TagResource" => tag_resource(api, parse(input)?).await,
        "UntagResource" => untag_resource(api, parse(input)?).await,
        "ListTagsForResource" => list_tags(api, parse(input)?).await,
        _ => Err(ApiError::internal()),
    }
}

/// Check a request against its operation's input shape in the service model: required
/// members, types, enums, lengths, patterns and ranges, every violation with its JSON path.
/// Members the model does not know are ignored, as AWS's JSON services do, so clients built
/// on a newer model keep working.
fn check_shape(operation: &str, input: &Value) -> Result<(), ApiError> {
    let model = shape::codepipeline();
    let Some(input_shape) = model.operation(operation).and_then(|o| o.input_shape()) else {
        return Ok(());
    };
    let violations: Vec<shape::Violation> = shape::validate_shape(input_shape, input, "")
        .map_err(|_| ApiError::internal())?
        .into_iter()
        .filter(|v| v.kind != ViolationKind::UnknownMember)
        .collect();
    if violations.is_empty() {
        return Ok(());
    }
    // A value of the wrong JSON type is a deserialization failure on AWS.
    let error_type = if violations
        .iter()
        .all(|v| v.kind == ViolationKind::WrongType)
    {
        "SerializationException"
    } else {
        "ValidationException"
    };
    let details: Vec<String> = violations.iter().map(ToString::to_string).collect();
    Err(ApiError::client(error_type, detected(&details)))
}

/// AWS's summary line for several validation errors.
fn detected(details: &[String]) -> String {
    let plural = if details.len() == 1 { "" } else { "s" };
    format!(
        "{} validation error{plural} detected: {}",
        details.len(),
        details.join("; ")
    )
}

/// Explicit nulls mean absent members in AWS's JSON protocols.
fn strip_nulls(value: &mut Value) {
    match value {
        Value::Object(object) => {
            object.retain(|_, v| !v.is_null());
            object.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Read an input shape. A missing member is a `ValidationException` (the message names it
/// as AWS does), a member of the wrong type a `SerializationException`.
fn parse<T: DeserializeOwned>(input: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(input).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner().to_string();
        if let Some(rest) = inner.strip_prefix("missing field `") {
            let field = rest.split('`').next().unwrap_or_default();
            let at = if path == "." {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
            ApiError::validation(format!(
                "1 validation error detected: Value null at '{at}' failed to satisfy \
                 constraint: Member must not be null"
            ))
        } else {
            ApiError::serialization(format!("{inner} at '{path}'"))
        }
    })
}

fn to_value<T: Serialize>(output: &T) -> Result<Value, ApiError> {
    serde_json::to_value(output).map_err(|_| ApiError::internal())
}

/// A pipeline declaration checked by the declaration validator: the service model's
/// constraints, then CodePipeline's structural rules. The answer carries the exception of the
/// first error and lists every error with its JSON path.
fn declaration(pipeline: Value) -> Result<PipelineDeclaration, ApiError> {
    let document = json!({ "pipeline": pipeline }).to_string();
    match validate::parse_and_validate(&document) {
        Ok(validated) => Ok(validated.declaration),
        Err(errors) => {
            let error_type = errors
                .first()
                .map_or("ValidationException", |e| e.exception.as_str());
            let details: Vec<String> = errors
                .iter()
                .map(|e| {
                    if e.path.is_empty() {
                        e.message.clone()
                    } else {
                        format!("{}: {}", e.path, e.message)
                    }
                })
                .collect();
            Err(ApiError::client(error_type, detected(&details)))
        }
    }
}

fn page_size(requested: Option<i64>, largest: usize) -> Result<usize, ApiError> {
    match requested {
        None => Ok(largest),
        Some(n) if n >= 1 && n as usize <= largest => Ok(n as usize),
        Some(n) => Err(ApiError::validation(format!(
            "1 validation error detected: Value '{n}' at 'maxResults' failed to satisfy \
             constraint: Member must have value between 1 and {largest}"
        ))),
    }
}

#[derive(Debug, Deserialize)]
struct TagInput {
    key: String,
    value: String,
}

fn check_tags(tags: &[TagInput]) -> Result<Vec<Tag>, ApiError> {
    for tag in tags {
        if tag.key.to_ascii_lowercase().starts_with("aws:") {
            return Err(ApiError::client(
                "InvalidTagsException",
                format!("tag key '{}' uses the reserved prefix 'aws:'", tag.key),
            ));
        }
    }
    Ok(tags
        .iter()
        .map(|t| Tag {
            key: t.key.clone(),
            value: t.value.clone(),
        })
        .collect())
}

// ---------------------------------------------------------------------------------------
// Pipelines

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreatePipelineInput {
    pipeline: Value,
    #[serde(default)]
    tags: Vec<TagInput>,
}

async fn create_pipeline(api: &Api, input: CreatePipelineInput) -> Result<Value, ApiError> {
    let declaration = declaration(input.pipeline)?;
    let tags = check_tags(&input.tags)?;
    if tags.len() > MAX_TAGS {
        return Err(ApiError::client(
            "TooManyTagsException",
            format!("a pipeline can carry at most {MAX_TAGS} tags"),
        ));
    }
    let record = api.control.create_pipeline(declaration, tags).await?;
    let tags: Vec<Value> = record
        .tags
        .iter()
        .map(|t| json!({"key": t.key, "value": t.value}))
        .collect();
    let mut output = json!({ "pipeline": to_value(&record.declaration)? });
    if !tags.is_empty() {
        output["tags"] = Value::Array(tags);
    }
    Ok(output)
}

#[derive(Debug, Deserialize)]
struct GetPipelineInput {
    name: String,
    version: Option<i64>,
}

async fn get_pipeline(api: &Api, input: GetPipelineInput) -> Result<Value, ApiError> {
    let (declaration, record) = api.control.get_pipeline(&input.name, input.version).await?;
    Ok(json!({
        "pipeline": to_value(&declaration)?,
        "metadata": to_value(&views::pipeline_metadata(&record, &api.region, &api.account_id))?,
    }))
}

#[derive(Debug, Deserialize)]
struct UpdatePipelineInput {
    pipeline: Value,
}

async fn update_pipeline(api: &Api, input: UpdatePipelineInput) -> Result<Value, ApiError> {
    let declaration = declaration(input.pipeline)?;
    let record = api.control.update_pipeline(declaration).await?;
    Ok(json!({ "pipeline": to_value(&record.declaration)? }))
}

#[derive(Debug, Deserialize)]
struct DeletePipelineInput {
    name: String,
}

/// Deleting a pipeline that is not there succeeds, as on CodePipeline.
async fn delete_pipeline(api: &Api, input: DeletePipelineInput) -> Result<Value, ApiError> {
    match api.control.delete_pipeline(&input.name).await {
        Ok(()) | Err(AppError::PipelineNotFound(_)) => Ok(json!({})),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListPipelinesInput {
    next_token: Option<String>,
    max_results: Option<i64>,
}

async fn list_pipelines(api: &Api, input: ListPipelinesInput) -> Result<Value, ApiError> {
    let limit = page_size(input.max_results, MAX_PIPELINES_PAGE)?;
    let after: Option<String> = match &input.next_token {
        Some(token) => Some(paging::decode(TokenKind::Pipelines, token)?),
        None => None,
    };
    let (records, next) = api.control.engine.repo.list_pipelines(after, limit).await?;
    let summaries: Vec<views::PipelineSummary> =
        records.iter().map(views::pipeline_summary).collect();
    let mut output = json!({ "pipelines": to_value(&summaries)? });
    if let Some(next) = next {
        output["nextToken"] = Value::String(paging::encode(TokenKind::Pipelines, &next)?);
    }
    Ok(output)
}

// ---------------------------------------------------------------------------------------
// Executions

#[derive(Debug, Deserialize)]
struct VariableInput {
    name: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SourceRevisionInput {
    action_name: String,
    revision_type: String,
    revision_value: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartInput {
    name: String,
    #[serde(default)]
    variables: Vec<VariableInput>,
    client_request_token: Option<String>,
    #[serde(default)]
    source_revisions: Vec<SourceRevisionInput>,
}

async fn start_execution(
    api: &Api,
    context: &Context<'_>,
    input: StartInput,
) -> Result<Value, ApiError> {
    let mut variables = BTreeMap::new();
    for variable in input.variables {
        if variables
            .insert(variable.name.clone(), variable.value)
            .is_some()
        {
            return Err(ApiError::validation(format!(
                "variable '{}' is given more than once",
                variable.name
            )));
        }
    }
    let options = StartOptions {
        variables,
        source_revisions: input
            .source_revisions
            .into_iter()
            .map(|r| SourceRevision {
                action_name: r.action_name,
                revision_type: r.revision_type,
                revision_value: r.revision_value,
            })
            .collect(),
        client_request_token: input.client_request_token,
        trigger: Some(Trigger {
            trigger_type: TriggerType::StartPipelineExecution,
            trigger_detail: context.caller.access_key_id.clone(),
        }),
    };
    let id = api.control.start_execution(&input.name, options).await?;
    Ok(json!({ "pipelineExecutionId": id }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StopInput {
    pipeline_name: String,
    pipeline_execution_id: String,
    #[serde(default)]
    abandon: bool,
    reason: Option<String>,
}

async fn stop_execution(api: &Api, input: StopInput) -> Result<Value, ApiError> {
    api.control
        .stop_execution(
            &input.pipeline_name,
            &input.pipeline_execution_id,
            input.abandon,
            input.reason.filter(|r| !r.is_empty()),
        )
        .await?;
    Ok(json!({ "pipelineExecutionId": input.pipeline_execution_id }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecutionInput {
    pipeline_name: String,
    pipeline_execution_id: String,
}

/// An execution of a pipeline that must exist (`PipelineNotFoundException` otherwise).
async fn execution_of(api: &Api, pipeline: &str, id: &str) -> Result<Execution, ApiError> {
    match api.control.get_execution(pipeline, id).await {
        Ok(execution) => Ok(execution),
        Err(AppError::ExecutionNotFound(message)) => {
            api.control.engine.repo.get_pipeline(pipeline).await?;
            Err(AppError::ExecutionNotFound(message).into())
        }
        Err(e) => Err(e.into()),
    }
}

async fn get_execution(api: &Api, input: ExecutionInput) -> Result<Value, ApiError> {
    let execution = execution_of(api, &input.pipeline_name, &input.pipeline_execution_id).await?;
    Ok(json!({ "pipelineExecution": to_value(&views::pipeline_execution(&execution))? }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StageNameFilter {
    stage_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecutionFilter {
    succeeded_in_stage: Option<StageNameFilter>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListExecutionsInput {
    pipeline_name: String,
    max_results: Option<i64>,
    filter: Option<ExecutionFilter>,
    next_token: Option<String>,
}

async fn list_executions(api: &Api, input: ListExecutionsInput) -> Result<Value, ApiError> {
    let limit = page_size(input.max_results, MAX_RESULTS_PAGE)?;
    let mut cursor: Option<String> = match &input.next_token {
        Some(token) => Some(paging::decode(TokenKind::Executions, token)?),
        None => None,
    };
    api.control
        .engine
        .repo
        .get_pipeline(&input.pipeline_name)
        .await?;
    let stage = input
        .filter
        .and_then(|f| f.succeeded_in_stage)
        .and_then(|s| s.stage_name);
    let mut found = Vec::new();
    // With a filter, ask the store for exactly as many as are still wanted: every execution
    // of a page is then looked at, and the store's cursor stays exact.
    loop {
        let wanted = limit - found.len();
        let (page, next) = api
            .control
            .list_executions(&input.pipeline_name, cursor.clone(), wanted)
            .await?;
        found.extend(page.into_iter().filter(|e| {
            stage
                .as_deref()
                .is_none_or(|s| views::succeeded_in_stage(e, s))
        }));
        cursor = next;
        if found.len() >= limit || cursor.is_none() {
            break;
        }
    }
    let summaries: Vec<views::PipelineExecutionSummary> = found
        .iter()
        .map(views::pipeline_execution_summary)
        .collect();
    let mut output = json!({ "pipelineExecutionSummaries": to_value(&summaries)? });
    if let Some(next) = cursor {
        output["nextToken"] = Value::String(paging::encode(TokenKind::Executions, &next)?);
    }
    Ok(output)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LatestInExecutionFilter {
    pipeline_execution_id: String,
    start_time_range: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActionExecutionFilter {
    pipeline_execution_id: Option<String>,
    latest_in_pipeline_execution: Option<LatestInExecutionFilter>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListActionExecutionsInput {
    pipeline_name: String,
    filter: Option<ActionExecutionFilter>,
    max_results: Option<i64>,
    next_token: Option<String>,
}

/// Where a page of action executions resumes: the store cursor that lists the execution it
/// stopped in, and the last action execution it returned from that execution.
#[derive(Debug, Serialize, Deserialize)]
struct ActionCursor {
    execution_after: Option<String>,
    last: String,
}

async fn list_action_executions(
    api: &Api,
    input: ListActionExecutionsInput,
) -> Result<Value, ApiError> {
    let limit = page_size(input.max_results, MAX_RESULTS_PAGE)?;
    let resume: Option<ActionCursor> = match &input.next_token {
        Some(token) => Some(paging::decode(TokenKind::ActionExecutions, token)?),
        None => None,
    };
    let pipeline = input.pipeline_name.as_str();
    let record = api.control.engine.repo.get_pipeline(pipeline).await?.value;
    let (only, latest_only) = match input.filter {
        Some(ActionExecutionFilter {
            latest_in_pipeline_execution: Some(latest),
            ..
        }) => (
            Some(latest.pipeline_execution_id),
            latest.start_time_range == "Latest",
        ),
        Some(ActionExecutionFilter {
            pipeline_execution_id: Some(id),
            ..
        }) => (Some(id), false),
        _ => (None, false),
    };
    let mut declarations: HashMap<i64, Option<PipelineDeclaration>> = HashMap::new();
    let mut details = Vec::new();
    let mut next_token = None;

    if let Some(id) = only {
        let execution = execution_of(api, pipeline, &id).await?;
        let declaration = declaration_for(api, &record, &mut declarations, &execution).await?;
        let all = views::action_execution_details(&execution, declaration.as_ref(), latest_only);
        let (page, more) = page_after(all, resume.as_ref().map(|c| c.last.as_str()), limit);
        if let (true, Some(last)) = (more, page.last()) {
            next_token = Some(ActionCursor {
                execution_after: None,
                last: last.action_execution_id.clone(),
            });
        }
        details = page;
    } else {
        let mut execution_after = resume.as_ref().and_then(|c| c.execution_after.clone());
        let mut skip_to = resume.map(|c| c.last);
        loop {
            let (executions, next) = api
                .control
                .list_executions(pipeline, execution_after.clone(), 1)
                .await?;
            let Some(execution) = executions.into_iter().next() else {
                break;
            };
            let declaration = declaration_for(api, &record, &mut declarations, &execution).await?;
            let all = views::action_execution_details(&execution, declaration.as_ref(), false);
            let (page, more) = page_after(all, skip_to.take().as_deref(), limit - details.len());
            details.extend(page);
            if more {
                if let Some(last) = details.last() {
                    next_token = Some(ActionCursor {
                        execution_after: execution_after.clone(),
                        last: last.action_execution_id.clone(),
                    });
                }
                break;
            }
            match next {
                Some(next) => execution_after = Some(next),
                None => break,
            }
            if details.len() >= limit {
                // The page ends exactly with this execution: resume at the next one.
                next_token = Some(ActionCursor {
                    execution_after: execution_after.clone(),
                    last: String::new(),
                });
                break;
            }
        }
    }
    let mut output = json!({ "actionExecutionDetails": to_value(&details)? });
    if let Some(cursor) = next_token {
        output["nextToken"] = Value::String(paging::encode(TokenKind::ActionExecutions, &cursor)?);
    }
    Ok(output)
}

/// Up to `limit` details after the one with id `after` (all when `after` is `None` or empty,
/// or no longer listed), and whether more remain.
fn page_after(
    all: Vec<views::ActionExecutionDetail>,
    after: Option<&str>,
    limit: usize,
) -> (Vec<views::ActionExecutionDetail>, bool) {
    let start = match after.filter(|a| !a.is_empty()) {
        Some(after) => all
            .iter()
            .position(|d| d.action_execution_id == after)
            .map_or(0, |i| i + 1),
        None => 0,
    };
    let remaining = all.len().saturating_sub(start);
    let page: Vec<_> = all.into_iter().skip(start).take(limit).collect();
    let more = remaining > page.len();
    (page, more)
}

/// The declaration an execution ran on, read once per version.
async fn declaration_for(
    api: &Api,
    record: &PipelineRecord,
    cache: &mut HashMap<i64, Option<PipelineDeclaration>>,
    execution: &Execution,
) -> Result<Option<PipelineDeclaration>, ApiError> {
    let version = execution.pipeline_version;
    if let Some(found) = cache.get(&version) {
        return Ok(found.clone());
    }
    let found = if record.declaration.version == Some(version) {
        Some(record.declaration.clone())
    } else {
        match api
            .control
            .engine
            .repo
            .get_pipeline_version(&record.declaration.name, version)
            .await
        {
            Ok(declaration) => Some(declaration),
            Err(AppError::PipelineVersionNotFound(_)) => None,
            Err(e) => return Err(e.into()),
        }
    };
    cache.insert(version, found.clone());
    Ok(found)
}

#[derive(Debug, Deserialize)]
struct GetStateInput {
    name: String,
}

async fn get_state(api: &Api, input: GetStateInput) -> Result<Value, ApiError> {
    let record = api
        .control
        .engine
        .repo
        .get_pipeline(&input.name)
        .await?
        .value;
    let runtime = api.control.runtime(&input.name).await?;
    to_value(&views::pipeline_state(&record, &runtime.value.state))
}

// ---------------------------------------------------------------------------------------
// Approvals, transitions, retries

#[derive(Debug, Deserialize)]
struct ApprovalResultInput {
    summary: String,
    status: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutApprovalInput {
    pipeline_name: String,
    stage_name: String,
    action_name: String,
    result: ApprovalResultInput,
    token: String,
}

async fn put_approval_result(api: &Api, input: PutApprovalInput) -> Result<Value, ApiError> {
    let approved = match input.result.status.as_str() {
        "Approved" => true,
        "Rejected" => false,
        other => {
            return Err(ApiError::validation(format!(
                "1 validation error detected: Value '{other}' at 'result.status' failed to \
                 satisfy constraint: Member must satisfy enum value set: [Approved, Rejected]"
            )));
        }
    };
    api.control
        .put_approval_result(
            &input.pipeline_name,
            &input.stage_name,
            &input.action_name,
            &input.token,
            approved,
            input.result.summary,
        )
        .await?;
    let approved_at = views::EpochSeconds::from(api.control.engine.clock.now());
    Ok(json!({ "approvedAt": approved_at.0 }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TransitionInput {
    pipeline_name: String,
    stage_name: String,
    transition_type: String,
    reason: Option<String>,
}

/// The stage whose inbound transition a request is about: `Outbound` of a stage is the
/// inbound transition of the stage after it (the only transition that exists between them).
async fn inbound_stage(api: &Api, input: &TransitionInput) -> Result<String, ApiError> {
    match input.transition_type.as_str() {
        "Inbound" => Ok(input.stage_name.clone()),
        "Outbound" => {
            let runtime = api.control.runtime(&input.pipeline_name).await?;
            let state = &runtime.value.state;
            let declaration = state
                .declarations
                .get(&state.current_version)
                .ok_or_else(ApiError::internal)?;
            let index = declaration
                .stages
                .iter()
                .position(|s| s.name == input.stage_name)
                .ok_or_else(|| {
                    ApiError::client(
                        "StageNotFoundException",
                        format!("stage {} not found", input.stage_name),
                    )
                })?;
            match declaration.stages.get(index + 1) {
                Some(next) => Ok(next.name.clone()),
                None => Err(ApiError::validation(format!(
                    "stage {} is the last stage and has no outbound transition",
                    input.stage_name
                ))),
            }
        }
        other => Err(ApiError::validation(format!(
            "1 validation error detected: Value '{other}' at 'transitionType' failed to \
             satisfy constraint: Member must satisfy enum value set: [Inbound, Outbound]"
        ))),
    }
}

async fn enable_transition(api: &Api, input: TransitionInput) -> Result<Value, ApiError> {
    let stage = inbound_stage(api, &input).await?;
    api.control
        .set_transition(&input.pipeline_name, &stage, true, None)
        .await?;
    Ok(json!({}))
}

async fn disable_transition(api: &Api, input: TransitionInput) -> Result<Value, ApiError> {
    let Some(reason) = input.reason.clone() else {
        return Err(ApiError::validation(
            "1 validation error detected: Value null at 'reason' failed to satisfy \
             constraint: Member must not be null",
        ));
    };
    let stage = inbound_stage(api, &input).await?;
    api.control
        .set_transition(&input.pipeline_name, &stage, false, Some(reason))
        .await?;
    Ok(json!({}))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RetryInput {
    pipeline_name: String,
    stage_name: String,
    pipeline_execution_id: String,
    retry_mode: StageRetryMode,
}

async fn retry_stage(api: &Api, input: RetryInput) -> Result<Value, ApiError> {
    api.control
        .retry_stage(
            &input.pipeline_name,
            &input.stage_name,
            &input.pipeline_execution_id,
            input.retry_mode,
        )
        .await?;
    Ok(json!({ "pipelineExecutionId": input.pipeline_execution_id }))
}

// ---------------------------------------------------------------------------------------
// Tags

/// The pipeline an ARN names, when it is one of this endpoint's pipeline ARNs.
fn pipeline_of_arn<'a>(api: &Api, arn: &'a str) -> Result<&'a str, ApiError> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [prefix, partition, service, region, account, resource] = parts[..] else {
        return Err(ApiError::client(
            "InvalidArnException",
            format!("'{arn}' is not a valid ARN"),
        ));
    };
    if prefix != "arn" || !partition.starts_with("aws") || service != "codepipeline" {
        return Err(ApiError::client(
            "InvalidArnException",
            format!("'{arn}' is not a CodePipeline ARN"),
        ));
    }
    if region != api.region || account != api.account_id || resource.contains(':') {
        return Err(ApiError::client(
            "ResourceNotFoundException",
            format!("no resource with ARN '{arn}'"),
        ));
    }
    Ok(resource)
}

async fn tagged_record(api: &Api, arn: &str) -> Result<Versioned<PipelineRecord>, ApiError> {
    let name = pipeline_of_arn(api, arn)?;
    match api.control.engine.repo.get_pipeline(name).await {
        Ok(record) => Ok(record),
        Err(AppError::PipelineNotFound(_)) => Err(ApiError::client(
            "ResourceNotFoundException",
            format!("no resource with ARN '{arn}'"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Change a pipeline's tags with `change`, conditional on the record read; a record that
/// kept changing under us is `ConcurrentModificationException`.
async fn change_tags(
    api: &Api,
    arn: &str,
    change: impl Fn(&mut Vec<Tag>) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    for _ in 0..TAG_WRITE_ATTEMPTS {
        let current = tagged_record(api, arn).await?;
        let mut next = current.value.clone();
        change(&mut next.tags)?;
        if next.tags == current.value.tags {
            return Ok(());
        }
        match api
            .control
            .engine
            .repo
            .put_pipeline_record(&current, &next)
            .await
        {
            Ok(()) => return Ok(()),
            Err(AppError::Store(StoreError::Conflict { .. })) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::client(
        "ConcurrentModificationException",
        "the pipeline changed while its tags were updated; try again",
    ))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TagResourceInput {
    resource_arn: String,
    tags: Vec<TagInput>,
}

async fn tag_resource(api: &Api, input: TagResourceInput) -> Result<Value, ApiError> {
    let added = check_tags(&input.tags)?;
    change_tags(api, &input.resource_arn, |tags| {
        for tag in &added {
            match tags.iter_mut().find(|t| t.key == tag.key) {
                Some(existing) => existing.value = tag.value.clone(),
                None => tags.push(tag.clone()),
            }
        }
        if tags.len() > MAX_TAGS {
            return Err(ApiError::client(
                "TooManyTagsException",
                format!("a pipeline can carry at most {MAX_TAGS} tags"),
            ));
        }
        Ok(())
    })
    .await?;
    Ok(json!({}))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UntagResourceInput {
    resource_arn: String,
    tag_keys: Vec<String>,
}

async fn untag_resource(api: &Api, input: UntagResourceInput) -> Result<Value, ApiError> {
    change_tags(api, &input.resource_arn, |tags| {
        tags.retain(|t| !input.tag_keys.contains(&t.key));
        Ok(())
    })
    .await?;
    Ok(json!({}))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListTagsInput {
    resource_arn: String,
    next_token: Option<String>,
    max_results: Option<i64>,
}

async fn list_tags(api: &Api, input: ListTagsInput) -> Result<Value, ApiError> {
    let limit = page_size(input.max_results, MAX_RESULTS_PAGE)?;
    let start: usize = match &input.next_token {
        Some(token) => paging::decode(TokenKind::Tags, token)?,
        None => 0,
    };
    let record = tagged_record(api, &input.resource_arn).await?.value;
    let tags: Vec<Value> = record
        .tags
        .iter()
        .skip(start)
        .take(limit)
        .map(|t| json!({"key": t.key, "value": t.value}))
        .collect();
    let mut output = json!({ "tags": tags });
    if start + limit < record.tags.len() {
        output["nextToken"] = Value::String(paging::encode(TokenKind::Tags, &(start + limit))?);
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_operation_is_either_served_or_declared_unsupported() {
        let mut known: Vec<&str> = SERVED_OPERATIONS
            .iter()
            .chain(UNSUPPORTED_OPERATIONS)
            .copied()
            .collect();
        known.sort_unstable();
        let model: Vec<&str> = shape::operation_input_shapes()
            .map(|(name, _)| name)
            .collect();
        assert_eq!(known, model);
    }

    #[test]
    fn missing_members_are_validation_errors_naming_the_member() {
        let error = parse::<ExecutionInput>(json!({"pipelineName": "p"})).unwrap_err();
        assert_eq!(error.error_type, "ValidationException");
        assert!(
            error.message.contains("'pipelineExecutionId'"),
            "{}",
            error.message
        );
    }

    #[test]
    fn members_of_the_wrong_type_are_serialization_errors() {
        let error = parse::<ListPipelinesInput>(json!({"maxResults": "ten"})).unwrap_err();
        assert_eq!(error.error_type, "SerializationException");
        assert!(error.message.contains("maxResults"), "{}", error.message);
    }

    #[test]
    fn page_sizes_stay_within_the_model_range() {
        assert_eq!(page_size(None, 100), Ok(100));
        assert_eq!(page_size(Some(7), 100), Ok(7));
        for bad in [0, -1, 101] {
            assert_eq!(
                page_size(Some(bad), 100).unwrap_err().error_type,
                "ValidationException"
            );
        }
    }

    #[test]
    fn reserved_tag_keys_are_refused() {
        let tags = vec![TagInput {
            key: "aws:cloudformation:stack-name".into(),
            value: "x".into(),
        }];
        assert_eq!(
            check_tags(&tags).unwrap_err().error_type,
            "InvalidTagsException"
        );
    }
}
