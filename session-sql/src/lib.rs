//! SQL session stores for [`session_core`] through [sqlx]: PostgreSQL
//! ([`PostgresStore`], feature `postgres`), MySQL and MariaDB
//! ([`MySqlStore`], feature `mysql`) and SQLite ([`SqliteStore`], feature
//! `sqlite`).
//!
//! ```no_run
//! # #[cfg(feature = "postgres")]
//! # async fn run() -> Result<(), session_sql::SqlStoreError> {
//! use std::time::Duration;
//! use session_core::{Config, Manager, Sweeper};
//! use session_sql::{PostgresStore, Table};
//!
//! let store = PostgresStore::connect("postgres://app@localhost/app")
//!     .await?
//!     .with_table(Table::new("sessions")?.with_schema("auth")?);
//! store.migrate().await?; // creates the table and its indexes if needed
//! let manager = Manager::new(store, Config::default());
//! // Deletes expired rows in batches every minute, until dropped.
//! let _sweeper = Sweeper::spawn(manager.store().clone(), Duration::from_secs(60));
//! # Ok(()) }
//! ```
//!
//! # The table
//!
//! | column | holds |
//! |---|---|
//! | `id` | the record id (32 bytes, primary key) |
//! | `data` | the encoded [`Record`] |
//! | `version` | the compare-and-set version |
//! | `expires_at` | the deadline, milliseconds since the epoch (indexed) |
//! | `owner` | the owner, or NULL (indexed) |
//!
//! Each store's `migrate` ([`PostgresStore::migrate`] and its siblings) applies the migrations shipped
//! with this crate (recorded in `<table>_migrations`), so several app
//! instances can run it at start-up. Each migration's statements can run
//! again over the tables they made, so a migration interrupted after its
//! DDL (which MySQL commits at once) and before its row completes at the
//! next start.
//!
//! On MySQL and MariaDB, migration 2 (the `owner` column to `VARBINARY`)
//! rewrites the table: on a table that already holds many sessions it
//! blocks their writes until it is done. Run `migrate` for that upgrade at
//! a quiet time, or from one instance before the others start.
//!
//! # Queries
//!
//! One statement each in the common case: `load` selects the row unless
//! expired; `create` inserts (on a conflict, an expired row with the same id
//! is removed and the insert tried again); `save` is one
//! `UPDATE ... WHERE version = ?` (and, when it matches nothing, a `SELECT`
//! that tells a conflict from a missing session); `touch` updates
//! `expires_at` only; the owner index is the `owner` column. Expired rows are
//! never returned; [`Sweeper`](session_core::Sweeper) deletes them in batches
//! of [`SWEEP_BATCH`].
//!
//! Each statement runs on its own, outside any transaction. One that the
//! database rolls back to break a deadlock (with a sweep's range delete, or
//! an application's own transaction on the table), a serialization
//! conflict or, on MariaDB under `innodb_snapshot_isolation` (the default
//! from 11.6.2), a write conflict (error 1020) runs again, up to three times
//! in all, so none of them fails the request; the manager's timeout (a
//! sweep's, the sweeper's limit) bounds the whole call. A statement compares
//! deadlines with the time read once it has its connection, so one that
//! waited for the pool does not find a session live that ended meanwhile.
//! (A wait inside the database, for a row another transaction holds, is not
//! covered: it lasts as long as that transaction, which this crate's own
//! statements keep to one row and one statement.)
//!
//! That time is the app instance's system clock, not the database's (nor a
//! `Clock` given to `Manager::with_clock`, which the manager alone checks).
//! Instances that share a table should keep their clocks in step (NTP), as
//! the manager's timeouts assume: an instance whose clock runs ahead by a
//! minute finds sessions ended a minute early, and its sweeper deletes
//! them.
//!
//! # TLS
//!
//! With the feature `tls-rustls`, PostgreSQL and MySQL connections can be
//! encrypted (rustls with its `ring` provider). The URL decides, as sqlx
//! reads it (`PGSSLMODE` sets PostgreSQL's default): `?sslmode=require`
//! encrypts without checking the server's certificate, as does the default,
//! `prefer`, when the server offers TLS; `verify-ca` and `verify-full` check
//! it against the system's roots (`SSL_CERT_FILE` or `SSL_CERT_DIR` replace
//! them) and `sslrootcert=FILE`, `verify-full` also its name. MySQL reads
//! `?ssl-mode=REQUIRED`, `VERIFY_CA`, `VERIFY_IDENTITY` and `ssl-ca=FILE`
//! alike. Without the feature, connections are plain and a URL that
//! requires TLS fails to connect. The tests run the conformance suite over
//! `sslmode=require` on PostgreSQL and over `ssl-mode=REQUIRED` on MariaDB,
//! and check that `verify-full` and `VERIFY_IDENTITY` refuse a certificate
//! that the system's roots do not vouch for.
//!
//! [sqlx]: https://docs.rs/sqlx/0.8

