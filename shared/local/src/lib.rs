//! Embedded adapters: SQLite state, the in-process bus, encrypted file artifacts and the local
//! action providers.

pub mod adapters;
pub mod build_provider;
pub mod bus;
pub mod providers;
pub mod runtime;
pub mod sqlite_store;
