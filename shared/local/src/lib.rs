//! Embedded adapters: SQLite state, the in-process bus, encrypted file artifacts and the local
//! action providers.

pub mod sqlite_store;
