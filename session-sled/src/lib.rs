//! Embedded, persistent session store for [`session_core`], built on
//! [sled] 0.34: sessions survive a restart with no server to run.
//!
//! ```no_run
//! # async fn run() -> Result<(), session_sled::SledStoreError> {
//! use std::time::Duration;
//! use session_core::{Config, Manager};
//! use session_sled::{FlushPolicy, SledStore};
//!
//! let store = SledStore::builder("/var/lib/myapp/sessions")
//!     .flush(FlushPolicy::EveryWrite)
//!     .open()?;
//! let manager = Manager::new(store, Config::default());
//! // Removes expired records every minute until the handle is dropped.
//! let _sweeper = session_core::Sweeper::spawn(manager.store().clone(), Duration::from_secs(60));
//! # let _ = manager; Ok(()) }
//! ```
//!
//! # Layout
//!
//! Three trees, a record and its index entries always changed together in
//! one sled transaction, so a crash can never leave a record without its
//! index entries (an immortal session) or an index entry that deletes a
//! newer record:
//!
//! * `records`: record id -> the encoded [`Record`];
//! * `expiry`: (deadline in ms, big-endian) ++ record id -> nothing, so the
//!   sweeper reads only what has expired;
//! * `owners`: sha256(owner) ++ record id -> nothing.
//!
//! `load` checks the deadline itself, so an expired record is never returned,
//! even before the sweeper has run. Index entries without a record (which
//! bytes this release cannot decode leave behind) are dropped by the sweep
//! and by the owner's next listing.
//!
//! Single-record calls run on the caller's task: sled answers them from its
//! cache, or reads one record from disk. The sweep and the owner calls,
//! which scan and may read many cold records, run on Tokio's blocking pool
//! rather than on a runtime worker. (sled's lock still makes other calls
//! wait for each of their transactions, one record at a time.) A
//! single-record call therefore holds its worker thread while sled waits
//! (a disk that stalls, another transaction of sled's holding its lock, or
//! sled's periodic flush to disk, which a write waits for and, behind the
//! write, a read too), and the manager's store timeout, which needs the
//! thread back, cannot end it before sled answers; the sled store is an
//! embedded database for one process, where such a wait is the disk's.
//! Under [`FlushPolicy::EveryWrite`], where every write waits for the disk
//! and every call may wait for another write's sync, single-record calls
//! run on Tokio's blocking pool too, so that they hold up no runtime
//! worker (a thread hop each, small beside a sync).
//!
//! # Durability
//!
//! [`FlushPolicy::EveryWrite`] flushes to disk before each write returns: an
//! acknowledged write survives a crash of the process. After a power loss
//! or a crash of the operating system, it is as safe as sled's flush makes
//! it, which on Linux is `sync_file_range`, not `fsync`: it does not flush
//! the drive's own write cache nor the file's size as the log grows.
//! [`FlushPolicy::Interval`] (the default, every 500 ms, sled's own
//! default) is faster and may lose the writes of the last interval in a
//! crash (not in a clean shutdown: dropping
//! the store flushes). Deletes are writes too: under `Interval`, a session
//! destroyed or logged out in the last interval before a crash is back after
//! the restart. Choose `EveryWrite` where a logout must hold through a
//! crash; under it a delete also returns only once an earlier delete of the
//! same session is on disk.
//!
//! [sled]: https://docs.rs/sled/0.34

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use session_core::{
    Created, Record, RecordId, Saved, Store, StoreError, StoreErrorKind, Timestamp,
};
use sha2::{Digest, Sha256};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};

/// When writes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlushPolicy {
    /// Flush before every write returns: nothing acknowledged is lost in a
    /// crash of the process (see the crate's docs on durability for a power
    /// loss); each write waits for the disk. A write whose flush fails
    /// answers the error, although other requests already see it and the
    /// next successful flush may still write it.
    EveryWrite,
    /// Flush in the background at this interval: fast writes; a crash loses
    /// at most the last interval's writes.
    Interval(Duration),
}

impl Default for FlushPolicy {
    fn default() -> Self {
        Self::Interval(Duration::from_millis(500))
    }
}

/// A failure of the sled store, converted into [`StoreError`] for the
/// manager.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SledStoreError {
    /// The database could not be opened (path, permissions, another process
    /// holding it, corruption).
    #[error("cannot open the sled database at {path}")]
    Open {
        /// The database directory.
        path: PathBuf,
        /// What sled reported.
        #[source]
        source: sled::Error,
    },
    /// An operation failed.
    #[error("sled failed to {op}")]
    Operation {
        /// The store operation.
        op: &'static str,
        /// What sled reported.
        #[source]
        source: sled::Error,
    },
    /// A record could not be encoded.
    #[error("cannot encode the session record")]
    Encode(#[source] session_core::RecordDecodeError),
}

