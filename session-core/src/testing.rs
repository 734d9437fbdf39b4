//! Helpers for testing code that uses sessions (feature `conformance`).
//!
//! * [`Instrumented`] wraps any store, counts its calls per operation and can
//!   inject errors and delays, to prove "no store call" claims and failure
//!   behaviour.
//! * [`TestStore`] is a minimal, unbounded reference store for unit tests. Use
//!   `session-memory` in applications.
//! * [`WithCleanup`] runs a clean-up (drop a table, delete a key prefix) when
//!   a test's store is dropped.
//! * [`FaultProxy`] sits between a store and its server on loopback and can
//!   stall or cut the connections, to test timeouts and recovery against a
//!   real server.
//! * [`Seeded`] and [`interleave`] poll concurrent futures in a random but
//!   repeatable order, for randomized tests of what they do to a store.
//! * [`skip`] reports a test that cannot run for want of a server: a failure
//!   in CI, a skip recorded for the test command's summary elsewhere.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::Timestamp;
use async_trait::async_trait;

use crate::store::{forward_store, pass_through, StoreFuture, StoreOp};
use crate::{Created, Record, RecordId, Saved, Store, StoreError, StoreErrorKind};

/// How many times each store operation was called.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallCounts {
    /// `load` calls.
    pub load: u64,
    /// `create` calls.
    pub create: u64,
    /// `save` calls.
    pub save: u64,
    /// `touch` calls.
    pub touch: u64,
    /// `delete` calls.
    pub delete: u64,
    /// Calls of every other operation.
    pub other: u64,
}

impl CallCounts {
    /// All calls together.
    pub fn total(&self) -> u64 {
        self.load + self.create + self.save + self.touch + self.delete + self.other
    }
}

#[derive(Debug, Default)]
struct Counters {
    load: AtomicU64,
    create: AtomicU64,
    save: AtomicU64,
    touch: AtomicU64,
    delete: AtomicU64,
    other: AtomicU64,
    /// Whether a fault is set: calls skip the fault lock while none is.
    faulty: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default, Clone)]
struct Faults {
    error: Option<StoreErrorKind>,
    save_error: Option<StoreErrorKind>,
    delay: Option<Duration>,
    hops: bool,
    lost_save_answers: bool,
}

/// A store wrapper that counts calls and injects faults. Clones share the
/// counters and the fault settings, so a test keeps one clone after handing
/// the other to a [`Manager`](crate::Manager). A call is counted, and the
/// faults in force are read, when the method is called; with no fault set the
/// wrapper hands the inner store's future through untouched.
///
/// ```
/// use session_core::testing::{Instrumented, TestStore};
/// use session_core::{Config, Manager};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = Instrumented::new(TestStore::default());
/// let manager = Manager::new(store.clone(), Config::default());
/// let session = manager.session_from_cookies(None::<&str>);
/// session.commit().await.unwrap();
/// assert_eq!(store.counts().total(), 0, "an untouched session costs no store call");
/// # });
/// ```
pub struct Instrumented<S> {
    inner: Arc<S>,
    counters: Arc<Counters>,
    faults: Arc<Mutex<Faults>>,
}

impl<S> Clone for Instrumented<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            counters: self.counters.clone(),
            faults: self.faults.clone(),
        }
    }
}

impl<S: Store> fmt::Debug for Instrumented<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instrumented")
            .field("inner", &self.inner)
            .field("counts", &self.counts())
            .finish()
    }
}

