//! Shared given/when/then helpers for the engine tests: small declarations, a harness that
//! applies inputs (checking on every one that a second application changes nothing), and
//! readers for the effects.
#![allow(dead_code)]

use std::collections::BTreeMap;

use penstock_core::engine::{
    ActionJob, ActionStatus, ArtifactRef, Effect, EngineError, ErrorDetails, EventKind, Execution,
    ExecutionStatus, ExternalExecution, Input, PipelineState, StartRequest, StateChange, Timestamp,
    Trigger, TriggerType, apply,
};
use penstock_core::model::{
    ActionCategory, ActionDeclaration, ActionOwner, ActionTypeId, ArtifactStore, ArtifactStoreType,
    ExecutionMode, InputArtifact, OutputArtifact, PipelineDeclaration, PipelineType,
    PipelineVariableDeclaration, StageDeclaration, StageRetryMode,
};

pub const T0: i64 = 1_698_328_179_208; // 2023-10-26T13:49:39.208Z

pub fn action(name: &str, category: ActionCategory, provider: &str) -> ActionDeclaration {
    ActionDeclaration {
        name: name.to_string(),
        action_type_id: ActionTypeId {
            category,
            owner: ActionOwner::Aws,
            provider: provider.to_string(),
            version: "1".to_string(),
        },
        run_order: None,
        configuration: BTreeMap::new(),
        commands: None,
        output_artifacts: vec![],
        input_artifacts: vec![],
        output_variables: None,
        role_arn: None,
        region: None,
        namespace: None,
        timeout_in_minutes: None,
        environment_variables: None,
    }
}

pub fn source(name: &str, output: &str) -> ActionDeclaration {
    action(name, ActionCategory::Source, "CodeCommit").output(output)
}

pub fn build(name: &str) -> ActionDeclaration {
    action(name, ActionCategory::Build, "CodeBuild")
}

pub fn approval(name: &str) -> ActionDeclaration {
    action(name, ActionCategory::Approval, "Manual")
}

pub trait ActionExt {
    fn run_order(self, order: u32) -> Self;
    fn input(self, artifact: &str) -> Self;
    fn output(self, artifact: &str) -> Self;
    fn namespace(self, namespace: &str) -> Self;
    fn config(self, key: &str, value: &str) -> Self;
    fn region(self, region: &str) -> Self;
    fn timeout(self, minutes: u32) -> Self;
}

impl ActionExt for ActionDeclaration {
    fn run_order(mut self, order: u32) -> Self {
        self.run_order = Some(order);
        self
    }
    fn input(mut self, artifact: &str) -> Self {
        self.input_artifacts.push(InputArtifact {
            name: artifact.to_string(),
        });
        self
    }
    fn output(mut self, artifact: &str) -> Self {
        self.output_artifacts.push(OutputArtifact {
            name: artifact.to_string(),
            files: None,
        });
        self
    }
    fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_string());
        self
    }
    fn config(mut self, key: &str, value: &str) -> Self {
        self.configuration
            .insert(key.to_string(), value.to_string());
        self
    }
    fn region(mut self, region: &str) -> Self {
        self.region = Some(region.to_string());
        self
    }
    fn timeout(mut self, minutes: u32) -> Self {
        self.timeout_in_minutes = Some(minutes);
        self
    }
}

pub fn stage(name: &str, actions: Vec<ActionDeclaration>) -> StageDeclaration {
    StageDeclaration {
        name: name.to_string(),
        blockers: None,
        actions,
        on_failure: None,
        on_success: None,
        before_entry: None,
    }
}

pub fn pipeline(mode: ExecutionMode, stages: Vec<StageDeclaration>) -> PipelineDeclaration {
    PipelineDeclaration {
        name: "myPipeline".to_string(),
        role_arn: "arn:aws:iam::123456789012:role/pipeline".to_string(),
        artifact_store: Some(ArtifactStore {
            store_type: ArtifactStoreType::S3,
            location: "artifact-bucket".to_string(),
            encryption_key: None,
        }),
        artifact_stores: None,
        stages,
        version: Some(1),
        execution_mode: Some(mode),
        pipeline_type: Some(PipelineType::V2),
        variables: None,
        triggers: None,
    }
}

pub fn with_variables(
    mut declaration: PipelineDeclaration,
    variables: &[(&str, Option<&str>)],
) -> PipelineDeclaration {
    declaration.variables = Some(
        variables
            .iter()
            .map(|(name, default)| PipelineVariableDeclaration {
                name: name.to_string(),
                default_value: default.map(str::to_string),
                description: None,
            })
            .collect(),
    );
    declaration
}

/// Source -> Build -> Deploy, one action each.
pub fn three_stages(mode: ExecutionMode) -> PipelineDeclaration {
    pipeline(
        mode,
        vec![
            stage("Source", vec![source("Source", "SourceArtifact")]),
            stage(
                "Build",
                vec![
                    build("Build")
                        .input("SourceArtifact")
                        .output("BuildArtifact"),
                ],
            ),
            stage(
                "Deploy",
                vec![action("Deploy", ActionCategory::Deploy, "CodeDeploy").input("BuildArtifact")],
            ),
        ],
    )
}

