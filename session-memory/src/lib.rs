//! In-memory session storage for [`session_core`].
//!
//! * [`MemoryStore`]: sessions for one process, about 116 bytes each besides
//!   the encoded record. Bounded (by bytes), each record dead at its own
//!   deadline and swept from memory, with an owner index for "log out
//!   everywhere". Nothing survives a restart.
//! * [`CachedStore`]: this crate's cache in front of any other store (Iris's
//!   "temp memory" over a database): reads are served from memory, writes go
//!   through to the backing store, and copies leave memory after a few
//!   seconds (`max_staleness`) or when idle, coming back from the store on
//!   the next request. Built on [moka].
//!
//! ```
//! use session_core::{Config, Manager};
//! use session_memory::MemoryStore;
//!
//! let manager = Manager::new(MemoryStore::new(), Config::default());
//! # let _ = manager;
//! ```
//!
//! [moka]: https://docs.rs/moka

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use session_core::{Created, Record, RecordId, Saved, Store, StoreError, Timestamp};

mod cached;
mod entry;

pub use cached::{CachedStore, CachedStoreBuilder};
use entry::Entry;

/// Default memory budget of a [`MemoryStore`]: 256 MiB of records.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Time left until `deadline`, zero if it has passed.
pub(crate) fn until(deadline: Timestamp) -> Duration {
    deadline.duration_since(Timestamp::now())
}

/// How many independently locked parts the sessions are spread over.
const SHARDS: usize = 64;

/// What one session costs besides its entry's bytes (its slot in the table,
/// the entry's allocation), counted against the budget so that it bounds
/// real memory: `session-loadtest memory 1000000 ours` measured 116 bytes
/// of resident memory per session beyond the entry.
const SLOT_BYTES: u64 = 120;

/// What a session with an owner costs besides, in the owner index: the
/// owner's entry in the index with its record ids, and the owner's name
/// (whose bytes are charged on top), counted for each of the owner's
/// sessions though they share all but their id: an upper bound, the cost of
/// an owner of one session (a login per user, the index's costliest shape),
/// where `session-loadtest memory 1000000 ours-owned` measured 204 bytes
/// per session with 13-byte names beyond what `ours` measures. An owner's
/// further sessions cost only their id in the owner's hash set (about 40 to
/// 75 bytes each, as the set grows), so a budget holds fewer sessions than
/// it could where owners have several.
const INDEX_BYTES: u64 = 200;

/// How often a shard that is written to drops its expired sessions.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// After how many sessions looked at [`Store::delete_expired`] lets other
/// tasks run.
const SWEEP_YIELD_EVERY: usize = 4096;

/// The capacity an owner's set of ids keeps however empty it gets: below
/// it, shrinking would not be worth its reallocation.
const OWNER_SET_KEEP: usize = 64;

/// The capacity the owner index keeps however few owners it holds.
const OWNER_MAP_KEEP: usize = 1024;

/// Owner -> ids of that owner's records.
type OwnerIndex = Mutex<HashMap<String, OwnerIds>>;

/// The ids of one owner's records. Most owners have one session (a login
/// per user), kept inline: a set of its own costs an allocation of about
/// 150 bytes per owner.
#[derive(Debug, Clone)]
enum OwnerIds {
    One(RecordId),
    Many(HashSet<RecordId>),
}

impl OwnerIds {
    fn insert(&mut self, id: RecordId) {
        match self {
            Self::One(one) if *one == id => {}
            Self::One(one) => *self = Self::Many(HashSet::from([*one, id])),
            Self::Many(ids) => drop(ids.insert(id)),
        }
    }

