//! The execution state machine: `apply(state, input, now) -> effects`, pure and deterministic.

mod apply;
mod events;
mod iso8601;
mod job;
mod references;
mod types;
mod view;

pub use apply::{APPROVAL_REJECTED, MAX_LIVE_EXECUTIONS, TIMED_OUT, apply};
pub use events::{state as event_state, trigger_type_name};
pub use job::{
    INPUT_ARTIFACT_MISSING, VARIABLES_UNRESOLVED, action_execution_id, action_timeout_minutes,
    default_timeout_minutes, dispatched_job, is_manual_approval, pinned_source_revision,
};
pub use types::*;

// Until the state machine lands, keep the crate buildable for the layers above.
impl PipelineState {
    pub fn new(declaration: crate::model::PipelineDeclaration) -> Self {
        let version = declaration.version.unwrap_or(1);
        Self {
            pipeline_name: declaration.name.clone(),
            current_version: version,
            declarations: std::iter::once((version, declaration)).collect(),
            disabled_transitions: Default::default(),
            enabled_transitions: Default::default(),
            stage_locks: Default::default(),
            waiting: Default::default(),
            stage_latest: Default::default(),
            executions: Default::default(),
        }
    }
}

pub fn apply(
    _state: &mut PipelineState,
    _input: Input,
    _now: Timestamp,
) -> Result<Vec<Effect>, EngineError> {
    Err(EngineError::Validation("engine not built yet".into()))
}
