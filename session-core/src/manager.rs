//! The manager: one per application, shared by every request.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::{self, Either, FutureExt};
use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::batch::Turn;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::id::{Id, RecordId};
use crate::observe;
use crate::record::Record;
use crate::session::Session;
use crate::store::{Saved, Store};
use crate::timestamp::Timestamp;
use crate::transport::{self, HeaderUpdate, Incoming, SetCookie};
use crate::view::SessionView;

/// Owns the store, the configuration and the clock; hands each request a
/// [`Session`]. Cloning is cheap (one `Arc`).
///
/// Framework adapters call [`Manager::session_from_request`] before the
/// handler and [`Session::commit`] (through [`Session::commit_after`] where
/// the framework allows) after it. Applications use the manager
/// directly for cross-session work such as [`Manager::destroy_all_of`].
///
/// ```
/// # #[derive(Debug, Default)] struct MyStore;
/// # #[session_core::async_trait] impl session_core::Store for MyStore {
/// #   async fn load(&self, _: &session_core::RecordId) -> Result<Option<session_core::Record>, session_core::StoreError> { Ok(None) }
/// #   async fn create(&self, _: &session_core::Record) -> Result<session_core::Created, session_core::StoreError> { Ok(session_core::Created::Created) }
/// #   async fn save(&self, _: &session_core::Record, _: u64) -> Result<session_core::Saved, session_core::StoreError> { Ok(session_core::Saved::Missing) }
/// #   async fn touch(&self, _: &session_core::RecordId, _: u64, _: Option<&str>, _: session_core::Timestamp) -> Result<bool, session_core::StoreError> { Ok(false) }
/// #   async fn delete(&self, _: &session_core::RecordId) -> Result<(), session_core::StoreError> { Ok(()) }
/// #   async fn delete_expired(&self) -> Result<u64, session_core::StoreError> { Ok(0) }
/// #   async fn ids_of_owner(&self, _: &str) -> Result<Vec<session_core::RecordId>, session_core::StoreError> { Ok(vec![]) }
/// #   async fn delete_owner(&self, _: &str) -> Result<u64, session_core::StoreError> { Ok(0) }
/// #   async fn delete_all(&self) -> Result<u64, session_core::StoreError> { Ok(0) }
/// # }
/// use session_core::{Config, Manager, SetCookie};
///
/// # tokio_test_block_on(async {
/// let manager = Manager::new(MyStore::default(), Config::default());
///
/// // One request: no cookie yet.
/// let session = manager.session_from_cookies(std::iter::empty());
/// session.insert("name", "iris").await?;
/// let outcome = session.commit().await?;
/// let header = manager.set_cookie_header(&outcome).expect("a new session sets a cookie");
/// assert!(header.starts_with("session="));
/// # Ok::<(), session_core::Error>(())
/// # }).unwrap();
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone)]
pub struct Manager {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: Config,
    pub(crate) clock: Arc<dyn Clock>,
    /// Read-modify-writes of one record in this process take turns here, so
    /// they never lose compare-and-set races to each other; only other
    /// processes can make them retry. Each turn keeps the record as this
    /// process last saved it and the updates gathered for the next save (see
    /// [`crate::batch`]).
    pub(crate) record_locks: Arc<[tokio::sync::Mutex<Turn>]>,
    /// The store's [`Store::group_commit`].
    pub(crate) group_commit: bool,
    /// Whether [`Manager::defers_to`] has warned of another manager that
    /// carries the id alike: once is enough.
    pub(crate) warned_alike: std::sync::atomic::AtomicBool,
}

/// How many locks records are spread over.
const RECORD_LOCKS: usize = 1024;

/// How many passes [`Manager::destroy_all_of`] makes at most: the store's
/// deletion, then again while a listing still shows sessions of the owner.
const OWNER_PASSES: usize = 4;

/// How many store calls an action on each of an owner's sessions (a
/// listing's loads, the cap's, log-out-elsewhere's deletes) keeps in flight.
pub(crate) const OWNER_CALLS_AT_ONCE: usize = 8;

fn record_locks() -> Arc<[tokio::sync::Mutex<Turn>]> {
    (0..RECORD_LOCKS)
        .map(|_| tokio::sync::Mutex::new(Turn::default()))
        .collect()
}

