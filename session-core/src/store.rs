//! The contract between the manager and a storage backend.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::id::RecordId;
use crate::record::Record;
use crate::timestamp::Timestamp;

/// The result of [`Store::create`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The record was inserted.
    Created,
    /// A live record with this id already exists; nothing was written. The
    /// manager retries with a fresh id.
    IdTaken,
}

/// The result of [`Store::save`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// The stored version was the expected one; the record was replaced.
    Saved,
    /// The stored version differs from the expected one; nothing was written.
    Conflict,
    /// No live record has this id (expired, deleted, never created); nothing was
    /// written. A store never re-creates a record on save.
    Missing,
}

/// A storage backend for session records.
///
/// Stores see [`Record`]s keyed by [`RecordId`] (the hash of the session id),
/// never cookies, raw ids or sessions. Every method is one logical operation
/// that a store should perform in one round trip where its backend allows.
///
/// # Contract
///
/// The conformance suite (feature `conformance`, macro
/// [`store_conformance!`](crate::store_conformance)) checks every point below
/// but the count `delete_expired` returns and what a store does with a record
/// that does not decode (the suite cannot corrupt a store's bytes; the
/// workspace's stores test that each in its own way).
///
/// * A record is live while the store's clock is before its `expires_at`, and
///   expired from that instant on. Stores use the system clock
///   ([`Timestamp::now`]); they cannot see the manager's [`Clock`](crate::Clock),
///   and need not: the manager checks every record it loads against its own.
/// * `load` never returns an expired record, and returns the `expires_at` of
///   the latest `touch`. A record that does not decode is no session: log it
///   and return `Ok(None)`, as the workspace's stores whose bytes live outside
///   the process do (Redis, SQL, sled; `MemoryStore`'s never leave it, so
///   bytes there that do not decode are a bug, reported as
///   [`StoreErrorKind::Corrupted`](crate::StoreErrorKind::Corrupted)); errors are for a
///   backend that cannot answer.
/// * `create` inserts only if no live record has the id. A record that is
///   already expired may be written or not; either way the answer is
///   `Created` and it never loads.
/// * `save` replaces the record only if the stored version equals
///   `expected_version`; it never inserts. The record passed in already carries
///   the new version (`expected_version + 1`).
/// * `touch` changes `expires_at` only, never data or version, and may move it
///   earlier as well as later (the manager retires an old id by touching it
///   into the past).
/// * `delete` is idempotent.
/// * `delete_expired` removes expired records for stores without native expiry
///   and returns how many; stores that expire natively return 0.
/// * `ids_of_owner` / `delete_owner` see exactly the live records whose `owner`
///   is the given one; an owner index never keeps expired or deleted records
///   visible.
/// * `delete_all` deletes every record of the store (its key prefix, its
///   table, its trees): each record live when the call began is gone when
///   it returns, and no owner's listing shows it. A record created during
///   the call may stay, and is listed for its owner.
///
/// The trait is object-safe: the manager holds an `Arc<dyn Store>`.
///
/// # Implementing a store
///
/// Implement the nine async methods with the semantics above, then run the
/// conformance suite against the store. [`Store::group_commit`] has a default
/// (`true`); override it only for a store whose save costs less than
/// gathering concurrent updates does. A store that keeps records as bytes
/// ([`Record::to_bytes`]) finds `expires_at` inside them too: for a `touch`
/// that rewrites no data, keep the deadline beside the bytes and set it on
/// the decoded record at `load`, as session-memory and session-redis do, or
/// rewrite it in the stored bytes with [`Record::bytes_with_expires_at`], as
/// session-sled does; decoding and encoding the record again would drop the
/// fields a newer release wrote. `testing::TestStore` (feature
/// `conformance`) is a complete reference implementation in about a hundred
/// lines: one mutex around a map.
#[async_trait]
pub trait Store: fmt::Debug + Send + Sync + 'static {
    /// Loads a live record; `None` when it is missing or expired.
    async fn load(&self, id: &RecordId) -> Result<Option<Record>, StoreError>;

    /// Inserts the record if no live record has its id.
    async fn create(&self, record: &Record) -> Result<Created, StoreError>;

    /// Replaces the record if the stored version is `expected_version`.
    async fn save(&self, record: &Record, expected_version: u64) -> Result<Saved, StoreError>;

    /// Moves the deadline of a live record without rewriting its data, if its
    /// version is still `version` (the one the caller loaded). Returns `false`
    /// when no live record has the id, or when it is at another version:
    /// a write that came first set a deadline of its own, from the lifetime
    /// it saved, which a touch from an older copy must not replace. `owner`
    /// is the record's owner as last loaded, for stores whose owner index
    /// tracks deadlines.
    async fn touch(
        &self,
        id: &RecordId,
        version: u64,
        owner: Option<&str>,
        expires_at: Timestamp,
    ) -> Result<bool, StoreError>;

    /// Deletes the record; deleting a missing record is not an error.
    async fn delete(&self, id: &RecordId) -> Result<(), StoreError>;

    /// Deletes expired records and returns how many; 0 for stores that expire
    /// records natively.
    async fn delete_expired(&self) -> Result<u64, StoreError>;

    /// The ids of the live records owned by `owner`.
    async fn ids_of_owner(&self, owner: &str) -> Result<Vec<RecordId>, StoreError>;

    /// Deletes every live record owned by `owner` and returns how many it
    /// deleted. Expired records of the owner are not counted; whether they
    /// go now or at the next sweep is the store's choice.
    async fn delete_owner(&self, owner: &str) -> Result<u64, StoreError>;

    /// Deletes every record of this store, live or expired, and returns how
    /// many records it deleted (expired ones it still held count too). Owner
    /// index entries of the deleted records must not list them afterwards;
    /// a store may keep those entries while its listings check the records. "Log everyone out": after a breach, or a change of
    /// what sessions hold.
    async fn delete_all(&self) -> Result<u64, StoreError>;

    /// Whether the manager should gather concurrent updates of one session
    /// into one `save` (group commit), asked once when the manager is built.
    ///
    /// `true`, the default, suits a store whose save costs a round trip or a
    /// disk write: sixteen requests incrementing one counter then share a
    /// save or two instead of making sixteen. Gathering has a price of its
    /// own: a task that writes the gathered record, and a wake-up for every
    /// update waiting for it. A store whose save costs less than that, such as a
    /// map in this process, returns `false`, and each update saves at once
    /// while it holds the session's turn (except one that carries its
    /// request's earlier deferred writes, which a task always saves). Either
    /// way no update is lost.
    fn group_commit(&self) -> bool {
        true
    }
}

