//! The execution state machine: `apply(state, input, now) -> effects`, pure and deterministic.

mod types;

pub use types::*;
