//! Load-test servers for `cargo xtask bench load`: one process per variant,
//! one worker thread, the same routes in every session variant (the bare
//! ones serve `/plain` and `/stats`).
//!
//! ```text
//! session-loadtest serve <variant> <port>
//! session-loadtest memory <sessions> <ours|ours-owned|moka|tower|redis|postgres>
//! session-loadtest cleanup
//! ```
//!
//! Variants: `axum-bare`, `axum-layered` (bare with a layer that does
//! nothing), `axum-floor` (the least a server-side session can cost: an id
//! cookie and an integer in a `HashMap`, in the handlers, no layer),
//! `axum-floor-redis` (the same with the integer in Redis: one `GET`,
//! `SET` or `INCR` per request through the `redis` crate's connection),
//! `axum-ours-{memory,redis,redis-cached,postgres,sled}` (`redis-cached`:
//! Redis behind a `CachedStore`),
//! `axum-tower-{memory,redis,postgres}`, `actix-bare`,
//! `actix-ours-{memory,redis,redis-cached,postgres,sled}`, `actix-session-{cookie,redis}`.
//!
//! Redis variants use `LOADTEST_REDIS_URL`, by default database 15 of the
//! local server (`cargo xtask bench load` empties it before and after);
//! PostgreSQL variants use `DATABASE_URL_POSTGRES`.
//!
//! Routes (GET): `/plain` never touches the session (its handler takes no
//! session argument, like a static or health route behind the layer); `/new` stores a counter
//! at 0 in a new session; `/read` reads it; `/write` increments it and
//! answers the new value; `/count` reads it for the final check; `/stats`
//! answers our store's call counts (`{}` for the others); `/writes` answers
//! how many increments the server acknowledged with a 200.
//!
//! `memory <sessions> <subject>` fills a memory store (ours, a bare moka
//! cache configured like ours, or tower-sessions') with that many idle
//! sessions and prints the resident memory per session.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use session_core::testing::{CallCounts, Instrumented};
use session_core::{Codec, Config, Manager, Store};

/// Increments this server's handlers acknowledged: what the final counters
/// must equal when no update was lost.
static WRITES_OK: AtomicU64 = AtomicU64::new(0);

/// The values those increments answered since `/writes` last asked: on one
/// shared session, no two acknowledged increments may answer the same value
/// (a repeat is an update lost, whatever requests abandoned at the end of a
/// run wrote).
static ANSWERED: Mutex<Vec<i64>> = Mutex::new(Vec::new());

fn wrote(n: i64) {
    WRITES_OK.fetch_add(1, Ordering::Relaxed);
    ANSWERED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(n);
}

/// `/writes`: the increments acknowledged so far, and how many of the values
/// answered since the previous call repeat an earlier one (then forgotten).
fn writes() -> String {
    let mut answered =
        std::mem::take(&mut *ANSWERED.lock().unwrap_or_else(PoisonError::into_inner));
    answered.sort_unstable();
    let distinct = answered.len() - answered.windows(2).filter(|w| w[0] == w[1]).count();
    format!(
        "{} {}",
        WRITES_OK.load(Ordering::Relaxed),
        answered.len() - distinct
    )
}