// Built with no database feature, the crate has no store: the shared code
// is unused then, and not worth a warning for every item.
#![cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(dead_code, unused_imports)
)]

use std::fmt;

use session_core::{Record, RecordId, StoreError, StoreErrorKind, Timestamp};

#[cfg(any(feature = "postgres", feature = "mysql", feature = "sqlite"))]
#[macro_use]
mod store;

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "mysql")]
pub use mysql::MySqlStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// How many expired rows one sweep statement deletes.
pub const SWEEP_BATCH: i64 = 1_000;

/// How long `migrate` waits by default for another instance's migration
/// (the database lock it holds) before failing: ten minutes. Set it per
/// store with `with_migration_wait`.
pub const MIGRATION_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// A failure of a SQL store, converted into [`StoreError`] for the manager.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlStoreError {
    /// A table or schema name that is not a plain SQL identifier.
    #[error("invalid SQL identifier {0:?}: use letters, digits and _, starting with a letter or _, at most 52 characters for a table (its index and migration tables add a suffix of 11) and 63 for a schema")]
    Identifier(String),
    /// The database could not be reached.
    #[error("cannot connect to the database")]
    Connect(#[source] sqlx::Error),
    /// A query failed.
    #[error("session query for {op} failed")]
    Query {
        /// The store operation.
        op: &'static str,
        /// What sqlx reported.
        #[source]
        source: sqlx::Error,
    },
    /// A migration failed.
    #[error("session table migration {version} failed")]
    Migrate {
        /// The migration that failed.
        version: i64,
        /// What sqlx reported.
        #[source]
        source: sqlx::Error,
    },
    /// A value does not fit the table (a version past `i64::MAX`).
    #[error("{0}")]
    OutOfRange(&'static str),
}

/// `?` on a connect or `migrate` in a `main` (or a set-up function) that
/// returns `std::io::Result`, as the quick start's does: an
/// [`ErrorKind::Other`](std::io::ErrorKind::Other) error whose source is this
/// one.
///
/// ```no_run
/// # #[cfg(feature = "postgres")]
/// # async fn run() -> std::io::Result<()> {
/// let store = session_sql::PostgresStore::connect("postgres://postgres@127.0.0.1/test").await?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
impl From<SqlStoreError> for std::io::Error {
    fn from(e: SqlStoreError) -> Self {
        std::io::Error::other(e)
    }
}

impl From<SqlStoreError> for StoreError {
    fn from(e: SqlStoreError) -> Self {
        let kind = match &e {
            SqlStoreError::Connect(_) => StoreErrorKind::Unavailable,
            SqlStoreError::Query { source, .. } | SqlStoreError::Migrate { source, .. } => {
                match source {
                    sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
                    | sqlx::Error::Tls(_) => StoreErrorKind::Unavailable,
                    sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. } => {
                        StoreErrorKind::Corrupted
                    }
                    sqlx::Error::Database(d) => database_error_kind(d.as_ref()),
                    _ => StoreErrorKind::Other,
                }
            }
            SqlStoreError::Identifier(_) => StoreErrorKind::Rejected,
            // A stored version with no successor: only a row written by
            // something else gets there (session-core says the same).
            SqlStoreError::OutOfRange(_) => StoreErrorKind::Corrupted,
        };
        StoreError::new(kind, e)
    }
}