/// `?` on [`SledStore::open`] in a `main` (or a set-up function) that returns
/// `std::io::Result`, as the quick start's does: an
/// [`ErrorKind::Other`](std::io::ErrorKind::Other) error whose source is this
/// one.
///
/// ```no_run
/// fn main() -> std::io::Result<()> {
///     let store = session_sled::SledStore::open("sessions.db")?;
///     # drop(store);
///     Ok(())
/// }
/// ```
impl From<SledStoreError> for std::io::Error {
    fn from(e: SledStoreError) -> Self {
        std::io::Error::other(e)
    }
}

impl From<SledStoreError> for StoreError {
    fn from(e: SledStoreError) -> Self {
        let kind = match &e {
            SledStoreError::Open { .. } => StoreErrorKind::Unavailable,
            SledStoreError::Operation { source, .. } => match source {
                sled::Error::Io(_) => StoreErrorKind::Unavailable,
                sled::Error::Corruption { .. } => StoreErrorKind::Corrupted,
                _ => StoreErrorKind::Other,
            },
            SledStoreError::Encode(_) => StoreErrorKind::Other,
        };
        StoreError::new(kind, e)
    }
}

fn op_error(op: &'static str) -> impl Fn(sled::Error) -> StoreError {
    move |source| SledStoreError::Operation { op, source }.into()
}

fn tx_error(op: &'static str) -> impl Fn(TransactionError<StoreError>) -> StoreError {
    move |e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(source) => SledStoreError::Operation { op, source }.into(),
    }
}

/// Builds a [`SledStore`].
#[derive(Debug, Clone)]
#[must_use]
pub struct SledStoreBuilder {
    path: PathBuf,
    flush: FlushPolicy,
    temporary: bool,
}

impl SledStoreBuilder {
    /// When writes reach the disk. Default: every 500 ms.
    pub fn flush(mut self, flush: FlushPolicy) -> Self {
        self.flush = flush;
        self
    }

    /// Deletes the database when the store is dropped (for tests).
    pub fn temporary(mut self, temporary: bool) -> Self {
        self.temporary = temporary;
        self
    }

    /// Opens (or creates) the database.
    ///
    /// # Errors
    /// [`SledStoreError::Open`] when sled cannot open the directory.
    pub fn open(self) -> Result<SledStore, SledStoreError> {
        let open_error = |source| SledStoreError::Open {
            path: self.path.clone(),
            source,
        };
        let mut config = sled::Config::new()
            .path(&self.path)
            .temporary(self.temporary);
        config = match self.flush {
            FlushPolicy::EveryWrite => config.flush_every_ms(None),
            FlushPolicy::Interval(d) => config.flush_every_ms(Some(
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1),
            )),
        };
        let db = config.open().map_err(open_error)?;
        let records = db.open_tree("records").map_err(open_error)?;
        let expiry = db.open_tree("expiry").map_err(open_error)?;
        let owners = db.open_tree("owners").map_err(open_error)?;
        Ok(SledStore {
            db,
            records,
            expiry,
            owners,
            flush: self.flush,
        })
    }
}

/// Sessions in an embedded sled database. Cloning shares the database.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    records: Tree,
    expiry: Tree,
    owners: Tree,
    flush: FlushPolicy,
}

impl fmt::Debug for SledStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the record count: sled counts a tree by scanning it.
        f.debug_struct("SledStore")
            .field("flush", &self.flush)
            .finish_non_exhaustive()
    }
}

/// Unix milliseconds as a sortable key part; times before 1970 sort first.
fn millis(t: Timestamp) -> u64 {
    u64::try_from(t.unix_millis()).unwrap_or(0)
}

fn expiry_key(deadline: Timestamp, id: &RecordId) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..8].copy_from_slice(&millis(deadline).to_be_bytes());
    k[8..].copy_from_slice(id.as_bytes());
    k
}

fn owner_prefix(owner: &str) -> [u8; 32] {
    Sha256::digest(owner.as_bytes()).into()
}

fn owner_key(owner: &str, id: &RecordId) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(&owner_prefix(owner));
    k[32..].copy_from_slice(id.as_bytes());
    k
}

fn id_from(bytes: &[u8]) -> Option<RecordId> {
    <[u8; 32]>::try_from(bytes).ok().map(RecordId::from_bytes)
}

/// Decodes a stored value; `None` (logged) when it is not a record of `id`.
fn decode(id: &RecordId, bytes: &[u8]) -> Option<Record> {
    match Record::from_bytes(bytes) {
        Ok(r) if r.id == *id => Some(r),
        Ok(_) => {
            tracing::warn!(id = %id.short(), "sled record id does not match its key; treating it as no session");
            None
        }
        Err(e) => {
            tracing::warn!(id = %id.short(), error = %e, "undecodable session record in sled; treating it as no session");
            None
        }
    }
}

type Trees<'a> = (
    &'a TransactionalTree,
    &'a TransactionalTree,
    &'a TransactionalTree,
);

