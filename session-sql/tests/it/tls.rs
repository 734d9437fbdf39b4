//! The `tls-rustls` feature against the test PostgreSQL: the URL's
//! `sslmode` decides whether a connection is encrypted, and `verify-full`
//! checks the server's certificate.

use session_sql::{PostgresStore, SqlStoreError};

use crate::support::{missing, postgres_url_in};

/// Whether the store's connection to the server is encrypted.
async fn encrypted(store: &PostgresStore) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .expect("pg_stat_ssl")
}

/// A store over TLS, or `None` (reported) when the server has no TLS.
async fn over_tls() -> Option<PostgresStore> {
    match PostgresStore::connect(&postgres_url_in("require")).await {
        Ok(store) => Some(store),
        Err(e) => {
            missing(
                "PostgreSQL with ssl = on (DATABASE_URL_POSTGRES)",
                &e.to_string(),
            );
            None
        }
    }
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
    let SqlStoreError::Connect(source) = &err else {
        panic!("not a connection error: {err}");
    };
    let text = format!("{source:?}");
    assert!(text.contains("InvalidCertificate"), "{text}");
}
