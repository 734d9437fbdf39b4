//! The SQL stores against the same database's raw single-row `SELECT` and
//! `UPDATE` of a value of the same size, one query at a time on one pool.
//! Run with `cargo xtask bench sql`, which writes the ratios into README.md.
//! `DATABASE_URL_POSTGRES` and `DATABASE_URL_MYSQL` pick the servers (the
//! default PostgreSQL URL asks for a plain connection, as the recorded
//! numbers were measured: with `--all-features`, TLS would be taken where
//! the server offers it).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use session_core::testing::sample_record;
use session_core::Store;
use session_sql::{MySqlStore, PostgresStore, Table};

macro_rules! bench_backend {
    ($c:expr, $rt:expr, $label:literal, $store:expr, $pool:expr, $raw_table:literal, $id_type:literal, $blob_type:literal, $ph1:literal, $ph2:literal) => {{
        let rt: &tokio::runtime::Runtime = $rt;
        let store = $store;
        let pool = $pool;
        let r = sample_record();
        let bytes = r.to_bytes().unwrap();
        rt.block_on(async {
            store.migrate().await.unwrap();
            store.create(&r).await.unwrap();
            sqlx::query(concat!("DROP TABLE IF EXISTS ", $raw_table))
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query(concat!(
                "CREATE TABLE ",
                $raw_table,
                " (id ",
                $id_type,
                " PRIMARY KEY, data ",
                $blob_type,
                " NOT NULL)"
            ))
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query(concat!(
                "INSERT INTO ",
                $raw_table,
                " (id, data) VALUES (",
                $ph1,
                ", ",
                $ph2,
                ")"
            ))
            .bind(&r.id.as_bytes()[..])
            .bind(&bytes[..])
            .execute(&pool)
            .await
            .unwrap();
        });
        let mut group = $c.benchmark_group("sql");
        group.bench_function(concat!($label, "_raw_select"), |b| {
            b.to_async(rt).iter(|| async {
                sqlx::query(concat!(
                    "SELECT data FROM ",
                    $raw_table,
                    " WHERE id = ",
                    $ph1
                ))
                .bind(&r.id.as_bytes()[..])
                .fetch_optional(&pool)
                .await
                .unwrap()
            })
        });
        group.bench_function(concat!($label, "_load"), |b| {
            b.to_async(rt)
                .iter(|| async { store.load(&r.id).await.unwrap() })
        });
        group.bench_function(concat!($label, "_raw_update"), |b| {
            b.to_async(rt).iter(|| async {
                sqlx::query(concat!(
                    "UPDATE ",
                    $raw_table,
                    " SET data = ",
                    $ph1,
                    " WHERE id = ",
                    $ph2
                ))
                .bind(&bytes[..])
                .bind(&r.id.as_bytes()[..])
                .execute(&pool)
                .await
                .unwrap()
            })
        });
        group.bench_function(concat!($label, "_save"), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let store = store.clone();
                let mut r = r.clone();
                async move {
                    r.version = store.load(&r.id).await.unwrap().unwrap().version;
                    let start = Instant::now();
                    for _ in 0..iters {
                        let expected = r.version;
                        r.version += 1;
                        store.save(&r, expected).await.unwrap();
                    }
                    start.elapsed()
                }
            })
        });
        group.finish();
        rt.block_on(async {
            let _ = sqlx::query(concat!("DROP TABLE IF EXISTS ", $raw_table))
                .execute(&pool)
                .await;
            let _ = sqlx::query("DROP TABLE IF EXISTS bench_sessions")
                .execute(&pool)
                .await;
            let _ = sqlx::query("DROP TABLE IF EXISTS bench_sessions_migrations")
                .execute(&pool)
                .await;
        });
    }};
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let table = Table::new("bench_sessions").unwrap();
    let pg_url = std::env::var("DATABASE_URL_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test?sslmode=disable".into());
    match rt.block_on(PostgresStore::connect(&pg_url)) {
        Ok(store) => {
            let pool = store.pool().clone();
            let store = store.with_table(table.clone());
            bench_backend!(
                c,
                &rt,
                "postgres",
                store,
                pool,
                "bench_raw",
                "BYTEA",
                "BYTEA",
                "$1",
                "$2"
            );
        }
        Err(e) => eprintln!("no PostgreSQL at {pg_url}: {e}"),
    }
    let my_url = std::env::var("DATABASE_URL_MYSQL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    match rt.block_on(MySqlStore::connect(&my_url)) {
        Ok(store) => {
            let pool = store.pool().clone();
            let store = store.with_table(table);
            bench_backend!(
                c,
                &rt,
                "mysql",
                store,
                pool,
                "bench_raw",
                "BINARY(32)",
                "LONGBLOB",
                "?",
                "?"
            );
        }
        Err(e) => eprintln!("no MySQL/MariaDB at {my_url}: {e}"),
    }
}

criterion_group!(sql_benches, benches);
criterion_main!(sql_benches);
