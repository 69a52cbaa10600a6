//! Embedded adapters: SQLite state, the in-process bus, encrypted file artifacts and the local
//! action providers.

pub mod adapters;
pub mod archive;
pub mod artifact_files;
pub mod bucket;
pub mod build_provider;
pub mod buildspec;
pub mod bus;
pub mod commit_status;
pub mod crypto;
pub mod git_source;
pub mod github_source;
pub mod providers;
pub mod runtime;
pub mod scheduler;
pub mod sqlite_store;
