//! The Redis store against the same Redis's raw `GET`/`SET`, one request at a
//! time on one connection, so each number is one round trip plus the work
//! around it. Run with `cargo xtask bench` (it writes the ratios into
//! README.md); `REDIS_URL` picks the server (default the local one).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use session_core::testing::sample_record;
use session_core::{Config, Manager, SetCookie, Store};
use session_redis::RedisStore;

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let store = match rt.block_on(RedisStore::connect(&url)) {
        Ok(s) => s.with_prefix("bench:"),
        Err(e) => {
            eprintln!("no Redis at {url} ({e}); set REDIS_URL");
            return;
        }
    };
    let mut raw = rt
        .block_on(
            redis::Client::open(url.as_str())
                .expect("url")
                .get_multiplexed_async_connection(),
        )
        .expect("raw connection");

    let record = sample_record();
    let bytes = record.to_bytes().unwrap();
    rt.block_on(store.create(&record)).unwrap();
    let raw_key = "bench:raw";
    let _: () = rt
        .block_on(
            redis::cmd("SET")
                .arg(raw_key)
                .arg(&bytes)
                .query_async(&mut raw),
        )
        .unwrap();

    let mut group = c.benchmark_group("redis");
    group.measurement_time(Duration::from_secs(4));

    group.bench_function("raw_get", |b| {
        b.to_async(&rt).iter(|| {
            let mut raw = raw.clone();
            async move {
                let v: Vec<u8> = redis::cmd("GET")
                    .arg(raw_key)
                    .query_async(&mut raw)
                    .await
                    .unwrap();
                v
            }
        })
    });
    group.bench_function("store_load", |b| {
        b.to_async(&rt)
            .iter(|| async { store.load(&record.id).await.unwrap() })
    });
    group.bench_function("raw_set", |b| {
        b.to_async(&rt).iter(|| {
            let mut raw = raw.clone();
            let bytes = bytes.clone();
            async move {
                let _: () = redis::cmd("SET")
                    .arg(raw_key)
                    .arg(bytes)
                    .query_async(&mut raw)
                    .await
                    .unwrap();
            }
        })
    });
    group.bench_function("store_save", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let store = store.clone();
            let mut r = record.clone();
            async move {
                let current = store.load(&r.id).await.unwrap().unwrap();
                r.version = current.version;
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

    // Whole requests through the manager: read-only, and read-modify-write.
    let manager = Manager::new(store.clone(), Config::default());
    let cookie = rt.block_on(async {
        let s = manager.session_from_cookies(None::<&str>);
        s.insert("name", "iris").await.unwrap();
        match s.commit().await.unwrap() {
            SetCookie::Set { value, .. } => format!("session={value}"),
            other => panic!("{other:?}"),
        }
    });
    group.bench_function("request_read", |b| {
        b.to_async(&rt).iter(|| async {
            let s = manager.session_from_cookies([cookie.as_str()]);
            let name = s.get_string("name").await.unwrap();
            s.commit().await.unwrap();
            name
        })
    });
    group.bench_function("request_write", |b| {
        b.to_async(&rt).iter(|| async {
            let s = manager.session_from_cookies([cookie.as_str()]);
            s.insert("name", "iris").await.unwrap();
            s.commit().await.unwrap()
        })
    });
    group.finish();
    let _ = rt.block_on(store.delete(&record.id));
}

criterion_group!(redis_benches, benches);
criterion_main!(redis_benches);
