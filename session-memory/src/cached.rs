//! A memory tier in front of another store.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::future::Cache;
use moka::policy::{EvictionPolicy, Expiry};
use session_core::{Created, Record, RecordId, Saved, Store, StoreError, Timestamp};

use moka::ops::compute::{CompResult, Op};

use crate::{until, DEFAULT_MAX_BYTES};

/// Serves loads from memory and writes through to a backing store.
///
/// Iris kept sessions in "temp memory" over a database: idle sessions left
/// memory and came back from the database when their user returned. This is
/// that, with the consistency rules spelled out:
///
/// * **Writes are never lost.** `create`, `save`, `touch` and `delete` go to
///   the backing store first; `save` is the backing store's compare-and-set. A
///   conflict, a missing record or a failed write evicts the cached copy, so
///   the manager's reload reads the backing store; so do two touches of one
///   session that overlap, since only the backing store knows which landed
///   last.
/// * **Reads may be stale across instances, for at most `max_staleness`**
///   (default 5 seconds). On one instance, reads see that instance's writes at
///   once. When several app instances share the backing store, one instance
///   can serve a cached copy up to `max_staleness` old: it may miss another
///   instance's latest write, or still show a session another instance
///   destroyed. Its own writes to such a session still fail the
///   compare-and-set, so nothing stale is ever written back. Set
///   `max_staleness` to what your app tolerates; zero disables caching.
/// * **A deleted session stays out of memory.** A delete drops the cached
///   copy, and a load or write that reached the backing store before or
///   during a delete (or a logout everywhere) does not cache what it read or
///   wrote. Deletes leave nothing in memory, so a flood of them (logouts with
///   forged ids, say) cannot fill the cache. A delete abandoned before the
///   backing store answered (the store timeout; the caller got an error) is
///   the one exception: its backing call may still land later, after a load
///   read the session again, and that copy may then be served for up to
///   `max_staleness`, as on another instance.
/// * **New sessions are cached by their first read**, not when created:
///   clients that keep no cookie (crawlers, health checks) make a session per
///   request that nobody reads again, and caching each would cost every
///   create an insert and push out the sessions that are read.
/// * **Copies leave memory** at the first of two limits: `max_staleness`
///   after the backing call that read or wrote them began, however long it
///   took to answer (the next request reloads from the backing store; a
///   save on this instance that finds the copy cached updates it without
///   restarting that clock), or `idle_eviction` after their last use
///   (Iris's `GcDuration`).
///   With the defaults (5 seconds and 2 minutes) the staleness bound comes
///   first, so the cache absorbs bursts of requests to a session; raise
///   `max_staleness` to keep copies longer, and `idle_eviction` then drops the
///   sessions nobody uses. The cached records' weight is bounded by
///   `max_bytes` either way (moka's bookkeeping, about 400 bytes per entry,
///   comes on top).
///
/// ```
/// use std::time::Duration;
/// use session_memory::{CachedStore, MemoryStore};
///
/// // Any store works as the backing store; a MemoryStore keeps the example
/// // self-contained.
/// let store = CachedStore::builder(MemoryStore::new())
///     .max_staleness(Duration::from_secs(2))
///     .build();
/// # let _ = store;
/// ```
pub struct CachedStore<S> {
    backing: S,
    cache: Option<Cache<RecordId, Arc<Slot>, crate::ByRecordId>>,
    /// Burials (deletes, and writes that ended a session) so far, by shard
    /// of record ids: a load or write that reached the backing store before
    /// a burial in its shard does not cache what it read or wrote.
    burials: Box<[AtomicU64; BURIAL_SHARDS]>,
    /// Saves and touches that landed so far, by the same shards: a load
    /// that reached the backing store before one of them, or a save that
    /// landed before one of them, finds memory empty when it comes to cache
    /// what it read or wrote only if moka dropped the later write's copy
    /// (its `max_staleness`, its idle time or the memory budget), and then
    /// caches nothing, since what it has may be older.
    writes: Box<[AtomicU64; BURIAL_SHARDS]>,
    /// How many invalidation predicates a burial left to moka.
    #[cfg(test)]
    predicates: AtomicU64,
    /// Where a test holds a call of this store (see [`tests::Pauses`]).
    #[cfg(test)]
    pauses: Arc<tests::Pauses>,
}

/// Shards of [`CachedStore::burials`]: a burial only keeps loads of its own
/// shard out of memory.
const BURIAL_SHARDS: usize = 64;

fn shard(id: &RecordId) -> usize {
    usize::from(id.as_bytes()[0]) % BURIAL_SHARDS
}

/// The counts of a record's shard a caller saw before its call to the
/// backing store (see [`CachedStore::seen_now`]).
#[derive(Debug, Clone, Copy)]
struct Seen {
    burials: u64,
    writes: u64,
    /// When: before the backing call, so before it read or wrote the
    /// record; what it caches is fresh from then on.
    at: Instant,
}

fn weight_of(record: &Record) -> u32 {
    u32::try_from(record.approximate_size()).unwrap_or(u32::MAX)
}

fn weigh(_: &RecordId, slot: &Arc<Slot>) -> u32 {
    slot.weight
}

/// What memory holds of one session.
///
/// A save on this instance puts its copy into the slot in place when nothing
/// else changed what memory holds of the session since it was cached (see
/// [`CachedStore::put_in_place`]): a moka write (the key's lock, a new
/// entry, its timers, the old one's reclamation) costs several times the
/// rest of a cached save. A moka compute on the entry that replaces or
/// removes the slot retires it, so a save holding that slot takes the
/// compute too; a slot removed otherwise (an invalidation, moka's own
/// eviction) is one nobody reads any more.
struct Slot {
    state: Mutex<SlotState>,
    /// What moka charged for the slot: a copy that weighs more goes in as a
    /// new slot, weighed again.
    weight: u32,
    /// When the call that read or wrote the copy began: the slot leaves
    /// memory `max_staleness` after it ([`Freshness`]), however long the
    /// call took to come back.
    fresh_from: Instant,
}

struct SlotState {
    copy: Arc<Record>,
    /// Replaced or removed by a compute on the entry: what goes into this
    /// slot is no longer served.
    retired: bool,
}

impl Slot {
    fn new(copy: Arc<Record>, fresh_from: Instant) -> Arc<Self> {
        Arc::new(Self {
            weight: weight_of(&copy),
            fresh_from,
            state: Mutex::new(SlotState {
                copy,
                retired: false,
            }),
        })
    }

    /// Nothing panics while holding the lock; a poisoned one is still
    /// consistent.
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The copy the slot holds now.
    fn copy(&self) -> Arc<Record> {
        Arc::clone(&self.lock().copy)
    }
}

/// What a copy about to be cached may replace.
#[derive(Debug, Clone)]
enum Replace {
    /// Only an older version: a load, which may have read the record before
    /// a touch of the same version cached the new deadline.
    Older,
    /// Only an older version too, for a save: a copy of the version it
    /// wrote was read, or touched, after the save landed (the version did
    /// not exist before), so it is as new as the save or newer (a touch
    /// moved its deadline). Unlike a load, a save that caches nothing after
    /// a burial counts one of its own.
    Saved,
    /// Only this very copy (the same allocation, not an equal one): the
    /// copy a touch saw before its backing call, whose deadline it moved.
    /// Any other copy, or none, means that writes or other touches came in
    /// between, in an order this instance cannot know (two touches of one
    /// version both apply, and the last to reach the backing store wins
    /// there, even one that sets the deadline memory already shows): the
    /// copy goes and a burial is counted, so the next load reads the store.
    Copy(Arc<Record>),
}

/// What a delete ends: one session, every session of an owner, or every
/// session.
enum Ending<'a> {
    Id(&'a RecordId),
    Owner(&'a str),
    All,
}

/// Buries what a delete, save or touch ends if it is dropped before it
/// finishes (a store timeout, a client gone): its backing call may still take
/// effect (ending the session, or writing a version the cache does not
/// have), and neither a copy cached before nor a load that read the session
/// meanwhile may outlive it.
struct Unfinished<'a, S> {
    store: &'a CachedStore<S>,
    ending: Option<Ending<'a>>,
}

impl<S> Unfinished<'_, S> {
    /// The call finished, and the cache has its outcome: nothing to do on
    /// drop.
    fn finished(mut self) {
        self.ending = None;
    }
}

impl<S> Drop for Unfinished<'_, S> {
    fn drop(&mut self) {
        if let Some(ending) = self.ending.take() {
            self.store.bury_now(&ending);
        }
    }
}

/// Drops the copy a [`CachedStore::remember`] may have put if it is dropped
/// before it checked for burials counted outside the entry's compute (a
/// logout everywhere): moka may have put the copy already, after the
/// burial's predicate, which spares entries written after it.
struct Recheck<'a, S> {
    store: &'a CachedStore<S>,
    id: &'a RecordId,
    seen: Option<Seen>,
}

impl<S> Recheck<'_, S> {
    /// Whether a burial in the record's shard was counted since `seen`.
    fn buried(&self) -> bool {
        (self.seen)
            .is_some_and(|seen| self.store.burials(self.id).load(Ordering::SeqCst) != seen.burials)
    }

    fn finished(mut self) {
        self.seen = None;
    }
}

impl<S> Drop for Recheck<'_, S> {
    fn drop(&mut self) {
        if self.buried() {
            self.store.bury_now(&Ending::Id(self.id));
        }
    }
}

