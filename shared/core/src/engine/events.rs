//! The three CodePipeline state-change events (pipeline, stage, action) with `detail` shaped as
//! CodePipeline publishes it: kebab-case members, `version` and `pipeline-execution-attempt` as
//! numbers (`1.0`), `start-time` as ISO-8601, artifacts as `{name, s3location{bucket, key}}`.

use serde_json::{Map, Value, json};

use super::types::{
    ActionRun, ArtifactRef, Effect, EventKind, Execution, StateChange, Timestamp, TriggerType,
    artifact_store_for,
};
use crate::model::{ArtifactStore, PipelineDeclaration};

/// `detail.state` of a pipeline, stage or action event.
pub mod state {
    pub const STARTED: &str = "STARTED";
    pub const STOPPING: &str = "STOPPING";
    pub const STOPPED: &str = "STOPPED";
    pub const SUCCEEDED: &str = "SUCCEEDED";
    pub const FAILED: &str = "FAILED";
    pub const SUPERSEDED: &str = "SUPERSEDED";
    pub const CANCELED: &str = "CANCELED";
    pub const RESUMED: &str = "RESUMED";
    pub const ABANDONED: &str = "ABANDONED";
}

/// The name CodePipeline uses for a trigger type in `execution-trigger.trigger-type`.
pub fn trigger_type_name(trigger_type: TriggerType) -> &'static str {
    match trigger_type {
        TriggerType::CreatePipeline => "CreatePipeline",
        TriggerType::StartPipelineExecution => "StartPipelineExecution",
        TriggerType::PollForSourceChanges => "PollForSourceChanges",
        TriggerType::Webhook => "Webhook",
        TriggerType::CloudWatchEvent => "CloudWatchEvent",
        TriggerType::PutActionRevision => "PutActionRevision",
        TriggerType::WebhookV2 => "WebhookV2",
        TriggerType::ManualRollback => "ManualRollback",
        TriggerType::AutomatedRollback => "AutomatedRollback",
    }
}

fn publish(kind: EventKind, now: Timestamp, detail: Map<String, Value>) -> Effect {
    Effect::Publish(StateChange {
        kind,
        time: now,
        detail: Value::Object(detail),
    })
}

fn head(execution: &Execution) -> Map<String, Value> {
    let mut detail = Map::new();
    detail.insert("pipeline".into(), json!(execution.pipeline_name));
    detail.insert("execution-id".into(), json!(execution.id));
    detail.insert(
        "start-time".into(),
        json!(execution.start_time.to_iso8601()),
    );
    detail
}

/// `state`, `version`, `pipeline-execution-attempt`: the members every event ends with.
fn tail(detail: &mut Map<String, Value>, execution: &Execution, state: &str) {
    detail.insert("state".into(), json!(state));
    detail.insert("version".into(), json!(execution.pipeline_version as f64));
    detail.insert(
        "pipeline-execution-attempt".into(),
        json!(f64::from(execution.attempt)),
    );
}

/// "CodePipeline Pipeline Execution State Change". `STARTED` carries `execution-trigger`,
/// `STOPPING` carries `stop-execution-comments` when the stop gave a reason.
pub(crate) fn pipeline_event(execution: &Execution, state: &str, now: Timestamp) -> Effect {
    let mut detail = head(execution);
    if state == state::STARTED {
        detail.insert(
            "execution-trigger".into(),
            json!({
                "trigger-type": trigger_type_name(execution.trigger.trigger_type),
                "trigger-detail": execution.trigger.trigger_detail,
            }),
        );
    }
    tail(&mut detail, execution, state);
    if state == state::STOPPING
        && let Some(reason) = execution.stop.as_ref().and_then(|s| s.reason.as_ref())
    {
        detail.insert("stop-execution-comments".into(), json!(reason));
    }
    publish(EventKind::Pipeline, now, detail)
}

/// "CodePipeline Stage Execution State Change"; after a retry of the stage every event carries
/// `stage-last-retry-attempt-time`.
pub(crate) fn stage_event(
    execution: &Execution,
    stage_index: usize,
    state: &str,
    now: Timestamp,
) -> Effect {
    let mut detail = head(execution);
    if let Some(stage) = execution.stages.get(stage_index) {
        if let Some(at) = stage.retry.last_retry_at {
            detail.insert(
                "stage-last-retry-attempt-time".into(),
                json!(at.to_iso8601()),
            );
        }
        detail.insert("stage".into(), json!(stage.name));
    }
    tail(&mut detail, execution, state);
    publish(EventKind::Stage, now, detail)
}