/// The boxed future of a [`Store`] method, as `async_trait` declares it.
pub(crate) type StoreFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Which [`Store`] method a call is, for wrappers written with
/// `forward_store!`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreOp {
    Load,
    Create,
    Save,
    Touch,
    Delete,
    DeleteExpired,
    IdsOfOwner,
    DeleteOwner,
    DeleteAll,
}

/// The [`Store`] methods of a wrapper that hands every call on to an
/// inner store, written once: `$inner` is the inner store (an expression of
/// `$this`, the wrapper), and `$pass($this, op, future)` returns the future
/// the method answers with, given the inner store's. Written by hand rather
/// than with `async_trait`, so that a wrapper that passes the future through
/// adds no box of its own. `group_commit: expr` answers
/// [`Store::group_commit`] instead of the inner store.
macro_rules! forward_store {
    (|$this:ident| $inner:expr, $pass:path) => {
        forward_store!(|$this| $inner, $pass, group_commit: $inner.group_commit());
    };
    (|$this:ident| $inner:expr, $pass:path, group_commit: $group_commit:expr) => {
        fn load<'s, 'a, 'f>(&'s self, id: &'a RecordId) -> $crate::store::StoreFuture<'f, Option<Record>>
        where
            's: 'f,
            'a: 'f,
            Self: 'f,
        {
            let $this = self;
            $pass($this, $crate::store::StoreOp::Load, $inner.load(id))
        }
        fn create<'s, 'a, 'f>(&'s self, record: &'a Record) -> $crate::store::StoreFuture<'f, Created>
        where
            's: 'f,
            'a: 'f,
            Self: 'f,
        {
            let $this = self;
            $pass($this, $crate::store::StoreOp::Create, $inner.create(record))
        }
        fn save<'s, 'a, 'f>(
            &'s self,
            record: &'a Record,
            expected_version: u64,
        ) -> $crate::store::StoreFuture<'f, Saved>
        where
            's: 'f,
            'a: 'f,
            Self: 'f,
        {
            let $this = self;
            $pass($this, $crate::store::StoreOp::Save, $inner.save(record, expected_version))
        }
        fn touch<'s, 'a, 'o, 'f>(
            &'s self,
            id: &'a RecordId,
            version: u64,
            owner: Option<&'o str>,
            expires_at: Timestamp,
        ) -> $crate::store::StoreFuture<'f, bool>
        where
            's: 'f,
            'a: 'f,
            'o: 'f,
            Self: 'f,
        {
            let $this = self;
            $pass(
                $this,
                $crate::store::StoreOp::Touch,
                $inner.touch(id, version, owner, expires_at),
            )
        }
        fn delete<'s, 'a, 'f>(&'s self, id: &'a RecordId) -> $crate::store::StoreFuture<'f, ()>
        where
            's: 'f,
            'a: 'f,
            Self: 'f,
        {
            let $this = self;
            $pass($this, $crate::store::StoreOp::Delete, $inner.delete(id))
        }
        fn delete_expired<'s, 'f>(&'s self) -> $crate::store::StoreFuture<'f, u64>
        where
            's: 'f,
            Self: 'f,
        {
            let $this = self;
            $pass($this, $crate::store::StoreOp::DeleteExpired, $inner.delete_expired())
        }
        fn ids_of_owner<'s, 'a, 'f>(&'s self, owner: &'a str) -> $crate::store::StoreFuture<'f, Vec<RecordId>>
        where
            's: 'f,
            'a: 'f,
            Self: 'f,
        {
            let $this = self;
            $pass($this, $crate::store::StoreOp::IdsOfOwner, $inner.ids_of_owner(owner))
        }
        fn delete_owner<'s, 'a, 'f>(&'s self, owner: &'a str) -> $crate::store::StoreFuture<'f, u64>
        where
            's: 'f,
            'a: 'f,
            Self: 'f,
        {
            let $this = self;
            $pass($this, $crate::store::StoreOp::DeleteOwner, $inner.delete_owner(owner))
        }
        fn delete_all<'s, 'f>(&'s self) -> $crate::store::StoreFuture<'f, u64>
        where
            's: 'f,
            Self: 'f,
        {
            let $this = self;
            $pass($this, $crate::store::StoreOp::DeleteAll, $inner.delete_all())
        }
        fn group_commit(&self) -> bool {
            // Unused when the answer is a constant.
            #[allow(unused_variables)]
            let $this = self;
            $group_commit
        }
    };
}
#[cfg(any(test, feature = "conformance"))]
pub(crate) use forward_store;

/// The inner store's future, as it is.
pub(crate) fn pass_through<'f, W: ?Sized, T>(
    _: &W,
    _: StoreOp,
    inner: StoreFuture<'f, T>,
) -> StoreFuture<'f, T> {
    inner
}

