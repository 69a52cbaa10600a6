//! Ports (the traits adapters implement), the use cases every runtime shares, and in-memory
//! fakes that keep the real adapters' semantics.

pub mod advance;
pub mod control;
pub mod dispatch;
pub mod error;
pub mod intake;
pub mod memory_store;
pub mod ports;
pub mod repo;
pub mod store;
pub mod store_conformance;
pub mod sweep;