    /// Removes `id`; `true` when no id is left.
    fn remove(&mut self, id: &RecordId) -> bool {
        match self {
            Self::One(one) => one == id,
            Self::Many(ids) => {
                ids.remove(id);
                // A set does not give memory back as it empties, and the
                // budget charges only the ids it holds: an owner that once
                // had many sessions would keep room for all of them.
                // Shrinking when three quarters are empty keeps that room
                // within a few times what is charged, at an amortised cost.
                if ids.capacity() > OWNER_SET_KEEP && ids.len() * 4 < ids.capacity() {
                    ids.shrink_to(ids.len() * 2);
                }
                match ids.len() {
                    0 => true,
                    1 => {
                        let last = ids.iter().next().copied();
                        if let Some(last) = last {
                            *self = Self::One(last);
                        }
                        false
                    }
                    _ => false,
                }
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &RecordId> {
        let (one, many) = match self {
            Self::One(one) => (Some(one), None),
            Self::Many(ids) => (None, Some(ids.iter())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    #[cfg(test)]
    fn contains(&self, id: &RecordId) -> bool {
        self.iter().any(|i| i == id)
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked: every
/// change below is a single map operation.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn index_remove(index: &OwnerIndex, owner: &str, id: &RecordId) {
    unindex(&mut lock(index), owner, id);
}

/// Removes `id` from `owner`'s ids in the locked index, and the owner with
/// its last id.
fn unindex(map: &mut HashMap<String, OwnerIds>, owner: &str, id: &RecordId) {
    if map.get_mut(owner).is_some_and(|ids| ids.remove(id)) {
        map.remove(owner);
        // As for an owner's set: the map keeps its room as owners leave,
        // and the budget charges only the owners it holds.
        if map.capacity() > OWNER_MAP_KEEP && map.len() * 4 < map.capacity() {
            map.shrink_to(map.len() * 2);
        }
    }
}

fn index_add(index: &OwnerIndex, owner: &str, id: RecordId) {
    let mut map = lock(index);
    match map.get_mut(owner) {
        Some(ids) => ids.insert(id),
        None => drop(map.insert(owner.to_owned(), OwnerIds::One(id))),
    }
}

/// The record's owner as its entry keeps it: an empty one is none
/// ([`Entry::owner`]), and is never indexed, so nothing is left to remove.
fn owner_of(record: &Record) -> Option<&str> {
    record.owner.as_deref().filter(|o| !o.is_empty())
}

/// Hashes a [`RecordId`] by its first eight bytes: it is already a SHA-256
/// output, uniform and not chosen by clients (they choose ids, not their
/// hashes), so SipHash would only cost time. [`CachedStore`]'s cache hashes
/// its keys with it too.
#[derive(Default)]
pub(crate) struct RecordIdHasher(u64);

impl std::hash::Hasher for RecordIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8).take(1) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
}

/// Builds [`RecordIdHasher`]s.
pub(crate) type ByRecordId = std::hash::BuildHasherDefault<RecordIdHasher>;

type Table = HashMap<RecordId, Entry, ByRecordId>;

/// One part of the table.
struct Shard {
    entries: Table,
    /// Bytes charged to the budget: entries plus [`SLOT_BYTES`] each, and
    /// [`INDEX_BYTES`] and the owner's name for each with an owner.
    bytes: u64,
    next_sweep: Instant,
}

impl Shard {
    fn charge(entry: &Entry) -> u64 {
        let indexed = entry
            .owner()
            .map_or(0, |owner| INDEX_BYTES + owner.len() as u64);
        entry.len() as u64 + SLOT_BYTES + indexed
    }

    /// The live entry of `id`; an expired one is dropped on the way.
    fn live(&mut self, id: &RecordId, now: i64, owners: &OwnerIndex) -> Option<&mut Entry> {
        // Not `entry()`: it reserves room for an insert, so a miss could
        // grow a full table.
        if self.entries.get(id)?.is_live(now) {
            return self.entries.get_mut(id);
        }
        self.remove(id, owners);
        None
    }

    fn insert(&mut self, id: RecordId, entry: Entry) {
        self.bytes += Self::charge(&entry);
        if let Some(old) = self.entries.insert(id, entry) {
            self.bytes -= Self::charge(&old);
        }
    }

    fn remove(&mut self, id: &RecordId, owners: &OwnerIndex) -> Option<Entry> {
        let entry = self.entries.remove(id)?;
        self.bytes -= Self::charge(&entry);
        if let Some(owner) = entry.owner() {
            index_remove(owners, owner, id);
        }
        Some(entry)
    }

    /// Drops every expired entry.
    fn sweep(&mut self, now: i64, owners: &OwnerIndex) -> u64 {
        let expired: Vec<RecordId> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.is_live(now))
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            self.remove(id, owners);
        }
        self.next_sweep = Instant::now() + SWEEP_EVERY;
        expired.len() as u64
    }

    /// Upkeep after a write: the sweep, when due or when the shard is over
    /// `budget` (expired entries go before any live one is evicted), then,
    /// still over `budget`, evicts the sessions closest to their deadline
    /// (the least recently active, as idle deadlines move with activity)
    /// down to 7/8 of it, sparing `keep`. Returns how many live sessions
    /// were evicted.
    fn upkeep(&mut self, budget: u64, keep: &RecordId, now: i64, owners: &OwnerIndex) -> usize {
        if self.bytes > budget || Instant::now() >= self.next_sweep {
            self.sweep(now, owners);
        }
        if self.bytes <= budget {
            return 0;
        }
        let before = self.entries.len();
        let target = budget - budget / 8;
        let mut by_deadline: Vec<(i64, RecordId)> = self
            .entries
            .iter()
            .filter(|(id, _)| *id != keep)
            .map(|(id, e)| (e.deadline(), *id))
            .collect();
        by_deadline.sort_unstable_by_key(|(deadline, _)| *deadline);
        for (_, id) in by_deadline {
            if self.bytes <= target {
                break;
            }
            self.remove(&id, owners);
        }
        before - self.entries.len()
    }
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    /// Budget of each shard: the store's budget split evenly.
    shard_budget: u64,
    owners: OwnerIndex,
    evicted: AtomicU64,
}

/// Sessions in this process's memory.
///
/// * Compact: one allocation per session holding its encoded record, in a
///   table split into independently locked shards; about 116 bytes per session
///   besides the encoded record (`cargo xtask bench load` measures it).
/// * Bounded: the bytes held stay under [`MemoryStoreBuilder::max_bytes`]
///   (default [`DEFAULT_MAX_BYTES`]; the owner index's entries of signed-in
///   sessions are charged too); past it the sessions closest to their
///   deadline are evicted (among sessions on the configured lifetime, the
///   least recently active; a "remember me" lifetime puts its deadline
///   further out), so a flood of new sessions cannot exhaust memory. One
///   session larger than `max_bytes / 128` is refused.
/// * Each record is dead at its own deadline (idle or absolute) and never
///   returned after it; expired sessions leave memory when next looked up,
///   at the first create or save in their shard ten seconds on (or at once,
///   when the shard is over its budget), or at [`Store::delete_expired`] (the
///   [`Sweeper`](session_core::Sweeper)).
/// * Every operation is atomic under its shard's lock (held only for the
///   in-memory work, never across an `.await`), so `save` is an exact
///   compare-and-set; `touch` rewrites only the deadline.
///
/// Cloning shares the same sessions.
///
/// ```
/// use session_memory::MemoryStore;
///
/// let store = MemoryStore::builder().max_bytes(64 * 1024 * 1024).build();
/// # let _ = store;
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sessions", &self.len())
            .field("bytes", &self.bytes_used())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// The least memory budget a [`MemoryStore`] takes
/// ([`MemoryStoreBuilder::max_bytes`] raises smaller ones to it): 256 KiB,
/// in which each session may take up to 2 KiB of the budget (its record,
/// and the slot and owner index charges: a record of about 1.9 KiB, or
/// 1.7 KiB with a short owner name).
pub const MIN_MAX_BYTES: u64 = 256 * 1024;

/// Builds a [`MemoryStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryStoreBuilder {
    max_bytes: u64,
}

impl MemoryStoreBuilder {
    /// The memory budget for records, in bytes (approximate: each session
    /// counts its encoded record plus 120 bytes for its slot, and a session
    /// with an owner 200 bytes more for the owner index, plus the owner's
    /// name). Default
    /// [`DEFAULT_MAX_BYTES`]. The budget is split between 64 shards, and one
    /// session may take at most half a shard's share (`max_bytes / 128`, 2 MiB
    /// by default): a larger one is refused
    /// ([`StoreErrorKind::Rejected`](session_core::StoreErrorKind::Rejected))
    /// rather than pushing out every other session of its shard. A budget
    /// under [`MIN_MAX_BYTES`] (256 KiB, so sessions charged up to 2 KiB fit)
    /// is raised to it: far below, no session at all would fit.
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes.max(MIN_MAX_BYTES);
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemoryStore {
        let next_sweep = Instant::now() + SWEEP_EVERY;
        MemoryStore {
            inner: Arc::new(Inner {
                shards: (0..SHARDS)
                    .map(|_| {
                        Mutex::new(Shard {
                            entries: Table::default(),
                            bytes: 0,
                            next_sweep,
                        })
                    })
                    .collect(),
                shard_budget: (self.max_bytes / SHARDS as u64).max(1),
                owners: Mutex::default(),
                evicted: AtomicU64::new(0),
            }),
        }
    }
}

impl MemoryStore {
    /// A store with the default memory budget.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Starts building a store.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// How many sessions are in memory (expired ones not yet swept included).
    pub fn len(&self) -> u64 {
        self.inner
            .shards
            .iter()
            .map(|s| lock(s).entries.len() as u64)
            .sum()
    }

    /// Whether no session is in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes charged to the budget.
    pub fn bytes_used(&self) -> u64 {
        self.inner.shards.iter().map(|s| lock(s).bytes).sum()
    }

    /// How many live sessions were evicted to stay within the budget.
    pub fn evicted(&self) -> u64 {
        self.inner.evicted.load(Ordering::Relaxed)
    }

    /// Drops every expired session now and returns how many it dropped (what
    /// [`Store::delete_expired`] does). Expired sessions are never served
    /// either way; this frees their memory before the sweep that a write to
    /// their shard runs (at most every 10 seconds) reaches them.
    pub fn remove_expired(&self) -> u64 {
        self.sweep()
    }

    fn sweep(&self) -> u64 {
        let now = Timestamp::now().unix_millis();
        self.inner
            .shards
            .iter()
            .map(|s| lock(s).sweep(now, &self.inner.owners))
            .sum()
    }

    fn shard(&self, id: &RecordId) -> MutexGuard<'_, Shard> {
        // The last bytes pick the shard; the table hashes by the first ones.
        let b = id.as_bytes();
        let i = usize::from(u16::from_le_bytes([b[30], b[31]])) % self.inner.shards.len();
        lock(&self.inner.shards[i])
    }

    /// `entry`, unless it is larger than half a shard's budget: one session
    /// must not evict the rest of its shard (or itself at the next write
    /// there).
    fn admit(&self, entry: Entry) -> Result<Entry, StoreError> {
        let size = Shard::charge(&entry);
        let max = self.inner.shard_budget / 2;
        if size > max {
            return Err(StoreError::new(
                session_core::StoreErrorKind::Rejected,
                format!(
                    "a session of {size} bytes is over this memory store's limit of {max} bytes per session (max_bytes / 128)"
                ),
            ));
        }
        Ok(entry)
    }

    /// Inserts or replaces `id`'s entry, then does the shard's upkeep.
    fn put(&self, shard: &mut Shard, id: RecordId, entry: Entry, now: i64) {
        shard.insert(id, entry);
        let evicted = shard.upkeep(self.inner.shard_budget, &id, now, &self.inner.owners);
        if evicted > 0 {
            self.inner
                .evicted
                .fetch_add(evicted as u64, Ordering::Relaxed);
            tracing::debug!(
                evicted,
                "memory store over budget: evicted the least recently active sessions"
            );
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn load(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let mut shard = self.shard(id);
        let now = Timestamp::now().unix_millis();
        shard
            .live(id, now, &self.inner.owners)
            .map(|e| e.record())
            .transpose()
    }

    async fn create(&self, record: &Record) -> Result<Created, StoreError> {
        let entry = self.admit(Entry::new(record)?)?;
        let mut shard = self.shard(&record.id);
        let now = Timestamp::now().unix_millis();
        if shard.live(&record.id, now, &self.inner.owners).is_some() {
            return Ok(Created::IdTaken);
        }
        if let Some(owner) = owner_of(record) {
            index_add(&self.inner.owners, owner, record.id);
        }
        self.put(&mut shard, record.id, entry, now);
        Ok(Created::Created)
    }

    async fn save(&self, record: &Record, expected_version: u64) -> Result<Saved, StoreError> {
        let entry = self.admit(Entry::new(record)?)?;
        let mut shard = self.shard(&record.id);
        let now = Timestamp::now().unix_millis();
        let Some(current) = shard.live(&record.id, now, &self.inner.owners) else {
            return Ok(Saved::Missing);
        };
        if current.version() != expected_version {
            return Ok(Saved::Conflict);
        }
        if current.owner() != owner_of(record) {
            if let Some(old) = current.owner() {
                index_remove(&self.inner.owners, old, &record.id);
            }
            if let Some(owner) = owner_of(record) {
                index_add(&self.inner.owners, owner, record.id);
            }
        }
        self.put(&mut shard, record.id, entry, now);
        Ok(Saved::Saved)
    }

    async fn touch(
        &self,
        id: &RecordId,
        version: u64,
        _owner: Option<&str>,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        let mut shard = self.shard(id);
        let now = Timestamp::now().unix_millis();
        match shard.live(id, now, &self.inner.owners) {
            Some(entry) if entry.version() == version => {
                entry.set_expiry(expires_at);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete(&self, id: &RecordId) -> Result<(), StoreError> {
        self.shard(id).remove(id, &self.inner.owners);
        Ok(())
    }

    async fn delete_expired(&self) -> Result<u64, StoreError> {
        // A shard at a time, letting other tasks run after every few
        // thousand sessions looked at: on a large store the whole sweep
        // would hold the worker thread, and a `Sweeper`'s limit could not
        // stop it part way. A small store is swept in one go, and answers
        // at once.
        let now = Timestamp::now().unix_millis();
        let (mut swept, mut looked_at) = (0, 0);
        for shard in self.inner.shards.iter() {
            {
                let mut shard = lock(shard);
                looked_at += shard.entries.len();
                swept += shard.sweep(now, &self.inner.owners);
            }
            if looked_at >= SWEEP_YIELD_EVERY {
                looked_at = 0;
                tokio::task::yield_now().await;
            }
        }
        Ok(swept)
    }

    async fn ids_of_owner(&self, owner: &str) -> Result<Vec<RecordId>, StoreError> {
        let candidates: Vec<RecordId> = lock(&self.inner.owners)
            .get(owner)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default();
        let mut live = Vec::with_capacity(candidates.len());
        for id in candidates {
            let mut shard = self.shard(&id);
            let now = Timestamp::now().unix_millis();
            match shard.live(&id, now, &self.inner.owners) {
                Some(e) if e.owner() == Some(owner) => live.push(id),
                _ => index_remove(&self.inner.owners, owner, &id),
            }
        }
        Ok(live)
    }

    async fn delete_owner(&self, owner: &str) -> Result<u64, StoreError> {
        let ids = self.ids_of_owner(owner).await?;
        let mut n = 0;
        for id in ids {
            let mut shard = self.shard(&id);
            let now = Timestamp::now().unix_millis();
            let owned = shard
                .live(&id, now, &self.inner.owners)
                .is_some_and(|e| e.owner() == Some(owner));
            if owned && shard.remove(&id, &self.inner.owners).is_some() {
                n += 1;
            }
            index_remove(&self.inner.owners, owner, &id);
        }
        Ok(n)
    }

    async fn delete_all(&self) -> Result<u64, StoreError> {
        // A shard at a time, as a sweep goes, letting other tasks run after
        // every few thousand sessions: each shard's entries leave under its
        // lock with their owner index entries (shard, then index: the lock
        // order of every removal), so a session created meanwhile is listed.
        let (mut n, mut since_yield) = (0, 0);
        for shard in self.inner.shards.iter() {
            let emptied = {
                let mut shard = lock(shard);
                shard.bytes = 0;
                let emptied = std::mem::take(&mut shard.entries);
                let mut owners = lock(&self.inner.owners);
                for (id, entry) in &emptied {
                    if let Some(owner) = entry.owner() {
                        unindex(&mut owners, owner, id);
                    }
                }
                emptied
            };
            n += emptied.len() as u64;
            since_yield += emptied.len();
            // Freed outside the locks.
            drop(emptied);
            if since_yield >= SWEEP_YIELD_EVERY {
                since_yield = 0;
                tokio::task::yield_now().await;
            }
        }
        Ok(n)
    }

    /// `false`: a save here is an insert under a shard's lock, cheaper than
    /// the task and wake-ups that gathering updates costs, so each update
    /// saves at once (but one carrying its request's earlier deferred
    /// writes, which the manager always leaves to a task).
    fn group_commit(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::Id;

    fn record(size: usize) -> Record {
        let now = Timestamp::now();
        let mut r = Record::new(
            Id::generate().unwrap().record_id(),
            now,
            now + std::time::Duration::from_secs(3600),
        );
        r.data.insert("blob".into(), vec![0u8; size]);
        r
    }

    /// What the store's books say must match what it holds: the bytes
    /// charged per shard, and every owned record listed in its owner's index
    /// (a missing entry would let "log out everywhere" miss a session).
    fn assert_books_balance(store: &MemoryStore) {
        let index = lock(&store.inner.owners).clone();
        for shard in store.inner.shards.iter() {
            let shard = lock(shard);
            let held: u64 = shard.entries.values().map(Shard::charge).sum();
            assert_eq!(shard.bytes, held, "bytes charged drifted from bytes held");
            for (id, entry) in &shard.entries {
                if let Some(owner) = entry.owner() {
                    assert!(
                        index.get(owner).is_some_and(|ids| ids.contains(id)),
                        "a session of {owner} is missing from the owner index"
                    );
                }
            }
        }
    }

    /// An owner's ids: one inline, a set from the second, one inline again
    /// when all but one are removed; empty only when the last one goes.
    #[test]
    fn owner_ids_hold_one_inline_and_more_in_a_set() {
        let [a, b, c] = [1, 2, 3].map(|_| Id::generate().unwrap().record_id());
        let mut ids = OwnerIds::One(a);
        ids.insert(a);
        assert!(matches!(ids, OwnerIds::One(one) if one == a));
        ids.insert(b);
        assert!(matches!(&ids, OwnerIds::Many(set) if set.len() == 2));
        assert!(ids.contains(&a) && ids.contains(&b) && !ids.contains(&c));
        assert!(!ids.remove(&c));
        assert!(!ids.remove(&a));
        assert!(matches!(ids, OwnerIds::One(one) if one == b));
        assert_eq!(ids.iter().collect::<Vec<_>>(), [&b]);
        assert!(!ids.remove(&a), "not held: nothing changes");
        assert!(ids.remove(&b), "the last one");
    }

    #[tokio::test]
    async fn an_empty_owner_leaves_nothing_in_the_owner_index() {
        let store = MemoryStore::new();
        let mut r = record(10);
        r.owner = Some(String::new());
        store.create(&r).await.unwrap();
        let mut next = r.clone();
        next.version += 1;
        assert_eq!(store.save(&next, r.version).await.unwrap(), Saved::Saved);
        store.delete(&r.id).await.unwrap();
        // Nothing removes an entry of no record but a listing of its owner,
        // which nobody asks for.
        assert!(lock(&store.inner.owners).is_empty(), "an index entry stays");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_mixed_operations_keep_the_books_balanced() {
        // A small budget, so evictions run alongside everything else.
        let store = MemoryStore::builder().max_bytes(256 * 1024).build();
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut mine: Vec<Record> = Vec::new();
                    for i in 0..400usize {
                        match i % 6 {
                            0 | 1 => {
                                let mut r = record(100 + i % 300);
                                r.owner = Some(format!("owner-{}", (t + i) % 3));
                                store.create(&r).await.unwrap();
                                mine.push(r);
                            }
                            2 => {
                                if let Some(r) = mine.last_mut() {
                                    let mut next = r.clone();
                                    next.version += 1;
                                    next.owner = Some(format!("owner-{}", i % 3));
                                    if store.save(&next, r.version).await.unwrap() == Saved::Saved {
                                        *r = next;
                                    }
                                }
                            }
                            3 => {
                                if let Some(r) = mine.first() {
                                    let later =
                                        Timestamp::now() + std::time::Duration::from_secs(7200);
                                    store
                                        .touch(&r.id, r.version, r.owner.as_deref(), later)
                                        .await
                                        .unwrap();
                                }
                            }
                            4 => {
                                if !mine.is_empty() {
                                    let r = mine.swap_remove(i % mine.len());
                                    store.delete(&r.id).await.unwrap();
                                }
                            }
                            _ => {
                                // Listing prunes stale index entries while
                                // others write.
                                let owner = format!("owner-{}", i % 3);
                                store.ids_of_owner(&owner).await.unwrap();
                            }
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(store.bytes_used() <= 256 * 1024);
        assert_books_balance(&store);
        let ended = store.delete_owner("owner-0").await.unwrap()
            + store.delete_owner("owner-1").await.unwrap()
            + store.delete_owner("owner-2").await.unwrap();
        assert_eq!(
            store.len(),
            0,
            "log out everywhere left {} sessions ({ended} ended)",
            store.len()
        );
        assert_books_balance(&store);
        assert_eq!(store.bytes_used(), 0);
    }

    /// A budget too small for any session is raised to the least one, in
    /// which sessions of up to 2 KiB fit.
    #[tokio::test]
    async fn a_tiny_budget_is_raised_so_sessions_fit() {
        for max in [0, 1, 16 * 1024] {
            let store = MemoryStore::builder().max_bytes(max).build();
            let r = record(1500);
            assert_eq!(store.create(&r).await.unwrap(), Created::Created, "{max}");
            assert!(store.load(&r.id).await.unwrap().is_some());
        }
    }

    /// The budget charges an owner's index for the ids it holds, so the
    /// index must not keep room for every session the owner ever had: an
    /// account that logged in 10 000 times and is down to two sessions
    /// holds a set sized for a few, not for 10 000.
    #[tokio::test]
    async fn an_owners_index_shrinks_as_its_sessions_go() {
        let store = MemoryStore::new();
        let mut ids = Vec::new();
        for _ in 0..10_000 {
            let mut r = record(1);
            r.owner = Some("kiosk".into());
            store.create(&r).await.unwrap();
            ids.push(r.id);
        }
        for id in &ids[2..] {
            store.delete(id).await.unwrap();
        }
        let capacity = match lock(&store.inner.owners).get("kiosk") {
            Some(OwnerIds::Many(set)) => set.capacity(),
            other => panic!("expected the owner's two ids, found {other:?}"),
        };
        assert!(
            capacity <= OWNER_SET_KEEP,
            "room for {capacity} ids kept for 2"
        );
        let mut listed = store.ids_of_owner("kiosk").await.unwrap();
        listed.sort();
        let mut left = ids[..2].to_vec();
        left.sort();
        assert_eq!(listed, left);
        assert_books_balance(&store);
    }

    /// The owner index itself gives its room back as owners leave: after a
    /// wave of 5 000 signed-in users has gone, it holds room for a few, not
    /// for 5 000 (the budget charges only the owners it holds).
    #[tokio::test]
    async fn the_owner_index_shrinks_as_owners_go() {
        let store = MemoryStore::new();
        let mut ids = Vec::new();
        for n in 0..5_000 {
            let mut r = record(1);
            r.owner = Some(format!("user-{n}"));
            store.create(&r).await.unwrap();
            ids.push(r.id);
        }
        let peak = lock(&store.inner.owners).capacity();
        assert!(peak >= 5_000);
        for id in &ids[2..] {
            store.delete(id).await.unwrap();
        }
        let capacity = lock(&store.inner.owners).capacity();
        assert!(
            capacity <= OWNER_MAP_KEEP,
            "room for {capacity} owners kept for 2"
        );
        assert_eq!(store.ids_of_owner("user-1").await.unwrap(), [ids[1]]);
        assert_books_balance(&store);
    }

    /// A save or touch that waits for its shard's lock until after the
    /// session's deadline finds it expired: the time it compares with is
    /// read once it holds the lock, not before it waited.
    #[test]
    fn a_write_that_waits_for_its_shard_past_the_deadline_finds_the_session_expired() {
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
        };
        let store = MemoryStore::new();
        let mut r = record(1);
        let deadline = Timestamp::now() + Duration::from_millis(400);
        r.expires_at = deadline;
        runtime().block_on(store.create(&r)).unwrap();
        let held = store.shard(&r.id);
        let later = deadline + Duration::from_secs(3600);
        let (s, id) = (store.clone(), r.id);
        let toucher = std::thread::spawn(move || runtime().block_on(s.touch(&id, 0, None, later)));
        let (s, mut next) = (store.clone(), r.clone());
        next.version = 1;
        next.expires_at = later;
        let saver = std::thread::spawn(move || runtime().block_on(s.save(&next, 0)));
        // Both are waiting for the lock, and read no time before it.
        std::thread::sleep(deadline.duration_since(Timestamp::now()) + Duration::from_millis(50));
        drop(held);
        assert!(
            !toucher.join().unwrap().unwrap(),
            "an expired session was touched"
        );
        assert_eq!(saver.join().unwrap().unwrap(), Saved::Missing);
        assert_eq!(runtime().block_on(store.load(&r.id)).unwrap(), None);
        assert_books_balance(&store);
    }

    #[tokio::test]
    async fn memory_stays_bounded_under_a_flood_of_sessions() {
        let budget = 1024 * 1024;
        let store = MemoryStore::builder().max_bytes(budget).build();
        for _ in 0..5_000 {
            store.create(&record(1024)).await.unwrap();
        }
        store.remove_expired();
        assert!(
            store.bytes_used() <= budget,
            "{} bytes held for a budget of {budget}",
            store.bytes_used()
        );
        assert!(store.len() < 5_000);
    }

    #[tokio::test]
    async fn over_budget_the_least_recently_active_go_first() {
        let store = MemoryStore::builder().max_bytes(1024 * 1024).build();
        let now = Timestamp::now();
        // Active a minute ago (idle deadline soon) vs. just now (later).
        let mut stale = record(10);
        stale.expires_at = now + std::time::Duration::from_secs(1740);
        let mut active = record(10);
        active.expires_at = now + std::time::Duration::from_secs(1860);
        store.create(&stale).await.unwrap();
        store.create(&active).await.unwrap();
        // About twice what each shard holds.
        for _ in 0..2_000 {
            let mut r = record(1024);
            r.expires_at = now + std::time::Duration::from_secs(1800);
            store.create(&r).await.unwrap();
        }
        assert!(store.evicted() > 0);
        assert!(store.bytes_used() <= 1024 * 1024);
        assert!(store.load(&stale.id).await.unwrap().is_none());
        assert!(store.load(&active.id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_session_over_the_per_session_limit_is_refused_and_evicts_nothing() {
        // 4 MiB: 64 KiB a shard, 32 KiB a session.
        let store = MemoryStore::builder().max_bytes(4 * 1024 * 1024).build();
        let small: Vec<Record> = (0..200).map(|_| record(100)).collect();
        for r in &small {
            store.create(r).await.unwrap();
        }
        let big = record(40 * 1024);
        let refused = store.create(&big).await.unwrap_err();
        assert_eq!(refused.kind(), session_core::StoreErrorKind::Rejected);
        // An existing session that grows past the limit keeps its old version.
        let mut grown = small[0].clone();
        grown.version += 1;
        grown.data.insert("cart".into(), vec![7; 40 * 1024]);
        assert!(store.save(&grown, small[0].version).await.is_err());
        for r in &small {
            let kept = store.load(&r.id).await.unwrap().expect("kept");
            assert_eq!((kept.version, &kept.data), (r.version, &r.data));
        }
        assert_eq!(store.evicted(), 0);
        // Just under the limit is taken.
        assert_eq!(
            store.create(&record(30 * 1024)).await.unwrap(),
            Created::Created
        );
    }

    /// A signed-in session's place in the owner index counts against the
    /// budget: with a login per user, the index is a large share of the
    /// memory.
    #[tokio::test]
    async fn the_owner_index_is_charged_to_the_budget() {
        let owner = "o".repeat(100);
        let signed_in = MemoryStore::new();
        let mut r = record(10);
        r.owner = Some(owner.clone());
        signed_in.create(&r).await.unwrap();
        let index = INDEX_BYTES + owner.len() as u64;
        assert_eq!(
            signed_in.bytes_used(),
            Entry::new(&r).unwrap().len() as u64 + SLOT_BYTES + index
        );
        // Moved to no owner on save, the index's charge goes.
        let mut next = r.clone();
        next.version = 1;
        next.owner = None;
        assert_eq!(signed_in.save(&next, 0).await.unwrap(), Saved::Saved);
        assert_eq!(
            signed_in.bytes_used(),
            Entry::new(&next).unwrap().len() as u64 + SLOT_BYTES
        );
        signed_in.delete(&r.id).await.unwrap();
        assert_eq!(signed_in.bytes_used(), 0);
    }

    #[tokio::test]
    async fn expired_sessions_are_swept_from_memory() {
        let store = MemoryStore::new();
        let mut short = record(10);
        short.expires_at = Timestamp::now() + std::time::Duration::from_millis(50);
        store.create(&short).await.unwrap();
        store.create(&record(10)).await.unwrap();
        assert_eq!(store.len(), 2);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(store.delete_expired().await.unwrap(), 1);
        assert_eq!(store.len(), 1);
        assert!(store.bytes_used() > 0);
        // The same sweep, called on the store itself.
        let mut short = record(10);
        short.expires_at = Timestamp::now() + std::time::Duration::from_millis(50);
        store.create(&short).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(store.remove_expired(), 1);
        assert_eq!(store.len(), 1);
    }

    /// A large store is swept a few shards at a time, letting other tasks
    /// run between them, so that a sweep stopped part way (a `Sweeper`'s
    /// limit) keeps what it removed; a small one answers at once.
    #[tokio::test]
    async fn a_large_sweep_lets_other_tasks_run_and_can_stop_part_way() {
        let store = MemoryStore::new();
        let sessions = 4 * SWEEP_YIELD_EVERY;
        for _ in 0..sessions {
            let mut r = record(10);
            r.expires_at = Timestamp::now() + std::time::Duration::from_millis(20);
            store.create(&r).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        {
            let mut sweep = std::pin::pin!(store.delete_expired());
            let polled = std::future::Future::poll(sweep.as_mut(), &mut cx);
            assert!(polled.is_pending(), "swept every shard in one go");
        }
        let left = store.len();
        assert!(
            0 < left && left < sessions as u64,
            "{left} of {sessions} left"
        );
        assert_eq!(store.delete_expired().await.unwrap(), left);
        assert_eq!(store.len(), 0);
        let mut small = std::pin::pin!(store.delete_expired());
        let polled = std::future::Future::poll(small.as_mut(), &mut cx);
        assert!(matches!(polled, std::task::Poll::Ready(Ok(0))));
    }

    /// Over budget, a shard drops its expired sessions before evicting live
    /// ones, and `evicted` counts only the live sessions it lost.
    #[tokio::test]
    async fn eviction_counts_live_sessions_only() {
        let store = MemoryStore::builder().max_bytes(1024 * 1024).build();
        for _ in 0..1_500 {
            let mut short = record(100);
            short.expires_at = Timestamp::now() + Duration::from_millis(50);
            store.create(&short).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(80)).await;
        let mut created = Vec::new();
        for _ in 0..2_000 {
            let r = record(1024);
            store.create(&r).await.unwrap();
            created.push(r.id);
        }
        let mut lost = 0;
        for id in &created {
            if store.load(id).await.unwrap().is_none() {
                lost += 1;
            }
        }
        assert!(
            lost > 0,
            "nothing was evicted: the test needs a fuller store"
        );
        assert_eq!(store.evicted(), lost);
    }

    #[tokio::test]
    async fn evicted_sessions_leave_the_owner_index() {
        let store = MemoryStore::builder().max_bytes(1024 * 1024).build();
        let mut r = record(10);
        r.owner = Some("alice".into());
        // Closest to its deadline of all, so the first to go from its shard.
        r.expires_at -= std::time::Duration::from_secs(1800);
        store.create(&r).await.unwrap();
        // About 62 per shard, each shard's budget holding about 14.
        for _ in 0..4_000 {
            store.create(&record(1024)).await.unwrap();
        }
        store.remove_expired();
        // Whether or not alice's session survived, her index entry is there
        // exactly when her session is (read before a listing, which would
        // prune an entry left behind)...
        let indexed = lock(&store.inner.owners)
            .get("alice")
            .is_some_and(|ids| ids.contains(&r.id));
        let held = store.shard(&r.id).entries.contains_key(&r.id);
        assert_eq!(indexed, held, "the owner index and the entries disagree");
        assert!(
            !held,
            "alice's session was not evicted: the test needs a fuller store"
        );
        // ...and the listing never reports a session that is not there.
        let listed = store.ids_of_owner("alice").await.unwrap();
        let present = store.load(&r.id).await.unwrap().is_some();
        assert_eq!(listed.len(), usize::from(present));
    }
}