/// Whether the database failed a statement for now ([`StoreErrorKind::Unavailable`])
/// or for good ([`StoreErrorKind::Rejected`]), or found its SQLite file
/// damaged ([`StoreErrorKind::Corrupted`]).
fn database_error_kind(error: &dyn sqlx::error::DatabaseError) -> StoreErrorKind {
    // MySQL and MariaDB give most errors the catch-all SQLSTATE HY000, and a
    // packet over `max_allowed_packet` a connection class (08S01): their
    // own numbers tell.
    #[cfg(feature = "mysql")]
    if let Some(e) = error.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        match e.number() {
            // Lock wait timeout, read-only (a failover under way), a query
            // interrupted, MySQL's max_execution_time and MariaDB's
            // max_statement_time, MariaDB's connection killed (a failover
            // tool or `KILL CONNECTION`), and a statement rolled back for a
            // write conflict that its reruns ([`retrying`]) kept meeting.
            1205 | 1290 | 1317 | 3024 | 1969 | 1927 | MARIADB_RECORD_CHANGED => {
                return StoreErrorKind::Unavailable;
            }
            // The user's connection limits (`max_user_connections`, an
            // account's hourly limits), as PostgreSQL's 53300: for now.
            1203 | 1226 => return StoreErrorKind::Unavailable,
            // The record is larger than the server takes: every retry fails.
            1153 => return StoreErrorKind::Rejected,
            _ => {}
        }
    }
    let code = error.code();
    if code.as_deref().is_some_and(transient) {
        StoreErrorKind::Unavailable
    } else if code.as_deref().is_some_and(sqlite_corrupt) {
        StoreErrorKind::Corrupted
    } else {
        StoreErrorKind::Rejected
    }
}

/// Whether the database refused a statement for good, as opposed to
/// failing it for now (busy, interrupted, unreachable).
pub(crate) fn refused(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if database_error_kind(d.as_ref()) == StoreErrorKind::Rejected)
}

/// Whether a database error code says the database is busy, restarting or
/// out of connections, rather than that it refused the statement: SQLSTATE
/// classes 08 (connection), 40 (deadlock, serialization), 53 (insufficient
/// resources) and 57P0x (shutting down), which PostgreSQL and MySQL/MariaDB
/// both report; PostgreSQL's 57014 (a `statement_timeout`), 55P03 (a
/// `lock_timeout`) and 25006 (a read-only standby, as during a failover);
/// and SQLite's busy and locked result codes.
fn transient(code: &str) -> bool {
    let sqlstate = code.len() == 5;
    (sqlstate && ["08", "40", "53", "57P0"].iter().any(|c| code.starts_with(c)))
        || matches!(code, "57014" | "55P03" | "25006")
        // SQLite: BUSY and its RECOVERY, SNAPSHOT and TIMEOUT; LOCKED and
        // its SHAREDCACHE and VTAB.
        || matches!(code, "5" | "261" | "517" | "773" | "6" | "262" | "518")
}

/// Whether an SQLite result code says the database file is damaged or not a
/// database: CORRUPT and its VTAB, SEQUENCE and INDEX, and NOTADB.
fn sqlite_corrupt(code: &str) -> bool {
    matches!(code, "11" | "267" | "523" | "779" | "26")
}