/// "CodePipeline Action Execution State Change". `STARTED` carries `input-artifacts`;
/// `SUCCEEDED` carries `output-artifacts`; the end states carry `execution-result` (with
/// `error-code` on failure). `region` is the action's region when it declares one: the pipeline's
/// own region is not part of the declaration, so the publisher fills it in when absent.
pub(crate) fn action_event(
    declaration: &PipelineDeclaration,
    execution: &Execution,
    stage_index: usize,
    action_index: usize,
    state: &str,
    now: Timestamp,
) -> Effect {
    let mut detail = head(execution);
    let stage_declaration = declaration.stages.get(stage_index);
    let action_declaration = stage_declaration.and_then(|s| s.actions.get(action_index));
    let run = execution
        .stages
        .get(stage_index)
        .and_then(|s| s.actions.get(action_index));
    if let Some(stage) = stage_declaration {
        detail.insert("stage".into(), json!(stage.name));
    }
    let store = artifact_store_for(
        declaration,
        action_declaration.and_then(|a| a.region.as_deref()),
    );
    if let Some(run) = run {
        if matches!(state, state::SUCCEEDED | state::FAILED)
            && let Some(result) = execution_result(run, state == state::FAILED)
        {
            detail.insert("execution-result".into(), result);
        }
        if state == state::SUCCEEDED {
            detail.insert(
                "output-artifacts".into(),
                artifacts_json(&run.output_artifacts, store.as_ref()),
            );
        }
        if let Some(id) = &run.action_execution_id {
            detail.insert("action-execution-id".into(), json!(id));
        }
        detail.insert("action".into(), json!(run.name));
        if state == state::STARTED {
            detail.insert(
                "input-artifacts".into(),
                artifacts_json(&run.input_artifacts, store.as_ref()),
            );
        }
    }
    detail.insert("state".into(), json!(state));
    if let Some(action) = action_declaration {
        if let Some(region) = &action.region {
            detail.insert("region".into(), json!(region));
        }
        let type_id = &action.action_type_id;
        detail.insert(
            "type".into(),
            json!({
                "owner": type_id.owner.as_str(),
                "provider": type_id.provider,
                "category": type_id.category.as_str(),
                "version": type_id.version,
            }),
        );
    }
    detail.insert("version".into(), json!(execution.pipeline_version as f64));
    detail.insert(
        "pipeline-execution-attempt".into(),
        json!(f64::from(execution.attempt)),
    );
    publish(EventKind::Action, now, detail)
}

fn execution_result(run: &ActionRun, failed: bool) -> Option<Value> {
    let mut result = Map::new();
    if let Some(url) = &run.external.url {
        result.insert("external-execution-url".into(), json!(url));
    }
    if let Some(summary) = &run.external.summary {
        result.insert("external-execution-summary".into(), json!(summary));
    }
    if let Some(id) = &run.external.id {
        result.insert("external-execution-id".into(), json!(id));
    }
    if failed && let Some(error) = &run.error {
        result.insert("error-code".into(), json!(error.code));
    }
    (!result.is_empty()).then_some(Value::Object(result))
}

/// `[{name, s3location{bucket, key}}]`. An `s3://bucket/key` location is split; any other
/// location (a local store's path) is the key inside the action's artifact store.
fn artifacts_json(artifacts: &[ArtifactRef], store: Option<&ArtifactStore>) -> Value {
    let list = artifacts
        .iter()
        .map(|artifact| {
            let (bucket, key) = match artifact
                .location
                .strip_prefix("s3://")
                .and_then(|rest| rest.split_once('/'))
            {
                Some((bucket, key)) => (bucket.to_string(), key.to_string()),
                None => (
                    store.map(|s| s.location.clone()).unwrap_or_default(),
                    artifact.location.clone(),
                ),
            };
            json!({"name": artifact.name, "s3location": {"bucket": bucket, "key": key}})
        })
        .collect();
    Value::Array(list)
}