/// A shared store is a store. Each method hands back the inner store's future
/// as it is, without boxing it again.
impl<S: Store + ?Sized> Store for Arc<S> {
    forward_store!(|this| (**this), pass_through);
}

/// What kind of failure a [`StoreError`] is, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The backend could not be reached or refused the connection.
    Unavailable,
    /// The backend answered with something the store cannot interpret.
    Corrupted,
    /// The backend rejected the operation (permissions, schema, limits).
    Rejected,
    /// Anything else.
    Other,
}

/// A failure inside a store. The source error is kept, not flattened.
///
/// Store errors are for logs and operators; adapters never put them in a
/// response body.
///
/// ```
/// use session_core::{StoreError, StoreErrorKind};
///
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
/// let err = StoreError::new(StoreErrorKind::Unavailable, io);
/// assert_eq!(err.kind(), StoreErrorKind::Unavailable);
/// assert!(std::error::Error::source(&err).is_some());
/// ```
#[derive(Debug, thiserror::Error)]
#[error("session store {}: {source}", kind_text(*.kind))]
pub struct StoreError {
    kind: StoreErrorKind,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

fn kind_text(kind: StoreErrorKind) -> &'static str {
    match kind {
        StoreErrorKind::Unavailable => "unavailable",
        StoreErrorKind::Corrupted => "returned corrupted data",
        StoreErrorKind::Rejected => "rejected the operation",
        StoreErrorKind::Other => "failed",
    }
}

impl StoreError {
    /// Wraps a backend error.
    pub fn new(
        kind: StoreErrorKind,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self {
            kind,
            source: source.into(),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}