/// The table that holds the sessions: a name and, on PostgreSQL, a schema.
///
/// ```
/// use session_sql::Table;
///
/// let t = Table::new("sessions").unwrap().with_schema("auth").unwrap();
/// assert_eq!(t.name(), "sessions");
/// assert!(Table::new("sessions; DROP TABLE users").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    name: String,
    schema: Option<String>,
}

impl Default for Table {
    fn default() -> Self {
        Self {
            name: "sessions".into(),
            schema: None,
        }
    }
}

/// The longest table name: PostgreSQL cuts identifiers at 63 bytes and MySQL
/// refuses index names over 64, and `_migrations`, `_expires_at` are added.
const MAX_TABLE_LEN: usize = 52;

fn identifier(s: &str, max_len: usize) -> Result<String, SqlStoreError> {
    let mut chars = s.chars();
    let ok = s.len() <= max_len
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(SqlStoreError::Identifier(s.to_owned()))
    }
}

impl Table {
    /// A table name (default `sessions`).
    ///
    /// # Errors
    /// [`SqlStoreError::Identifier`] unless it is a plain SQL identifier.
    pub fn new(name: &str) -> Result<Self, SqlStoreError> {
        Ok(Self {
            name: identifier(name, MAX_TABLE_LEN)?,
            schema: None,
        })
    }

    /// The schema, created by `migrate` if missing. On MySQL and MariaDB a
    /// schema is a database (`migrate` then runs `CREATE SCHEMA`, which is
    /// `CREATE DATABASE` there); SQLite has none, and its `migrate` fails
    /// with a schema set.
    ///
    /// # Errors
    /// [`SqlStoreError::Identifier`] unless it is a plain SQL identifier.
    pub fn with_schema(mut self, schema: &str) -> Result<Self, SqlStoreError> {
        self.schema = Some(identifier(schema, 63)?);
        Ok(self)
    }

    /// The table's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schema, if any.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }
}

