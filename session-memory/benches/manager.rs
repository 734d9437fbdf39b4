//! The manager over the memory store: what a session costs one request.
//!
//! Run with `cargo xtask bench`, which also writes the medians into README.md.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use session_core::{Config, CookieKeys, CookieSecurity, Key, Manager, SetCookie};
use session_memory::MemoryStore;

use common::runtime;

fn manager() -> Manager {
    let config = Config::builder().build().expect("default config");
    Manager::new(MemoryStore::new(), config)
}

/// The same with signed cookies.
fn signed_manager() -> Manager {
    let config = Config::builder()
        .with_security(CookieSecurity::Signed(CookieKeys::new(Key::generate())))
        .build()
        .expect("signed config");
    Manager::new(MemoryStore::new(), config)
}

/// A stored session with a few values; returns its `Cookie` header.
async fn stored(manager: &Manager) -> String {
    let s = manager.session_from_cookies(None::<&str>);
    s.insert("name", "iris").await.unwrap();
    s.insert("user_id", &42u64).await.unwrap();
    s.insert("roles", &["reader", "writer"]).await.unwrap();
    match s.commit().await.unwrap() {
        SetCookie::Set { value, .. } => format!("session={value}"),
        other => panic!("expected a cookie, got {other:?}"),
    }
}

fn benches(c: &mut Criterion) {
    let rt = runtime();
    let m = manager();
    let cookie = rt.block_on(stored(&m));
    let mut group = c.benchmark_group("manager");

    group.bench_function("untouched", |b| {
        b.to_async(&rt).iter(|| async {
            let s = m.session_from_cookies([cookie.as_str()]);
            s.commit().await.unwrap()
        })
    });

    let signed = signed_manager();
    let signed_cookie = rt.block_on(stored(&signed));
    group.bench_function("untouched_signed", |b| {
        b.to_async(&rt).iter(|| async {
            let s = signed.session_from_cookies([signed_cookie.as_str()]);
            s.commit().await.unwrap()
        })
    });

    group.bench_function("load_get_signed", |b| {
        b.to_async(&rt).iter(|| async {
            let s = signed.session_from_cookies([signed_cookie.as_str()]);
            let name = s.get_string("name").await.unwrap();
            s.commit().await.unwrap();
            name
        })
    });

    group.bench_function("load_get", |b| {
        b.to_async(&rt).iter(|| async {
            let s = m.session_from_cookies([cookie.as_str()]);
            let name = s.get_string("name").await.unwrap();
            s.commit().await.unwrap();
            name
        })
    });

    group.bench_function("insert_save", |b| {
        b.to_async(&rt).iter(|| async {
            let s = m.session_from_cookies([cookie.as_str()]);
            s.insert("name", "iris").await.unwrap();
            s.commit().await.unwrap()
        })
    });

    group.bench_function("new_session", |b| {
        b.to_async(&rt).iter(|| async {
            let s = m.session_from_cookies(None::<&str>);
            s.insert("name", "iris").await.unwrap();
            s.commit().await.unwrap()
        })
    });

    group.finish();
}

criterion_group!(manager_benches, benches);
criterion_main!(manager_benches);
