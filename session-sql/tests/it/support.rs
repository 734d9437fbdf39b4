//! Connecting to the test databases, isolating each test, cleaning up.

use std::future::Future;
use std::time::Duration;

use session_core::testing::WithCleanup;
use session_sql::{MySqlStore, PostgresStore, SqliteStore, Table};

fn postgres_env_url() -> String {
    std::env::var("DATABASE_URL_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// `DATABASE_URL_POSTGRES`, plain unless it names an `sslmode` itself: with
/// the feature `tls-rustls`, sqlx's default (`prefer`) would take TLS where
/// the server offers it, which the TLS tests cover.
pub(crate) fn postgres_url() -> String {
    plain_unless_told(postgres_env_url(), "sslmode", "disable")
}

/// `DATABASE_URL_POSTGRES` with its `sslmode` set to `mode`.
pub(crate) fn postgres_url_in(mode: &str) -> String {
    with_ssl_mode(&postgres_env_url(), "sslmode", mode)
}

fn mysql_env_url() -> String {
    std::env::var("DATABASE_URL_MYSQL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// `DATABASE_URL_MYSQL`, plain unless it names an `ssl-mode` itself (see
/// [`postgres_url`]).
pub(crate) fn mysql_url() -> String {
    plain_unless_told(mysql_env_url(), "ssl-mode", "disabled")
}

/// The server of the MySQL TLS tests, `DATABASE_URL_MYSQL_TLS` (else
/// `DATABASE_URL_MYSQL`: Debian's MariaDB has TLS off, so `cargo xtask
/// test` starts one with TLS on), with its `ssl-mode` set to `mode`.
pub(crate) fn mysql_tls_url_in(mode: &str) -> String {
    let url = std::env::var("DATABASE_URL_MYSQL_TLS").unwrap_or_else(|_| mysql_env_url());
    with_ssl_mode(&url, "ssl-mode", mode)
}

/// `url` as it is if it names an SSL mode, else with `param=plain`.
fn plain_unless_told(url: String, param: &str, plain: &str) -> String {
    if url.contains("sslmode=") || url.contains("ssl-mode=") {
        url
    } else {
        with_ssl_mode(&url, param, plain)
    }
}

/// `url` with its SSL mode (either spelling) replaced by `param=mode`.
fn with_ssl_mode(url: &str, param: &str, mode: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("sslmode=") && !p.starts_with("ssl-mode="))
        .map(str::to_owned)
        .collect();
    params.push(format!("{param}={mode}"));
    format!("{base}?{}", params.join("&"))
}

/// Reports a missing server: a panic in CI, a loud skip elsewhere.
pub(crate) fn missing(what: &str, why: &str) {
    session_core::testing::skip(&format!(
        "{what} is not available ({why}); start it, point the variable at a server, or run `cargo xtask test`, which starts a throwaway one from installed binaries (apt-get install postgresql mariadb-server)"
    ));
}

/// A record that expires `expires_in` from now.
pub(crate) fn record(expires_in: Duration) -> session_core::Record {
    let now = session_core::Timestamp::now();
    session_core::Record::new(
        session_core::Id::generate().expect("random").record_id(),
        now,
        now + expires_in,
    )
}

pub(crate) fn unique(prefix: &str) -> String {
    let mut b = [0u8; 6];
    getrandom::getrandom(&mut b).expect("random");
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}{hex}")
}

/// Runs `f` to completion on a runtime of its own, on a thread of its own:
/// clean-ups run from `Drop`, possibly inside the test's runtime.
pub(crate) fn block_on_thread<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(f());
    })
    .join();
}

/// `fut`'s store, or `None` (reported as [`missing`]) when it fails or takes
/// more than 10 s.
pub(crate) async fn connect<S, E: std::fmt::Display>(
    what: &str,
    fut: impl Future<Output = Result<S, E>>,
) -> Option<S> {
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            missing(what, &e.to_string());
            None
        }
        Err(_) => {
            missing(what, "connection timed out");
            None
        }
    }
}

/// The quoted `"schema"."table"` of a store from [`postgres`], for SQL of
/// a test's own.
pub(crate) fn pg_table(store: &PostgresStore) -> String {
    format!(
        "\"{}\".\"{}\"",
        store.table().schema().expect("a schema"),
        store.table().name()
    )
}

/// A PostgreSQL store in a schema of its own, dropped afterwards.
pub(crate) async fn postgres() -> Option<WithCleanup<PostgresStore>> {
    let url = postgres_url();
    let store = connect(
        "PostgreSQL (DATABASE_URL_POSTGRES)",
        PostgresStore::connect(&url),
    )
    .await?;
    postgres_in_schema(store, url).await
}