/// How one database spells the statements.
#[derive(Debug)]
pub(crate) struct Dialect {
    /// `$1, $2...` instead of `?`.
    pub(crate) numbered: bool,
    /// Identifier quotes.
    pub(crate) quote: char,
    /// The migrations, in order: (version, statements). `{t}` is the quoted
    /// table, `{n}` its bare name (for index names), `{s}` the schema.
    pub(crate) migrations: &'static [(i64, &'static [&'static str])],
    /// Deletes up to `?2` rows expired at `?1`.
    pub(crate) sweep: &'static str,
    /// Whether `sweep` answers one row, (rows picked, rows deleted), rather
    /// than nothing: where a statement passes over rows of its pick that
    /// another transaction changed meanwhile (PostgreSQL), a batch that
    /// deleted fewer than it may pick does not tell that no more are due.
    pub(crate) sweep_counts_pick: bool,
    /// Creates the migrations table `{m}`.
    pub(crate) migrations_table: &'static str,
    /// Whether a column may hold a value of another type than its schema's
    /// (SQLite's type affinity): such a row is corrupted, no session. Where
    /// the schema fixes the types, a column that does not decode means the
    /// table is not this crate's, an error for every load.
    pub(crate) dynamic_types: bool,
    /// Whether text may hold the NUL character (PostgreSQL's cannot, and
    /// refuses a parameter with one): where it cannot, no record has such an
    /// owner, and listing or deleting one finds nothing without asking.
    pub(crate) text_holds_nul: bool,
    /// Whether the `owner` column is binary (MySQL's `VARBINARY`), read as
    /// bytes rather than text.
    pub(crate) binary_owner: bool,
    /// How instances starting together take turns to migrate
    /// (`CREATE ... IF NOT EXISTS` is not safe against itself on PostgreSQL).
    pub(crate) migration_lock: MigrationLock<&'static str>,
}

/// The lock a `migrate` holds, named by its `?1`.
///
/// Each variant belongs to one backend, so a build with some of the backend
/// features leaves the others' variants unused.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(
    not(all(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(dead_code)
)]
pub(crate) enum MigrationLock<S> {
    /// None needed: one statement at a time holds the database (SQLite).
    None,
    /// Taken inside the transaction the migrations run in, and released when
    /// it ends, however it ends (PostgreSQL's DDL is transactional). The
    /// transaction runs at READ COMMITTED whatever the database's default, so
    /// that what the instance that held the lock before committed is seen
    /// once the lock is taken.
    Transaction(S),
    /// Taken and released on the connection (MySQL/MariaDB, whose DDL
    /// commits on its own); each answers 1 on success.
    Session {
        /// Takes it.
        lock: S,
        /// Releases it.
        unlock: S,
    },
}

/// Every statement, with the table filled in and placeholders in the
/// database's style.
#[derive(Debug)]
pub(crate) struct Queries {
    pub(crate) load: String,
    pub(crate) insert: String,
    pub(crate) delete_expired_id: String,
    pub(crate) save: String,
    pub(crate) live_version: String,
    pub(crate) touch: String,
    pub(crate) delete: String,
    pub(crate) sweep: String,
    pub(crate) sweep_counts_pick: bool,
    pub(crate) list_owner: String,
    pub(crate) delete_owner: String,
    pub(crate) create_schema: Option<String>,
    pub(crate) migrations_table: String,
    pub(crate) applied: String,
    pub(crate) record_migration: String,
    pub(crate) migrations: Vec<(i64, Vec<String>)>,
    pub(crate) migration_lock: MigrationLock<String>,
    pub(crate) dynamic_types: bool,
    pub(crate) text_holds_nul: bool,
    pub(crate) binary_owner: bool,
    /// The lock's name, one for every table of this crate in the database:
    /// tables of one schema also share its `CREATE SCHEMA`. (MySQL's lock
    /// statements add a hash of the database to it, as its locks are the
    /// server's.)
    pub(crate) lock_name: String,
}

impl Queries {
    pub(crate) fn new(dialect: &Dialect, table: &Table) -> Self {
        let q = dialect.quote;
        let quoted = |name: &str| match &table.schema {
            Some(s) => format!("{q}{s}{q}.{q}{name}{q}"),
            None => format!("{q}{name}{q}"),
        };
        let t = quoted(&table.name);
        let m = quoted(&format!("{}_migrations", table.name));
        let fill = |sql: &str| -> String {
            let sql = sql
                .replace("{t}", &t)
                .replace("{m}", &m)
                .replace("{n}", &table.name)
                .replace("{s}", table.schema.as_deref().unwrap_or(""))
                // The table's database as an SQL expression (MySQL): its
                // schema, a checked identifier, as a string, or the
                // connection's database.
                .replace(
                    "{d}",
                    &table
                        .schema
                        .as_ref()
                        .map_or_else(|| "DATABASE()".to_owned(), |s| format!("'{s}'")),
                );
            if !dialect.numbered {
                return sql;
            }
            let mut out = String::with_capacity(sql.len() + 8);
            let mut n = 0;
            for c in sql.chars() {
                if c == '?' {
                    n += 1;
                    out.push('$');
                    out.push_str(&n.to_string());
                } else {
                    out.push(c);
                }
            }
            out
        };
        Self {
            load: fill(
                "SELECT data, expires_at, version, owner FROM {t} WHERE id = ? AND expires_at > ?",
            ),
            insert: fill(
                "INSERT INTO {t} (id, data, version, expires_at, owner) VALUES (?, ?, ?, ?, ?)",
            ),
            delete_expired_id: fill("DELETE FROM {t} WHERE id = ? AND expires_at <= ?"),
            save: fill(
                "UPDATE {t} SET data = ?, version = ?, expires_at = ?, owner = ? \
                 WHERE id = ? AND version = ? AND expires_at > ?",
            ),
            live_version: fill("SELECT version FROM {t} WHERE id = ? AND expires_at > ?"),
            touch: fill(
                "UPDATE {t} SET expires_at = ? WHERE id = ? AND version = ? AND expires_at > ?",
            ),
            delete: fill("DELETE FROM {t} WHERE id = ?"),
            sweep: fill(dialect.sweep),
            sweep_counts_pick: dialect.sweep_counts_pick,
            list_owner: fill("SELECT id FROM {t} WHERE owner = ? AND expires_at > ?"),
            delete_owner: fill("DELETE FROM {t} WHERE owner = ? AND expires_at > ?"),
            create_schema: table
                .schema
                .as_ref()
                .map(|s| format!("CREATE SCHEMA IF NOT EXISTS {q}{s}{q}")),
            migrations_table: fill(dialect.migrations_table),
            applied: fill("SELECT version FROM {m}"),
            record_migration: fill("INSERT INTO {m} (version) VALUES (?)"),
            migrations: dialect
                .migrations
                .iter()
                .map(|(v, stmts)| (*v, stmts.iter().map(|s| fill(s)).collect()))
                .collect(),
            migration_lock: match dialect.migration_lock {
                MigrationLock::None => MigrationLock::None,
                MigrationLock::Transaction(lock) => MigrationLock::Transaction(fill(lock)),
                MigrationLock::Session { lock, unlock } => MigrationLock::Session {
                    lock: fill(lock),
                    unlock: fill(unlock),
                },
            },
            lock_name: "session-sql migrate".to_owned(),
            dynamic_types: dialect.dynamic_types,
            text_holds_nul: dialect.text_holds_nul,
            binary_owner: dialect.binary_owner,
        }
    }
}

impl Queries {
    /// Whether no record here can have `owner`: one with a NUL character,
    /// where text cannot hold it, so listing or deleting its sessions finds
    /// none without asking.
    pub(crate) fn cannot_own(&self, owner: &str) -> bool {
        !self.text_holds_nul && owner.contains('\0')
    }
}

pub(crate) fn version(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| SqlStoreError::OutOfRange("session version past i64::MAX").into())
}

