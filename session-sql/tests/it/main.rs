//! session-sql against real databases: the conformance suite on PostgreSQL,
//! MariaDB/MySQL, and SQLite in a file and in memory; the sweeper; failure
//! behaviour through a proxy that stalls and cuts connections.
//!
//! * `DATABASE_URL_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/test`):
//!   each test gets its own schema, dropped afterwards.
//! * `DATABASE_URL_MYSQL` (default `mysql://root@127.0.0.1:3306/test`): each
//!   test gets its own table, dropped afterwards.
//!
//! Both connect in plain text unless the URL names an SSL mode. With the
//! feature `tls-rustls`, the PostgreSQL suite runs again over TLS
//! (`sslmode=require`), which needs a server with `ssl = on` (Debian's
//! packages turn it on), and the MySQL suite over TLS
//! (`ssl-mode=required`) to `DATABASE_URL_MYSQL_TLS` (default: the
//! `DATABASE_URL_MYSQL` server), a server with TLS on (Debian's MariaDB has
//! it off; `cargo xtask test` starts one that has it). A server that does
//! not answer is reported as SKIPPED, except in CI (`CI=true`), where it is
//! a failure.

mod behaviour;
mod contention;
mod support;

mod postgres {
    session_core::store_conformance!(optional: crate::support::postgres());
}

mod mysql {
    session_core::store_conformance!(optional: crate::support::mysql());
}

/// The whole suite again over a connection that must be encrypted.
#[cfg(feature = "tls-rustls")]
mod postgres_tls {
    session_core::store_conformance!(optional: crate::support::postgres_tls());
}

/// The whole suite again over a connection that must be encrypted.
#[cfg(feature = "tls-rustls")]
mod mysql_tls {
    session_core::store_conformance!(optional: crate::support::mysql_tls());
}

#[cfg(feature = "tls-rustls")]
mod tls;

mod sqlite_file {
    session_core::store_conformance!(crate::support::sqlite_file());
}

/// Two app servers' stores over one database: PostgreSQL, MariaDB/MySQL,
/// and SQLite in one file.
mod postgres_across_instances {
    session_core::store_conformance_across_instances!(optional: crate::support::postgres_pair());
}

mod mysql_across_instances {
    session_core::store_conformance_across_instances!(optional: crate::support::mysql_pair());
}

mod sqlite_file_across_instances {
    session_core::store_conformance_across_instances!(crate::support::sqlite_file_pair());
}

mod sqlite_memory {
    session_core::store_conformance!(crate::support::sqlite_memory());
}
