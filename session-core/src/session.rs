//! The per-request session handle.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::OptionFuture;
use futures_util::lock::{Mutex, MutexGuard};
use futures_util::stream::{self, TryStreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::batch::{self, Gathering, Landing, Outcome, Turn};
use crate::codec;
use crate::config::{idle_within_absolute, validate_lifetime};
use crate::error::{Error, Result};
use crate::id::{Id, RecordId};
use crate::manager::{Manager, OWNER_CALLS_AT_ONCE};
use crate::observe;
use crate::record::{Data, Lifetime, Record};
use crate::store::{Created, Saved};
use crate::timestamp::Timestamp;
use crate::transport::{self, Incoming, SetCookie};

/// Keys of flash values live under this prefix, hidden from [`Session::keys`].
const FLASH_PREFIX: &str = "\u{1}flash:";

/// Where [`Session::logout`] leaves who signed out and a digest of each
/// value (flash values too) the session held then ([`SignedOut`]), hidden
/// from listings: a later [`Session::login`] of another owner removes the
/// values still as they were at the logout, and keeps what was written
/// since (a visitor's cart, a page to return to); a login of the same owner
/// keeps everything. The key goes at the next login.
const SIGNED_OUT_KEY: &str = "\u{1}signed-out";

/// Whether `key` holds one of the session's own values: not a flash value
/// and not the signed-out marker.
pub(crate) fn is_value_key(key: &str) -> bool {
    !is_flash_key(key) && key != SIGNED_OUT_KEY
}

/// Whether a `Change::Clear { flashes }` removes `key`: the flash values,
/// or the session's own values (never the signed-out marker, which must
/// outlive a visitor's `clear` to keep the flash values it names from the
/// next owner).
fn cleared_by(key: &str, flashes: bool) -> bool {
    if flashes {
        is_flash_key(key)
    } else {
        is_value_key(key)
    }
}

/// What [`SIGNED_OUT_KEY`] holds: the owner who signed out, and the first
/// eight bytes of the SHA-256 of each value the session held then.
struct SignedOut {
    owner: Vec<u8>,
    values: Vec<(String, [u8; 8])>,
}

impl SignedOut {
    fn digest(value: &[u8]) -> [u8; 8] {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(value);
        let mut out = [0u8; 8];
        out.copy_from_slice(&d[..8]);
        out
    }

    /// The marker of `owner` signing out of a session holding `data`.
    fn of(owner: &str, data: &Data) -> Vec<u8> {
        let mut out = Vec::new();
        let owner = owner.as_bytes();
        out.extend_from_slice(&u32::try_from(owner.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(owner);
        for (key, value) in data.iter().filter(|(k, _)| k.as_str() != SIGNED_OUT_KEY) {
            out.extend_from_slice(&u32::try_from(key.len()).unwrap_or(u32::MAX).to_le_bytes());
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(&Self::digest(value));
        }
        out
    }

    /// The marker read back; `None` when it is not one (then every value is
    /// treated as the signed-out owner's).
    fn parse(bytes: &[u8]) -> Option<Self> {
        fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, tail) = (rest.get(..n)?, rest.get(n..)?);
            *rest = tail;
            Some(head)
        }
        fn len(rest: &mut &[u8]) -> Option<usize> {
            let b: [u8; 4] = take(rest, 4)?.try_into().ok()?;
            usize::try_from(u32::from_le_bytes(b)).ok()
        }
        let mut rest = bytes;
        let n = len(&mut rest)?;
        let owner = take(&mut rest, n)?.to_vec();
        let mut values = Vec::new();
        while !rest.is_empty() {
            let n = len(&mut rest)?;
            let key = String::from_utf8(take(&mut rest, n)?.to_vec()).ok()?;
            let digest: [u8; 8] = take(&mut rest, 8)?.try_into().ok()?;
            values.push((key, digest));
        }
        Some(Self { owner, values })
    }

    /// Whether `value` under `key` is as it was at the logout.
    fn unchanged(&self, key: &str, value: &[u8]) -> bool {
        let digest = Self::digest(value);
        self.values.iter().any(|(k, d)| k == key && *d == digest)
    }
}

/// Longest owner key accepted by [`Session::login`], in bytes.
pub const MAX_OWNER_LEN: usize = 512;

/// Whether [`Session::login`] accepts `owner`: 1 to [`MAX_OWNER_LEN`] bytes
/// without a NUL character, which PostgreSQL's text cannot hold (refused
/// alike on every store).
pub(crate) fn is_valid_owner(owner: &str) -> bool {
    !owner.is_empty() && owner.len() <= MAX_OWNER_LEN && !owner.contains('\0')
}

/// How many fresh ids are tried when a store reports an id as taken.
const CREATE_ATTEMPTS: u32 = 4;

/// The session of one request.
///
/// A cheap handle (clone it freely): the adapter keeps one to
/// [`commit`](Session::commit) after the handler, the handler gets another.
/// Nothing is loaded until a method needs the data, so a handler that never
/// uses its session costs no store call. The commit runs once, when the
/// handler has answered: a clone kept beyond that (in a spawned task, a
/// WebSocket, a streaming body) must call [`save`](Session::save) after its
/// writes, or they are dropped with it (with a warning, and the `metrics`
/// counter `session_changes_dropped_total`). [`update`](Session::update),
/// [`increment`](Session::increment) and [`login`](Session::login) write at
/// once wherever they run.
///
/// Values are any `Serialize` / `DeserializeOwned` type, encoded by the
/// configured [`Codec`](crate::Codec). Writes are kept as a change log; if
/// another request saved the session in the meantime, the log is re-applied on
/// the fresh record (last writer wins per key, not per session).
///
/// ```
/// # use session_core::{Config, Manager};
/// # async fn demo(session: session_core::Session) -> Result<(), session_core::Error> {
/// session.insert("name", "iris").await?;
/// assert_eq!(session.get_string("name").await?, "iris");
///
/// let visits = session.update("visits", |n: Option<u64>| n.unwrap_or(0) + 1).await?;
/// assert!(visits >= 1);
///
/// session.remove("name").await?;
/// assert_eq!(session.get::<String>("name").await?, None);
/// # Ok(()) }
/// ```
///
/// Logging in and out, "remember me" and a flash message, as three handlers
/// would do it:
///
/// ```
/// use std::time::Duration;
/// use session_core::{Lifetime, Session};
///
/// async fn log_in(session: Session, user_id: &str, remember: bool) -> session_core::Result<()> {
///     // A new id (the old one stops working) and the owner that "log out
///     // everywhere" finds; a visitor's data (a cart) is kept, another
///     // user's is not.
///     session.login(user_id).await?;
///     if remember {
///         // 30 days idle, 90 at most, in a cookie that outlives the browser.
///         let month = Duration::from_secs(30 * 24 * 3600);
///         session
///             .set_lifetime(Some(
///                 Lifetime::new()
///                     .with_idle_timeout(Some(month))
///                     .with_absolute_timeout(Some(3 * month))
///                     .with_persistent_cookie(true),
///             ))
///             .await?;
///     }
///     session.insert_flash("notice", format!("Welcome, {user_id}")).await
/// }
///
/// async fn page(session: Session) -> session_core::Result<String> {
///     let notice: Option<String> = session.take_flash("notice").await?; // shown once
///     let user = session.owner().await?.unwrap_or_else(|| "guest".into());
///     Ok(format!("{} {user}", notice.unwrap_or_default()))
/// }
///
/// async fn log_out(session: Session, everywhere: bool) -> session_core::Result<()> {
///     if everywhere {
///         session.end_other_sessions().await?; // the owner's other devices
///     }
///     session.destroy().await // deleted in the store, cookie removed
/// }
/// ```
pub struct Session {
    shared: Arc<Shared>,
    /// The handle an adapter gave the handler ([`Session::for_handler`]).
    handler: bool,
}

/// A clone is another handle on the same session; it is never the
/// handler's own ([`Session::for_handler`]).
impl Clone for Session {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            handler: false,
        }
    }
}

struct Shared {
    manager: Manager,
    /// Set before the state is first locked: until then the session is as
    /// [`Session::new`] made it, and committing it is a no-op.
    used: AtomicBool,
    /// Set when the handler's own handle is dropped by a panic unwinding:
    /// the handler stopped midway, so its deferred changes are never saved.
    abandoned: AtomicBool,
    /// Set once a commit has answered the adapter: changes made after it
    /// (by a task holding a clone, a streaming body) are saved only by
    /// [`Session::save`].
    committed: AtomicBool,
    state: Mutex<State>,
    /// Rotations spawned ([`Session::rotate_to_the_end`]) that have not yet
    /// locked the state: every other lock waits for them, so that a commit
    /// made after the caller was dropped sees the rotation's outcome.
    rotations_starting: AtomicUsize,
    rotation_started: Notify,
}

/// The last handle of a committed session is gone: changes made after the
/// commit that nothing saved are lost, which the app should hear of.
impl Drop for Shared {
    fn drop(&mut self) {
        if *self.committed.get_mut()
            && !*self.abandoned.get_mut()
            && self.state.get_mut().needs_write()
        {
            observe::dropped_after_commit();
        }
    }
}

/// Held by a spawned rotation until it has locked the state (or is dropped
/// before it could).
struct StartingRotation(Arc<Shared>);

impl Drop for StartingRotation {
    fn drop(&mut self) {
        self.0.rotations_starting.fetch_sub(1, Ordering::SeqCst);
        self.0.rotation_started.notify_waiters();
    }
}

/// A handler that panics drops its arguments while unwinding (an `async fn`
/// drops its locals as the panic passes through it), before a framework that
/// catches the panic (Rocket, or a catch-panic layer inside the session
/// layer) lets the adapter commit: when the handler's own handle goes so, the
/// commit saves none of the handler's deferred changes, as when the panic
/// unwinds through the adapter. Clones do not count: a task that panics with
/// one, or code that catches a panic around one, abandons nothing.
impl Drop for Session {
    fn drop(&mut self) {
        if self.handler && std::thread::panicking() {
            self.shared.abandoned.store(true, Ordering::Release);
        }
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Session");
        match self.shared.state.try_lock() {
            Some(state) => s
                .field("loaded", &state.loaded)
                .field("record", &state.stored.as_ref().map(|m| m.rid))
                .field("entries", &state.data.len())
                .field("pending_changes", &state.log.changes.len())
                .finish(),
            None => s.finish_non_exhaustive(),
        }
    }
}

#[derive(Debug, Clone)]
enum Change {
    Set(String, Vec<u8>),
    Remove(String),
    /// Removes the value under the key if it is still the one this request
    /// took (`take`, `take_flash`): applied again on a record saved
    /// meanwhile, it leaves a value another request set there since (a new
    /// flash message of the same key) for the next request to take.
    Take(String, Vec<u8>),
    /// Removes every flash value (`flashes`) or every other value: applied
    /// again on a record saved meanwhile, it clears what that record holds.
    /// Recorded only when the request saw something to clear, so that a
    /// `clear` of nothing writes nothing.
    Clear {
        flashes: bool,
    },
}

/// What this request knows of the stored record.
#[derive(Clone)]
struct Stored {
    id: Id,
    rid: RecordId,
    version: u64,
    created_at: Timestamp,
    expires_at: Timestamp,
    /// The lifetime the stored record holds, which a pending
    /// [`Session::set_lifetime`] may not have replaced yet: it decides the
    /// cookie the client gets, also when the commit that would have saved
    /// the new one fails.
    lifetime: Option<Lifetime>,
}

struct State {
    /// The id the client presented, if any (not yet looked up).
    incoming: Incoming,
    /// Whether the client presented a cookie at all (even an invalid one).
    presented: bool,
    loaded: bool,
    /// Some while the session exists in the store.
    stored: Option<Stored>,
    data: Data,
    log: Log,
    owner: Option<String>,
    owner_dirty: bool,
    lifetime: Option<Lifetime>,
    lifetime_dirty: bool,
    /// A record was created under a new id during this request.
    issued: bool,
    /// The persistent cookie's `Max-Age` must be refreshed.
    refresh_cookie: bool,
    /// The session was destroyed here or ended elsewhere.
    ended: bool,
    /// The time of this request: read once, when the record is first looked
    /// up, and used again to decide whether the idle deadline is due for
    /// extension (one clock read per request that makes no touch; a touch
    /// reads it again for its new deadline).
    now: Option<Timestamp>,
    /// Moves on whenever this request's copy stops being the record it was
    /// (ended, or a rotation under way): an update that waited for its save
    /// meanwhile must not take its outcome as this request's copy.
    epoch: u64,
    /// A save of the request's copy is under way. Still set when the state
    /// is next locked, the call that made it was dropped during the save
    /// (a handler's timeout, a client gone), which may have landed.
    saving: bool,
    /// A save of the request's copy failed, or was dropped, and may have
    /// landed; its changes left the log, but the copy still shows them. The
    /// commit writes the copy again, by compare-and-set on the version it
    /// was loaded at: if the save landed, that conflicts and the request
    /// takes the stored record; if not, the changes are stored now (a
    /// removal too, which the handler could not make again: its copy says
    /// it is done). Set only when the save carried some of the request's
    /// changes; taking a stored record as the copy clears it.
    unsure: bool,
}

impl State {
    /// Whether a commit would write: changes to a stored session, or a new
    /// session that holds something.
    fn needs_write(&self) -> bool {
        match self.stored {
            Some(_) => {
                !self.log.changes.is_empty()
                    || self.owner_dirty
                    || self.lifetime_dirty
                    || self.unsure
            }
            None => !self.data.is_empty() || self.owner.is_some(),
        }
    }

    /// Forgets the session: destroyed here or ended elsewhere. The client's
    /// cookie is removed at commit; writes after this start a new session.
    fn end(&mut self) {
        self.epoch += 1;
        self.stored = None;
        self.data.clear();
        self.log.clear();
        self.owner = None;
        self.owner_dirty = false;
        self.lifetime = None;
        self.lifetime_dirty = false;
        self.issued = false;
        self.refresh_cookie = false;
        self.unsure = false;
        self.ended = true;
    }
}

/// The request's pending changes, in the order it made them, and the
/// gathered saves of its updates that carried some of them.
///
/// An update's save carries every change pending when it gathers, and the
/// update drops them from the log once it takes the save's outcome. Until
/// then another handle of the request (a rotation, a save after a conflict,
/// another update) may apply the log on a newer record: the changes a save
/// already wrote into that record or an earlier version of it, or sent with
/// a save whose outcome is unknown, are left out ([`Log::unsent`]), so that
/// they do not undo what other requests wrote since.
///
/// The log is emptied whenever the request's copy becomes another record (a
/// rotation creates one, an end forgets it), so the saves it notes are all
/// of the record the request holds (or, for a rotation, held).
#[derive(Clone, Default)]
struct Log {
    /// How many changes have left the front of `changes` (saved, sent with a
    /// save whose outcome is unknown, or dropped by an end): an update
    /// counts the ones its save carried from here, whatever another handle
    /// did to the log while it waited.
    start: u64,
    changes: Vec<Change>,
    /// The saves that carried changes still in the log.
    carriers: Vec<Carrier>,
}

/// A gathered save that carried the log's changes before `end`.
#[derive(Clone)]
struct Carrier {
    end: u64,
    landing: Arc<Landing>,
}

impl Log {
    /// The position past the last change.
    fn end(&self) -> u64 {
        self.start + self.changes.len() as u64
    }

    fn push(&mut self, change: Change) {
        self.changes.push(change);
    }

    /// Drops every pending change (saved, or sent with a save whose outcome
    /// is unknown).
    fn clear(&mut self) {
        self.start = self.end();
        self.changes.clear();
        self.carriers.clear();
    }

    /// Drops the pending changes before position `end` (they were saved, or
    /// sent with a save whose outcome is unknown); later ones stay pending.
    /// Drops the changes before position `end`; whether there were any.
    fn drop_until(&mut self, end: u64) -> bool {
        let sent = usize::try_from(end.saturating_sub(self.start))
            .unwrap_or(usize::MAX)
            .min(self.changes.len());
        self.changes.drain(..sent);
        self.start += sent as u64;
        let start = self.start;
        self.carriers.retain(|c| c.end > start);
        sent > 0
    }

    /// Whether a save that carried some of the log's changes is being
    /// written: a record loaded now may hold them.
    fn in_flight(&self) -> bool {
        self.carriers.iter().any(|c| c.landing.in_flight())
    }

    /// Waits for every save that carried some of the log's changes and is
    /// being written, so that [`Log::unsent`] knows what a record loaded
    /// meanwhile holds. Those saves are written by saver tasks, which need
    /// nothing the request holds.
    async fn settled(&self) {
        for carrier in &self.carriers {
            carrier.landing.settled().await;
        }
    }

    /// Notes that a save under way carries every change in the log, and
    /// learns through `landing` how it went.
    fn carried(&mut self, landing: Arc<Landing>) {
        self.carriers.push(Carrier {
            end: self.end(),
            landing,
        });
    }

    /// The changes to apply on the record as of `version`: those a save
    /// already wrote into that version or an earlier one, or sent with a
    /// save whose outcome is unknown, are left out. Saves carry a prefix of
    /// the log, so what is left out is a prefix too.
    fn unsent(&self, version: u64) -> &[Change] {
        self.unsent_in(version, None)
    }

    /// [`Log::unsent`] on a gathering's record: the changes carried into
    /// `gathering` already are left out too.
    fn unsent_in(&self, version: u64, gathering: Option<&Gathering>) -> &[Change] {
        let written = self
            .carriers
            .iter()
            .filter(|c| {
                c.landing.covers(version) || gathering.is_some_and(|g| g.lands_with(&c.landing))
            })
            .map(|c| c.end)
            .max()
            .unwrap_or(self.start);
        let skip = usize::try_from(written.saturating_sub(self.start))
            .unwrap_or(usize::MAX)
            .min(self.changes.len());
        &self.changes[skip..]
    }
}

/// The request's values lent to a record for one store call (a create or
/// a save, which take the record by reference), instead of copied for it:
/// copying allocated every key and value again on each write. They go back
/// when the guard drops, also when the call's future is dropped midway.
struct Lent<'s> {
    home: &'s mut Data,
    record: Record,
}

impl<'s> Lent<'s> {
    fn new(home: &'s mut Data, record: impl FnOnce(Data) -> Record) -> Self {
        let record = record(std::mem::take(home));
        Self { home, record }
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        std::mem::swap(self.home, &mut self.record.data);
    }
}

/// What a rotation puts back when it cannot finish: the request's copy of
/// the old session, with its pending changes at their places in the log and
/// the epoch, so that an update waiting meanwhile for a save of the old
/// record takes its outcome as if no rotation had been tried.
struct Kept {
    epoch: u64,
    stored: Option<Stored>,
    data: Data,
    log: Log,
    owner: Option<String>,
    owner_dirty: bool,
    lifetime: Option<Lifetime>,
    lifetime_dirty: bool,
    issued: bool,
    refresh_cookie: bool,
    unsure: bool,
}

impl Kept {
    fn of(state: &State) -> Self {
        Self {
            epoch: state.epoch,
            stored: state.stored.clone(),
            data: state.data.clone(),
            log: state.log.clone(),
            owner: state.owner.clone(),
            owner_dirty: state.owner_dirty,
            lifetime: state.lifetime,
            lifetime_dirty: state.lifetime_dirty,
            issued: state.issued,
            refresh_cookie: state.refresh_cookie,
            unsure: state.unsure,
        }
    }

    fn restore(self, state: &mut State) {
        state.epoch = self.epoch;
        state.stored = self.stored;
        state.data = self.data;
        state.log = self.log;
        state.owner = self.owner;
        state.owner_dirty = self.owner_dirty;
        state.lifetime = self.lifetime;
        state.lifetime_dirty = self.lifetime_dirty;
        state.issued = self.issued;
        state.refresh_cookie = self.refresh_cookie;
        state.unsure = self.unsure;
    }
}

/// Where [`Session::update`] finds the record to start from, holding the
/// record's turn.
enum Latest {
    Found(Record),
    /// The request already found no session under the client's id.
    Missing,
    /// No copy: one must be loaded, without holding the turn.
    Load,
}

enum Commit {
    Done,
    Conflict,
    Ended,
}

/// What a rotation does to the owner.
enum Owner {
    Keep,
    Login(String),
    Logout,
}

/// What a rotation carries into the retirement of its old record.
struct Rotation<'a> {
    /// This request's changes, to apply again on a newer copy.
    log: &'a Log,
    /// The request (or a logout) set the lifetime: what the old record
    /// holds must not replace it.
    lifetime_set: bool,
    /// A login: it goes on with a fresh session if the old one ended.
    login: bool,
}

impl Rotation<'_> {
    /// `record`'s data with this request's changes applied (those not
    /// already in it).
    fn applied_to(&self, record: Record) -> Data {
        let mut data = record.data;
        for change in self.log.unsent(record.version) {
            apply(&mut data, change);
        }
        data
    }
}

impl Session {
    pub(crate) fn new(manager: Manager, incoming: Incoming, presented: bool) -> Self {
        Self {
            handler: false,
            shared: Arc::new(Shared {
                manager,
                used: AtomicBool::new(false),
                abandoned: AtomicBool::new(false),
                committed: AtomicBool::new(false),
                rotations_starting: AtomicUsize::new(0),
                rotation_started: Notify::new(),
                state: Mutex::new(State {
                    incoming,
                    presented,
                    loaded: false,
                    stored: None,
                    data: Data::new(),
                    log: Log::default(),
                    owner: None,
                    owner_dirty: false,
                    lifetime: None,
                    lifetime_dirty: false,
                    issued: false,
                    refresh_cookie: false,
                    ended: false,
                    now: None,
                    epoch: 0,
                    saving: false,
                    unsure: false,
                }),
            }),
        }
    }