/// Like [`postgres`], over TLS: `sslmode=require` fails to connect rather
/// than fall back to plain text.
#[cfg(feature = "tls-rustls")]
pub(crate) async fn postgres_tls() -> Option<WithCleanup<PostgresStore>> {
    let url = postgres_url();
    let store = connect(
        "PostgreSQL over TLS (DATABASE_URL_POSTGRES with ssl = on in the server)",
        PostgresStore::connect(&postgres_url_in("require")),
    )
    .await?;
    postgres_in_schema(store, url).await
}

pub(crate) async fn postgres_in_schema(
    store: PostgresStore,
    cleanup_url: String,
) -> Option<WithCleanup<PostgresStore>> {
    let schema = unique("test_");
    let table = Table::new("sessions")
        .expect("name")
        .with_schema(&schema)
        .expect("schema");
    let store = store.with_table(table);
    store.migrate().await.expect("migrate");
    Some(WithCleanup::new(store, move || {
        block_on_thread(move || async move {
            if let Ok(pool) = sqlx::PgPool::connect(&cleanup_url).await {
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .execute(&pool)
                    .await;
            }
        })
    }))
}

/// A MySQL/MariaDB store in a table of its own, dropped afterwards.
pub(crate) async fn mysql() -> Option<WithCleanup<MySqlStore>> {
    let url = mysql_url();
    let store = connect(
        "MariaDB/MySQL (DATABASE_URL_MYSQL)",
        MySqlStore::connect(&url),
    )
    .await?;
    mysql_in_table(store, url).await
}

/// Like [`mysql`], over TLS (`ssl-mode=required`) to the server of
/// [`mysql_tls_url_in`].
#[cfg(feature = "tls-rustls")]
pub(crate) async fn mysql_tls() -> Option<WithCleanup<MySqlStore>> {
    let url = mysql_tls_url_in("required");
    let store = connect(
        "MySQL over TLS (DATABASE_URL_MYSQL_TLS, a server with TLS on)",
        MySqlStore::connect(&url),
    )
    .await?;
    mysql_in_table(store, url).await
}

pub(crate) async fn mysql_in_table(
    store: MySqlStore,
    cleanup_url: String,
) -> Option<WithCleanup<MySqlStore>> {
    let name = unique("sessions_");
    let store = store.with_table(Table::new(&name).expect("name"));
    store.migrate().await.expect("migrate");
    Some(WithCleanup::new(store, move || {
        block_on_thread(move || async move {
            if let Ok(pool) = sqlx::MySqlPool::connect(&cleanup_url).await {
                let _ = sqlx::query(&format!(
                    "DROP TABLE IF EXISTS `{name}`, `{name}_migrations`, `{name}_faults`, \
                     `{name}_w`, `{name}_w_migrations`, `{name}_2`, `{name}_2_migrations`"
                ))
                .execute(&pool)
                .await;
            }
        })
    }))
}

/// Two PostgreSQL stores over one schema, connected separately (two app
/// servers): the first drops the schema when dropped.
pub(crate) async fn postgres_pair() -> Option<(WithCleanup<PostgresStore>, PostgresStore)> {
    let a = postgres().await?;
    let b = PostgresStore::connect(&postgres_url())
        .await
        .expect("a second pool to the database the first reached")
        .with_table(a.inner().table().clone());
    Some((a, b))
}

/// Two MySQL/MariaDB stores over one table, connected separately.
pub(crate) async fn mysql_pair() -> Option<(WithCleanup<MySqlStore>, MySqlStore)> {
    let a = mysql().await?;
    let b = MySqlStore::connect(&mysql_url())
        .await
        .expect("a second pool to the database the first reached")
        .with_table(a.inner().table().clone());
    Some((a, b))
}

/// Two SQLite stores over one file, opened separately.
pub(crate) async fn sqlite_file_pair() -> (WithCleanup<SqliteStore>, SqliteStore) {
    let path = std::env::temp_dir().join(format!("{}.db", unique("session-sql-test-")));
    let a = sqlite_file_at(path.clone()).await;
    let b = SqliteStore::connect(&format!("sqlite:{}", path.display()))
        .await
        .expect("the file the first opened");
    (a, b)
}

/// SQLite in a temporary file, deleted afterwards.
pub(crate) async fn sqlite_file() -> WithCleanup<SqliteStore> {
    let path = std::env::temp_dir().join(format!("{}.db", unique("session-sql-test-")));
    sqlite_file_at(path).await
}

/// SQLite in the file at `path`, deleted afterwards.
async fn sqlite_file_at(path: std::path::PathBuf) -> WithCleanup<SqliteStore> {
    let store = SqliteStore::connect(&format!("sqlite:{}", path.display()))
        .await
        .expect("open sqlite file");
    store.migrate().await.expect("migrate");
    WithCleanup::new(store, move || {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    })
}

/// SQLite in memory.
pub(crate) async fn sqlite_memory() -> SqliteStore {
    let store = SqliteStore::connect("sqlite::memory:")
        .await
        .expect("open sqlite memory");
    store.migrate().await.expect("migrate");
    store
}
