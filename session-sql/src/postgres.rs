//! PostgreSQL.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;

use crate::{Dialect, MigrationLock, SqlStoreError};

pub(crate) static POSTGRES: Dialect = Dialect {
    numbered: true,
    quote: '"',
    migrations: &[(
        1,
        &[
            "CREATE TABLE IF NOT EXISTS {t} (
                id BYTEA PRIMARY KEY,
                data BYTEA NOT NULL,
                version BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                owner TEXT
            )",
            "CREATE INDEX IF NOT EXISTS \"{n}_expires_at\" ON {t} (expires_at)",
            "CREATE INDEX IF NOT EXISTS \"{n}_owner\" ON {t} (owner) WHERE owner IS NOT NULL",
        ],
    )],
    // The outer condition is checked again on the row a concurrent save or
    // touch has just extended (PostgreSQL re-evaluates a DELETE's own WHERE
    // on the row version it waited for, not the subquery): without it, the
    // extended session was deleted. A row of the pick that another
    // transaction deleted meanwhile is passed over, so the statement counts
    // its pick too: only a short pick means that no more rows are due (the
    // pick, referenced twice, is computed once). `$1` is the first
    // placeholder again.
    sweep: "WITH picked AS (SELECT id FROM {t} WHERE expires_at <= ? LIMIT ?), \
            gone AS (DELETE FROM {t} WHERE id IN (SELECT id FROM picked) \
                     AND expires_at <= $1 RETURNING 1) \
            SELECT (SELECT COUNT(*) FROM picked), (SELECT COUNT(*) FROM gone)",
    sweep_counts_pick: true,
    migrations_table: "CREATE TABLE IF NOT EXISTS {m} (version BIGINT PRIMARY KEY)",
    dynamic_types: false,
    text_holds_nul: false,
    binary_owner: false,
    migration_lock: MigrationLock::Transaction("SELECT pg_advisory_xact_lock(hashtext(?))"),
};

sql_store!(
    /// Sessions in a PostgreSQL table.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), session_sql::SqlStoreError> {
    /// let store = session_sql::PostgresStore::connect("postgres://postgres@127.0.0.1/test").await?;
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    PostgresStore,
    sqlx::Postgres,
    POSTGRES
);

impl PostgresStore {
    /// Connects a pool (10 connections, 5 s to acquire one) to `url`.
    ///
    /// Each connection sets `client_connection_check_interval` to one
    /// second (PostgreSQL 14 and later, on Linux; elsewhere the setting is
    /// skipped): a statement the store gave up on (the manager's store
    /// timeout, or a request that went away) closes its connection, and the
    /// server then ends the statement within a second instead of letting it
    /// wait on for a row lock another transaction holds and write when that
    /// lock goes, long after the request answered; nor does each abandoned
    /// statement keep a server process of its own busy meanwhile, which,
    /// under a long lock, used up the server's `max_connections`. (Behind a
    /// pooler such as PgBouncer the server's connection is the pooler's,
    /// which stays open: set the pooler's own query timeouts instead.) A pool of
    /// your own ([`from_pool`](Self::from_pool)) gets the same with
    /// `SET client_connection_check_interval = 1000` in its `after_connect`.
    ///
    /// # Errors
    /// [`SqlStoreError::Connect`] when the database does not answer.
    pub async fn connect(url: &str) -> Result<Self, SqlStoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    let set = sqlx::query("SET client_connection_check_interval = 1000")
                        .execute(conn)
                        .await;
                    match set {
                        // Before PostgreSQL 14 the setting does not exist
                        // (42704), and off Linux it must stay 0 (22023): the
                        // connection works without it. Any other refusal (a
                        // pooler that filters `SET`) too, but say so.
                        Err(sqlx::Error::Database(e)) => {
                            if matches!(e.code().as_deref(), Some("42704" | "22023")) {
                                tracing::debug!(error = %e, "client_connection_check_interval not available");
                            } else {
                                tracing::warn!(error = %e, "could not set client_connection_check_interval: statements abandoned by the store timeout may wait on in the server");
                            }
                            Ok(())
                        }
                        other => other.map(drop),
                    }
                })
            })
            .connect(url)
            .await
            .map_err(SqlStoreError::Connect)?;
        Ok(Self::from_pool(pool))
    }
}