impl<S: Store> Instrumented<S> {
    /// Wraps a store, with no faults.
    pub fn new(inner: S) -> Self {
        Self {
            inner: Arc::new(inner),
            counters: Arc::default(),
            faults: Arc::default(),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The calls counted so far.
    pub fn counts(&self) -> CallCounts {
        let c = &self.counters;
        CallCounts {
            load: c.load.load(Ordering::SeqCst),
            create: c.create.load(Ordering::SeqCst),
            save: c.save.load(Ordering::SeqCst),
            touch: c.touch.load(Ordering::SeqCst),
            delete: c.delete.load(Ordering::SeqCst),
            other: c.other.load(Ordering::SeqCst),
        }
    }

    /// Makes every call fail with this kind of error (`None`: stop failing).
    pub fn fail_with(&self, kind: Option<StoreErrorKind>) {
        self.set_faults(|f| f.error = kind);
    }

    /// Makes only `save` calls fail with this kind of error (`None`: stop
    /// failing): a commit's write fails after the request's earlier writes
    /// (`create`, `touch`, `delete`: a [`login`](crate::Session::login), say)
    /// succeeded.
    pub fn fail_saves_with(&self, kind: Option<StoreErrorKind>) {
        self.set_faults(|f| f.save_error = kind);
    }

    /// Delays every call by this long (`None`: no delay).
    pub fn delay(&self, delay: Option<Duration>) {
        self.set_faults(|f| f.delay = delay);
    }

    /// Lets other tasks run before each call reaches the store and again
    /// before it answers (`false`: no more): a write lands, and its answer
    /// comes after whatever else was ready to run.
    pub fn hop_around_calls(&self, hops: bool) {
        self.set_faults(|f| f.hops = hops);
    }

    /// Makes `save` calls that landed answer an error instead, as when the
    /// answer is lost on the way (`false`: answer as they went).
    pub fn lose_save_answers(&self, lost: bool) {
        self.set_faults(|f| f.lost_save_answers = lost);
    }

    fn set_faults(&self, change: impl FnOnce(&mut Faults)) {
        let mut faults = self.faults();
        change(&mut faults);
        let faulty = faults.error.is_some()
            || faults.save_error.is_some()
            || faults.delay.is_some()
            || faults.hops
            || faults.lost_save_answers;
        self.counters.faulty.store(faulty, Ordering::SeqCst);
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a call and, when a fault is set, returns it to apply first.
    fn enter(&self, op: StoreOp) -> Option<Faults> {
        let c = &self.counters;
        let counter = match op {
            StoreOp::Load => &c.load,
            StoreOp::Create => &c.create,
            StoreOp::Save => &c.save,
            StoreOp::Touch => &c.touch,
            StoreOp::Delete => &c.delete,
            StoreOp::DeleteExpired
            | StoreOp::IdsOfOwner
            | StoreOp::DeleteOwner
            | StoreOp::DeleteAll => &c.other,
        };
        counter.fetch_add(1, Ordering::SeqCst);
        if !c.faulty.load(Ordering::SeqCst) {
            return None;
        }
        let mut faults = self.faults().clone();
        if op != StoreOp::Save {
            faults.save_error = None;
            faults.lost_save_answers = false;
        }
        Some(faults)
    }

    /// The inner store's call as it is when no fault is set (the wrapper then
    /// costs a counter, not a second boxed future, so that load tests measure
    /// the store), else behind the fault.
    fn call<'f, T: Send + 'f>(&self, op: StoreOp, inner: StoreFuture<'f, T>) -> StoreFuture<'f, T> {
        let Some(faults) = self.enter(op) else {
            return inner;
        };
        Box::pin(async move {
            if let Some(d) = faults.delay {
                tokio::time::sleep(d).await;
            }
            if faults.hops {
                tokio::task::yield_now().await;
            }
            if let Some(kind) = faults.error.or(faults.save_error) {
                return Err(StoreError::new(kind, "injected fault"));
            }
            let answer = inner.await;
            if faults.hops {
                tokio::task::yield_now().await;
            }
            if faults.lost_save_answers && answer.is_ok() {
                return Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    "injected fault: the answer was lost",
                ));
            }
            answer
        })
    }
}

impl<S: Store> Store for Instrumented<S> {
    forward_store!(|this| this.inner, Self::call);
}

/// A seeded pseudo-random sequence for randomized tests: the same seed makes
/// the same choices, so a failing seed can be run again alone.
///
/// ```
/// use session_core::testing::Seeded;
///
/// let mut a = Seeded::new(7);
/// let mut b = Seeded::new(7);
/// assert_eq!(a.below(100), b.below(100));
/// assert!(a.below(3) < 3);
/// ```
#[derive(Debug, Clone)]
pub struct Seeded(u64);

impl Seeded {
    /// The sequence of `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).max(1))
    }

    /// The next number, below `n` (which must not be 0).
    pub fn below(&mut self, n: u64) -> u64 {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A future [`interleave`] polls.
pub type Interleaved<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>;

/// Polls `futures` one poll at a time, in an order `rng` picks, letting the
/// runtime's other tasks (a session's savers, say) run now and then, until
/// every one is done; `between` runs before each poll (to turn faults on
/// and off). With `drop_one_in: Some(n)`, about one poll in `n` drops its
/// future instead, as a handler's timeout or a client gone would. Returns
/// each future's output in order, `None` for one dropped; `None` in all if
/// they are not all done after 200 000 polls (they wait for each other).
///
/// The futures are polled with a waker that does nothing: one that waits
/// is polled again when picked again.
pub async fn interleave<T>(
    mut futures: Vec<Interleaved<'_, T>>,
    rng: &mut Seeded,
    drop_one_in: Option<u64>,
    mut between: impl FnMut(&mut Seeded),
) -> Option<Vec<Option<T>>> {
    let mut done = vec![false; futures.len()];
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    for _ in 0..200_000 {
        if done.iter().all(|d| *d) {
            return Some(outputs);
        }
        let i = usize::try_from(rng.below(futures.len() as u64)).unwrap_or(0);
        if done[i] {
            continue;
        }
        if drop_one_in.is_some_and(|n| rng.below(n) == 0) {
            futures[i] = Box::pin(std::future::pending());
            done[i] = true;
            continue;
        }
        between(rng);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if let std::task::Poll::Ready(output) = futures[i].as_mut().poll(&mut cx) {
            outputs[i] = Some(output);
            done[i] = true;
        }
        if rng.below(3) == 0 {
            tokio::task::yield_now().await;
        }
    }
    None
}

/// A minimal store: one mutex around a map, no bound, no background work. It
/// follows the whole contract and is meant for tests.
#[derive(Debug, Default, Clone)]
pub struct TestStore {
    map: Arc<Mutex<HashMap<RecordId, Record>>>,
}

impl TestStore {
    fn map(&self) -> MutexGuard<'_, HashMap<RecordId, Record>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many records are held, expired ones included.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces a stored record as is, bypassing every check: for tests that
    /// need a record in a particular state.
    pub fn put_raw(&self, record: Record) {
        self.map().insert(record.id, record);
    }

    /// Stores `record` under another id's key, as a store that mixed its
    /// keys up would: a load of `key` then answers a record whose id is not
    /// `key`, which its callers must refuse.
    pub fn put_under(&self, key: RecordId, record: Record) {
        self.map().insert(key, record);
    }
}

fn live<'a>(map: &'a mut HashMap<RecordId, Record>, id: &RecordId) -> Option<&'a mut Record> {
    let now = Timestamp::now();
    map.get_mut(id).filter(|r| !r.is_expired(now))
}

#[async_trait]
impl Store for TestStore {
    async fn load(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        Ok(live(&mut self.map(), id).map(|r| r.clone()))
    }
    async fn create(&self, record: &Record) -> Result<Created, StoreError> {
        let mut map = self.map();
        if live(&mut map, &record.id).is_some() {
            return Ok(Created::IdTaken);
        }
        map.insert(record.id, record.clone());
        Ok(Created::Created)
    }
    async fn save(&self, record: &Record, expected: u64) -> Result<Saved, StoreError> {
        let mut map = self.map();
        Ok(match live(&mut map, &record.id) {
            Some(r) if r.version == expected => {
                *r = record.clone();
                Saved::Saved
            }
            Some(_) => Saved::Conflict,
            None => Saved::Missing,
        })
    }
    async fn touch(
        &self,
        id: &RecordId,
        version: u64,
        _owner: Option<&str>,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        Ok(match live(&mut self.map(), id) {
            Some(r) if r.version == version => {
                r.expires_at = expires_at;
                true
            }
            _ => false,
        })
    }
    async fn delete(&self, id: &RecordId) -> Result<(), StoreError> {
        self.map().remove(id);
        Ok(())
    }
    async fn delete_expired(&self) -> Result<u64, StoreError> {
        let now = Timestamp::now();
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, r| !r.is_expired(now));
        Ok((before - map.len()) as u64)
    }
    async fn ids_of_owner(&self, owner: &str) -> Result<Vec<RecordId>, StoreError> {
        let now = Timestamp::now();
        Ok(self
            .map()
            .values()
            .filter(|r| !r.is_expired(now) && r.owner.as_deref() == Some(owner))
            .map(|r| r.id)
            .collect())
    }
    async fn delete_owner(&self, owner: &str) -> Result<u64, StoreError> {
        let now = Timestamp::now();
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, r| r.is_expired(now) || r.owner.as_deref() != Some(owner));
        Ok((before - map.len()) as u64)
    }
    async fn delete_all(&self) -> Result<u64, StoreError> {
        let mut map = self.map();
        let n = map.len();
        map.clear();
        Ok(n as u64)
    }
}