pub fn start_request(id: &str) -> StartRequest {
    StartRequest {
        execution_id: id.to_string(),
        trigger: Trigger {
            trigger_type: TriggerType::StartPipelineExecution,
            trigger_detail: "arn:aws:sts::123456789012:assumed-role/Admin/my-user".to_string(),
        },
        variables: BTreeMap::new(),
        source_revisions: vec![],
    }
}

/// Applies inputs one at a time, each twice (on a copy) to check idempotency, and keeps the
/// effects of the first application.
pub struct Harness {
    pub state: PipelineState,
    pub now: Timestamp,
    /// Every effect so far, in order.
    pub log: Vec<Effect>,
}

impl Harness {
    pub fn new(declaration: PipelineDeclaration) -> Self {
        Harness {
            state: PipelineState::new(declaration),
            now: Timestamp(T0),
            log: vec![],
        }
    }

    pub fn try_apply(&mut self, input: Input) -> Result<Vec<Effect>, EngineError> {
        self.now = Timestamp(self.now.0 + 1000);
        let before = self.state.clone();
        let result = apply(&mut self.state, input.clone(), self.now);
        if result.is_err() {
            assert_eq!(self.state, before, "a refused input changed the state");
        }
        let mut again = self.state.clone();
        let second = apply(&mut again, input, self.now);
        assert_eq!(again, self.state, "a second application changed the state");
        if let Ok(effects) = second {
            assert!(
                effects.is_empty(),
                "a second application had effects: {effects:#?}"
            );
        }
        if let Ok(effects) = &result {
            self.log.extend(effects.iter().cloned());
        }
        result
    }

    pub fn apply(&mut self, input: Input) -> Vec<Effect> {
        match self.try_apply(input) {
            Ok(effects) => effects,
            Err(error) => panic!("refused: {error}"),
        }
    }

    pub fn start(&mut self, id: &str) -> Vec<Effect> {
        self.apply(Input::Start(start_request(id)))
    }

    pub fn execution(&self, id: &str) -> &Execution {
        self.state
            .executions
            .get(id)
            .unwrap_or_else(|| panic!("no execution {id}"))
    }

    pub fn status(&self, id: &str) -> ExecutionStatus {
        self.execution(id).status
    }

    /// The `state` of the last pipeline event about the execution (it works after the engine
    /// dropped a finished execution).
    pub fn last_pipeline_event(&self, id: &str) -> Option<String> {
        published(&self.log)
            .into_iter()
            .rev()
            .find(|c| c.kind == EventKind::Pipeline && c.detail["execution-id"] == id)
            .and_then(|c| c.detail["state"].as_str().map(str::to_string))
    }

    pub fn attempt_of(&self, id: &str, stage: &str, action: &str) -> u32 {
        self.action_run(id, stage, action).attempt
    }

    pub fn action_status(&self, id: &str, stage: &str, action: &str) -> ActionStatus {
        self.action_run(id, stage, action).status
    }

    pub fn action_run(
        &self,
        id: &str,
        stage: &str,
        action: &str,
    ) -> &penstock_core::engine::ActionRun {
        let execution = self.execution(id);
        let stage = execution
            .stages
            .iter()
            .find(|s| s.name == stage)
            .unwrap_or_else(|| panic!("no stage {stage}"));
        stage
            .actions
            .iter()
            .find(|a| a.name == action)
            .unwrap_or_else(|| panic!("no action {action}"))
    }

    /// Reports the current attempt succeeded, with one output artifact per declared output.
    pub fn succeed(&mut self, id: &str, stage: &str, action: &str) -> Vec<Effect> {
        let attempt = self.attempt_of(id, stage, action);
        let outputs = self.declared_outputs(id, stage, action);
        self.apply(Input::ActionSucceeded {
            execution_id: id.to_string(),
            stage: stage.to_string(),
            action: action.to_string(),
            attempt,
            output_artifacts: outputs
                .into_iter()
                .map(|name| ArtifactRef {
                    location: format!("s3://artifact-bucket/{id}/{name}/{attempt}"),
                    name,
                    revision_id: None,
                    revision_summary: None,
                })
                .collect(),
            output_variables: BTreeMap::new(),
            external: ExternalExecution::default(),
        })
    }

    pub fn succeed_with_variables(
        &mut self,
        id: &str,
        stage: &str,
        action: &str,
        variables: &[(&str, &str)],
    ) -> Vec<Effect> {
        let attempt = self.attempt_of(id, stage, action);
        self.apply(Input::ActionSucceeded {
            execution_id: id.to_string(),
            stage: stage.to_string(),
            action: action.to_string(),
            attempt,
            output_artifacts: vec![],
            output_variables: variables
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            external: ExternalExecution::default(),
        })
    }