/// Redis database 15 by default: `cargo xtask bench load` empties it before
/// and after a run, so nothing is left behind. `LOADTEST_REDIS_URL` overrides.
const REDIS_URL: &str = "redis://127.0.0.1:6379/15";
const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Where our PostgreSQL variants keep their sessions.
const OUR_TABLE: &str = "loadtest_sessions";
/// Where tower-sessions' PostgreSQL variant keeps its sessions.
const TOWER_SCHEMA: &str = "loadtest_tower";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["serve", variant, port] => match port.parse::<u16>() {
            Ok(port) => serve(variant, SocketAddr::from(([127, 0, 0, 1], port))),
            Err(_) => Err(format!("bad port {port:?}")),
        },
        ["cleanup"] => cleanup(),
        ["memory", n, subject] => match n.parse::<usize>() {
            Ok(n) => memory(n, subject),
            Err(_) => Err(format!("bad count {n:?}")),
        },
        _ => Err(
            "usage: session-loadtest serve <variant> <port> | memory <sessions> <ours|ours-owned|moka|tower|redis|postgres> | cleanup"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("session-loadtest: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads the call counts of an instrumented store.
type Counts = Arc<dyn Fn() -> CallCounts + Send + Sync>;

fn instrument<S: Store>(store: S) -> (Arc<dyn Store>, Counts) {
    let instrumented = Instrumented::new(store);
    let handle = instrumented.clone();
    (Arc::new(instrumented), Arc::new(move || handle.counts()))
}

/// Our store for a variant suffix, instrumented so `/stats` can count round
/// trips.
async fn our_store(kind: &str) -> Result<(Arc<dyn Store>, Counts), String> {
    Ok(match kind {
        "memory" => instrument(session_memory::MemoryStore::new()),
        "redis" => instrument(
            session_redis::RedisStore::connect(&env_or("LOADTEST_REDIS_URL", REDIS_URL))
                .await
                .map_err(|e| e.to_string())?
                .with_prefix(redis_prefix()),
        ),
        // Redis behind a memory tier: reads within `max_staleness` (5 s by
        // default) are served from memory; the counts are Redis's own.
        "redis-cached" => cached(Box::pin(our_store("redis")).await?),
        "postgres" => {
            let s =
                session_sql::PostgresStore::connect(&env_or("DATABASE_URL_POSTGRES", POSTGRES_URL))
                    .await
                    .map_err(|e| e.to_string())?
                    .with_table(session_sql::Table::new(OUR_TABLE).map_err(|e| e.to_string())?);
            s.migrate().await.map_err(|e| e.to_string())?;
            instrument(s)
        }
        "sled" => {
            // `cargo xtask bench load` gives each server a directory inside
            // its own, which it removes: a killed server cannot clean up.
            let dir = std::env::var_os("LOADTEST_SLED_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| {
                    std::env::temp_dir().join(format!("session-loadtest-{}", std::process::id()))
                });
            instrument(
                session_sled::SledStore::builder(dir)
                    .temporary(true)
                    .open()
                    .map_err(|e| e.to_string())?,
            )
        }
        other => return Err(format!("unknown store {other:?}")),
    })
}

/// `store` behind a `CachedStore` with its defaults; the counts stay the
/// backing store's.
fn cached((store, counts): (Arc<dyn Store>, Counts)) -> (Arc<dyn Store>, Counts) {
    (
        Arc::new(session_memory::CachedStore::builder(store).build()),
        counts,
    )
}

/// Our Redis keys' prefix: the process's own, so servers never share keys.
fn redis_prefix() -> String {
    format!("loadtest-{}:", std::process::id())
}

/// A Redis store that connects on first use, on the runtime it is built in:
/// one per actix-web worker, as session-redis recommends there.
fn our_lazy_redis_store() -> Result<(Arc<dyn Store>, Counts), String> {
    Ok(instrument(
        session_redis::RedisStore::connect_lazy(&env_or("LOADTEST_REDIS_URL", REDIS_URL))
            .map_err(|e| e.to_string())?
            .with_prefix(redis_prefix()),
    ))
}

/// The call counts as JSON, for `/stats`.
fn stats(counts: &Counts) -> String {
    let c = counts();
    format!(
        "{{\"load\":{},\"create\":{},\"save\":{},\"touch\":{},\"delete\":{},\"other\":{}}}",
        c.load, c.create, c.save, c.touch, c.delete, c.other
    )
}

fn manager(store: Arc<dyn Store>) -> Manager {
    let config = Config::builder()
        .with_secure(false)
        .build()
        .expect("a valid config");
    Manager::from_arc(store, config)
}

fn serve(variant: &str, addr: SocketAddr) -> Result<(), String> {
    let (framework, rest) = variant
        .split_once('-')
        .ok_or_else(|| format!("unknown variant {variant:?}"))?;
    match framework {
        "axum" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(axum_server::serve(rest, addr))
        }
        "actix" => actix_web::rt::System::new().block_on(actix_server::serve(rest, addr)),
        _ => Err(format!("unknown variant {variant:?}")),
    }
}

