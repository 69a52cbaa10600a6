//! Building the [`ActionJob`] of an action attempt: resolved configuration, input artifacts,
//! deadline, artifact store, pinned source revision, and the attempt's deterministic id.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::references;
use super::types::{
    ActionJob, ArtifactRef, ErrorDetails, Execution, SourceRevision, artifact_store_for,
};
use crate::model::{
    ActionCategory, ActionDeclaration, ActionOwner, ActionTypeId, PipelineDeclaration,
};

/// Error code of an action whose configuration references variables that have no value.
pub const VARIABLES_UNRESOLVED: &str = "VariablesUnresolved";
/// Error code of an action whose input artifact was never produced in its execution.
pub const INPUT_ARTIFACT_MISSING: &str = "ConfigurationError";

/// The id of one attempt of one action: the same inputs always give the same id, and different
/// (execution, stage, action, attempt) give different ids. Shaped as an RFC 9562 version-8 UUID
/// made from the SHA-256 of the four parts, so that it passes wherever an action execution id
/// (a UUID in CodePipeline) is expected.
pub fn action_execution_id(execution_id: &str, stage: &str, action: &str, attempt: u32) -> String {
    let mut hasher = Sha256::new();
    // Length prefixes keep ("a", "bc") and ("ab", "c") apart.
    for part in [execution_id, stage, action] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    hasher.update(attempt.to_be_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Whether the action is a Manual approval (its result comes from `PutApprovalResult`).
pub fn is_manual_approval(type_id: &ActionTypeId) -> bool {
    type_id.category == ActionCategory::Approval && type_id.provider == "Manual"
}

/// The provider's default timeout in minutes (SEMANTICS §10).
pub fn default_timeout_minutes(type_id: &ActionTypeId) -> i64 {
    const HOUR: i64 = 60;
    const DAY: i64 = 24 * HOUR;
    if is_manual_approval(type_id) {
        return 7 * DAY;
    }
    if type_id.owner == ActionOwner::Custom {
        return DAY;
    }
    match (type_id.category, type_id.provider.as_str()) {
        (_, "CloudFormation" | "CloudFormationStackSet" | "CloudFormationStackInstances") => {
            3 * DAY
        }
        (_, "CodeDeploy" | "CodeDeployToECS") => 5 * DAY,
        (ActionCategory::Deploy, "S3") => 90,
        (_, "CodeBuild") => 8 * HOUR,
        (_, "StepFunctions") => 7 * DAY,
        (_, "Lambda") => DAY,
        _ => HOUR,
    }
}

/// The action's timeout: its `timeoutInMinutes` when declared, the provider default otherwise.
pub fn action_timeout_minutes(action: &ActionDeclaration) -> i64 {
    action
        .timeout_in_minutes
        .map(i64::from)
        .unwrap_or_else(|| default_timeout_minutes(&action.action_type_id))
}

/// The revision the execution pins for a source action, if any.
pub fn pinned_source_revision<'e>(
    execution: &'e Execution,
    action: &ActionDeclaration,
) -> Option<&'e SourceRevision> {
    if action.action_type_id.category != ActionCategory::Source {
        return None;
    }
    execution
        .source_revisions
        .iter()
        .find(|r| r.action_name == action.name)
}

/// What an action attempt starts with, resolved from the execution as it is now.
pub(crate) struct Prepared {
    pub configuration: BTreeMap<String, String>,
    pub input_artifacts: Vec<ArtifactRef>,
}

/// Resolves the configuration and looks up the input artifacts; the error fails the action.
pub(crate) fn prepare(
    action: &ActionDeclaration,
    execution: &Execution,
) -> Result<Prepared, ErrorDetails> {
    let lookup = |namespace: &str, key: &str| -> Option<String> {
        match namespace {
            "codepipeline" => (key == "PipelineExecutionId").then(|| execution.id.clone()),
            "variables" => execution.variables.get(key).cloned(),
            other => execution.namespaces.get(other)?.get(key).cloned(),
        }
    };
    let mut unresolved = Vec::new();
    let configuration = action
        .configuration
        .iter()
        .map(|(name, value)| {
            (
                name.clone(),
                references::resolve(value, &lookup, &mut unresolved),
            )
        })
        .collect();
    if !unresolved.is_empty() {
        return Err(ErrorDetails {
            code: VARIABLES_UNRESOLVED.to_string(),
            message: format!(
                "One or more variables could not be resolved: {}",
                unresolved.join(", ")
            ),
        });
    }
    let mut input_artifacts = Vec::with_capacity(action.input_artifacts.len());
    for input in &action.input_artifacts {
        match execution.artifacts.get(&input.name) {
            Some(found) => input_artifacts.push(found.clone()),
            None => {
                return Err(ErrorDetails {
                    code: INPUT_ARTIFACT_MISSING.to_string(),
                    message: format!(
                        "Input artifact {} was not produced in this execution",
                        input.name
                    ),
                });
            }
        }
    }
    Ok(Prepared {
        configuration,
        input_artifacts,
    })
}

/// The job of the attempt currently recorded for an action (built from what was resolved when it
/// was dispatched). `None` when the indices do not name a dispatched action. The sweeper uses it
/// to publish a dispatch again whose first publish was lost.
pub fn dispatched_job(
    declaration: &PipelineDeclaration,
    execution: &Execution,
    stage_index: usize,
    action_index: usize,
) -> Option<ActionJob> {
    let stage = declaration.stages.get(stage_index)?;
    let action = stage.actions.get(action_index)?;
    let run = execution
        .stages
        .get(stage_index)?
        .actions
        .get(action_index)?;
    Some(ActionJob {
        pipeline_name: execution.pipeline_name.clone(),
        pipeline_version: execution.pipeline_version,
        execution_id: execution.id.clone(),
        stage: stage.name.clone(),
        action: action.name.clone(),
        attempt: run.attempt,
        action_execution_id: run.action_execution_id.clone()?,
        action_type_id: action.action_type_id.clone(),
        configuration: run.resolved_configuration.clone(),
        input_artifacts: run.input_artifacts.clone(),
        output_artifacts: action
            .output_artifacts
            .iter()
            .map(|a| a.name.clone())
            .collect(),
        role_arn: action.role_arn.clone(),
        region: action.region.clone(),
        namespace: action.namespace.clone(),
        artifact_store: artifact_store_for(declaration, action.region.as_deref()),
        source_revision: pinned_source_revision(execution, action).cloned(),
        deadline: run.deadline?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_execution_ids_are_uuid_shaped_stable_and_distinct() {
        let id = action_execution_id("e1", "Build", "Compile", 1);
        assert_eq!(id, action_execution_id("e1", "Build", "Compile", 1));
        assert_eq!(id.len(), 36);
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, vec![8, 4, 4, 4, 12]);
        assert_eq!(&id[14..15], "8");
        assert_ne!(id, action_execution_id("e1", "Build", "Compile", 2));
        assert_ne!(id, action_execution_id("e2", "Build", "Compile", 1));
        assert_ne!(
            action_execution_id("e1", "ab", "c", 1),
            action_execution_id("e1", "a", "bc", 1)
        );
    }
}