/// Inside a transaction: removes a record and its index entries (those of
/// bytes that do not decode stay for the sweep and the owner's listing);
/// answers whether there was anything under the id.
fn remove_tx(
    (records, expiry, owners): Trees<'_>,
    id: &RecordId,
) -> Result<bool, ConflictableTransactionError<StoreError>> {
    let Some(old) = records.remove(&id.as_bytes()[..])? else {
        return Ok(false);
    };
    if let Some(r) = decode(id, &old) {
        expiry.remove(&expiry_key(r.expires_at, id)[..])?;
        if let Some(owner) = &r.owner {
            owners.remove(&owner_key(owner, id)[..])?;
        }
    }
    Ok(true)
}

/// Inside a transaction: writes a record and its index entries, replacing
/// those of `previous`.
fn put_tx(
    (records, expiry, owners): Trees<'_>,
    record: &Record,
    bytes: &[u8],
    previous: Option<&Record>,
) -> Result<(), ConflictableTransactionError<StoreError>> {
    if let Some(p) = previous {
        expiry.remove(&expiry_key(p.expires_at, &p.id)[..])?;
        if let Some(owner) = &p.owner {
            owners.remove(&owner_key(owner, &p.id)[..])?;
        }
    }
    records.insert(&record.id.as_bytes()[..], bytes)?;
    expiry.insert(&expiry_key(record.expires_at, &record.id)[..], &[][..])?;
    if let Some(owner) = &record.owner {
        owners.insert(&owner_key(owner, &record.id)[..], &[][..])?;
    }
    Ok(())
}

/// Inside a transaction: the stored record of `id` (undecodable counts as
/// absent) and whether it is live. The clock is read here, under the
/// transaction's lock, so that a record that expired while the call waited
/// for it counts as expired.
fn current_tx(
    records: &TransactionalTree,
    id: &RecordId,
) -> Result<Option<(Record, bool)>, ConflictableTransactionError<StoreError>> {
    Ok(stored_tx(records, id)?.map(|(_, r, live)| (r, live)))
}

/// [`current_tx`], with the stored bytes the record was decoded from.
fn stored_tx(
    records: &TransactionalTree,
    id: &RecordId,
) -> Result<Option<(sled::IVec, Record, bool)>, ConflictableTransactionError<StoreError>> {
    let found = records.get(&id.as_bytes()[..])?;
    let now = Timestamp::now();
    Ok(found.and_then(|bytes| {
        let r = decode(id, &bytes)?;
        let live = !r.is_expired(now);
        Some((bytes, r, live))
    }))
}

impl SledStore {
    /// Starts building a store at `path` (a directory).
    pub fn builder(path: impl AsRef<Path>) -> SledStoreBuilder {
        SledStoreBuilder {
            path: path.as_ref().to_path_buf(),
            flush: FlushPolicy::default(),
            temporary: false,
        }
    }