impl fmt::Debug for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manager")
            .field("store", &self.inner.store)
            .field("config", &self.inner.config)
            .field("clock", &self.inner.clock)
            .finish()
    }
}

impl Manager {
    /// A manager over `store` with `config`, on the system clock.
    pub fn new(store: impl Store, config: Config) -> Self {
        Self::from_arc(Arc::new(store), config)
    }

    /// Whether `other` is this manager: a clone of it, not one built alike.
    /// Adapters use it to leave a request to the outer of two layers (or
    /// middlewares) of one manager, so that the request has one session.
    pub fn ptr_eq(&self, other: &Manager) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// *For adapters.* Whether a request that already holds `outer`, the
    /// session an outer layer (or middleware) put in its extensions, is left
    /// to that layer, which loads and commits it: `outer` is this manager's
    /// ([`ptr_eq`](Self::ptr_eq)). A session of another manager that carries
    /// its id in the same cookie (or header) is logged as a misconfiguration,
    /// once per manager: each layer would answer a cookie of that name, and
    /// the client keeps only one of them.
    pub fn defers_to(&self, outer: &Session) -> bool {
        let other = outer.manager();
        if self.ptr_eq(other) {
            return true;
        }
        let warned = &self.inner.warned_alike;
        if self.carries_the_id_as(other) && !warned.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                cookie = self.config().cookie_name(),
                header = self.config().header(),
                "two session layers of different managers carry the id alike: \
                 build the manager once and give every layer a clone of it"
            );
        }
        false
    }

    /// Whether `other` carries its ids where this manager does: the same
    /// header, or cookies of the same name.
    fn carries_the_id_as(&self, other: &Manager) -> bool {
        let (a, b) = (self.config(), other.config());
        match (a.header(), b.header()) {
            (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
            (None, None) => a.cookie_name() == b.cookie_name(),
            _ => false,
        }
    }

    /// A manager over a shared store.
    pub fn from_arc(store: Arc<dyn Store>, config: Config) -> Self {
        Self {
            inner: Arc::new(Inner {
                group_commit: store.group_commit(),
                store,
                config,
                clock: Arc::new(SystemClock),
                record_locks: record_locks(),
                warned_alike: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Replaces the clock, for tests of idle and absolute timeouts (see
    /// [`ManualClock`](crate::ManualClock)). The manager checks every record
    /// it loads against this clock, so a session ends when this clock passes
    /// its deadline, whatever the store: stores expire records by the system
    /// clock, which they keep until it passes the deadline too.
    pub fn with_clock(self, clock: impl Clock) -> Self {
        Self {
            inner: Arc::new(Inner {
                store: self.inner.store.clone(),
                config: self.inner.config.clone(),
                clock: Arc::new(clock),
                record_locks: self.inner.record_locks.clone(),
                group_commit: self.inner.group_commit,
                warned_alike: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The session of a request, given the values of its `Cookie` headers.
    ///
    /// Nothing is loaded until the handler uses the session. The first cookie
    /// with the configured name that verifies and parses as an id is used; a
    /// malformed, oversized or tampered cookie is ignored and never reaches
    /// the store. Plain ids are parsed here; signed and private values are
    /// verified when the session is first used, so requests that never touch
    /// it pay no cryptography.
    pub fn session_from_cookies<'a>(
        &self,
        cookie_headers: impl IntoIterator<Item = &'a str>,
    ) -> Session {
        let config = &self.inner.config;
        let values = transport::cookie_values(cookie_headers, config.cookie_name.as_str());
        self.session_of(values)
    }

    fn session_of<'a>(&self, values: impl IntoIterator<Item = &'a str>) -> Session {
        let (incoming, presented) = Incoming::from_values(&self.inner.config, values);
        Session::new(self.clone(), incoming, presented)
    }

    /// The session of a request, whichever way the id travels: `header`
    /// returns the values of a request header by (lowercase) name. Adapters
    /// call this; it reads the configured header, or the `Cookie` headers.
    pub fn session_from_request<'a, F, I>(&self, header: F) -> Session
    where
        F: Fn(&str) -> I,
        I: IntoIterator<Item = &'a str>,
    {
        match &self.inner.config.header {
            Some(name) => self.session_from_value(header(name).into_iter().next()),
            None => self.session_from_cookies(header("cookie")),
        }
    }

    /// The headers a response must carry for a commit outcome (see
    /// [`HeaderUpdate`]): the id (`Set-Cookie` or the configured header),
    /// `Cache-Control: no-store` unless the handler already chose it, and
    /// `Vary`. `existing` returns the response's current value of a header by
    /// (lowercase) name. Empty for [`SetCookie::Unchanged`].
    pub fn response_headers(
        &self,
        outcome: &SetCookie,
        existing: impl Fn(&str) -> Option<String>,
    ) -> Vec<HeaderUpdate> {
        transport::response_headers(&self.inner.config, outcome, &existing)
    }

    /// The session of a request whose id travels in a header or elsewhere
    /// rather than a cookie: `value` is that raw value, as
    /// [`SetCookie::Set`] gave it.
    pub fn session_from_value(&self, value: Option<&str>) -> Session {
        self.session_of(value)
    }

    /// The `Set-Cookie` header value for a commit outcome, with every
    /// configured attribute; `None` when nothing must be sent.
    pub fn set_cookie_header(&self, outcome: &SetCookie) -> Option<String> {
        transport::set_cookie_header(&self.inner.config, outcome)
    }

    /// The `Cookie` request header that carries the id a commit outcome
    /// set (`session=<id>`), for tests and clients that replay a session
    /// without a cookie jar; `None` unless the outcome sets an id, and under
    /// [`ConfigBuilder::with_header`](crate::ConfigBuilder::with_header),
    /// where the id travels as the outcome's value in that header instead.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), session_core::Error> {
    /// # #[derive(Debug, Default)] struct MyStore;
    /// # #[session_core::async_trait] impl session_core::Store for MyStore {
    /// #   async fn load(&self, _: &session_core::RecordId) -> Result<Option<session_core::Record>, session_core::StoreError> { Ok(None) }
    /// #   async fn create(&self, _: &session_core::Record) -> Result<session_core::Created, session_core::StoreError> { Ok(session_core::Created::Created) }
    /// #   async fn save(&self, _: &session_core::Record, _: u64) -> Result<session_core::Saved, session_core::StoreError> { Ok(session_core::Saved::Missing) }
    /// #   async fn touch(&self, _: &session_core::RecordId, _: u64, _: Option<&str>, _: session_core::Timestamp) -> Result<bool, session_core::StoreError> { Ok(false) }
    /// #   async fn delete(&self, _: &session_core::RecordId) -> Result<(), session_core::StoreError> { Ok(()) }
    /// #   async fn delete_expired(&self) -> Result<u64, session_core::StoreError> { Ok(0) }
    /// #   async fn ids_of_owner(&self, _: &str) -> Result<Vec<session_core::RecordId>, session_core::StoreError> { Ok(vec![]) }
    /// #   async fn delete_owner(&self, _: &str) -> Result<u64, session_core::StoreError> { Ok(0) }
    /// #   async fn delete_all(&self) -> Result<u64, session_core::StoreError> { Ok(0) }
    /// # }
    /// use session_core::{Config, Manager};
    ///
    /// let manager = Manager::new(MyStore, Config::default());
    /// let session = manager.session_from_cookies(None::<&str>);
    /// session.insert("name", "iris").await?;
    /// let cookie = manager.cookie_header(&session.commit().await?).expect("a new id");
    /// assert!(cookie.starts_with("session="));
    /// assert!(!cookie.contains(';'));
    ///
    /// let config = Config::builder().with_header(Some("x-session-id")).build().unwrap();
    /// let api = Manager::new(MyStore, config);
    /// let session = api.session_from_value(None);
    /// session.insert("name", "iris").await?;
    /// assert_eq!(api.cookie_header(&session.commit().await?), None);
    /// # Ok(()) }
    /// ```
    pub fn cookie_header(&self, outcome: &SetCookie) -> Option<String> {
        if self.inner.config.header().is_some() {
            return None;
        }
        match outcome {
            SetCookie::Set { value, .. } => {
                Some(format!("{}={value}", self.inner.config.cookie_name()))
            }
            _ => None,
        }
    }

    /// The record ids of every live session of `owner` (see
    /// [`Session::login`]) as the store lists them: by the store's clock,
    /// and unchecked against this manager's timeouts (one shortened since a
    /// session was stored, say) and clock. [`Manager::load_sessions_of`]
    /// loads them and leaves out those this manager would not serve.
    ///
    /// # Errors
    /// [`Error::Store`] or [`Error::Timeout`].
    pub async fn sessions_of(&self, owner: &str) -> Result<Vec<RecordId>> {
        self.call("list owner", self.inner.store.ids_of_owner(owner))
            .await
    }

    /// Every live session of `owner`, most recently created or logged in
    /// first, with its times and values: what a "your devices" page lists
    /// (see [`SessionView`]). One listing ([`Manager::sessions_of`]) and one
    /// load per session, at most eight at a time; a session that ends
    /// meanwhile is left out. Behind a `session_memory::CachedStore` shared
    /// by several app instances, the copies may be up to its `max_staleness`
    /// old.
    ///
    /// ```
    /// # async fn page(manager: session_core::Manager) -> session_core::Result<()> {
    /// // A "your devices" page: one line per session of the signed-in user.
    /// for device in manager.load_sessions_of("alice").await? {
    ///     let agent: Option<String> = device.get("user_agent")?;
    ///     println!(
    ///         "{} since {}, last seen {:?}",
    ///         agent.as_deref().unwrap_or("unknown device"),
    ///         device.created_at(),
    ///         device.last_seen(),
    ///     );
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Store`] or [`Error::Timeout`].
    pub async fn load_sessions_of(&self, owner: &str) -> Result<Vec<SessionView>> {
        let ids = self.sessions_of(owner).await?;
        let now = self.now();
        let mut views: Vec<SessionView> = stream::iter(ids)
            .map(|id| async move {
                // A record of another id is not this session, as at every load.
                let found = self.call("load", self.inner.store.load(&id)).await?;
                Ok::<_, Error>(found.filter(|r| r.id == id))
            })
            .buffer_unordered(OWNER_CALLS_AT_ONCE)
            .try_filter_map(|found| async move {
                Ok(found.filter(|r| self.is_owned_by(r, owner, now)).map(|r| {
                    let lifetime = self.lifetime_of(&r);
                    SessionView::new(r, lifetime, now, self.inner.config.codec.clone())
                }))
            })
            .try_collect()
            .await?;
        views.sort_by_key(|v| std::cmp::Reverse((v.created_at(), v.record_id())));
        Ok(views)
    }

    /// Ends session `id` if it is a live session of `owner`, and returns
    /// whether it was: the "end this device" button of a page built with
    /// [`Manager::load_sessions_of`] (make it a `POST` with your CSRF
    /// protection, as any action that changes state). An id that belongs to
    /// someone else (a tampered form) ends nothing: a session's owner changes
    /// only with its id, at [`Session::login`].
    ///
    /// ```
    /// # async fn page(manager: session_core::Manager) -> session_core::Result<()> {
    /// // The "end this device" button: the record id comes from the page's
    /// // form (`SessionView::record_id`, as text), the owner from the session.
    /// let id: session_core::RecordId = "0".repeat(64).parse()?;
    /// if !manager.destroy_session_of("alice", &id).await? {
    ///     // Not one of alice's: a stale page or a tampered form.
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// The request's own session is better ended with [`Session::destroy`],
    /// which also removes its cookie. A device that is rotating its id at
    /// that very moment ([`Session::login`] or [`Session::cycle_id`] in
    /// flight) may carry on under its new id, which the next listing shows;
    /// [`Manager::destroy_all_of`] has no such window.
    ///
    /// # Errors
    /// [`Error::Store`] or [`Error::Timeout`].
    pub async fn destroy_session_of(&self, owner: &str, id: &RecordId) -> Result<bool> {
        let found = self.call("load", self.inner.store.load(id)).await?;
        let theirs = found.is_some_and(|r| r.id == *id && self.is_owned_by(&r, owner, self.now()));
        if theirs {
            self.destroy_record(id).await?;
        }
        Ok(theirs)
    }

    /// When `record` was last used as far as its idle deadline tells (its
    /// creation without an idle timeout).
    fn last_seen(&self, record: &Record, now: Timestamp) -> Timestamp {
        self.lifetime_of(record)
            .idle_timeout()
            .map_or(record.created_at, |idle| record.last_seen(idle, now))
    }

    /// The timeouts in force for `record`: its own, else the configured ones.
    fn lifetime_of(&self, record: &Record) -> crate::Lifetime {
        record.lifetime.unwrap_or(self.inner.config.lifetime)
    }

    /// Whether `record` is a live session of `owner`.
    fn is_owned_by(&self, record: &Record, owner: &str, now: Timestamp) -> bool {
        record.owner.as_deref() == Some(owner) && self.is_live(record, now)
    }

    /// How far a session's idle deadline must move before it is written:
    /// the configured touch interval, capped at half the lifetime's idle
    /// timeout (see [`ConfigBuilder::with_touch_interval`](crate::ConfigBuilder::with_touch_interval)).
    pub(crate) fn touch_interval(&self, lifetime: &crate::Lifetime) -> std::time::Duration {
        let configured = self.inner.config.touch_interval;
        lifetime
            .idle_timeout()
            .map_or(configured, |idle| configured.min(idle / 2))
    }

    /// Whether a record is live by the manager's clock: before its stored
    /// deadline and within the absolute timeout in force now.
    pub(crate) fn is_live(&self, record: &Record, now: Timestamp) -> bool {
        let within_absolute = (self.lifetime_of(record))
            .absolute_timeout()
            .is_none_or(|abs| record.created_at + abs > now);
        !record.is_expired(now) && within_absolute
    }

    /// Ends every session of `owner` ("log out everywhere") and returns how
    /// many there were. Requests using one of them at the same moment write
    /// nothing back.
    ///
    /// A session that changes its id ([`Session::cycle_id`],
    /// [`Session::login`]) while the store deletes makes its successor before
    /// it retires the old record, so a store that lists the owner once may
    /// find the old record gone and never see the new one. The owner is
    /// therefore listed again after the store's pass, and while the listing
    /// still shows sessions, they are deleted in another pass (a few at
    /// most): whatever the store, no session rotated in flight outlives
    /// the call. A session caught in the middle of its rotation may be
    /// counted twice, under its old and its new id. On Redis the listing
    /// reads each entry of the owner's index, those of sessions just ended
    /// too, until their deadlines.
    ///
    /// Behind a `session_memory::CachedStore` shared by several app
    /// instances, another instance can still read (never write) an ended
    /// session from its memory for up to the cache's `max_staleness`
    /// (5 seconds by default): set it to zero where that matters.
    ///
    /// ```
    /// # async fn page(manager: session_core::Manager) -> session_core::Result<()> {
    /// // "Log out everywhere", or after a password reset.
    /// let ended = manager.destroy_all_of("alice").await?;
    /// println!("{ended} sessions ended");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Store`] or [`Error::Timeout`] when a pass or a listing
    /// fails, the first or a later one: the sessions a pass ended stay
    /// ended, but a session that changed its id meanwhile may not be, so
    /// the logout is not reported done. The call can be made again.
    pub async fn destroy_all_of(&self, owner: &str) -> Result<u64> {
        let ended = self.delete_owner_passes(owner).await;
        // After every pass, and after a failed one too: a later pass may
        // end sessions saved meanwhile.
        self.forget_kept_copies(|r| r.owner.as_deref() == Some(owner));
        let n = ended?;
        tracing::info!(sessions = n, "destroyed every session of an owner");
        observe::count("session_owner_destroys_total", n);
        Ok(n)
    }

    /// The passes of [`destroy_all_of`](Self::destroy_all_of), and the
    /// sessions they ended.
    async fn delete_owner_passes(&self, owner: &str) -> Result<u64> {
        let mut n = 0u64;
        for pass in 1..=OWNER_PASSES {
            let more = self
                .call("delete owner", self.inner.store.delete_owner(owner))
                .await?;
            n = n.saturating_add(more);
            if self.sessions_of(owner).await?.is_empty() {
                return Ok(n);
            }
            if pass == OWNER_PASSES {
                // Logins faster than the passes: new sessions, not ones
                // that escaped.
                tracing::warn!(
                    passes = pass,
                    "the owner still had sessions after every pass of log out everywhere; they were made during it"
                );
            }
        }
        Ok(n)
    }

    /// Ends every session of the store, every user's (Iris's `DestroyAll`):
    /// "log everyone out", after a breach or a change of what sessions hold.
    /// Returns how many records the store deleted (expired ones it still
    /// held count too).
    /// Every session live when the call began is gone when it returns, and
    /// stays gone: a request that still holds one finds it ended, as after
    /// a [`destroy`](Session::destroy). A session created during the call
    /// may stay. The store deletes everything twice (on Redis, two scans of
    /// the keyspace): a session that changes its id during the first pass
    /// (a login) may make its successor where that pass has already been
    /// and retire the old record before the pass reaches it; the second
    /// pass, which the successor predates, ends it. Only this store's sessions go: a Redis store's key prefix,
    /// a SQL store's table, a sled store's trees.
    ///
    /// Behind a `session_memory::CachedStore` shared by several app
    /// instances, another instance can still read (never write) a session
    /// from its memory for up to the cache's `max_staleness`. On a Redis
    /// Cluster whose primaries change during the call (a failover, a
    /// resharding), a node's `SCAN` can miss keys: call it again once the
    /// Cluster is settled.
    ///
    /// ```
    /// # async fn run(manager: session_core::Manager) -> session_core::Result<()> {
    /// let ended = manager.destroy_all().await?;
    /// println!("{ended} sessions ended");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Store`] or [`Error::Timeout`]: the store may have deleted
    /// some of the sessions. The store timeout bounds the call as any other,
    /// so a store of millions of sessions needs a manager with a longer one
    /// ([`ConfigBuilder::with_store_timeout`](crate::ConfigBuilder::with_store_timeout)),
    /// or the call again until it answers.
    pub async fn destroy_all(&self) -> Result<u64> {
        let first = self.call("delete all", self.inner.store.delete_all()).await;
        let second = match first {
            Ok(_) => self.call("delete all", self.inner.store.delete_all()).await,
            Err(_) => Ok(0),
        };
        self.forget_kept_copies(|_| true);
        let n = first?.saturating_add(second?);
        tracing::info!(sessions = n, "destroyed every session");
        observe::count("session_all_destroys_total", n);
        Ok(n)
    }

    /// Ends one session by its record id (e.g. one listed by
    /// [`Manager::sessions_of`]).
    ///
    /// # Errors
    /// [`Error::Store`] or [`Error::Timeout`].
    pub async fn destroy_record(&self, id: &RecordId) -> Result<()> {
        self.call("delete", self.inner.store.delete(id)).await?;
        self.forget_kept_copy(id);
        observe::destroyed(id);
        Ok(())
    }

    /// Ends the least recently used sessions of `owner` beyond the
    /// configured cap after a login made `keep` (created at `created_at`).
    /// Best effort: the login has happened, so a store failure here is
    /// logged, and the next login of the owner enforces the cap again.
    pub(crate) async fn enforce_owner_cap(
        &self,
        owner: &str,
        keep: &RecordId,
        created_at: Timestamp,
    ) {
        if let Err(error) = self.end_sessions_over_cap(owner, keep, created_at).await {
            tracing::warn!(%error, "a login could not end its owner's sessions over the cap; the next login tries again");
        }
    }

    /// [`enforce_owner_cap`](Self::enforce_owner_cap): of the owner's other
    /// sessions, the least recently used (by last use as the idle deadline
    /// tells, then creation, then record id) end, as many as there are
    /// sessions over the cap, `keep` counted; of those, only ones created
    /// before `keep` (at `created_at`, then by record id). Creation is
    /// the same in every view, so two logins of one owner at once never
    /// end each other's sessions: the later one ends the earlier one's,
    /// if that one is among the least used (a double-clicked login button
    /// under a cap of one leaves the later session, also when the earlier
    /// one was used since). Should the earlier login's record reach the
    /// store only after the later one's pass listed the owner (its create
    /// slow, or app servers' clocks apart), neither ends the other and the
    /// owner stays a session over the cap until the next login. A session
    /// nobody uses (a login whose response
    /// never reached its client) goes before devices used since it was
    /// made.
    async fn end_sessions_over_cap(
        &self,
        owner: &str,
        keep: &RecordId,
        created_at: Timestamp,
    ) -> Result<()> {
        let Some(cap) = self.inner.config.max_sessions_per_owner else {
            return Ok(());
        };
        let ids = self.sessions_of(owner).await?;
        if ids.len() <= cap {
            return Ok(());
        }
        let now = self.now();
        let others: Vec<RecordId> = ids.into_iter().filter(|id| id != keep).collect();
        let mut others: Vec<(Timestamp, Timestamp, RecordId)> = stream::iter(others)
            .map(|id| async move {
                let found = self.call("load", self.inner.store.load(&id)).await?;
                Ok::<_, Error>(found.filter(|r| r.id == id))
            })
            .buffer_unordered(OWNER_CALLS_AT_ONCE)
            .try_filter_map(|found| async move {
                Ok(found
                    .filter(|r| self.is_owned_by(r, owner, now))
                    .map(|r| (self.last_seen(&r, now), r.created_at, r.id)))
            })
            .try_collect()
            .await?;
        // Least recently used first.
        others.sort();
        let over = (others.len() + 1).saturating_sub(cap);
        let older: Vec<RecordId> = (others.into_iter().take(over))
            .filter(|&(_, created, id)| (created, id) < (created_at, *keep))
            .map(|(_, _, id)| id)
            .collect();
        stream::iter(older.into_iter().map(Ok))
            .try_for_each_concurrent(OWNER_CALLS_AT_ONCE, |id| async move {
                self.destroy_record(&id).await?;
                tracing::info!(id = %id.short(), "session ended: its owner is over the session cap");
                Ok(())
            })
            .await
    }

    /// Asks the store to remove expired records (for stores without native
    /// expiry) and returns how many it removed.
    ///
    /// # Errors
    /// [`Error::Store`] or [`Error::Timeout`].
    pub async fn delete_expired(&self) -> Result<u64> {
        self.call("delete expired", self.inner.store.delete_expired())
            .await
    }

    /// Runs one store call under the store timeout, turning failures into
    /// [`Error`]s and logging them.
    ///
    /// The limit is set only if the store does not answer on the first
    /// poll (in-process stores, memory and sled, answer at once, but for a
    /// memory store's sweep of many sessions, which yields), and then
    /// on the thread's shared watchdog rather than a timer of the call's own
    /// (see `deadline`): a timer per call made Tokio wake its I/O driver, a
    /// system call, on every request to a network store.
    ///
    /// Not an `async fn`, here and in [`Manager::save`]: those keep their
    /// arguments twice, and every store call's future sits inside a request's.
    pub(crate) fn call<T, F>(&self, op: &'static str, fut: F) -> impl Future<Output = Result<T>>
    where
        F: Future<Output = std::result::Result<T, crate::StoreError>>,
    {
        let after = self.inner.config.store_timeout;
        crate::deadline::within(after, fut).map(move |answer| match answer {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(Self::store_failed(op, source)),
            Err(_) => {
                tracing::error!(op, ?after, "session store timed out");
                observe::count("session_store_timeouts_total", 1);
                Err(Error::Timeout { op, after })
            }
        })
    }

    /// Logs and counts a store failure and turns it into an [`Error`].
    fn store_failed(op: &'static str, source: crate::StoreError) -> Error {
        tracing::error!(op, error = %source, "session store error");
        observe::count("session_store_errors_total", 1);
        Error::Store { op, source }
    }

    /// Saves `record` as the version after `expected`, with one
    /// compare-and-set. A stored version that has no successor (only a
    /// record written by something else can get there) is reported as
    /// corrupted instead of wrapping around.
    pub(crate) fn save<'a>(
        &'a self,
        record: &'a mut Record,
        expected: u64,
    ) -> impl Future<Output = Result<Saved>> + 'a {
        let Some(next) = expected.checked_add(1) else {
            return Either::Left(future::ready(Err(Self::store_failed(
                "save",
                crate::StoreError::new(
                    crate::StoreErrorKind::Corrupted,
                    "the stored record's version has no successor",
                ),
            ))));
        };
        record.version = next;
        Either::Right(self.call("save", self.inner.store.save(record, expected)))
    }

    /// The lock that read-modify-writes of `id` take turns on.
    pub(crate) fn record_lock(&self, id: &RecordId) -> &tokio::sync::Mutex<Turn> {
        let locks = &self.inner.record_locks;
        &locks[usize::from(u16::from_le_bytes([id.as_bytes()[0], id.as_bytes()[1]])) % locks.len()]
    }

    /// Drops the copy of `id`'s record that its turn keeps (the record as
    /// this process last saved it), once the record is deleted: an ended
    /// session's values do not stay in memory. A turn in use at that moment
    /// is left alone: the copy then stays until the turn's next save (of any
    /// record sharing it) replaces or drops it.
    pub(crate) fn forget_kept_copy(&self, id: &RecordId) {
        if let Ok(mut turn) = self.record_lock(id).try_lock() {
            if turn.last.as_ref().is_some_and(|r| r.id == *id) {
                turn.last = None;
            }
        }
    }

    /// [`forget_kept_copy`](Self::forget_kept_copy) for every kept record
    /// that `ended` matches (an owner's, or all of them).
    fn forget_kept_copies(&self, ended: impl Fn(&Record) -> bool) {
        for lock in self.inner.record_locks.iter() {
            if let Ok(mut turn) = lock.try_lock() {
                if turn.last.as_deref().is_some_and(&ended) {
                    turn.last = None;
                }
            }
        }
    }

    /// The clock's time.
    pub(crate) fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    pub(crate) fn new_id(&self) -> Result<Id> {
        Ok(Id::generate()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::forward_store;
    use crate::testing::TestStore;
    use crate::{Created, Saved};

    /// A [`TestStore`] whose first `delete_all` is followed by a session
    /// rotating where that pass had already been (`rotates_behind`: its
    /// successor, the record held there, is put back once the pass is done,
    /// as a successor made behind the pass would stand).
    #[derive(Debug, Default)]
    struct Faulty {
        inner: TestStore,
        rotates_behind: std::sync::Mutex<Option<Record>>,
    }

    impl Store for Faulty {
        forward_store!(|this| this.inner, Faulty::pass);
    }

    impl Faulty {
        fn pass<'f, T: Send + 'f>(
            &'f self,
            op: crate::store::StoreOp,
            inner: crate::store::StoreFuture<'f, T>,
        ) -> crate::store::StoreFuture<'f, T> {
            if op != crate::store::StoreOp::DeleteAll {
                return inner;
            }
            Box::pin(async move {
                let deleted = inner.await;
                let successor = self.rotates_behind.lock().unwrap().take();
                if let Some(successor) = successor {
                    self.inner.put_raw(successor);
                }
                deleted
            })
        }
    }

    /// A stored session of `owner`, live for an hour.
    fn session_of(store: &Faulty, owner: &str) -> Record {
        let now = Timestamp::now();
        let mut r = Record::new(
            crate::Id::generate().unwrap().record_id(),
            now,
            now + std::time::Duration::from_secs(3600),
        );
        r.owner = Some(owner.into());
        store.inner.put_raw(r.clone());
        r
    }

    /// A session that rotated behind the store's first pass of
    /// `destroy_all` (its successor where the pass had already been) is
    /// ended by the second.
    #[tokio::test]
    async fn destroy_all_ends_a_session_that_rotated_behind_its_first_pass() {
        let store = Arc::new(Faulty::default());
        session_of(&store, "alice");
        let successor = session_of(&Faulty::default(), "alice");
        *store.rotates_behind.lock().unwrap() = Some(successor.clone());
        let manager = Manager::from_arc(store.clone(), Config::default());
        assert_eq!(manager.destroy_all().await.unwrap(), 2);
        assert_eq!(store.inner.load(&successor.id).await.unwrap(), None);
        assert!(store.inner.is_empty());
    }

    /// Adapters leave a request to an outer layer of the same manager only;
    /// another manager that carries its id alike is the misconfiguration
    /// they warn of.
    #[test]
    fn an_outer_session_is_deferred_to_only_by_its_own_manager() {
        let build = |config: crate::ConfigBuilder| {
            Manager::new(TestStore::default(), config.build().unwrap())
        };
        let cookies = || Config::builder();
        let manager = build(cookies());
        let outer = manager.session_from_cookies(std::iter::empty::<&str>());
        assert!(manager.defers_to(&outer));
        assert!(manager.clone().defers_to(&outer));
        let alike = build(cookies());
        assert!(!alike.defers_to(&outer));
        assert!(alike.carries_the_id_as(&manager));
        // Warned once, by the manager that found the other's session.
        assert!(alike
            .inner
            .warned_alike
            .load(std::sync::atomic::Ordering::Relaxed));
        assert!(!manager
            .inner
            .warned_alike
            .load(std::sync::atomic::Ordering::Relaxed));
        let named = build(cookies().with_cookie_name("other"));
        assert!(!named.carries_the_id_as(&manager));
        let header = |name: &str| build(cookies().with_header(Some(name)));
        assert!(header("x-session").carries_the_id_as(&header("X-Session")));
        assert!(!header("x-session").carries_the_id_as(&header("x-other")));
        assert!(!header("x-session").carries_the_id_as(&manager));
    }
}