/// The environment variable naming the file where [`skip`] records each
/// skipped test's reason, one per line. `cargo xtask test` sets it and lists
/// the reasons after the run, since `cargo test` hides what a passing test
/// printed.
pub const SKIPS_FILE_VAR: &str = "SESSION_TEST_SKIPS";

/// Whether the tests run in CI (`CI=true`), where a test that cannot run is a
/// failure, never a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Reports a test that cannot run because something it needs is missing (a
/// server, a browser): in CI ([`in_ci`]) it panics with `reason`; elsewhere it
/// prints `SKIPPED: reason` and appends `reason` to the file named by
/// [`SKIPS_FILE_VAR`], if set, so the test command can report it after
/// `cargo test` has hidden the test's output. The caller then returns
/// without running the test. `reason` should say what is missing and how to
/// get it (the install command, the variable to set).
///
/// ```should_panic
/// // In CI a missing server fails the test.
/// std::env::set_var("CI", "true");
/// session_core::testing::skip("Redis at redis://127.0.0.1:6379 (refused; apt-get install redis-server)");
/// ```
///
/// # Panics
/// In CI, always.
pub fn skip(reason: &str) {
    assert!(!in_ci(), "required in CI but not available: {reason}");
    eprintln!("SKIPPED: {reason}");
    let Some(path) = std::env::var_os(SKIPS_FILE_VAR) else {
        return;
    };
    // One `write` in append mode per line, so lines of concurrent tests and
    // test binaries do not interleave.
    let line = format!("{}\n", reason.replace('\n', " "));
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "SKIPPED, and not recorded in {}: {e}",
            path.to_string_lossy()
        );
    }
}