    /// Locks the state, marking the session as used, once every rotation
    /// spawned before has locked it.
    async fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.used.store(true, Ordering::Release);
        if self.shared.rotations_starting.load(Ordering::SeqCst) > 0 {
            Box::pin(self.rotations_started()).await;
        }
        self.lock_now().await
    }

    /// Waits until no spawned rotation is still to lock the state.
    async fn rotations_started(&self) {
        loop {
            let mut started = std::pin::pin!(self.shared.rotation_started.notified());
            // Listening before looking, so a start in between is heard.
            started.as_mut().enable();
            if self.shared.rotations_starting.load(Ordering::SeqCst) == 0 {
                return;
            }
            started.await;
        }
    }

    /// Locks the state now, whatever rotation is starting.
    async fn lock_now(&self) -> MutexGuard<'_, State> {
        let mut state = self.shared.state.lock().await;
        if state.saving {
            // The call that held the state was dropped during its save,
            // which may have landed: as after a failed save, its changes
            // are not applied again over what others wrote since.
            state.saving = false;
            state.unsure = !state.log.changes.is_empty();
            state.log.clear();
        }
        state
    }

    /// *For adapters.* The handle to give the handler: if it is dropped
    /// while a panic unwinds (the handler panicked with it), the commit saves
    /// none of the handler's deferred changes. Its clones are ordinary
    /// handles.
    pub fn for_handler(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            handler: true,
        }
    }

    /// The manager this session belongs to, for work across sessions such as
    /// [`Manager::destroy_all_of`].
    pub fn manager(&self) -> &Manager {
        &self.shared.manager
    }

    /// Locks the state and loads the record on first use.
    async fn loaded(&self) -> Result<MutexGuard<'_, State>> {
        let mut state = self.lock().await;
        if !state.loaded {
            self.load(&mut state).await?;
        }
        Ok(state)
    }

    async fn load(&self, state: &mut State) -> Result<()> {
        let manager = self.manager();
        while let Some(id) = state.incoming.id(&manager.inner.config).cloned() {
            let rid = id.record_id();
            let found = manager.call("load", manager.inner.store.load(&rid)).await?;
            let live = self.live_now(state, found, rid);
            observe::loaded(&rid, live.is_some());
            if let Some(record) = live {
                Self::adopt(state, id, record);
                break;
            }
            // A later cookie of the same name may hold the live session (one
            // set for the whole domain beside an older host-only one, say).
            if !state.incoming.next_candidate() {
                break;
            }
        }
        state.loaded = true;
        Ok(())
    }

    /// Loads now when the request presented several cookies of the
    /// session's name, so that the calls that act on a record without
    /// loading it first (`update`, `destroy`) act on the live one.
    async fn settle_candidates(&self, state: &mut State) -> Result<()> {
        if !state.loaded && state.incoming.has_fallbacks() {
            Box::pin(self.load(state)).await?;
        }
        Ok(())
    }

    /// What a load of record `rid` found, if it is that record and live now;
    /// the time read here becomes the request's time.
    fn live_now(&self, state: &mut State, found: Option<Record>, rid: RecordId) -> Option<Record> {
        let now = self.manager().now();
        state.now = Some(now);
        found.filter(|r| r.id == rid && self.is_live(r, now))
    }

    /// Takes `record` (the live record of `id`) as this request's copy.
    fn adopt(state: &mut State, id: Id, record: Record) {
        state.stored = Some(Stored {
            id,
            rid: record.id,
            version: record.version,
            created_at: record.created_at,
            expires_at: record.expires_at,
            lifetime: record.lifetime,
        });
        state.data = record.data;
        state.owner = record.owner;
        state.lifetime = record.lifetime;
        state.loaded = true;
        // The copy is a stored record now: a failed save's changes that it
        // showed are gone from it (or are in it, if that save landed).
        state.unsure = false;
        // A cookie signed or encrypted under a retired key goes back under
        // the current one, so the old key can leave the configuration while
        // its sessions live on.
        if state.incoming.under_previous_key() {
            state.refresh_cookie = true;
        }
    }

    /// The record as it was just saved, for the record's turn to keep.
    fn saved_copy(state: &State) -> Option<Record> {
        let stored = state.stored.as_ref()?;
        Some(Record {
            id: stored.rid,
            data: state.data.clone(),
            created_at: stored.created_at,
            expires_at: stored.expires_at,
            version: stored.version,
            owner: state.owner.clone(),
            lifetime: state.lifetime,
        })
    }

    /// Whether a record is live by the manager's clock: before its stored
    /// deadline and within the absolute timeout in force now.
    fn is_live(&self, record: &Record, now: Timestamp) -> bool {
        self.manager().is_live(record, now)
    }

    fn lifetime_of(&self, state: &State) -> Lifetime {
        state
            .lifetime
            .unwrap_or(self.manager().inner.config.lifetime)
    }

    pub(crate) fn value_error(key: &str, action: &'static str, source: codec::CodecError) -> Error {
        if action == "decoded" {
            observe::corrupt_value(key);
        }
        Error::Value {
            key: key.to_owned(),
            action,
            source,
        }
    }

    fn encode<T: Serialize>(&self, key: &str, value: &T) -> Result<Vec<u8>> {
        codec::encode(&*self.manager().inner.config.codec, value)
            .map_err(|e| Self::value_error(key, "encoded", e))
    }

    fn decode<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Result<T> {
        codec::decode(&*self.manager().inner.config.codec, bytes)
            .map_err(|e| Self::value_error(key, "decoded", e))
    }

    // ----- reading -----

    /// The value under `key`, decoded as `T`; `None` when absent.
    ///
    /// # Errors
    /// [`Error::Value`] when the stored value does not decode as `T` (only this
    /// call fails; the session is intact), or a store error on first use.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let state = self.loaded().await?;
        state
            .data
            .get(key)
            .map(|bytes| self.decode(key, bytes))
            .transpose()
    }

    /// The string under `key`, or an empty string when absent (Iris's
    /// `GetString`).
    ///
    /// # Errors
    /// [`Error::Value`] when the value is not a string, or a store error.
    pub async fn get_string(&self, key: &str) -> Result<String> {
        Ok(self.get::<String>(key).await?.unwrap_or_default())
    }

    /// The value under `key`, or `default` when absent (Iris's
    /// `GetIntDefault` and friends, for any owned type: a `String` default,
    /// not a `&str`, which no stored value can be decoded into).
    ///
    /// ```
    /// # async fn handler(session: session_core::Session) -> session_core::Result<()> {
    /// let visits: u64 = session.get_or("visits", 0).await?;
    /// let lang = session.get_or("lang", String::from("en")).await?;
    /// # let _ = (visits, lang);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Value`] when the value does not decode as `T`, or a store
    /// error.
    pub async fn get_or<T: DeserializeOwned>(&self, key: &str, default: T) -> Result<T> {
        Ok(self.get(key).await?.unwrap_or(default))
    }

    /// Whether a value is stored under `key`.
    ///
    /// # Errors
    /// A store error on first use.
    #[doc(alias = "contains_key")]
    pub async fn contains(&self, key: &str) -> Result<bool> {
        Ok(self.loaded().await?.data.contains_key(key))
    }

    /// The keys of the session's values (flash values excluded), sorted.
    ///
    /// # Errors
    /// A store error on first use.
    pub async fn keys(&self) -> Result<Vec<String>> {
        let state = self.loaded().await?;
        let keys: Vec<String> = state
            .data
            .keys()
            .filter(|k| is_value_key(k))
            .cloned()
            .collect();
        // `Data` is ordered: the keys come sorted.
        Ok(keys)
    }

    /// How many values the session holds (flash values excluded).
    ///
    /// # Errors
    /// A store error on first use.
    pub async fn len(&self) -> Result<usize> {
        let state = self.loaded().await?;
        Ok(state.data.keys().filter(|k| is_value_key(k)).count())
    }

    /// Whether the session holds no values (flash values excluded).
    ///
    /// # Errors
    /// A store error on first use.
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// The owner set by [`Session::login`], if any.
    ///
    /// # Errors
    /// A store error on first use.
    pub async fn owner(&self) -> Result<Option<String>> {
        Ok(self.loaded().await?.owner.clone())
    }

    /// The record id of this session in the store, once it is stored: the
    /// handle [`Manager::sessions_of`] lists, safe to show or log.
    ///
    /// # Errors
    /// A store error on first use.
    #[doc(alias("id", "session_id"))]
    pub async fn record_id(&self) -> Result<Option<RecordId>> {
        Ok(self.loaded().await?.stored.as_ref().map(|s| s.rid))
    }

    /// When the session expires as last stored; `None` before it is stored.
    ///
    /// # Errors
    /// A store error on first use.
    #[doc(alias = "expiry_date")]
    pub async fn expires_at(&self) -> Result<Option<OffsetDateTime>> {
        Ok(self
            .loaded()
            .await?
            .stored
            .as_ref()
            .map(|s| s.expires_at.into()))
    }

    // ----- writing -----

    fn push(state: &mut State, change: Change) {
        apply(&mut state.data, &change);
        state.log.push(change);
    }

    /// Stores `value` under `key` (Iris's `Set`), replacing any previous value.
    /// It takes the value or a reference to it, whichever the caller has:
    /// `insert("n", 1)`, `insert("name", "iris")` and `insert("user", &user)`
    /// all work. The value is encoded at once; nothing is written to the store
    /// until the request's commit.
    ///
    /// Any string is a key, but those that begin with the control character
    /// U+0001 are the session's own: the flash values live under U+0001 and
    /// `flash:` ([`insert_flash`](Self::insert_flash)), and
    /// [`logout`](Self::logout) leaves a record of itself under another.
    /// Keys that come from outside input (a form's field names) should not be
    /// able to start so.
    ///
    /// # Errors
    /// [`Error::Value`] when the value cannot be encoded, or a store error on
    /// first use.
    pub async fn insert<T: Serialize>(&self, key: &str, value: T) -> Result<()> {
        let bytes = self.encode(key, &value)?;
        let mut state = self.loaded().await?;
        Self::push(&mut state, Change::Set(key.to_owned(), bytes));
        Ok(())
    }

    /// Removes the value under `key` (Iris's `Delete`); returns whether there
    /// was one. [`take`](Self::take) removes it and returns it decoded, as
    /// tower-sessions' `remove` and actix-session's `remove_as` do.
    ///
    /// # Errors
    /// A store error on first use.
    pub async fn remove(&self, key: &str) -> Result<bool> {
        let mut state = self.loaded().await?;
        let had = state.data.contains_key(key);
        if had {
            Self::push(&mut state, Change::Remove(key.to_owned()));
        }
        Ok(had)
    }

    /// Removes the value under `key` and returns it decoded.
    ///
    /// It removes the value it returned, not whatever the key holds by the
    /// commit: should another request store a new value under `key`
    /// meanwhile (the commit then meets a newer version and applies this
    /// request's changes again to it), the new value stays, as a flash set
    /// again does after [`take_flash`](Self::take_flash).
    /// [`remove`](Self::remove) removes the key whatever it holds.
    ///
    /// # Errors
    /// [`Error::Value`] when the value does not decode as `T` (it is then left
    /// in place), or a store error.
    #[doc(alias = "remove_as")]
    pub async fn take<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let mut state = self.loaded().await?;
        let Some(bytes) = state.data.get(key) else {
            return Ok(None);
        };
        let value = self.decode(key, bytes)?;
        let taken = bytes.clone();
        Self::push(&mut state, Change::Take(key.to_owned(), taken));
        Ok(Some(value))
    }

    /// Removes every value (Iris's `Clear`). Flash values stay, as Iris's do:
    /// [`clear_flashes`](Self::clear_flashes) removes those. The session
    /// itself, its id and its owner stay; to log out,
    /// [`destroy`](Self::destroy) the session.
    ///
    /// # Errors
    /// A store error on first use.
    pub async fn clear(&self) -> Result<()> {
        self.clear_where(false).await
    }

    /// Removes the flash values (`flashes`) or every other value.
    async fn clear_where(&self, flashes: bool) -> Result<()> {
        let mut state = self.loaded().await?;
        if state.data.keys().any(|k| cleared_by(k, flashes)) {
            Self::push(&mut state, Change::Clear { flashes });
        }
        Ok(())
    }

    /// Stores a flash value, for [`Session::take_flash`] to read and remove
    /// on this or a later request. Taking is a deferred write like
    /// [`Session::take`]: two requests of one session running at once may
    /// both read it (as in Iris), then neither leaves it.
    ///
    /// # Errors
    /// [`Error::Value`] when the value cannot be encoded, or a store error.
    pub async fn insert_flash<T: Serialize>(&self, key: &str, value: T) -> Result<()> {
        self.insert(&flash_key(key), value).await
    }

    /// Reads and removes a flash value (Iris's `GetFlash`).
    ///
    /// # Errors
    /// [`Error::Value`] when the value does not decode as `T`, or a store error.
    pub async fn take_flash<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.take(&flash_key(key)).await
    }

    /// Reads a flash value without removing it (Iris's `PeekFlash`).
    ///
    /// # Errors
    /// [`Error::Value`] when the value does not decode as `T`, or a store error.
    pub async fn peek_flash<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.get(&flash_key(key)).await
    }

    /// The keys of the flash values not taken yet, sorted. Iris's `HasFlash`
    /// is `!flash_keys().await?.is_empty()`, and its `GetFlashes` a
    /// [`take_flash`](Self::take_flash) of each key.
    ///
    /// ```
    /// # async fn demo(session: session_core::Session) -> session_core::Result<()> {
    /// for key in session.flash_keys().await? {
    ///     if let Some(message) = session.take_flash::<String>(&key).await? {
    ///         println!("{key}: {message}");
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A store error on first use.
    pub async fn flash_keys(&self) -> Result<Vec<String>> {
        let state = self.loaded().await?;
        // `Data` is ordered: the keys come sorted.
        Ok(state
            .data
            .keys()
            .filter_map(|k| k.strip_prefix(FLASH_PREFIX))
            .map(str::to_owned)
            .collect())
    }

    /// Removes a flash value unread (Iris's `DeleteFlash`); returns whether
    /// there was one.
    ///
    /// # Errors
    /// A store error on first use.
    pub async fn remove_flash(&self, key: &str) -> Result<bool> {
        self.remove(&flash_key(key)).await
    }

    /// Removes every flash value (Iris's `ClearFlashes`); the other values
    /// stay.
    ///
    /// # Errors
    /// A store error on first use.
    pub async fn clear_flashes(&self) -> Result<()> {
        self.clear_where(true).await
    }

    /// Read-modify-write of one value that is safe against concurrent requests:
    /// `f` gets the current value (or `None`) and returns the new one, which is
    /// written before this returns, together with any other pending change,
    /// by a compare-and-set. Concurrent updates of one session within this
    /// process are applied one after the other and written together, usually
    /// by one save (group commit); if another process saved the session in
    /// between, none of them is acknowledged: the fresh record is loaded and
    /// `f` runs again. So 100 concurrent increments end at exactly 100.
    /// Returns the value as saved. `f` may run more than once (after such a
    /// conflict, or when another handle of the request rotates or destroys
    /// the session while the update waits): keep side effects out of it.
    ///
    /// ```
    /// # async fn handler(session: session_core::Session) -> session_core::Result<()> {
    /// // A cart of item ids: two tabs adding at once both land.
    /// let cart: Vec<u32> = session
    ///     .update("cart", |cart: Option<Vec<u32>>| {
    ///         let mut cart = cart.unwrap_or_default();
    ///         cart.push(42);
    ///         cart
    ///     })
    ///     .await?;
    /// assert!(cart.contains(&42));
    /// # Ok(()) }
    /// ```
    ///
    /// An update in a request that has already read the session starts from
    /// that copy instead of loading it again (one load and one save for the
    /// request); if another process saved the session since, the first
    /// attempt conflicts and the retry loads (with no retries configured, it
    /// always loads first: a copy it holds may be stale, and the first
    /// conflict would be final). When `f`'s input does not decode or its
    /// output does not encode, nothing is written.
    ///
    /// An update that has to load the session (the request has not read
    /// it, and this process holds no copy) loads before it takes its turn,
    /// so that the updates of the other sessions sharing the turn do not
    /// wait for that round trip; if one of this process's saves through the
    /// turn may have landed after the load read, or the request saved a
    /// newer copy meanwhile, it loads again holding the turn.
    ///
    /// Poll the returned future to completion or drop it: while it writes, it
    /// may hold the turn that other updates of this session (and of the few
    /// sessions sharing its turn) wait for. Dropped before it returns, the
    /// update may or may not have been written (it was not acknowledged).
    /// So may one whose save fails with a store error or timeout. Either
    /// way, so may the request's earlier pending changes that the save
    /// carried: neither the commit nor another handle of the request applies
    /// them again over a newer record, which would undo what other requests
    /// wrote since (a failed update drops them from the request's change
    /// log).
    ///
    /// While another handle of the same request rotates the session, an
    /// update that saved to the old record first is carried over to the new
    /// one with the rest, except by a `logout` that could not retire the old
    /// record (which deletes it, with the update) or a rotation that could
    /// not find out whether the old record was retired.
    ///
    /// # Errors
    /// [`Error::Contention`] when the retries run out, [`Error::Ended`] when
    /// another request ended the session, [`Error::Value`] when the stored value
    /// does not decode as `T` or the new one does not encode,
    /// [`Error::Random`] when the OS cannot supply an id for a new session, or
    /// a store error or timeout. [`Error::Contention`] too when the
    /// record's turn, held by other updates in their store calls, does not
    /// come within the store timeout (nothing was written): each step of an
    /// update (the wait for the turn, a load, the save) is bounded by the
    /// store timeout, not the update as a whole. A save gathered with other
    /// updates, made by a task of its own, gets twice the store timeout from
    /// when the update joined it before the update answers
    /// [`Error::Timeout`] (a saver held up longer: its worker's thread
    /// blocked by a handler, or the turn held through a long rotation); that
    /// task may still write it, as after any timeout of a save. An update
    /// that waited as long for the save of another record sharing its turn
    /// answers [`Error::Contention`], with nothing written.
    ///
    /// # Panics
    /// Outside a Tokio runtime, when the save goes through a task of its own
    /// (on a store that gathers updates, or for an update that carries the
    /// request's earlier deferred writes), or when it has to wait for its
    /// record's turn.
    pub async fn update<T, F>(&self, key: &str, mut f: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        // The record, and the epoch that says it is still this request's
        // copy when the update gets the turn and when its save answers.
        let (rid, epoch) = {
            let mut state = self.lock().await;
            self.settle_candidates(&mut state).await?;
            let rid = match &state.stored {
                Some(s) => Some(s.rid),
                None => state
                    .incoming
                    .id(&self.manager().inner.config)
                    .map(Id::record_id),
            };
            (rid, state.epoch)
        };
        let Some(rid) = rid else {
            // A session not stored yet: nothing to gather with.
            return Box::pin(self.update_alone(key, f)).await;
        };
        let retries = self.manager().inner.config.conflict_retries;
        let mut conflicts = 0;
        // A copy of the record loaded on the pass before (boxed: it would
        // take room in this future's state across every wait), and the
        // turn's count of saves begun when that load started.
        let mut fetched: Option<Box<Record>> = None;
        let mut saves_seen = 0;
        // Set when the pass before found no copy to start from: this pass
        // loads first. The update's first load lets the turn go (the other
        // updates of this record, and of the records sharing its turn, may
        // take it meanwhile); a later one holds it, in `held`.
        let mut load_first = false;
        let mut loaded_outside = false;
        let mut held = None;
        loop {
            if load_first {
                load_first = false;
                match Box::pin(self.load_to_update(rid)).await? {
                    Some(record) => fetched = Some(record),
                    None => {
                        drop(held);
                        return Box::pin(self.update_alone(key, f)).await;
                    }
                }
            }
            let fresh = fetched.take();
            if conflicts > 0 && fresh.is_none() {
                Box::pin(backoff(conflicts)).await;
            }
            let lock = self.manager().record_lock(&rid);
            let mut turn = match held.take().map_or_else(|| lock.try_lock(), Ok) {
                Ok(turn) => turn,
                Err(_) => {
                    let attempts = conflicts.saturating_add(1);
                    let mut turn = Box::pin(self.wait_for_turn(lock, attempts)).await?;
                    turn.contended();
                    turn
                }
            };
            if turn.gathering.as_ref().is_some_and(Gathering::abandoned) {
                // Its members learn that nothing was saved and try again.
                turn.gathering = None;
            }
            if let Some(other) = turn.gathering.as_mut().filter(|g| g.record.id != rid) {
                // Another record sharing this turn is gathering: wait for its
                // save, then try again.
                let rx = other.subscribe();
                drop(turn);
                let limit = self.gathered_save_limit();
                if batch::outcome(rx, limit).await.is_none() {
                    // Nothing of this update was sent: the turn did not
                    // come, as in `wait_for_turn`.
                    tracing::warn!(
                        ?limit,
                        "an update waited for the save of a record sharing its turn longer than twice the store timeout"
                    );
                    return Err(Error::Contention {
                        attempts: conflicts.saturating_add(1),
                    });
                }
                fetched = fresh;
                continue;
            }
            let mut state = self.lock().await;
            if state.epoch != epoch {
                // Another handle rotated or ended the session while this
                // update waited for the turn: it starts over on what the
                // request holds now.
                drop(state);
                drop(turn);
                return Box::pin(self.update(key, f)).await;
            }
            if state.ended || state.owner_dirty || state.lifetime_dirty {
                // Rare cases the gathering does not carry: the plain path.
                drop(state);
                drop(turn);
                return Box::pin(self.update_alone(key, f)).await;
            }
            // With no gathering under way, this update starts one on the
            // freshest copy of the record; the request's own copy serves
            // unless a conflict showed it stale (and never without retries,
            // where a stale copy would fail at once).
            let base = if turn.gathering.is_none() {
                let reuse_read = conflicts == 0 && retries > 0;
                // Whether what the load read is as new as what this process
                // saved through the turn since.
                let fresh = fresh.map(|r| {
                    let current = turn.load_is_current(rid, r.version, saves_seen);
                    (*r, current)
                });
                match self.latest(&mut turn, &mut state, rid, reuse_read, fresh) {
                    Latest::Found(record) => Some(record),
                    Latest::Missing => {
                        drop(state);
                        drop(turn);
                        return Box::pin(self.update_alone(key, f)).await;
                    }
                    Latest::Load => {
                        drop(state);
                        saves_seen = turn.saves();
                        load_first = true;
                        if loaded_outside {
                            held = Some(turn);
                        } else {
                            loaded_outside = true;
                            drop(turn);
                        }
                        continue;
                    }
                }
            } else {
                None
            };
            // In a function of its own, so that the records it moves and
            // borrows take no room in this future's state across the save.
            let (new, own, sent) = self.gather(&mut turn, &mut state, rid, base, key, &mut f)?;
            drop(state);
            // Its own gathering is saved now, holding the turn. (`own` moves
            // whole into the future, which is awaited in place: taken apart
            // by a `match`, it would keep room in this future's state.)
            let saved = OptionFuture::from(
                own.map(|gathering| batch::write(self.manager(), &mut turn, gathering)),
            )
            .await;
            let outcome = match saved {
                Some(outcome) => {
                    drop(turn);
                    outcome
                }
                None => {
                    let Some(gathering) = turn.gathering.as_mut() else {
                        unreachable!("the turn's gathering waits for its saver");
                    };
                    let rx = gathering.subscribe();
                    drop(turn);
                    let limit = self.gathered_save_limit();
                    batch::outcome(rx, limit)
                        .await
                        .unwrap_or_else(|| Outcome::Failed(batch::Failure::timed_out(limit)))
                }
            };
            match outcome {
                Outcome::Saved(record) => {
                    let mut state = self.lock().await;
                    // Rotated or ended through another handle meanwhile: the
                    // write is in the old record (a rotation carried it over,
                    // an end took it along), which is no longer this
                    // request's copy.
                    if state.epoch == epoch {
                        self.adopt_saved(&mut state, &record, sent);
                    }
                    return Ok(new);
                }
                Outcome::Conflict => {
                    conflicts += 1;
                    if conflicts > retries {
                        return Err(Error::Contention {
                            attempts: retries.saturating_add(1),
                        });
                    }
                }
                Outcome::Unsaved => {}
                Outcome::Ended => {
                    let mut state = self.lock().await;
                    // Another handle of the request may have started a new
                    // session meanwhile (as below): the update goes there.
                    let same = state.epoch == epoch
                        && (state.stored.as_ref()).is_none_or(|s| s.rid == rid);
                    if same && !state.loaded && !loaded_outside {
                        // Saved from a copy this process kept (or another
                        // request's gathering), never seen live by this
                        // request: it finds no session, as its own load
                        // would have, and starts a new one.
                        drop(state);
                        return Box::pin(self.update_alone(key, f)).await;
                    }
                    if same {
                        state.end();
                    } else if !state.ended {
                        // Another handle rotated the session (or ended it
                        // and wrote to a fresh one, or started one as above)
                        // while this update waited,
                        // and the old record was gone before the save:
                        // nothing was written, so the update goes to the
                        // record the request holds now.
                        drop(state);
                        return Box::pin(self.update(key, f)).await;
                    }
                    return Err(Error::Ended);
                }
                Outcome::Failed(failure) => {
                    // The save may have landed with the request's earlier
                    // changes in it: the commit must not write them again
                    // over what others wrote since.
                    let mut state = self.lock().await;
                    if state.epoch == epoch {
                        // Only the request's earlier changes, not this
                        // update's value, are in its copy.
                        state.unsure |= state.log.drop_until(sent);
                    }
                    return Err(failure.to_error());
                }
            }
        }
    }

    /// How long an update waits for a gathered save (its own, or another
    /// record's that holds the turn): twice the store timeout, which the
    /// saver's store call takes at most, so as to leave room for its wait for
    /// the turn.
    fn gathered_save_limit(&self) -> Duration {
        self.manager().inner.config.store_timeout.saturating_mul(2)
    }

    /// The synchronous middle of [`Session::update`]: applies `f` to the
    /// value the request sees (its own pending writes over `base`, or over
    /// the gathering under way), then puts the request's changes and the new
    /// value into a gathering: one of its own, returned, when the record
    /// saves at once, else the turn's, opened on `base` if none is under way.
    /// Returns the new value, that gathering, and the log's position past the
    /// request's changes that went into it.
    ///
    /// Decoding, `f` and encoding run before any gathering opens, so one that
    /// fails (or panics) leaves nothing for a saver to write.
    fn gather<T, F>(
        &self,
        turn: &mut Turn,
        state: &mut State,
        rid: RecordId,
        base: Option<Record>,
        key: &str,
        f: &mut F,
    ) -> Result<(T, Option<Gathering>, u64)>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        // The request's own pending writes come first: `f` sees the value
        // they leave.
        let current = {
            let (record, joined) = match (&base, &turn.gathering) {
                (Some(base), _) => (base, None),
                (None, Some(gathering)) => (&gathering.record, Some(gathering)),
                (None, None) => unreachable!("no gathering, so the caller found a base"),
            };
            let changes = state.log.unsent_in(record.version, joined);
            pending_value(&record.data, changes, key)
                .map(|b| self.decode::<T>(key, b))
                .transpose()?
        };
        let new = f(current);
        let bytes = self.encode(key, &new)?;
        // The gathering this update saves itself, now, when the store does
        // not gather or the record had nobody to gather with lately; else it
        // opens the turn's gathering, or joins the one under way. One that
        // carries the request's earlier changes leaves the save to a saver
        // task, which the request's other handles may wait for.
        let mut own = None;
        if let Some(base) = base {
            let carries = !state.log.changes.is_empty();
            if !carries && (!self.manager().inner.group_commit || turn.save_at_once(rid)) {
                own = Some(Gathering::new(base));
            } else {
                turn.gathering = Some(Gathering::open(self.manager(), base));
            }
        }
        let Some(gathering) = own.as_mut().or(turn.gathering.as_mut()) else {
            unreachable!("a gathering was just opened");
        };
        let changes = state
            .log
            .unsent_in(gathering.record.version, Some(gathering));
        for change in changes {
            apply(&mut gathering.record.data, change);
        }
        set(&mut gathering.record.data, key, bytes);
        if !state.log.changes.is_empty() {
            state.log.carried(gathering.landing());
        }
        Ok((new, own, state.log.end()))
    }

    /// Waits for a record's turn, held by another update (of this record
    /// or of one sharing the turn) in a store call, at most the store
    /// timeout: each holder's call is bounded by it, but the updates queued
    /// before this one (many requests on one record, or on records that
    /// share its turn) are not. Then [`Error::Contention`] (`attempts`, this
    /// update's attempts so far), with nothing written.
    async fn wait_for_turn<'t>(
        &self,
        lock: &'t tokio::sync::Mutex<Turn>,
        attempts: u32,
    ) -> Result<tokio::sync::MutexGuard<'t, Turn>> {
        let after = self.manager().inner.config.store_timeout;
        crate::deadline::within(after, lock.lock())
            .await
            .map_err(|_| {
                tracing::warn!(
                    ?after,
                    "an update waited for its session's turn longer than the store timeout"
                );
                Error::Contention { attempts }
            })
    }

    /// The freshest copy of record `rid` this process has, if still live:
    /// the one it saved last, `fresh` (loaded on this update's pass before,
    /// and whether it is known to be as new as what this process saved) or,
    /// if `may_reuse_read`, the one this request read, whichever is newest.
    /// [`Latest::Missing`] if the request already found no session,
    /// [`Latest::Load`] if there is no copy to start from. After a conflict
    /// the request's copy is known to be stale.
    fn latest(
        &self,
        turn: &mut Turn,
        state: &mut State,
        rid: RecordId,
        may_reuse_read: bool,
        fresh: Option<(Record, bool)>,
    ) -> Latest {
        let now = *state.now.get_or_insert_with(|| self.manager().now());
        if may_reuse_read && state.loaded && state.stored.is_none() {
            // This request already found no session under the client's id.
            return Latest::Missing;
        }
        // The copy this request read. Its data already has the request's
        // pending changes, which the gathering applies again: each sets,
        // removes or clears, so applying the log twice leaves what once does.
        let read = state
            .stored
            .as_ref()
            .filter(|s| may_reuse_read && state.loaded && s.rid == rid)
            .map(|s| s.version);
        let fresh = fresh.filter(|(r, _)| r.id == rid && self.is_live(r, now));
        let newest_copy = read.max(fresh.as_ref().map(|(r, _)| r.version));
        // Taken, not copied: the gathering it becomes is the newest copy
        // now, and its save puts the result back. Never without retries:
        // another process may have saved since, and the first conflict
        // would be final.
        let retries = self.manager().inner.config.conflict_retries;
        // While a failed save's changes show only in the request's copy
        // (`unsure`), the kept copy of that same version lacks them: only a
        // newer one may stand in for it.
        let own_copy_is_ahead = state.unsure && read.is_some();
        if let Some(last) = turn.last.take_if(|r| {
            retries > 0
                && r.id == rid
                && self.is_live(r, now)
                && newest_copy
                    .is_none_or(|v| r.version > v || (r.version == v && !own_copy_is_ahead))
        }) {
            return Latest::Found(Arc::unwrap_or_clone(last));
        }
        // The load, unless another handle of the request read a newer copy
        // meanwhile. One that a save of this process may have overtaken, or
        // older than what the request saved meanwhile, is not trusted: the
        // caller loads again, holding the turn.
        if let Some((record, current)) = fresh.filter(|(r, _)| read.is_none_or(|v| r.version >= v))
        {
            let known = (state.stored.as_ref())
                .filter(|s| state.loaded && s.rid == rid)
                .map(|s| s.version);
            if current && known.is_none_or(|v| record.version >= v) {
                if state.unsure && known == Some(record.version) {
                    // The failed save did not land (the store still holds
                    // the version it was sent over): the request's copy
                    // shows what it carried, which the loaded record lacks.
                    let mut record = record;
                    record.data = state.data.clone();
                    record.owner = state.owner.clone();
                    record.lifetime = state.lifetime;
                    return Latest::Found(record);
                }
                return Latest::Found(record);
            }
            return Latest::Load;
        }
        if read.is_some() {
            if let Some(copy) = Self::saved_copy(state).filter(|r| self.is_live(r, now)) {
                return Latest::Found(copy);
            }
        }
        Latest::Load
    }

    /// Loads record `rid` for an update that holds no copy of it: the
    /// record if live. (If another handle of the request rotated or ended
    /// the session meanwhile, the update's next pass starts over; on `None`
    /// the plain path works on what the request holds now.)
    async fn load_to_update(&self, rid: RecordId) -> Result<Option<Box<Record>>> {
        let manager = self.manager();
        let found = manager.call("load", manager.inner.store.load(&rid)).await?;
        let mut state = self.lock().await;
        let live = self.live_now(&mut state, found, rid);
        if !state.loaded {
            observe::loaded(&rid, live.is_some());
            if live.is_none() {
                // The client's id names no live session.
                state.loaded = true;
            }
        }
        Ok(live.map(Box::new))
    }

    /// Takes the record a gathered save wrote as this request's copy, unless
    /// the request holds a newer one (loaded after that save, so with it);
    /// the log's changes before position `sent` went into it, later ones
    /// (made meanwhile through another handle) stay pending.
    fn adopt_saved(&self, state: &mut State, record: &Record, sent: u64) {
        state.log.drop_until(sent);
        if state
            .stored
            .as_ref()
            .is_some_and(|s| s.rid != record.id || s.version >= record.version)
        {
            return;
        }
        let config = &self.manager().inner.config;
        let Some(id) = (match &state.stored {
            Some(s) => Some(s.id.clone()),
            None => state.incoming.id(config).cloned(),
        }) else {
            return;
        };
        let previous = state.stored.as_ref().map(|s| s.expires_at);
        let log = std::mem::take(&mut state.log);
        // An owner or lifetime set meanwhile through another handle is not
        // in the saved record: it stays pending, as the log's later changes.
        let owner = state.owner_dirty.then(|| state.owner.take());
        let lifetime = state.lifetime_dirty.then_some(state.lifetime);
        Self::adopt(state, id, record.clone());
        for change in log.unsent(record.version) {
            apply(&mut state.data, change);
        }
        state.log = log;
        if let Some(owner) = owner {
            state.owner = owner;
        }
        if let Some(lifetime) = lifetime {
            state.lifetime = lifetime;
        }
        let lifetime = self.lifetime_of(state);
        let interval = self.manager().touch_interval(&lifetime);
        let moved = previous.is_none_or(|before| moved_by(before, record.expires_at, interval));
        if moved && lifetime.persistent_cookie() {
            state.refresh_cookie = true;
        }
    }

    /// [`Session::update`] for a session the gathering does not carry: new,
    /// ended, or with a pending owner or lifetime change.
    async fn update_alone<T, F>(&self, key: &str, mut f: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        let mut state = self.loaded().await?;
        let retries = self.manager().inner.config.conflict_retries;
        for attempt in 0..=retries {
            let current = state
                .data
                .get(key)
                .map(|b| self.decode::<T>(key, b))
                .transpose()?;
            let new = f(current);
            let bytes = self.encode(key, &new)?;
            let before = state.data.get(key).cloned();
            Self::push(&mut state, Change::Set(key.to_owned(), bytes));
            match self.try_commit(&mut state).await {
                Ok(Commit::Done) => return Ok(new),
                Ok(Commit::Ended) => return Err(Error::Ended),
                Ok(Commit::Conflict) => {
                    // Drop this attempt's write (also from the data, should
                    // the reload fail); the fresh record decides.
                    state.log.changes.pop();
                    restore(&mut state.data, key, before);
                    self.reload(&mut state, attempt).await?;
                    if state.stored.is_none() {
                        return Err(Error::Ended);
                    }
                }
                Err(e) => {
                    // Not acknowledged, so not kept either: the request's
                    // commit must not write a value computed from a copy
                    // that may be stale by then. (A failed save has dropped
                    // the whole log already; a failed create leaves it, but
                    // for this write.)
                    state.log.changes.pop();
                    restore(&mut state.data, key, before);
                    return Err(e);
                }
            }
        }
        Err(Error::Contention {
            attempts: retries.saturating_add(1),
        })
    }

    /// Adds `by` to the integer under `key` (missing counts as 0) and returns
    /// the new value (Iris's `Increment`); concurrency-safe like
    /// [`Session::update`]. The sum saturates at `i64::MAX` and `i64::MIN`
    /// rather than wrapping.
    ///
    /// # Errors
    /// As [`Session::update`].
    pub async fn increment(&self, key: &str, by: i64) -> Result<i64> {
        self.update(key, |n: Option<i64>| n.unwrap_or(0).saturating_add(by))
            .await
    }

    /// Subtracts `by` from the integer under `key` (Iris's `Decrement`),
    /// saturating as [`Session::increment`] does.
    ///
    /// # Errors
    /// As [`Session::update`].
    pub async fn decrement(&self, key: &str, by: i64) -> Result<i64> {
        self.update(key, |n: Option<i64>| n.unwrap_or(0).saturating_sub(by))
            .await
    }

    /// Overrides the configured timeouts for this session ("remember me").
    /// The override is stored with the session and holds on later requests;
    /// `None` returns to the configured lifetime.
    ///
    /// ```
    /// # async fn handler(session: session_core::Session) -> session_core::Result<()> {
    /// use std::time::Duration;
    /// use session_core::Lifetime;
    ///
    /// // "Remember me": 30 days idle, 90 at most, a cookie that outlives the
    /// // browser. Both timeouts are set: the idle one alone would leave no
    /// // absolute limit, and starting from `session.lifetime()` would keep the
    /// // configured absolute one (24 hours by default), which 30 days idle
    /// // exceeds (refused).
    /// let day = Duration::from_secs(24 * 3600);
    /// session
    ///     .set_lifetime(Some(
    ///         Lifetime::new()
    ///             .with_idle_timeout(Some(30 * day))
    ///             .with_absolute_timeout(Some(90 * day))
    ///             .with_persistent_cookie(true),
    ///     ))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// An idle timeout shorter than twice the configured touch interval
    /// shortens this session's touch interval to half its idle timeout, so a
    /// session used at least that often never expires in use.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a lifetime without any timeout, with one
    /// shorter than a second or longer than 400 days, or with an idle
    /// timeout of its own longer than its absolute one (which would never
    /// take effect: a lifetime made from the configured one keeps its
    /// absolute timeout), or a store error on first use.
    #[doc(alias = "set_expiry")]
    pub async fn set_lifetime(&self, lifetime: Option<Lifetime>) -> Result<()> {
        if let Some(l) = &lifetime {
            validate_lifetime(l).map_err(Error::Invalid)?;
            // As for the configuration: an idle timeout it did not set (the
            // configured one, carried over) is not held against it.
            if l.idle_timeout() != self.manager().inner.config.lifetime.idle_timeout() {
                idle_within_absolute(l).map_err(Error::Invalid)?;
            }
        }
        let mut state = self.loaded().await?;
        state.lifetime = lifetime;
        state.lifetime_dirty = true;
        Ok(())
    }

    /// The lifetime this session follows: the one [`set_lifetime`](Self::set_lifetime)
    /// gave it (in this request or an earlier one), else the configured one.
    /// Tells, say, whether "remember me" is on
    /// ([`Lifetime::persistent_cookie`]).
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
    /// use std::time::Duration;
    /// use session_core::{Config, Manager};
    ///
    /// let manager = Manager::new(MyStore, Config::default());
    /// let session = manager.session_from_cookies(std::iter::empty());
    /// assert!(!session.lifetime().await?.persistent_cookie());
    /// let remember_me = manager
    ///     .config()
    ///     .lifetime()
    ///     .with_idle_timeout(Some(Duration::from_secs(30 * 86_400)))
    ///     .with_absolute_timeout(Some(Duration::from_secs(90 * 86_400)))
    ///     .with_persistent_cookie(true);
    /// session.set_lifetime(Some(remember_me)).await?;
    /// assert_eq!(session.lifetime().await?, remember_me);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A store error on first use.
    #[doc(alias = "expiry")]
    pub async fn lifetime(&self) -> Result<Lifetime> {
        let state = self.loaded().await?;
        Ok(self.lifetime_of(&state))
    }

    /// Gives the session a new id, keeping its data, owner and creation time.
    /// Call it whenever privileges change. The old record is first loaded
    /// again and this request's changes applied to it in memory (nothing is
    /// ever written to the old id, which an attacker may hold), so the new
    /// record starts from the latest state; then the new record is written,
    /// and the old one is retired only after that (expired by a touch that
    /// checks its version, so that a write landing meanwhile is carried over
    /// too, then deleted), so a failure leaves the old session intact: when
    /// the old record cannot be retired (other than by a timeout, after
    /// which the retiring touch may still land) and a load still finds it
    /// live, the
    /// new one is deleted again and the client keeps the old id, with this
    /// request's changes still pending on it (found gone, the old record was
    /// retired by a touch whose answer was lost, and the client gets the new
    /// id). A session another request ended meanwhile (or retired by a
    /// rotation of its own) stays ended: the cookie is removed, also when
    /// deleting the new record fails, and this is not an error. A session
    /// not yet stored needs no rotation (it will get a fresh id when stored)
    /// and this does nothing.
    ///
    /// ```
    /// # async fn handler(session: session_core::Session) -> session_core::Result<()> {
    /// // After a change of privileges (a password change, a role granted):
    /// // a new id for the same session; the old id stops working.
    /// session.insert("role", "admin").await?;
    /// session.cycle_id().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// The rotation runs in a task of its own, to the end, even if the
    /// future this returns is dropped midway (a handler's timeout): stopped
    /// between writing the new record and retiring the old one, it would
    /// leave the request on the new id while other requests go on writing
    /// to the old one. So a rotation the handler gave up on may still
    /// succeed, and the response then carries the new id.
    ///
    /// # Errors
    /// [`Error::Random`] when the OS cannot supply the new id,
    /// [`Error::Ended`] when the new session was ended during the rotation
    /// (its owner logged out everywhere), [`Error::Contention`] when the old
    /// id is written too often to retire it, or a store error or timeout.
    /// After an error the client keeps the old id with the request's changes
    /// when the old record is still live (unless the error was a timeout of
    /// the retiring touch, which may land yet: the client then gets the new
    /// id); if the old record is found gone
    /// after a failed retirement (the retiring touch may have landed
    /// unanswered, or another request destroyed the session), the session
    /// ends, since a destroyed session must not come back.
    ///
    /// # Panics
    /// Outside a Tokio runtime (the task is spawned with `tokio::spawn`), or
    /// if the store panics.
    #[doc(alias = "renew")]
    pub async fn cycle_id(&self) -> Result<()> {
        self.rotate_to_the_end(Owner::Keep).await
    }

    /// Runs a rotation ([`Session::rotation`]) in a task of its own, so that
    /// dropping the caller does not stop it midway. Until the task has
    /// locked the state, every other lock waits for it: a commit made as
    /// soon as the caller is dropped still gives the client the new id.
    async fn rotate_to_the_end(&self, owner: Owner) -> Result<()> {
        let op = match owner {
            Owner::Keep => "cycle_id",
            Owner::Login(_) => "login",
            Owner::Logout => "logout",
        };
        self.shared.used.store(true, Ordering::Release);
        self.shared
            .rotations_starting
            .fetch_add(1, Ordering::SeqCst);
        let starting = StartingRotation(Arc::clone(&self.shared));
        let session = self.clone();
        let rotation = async move {
            let state = session.lock_now().await;
            drop(starting);
            session.rotation(state, owner).await
        };
        match tokio::spawn(rotation.instrument(tracing::Span::current())).await {
            Ok(rotated) => rotated,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(Error::Store {
                op,
                source: crate::StoreError::new(
                    crate::StoreErrorKind::Unavailable,
                    "the task rotating the session id stopped (its runtime shut down)",
                ),
            }),
        }
    }

    /// [`cycle_id`](Self::cycle_id), [`login`](Self::login) or
    /// [`logout`](Self::logout), as `owner` says, on the locked `state`.
    async fn rotation(&self, mut state: MutexGuard<'_, State>, owner: Owner) -> Result<()> {
        if !state.loaded {
            self.load(&mut state).await?;
        }
        match owner {
            Owner::Keep if state.stored.is_none() => Ok(()),
            Owner::Keep | Owner::Login(_) => self.rotate(&mut state, owner).await,
            Owner::Logout => {
                let Some(signed_in) = state.stored.as_ref().map(|s| s.rid) else {
                    return Ok(());
                };
                if state.owner.is_none() {
                    return Ok(());
                }
                let rotated = self.rotate(&mut state, Owner::Logout).await;
                if rotated.is_err() && state.stored.as_ref().is_some_and(|s| s.rid != signed_in) {
                    // The signed-out record exists, and the client gets its
                    // id, but the signed-in one may not have been retired:
                    // the old id must not stay signed in, so it goes without
                    // the version check.
                    if let Err(error) = self.manager().destroy_record(&signed_in).await {
                        tracing::warn!(%error, old = %signed_in.short(), "logged out under a new id, but the signed-in record could not be deleted; it expires on its own");
                    }
                }
                rotated
            }
        }
    }

    /// Logs the session in as `owner`: sets the owner and rotates the id in one
    /// step (no session fixation), and restarts the absolute timeout. Over
    /// another owner's session (a shared computer, a second account), the
    /// new session keeps none of that owner's values, flashes included, nor
    /// a lifetime stored for that owner ("remember me"): what this request
    /// wrote before the login with deferred writes still pending (`insert`,
    /// `remove`, `set_lifetime`, ... not yet saved by an `increment`,
    /// `update` or `save`, which wrote them to the other owner's session) is
    /// this owner's and stays, as does all it writes after. Over a session
    /// another owner signed out of ([`logout`](Self::logout)), the values
    /// that owner left go and those written since stay. Over a session
    /// without an owner (a visitor's cart) or the same owner's, signed in or
    /// signed out, every value stays. The session is stored at once. When another request ended the session
    /// (or a login of its own retired it: a login form submitted twice)
    /// before this one could retire it, the login goes on with a fresh
    /// session holding only this request's own writes. As
    /// [`cycle_id`](Self::cycle_id), it runs to the end even if the future
    /// it returns is dropped midway.
    ///
    /// ```
    /// # async fn handler(session: session_core::Session) -> session_core::Result<()> {
    /// // Once the password checked out:
    /// session.login("alice").await?;
    /// assert_eq!(session.owner().await?.as_deref(), Some("alice"));
    /// # Ok(()) }
    /// ```
    ///
    /// Another request of the same client that writes to the session (or
    /// extends its idle deadline) while the login retires the old id finds
    /// its session gone, writes nothing, and answers with the cookie's
    /// removal, as for a session destroyed meanwhile: if the browser handles
    /// that answer after the login's, it drops the new cookie and the user
    /// is signed out again. Keep requests that write to the session from
    /// running alongside the login (a login page that sends no background
    /// requests which write to the session).
    ///
    /// # Errors
    /// [`Error::Invalid`] for an empty owner, one over [`MAX_OWNER_LEN`]
    /// bytes or one with a NUL character, [`Error::Random`] when the OS cannot supply
    /// the new id, [`Error::Ended`] when the new session was ended during
    /// the login (its owner logged out everywhere), [`Error::Contention`] as
    /// for [`Session::cycle_id`], or a store error or timeout. After an
    /// error, as for [`Session::cycle_id`]; where `cycle_id` would end the
    /// session, a login goes on with a fresh one holding only its own
    /// writes, signed in.
    ///
    /// # Panics
    /// As [`Session::cycle_id`].
    pub async fn login(&self, owner: &str) -> Result<()> {
        if !is_valid_owner(owner) {
            return Err(Error::Invalid(format!(
                "owner must be 1 to {MAX_OWNER_LEN} bytes long, without NUL"
            )));
        }
        self.rotate_to_the_end(Owner::Login(owner.to_owned())).await
    }

    /// Logs the session out and keeps it: drops the owner and rotates the id
    /// in one step, keeping the data (a cart, a language); the lifetime
    /// returns to the configured one (a "remember me" ends with the login)
    /// and the absolute timeout restarts, as for a new session (kept, an
    /// absolute timeout that a "remember me" had lengthened could already be
    /// over under the configured one). The session no longer counts among the owner's
    /// (a devices page, [`Manager::destroy_all_of`]). Keys the app keeps
    /// about the user are its own to remove. The session remembers, out of
    /// sight, who signed out and what it held then: a later
    /// [`login`](Self::login) of another owner removes those values and flash
    /// values still as they were (someone else at the same browser must not
    /// get them) and keeps what was written since (the next visitor's cart,
    /// a page to return to after the login); the same owner signing back in
    /// keeps everything. Until someone logs in, the values stay readable in
    /// the session, as before the logout. A session without an owner is
    /// left as it is. To end the session and its data instead (what most
    /// logouts do), [`destroy`](Self::destroy) it.
    ///
    /// ```
    /// # async fn handler(session: session_core::Session) -> session_core::Result<()> {
    /// // Signed out, the cart kept: the app's own user keys go with it.
    /// session.remove("user_id").await?;
    /// session.logout().await?;
    /// assert_eq!(session.owner().await?, None);
    /// # Ok(()) }
    /// ```
    ///
    /// If the old record cannot be retired after the new one was written,
    /// deleting it outright is tried before the error is returned, so the
    /// old id does not stay signed in (a write another request made to the
    /// old id meanwhile is then lost); if the store cannot delete it either,
    /// it expires on its own. As [`cycle_id`](Self::cycle_id), it runs to
    /// the end even if the future it returns is dropped midway.
    ///
    /// # Errors
    /// [`Error::Random`] when the OS cannot supply the new id,
    /// [`Error::Contention`] as for [`Session::cycle_id`], or a store error
    /// or timeout.
    ///
    /// # Panics
    /// As [`Session::cycle_id`].
    pub async fn logout(&self) -> Result<()> {
        self.rotate_to_the_end(Owner::Logout).await
    }

    /// Ends the session (Iris's `Destroy`): deletes it from the store and has
    /// the cookie removed. Values written afterwards in the same request start
    /// a new session with a new id.
    ///
    /// ```
    /// # async fn handler(session: session_core::Session) -> session_core::Result<()> {
    /// // What most "log out" buttons do: everything goes.
    /// session.destroy().await?;
    /// assert!(session.is_empty().await?);
    /// # Ok(()) }
    /// ```
    ///
    /// It ends the session under the id this request presented. A request of
    /// the same client that moved the session to a new id (a
    /// [`login`](Self::login) or [`cycle_id`](Self::cycle_id) that finished
    /// first) leaves that id retired, and this destroy ends nothing more:
    /// the session goes on under the new id, which that other response gives
    /// the browser. To sign a user out whatever their requests in flight,
    /// use [`Manager::destroy_all_of`](crate::Manager::destroy_all_of).
    ///
    /// # Errors
    /// A store error or timeout; the session is then left as it was.
    #[doc(alias("flush", "purge"))]
    pub async fn destroy(&self) -> Result<()> {
        let mut state = self.lock().await;
        self.settle_candidates(&mut state).await?;
        let rid = match (&state.stored, state.loaded) {
            (Some(s), _) => Some(s.rid),
            (None, false) => state
                .incoming
                .id(&self.manager().inner.config)
                .map(Id::record_id),
            (None, true) => None,
        };
        if let Some(rid) = rid {
            let manager = self.manager();
            manager
                .call("delete", manager.inner.store.delete(&rid))
                .await?;
            manager.forget_kept_copy(&rid);
            observe::destroyed(&rid);
        }
        state.loaded = true;
        state.end();
        Ok(())
    }

    /// Saves pending changes now instead of at the end of the request (what
    /// tower-sessions calls `save`; its `flush`, which deletes the session, is
    /// [`destroy`](Self::destroy) here).
    ///
    /// ```
    /// # async fn handler(session: session_core::Session) -> session_core::Result<()> {
    /// // Stored before a slow step that follows, not only after the handler.
    /// session.insert("step", 2).await?;
    /// session.save().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// When it fails with a store error or timeout, or is dropped during its
    /// store call, the changes may or may not have been written; they leave
    /// the request's change log, so that the commit, should it find a newer
    /// record, does not apply them again over what other requests wrote
    /// since.
    ///
    /// # Errors
    /// [`Error::Contention`], [`Error::Ended`], [`Error::Random`] when the OS
    /// cannot supply an id for a new session, or a store error or timeout.
    pub async fn save(&self) -> Result<()> {
        let mut state = self.lock().await;
        if !state.loaded {
            return Ok(());
        }
        match self.save_locked(&mut state).await? {
            true => Ok(()),
            false => Err(Error::Ended),
        }
    }

    /// *For adapters: handlers never call it.* Ends the request: saves what
    /// changed (one conditional write, plus a
    /// reload and a retry for each compare-and-set lost to a concurrent
    /// writer, up to [`Config::conflict_retries`](crate::Config::conflict_retries)), or extends
    /// the idle deadline when due (one cheap touch), or does nothing at all;
    /// then says what the response must tell the client. Adapters call this
    /// (or [`commit_after`](Self::commit_after), which calls it) once, after
    /// the handler, whatever the response status.
    ///
    /// # Errors
    /// [`Error::Contention`], [`Error::Random`] when the OS cannot supply an
    /// id for a new session, or a store error or timeout: the adapter answers
    /// 5xx.
    pub async fn commit(&self) -> Result<SetCookie> {
        if let Some(outcome) = self.commit_without_store() {
            return Ok(outcome);
        }
        let mut state = self.lock().await;
        if self.shared.abandoned.load(Ordering::Acquire) {
            return Ok(self.abandoned_outcome(&mut state));
        }
        if state.loaded {
            if self.needs_write(&state) {
                self.save_locked(&mut state).await?;
            } else {
                self.touch_if_due(&mut state).await?;
            }
        }
        self.shared.committed.store(true, Ordering::Release);
        Ok(self.outcome(&mut state))
    }

    /// *For adapters.* [`commit`](Self::commit) without waiting, when it
    /// needs no store call:
    /// the request never used the session, only read it (nothing changed and
    /// no idle-deadline refresh is due), or already wrote everything (a
    /// [`save`](Self::save), [`login`](Self::login) or update, which
    /// commit a new session as `Set`) or destroyed it (`Remove`). `None` when
    /// the commit must write, or another clone of the session is in the
    /// middle of a call; then await [`commit`](Self::commit). After the
    /// handler panicked with its handle ([`for_handler`](Self::for_handler)),
    /// what [`failed_commit_outcome`](Self::failed_commit_outcome) says,
    /// writing nothing.
    ///
    /// Adapters call this first so that most requests finish without boxing
    /// a future.
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
    /// use session_core::{Config, Manager, SetCookie};
    ///
    /// let manager = Manager::new(MyStore, Config::default());
    /// let session = manager.session_from_cookies(std::iter::empty());
    /// assert_eq!(session.commit_without_store(), Some(SetCookie::Unchanged));
    ///
    /// session.insert("name", "iris").await?;
    /// assert_eq!(session.commit_without_store(), None); // a new session must be created
    /// assert!(matches!(session.commit().await?, SetCookie::Set { .. }));
    /// # Ok(())
    /// # }
    /// ```
    pub fn commit_without_store(&self) -> Option<SetCookie> {
        let outcome = self.answer_without_store();
        if outcome.is_some() {
            self.shared.committed.store(true, Ordering::Release);
        }
        outcome
    }

    /// [`commit_without_store`](Self::commit_without_store)'s answer.
    fn answer_without_store(&self) -> Option<SetCookie> {
        if !self.shared.used.load(Ordering::Acquire) {
            return Some(SetCookie::Unchanged);
        }
        if self.shared.rotations_starting.load(Ordering::SeqCst) > 0 {
            // A rotation about to lock the state: `commit` waits for it.
            return None;
        }
        if self.shared.abandoned.load(Ordering::Acquire) {
            // Busy elsewhere (a task with a clone): `commit` waits for it.
            let mut state = self.shared.state.try_lock()?;
            return Some(self.abandoned_outcome(&mut state));
        }
        let mut state = self.shared.state.try_lock()?;
        if state.loaded && (self.needs_write(&state) || self.touch_due(&state).is_some()) {
            return None;
        }
        Some(self.outcome(&mut state))
    }

    /// *For adapters.* What the response must still tell the client after
    /// [`commit`](Self::commit) failed: the new id when this request already
    /// stored the session under one ([`login`](Self::login),
    /// [`cycle_id`](Self::cycle_id), or a new session's first
    /// [`update`](Self::update) or [`increment`](Self::increment), which
    /// write at once), the cookie's removal when it ended the session, and
    /// otherwise nothing. Without it, a client whose login succeeded but
    /// whose later deferred write failed would keep the id `login` retired.
    ///
    /// Adapters add these headers to the error they answer a failed commit
    /// with (its [`Error::http_status`]). Only the writes that failed are lost: the store holds what the
    /// new id points to.
    ///
    /// ```
    /// use session_core::{HeaderUpdate, Session};
    ///
    /// // An adapter's end of a request: the status and the session's headers.
    /// async fn finish(session: &Session, status: u16) -> (u16, Vec<HeaderUpdate>) {
    ///     let (status, outcome) = match session.commit().await {
    ///         Ok(outcome) => (status, outcome),
    ///         Err(e) => (e.http_status(), session.failed_commit_outcome()),
    ///     };
    ///     (status, session.manager().response_headers(&outcome, |_| None))
    /// }
    /// ```
    pub fn failed_commit_outcome(&self) -> SetCookie {
        match self.shared.state.try_lock() {
            Some(mut state) => self.outcome(&mut state),
            // Only a task the handler spawned could hold it now; its own
            // outcome is unknown, so the response changes nothing.
            None => SetCookie::Unchanged,
        }
    }

    /// The commit of a session whose handler panicked: nothing is written,
    /// and the client learns only what the store already holds (the new id
    /// of a `login` before the panic, or the cookie's removal).
    fn abandoned_outcome(&self, state: &mut State) -> SetCookie {
        observe::abandoned();
        self.outcome(state)
    }

    fn needs_write(&self, state: &State) -> bool {
        state.needs_write()
    }

    fn outcome(&self, state: &mut State) -> SetCookie {
        let config = &self.manager().inner.config;
        match &state.stored {
            Some(s) if state.issued || state.refresh_cookie => {
                state.issued = false;
                state.refresh_cookie = false;
                // As stored: after a failed commit, a lifetime set in this
                // request was not saved, and the deadline is the old one's.
                let lifetime = s.lifetime.unwrap_or(config.lifetime);
                let max_age = lifetime
                    .persistent_cookie()
                    .then(|| s.expires_at.duration_since(self.manager().now()));
                SetCookie::Set {
                    value: transport::encode_value(config, &s.id),
                    max_age,
                }
            }
            None if state.ended && state.presented => {
                state.ended = false;
                SetCookie::Remove
            }
            _ => SetCookie::Unchanged,
        }
    }

    /// Saves until done; `false` when the session turned out to be ended.
    async fn save_locked(&self, state: &mut State) -> Result<bool> {
        if !self.needs_write(state) {
            return Ok(true);
        }
        let pending = !state.log.changes.is_empty() || state.owner_dirty || state.lifetime_dirty;
        if !pending {
            // Only the copy a failed save carried: written once. A conflict
            // says that save landed, or another request wrote since, which
            // the copy must not go over: the stored record is the request's.
            return match self.try_commit(state).await? {
                Commit::Done => Ok(true),
                Commit::Ended => Ok(false),
                Commit::Conflict => {
                    self.reload(state, 0).await?;
                    Ok(state.stored.is_some())
                }
            };
        }
        self.write_locked(state).await
    }

    /// Writes the session whether or not anything changed: a compare-and-set
    /// that, after a conflict, reloads and re-applies the request's changes.
    /// `false` if the session ended meanwhile.
    async fn write_locked(&self, state: &mut State) -> Result<bool> {
        let retries = self.manager().inner.config.conflict_retries;
        for attempt in 0..=retries {
            match self.try_commit(state).await? {
                Commit::Done => return Ok(true),
                Commit::Ended => return Ok(false),
                Commit::Conflict => {
                    self.reload(state, attempt).await?;
                    if state.stored.is_none() {
                        return Ok(false);
                    }
                }
            }
        }
        Err(Error::Contention {
            attempts: retries.saturating_add(1),
        })
    }

    /// One attempt to write the session: create it if new, else a
    /// compare-and-set save.
    async fn try_commit(&self, state: &mut State) -> Result<Commit> {
        let manager = self.manager();
        let now = manager.now();
        let lifetime = self.lifetime_of(state);
        let Some(stored) = &state.stored else {
            self.create(state, now, now).await?;
            return Ok(Commit::Done);
        };
        let expires_at = lifetime.deadline(stored.created_at, now);
        let (rid, created_at, expected) = (stored.rid, stored.created_at, stored.version);
        let (owner, stored_lifetime) = (state.owner.clone(), state.lifetime);
        let mut lent = Lent::new(&mut state.data, |data| Record {
            id: rid,
            data,
            created_at,
            expires_at,
            version: 0,
            owner,
            lifetime: stored_lifetime,
        });
        state.saving = true;
        let saved = manager.save(&mut lent.record, expected).await;
        state.saving = false;
        let (version, saved_lifetime) = (lent.record.version, lent.record.lifetime);
        drop(lent);
        let saved = match saved {
            Ok(saved) => saved,
            Err(e) => {
                // The save may have landed (a timeout, a connection lost
                // after sending): writing the same changes again later, over
                // what others wrote since, could undo their writes. The copy
                // keeps them: the commit writes it by compare-and-set on the
                // version it had, which fails if this save landed.
                state.unsure |= !state.log.changes.is_empty();
                state.log.clear();
                return Err(e);
            }
        };
        match saved {
            Saved::Saved => {
                observe::saved(&rid, version);
                let interval = manager.touch_interval(&lifetime);
                let moved = state
                    .stored
                    .as_ref()
                    .is_some_and(|s| moved_by(s.expires_at, expires_at, interval));
                if let Some(s) = state.stored.as_mut() {
                    s.version = version;
                    s.expires_at = expires_at;
                    s.lifetime = saved_lifetime;
                }
                if moved && lifetime.persistent_cookie() || state.lifetime_dirty {
                    state.refresh_cookie = true;
                }
                state.log.clear();
                state.owner_dirty = false;
                state.lifetime_dirty = false;
                state.unsure = false;
                // A save outside an update: refresh the copy the record's
                // turn keeps, unless an update holds the turn (it keeps its
                // own copy, and a stale one only costs a reload), or the
                // copy is newer already (an update saved through the turn
                // while this answer was on its way): it vouches for loads
                // (`Turn::load_is_current`), so it never moves back.
                if let Ok(mut turn) = manager.record_lock(&rid).try_lock() {
                    if (turn.last.as_ref()).is_some_and(|r| r.id == rid && r.version < version) {
                        turn.last = Self::saved_copy(state).map(Arc::new);
                    }
                }
                Ok(Commit::Done)
            }
            Saved::Conflict => {
                observe::conflict(&rid);
                Ok(Commit::Conflict)
            }
            Saved::Missing => {
                observe::ended(&rid);
                state.end();
                Ok(Commit::Ended)
            }
        }
    }

    /// After a conflict: load the fresh record and re-apply the change log on
    /// it, with a short random pause so racing writers spread out.
    async fn reload(&self, state: &mut State, attempt: u32) -> Result<()> {
        if attempt > 0 {
            backoff(attempt).await;
        }
        let manager = self.manager();
        let Some(stored) = &state.stored else {
            return Ok(());
        };
        let (rid, known) = (stored.rid, stored.version);
        let fresh = self.load_to_apply(&rid, &state.log).await?;
        let unsure = std::mem::take(&mut state.unsure);
        let now = manager.now();
        match fresh.filter(|r| r.id == rid && self.is_live(r, now)) {
            None => {
                observe::ended(&rid);
                state.end();
            }
            Some(record) if unsure && record.version == known => {
                // A failed save of the request's did not land (the store
                // still holds the version it was sent over): the request's
                // copy shows what it carried, which the record lacks, and
                // is still to be written.
                state.unsure = true;
                if let Some(s) = state.stored.as_mut() {
                    s.expires_at = record.expires_at;
                }
            }
            Some(record) => {
                // The copy is the store's now: nothing of a failed save to
                // write.
                let mut data = record.data;
                for change in state.log.unsent(record.version) {
                    apply(&mut data, change);
                }
                state.data = data;
                if !state.owner_dirty {
                    state.owner = record.owner;
                }
                if !state.lifetime_dirty {
                    state.lifetime = record.lifetime;
                }
                if let Some(s) = state.stored.as_mut() {
                    s.version = record.version;
                    s.expires_at = record.expires_at;
                    s.lifetime = record.lifetime;
                }
            }
        }
        Ok(())
    }

    /// Loads record `rid` to apply `log` on, once every save that carried
    /// some of the log's changes and may be in what the load found is
    /// decided ([`Log::settled`]): its update may not have taken the
    /// outcome yet, and only the decision says which changes the record
    /// holds. (An update holds the record's turn, which such a save holds
    /// while it writes, so it needs no wait.)
    async fn load_to_apply(&self, rid: &RecordId, log: &Log) -> Result<Option<Record>> {
        let manager = self.manager();
        let found = manager.call("load", manager.inner.store.load(rid)).await?;
        if log.in_flight() {
            Box::pin(log.settled()).await;
        }
        Ok(found)
    }

    /// Inserts the session under a fresh id (retrying if the store reports the
    /// id taken) with the current data, owner and lifetime.
    async fn create(&self, state: &mut State, created_at: Timestamp, now: Timestamp) -> Result<()> {
        let manager = self.manager();
        let lifetime = self.lifetime_of(state);
        let expires_at = lifetime.deadline(created_at, now);
        for _ in 0..CREATE_ATTEMPTS {
            let id = manager.new_id()?;
            let rid = id.record_id();
            let (owner, own_lifetime) = (state.owner.clone(), state.lifetime);
            let lent = Lent::new(&mut state.data, |data| Record {
                id: rid,
                data,
                created_at,
                expires_at,
                version: 0,
                owner,
                lifetime: own_lifetime,
            });
            let created = manager
                .call("create", manager.inner.store.create(&lent.record))
                .await;
            drop(lent);
            match created? {
                Created::Created => {
                    observe::created(&rid);
                    state.stored = Some(Stored {
                        id,
                        rid,
                        version: 0,
                        created_at,
                        expires_at,
                        lifetime: own_lifetime,
                    });
                    state.log.clear();
                    state.owner_dirty = false;
                    state.lifetime_dirty = false;
                    // The new record holds the copy, a failed save's
                    // changes included.
                    state.unsure = false;
                    state.issued = true;
                    state.ended = false;
                    return Ok(());
                }
                Created::IdTaken => {
                    tracing::warn!(id = %rid.short(), "store reported a fresh session id as taken; drawing another");
                }
            }
        }
        Err(Error::Store {
            op: "create",
            source: crate::StoreError::new(
                crate::StoreErrorKind::Rejected,
                format!("{CREATE_ATTEMPTS} fresh ids in a row were reported as taken"),
            ),
        })
    }

    /// Moves the session to a new id: create the new record, then delete the
    /// old one.
    async fn rotate(&self, state: &mut State, owner: Owner) -> Result<()> {
        let manager = self.manager();
        // The new record is made from this request's copy, so that copy must
        // be current: the old record is loaded again and the request's
        // changes re-applied to it, in memory. Nothing is written to the old
        // id, which the client (or whoever planted it) still holds. A write
        // another request made since this one loaded is carried over, and a
        // session that ended meanwhile does not come back under a new id.
        let mut log = state.log.clone();
        if state.stored.is_some() {
            // A lifetime this request set, which the end of the session
            // (found by the reload) forgets with the rest.
            let own_lifetime = state.lifetime_dirty.then_some(state.lifetime);
            self.reload(state, 0).await?;
            if state.stored.is_none() {
                if !matches!(owner, Owner::Login(_)) {
                    // Ended: nothing is left to give a new id.
                    return Ok(());
                }
                // A login goes on with a fresh session (below, as for a
                // session never stored) holding this request's own writes
                // and nothing of the ended one, its lifetime included.
                for change in log.changes.iter().cloned() {
                    Self::push(state, change);
                }
                if let Some(lifetime) = own_lifetime {
                    state.lifetime = lifetime;
                    state.lifetime_dirty = true;
                }
            }
        }
        let now = manager.now();
        let old = state.stored.as_ref().map(|s| (s.rid, s.created_at));
        let old_version = state.stored.as_ref().map_or(0, |s| s.version);
        let created_at = match (&owner, old) {
            (Owner::Keep, Some((_, created))) => created,
            _ => now,
        };
        let previous_owner = state.owner.clone();
        let kept = Kept::of(state);
        // An update of the old record waiting for its save (through another
        // handle) must not take its outcome as this request's copy.
        state.epoch += 1;
        // A logout that cannot retire the signed-in record does not undo:
        // `logout` deletes that record outright instead.
        let undo = !matches!(owner, Owner::Logout);
        let login = matches!(owner, Owner::Login(_));
        match owner {
            Owner::Keep => {}
            Owner::Login(owner) => {
                let another = previous_owner.as_ref().is_some_and(|p| *p != owner);
                // Signed out by another owner (`logout` leaves who, and what
                // the session held then): those values go, flash values
                // included, each only while it is still as it was then (a
                // take: a write since, of this request or another, stays).
                let signed_out = (state.data.get(SIGNED_OUT_KEY))
                    .filter(|_| previous_owner.is_none())
                    .map(|marker| SignedOut::parse(marker));
                if let Some(signed_out) = &signed_out {
                    let theirs: Vec<Change> = match signed_out {
                        Some(s) if s.owner == owner.as_bytes() => Vec::new(),
                        Some(s) => (state.data.iter())
                            .filter(|(k, v)| k.as_str() != SIGNED_OUT_KEY && s.unchanged(k, v))
                            .map(|(k, v)| Change::Take(k.clone(), v.clone()))
                            .collect(),
                        // Unreadable: everything as the other owner's.
                        None => (state.data.iter())
                            .filter(|(k, _)| k.as_str() != SIGNED_OUT_KEY)
                            .map(|(k, v)| Change::Take(k.clone(), v.clone()))
                            .collect(),
                    };
                    for change in theirs {
                        Self::push(state, change);
                    }
                    Self::push(state, Change::Remove(SIGNED_OUT_KEY.to_owned()));
                    log = state.log.clone();
                }
                if another {
                    // Another owner's session (a shared computer, a second
                    // account): none of its values, flashes included, carry
                    // over to this one, which the app would otherwise run
                    // with the other user's keys. This request's own writes
                    // stay: cleared as changes of the request's, then its
                    // writes again, so that the retirement, which carries
                    // over what others wrote to the old record meanwhile,
                    // carries nothing of it either.
                    for change in [
                        Change::Clear { flashes: false },
                        Change::Clear { flashes: true },
                        Change::Remove(SIGNED_OUT_KEY.to_owned()),
                    ]
                    .into_iter()
                    .chain(log.changes.iter().cloned())
                    {
                        Self::push(state, change);
                    }
                    log = state.log.clone();
                }
                // A "remember me" of another owner does not carry over to
                // this one either: the stored lifetime returns to the
                // configured one, for the app to set again. One this request
                // set (before the login) is this owner's and stays.
                if another && !state.lifetime_dirty {
                    state.lifetime = None;
                    state.lifetime_dirty = true;
                }
                state.owner = Some(owner);
                state.owner_dirty = true;
            }
            Owner::Logout => {
                if let Some(who) = &previous_owner {
                    let marker = SignedOut::of(who, &state.data);
                    Self::push(state, Change::Set(SIGNED_OUT_KEY.to_owned(), marker));
                    log = state.log.clone();
                }
                state.owner = None;
                state.owner_dirty = true;
                // A "remember me" lifetime ends with the login.
                state.lifetime = None;
                state.lifetime_dirty = true;
            }
        }
        // Set in this request (or by the logout): what the old record holds
        // must not replace it if the retirement carries a write over.
        let lifetime_set = state.lifetime_dirty;
        if let Err(e) = self.create(state, created_at, now).await {
            kept.restore(state);
            return Err(e);
        }
        let new_rid = state.stored.as_ref().map(|s| s.rid);
        // Logged and counted once the rotation stands: not when it is undone.
        let stands = || {
            if let Some(new_rid) = &new_rid {
                observe::rotated(old.as_ref().map(|(rid, _)| rid), new_rid);
            }
        };
        if let Some((old_rid, _)) = old {
            let rotation = Rotation {
                log: &log,
                lifetime_set,
                login,
            };
            let mut untouched = false;
            let retired = self
                .retire(
                    state,
                    old_rid,
                    old_version,
                    previous_owner.as_deref(),
                    &rotation,
                    &mut untouched,
                )
                .await;
            if let Err(e) = retired {
                let undone = if state.ended {
                    false
                } else if untouched {
                    // The store refused this request's retiring touch (a
                    // write on the old id came first), and what failed came
                    // after: the old record was not retired by this request.
                    // Undone, the client keeps the old id with this
                    // request's changes pending, and no write acknowledged
                    // on the old id is left behind on it; were the old
                    // session ended meanwhile, the old id finds it ended.
                    undo
                } else {
                    // The retiring touch failed: it may have landed with its
                    // answer lost, or, after a timeout, may still land (a
                    // statement under way, a command resent).
                    let timeout = matches!(e, Error::Timeout { .. });
                    match self.liveness(old_rid).await {
                        // Still live: it did not land, and after a timeout it
                        // may yet, so only an error that is not one undoes.
                        Some(true) => undo && !timeout,
                        Some(false) => {
                            // Gone: retired by this touch, or ended by
                            // another request (destroyed, logged out
                            // everywhere), which a load cannot tell apart.
                            // The new record must not carry an ended session
                            // on: it goes as if the old one had ended (a
                            // login keeps only its own writes).
                            let ended = self.after_old_ended(state, &rotation).await;
                            if let Err(ended) = ended {
                                tracing::warn!(error = %ended, "a rotation whose old record was found gone could not end or rewrite its new one");
                            }
                            false
                        }
                        // Not found out (the store still failing): the
                        // client keeps the new record, which holds the
                        // session.
                        None => false,
                    }
                };
                if undone {
                    let new = state.stored.as_ref().map(|s| s.rid);
                    kept.restore(state);
                    if let Some(new) = new {
                        let deleted = manager
                            .call("delete", manager.inner.store.delete(&new))
                            .await;
                        if deleted.is_err() {
                            tracing::warn!(new = %new.short(), "a rotation that could not retire the old record could not delete the new one either; it expires on its own");
                        }
                    }
                } else if !state.ended {
                    stands();
                    if login {
                        // A login that stands (with its own writes only, when
                        // the old record was found gone) keeps the cap too.
                        if let (Some(owner), Some(keep)) = (state.owner.clone(), new_rid) {
                            manager.enforce_owner_cap(&owner, &keep, created_at).await;
                        }
                    }
                }
                return Err(e);
            }
        }
        if state.ended {
            // The old session ended meanwhile and took the new record along
            // (`after_old_ended`): nothing rotated.
            return Ok(());
        }
        stands();
        if let (Some(owner), Some(keep)) = (state.owner.clone(), new_rid) {
            // After every login, one of the same owner again too: its old
            // record may have been ended meanwhile (by another device's
            // login over the cap), which leaves the new one a session more,
            // and an earlier login may have failed to enforce the cap.
            if login {
                manager.enforce_owner_cap(&owner, &keep, created_at).await;
            }
        }
        Ok(())
    }

    /// Whether a load finds record `rid` live now; `None` when the load
    /// fails.
    async fn liveness(&self, rid: RecordId) -> Option<bool> {
        let manager = self.manager();
        match manager.call("load", manager.inner.store.load(&rid)).await {
            Ok(Some(r)) => Some(r.id == rid && self.is_live(&r, manager.now())),
            Ok(None) => Some(false),
            Err(_) => None,
        }
    }

    /// Ends the record a rotation replaced, at `version` (the one the new
    /// record was made from), and deletes it. The old record is first given
    /// a deadline long past by a touch that only succeeds at `version`: a
    /// delete that checks the version, whatever the clocks of the store and
    /// the other app servers say. When another request has written to the
    /// old id since, its record with this request's changes (`log`) applied
    /// again becomes the new one's, and the retirement is tried again; when
    /// the old session has ended since (destroyed, or its owner logged out
    /// everywhere), the new one ends too. `untouched` tells the caller of an
    /// error whether the store had just refused the retiring touch (the
    /// error came after it): the old record was then not retired by it.
    async fn retire(
        &self,
        state: &mut State,
        old: RecordId,
        mut version: u64,
        owner: Option<&str>,
        rotation: &Rotation<'_>,
        untouched: &mut bool,
    ) -> Result<()> {
        let manager = self.manager();
        let retries = manager.inner.config.conflict_retries;
        let long_past = Timestamp::from_unix_millis(1);
        for attempt in 0..=retries {
            *untouched = false;
            let retired = manager
                .call(
                    "touch",
                    manager.inner.store.touch(&old, version, owner, long_past),
                )
                .await?;
            if retired {
                break;
            }
            *untouched = true;
            let found = self.load_to_apply(&old, rotation.log).await?;
            let now = manager.now();
            let Some(latest) = found.filter(|r| r.id == old && self.is_live(r, now)) else {
                // Ended after this request loaded it, as if it had been found
                // ended when the rotation began.
                return self.after_old_ended(state, rotation).await;
            };
            if attempt == retries {
                return Err(Error::Contention {
                    attempts: retries.saturating_add(1),
                });
            }
            version = latest.version;
            if !rotation.lifetime_set {
                state.lifetime = latest.lifetime;
            }
            state.data = rotation.applied_to(latest);
            if !self.write_locked(state).await? {
                return Err(Error::Ended);
            }
        }
        // Retired already: its deadline is long past, so no store returns it
        // again, and a failed delete only leaves it to the store's expiry.
        if manager
            .call("delete", manager.inner.store.delete(&old))
            .await
            .is_err()
        {
            tracing::warn!(old = %old.short(), "a retired session record could not be deleted; it expires on its own");
        }
        manager.forget_kept_copy(&old);
        Ok(())
    }

    /// The new record of a rotation whose old session ended meanwhile
    /// (destroyed, logged out everywhere, or retired by another request's
    /// rotation): it must not carry the ended session on. A login keeps it,
    /// rewritten to hold only this request's own writes, as a login that
    /// finds the session ended when it begins gets a fresh one; anything
    /// else ends with the old session, also for the client when deleting the
    /// new record fails.
    async fn after_old_ended(&self, state: &mut State, rotation: &Rotation<'_>) -> Result<()> {
        let manager = self.manager();
        if rotation.login {
            // As changes of the request's own, so that a conflict's reload
            // (which starts from the stored new record, still holding the
            // ended session's values) applies them again.
            for change in [
                Change::Clear { flashes: false },
                Change::Clear { flashes: true },
            ]
            .into_iter()
            .chain(rotation.log.changes.iter().cloned())
            .chain([Change::Remove(SIGNED_OUT_KEY.to_owned())])
            {
                Self::push(state, change);
            }
            if !rotation.lifetime_set {
                state.lifetime = None;
                state.lifetime_dirty = true;
            }
            match self.write_locked(state).await {
                Ok(true) => return Ok(()),
                // The new record was ended too (its owner logged out
                // everywhere, or another device ended it): so is the login.
                Ok(false) => return Err(Error::Ended),
                Err(e) => {
                    // It may still hold the ended session's values: it goes.
                    let new = state.stored.as_ref().map(|s| s.rid);
                    state.end();
                    if let Some(new) = new {
                        if manager
                            .call("delete", manager.inner.store.delete(&new))
                            .await
                            .is_err()
                        {
                            tracing::warn!(new = %new.short(), "a login whose old session ended meanwhile could not rewrite or delete its new record; it expires on its own");
                        }
                        observe::ended(&new);
                    }
                    return Err(e);
                }
            }
        }
        let new = state.stored.as_ref().map(|s| s.rid);
        state.end();
        if let Some(new) = new {
            manager
                .call("delete", manager.inner.store.delete(&new))
                .await?;
            observe::ended(&new);
        }
        Ok(())
    }

    /// Ends every other session of this session's owner ("log out my other
    /// devices") and returns how many ended: one listing, then one delete
    /// per session, at most eight at a time. Nothing happens for a session
    /// without an owner.
    ///
    /// As with [`Manager::destroy_session_of`], a device that is changing its
    /// id at that very moment ([`Session::login`] or [`Session::cycle_id`] in
    /// flight) may carry on under its new id, which the next listing shows;
    /// [`Manager::destroy_all_of`] has no such window, but ends this session
    /// too.
    ///
    /// # Errors
    /// A store error or timeout.
    pub async fn end_other_sessions(&self) -> Result<u64> {
        let (owner, own) = {
            let state = self.loaded().await?;
            (state.owner.clone(), state.stored.as_ref().map(|s| s.rid))
        };
        let Some(owner) = owner else { return Ok(0) };
        let manager = self.manager();
        let others: Vec<RecordId> = manager
            .sessions_of(&owner)
            .await?
            .into_iter()
            .filter(|rid| Some(*rid) != own)
            .collect();
        stream::iter(others.iter().copied().map(Ok))
            .try_for_each_concurrent(OWNER_CALLS_AT_ONCE, |rid| async move {
                manager.destroy_record(&rid).await
            })
            .await?;
        Ok(others.len() as u64)
    }

    /// The new idle deadline when extending it is due (the session's touch
    /// interval, [`Manager::touch_interval`], has passed since it was last
    /// set), else `None`.
    fn touch_due(&self, state: &State) -> Option<Timestamp> {
        let manager = self.manager();
        let stored = state.stored.as_ref()?;
        let now = state.now.unwrap_or_else(|| manager.now());
        let lifetime = self.lifetime_of(state);
        let deadline = lifetime.deadline(stored.created_at, now);
        (deadline > stored.expires_at
            && deadline.duration_since(stored.expires_at) >= manager.touch_interval(&lifetime))
        .then_some(deadline)
    }

    async fn touch_if_due(&self, state: &mut State) -> Result<()> {
        let manager = self.manager();
        let (Some(_), Some(stored)) = (self.touch_due(state), &state.stored) else {
            return Ok(());
        };
        // From the time of this commit, not of the load: a touch does not
        // change the version, so one from a slow request would otherwise
        // replace a later request's deadline with its earlier one, or, past
        // the idle timeout since its load, end a session in use.
        let deadline = self
            .lifetime_of(state)
            .deadline(stored.created_at, manager.now());
        let (rid, version) = (stored.rid, stored.version);
        let owner = state.owner.as_deref();
        if manager
            .call(
                "touch",
                manager.inner.store.touch(&rid, version, owner, deadline),
            )
            .await?
        {
            observe::touched(&rid);
            if let Some(s) = state.stored.as_mut() {
                s.expires_at = deadline;
            }
            state.refresh_cookie |= self.lifetime_of(state).persistent_cookie();
            return Ok(());
        }
        // Refused: the session ended, or another request saved it since this
        // one loaded it (and set a deadline from the lifetime it saved, which
        // this request's older copy must not replace). Only the store knows
        // which; this costs a load only when a touch is refused.
        let found = manager.call("load", manager.inner.store.load(&rid)).await?;
        let now = state.now.unwrap_or_else(|| manager.now());
        match found.filter(|r| r.id == rid && self.is_live(r, now)) {
            // Saved since: a cookie this request still sends (re-issued
            // under the current key, say) carries that save's deadline and
            // lifetime, not this request's older ones.
            Some(saved) => {
                if let Some(s) = state.stored.as_mut() {
                    s.expires_at = saved.expires_at;
                    s.lifetime = saved.lifetime;
                }
            }
            None => {
                observe::ended(&rid);
                state.end();
            }
        }
        Ok(())
    }
}

