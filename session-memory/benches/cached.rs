//! `CachedStore` against the store it caches: what the memory tier adds to a
//! load it serves and to a save it writes through.
//!
//! The backing store is a `MemoryStore`, so the figures are the tier's own
//! cost (in front of Redis, a save also pays the round trip).
//!
//! Run with `cargo xtask bench cached`, which also writes the medians into
//! README.md.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

mod common;

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use session_core::{Id, Record, Store, Timestamp};
use session_memory::{CachedStore, MemoryStore};

use common::runtime;

/// A record with one small value, an hour to live.
fn record() -> Record {
    let id = Id::generate().expect("OS random").record_id();
    let now = Timestamp::now();
    let mut record = Record::new(id, now, now + Duration::from_secs(3600));
    record.data.insert("n".into(), vec![0x2a]);
    record
}

/// Saves version after version of one record: the write path of an update.
fn saves<S: Store>(
    c: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    store: &S,
) {
    let mut record = record();
    rt.block_on(async {
        store.create(&record).await.expect("create");
        // Loaded once, as a request would before its first update: the
        // cache's saves then replace a copy.
        store.load(&record.id).await.expect("load");
    });
    c.bench_function(name, |b| {
        b.to_async(rt).iter(|| {
            let expected = record.version;
            record.version += 1;
            let next = record.clone();
            async move { store.save(&next, expected).await.expect("save") }
        })
    });
}

/// Loads one record over and over: the read path.
fn loads<S: Store>(
    c: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    store: &S,
) {
    let record = record();
    rt.block_on(async { store.create(&record).await.expect("create") });
    c.bench_function(name, |b| {
        b.to_async(rt)
            .iter(|| async { store.load(&record.id).await.expect("load") })
    });
}

fn benches(c: &mut Criterion) {
    let rt = runtime();
    let memory = MemoryStore::new();
    let cached = CachedStore::builder(MemoryStore::new())
        .max_staleness(Duration::from_secs(3600))
        .build();
    let mut group = c.benchmark_group("cached");
    loads(&mut group, &rt, "memory_load", &memory);
    loads(&mut group, &rt, "cached_load", &cached);
    saves(&mut group, &rt, "memory_save", &memory);
    saves(&mut group, &rt, "cached_save", &cached);
    group.finish();
}

criterion_group!(cached_benches, benches);
criterion_main!(cached_benches);
