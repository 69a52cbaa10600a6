//! Penstock's pure core: the CodePipeline declaration model, its validation, and the execution
//! state machine. No IO, no clock reads, no random ids: callers pass time and ids in.

pub mod engine;
pub mod model;
pub mod providers;
pub mod shape;
pub mod triggers;
pub mod validate;
pub mod variables;
