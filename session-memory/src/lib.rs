//! In-memory session storage for [`session_core`], built on [moka].
//!
//! * [`MemoryStore`]: sessions for one process. Bounded (by bytes), each
//!   record evicted at its own deadline, with an owner index for "log out
//!   everywhere". Nothing survives a restart.
//! * [`CachedStore`]: this crate's cache in front of any other store (Iris's
//!   "temp memory" over a database): reads are served from memory, writes go
//!   through to the backing store, idle entries leave memory and come back from
//!   the store when their user returns.
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
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use moka::Expiry;
use session_core::{Created, Record, RecordId, Saved, Store, StoreError};
use time::OffsetDateTime;

mod cached;
mod entry;

use entry::Entry;

pub use cached::{CachedStore, CachedStoreBuilder};

/// Default memory budget of a [`MemoryStore`]: 256 MiB of records.
pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Time left until `deadline`, zero if it has passed.
pub(crate) fn until(deadline: OffsetDateTime) -> Duration {
    Duration::try_from(deadline - OffsetDateTime::now_utc()).unwrap_or(Duration::ZERO)
}

/// Expires each record at its own deadline.
struct EntryExpiry;

impl Expiry<RecordId, Entry> for EntryExpiry {
    fn expire_after_create(&self, _: &RecordId, value: &Entry, _: Instant) -> Option<Duration> {
        Some(value.time_left())
    }

    fn expire_after_update(
        &self,
        _: &RecordId,
        value: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.time_left())
    }
}

/// What moka itself keeps per entry beyond the value (measured by
/// `session-loadtest memory`), counted against the budget so it bounds real
/// memory.
const ENTRY_BOOKKEEPING: usize = 400;

fn weigh_entry(_: &RecordId, value: &Entry) -> u32 {
    u32::try_from(value.len() + ENTRY_BOOKKEEPING).unwrap_or(u32::MAX)
}

/// Owner -> ids of that owner's records.
type OwnerIndex = Arc<Mutex<HashMap<String, HashSet<RecordId>>>>;

fn lock(index: &OwnerIndex) -> MutexGuard<'_, HashMap<String, HashSet<RecordId>>> {
    // A panic while holding this lock cannot leave the map half-updated in a
    // way that matters: entries are re-checked against the cache on read.
    index.lock().unwrap_or_else(|e| e.into_inner())
}

fn index_remove(index: &OwnerIndex, owner: &str, id: &RecordId) {
    let mut map = lock(index);
    if let Some(ids) = map.get_mut(owner) {
        ids.remove(id);
        if ids.is_empty() {
            map.remove(owner);
        }
    }
}

fn index_add(index: &OwnerIndex, owner: &str, id: RecordId) {
    lock(index).entry(owner.to_owned()).or_default().insert(id);
}

/// Sessions in this process's memory.
///
/// * Bounded: the total approximate size of records stays under
///   [`MemoryStoreBuilder::max_bytes`] (default [`DEFAULT_MAX_BYTES`]); past it
///   the least recently used sessions are evicted, so a flood of new sessions
///   cannot exhaust memory.
/// * Each record leaves memory at its own deadline (idle or absolute), so idle
///   sessions free their memory by themselves.
/// * Writes to one record are serialized (a striped lock), so `save` is an
///   atomic compare-and-set; reads never wait; `touch` rewrites only the
///   deadline.
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
    cache: Cache<RecordId, Entry>,
    owners: OwnerIndex,
    /// Writers of one record serialize on its stripe; readers never wait.
    stripes: Arc<[tokio::sync::Mutex<()>]>,
}