/// How many times a store call runs its statement when the database rolls
/// it back to break a deadlock or a serialization conflict.
pub(crate) const ATTEMPTS: u32 = 3;

/// MariaDB's `ER_CHECKREAD`, "Record has changed since last read": under
/// `innodb_snapshot_isolation` (on by default from MariaDB 11.6.2) a
/// statement that waited for a row's lock while another transaction
/// changed and committed the row is rolled back, as for a deadlock. Its
/// SQLSTATE is the catch-all HY000.
#[cfg(feature = "mysql")]
const MARIADB_RECORD_CHANGED: u16 = 1020;

/// Whether the database rolled a statement back to break a deadlock
/// (MySQL/MariaDB's 1213 and PostgreSQL's 40P01), a serialization
/// conflict (40001, under `SERIALIZABLE`) or, on MariaDB, a write conflict
/// under snapshot isolation (1020). Each store call runs its statements
/// outside any transaction, so nothing of such a statement took effect and
/// running it again is safe: it then reads the row as the winner left it
/// (a save finds another version: a conflict).
pub(crate) fn rolled_back(e: &sqlx::Error) -> bool {
    let Some(d) = e.as_database_error() else {
        return false;
    };
    #[cfg(feature = "mysql")]
    if let Some(e) = d.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        if e.number() == MARIADB_RECORD_CHANGED {
            return true;
        }
    }
    d.code()
        .is_some_and(|code| code == "40001" || code == "40P01")
}

/// Runs `statement`, and runs it again (up to [`ATTEMPTS`] times in all)
/// while the database rolls it back to break a deadlock: the sweeper's
/// range deletes and other clients' transactions can pick a request's
/// one-row statement as the victim, which must not fail the request. The
/// retry queues behind the transaction that won, so it needs no pause; the
/// manager's timeout bounds the whole call.
pub(crate) async fn retrying<T, Fut>(
    op: &'static str,
    mut statement: impl FnMut() -> Fut,
) -> sqlx::Result<T>
where
    Fut: std::future::Future<Output = sqlx::Result<T>>,
{
    let mut attempt = 1;
    loop {
        match statement().await {
            Err(error) if attempt < ATTEMPTS && rolled_back(&error) => {
                tracing::debug!(op, attempt, %error, "the database rolled a session statement back; running it again");
                attempt += 1;
            }
            done => return done,
        }
    }
}

