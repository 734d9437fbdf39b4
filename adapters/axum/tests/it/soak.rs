//! Load and soak: mixed new/read/write traffic for a bounded time against
//! the memory store (with a small memory budget, so eviction is exercised)
//! and Redis. `SOAK_SECONDS` sets the duration (default 5; the README's long
//! run is 300).

use std::time::Duration;

use session_core::testing::WithCleanup;
use session_core::{Config, Manager};
use session_memory::MemoryStore;

fn seconds() -> u64 {
    std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_on_the_memory_store_stays_bounded_error_free_and_loses_no_increment() {
    let budget = 512 * 1024;
    let store = MemoryStore::builder().max_bytes(budget).build();
    let manager = Manager::new(store.clone(), Config::default());
    let report = session_http_suite::soak(super::spawn, manager, seconds()).await;
    eprintln!("soak (memory): {report:?}");
    store.remove_expired();
    assert!(report.requests > 100, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    // An evicted session starts again from 1 under a new cookie, which the
    // report does not count as lost.
    assert_eq!(report.lost_increments, 0, "{report:?}");
    assert!(
        store.bytes_used() <= budget,
        "{} bytes held for a budget of {budget}",
        store.bytes_used()
    );
    assert!(report.p99 < Duration::from_secs(5), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_on_redis_is_error_free_and_loses_no_increment() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("soak-{}:", std::process::id());
    let store = match session_redis::RedisStore::connect(&url).await {
        Ok(s) => s.with_prefix(prefix.clone()),
        Err(e) => {
            session_core::testing::skip(&format!(
                "soak on Redis ({url}: {e}; install: apt-get install redis-server, or set REDIS_URL)"
            ));
            return;
        }
    };
    let cleanup_url = url.clone();
    let store = WithCleanup::new(store, move || {
        // Delete the run's keys from a thread of its own (drop runs inside
        // the async runtime).
        let _ = std::thread::spawn(move || -> redis::RedisResult<()> {
            let mut conn = redis::Client::open(cleanup_url.as_str())?.get_connection()?;
            // `SCAN`, not `KEYS`, which would hold a large shared Redis while
            // it walked every key.
            let keys: Vec<String> = redis::Commands::scan_options(
                &mut conn,
                redis::ScanOptions::default()
                    .with_pattern(format!("{prefix}*"))
                    .with_count(1000),
            )?
            .collect::<Result<_, _>>()?;
            for chunk in keys.chunks(500) {
                redis::cmd("DEL").arg(chunk).query::<()>(&mut conn)?;
            }
            Ok(())
        })
        .join();
    });
    let manager = Manager::new(store, Config::default());
    let report = session_http_suite::soak(super::spawn, manager.clone(), seconds()).await;
    drop(manager);
    eprintln!("soak (redis): {report:?}");
    assert!(report.requests > 100, "{report:?}");
    assert_eq!(report.errors, 0, "{report:?}");
    assert_eq!(report.lost_increments, 0, "{report:?}");
}
