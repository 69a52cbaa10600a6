//! The use cases' error: CodePipeline's exception name, a message a caller can act on, and
//! whether retrying can help.

use penstock_core::engine::EngineError;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("pipeline not found: {0}")]
    PipelineNotFound(String),
    #[error("{0}")]
    PipelineVersionNotFound(String),
    #[error("a pipeline named {0} already exists")]
    PipelineNameInUse(String),
    #[error("{0}")]
    InvalidStructure(String),
    /// The declaration breaks CodePipeline's structural rules; every error, in order.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    InvalidDeclaration(Vec<penstock_core::validate::ValidationError>),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    ExecutionNotFound(String),
    /// The state kept changing under us; the caller may try again.
    #[error("too many concurrent changes to pipeline {0}; try again")]
    Contended(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event bus: {0}")]
    Bus(#[from] crate::ports::BusError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// The CodePipeline exception name the control plane answers with.
    pub fn exception_name(&self) -> &'static str {
        match self {
            AppError::Engine(e) => e.exception_name(),
            AppError::PipelineNotFound(_) => "PipelineNotFoundException",
            AppError::PipelineVersionNotFound(_) => "PipelineVersionNotFoundException",
            AppError::PipelineNameInUse(_) => "PipelineNameInUseException",
            AppError::InvalidStructure(_) => "InvalidStructureException",
            AppError::InvalidDeclaration(errors) => errors
                .first()
                .map(|e| e.exception.as_str())
                .unwrap_or("InvalidStructureException"),
            AppError::Validation(_) => "ValidationException",
            AppError::ExecutionNotFound(_) => "PipelineExecutionNotFoundException",
            AppError::Contended(_) => "ConflictException",
            AppError::Store(StoreError::Throttled(_)) => "ThrottlingException",
            AppError::Store(_) | AppError::Bus(_) | AppError::Internal(_) => "InternalFailure",
        }
    }

    /// Whether the same request can succeed later (Lambda handlers report this to the runtime).
    pub fn is_retryable(&self) -> bool {
        match self {
            AppError::Store(e) => e.is_retryable(),
            AppError::Bus(_) | AppError::Contended(_) => true,
            _ => false,
        }
    }
}