/// Removes what the servers left behind: our and tower-sessions' PostgreSQL
/// tables (names only this program uses), and the default Redis database's
/// keys (database 15; a `LOADTEST_REDIS_URL` set by the user is left alone).
fn cleanup() -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(&env_or("DATABASE_URL_POSTGRES", POSTGRES_URL))
            .await
            .map_err(|e| e.to_string())?;
        for statement in [
            format!("DROP TABLE IF EXISTS {OUR_TABLE}, {OUR_TABLE}_migrations"),
            format!("DROP SCHEMA IF EXISTS {TOWER_SCHEMA} CASCADE"),
        ] {
            sqlx::query(&statement)
                .execute(&pool)
                .await
                .map_err(|e| e.to_string())?;
        }
        if std::env::var_os("LOADTEST_REDIS_URL").is_none() {
            let client = redis::Client::open(REDIS_URL).map_err(|e| e.to_string())?;
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            // ASYNC: freeing a million keys in the foreground outlasts the
            // client's response timeout.
            let _: () = redis::cmd("FLUSHDB")
                .arg("ASYNC")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

/// Fills a memory store with `n` idle sessions, each holding one small
/// integer, and prints the resident memory they take as JSON. `subject` is
/// `ours` (our `MemoryStore` through the manager), `moka` (a bare moka cache
/// configured like ours, holding values of the size of our entries: the floor
/// that moka's own bookkeeping sets) or `tower` (tower-sessions'
/// `MemoryStore`). Run each in its own process so the measures do not mix.
fn memory(n: usize, subject: &str) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let before = rss_bytes();
        // Each fill measures while its store is still alive.
        let (len, value_bytes, after) = match subject {
            "ours" | "ours-owned" => {
                let (len, value_bytes, after, charged) = fill_ours(n, subject == "ours-owned").await?;
                let per = after.saturating_sub(before) as f64 / n as f64;
                println!(
                    "{{\"subject\": \"{subject}\", \"sessions\": {n}, \"len\": {len}, \"rss_bytes_per_session\": {per:.0}, \"value_bytes_per_session\": {value_bytes}, \"charged_bytes_per_session\": {:.0}}}",
                    charged as f64 / n as f64
                );
                return Ok(());
            }
            "moka" => fill_moka(n).await,
            "tower" => fill_tower(n).await?,
            "redis" | "postgres" => {
                let (len, value_bytes, server_bytes) = fill_server(n, subject).await?;
                println!(
                    "{{\"subject\": \"{subject}\", \"sessions\": {n}, \"len\": {len}, \"server_bytes_per_session\": {:.0}, \"value_bytes_per_session\": {value_bytes}}}",
                    server_bytes as f64 / n as f64
                );
                return Ok(());
            }
            other => return Err(format!("unknown memory subject {other:?}")),
        };
        let per = after.saturating_sub(before) as f64 / n as f64;
        println!(
            "{{\"subject\": \"{subject}\", \"sessions\": {n}, \"len\": {len}, \"rss_bytes_per_session\": {per:.0}, \"value_bytes_per_session\": {value_bytes}}}"
        );
        Ok(())
    })
}

/// The size of our memory store's entry for a session holding `{"n": i}`:
/// the header (deadline, version, owner length) and the encoded record.
fn our_entry_bytes(i: u64) -> Result<usize, String> {
    let now = session_core::Timestamp::now();
    let mut r = session_core::Record::new(
        session_core::Id::generate()
            .map_err(|e| e.to_string())?
            .record_id(),
        now,
        now + std::time::Duration::from_secs(3600),
    );
    let value = session_core::MessagePack
        .encode(&i)
        .map_err(|e| e.to_string())?;
    r.data.insert("n".into(), value);
    Ok(18 + r.to_bytes().map_err(|e| e.to_string())?.len())
}

/// Fills our memory store with `n` sessions through the manager, each
/// logged in as an owner of its own if `owned` (a login per user: the owner
/// index's costliest shape), and returns the sessions kept, the bytes of
/// one encoded record, the process's resident memory and the bytes the
/// store charges to its budget.
async fn fill_ours(n: usize, owned: bool) -> Result<(u64, usize, u64, u64), String> {
    let store = session_memory::MemoryStore::builder()
        .max_bytes(u64::MAX)
        .build();
    let m = Manager::new(store.clone(), Config::default());
    for i in 0..n {
        let s = m.session_from_cookies(None::<&str>);
        s.insert("n", &(i as u64))
            .await
            .map_err(|e| e.to_string())?;
        if owned {
            s.login(&format!("user-{i:08}"))
                .await
                .map_err(|e| e.to_string())?;
        }
        s.commit().await.map_err(|e| e.to_string())?;
    }
    store.remove_expired();
    // The encoded record alone (the owner's name inside it when owned):
    // the store's header is overhead like the rest.
    let record = our_entry_bytes(n as u64)? - 18 + if owned { 13 } else { 0 };
    Ok((store.len(), record, rss_bytes(), store.bytes_used()))
}