    /// Opens (or creates) a store at `path` with the default flush policy.
    ///
    /// # Errors
    /// [`SledStoreError::Open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SledStoreError> {
        Self::builder(path).open()
    }

    /// How many records are stored, expired ones not yet swept included.
    /// sled counts them by scanning the tree, on the calling thread.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is stored.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The bytes the database occupies on disk.
    ///
    /// # Errors
    /// When sled cannot measure it.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(op_error("measure"))
    }

    /// Writes everything to disk now.
    ///
    /// # Errors
    /// When the disk write fails.
    pub async fn flush(&self) -> Result<(), StoreError> {
        // On Tokio's blocking pool, not with sled's `flush_async`: that waits
        // on a thread of sled's own small pool, which also writes the
        // buffers a flush waits for, and enough concurrent flushes leave no
        // thread to write them: every flush, and every write under
        // `EveryWrite`, then waits for ever. Outside a Tokio runtime, or in
        // one shutting down (a shutdown hook's last flush), on this thread.
        if tokio::runtime::Handle::try_current().is_err() {
            return self.flush_now();
        }
        let store = self.clone();
        match tokio::task::spawn_blocking(move || store.flush_now()).await {
            Ok(flushed) => flushed,
            Err(e) if e.is_cancelled() => self.flush_now(),
            Err(e) => Err(StoreError::new(StoreErrorKind::Other, e)),
        }
    }

    fn flush_now(&self) -> Result<(), StoreError> {
        self.db.flush().map(drop).map_err(op_error("flush"))
    }

    async fn after_write(&self) -> Result<(), StoreError> {
        if self.flush == FlushPolicy::EveryWrite {
            self.flush().await?;
        }
        Ok(())
    }

    /// Under [`FlushPolicy::EveryWrite`], runs a single-record write on
    /// Tokio's blocking pool and flushes there too if `wrote` says it wrote
    /// (one hop for both).
    async fn write_off_the_runtime<T: Send + 'static>(
        &self,
        op: &'static str,
        write: impl FnOnce(&Self) -> Result<T, StoreError> + Send + 'static,
        wrote: fn(&T) -> bool,
    ) -> Result<T, StoreError> {
        self.blocking(op, move |store| {
            let outcome = write(store)?;
            if wrote(&outcome) {
                store.flush_now()?;
            }
            Ok(outcome)
        })
        .await
    }

    fn transaction<T>(
        &self,
        op: &'static str,
        f: impl Fn(Trees<'_>) -> Result<T, ConflictableTransactionError<StoreError>>,
    ) -> Result<T, StoreError> {
        (&self.records, &self.expiry, &self.owners)
            .transaction(|(r, e, o)| f((r, e, o)))
            .map_err(tx_error(op))
    }

    /// Runs `f` on Tokio's blocking pool, where scans and batches of
    /// transactions that read cold records from disk hold up no runtime
    /// worker.
    async fn blocking<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Self) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| {
                tracing::error!(op, error = %e, "sled task failed");
                StoreError::new(StoreErrorKind::Other, e)
            })?
    }

    /// Examines up to `batch` expiry entries that are due and removes the
    /// expired records among them (an entry of a record touched since only
    /// loses its stale entry); returns how many records it removed.
    ///
    /// # Errors
    /// When sled fails.
    pub async fn sweep(&self, batch: usize) -> Result<u64, StoreError> {
        Ok(self.sweep_batch(batch).await?.removed)
    }

    /// [`SledStore::sweep`], also answering how many expiry entries it
    /// looked at: entries of records touched since count there but remove
    /// nothing, so only a short batch says nothing more is due.
    async fn sweep_batch(&self, batch: usize) -> Result<Swept, StoreError> {
        let swept = self
            .blocking("sweep", move |store| {
                store.sweep_until(Timestamp::now(), batch)
            })
            .await?;
        if swept.records_removed {
            self.after_write().await?;
        }
        if swept.removed > 0 {
            tracing::debug!(removed = swept.removed, "swept expired sessions");
        }
        Ok(swept)
    }

    /// The work of [`SledStore::sweep_batch`], on the calling thread: the
    /// entries due at `now`.
    fn sweep_until(&self, now: Timestamp, batch: usize) -> Result<Swept, StoreError> {
        let end = (millis(now) + 1).to_be_bytes();
        let mut due = Vec::new();
        let mut swept = Swept::default();
        for entry in self.expiry.range(..&end[..]).take(batch) {
            swept.examined += 1;
            let (key, _) = entry.map_err(op_error("sweep"))?;
            match key.get(8..).and_then(id_from) {
                Some(id) => due.push((key, id)),
                // Not an entry this store writes: it would stand in front of
                // every later sweep.
                None => {
                    self.expiry.remove(&key).map_err(op_error("sweep"))?;
                }
            }
        }
        for (key, id) in due {
            let (expired, removed) = self.transaction("sweep", |trees| {
                match current_tx(trees.0, &id)? {
                    // Touched or re-created since: its index entry moved.
                    // Unless this is the entry it has: a record live now can
                    // hold one this sweep found due if the clock stepped
                    // back meanwhile, and without it no sweep would remove
                    // the record once it expires.
                    Some((r, true)) => {
                        if key[..] != expiry_key(r.expires_at, &id)[..] {
                            trees.1.remove(&key)?;
                        }
                        Ok((false, false))
                    }
                    Some((_, false)) => Ok((true, remove_tx(trees, &id)?)),
                    None => {
                        // An orphan entry (or an undecodable record): drop both.
                        let removed = trees.0.remove(&id.as_bytes()[..])?.is_some();
                        trees.1.remove(&key)?;
                        Ok((false, removed))
                    }
                }
            })?;
            swept.removed += u64::from(expired);
            swept.records_removed |= removed;
        }
        Ok(swept)
    }

    /// The live records of `owner`, dropping index entries that no record
    /// of `owner` stands behind; on the calling thread.
    fn ids_of_owner_now(&self, owner: &str) -> Result<Vec<RecordId>, StoreError> {
        let mut ids = Vec::new();
        let mut stale = Vec::new();
        for entry in self.owners.scan_prefix(owner_prefix(owner)) {
            let (key, _) = entry.map_err(op_error("list owner"))?;
            let Some(id) = key.get(32..).and_then(id_from) else {
                continue;
            };
            let record = self
                .records
                .get(id.as_bytes())
                .map_err(op_error("list owner"))?
                .map(|b| decode(&id, &b));
            match record {
                Some(Some(r)) if r.owner.as_deref() == Some(owner) => {
                    // An expired one goes with its entries at the next sweep.
                    if !r.is_expired(Timestamp::now()) {
                        ids.push(id);
                    }
                }
                // Bytes this release cannot read (a newer format after a
                // rollback, say) may be a live session of this owner: keep
                // its entry. The sweep removes the record at its deadline.
                Some(None) => {}
                // No record behind the entry (a corrupted one the sweep
                // removed without knowing its owner), or another owner's:
                // nothing else would remove it.
                None | Some(Some(_)) => stale.push((key, id)),
            }
        }
        for (key, id) in stale {
            self.transaction("list owner", |(records, _, owners)| {
                let keep = records.get(&id.as_bytes()[..])?.is_some_and(|b| {
                    decode(&id, &b).is_none_or(|r| r.owner.as_deref() == Some(owner))
                });
                if !keep {
                    owners.remove(&key)?;
                }
                Ok(())
            })?;
        }
        Ok(ids)
    }

    /// Deletes the live records of `owner`, each in a transaction of its
    /// own, and counts them.
    /// The outcome of a pass that deletes records (`delete_owner`,
    /// `delete_all`), flushed in the same task whatever it was (also when it
    /// removed nothing, as for `delete`): the caller may be gone (its store
    /// timeout, a client that left) or the pass may have failed halfway, and
    /// what it deleted must not come back after a crash.
    fn flushed_after(
        &self,
        op: &'static str,
        deleted: Result<u64, StoreError>,
    ) -> Result<u64, StoreError> {
        let flushed = match self.flush {
            FlushPolicy::EveryWrite => self.flush_now(),
            FlushPolicy::Interval(_) => Ok(()),
        };
        if let (Err(_), Err(error)) = (&deleted, &flushed) {
            tracing::warn!(%error, op, "the flush after a failed pass failed too");
        }
        let n = deleted?;
        flushed?;
        Ok(n)
    }

    /// Every record, each removed with its index entries in a transaction
    /// of its own, as `delete` removes one: a session written meanwhile
    /// keeps its entries consistent.
    fn delete_all_now(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        for key in self.records.iter().keys() {
            let key = key.map_err(op_error("delete all"))?;
            match id_from(&key) {
                Some(id) => {
                    let removed = self.transaction("delete all", |trees| remove_tx(trees, &id))?;
                    n += u64::from(removed);
                }
                // Not a record's key: nothing reads it, and it goes too.
                None => drop(self.records.remove(&key).map_err(op_error("delete all"))?),
            }
        }
        Ok(n)
    }

    fn delete_owner_now(&self, owner: &str) -> Result<u64, StoreError> {
        let mut n = 0;
        for id in self.ids_of_owner_now(owner)? {
            let (live, gone) =
                self.transaction("delete owner", |trees| match current_tx(trees.0, &id)? {
                    Some((r, live)) if r.owner.as_deref() == Some(owner) => {
                        Ok((live, remove_tx(trees, &id)?))
                    }
                    _ => Ok((false, false)),
                })?;
            // One that expired since the listing goes, uncounted.
            n += u64::from(live && gone);
        }
        Ok(n)
    }
}

