//! Embedded adapters: SQLite state, the in-process bus, encrypted file artifacts and the local
//! action providers.

pub mod archive;
pub mod artifact_files;
pub mod bucket;
pub mod buildspec;
pub mod crypto;
pub mod git_source;
