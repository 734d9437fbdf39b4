//! session-sql against real databases: the conformance suite on PostgreSQL,
//! MariaDB/MySQL, and SQLite in a file and in memory; the sweeper; failure
//! behaviour through a proxy that stalls and cuts connections.
//!
//! * `DATABASE_URL_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`):
//!   each test gets its own schema, dropped afterwards.
//! * `DATABASE_URL_MYSQL` (default `mysql://root@127.0.0.1:3306/test`): each
//!   test gets its own table, dropped afterwards.
//!
//! A server that does not answer is reported as SKIPPED, except in CI
//! (`CI=true`), where it is a failure.

mod behaviour;
mod support;

mod postgres {
    session_core::store_conformance!(optional: crate::support::postgres());
}

mod mysql {
    session_core::store_conformance!(optional: crate::support::mysql());
}

mod sqlite_file {
    session_core::store_conformance!(crate::support::sqlite_file());
}

mod sqlite_memory {
    session_core::store_conformance!(crate::support::sqlite_memory());
}