/// What one sweep batch did.
#[derive(Debug, Default, Clone, Copy)]
struct Swept {
    /// Expired records removed.
    removed: u64,
    /// Expiry entries examined.
    examined: usize,
    /// Whether any record's bytes were removed (expired, or undecodable
    /// past their deadline): what a flush must make durable.
    records_removed: bool,
}

impl SledStore {
    /// Whether single-record calls run on Tokio's blocking pool: under
    /// [`FlushPolicy::EveryWrite`], where every write waits for the disk and
    /// sled's lock makes other calls wait for those syncs too.
    fn off_the_runtime(&self) -> bool {
        self.flush == FlushPolicy::EveryWrite
    }

    fn load_now(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        let bytes = self.records.get(id.as_bytes()).map_err(op_error("load"))?;
        let now = Timestamp::now();
        Ok(bytes
            .and_then(|b| decode(id, &b))
            .filter(|r| !r.is_expired(now)))
    }

    fn create_now(&self, record: &Record, bytes: &[u8]) -> Result<Created, StoreError> {
        self.transaction("create", |trees| {
            let previous = match current_tx(trees.0, &record.id)? {
                Some((_, true)) => return Ok(Created::IdTaken),
                Some((old, false)) => Some(old),
                None => None,
            };
            put_tx(trees, record, bytes, previous.as_ref())?;
            Ok(Created::Created)
        })
    }

    fn save_now(
        &self,
        record: &Record,
        bytes: &[u8],
        expected_version: u64,
    ) -> Result<Saved, StoreError> {
        self.transaction("save", |trees| match current_tx(trees.0, &record.id)? {
            Some((old, true)) if old.version == expected_version => {
                put_tx(trees, record, bytes, Some(&old))?;
                Ok(Saved::Saved)
            }
            Some((_, true)) => Ok(Saved::Conflict),
            _ => Ok(Saved::Missing),
        })
    }