/// The longest `max_staleness` and `idle_eviction` moka takes (it refuses
/// more than 1 000 years): longer is no different from forever.
const LONGEST: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// How long a slot stays in memory: `max_staleness` from when the call that
/// read or wrote its copy began, not from when moka took it in. A load that
/// came back late (a slow backing store) would otherwise have its copy,
/// already as old as the call, served for a whole `max_staleness` more.
struct Freshness(Duration);

impl Freshness {
    fn left(&self, slot: &Slot, now: Instant) -> Duration {
        self.0
            .saturating_sub(now.saturating_duration_since(slot.fresh_from))
    }
}

impl Expiry<RecordId, Arc<Slot>> for Freshness {
    fn expire_after_create(
        &self,
        _: &RecordId,
        slot: &Arc<Slot>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(self.left(slot, created_at))
    }

    fn expire_after_update(
        &self,
        _: &RecordId,
        slot: &Arc<Slot>,
        updated_at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.left(slot, updated_at))
    }
}

impl<S: fmt::Debug> fmt::Debug for CachedStore<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedStore")
            .field("backing", &self.backing)
            .field("cached", &self.cache.as_ref().map(Cache::entry_count))
            .finish()
    }
}

/// Builds a [`CachedStore`].
#[derive(Debug)]
#[must_use]
pub struct CachedStoreBuilder<S> {
    backing: S,
    max_staleness: Duration,
    idle_eviction: Duration,
    max_bytes: u64,
}

impl<S: Store> CachedStoreBuilder<S> {
    /// How old a cached copy may be when served. Default 5 seconds; zero turns
    /// the cache off.
    pub fn max_staleness(mut self, d: Duration) -> Self {
        self.max_staleness = d;
        self
    }

    /// How long an unused session stays in memory. Default 2 minutes. A copy
    /// also leaves at `max_staleness` after it was read, so this matters
    /// only when it is the shorter of the two.
    pub fn idle_eviction(mut self, d: Duration) -> Self {
        self.idle_eviction = d;
        self
    }

    /// The memory budget of the cache, in bytes (approximate). Default
    /// [`DEFAULT_MAX_BYTES`].
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Builds the store.
    pub fn build(self) -> CachedStore<S> {
        let cache = (!self.max_staleness.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(self.max_bytes)
                .weigher(weigh)
                .eviction_policy(EvictionPolicy::lru())
                .expire_after(Freshness(self.max_staleness.min(LONGEST)))
                .time_to_idle(self.idle_eviction.clamp(Duration::from_millis(1), LONGEST))
                .support_invalidation_closures()
                .build_with_hasher(crate::ByRecordId::default())
        });
        CachedStore {
            backing: self.backing,
            cache,
            burials: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            writes: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            #[cfg(test)]
            predicates: AtomicU64::new(0),
            #[cfg(test)]
            pauses: Arc::default(),
        }
    }
}

/// What a burial needs, without the backing store (a drop guard calls it).
impl<S> CachedStore<S> {
    fn burials(&self, id: &RecordId) -> &AtomicU64 {
        &self.burials[shard(id)]
    }

    /// Counts a burial of `ending` without waiting, and drops what memory
    /// holds of it (the last step of a logout everywhere, and of a write
    /// dropped half way): one session at once, as a rule, else by a
    /// predicate moka applies to every entry written before.
    ///
    /// moka keeps a predicate until its upkeep has checked every entry, and
    /// checks each on every read until then: one per write dropped (a store
    /// timeout, during a slowdown, at any rate of requests) would make
    /// every cached read slower the longer the backing store stays slow.
    fn bury_now(&self, ending: &Ending<'_>) {
        let Some(cache) = &self.cache else { return };
        let registered = match *ending {
            Ending::Id(id) => {
                self.burials(id).fetch_add(1, Ordering::SeqCst);
                // moka's removal is done on the first poll unless an earlier
                // interrupted operation holds it up; dropped then, moka
                // finishes what it began, and the predicate covers the rest.
                if futures_util::FutureExt::now_or_never(cache.invalidate(id)).is_some() {
                    return;
                }
                let id = *id;
                cache.invalidate_entries_if(move |key, _| *key == id)
            }
            Ending::All => {
                for shard in self.burials.iter() {
                    shard.fetch_add(1, Ordering::SeqCst);
                }
                // Every copy put before this goes; one put after it from a
                // count taken before sees the count moved.
                cache.invalidate_all();
                return;
            }
            Ending::Owner(owner) => {
                for shard in self.burials.iter() {
                    shard.fetch_add(1, Ordering::SeqCst);
                }
                let owner = owner.to_owned();
                cache.invalidate_entries_if(move |_, slot| {
                    slot.copy().owner.as_deref() == Some(owner.as_str())
                })
            }
        };
        #[cfg(test)]
        self.predicates.fetch_add(1, Ordering::SeqCst);
        if registered.is_err() {
            // Closures are enabled at build time, so this cannot happen;
            // dropping everything is the safe answer if it ever does.
            cache.invalidate_all();
        }
    }
}