/// A pooled connection for one statement, closed instead of returned to
/// the pool when the statement is abandoned: dropped before it answered, by
/// the store timeout or a request that went away. Returned, sqlx would
/// first ping it, behind the abandoned statement and with no time limit,
/// keeping its place in the pool all the while: a row held locked for long,
/// or a server gone without a reset (a failover), would take every place in
/// turn, and every session with them, until TCP gave up. Closed, it gives
/// its place back at once (sqlx sends the goodbye without waiting for the
/// statement). sqlx closes an abandoned SQLite connection itself; an
/// in-memory SQLite database survives it through the store's keeper
/// connection.
pub(crate) struct Held<DB: sqlx::Database> {
    conn: sqlx::pool::PoolConnection<DB>,
    answered: bool,
}

impl<DB: sqlx::Database> Held<DB> {
    pub(crate) async fn acquire(pool: &sqlx::Pool<DB>) -> sqlx::Result<Self> {
        Ok(Self {
            conn: pool.acquire().await?,
            answered: false,
        })
    }

    /// The connection, for the one statement.
    pub(crate) fn conn(&mut self) -> &mut DB::Connection {
        &mut self.conn
    }

    /// The statement answered (rows, or an error): the connection may go
    /// back to the pool. Hands `answer` on.
    pub(crate) fn answered<T>(mut self, answer: T) -> T {
        self.answered = true;
        answer
    }
}

impl<DB: sqlx::Database> Drop for Held<DB> {
    fn drop(&mut self) {
        if !self.answered {
            self.conn.close_on_drop();
        }
    }
}

/// The time a statement compares deadlines with, read once its connection
/// is in hand: a statement that waited for one (the pool can keep it
/// waiting up to its acquire timeout) must not find a record live that
/// expired meanwhile, and so bring it back with a later deadline.
pub(crate) fn now() -> i64 {
    Timestamp::now().unix_millis()
}

pub(crate) fn query_error(op: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |source| SqlStoreError::Query { op, source }.into()
}

/// Whether PostgreSQL gave up waiting for a lock (`lock_timeout`, 55P03).
pub(crate) fn is_lock_timeout(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| code == "55P03")
}

pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.kind() == sqlx::error::ErrorKind::UniqueViolation)
}

/// Logs a row that holds no session and answers `None`.
pub(crate) fn corrupted(id: &RecordId, why: &dyn fmt::Display) -> Option<Record> {
    tracing::warn!(id = %id.short(), %why, "undecodable session row; treating it as no session");
    None
}