    fn touch_now(
        &self,
        id: &RecordId,
        version: u64,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        self.transaction("touch", |trees| {
            let Some((stored, old, true)) = stored_tx(trees.0, id)? else {
                return Ok(false);
            };
            if old.version != version {
                return Ok(false);
            }
            // The stored bytes with the new deadline, not the decoded record
            // encoded again: fields a newer release wrote stay.
            let bytes = Record::bytes_with_expires_at(&stored, expires_at).map_err(|e| {
                ConflictableTransactionError::Abort(SledStoreError::Encode(e).into())
            })?;
            let mut new = old.clone();
            new.expires_at = expires_at;
            put_tx(trees, &new, &bytes, Some(&old))?;
            Ok(true)
        })
    }

    fn delete_now(&self, id: &RecordId) -> Result<(), StoreError> {
        self.transaction("delete", |trees| remove_tx(trees, id))
            .map(drop)
    }
}

#[async_trait]
impl Store for SledStore {
    async fn load(&self, id: &RecordId) -> Result<Option<Record>, StoreError> {
        if self.off_the_runtime() {
            let id = *id;
            return self.blocking("load", move |s| s.load_now(&id)).await;
        }
        self.load_now(id)
    }

    async fn create(&self, record: &Record) -> Result<Created, StoreError> {
        let bytes = record.to_bytes().map_err(SledStoreError::Encode)?;
        if self.off_the_runtime() {
            let record = record.clone();
            let create = move |s: &Self| s.create_now(&record, &bytes);
            return self
                .write_off_the_runtime("create", create, |c| *c == Created::Created)
                .await;
        }
        self.create_now(record, &bytes)
    }

    async fn save(&self, record: &Record, expected_version: u64) -> Result<Saved, StoreError> {
        let bytes = record.to_bytes().map_err(SledStoreError::Encode)?;
        if self.off_the_runtime() {
            let record = record.clone();
            let save = move |s: &Self| s.save_now(&record, &bytes, expected_version);
            return self
                .write_off_the_runtime("save", save, |s| *s == Saved::Saved)
                .await;
        }
        self.save_now(record, &bytes, expected_version)
    }

    async fn touch(
        &self,
        id: &RecordId,
        version: u64,
        _owner: Option<&str>,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError> {
        if self.off_the_runtime() {
            let id = *id;
            let touch = move |s: &Self| s.touch_now(&id, version, expires_at);
            return self.write_off_the_runtime("touch", touch, |t| *t).await;
        }
        self.touch_now(id, version, expires_at)
    }

    async fn delete(&self, id: &RecordId) -> Result<(), StoreError> {
        if self.off_the_runtime() {
            // Flushed also when this found nothing: another request's delete
            // of the same record may not be on disk yet, and this one is
            // acknowledged too.
            let id = *id;
            let delete = move |s: &Self| s.delete_now(&id);
            return self.write_off_the_runtime("delete", delete, |_| true).await;
        }
        self.delete_now(id)
    }

    async fn delete_expired(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let swept = self.sweep_batch(1_000).await?;
            total += swept.removed;
            if swept.examined < 1_000 {
                return Ok(total);
            }
        }
    }

    async fn ids_of_owner(&self, owner: &str) -> Result<Vec<RecordId>, StoreError> {
        let owner = owner.to_owned();
        self.blocking("list owner", move |store| store.ids_of_owner_now(&owner))
            .await
    }

    async fn delete_owner(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        self.blocking("delete owner", move |store| {
            store.flushed_after("delete owner", store.delete_owner_now(&owner))
        })
        .await
    }

