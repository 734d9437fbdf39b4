//! SQLite.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};

use crate::{Dialect, MigrationLock, SqlStoreError};

pub(crate) static SQLITE: Dialect = Dialect {
    numbered: false,
    quote: '"',
    migrations: &[(
        1,
        &[
            "CREATE TABLE IF NOT EXISTS {t} (
                id BLOB NOT NULL PRIMARY KEY,
                data BLOB NOT NULL,
                version INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                owner TEXT
            )",
            "CREATE INDEX IF NOT EXISTS \"{n}_expires_at\" ON {t} (expires_at)",
            "CREATE INDEX IF NOT EXISTS \"{n}_owner\" ON {t} (owner) WHERE owner IS NOT NULL",
        ],
    )],
    // One writer at a time: nothing changes the rows of a pick under it.
    sweep: "DELETE FROM {t} WHERE id IN (SELECT id FROM {t} WHERE expires_at <= ? LIMIT ?)",
    sweep_counts_pick: false,
    migrations_table: "CREATE TABLE IF NOT EXISTS {m} (version INTEGER NOT NULL PRIMARY KEY)",
    dynamic_types: true,
    text_holds_nul: true,
    binary_owner: false,
    migration_lock: MigrationLock::None,
};

sql_store!(
    /// Sessions in a SQLite database: a file, or memory.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), session_sql::SqlStoreError> {
    /// let store = session_sql::SqliteStore::connect("sqlite:sessions.db").await?;
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    SqliteStore,
    sqlx::Sqlite,
    SQLITE
);

impl SqliteStore {
    /// Opens `url` (`sqlite:path/to/file.db`, created if missing, or
    /// `sqlite::memory:`). Files use write-ahead logging and wait up to 5 s
    /// for a lock; an in-memory database is served by one pooled connection,
    /// and a second one, outside the pool, keeps it for as long as the store
    /// (any clone of it) lives.
    ///
    /// # Errors
    /// [`SqlStoreError::Connect`] for a bad URL or a file that cannot be
    /// opened.
    pub async fn connect(url: &str) -> Result<Self, SqlStoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(SqlStoreError::Connect)?
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(5));
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        // An in-memory database lives while a connection to it is open:
        // one outside the pool keeps it when sqlx closes the pool's (as it
        // does one whose statement was abandoned by the store timeout or a
        // request that went away).
        let keeper = if memory {
            let keeper = sqlx::ConnectOptions::connect(&options)
                .await
                .map_err(SqlStoreError::Connect)?;
            Some(std::sync::Arc::new(std::sync::Mutex::new(keeper)))
        } else {
            None
        };
        let pool = if memory {
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options.journal_mode(SqliteJournalMode::Wal))
                .await
        }
        .map_err(SqlStoreError::Connect)?;
        let mut store = Self::from_pool(pool);
        store.keeper = keeper.map(|k| k as std::sync::Arc<dyn std::any::Any + Send + Sync>);
        Ok(store)
    }
}