/// Decodes a row's `data`, `expires_at`, `version` and `owner`; `None`
/// (logged) for anything that is not a record of `id` at the row's version
/// (a save compares the column, so a record that disagrees with it could
/// never be saved again) and owner (the owner index is the column: a record
/// naming another owner would escape its owner's "log out everywhere").
pub(crate) fn decode(
    id: &RecordId,
    data: &[u8],
    expires_ms: i64,
    version: i64,
    owner: Option<&[u8]>,
) -> Option<Record> {
    let corrupted = |why: &dyn fmt::Display| corrupted(id, why);
    let mut record = match Record::from_bytes(data) {
        Ok(r) => r,
        Err(e) => return corrupted(&e),
    };
    if record.id != *id {
        return corrupted(&"record id does not match its row");
    }
    if u64::try_from(version) != Ok(record.version) {
        return corrupted(&"the row's version column and its record disagree");
    }
    if owner != record.owner.as_deref().map(str::as_bytes) {
        return corrupted(&"the row's owner column and its record disagree");
    }
    match session_core::Timestamp::checked_from_unix_millis(expires_ms) {
        Some(t) => record.expires_at = t,
        None => return corrupted(&"deadline out of range"),
    }
    Some(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_or_restarting_databases_are_unavailable_not_rejections() {
        // PostgreSQL: too many connections, admin shutdown, deadlock; MySQL's
        // deadlock and connection errors share the SQLSTATE classes; SQLite
        // busy (5, and its extended codes) and locked (6).
        // PostgreSQL's statement and lock timeouts and a read-only standby.
        for code in [
            "53300", "57P01", "40P01", "40001", "08004", "5", "517", "773", "6", "57014", "55P03",
            "25006",
        ] {
            assert!(transient(code), "{code}");
        }
        // A unique violation, a missing table, a syntax error; SQLite's
        // constraint and I/O errors whose numbers merely start like a class.
        for code in [
            "23505", "42P01", "42601", "HY000", "1", "19", "531", "5386", "2067",
        ] {
            assert!(!transient(code), "{code}");
        }
    }

    #[test]
    fn damaged_sqlite_files_and_versions_without_a_successor_are_corrupted() {
        for code in ["11", "267", "523", "779", "26"] {
            assert!(sqlite_corrupt(code), "{code}");
        }
        // Busy, locked, I/O, constraint, and SQLSTATEs.
        for code in ["5", "6", "10", "19", "1555", "23505", "HY000"] {
            assert!(!sqlite_corrupt(code), "{code}");
        }
        let e = StoreError::from(SqlStoreError::OutOfRange("version past i64::MAX"));
        assert_eq!(e.kind(), StoreErrorKind::Corrupted);
    }

    #[test]
    fn identifiers_are_checked() {
        assert!(Table::new("sessions").is_ok());
        assert!(Table::new("_s2").is_ok());
        for bad in ["", "1abc", "a-b", "a b", "a;b", "a\"b", &"x".repeat(53)] {
            assert!(Table::new(bad).is_err(), "{bad:?}");
        }
        // The longest name still leaves room for the suffixes.
        assert!(Table::new(&"x".repeat(52)).is_ok());
        assert!(Table::default().with_schema(&"x".repeat(63)).is_ok());
        assert!(Table::default().with_schema(&"x".repeat(64)).is_err());
        assert!(Table::default().with_schema("bad name").is_err());
    }

    #[test]
    fn placeholders_follow_the_dialect() {
        let d = Dialect {
            numbered: true,
            quote: '"',
            migrations: &[(1, &["CREATE TABLE {t} (x INT)"])],
            sweep: "DELETE FROM {t} WHERE expires_at <= ? LIMIT ?",
            sweep_counts_pick: false,
            migrations_table: "CREATE TABLE IF NOT EXISTS {m} (version BIGINT PRIMARY KEY)",
            migration_lock: MigrationLock::None,
            dynamic_types: false,
            text_holds_nul: true,
            binary_owner: false,
        };
        let t = Table::new("s").unwrap().with_schema("a").unwrap();
        let q = Queries::new(&d, &t);
        assert_eq!(
            q.load,
            "SELECT data, expires_at, version, owner FROM \"a\".\"s\" WHERE id = $1 AND expires_at > $2"
        );
        assert_eq!(
            q.sweep,
            "DELETE FROM \"a\".\"s\" WHERE expires_at <= $1 LIMIT $2"
        );
        assert_eq!(q.applied, "SELECT version FROM \"a\".\"s_migrations\"");
        assert_eq!(
            q.migrations,
            vec![(1, vec!["CREATE TABLE \"a\".\"s\" (x INT)".to_owned()])]
        );
        assert_eq!(
            q.create_schema.as_deref(),
            Some("CREATE SCHEMA IF NOT EXISTS \"a\"")
        );
    }
}