/// A manager over `store` whose store calls time out after `timeout`, for
/// failure tests.
pub fn manager_with_timeout(store: impl Store, timeout: Duration) -> crate::Manager {
    let config = crate::Config::builder()
        .with_store_timeout(timeout)
        .build()
        .expect("a store timeout above zero is valid");
    crate::Manager::new(store, config)
}

/// Stores a new session holding `name = "iris"` through `manager` and returns
/// the `Cookie` request header that carries it.
///
/// # Panics
/// When the store fails: this is a test helper.
pub async fn stored_session(manager: &crate::Manager) -> String {
    let s = manager.session_from_cookies(None::<&str>);
    s.insert("name", "iris").await.expect("insert");
    match s.commit().await.expect("commit") {
        crate::SetCookie::Set { value, .. } => {
            format!("{}={value}", manager.config().cookie_name())
        }
        other => panic!("expected a cookie, got {other:?}"),
    }
}

/// Reads `name` from the session the `Cookie` header `cookie` carries.
///
/// # Errors
/// Whatever the session reports (store down, timeout).
pub async fn read_name(manager: &crate::Manager, cookie: &str) -> crate::Result<String> {
    manager
        .session_from_cookies([cookie])
        .get_string("name")
        .await
}

/// Writes through `manager` while `proxy` cuts and restores the store's
/// connections, then checks that every write the manager acknowledged loads
/// afterwards. Panics (it is a test) when an acknowledged write is lost, or
/// when the faults did not bite or nothing got through.
pub async fn acknowledged_writes_survive_cuts(manager: &crate::Manager, proxy: &FaultProxy) {
    let cookie = stored_session(manager).await;
    let mut acknowledged = Vec::new();
    let mut failed = 0;
    for i in 0..40u32 {
        match i % 10 {
            3 => proxy.cut(),
            6 => proxy.restore(),
            _ => {}
        }
        let s = manager.session_from_cookies([cookie.as_str()]);
        let key = format!("k{i}");
        let written = async {
            s.insert(&key, &i).await?;
            s.commit().await
        }
        .await;
        match written {
            Ok(_) => acknowledged.push(i),
            Err(_) => failed += 1,
        }
    }
    proxy.restore();
    assert!(failed > 0, "the cuts never failed a write");
    assert!(
        acknowledged.len() >= 10,
        "too few writes got through: {acknowledged:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let s = loop {
        let s = manager.session_from_cookies([cookie.as_str()]);
        match s.len().await {
            Ok(_) => break s,
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the store did not come back: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    for i in acknowledged {
        assert_eq!(
            s.get::<u32>(&format!("k{i}")).await.expect("load"),
            Some(i),
            "write {i} was acknowledged but is lost"
        );
    }
}

/// A typical small record (a name, a user id, two roles) expiring in two
/// hours, for benchmarks and store tests.
pub fn sample_record() -> Record {
    let now = Timestamp::now();
    let mut r = Record::new(
        crate::Id::generate().expect("OS random source").record_id(),
        now,
        now + Duration::from_secs(7200),
    );
    r.data.insert("name".into(), b"\xa4iris".to_vec());
    r.data.insert("user_id".into(), vec![0x2a]);
    r.data
        .insert("roles".into(), b"\x92\xa6reader\xa6writer".to_vec());
    r
}

/// A store that runs a clean-up when dropped: tests give each run its own
/// table, schema or key prefix and remove it afterwards.
pub struct WithCleanup<S> {
    inner: S,
    cleanup: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl<S: fmt::Debug> fmt::Debug for WithCleanup<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("WithCleanup").field(&self.inner).finish()
    }
}

impl<S> WithCleanup<S> {
    /// Wraps `inner`; `cleanup` runs on drop, on the dropping thread (start
    /// a thread inside it for blocking work under an async runtime).
    pub fn new(inner: S, cleanup: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self {
            inner,
            cleanup: Some(Box::new(cleanup)),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S> Drop for WithCleanup<S> {
    fn drop(&mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            cleanup();
        }
    }
}

impl<S: Store> Store for WithCleanup<S> {
    forward_store!(|this| this.inner, pass_through);
}

#[derive(Debug, Default)]
struct ProxyState {
    /// Bytes stop flowing while set (connections stay open).
    stalled: std::sync::atomic::AtomicBool,
    /// Bumped by `cut`: connections of an older generation close.
    generation: AtomicU64,
    /// New connections are refused while set.
    refusing: std::sync::atomic::AtomicBool,
}

/// A loopback TCP proxy in front of a real server that can stall (bytes stop
/// flowing, connections stay open: a hung server) or cut (every connection
/// closes, new ones are refused: a server gone) and be restored.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use session_core::testing::FaultProxy;
///
/// let proxy = FaultProxy::start("127.0.0.1:6379".parse().unwrap()).await?;
/// let url = format!("redis://{}", proxy.addr());
/// // ... connect the store to `url` ...
/// proxy.stall();
/// proxy.restore();
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FaultProxy {
    addr: std::net::SocketAddr,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(upstream: std::net::SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ProxyState::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if shared.refusing.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let state = shared.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let generation = state.generation.load(Ordering::SeqCst);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = pump(cr, sw, state.clone(), generation);
                    let down = pump(sr, cw, state, generation);
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                });
            }
        });
        Ok(Self { addr, state, task })
    }

    /// The address to connect to instead of the server's.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Stops the bytes in both directions; connections stay open.
    pub fn stall(&self) {
        self.state.stalled.store(true, Ordering::SeqCst);
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.state.refusing.store(true, Ordering::SeqCst);
        self.state.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Back to forwarding normally.
    pub fn restore(&self) {
        self.state.stalled.store(false, Ordering::SeqCst);
        self.state.refusing.store(false, Ordering::SeqCst);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// Copies bytes from `from` to `to` until either side closes, the proxy is
/// cut, or forever while stalled.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<ProxyState>,
    generation: u64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    let alive = |s: &ProxyState| s.generation.load(Ordering::SeqCst) == generation;
    loop {
        while state.stalled.load(Ordering::SeqCst) && alive(&state) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !alive(&state) {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = async {
                while alive(&state) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            } => return,
        };
        while state.stalled.load(Ordering::SeqCst) && alive(&state) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !alive(&state) || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
