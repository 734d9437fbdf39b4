//! MySQL and MariaDB.

use std::time::Duration;

use sqlx::mysql::MySqlPoolOptions;

use crate::{Dialect, MigrationLock, SqlStoreError};

pub(crate) static MYSQL: Dialect = Dialect {
    numbered: false,
    quote: '`',
    migrations: &[
        (
            1,
            &["CREATE TABLE IF NOT EXISTS {t} (
                id BINARY(32) NOT NULL PRIMARY KEY,
                data LONGBLOB NOT NULL,
                version BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                owner VARCHAR(512) NULL,
                INDEX {n}_expires_at (expires_at),
                INDEX {n}_owner (owner)
            ) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin"],
        ),
        (
            2,
            // Owners compare byte for byte. `utf8mb4_bin` is a PAD SPACE
            // collation, so `alice ` matched `alice` (log out everywhere
            // reached the other's sessions); binary strings have no padding.
            &["ALTER TABLE {t} MODIFY owner VARBINARY(2048) NULL"],
        ),
    ],
    // `DELETE ... LIMIT` waits for a row another transaction holds and
    // goes on past it if that one deleted it: it deletes its limit while
    // rows are due.
    sweep: "DELETE FROM {t} WHERE expires_at <= ? LIMIT ?",
    sweep_counts_pick: false,
    migrations_table:
        "CREATE TABLE IF NOT EXISTS {m} (version BIGINT NOT NULL PRIMARY KEY) ENGINE = InnoDB",
    dynamic_types: false,
    text_holds_nul: true,
    binary_owner: true,
    // Waits up to the store's migration wait for another instance's
    // migration (the second parameter, in seconds). `GET_LOCK`'s names are
    // the server's, not a database's: the name ends with a hash of the
    // table's database (`{d}`), so that apps on other databases of the
    // server do not wait for each other, and stays within the 64
    // characters a lock name may have.
    migration_lock: MigrationLock::Session {
        lock: "SELECT GET_LOCK(CONCAT(?, ' ', SHA1(COALESCE({d}, ''))), ?)",
        unlock: "SELECT RELEASE_LOCK(CONCAT(?, ' ', SHA1(COALESCE({d}, ''))))",
    },
};

sql_store!(
    /// Sessions in a MySQL or MariaDB table.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), session_sql::SqlStoreError> {
    /// let store = session_sql::MySqlStore::connect("mysql://root@127.0.0.1/test").await?;
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    MySqlStore,
    sqlx::MySql,
    MYSQL
);

impl MySqlStore {
    /// Connects a pool (10 connections, 5 s to acquire one) to `url`.
    ///
    /// Each connection sets `innodb_lock_wait_timeout` to 5 seconds, the
    /// manager's default store timeout, instead of the server's 50: a
    /// statement the store gave up on (the store timeout, or a request that
    /// went away) closes its connection, but the server does not notice
    /// while the statement waits for a row lock another transaction holds,
    /// and would otherwise write when that lock goes, up to 50 s after the
    /// request answered, keeping a server connection of its own busy all the
    /// while (under a long lock, enough of them use up `max_connections`).
    /// A statement that waits longer fails with a lock wait timeout, an
    /// [`Unavailable`](session_core::StoreErrorKind::Unavailable) error. A
    /// pool of your own ([`from_pool`](Self::from_pool)) gets the same with
    /// `SET SESSION innodb_lock_wait_timeout = 5` in its `after_connect`.
    ///
    /// # Errors
    /// [`SqlStoreError::Connect`] when the database does not answer.
    pub async fn connect(url: &str) -> Result<Self, SqlStoreError> {
        let pool = MySqlPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(|conn, _| {
                Box::pin(async move {
                    let set = sqlx::query("SET SESSION innodb_lock_wait_timeout = 5")
                        .execute(conn)
                        .await;
                    match set {
                        // A server without InnoDB has no such variable
                        // (1193); its tables need no lock waits bounded.
                        Err(sqlx::Error::Database(e))
                            if e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                                .is_some_and(|e| e.number() == 1193) =>
                        {
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
