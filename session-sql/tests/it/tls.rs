//! The `tls-rustls` feature against the test servers: the URL's `sslmode`
//! (PostgreSQL) or `ssl-mode` (MySQL) decides whether a connection is
//! encrypted, and `verify-full` or `VERIFY_IDENTITY` checks the server's
//! certificate.

use session_sql::{MySqlStore, PostgresStore, SqlStoreError};

use crate::support::{connect, mysql_tls_url_in, postgres_url_in};

/// Whether the store's connection to the server is encrypted.
async fn encrypted(store: &PostgresStore) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .expect("pg_stat_ssl")
}

/// A store over TLS, or `None` (reported) when the server has no TLS.
async fn over_tls() -> Option<PostgresStore> {
    connect(
        "PostgreSQL with ssl = on (DATABASE_URL_POSTGRES)",
        PostgresStore::connect(&postgres_url_in("require")),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_urls_sslmode_decides_whether_the_connection_is_encrypted() {
    let Some(tls) = over_tls().await else {
        return;
    };
    assert!(encrypted(&tls).await, "sslmode=require must encrypt");
    let plain = PostgresStore::connect(&postgres_url_in("disable"))
        .await
        .expect("the server took a TLS connection but not a plain one");
    assert!(!encrypted(&plain).await, "sslmode=disable must not encrypt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_the_servers_certificate() {
    if over_tls().await.is_none() {
        return;
    }
    // The URL names the server 127.0.0.1: a local server's certificate
    // (Debian's packages make a self-signed one for the host's name) is not
    // issued for that address, even where the system trusts it.
    let err = PostgresStore::connect(&postgres_url_in("verify-full"))
        .await
        .expect_err("a certificate that does not pass the check must fail the handshake");
    is_a_certificate_error(&err);
}

/// A connection refused by the client's check of the server's certificate.
fn is_a_certificate_error(err: &SqlStoreError) {
    let SqlStoreError::Connect(source) = err else {
        panic!("not a connection error: {err}");
    };
    let text = format!("{source:?}");
    assert!(text.contains("InvalidCertificate"), "{text}");
}

/// Whether the store's connection to MySQL is encrypted.
async fn mysql_encrypted(store: &MySqlStore) -> bool {
    let (_, cipher): (String, String) = sqlx::query_as("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        .fetch_one(store.pool())
        .await
        .expect("Ssl_cipher");
    !cipher.is_empty()
}

/// A MySQL store over TLS, or `None` (reported) when the server has no TLS.
async fn mysql_over_tls() -> Option<MySqlStore> {
    connect(
        "MySQL with TLS on (DATABASE_URL_MYSQL_TLS)",
        MySqlStore::connect(&mysql_tls_url_in("required")),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysqls_ssl_mode_decides_whether_the_connection_is_encrypted() {
    let Some(tls) = mysql_over_tls().await else {
        return;
    };
    assert!(
        mysql_encrypted(&tls).await,
        "ssl-mode=required must encrypt"
    );
    let plain = MySqlStore::connect(&mysql_tls_url_in("disabled"))
        .await
        .expect("the server took a TLS connection but not a plain one");
    assert!(
        !mysql_encrypted(&plain).await,
        "ssl-mode=disabled must not encrypt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysqls_verify_identity_checks_the_servers_certificate() {
    if mysql_over_tls().await.is_none() {
        return;
    }
    // As for PostgreSQL: the test server's certificate is not issued for
    // 127.0.0.1 by an authority the system trusts.
    let err = MySqlStore::connect(&mysql_tls_url_in("verify_identity"))
        .await
        .expect_err("a certificate that does not pass the check must fail the handshake");
    is_a_certificate_error(&err);
}