    pub fn fail(&mut self, id: &str, stage: &str, action: &str) -> Vec<Effect> {
        let attempt = self.attempt_of(id, stage, action);
        self.apply(Input::ActionFailed {
            execution_id: id.to_string(),
            stage: stage.to_string(),
            action: action.to_string(),
            attempt,
            error: ErrorDetails {
                code: "JobFailed".to_string(),
                message: "boom".to_string(),
            },
            external: ExternalExecution::default(),
        })
    }

    /// The dispatcher reports the approval started with `token`.
    pub fn open_approval(
        &mut self,
        id: &str,
        stage: &str,
        action: &str,
        token: &str,
    ) -> Vec<Effect> {
        let attempt = self.attempt_of(id, stage, action);
        self.apply(Input::ActionStarted {
            execution_id: id.to_string(),
            stage: stage.to_string(),
            action: action.to_string(),
            attempt,
            external: ExternalExecution::default(),
            approval_token: Some(token.to_string()),
        })
    }

    pub fn decide(
        &mut self,
        id: &str,
        stage: &str,
        action: &str,
        token: &str,
        approved: bool,
    ) -> Result<Vec<Effect>, EngineError> {
        self.try_apply(Input::ApprovalDecided {
            execution_id: id.to_string(),
            stage: stage.to_string(),
            action: action.to_string(),
            token: token.to_string(),
            approved,
            summary: "looks good".to_string(),
            decided_by: Some("arn:aws:iam::123456789012:user/reviewer".to_string()),
        })
    }

    pub fn stop(&mut self, id: &str, abandon: bool) -> Result<Vec<Effect>, EngineError> {
        self.try_apply(Input::Stop {
            execution_id: id.to_string(),
            abandon,
            reason: Some("halt".to_string()),
        })
    }

    pub fn retry(
        &mut self,
        id: &str,
        stage: &str,
        mode: StageRetryMode,
    ) -> Result<Vec<Effect>, EngineError> {
        self.try_apply(Input::Retry {
            execution_id: id.to_string(),
            stage: stage.to_string(),
            mode,
        })
    }

    pub fn disable(&mut self, stage: &str) -> Vec<Effect> {
        self.apply(Input::DisableTransition {
            stage: stage.to_string(),
            reason: "hold".to_string(),
            changed_by: None,
        })
    }

    pub fn enable(&mut self, stage: &str) -> Vec<Effect> {
        self.apply(Input::EnableTransition {
            stage: stage.to_string(),
            changed_by: None,
        })
    }

    fn declared_outputs(&self, id: &str, stage: &str, action: &str) -> Vec<String> {
        let execution = self.execution(id);
        let declaration = &self.state.declarations[&execution.pipeline_version];
        declaration
            .stage(stage)
            .and_then(|s| s.actions.iter().find(|a| a.name == action))
            .map(|a| a.output_artifacts.iter().map(|o| o.name.clone()).collect())
            .unwrap_or_default()
    }

    /// Which execution is in which stage, as (stage, execution) pairs from the locks.
    pub fn lock(&self, stage: &str) -> Option<&str> {
        self.state.stage_locks.get(stage).map(String::as_str)
    }

    pub fn inbound(&self, stage: &str) -> Vec<String> {
        self.state
            .inbound_executions(stage)
            .iter()
            .map(|e| e.id.clone())
            .collect()
    }
}

pub fn jobs(effects: &[Effect]) -> Vec<&ActionJob> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Dispatch(job) => Some(job),
            _ => None,
        })
        .collect()
}

/// (execution, stage, action) of each dispatched job.
pub fn dispatched(effects: &[Effect]) -> Vec<(String, String, String)> {
    jobs(effects)
        .into_iter()
        .map(|j| (j.execution_id.clone(), j.stage.clone(), j.action.clone()))
        .collect()
}

pub fn published(effects: &[Effect]) -> Vec<&StateChange> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Publish(change) => Some(change),
            _ => None,
        })
        .collect()
}

/// Each event as a short line: `pipeline e1 STARTED`, `stage e1 Build SUCCEEDED`,
/// `action e1 Build/Compile FAILED`.
pub fn event_lines(effects: &[Effect]) -> Vec<String> {
    published(effects)
        .into_iter()
        .map(|change| {
            let d = &change.detail;
            let text = |key: &str| {
                d.get(key)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            match change.kind {
                EventKind::Pipeline => {
                    format!("pipeline {} {}", text("execution-id"), text("state"))
                }
                EventKind::Stage => format!(
                    "stage {} {} {}",
                    text("execution-id"),
                    text("stage"),
                    text("state")
                ),
                EventKind::Action => format!(
                    "action {} {}/{} {}",
                    text("execution-id"),
                    text("stage"),
                    text("action"),
                    text("state")
                ),
            }
        })
        .collect()
}

pub fn triple(execution: &str, stage: &str, action: &str) -> (String, String, String) {
    (execution.to_string(), stage.to_string(), action.to_string())
}
