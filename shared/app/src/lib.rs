//! Ports (the traits adapters implement), the use cases every runtime shares, and in-memory
//! fakes that keep the real adapters' semantics.

pub mod memory_store;
pub mod store;
pub mod store_conformance;
