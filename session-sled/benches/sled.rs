//! The sled store: load and save per second, and the disk used by 100 000
//! sessions. Run with `cargo xtask bench`, which writes the numbers into
//! README.md.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::path::PathBuf;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use session_core::testing::sample_record;
use session_core::Store;
use session_sled::{FlushPolicy, SledStore};

fn temp(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("session-sled-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Where criterion keeps its results, to leave the disk figure beside them.
fn criterion_dir() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            Some(
                std::env::current_exe()
                    .ok()?
                    .parent()?
                    .parent()?
                    .parent()?
                    .to_path_buf(),
            )
        })?;
    Some(target.join("criterion").join("sled"))
}

fn disk_per_100k(rt: &tokio::runtime::Runtime) {
    let path = temp("disk");
    let store = SledStore::builder(&path)
        .temporary(true)
        .open()
        .expect("open");
    rt.block_on(async {
        for _ in 0..100_000 {
            store.create(&sample_record()).await.unwrap();
        }
        store.flush().await.unwrap();
    });
    let bytes = store.size_on_disk().expect("size");
    println!("sled: {bytes} bytes on disk for 100000 sessions");
    if let Some(dir) = criterion_dir() {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("disk_per_100k.txt"), bytes.to_string());
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    disk_per_100k(&rt);

    let store = SledStore::builder(temp("ops"))
        .temporary(true)
        .open()
        .expect("open");
    let durable = SledStore::builder(temp("durable"))
        .temporary(true)
        .flush(FlushPolicy::EveryWrite)
        .open()
        .expect("open");
    let r = sample_record();
    rt.block_on(store.create(&r)).unwrap();
    rt.block_on(durable.create(&r)).unwrap();

    let mut group = c.benchmark_group("sled");
    group.bench_function("load", |b| {
        b.to_async(&rt)
            .iter(|| async { store.load(&r.id).await.unwrap() })
    });
    for (name, s) in [("save", &store), ("save_flush_every_write", &durable)] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let s = s.clone();
                let mut r = r.clone();
                async move {
                    r.version = s.load(&r.id).await.unwrap().unwrap().version;
                    let start = Instant::now();
                    for _ in 0..iters {
                        let expected = r.version;
                        r.version += 1;
                        s.save(&r, expected).await.unwrap();
                    }
                    start.elapsed()
                }
            })
        });
    }
    group.finish();
}

criterion_group!(sled_benches, benches);
criterion_main!(sled_benches);
