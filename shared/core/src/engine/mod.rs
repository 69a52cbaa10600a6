//! The execution state machine: `apply(state, input, now) -> effects`, pure and deterministic.

mod apply;
mod events;
mod iso8601;
mod job;
mod references;
mod types;
mod view;

pub use apply::{APPROVAL_REJECTED, MAX_LIVE_EXECUTIONS, TIMED_OUT, apply, apply_pruning};
pub use events::{state as event_state, trigger_type_name};
pub use job::{
    INPUT_ARTIFACT_MISSING, VARIABLES_UNRESOLVED, action_execution_id, action_timeout_minutes,
    default_timeout_minutes, dispatched_job, is_manual_approval, pinned_source_revision,
};
pub use types::*;