impl<S: Store> CachedStore<S> {
    /// Starts building a cache in front of `backing`.
    pub fn builder(backing: S) -> CachedStoreBuilder<S> {
        CachedStoreBuilder {
            backing,
            max_staleness: Duration::from_secs(5),
            idle_eviction: Duration::from_secs(120),
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// The backing store.
    pub fn backing(&self) -> &S {
        &self.backing
    }

    /// Caches `record` unless memory holds a version that `replace` keeps,
    /// or a burial in its shard came after `read_after` (the counts the
    /// caller saw before its call to the backing store): then a copy in
    /// memory is dropped too. A load or save caches nothing either where
    /// memory holds no copy and another save or touch in its shard was
    /// counted after `read_after` (a save's own write counted in it).
    async fn remember(&self, record: &Record, replace: Replace, read_after: Option<Seen>) {
        let Some(cache) = &self.cache else { return };
        if until(record.expires_at).is_zero() {
            // Already over: no older copy may be served in its place.
            self.forget(&record.id).await;
            return;
        }
        let new = Arc::new(record.clone());
        let fresh_from = read_after.map_or_else(Instant::now, |seen| seen.at);
        let slot = Slot::new(Arc::clone(&new), fresh_from);
        let burials = self.burials(&record.id);
        let writes = &self.writes[shard(&record.id)];
        let recheck = Recheck {
            store: self,
            id: &record.id,
            seen: read_after,
        };
        #[cfg(test)]
        let pauses = Arc::clone(&self.pauses);
        let done = cache
            .entry(record.id)
            .and_compute_with(|existing| {
                // A burial counts inside a compute on the same entry, so the
                // two never interleave: either this sees the count move, or
                // the burial drops what this puts.
                let buried =
                    read_after.is_some_and(|seen| burials.load(Ordering::Acquire) != seen.burials);
                let written =
                    read_after.is_some_and(|seen| writes.load(Ordering::Acquire) != seen.writes);
                let existing = existing.map(|e| e.into_value());
                let mut state = existing.as_deref().map(Slot::lock);
                let cached = state.as_ref().map(|s| Arc::clone(&s.copy));
                let op = match (buried, replace, cached) {
                    // Nothing read before a burial is cached. A copy put
                    // since stays: it was read or written after the burial
                    // (dropping it would let a load that read an older
                    // version before it, and took its count after the
                    // burial, cache that version).
                    (true, Replace::Older, _) => Op::Nop,
                    // Nor is anything written before a burial; this write
                    // then drops the copy and counts a burial of its own,
                    // since a load that took its count after the other
                    // burial may have read the record before this write
                    // landed.
                    (true, _, cached) => {
                        burials.fetch_add(1, Ordering::AcqRel);
                        if cached.is_some() {
                            Op::Remove
                        } else {
                            Op::Nop
                        }
                    }
                    (false, Replace::Copy(before), cached) => match cached {
                        Some(c) if Arc::ptr_eq(&c, &before) => Op::Put(slot),
                        other => {
                            burials.fetch_add(1, Ordering::AcqRel);
                            if other.is_some() {
                                Op::Remove
                            } else {
                                Op::Nop
                            }
                        }
                    },
                    (false, Replace::Older | Replace::Saved, Some(c))
                        if c.version >= new.version =>
                    {
                        Op::Nop
                    }
                    // A write since may have cached a newer copy that moka
                    // has dropped already: what this load read, or this save
                    // wrote, may be older.
                    (false, Replace::Older | Replace::Saved, None) if written => Op::Nop,
                    (false, _, _) => Op::Put(slot),
                };
                if let (Op::Put(_) | Op::Remove, Some(state)) = (&op, state.as_mut()) {
                    state.retired = true;
                }
                #[cfg(test)]
                let pauses = Arc::clone(&pauses);
                async move {
                    #[cfg(test)]
                    pauses.at(tests::Pause::Deciding).await;
                    op
                }
            })
            .await;
        #[cfg(test)]
        self.pauses.at(tests::Pause::Decided).await;
        // A logout everywhere counts in every shard outside this entry's
        // compute, then drops its owner's copies by a predicate that spares
        // entries written after it: a copy put from a count that has moved
        // since goes again (and goes on drop if this is dropped first).
        let put = matches!(done, CompResult::Inserted(_) | CompResult::ReplacedWith(_));
        if put && recheck.buried() {
            cache.invalidate(&record.id).await;
        }
        recheck.finished();
    }

    /// Drops the cached copy of `id`.
    async fn forget(&self, id: &RecordId) {
        if let Some(cache) = &self.cache {
            cache.invalidate(id).await;
        }
    }

    /// Drops the cached copy of `id` and counts the burial in its shard, in
    /// one compute on the entry: a `remember` of the same id runs wholly
    /// before or wholly after it. Nothing is left in memory: the count keeps
    /// out what was read before the burial.
    async fn bury(&self, id: &RecordId) {
        if let Some(cache) = &self.cache {
            let burials = self.burials(id);
            cache
                .entry(*id)
                .and_compute_with(|existing| {
                    burials.fetch_add(1, Ordering::AcqRel);
                    std::future::ready(match existing {
                        Some(entry) => {
                            entry.value().lock().retired = true;
                            Op::Remove
                        }
                        None => Op::Nop,
                    })
                })
                .await;
        }
    }

    /// A guard that buries `id` unless the call it covers finishes.
    fn unfinished<'a>(&'a self, id: &'a RecordId) -> Unfinished<'a, S> {
        Unfinished {
            store: self,
            ending: Some(Ending::Id(id)),
        }
    }

    /// Caches what a save that landed wrote (`seen`: the counts from before
    /// its backing call, its own write counted): into the slot memory holds
    /// for its record if [`put_in_place`](Self::put_in_place) may, else
    /// through [`remember`](Self::remember).
    async fn remember_saved(&self, record: &Record, seen: Option<Seen>) {
        let (Some(cache), Some(counts)) = (&self.cache, seen) else {
            return;
        };
        if let Some(slot) = cache.get(&record.id).await {
            if self.put_in_place(&slot, record, counts) {
                return;
            }
        }
        self.remember(record, Replace::Saved, seen).await;
    }

    /// Puts `record`, which a save just wrote to the backing store having
    /// seen the counts `seen` before, into `slot` without a moka write, and
    /// says whether memory now holds what `remember` would have left there
    /// (a slot holding the same or a newer version keeps it). It may not,
    /// and the save then takes `remember`, where a moka compute on the entry
    /// has anything else that happened since to reckon with:
    ///
    /// * a compute replaced or removed the slot (it is retired): memory may
    ///   hold another copy, of any version;
    /// * a burial counted in the shard since the save's count: what memory
    ///   holds goes, and the save counts a burial of its own;
    /// * the owner changes: a logout everywhere that counted after the
    ///   check above drops the owner's copies by a predicate, which may
    ///   have looked at this slot already and seen the other owner;
    /// * the copy weighs more than moka charged for the slot.
    ///
    /// A burial counted after the check leaves nothing to undo: a compute
    /// that removed the slot retired it under this lock, and one that
    /// removes it later takes this copy with it; a removal outside a
    /// compute (a dropped write's, moka's own upkeep) leaves this copy in a
    /// slot nobody can reach, and nothing older gets in after it: a load
    /// that read, or a save that landed, before this save counted its write
    /// caches nothing in an empty entry.
    fn put_in_place(&self, slot: &Slot, record: &Record, seen: Seen) -> bool {
        let mut state = slot.lock();
        if state.retired
            || state.copy.owner != record.owner
            || weight_of(record) > slot.weight
            || self.burials(&record.id).load(Ordering::Acquire) != seen.burials
        {
            return false;
        }
        if state.copy.version < record.version {
            state.copy = Arc::new(record.clone());
        }
        true
    }

    /// The counts `remember` compares with, read before a call to the
    /// backing store.
    fn seen_now(&self, id: &RecordId) -> Option<Seen> {
        self.cache.as_ref().map(|_| Seen {
            burials: self.burials(id).load(Ordering::Acquire),
            writes: self.writes[shard(id)].load(Ordering::Acquire),
            at: Instant::now(),
        })
    }

    /// Counts a save or touch that landed, before it caches its copy, and
    /// returns the counts it saw before its backing call with this write
    /// added: any other write counted since (one that landed after this
    /// one, even if it counted first) still shows.
    fn wrote(&self, id: &RecordId, seen: Option<Seen>) -> Option<Seen> {
        let seen = seen?;
        self.writes[shard(id)].fetch_add(1, Ordering::AcqRel);
        Some(Seen {
            writes: seen.writes + 1,
            ..seen
        })
    }
}

#[async_trait]
impl<S: Store> Store for CachedStore<S> {
    async fn load(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let now = Timestamp::now();
        if let Some(cache) = &self.cache {
            if let Some(slot) = cache.get(id).await {
                // Cloned outside the slot's lock: loads of one busy session
                // on several threads do not queue behind each other.
                let hit = slot.copy();
                if !hit.is_expired(now) {
                    return Ok(Some((*hit).clone()));
                }
                self.forget(id).await;
            }
        }
        let seen = self.seen_now(id);
        // A record of another id (a backing store that mixed its keys up)
        // is not this session, and must not be cached under its own id.
        let loaded = self.backing.load(id).await?.filter(|r| r.id == *id);
        if let Some(record) = &loaded {
            self.remember(record, Replace::Older, seen).await;
        }
        Ok(loaded)
    }

    async fn create(&self, record: &Record) -> Result<Created, StoreError> {
        let unfinished = self.unfinished(&record.id);
        let created = self.backing.create(record).await;
        // Not cached: many sessions are never read again (clients that keep
        // no cookies make one per request), and caching each would cost
        // every create an insert and push read sessions out. The first load
        // caches it. A copy of an older record under the id goes, also when
        // the outcome is unknown (an error, or this call dropped by a
        // timeout, after the create may have applied), as a burial: a load
        // that read the new record before a save of it landed must not
        // cache that first version after the save's copy went. An id found
        // taken is left as it is: the create changed nothing, and dropping
        // the live record's copy would let a load that read it before a
        // newer save cache the older version again.
        if !matches!(created, Ok(Created::IdTaken)) {
            self.bury(&record.id).await;
        }
        unfinished.finished();
        created
    }

    async fn save(&self, record: &Record, expected_version: u64) -> Result<Saved, StoreError> {
        let seen = self.seen_now(&record.id);
        let unfinished = self.unfinished(&record.id);
        let saved = self.backing.save(record, expected_version).await;
        match &saved {
            // A save that moved the deadline into the past ended the
            // session: a burial, as a touch into the past makes, so a load
            // racing it cannot cache the version before.
            Ok(Saved::Saved) if until(record.expires_at).is_zero() => self.bury(&record.id).await,
            Ok(Saved::Saved) => {
                // A save that finds memory empty caches nothing if another
                // write landed in the shard after it: moka may have dropped
                // that write's copy (its `max_staleness` runs from the call
                // that put the slot in, not from the last save put in place).
                let seen = self.wrote(&record.id, seen);
                self.remember_saved(record, seen).await;
            }
            // A conflict means the cached copy is stale; an error leaves the
            // outcome unknown (the save may have applied, ending the
            // session even). Either way the next load must read the store,
            // and a load that read before this save must not cache what it
            // read after it: a burial, not just a dropped copy.
            _ => self.bury(&record.id).await,
        }
        unfinished.finished();
        saved
    }

    async fn touch(
        &self,
        id: &RecordId,
        version: u64,
        owner: Option<&str>,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        // The copy whose deadline this touch moves, as it was before.
        let before = match &self.cache {
            Some(cache) => cache
                .get(id)
                .await
                .map(|slot| slot.copy())
                .filter(|r| r.version == version),
            None => None,
        };
        let seen = self.seen_now(id);
        let unfinished = self.unfinished(id);
        let touched = self.backing.touch(id, version, owner, expires_at).await;
        match (&touched, before) {
            // A deadline already past ends the session (a rotation retires
            // its old record so): a burial, as a delete makes.
            (Ok(true), _) if until(expires_at).is_zero() => self.bury(id).await,
            (Ok(true), Some(before)) => {
                // The counts stay the ones from before the call: a touch
                // replaces only the very copy it saw, whatever was written.
                let _ = self.wrote(id, seen);
                let mut record = (*before).clone();
                record.expires_at = expires_at;
                self.remember(&record, Replace::Copy(before), seen).await;
            }
            // No copy to move the deadline of (or the outcome is unknown):
            // counted like a burial, so that a load that read the record
            // before the touch does not cache the old deadline after it.
            _ => self.bury(id).await,
        }
        unfinished.finished();
        touched
    }

    async fn delete(&self, id: &RecordId) -> Result<(), StoreError> {
        self.bury(id).await;
        let unfinished = self.unfinished(id);
        let deleted = self.backing.delete(id).await;
        // Again once the backing store no longer has it: a load that took its
        // count after the first burial and read the record meanwhile either
        // sees this burial or has its copy dropped by it. This one waits for
        // such a load's compute on the entry, so it too is covered if the
        // delete is dropped.
        self.bury(id).await;
        unfinished.finished();
        deleted
    }

    async fn delete_expired(&self) -> Result<u64, StoreError> {
        if let Some(cache) = &self.cache {
            cache.run_pending_tasks().await;
        }
        self.backing.delete_expired().await
    }

    async fn ids_of_owner(&self, owner: &str) -> Result<Vec<RecordId>, StoreError> {
        self.backing.ids_of_owner(owner).await
    }

    async fn delete_owner(&self, owner: &str) -> Result<u64, StoreError> {
        // Burials before and after, as `delete` makes: a load that read one
        // of these records before the delete must not cache it afterwards.
        let ids = match self.cache {
            Some(_) => self.backing.ids_of_owner(owner).await?,
            None => Vec::new(),
        };
        for id in &ids {
            self.bury(id).await;
        }
        // Dropped (finished or not), this counts a burial in every shard and
        // drops the owner's copies: sessions the listing missed (created
        // since) had no burial of their own, and loads and writes that
        // reached the backing store before the delete must not cache them
        // after it, even when the backing store failed part of the way.
        let ending = Unfinished {
            store: self,
            ending: Some(Ending::Owner(owner)),
        };
        let n = self.backing.delete_owner(owner).await;
        for id in &ids {
            self.bury(id).await;
        }
        drop(ending);
        n
    }

    async fn delete_all(&self) -> Result<u64, StoreError> {
        // Burials in every shard before and after, as a logout everywhere
        // counts them, and every copy dropped each time: a load that read a
        // record before the backing store deleted it must not cache it
        // afterwards. Dropped (finished or not), the guard does the second.
        self.bury_now(&Ending::All);
        let ending = Unfinished {
            store: self,
            ending: Some(Ending::All),
        };
        let n = self.backing.delete_all().await;
        drop(ending);
        n
    }

    /// The backing store's: every save goes through to it.
    fn group_commit(&self) -> bool {
        self.backing.group_commit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use session_core::testing::Instrumented;
    use session_core::Id;

    fn record() -> Record {
        let now = Timestamp::now();
        let mut r = Record::new(
            Id::generate().unwrap().record_id(),
            now,
            now + std::time::Duration::from_secs(3600),
        );
        r.data.insert("k".into(), b"v0".to_vec());
        r
    }

    fn next(r: &Record, value: &[u8]) -> Record {
        let mut n = r.clone();
        n.version += 1;
        n.data.insert("k".into(), value.to_vec());
        n
    }

    type Backing = Instrumented<MemoryStore>;

    fn pair(staleness: Duration) -> (Backing, CachedStore<Backing>, CachedStore<Backing>) {
        let backing = Instrumented::new(MemoryStore::new());
        let a = CachedStore::builder(backing.clone())
            .max_staleness(staleness)
            .build();
        let b = CachedStore::builder(backing.clone())
            .max_staleness(staleness)
            .build();
        (backing, a, b)
    }

    /// `delete_all` drops every cached copy: a session read (and cached)
    /// before it is not served from memory after it.
    #[tokio::test]
    async fn delete_all_leaves_no_copy_in_memory() {
        let (backing, a, _) = pair(Duration::from_secs(60));
        let (r, s) = (record(), record());
        for x in [&r, &s] {
            a.create(x).await.unwrap();
            assert_eq!(a.load(&x.id).await.unwrap(), Some(x.clone()));
        }
        assert_eq!(backing.counts().load, 2);
        assert_eq!(a.delete_all().await.unwrap(), 2);
        for x in [&r, &s] {
            assert_eq!(a.load(&x.id).await.unwrap(), None);
        }
        assert_eq!(backing.counts().load, 4, "the loads went to the store");
    }

    /// A backing store that answers a load with another id's record (its
    /// keys mixed up) gets no answer through, and nothing is cached: not
    /// under the record's own id either, where a load would then find it.
    #[tokio::test]
    async fn a_record_of_another_id_is_neither_answered_nor_cached() {
        let backing = session_core::testing::TestStore::default();
        let cached = CachedStore::builder(backing.clone()).build();
        let (asked, other) = (record(), record());
        backing.put_under(asked.id, other.clone());
        assert_eq!(cached.load(&asked.id).await.unwrap(), None);
        assert_eq!(cached.load(&other.id).await.unwrap(), None);
        let cache = cached.cache.as_ref().unwrap();
        cache.run_pending_tasks().await;
        assert_eq!(cache.entry_count(), 0);
    }

    /// A create is not cached (most sessions made by clients that keep no
    /// cookie are never read again); its first read caches it.
    #[tokio::test]
    async fn reads_are_served_from_memory() {
        let (backing, a, _) = pair(Duration::from_secs(60));
        let r = record();
        a.create(&r).await.unwrap();
        let cache = a.cache.as_ref().unwrap();
        cache.run_pending_tasks().await;
        assert_eq!(cache.entry_count(), 0);
        for _ in 0..5 {
            assert_eq!(a.load(&r.id).await.unwrap(), Some(r.clone()));
        }
        assert_eq!(backing.counts().load, 1);
    }

    /// A create over an id whose older record memory still holds (expired
    /// in the backing store, which freed the id) drops that copy.
    #[tokio::test]
    async fn a_create_drops_a_copy_of_an_older_record_under_its_id() {
        let (backing, a, _) = pair(Duration::from_secs(60));
        let r = record();
        a.create(&r).await.unwrap();
        a.load(&r.id).await.unwrap();
        backing.delete(&r.id).await.unwrap();
        let mut again = r.clone();
        again.data.insert("k".into(), b"new".to_vec());
        assert_eq!(a.create(&again).await.unwrap(), Created::Created);
        assert_eq!(a.load(&r.id).await.unwrap(), Some(again));
    }

    #[tokio::test]
    async fn another_instance_sees_writes_within_max_staleness() {
        let (_, a, b) = pair(Duration::from_millis(300));
        let r = record();
        a.create(&r).await.unwrap();
        assert_eq!(b.load(&r.id).await.unwrap(), Some(r.clone()));
        let r1 = next(&r, b"v1");
        assert_eq!(a.save(&r1, 0).await.unwrap(), Saved::Saved);
        // b may still serve its copy...
        assert_eq!(b.load(&r.id).await.unwrap(), Some(r.clone()));
        // ...but never writes over the newer record: the CAS fails and b's
        // copy is dropped.
        let stale = next(&r, b"from b");
        assert_eq!(b.save(&stale, 0).await.unwrap(), Saved::Conflict);
        assert_eq!(b.load(&r.id).await.unwrap(), Some(r1.clone()));
        // And without any write, b catches up after max_staleness.
        let r2 = next(&r1, b"v2");
        assert_eq!(a.save(&r2, 1).await.unwrap(), Saved::Saved);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(b.load(&r.id).await.unwrap(), Some(r2));
    }

    #[tokio::test]
    async fn a_session_destroyed_elsewhere_is_never_written_back() {
        let (_, a, b) = pair(Duration::from_secs(60));
        let r = record();
        a.create(&r).await.unwrap();
        assert!(b.load(&r.id).await.unwrap().is_some());
        a.delete(&r.id).await.unwrap();
        assert_eq!(b.save(&next(&r, b"late"), 0).await.unwrap(), Saved::Missing);
        assert_eq!(b.load(&r.id).await.unwrap(), None);
        assert_eq!(a.load(&r.id).await.unwrap(), None);
    }

    /// Loads of `id` from `a` reach the backing store.
    async fn not_in_memory(backing: &Backing, a: &CachedStore<Backing>, id: &RecordId) {
        let before = backing.counts().load;
        a.load(id).await.unwrap();
        assert_eq!(backing.counts().load, before + 1, "served from memory");
    }

    /// A load that took its count `seen` and read `r` before a delete
    /// caches it after: it is not kept, and the session is gone.
    async fn a_stale_read_is_not_kept(
        backing: &Backing,
        a: &CachedStore<Backing>,
        r: &Record,
        seen: Option<Seen>,
    ) {
        a.remember(r, Replace::Older, seen).await;
        assert_eq!(a.load(&r.id).await.unwrap(), None);
        not_in_memory(backing, a, &r.id).await;
    }

    #[tokio::test]
    async fn deletes_of_unknown_ids_leave_nothing_in_memory() {
        let (_, a, _) = pair(Duration::from_secs(60));
        // Logouts with forged ids, say.
        for _ in 0..1_000 {
            let id = Id::generate().unwrap().record_id();
            a.delete(&id).await.unwrap();
        }
        let cache = a.cache.as_ref().unwrap();
        cache.run_pending_tasks().await;
        assert_eq!(cache.entry_count(), 0);
        assert_eq!(cache.weighted_size(), 0);
    }

    #[tokio::test]
    async fn a_load_racing_a_logout_everywhere_cannot_cache_the_session_again() {
        let (backing, a, _) = pair(Duration::from_secs(60));
        let mut r = record();
        r.owner = Some("alice".into());
        a.create(&r).await.unwrap();
        // A load read the record from the backing store just before the
        // owner's sessions were deleted, and caches it just after.
        let seen = a.seen_now(&r.id);
        assert_eq!(a.delete_owner("alice").await.unwrap(), 1);
        a_stale_read_is_not_kept(&backing, &a, &r, seen).await;
    }

    /// Which calls a [`Held`] store holds.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    enum Hold {
        #[default]
        Creates,
        Saves,
        Touches,
        Deletes,
    }

    /// A backing store whose first call of one kind takes effect and then
    /// holds its answer until released.
    #[derive(Debug, Default)]
    struct Held {
        inner: MemoryStore,
        what: Hold,
        held: std::sync::atomic::AtomicBool,
        done: Arc<tokio::sync::Notify>,
        release: Arc<tokio::sync::Notify>,
    }

    impl Held {
        async fn hold(&self, call: Hold) {
            if call == self.what && !self.held.swap(true, Ordering::SeqCst) {
                self.done.notify_one();
                self.release.notified().await;
            }
        }
    }

    #[async_trait]
    impl Store for Held {
        async fn load(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
            self.inner.load(id).await
        }
        async fn create(&self, record: &Record) -> Result<Created, StoreError> {
            let created = self.inner.create(record).await;
            self.hold(Hold::Creates).await;
            created
        }
        async fn save(&self, record: &Record, expected: u64) -> Result<Saved, StoreError> {
            let saved = self.inner.save(record, expected).await;
            self.hold(Hold::Saves).await;
            saved
        }
        async fn touch(
            &self,
            id: &RecordId,
            version: u64,
            owner: Option<&str>,
            expires_at: Timestamp,
        ) -> Result<bool, StoreError> {
            let touched = self.inner.touch(id, version, owner, expires_at).await;
            self.hold(Hold::Touches).await;
            touched
        }
        async fn delete(&self, id: &RecordId) -> Result<(), StoreError> {
            let deleted = self.inner.delete(id).await;
            self.hold(Hold::Deletes).await;
            deleted
        }
        async fn delete_expired(&self) -> Result<u64, StoreError> {
            self.inner.delete_expired().await
        }
        async fn ids_of_owner(&self, owner: &str) -> Result<Vec<RecordId>, StoreError> {
            self.inner.ids_of_owner(owner).await
        }
        async fn delete_owner(&self, owner: &str) -> Result<u64, StoreError> {
            self.inner.delete_owner(owner).await
        }
        async fn delete_all(&self) -> Result<u64, StoreError> {
            self.inner.delete_all().await
        }
    }

    /// Points in a [`CachedStore`]'s own code where a test holds a call.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Pause {
        /// Inside `remember`'s compute: the burial count read, the copy
        /// not put yet.
        Deciding,
        /// After `remember`'s compute, before its check of the burials.
        Decided,
    }

    /// The pauses a test asked for, in order: each holds the first call that
    /// reaches it until released.
    #[derive(Debug, Default)]
    pub(super) struct Pauses {
        ahead: std::sync::Mutex<Vec<Pause>>,
        reached: tokio::sync::Notify,
        release: tokio::sync::Notify,
    }

    impl Pauses {
        pub(super) async fn at(&self, point: Pause) {
            let hold = {
                let mut ahead = self.ahead.lock().unwrap();
                let next = ahead.first() == Some(&point);
                if next {
                    ahead.remove(0);
                }
                next
            };
            if hold {
                self.reached.notify_one();
                self.release.notified().await;
            }
        }
    }

    /// A delete dropped once its backing call took effect (a store timeout)
    /// counts its burial outside the entry's compute, while a load caches
    /// what it read before the delete; the load is dropped (a client gone)
    /// after moka put its copy, before it checked the count: the copy does
    /// not stay.
    #[tokio::test]
    async fn a_load_dropped_after_caching_past_a_burial_leaves_no_copy() {
        let (_, a, _) = pair(Duration::from_secs(60));
        let a = Arc::new(a);
        let r = record();
        a.backing().create(&r).await.unwrap();
        *a.pauses.ahead.lock().unwrap() = vec![Pause::Deciding, Pause::Decided];
        let loading = tokio::spawn({
            let (a, id) = (Arc::clone(&a), r.id);
            async move { a.load(&id).await }
        });
        // The load read the record and the burial count, then the delete.
        a.pauses.reached.notified().await;
        a.backing().delete(&r.id).await.unwrap();
        drop(Unfinished {
            store: &*a,
            ending: Some(Ending::Id(&r.id)),
        });
        // The copy goes in; the load is then dropped before its check.
        a.pauses.release.notify_one();
        a.pauses.reached.notified().await;
        loading.abort();
        assert!(loading.await.unwrap_err().is_cancelled());
        assert_eq!(a.load(&r.id).await.unwrap(), None);
    }

    /// A load whose backing call came back late (held here after it read
    /// the record, before it cached it) keeps its copy in memory for
    /// `max_staleness` from when the call began, not from when the copy went
    /// in: whatever the backing store's latency, no copy served is older
    /// than `max_staleness`.
    #[tokio::test]
    async fn a_slow_loads_copy_leaves_max_staleness_after_the_load_began() {
        let (backing, a, _) = pair(Duration::from_secs(2));
        let a = Arc::new(a);
        let r = record();
        backing.create(&r).await.unwrap();
        *a.pauses.ahead.lock().unwrap() = vec![Pause::Deciding];
        let loading = tokio::spawn({
            let (a, id) = (Arc::clone(&a), r.id);
            async move { a.load(&id).await }
        });
        a.pauses.reached.notified().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        a.pauses.release.notify_one();
        assert_eq!(loading.await.unwrap().unwrap(), Some(r.clone()));
        let loads = backing.counts().load;
        assert_eq!(a.load(&r.id).await.unwrap(), Some(r.clone()));
        assert_eq!(backing.counts().load, loads, "served from memory");
        // 2.2 s after the load began, 1.2 s after its copy went in.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(a.load(&r.id).await.unwrap(), Some(r));
        assert_eq!(
            backing.counts().load,
            loads + 1,
            "a copy served past max_staleness from its read"
        );
    }

    /// A cache in front of a [`Held`] store, and the store's signals.
    fn held(
        what: Hold,
    ) -> (
        Arc<CachedStore<Held>>,
        Arc<tokio::sync::Notify>,
        Arc<tokio::sync::Notify>,
    ) {
        let backing = Held {
            what,
            ..Held::default()
        };
        let (done, release) = (Arc::clone(&backing.done), Arc::clone(&backing.release));
        let cached = CachedStore::builder(backing)
            .max_staleness(Duration::from_secs(60))
            .build();
        (Arc::new(cached), done, release)
    }

    /// Drops `call` once its held backing call has taken effect (`done`),
    /// as a store timeout or a client gone would.
    async fn drop_once_it_took_effect<T: fmt::Debug>(
        done: &tokio::sync::Notify,
        call: tokio::task::JoinHandle<T>,
    ) {
        done.notified().await;
        call.abort();
        assert!(call.await.unwrap_err().is_cancelled());
    }

    #[tokio::test]
    async fn a_login_racing_a_logout_everywhere_is_not_cached_after_it() {
        let (a, created, release) = held(Hold::Creates);
        let mut r = record();
        r.owner = Some("alice".into());
        // The create reaches the backing store...
        let creating = tokio::spawn({
            let (a, r) = (Arc::clone(&a), r.clone());
            async move { a.create(&r).await }
        });
        created.notified().await;
        // ...a logout everywhere lists and deletes the new session...
        assert_eq!(a.delete_owner("alice").await.unwrap(), 1);
        // ...and then the create caches what it wrote: it is not kept.
        release.notify_one();
        assert_eq!(creating.await.unwrap().unwrap(), Created::Created);
        assert_eq!(a.load(&r.id).await.unwrap(), None);
    }

    /// A stored record and a delete of it whose backing call has taken
    /// effect and holds its answer until `release`; and the burial count
    /// that a load taking its count now would see.
    #[allow(clippy::type_complexity)]
    async fn a_delete_under_way() -> (
        Arc<CachedStore<Held>>,
        Record,
        tokio::task::JoinHandle<Result<(), StoreError>>,
        Arc<tokio::sync::Notify>,
        Option<Seen>,
    ) {
        let (a, deleted, release) = held(Hold::Deletes);
        let r = record();
        a.create(&r).await.unwrap();
        let deleting = tokio::spawn({
            let (a, id) = (Arc::clone(&a), r.id);
            async move { a.delete(&id).await }
        });
        deleted.notified().await;
        let seen = a.seen_now(&r.id);
        (a, r, deleting, release, seen)
    }

    #[tokio::test]
    async fn a_delete_dropped_after_its_backing_call_keeps_the_session_out() {
        // The delete's backing call takes effect, and the delete waits for
        // its answer, while a load that took its count after the first
        // burial, and read the record before the backing call, caches it...
        let (a, r, deleting, _release, seen) = a_delete_under_way().await;
        a.remember(&r, Replace::Older, seen).await;
        // ...then the delete is dropped (a store timeout): the copy goes,
        // and a second copy from that read is not kept either.
        deleting.abort();
        assert!(deleting.await.unwrap_err().is_cancelled());
        assert_eq!(a.load(&r.id).await.unwrap(), None);
        a.remember(&r, Replace::Older, seen).await;
        assert_eq!(a.load(&r.id).await.unwrap(), None);
    }

    /// A rotation retires its old id by touching it into the past; dropped
    /// once that took effect, it leaves no copy of the old id in memory.
    #[tokio::test]
    async fn a_retiring_touch_dropped_after_its_backing_call_keeps_the_session_out() {
        let (a, touched, _release) = held(Hold::Touches);
        let r = record();
        a.create(&r).await.unwrap();
        assert!(a.load(&r.id).await.unwrap().is_some(), "cached");
        let seen = a.seen_now(&r.id);
        let touching = tokio::spawn({
            let (a, id, version) = (Arc::clone(&a), r.id, r.version);
            async move {
                a.touch(&id, version, None, Timestamp::from_unix_millis(1))
                    .await
            }
        });
        drop_once_it_took_effect(&touched, touching).await;
        assert_eq!(a.load(&r.id).await.unwrap(), None);
        // Nor does a load that read the record before the touch cache it.
        a.remember(&r, Replace::Older, seen).await;
        assert_eq!(a.load(&r.id).await.unwrap(), None);
    }

    /// Writes dropped half way (store timeouts during a slowdown) each
    /// drop their session's copy at once, and leave moka no invalidation
    /// predicate, which every cached read would check until moka's upkeep
    /// went through the whole cache.
    #[tokio::test]
    async fn dropped_writes_leave_moka_no_predicates() {
        let backing = Instrumented::new(MemoryStore::new());
        let cached = CachedStore::builder(backing.clone())
            .max_staleness(Duration::from_secs(60))
            .build();
        let records: Vec<Record> = (0..100).map(|_| record()).collect();
        for r in &records {
            cached.create(r).await.unwrap();
            assert!(cached.load(&r.id).await.unwrap().is_some(), "cached");
        }
        backing.delay(Some(Duration::from_secs(3600)));
        for r in &records {
            let mut next = r.clone();
            next.version += 1;
            let saving = tokio::time::timeout(Duration::from_millis(1), cached.save(&next, 0));
            assert!(saving.await.is_err(), "the save answered");
        }
        assert_eq!(cached.predicates.load(Ordering::SeqCst), 0);
        backing.delay(None);
        let before = backing.counts().load;
        for r in &records {
            assert!(cached.load(&r.id).await.unwrap().is_some());
        }
        assert_eq!(
            backing.counts().load - before,
            100,
            "a dropped save left its copy in memory"
        );
    }

    /// A save dropped once it took effect leaves no older copy served.
    #[tokio::test]
    async fn a_save_dropped_after_its_backing_call_leaves_no_older_copy() {
        let (a, saved, _release) = held(Hold::Saves);
        let r = record();
        a.create(&r).await.unwrap();
        assert!(a.load(&r.id).await.unwrap().is_some(), "cached");
        let mut next = r.clone();
        next.version += 1;
        next.data.insert("n".into(), vec![2]);
        let saving = tokio::spawn({
            let (a, next) = (Arc::clone(&a), next.clone());
            async move { a.save(&next, 0).await }
        });
        drop_once_it_took_effect(&saved, saving).await;
        assert_eq!(a.load(&r.id).await.unwrap(), Some(next));
    }

    /// A create dropped once it took effect drops the copy of an older
    /// record under its id, as a finished one does.
    #[tokio::test]
    async fn a_create_dropped_after_its_backing_call_drops_the_older_copy() {
        let (a, created, _release) = held(Hold::Creates);
        let r = record();
        a.backing().inner.create(&r).await.unwrap();
        assert!(a.load(&r.id).await.unwrap().is_some(), "cached");
        // The old record expires in the store, freeing the id.
        a.backing().inner.delete(&r.id).await.unwrap();
        let mut again = r.clone();
        again.data.insert("k".into(), b"new".to_vec());
        let creating = tokio::spawn({
            let (a, again) = (Arc::clone(&a), again.clone());
            async move { a.create(&again).await }
        });
        drop_once_it_took_effect(&created, creating).await;
        assert_eq!(a.load(&r.id).await.unwrap(), Some(again));
    }

    /// Two touches of one version both apply, and the backing store keeps
    /// the deadline of the last to reach it, whichever answers last: memory
    /// never keeps the other one.
    #[tokio::test]
    async fn racing_touches_leave_no_deadline_the_store_does_not_have() {
        let r = record();
        let later = r.expires_at + Duration::from_secs(3600);
        let sooner = r.expires_at + Duration::from_secs(1800);
        touches_racing(r, None, later, sooner).await;
    }

    /// The same, when the touch that reaches the store last sets the
    /// deadline memory already shows (requests at a session's absolute
    /// deadline all ask for it): its copy equals the one the other touch
    /// saw, but is not it.
    #[tokio::test]
    async fn a_touch_back_to_the_cached_deadline_is_not_missed() {
        let r = record();
        let d = r.expires_at + Duration::from_secs(1800);
        let l = r.expires_at + Duration::from_secs(3600);
        touches_racing(r, Some(d), l, d).await;
    }

    /// Caches `r` (at deadline `cached`, if given), then touches it to
    /// `first`, whose answer waits while a touch to `second` applies and
    /// answers: the store ends at `second`, and so must memory.
    async fn touches_racing(
        r: Record,
        cached: Option<Timestamp>,
        first: Timestamp,
        second: Timestamp,
    ) {
        let (a, touched, release) = held(Hold::Touches);
        a.create(&r).await.unwrap();
        if let Some(d) = cached {
            let inner = &a.backing().inner;
            assert!(inner.touch(&r.id, r.version, None, d).await.unwrap());
        }
        let loaded = a.load(&r.id).await.unwrap().unwrap();
        assert_eq!(loaded.expires_at, cached.unwrap_or(r.expires_at), "cached");
        // The first touch applies and waits for its answer...
        let touching = tokio::spawn({
            let (a, id, version) = (Arc::clone(&a), r.id, r.version);
            async move { a.touch(&id, version, None, first).await }
        });
        touched.notified().await;
        // ...while a second one applies and answers.
        assert!(a.touch(&r.id, r.version, None, second).await.unwrap());
        release.notify_one();
        assert!(touching.await.unwrap().unwrap());
        let stored = a.backing().load(&r.id).await.unwrap().unwrap();
        assert_eq!(stored.expires_at, second);
        assert_eq!(a.load(&r.id).await.unwrap(), Some(stored));
    }

    /// A save that conflicts (or fails) on this instance keeps out a copy
    /// that a load read before it: memory serves this instance's last
    /// successful save.
    #[tokio::test]
    async fn a_conflicting_save_keeps_an_older_read_out() {
        let (_, a, _) = pair(Duration::from_secs(60));
        let r = record();
        a.create(&r).await.unwrap();
        // A load reads the record...
        let seen = a.seen_now(&r.id);
        // ...a save succeeds, another one from the same version conflicts...
        let r1 = next(&r, b"v1");
        assert_eq!(a.save(&r1, 0).await.unwrap(), Saved::Saved);
        assert_eq!(a.save(&next(&r, b"x"), 0).await.unwrap(), Saved::Conflict);
        // ...and the load caches what it read.
        a.remember(&r, Replace::Older, seen).await;
        assert_eq!(a.load(&r.id).await.unwrap(), Some(r1));
    }

    /// A delete dropped while its second burial waits for a load's compute
    /// on the entry still keeps that load's copy out.
    #[tokio::test]
    async fn a_delete_dropped_in_its_last_burial_keeps_the_session_out() {
        // A load took its count after the first burial and read the record
        // before the backing delete; something else computes on the entry.
        let (a, r, deleting, release, seen) = a_delete_under_way().await;
        let gate = Arc::new(tokio::sync::Notify::new());
        let computing = tokio::spawn({
            let (a, id, gate) = (Arc::clone(&a), r.id, Arc::clone(&gate));
            async move {
                let cache = a.cache.as_ref().expect("a cache");
                cache
                    .entry(id)
                    .and_compute_with(|_| async move {
                        gate.notified().await;
                        Op::Nop
                    })
                    .await;
            }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // The delete's backing call answers; its second burial waits for
        // the entry, and the delete is dropped there.
        release.notify_one();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        deleting.abort();
        assert!(deleting.await.unwrap_err().is_cancelled());
        gate.notify_one();
        computing.await.unwrap();
        a.remember(&r, Replace::Older, seen).await;
        assert_eq!(a.load(&r.id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_load_that_read_during_a_delete_cannot_cache_it_after() {
        let (backing, a, _) = pair(Duration::from_secs(60));
        let r = record();
        a.create(&r).await.unwrap();
        // A delete's steps, with a load that took its count and read the
        // record after the first burial, while the backing store still had
        // it, and caches it after the delete.
        a.bury(&r.id).await;
        let seen = a.seen_now(&r.id);
        backing.delete(&r.id).await.unwrap();
        a.bury(&r.id).await;
        a.remember(&r, Replace::Older, seen).await;
        assert_eq!(a.load(&r.id).await.unwrap(), None);
    }

    /// A load that read a version before a save of the next one landed on
    /// this instance, and comes to cache it once moka has dropped the
    /// save's copy (at `max_staleness` here; its idle time or the memory
    /// budget alike), caches nothing: the next read sees the save.
    #[tokio::test]
    async fn a_load_that_read_before_a_save_does_not_cache_it_after_the_saves_copy_went() {
        let (backing, a, _) = pair(Duration::from_millis(200));
        let r = record();
        a.create(&r).await.unwrap();
        let seen = a.seen_now(&r.id);
        let r1 = next(&r, b"v1");
        assert_eq!(a.save(&r1, r.version).await.unwrap(), Saved::Saved);
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.remember(&r, Replace::Older, seen).await;
        assert_eq!(a.load(&r.id).await.unwrap(), Some(r1.clone()));
        // A load that read the saved version caches it.
        let loads = backing.counts().load;
        assert_eq!(a.load(&r.id).await.unwrap(), Some(r1));
        assert_eq!(backing.counts().load, loads, "served from memory");
    }

    /// The same after a touch, whose earlier deadline the load must not
    /// cover up with the one it read.
    #[tokio::test]
    async fn a_load_that_read_before_a_touch_does_not_cache_it_after_the_touchs_copy_went() {
        let (_, a, _) = pair(Duration::from_millis(200));
        let r = record();
        a.create(&r).await.unwrap();
        a.load(&r.id).await.unwrap();
        let seen = a.seen_now(&r.id);
        let sooner = r.expires_at - Duration::from_secs(1800);
        assert!(a.touch(&r.id, r.version, None, sooner).await.unwrap());
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.remember(&r, Replace::Older, seen).await;
        let loaded = a.load(&r.id).await.unwrap().unwrap();
        assert_eq!(loaded.expires_at, sooner);
    }

    /// Whether or not memory held a copy when the touch came.
    #[tokio::test]
    async fn a_load_that_read_before_a_touch_keeps_the_touched_deadline() {
        for cached_before in [true, false] {
            let (backing, a, _) = pair(Duration::from_secs(60));
            let r = record();
            a.create(&r).await.unwrap();
            if cached_before {
                a.load(&r.id).await.unwrap();
            }
            // A load read the record, a touch of the same version moved its
            // deadline (earlier, as a shorter lifetime does), then the load
            // caches what it read.
            let seen = a.seen_now(&r.id);
            let sooner = r.expires_at - Duration::from_secs(1800);
            assert!(a.touch(&r.id, r.version, None, sooner).await.unwrap());
            a.remember(&r, Replace::Older, seen).await;
            let loads = backing.counts().load;
            let cached = a.load(&r.id).await.unwrap().unwrap();
            assert_eq!(cached.expires_at, sooner, "cached before: {cached_before}");
            // Served from memory where the touch kept the copy up to date.
            assert_eq!(backing.counts().load - loads, u64::from(!cached_before));
        }
    }

    #[tokio::test]
    async fn a_logout_everywhere_keeps_what_its_listing_missed_out_of_memory() {
        let (backing, a, _) = pair(Duration::from_secs(60));
        let r = record();
        backing.create(&r).await.unwrap();
        // A load read this session before a logout everywhere whose listing
        // did not include it (as one created after the listing would not
        // be; here, not the owner's, which a burial in every shard cannot
        // tell apart)...
        let seen = a.seen_now(&r.id);
        assert_eq!(a.delete_owner("alice").await.unwrap(), 0);
        // ...and caches it after: it is not kept.
        a.remember(&r, Replace::Older, seen).await;
        not_in_memory(&backing, &a, &r.id).await;
    }

    #[tokio::test]
    async fn a_load_during_a_slow_delete_cannot_keep_the_session_in_memory() {
        let (backing, a, _) = pair(Duration::from_secs(60));
        let a = Arc::new(a);
        let r = record();
        a.create(&r).await.unwrap();
        // The backing store's delete takes a while...
        backing.delay(Some(Duration::from_millis(300)));
        let deleting = tokio::spawn({
            let (a, id) = (a.clone(), r.id);
            async move { a.delete(&id).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        backing.delay(None);
        // ...meanwhile a load reads the record the backing store still
        // holds.
        assert_eq!(a.load(&r.id).await.unwrap(), Some(r.clone()));
        deleting.await.unwrap().unwrap();
        assert_eq!(a.load(&r.id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn late_writes_after_a_delete_cache_nothing() {
        let (backing, a, _) = pair(Duration::from_secs(60));
        let r = record();
        a.create(&r).await.unwrap();
        let seen = a.seen_now(&r.id);
        a.delete(&r.id).await.unwrap();
        // A late save and touch of the deleted session find nothing...
        assert_eq!(a.save(&next(&r, b"late"), 0).await.unwrap(), Saved::Missing);
        assert!(!a.touch(&r.id, r.version, None, r.expires_at).await.unwrap());
        // ...and a load racing them, which read before the delete, caches
        // nothing either.
        a_stale_read_is_not_kept(&backing, &a, &r, seen).await;
    }

    #[tokio::test]
    async fn a_failed_delete_leaves_the_session_readable() {
        let (backing, a, _) = pair(Duration::from_secs(60));
        let r = record();
        a.create(&r).await.unwrap();
        backing.fail_with(Some(session_core::StoreErrorKind::Unavailable));
        assert!(a.delete(&r.id).await.is_err());
        backing.fail_with(None);
        // The record is still there, and this instance says so.
        assert_eq!(a.load(&r.id).await.unwrap(), Some(r));
    }

    #[tokio::test]
    async fn a_touch_into_the_past_ends_the_cached_session_at_once() {
        let (_, a, _) = pair(Duration::from_secs(60));
        let r = record();
        a.create(&r).await.unwrap();
        assert!(a.load(&r.id).await.unwrap().is_some(), "cached");
        let past = Timestamp::from_unix_millis(1);
        assert!(a.touch(&r.id, r.version, None, past).await.unwrap());
        assert_eq!(a.load(&r.id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_save_that_ends_the_session_leaves_no_older_copy_served() {
        let (_, a, _) = pair(Duration::from_secs(60));
        let r = record();
        a.create(&r).await.unwrap();
        assert!(a.load(&r.id).await.unwrap().is_some(), "cached");
        // A shorter lifetime whose absolute deadline has already passed.
        let mut ended = next(&r, b"v1");
        ended.expires_at = Timestamp::now() - std::time::Duration::from_secs(1);
        assert_eq!(a.save(&ended, 0).await.unwrap(), Saved::Saved);
        assert_eq!(a.load(&r.id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn an_older_version_never_replaces_a_newer_one_in_memory() {
        let (_, a, _) = pair(Duration::from_secs(60));
        let r = record();
        a.create(&r).await.unwrap();
        let r1 = next(&r, b"v1");
        assert_eq!(a.save(&r1, 0).await.unwrap(), Saved::Saved);
        a.remember(&r, Replace::Older, a.seen_now(&r.id)).await;
        assert_eq!(a.load(&r.id).await.unwrap(), Some(r1));
    }

    #[tokio::test]
    async fn idle_sessions_leave_memory_and_come_back_from_the_store() {
        let backing = Instrumented::new(MemoryStore::new());
        let cached = CachedStore::builder(backing.clone())
            .max_staleness(Duration::from_secs(60))
            .idle_eviction(Duration::from_millis(200))
            .build();
        let r = record();
        cached.create(&r).await.unwrap();
        assert_eq!(cached.load(&r.id).await.unwrap(), Some(r.clone()));
        assert_eq!(cached.load(&r.id).await.unwrap(), Some(r.clone()));
        assert_eq!(backing.counts().load, 1, "the second load came from memory");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(cached.load(&r.id).await.unwrap(), Some(r));
        assert_eq!(backing.counts().load, 2, "reloaded from the backing store");
    }

    #[tokio::test]
    async fn zero_staleness_disables_the_cache() {
        let (backing, a, _) = pair(Duration::ZERO);
        let r = record();
        a.create(&r).await.unwrap();
        a.load(&r.id).await.unwrap();
        a.load(&r.id).await.unwrap();
        assert_eq!(backing.counts().load, 2);
    }

    /// The slot memory holds for `id`.
    async fn slot_of(a: &CachedStore<Backing>, id: &RecordId) -> Arc<Slot> {
        a.cache
            .as_ref()
            .unwrap()
            .get(id)
            .await
            .expect("a cached copy")
    }

    /// A save of a cached session puts its copy into the cached slot, with
    /// no moka write, and loads serve it from memory.
    #[tokio::test]
    async fn a_save_replaces_the_cached_copy_in_place() {
        let (backing, a, _) = pair(Duration::from_secs(60));
        let r = record();
        a.create(&r).await.unwrap();
        a.load(&r.id).await.unwrap();
        let slot = slot_of(&a, &r.id).await;
        let r1 = next(&r, b"v1");
        assert_eq!(a.save(&r1, 0).await.unwrap(), Saved::Saved);
        assert!(Arc::ptr_eq(&slot, &slot_of(&a, &r.id).await));
        assert_eq!(a.load(&r.id).await.unwrap(), Some(r1));
        assert_eq!(backing.counts().load, 1);
    }

    /// A save holding a slot that a load's compute replaced meanwhile (with
    /// a version older than the save's) leaves it to a compute, which
    /// caches the save's copy over the load's.
    #[tokio::test]
    async fn a_save_into_a_slot_replaced_meanwhile_goes_through_moka() {
        let (backing, a, b) = pair(Duration::from_secs(60));
        let r = record();
        a.create(&r).await.unwrap();
        a.load(&r.id).await.unwrap();
        // Another instance saves twice; a load here read the first of them
        // and caches it after this instance's save landed.
        let held = slot_of(&a, &r.id).await;
        let r1 = next(&r, b"v1");
        b.save(&r1, 0).await.unwrap();
        let seen = a.seen_now(&r.id);
        let r2 = next(&r1, b"v2");
        b.save(&r2, 1).await.unwrap();
        a.remember(&r1, Replace::Older, seen).await;
        assert!(held.lock().retired);
        let seen = a.seen_now(&r.id).unwrap();
        assert!(!a.put_in_place(&held, &r2, seen));
        assert_eq!(held.lock().copy.version, 0, "nothing put into it");
        // The save then takes the compute, which puts its copy over the
        // load's in a new slot.
        let loads = backing.counts().load;
        let loaded = slot_of(&a, &r.id).await;
        a.remember(&r2, Replace::Saved, Some(seen)).await;
        let now = slot_of(&a, &r.id).await;
        assert!(!Arc::ptr_eq(&now, &held) && !Arc::ptr_eq(&now, &loaded));
        assert!(loaded.lock().retired);
        assert_eq!(a.load(&r.id).await.unwrap(), Some(r2));
        assert_eq!(backing.counts().load, loads, "served from memory");
    }

    /// A save that landed before another save of the session, and comes to
    /// cache its copy only after moka dropped the later save's (its
    /// `max_staleness` runs from the call that put the slot in, not from the
    /// save put in place), caches nothing.
    #[tokio::test]
    async fn a_late_save_does_not_cache_its_version_after_a_newer_saves_copy_went() {
        // S1 counts its write before S2 counts, or (its answer slow to
        // come back) after.
        for s1_counts_first in [true, false] {
            let (backing, a, _) = pair(Duration::from_secs(60));
            let r = record();
            a.create(&r).await.unwrap();
            // S1 lands v1, then stalls before caching its copy.
            let r1 = next(&r, b"v1");
            let seen = a.seen_now(&r.id);
            assert_eq!(backing.save(&r1, 0).await.unwrap(), Saved::Saved);
            let mut s1 = s1_counts_first.then(|| a.wrote(&r.id, seen));
            // A load caches v1; S2 saves v2 into that slot in place.
            assert_eq!(a.load(&r.id).await.unwrap(), Some(r1.clone()));
            let held = slot_of(&a, &r.id).await;
            let r2 = next(&r1, b"v2");
            assert_eq!(a.save(&r2, 1).await.unwrap(), Saved::Saved);
            assert!(Arc::ptr_eq(&held, &slot_of(&a, &r.id).await));
            // moka drops the slot (its time to live, say); S1 goes on.
            a.forget(&r.id).await;
            let seen = *s1.get_or_insert_with(|| a.wrote(&r.id, seen));
            a.remember_saved(&r1, seen).await;
            let served = a.load(&r.id).await.unwrap();
            assert_eq!(served, Some(r2), "S1 counted first: {s1_counts_first}");
        }
    }

    /// A delete's burial retires the slot it removes.
    #[tokio::test]
    async fn a_burial_retires_the_slot_it_removes() {
        let (_, a, _) = pair(Duration::from_secs(60));
        let r = record();
        a.create(&r).await.unwrap();
        a.load(&r.id).await.unwrap();
        let held = slot_of(&a, &r.id).await;
        let seen = a.seen_now(&r.id).unwrap();
        a.bury(&r.id).await;
        assert!(held.lock().retired);
        // Even with counts from after the burial.
        let seen = Seen {
            burials: seen.burials + 1,
            ..seen
        };
        assert!(!a.put_in_place(&held, &next(&r, b"late"), seen));
    }

    /// Only a save whose count no burial overtook puts its copy in place.
    #[tokio::test]
    async fn a_save_behind_a_burial_does_not_go_in_place() {
        let (_, a, _) = pair(Duration::from_secs(60));
        let (r, other) = (record(), record());
        a.create(&r).await.unwrap();
        a.load(&r.id).await.unwrap();
        let held = slot_of(&a, &r.id).await;
        let seen = a.seen_now(&r.id).unwrap();
        // A dropped write's burial in the shard: no compute on this entry.
        a.burials(&r.id).fetch_add(1, Ordering::SeqCst);
        assert!(!a.put_in_place(&held, &next(&r, b"v1"), seen));
        // Another shard's burial does not count.
        let seen = a.seen_now(&r.id).unwrap();
        let mut far = other.id;
        while shard(&far) == shard(&r.id) {
            far = Id::generate().unwrap().record_id();
        }
        a.burials(&far).fetch_add(1, Ordering::SeqCst);
        assert!(a.put_in_place(&held, &next(&r, b"v1"), seen));
    }

    /// A save that changes the owner (a login) goes through moka: a logout
    /// everywhere's predicate may have looked at the slot already.
    #[tokio::test]
    async fn a_save_that_changes_the_owner_takes_a_new_slot() {
        let (_, a, _) = pair(Duration::from_secs(60));
        let mut r = record();
        r.owner = Some("bob".into());
        a.create(&r).await.unwrap();
        a.load(&r.id).await.unwrap();
        let held = slot_of(&a, &r.id).await;
        // The same weight: only the owner stands in the way.
        let mut login = next(&r, b"v0");
        login.owner = Some("eve".into());
        assert_eq!(weight_of(&login), held.weight);
        let seen = a.seen_now(&r.id).unwrap();
        assert!(!a.put_in_place(&held, &login, seen));
        assert_eq!(a.save(&login, 0).await.unwrap(), Saved::Saved);
        assert!(!Arc::ptr_eq(&held, &slot_of(&a, &r.id).await));
        assert_eq!(a.load(&r.id).await.unwrap(), Some(login));
    }

    /// A copy heavier than its slot was charged for is weighed again.
    #[tokio::test]
    async fn a_save_that_outgrows_its_slot_is_weighed_again() {
        let (_, a, _) = pair(Duration::from_secs(60));
        let r = record();
        a.create(&r).await.unwrap();
        a.load(&r.id).await.unwrap();
        let cache = a.cache.as_ref().unwrap();
        cache.run_pending_tasks().await;
        let before = cache.weighted_size();
        let mut big = next(&r, b"v1");
        big.data.insert("big".into(), vec![7; 10_000]);
        let seen = a.seen_now(&r.id).unwrap();
        assert!(!a.put_in_place(&*slot_of(&a, &r.id).await, &big, seen));
        assert_eq!(a.save(&big, 0).await.unwrap(), Saved::Saved);
        cache.run_pending_tasks().await;
        assert_eq!(cache.weighted_size(), u64::from(weight_of(&big)));
        assert!(cache.weighted_size() > before + 10_000);
        // Back to a small copy: it fits the slot, and goes in place.
        let mut small = next(&big, b"v2");
        small.data.remove("big");
        let held = slot_of(&a, &r.id).await;
        assert_eq!(a.save(&small, 1).await.unwrap(), Saved::Saved);
        assert!(Arc::ptr_eq(&held, &slot_of(&a, &r.id).await));
        assert_eq!(a.load(&r.id).await.unwrap(), Some(small));
    }

    /// Clients loading, saving, touching, deleting and creating two records
    /// through one cache at once, while moka drops copies, polled in a random
    /// order and some dropped midway: once they are done, memory serves
    /// exactly what the backing store holds (no older copy, no other
    /// deadline, nothing deleted).
    #[tokio::test]
    async fn random_interleavings_leave_memory_agreeing_with_the_store() {
        use session_core::testing::{interleave, Interleaved, Seeded};
        for seed in 1..=60000u64 {
            let mut rng = Seeded::new(seed);
            let backing = Instrumented::new(MemoryStore::new());
            backing.hop_around_calls(true);
            let store = CachedStore::builder(backing)
                .max_staleness(Duration::from_secs(60))
                .build();
            let records = [record(), record()];
            for r in &records {
                store.create(r).await.unwrap();
            }
            let store = &store;
            let mut clients: Vec<Interleaved<'_, ()>> = Vec::new();
            for _ in 0..2 + rng.below(5) {
                let ops: Vec<(u64, usize, u64)> = (0..1 + rng.below(4))
                    .map(|_| {
                        (
                            rng.below(13),
                            usize::try_from(rng.below(2)).unwrap(),
                            rng.below(1000),
                        )
                    })
                    .collect();
                let records = records.clone();
                clients.push(Box::pin(async move {
                    let mut seen: [Option<Record>; 2] = [None, None];
                    for (op, i, salt) in ops {
                        let base = seen[i].clone().unwrap_or_else(|| records[i].clone());
                        let id = base.id;
                        match op {
                            0..=3 => seen[i] = store.load(&id).await.unwrap(),
                            4..=6 => {
                                let mut next = base.clone();
                                next.version += 1;
                                next.data.insert("k".into(), salt.to_be_bytes().to_vec());
                                if store.save(&next, base.version).await.unwrap() == Saved::Saved {
                                    seen[i] = Some(next);
                                }
                            }
                            7 | 8 => {
                                let later = Timestamp::now() + Duration::from_secs(3600 + salt);
                                store.touch(&id, base.version, None, later).await.unwrap();
                            }
                            9 => {
                                // A rotation's retiring touch.
                                let past = Timestamp::from_unix_millis(1);
                                store.touch(&id, base.version, None, past).await.unwrap();
                            }
                            10 => store.delete(&id).await.unwrap(),
                            // moka drops the copy (its time to live, its
                            // idle time, the budget).
                            11 => store.forget(&id).await,
                            _ => {
                                let mut again = records[i].clone();
                                again.data.insert("k".into(), salt.to_be_bytes().to_vec());
                                store.create(&again).await.unwrap();
                            }
                        }
                    }
                }));
            }
            // About one poll in a hundred drops its client midway (a store
            // timeout, a client gone).
            interleave(clients, &mut rng, Some(100), |_| {})
                .await
                .unwrap_or_else(|| panic!("seed {seed}: stuck"));
            for r in &records {
                let stored = store.backing().load(&r.id).await.unwrap();
                let served = store.load(&r.id).await.unwrap();
                assert_eq!(served, stored, "seed {seed}");
            }
        }
    }
}