/// Puts `key` back to `before` (absent if `None`).
fn restore(data: &mut Data, key: &str, before: Option<Vec<u8>>) {
    match before {
        Some(value) => set(data, key, value),
        None => drop(data.remove(key)),
    }
}

/// Sets `key` to `value`, keeping the key's allocation when it is there
/// (a counter incremented on every request).
fn set(data: &mut Data, key: &str, value: Vec<u8>) {
    match data.get_mut(key) {
        Some(slot) => *slot = value,
        None => drop(data.insert(key.to_owned(), value)),
    }
}

/// Whether `key` is where a flash value is kept (hidden from listings).
pub(crate) fn is_flash_key(key: &str) -> bool {
    key.starts_with(FLASH_PREFIX)
}

fn flash_key(key: &str) -> String {
    let mut k = String::with_capacity(FLASH_PREFIX.len() + key.len());
    k.push_str(FLASH_PREFIX);
    k.push_str(key);
    k
}

/// The value under `key` once `changes` are applied to `data`, without
/// applying them.
fn pending_value<'a>(data: &'a Data, changes: &'a [Change], key: &str) -> Option<&'a [u8]> {
    for (at, change) in changes.iter().enumerate().rev() {
        match change {
            Change::Set(k, v) if k == key => return Some(v),
            Change::Remove(k) if k == key => return None,
            // Removes only the value it took: another stays.
            Change::Take(k, taken) if k == key => {
                return pending_value(data, &changes[..at], key).filter(|v| v != taken);
            }
            Change::Clear { flashes } if cleared_by(key, *flashes) => return None,
            _ => {}
        }
    }
    data.get(key).map(Vec::as_slice)
}

/// Whether a deadline moved from `before` to `after` by at least `interval`.
fn moved_by(before: Timestamp, after: Timestamp, interval: Duration) -> bool {
    after >= before && after.duration_since(before) >= interval
}

fn apply(data: &mut Data, change: &Change) {
    match change {
        Change::Set(k, v) => set(data, k, v.clone()),
        Change::Remove(k) => {
            data.remove(k);
        }
        Change::Take(k, taken) => {
            if data.get(k) == Some(taken) {
                data.remove(k);
            }
        }
        Change::Clear { flashes } => data.retain(|k, _| !cleared_by(k, *flashes)),
    }
}