/// Fills our Redis or PostgreSQL store with `n` sessions through the manager
/// and returns the bytes the server holds for them (Redis `used_memory`
/// growth; the table's total relation size), then removes them.
async fn fill_server(n: usize, subject: &str) -> Result<(u64, usize, u64), String> {
    let value_bytes = our_entry_bytes(n as u64)? - 18;
    let fill = |store: Arc<dyn Store>| async move {
        let m = Manager::from_arc(store, Config::default());
        let mut done = 0;
        while done < n {
            let batch = (n - done).min(64);
            let writes: Vec<_> = (0..batch)
                .map(|i| {
                    let s = m.session_from_cookies(None::<&str>);
                    tokio::spawn(async move {
                        s.insert("n", &((done + i) as u64)).await?;
                        s.commit().await
                    })
                })
                .collect();
            for w in writes {
                w.await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
            }
            done += batch;
        }
        Ok::<(), String>(())
    };
    match subject {
        "redis" => {
            let url = env_or("LOADTEST_REDIS_URL", REDIS_URL);
            let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            let used = |info: String| {
                info.lines()
                    .find_map(|l| l.strip_prefix("used_memory:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let prefix = format!("loadtest-memory-{}:", std::process::id());
            // A `FLUSHDB ASYNC` before (the load runs empty their database so)
            // frees memory in the background: measured meanwhile, the growth
            // would come out too small, or negative.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            let before: String = loop {
                let info: String = redis::cmd("INFO")
                    .arg("memory")
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let pending = info
                    .lines()
                    .find_map(|l| l.strip_prefix("lazyfree_pending_objects:"))
                    .is_some_and(|v| v.trim() != "0");
                if !pending || std::time::Instant::now() > deadline {
                    break info;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            };
            let store = session_redis::RedisStore::connect(&url)
                .await
                .map_err(|e| e.to_string())?
                .with_prefix(prefix.clone());
            let filled = fill(Arc::new(store)).await;
            let after: String = redis::cmd("INFO")
                .arg("memory")
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            // Clean up whatever was written, even after a failure.
            let mut cursor = 0u64;
            let mut removed = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{prefix}*"))
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                if !keys.is_empty() {
                    removed += keys.len() as u64;
                    let _: () = redis::cmd("UNLINK")
                        .arg(&keys)
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            filled?;
            let (before, after) = (used(before), used(after));
            if after <= before {
                return Err(format!(
                    "Redis used_memory did not grow ({before} to {after} bytes): not a measure"
                ));
            }
            Ok((removed, value_bytes, after - before))
        }
        _ => {
            let url = env_or("DATABASE_URL_POSTGRES", POSTGRES_URL);
            let table = format!("loadtest_memory_{}", std::process::id());
            let store = session_sql::PostgresStore::connect(&url)
                .await
                .map_err(|e| e.to_string())?
                .with_table(session_sql::Table::new(&table).map_err(|e| e.to_string())?);
            store.migrate().await.map_err(|e| e.to_string())?;
            let filled = fill(Arc::new(store)).await;
            let pool = sqlx::PgPool::connect(&url)
                .await
                .map_err(|e| e.to_string())?;
            let size: (i64, i64) = sqlx::query_as(&format!(
                "SELECT pg_total_relation_size('{table}'), (SELECT count(*) FROM {table})"
            ))
            .fetch_one(&pool)
            .await
            .map_err(|e| e.to_string())?;
            sqlx::query(&format!("DROP TABLE {table}, {table}_migrations"))
                .execute(&pool)
                .await
                .map_err(|e| e.to_string())?;
            filled?;
            Ok((size.1 as u64, value_bytes, size.0 as u64))
        }
    }
}

async fn fill_moka(n: usize) -> (u64, usize, u64) {
    struct Hour;
    impl moka::Expiry<[u8; 32], Arc<[u8]>> for Hour {
        fn expire_after_create(
            &self,
            _: &[u8; 32],
            _: &Arc<[u8]>,
            _: std::time::Instant,
        ) -> Option<std::time::Duration> {
            Some(std::time::Duration::from_secs(3600))
        }
    }
    let size = our_entry_bytes(n as u64).unwrap_or(100);
    let cache: moka::future::Cache<[u8; 32], Arc<[u8]>> = moka::future::Cache::builder()
        .max_capacity(u64::MAX)
        .weigher(|_: &[u8; 32], v: &Arc<[u8]>| u32::try_from(v.len()).unwrap_or(u32::MAX))
        .eviction_policy(moka::policy::EvictionPolicy::lru())
        .expire_after(Hour)
        .eviction_listener(|_, _, _| {})
        .build();
    for i in 0..n {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&(i as u64).to_le_bytes());
        cache.insert(key, Arc::from(vec![0u8; size])).await;
    }
    cache.run_pending_tasks().await;
    (cache.entry_count(), size, rss_bytes())
}

async fn fill_tower(n: usize) -> Result<(u64, usize, u64), String> {
    use tower_sessions::session::{Id, Record};
    use tower_sessions::SessionStore;
    let store = tower_sessions::MemoryStore::default();
    let expiry_date = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    for i in 0..n {
        let mut record = Record {
            id: Id::default(),
            data: [("n".to_owned(), serde_json::Value::from(i as u64))].into(),
            expiry_date,
        };
        store.create(&mut record).await.map_err(|e| e.to_string())?;
    }
    // tower-sessions keeps decoded values: no encoded size to compare.
    Ok((n as u64, 0, rss_bytes()))
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

mod axum_server {
    use std::net::SocketAddr;

    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::Router;

    type Answer = (StatusCode, String);

    fn fail(e: impl std::fmt::Display) -> Answer {
        (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }

    async fn run(app: Router, addr: SocketAddr) -> Result<(), String> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| e.to_string())?;
        axum::serve(listener, app).await.map_err(|e| e.to_string())
    }

    pub(crate) async fn serve(variant: &str, addr: SocketAddr) -> Result<(), String> {
        if variant == "bare" || variant == "layered" {
            let app = Router::new()
                .route("/plain", get(|| async { "ok" }))
                .route("/stats", get(|| async { "{}" }));
            // `layered`: a layer that does nothing, to show what axum itself
            // charges for layering a router (every session layer pays it).
            let app = if variant == "layered" {
                app.layer(tower_layer::Identity::new())
            } else {
                app
            };
            return run(app, addr).await;
        }
        if variant == "floor" {
            return floor(addr).await;
        }
        if variant == "floor-redis" {
            return floor_redis(addr).await;
        }
        if let Some(kind) = variant.strip_prefix("ours-") {
            return ours(kind, addr).await;
        }
        if let Some(kind) = variant.strip_prefix("tower-") {
            return tower(kind, addr).await;
        }
        Err(format!("unknown axum variant {variant:?}"))
    }

    /// The floor's session id: 128 bits from the OS random source, in hex.
    fn floor_id() -> Result<u128, Answer> {
        let mut bytes = [0u8; 16];
        getrandom::getrandom(&mut bytes).map_err(fail)?;
        Ok(u128::from_ne_bytes(bytes))
    }

    /// The floor's `Set-Cookie` for `id`.
    fn floor_cookie(id: u128) -> [(axum::http::HeaderName, String); 1] {
        [(
            axum::http::header::SET_COOKIE,
            format!("sid={id:032x}; Path=/; HttpOnly; Secure; SameSite=Lax"),
        )]
    }

    /// The floor's session id from the request's `Cookie` header.
    fn floor_id_of(headers: &axum::http::HeaderMap) -> Option<u128> {
        let cookies = headers.get(axum::http::header::COOKIE)?.to_str().ok()?;
        let value = cookies
            .split(';')
            .find_map(|c| c.trim().strip_prefix("sid="))?;
        u128::from_str_radix(value, 16).ok()
    }

    /// The floors' routes, around their handlers for `/new`, `/read` (also
    /// `/count`) and `/write`.
    fn floor_routes<N, NT, R, RT, W, WT>(new: N, read: R, write: W) -> Router
    where
        N: axum::handler::Handler<NT, ()>,
        R: axum::handler::Handler<RT, ()>,
        W: axum::handler::Handler<WT, ()>,
        NT: 'static,
        RT: 'static,
        WT: 'static,
    {
        Router::new()
            .route("/plain", get(|| async { "ok" }))
            .route("/new", get(new))
            .route("/read", get(read.clone()))
            .route("/count", get(read))
            .route("/write", get(write))
            .route("/stats", get(|| async { "{}" }))
            .route("/writes", get(|| async { crate::writes() }))
    }

    /// `floor`: the least a server-side session can cost, written into the
    /// handlers themselves (no layer): a 128-bit id from the OS random
    /// source in a cookie, and one integer per id in a `HashMap` under a
    /// mutex. No expiry, no id hashing, no codec, no store interface, no
    /// timeouts, no commit after the handler: what no session library can
    /// undercut, so its distance from bare axum bounds every library's.
    async fn floor(addr: SocketAddr) -> Result<(), String> {
        use std::collections::HashMap;
        use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

        use axum::extract::Request;

        // A static rather than router state, which would make axum clone a
        // boxed service per request (no other variant's router has state).
        static SESSIONS: LazyLock<Mutex<HashMap<u128, i64>>> = LazyLock::new(Default::default);

        fn map() -> MutexGuard<'static, HashMap<u128, i64>> {
            SESSIONS.lock().unwrap_or_else(PoisonError::into_inner)
        }

        async fn read(req: Request) -> String {
            let n = floor_id_of(req.headers()).and_then(|id| map().get(&id).copied());
            n.unwrap_or(-1).to_string()
        }

        let new = || async move {
            let id = floor_id()?;
            map().insert(id, 0);
            Ok::<_, Answer>((floor_cookie(id), "ok"))
        };
        let write = |req: Request| async move {
            let Some(id) = floor_id_of(req.headers()) else {
                return fail("no session");
            };
            let n = match map().get_mut(&id) {
                Some(n) => {
                    *n += 1;
                    *n
                }
                None => return fail("no session"),
            };
            crate::wrote(n);
            (StatusCode::OK, n.to_string())
        };
        let app = floor_routes(new, read, write);
        run(app, addr).await
    }

    /// `floor-redis`: the floor with its integers in Redis, through the
    /// `redis` crate's `ConnectionManager` as our Redis store uses it (the
    /// same settings): one `SET`, `GET` or `INCR` per request, no record, no
    /// codec, no expiry check, no compare-and-set. What no session library
    /// on this client can undercut on Redis.
    async fn floor_redis(addr: SocketAddr) -> Result<(), String> {
        use std::sync::OnceLock;

        use axum::extract::Request;
        use redis::aio::ConnectionManager;
        use redis::AsyncCommands;

        static CONN: OnceLock<ConnectionManager> = OnceLock::new();
        static PREFIX: OnceLock<String> = OnceLock::new();

        fn conn() -> ConnectionManager {
            CONN.get().expect("connected before serving").clone()
        }

        fn key(id: u128) -> String {
            format!("{}{id:032x}", PREFIX.get().expect("set before serving"))
        }

        async fn read(req: Request) -> Answer {
            let Some(id) = floor_id_of(req.headers()) else {
                return (StatusCode::OK, "-1".to_owned());
            };
            match conn().get::<_, Option<i64>>(key(id)).await {
                Ok(n) => (StatusCode::OK, n.unwrap_or(-1).to_string()),
                Err(e) => fail(e),
            }
        }

        let client = redis::Client::open(crate::env_or("LOADTEST_REDIS_URL", crate::REDIS_URL))
            .map_err(|e| e.to_string())?;
        // The same client, configured as ours connects it.
        let info = client.get_connection_info().clone();
        let client = redis::Client::open(info.set_tcp_settings(session_redis::tcp_settings()))
            .map_err(|e| e.to_string())?;
        let manager = ConnectionManager::new_with_config(client, session_redis::manager_config())
            .await
            .map_err(|e| e.to_string())?;
        CONN.get_or_init(|| manager);
        PREFIX.get_or_init(crate::redis_prefix);

        let new = || async move {
            let id = floor_id()?;
            conn()
                .set_ex::<_, _, ()>(key(id), 0i64, 3600)
                .await
                .map_err(fail)?;
            Ok::<_, Answer>((floor_cookie(id), "ok"))
        };
        let write = |req: Request| async move {
            let Some(id) = floor_id_of(req.headers()) else {
                return fail("no session");
            };
            match conn().incr::<_, _, i64>(key(id), 1).await {
                Ok(n) => {
                    crate::wrote(n);
                    (StatusCode::OK, n.to_string())
                }
                Err(e) => fail(e),
            }
        };
        let app = floor_routes(new, read, write);
        run(app, addr).await
    }

    async fn ours(kind: &str, addr: SocketAddr) -> Result<(), String> {
        use session_axum::{Session, SessionLayer};
        let (store, counts) = crate::our_store(kind).await?;
        let manager = crate::manager(store);
        let app = Router::new()
            .route("/plain", get(|| async { "ok" }))
            .route(
                "/new",
                get(|s: Session| async move {
                    match s.insert("n", &0i64).await {
                        Ok(()) => (StatusCode::OK, "ok".to_owned()),
                        Err(e) => fail(e),
                    }
                }),
            )
            .route(
                "/read",
                get(|s: Session| async move {
                    match s.get::<i64>("n").await {
                        Ok(n) => (StatusCode::OK, n.unwrap_or(-1).to_string()),
                        Err(e) => fail(e),
                    }
                }),
            )
            .route(
                "/count",
                get(|s: Session| async move {
                    match s.get::<i64>("n").await {
                        Ok(n) => (StatusCode::OK, n.unwrap_or(-1).to_string()),
                        Err(e) => fail(e),
                    }
                }),
            )
            .route(
                "/write",
                get(|s: Session| async move {
                    match s.increment("n", 1).await {
                        Ok(n) => {
                            crate::wrote(n);
                            (StatusCode::OK, n.to_string())
                        }
                        Err(e) => fail(e),
                    }
                }),
            )
            // The counts ride in the closure, not in router state: state
            // would make axum clone a boxed service per request on every
            // route, a cost the other variants' routers do not pay.
            .route(
                "/stats",
                get(move || {
                    let counts = counts.clone();
                    async move { crate::stats(&counts) }
                }),
            )
            .route("/writes", get(|| async { crate::writes() }))
            .layer(SessionLayer::new(manager));
        run(app, addr).await
    }

    async fn tower(kind: &str, addr: SocketAddr) -> Result<(), String> {
        use tower_sessions::{Session, SessionManagerLayer, SessionStore};
        fn app<S: SessionStore + Clone>(store: S) -> Router {
            Router::new()
                .route("/plain", get(|| async { "ok" }))
                .route(
                    "/new",
                    get(|s: Session| async move {
                        match s.insert("n", 0i64).await {
                            Ok(()) => (StatusCode::OK, "ok".to_owned()),
                            Err(e) => fail(e),
                        }
                    }),
                )
                .route(
                    "/read",
                    get(|s: Session| async move {
                        match s.get::<i64>("n").await {
                            Ok(n) => (StatusCode::OK, n.unwrap_or(-1).to_string()),
                            Err(e) => fail(e),
                        }
                    }),
                )
                .route(
                    "/count",
                    get(|s: Session| async move {
                        match s.get::<i64>("n").await {
                            Ok(n) => (StatusCode::OK, n.unwrap_or(-1).to_string()),
                            Err(e) => fail(e),
                        }
                    }),
                )
                .route(
                    "/write",
                    get(|s: Session| async move {
                        let n = match s.get::<i64>("n").await {
                            Ok(n) => n.unwrap_or(0) + 1,
                            Err(e) => return fail(e),
                        };
                        match s.insert("n", n).await {
                            Ok(()) => {
                                crate::wrote(n);
                                (StatusCode::OK, n.to_string())
                            }
                            Err(e) => fail(e),
                        }
                    }),
                )
                .route("/stats", get(|| async { "{}" }))
                .route("/writes", get(|| async { crate::writes() }))
                .layer(SessionManagerLayer::new(store).with_secure(false))
        }
        match kind {
            "memory" => run(app(tower_sessions::MemoryStore::default()), addr).await,
            "redis" => {
                use tower_sessions_redis_store::fred::prelude::{ClientLike, Config, Pool};
                let config =
                    Config::from_url(&crate::env_or("LOADTEST_REDIS_URL", crate::REDIS_URL))
                        .map_err(|e| e.to_string())?;
                let pool = Pool::new(config, None, None, None, 6).map_err(|e| e.to_string())?;
                let _connection = pool.connect();
                pool.wait_for_connect().await.map_err(|e| e.to_string())?;
                run(app(tower_sessions_redis_store::RedisStore::new(pool)), addr).await
            }
            "postgres" => {
                let pool = sqlx::PgPool::connect(&crate::env_or(
                    "DATABASE_URL_POSTGRES",
                    crate::POSTGRES_URL,
                ))
                .await
                .map_err(|e| e.to_string())?;
                let store = tower_sessions_sqlx_store::PostgresStore::new(pool)
                    .with_schema_name(crate::TOWER_SCHEMA)?;
                store.migrate().await.map_err(|e| e.to_string())?;
                run(app(store), addr).await
            }
            other => Err(format!("unknown tower-sessions store {other:?}")),
        }
    }
}

mod actix_server {
    use std::net::SocketAddr;

    use actix_web::{web, App, HttpResponse, HttpServer};

    fn fail(e: impl std::fmt::Display) -> HttpResponse {
        HttpResponse::InternalServerError().body(e.to_string())
    }

    pub(crate) async fn serve(variant: &str, addr: SocketAddr) -> Result<(), String> {
        if variant == "bare" {
            return HttpServer::new(|| {
                App::new()
                    .route("/plain", web::get().to(|| async { "ok" }))
                    .route("/stats", web::get().to(|| async { "{}" }))
            })
            .workers(1)
            .bind(addr)
            .map_err(|e| e.to_string())?
            .run()
            .await
            .map_err(|e| e.to_string());
        }
        if let Some(kind) = variant.strip_prefix("ours-") {
            return ours(kind, addr).await;
        }
        if let Some(kind) = variant.strip_prefix("session-") {
            return peer(kind, addr).await;
        }
        Err(format!("unknown actix variant {variant:?}"))
    }

    async fn ours(kind: &str, addr: SocketAddr) -> Result<(), String> {
        use session_actix::{Session, SessionMiddleware};
        // Redis: each worker builds its own lazily connected store in the app
        // factory, so the connection's I/O runs on the worker's own thread
        // (`RedisStore::connect_lazy`). The other stores are shared.
        let lazy = matches!(kind, "redis" | "redis-cached");
        let shared = if lazy {
            // Fail here, not in a worker, if the settings are wrong.
            crate::our_lazy_redis_store()?;
            None
        } else {
            let (store, counts) = crate::our_store(kind).await?;
            Some((crate::manager(store), counts))
        };
        let kind = kind.to_owned();
        HttpServer::new(move || {
            let (manager, counts) = match &shared {
                Some((manager, counts)) => (manager.clone(), counts.clone()),
                None => {
                    let redis = crate::our_lazy_redis_store().expect("settings checked at start");
                    let (store, counts) = if kind == "redis-cached" {
                        crate::cached(redis)
                    } else {
                        redis
                    };
                    (crate::manager(store), counts)
                }
            };
            App::new()
                .wrap(SessionMiddleware::new(manager))
                .route("/plain", web::get().to(|| async { "ok" }))
                .route(
                    "/new",
                    web::get().to(|s: Session| async move {
                        match s.insert("n", &0i64).await {
                            Ok(()) => HttpResponse::Ok().body("ok"),
                            Err(e) => fail(e),
                        }
                    }),
                )
                .route(
                    "/read",
                    web::get().to(|s: Session| async move {
                        match s.get::<i64>("n").await {
                            Ok(n) => HttpResponse::Ok().body(n.unwrap_or(-1).to_string()),
                            Err(e) => fail(e),
                        }
                    }),
                )
                .route(
                    "/count",
                    web::get().to(|s: Session| async move {
                        match s.get::<i64>("n").await {
                            Ok(n) => HttpResponse::Ok().body(n.unwrap_or(-1).to_string()),
                            Err(e) => fail(e),
                        }
                    }),
                )
                .route(
                    "/write",
                    web::get().to(|s: Session| async move {
                        match s.increment("n", 1).await {
                            Ok(n) => {
                                crate::wrote(n);
                                HttpResponse::Ok().body(n.to_string())
                            }
                            Err(e) => fail(e),
                        }
                    }),
                )
                .route(
                    "/stats",
                    web::get().to(move || {
                        let counts = counts.clone();
                        async move { crate::stats(&counts) }
                    }),
                )
                .route("/writes", web::get().to(|| async { crate::writes() }))
        })
        .workers(1)
        .bind(addr)
        .map_err(|e| e.to_string())?
        .run()
        .await
        .map_err(|e| e.to_string())
    }

    async fn peer(kind: &str, addr: SocketAddr) -> Result<(), String> {
        use actix_session::storage::{CookieSessionStore, RedisSessionStore};
        use actix_session::{Session, SessionMiddleware};
        use actix_web::cookie::Key;

        fn routes(cfg: &mut web::ServiceConfig) {
            cfg.route("/plain", web::get().to(|| async { "ok" }))
                .route(
                    "/new",
                    web::get().to(|s: Session| async move {
                        match s.insert("n", 0i64) {
                            Ok(()) => HttpResponse::Ok().body("ok"),
                            Err(e) => fail(e),
                        }
                    }),
                )
                .route(
                    "/read",
                    web::get().to(|s: Session| async move {
                        match s.get::<i64>("n") {
                            Ok(n) => HttpResponse::Ok().body(n.unwrap_or(-1).to_string()),
                            Err(e) => fail(e),
                        }
                    }),
                )
                .route(
                    "/count",
                    web::get().to(|s: Session| async move {
                        match s.get::<i64>("n") {
                            Ok(n) => HttpResponse::Ok().body(n.unwrap_or(-1).to_string()),
                            Err(e) => fail(e),
                        }
                    }),
                )
                .route(
                    "/write",
                    web::get().to(|s: Session| async move {
                        let n = match s.get::<i64>("n") {
                            Ok(n) => n.unwrap_or(0) + 1,
                            Err(e) => return fail(e),
                        };
                        match s.insert("n", n) {
                            Ok(()) => {
                                crate::wrote(n);
                                HttpResponse::Ok().body(n.to_string())
                            }
                            Err(e) => fail(e),
                        }
                    }),
                )
                .route("/stats", web::get().to(|| async { "{}" }))
                .route("/writes", web::get().to(|| async { crate::writes() }));
        }

        let key = Key::generate();
        match kind {
            "cookie" => HttpServer::new(move || {
                App::new()
                    .wrap(
                        SessionMiddleware::builder(CookieSessionStore::default(), key.clone())
                            .cookie_secure(false)
                            .build(),
                    )
                    .configure(routes)
            })
            .workers(1)
            .bind(addr)
            .map_err(|e| e.to_string())?
            .run()
            .await
            .map_err(|e| e.to_string()),
            "redis" => {
                // Its first documented set-up (`new`, a connection manager
                // built here, whose I/O then runs on this main thread). The
                // pooled store (`new_pooled`, feature `redis-pool`) opens its
                // connections on the worker's thread but checks each one out
                // of a deadpool pool per request, with a PING: in a trial run
                // it served a third of the requests `new` did.
                let store =
                    RedisSessionStore::new(crate::env_or("LOADTEST_REDIS_URL", crate::REDIS_URL))
                        .await
                        .map_err(|e| e.to_string())?;
                HttpServer::new(move || {
                    App::new()
                        .wrap(
                            SessionMiddleware::builder(store.clone(), key.clone())
                                .cookie_secure(false)
                                .build(),
                        )
                        .configure(routes)
                })
                .workers(1)
                .bind(addr)
                .map_err(|e| e.to_string())?
                .run()
                .await
                .map_err(|e| e.to_string())
            }
            other => Err(format!("unknown actix-session store {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    /// `/writes` counts every acknowledged increment, and of the values
    /// answered since it last asked, those that repeat an earlier one (each
    /// repeat an update lost); then it forgets them.
    #[test]
    fn writes_counts_repeated_answers_since_the_last_call() {
        let counts = |answer: String| -> (u64, u64) {
            let mut words = answer.split_whitespace().map(|w| w.parse().unwrap());
            (words.next().unwrap(), words.next().unwrap())
        };
        let (before, _) = counts(super::writes());
        for n in [3, 1, 2, 2, 3, 2] {
            super::wrote(n);
        }
        assert_eq!(counts(super::writes()), (before + 6, 3));
        super::wrote(2);
        assert_eq!(counts(super::writes()), (before + 7, 0));
    }
}