/// How many locks writers are spread over.
const STRIPES: usize = 64;

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("sessions", &self.cache.entry_count())
            .field("bytes", &self.cache.weighted_size())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds a [`MemoryStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct MemoryStoreBuilder {
    max_bytes: u64,
}

impl MemoryStoreBuilder {
    /// The memory budget for records, in bytes (approximate). Default
    /// [`DEFAULT_MAX_BYTES`].
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// Builds the store.
    pub fn build(self) -> MemoryStore {
        let owners: OwnerIndex = Arc::default();
        let listener_index = owners.clone();
        let cache = Cache::builder()
            .max_capacity(self.max_bytes)
            .weigher(weigh_entry)
            // LRU admits every new session (evicting the least recently used);
            // TinyLFU could refuse a new session that a store reported created.
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(EntryExpiry)
            .eviction_listener(move |id: Arc<RecordId>, entry: Entry, cause| {
                // Replacements keep their index entries up to date at write
                // time; every other removal drops the id from the index.
                if cause != RemovalCause::Replaced {
                    if let Some(owner) = entry.owner() {
                        index_remove(&listener_index, owner, &id);
                    }
                }
            })
            .build();
        MemoryStore {
            cache,
            owners,
            stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
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

    /// How many sessions are in memory (approximate: expired ones may linger
    /// until moka's next maintenance).
    pub fn len(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Whether no session is in memory (approximate, like [`MemoryStore::len`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The approximate bytes the records occupy.
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Runs moka's pending maintenance (evictions, expirations, listeners).
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// The live entry of `id`, if any.
    async fn live(&self, id: &RecordId) -> Option<Entry> {
        let now = OffsetDateTime::now_utc();
        self.cache.get(id).await.filter(|e| e.is_live(now))
    }

    fn stripe(&self, id: &RecordId) -> &tokio::sync::Mutex<()> {
        &self.stripes[usize::from(id.as_bytes()[0]) % self.stripes.len()]
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn load(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        self.live(id).await.map(|e| e.record()).transpose()
    }

    async fn create(&self, record: &Record) -> Result<Created, StoreError> {
        let _writer = self.stripe(&record.id).lock().await;
        if self.live(&record.id).await.is_some() {
            return Ok(Created::IdTaken);
        }
        self.cache.insert(record.id, Entry::new(record)?).await;
        if let Some(owner) = &record.owner {
            index_add(&self.owners, owner, record.id);
        }
        Ok(Created::Created)
    }

    async fn save(&self, record: &Record, expected_version: u64) -> Result<Saved, StoreError> {
        let _writer = self.stripe(&record.id).lock().await;
        let Some(current) = self.live(&record.id).await else {
            return Ok(Saved::Missing);
        };
        if current.version() != expected_version {
            return Ok(Saved::Conflict);
        }
        self.cache.insert(record.id, Entry::new(record)?).await;
        if current.owner() != record.owner.as_deref() {
            if let Some(old) = current.owner() {
                index_remove(&self.owners, old, &record.id);
            }
            if let Some(owner) = &record.owner {
                index_add(&self.owners, owner, record.id);
            }
        }
        Ok(Saved::Saved)
    }

    async fn touch(
        &self,
        id: &RecordId,
        _owner: Option<&str>,
        expires_at: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let _writer = self.stripe(id).lock().await;
        let Some(current) = self.live(id).await else {
            return Ok(false);
        };
        self.cache
            .insert(*id, current.with_expiry(expires_at))
            .await;
        Ok(true)
    }

    async fn delete(&self, id: &RecordId) -> Result<(), StoreError> {
        let _writer = self.stripe(id).lock().await;
        if let Some(entry) = self.cache.remove(id).await {
            if let Some(owner) = entry.owner() {
                index_remove(&self.owners, owner, id);
            }
        }
        Ok(())
    }

    async fn delete_expired(&self) -> Result<u64, StoreError> {
        // Expiry is native; this only hurries moka's maintenance along.
        self.cache.run_pending_tasks().await;
        Ok(0)
    }

    async fn ids_of_owner(&self, owner: &str) -> Result<Vec<RecordId>, StoreError> {
        let candidates: Vec<RecordId> = lock(&self.owners)
            .get(owner)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default();
        let now = OffsetDateTime::now_utc();
        let mut live = Vec::with_capacity(candidates.len());
        for id in candidates {
            match self.cache.get(&id).await {
                Some(e) if e.is_live(now) && e.owner() == Some(owner) => live.push(id),
                _ => index_remove(&self.owners, owner, &id),
            }
        }
        Ok(live)
    }

    async fn delete_owner(&self, owner: &str) -> Result<u64, StoreError> {
        let ids = self.ids_of_owner(owner).await?;
        let mut n = 0;
        for id in ids {
            let _writer = self.stripe(&id).lock().await;
            let owned = self
                .cache
                .get(&id)
                .await
                .is_some_and(|e| e.owner() == Some(owner));
            if owned && self.cache.remove(&id).await.is_some() {
                n += 1;
            }
            index_remove(&self.owners, owner, &id);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::Id;

    fn record(size: usize) -> Record {
        let now = OffsetDateTime::now_utc();
        let mut r = Record::new(
            Id::generate().unwrap().record_id(),
            now,
            now + time::Duration::hours(1),
        );
        r.data.insert("blob".into(), vec![0u8; size]);
        r
    }

    #[tokio::test]
    async fn memory_stays_bounded_under_a_flood_of_sessions() {
        let budget = 1024 * 1024;
        let store = MemoryStore::builder().max_bytes(budget).build();
        for _ in 0..5_000 {
            store.create(&record(1024)).await.unwrap();
        }
        store.run_pending_tasks().await;
        assert!(
            store.weighted_size() <= budget,
            "{} bytes held for a budget of {budget}",
            store.weighted_size()
        );
        assert!(store.len() < 5_000);
    }

    #[tokio::test]
    async fn evicted_sessions_leave_the_owner_index() {
        let store = MemoryStore::builder().max_bytes(64 * 1024).build();
        let mut r = record(10);
        r.owner = Some("alice".into());
        store.create(&r).await.unwrap();
        for _ in 0..2_000 {
            store.create(&record(1024)).await.unwrap();
        }
        store.run_pending_tasks().await;
        // Whether or not alice's session survived, the index never reports a
        // session that is not there.
        let listed = store.ids_of_owner("alice").await.unwrap();
        let present = store.load(&r.id).await.unwrap().is_some();
        assert_eq!(listed.len(), usize::from(present));
    }
}