/// A random pause of up to 2^attempt milliseconds (at most 64).
async fn backoff(attempt: u32) {
    let mut b = [0u8; 2];
    let jitter = match getrandom::getrandom(&mut b) {
        Ok(()) => u16::from_le_bytes(b),
        Err(_) => 0,
    };
    let cap = 1u64 << attempt.min(6);
    let micros = u64::from(jitter) % (cap * 1000);
    tokio::time::sleep(Duration::from_micros(micros)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{CallCounts, Instrumented, TestStore};
    use crate::{Config, ManualClock, SessionView, Store, StoreError, StoreErrorKind};

    /// A 30-day "remember me": idle timeout, in a cookie that outlives the
    /// browser.
    fn remember_me() -> Lifetime {
        Lifetime::new()
            .with_idle_timeout(Some(Duration::from_secs(30 * 86_400)))
            .with_persistent_cookie(true)
    }

    /// Logs `s` in as `owner` and checks that the commit keeps the
    /// "remember me" the request set before: a persistent cookie, and the
    /// lifetime.
    async fn login_keeps_remember_me(s: &Session, owner: &str, remember_me: Lifetime) {
        s.login(owner).await.unwrap();
        assert!(matches!(
            s.commit().await.unwrap(),
            SetCookie::Set {
                max_age: Some(_),
                ..
            }
        ));
        assert_eq!(s.lifetime().await.unwrap(), remember_me);
    }

    struct Fixture {
        store: Instrumented<TestStore>,
        clock: ManualClock,
        manager: Manager,
    }

    fn fixture_with(config: crate::ConfigBuilder) -> Fixture {
        let store = Instrumented::new(TestStore::default());
        let clock = ManualClock::new();
        let manager =
            Manager::new(store.clone(), config.build().unwrap()).with_clock(clock.clone());
        Fixture {
            store,
            clock,
            manager,
        }
    }

    fn fixture() -> Fixture {
        fixture_with(Config::builder())
    }

    impl Fixture {
        /// A stored session holding the flash `notice`, and its cookie.
        async fn with_notice(&self, text: &str) -> String {
            let s = self.open(None);
            s.insert_flash("notice", text).await.unwrap();
            value(s.commit().await.unwrap())
        }

        /// A session signed in as alice with a 30-day "remember me", its
        /// cookie and that lifetime.
        async fn remembered_alice(&self) -> (String, Lifetime) {
            let s = self.open(None);
            s.login("alice").await.unwrap();
            let remember_me = remember_me();
            s.set_lifetime(Some(remember_me)).await.unwrap();
            (value(s.commit().await.unwrap()), remember_me)
        }

        /// Loads and saves since `before` (counts taken earlier).
        fn loads_and_saves_since(&self, before: &CallCounts) -> (u64, u64) {
            let after = self.store.counts();
            (after.load - before.load, after.save - before.save)
        }

        /// Increments `n` of `cookie`'s session from another process (a
        /// manager of its own over the same store, so turns of its own).
        async fn increment_elsewhere(&self, cookie: &str) -> i64 {
            let other =
                Manager::new(self.store.clone(), Config::default()).with_clock(self.clock.clone());
            let o = other.session_from_cookies(Some(format!("session={cookie}").as_str()));
            let n = o.increment("n", 1).await.unwrap();
            o.commit().await.unwrap();
            n
        }

        /// A request on `cookie`'s session that has set `n` to 5 and changed
        /// the lifetime, which sends its updates down the plain path.
        async fn with_n_on_the_plain_path(&self, cookie: &str) -> Session {
            let s = self.open(Some(cookie));
            s.insert("n", &5).await.unwrap();
            s.set_lifetime(Some(
                Lifetime::new().with_idle_timeout(Some(Duration::from_secs(600))),
            ))
            .await
            .unwrap();
            s
        }

        /// The counter `n` of `cookie`'s session, read by a request of its own.
        async fn n(&self, cookie: &str) -> Option<i64> {
            self.open(Some(cookie)).get::<i64>("n").await.unwrap()
        }

        /// `n` and `x` of `cookie`'s session, read by a request of its own.
        async fn n_and_x(&self, cookie: &str) -> (Option<i64>, Option<i64>) {
            let s = self.open(Some(cookie));
            (s.get("n").await.unwrap(), s.get("x").await.unwrap())
        }

        fn open(&self, cookie: Option<&str>) -> Session {
            let header = cookie.map(|c| format!("session={c}"));
            self.manager.session_from_cookies(header.as_deref())
        }

        /// The counter `n` in the gathering under way on `cookie`'s turn.
        fn gathered_n(&self, cookie: &str) -> Option<i64> {
            let rid = Id::parse(cookie).unwrap().record_id();
            let turn = self.manager.record_lock(&rid).try_lock().unwrap();
            let bytes = turn.gathering.as_ref()?.record.data.get("n")?.clone();
            Some(codec::decode(&*self.manager.inner.config.codec, &bytes).unwrap())
        }

        /// A stored session with `name=iris`; returns its cookie value.
        async fn stored(&self) -> String {
            let s = self.open(None);
            s.insert("name", "iris").await.unwrap();
            value(s.commit().await.unwrap())
        }

        /// Lets the spawned saver task of a gathering write its record.
        async fn let_the_saver_write(&self) {
            let before = self.store.counts().save;
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
            assert_eq!(
                self.store.counts().save,
                before + 1,
                "the saver did not write"
            );
        }

        /// Another stored session whose record shares `cookie`'s turn.
        async fn stored_sharing_a_turn_with(&self, cookie: &str) -> String {
            let rid_of = |cookie: &str| Id::parse(cookie).unwrap().record_id();
            loop {
                let c = self.stored().await;
                if std::ptr::eq(
                    self.manager.record_lock(&rid_of(cookie)),
                    self.manager.record_lock(&rid_of(&c)),
                ) {
                    return c;
                }
            }
        }

        /// Updates `cookie`'s session alone, one request after another, until
        /// its updates save at once.
        async fn update_alone_until_saving_at_once(&self, cookie: &str) {
            for _ in 0..batch::INLINE_AFTER {
                assert!(!saves_at_once(self, cookie));
                self.open(Some(cookie)).increment("n", 1).await.unwrap();
            }
            assert!(saves_at_once(self, cookie));
        }

        /// A request of its own that increments `n` of `cookie`'s session
        /// and, if that worked, commits.
        fn spawn_increment(&self, cookie: &str) -> tokio::task::JoinHandle<Result<i64>> {
            let s = self.open(Some(cookie));
            tokio::spawn(async move {
                let n = s.increment("n", 1).await?;
                s.commit().await?;
                Ok(n)
            })
        }

        /// Increments `n` of `cookie`'s session from `requests` concurrent
        /// requests and checks that each saw its own increment, in some
        /// order.
        async fn increment_concurrently(&self, cookie: &str, requests: i64) {
            let tasks: Vec<_> = (0..requests)
                .map(|_| self.spawn_increment(cookie))
                .collect();
            let mut seen = Vec::new();
            for t in tasks {
                seen.push(t.await.unwrap().unwrap());
            }
            seen.sort_unstable();
            assert_eq!(seen, (1..=requests).collect::<Vec<i64>>());
        }
    }

    fn value(outcome: SetCookie) -> String {
        match outcome {
            SetCookie::Set { value, .. } => value,
            other => panic!("expected Set, got {other:?}"),
        }
    }

    const MINUTE: Duration = Duration::from_secs(60);

    /// Frameworks box each handler's future (axum does), and glibc's malloc
    /// serves blocks of up to 1 032 bytes from a per-thread cache; bigger
    /// ones take its slow path, on every request. An update's future held
    /// its arguments and moved-from records twice over (1 664 bytes for
    /// `increment`, a read's 408), so a counter's handler future needed
    /// 1 928 bytes. This keeps them well inside the cache with room for the
    /// handler's own state. The compiler decides the layout: if another
    /// toolchain fails this, `RUSTC_BOOTSTRAP=1 cargo rustc -p session-core
    /// --lib -- -Zprint-type-sizes` shows which state grew.
    #[test]
    fn the_futures_a_handler_awaits_stay_small() {
        let f = fixture();
        let s = f.open(None);
        let sizes = [
            (
                "increment",
                std::mem::size_of_val(&s.increment("n", 1)),
                704,
            ),
            ("get", std::mem::size_of_val(&s.get::<i64>("n")), 352),
            ("insert", std::mem::size_of_val(&s.insert("n", 1)), 384),
            ("commit", std::mem::size_of_val(&s.commit()), 704),
        ];
        for (name, size, most) in sizes {
            assert!(
                size <= most,
                "{name}'s future takes {size} bytes (at most {most})"
            );
        }
    }

    /// An update that cannot get its record's turn (held by a store call
    /// that other updates queue behind) gives up after the store timeout,
    /// as a store call does, instead of waiting without a bound; it writes
    /// nothing, and the next update, once the turn is free, goes through.
    #[tokio::test(start_paused = true)]
    async fn an_update_waits_for_its_turn_no_longer_than_the_store_timeout() {
        let f = fixture();
        let cookie = f.stored().await;
        let rid = Id::parse(&cookie).unwrap().record_id();
        let after = f.manager.config().store_timeout();
        let s = f.open(Some(&cookie));
        let held = f.manager.record_lock(&rid).lock().await;
        let started = tokio::time::Instant::now();
        let waited = tokio::time::timeout(after * 3, s.increment("n", 1)).await;
        assert!(
            matches!(waited, Ok(Err(Error::Contention { attempts: 1 }))),
            "{waited:?}"
        );
        assert!(
            started.elapsed() >= after,
            "gave up before the store timeout"
        );
        drop(held);
        assert_eq!(f.n(&cookie).await, None, "nothing was written");
        assert_eq!(s.increment("n", 1).await.unwrap(), 1);
        s.commit().await.unwrap();
        assert_eq!(f.n(&cookie).await, Some(1));
    }

    /// An update with no copy of its record loads it without holding the
    /// record's turn, so that the updates of the sessions sharing the turn
    /// (of 1 024) do not queue behind a load of an id they have nothing to
    /// do with. It then starts from the newest copy it knows of: here its
    /// own load, which the turn's copy of what a request of this process
    /// saved while it loaded vouches for (another process wrote after that
    /// save, before the load read), so it loads once and saves once, with
    /// no conflict.
    #[tokio::test(start_paused = true)]
    async fn an_update_loads_without_holding_its_turn() {
        let f = fixture();
        let cookie = f.stored().await;
        let rid = Id::parse(&cookie).unwrap().record_id();
        let delay = f.manager.config().store_timeout() / 4;
        let before = f.store.counts();
        f.store.delay(Some(delay));
        let s = f.open(Some(&cookie));
        let update = tokio::spawn({
            let s = s.clone();
            async move { s.increment("n", 1).await }
        });
        tokio::time::sleep(delay / 2).await;
        assert_eq!(f.loads_and_saves_since(&before), (1, 0), "it is loading");
        assert!(
            f.manager.record_lock(&rid).try_lock().is_ok(),
            "its turn is free meanwhile"
        );
        // Meanwhile a request of this process writes, then another process.
        f.store.delay(None);
        let here = f.open(Some(&cookie));
        assert_eq!(here.increment("n", 1).await.unwrap(), 1);
        here.commit().await.unwrap();
        let saved_here = {
            let turn = f.manager.record_lock(&rid).try_lock().unwrap();
            turn.last.as_ref().map(|r| r.version)
        };
        assert!(saved_here.is_some(), "this process keeps what it saved");
        assert_eq!(f.increment_elsewhere(&cookie).await, 2);
        let (loads, saves) = f.loads_and_saves_since(&before);
        assert_eq!(update.await.unwrap().unwrap(), 3);
        assert_eq!(
            f.loads_and_saves_since(&before),
            (loads, saves + 1),
            "no second load, one save, no conflict"
        );
        s.commit().await.unwrap();
        assert_eq!(f.n(&cookie).await, Some(3));
    }

    #[tokio::test]
    async fn a_failed_commit_still_tells_the_client_what_the_store_holds() {
        let f = fixture();
        let old = f.stored().await;
        f.store.fail_saves_with(Some(StoreErrorKind::Unavailable));
        // A login stored under a new id; the commit's save then fails.
        let s = f.open(Some(&old));
        s.login("alice").await.unwrap();
        s.insert("theme", "dark").await.unwrap();
        assert!(s.commit().await.is_err());
        let new = value(s.failed_commit_outcome());
        assert_ne!(new, old);
        let back = f.open(Some(&new));
        assert_eq!(back.owner().await.unwrap().as_deref(), Some("alice"));
        assert_eq!(back.get::<String>("theme").await.unwrap(), None);
        // A "remember me" lifetime set after the login was not saved either:
        // the cookie is the stored session's, a browser-session cookie.
        let remember = f.open(Some(&new));
        remember.login("alice").await.unwrap();
        let persistent = Lifetime::new()
            .with_idle_timeout(Some(Duration::from_secs(86_400)))
            .with_persistent_cookie(true);
        remember.set_lifetime(Some(persistent)).await.unwrap();
        assert!(remember.commit().await.is_err());
        match remember.failed_commit_outcome() {
            SetCookie::Set { max_age, .. } => assert_eq!(max_age, None, "not what the store holds"),
            other => panic!("expected the new id, got {other:?}"),
        }
        // A new session whose first write failed: nothing to tell.
        f.store.fail_with(Some(StoreErrorKind::Unavailable));
        let fresh = f.open(None);
        fresh.insert("name", "iris").await.unwrap();
        assert!(fresh.commit().await.is_err());
        assert_eq!(fresh.failed_commit_outcome(), SetCookie::Unchanged);
        // A destroyed session whose next session could not be stored: the
        // old cookie goes.
        f.store.fail_with(None);
        f.store.fail_saves_with(None);
        let ended = f.open(Some(&new));
        ended.destroy().await.unwrap();
        ended.insert("name", "iris").await.unwrap();
        f.store.fail_with(Some(StoreErrorKind::Unavailable));
        assert!(ended.commit().await.is_err());
        assert_eq!(ended.failed_commit_outcome(), SetCookie::Remove);
    }

    #[tokio::test]
    async fn an_untouched_session_costs_no_store_call_and_no_cookie() {
        let f = fixture();
        let cookie = f.stored().await;
        let before = f.store.counts();
        for c in [None, Some(cookie.as_str()), Some("garbage")] {
            assert_eq!(f.open(c).commit().await.unwrap(), SetCookie::Unchanged);
        }
        assert_eq!(f.store.counts(), before);
    }

    /// A handler that panics after writing, caught by its framework before
    /// the adapter commits (Rocket does; so does a catch-panic layer inside
    /// the session layer): its deferred changes are not saved, what it had
    /// written at once stays, and the client learns the id a `login` before
    /// the panic stored the session under.
    #[tokio::test]
    async fn a_handler_that_panics_saves_none_of_its_deferred_changes() {
        use futures_util::FutureExt as _;
        async fn handler(session: Session, login: bool) {
            session.increment("n", 1).await.unwrap();
            if login {
                session.login("alice").await.unwrap();
            }
            session.insert("name", "mallory").await.unwrap();
            panic!("the handler fails midway");
        }
        let f = fixture();
        for login in [false, true] {
            let cookie = f.stored().await;
            let s = f.open(Some(&cookie));
            let caught = std::panic::AssertUnwindSafe(handler(s.for_handler(), login))
                .catch_unwind()
                .await;
            assert!(caught.is_err());
            // While a clone is busy with the state, the adapter must wait
            // for `commit`, or it would lose the id a login stored.
            let busy = s.lock().await;
            assert_eq!(s.commit_without_store(), None);
            drop(busy);
            let before = f.store.counts();
            let outcome = s.commit().await.unwrap();
            assert_eq!(f.store.counts(), before, "the commit wrote");
            let cookie = match outcome {
                SetCookie::Set { value, .. } if login => value,
                SetCookie::Unchanged if !login => cookie,
                other => panic!("login {login}: {other:?}"),
            };
            assert_eq!(f.n(&cookie).await, Some(1), "the increment was kept");
            let name = f.open(Some(&cookie)).get_string("name").await.unwrap();
            assert_eq!(name, "iris", "a deferred change was saved");
        }
        // A handler that returns, even with an error, still commits; so does
        // one whose spawned task panicked with a clone of its handle.
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        let own = s.for_handler();
        own.insert("name", "mallory").await.unwrap();
        let clone = own.clone();
        let task = tokio::spawn(async move {
            clone.insert("other", "x").await.unwrap();
            panic!("a task of the handler fails");
        });
        assert!(task.await.is_err());
        drop(own);
        s.commit().await.unwrap();
        assert_eq!(
            f.open(Some(&cookie)).get_string("name").await.unwrap(),
            "mallory"
        );
    }

    #[tokio::test]
    async fn commit_without_store_answers_only_when_no_store_call_is_needed() {
        let f = fixture();
        let cookie = f.stored().await;
        let before = f.store.counts();
        // Never used, whatever the client presented.
        for c in [None, Some(cookie.as_str()), Some("garbage")] {
            assert_eq!(f.open(c).commit_without_store(), Some(SetCookie::Unchanged));
        }
        // Read within the touch interval.
        f.clock.advance(Duration::from_secs(30));
        let s = f.open(Some(&cookie));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        assert_eq!(s.commit_without_store(), Some(SetCookie::Unchanged));
        assert_eq!(f.store.counts().total() - before.total(), 1);
        // Busy elsewhere: the caller must await `commit`.
        let guard = s.lock().await;
        assert_eq!(s.clone().commit_without_store(), None);
        drop(guard);
        // Changed: a save is needed, and `commit` does it.
        s.insert("name", "mallory").await.unwrap();
        assert_eq!(s.commit_without_store(), None);
        assert_eq!(s.commit().await.unwrap(), SetCookie::Unchanged);
        assert_eq!(f.store.counts().save - before.save, 1);
        // Read once the touch is due: the idle deadline must be extended.
        f.clock.advance(2 * MINUTE);
        let s = f.open(Some(&cookie));
        assert_eq!(s.get_string("name").await.unwrap(), "mallory");
        assert_eq!(s.commit_without_store(), None);
        s.commit().await.unwrap();
        assert_eq!(f.store.counts().touch - before.touch, 1);
        // A new session with data must be created...
        let s = f.open(None);
        s.insert("name", "iris").await.unwrap();
        assert_eq!(s.commit_without_store(), None);
        // ...unless a save already did: the new id is all that is left.
        s.save().await.unwrap();
        assert!(matches!(
            s.commit_without_store(),
            Some(SetCookie::Set { .. })
        ));
        // Destroyed: the delete already happened, the cookie goes.
        let s = f.open(Some(&cookie));
        s.destroy().await.unwrap();
        assert_eq!(s.commit_without_store(), Some(SetCookie::Remove));
    }

    #[tokio::test]
    async fn a_new_session_left_empty_is_never_stored() {
        let f = fixture();
        let s = f.open(None);
        assert_eq!(s.get::<String>("name").await.unwrap(), None);
        assert!(s.is_empty().await.unwrap());
        s.insert("x", &1).await.unwrap();
        s.remove("x").await.unwrap();
        assert_eq!(s.commit().await.unwrap(), SetCookie::Unchanged);
        assert_eq!(f.store.counts().total(), 0);
        assert!(f.store.inner().is_empty());
    }

    #[tokio::test]
    async fn malformed_or_tampered_cookies_never_reach_the_store() {
        let f = fixture();
        let cookie = f.stored().await;
        let before = f.store.counts().total();
        let mut tampered = cookie.clone().into_bytes();
        tampered[5] = if tampered[5] == b'x' { b'y' } else { b'x' };
        let tampered = String::from_utf8(tampered).unwrap();
        let oversized = "A".repeat(8 * 1024);
        for bad in ["", "short", "%%%", oversized.as_str(), tampered.as_str()] {
            let s = f.open(Some(bad));
            assert!(s.is_empty().await.unwrap());
            s.commit().await.unwrap();
        }
        // Only the tampered one is well-formed: a plain id is its own proof, so
        // it costs one lookup that finds nothing.
        assert!(f.store.counts().total() - before <= 1);
    }

    /// A browser sends every cookie of the session's name that matches the
    /// request (a domain-wide one beside an older host-only one, say), and
    /// the first may name no live session: the next ones are tried, so the
    /// user stays signed in, reads, updates and destroys that session, and
    /// only a few are tried.
    #[tokio::test]
    async fn a_later_cookie_of_the_same_name_holds_the_session() {
        let f = fixture();
        let live = f.stored().await;
        let stale = Id::generate().unwrap().to_string();
        let header = |cookies: &[&str]| {
            cookies
                .iter()
                .map(|c| format!("session={c}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let open = |cookies: &[&str]| {
            f.manager
                .session_from_cookies(Some(header(cookies).as_str()))
        };
        let before = f.store.counts();
        let s = open(&[&stale, &live]);
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        assert_eq!(
            f.loads_and_saves_since(&before).0,
            2,
            "one load per cookie tried"
        );
        assert_eq!(s.commit().await.unwrap(), SetCookie::Unchanged);

        // An update on a request that read nothing first goes to the same
        // session, not to a new one.
        let s = open(&[&stale, &live]);
        assert_eq!(s.increment("n", 1).await.unwrap(), 1);
        assert_eq!(s.commit().await.unwrap(), SetCookie::Unchanged);
        assert_eq!(f.n(&live).await, Some(1));

        // Only the first few valid ids are tried.
        let stale: Vec<String> = (0..=transport::MAX_FALLBACKS)
            .map(|_| Id::generate().unwrap().to_string())
            .collect();
        let mut cookies: Vec<&str> = stale.iter().map(String::as_str).collect();
        cookies.push(&live);
        let before = f.store.counts();
        assert!(open(&cookies).is_empty().await.unwrap());
        assert_eq!(
            f.loads_and_saves_since(&before).0,
            1 + transport::MAX_FALLBACKS as u64
        );

        // Destroyed from such a request, the live session goes.
        let s = open(&[&stale[0], &live]);
        s.destroy().await.unwrap();
        assert_eq!(s.commit().await.unwrap(), SetCookie::Remove);
        assert!(f.open(Some(&live)).is_empty().await.unwrap());
    }

    #[tokio::test]
    async fn an_unknown_id_is_never_adopted() {
        let f = fixture();
        let chosen = Id::generate().unwrap().to_string();
        let s = f.open(Some(&chosen));
        s.insert("name", "mallory").await.unwrap();
        let issued = value(s.commit().await.unwrap());
        assert_ne!(issued, chosen);
        assert!(f.open(Some(&chosen)).is_empty().await.unwrap());
    }

    #[tokio::test]
    async fn one_load_and_no_write_for_a_read_within_the_touch_interval() {
        let f = fixture();
        let cookie = f.stored().await;
        f.clock.advance(Duration::from_secs(30));
        let before = f.store.counts();
        let s = f.open(Some(&cookie));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        assert_eq!(s.commit().await.unwrap(), SetCookie::Unchanged);
        let after = f.store.counts();
        assert_eq!(after.load - before.load, 1);
        assert_eq!(after.total() - before.total(), 1);
    }

    #[tokio::test]
    async fn a_read_reads_the_clock_once() {
        #[derive(Debug)]
        struct Counting(ManualClock, Arc<std::sync::atomic::AtomicUsize>);
        impl crate::Clock for Counting {
            fn now(&self) -> Timestamp {
                self.1.fetch_add(1, Ordering::SeqCst);
                self.0.now()
            }
        }
        let f = fixture();
        let cookie = f.stored().await;
        let reads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let manager = f
            .manager
            .clone()
            .with_clock(Counting(f.clock.clone(), reads.clone()));
        let s = manager.session_from_cookies(Some(format!("session={cookie}").as_str()));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        assert_eq!(s.commit_without_store(), Some(SetCookie::Unchanged));
        // The time taken at load also decides that no touch is due.
        assert_eq!(reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_read_after_the_touch_interval_costs_one_touch() {
        let f = fixture();
        let cookie = f.stored().await;
        f.clock.advance(2 * MINUTE);
        let before = f.store.counts();
        let s = f.open(Some(&cookie));
        s.get_string("name").await.unwrap();
        // Browser-session cookie: nothing to refresh on the client.
        assert_eq!(s.commit().await.unwrap(), SetCookie::Unchanged);
        let after = f.store.counts();
        assert_eq!(
            (after.load - before.load, after.touch - before.touch),
            (1, 1)
        );
        assert_eq!(after.save, before.save);
    }

    /// A zero touch interval (tower-sessions' `with_always_save`) extends
    /// the idle deadline, and a persistent cookie's `Max-Age`, on every
    /// request that uses the session.
    #[tokio::test]
    async fn a_zero_touch_interval_extends_the_deadline_on_every_use() {
        let f = fixture_with(
            Config::builder()
                .with_touch_interval(Duration::ZERO)
                .with_persistent_cookie(true),
        );
        let cookie = f.stored().await;
        for _ in 0..3 {
            f.clock.advance(Duration::from_millis(1));
            let before = f.store.counts();
            let s = f.open(Some(&cookie));
            s.get_string("name").await.unwrap();
            assert!(matches!(
                s.commit().await.unwrap(),
                SetCookie::Set {
                    max_age: Some(_),
                    ..
                }
            ));
            assert_eq!(f.store.counts().touch - before.touch, 1);
        }
    }

    #[tokio::test]
    async fn the_touch_is_due_at_the_touch_interval_not_a_millisecond_before() {
        let f = fixture();
        let cookie = f.stored().await;
        let read = || async {
            let s = f.open(Some(&cookie));
            s.get_string("name").await.unwrap();
            s.commit().await.unwrap();
            f.store.counts().touch
        };
        f.clock.advance(MINUTE - Duration::from_millis(1));
        assert_eq!(read().await, 0);
        f.clock.advance(Duration::from_millis(1));
        assert_eq!(read().await, 1);
        // The touch moved the deadline: the next read is a minute away again.
        assert_eq!(read().await, 1);
    }

    /// A remember-me made from the configured lifetime (24 hours absolute)
    /// with 30 days idle would end after a day: refused, with the way out.
    #[tokio::test]
    async fn a_lifetime_whose_idle_timeout_cannot_take_effect_is_refused() {
        let f = fixture();
        let s = f.open(None);
        let month = Duration::from_secs(30 * 86_400);
        let masked = f.manager.config().lifetime().with_idle_timeout(Some(month));
        let refused = s.set_lifetime(Some(masked)).await;
        assert!(
            matches!(&refused, Err(Error::Invalid(m)) if m.contains("absolute timeout")),
            "{refused:?}"
        );
        s.set_lifetime(Some(masked.with_absolute_timeout(Some(3 * month))))
            .await
            .unwrap();
    }

    /// A lifetime made from a configuration whose absolute timeout is under
    /// the default idle one (which the builder accepts) is accepted too.
    #[tokio::test]
    async fn the_configured_lifetime_is_a_valid_lifetime() {
        let f =
            fixture_with(Config::builder().with_absolute_timeout(Some(Duration::from_secs(3600))));
        let s = f.open(None);
        let remember = f.manager.config().lifetime().with_persistent_cookie(true);
        s.set_lifetime(Some(remember)).await.unwrap();
    }

    #[tokio::test]
    async fn insert_takes_a_value_or_a_reference() {
        let f = fixture();
        let s = f.open(None);
        let tags = vec!["a".to_owned(), "b".to_owned()];
        s.insert("n", 7).await.unwrap();
        s.insert("name", String::from("iris")).await.unwrap();
        s.insert("tags", &tags).await.unwrap();
        s.insert("first", tags[0].as_str()).await.unwrap();
        s.insert_flash("notice", "saved").await.unwrap();
        let SetCookie::Set { value, .. } = s.commit().await.unwrap() else {
            panic!("a new session sets its cookie");
        };
        let s = f.open(Some(&value));
        assert_eq!(s.get::<i64>("n").await.unwrap(), Some(7));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        assert_eq!(s.get::<Vec<String>>("tags").await.unwrap(), Some(tags));
        assert_eq!(s.get_string("first").await.unwrap(), "a");
        assert_eq!(take_notice(&s).await.as_deref(), Some("saved"));
    }

    #[tokio::test]
    async fn a_clone_that_outlives_the_commit_saves_its_writes_with_save() {
        let f = fixture();
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        let kept = s.clone();
        s.get_string("name").await.unwrap();
        assert_eq!(s.commit().await.unwrap(), SetCookie::Unchanged);
        kept.insert("late", 1).await.unwrap();
        kept.save().await.unwrap();
        assert_eq!(
            f.open(Some(&cookie)).get::<i64>("late").await.unwrap(),
            Some(1)
        );
    }

    #[tokio::test]
    async fn a_write_is_one_load_and_one_save() {
        let f = fixture();
        let cookie = f.stored().await;
        let before = f.store.counts();
        let s = f.open(Some(&cookie));
        s.insert("name", "other").await.unwrap();
        assert_eq!(s.commit().await.unwrap(), SetCookie::Unchanged);
        let after = f.store.counts();
        assert_eq!((after.load - before.load, after.save - before.save), (1, 1));
        assert_eq!(after.total() - before.total(), 2);
        assert_eq!(
            f.open(Some(&cookie)).get_string("name").await.unwrap(),
            "other"
        );
    }

    #[tokio::test]
    async fn an_update_after_a_read_loads_once() {
        let f = fixture();
        let cookie = f.stored().await;
        let before = f.store.counts();
        let s = f.open(Some(&cookie));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        assert_eq!(s.increment("n", 1).await.unwrap(), 1);
        s.commit().await.unwrap();
        assert_eq!(f.loads_and_saves_since(&before), (1, 1));
    }

    #[tokio::test]
    async fn an_update_after_writes_in_the_same_request_loads_once_and_keeps_them() {
        let f = fixture();
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        s.insert("a", &1).await.unwrap();
        s.remove("name").await.unwrap();
        s.insert("name", "go").await.unwrap();
        s.clear().await.unwrap();
        s.insert("b", &2).await.unwrap();
        let before = f.store.counts();
        assert_eq!(s.increment("n", 1).await.unwrap(), 1);
        s.commit().await.unwrap();
        assert_eq!(f.loads_and_saves_since(&before), (0, 1));
        let s = f.open(Some(&cookie));
        assert_eq!(s.keys().await.unwrap(), ["b", "n"]);
        assert_eq!(s.get::<i64>("b").await.unwrap(), Some(2));
    }

    #[tokio::test]
    async fn an_update_after_reading_an_unknown_id_creates_without_loading_again() {
        let f = fixture();
        let unknown = Id::generate().unwrap().to_string();
        let s = f.open(Some(&unknown));
        assert_eq!(s.get::<i64>("n").await.unwrap(), None);
        assert_eq!(s.increment("n", 1).await.unwrap(), 1);
        let cookie = value(s.commit().await.unwrap());
        assert_ne!(cookie, unknown, "a fresh id, never the client's");
        let c = f.store.counts();
        assert_eq!((c.load, c.create, c.save), (1, 1, 0));
        assert_eq!(f.n(&cookie).await, Some(1));
    }

    #[tokio::test]
    async fn a_failed_update_after_writes_saves_nothing() {
        let f = fixture();
        let cookie = f.stored().await;
        let rid = Id::parse(&cookie).unwrap().record_id();
        let before = f.store.inner().load(&rid).await.unwrap().unwrap();
        let s = f.open(Some(&cookie));
        s.insert("n", "not a number").await.unwrap();
        let err = s.increment("n", 1).await.unwrap_err();
        assert!(
            matches!(&err, Error::Value { key, .. } if key == "n"),
            "{err:?}"
        );
        // Whatever task the update might have left behind has run by now.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let after = f.store.inner().load(&rid).await.unwrap().unwrap();
        assert_eq!((after.version, after.data), (before.version, before.data));
        assert_eq!(f.store.counts().save, 0);
        // The request's own write is still pending, for its commit.
        assert_eq!(s.get_string("n").await.unwrap(), "not a number");
        s.commit().await.unwrap();
        assert_eq!(
            f.open(Some(&cookie)).get_string("n").await.unwrap(),
            "not a number"
        );
    }

    /// A runtime of its own, as each of actix-web's workers runs one.
    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_gathering_whose_saver_was_dropped_does_not_hold_up_later_updates() {
        use futures_util::FutureExt;
        let f = fixture();
        // A manager shared by two runtimes, as actix-web's workers share one.
        let first = current_thread();
        let cookie = first.block_on(f.stored());
        {
            let _entered = first.enter();
            // The update opens a gathering, spawns its saver and waits;
            // then its request goes away, and so does the runtime, before
            // the saver ever ran.
            let s = f.open(Some(&cookie));
            let mut update = Box::pin(s.increment("n", 1));
            assert!(
                (&mut update).now_or_never().is_none(),
                "it waits for its saver"
            );
        }
        drop(first);
        let second = current_thread();
        let n = second.block_on(async {
            let s = f.open(Some(&cookie));
            let n = tokio::time::timeout(Duration::from_secs(5), s.increment("n", 1))
                .await
                .expect("an update waited for a saver that is gone")
                .unwrap();
            s.commit().await.unwrap();
            n
        });
        assert_eq!(n, 1, "the abandoned update was not saved");
        assert_eq!(second.block_on(f.n(&cookie)), Some(1));
    }

    /// Two runtimes sharing one manager, as actix-web's workers do: an
    /// update on the first opens a gathering and spawns its saver there; an
    /// update of the same session on the second joins it and waits.
    struct Gathered {
        first: tokio::runtime::Runtime,
        second: tokio::runtime::Runtime,
        cookie: String,
        opener: futures_util::future::BoxFuture<'static, Result<i64>>,
        member: futures_util::future::BoxFuture<'static, Result<i64>>,
        member_session: Session,
    }

    fn gathered_across_runtimes(f: &Fixture) -> Gathered {
        use futures_util::FutureExt;
        let first = current_thread();
        let second = current_thread();
        let cookie = second.block_on(f.stored());
        let a = f.open(Some(&cookie));
        let mut opener = async move { a.increment("n", 1).await }.boxed();
        {
            let _entered = first.enter();
            assert!(
                (&mut opener).now_or_never().is_none(),
                "it waits for its saver"
            );
        }
        let member_session = f.open(Some(&cookie));
        let b = member_session.clone();
        let mut member = async move { b.increment("n", 1).await }.boxed();
        {
            let _entered = second.enter();
            assert!(
                (&mut member).now_or_never().is_none(),
                "it joined the gathering"
            );
        }
        assert_eq!(f.gathered_n(&cookie), Some(2), "one gathering holds both");
        Gathered {
            first,
            second,
            cookie,
            opener,
            member,
            member_session,
        }
    }

    #[test]
    fn updates_waiting_on_a_saver_that_was_dropped_try_again() {
        // Without retries: trying again after a saver that wrote nothing is
        // no conflict, and must not end in `Contention`.
        let f = fixture_with(Config::builder().with_conflict_retries(0));
        let g = gathered_across_runtimes(&f);
        // The first runtime shuts down before the saver ran; no other update
        // of the record comes.
        drop(g.opener);
        drop(g.first);
        let n = g.second.block_on(async {
            let n = tokio::time::timeout(Duration::from_secs(5), g.member)
                .await
                .expect("a member waited for a saver that is gone")
                .unwrap();
            g.member_session.commit().await.unwrap();
            n
        });
        assert_eq!(n, 1, "only the member's increment was acknowledged");
        assert_eq!(g.second.block_on(f.n(&g.cookie)), Some(1));
    }

    /// A worker whose thread a handler holds up (here: a runtime nobody
    /// drives) leaves the saver it spawned unrun: an update on another
    /// worker that joined its gathering answers a timeout after twice the
    /// store timeout (the saver's wait for the turn and its store call)
    /// rather than waiting without end. The saver may still write once its
    /// worker runs again, as the error leaves open.
    #[test]
    fn an_update_waiting_for_a_saver_that_never_runs_times_out() {
        let store_timeout = Duration::from_secs(1);
        let f = fixture_with(Config::builder().with_store_timeout(store_timeout));
        let g = gathered_across_runtimes(&f);
        let outcome = g.second.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), g.member)
                .await
                .expect("the member waited without end")
        });
        assert!(
            matches!(outcome, Err(Error::Timeout { after, .. }) if after == store_timeout * 2),
            "{outcome:?}"
        );
        // The held-up worker runs again: its own update has waited as long,
        // and its saver then writes both increments.
        let opened = g.first.block_on(async {
            let opened = tokio::time::timeout(Duration::from_secs(5), g.opener)
                .await
                .expect("the opener, its worker running again");
            while f.store.counts().save == 0 {
                tokio::task::yield_now().await;
            }
            opened
        });
        assert!(matches!(opened, Err(Error::Timeout { .. })), "{opened:?}");
        assert_eq!(
            g.second.block_on(f.n(&g.cookie)),
            Some(2),
            "the saver wrote the member's increment too"
        );
    }

    /// An update of a record that shares its turn with that held-up
    /// gathering waits for the other record's save as long, then answers
    /// `Contention`: nothing of it was sent, so it may be tried again.
    #[test]
    fn an_update_behind_another_records_saver_that_never_runs_is_contention() {
        let store_timeout = Duration::from_secs(1);
        let f = fixture_with(Config::builder().with_store_timeout(store_timeout));
        let g = gathered_across_runtimes(&f);
        let other = g.second.block_on(f.stored_sharing_a_turn_with(&g.cookie));
        let outcome = g.second.block_on(async {
            let s = f.open(Some(&other));
            tokio::time::timeout(Duration::from_secs(30), s.increment("n", 1))
                .await
                .expect("the update waited without end")
        });
        assert!(
            matches!(outcome, Err(Error::Contention { .. })),
            "{outcome:?}"
        );
        assert_eq!(g.second.block_on(f.n(&other)), None, "nothing was written");
    }

    #[test]
    fn updates_whose_saver_stopped_during_its_save_fail_rather_than_apply_twice() {
        let f = fixture();
        let g = gathered_across_runtimes(&f);
        // The saver starts its store call, which does not answer before the
        // first runtime shuts down: whether it landed is unknown.
        f.store.delay(Some(Duration::from_secs(3600)));
        g.first.block_on(async {
            while f.store.counts().save == 0 {
                tokio::task::yield_now().await;
            }
        });
        drop(g.opener);
        drop(g.first);
        f.store.delay(None);
        let outcome = g.second.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), g.member)
                .await
                .expect("a member waited for a saver that is gone")
        });
        assert!(
            matches!(outcome, Err(Error::Store { .. })),
            "not retried, as a save that may have landed must not be: {outcome:?}"
        );
        assert_eq!(f.store.counts().save, 1, "nothing was saved again");
    }

    /// A session this process ended leaves no copy of its record in the
    /// turn that kept it (the record as last saved, which spares the next
    /// update a load): an ended session's values do not stay in memory.
    #[tokio::test]
    async fn ended_sessions_leave_no_kept_copy() {
        let f = fixture();
        let rid_of = |cookie: &str| Id::parse(cookie).unwrap().record_id();
        let kept = |cookie: &str| {
            let rid = rid_of(cookie);
            let turn = f.manager.record_lock(&rid).try_lock().unwrap();
            turn.last.as_ref().is_some_and(|r| r.id == rid)
        };
        let updated = || async {
            let cookie = f.stored().await;
            f.open(Some(&cookie)).increment("n", 1).await.unwrap();
            assert!(kept(&cookie), "an update keeps a copy");
            cookie
        };
        let c = updated().await;
        f.open(Some(&c)).destroy().await.unwrap();
        assert!(!kept(&c), "destroy");
        let c = updated().await;
        f.manager.destroy_record(&rid_of(&c)).await.unwrap();
        assert!(!kept(&c), "destroy_record");
        let c = updated().await;
        let s = f.open(Some(&c));
        s.login("ann").await.unwrap();
        let signed_in = value(s.commit().await.unwrap());
        assert!(!kept(&c), "a rotation's old record");
        f.open(Some(&signed_in)).increment("n", 1).await.unwrap();
        assert!(kept(&signed_in));
        f.manager.destroy_all_of("ann").await.unwrap();
        assert!(!kept(&signed_in), "destroy_all_of");
        let (c, d) = (updated().await, updated().await);
        f.manager.destroy_all().await.unwrap();
        assert!(!kept(&c) && !kept(&d), "destroy_all");
    }

    /// An update of a session this process saved before, and that another
    /// process ended since (here: a delete straight in the store; this
    /// process's own `destroy` drops the kept copy), starts from the copy
    /// the process kept: the store finds the record gone. The
    /// request never saw the session, so it finds no session, as its own
    /// load would have, and the update starts a new one instead of failing
    /// with `Ended`.
    #[tokio::test]
    async fn an_update_from_a_kept_copy_of_an_ended_session_starts_a_new_one() {
        let f = fixture();
        let cookie = f.stored().await;
        let rid_of = |cookie: &str| Id::parse(cookie).unwrap().record_id();
        assert_eq!(f.open(Some(&cookie)).increment("n", 1).await.unwrap(), 1);
        f.store.delete(&rid_of(&cookie)).await.unwrap();
        let rid = rid_of(&cookie);
        assert!(
            (f.manager.record_lock(&rid).try_lock().unwrap().last)
                .as_ref()
                .is_some_and(|r| r.id == rid),
            "the process keeps the copy it saved"
        );
        let s = f.open(Some(&cookie));
        assert_eq!(s.increment("n", 1).await.unwrap(), 1);
        let SetCookie::Set { value, .. } = s.commit().await.unwrap() else {
            panic!("a new session sets its cookie");
        };
        assert_ne!(value, cookie);
        assert_eq!(f.open(Some(&value)).get::<i64>("n").await.unwrap(), Some(1));
        assert_eq!(f.open(Some(&value)).get_string("name").await.unwrap(), "");
        // Two handles of a request that never saw it: the first to learn
        // starts the new session, the other writes to it.
        assert_eq!(f.open(Some(&value)).increment("n", 1).await.unwrap(), 2);
        f.store.delete(&rid_of(&value)).await.unwrap();
        let s = f.open(Some(&value));
        let t = s.clone();
        let (a, b) = tokio::join!(s.increment("a", 1), t.increment("b", 1));
        assert_eq!((a.unwrap(), b.unwrap()), (1, 1));
        let SetCookie::Set { value: fresh, .. } = s.commit().await.unwrap() else {
            panic!("a new session sets its cookie");
        };
        let both = f.open(Some(&fresh));
        assert_eq!(both.get::<i64>("a").await.unwrap(), Some(1));
        assert_eq!(both.get::<i64>("b").await.unwrap(), Some(1));
        // A request that read the session before it ended still learns so.
        let kept = f.stored().await;
        assert_eq!(f.open(Some(&kept)).increment("n", 1).await.unwrap(), 1);
        let reader = f.open(Some(&kept));
        reader.get_string("name").await.unwrap();
        f.open(Some(&kept)).destroy().await.unwrap();
        let calls = f.store.counts().total();
        assert!(matches!(reader.increment("n", 1).await, Err(Error::Ended)));
        assert_eq!(
            f.store.counts().total() - calls,
            1,
            "one save, and no other call"
        );
    }

    /// A save that fails may have landed, so its changes leave the request's
    /// log; the copy keeps them, and the commit writes it by compare-and-set
    /// on the version it had. Here the save did not land: the commit stores
    /// what it carried, a flash taken included, which the handler could not
    /// take again (its copy says it is gone).
    #[tokio::test]
    async fn the_commit_writes_what_a_failed_save_carried() {
        let f = fixture();
        let cookie = f.with_notice("hi").await;
        // Through an update's gathered save, and through a plain save.
        for plain in [false, true] {
            let s = f.open(Some(&cookie));
            assert_eq!(take_notice(&s).await.as_deref(), Some("hi"));
            s.insert("round", &plain).await.unwrap();
            f.store.fail_saves_with(Some(StoreErrorKind::Unavailable));
            if plain {
                assert!(s.save().await.is_err());
            } else {
                assert!(s.increment("views", 1).await.is_err());
            }
            f.store.fail_saves_with(None);
            assert_eq!(s.commit_without_store(), None, "a write is due");
            s.commit().await.unwrap();
            assert!(s.commit_without_store().is_some(), "nothing left to write");
            let next = f.open(Some(&cookie));
            assert_eq!(take_notice(&next).await, None);
            assert_eq!(next.get::<bool>("round").await.unwrap(), Some(plain));
            // The failed increment was not acknowledged: not stored.
            assert_eq!(next.get::<i64>("views").await.unwrap(), None);
            next.insert_flash("notice", "hi").await.unwrap();
            next.commit().await.unwrap();
        }
    }

    /// An update after a failed save starts from the request's copy, which
    /// still shows what that save carried, not from the copy this process
    /// kept of the request's earlier save (the same version, without those
    /// changes): nothing the handler wrote is dropped, and the update's save
    /// stores it.
    #[tokio::test]
    async fn an_update_after_a_failed_save_keeps_what_that_save_carried() {
        an_update_after_a_failed_save_keeps_its_writes(fixture()).await;
    }

    /// As above without retries, where an update never starts from a kept
    /// copy but loads: the load finds the failed save's version, so the
    /// save did not land, and the update starts from the request's copy.
    #[tokio::test]
    async fn an_update_after_a_failed_save_keeps_what_it_carried_without_retries() {
        let f = fixture_with(Config::builder().with_conflict_retries(0));
        an_update_after_a_failed_save_keeps_its_writes(f).await;
    }

    /// The two tests above: an increment, a write, a failed save, another
    /// increment; the write stays in the request's copy and is stored.
    async fn an_update_after_a_failed_save_keeps_its_writes(f: Fixture) {
        let s = f.open(None);
        s.insert("visits", &0).await.unwrap();
        let cookie = value(s.commit().await.unwrap());
        let s = f.open(Some(&cookie));
        assert_eq!(s.increment("visits", 1).await.unwrap(), 1);
        s.insert("a", &1).await.unwrap();
        f.store.fail_saves_with(Some(StoreErrorKind::Unavailable));
        assert!(s.save().await.is_err());
        f.store.fail_saves_with(None);
        assert_eq!(s.increment("visits", 1).await.unwrap(), 2);
        assert_eq!(
            s.get::<i32>("a").await.unwrap(),
            Some(1),
            "the request's write was dropped"
        );
        s.commit().await.unwrap();
        let next = f.open(Some(&cookie));
        assert_eq!(next.get::<i32>("a").await.unwrap(), Some(1));
        assert_eq!(next.get::<i64>("visits").await.unwrap(), Some(2));
    }

    /// A failed save that carried nothing of the request's (a best-effort
    /// increment it ignores) leaves the commit nothing to write, also while
    /// the store is still failing; and once a later update's save has
    /// replaced the request's copy, the commit does not write it again.
    #[tokio::test]
    async fn a_failed_save_leaves_a_write_only_for_what_it_carried() {
        let f = fixture();
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        f.store.fail_saves_with(Some(StoreErrorKind::Unavailable));
        assert!(s.increment("views", 1).await.is_err());
        assert!(s.commit_without_store().is_some(), "nothing to write");
        s.commit().await.unwrap();
        f.store.fail_saves_with(None);

        let s = f.open(Some(&cookie));
        s.insert("a", &1).await.unwrap();
        f.store.fail_saves_with(Some(StoreErrorKind::Unavailable));
        assert!(s.increment("views", 1).await.is_err());
        f.store.fail_saves_with(None);
        assert_eq!(s.increment("views", 1).await.unwrap(), 1);
        let saves = f.store.counts().save;
        s.commit().await.unwrap();
        assert_eq!(
            f.store.counts().save,
            saves,
            "the update's save replaced the copy"
        );
    }

    /// A save dropped before it reached the store (a handler's timeout
    /// around it): the commit writes what it carried.
    #[tokio::test]
    async fn the_commit_writes_what_a_dropped_save_carried() {
        let f = fixture();
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        s.insert("a", &1).await.unwrap();
        f.store.delay(Some(Duration::from_secs(3600)));
        {
            let mut saving = std::pin::pin!(s.save());
            assert!(poll_once(saving.as_mut()).is_pending(), "not saving");
        }
        f.store.delay(None);
        s.commit().await.unwrap();
        assert!(s.commit_without_store().is_some(), "nothing left to write");
        assert_eq!(
            f.open(Some(&cookie)).get::<i64>("a").await.unwrap(),
            Some(1)
        );
    }

    /// The same when the failed save did land (its answer was lost), and
    /// another request wrote since: the commit's write conflicts, the
    /// request takes the stored record, and nothing is written over the
    /// other request's write.
    #[tokio::test]
    async fn the_commit_does_not_write_again_what_a_failed_save_landed() {
        let f = fixture();
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        s.insert("a", &1).await.unwrap();
        f.store.lose_save_answers(true);
        assert!(s.save().await.is_err());
        f.store.lose_save_answers(false);
        assert_eq!(f.open(Some(&cookie)).increment("n", 1).await.unwrap(), 1);
        let saves = f.store.counts().save;
        s.commit().await.unwrap();
        assert_eq!(
            f.store.counts().save - saves,
            1,
            "one save, which conflicted"
        );
        assert!(s.commit_without_store().is_some(), "nothing left to write");
        let next = f.open(Some(&cookie));
        assert_eq!(next.get::<i64>("a").await.unwrap(), Some(1));
        assert_eq!(next.get::<i64>("n").await.unwrap(), Some(1));
    }

    /// A lifetime set through another handle while a gathered update saves
    /// is not in that save: adopting the saved record keeps it pending, and
    /// the commit stores it.
    #[tokio::test]
    async fn a_lifetime_set_while_an_update_saves_stays_set() {
        let (f, hook) = Hooked::fixture(false, false);
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        s.get_string("name").await.unwrap();
        let (answer, held) = tokio::sync::oneshot::channel();
        *hook.held_save_answer.lock().unwrap() = Some(held);
        let mut update = std::pin::pin!(s.increment("n", 1));
        assert!(poll_once(update.as_mut()).is_pending(), "not saving");
        let remember = Lifetime::new()
            .with_idle_timeout(Some(Duration::from_secs(600)))
            .with_persistent_cookie(true);
        s.set_lifetime(Some(remember)).await.unwrap();
        answer.send(()).unwrap();
        assert_eq!(update.await.unwrap(), 1);
        assert_eq!(s.lifetime().await.unwrap(), remember);
        let outcome = s.commit().await.unwrap();
        assert!(
            matches!(
                outcome,
                SetCookie::Set {
                    max_age: Some(_),
                    ..
                }
            ),
            "{outcome:?}"
        );
        let later = f.open(Some(&cookie));
        assert_eq!(later.lifetime().await.unwrap(), remember);
        assert_eq!(later.get::<i64>("n").await.unwrap(), Some(1));
    }

    /// An update on the plain path, dropped during its save (which landed):
    /// the commit does not write it, or the request's earlier changes it
    /// carried, again over what another request wrote since.
    #[tokio::test]
    async fn an_update_dropped_during_its_save_leaves_nothing_for_the_commit() {
        let (f, hook) = Hooked::fixture(false, false);
        let cookie = f.stored().await;
        let s = f.with_n_on_the_plain_path(&cookie).await;
        let (_answer, held) = tokio::sync::oneshot::channel();
        *hook.held_save_answer.lock().unwrap() = Some(held);
        {
            let mut update = std::pin::pin!(s.increment("n", 1));
            assert!(poll_once(update.as_mut()).is_pending(), "not saving");
        }
        assert_eq!(f.n(&cookie).await, Some(6), "the save landed");
        assert_eq!(f.increment_elsewhere(&cookie).await, 7);
        assert_eq!(s.commit_without_store(), None);
        s.commit().await.unwrap();
        assert_eq!(f.n(&cookie).await, Some(7));
        assert_eq!(
            f.open(Some(&cookie))
                .lifetime()
                .await
                .unwrap()
                .idle_timeout(),
            Some(Duration::from_secs(600))
        );
    }

    #[tokio::test]
    async fn an_update_whose_save_failed_leaves_nothing_for_the_commit() {
        let f = fixture();
        let cookie = f.stored().await;
        let s = f.with_n_on_the_plain_path(&cookie).await;
        f.store.fail_with(Some(StoreErrorKind::Unavailable));
        assert!(s.increment("n", 1).await.is_err());
        f.store.fail_with(None);
        // The failed increment was not acknowledged: its value is gone, and
        // the commit writes what the request had before it.
        assert_eq!(s.get::<i64>("n").await.unwrap(), Some(5));
        s.commit().await.unwrap();
        assert_eq!(f.n(&cookie).await, Some(5));
    }

    #[tokio::test]
    async fn without_retries_an_update_after_a_stale_read_loads_first() {
        let f = fixture_with(Config::builder().with_conflict_retries(0));
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        // Another process updates the session after this request read it.
        assert_eq!(f.increment_elsewhere(&cookie).await, 1);
        assert_eq!(s.increment("n", 1).await.unwrap(), 2);
        s.commit().await.unwrap();
        assert_eq!(f.n(&cookie).await, Some(2));
    }

    #[tokio::test]
    async fn without_retries_an_update_never_starts_from_this_process_s_last_save() {
        let f = fixture_with(Config::builder().with_conflict_retries(0));
        let cookie = f.stored().await;
        // This process saves an update (its turn keeps the saved copy)...
        let s = f.open(Some(&cookie));
        assert_eq!(s.increment("n", 1).await.unwrap(), 1);
        s.commit().await.unwrap();
        // ...then another process updates the session.
        assert_eq!(f.increment_elsewhere(&cookie).await, 2);
        // Starting from the kept copy would lose the compare-and-set, and
        // with no retries that is `Contention`; the update loads instead.
        let s = f.open(Some(&cookie));
        assert_eq!(s.increment("n", 1).await.unwrap(), 3);
        s.commit().await.unwrap();
        assert_eq!(f.n(&cookie).await, Some(3));
    }

    #[tokio::test]
    async fn an_update_after_a_stale_read_reloads_and_counts_exactly() {
        let f = fixture();
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        // Another process updates the session after this request read it.
        assert_eq!(f.increment_elsewhere(&cookie).await, 1);
        let before = f.store.counts();
        // The read copy loses the compare-and-set once; the retry loads.
        assert_eq!(s.increment("n", 1).await.unwrap(), 2);
        s.commit().await.unwrap();
        assert_eq!(f.loads_and_saves_since(&before), (1, 2));
        assert_eq!(f.n(&cookie).await, Some(2));
    }

    #[tokio::test]
    async fn an_update_after_a_read_starts_from_a_newer_save_of_this_process() {
        let f = fixture();
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        // Another request of this process saves after `s` read.
        let o = f.open(Some(&cookie));
        assert_eq!(o.increment("n", 1).await.unwrap(), 1);
        o.commit().await.unwrap();
        let before = f.store.counts();
        // `s` starts from that save, not from its older read: no conflict.
        assert_eq!(s.increment("n", 1).await.unwrap(), 2);
        s.commit().await.unwrap();
        assert_eq!(f.loads_and_saves_since(&before), (0, 1));
    }

    #[tokio::test]
    async fn repeated_updates_in_one_process_skip_the_load() {
        let f = fixture();
        let cookie = f.stored().await;
        let before = f.store.counts();
        for expected in 1..=5 {
            let s = f.open(Some(&cookie));
            assert_eq!(s.increment("n", 1).await.unwrap(), expected);
            // The rest of the request sees the copy the update started from.
            assert_eq!(s.get_string("name").await.unwrap(), "iris");
            s.commit().await.unwrap();
        }
        // The first update loads; the others start from the copy this process
        // saved last.
        assert_eq!(f.loads_and_saves_since(&before), (1, 5));
    }

    #[tokio::test]
    async fn concurrent_updates_are_gathered_into_few_saves() {
        let f = fixture();
        let cookie = f.stored().await;
        let before = f.store.counts();
        f.increment_concurrently(&cookie, 16).await;
        let after = f.store.counts();
        let saves = after.save - before.save;
        assert!(saves < 16, "{saves} saves for 16 gathered updates");
        assert_eq!(after.load - before.load, 1);
        assert_eq!(f.n(&cookie).await, Some(16));
    }

    /// The fixture's store, saying that it does not gather updates.
    #[derive(Debug)]
    struct Ungathered(Instrumented<TestStore>);

    impl Store for Ungathered {
        crate::store::forward_store!(|this| this.0, crate::store::pass_through, group_commit: false);
    }

    #[tokio::test]
    async fn a_store_without_group_commit_saves_each_update_at_once() {
        let mut f = fixture();
        f.manager = Manager::new(Ungathered(f.store.clone()), Config::default())
            .with_clock(f.clock.clone());
        let cookie = f.stored().await;
        let before = f.store.counts();
        // As in `concurrent_updates_are_gathered_into_few_saves`, which
        // gathers them.
        f.increment_concurrently(&cookie, 16).await;
        // One save each, and still one load: each starts from the copy the
        // one before it saved.
        assert_eq!(f.loads_and_saves_since(&before), (1, 16));
        assert_eq!(f.n(&cookie).await, Some(16));
    }

    #[tokio::test]
    async fn records_sharing_a_turn_never_mix_their_updates() {
        let f = fixture();
        // Two sessions whose records share one of the manager's turns.
        let first = f.stored().await;
        let second = f.stored_sharing_a_turn_with(&first).await;
        let tasks: Vec<_> = (0..40)
            .map(|i| f.spawn_increment(if i % 2 == 0 { &first } else { &second }))
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        for cookie in [&first, &second] {
            assert_eq!(f.n(cookie).await, Some(20));
        }
    }

    /// Polls `future` once, with a waker that does nothing.
    fn poll_once<F: std::future::Future>(
        future: std::pin::Pin<&mut F>,
    ) -> std::task::Poll<F::Output> {
        future.poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    }

    fn saves_at_once(f: &Fixture, cookie: &str) -> bool {
        let rid = Id::parse(cookie).unwrap().record_id();
        f.manager
            .record_lock(&rid)
            .try_lock()
            .unwrap()
            .saves_at_once(rid)
    }

    #[tokio::test]
    async fn a_session_updated_alone_saves_at_once_until_updates_overlap() {
        let f = fixture();
        let cookie = f.stored().await;
        f.update_alone_until_saving_at_once(&cookie).await;
        // A fresh cooperative budget, so that only the update decides.
        tokio::task::yield_now().await;
        // Saved within its first poll: no saver task to wait for.
        let s = f.open(Some(&cookie));
        let std::task::Poll::Ready(n) = poll_once(std::pin::pin!(s.increment("n", 1))) else {
            panic!("not saved at once");
        };
        assert_eq!(n.unwrap(), i64::from(batch::INLINE_AFTER) + 1);

        // Updates that overlap (the store takes a while, so they queue for the
        // turn) gather again.
        f.store.delay(Some(Duration::from_millis(20)));
        let before = f.store.counts();
        let tasks: Vec<_> = (0..8).map(|_| f.spawn_increment(&cookie)).collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        f.store.delay(None);
        let saves = f.store.counts().save - before.save;
        assert!(saves <= 3, "{saves} saves for 8 overlapping updates");
        assert!(!saves_at_once(&f, &cookie));
        assert_eq!(
            f.open(Some(&cookie)).get::<i64>("n").await.unwrap(),
            Some(i64::from(batch::INLINE_AFTER) + 9)
        );
    }

    /// An update that picked its record, then waited for the record's turn
    /// while another handle of the request rotated the session, starts over
    /// on the new record instead of writing the retired one (which this
    /// process's copy in the turn still shows live).
    #[tokio::test]
    async fn an_update_waiting_for_its_turn_during_a_rotation_goes_to_the_new_record() {
        let f = fixture();
        let cookie = f.stored().await;
        // An earlier request's update leaves its saved copy in the turn.
        let earlier = f.open(Some(&cookie));
        assert_eq!(earlier.increment("n", 1).await.unwrap(), 1);
        earlier.commit().await.unwrap();
        let s = f.open(Some(&cookie));
        assert_eq!(s.get::<i64>("n").await.unwrap(), Some(1));
        let rid = Id::parse(&cookie).unwrap().record_id();
        let held = f.manager.record_lock(&rid).lock().await;
        let mut update = std::pin::pin!(s.increment("n", 1));
        assert!(
            poll_once(update.as_mut()).is_pending(),
            "did not wait for the turn"
        );
        s.login("alice").await.unwrap();
        let before = f.store.counts();
        drop(held);
        assert_eq!(update.await.unwrap(), 2);
        // One save, of the new record: none is tried on the retired one.
        assert_eq!(f.store.counts().save - before.save, 1);
        let rotated = value(s.commit().await.unwrap());
        let after = f.open(Some(&rotated));
        assert_eq!(after.get::<i64>("n").await.unwrap(), Some(2));
        assert_eq!(after.owner().await.unwrap().as_deref(), Some("alice"));
        assert!(f.open(Some(&cookie)).is_empty().await.unwrap());
    }

    /// How [`overtaken`] sets the scene.
    #[derive(Clone, Copy, Default)]
    struct Scene {
        /// The saver writes before `other` runs.
        saver_first: bool,
        /// The request sets `n` to 5 before it increments, a pending change
        /// that the increment's save carries.
        five_first: bool,
        /// The saver's save fails.
        save_fails: bool,
        /// Once the saver wrote, another request increments `n`.
        incremented_elsewhere: bool,
    }

    /// A request on a stored session increments `n`; while the increment
    /// waits for its gathered save (set as `scene` says), another handle of
    /// the request runs `other`. Returns the fixture, the old cookie, the
    /// session and what the increment returned.
    async fn overtaken<F, Fut>(scene: Scene, other: F) -> (Fixture, String, Session, Result<i64>)
    where
        F: FnOnce(Session) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let f = fixture();
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        if scene.five_first {
            s.insert("n", 5i64).await.unwrap();
        }
        let updated = {
            let mut update = std::pin::pin!(s.increment("n", 1));
            assert!(poll_once(update.as_mut()).is_pending(), "saved at once");
            if scene.save_fails {
                f.store.fail_saves_with(Some(StoreErrorKind::Unavailable));
            }
            if scene.saver_first {
                f.let_the_saver_write().await;
            }
            f.store.fail_saves_with(None);
            if scene.incremented_elsewhere {
                f.increment_elsewhere(&cookie).await;
            }
            other(s.clone()).await;
            update.await
        };
        (f, cookie, s, updated)
    }

    /// The request's `n` of 5, which its increment's save carried, landed
    /// as 6 and another request made it 7, before the increment took its
    /// outcome; meanwhile another handle of the request runs `other`.
    /// Returns the fixture, the old cookie, the session and what the
    /// increment returned.
    async fn carried_then_written_over<F, Fut>(other: F) -> (Fixture, String, Session, Result<i64>)
    where
        F: FnOnce(Session) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let scene = Scene {
            saver_first: true,
            five_first: true,
            save_fails: false,
            incremented_elsewhere: true,
        };
        overtaken(scene, other).await
    }

    /// Sets `x` to 1 through a handle of the request and saves at once.
    async fn insert_x_and_save(handle: Session) {
        handle.insert("x", 1i64).await.unwrap();
        handle.save().await.unwrap();
    }

    /// A rotation through another handle reloads the record and applies the
    /// request's pending changes again: not the ones an update's save
    /// already wrote, which would undo the update itself, or another
    /// request's write made since.
    #[tokio::test]
    async fn a_rotation_does_not_apply_again_what_a_gathered_save_carried() {
        for incremented_elsewhere in [false, true] {
            let scene = Scene {
                saver_first: true,
                five_first: true,
                save_fails: false,
                incremented_elsewhere,
            };
            let (f, cookie, s, updated) = overtaken(scene, |other| async move {
                other.login("alice").await.unwrap();
            })
            .await;
            assert_eq!(updated.unwrap(), 6);
            let expected = if incremented_elsewhere { 7 } else { 6 };
            assert_eq!(s.get::<i64>("n").await.unwrap(), Some(expected));
            let rotated = value(s.commit().await.unwrap());
            assert_ne!(rotated, cookie);
            let after = f.open(Some(&rotated));
            assert_eq!(after.get::<i64>("n").await.unwrap(), Some(expected));
            assert_eq!(after.owner().await.unwrap().as_deref(), Some("alice"));
        }
    }

    /// As for a rotation: a save after a conflict reloads and applies the
    /// pending changes again, leaving out those an update's save wrote.
    #[tokio::test]
    async fn a_save_after_a_conflict_does_not_apply_again_what_a_gathered_save_carried() {
        let (f, cookie, s, updated) = carried_then_written_over(insert_x_and_save).await;
        assert_eq!(updated.unwrap(), 6);
        assert!(matches!(s.commit().await.unwrap(), SetCookie::Unchanged));
        assert_eq!(f.n_and_x(&cookie).await, (Some(7), Some(1)));
    }

    /// Another update of the request, which conflicts on this process's
    /// copy and runs again on the fresh record, sees and keeps what the
    /// other request wrote, not the request's 5 again: of the same key or
    /// another.
    #[tokio::test]
    async fn another_update_does_not_apply_again_what_a_gathered_save_carried() {
        for key in ["n", "m"] {
            let (f, cookie, s, updated) = carried_then_written_over(|other| async move {
                let expected = if key == "n" { 8 } else { 1 };
                assert_eq!(other.increment(key, 1).await.unwrap(), expected);
            })
            .await;
            assert_eq!(updated.unwrap(), 6);
            s.commit().await.unwrap();
            let n = if key == "n" { 8 } else { 7 };
            assert_eq!(f.n(&cookie).await, Some(n), "{key}");
        }
    }

    /// Two updates of one request gathered into one save, the second after
    /// another pending write: the first to take the outcome leaves the
    /// request seeing what was saved, not that write applied again over the
    /// second update's value.
    #[tokio::test]
    async fn updates_of_one_request_saved_together_leave_it_what_they_saved() {
        let f = fixture();
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        s.insert("x", 1i64).await.unwrap();
        let mut first = std::pin::pin!(s.increment("a", 1));
        assert!(poll_once(first.as_mut()).is_pending(), "saved at once");
        s.insert("n", 5i64).await.unwrap();
        let mut second = std::pin::pin!(s.increment("n", 1));
        assert!(poll_once(second.as_mut()).is_pending(), "saved at once");
        f.let_the_saver_write().await;
        assert_eq!(first.await.unwrap(), 1);
        assert_eq!(s.get::<i64>("n").await.unwrap(), Some(6));
        assert_eq!(second.await.unwrap(), 6);
        assert_eq!(s.get::<i64>("n").await.unwrap(), Some(6));
        assert!(matches!(s.commit().await.unwrap(), SetCookie::Unchanged));
        assert_eq!(f.n(&cookie).await, Some(6));
    }

    /// Two updates of one request saved one after the other, each carrying
    /// the writes pending then: until the later one takes its outcome, the
    /// request still sees the write only that one carried; and a save after
    /// a conflict applies neither update's carried writes again over
    /// another request's write made since.
    #[tokio::test]
    async fn updates_of_one_request_saved_apart_each_leave_out_what_they_carried() {
        for first_taken_early in [true, false] {
            let f = fixture();
            let cookie = f.stored().await;
            let s = f.open(Some(&cookie));
            s.insert("m", 5i64).await.unwrap();
            let mut first = std::pin::pin!(s.increment("a", 1));
            assert!(poll_once(first.as_mut()).is_pending(), "saved at once");
            f.let_the_saver_write().await;
            s.insert("n", 5i64).await.unwrap();
            let mut second = std::pin::pin!(s.increment("a", 1));
            assert!(poll_once(second.as_mut()).is_pending(), "saved at once");
            f.let_the_saver_write().await;
            if first_taken_early {
                assert_eq!(first.as_mut().await.unwrap(), 1);
                assert_eq!(s.get::<i64>("n").await.unwrap(), Some(5));
            }
            assert_eq!(f.increment_elsewhere(&cookie).await, 6);
            insert_x_and_save(s.clone()).await;
            if !first_taken_early {
                assert_eq!(first.await.unwrap(), 1);
            }
            assert_eq!(second.await.unwrap(), 2);
            assert_eq!(f.n(&cookie).await, Some(6), "{first_taken_early}");
            let after = f.open(Some(&cookie));
            assert_eq!(after.get::<i64>("m").await.unwrap(), Some(5));
            assert_eq!(after.get::<i64>("a").await.unwrap(), Some(2));
        }
    }

    /// The log forgets the saves that carried only changes it dropped.
    #[test]
    fn a_log_forgets_the_saves_of_the_changes_it_drops() {
        let mut log = Log::default();
        log.push(Change::Remove("a".into()));
        log.carried(Arc::default());
        log.push(Change::Remove("b".into()));
        log.carried(Arc::default());
        log.drop_until(1);
        assert_eq!(
            (log.start, log.changes.len(), log.carriers.len()),
            (1, 1, 1)
        );
        log.clear();
        assert_eq!(
            (log.start, log.changes.len(), log.carriers.len()),
            (2, 0, 0)
        );
    }

    /// An update that carries the request's earlier changes leaves its save
    /// to a saver task, also where updates save at once: cancelled, it
    /// still lets the request's other handles learn what was written, so
    /// they do not write those changes again over what another request
    /// wrote since.
    #[tokio::test]
    async fn an_update_carrying_earlier_changes_leaves_its_save_to_a_saver() {
        let f = fixture();
        let cookie = f.stored().await;
        f.update_alone_until_saving_at_once(&cookie).await;
        tokio::task::yield_now().await;
        let s = f.open(Some(&cookie));
        s.insert("n", 50i64).await.unwrap();
        {
            let mut update = std::pin::pin!(s.increment("n", 1));
            assert!(poll_once(update.as_mut()).is_pending(), "saved at once");
        }
        f.let_the_saver_write().await;
        assert_eq!(f.increment_elsewhere(&cookie).await, 52);
        insert_x_and_save(s).await;
        assert_eq!(f.n_and_x(&cookie).await, (Some(52), Some(1)));
    }

    /// Two updates of one key, the first after a pending write of it, join
    /// one gathering: the second counts from the first's value, not from the
    /// pending write the first already carried into the gathering.
    #[tokio::test]
    async fn two_updates_of_a_key_written_earlier_in_the_request_both_count() {
        let f = fixture();
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        s.insert("n", 5i64).await.unwrap();
        s.insert("m", 10i64).await.unwrap();
        let mut first = std::pin::pin!(s.increment("n", 1));
        assert!(poll_once(first.as_mut()).is_pending(), "saved at once");
        let mut second = std::pin::pin!(s.increment("n", 1));
        assert!(poll_once(second.as_mut()).is_pending(), "saved at once");
        let mut third = std::pin::pin!(s.increment("m", 1));
        assert!(poll_once(third.as_mut()).is_pending(), "saved at once");
        f.let_the_saver_write().await;
        assert_eq!(first.await.unwrap(), 6);
        assert_eq!(second.await.unwrap(), 7);
        assert_eq!(third.await.unwrap(), 11);
        s.commit().await.unwrap();
        assert_eq!(f.n(&cookie).await, Some(7));
        assert_eq!(
            f.open(Some(&cookie)).get::<i64>("m").await.unwrap(),
            Some(11)
        );
    }

    /// Changes sent with a save that failed may or may not have been
    /// written: another handle's save after a conflict does not write them
    /// again over what another request wrote since.
    #[tokio::test]
    async fn changes_a_failed_save_carried_are_not_applied_again_by_another_handle() {
        let scene = Scene {
            saver_first: true,
            five_first: true,
            save_fails: true,
            incremented_elsewhere: true,
        };
        let (f, cookie, s, updated) = overtaken(scene, insert_x_and_save).await;
        assert!(
            matches!(updated, Err(Error::Store { op: "save", .. })),
            "{updated:?}"
        );
        s.commit().await.unwrap();
        assert_eq!(f.n_and_x(&cookie).await, (Some(1), Some(1)));
    }

    /// An update waiting for its gathered save while another handle of the
    /// request destroys the session: whether the save lands first or is
    /// refused, the session stays destroyed.
    #[tokio::test]
    async fn an_update_overtaken_by_a_destroy_of_its_session_does_not_bring_it_back() {
        for saver_first in [false, true] {
            let scene = Scene {
                saver_first,
                ..Scene::default()
            };
            let (f, _, s, updated) = overtaken(scene, |other| async move {
                other.destroy().await.unwrap();
            })
            .await;
            if saver_first {
                assert_eq!(updated.unwrap(), 1);
            } else {
                assert!(matches!(updated, Err(Error::Ended)), "{updated:?}");
            }
            assert!(s.is_empty().await.unwrap());
            assert!(matches!(s.commit().await.unwrap(), SetCookie::Remove));
            assert!(f.store.inner().is_empty());
        }
    }

    /// An update waiting for its gathered save while another handle of the
    /// request rotates the session: whether the save lands before the old
    /// record is retired (carried over) or after (refused, so the update
    /// goes to the new record), the request keeps the new id, its owner and
    /// the increment.
    #[tokio::test]
    async fn an_update_overtaken_by_a_rotation_of_its_session_lands_in_the_new_one() {
        for saver_first in [false, true] {
            let scene = Scene {
                saver_first,
                ..Scene::default()
            };
            let (f, cookie, s, updated) = overtaken(scene, |other| async move {
                other.login("alice").await.unwrap();
            })
            .await;
            assert_eq!(updated.unwrap(), 1);
            assert_eq!(s.owner().await.unwrap().as_deref(), Some("alice"));
            assert_eq!(s.get::<i64>("n").await.unwrap(), Some(1));
            let rotated = value(s.commit().await.unwrap());
            assert_ne!(rotated, cookie);
            let after = f.open(Some(&rotated));
            assert_eq!(after.get::<i64>("n").await.unwrap(), Some(1));
            assert_eq!(after.get_string("name").await.unwrap(), "iris");
            assert_eq!(after.owner().await.unwrap().as_deref(), Some("alice"));
            assert!(f.open(Some(&cookie)).is_empty().await.unwrap());
        }
    }

    #[tokio::test]
    async fn saving_at_once_is_decided_per_record_not_per_turn() {
        let f = fixture();
        let first = f.stored().await;
        let second = f.stored_sharing_a_turn_with(&first).await;
        f.update_alone_until_saving_at_once(&second).await;
        assert!(!saves_at_once(&f, &first));
        tokio::task::yield_now().await;
        // The other record's lone saves do not make this one skip gathering:
        // its first poll waits for a saver.
        let s = f.open(Some(&first));
        let mut update = std::pin::pin!(s.increment("n", 1));
        assert!(poll_once(update.as_mut()).is_pending(), "saved at once");
        assert_eq!(update.await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_cancelled_update_saving_at_once_leaves_the_record_consistent() {
        let f = fixture();
        let cookie = f.stored().await;
        f.update_alone_until_saving_at_once(&cookie).await;
        f.store.delay(Some(Duration::from_millis(200)));
        let task = f.spawn_increment(&cookie);
        // The update holds the turn and waits for its save; its client goes.
        tokio::time::sleep(Duration::from_millis(50)).await;
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        f.store.delay(None);
        let before = f.store.counts();
        let n = tokio::time::timeout(
            Duration::from_secs(5),
            f.open(Some(&cookie)).increment("n", 1),
        )
        .await
        .expect("the turn was released")
        .unwrap();
        // The cancelled increment was never acknowledged; whether it landed
        // or not, the next one builds on what is stored, which it reloads.
        let warm = i64::from(batch::INLINE_AFTER);
        assert!(n == warm + 1 || n == warm + 2, "{n}");
        assert_eq!(f.store.counts().load - before.load, 1);
        assert_eq!(
            f.open(Some(&cookie)).get::<i64>("n").await.unwrap(),
            Some(n)
        );
    }

    #[tokio::test]
    async fn a_probe_gathers_updates_that_never_wait_for_the_turn() {
        // The store answers at once, so updates saving at once never overlap;
        // the probe gathering notices the ones ready together.
        let f = fixture();
        let cookie = f.stored().await;
        f.update_alone_until_saving_at_once(&cookie).await;
        let before = f.store.counts();
        let tasks: Vec<_> = (0..40).map(|_| f.spawn_increment(&cookie)).collect();
        let mut seen = Vec::new();
        for t in tasks {
            seen.push(t.await.unwrap().unwrap());
        }
        seen.sort_unstable();
        let first = i64::from(batch::INLINE_AFTER) + 1;
        assert_eq!(seen, (first..first + 40).collect::<Vec<i64>>());
        let saves = f.store.counts().save - before.save;
        // Up to the probe each saves at once; the probe gathers the rest.
        assert_eq!(
            saves,
            u64::from(batch::PROBE_EVERY),
            "saves for 40 updates ready together"
        );
        assert!(!saves_at_once(&f, &cookie));
    }

    #[test]
    fn updates_gather_on_a_local_set_too() {
        // actix-web runs each worker's tasks on a `LocalSet`.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async {
            let f = fixture();
            let cookie = f.stored().await;
            let before = f.store.counts();
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let s = f.open(Some(&cookie));
                    tokio::task::spawn_local(async move {
                        let n = s.increment("n", 1).await?;
                        s.commit().await?;
                        Ok::<_, Error>(n)
                    })
                })
                .collect();
            let mut seen = Vec::new();
            for t in tasks {
                seen.push(t.await.unwrap().unwrap());
            }
            seen.sort_unstable();
            assert_eq!(seen, (1..=16).collect::<Vec<i64>>());
            let saves = f.store.counts().save - before.save;
            assert!(saves <= 2, "{saves} saves for 16 updates ready together");
        });
    }

    #[tokio::test]
    async fn a_cancelled_update_strands_nobody_waiting_with_it() {
        let f = fixture();
        let cookie = f.stored().await;
        // This process now holds the record's last copy: no load below.
        assert_eq!(f.open(Some(&cookie)).increment("n", 1).await.unwrap(), 1);
        f.store.delay(Some(Duration::from_millis(200)));
        let tasks: Vec<_> = (0..8).map(|_| f.spawn_increment(&cookie)).collect();
        // All have joined the gathering and wait for its (slow) save; the
        // first request's client goes away.
        tokio::time::sleep(Duration::from_millis(50)).await;
        tasks[0].abort();
        let mut acknowledged = 0;
        for t in tasks.into_iter().skip(1) {
            let n = tokio::time::timeout(Duration::from_secs(5), t)
                .await
                .expect("a waiting update was stranded")
                .unwrap()
                .unwrap();
            assert!(n > 1);
            acknowledged += 1;
        }
        f.store.delay(None);
        let n = f
            .open(Some(&cookie))
            .get::<i64>("n")
            .await
            .unwrap()
            .unwrap();
        // The cancelled request's change was already gathered: it may be saved.
        assert!(n == 1 + acknowledged || n == 2 + acknowledged, "{n}");
    }

    #[tokio::test]
    async fn an_update_sees_the_requests_own_pending_writes() {
        let f = fixture();
        let cookie = f.stored().await;
        assert_eq!(f.open(Some(&cookie)).increment("n", 1).await.unwrap(), 1);
        // Written earlier in the same request, not yet committed.
        let s = f.open(Some(&cookie));
        s.insert("n", &5i64).await.unwrap();
        assert_eq!(s.increment("n", 1).await.unwrap(), 6);
        s.commit().await.unwrap();
        let s = f.open(Some(&cookie));
        assert_eq!(s.get::<i64>("n").await.unwrap(), Some(6));
        s.remove("n").await.unwrap();
        assert_eq!(s.increment("n", 1).await.unwrap(), 1);
        s.clear().await.unwrap();
        assert_eq!(s.increment("n", 10).await.unwrap(), 10);
        s.commit().await.unwrap();
        let s = f.open(Some(&cookie));
        assert_eq!(s.get::<i64>("n").await.unwrap(), Some(10));
        // `clear` went in with the update: nothing else is left.
        assert_eq!(s.keys().await.unwrap(), ["n"]);
        // A pending value that does not decode fails the update and changes
        // nothing stored.
        s.insert("n", "not a number").await.unwrap();
        assert!(matches!(
            s.increment("n", 1).await,
            Err(Error::Value { .. })
        ));
        assert_eq!(f.n(&cookie).await, Some(10));
    }

    #[tokio::test]
    async fn a_failed_gathered_save_acknowledges_nobody() {
        let f = fixture();
        let cookie = f.stored().await;
        assert_eq!(f.open(Some(&cookie)).increment("n", 1).await.unwrap(), 1);
        f.store.fail_with(Some(StoreErrorKind::Unavailable));
        let tasks: Vec<_> = (0..4).map(|_| f.spawn_increment(&cookie)).collect();
        for t in tasks {
            let err = t.await.unwrap().unwrap_err();
            assert!(matches!(err, Error::Store { op: "save", .. }), "{err}");
            assert_eq!(err.http_status(), 503);
        }
        f.store.fail_with(None);
        assert_eq!(f.n(&cookie).await, Some(1));
    }

    #[tokio::test]
    async fn a_stale_copy_costs_a_reload_never_a_lost_write() {
        let f = fixture();
        let cookie = f.stored().await;
        assert_eq!(f.open(Some(&cookie)).increment("n", 1).await.unwrap(), 1);
        // Another process (its own manager, the same store) writes meanwhile.
        let other = Manager::new(f.store.clone(), Config::builder().build().unwrap());
        let s = other.session_from_cookies(Some(format!("session={cookie}").as_str()));
        assert_eq!(s.increment("n", 10).await.unwrap(), 11);
        s.insert("name", "changed").await.unwrap();
        s.commit().await.unwrap();

        let s = f.open(Some(&cookie));
        assert_eq!(s.increment("n", 1).await.unwrap(), 12);
        assert_eq!(s.get_string("name").await.unwrap(), "changed");
        s.commit().await.unwrap();
    }

    #[tokio::test]
    async fn idle_sessions_expire() {
        let f = fixture();
        let cookie = f.stored().await;
        f.clock
            .advance(2 * 3600 * Duration::from_secs(1) + Duration::from_secs(1));
        let s = f.open(Some(&cookie));
        assert!(s.is_empty().await.unwrap());
    }

    #[tokio::test]
    async fn a_session_ends_at_its_deadlines_to_the_millisecond() {
        const HOUR: Duration = Duration::from_secs(3600);
        const MS: Duration = Duration::from_millis(1);
        let f = fixture_with(
            Config::builder()
                .with_idle_timeout(Some(2 * HOUR))
                .with_absolute_timeout(Some(24 * HOUR)),
        );
        let cookie = f.stored().await;
        // The same store read under a one-hour absolute timeout: the timeout
        // in force now counts, not the deadline the record was stored with.
        let strict = Manager::new(
            f.store.clone(),
            Config::builder()
                .with_absolute_timeout(Some(HOUR))
                .build()
                .unwrap(),
        )
        .with_clock(f.clock.clone());
        let header = format!("session={cookie}");
        let alive = |m: &Manager| {
            let s = m.session_from_cookies(Some(header.as_str()));
            async move { !s.is_empty().await.unwrap() }
        };
        f.clock.advance(HOUR - MS);
        assert!(alive(&strict).await, "ended before the absolute timeout");
        f.clock.advance(MS);
        assert!(!alive(&strict).await, "alive at the absolute timeout");
        // Reads without a commit do not touch: the idle deadline stands.
        f.clock.advance(HOUR - MS);
        assert!(alive(&f.manager).await, "ended before the idle timeout");
        f.clock.advance(MS);
        assert!(!alive(&f.manager).await, "alive at the idle timeout");
    }

    #[tokio::test]
    async fn a_touch_from_an_older_copy_leaves_a_newer_write_s_deadline() {
        let f = fixture();
        let cookie = f.stored().await;
        f.clock.advance(10 * MINUTE);
        // This request loads with the configured two-hour idle timeout; its
        // commit will find a touch due.
        let s = f.open(Some(&cookie));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        // Meanwhile another request shortens the lifetime and saves.
        let other = f.open(Some(&cookie));
        other
            .set_lifetime(Some(Lifetime::new().with_idle_timeout(Some(30 * MINUTE))))
            .await
            .unwrap();
        other.commit().await.unwrap();
        let deadline = f.open(Some(&cookie)).expires_at().await.unwrap();
        // The touch from the older copy is refused; the session lives on
        // with the newer write's deadline.
        assert_eq!(s.commit().await.unwrap(), SetCookie::Unchanged);
        assert_eq!(f.open(Some(&cookie)).expires_at().await.unwrap(), deadline);
        assert!(deadline.is_some());
    }

    /// A touch extends the idle deadline from the time its request commits,
    /// not from when it loaded: a slow request never moves back a deadline
    /// that a later request set, nor ends a session in use by touching it
    /// into the past.
    #[tokio::test]
    async fn a_slow_requests_touch_never_moves_the_deadline_back() {
        let f = fixture();
        let cookie = f.stored().await;
        let deadline = || async { f.open(Some(&cookie)).expires_at().await.unwrap().unwrap() };
        f.clock.advance(10 * MINUTE);
        let slow = f.open(Some(&cookie));
        assert_eq!(slow.get_string("name").await.unwrap(), "iris");
        f.clock.advance(10 * MINUTE);
        let quick = f.open(Some(&cookie));
        quick.get_string("name").await.unwrap();
        quick.commit().await.unwrap();
        let quicks = deadline().await;
        f.clock.advance(MINUTE);
        slow.commit().await.unwrap();
        assert!(deadline().await > quicks, "the slow request moved it back");

        // Slower than the idle timeout (two hours), while other requests
        // keep the session alive; its touch is due when it loads.
        f.clock.advance(2 * MINUTE);
        let slowest = f.open(Some(&cookie));
        assert_eq!(slowest.get_string("name").await.unwrap(), "iris");
        for _ in 0..5 {
            f.clock.advance(30 * MINUTE);
            let s = f.open(Some(&cookie));
            assert_eq!(s.get_string("name").await.unwrap(), "iris");
            s.commit().await.unwrap();
        }
        slowest.commit().await.unwrap();
        let s = f.open(Some(&cookie));
        assert_eq!(
            s.get_string("name").await.unwrap(),
            "iris",
            "ended by a touch"
        );
    }

    #[tokio::test]
    async fn activity_never_extends_past_the_absolute_timeout() {
        let f = fixture();
        let cookie = f.stored().await;
        // Active every 30 minutes for 23.5 hours: alive all along.
        for _ in 0..47 {
            f.clock.advance(30 * MINUTE);
            let s = f.open(Some(&cookie));
            assert_eq!(s.get_string("name").await.unwrap(), "iris");
            s.commit().await.unwrap();
        }
        let s = f.open(Some(&cookie));
        let deadline = s.expires_at().await.unwrap().unwrap();
        s.commit().await.unwrap();
        f.clock.advance(31 * MINUTE);
        let s = f.open(Some(&cookie));
        assert!(
            s.is_empty().await.unwrap(),
            "alive past the absolute timeout"
        );
        assert!(Timestamp::from(deadline) <= crate::Clock::now(&f.clock));
    }

    #[tokio::test]
    async fn remember_me_is_stored_and_sets_max_age() {
        let f = fixture();
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        let month = Duration::from_secs(30 * 24 * 3600);
        s.set_lifetime(Some(
            Lifetime::new()
                .with_idle_timeout(Some(month))
                .with_absolute_timeout(Some(3 * month))
                .with_persistent_cookie(true),
        ))
        .await
        .unwrap();
        match s.commit().await.unwrap() {
            SetCookie::Set { value, max_age } => {
                assert_eq!(value, cookie);
                assert_eq!(max_age, Some(month));
            }
            other => panic!("expected Set, got {other:?}"),
        }
        // Three days idle: past the configured 2 hours, within the override.
        f.clock.advance(Duration::from_secs(3 * 24 * 3600));
        let s = f.open(Some(&cookie));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        // The touch refreshes the persistent cookie's Max-Age.
        assert!(matches!(
            s.commit().await.unwrap(),
            SetCookie::Set {
                max_age: Some(_),
                ..
            }
        ));
        // A lifetime without timeouts is refused.
        assert!(matches!(
            f.open(Some(&cookie))
                .set_lifetime(Some(Lifetime::new()))
                .await,
            Err(Error::Invalid(_))
        ));
    }

    /// Set per session or for every session: the configured touch interval
    /// (60 s) is not shorter than the idle timeout.
    #[tokio::test]
    async fn an_idle_timeout_shorter_than_the_touch_interval_stays_alive_in_use() {
        let idle = Duration::from_secs(45);
        let per_session = fixture();
        let cookie = per_session.stored().await;
        let s = per_session.open(Some(&cookie));
        s.set_lifetime(Some(Lifetime::new().with_idle_timeout(Some(idle))))
            .await
            .unwrap();
        s.commit().await.unwrap();
        stays_alive_in_use(&per_session, &cookie, idle).await;
        let configured = fixture_with(Config::builder().with_idle_timeout(Some(idle)));
        let cookie = configured.stored().await;
        stays_alive_in_use(&configured, &cookie, idle).await;
    }

    async fn stays_alive_in_use(f: &Fixture, cookie: &str, idle: Duration) {
        // Read every 22.5 s (half the idle timeout; the configured touch
        // interval is 60 s): each read moves the deadline, so it never passes.
        for _ in 0..8 {
            f.clock.advance(idle / 2);
            let s = f.open(Some(cookie));
            assert_eq!(s.get_string("name").await.unwrap(), "iris");
            s.commit().await.unwrap();
        }
        // Unused for longer than the idle timeout: ended.
        f.clock.advance(idle + Duration::from_secs(1));
        assert_eq!(f.open(Some(cookie)).get_string("name").await.unwrap(), "");
    }

    #[tokio::test]
    async fn a_store_error_is_an_error_never_a_fresh_session() {
        let f = fixture();
        let cookie = f.stored().await;
        f.store.fail_with(Some(StoreErrorKind::Unavailable));
        let s = f.open(Some(&cookie));
        assert!(matches!(
            s.get_string("name").await,
            Err(Error::Store { op: "load", .. })
        ));
        assert!(matches!(
            s.insert("name", "x").await,
            Err(Error::Store { .. })
        ));
        f.store.fail_with(None);
        // The same handle recovers once the store is back, and nothing was lost.
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_store_times_out() {
        let f = fixture_with(Config::builder().with_store_timeout(Duration::from_millis(200)));
        let cookie = f.stored().await;
        f.store.delay(Some(Duration::from_secs(60)));
        let started = tokio::time::Instant::now();
        let err = f.open(Some(&cookie)).get_string("name").await.unwrap_err();
        assert!(matches!(err, Error::Timeout { op: "load", .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_timeout_too_far_away_to_represent_is_no_limit() {
        let f = fixture_with(Config::builder().with_store_timeout(Duration::MAX));
        let cookie = f.stored().await;
        f.store.delay(Some(Duration::from_secs(3600)));
        let started = tokio::time::Instant::now();
        assert_eq!(
            f.open(Some(&cookie)).get_string("name").await.unwrap(),
            "iris"
        );
        assert!(started.elapsed() >= Duration::from_secs(3600));
    }

    #[tokio::test]
    async fn a_stored_version_without_successor_is_corrupted_not_wrapped() {
        let f = fixture();
        let cookie = f.stored().await;
        let rid = Id::parse(&cookie).unwrap().record_id();
        let mut record = f.store.inner().load(&rid).await.unwrap().unwrap();
        record.version = u64::MAX;
        f.store.inner().put_raw(record);
        let corrupted = |err: &Error| {
            matches!(err, Error::Store { op: "save", source }
                if source.kind() == StoreErrorKind::Corrupted)
        };

        // A change committed after the handler, and an update, which
        // saves through the gathering.
        let s = f.open(Some(&cookie));
        s.insert("name", "go").await.unwrap();
        assert!(corrupted(&s.commit().await.unwrap_err()));
        let err = f.open(Some(&cookie)).increment("n", 1).await.unwrap_err();
        assert!(corrupted(&err), "{err:?}");

        // Nothing was written: the record still reads as it was.
        let kept = f.store.inner().load(&rid).await.unwrap().unwrap();
        assert_eq!(kept.version, u64::MAX);
        let s = f.open(Some(&cookie));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        assert_eq!(s.get::<i64>("n").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_bad_value_fails_only_its_own_read() {
        let f = fixture();
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        let err = s.get::<u32>("name").await.unwrap_err();
        assert!(matches!(&err, Error::Value { key, .. } if key == "name"));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
    }

    /// The flash `notice` as a request takes it.
    async fn take_notice(s: &Session) -> Option<String> {
        s.take_flash("notice").await.unwrap()
    }

    #[tokio::test]
    async fn flash_values_are_read_once() {
        let f = fixture();
        let s = f.open(None);
        s.insert_flash("notice", "saved").await.unwrap();
        assert!(
            s.keys().await.unwrap().is_empty(),
            "flashes are not ordinary keys"
        );
        let cookie = value(s.commit().await.unwrap());
        let s = f.open(Some(&cookie));
        assert_eq!(
            s.peek_flash::<String>("notice").await.unwrap().as_deref(),
            Some("saved")
        );
        assert_eq!(take_notice(&s).await.as_deref(), Some("saved"));
        assert_eq!(take_notice(&s).await, None);
        s.commit().await.unwrap();
        assert_eq!(take_notice(&f.open(Some(&cookie))).await, None);
    }

    #[tokio::test]
    async fn clear_keeps_the_flashes_and_clear_flashes_keeps_the_values() {
        let f = fixture();
        let s = f.open(None);
        s.insert("a", &1).await.unwrap();
        s.insert("b", &2).await.unwrap();
        s.insert_flash("notice", "saved").await.unwrap();
        s.insert_flash("alert", "late").await.unwrap();
        assert_eq!(s.len().await.unwrap(), 2, "flashes are not counted");
        assert_eq!(s.flash_keys().await.unwrap(), ["alert", "notice"]);
        let cookie = value(s.commit().await.unwrap());

        let s = f.open(Some(&cookie));
        s.clear().await.unwrap();
        assert!(s.is_empty().await.unwrap());
        assert_eq!(s.flash_keys().await.unwrap(), ["alert", "notice"]);
        s.commit().await.unwrap();

        let s = f.open(Some(&cookie));
        assert!(s.keys().await.unwrap().is_empty());
        assert_eq!(
            s.peek_flash::<String>("notice").await.unwrap().as_deref(),
            Some("saved")
        );
        s.insert("c", &3).await.unwrap();
        assert!(s.remove_flash("alert").await.unwrap());
        assert!(!s.remove_flash("alert").await.unwrap());
        s.clear_flashes().await.unwrap();
        assert!(s.flash_keys().await.unwrap().is_empty());
        assert_eq!(s.keys().await.unwrap(), ["c"]);
        s.commit().await.unwrap();

        let s = f.open(Some(&cookie));
        assert!(s.flash_keys().await.unwrap().is_empty());
        assert_eq!(take_notice(&s).await, None);
        assert_eq!(s.get::<i64>("c").await.unwrap(), Some(3));
    }

    /// An update retried after another process saved applies the request's
    /// clears again, each to its own kind of value.
    #[tokio::test]
    async fn an_update_retried_after_a_clear_applies_it_to_its_kind_only() {
        let f = fixture();
        let s = f.open(None);
        s.insert("n", &5).await.unwrap();
        s.insert_flash("notice", "saved").await.unwrap();
        let cookie = value(s.commit().await.unwrap());

        let s = f.open(Some(&cookie));
        s.clear_flashes().await.unwrap();
        assert_eq!(f.increment_elsewhere(&cookie).await, 6);
        assert_eq!(s.increment("n", 1).await.unwrap(), 7, "the values stay");
        s.commit().await.unwrap();
        assert!(f.open(Some(&cookie)).flash_keys().await.unwrap().is_empty());

        let s = f.open(Some(&cookie));
        s.insert_flash("notice", "again").await.unwrap();
        s.clear().await.unwrap();
        assert_eq!(f.increment_elsewhere(&cookie).await, 8);
        assert_eq!(s.increment("n", 1).await.unwrap(), 1, "the values went");
        s.commit().await.unwrap();
        assert_eq!(
            f.open(Some(&cookie)).flash_keys().await.unwrap(),
            ["notice"],
            "the flash stays"
        );
    }

    #[tokio::test]
    async fn a_clear_applied_again_after_a_conflict_keeps_the_flashes_written_meanwhile() {
        let f = fixture();
        let cookie = f.stored().await;
        let a = f.open(Some(&cookie));
        a.clear().await.unwrap();
        let b = f.open(Some(&cookie));
        b.insert("v", &1).await.unwrap();
        b.insert_flash("notice", "saved").await.unwrap();
        b.commit().await.unwrap();
        a.commit().await.unwrap();
        let s = f.open(Some(&cookie));
        assert!(
            s.keys().await.unwrap().is_empty(),
            "the clear covers what the other request wrote first"
        );
        assert_eq!(s.flash_keys().await.unwrap(), ["notice"]);
    }

    /// A flash taken by one request while another sets a new one under the
    /// same key: the taking request's save conflicts, and applying its take
    /// again on the newer record leaves the new flash for the next request.
    #[tokio::test]
    async fn a_take_applied_again_after_a_conflict_keeps_a_flash_set_meanwhile() {
        let f = fixture();
        let cookie = f.with_notice("one").await;
        let a = f.open(Some(&cookie));
        assert_eq!(take_notice(&a).await.as_deref(), Some("one"));
        assert_eq!(take_notice(&a).await, None, "taken once");
        let b = f.open(Some(&cookie));
        b.insert_flash("notice", "two").await.unwrap();
        b.commit().await.unwrap();
        a.commit().await.unwrap();
        let s = f.open(Some(&cookie));
        assert_eq!(take_notice(&s).await.as_deref(), Some("two"));
        s.commit().await.unwrap();
        // Taken when it is still the value taken: gone.
        assert_eq!(
            f.open(Some(&cookie)).flash_keys().await.unwrap(),
            Vec::<String>::new()
        );
    }

    /// An update after a take in the same request, when another request set
    /// the key meanwhile, starts from that request's value: the take removes
    /// only the value it took.
    #[tokio::test]
    async fn an_update_after_a_take_starts_from_a_value_set_meanwhile() {
        let f = fixture();
        let s = f.open(None);
        s.insert("n", &5).await.unwrap();
        let cookie = value(s.commit().await.unwrap());
        let a = f.open(Some(&cookie));
        assert_eq!(a.take::<i64>("n").await.unwrap(), Some(5));
        let b = f.open(Some(&cookie));
        b.insert("n", &7).await.unwrap();
        b.commit().await.unwrap();
        assert_eq!(a.increment("n", 1).await.unwrap(), 8);
        a.commit().await.unwrap();
        assert_eq!(
            f.open(Some(&cookie)).get::<i64>("n").await.unwrap(),
            Some(8)
        );
    }

    /// A cookie that verified under a previous key is issued again under the
    /// current one, so the old key can be retired while its sessions live.
    #[tokio::test]
    async fn a_cookie_under_a_previous_key_comes_back_under_the_current_one() {
        use crate::{CookieKeys, CookieSecurity, Key};
        let (old, new) = (Key::generate(), Key::generate());
        for private in [false, true] {
            let store = TestStore::default();
            let manager = |keys: CookieKeys| {
                let security = if private {
                    CookieSecurity::Private(keys)
                } else {
                    CookieSecurity::Signed(keys)
                };
                let config = Config::builder().with_security(security).build().unwrap();
                Manager::new(store.clone(), config)
            };
            let before = manager(CookieKeys::new(old.clone()));
            let during = manager(CookieKeys::new(new.clone()).with_previous(old.clone()));
            let after = manager(CookieKeys::new(new.clone()));
            let open = |m: &Manager, value: &str| {
                m.session_from_cookies(Some(format!("session={value}").as_str()))
            };

            let s = before.session_from_cookies(None::<&str>);
            s.insert("name", "iris").await.unwrap();
            let under_old = value(s.commit().await.unwrap());

            // A read alone, answered without a store call, re-issues it.
            let s = open(&during, &under_old);
            assert_eq!(s.get_string("name").await.unwrap(), "iris");
            let reissued = match s.commit_without_store() {
                Some(SetCookie::Set {
                    value,
                    max_age: None,
                }) => value,
                other => panic!("not issued again: {other:?}"),
            };
            assert_ne!(reissued, under_old);
            // Under the current key it is left alone.
            let s = open(&during, &reissued);
            assert_eq!(s.get_string("name").await.unwrap(), "iris");
            assert_eq!(s.commit().await.unwrap(), SetCookie::Unchanged);
            // Once the old key is gone, the re-issued cookie still works.
            assert_eq!(
                open(&after, &reissued).get_string("name").await.unwrap(),
                "iris"
            );
            assert_eq!(
                open(&after, &under_old).get_string("name").await.unwrap(),
                ""
            );
        }
    }

    /// A cookie re-issued under the current key by a request whose touch
    /// another request's save overtook carries that save's deadline.
    #[tokio::test]
    async fn a_reissued_persistent_cookie_after_a_refused_touch_has_the_saved_deadline() {
        use crate::{CookieKeys, CookieSecurity, Key};
        let (old, new) = (Key::generate(), Key::generate());
        let store = TestStore::default();
        let clock = ManualClock::new();
        let idle = Duration::from_secs(600);
        let manager = |keys: CookieKeys| {
            let config = Config::builder()
                .with_security(CookieSecurity::Signed(keys))
                .with_idle_timeout(Some(idle))
                .with_persistent_cookie(true)
                .build()
                .unwrap();
            Manager::new(store.clone(), config).with_clock(clock.clone())
        };
        let before = manager(CookieKeys::new(old.clone()));
        let during = manager(CookieKeys::new(new).with_previous(old));
        let s = before.session_from_cookies(None::<&str>);
        s.insert("n", &1).await.unwrap();
        let under_old = format!("session={}", value(s.commit().await.unwrap()));

        // Two thirds of the idle timeout later: a touch is due.
        clock.advance(Duration::from_secs(400));
        let s = during.session_from_cookies([under_old.as_str()]);
        assert_eq!(s.get::<i64>("n").await.unwrap(), Some(1));
        // Another request saves first, with a deadline a full timeout away.
        let other = during.session_from_cookies([under_old.as_str()]);
        other.increment("n", 1).await.unwrap();
        other.commit().await.unwrap();
        match s.commit().await.unwrap() {
            SetCookie::Set { max_age, .. } => assert_eq!(max_age, Some(idle)),
            unchanged => panic!("not re-issued: {unchanged:?}"),
        }
    }

    #[tokio::test]
    async fn cycle_id_moves_the_data_and_keeps_the_creation_time() {
        let f = fixture();
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        let deadline_before = s.expires_at().await.unwrap();
        f.clock.advance(MINUTE);
        s.cycle_id().await.unwrap();
        let new = value(s.commit().await.unwrap());
        assert_ne!(new, cookie);
        assert!(f.open(Some(&cookie)).is_empty().await.unwrap());
        let s = f.open(Some(&new));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        // Same creation time: the absolute deadline did not move.
        assert!(s.expires_at().await.unwrap() >= deadline_before);
        // A session not stored yet has nothing to rotate.
        let fresh = f.open(None);
        fresh.cycle_id().await.unwrap();
        assert_eq!(fresh.commit().await.unwrap(), SetCookie::Unchanged);
    }

    #[tokio::test]
    async fn a_write_made_while_a_request_rotates_its_id_is_carried_over() {
        let f = fixture();
        let mut cookie = f.stored().await;
        for login in [false, true] {
            let s = f.open(Some(&cookie));
            assert_eq!(s.get_string("name").await.unwrap(), "iris");
            // Another request increments after this one loaded...
            let n = f.increment_elsewhere(&cookie).await;
            // ...so this request's copy is stale when it rotates the id.
            if login {
                s.login("alice").await.unwrap();
            } else {
                s.cycle_id().await.unwrap();
            }
            let new = value(s.commit().await.unwrap());
            assert_eq!(f.n(&new).await, Some(n), "login: {login}");
            assert_eq!(f.open(Some(&new)).get_string("name").await.unwrap(), "iris");
            assert!(f.open(Some(&cookie)).is_empty().await.unwrap());
            cookie = new;
        }
    }

    /// A store with hooks for the moments tests need to reach: another
    /// process incrementing `n` of (or destroying) the session whose cookie
    /// it is given just before the next `create`, the moment between a
    /// rotation's load and the retirement of the old record; and loads that
    /// fail once a save has conflicted, a reload that cannot reach the store.
    #[derive(Clone, Debug)]
    struct Hooked {
        inner: Instrumented<TestStore>,
        clock: ManualClock,
        cookie: Arc<std::sync::Mutex<Option<String>>>,
        /// Destroy the session instead of incrementing it.
        destroy: bool,
        fail_after_conflict: bool,
        /// Touches fail (a rotation cannot retire the old record).
        fail_touches: Arc<AtomicBool>,
        /// Creates fail (a rotation cannot write its new record).
        fail_creates: Arc<AtomicBool>,
        /// Deletes fail.
        fail_deletes: Arc<AtomicBool>,
        /// Saves land, then answer only after the store timeout (the reply
        /// is lost on the way).
        slow_saves: Arc<AtomicBool>,
        /// Touches land, then fail (the reply is lost on the way).
        lose_touch_replies: Arc<AtomicBool>,
        /// Touches never answer (the store timeout ends them) and land a
        /// minute later.
        late_touches: Arc<AtomicBool>,
        /// Listings of an owner's sessions fail.
        fail_listings: Arc<AtomicBool>,
        /// The next save answers a conflict without saving.
        conflict_next_save: Arc<AtomicBool>,
        /// The next touch first logs this owner out everywhere.
        end_owner_at_touch: Arc<std::sync::Mutex<Option<String>>>,
        /// Creates panic.
        panic_creates: Arc<AtomicBool>,
        /// Once a create has run, loads fail until this is cleared.
        fail_loads_after_create: Arc<AtomicBool>,
        /// Loads fail (armed by `fail_loads_after_create`).
        fail_loads: Arc<AtomicBool>,
        /// The next save lands, then answers once this is sent.
        held_save_answer: Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>>,
        /// The next load reads the store, then answers once this is sent.
        held_load_answer: Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>>,
        /// The next `delete_owner` lists the owner once, has this session
        /// change its id, then deletes what it listed (as a store without
        /// the owner's deletion in one step may).
        rotate_during_owner_pass: Arc<std::sync::Mutex<Option<Session>>>,
        /// The next listing of an owner's sessions waits for this before it
        /// reads the store.
        held_listing: Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>>,
    }

    impl Hooked {
        /// A manager over these hooks and `f`'s clock, with the owner's
        /// sessions capped at `cap`.
        fn capped_manager(&self, f: &Fixture, cap: usize) -> Manager {
            let config = Config::builder().with_max_sessions_per_owner(Some(cap));
            Manager::new(self.clone(), config.build().unwrap()).with_clock(f.clock.clone())
        }

        /// A fixture whose manager goes through the hooks.
        fn fixture(destroy: bool, fail_after_conflict: bool) -> (Fixture, Self) {
            let store = Instrumented::new(TestStore::default());
            let clock = ManualClock::new();
            let hooked = Self {
                inner: store.clone(),
                clock: clock.clone(),
                cookie: Arc::default(),
                destroy,
                fail_after_conflict,
                fail_touches: Arc::default(),
                fail_creates: Arc::default(),
                fail_deletes: Arc::default(),
                slow_saves: Arc::default(),
                lose_touch_replies: Arc::default(),
                late_touches: Arc::default(),
                fail_listings: Arc::default(),
                conflict_next_save: Arc::default(),
                end_owner_at_touch: Arc::default(),
                held_save_answer: Arc::default(),
                held_load_answer: Arc::default(),
                panic_creates: Arc::default(),
                fail_loads_after_create: Arc::default(),
                fail_loads: Arc::default(),
                rotate_during_owner_pass: Arc::default(),
                held_listing: Arc::default(),
            };
            let manager = Manager::new(hooked.clone(), Config::default()).with_clock(clock.clone());
            let f = Fixture {
                store,
                clock,
                manager,
            };
            (f, hooked)
        }

        /// Starts `s.increment("n", 1)` on a task of its own and returns
        /// once its load has read the store and waits to answer, until the
        /// returned sender is used or dropped.
        async fn increment_with_its_load_held(
            &self,
            s: &Session,
        ) -> (
            tokio::sync::oneshot::Sender<()>,
            tokio::task::JoinHandle<Result<i64>>,
        ) {
            let (answer, held) = tokio::sync::oneshot::channel();
            *self.held_load_answer.lock().unwrap() = Some(held);
            let update = tokio::spawn({
                let s = s.clone();
                async move { s.increment("n", 1).await }
            });
            while self.held_load_answer.lock().unwrap().is_some() {
                tokio::task::yield_now().await;
            }
            (answer, update)
        }
    }

    #[async_trait::async_trait]
    impl Store for Hooked {
        async fn load(&self, id: &RecordId) -> std::result::Result<Option<Record>, StoreError> {
            if self.fail_loads.load(Ordering::SeqCst) {
                return Err(StoreError::new(StoreErrorKind::Unavailable, "loads fail"));
            }
            let found = self.inner.load(id).await;
            let held = self.held_load_answer.lock().unwrap().take();
            if let Some(answer) = held {
                let _ = answer.await;
            }
            found
        }
        async fn create(&self, record: &Record) -> std::result::Result<Created, StoreError> {
            if self.fail_creates.load(Ordering::SeqCst) {
                return Err(StoreError::new(StoreErrorKind::Unavailable, "creates fail"));
            }
            assert!(!self.panic_creates.load(Ordering::SeqCst), "creates panic");
            let cookie = self.cookie.lock().unwrap().take();
            if let Some(cookie) = cookie {
                // A saver task under way (of an update of the rotating
                // request, waiting for its save) writes first.
                for _ in 0..8 {
                    tokio::task::yield_now().await;
                }
                let other = Manager::new(self.inner.clone(), Config::default())
                    .with_clock(self.clock.clone());
                let o = other.session_from_cookies(Some(format!("session={cookie}").as_str()));
                if self.destroy {
                    o.destroy().await.unwrap();
                } else {
                    o.increment("n", 1).await.unwrap();
                }
                o.commit().await.unwrap();
            }
            let created = self.inner.create(record).await;
            if self.fail_loads_after_create.load(Ordering::SeqCst) {
                self.fail_loads.store(true, Ordering::SeqCst);
            }
            created
        }
        async fn save(
            &self,
            record: &Record,
            expected: u64,
        ) -> std::result::Result<Saved, StoreError> {
            if self.conflict_next_save.swap(false, Ordering::SeqCst) {
                return Ok(Saved::Conflict);
            }
            let saved = self.inner.save(record, expected).await;
            let held = self.held_save_answer.lock().unwrap().take();
            if let Some(answer) = held {
                let _ = answer.await;
            }
            if self.slow_saves.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            if self.fail_after_conflict && matches!(saved, Ok(Saved::Conflict)) {
                self.inner.fail_with(Some(StoreErrorKind::Unavailable));
            }
            saved
        }
        async fn touch(
            &self,
            id: &RecordId,
            version: u64,
            owner: Option<&str>,
            expires_at: Timestamp,
        ) -> std::result::Result<bool, StoreError> {
            if self.fail_touches.load(Ordering::SeqCst) {
                return Err(StoreError::new(StoreErrorKind::Unavailable, "touches fail"));
            }
            let owner_to_end = self.end_owner_at_touch.lock().unwrap().take();
            if let Some(ended) = owner_to_end {
                self.inner.delete_owner(&ended).await?;
            }
            if self.late_touches.load(Ordering::SeqCst) {
                let (inner, id, owner) = (self.inner.clone(), *id, owner.map(str::to_owned));
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    let _ = inner
                        .touch(&id, version, owner.as_deref(), expires_at)
                        .await;
                });
                std::future::pending::<()>().await;
            }
            let touched = self.inner.touch(id, version, owner, expires_at).await;
            if self.lose_touch_replies.load(Ordering::SeqCst) {
                return Err(StoreError::new(StoreErrorKind::Unavailable, "reply lost"));
            }
            touched
        }
        async fn delete(&self, id: &RecordId) -> std::result::Result<(), StoreError> {
            if self.fail_deletes.load(Ordering::SeqCst) {
                return Err(StoreError::new(StoreErrorKind::Unavailable, "deletes fail"));
            }
            self.inner.delete(id).await
        }
        async fn delete_expired(&self) -> std::result::Result<u64, StoreError> {
            self.inner.delete_expired().await
        }
        async fn delete_all(&self) -> std::result::Result<u64, StoreError> {
            self.inner.delete_all().await
        }
        async fn ids_of_owner(
            &self,
            owner: &str,
        ) -> std::result::Result<Vec<RecordId>, StoreError> {
            let held = self.held_listing.lock().unwrap().take();
            if let Some(release) = held {
                let _ = release.await;
            }
            if self.fail_listings.load(Ordering::SeqCst) {
                return Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    "listings fail",
                ));
            }
            self.inner.ids_of_owner(owner).await
        }
        async fn delete_owner(&self, owner: &str) -> std::result::Result<u64, StoreError> {
            let rotating = self.rotate_during_owner_pass.lock().unwrap().take();
            let Some(session) = rotating else {
                return self.inner.delete_owner(owner).await;
            };
            let listed = self.inner.ids_of_owner(owner).await?;
            session.cycle_id().await.expect("the rotation");
            let mut n = 0;
            for id in listed {
                let found = self.inner.load(&id).await?;
                if found.is_some_and(|r| r.owner.as_deref() == Some(owner)) {
                    self.inner.delete(&id).await?;
                    n += 1;
                }
            }
            Ok(n)
        }
    }

    /// An update that loaded without holding its record's turn starts from
    /// a copy that another handle of its request read meanwhile, when that
    /// copy is newer than its load: it saves once, with no conflict.
    #[tokio::test]
    async fn an_update_starts_from_a_newer_copy_its_request_read_while_it_loaded() {
        let (f, hook) = Hooked::fixture(false, false);
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        let (answer, update) = hook.increment_with_its_load_held(&s).await;
        assert_eq!(f.increment_elsewhere(&cookie).await, 1);
        assert_eq!(s.get::<i64>("n").await.unwrap(), Some(1));
        let before = f.store.counts();
        answer.send(()).unwrap();
        assert_eq!(update.await.unwrap().unwrap(), 2);
        assert_eq!(
            f.loads_and_saves_since(&before),
            (0, 1),
            "no second load, one save, no conflict"
        );
        s.commit().await.unwrap();
        assert_eq!(f.n(&cookie).await, Some(2));
    }

    /// Without retries the first conflict is final, so an update must not
    /// start from a load that a save of this process overtook: two
    /// concurrent updates of one session (each loading, without holding the
    /// turn, while the other saves) both land.
    #[tokio::test(start_paused = true)]
    async fn without_retries_an_update_does_not_start_from_a_load_a_save_overtook() {
        let f = fixture_with(Config::builder().with_conflict_retries(0));
        let cookie = f.stored().await;
        let delay = f.manager.config().store_timeout() / 4;
        f.store.delay(Some(delay));
        let (a, b) = (f.open(Some(&cookie)), f.open(Some(&cookie)));
        let first = tokio::spawn({
            let a = a.clone();
            async move { a.increment("n", 1).await }
        });
        tokio::time::sleep(delay / 2).await;
        let second = tokio::spawn({
            let b = b.clone();
            async move { b.increment("n", 1).await }
        });
        let (first, second) = (first.await.unwrap(), second.await.unwrap());
        assert_eq!(first.unwrap(), 1);
        assert_eq!(second.unwrap(), 2);
        a.commit().await.unwrap();
        b.commit().await.unwrap();
        f.store.delay(None);
        assert_eq!(f.n(&cookie).await, Some(2));
    }

    /// Without retries, an update does not start from a load older than
    /// what its own request saved while it loaded (the first conflict
    /// would be final): it loads again, holding the turn.
    #[tokio::test]
    async fn without_retries_an_update_starts_from_what_its_request_saved_while_it_loaded() {
        let (f, hook) = Hooked::fixture(false, false);
        let config = Config::builder().with_conflict_retries(0).build().unwrap();
        let m = Manager::new(hook.clone(), config).with_clock(f.clock.clone());
        let cookie = f.stored().await;
        let s = m.session_from_cookies(Some(format!("session={cookie}").as_str()));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        let (answer, update) = hook.increment_with_its_load_held(&s).await;
        s.insert("theme", "dark").await.unwrap();
        s.save().await.unwrap();
        answer.send(()).unwrap();
        assert_eq!(update.await.unwrap().unwrap(), 1);
        s.commit().await.unwrap();
        assert_eq!(f.n(&cookie).await, Some(1));
        let back = f.open(Some(&cookie));
        assert_eq!(back.get_string("theme").await.unwrap(), "dark");
    }

    /// A save through the turn dropped during its store call (it landed)
    /// leaves the turn's copy of the record behind the store: an update
    /// whose load read before that save landed does not trust the turn's
    /// copy to vouch for its load, and loads again.
    #[tokio::test]
    async fn a_save_dropped_mid_call_makes_an_update_load_again() {
        let (f, hook) = Hooked::fixture(false, false);
        let config = Config::builder().with_conflict_retries(0).build().unwrap();
        let m = Manager::new(hook.clone(), config).with_clock(f.clock.clone());
        let cookie = f.stored().await;
        let open = || m.session_from_cookies(Some(format!("session={cookie}").as_str()));
        let rid = Id::parse(&cookie).unwrap().record_id();
        // Single updates in a row: the record's next updates save at once.
        for _ in 0..batch::INLINE_AFTER {
            let r = open();
            r.increment("n", 1).await.unwrap();
            r.commit().await.unwrap();
        }
        assert!(m.record_lock(&rid).try_lock().unwrap().saves_at_once(rid));
        let (answer, update) = hook.increment_with_its_load_held(&open()).await;
        // Another request's update saves at once, and is dropped after its
        // save landed.
        let (_never, held) = tokio::sync::oneshot::channel();
        *hook.held_save_answer.lock().unwrap() = Some(held);
        let other = open();
        {
            let mut dropped = std::pin::pin!(other.increment("n", 1));
            assert!(poll_once(dropped.as_mut()).is_pending(), "not saving");
        }
        assert_eq!(f.n(&cookie).await, Some(5), "the save landed");
        answer.send(()).unwrap();
        assert_eq!(update.await.unwrap().unwrap(), 6);
        assert_eq!(f.n(&cookie).await, Some(6));
    }

    /// A save outside an update whose answer comes after an update saved
    /// the record through its turn leaves the turn's newer copy alone: that
    /// copy vouches for loads made without holding the turn.
    #[tokio::test]
    async fn a_late_plain_save_does_not_move_the_turns_copy_back() {
        let (f, hook) = Hooked::fixture(false, false);
        let cookie = f.stored().await;
        let rid = Id::parse(&cookie).unwrap().record_id();
        let plain = f.open(Some(&cookie));
        plain.insert("theme", "dark").await.unwrap();
        let (answer, held) = tokio::sync::oneshot::channel();
        *hook.held_save_answer.lock().unwrap() = Some(held);
        let saving = tokio::spawn({
            let plain = plain.clone();
            async move { plain.save().await }
        });
        while hook.held_save_answer.lock().unwrap().is_some() {
            tokio::task::yield_now().await;
        }
        let update = f.open(Some(&cookie));
        assert_eq!(update.increment("n", 1).await.unwrap(), 1);
        let version_of_last = || {
            let turn = f.manager.record_lock(&rid).try_lock().unwrap();
            turn.last.as_ref().map(|r| (r.id, r.version))
        };
        let after_update = version_of_last();
        assert!(after_update.is_some_and(|(id, _)| id == rid));
        answer.send(()).unwrap();
        saving.await.unwrap().unwrap();
        assert_eq!(version_of_last(), after_update);
        assert_eq!(f.n(&cookie).await, Some(1));
    }

    /// A save of another record sharing the turn, made while an update
    /// loaded without the turn, leaves that load trusted: the turn knows
    /// which records its latest saves were of, so the update does not load
    /// again.
    #[tokio::test]
    async fn a_save_of_another_record_sharing_the_turn_leaves_a_load_trusted() {
        let (f, hook) = Hooked::fixture(false, false);
        // Two sessions whose records share a turn.
        let mut seen = std::collections::HashMap::new();
        let (a, b) = loop {
            let cookie = f.stored().await;
            let rid = Id::parse(&cookie).unwrap().record_id();
            let turn = std::ptr::from_ref(f.manager.record_lock(&rid));
            if let Some(other) = seen.insert(turn, cookie.clone()) {
                break (cookie, other);
            }
        };
        let s = f.open(Some(&a));
        let (answer, update) = hook.increment_with_its_load_held(&s).await;
        let other = f.open(Some(&b));
        assert_eq!(other.increment("n", 1).await.unwrap(), 1);
        let before = f.store.counts();
        answer.send(()).unwrap();
        assert_eq!(update.await.unwrap().unwrap(), 1);
        assert_eq!(f.loads_and_saves_since(&before), (0, 1), "no second load");
        assert_eq!(f.n(&a).await, Some(1));
        assert_eq!(f.n(&b).await, Some(1));
    }

    /// A login whose owner's session cap cannot be enforced (the listing
    /// fails) stands: the client is logged in, and the owner's next login
    /// enforces the cap.
    #[tokio::test]
    async fn a_login_stands_when_its_owner_cap_cannot_be_enforced() {
        let (f, hook) = Hooked::fixture(false, false);
        let capped = hook.capped_manager(&f, 1);
        let login = || async {
            // Each login a second after the one before: creation orders them.
            f.clock.advance(Duration::from_secs(1));
            let s = capped.session_from_cookies(None::<&str>);
            let logged_in = s.login("alice").await;
            (s, logged_in)
        };
        let (first, logged_in) = login().await;
        logged_in.unwrap();
        value(first.commit().await.unwrap());
        hook.fail_listings.store(true, Ordering::SeqCst);
        let (second, logged_in) = login().await;
        logged_in.unwrap();
        assert_eq!(second.owner().await.unwrap().as_deref(), Some("alice"));
        value(second.commit().await.unwrap());
        hook.fail_listings.store(false, Ordering::SeqCst);
        assert_eq!(capped.sessions_of("alice").await.unwrap().len(), 2);
        let (third, logged_in) = login().await;
        logged_in.unwrap();
        let kept = value(third.commit().await.unwrap());
        let left = capped.sessions_of("alice").await.unwrap();
        assert_eq!(left, vec![Id::parse(&kept).unwrap().record_id()]);
    }

    /// The cap ends the least recently used sessions, not the first made:
    /// a device signed in first and used since stays, one signed in later
    /// and left alone goes.
    #[tokio::test]
    async fn the_owner_cap_ends_the_least_recently_used_sessions() {
        let f = fixture_with(Config::builder().with_max_sessions_per_owner(Some(2)));
        let (laptop, _) = logged_in(&f, "alice", "laptop").await;
        f.clock.advance(Duration::from_secs(1));
        let (phone, _) = logged_in(&f, "alice", "phone").await;
        // The laptop is used past the touch interval: its deadline moves.
        f.clock.advance(Duration::from_secs(120));
        let s = f.open(Some(&laptop));
        assert_eq!(
            s.get::<String>("device").await.unwrap().as_deref(),
            Some("laptop")
        );
        s.commit().await.unwrap();
        f.clock.advance(Duration::from_secs(1));
        let (tablet, _) = logged_in(&f, "alice", "tablet").await;
        assert_eq!(f.manager.sessions_of("alice").await.unwrap().len(), 2);
        for (cookie, device, live) in [
            (&laptop, "laptop", true),
            (&phone, "phone", false),
            (&tablet, "tablet", true),
        ] {
            let owner = f.open(Some(cookie)).owner().await.unwrap();
            assert_eq!(owner.is_some(), live, "{device}");
        }
    }

    /// A double-clicked login under a cap of one, where the first login's
    /// session is used (its response saves a value) before the second
    /// login's cap looks at it: the second login still ends the first's
    /// session, made before its own, instead of both staying.
    #[tokio::test]
    async fn a_double_login_leaves_the_later_session_when_the_earlier_was_used_meanwhile() {
        let (f, hook) = Hooked::fixture(false, false);
        let capped = hook.capped_manager(&f, 1);
        let first = capped.session_from_cookies(None::<&str>);
        first.login("alice").await.unwrap();
        f.clock.advance(Duration::from_secs(1));
        let (release, held) = tokio::sync::oneshot::channel();
        *hook.held_listing.lock().unwrap() = Some(held);
        let second = capped.session_from_cookies(None::<&str>);
        let login = tokio::spawn({
            let second = second.clone();
            async move { second.login("alice").await }
        });
        while hook.held_listing.lock().unwrap().is_some() {
            tokio::task::yield_now().await;
        }
        f.clock.advance(Duration::from_secs(1));
        first.insert("notice", "welcome").await.unwrap();
        value(first.commit().await.unwrap());
        release.send(()).unwrap();
        login.await.unwrap().unwrap();
        let kept = value(second.commit().await.unwrap());
        let left = capped.sessions_of("alice").await.unwrap();
        assert_eq!(left, vec![Id::parse(&kept).unwrap().record_id()]);
    }

    /// A device that logs in again as the same owner is held to the cap
    /// like any login: its old record may have been ended by another
    /// device's login meanwhile, which makes the new one a session more,
    /// and a login before may have failed to enforce the cap (here: its
    /// listing failed).
    #[tokio::test]
    async fn logging_in_again_as_the_same_owner_enforces_the_cap() {
        let (f, hook) = Hooked::fixture(false, false);
        let capped = hook.capped_manager(&f, 1);
        let login = |cookie: Option<String>| {
            f.clock.advance(Duration::from_secs(1));
            let header = cookie.map(|c| format!("session={c}"));
            let s = capped.session_from_cookies(header.as_deref());
            async move {
                s.login("alice").await.unwrap();
                value(s.commit().await.unwrap())
            }
        };
        let device = login(None).await;
        hook.fail_listings.store(true, Ordering::SeqCst);
        let _other = login(None).await;
        hook.fail_listings.store(false, Ordering::SeqCst);
        assert_eq!(capped.sessions_of("alice").await.unwrap().len(), 2);
        let again = login(Some(device)).await;
        let left = capped.sessions_of("alice").await.unwrap();
        assert_eq!(left, vec![Id::parse(&again).unwrap().record_id()]);
    }

    /// Two logins of one owner at once under a cap of one (a double-clicked
    /// login button): each sees the other's new session, and the newer one
    /// stays, instead of each ending the other's.
    #[tokio::test(start_paused = true)]
    async fn concurrent_logins_under_a_cap_of_one_leave_one_session() {
        let f = fixture_with(Config::builder().with_max_sessions_per_owner(Some(1)));
        // Every call takes a while, so the two logins interleave.
        f.store.delay(Some(Duration::from_millis(10)));
        let (a, b) = (f.open(None), f.open(None));
        let (ra, rb) = tokio::join!(a.login("alice"), b.login("alice"));
        ra.unwrap();
        rb.unwrap();
        let (ca, cb) = (a.commit().await.unwrap(), b.commit().await.unwrap());
        f.store.delay(None);
        let left = f.manager.sessions_of("alice").await.unwrap();
        assert_eq!(left.len(), 1, "{left:?}");
        let survivor = [value(ca), value(cb)]
            .into_iter()
            .find(|c| Id::parse(c).unwrap().record_id() == left[0]);
        assert!(survivor.is_some(), "the session left is neither login's");
    }

    /// What acts on each of an owner's sessions keeps a few store calls in
    /// flight instead of making one round trip after another: a login over
    /// the owner's cap (loads, then deletes) and logging out the other
    /// devices (deletes). Every call here takes `delay`; one at a time, the
    /// nine sessions would take nine delays for each step.
    #[tokio::test(start_paused = true)]
    async fn an_owners_sessions_are_loaded_and_ended_a_few_at_a_time() {
        let f = fixture_with(Config::builder().with_max_sessions_per_owner(Some(1)));
        let uncapped = Manager::new(f.store.clone(), Config::default()).with_clock(f.clock.clone());
        let log_in_nine = || async {
            let before = f.manager.sessions_of("alice").await.unwrap().len();
            for _ in 0..9 {
                f.clock.advance(Duration::from_secs(1));
                let s = uncapped.session_from_cookies(None::<&str>);
                s.login("alice").await.unwrap();
                value(s.commit().await.unwrap());
            }
            let after = f.manager.sessions_of("alice").await.unwrap().len();
            assert_eq!(after, before + 9);
        };
        let delay = Duration::from_millis(100);
        log_in_nine().await;
        f.clock.advance(Duration::from_secs(1));
        let s = f.open(None);
        f.store.delay(Some(delay));
        let started = tokio::time::Instant::now();
        s.login("alice").await.unwrap();
        // The create, the listing, nine loads and nine deletes, eight at a
        // time: six delays (one at a time, twenty).
        assert!(started.elapsed() <= delay * 8, "{:?}", started.elapsed());
        let kept = value(s.commit().await.unwrap());
        f.store.delay(None);
        let left = f.manager.sessions_of("alice").await.unwrap();
        assert_eq!(left, vec![Id::parse(&kept).unwrap().record_id()]);

        log_in_nine().await;
        let here = uncapped.session_from_cookies(Some(format!("session={kept}").as_str()));
        f.store.delay(Some(delay));
        let started = tokio::time::Instant::now();
        assert_eq!(here.end_other_sessions().await.unwrap(), 9);
        // The load of this session, the listing and nine deletes: four
        // delays (one at a time, eleven).
        assert!(started.elapsed() <= delay * 6, "{:?}", started.elapsed());
        f.store.delay(None);
        let left = f.manager.sessions_of("alice").await.unwrap();
        assert_eq!(left, vec![Id::parse(&kept).unwrap().record_id()]);
    }

    /// A session that another request destroys while this one rotates it
    /// stays ended for the client even when its new record cannot be
    /// deleted: the cookie is removed, not moved to the new id.
    #[tokio::test]
    async fn a_rotation_of_a_destroyed_session_ends_it_when_the_cleanup_fails() {
        let (f, hook) = Hooked::fixture(true, false);
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        *hook.cookie.lock().unwrap() = Some(cookie.clone());
        hook.fail_deletes.store(true, Ordering::SeqCst);
        assert!(matches!(s.cycle_id().await, Err(Error::Store { .. })));
        assert!(matches!(s.commit().await.unwrap(), SetCookie::Remove));
    }

    /// A request on a stored session (`name = "iris"`) that sets `cart = 3`
    /// and rotates it (a login, or `cycle_id`) while the `fault` of the
    /// store is raised: the fixture, the old cookie, the session and what
    /// the rotation returned.
    async fn rotated_under(
        fault: fn(&Hooked) -> Arc<AtomicBool>,
        login: bool,
    ) -> (Fixture, String, Session, Result<()>) {
        let (f, hook) = Hooked::fixture(false, false);
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        s.insert("cart", &3).await.unwrap();
        fault(&hook).store(true, Ordering::SeqCst);
        let rotated = if login {
            s.login("alice").await
        } else {
            s.cycle_id().await
        };
        fault(&hook).store(false, Ordering::SeqCst);
        (f, cookie, s, rotated)
    }

    /// A rotation that wrote its new record but cannot retire the old one
    /// is undone: the new record is deleted, the client keeps the old id,
    /// and the request's changes are still saved to it.
    #[tokio::test]
    async fn a_rotation_that_cannot_retire_the_old_record_is_undone() {
        for login in [false, true] {
            let (f, cookie, s, rotated) = rotated_under(|h| h.fail_touches.clone(), login).await;
            assert!(matches!(rotated, Err(Error::Store { .. })), "{rotated:?}");
            assert_eq!(s.owner().await.unwrap(), None);
            assert!(matches!(s.commit().await.unwrap(), SetCookie::Unchanged));
            // Only the old record is left, with the request's write.
            assert_eq!(f.store.inner().len(), 1);
            let old = f.open(Some(&cookie));
            assert_eq!(old.get::<i64>("cart").await.unwrap(), Some(3));
            assert_eq!(old.get_string("name").await.unwrap(), "iris");
            assert!(f.manager.sessions_of("alice").await.unwrap().is_empty());
        }
    }

    /// A login over a session another owner signed out of (`logout` keeps
    /// the values) removes the values and flash values that owner left, as
    /// they were at the logout, and keeps what was written since (a
    /// visitor's cart, a page to return to), also through a `clear` of the
    /// visitor's; the same owner signing back in keeps everything. The marker
    /// is no value of the session's and leaves at the login.
    #[tokio::test]
    async fn a_login_after_another_owners_logout_keeps_none_of_their_values() {
        let f = fixture();
        let s = f.open(None);
        s.login("alice").await.unwrap();
        s.insert("cart", &3).await.unwrap();
        s.insert("lang", &"de").await.unwrap();
        s.insert_flash("notice", "for alice").await.unwrap();
        s.logout().await.unwrap();
        assert_eq!(s.keys().await.unwrap(), vec!["cart", "lang"]);
        assert_eq!(s.len().await.unwrap(), 2);
        let cookie = value(s.commit().await.unwrap());

        // The same owner back: everything stays, the marker goes.
        let s = f.open(Some(&cookie));
        s.login("alice").await.unwrap();
        assert_eq!(s.get::<i32>("cart").await.unwrap(), Some(3));
        let cookie = value(s.commit().await.unwrap());
        let rid = f.open(Some(&cookie)).record_id().await.unwrap().unwrap();
        let stored = f.store.load(&rid).await.unwrap().unwrap();
        assert!(!stored.data.contains_key(SIGNED_OUT_KEY));

        // Another owner after alice's logout: alice's values go, what the
        // visitor wrote since stays (a changed value, a new one).
        let s = f.open(Some(&cookie));
        s.logout().await.unwrap();
        let cookie = value(s.commit().await.unwrap());
        let s = f.open(Some(&cookie));
        s.insert("lang", &"fr").await.unwrap();
        s.insert("return_to", &"/checkout").await.unwrap();
        let cookie = match s.commit().await.unwrap() {
            SetCookie::Set { value, .. } => value,
            _ => cookie,
        };
        let s = f.open(Some(&cookie));
        s.login("bob").await.unwrap();
        assert_eq!(s.get::<i32>("cart").await.unwrap(), None);
        assert_eq!(s.take_flash::<String>("notice").await.unwrap(), None);
        assert_eq!(s.keys().await.unwrap(), vec!["lang", "return_to"]);
        let cookie = value(s.commit().await.unwrap());
        let s = f.open(Some(&cookie));
        assert_eq!(s.get_string("lang").await.unwrap(), "fr");
        assert_eq!(s.get_string("return_to").await.unwrap(), "/checkout");
        assert_eq!(s.owner().await.unwrap().as_deref(), Some("bob"));

        // A visitor's `clear` after the logout keeps the marker: alice's
        // unread flash still goes at bob's login.
        let s = f.open(None);
        s.login("alice").await.unwrap();
        s.insert_flash("notice", "for alice").await.unwrap();
        s.logout().await.unwrap();
        let cookie = value(s.commit().await.unwrap());
        let s = f.open(Some(&cookie));
        s.insert("cart", &1).await.unwrap();
        s.clear().await.unwrap();
        s.login("bob").await.unwrap();
        assert_eq!(s.take_flash::<String>("notice").await.unwrap(), None);

        // A session whose only trace is who signed out is empty, and a
        // `clear` of it writes nothing.
        let s = f.open(None);
        s.login("carol").await.unwrap();
        s.logout().await.unwrap();
        assert!(s.is_empty().await.unwrap());
        let cookie = value(s.commit().await.unwrap());
        let s = f.open(Some(&cookie));
        s.clear().await.unwrap();
        let saves = f.store.counts().save;
        assert!(matches!(s.commit().await.unwrap(), SetCookie::Unchanged));
        assert_eq!(f.store.counts().save, saves);
    }

    /// Changes made after the commit (a task or a body that writes once the
    /// response is under way) and never saved are reported when the
    /// session's last handle goes; saved ones, changes before the commit,
    /// and a session never committed are not.
    #[cfg(feature = "metrics")]
    #[test]
    fn changes_dropped_after_the_commit_are_reported() {
        let counts = crate::observe::tests::counted(async |_| {
            let f = fixture();
            let cookie = f.stored().await;
            let s = f.open(Some(&cookie));
            s.insert("a", &1).await.unwrap();
            s.commit().await.unwrap();
            s.insert("late", &2).await.unwrap();
            drop(s);
            let s = f.open(Some(&cookie));
            s.commit().await.unwrap();
            s.insert("late", &3).await.unwrap();
            s.save().await.unwrap();
            drop(s);
            let s = f.open(Some(&cookie));
            s.insert("never committed", &4).await.unwrap();
            drop(s);
            // A new session that held nothing by its commit writes nothing.
            let s = f.open(None);
            s.insert("a", &1).await.unwrap();
            s.remove("a").await.unwrap();
            s.commit().await.unwrap();
            drop(s);
        });
        assert_eq!(counts.get("session_changes_dropped_total"), 1);
    }

    /// A rotation is counted (and logged) when it stands, not when it is
    /// undone.
    #[cfg(feature = "metrics")]
    #[test]
    fn an_undone_rotation_is_not_counted() {
        let undone: fn(&Hooked) -> Arc<AtomicBool> = |h| h.fail_touches.clone();
        // The old record gone: a login stands with its own writes, a
        // `cycle_id` ends.
        let gone: fn(&Hooked) -> Arc<AtomicBool> = |h| h.lose_touch_replies.clone();
        for (fault, login, counted) in [(undone, false, 0), (gone, true, 1), (gone, false, 0)] {
            let counts = crate::observe::tests::counted(async |_| {
                let (_, _, _, rotated) = rotated_under(fault, login).await;
                assert!(rotated.is_err());
            });
            assert_eq!(counts.get("session_rotations_total"), counted);
        }
    }

    /// A rotation whose retiring touch landed but whose answer was lost
    /// finds the old record gone, which it cannot tell from a session
    /// another request ended meanwhile: the new record does not carry the
    /// session on. A `cycle_id` ends it; a login keeps only its own writes,
    /// as a login over an ended session does.
    #[tokio::test]
    async fn a_rotation_whose_retirement_landed_unanswered_carries_nothing_on() {
        for login in [false, true] {
            let (f, cookie, s, rotated) =
                rotated_under(|h| h.lose_touch_replies.clone(), login).await;
            assert!(matches!(rotated, Err(Error::Store { .. })), "{rotated:?}");
            let committed = s.commit().await.unwrap();
            assert!(f.open(Some(&cookie)).is_empty().await.unwrap());
            if login {
                let kept = f.open(Some(&value(committed)));
                assert_eq!(kept.get::<i64>("cart").await.unwrap(), Some(3));
                assert_eq!(kept.get_string("name").await.unwrap(), "");
                assert_eq!(kept.owner().await.unwrap().as_deref(), Some("alice"));
            } else {
                assert!(matches!(committed, SetCookie::Remove), "{committed:?}");
                // Nothing but the retired old record, past its deadline.
                f.store.delete_expired().await.unwrap();
                assert_eq!(f.store.inner().len(), 0);
            }
        }
    }

    /// A session another request destroys while this one rotates it, whose
    /// retiring touch then fails: the old record is found gone, and the new
    /// one, made from the destroyed session, does not bring it back.
    #[tokio::test]
    async fn a_session_destroyed_during_a_rotation_whose_retirement_failed_stays_ended() {
        for login in [false, true] {
            let (f, hook) = Hooked::fixture(true, false);
            let cookie = f.stored().await;
            let s = f.open(Some(&cookie));
            s.insert("cart", &3).await.unwrap();
            *hook.cookie.lock().unwrap() = Some(cookie.clone());
            hook.fail_touches.store(true, Ordering::SeqCst);
            let rotated = if login {
                s.login("alice").await
            } else {
                s.cycle_id().await
            };
            hook.fail_touches.store(false, Ordering::SeqCst);
            assert!(rotated.is_err(), "{rotated:?}");
            let committed = s.commit().await.unwrap();
            if login {
                // A fresh session with the login's own writes.
                let kept = f.open(Some(&value(committed)));
                assert_eq!(kept.get_string("name").await.unwrap(), "");
                assert_eq!(kept.get::<i64>("cart").await.unwrap(), Some(3));
            } else {
                assert!(matches!(committed, SetCookie::Remove), "{committed:?}");
                assert_eq!(f.store.inner().len(), 0, "the destroyed session is back");
            }
        }
    }

    /// A rotation whose retiring touch the store refused (another request
    /// wrote to the old id first) and which then fails: the old record was
    /// not retired, so the rotation is undone, and the other request's
    /// write, which the new record lacks, is not left behind.
    #[tokio::test]
    async fn a_rotation_failing_after_its_retiring_touch_was_refused_is_undone() {
        let (f, hook) = Hooked::fixture(false, false);
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        s.insert("cart", &3).await.unwrap();
        *hook.cookie.lock().unwrap() = Some(cookie.clone());
        hook.fail_loads_after_create.store(true, Ordering::SeqCst);
        let rotated = s.cycle_id().await;
        hook.fail_loads_after_create.store(false, Ordering::SeqCst);
        hook.fail_loads.store(false, Ordering::SeqCst);
        assert!(matches!(rotated, Err(Error::Store { .. })), "{rotated:?}");
        assert!(matches!(s.commit().await.unwrap(), SetCookie::Unchanged));
        assert_eq!(f.store.inner().len(), 1, "the new record is left");
        let old = f.open(Some(&cookie));
        assert_eq!(old.get::<i64>("n").await.unwrap(), Some(1));
        assert_eq!(old.get::<i64>("cart").await.unwrap(), Some(3));
        assert_eq!(old.get_string("name").await.unwrap(), "iris");
    }

    /// A rotation after a failed save of the request that did not land
    /// makes its new record from the request's copy, which shows what that
    /// save carried: the reload that finds the same version does not drop
    /// it.
    #[tokio::test]
    async fn a_rotation_after_a_failed_save_keeps_what_that_save_carried() {
        for login in [false, true] {
            let f = fixture();
            let cookie = f.stored().await;
            let s = f.open(Some(&cookie));
            s.insert("x", &1).await.unwrap();
            f.store.fail_saves_with(Some(StoreErrorKind::Unavailable));
            assert!(s.save().await.is_err());
            f.store.fail_saves_with(None);
            if login {
                s.login("alice").await.unwrap();
            } else {
                s.cycle_id().await.unwrap();
            }
            let new = value(s.commit().await.unwrap());
            let next = f.open(Some(&new));
            assert_eq!(
                next.get::<i32>("x").await.unwrap(),
                Some(1),
                "login: {login}"
            );
            assert_eq!(next.get_string("name").await.unwrap(), "iris");
        }
    }

    /// A rotation whose retiring touch timed out is not undone, although a
    /// load still finds the old record live: the touch may land later (here
    /// it does), and the client then needs the new record.
    #[tokio::test(start_paused = true)]
    async fn a_rotation_whose_retirement_timed_out_keeps_the_new_record() {
        let (f, cookie, s, rotated) = rotated_under(|h| h.late_touches.clone(), false).await;
        assert!(matches!(rotated, Err(Error::Timeout { .. })), "{rotated:?}");
        // The touch lands.
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(f.open(Some(&cookie)).is_empty().await.unwrap());
        let new = value(s.commit().await.unwrap());
        let kept = f.open(Some(&new));
        assert_eq!(kept.get::<i64>("cart").await.unwrap(), Some(3));
        assert_eq!(kept.get_string("name").await.unwrap(), "iris");
    }

    /// A login that fails to write its new record while an update of the
    /// same request waits for its gathered save: the update's outcome is
    /// taken as if no rotation had been tried, so the change its save
    /// carried is not applied again at commit over a later write of another
    /// request.
    #[tokio::test]
    async fn a_failed_rotation_leaves_an_update_waiting_meanwhile_as_it_was() {
        let (f, hook) = Hooked::fixture(false, false);
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        s.insert("color", "red").await.unwrap();
        let mut update = std::pin::pin!(s.increment("n", 1));
        assert!(poll_once(update.as_mut()).is_pending(), "saved at once");
        f.let_the_saver_write().await;
        hook.fail_creates.store(true, Ordering::SeqCst);
        assert!(matches!(s.login("alice").await, Err(Error::Store { .. })));
        hook.fail_creates.store(false, Ordering::SeqCst);
        let other = f.open(Some(&cookie));
        assert_eq!(other.get_string("color").await.unwrap(), "red");
        other.insert("color", "blue").await.unwrap();
        other.commit().await.unwrap();
        assert_eq!(update.await.unwrap(), 1);
        s.commit().await.unwrap();
        let after = f.open(Some(&cookie));
        assert_eq!(after.get_string("color").await.unwrap(), "blue");
        assert_eq!(after.get::<i64>("n").await.unwrap(), Some(1));
    }

    /// An update whose save lands but whose answer is lost (the store
    /// timeout) fails, and the request's commit does not write its earlier
    /// changes again: another request's acknowledged write made meanwhile
    /// stays. Both for a gathered update and for `Session::save`.
    #[tokio::test(start_paused = true)]
    async fn a_save_that_may_have_landed_is_not_written_again_by_the_commit() {
        for explicit_save in [false, true] {
            let (f, hook) = Hooked::fixture(false, false);
            let cookie = f.stored().await;
            let s = f.open(Some(&cookie));
            s.insert("color", "red").await.unwrap();
            hook.slow_saves.store(true, Ordering::SeqCst);
            let failed = if explicit_save {
                s.save().await
            } else {
                s.increment("visits", 1).await.map(drop)
            };
            assert!(matches!(failed, Err(Error::Timeout { .. })), "{failed:?}");
            hook.slow_saves.store(false, Ordering::SeqCst);
            // It landed.
            let other = f.open(Some(&cookie));
            assert_eq!(other.get_string("color").await.unwrap(), "red");
            other.insert("color", "blue").await.unwrap();
            other.commit().await.unwrap();
            s.commit().await.unwrap();
            let after = f.open(Some(&cookie));
            assert_eq!(after.get_string("color").await.unwrap(), "blue");
        }
    }

    /// A write to the signed-in id that lands during a logout is carried
    /// over to the signed-out record, but its remember-me lifetime is not.
    #[tokio::test]
    async fn a_write_carried_over_by_a_logout_keeps_the_configured_lifetime() {
        let (f, hook) = Hooked::fixture(false, false);
        let s = f.open(None);
        s.login("alice").await.unwrap();
        s.set_lifetime(Some(remember_me())).await.unwrap();
        let signed_in = value(s.commit().await.unwrap());
        // Another request increments `n` of the signed-in id just before
        // the logout writes its new record.
        *hook.cookie.lock().unwrap() = Some(signed_in.clone());
        let s = f.open(Some(&signed_in));
        s.logout().await.unwrap();
        let signed_out = value(s.commit().await.unwrap());
        let s = f.open(Some(&signed_out));
        assert_eq!(s.get::<i64>("n").await.unwrap(), Some(1));
        assert_eq!(s.lifetime().await.unwrap(), f.manager.config().lifetime());
        assert_eq!(s.owner().await.unwrap(), None);
    }

    /// A logout that cannot write its new record leaves the session as it
    /// was: signed in, with its remember-me lifetime, nothing to save.
    #[tokio::test]
    async fn a_logout_that_cannot_write_leaves_the_session_signed_in() {
        let (f, hook) = Hooked::fixture(false, false);
        let (signed_in, remember_me) = f.remembered_alice().await;
        hook.fail_creates.store(true, Ordering::SeqCst);
        let s = f.open(Some(&signed_in));
        assert!(matches!(s.logout().await, Err(Error::Store { .. })));
        let before = f.store.counts();
        assert_eq!(s.commit().await.unwrap(), SetCookie::Unchanged);
        assert_eq!(f.store.counts().save, before.save);
        hook.fail_creates.store(false, Ordering::SeqCst);
        let s = f.open(Some(&signed_in));
        assert_eq!(s.owner().await.unwrap().as_deref(), Some("alice"));
        assert_eq!(s.lifetime().await.unwrap(), remember_me);
    }

    /// Logging out two days into a 30-day "remember me" keeps the data
    /// under the configured lifetime, which restarts: kept, the creation
    /// time would put the new session past the configured absolute timeout
    /// (a day) from the start.
    #[tokio::test]
    async fn a_logout_long_into_a_remember_me_keeps_the_data_alive() {
        let f = fixture();
        let s = f.open(None);
        s.insert("cart", &1).await.unwrap();
        s.login("alice").await.unwrap();
        let month = Duration::from_secs(30 * 86_400);
        let remember_me = Lifetime::new()
            .with_idle_timeout(Some(month))
            .with_absolute_timeout(Some(3 * month))
            .with_persistent_cookie(true);
        s.set_lifetime(Some(remember_me)).await.unwrap();
        let signed_in = value(s.commit().await.unwrap());
        f.clock.advance(Duration::from_secs(2 * 86_400));
        let s = f.open(Some(&signed_in));
        s.logout().await.unwrap();
        let signed_out = value(s.commit().await.unwrap());
        let kept = f.open(Some(&signed_out));
        assert_eq!(kept.get::<i64>("cart").await.unwrap(), Some(1));
        assert_eq!(kept.owner().await.unwrap(), None);
        assert_eq!(
            kept.lifetime().await.unwrap(),
            f.manager.config().lifetime()
        );
    }

    /// Bob logging in over Alice's "remember me" session (a shared
    /// computer) does not get her persistent cookie; a login of the same
    /// owner again keeps it.
    #[tokio::test]
    async fn a_login_of_another_owner_ends_the_previous_owners_remember_me() {
        let f = fixture();
        let (alices, remember_me) = f.remembered_alice().await;
        let again = f.open(Some(&alices));
        again.login("alice").await.unwrap();
        let alices = match again.commit().await.unwrap() {
            SetCookie::Set {
                value,
                max_age: Some(_),
            } => value,
            other => panic!("alice's login again ended her remember me: {other:?}"),
        };
        let s = f.open(Some(&alices));
        s.login("bob").await.unwrap();
        let bobs = match s.commit().await.unwrap() {
            SetCookie::Set {
                value,
                max_age: None,
            } => value,
            other => panic!("bob got alice's remember me: {other:?}"),
        };
        assert_eq!(s.lifetime().await.unwrap(), f.manager.config().lifetime());
        // A lifetime set in the request, before the login, is the new
        // owner's.
        let s = f.open(Some(&bobs));
        s.set_lifetime(Some(remember_me)).await.unwrap();
        login_keeps_remember_me(&s, "carol", remember_me).await;
    }

    /// The request's values are lent to a commit's create or save, not moved
    /// into it: a commit dropped midway (a client gone, a timeout around
    /// it) leaves them with the request, and a commit after it writes them.
    #[tokio::test]
    async fn a_commit_dropped_in_its_store_call_leaves_the_values_with_the_request() {
        let f = fixture();
        let cookie = f.stored().await;
        for existing in [None, Some(cookie.as_str())] {
            let s = f.open(existing);
            s.insert("n", &7).await.unwrap();
            f.store.delay(Some(Duration::from_secs(3600)));
            let dropped = tokio::time::timeout(Duration::from_millis(50), s.commit()).await;
            assert!(dropped.is_err(), "the store call was to hang");
            f.store.delay(None);
            assert_eq!(s.get::<i32>("n").await.unwrap(), Some(7), "{existing:?}");
            let again = s.commit().await.unwrap();
            let cookie = match (existing, again) {
                (_, SetCookie::Set { value, .. }) => value,
                (Some(cookie), SetCookie::Unchanged) => cookie.to_owned(),
                (_, other) => panic!("{other:?}"),
            };
            let s = f.open(Some(&cookie));
            assert_eq!(s.get::<i32>("n").await.unwrap(), Some(7), "{existing:?}");
        }
    }

    /// A login over another owner's session (a shared computer) keeps none
    /// of that owner's values or flashes, also in the stored record; the
    /// request's own deferred writes before it stay. A login over a
    /// visitor's session or of the same owner again keeps every value.
    #[tokio::test]
    async fn a_login_of_another_owner_keeps_none_of_the_previous_owners_values() {
        let f = fixture();
        let s = f.open(None);
        s.insert("cart", &3).await.unwrap();
        s.login("alice").await.unwrap();
        s.insert("mfa_ok", &true).await.unwrap();
        s.insert_flash("notice", "hello alice").await.unwrap();
        let alices = value(s.commit().await.unwrap());
        let s = f.open(Some(&alices));
        assert_eq!(s.get::<i32>("cart").await.unwrap(), Some(3));
        s.login("alice").await.unwrap();
        assert_eq!(s.get::<bool>("mfa_ok").await.unwrap(), Some(true));
        let alices = value(s.commit().await.unwrap());
        let s = f.open(Some(&alices));
        s.insert("theme", "dark").await.unwrap();
        s.login("bob").await.unwrap();
        assert_eq!(s.keys().await.unwrap(), ["theme"]);
        assert_eq!(s.flash_keys().await.unwrap(), Vec::<String>::new());
        let bobs = value(s.commit().await.unwrap());
        let s = f.open(Some(&bobs));
        assert_eq!(s.owner().await.unwrap().as_deref(), Some("bob"));
        assert_eq!(s.keys().await.unwrap(), ["theme"]);
        assert_eq!(s.peek_flash::<String>("notice").await.unwrap(), None);
    }

    /// A logout whose new record is written but whose old one cannot be
    /// retired (touches fail) deletes the old one outright: the old id does
    /// not stay signed in.
    #[tokio::test]
    async fn a_logout_that_cannot_retire_the_old_record_deletes_it() {
        let (f, hooked) = Hooked::fixture(false, false);
        let s = f.open(None);
        s.insert("cart", &3).await.unwrap();
        s.login("alice").await.unwrap();
        let signed_in = value(s.commit().await.unwrap());
        hooked.fail_touches.store(true, Ordering::SeqCst);
        let s = f.open(Some(&signed_in));
        assert!(matches!(s.logout().await, Err(Error::Store { .. })));
        let signed_out = value(s.failed_commit_outcome());
        hooked.fail_touches.store(false, Ordering::SeqCst);
        assert_eq!(f.open(Some(&signed_in)).owner().await.unwrap(), None);
        assert!(f.open(Some(&signed_in)).is_empty().await.unwrap());
        assert!(f.manager.sessions_of("alice").await.unwrap().is_empty());
        let kept = f.open(Some(&signed_out));
        assert_eq!(kept.get::<i64>("cart").await.unwrap(), Some(3));
        assert_eq!(kept.owner().await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_update_whose_reload_failed_leaves_nothing_for_the_commit() {
        let (f, _) = Hooked::fixture(false, true);
        let cookie = f.stored().await;
        let s = f.with_n_on_the_plain_path(&cookie).await;
        // Another process writes first: this update's save conflicts, and
        // its reload fails.
        f.increment_elsewhere(&cookie).await;
        assert!(s.increment("n", 1).await.is_err());
        f.store.fail_with(None);
        assert_eq!(s.get::<i64>("n").await.unwrap(), Some(5));
    }

    #[tokio::test]
    async fn a_write_landing_while_the_old_record_is_retired_is_carried_over() {
        let (f, hook) = Hooked::fixture(false, false);
        let mut cookie = f.stored().await;
        for (round, login) in [false, true].into_iter().enumerate() {
            let s = f.open(Some(&cookie));
            assert_eq!(s.get_string("name").await.unwrap(), "iris");
            // Another request increments the old id while this one rotates.
            *hook.cookie.lock().unwrap() = Some(cookie.clone());
            if login {
                s.login("alice").await.unwrap();
            } else {
                s.cycle_id().await.unwrap();
            }
            let new = value(s.commit().await.unwrap());
            let expected = i64::try_from(round).unwrap() + 1;
            assert_eq!(f.n(&new).await, Some(expected), "login: {login}");
            assert!(f.open(Some(&cookie)).is_empty().await.unwrap());
            cookie = new;
        }
    }

    /// An update's gathered save, which carried a pending change, lands
    /// while the request rotates, and another request writes after it: the
    /// retirement, finding the old record written since, carries over what
    /// it holds with the request's changes applied again, but not the one
    /// the update's save already wrote.
    #[tokio::test]
    async fn a_retirement_does_not_apply_again_what_a_gathered_save_carried() {
        let (f, hook) = Hooked::fixture(false, false);
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        s.insert("n", 5i64).await.unwrap();
        let mut update = std::pin::pin!(s.increment("n", 1));
        assert!(poll_once(update.as_mut()).is_pending(), "saved at once");
        // While the rotation creates its new record, the update's saver
        // writes 6 and another request then increments the old id to 7.
        *hook.cookie.lock().unwrap() = Some(cookie.clone());
        s.login("alice").await.unwrap();
        assert_eq!(update.await.unwrap(), 6);
        let new = value(s.commit().await.unwrap());
        assert_eq!(f.n(&new).await, Some(7));
        assert!(f.open(Some(&cookie)).is_empty().await.unwrap());
    }

    /// A login dropped after its first poll (its rotation under way) still
    /// runs to the end: the request gets the new id, signed in, and the old
    /// id is retired. (The random interleavings below drop rotations at
    /// every point while other requests write.)
    #[tokio::test]
    async fn a_login_dropped_midway_runs_to_the_end() {
        let f = fixture();
        f.store.hop_around_calls(true);
        let cookie = f.stored().await;
        // The login is the request's first use of the session.
        let s = f.open(Some(&cookie));
        {
            let mut login = std::pin::pin!(s.login("alice"));
            assert!(poll_once(login.as_mut()).is_pending());
        }
        // Committed at once, before the rotation's task has run: the commit
        // waits for it.
        assert_eq!(s.commit_without_store(), None);
        let committed = tokio::time::timeout(Duration::from_secs(5), s.commit());
        let rotated = value(committed.await.expect("waits for ever").unwrap());
        assert_ne!(rotated, cookie);
        let after = f.open(Some(&rotated));
        assert_eq!(after.owner().await.unwrap().as_deref(), Some("alice"));
        assert_eq!(after.get_string("name").await.unwrap(), "iris");
        assert!(f.open(Some(&cookie)).is_empty().await.unwrap());
    }

    /// A panic in the task that rotates the id reaches the caller, as it
    /// would if the rotation ran in the caller's task.
    #[tokio::test]
    async fn a_panic_during_a_rotation_reaches_the_caller() {
        let (f, hook) = Hooked::fixture(false, false);
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        hook.panic_creates.store(true, Ordering::SeqCst);
        let login = tokio::spawn(async move { s.login("alice").await });
        let panic = login.await.unwrap_err().into_panic();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"creates panic"));
    }

    /// What a future of [`interleaving`] acknowledged: an increment of `n`
    /// or `x` and the value it returned; or an increment of `n` that was
    /// not acknowledged but may have been written (it failed or was
    /// dropped).
    #[derive(Clone, Copy, Debug)]
    enum Acked {
        N(i64),
        X(i64),
        MaybeN,
        Nothing,
    }

    /// Several handles of one request (a deferred write of `x`, increments,
    /// logins, id changes, saves) and other requests incrementing `n` and
    /// `x`, polled in a random order with the savers running in between: no
    /// acknowledged increment of `n` is lost or counted twice, and `x` ends
    /// no lower than any increment of it acknowledged (the request's
    /// deferred write sets it far above any count, and lands once: written
    /// again later, it would take `x` back below what others acknowledged).
    #[tokio::test]
    async fn handles_interleaved_at_random_lose_no_write() {
        let mut seen = Seen::default();
        for seed in 1..=5000u64 {
            seen.add(interleaving(seed, false).await);
        }
        seen.enough();
    }

    /// As [`handles_interleaved_at_random_lose_no_write`], with saves
    /// failing now and then and futures dropped midway: an increment that
    /// failed or was dropped may or may not count, but none acknowledged is
    /// lost, and the deferred write still lands at most once.
    #[tokio::test]
    async fn handles_interleaved_at_random_with_failures_lose_no_acknowledged_write() {
        let mut seen = Seen::default();
        for seed in 1..=5000u64 {
            seen.add(interleaving(seed, true).await);
        }
        seen.enough();
    }

    /// What the interleavings checked, so that they cannot pass by checking
    /// nothing.
    #[derive(Debug, Default)]
    struct Seen {
        /// Acknowledged increments of `n`.
        increments: usize,
        /// Runs checked exactly (no increment that may or may not count).
        exact: usize,
        /// Runs whose request ended on a new id with another request's
        /// acknowledged increment of its old one.
        carried: usize,
    }

    impl Seen {
        fn add(&mut self, run: Self) {
            self.increments += run.increments;
            self.exact += run.exact;
            self.carried += run.carried;
        }

        fn enough(&self) {
            assert!(
                self.increments > 1500 && self.exact > 1000 && self.carried > 300,
                "{self:?}"
            );
        }
    }

    /// One random interleaving (see the tests above); `chaos` adds failing
    /// saves and dropped futures.
    async fn interleaving(seed: u64, chaos: bool) -> Seen {
        use crate::testing::{interleave, Interleaved, Seeded};
        const MARK: i64 = 1_000_000;
        let mut rng = Seeded::new(seed);
        let f = fixture();
        // Every store call lets other tasks run: answers arrive after other
        // tasks (savers, other requests) ran.
        f.store.hop_around_calls(seed.is_multiple_of(2));
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        if rng.below(2) == 0 {
            s.get_string("name").await.unwrap();
        }
        // An increment of `n` that fails may have been written only when
        // saves fail.
        let unanswered = if chaos { Acked::MaybeN } else { Acked::Nothing };
        let mut futures: Vec<Interleaved<'_, Acked>> = Vec::new();
        // Each future's operation, and whether it increments `n`.
        let mut plan = Vec::new();
        let mut marked = false;
        for _ in 0..2 + rng.below(5) {
            let mut op = rng.below(10);
            if op == 5 || op == 6 {
                // One deferred write of `x`: a second one would set it
                // back to the mark after increments, as it should.
                op = if marked { 1 } else { 5 };
                marked = true;
            }
            if op == 7 && chaos {
                // A logout that cannot retire the old record deletes it,
                // with what others wrote to it meanwhile (documented).
                op = 3;
            }
            plan.push((op, op == 0));
            let h = s.clone();
            futures.push(Box::pin(async move {
                let acked = match op {
                    0 => h.increment("n", 1).await.map(Acked::N),
                    1 => h.increment("x", 1).await.map(Acked::X),
                    2 => h.login("alice").await.map(|()| Acked::Nothing),
                    3 => h.cycle_id().await.map(|()| Acked::Nothing),
                    4 => h.save().await.map(|()| Acked::Nothing),
                    5 => h.insert("x", MARK).await.map(|()| Acked::Nothing),
                    7 => h.logout().await.map(|()| Acked::Nothing),
                    // Sends the request's updates down the plain path.
                    8 => {
                        let lifetime = Lifetime::new().with_idle_timeout(Some(MINUTE));
                        h.set_lifetime(Some(lifetime))
                            .await
                            .map(|()| Acked::Nothing)
                    }
                    _ => h.insert("y", 1).await.map(|()| Acked::Nothing),
                };
                match acked {
                    Ok(acked) => acked,
                    Err(_) if op == 0 => unanswered,
                    Err(_) => Acked::Nothing,
                }
            }));
        }
        let rid = Id::parse(&cookie).unwrap().record_id();
        // Another process: its own turns, so its writes conflict with
        // this one's.
        // Its calls always let other tasks run; the faults below are this
        // process's.
        let other_process = Instrumented::new(f.store.inner().clone());
        other_process.hop_around_calls(true);
        let elsewhere = Manager::new(other_process, Config::default()).with_clock(f.clock.clone());
        for _ in 0..1 + rng.below(4) {
            let header = format!("session={cookie}");
            let other = if rng.below(2) == 0 {
                f.manager.session_from_cookies(Some(header.as_str()))
            } else {
                elsewhere.session_from_cookies(Some(header.as_str()))
            };
            let key = if rng.below(2) == 0 { "n" } else { "x" };
            plan.push((10 + u64::from(key == "x"), key == "n"));
            futures.push(Box::pin(async move {
                let Ok(v) = other.increment(key, 1).await else {
                    // Maybe written, maybe to the request's session.
                    return if key == "n" {
                        unanswered
                    } else {
                        Acked::Nothing
                    };
                };
                if other.record_id().await.ok().flatten() != Some(rid) {
                    // The request's rotation retired the id first: the
                    // increment started a session of its own.
                    return Acked::Nothing;
                }
                // Acknowledged already: the commit has nothing to add.
                let _ = other.commit().await;
                if key == "n" {
                    Acked::N(v)
                } else {
                    Acked::X(v)
                }
            }));
        }
        let between = |rng: &mut Seeded| {
            if chaos && rng.below(40) == 0 {
                // Saves fail for a while: refused, or landed with their
                // answer lost.
                let failing = rng.below(3);
                f.store
                    .fail_saves_with((failing == 1).then_some(StoreErrorKind::Unavailable));
                f.store.lose_save_answers(failing == 2);
            }
        };
        // Under `chaos`, futures are dropped midway (a handler's timeout, a
        // client gone): an increment of `n` so dropped may count or not.
        let dropping = chaos.then_some(150);
        let outputs = interleave(futures, &mut rng, dropping, between)
            .await
            .unwrap_or_else(|| panic!("seed {seed}: stuck, plan {plan:?}"));
        let acked: Vec<Acked> = outputs
            .into_iter()
            .zip(&plan)
            .map(|(output, (_, is_n))| {
                output.unwrap_or(if *is_n { Acked::MaybeN } else { Acked::Nothing })
            })
            .collect();
        f.store.fail_saves_with(None);
        f.store.lose_save_answers(false);
        let mut committed = None;
        for _ in 0..10 {
            if let Ok(outcome) = s.commit().await {
                committed = Some(outcome);
                break;
            }
        }
        let last = match committed.expect("the commit kept failing") {
            SetCookie::Set { value, .. } => value,
            _ => cookie.clone(),
        };
        // Tasks still under way (a saver whose update was dropped) finish.
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        if !chaos {
            // The client's id holds the session; a rotation retired the old
            // one (any other request's increment after it started a session
            // of its own).
            assert_eq!(
                f.open(Some(&cookie)).is_empty().await.unwrap(),
                last != cookie,
                "seed {seed}"
            );
        }
        let after = f.open(Some(&last));
        let n = after.get::<i64>("n").await.unwrap().unwrap_or(0);
        let x = after.get::<i64>("x").await.unwrap().unwrap_or(0);
        let mut ns: Vec<i64> = acked
            .iter()
            .filter_map(|a| match a {
                Acked::N(v) => Some(*v),
                _ => None,
            })
            .collect();
        ns.sort_unstable();
        let count = i64::try_from(ns.len()).unwrap();
        let maybe = acked.iter().filter(|a| matches!(a, Acked::MaybeN)).count();
        let maybe = i64::try_from(maybe).unwrap();
        let context =
            format!("seed {seed}: n {n}, acknowledged {ns:?}, maybe {maybe}, plan {plan:?}");
        let mut distinct = ns.clone();
        distinct.dedup();
        assert_eq!(distinct, ns, "{context}: counted twice");
        assert!(ns.last().is_none_or(|top| n >= *top), "{context}: lost");
        assert!(count <= n && n <= count + maybe, "{context}");
        if maybe == 0 {
            assert_eq!(ns, (1..=count).collect::<Vec<_>>(), "{context}");
        }
        let top = acked
            .iter()
            .filter_map(|a| match a {
                Acked::X(v) => Some(*v),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        assert!(
            x >= top,
            "seed {seed}: x {x} < acknowledged {top}, plan {plan:?}"
        );
        let others_acked = acked
            .iter()
            .zip(&plan)
            .any(|(a, (op, _))| *op >= 10 && matches!(a, Acked::N(_) | Acked::X(_)));
        Seen {
            increments: ns.len(),
            exact: usize::from(maybe == 0),
            carried: usize::from(last != cookie && others_acked),
        }
    }

    /// An update's gathered save, which carried a pending change, has landed
    /// but its answer is still on the way when another handle of the
    /// request rotates: the rotation, which loaded what the save wrote,
    /// waits for the answer instead of applying that change again.
    #[tokio::test]
    async fn a_rotation_waits_for_the_answer_of_a_save_that_carried_its_changes() {
        let (f, hook) = Hooked::fixture(false, false);
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        s.insert("n", 5i64).await.unwrap();
        let (answer, held) = tokio::sync::oneshot::channel();
        *hook.held_save_answer.lock().unwrap() = Some(held);
        let mut update = std::pin::pin!(s.increment("n", 1));
        assert!(poll_once(update.as_mut()).is_pending(), "saved at once");
        f.let_the_saver_write().await;
        let mut login = std::pin::pin!(s.login("alice"));
        assert!(
            poll_once(login.as_mut()).is_pending(),
            "did not wait for the answer"
        );
        answer.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), login)
            .await
            .expect("the rotation waits for ever")
            .unwrap();
        assert_eq!(update.await.unwrap(), 6);
        let new = value(s.commit().await.unwrap());
        assert_eq!(f.n(&new).await, Some(6));
    }

    /// Destroyed after the rotation loaded it again, the session stays
    /// ended, as when the rotation finds it ended at once: a `cycle_id`
    /// ends the session for the client too (and is not an error), and a
    /// login goes on with a fresh session holding only its own writes (a
    /// login form submitted twice: the second login must not sign the user
    /// out).
    #[tokio::test]
    async fn a_session_destroyed_while_its_old_record_is_retired_stays_ended() {
        let (f, hook) = Hooked::fixture(true, false);
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        // Another request destroys the session while this one rotates.
        *hook.cookie.lock().unwrap() = Some(cookie.clone());
        s.cycle_id().await.unwrap();
        assert_eq!(s.commit().await.unwrap(), SetCookie::Remove);
        assert!(f.store.inner().is_empty(), "brought back by a cycle_id");

        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        s.insert("user_id", &7).await.unwrap();
        *hook.cookie.lock().unwrap() = Some(cookie.clone());
        s.login("alice").await.unwrap();
        let new = value(s.commit().await.unwrap());
        assert_ne!(new, cookie);
        let s = f.open(Some(&new));
        assert_eq!(s.owner().await.unwrap().as_deref(), Some("alice"));
        assert_eq!(s.get_string("name").await.unwrap(), "", "brought back");
        assert_eq!(s.get::<i64>("user_id").await.unwrap(), Some(7));
        assert_eq!(f.store.inner().len(), 1);
    }

    /// The login's fresh session is ended too (its owner logged out
    /// everywhere) while it replaces the ended one: the login is ended, not
    /// a success whose later writes would make a session without an owner.
    #[tokio::test]
    async fn a_login_whose_fresh_session_is_ended_too_is_ended() {
        let (f, hook) = Hooked::fixture(true, false);
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        *hook.cookie.lock().unwrap() = Some(cookie.clone());
        *hook.end_owner_at_touch.lock().unwrap() = Some("alice".into());
        assert!(matches!(s.login("alice").await, Err(Error::Ended)));
        assert_eq!(s.commit().await.unwrap(), SetCookie::Remove);
        assert!(f.store.inner().is_empty());
    }

    /// The rewrite of a login's fresh session that meets a conflict starts
    /// again from the stored record, which still holds the ended session's
    /// values: they must not come back.
    #[tokio::test]
    async fn a_conflict_rewriting_a_logins_fresh_session_keeps_the_ended_one_out() {
        let (f, hook) = Hooked::fixture(true, false);
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        s.set_lifetime(Some(
            Lifetime::new().with_idle_timeout(Some(Duration::from_secs(600))),
        ))
        .await
        .unwrap();
        s.commit().await.unwrap();
        let s = f.open(Some(&cookie));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        s.insert("user_id", &7).await.unwrap();
        *hook.cookie.lock().unwrap() = Some(cookie.clone());
        hook.conflict_next_save.store(true, Ordering::SeqCst);
        s.login("alice").await.unwrap();
        assert!(
            !hook.conflict_next_save.load(Ordering::SeqCst),
            "no conflict met"
        );
        let new = value(s.commit().await.unwrap());
        let s = f.open(Some(&new));
        assert_eq!(s.get_string("name").await.unwrap(), "", "brought back");
        assert_eq!(s.get::<i64>("user_id").await.unwrap(), Some(7));
        assert_eq!(s.lifetime().await.unwrap(), f.manager.config().lifetime());
    }

    /// A login form submitted twice: both requests load the anonymous
    /// session and rotate it in step (every store call takes a while), so
    /// the first retires the old record after the second loaded it again.
    /// Both logins stand; the second holds only its own writes.
    #[tokio::test(start_paused = true)]
    async fn a_login_submitted_twice_signs_in_both_times() {
        let f = fixture();
        let cookie = f.stored().await;
        let first = f.open(Some(&cookie));
        let second = f.open(Some(&cookie));
        assert_eq!(first.get_string("name").await.unwrap(), "iris");
        assert_eq!(second.get_string("name").await.unwrap(), "iris");
        second.insert("user_id", &7).await.unwrap();
        f.store.delay(Some(Duration::from_millis(10)));
        let (a, b) = tokio::join!(first.login("alice"), second.login("alice"));
        a.unwrap();
        b.unwrap();
        f.store.delay(None);
        let mut logged_in = Vec::new();
        for s in [first, second] {
            let new = value(s.commit().await.unwrap());
            let s = f.open(Some(&new));
            assert_eq!(s.owner().await.unwrap().as_deref(), Some("alice"));
            logged_in.push((
                s.get_string("name").await.unwrap(),
                s.get::<i64>("user_id").await.unwrap(),
            ));
        }
        // Each keeps its own writes; the one that retired the old record
        // carries its values on, the other starts fresh.
        assert_eq!((logged_in[0].1, logged_in[1].1), (None, Some(7)));
        let mut names = [logged_in[0].0.as_str(), logged_in[1].0.as_str()];
        names.sort_unstable();
        assert_eq!(names, ["", "iris"]);
        assert!(f.open(Some(&cookie)).is_empty().await.unwrap());
        assert_eq!(f.store.inner().len(), 2);
    }

    #[tokio::test]
    async fn a_rotation_writes_nothing_to_the_old_id() {
        let f = fixture();
        let cookie = f.stored().await;
        let s = f.open(Some(&cookie));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        // What a handler sets before logging in must never reach the id the
        // client arrived with (an attacker may hold it).
        s.insert("is_admin", &true).await.unwrap();
        let before = f.store.counts();
        s.login("alice").await.unwrap();
        assert_eq!(f.loads_and_saves_since(&before), (1, 0));
        let new = value(s.commit().await.unwrap());
        assert_eq!(
            f.open(Some(&new)).get::<bool>("is_admin").await.unwrap(),
            Some(true)
        );
        assert!(f.open(Some(&cookie)).is_empty().await.unwrap());
    }

    #[tokio::test]
    async fn a_session_ended_while_a_request_rotates_its_id_stays_ended() {
        let f = fixture();
        let cookie = f.stored().await;
        let rid = Id::parse(&cookie).unwrap().record_id();
        // Cycling: the session was destroyed after this request loaded it.
        let s = f.open(Some(&cookie));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        f.manager.destroy_record(&rid).await.unwrap();
        s.cycle_id().await.unwrap();
        assert_eq!(s.commit().await.unwrap(), SetCookie::Remove);
        assert!(f.store.inner().is_empty(), "brought back under a new id");
        // Logging in: the login gets a fresh session, with none of the
        // ended one's values.
        let cookie = f.stored().await;
        let rid = Id::parse(&cookie).unwrap().record_id();
        let s = f.open(Some(&cookie));
        assert_eq!(s.get_string("name").await.unwrap(), "iris");
        f.manager.destroy_record(&rid).await.unwrap();
        s.insert("user_id", &7).await.unwrap();
        s.login("alice").await.unwrap();
        let new = value(s.commit().await.unwrap());
        let s = f.open(Some(&new));
        assert_eq!(s.owner().await.unwrap().as_deref(), Some("alice"));
        assert_eq!(
            s.get_string("name").await.unwrap(),
            "",
            "the ended session's"
        );
        assert_eq!(
            s.get::<i64>("user_id").await.unwrap(),
            Some(7),
            "the request's own"
        );
        assert_eq!(f.store.inner().len(), 1);
        // A "remember me" the request set before the login is its own too.
        let cookie = f.stored().await;
        let rid = Id::parse(&cookie).unwrap().record_id();
        let s = f.open(Some(&cookie));
        let remember_me = remember_me();
        s.set_lifetime(Some(remember_me)).await.unwrap();
        f.manager.destroy_record(&rid).await.unwrap();
        login_keeps_remember_me(&s, "alice", remember_me).await;
    }

    /// Logs `user` in on a new session holding `device`; its cookie and
    /// record id.
    async fn logged_in(f: &Fixture, user: &str, device: &str) -> (String, RecordId) {
        let s = f.open(None);
        s.insert("device", device).await.unwrap();
        s.login(user).await.unwrap();
        let rid = s.record_id().await.unwrap().expect("stored by the login");
        (value(s.commit().await.unwrap()), rid)
    }

    /// A store that lists an owner's sessions once, then deletes what it
    /// listed, misses a session that changes its id in between: the
    /// successor was not listed and the listed record is gone. Log out
    /// everywhere lists again and ends the successor.
    #[tokio::test]
    async fn logging_out_everywhere_ends_a_session_that_rotated_during_the_stores_pass() {
        let (f, hook) = Hooked::fixture(false, false);
        let (laptop, laptop_id) = logged_in(&f, "alice", "laptop").await;
        let s = f.open(Some(&laptop));
        *hook.rotate_during_owner_pass.lock().unwrap() = Some(s.clone());
        assert_eq!(f.manager.destroy_all_of("alice").await.unwrap(), 1);
        let successor = s.record_id().await.unwrap();
        assert!(successor.is_some_and(|id| id != laptop_id), "{successor:?}");
        assert!(f.manager.sessions_of("alice").await.unwrap().is_empty());
        assert!(f.store.inner().is_empty(), "the successor is left");
        // Without a rotation, one pass and one listing.
        let (_phone, _) = logged_in(&f, "alice", "phone").await;
        let before = f.store.counts();
        assert_eq!(f.manager.destroy_all_of("alice").await.unwrap(), 1);
        let calls = f.store.counts().total() - before.total();
        assert_eq!(calls, 2, "a deletion and a listing");
        // When the listing after the store's deletion fails, the deletion
        // stands, but the logout is not reported done: a session that
        // changed its id meanwhile could have escaped it.
        logged_in(&f, "alice", "laptop").await;
        logged_in(&f, "alice", "phone").await;
        hook.fail_listings.store(true, Ordering::SeqCst);
        assert!(f.manager.destroy_all_of("alice").await.is_err());
        hook.fail_listings.store(false, Ordering::SeqCst);
        assert!(f.manager.sessions_of("alice").await.unwrap().is_empty());
    }

    /// Log everyone out: every user's sessions end, and a request that still
    /// holds one (loaded before) finds it ended at its next write instead
    /// of bringing it back.
    #[tokio::test]
    async fn destroy_all_ends_every_users_sessions_for_good() {
        let f = fixture();
        let (alice, _) = logged_in(&f, "alice", "laptop").await;
        let (bob, _) = logged_in(&f, "bob", "phone").await;
        let anonymous = {
            let s = f.open(None);
            s.insert("cart", 3).await.unwrap();
            value(s.commit().await.unwrap())
        };
        let holding = f.open(Some(&alice));
        assert_eq!(holding.get_string("device").await.unwrap(), "laptop");
        assert_eq!(f.manager.destroy_all().await.unwrap(), 3);
        for cookie in [&alice, &bob, &anonymous] {
            let s = f.open(Some(cookie));
            assert!(
                s.is_empty().await.unwrap(),
                "a session survived destroy_all"
            );
        }
        assert!(f.manager.sessions_of("alice").await.unwrap().is_empty());
        // The request that held alice's session writes nothing back.
        holding.insert("device", "still here").await.unwrap();
        assert_eq!(holding.commit().await.unwrap(), SetCookie::Remove);
        assert_eq!(f.store.inner().len(), 0);
    }

    /// A store that answers a load of one id with another id's record (its
    /// keys mixed up) shows no session on a devices page, as every other
    /// load refuses such a record.
    #[tokio::test]
    async fn a_devices_page_leaves_out_records_stored_under_another_id() {
        let store = crate::testing::TestStore::default();
        let manager = Manager::new(store.clone(), Config::default());
        let now = crate::Timestamp::now();
        let owned = |id: RecordId| {
            let mut r = Record::new(id, now, now + Duration::from_secs(3600));
            r.owner = Some("alice".into());
            r
        };
        let (x, y) = (
            Id::generate().unwrap().record_id(),
            Id::generate().unwrap().record_id(),
        );
        // Each key holds the other's record: the listing finds both ids, and
        // each load answers the other one.
        store.put_under(x, owned(y));
        store.put_under(y, owned(x));
        assert_eq!(manager.sessions_of("alice").await.unwrap().len(), 2);
        assert!(manager.load_sessions_of("alice").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_devices_page_lists_and_ends_only_the_owners_live_sessions() {
        let f = fixture();
        let (laptop, laptop_id) = logged_in(&f, "alice", "laptop").await;
        let started = OffsetDateTime::from(crate::Clock::now(&f.clock));
        f.clock.advance(Duration::from_secs(600));
        let (_phone, phone_id) = logged_in(&f, "alice", "phone").await;
        let (bob, bob_id) = logged_in(&f, "bob", "desktop").await;
        // The laptop is used five minutes later (past the touch interval,
        // so its deadline moves) and gets a flash value.
        f.clock.advance(Duration::from_secs(300));
        let s = f.open(Some(&laptop));
        s.insert_flash("notice", "hi").await.unwrap();
        s.commit().await.unwrap();
        let used = OffsetDateTime::from(crate::Clock::now(&f.clock));

        let views = f.manager.load_sessions_of("alice").await.unwrap();
        let ids: Vec<RecordId> = views.iter().map(SessionView::record_id).collect();
        assert_eq!(ids, [phone_id, laptop_id], "newest first, bob's left out");
        let (phone_view, laptop_view) = (&views[0], &views[1]);
        assert_eq!(
            phone_view.get::<String>("device").unwrap().as_deref(),
            Some("phone")
        );
        assert_eq!(laptop_view.created_at(), started);
        assert_eq!(laptop_view.last_seen(), Some(used));
        assert_eq!(
            phone_view.last_seen(),
            Some(started + time::Duration::seconds(600))
        );
        assert!(laptop_view.expires_at() > used);
        // Flash values stay private to their session.
        assert_eq!(laptop_view.keys().collect::<Vec<_>>(), ["device"]);
        assert_eq!(
            laptop_view.get::<String>(&flash_key("notice")).unwrap(),
            None
        );
        assert!(matches!(
            laptop_view.get::<u64>("device"),
            Err(Error::Value { .. })
        ));

        // Bob's id in alice's form ends nothing; her own laptop ends.
        assert!(!f
            .manager
            .destroy_session_of("alice", &bob_id)
            .await
            .unwrap());
        assert_eq!(
            f.open(Some(&bob)).get_string("device").await.unwrap(),
            "desktop"
        );
        assert!(f
            .manager
            .destroy_session_of("alice", &laptop_id)
            .await
            .unwrap());
        assert!(!f
            .manager
            .destroy_session_of("alice", &laptop_id)
            .await
            .unwrap());
        assert_eq!(
            f.open(Some(&laptop)).get::<String>("device").await.unwrap(),
            None
        );
        let left = f.manager.load_sessions_of("alice").await.unwrap();
        assert_eq!(
            left.iter().map(SessionView::record_id).collect::<Vec<_>>(),
            [phone_id]
        );

        // Sessions past their idle deadline are not listed, nor ended.
        f.clock.advance(Duration::from_secs(3 * 3600));
        assert!(f
            .manager
            .load_sessions_of("alice")
            .await
            .unwrap()
            .is_empty());
        assert!(!f
            .manager
            .destroy_session_of("alice", &phone_id)
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn login_on_a_new_session_stores_it_with_its_owner() {
        let f = fixture();
        let s = f.open(None);
        s.login("alice").await.unwrap();
        let cookie = value(s.commit().await.unwrap());
        let s = f.open(Some(&cookie));
        assert_eq!(s.owner().await.unwrap().as_deref(), Some("alice"));
        s.clear().await.unwrap();
        s.commit().await.unwrap();
        // Clear keeps the session and its owner.
        assert_eq!(
            f.open(Some(&cookie)).owner().await.unwrap().as_deref(),
            Some("alice")
        );
        assert!(matches!(
            f.open(None).login("").await,
            Err(Error::Invalid(_))
        ));
        let long = "x".repeat(MAX_OWNER_LEN + 1);
        assert!(matches!(
            f.open(None).login(&long).await,
            Err(Error::Invalid(_))
        ));
        // PostgreSQL's text cannot hold NUL: refused on every store alike.
        assert!(matches!(
            f.open(None).login("ali\0ce").await,
            Err(Error::Invalid(_))
        ));
    }

    /// Logging out keeps the session's data under a new id without an
    /// owner: the old id stops working, the owner's sessions no longer list
    /// it, and ending them all leaves it alone.
    #[tokio::test]
    async fn logout_keeps_the_data_under_a_new_id_without_the_owner() {
        let f = fixture();
        let s = f.open(None);
        s.insert("cart", &3).await.unwrap();
        s.login("alice").await.unwrap();
        let signed_in = value(s.commit().await.unwrap());
        f.clock.advance(MINUTE);
        async fn created_at(f: &Fixture, s: &Session) -> Timestamp {
            let rid = s.record_id().await.unwrap().unwrap();
            f.store.load(&rid).await.unwrap().unwrap().created_at
        }
        let s = f.open(Some(&signed_in));
        let remember_me = remember_me();
        s.set_lifetime(Some(remember_me)).await.unwrap();
        s.commit().await.unwrap();
        let s = f.open(Some(&signed_in));
        assert_eq!(s.lifetime().await.unwrap(), remember_me);
        let created = created_at(&f, &s).await;
        s.logout().await.unwrap();
        assert_eq!(s.lifetime().await.unwrap(), f.manager.config().lifetime());
        assert_eq!(s.owner().await.unwrap(), None);
        let signed_out = value(s.commit().await.unwrap());
        assert_ne!(signed_out, signed_in);
        let s = f.open(Some(&signed_out));
        assert_eq!(s.get::<i64>("cart").await.unwrap(), Some(3));
        assert_eq!(s.owner().await.unwrap(), None);
        // The absolute timeout restarts with the new session.
        assert!(created_at(&f, &s).await > created);
        assert_eq!(
            f.open(Some(&signed_in)).get::<i64>("cart").await.unwrap(),
            None
        );
        assert!(f.manager.sessions_of("alice").await.unwrap().is_empty());
        f.manager.destroy_all_of("alice").await.unwrap();
        assert_eq!(
            f.open(Some(&signed_out)).get::<i64>("cart").await.unwrap(),
            Some(3)
        );
        // Without an owner, or never stored: nothing to do, no store call.
        let before = f.store.counts();
        let s = f.open(Some(&signed_out));
        s.logout().await.unwrap();
        assert_eq!(s.commit().await.unwrap(), SetCookie::Unchanged);
        let s = f.open(None);
        s.logout().await.unwrap();
        assert_eq!(s.commit().await.unwrap(), SetCookie::Unchanged);
        assert_eq!(f.store.counts().total() - before.total(), 1);
    }

    #[tokio::test]
    async fn destroy_deletes_without_loading_and_removes_the_cookie() {
        let f = fixture();
        let cookie = f.stored().await;
        let before = f.store.counts();
        let s = f.open(Some(&cookie));
        s.destroy().await.unwrap();
        assert_eq!(s.commit().await.unwrap(), SetCookie::Remove);
        let after = f.store.counts();
        assert_eq!(
            (after.delete - before.delete, after.load - before.load),
            (1, 0)
        );
        assert!(f.open(Some(&cookie)).is_empty().await.unwrap());
        // Without a cookie there is nothing to remove.
        let s = f.open(None);
        s.destroy().await.unwrap();
        assert_eq!(s.commit().await.unwrap(), SetCookie::Unchanged);
        // Writing after destroy starts a new session with a new id.
        let s = f.open(Some(&cookie));
        s.destroy().await.unwrap();
        s.insert("again", &1).await.unwrap();
        assert_ne!(value(s.commit().await.unwrap()), cookie);
    }

    #[tokio::test]
    async fn retries_run_out_with_a_clear_error() {
        let f = fixture_with(Config::builder().with_conflict_retries(0));
        let cookie = f.stored().await;
        let a = f.open(Some(&cookie));
        let b = f.open(Some(&cookie));
        a.get_string("name").await.unwrap();
        b.get_string("name").await.unwrap();
        a.insert("a", &1).await.unwrap();
        a.commit().await.unwrap();
        b.insert("b", &2).await.unwrap();
        assert!(matches!(
            b.commit().await,
            Err(Error::Contention { attempts: 1 })
        ));
        // The changes stay pending: a later save, on the copy the conflict
        // loaded, writes them.
        b.save().await.unwrap();
        let s = f.open(Some(&cookie));
        assert_eq!(s.keys().await.unwrap(), ["a", "b", "name"]);
        // With retries, the same race resolves per key.
        let f = fixture();
        let cookie = f.stored().await;
        let a = f.open(Some(&cookie));
        let b = f.open(Some(&cookie));
        a.get_string("name").await.unwrap();
        b.get_string("name").await.unwrap();
        a.insert("a", &1).await.unwrap();
        a.commit().await.unwrap();
        b.insert("b", &2).await.unwrap();
        b.commit().await.unwrap();
        let s = f.open(Some(&cookie));
        assert_eq!(s.keys().await.unwrap(), ["a", "b", "name"]);
    }

    #[tokio::test]
    async fn increments_and_typed_getters() {
        let f = fixture();
        let s = f.open(None);
        assert_eq!(s.increment("n", 5).await.unwrap(), 5);
        assert_eq!(s.decrement("n", 2).await.unwrap(), 3);
        assert_eq!(s.get_or("missing", 42u8).await.unwrap(), 42);
        assert_eq!(s.get_string("missing").await.unwrap(), "");
        assert!(s.contains("n").await.unwrap());
        assert_eq!(s.take::<i64>("n").await.unwrap(), Some(3));
        assert_eq!(s.len().await.unwrap(), 0);
    }

    /// Counters saturate at the ends of `i64` instead of wrapping, in both
    /// directions and for the most negative step too.
    #[tokio::test]
    async fn counters_saturate_at_the_ends() {
        let f = fixture();
        let s = f.open(None);
        s.insert("n", &-1i64).await.unwrap();
        assert_eq!(s.decrement("n", i64::MIN).await.unwrap(), i64::MAX);
        assert_eq!(s.increment("n", 1).await.unwrap(), i64::MAX);
        assert_eq!(s.decrement("m", i64::MAX).await.unwrap(), -i64::MAX);
        assert_eq!(s.decrement("m", 5).await.unwrap(), i64::MIN);
        assert_eq!(s.increment("m", i64::MIN).await.unwrap(), i64::MIN);
    }
}