    async fn delete_all(&self) -> Result<u64, StoreError> {
        self.blocking("delete all", |store| {
            store.flushed_after("delete all", store.delete_all_now())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::Id;

    fn store() -> SledStore {
        store_with(FlushPolicy::default())
    }

    fn store_with(flush: FlushPolicy) -> SledStore {
        let mut b = [0u8; 8];
        getrandom::getrandom(&mut b).unwrap();
        let name: String = b.iter().map(|x| format!("{x:02x}")).collect();
        SledStore::builder(std::env::temp_dir().join(format!("session-sled-unit-{name}")))
            .temporary(true)
            .flush(flush)
            .open()
            .unwrap()
    }

    /// Under `EveryWrite`, a "log out everywhere" dropped by its caller (a
    /// store timeout, a client that left) once sled's blocking task has
    /// started still reaches the disk: the task flushes, so nothing is left
    /// for a flush after it to write.
    #[test]
    fn a_dropped_delete_owner_still_flushes_under_every_write() {
        let store = store_with(FlushPolicy::EveryWrite);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            for _ in 0..5 {
                store
                    .create(&record(Duration::from_secs(60), Some("alice")))
                    .await
                    .unwrap();
            }
            use std::future::Future as _;
            // Polled once, then dropped, while sled's blocking task runs.
            let mut deleting = std::pin::pin!(store.delete_owner("alice"));
            let polled = (deleting.as_mut())
                .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
            assert!(
                polled.is_pending(),
                "the deletion answered on its first poll"
            );
            // Until the task has started (a runtime dropped before cancels a
            // blocking task still queued): its first delete shows.
            let started = std::time::Instant::now();
            while store.len() == 5 {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "the task never started"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        // Waits for the blocking task.
        drop(runtime);
        assert_eq!(store.len(), 0, "the task deleted");
        assert_eq!(
            store.db.flush().unwrap(),
            0,
            "bytes the task left unflushed"
        );
    }

    /// Under `EveryWrite`, single-record calls leave the runtime's worker
    /// (they answer from another thread, not on their first poll); under
    /// `Interval`, sled answers them on the caller's task.
    #[test]
    fn single_record_calls_run_off_the_runtime_under_every_write() {
        use std::future::Future as _;
        // One blocking thread, kept busy while the load is first polled: a
        // load sent there cannot have answered by then.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(1)
            .build()
            .unwrap();
        for (flush, off) in [
            (FlushPolicy::EveryWrite, true),
            (FlushPolicy::default(), false),
        ] {
            let store = store_with(flush);
            let r = record(Duration::from_secs(60), None);
            runtime.block_on(store.create(&r)).unwrap();
            runtime.block_on(async {
                let (release, busy) = std::sync::mpsc::channel::<()>();
                let occupied = tokio::task::spawn_blocking(move || busy.recv());
                let mut loading = std::pin::pin!(store.load(&r.id));
                let polled = (loading.as_mut())
                    .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
                assert_eq!(polled.is_pending(), off, "{flush:?}");
                release.send(()).unwrap();
                occupied.await.unwrap().unwrap();
                let loaded = match polled {
                    std::task::Poll::Ready(loaded) => loaded,
                    std::task::Poll::Pending => loading.await,
                };
                assert_eq!(loaded.unwrap().map(|l| l.id), Some(r.id));
            });
        }
    }

    fn record(expires_in: Duration, owner: Option<&str>) -> Record {
        let now = Timestamp::now();
        let mut r = Record::new(Id::generate().unwrap().record_id(), now, now + expires_in);
        r.owner = owner.map(str::to_owned);
        r
    }

    /// Stores a record of `owner`, then overwrites its bytes with garbage.
    async fn corrupted(s: &SledStore, expires_in: Duration, owner: &str) -> RecordId {
        let r = record(expires_in, Some(owner));
        s.create(&r).await.unwrap();
        s.records
            .insert(r.id.as_bytes(), &b"\xc1garbage"[..])
            .unwrap();
        r.id
    }

    #[tokio::test]
    async fn a_corrupted_value_is_no_session_and_never_a_panic() {
        let s = store();
        let id = corrupted(&s, Duration::from_secs(3600), "alice").await;
        assert_eq!(s.load(&id).await.unwrap(), None);
        assert!(s.ids_of_owner("alice").await.unwrap().is_empty());
        // Bytes it cannot read may be a newer release's live session: its
        // owner entry stays.
        assert_eq!(
            s.owners.len(),
            1,
            "listing dropped an unreadable record's entry"
        );
        // The id can be used again.
        let mut fresh = record(Duration::from_secs(3600), None);
        fresh.id = id;
        assert_eq!(s.create(&fresh).await.unwrap(), Created::Created);
        assert_eq!(s.load(&id).await.unwrap(), Some(fresh));
        // Now the entry points at a record of nobody: listing drops it.
        assert!(s.ids_of_owner("alice").await.unwrap().is_empty());
        assert!(s.owners.is_empty(), "a stale owner entry stays");
    }

    /// The sweep removes a corrupted record at its deadline without knowing
    /// its owner; the next listing of that owner drops the entry left.
    #[tokio::test]
    async fn a_swept_corrupted_record_leaves_no_owner_entry_after_a_listing() {
        let s = store();
        corrupted(&s, Duration::from_millis(100), "carol").await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.delete_expired().await.unwrap();
        assert!(s.is_empty(), "the sweep leaves the corrupted record");
        assert_eq!(s.owners.len(), 1);
        assert!(s.ids_of_owner("carol").await.unwrap().is_empty());
        assert!(s.owners.is_empty(), "the orphan owner entry stays");
    }

    /// A sweep whose clock ran ahead of the records' (the system clock
    /// stepped back during it) keeps the entry of a record live by theirs.
    #[tokio::test]
    async fn a_sweep_ahead_of_the_clock_keeps_a_live_records_expiry_entry() {
        let s = store();
        let r = record(Duration::from_secs(3600), None);
        s.create(&r).await.unwrap();
        let ahead = Timestamp::now() + Duration::from_secs(7200);
        let swept = s.sweep_until(ahead, 1_000).unwrap();
        assert_eq!((swept.examined, swept.removed), (1, 0));
        assert_eq!(s.load(&r.id).await.unwrap(), Some(r));
        assert_eq!(s.expiry.len(), 1, "the record lost its expiry entry");
    }

    #[tokio::test]
    async fn the_sweeper_removes_expired_records_and_their_index_entries() {
        let s = store();
        let live = record(Duration::from_secs(3600), Some("bob"));
        s.create(&live).await.unwrap();
        // A touched record must survive the sweep of its old deadline. It is
        // touched first, well within its 200 ms, however slow the machine.
        let touched = record(Duration::from_millis(200), Some("bob"));
        s.create(&touched).await.unwrap();
        assert!(s
            .touch(
                &touched.id,
                touched.version,
                Some("bob"),
                Timestamp::now() + Duration::from_secs(3600)
            )
            .await
            .unwrap());
        for _ in 0..50 {
            s.create(&record(Duration::from_millis(200), Some("bob")))
                .await
                .unwrap();
        }
        assert_eq!(s.len(), 52);

        let sweeper = session_core::Sweeper::spawn(
            std::sync::Arc::new(s.clone()),
            session_core::Sweeper::MIN_INTERVAL,
        );
        // Waits for the sweeper rather than for a fixed time: the records
        // expire 200 ms after their creation, and a loaded machine may take
        // longer to sweep them.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while s.len() > 2 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // One more round, which would remove a live record if it were wrong.
        tokio::time::sleep(Duration::from_millis(300)).await;
        sweeper.stop().await;

        assert_eq!(s.len(), 2);
        assert_eq!(s.expiry.len(), 2, "expiry index entries follow the records");
        assert_eq!(s.owners.len(), 2, "owner index entries follow the records");
        let mut listed = s.ids_of_owner("bob").await.unwrap();
        listed.sort();
        let mut want = vec![live.id, touched.id];
        want.sort();
        assert_eq!(listed, want);
    }

    /// Expiry entries that remove no record (orphans, as a corrupted record
    /// leaves) fill whole batches; one `delete_expired` still gets past them
    /// to every expired record.
    #[tokio::test]
    async fn one_sweep_gets_past_batches_of_orphan_entries() {
        let s = store();
        let long_ago = Timestamp::now() - Duration::from_secs(3600);
        for _ in 0..2_000 {
            let orphan = Id::generate().unwrap().record_id();
            s.expiry
                .insert(expiry_key(long_ago, &orphan), &[][..])
                .unwrap();
        }
        // And keys this store never writes (too short for an id), in front.
        for n in 0u8..10 {
            let mut key = expiry_key(
                long_ago - Duration::from_secs(3600),
                &Id::generate().unwrap().record_id(),
            )
            .to_vec();
            key.truncate(9 + usize::from(n));
            s.expiry.insert(key, &[][..]).unwrap();
        }
        for _ in 0..10 {
            s.create(&record(Duration::from_millis(50), None))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(s.delete_expired().await.unwrap(), 10);
        assert_eq!(s.len(), 0);
        assert_eq!(s.expiry.len(), 0, "the orphans went too");
    }

    /// A touch moves the deadline in the stored bytes: a field a newer
    /// release wrote (an app rolled back to this one) stays.
    #[tokio::test]
    async fn a_touch_keeps_fields_this_release_does_not_know() {
        let s = store();
        let r = record(Duration::from_secs(60), None);
        s.create(&r).await.unwrap();
        let mut bytes = r.to_bytes().unwrap();
        assert_eq!(bytes[0], 0x88);
        bytes[0] = 0x89;
        bytes.extend_from_slice(&[0xa1, b'x', 0x01]);
        s.records.insert(&r.id.as_bytes()[..], &bytes[..]).unwrap();
        let later = r.expires_at + Duration::from_secs(3600);
        assert!(s.touch(&r.id, r.version, None, later).await.unwrap());
        let stored = s.records.get(&r.id.as_bytes()[..]).unwrap().unwrap();
        assert!(
            stored.ends_with(&[0xa1, b'x', 0x01]),
            "the newer field went"
        );
        assert_eq!(s.load(&r.id).await.unwrap().unwrap().expires_at, later);
        // The expiry index follows the new deadline.
        assert_eq!(s.expiry.len(), 1);
        assert_eq!(s.delete_expired().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_stopped_sweeper_sweeps_no_more() {
        let s = store();
        let sweeper = session_core::Sweeper::spawn(
            std::sync::Arc::new(s.clone()),
            session_core::Sweeper::MIN_INTERVAL,
        );
        sweeper.stop().await;
        s.create(&record(Duration::from_millis(50), None))
            .await
            .unwrap();
        // Past the sweeper's next tick, had it gone on.
        tokio::time::sleep(session_core::Sweeper::MIN_INTERVAL + Duration::from_millis(500)).await;
        assert_eq!(s.len(), 1, "nothing swept after stop");
        // Loads still never return it.
        assert_eq!(s.delete_expired().await.unwrap(), 1);
        assert!(s.is_empty());
    }
}
