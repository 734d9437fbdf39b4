//! The store conformance suite: every point of the [`Store`] contract as a
//! named test, for this workspace's stores and for anyone else's.
//!
//! Enable the `conformance` feature in your store crate's dev-dependencies and
//! invoke [`store_conformance!`](crate::store_conformance) with an expression
//! that builds a fresh, isolated store (it is evaluated once per test):
//!
//! ```toml
//! [dev-dependencies]
//! # not on crates.io yet: a path (or git) dependency on this workspace
//! session-core = { path = "../sessions/session-core", features = ["conformance"] }
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! ```
//!
//! ```ignore
//! // tests/conformance.rs
//! session_core::store_conformance!(async { my_store::MyStore::for_tests().await });
//! ```
//!
//! Each case is also a public async function here, for stores that need a
//! custom harness. Cases use random ids and owner names, so stores that share
//! one backend between tests (a Redis prefix, a database schema) can run them
//! in parallel. Timestamps are whole milliseconds: a store must keep at least
//! millisecond precision.
//!
//! What the suite cannot see: whether `delete_expired` removes anything (an
//! expired record never loads, swept or not) and how much it costs. Check
//! with a test of your own that your storage shrinks after a sweep, as
//! session-sql's and session-sled's do.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{
    Config, Created, Id, Manager, Record, RecordId, Saved, Session, SetCookie, Store, Timestamp,
    MAX_OWNER_LEN,
};

/// Expands into one `#[tokio::test]` per contract case, each building its own
/// store with the given expression (a future yielding the store).
///
/// ```ignore
/// session_core::store_conformance!(async { session_memory::MemoryStore::new() });
/// ```
///
/// For a store that needs a server which may be absent, write
/// `optional: <future yielding Option<store>>`: `None` skips the case. Say
/// why in the factory, loudly, and fail there instead where a skip is not
/// acceptable (in CI).
#[macro_export]
macro_rules! store_conformance {
    (@cases $mode:tt $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::store_conformance!(@run $mode $factory, $case);
            }
        )*
    };
    (@run required $factory:expr, $case:ident) => {
        let store = $factory.await;
        $crate::conformance::$case(store).await;
    };
    (@run optional $factory:expr, $case:ident) => {
        if let Some(store) = $factory.await {
            $crate::conformance::$case(store).await;
        }
    };
    (@list $mode:tt $factory:expr) => {
        $crate::store_conformance!(@cases $mode $factory;
            load_missing_is_none,
            create_then_load_round_trips,
            create_collision_reports_id_taken,
            save_replaces_on_matching_version,
            save_replaces_the_whole_record,
            one_of_concurrent_writes_of_a_version_wins,
            versions_must_match_exactly,
            failed_writes_leave_the_owner_index_alone,
            failed_writes_leave_the_deadline_alone,
            owner_index_lists_each_record_once,
            long_deadlines_round_trip,
            an_expired_records_owner_does_not_reach_its_successor,
            save_conflicts_on_stale_version,
            save_never_resurrects_a_missing_record,
            versions_increment_through_saves,
            touch_extends_without_changing_data,
            save_moves_the_deadline_either_way,
            owners_match_byte_for_byte,
            a_retired_record_stays_retired,
            a_touch_racing_a_save_or_a_delete_is_one_step,
            touches_racing_a_save_on_other_threads_are_one_step,
            saves_racing_a_delete_never_bring_the_record_back,
            delete_all_deletes_every_record,
            touch_of_a_stale_version_changes_nothing,
            touch_of_missing_is_false,
            touch_to_the_same_or_a_past_deadline,
            expired_records_are_never_loaded,
            records_expire_when_their_deadline_passes,
            expired_id_can_be_created_again,
            a_create_over_an_expired_record_keeps_nothing_of_it,
            delete_expired_leaves_live_records,
            delete_expired_spares_touched_records,
            save_after_expiry_never_brings_the_record_back,
            delete_owner_counts_only_live_records,
            touch_to_an_earlier_deadline_ends_the_record_then,
            delete_is_idempotent,
            owner_index_lists_and_deletes,
            owner_index_follows_saves_and_deletes,
            owner_index_hides_expired_records,
            owner_index_follows_touch,
            every_value_type_round_trips,
            large_values_round_trip,
            many_keys_round_trip,
            unicode_and_empty_keys_round_trip,
            extreme_ids_and_longest_owner,
            concurrent_writers_lose_no_key,
            concurrent_updates_count_exactly,
            updates_from_two_processes_count_exactly,
            destroyed_session_is_never_resurrected,
            login_rotates_and_invalidates_the_old_id,
            logout_keeps_the_data_and_leaves_the_owner,
            logout_everywhere_is_never_undone_by_slow_writers,
            owner_cap_ends_the_oldest_sessions,
            end_other_sessions_keeps_only_this_one
        );
    };
    (optional: $factory:expr) => {
        $crate::store_conformance!(@list optional $factory);
    };
    ($factory:expr) => {
        $crate::store_conformance!(@list required $factory);
    };
}

/// Expands into one `#[tokio::test]` per case of the contract across two
/// instances of a store that several app servers share (Redis, SQL): the
/// expression yields two stores over the same data (the same server and key
/// prefix, schema or table) made separately, as two processes would make
/// them. A store whose compare-and-set, owner index or deletes hold only
/// inside one instance (an in-process lock, a local index) passes
/// [`store_conformance!`] and fails these.
///
/// ```ignore
/// session_core::store_conformance_across_instances!(async {
///     let prefix = my_store::unique_prefix();
///     (my_store::MyStore::connect(&prefix).await, my_store::MyStore::connect(&prefix).await)
/// });
/// ```
///
/// `optional: <future yielding Option<(store, store)>>` skips the cases on
/// `None`, as for [`store_conformance!`].
#[macro_export]
macro_rules! store_conformance_across_instances {
    (@cases $mode:tt $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $crate::store_conformance_across_instances!(@run $mode $factory, $case);
            }
        )*
    };
    (@run required $factory:expr, $case:ident) => {
        let (a, b) = $factory.await;
        $crate::conformance::$case(a, b).await;
    };
    (@run optional $factory:expr, $case:ident) => {
        if let Some((a, b)) = $factory.await {
            $crate::conformance::$case(a, b).await;
        }
    };
    (@list $mode:tt $factory:expr) => {
        $crate::store_conformance_across_instances!(@cases $mode $factory;
            across_instances_one_write_of_a_version_wins,
            across_instances_updates_count_exactly,
            across_instances_a_delete_ends_the_record_everywhere,
            across_instances_the_owner_index_is_one
        );
    };
    (optional: $factory:expr) => {
        $crate::store_conformance_across_instances!(@list optional $factory);
    };
    ($factory:expr) => {
        $crate::store_conformance_across_instances!(@list required $factory);
    };
}

fn now() -> Timestamp {
    Timestamp::now()
}

fn random_rid() -> RecordId {
    Id::generate().expect("OS random source").record_id()
}

fn random_owner() -> String {
    format!("owner-{}", random_rid().short())
}

/// A record with one value that expires `expires_in` from now.
fn record(expires_in: Duration) -> Record {
    let t = now();
    let mut r = Record::new(random_rid(), t, t + expires_in);
    r.data.insert("k".into(), b"v".to_vec());
    r
}

/// A record that expired a second ago.
fn expired_record() -> Record {
    let t = now();
    let mut r = Record::new(
        random_rid(),
        t - Duration::from_secs(2),
        t - Duration::from_secs(1),
    );
    r.data.insert("k".into(), b"v".to_vec());
    r
}

fn hour() -> Duration {
    Duration::from_secs(3600)
}

async fn create(store: &dyn Store, r: &Record) {
    assert_eq!(store.create(r).await.expect("create"), Created::Created);
}

async fn load(store: &dyn Store, id: &RecordId) -> Option<Record> {
    store.load(id).await.expect("load")
}

fn config() -> Config {
    Config::builder()
        .with_secure(false)
        .with_conflict_retries(64)
        .build()
        .expect("valid config")
}

fn manager(store: impl Store) -> Manager {
    Manager::new(store, config())
}

/// The cookie value a commit issued.
fn issued(outcome: &SetCookie) -> String {
    match outcome {
        SetCookie::Set { value, .. } => value.clone(),
        other => panic!("expected a cookie to be set, got {other:?}"),
    }
}

fn cookie_header(manager: &Manager, value: &str) -> String {
    format!("{}={value}", manager.config().cookie_name())
}

fn reopen(manager: &Manager, value: &str) -> Session {
    let header = cookie_header(manager, value);
    manager.session_from_cookies([header.as_str()])
}

/// `load` of an id never stored is `None`.
pub async fn load_missing_is_none(store: impl Store) {
    assert_eq!(load(&store, &random_rid()).await, None);
}

/// A created record loads back equal, field for field.
pub async fn create_then_load_round_trips(store: impl Store) {
    let mut r = record(hour());
    r.owner = Some(random_owner());
    r.lifetime = Some(
        crate::Lifetime::new()
            .with_idle_timeout(Some(Duration::from_secs(60)))
            .with_persistent_cookie(true),
    );
    create(&store, &r).await;
    assert_eq!(load(&store, &r.id).await, Some(r));
}

/// `create` over a live record reports `IdTaken` and writes nothing.
pub async fn create_collision_reports_id_taken(store: impl Store) {
    let r = record(hour());
    create(&store, &r).await;
    let mut other = r.clone();
    other.data.insert("k".into(), b"other".to_vec());
    assert_eq!(
        store.create(&other).await.expect("create"),
        Created::IdTaken
    );
    assert_eq!(load(&store, &r.id).await, Some(r));
}

/// `save` replaces the record whole: keys the new record lacks are gone,
/// and its lifetime and owner are the new record's, also when they are
/// `None` (a store that merged values into the stored ones, or kept a
/// column the new record leaves empty, would fail here).
pub async fn save_replaces_the_whole_record(store: impl Store) {
    let mut r = record(hour());
    r.data.insert("gone".into(), b"soon".to_vec());
    create(&store, &r).await;
    let mut next = r.clone();
    next.version = 1;
    next.data.remove("gone");
    next.owner = Some(random_owner());
    next.lifetime = Some(
        crate::Lifetime::new()
            .with_idle_timeout(Some(Duration::from_secs(600)))
            .with_absolute_timeout(Some(Duration::from_secs(7200)))
            .with_persistent_cookie(false),
    );
    assert_eq!(store.save(&next, 0).await.expect("save"), Saved::Saved);
    assert_eq!(load(&store, &r.id).await, Some(next.clone()));
    let mut empty = next.clone();
    empty.version = 2;
    empty.data.clear();
    empty.owner = None;
    empty.lifetime = None;
    assert_eq!(store.save(&empty, 1).await.expect("save"), Saved::Saved);
    assert_eq!(load(&store, &r.id).await, Some(empty));
}

/// Compare-and-set is one operation: of many saves expecting the same
/// version at once, exactly one replaces the record and the others
/// conflict; of many creates of one id at once, exactly one creates it. (A
/// store that reads the version and then writes in a second step fails
/// here, sooner or later.)
pub async fn one_of_concurrent_writes_of_a_version_wins(store: impl Store) {
    const WRITERS: u8 = 16;
    let store = Arc::new(store);
    let r = record(hour());
    create(&*store, &r).await;
    let saves: Vec<_> = (0..WRITERS)
        .map(|i| {
            let (store, mut next) = (Arc::clone(&store), r.clone());
            next.version = 1;
            next.data.insert("writer".into(), vec![i]);
            tokio::spawn(async move { (store.save(&next, 0).await.expect("save"), next) })
        })
        .collect();
    let mut winners = Vec::new();
    for save in saves {
        match save.await.expect("task") {
            (Saved::Saved, next) => winners.push(next),
            (Saved::Conflict, _) => {}
            (other, _) => panic!("a save of a live record answered {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "{} saves of version 0 won", winners.len());
    assert_eq!(load(&*store, &r.id).await, winners.pop());

    let fresh = record(hour());
    let creates: Vec<_> = (0..WRITERS)
        .map(|i| {
            let (store, mut mine) = (Arc::clone(&store), fresh.clone());
            mine.data.insert("writer".into(), vec![i]);
            tokio::spawn(async move { (store.create(&mine).await.expect("create"), mine) })
        })
        .collect();
    let mut created = Vec::new();
    for create in creates {
        if let (Created::Created, mine) = create.await.expect("task") {
            created.push(mine);
        }
    }
    assert_eq!(
        created.len(),
        1,
        "{} creates of one id succeeded",
        created.len()
    );
    assert_eq!(load(&*store, &fresh.id).await, created.pop());
}

/// A version ahead of the stored one is as wrong as one behind: a save or
/// touch must carry exactly the stored version.
pub async fn versions_must_match_exactly(store: impl Store) {
    let r = record(hour());
    create(&store, &r).await;
    let mut next = r.clone();
    next.version = 1;
    assert_eq!(store.save(&next, 0).await.expect("save"), Saved::Saved);
    let mut ahead = next.clone();
    ahead.version = 3;
    ahead.data.insert("k".into(), b"ahead".to_vec());
    assert_eq!(
        store.save(&ahead, 2).await.expect("save"),
        Saved::Conflict,
        "a save expecting a version the record has not reached replaced it"
    );
    assert!(
        !store
            .touch(&r.id, 2, None, r.expires_at + hour())
            .await
            .expect("touch"),
        "a touch carrying a version the record has not reached moved it"
    );
    assert_eq!(load(&store, &r.id).await, Some(next));
}

/// A write that wrote nothing (a create of a taken id, a save of a missing
/// record, a touch of a stale version) lists nothing under the owner it
/// named, and `delete_owner` of that owner deletes nothing. (A store may
/// raise an index entry before it writes, as session-redis does, as long
/// as the listing checks the records.)
pub async fn failed_writes_leave_the_owner_index_alone(store: impl Store) {
    let alice = random_owner();
    let mut r = record(hour());
    r.owner = Some(alice.clone());
    create(&store, &r).await;
    let bob = random_owner();
    let mut taken = r.clone();
    taken.owner = Some(bob.clone());
    assert_eq!(
        store.create(&taken).await.expect("create"),
        Created::IdTaken
    );
    let nothing_listed = |owner: String| {
        let store = &store;
        async move {
            assert!(
                store.ids_of_owner(&owner).await.expect("list").is_empty(),
                "a write that wrote nothing listed a record under its owner"
            );
        }
    };
    nothing_listed(bob.clone()).await;
    assert_eq!(load(&store, &r.id).await, Some(r.clone()));
    let carol = random_owner();
    let mut missing = record(hour());
    missing.version = 1;
    missing.owner = Some(carol.clone());
    assert_eq!(store.save(&missing, 0).await.expect("save"), Saved::Missing);
    // The record moves from alice to dave; a touch of the version before,
    // naming alice, changes nothing.
    let dave = random_owner();
    let mut next = r.clone();
    next.version = 1;
    next.owner = Some(dave.clone());
    assert_eq!(store.save(&next, 0).await.expect("save"), Saved::Saved);
    assert!(!store
        .touch(&r.id, 0, Some(&alice), r.expires_at + hour())
        .await
        .expect("touch"));
    for owner in [&alice, &bob, &carol] {
        nothing_listed(owner.clone()).await;
        assert_eq!(store.delete_owner(owner).await.expect("delete owner"), 0);
    }
    assert_eq!(load(&store, &r.id).await, Some(next));
    assert_eq!(store.ids_of_owner(&dave).await.expect("list"), vec![r.id]);
}

/// Writes that fail (a create of a taken id, a save of a stale version, a
/// touch of a stale version) leave the stored deadline alone, also when they
/// carry an earlier one: a store that sets the expiry apart from the write
/// itself (`SET NX` then `PEXPIREAT`, an expiry index updated before the
/// compare-and-set) would end a live session early.
pub async fn failed_writes_leave_the_deadline_alone(store: impl Store) {
    let alice = random_owner();
    let mut r = record(hour());
    r.owner = Some(alice.clone());
    create(&store, &r).await;
    let mut next = r.clone();
    next.version = 1;
    next.data.insert("k".into(), b"saved".to_vec());
    assert_eq!(store.save(&next, 0).await.expect("save"), Saved::Saved);
    let soon = now() + Duration::from_millis(800);
    let mut taken = record(Duration::from_millis(800));
    taken.id = r.id;
    taken.owner = Some(alice.clone());
    assert_eq!(
        store.create(&taken).await.expect("create"),
        Created::IdTaken
    );
    let mut stale = next.clone();
    stale.version = 1;
    stale.expires_at = soon;
    assert_eq!(store.save(&stale, 0).await.expect("save"), Saved::Conflict);
    assert!(!store
        .touch(&r.id, 0, Some(&alice), soon)
        .await
        .expect("touch"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    store.delete_expired().await.expect("delete_expired");
    assert_eq!(
        load(&store, &r.id).await,
        Some(next),
        "a write that failed moved the deadline"
    );
    assert_eq!(store.ids_of_owner(&alice).await.expect("list"), vec![r.id]);
}

/// Saves and touches that keep a record's owner list it once: the listing
/// holds it once and `delete_owner` counts it once.
pub async fn owner_index_lists_each_record_once(store: impl Store) {
    let alice = random_owner();
    let mut r = record(hour());
    r.owner = Some(alice.clone());
    create(&store, &r).await;
    for v in 1..=2u64 {
        let expected = r.version;
        r.version = v;
        r.data.insert("n".into(), v.to_le_bytes().to_vec());
        assert_eq!(store.save(&r, expected).await.expect("save"), Saved::Saved);
    }
    for extra in 1..=2u64 {
        let later = r.expires_at + Duration::from_secs(60 * extra);
        assert!(store
            .touch(&r.id, r.version, Some(&alice), later)
            .await
            .expect("touch"));
    }
    assert_eq!(store.ids_of_owner(&alice).await.expect("list"), vec![r.id]);
    assert_eq!(store.delete_owner(&alice).await.expect("delete owner"), 1);
    assert_eq!(load(&store, &r.id).await, None);
}

/// Deadlines far ahead (a year-long remember-me session) keep their
/// millisecond: a store that keeps time to live in 32 bits, or in seconds,
/// fails here.
pub async fn long_deadlines_round_trip(store: impl Store) {
    let day = Duration::from_secs(86_400);
    let t = now();
    let mut r = Record::new(random_rid(), t, t + day * 400 + Duration::from_millis(7));
    r.data.insert("k".into(), b"v".to_vec());
    create(&store, &r).await;
    assert_eq!(load(&store, &r.id).await, Some(r.clone()));
    let sooner = t + day * 399 + Duration::from_millis(3);
    assert!(store
        .touch(&r.id, r.version, None, sooner)
        .await
        .expect("touch"));
    assert_eq!(load(&store, &r.id).await.expect("live").expires_at, sooner);
}

/// An id whose record expired is free for a record of another owner: the
/// old owner's listing does not show the new record and their
/// `delete_owner` does not delete it (a store whose index outlives the
/// record must check the record's owner).
pub async fn an_expired_records_owner_does_not_reach_its_successor(store: impl Store) {
    let (alice, bob) = (random_owner(), random_owner());
    let mut old = record(Duration::from_millis(800));
    old.owner = Some(alice.clone());
    create(&store, &old).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut new = record(hour());
    new.id = old.id;
    new.owner = Some(bob.clone());
    create(&store, &new).await;
    assert!(
        store.ids_of_owner(&alice).await.expect("list").is_empty(),
        "the expired record's owner lists its successor"
    );
    assert_eq!(store.delete_owner(&alice).await.expect("delete owner"), 0);
    assert_eq!(load(&store, &old.id).await, Some(new));
    assert_eq!(store.ids_of_owner(&bob).await.expect("list"), vec![old.id]);
}

/// `save` with the stored version replaces the record.
pub async fn save_replaces_on_matching_version(store: impl Store) {
    let r = record(hour());
    create(&store, &r).await;
    let mut next = r.clone();
    next.version = 1;
    next.data.insert("k".into(), b"new".to_vec());
    next.data.insert("k2".into(), b"added".to_vec());
    next.expires_at = r.expires_at + Duration::from_secs(300);
    assert_eq!(
        store.save(&next, 0).await.expect("save"),
        Saved::Saved,
        "a save expecting the stored version must replace the record"
    );
    assert_eq!(
        load(&store, &r.id).await,
        Some(next),
        "a load must return the saved record whole (values, deadline, version)"
    );
}

/// `save` with a stale version reports `Conflict` and writes nothing.
pub async fn save_conflicts_on_stale_version(store: impl Store) {
    let r = record(hour());
    create(&store, &r).await;
    let mut next = r.clone();
    next.version = 1;
    next.data.insert("k".into(), b"first".to_vec());
    assert_eq!(store.save(&next, 0).await.expect("save"), Saved::Saved);
    let mut stale = r.clone();
    stale.version = 1;
    stale.data.insert("k".into(), b"second".to_vec());
    assert_eq!(
        store.save(&stale, 0).await.expect("save"),
        Saved::Conflict,
        "a save expecting a version the record no longer has must answer Conflict"
    );
    assert_eq!(
        load(&store, &r.id).await,
        Some(next),
        "a conflicting save must write nothing"
    );
}

/// `save` of a record that does not exist reports `Missing` and inserts
/// nothing.
pub async fn save_never_resurrects_a_missing_record(store: impl Store) {
    let mut r = record(hour());
    r.version = 1;
    assert_eq!(
        store.save(&r, 0).await.expect("save"),
        Saved::Missing,
        "a save of a record that does not exist must answer Missing"
    );
    assert_eq!(
        load(&store, &r.id).await,
        None,
        "a save must never insert a record (only create does)"
    );
    // Also after a delete.
    let r = record(hour());
    create(&store, &r).await;
    store.delete(&r.id).await.expect("delete");
    let mut next = r.clone();
    next.version = 1;
    assert_eq!(
        store.save(&next, 0).await.expect("save"),
        Saved::Missing,
        "a save of a deleted record must answer Missing"
    );
    assert_eq!(
        load(&store, &r.id).await,
        None,
        "a save brought a deleted record back"
    );
}

/// A chain of saves, each expecting the previous version, all succeed.
pub async fn versions_increment_through_saves(store: impl Store) {
    let mut r = record(hour());
    create(&store, &r).await;
    for v in 1..=5u64 {
        let expected = r.version;
        r.version = v;
        r.data.insert("n".into(), v.to_le_bytes().to_vec());
        assert_eq!(store.save(&r, expected).await.expect("save"), Saved::Saved);
        assert_eq!(load(&store, &r.id).await.expect("live").version, v);
    }
}

/// `touch` moves the deadline and nothing else.
pub async fn touch_extends_without_changing_data(store: impl Store) {
    let mut r = record(Duration::from_secs(30));
    let owner = random_owner();
    r.owner = Some(owner.clone());
    // A "remember me" of its own, which a touch must not drop.
    r.lifetime = Some(
        crate::Lifetime::new()
            .with_idle_timeout(Some(Duration::from_secs(7 * 86_400)))
            .with_absolute_timeout(Some(Duration::from_secs(30 * 86_400)))
            .with_persistent_cookie(true),
    );
    create(&store, &r).await;
    let later = r.expires_at + hour();
    assert!(store
        .touch(&r.id, r.version, Some(&owner), later)
        .await
        .expect("touch"));
    assert_eq!(
        load(&store, &r.id).await,
        Some(Record {
            expires_at: later,
            ..r
        }),
        "a touch changes the deadline alone: data, version, creation, owner and lifetime stay"
    );
}

/// A save moves the record's deadline wherever the store keeps it (a
/// native expiry, a sweep index, the owner index), later or earlier: every
/// request that writes extends its session by a save, not a touch. Later:
/// the record outlives its first deadline, a sweep spares it and its owner
/// still finds it. Earlier: it ends at the new deadline, for loads and the
/// owner index alike.
pub async fn save_moves_the_deadline_either_way(store: impl Store) {
    let alice = random_owner();
    let mut extended = record(Duration::from_millis(800));
    extended.owner = Some(alice.clone());
    create(&store, &extended).await;
    let mut later = extended.clone();
    later.version = 1;
    later.expires_at = now() + hour();
    assert_eq!(store.save(&later, 0).await.expect("save"), Saved::Saved);
    let mut shortened = record(hour());
    shortened.owner = Some(alice.clone());
    create(&store, &shortened).await;
    let mut earlier = shortened.clone();
    earlier.version = 1;
    earlier.expires_at = now() + Duration::from_millis(800);
    assert_eq!(store.save(&earlier, 0).await.expect("save"), Saved::Saved);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    store.delete_expired().await.expect("delete_expired");
    assert_eq!(
        load(&store, &extended.id).await,
        Some(later),
        "a record saved with a later deadline ended at the one it was created with"
    );
    assert_eq!(
        load(&store, &shortened.id).await,
        None,
        "a record saved with an earlier deadline outlived it"
    );
    assert_eq!(
        store.ids_of_owner(&alice).await.expect("list"),
        vec![extended.id],
        "the owner index must follow the deadline a save wrote"
    );
    assert_eq!(store.delete_owner(&alice).await.expect("delete owner"), 1);
    assert_eq!(load(&store, &extended.id).await, None);
}

/// Owners match byte for byte: characters that patterns give a meaning to
/// (SQL `LIKE`'s `_` and `%`, glob's `*`, `?` and `[...]`, escapes, key
/// separators) match only themselves. An e-mail address as the owner often
/// holds `_`: "log out everywhere" of `a_b@x` must not end `aXb@x`'s
/// sessions.
pub async fn owners_match_byte_for_byte(store: impl Store) {
    let base = random_owner();
    let owners: Vec<String> = [
        "_x", "Ax", "%", "*", "?", "[a]", "a", ":x", "\\", "\\%", ".x", "x*",
    ]
    .iter()
    .map(|tail| format!("{base}{tail}"))
    .collect();
    let mut ids = Vec::new();
    for owner in &owners {
        let mut r = record(hour());
        r.owner = Some(owner.clone());
        create(&store, &r).await;
        ids.push(r.id);
    }
    for (owner, id) in owners.iter().zip(&ids) {
        assert_eq!(
            store.ids_of_owner(owner).await.expect("list"),
            vec![*id],
            "the sessions of {owner:?} are its own only"
        );
    }
    for (i, owner) in owners.iter().enumerate() {
        assert_eq!(
            store.delete_owner(owner).await.expect("delete owner"),
            1,
            "deleting {owner:?}'s sessions"
        );
        for (other, id) in owners.iter().zip(&ids).skip(i + 1) {
            assert!(
                load(&store, id).await.is_some(),
                "deleting {owner:?}'s sessions ended {other:?}'s"
            );
        }
    }
}

/// A record touched into the past at its version (how a rotation retires
/// the old id, keeping the version) is ended for good: a later touch or
/// save at that version, from a slow request, brings nothing back, and its
/// owner no longer lists it.
pub async fn a_retired_record_stays_retired(store: impl Store) {
    let alice = random_owner();
    let mut r = record(hour());
    r.owner = Some(alice.clone());
    create(&store, &r).await;
    let retired = Timestamp::from_unix_millis(1);
    assert!(store
        .touch(&r.id, r.version, Some(&alice), retired)
        .await
        .expect("retire"));
    assert!(
        !store
            .touch(&r.id, r.version, Some(&alice), now() + hour())
            .await
            .expect("touch"),
        "a touch at the retired record's version answered true"
    );
    let mut next = r.clone();
    next.version = 1;
    next.expires_at = now() + hour();
    assert_eq!(store.save(&next, 0).await.expect("save"), Saved::Missing);
    assert_eq!(load(&store, &r.id).await, None);
    assert!(store.ids_of_owner(&alice).await.expect("list").is_empty());
}

/// A touch is one compare-and-set, like a save: racing a save of the next
/// version, the touches that retire the record either all lose (the save
/// landed first and they carry a stale version) or retire it before the
/// save, which then finds it gone; racing a delete, touches never bring the
/// record back.
pub async fn a_touch_racing_a_save_or_a_delete_is_one_step(store: impl Store) {
    use futures_util::future::{join, join_all};
    let retired = Timestamp::from_unix_millis(1);
    for _ in 0..20 {
        let r = record(hour());
        create(&store, &r).await;
        let mut next = r.clone();
        next.version = 1;
        next.expires_at = r.expires_at + Duration::from_secs(600);
        let touches = join_all((0..8).map(|_| store.touch(&r.id, r.version, None, retired)));
        // The touches first: a store that yields inside a touch lets the
        // save in between.
        let (touched, saved) = join(touches, store.save(&next, r.version)).await;
        let touched: Vec<bool> = touched.into_iter().map(|t| t.expect("touch")).collect();
        one_of_a_save_and_touches(&store, next, saved.expect("save"), &touched).await;

        let r = record(hour());
        create(&store, &r).await;
        let later = r.expires_at + hour();
        let touches = join_all((0..8).map(|_| store.touch(&r.id, r.version, None, later)));
        let (touched, deleted) = join(touches, store.delete(&r.id)).await;
        deleted.expect("delete");
        for t in touched {
            t.expect("touch");
        }
        assert_eq!(
            load(&store, &r.id).await,
            None,
            "a touch racing a delete brought the record back"
        );
    }
}

/// As [`a_touch_racing_a_save_or_a_delete_is_one_step`], with each call on
/// a task of its own, released together: on a runtime of several threads
/// the calls overlap even in a store that answers without yielding.
pub async fn touches_racing_a_save_on_other_threads_are_one_step(store: impl Store) {
    let store: Arc<dyn Store> = Arc::new(store);
    let retired = Timestamp::from_unix_millis(1);
    for _ in 0..40 {
        let r = record(hour());
        create(&store, &r).await;
        let mut next = r.clone();
        next.version = 1;
        next.expires_at = r.expires_at + Duration::from_secs(600);
        let start = Arc::new(tokio::sync::Barrier::new(5));
        let touches: Vec<_> = (0..4)
            .map(|_| {
                let (store, start, id) = (store.clone(), start.clone(), r.id);
                tokio::spawn(async move {
                    start.wait().await;
                    store.touch(&id, 0, None, retired).await.expect("touch")
                })
            })
            .collect();
        let save = {
            let (store, start, next) = (store.clone(), start.clone(), next.clone());
            tokio::spawn(async move {
                start.wait().await;
                store.save(&next, 0).await.expect("save")
            })
        };
        let saved = save.await.expect("the save's task");
        let mut touched = Vec::new();
        for t in touches {
            touched.push(t.await.expect("a touch's task"));
        }
        one_of_a_save_and_touches(&*store, next, saved, &touched).await;
    }
}

/// Checks what a save of a record's version (as `next`) and touches that
/// retire that version left, run at once: either the save landed and every
/// touch lost (the record is `next`), or a touch retired the record first
/// and the save found it gone.
async fn one_of_a_save_and_touches(
    store: &dyn Store,
    next: Record,
    saved: Saved,
    touched: &[bool],
) {
    match saved {
        Saved::Saved => {
            assert!(
                touched.iter().all(|t| !t),
                "a touch of the old version answered true, yet the save of that version landed"
            );
            assert_eq!(load(store, &next.id).await, Some(next));
        }
        Saved::Missing => {
            assert!(touched.iter().any(|t| *t), "the save found the record gone");
            assert_eq!(load(store, &next.id).await, None);
        }
        other => panic!("a save of the stored version answered {other:?}"),
    }
}

/// Saves of a record racing its delete (or its owner's), each on a task of
/// its own: whichever lands first, the record is gone afterwards and its
/// owner lists nothing. A save that read the record before the delete and
/// wrote it after (a get, compare and put not in one step) would bring it
/// back.
pub async fn saves_racing_a_delete_never_bring_the_record_back(store: impl Store) {
    let store: Arc<dyn Store> = Arc::new(store);
    for round in 0..20 {
        let alice = random_owner();
        let mut r = record(hour());
        r.owner = Some(alice.clone());
        create(&store, &r).await;
        let start = Arc::new(tokio::sync::Barrier::new(9));
        let saves: Vec<_> = (0..8)
            .map(|i| {
                let mut next = r.clone();
                next.version = 1;
                next.data
                    .insert("k".into(), format!("save {i}").into_bytes());
                let (store, start) = (store.clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    store.save(&next, 0).await.expect("save")
                })
            })
            .collect();
        let delete = {
            let (store, start, id, owner) = (store.clone(), start.clone(), r.id, alice.clone());
            tokio::spawn(async move {
                start.wait().await;
                if round % 2 == 0 {
                    store.delete(&id).await.expect("delete");
                } else {
                    store.delete_owner(&owner).await.expect("delete owner");
                }
            })
        };
        delete.await.expect("the delete's task");
        for t in saves {
            t.await.expect("a save's task");
        }
        assert_eq!(
            load(&store, &r.id).await,
            None,
            "a save racing a delete brought the record back"
        );
        assert!(store.ids_of_owner(&alice).await.expect("list").is_empty());
    }
}

/// `delete_all` deletes every record of the store, owned or not, with the
/// owner index, and counts them (an expired record it still held may count
/// too); the store works on afterwards, the same ids included.
pub async fn delete_all_deletes_every_record(store: impl Store) {
    let alice = random_owner();
    let mut live = Vec::new();
    for i in 0..5 {
        let mut r = record(hour());
        if i % 2 == 0 {
            r.owner = Some(alice.clone());
        }
        create(&store, &r).await;
        live.push(r);
    }
    // One saved and one touched too, for stores that index deadlines.
    let mut next = live[1].clone();
    next.version = 1;
    next.expires_at = now() + hour() + hour();
    assert_eq!(store.save(&next, 0).await.expect("save"), Saved::Saved);
    assert!(store
        .touch(&live[2].id, 0, Some(&alice), now() + hour() + hour())
        .await
        .expect("touch"));
    create_expired(&store, &expired_record()).await;
    let n = store.delete_all().await.expect("delete all");
    assert!(
        (5..=6).contains(&n),
        "five live records (and perhaps one expired) were deleted, not {n}"
    );
    for r in &live {
        assert_eq!(
            load(&store, &r.id).await,
            None,
            "a record survived delete_all"
        );
    }
    assert!(store.ids_of_owner(&alice).await.expect("list").is_empty());
    assert_eq!(store.delete_owner(&alice).await.expect("delete owner"), 0);
    // A save or touch of a deleted record brings nothing back.
    let mut late = next.clone();
    late.version = 2;
    assert_eq!(store.save(&late, 1).await.expect("save"), Saved::Missing);
    assert!(!store
        .touch(&live[3].id, 0, None, now() + hour())
        .await
        .expect("touch"));
    assert_eq!(load(&store, &live[1].id).await, None);
    // The store works on, for the same ids too.
    let again = live[0].clone();
    create(&store, &again).await;
    assert_eq!(load(&store, &again.id).await, Some(again.clone()));
    assert_eq!(
        store.ids_of_owner(&alice).await.expect("list"),
        vec![again.id]
    );
    assert_eq!(store.delete_all().await.expect("delete all"), 1);
    assert_eq!(store.delete_all().await.expect("delete all"), 0);
}

/// `touch` from a copy older than the stored record is `false` and leaves the
/// newer write's deadline alone.
pub async fn touch_of_a_stale_version_changes_nothing(store: impl Store) {
    let r = record(hour());
    create(&store, &r).await;
    let mut next = r.clone();
    next.version = 1;
    next.expires_at = r.expires_at + Duration::from_secs(600);
    assert_eq!(store.save(&next, 0).await.expect("save"), Saved::Saved);
    let stale = r.expires_at + hour();
    assert!(
        !store.touch(&r.id, 0, None, stale).await.expect("touch"),
        "a touch carrying a version the record no longer has must answer false"
    );
    assert_eq!(
        load(&store, &r.id).await.expect("live").expires_at,
        next.expires_at,
        "a touch carrying an old version moved the deadline of a newer save"
    );
    assert!(
        store.touch(&r.id, 1, None, stale).await.expect("touch"),
        "a touch carrying the stored version must answer true"
    );
    assert_eq!(load(&store, &r.id).await.expect("live").expires_at, stale);
}

/// `touch` of an id never stored is `false` and creates nothing.
pub async fn touch_of_missing_is_false(store: impl Store) {
    let rid = random_rid();
    assert!(!store
        .touch(&rid, 0, None, now() + hour())
        .await
        .expect("touch"));
    assert_eq!(load(&store, &rid).await, None);
}

/// `touch` answers `true` for a live record at its version even when the
/// deadline does not move (a store must count matched records, not changed
/// ones), and a deadline in the past ends the record at once: it is no
/// longer loaded or listed (a rotation retires its old id so).
pub async fn touch_to_the_same_or_a_past_deadline(store: impl Store) {
    let owner = random_owner();
    let mut r = record(hour());
    r.owner = Some(owner.clone());
    create(&store, &r).await;
    assert!(
        store
            .touch(&r.id, r.version, r.owner.as_deref(), r.expires_at)
            .await
            .expect("touch"),
        "a touch that keeps the deadline must answer true"
    );
    assert_eq!(load(&store, &r.id).await.expect("live"), r);
    let past = Timestamp::from_unix_millis(1);
    assert!(
        store
            .touch(&r.id, r.version, r.owner.as_deref(), past)
            .await
            .expect("touch"),
        "a touch of a live record at its version must answer true"
    );
    assert_eq!(load(&store, &r.id).await, None);
    assert!(store.ids_of_owner(&owner).await.expect("list").is_empty());
    assert_eq!(store.delete_owner(&owner).await.expect("delete owner"), 0);
}

/// `create` of a record that is already expired: the contract lets the
/// store write it or not, and the answer is `Created` either way.
async fn create_expired(store: &dyn Store, r: &Record) {
    assert_eq!(
        store.create(r).await.expect("create"),
        Created::Created,
        "a create of an already expired record must answer Created (written or not)"
    );
}

/// A record whose deadline is already past, or is the very instant of its
/// creation, is never returned: a record is expired from `expires_at` on.
/// Its create answers `Created`, and an owner's index does not list it.
pub async fn expired_records_are_never_loaded(store: impl Store) {
    let mut r = expired_record();
    let owner = random_owner();
    r.owner = Some(owner.clone());
    create_expired(&store, &r).await;
    assert!(
        store.ids_of_owner(&owner).await.expect("list").is_empty(),
        "an expired record must never be listed under its owner"
    );
    assert_eq!(
        load(&store, &r.id).await,
        None,
        "a record whose expires_at has passed must never load"
    );
    let t = now();
    let at_deadline = Record::new(random_rid(), t, t);
    create_expired(&store, &at_deadline).await;
    assert_eq!(
        load(&store, &at_deadline.id).await,
        None,
        "a record is expired at its expires_at, not only after it"
    );
}

/// A record stops loading once its deadline passes (real time).
pub async fn records_expire_when_their_deadline_passes(store: impl Store) {
    let mut r = record(Duration::from_millis(1200));
    let owner = random_owner();
    r.owner = Some(owner.clone());
    create(&store, &r).await;
    assert!(load(&store, &r.id).await.is_some());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(load(&store, &r.id).await, None);
    let mut next = r.clone();
    next.version = 1;
    assert_eq!(store.save(&next, 0).await.expect("save"), Saved::Missing);
    assert!(!store
        .touch(&r.id, r.version, None, now() + hour())
        .await
        .expect("touch"));
    // Nor did the late save or touch bring it back.
    assert_eq!(load(&store, &r.id).await, None);
    assert!(store.ids_of_owner(&owner).await.expect("list").is_empty());
}

/// An expired id is free: `create` succeeds on it.
pub async fn expired_id_can_be_created_again(store: impl Store) {
    let old = expired_record();
    create_expired(&store, &old).await;
    let mut fresh = record(hour());
    fresh.id = old.id;
    create(&store, &fresh).await;
    assert_eq!(load(&store, &old.id).await, Some(fresh));
}

/// An id whose record expired starts afresh when created again: nothing of
/// the expired record (its version, values, owner, lifetime) is left, and
/// the new record saves from version 0.
pub async fn a_create_over_an_expired_record_keeps_nothing_of_it(store: impl Store) {
    let alice = random_owner();
    let mut old = expired_record();
    old.version = 7;
    old.owner = Some(alice.clone());
    old.data.insert("old".into(), b"kept?".to_vec());
    old.lifetime = Some(
        crate::Lifetime::new()
            .with_idle_timeout(Some(Duration::from_secs(30 * 24 * 3600)))
            .with_persistent_cookie(true),
    );
    create_expired(&store, &old).await;
    let mut fresh = record(hour());
    fresh.id = old.id;
    create(&store, &fresh).await;
    assert_eq!(load(&store, &old.id).await, Some(fresh.clone()));
    assert!(store.ids_of_owner(&alice).await.expect("list").is_empty());
    let mut next = fresh.clone();
    next.version = 1;
    assert_eq!(store.save(&next, 0).await.expect("save"), Saved::Saved);
    assert_eq!(load(&store, &old.id).await, Some(next));
}

/// `delete_expired` removes nothing live.
pub async fn delete_expired_leaves_live_records(store: impl Store) {
    let live = record(hour());
    create(&store, &live).await;
    let dead = expired_record();
    create_expired(&store, &dead).await;
    store.delete_expired().await.expect("delete_expired");
    assert_eq!(load(&store, &live.id).await, Some(live));
    assert_eq!(load(&store, &dead.id).await, None);
}

/// A sweep keeps a record whose deadline a touch moved past the one it was
/// created with, and its owner's index keeps listing it (a store that
/// sweeps by an expiry index must follow touches).
pub async fn delete_expired_spares_touched_records(store: impl Store) {
    let alice = random_owner();
    let mut touched = record(Duration::from_millis(800));
    touched.owner = Some(alice.clone());
    create(&store, &touched).await;
    let mut left = record(Duration::from_millis(800));
    left.owner = Some(alice.clone());
    create(&store, &left).await;
    assert!(store
        .touch(&touched.id, touched.version, Some(&alice), now() + hour())
        .await
        .expect("touch"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    store.delete_expired().await.expect("delete_expired");
    assert!(
        load(&store, &touched.id).await.is_some(),
        "a sweep removed a record whose deadline a touch had moved on"
    );
    assert_eq!(load(&store, &left.id).await, None);
    assert_eq!(
        store.ids_of_owner(&alice).await.expect("list"),
        vec![touched.id]
    );
}

/// A save of a record that expired meanwhile, carrying a deadline in the
/// future, answers `Missing` and brings nothing back: the expired record is
/// gone, not a row to update.
pub async fn save_after_expiry_never_brings_the_record_back(store: impl Store) {
    let alice = random_owner();
    let mut r = record(Duration::from_millis(800));
    r.owner = Some(alice.clone());
    create(&store, &r).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut next = r.clone();
    next.version = 1;
    next.expires_at = now() + hour();
    assert_eq!(
        store.save(&next, 0).await.expect("save"),
        Saved::Missing,
        "a save of an expired record must answer Missing"
    );
    assert_eq!(
        load(&store, &r.id).await,
        None,
        "a save revived an expired record"
    );
    assert!(store.ids_of_owner(&alice).await.expect("list").is_empty());
}

/// Deleting twice, or deleting what never existed, is fine.
pub async fn delete_is_idempotent(store: impl Store) {
    let r = record(hour());
    create(&store, &r).await;
    store.delete(&r.id).await.expect("delete");
    store.delete(&r.id).await.expect("second delete");
    store
        .delete(&random_rid())
        .await
        .expect("delete of missing");
    assert_eq!(load(&store, &r.id).await, None);
}

fn sorted(mut v: Vec<RecordId>) -> Vec<RecordId> {
    v.sort();
    v
}

/// The owner index lists exactly an owner's records and deletes them all.
/// Owners compare byte for byte: one that differs only by a trailing space
/// or by case is someone else. An owner with a NUL character, which no
/// login gives (and PostgreSQL's text cannot hold), owns nothing: listing
/// and deleting its sessions find none instead of failing.
pub async fn owner_index_lists_and_deletes(store: impl Store) {
    let alice = random_owner();
    let bob = random_owner();
    let mut mine = Vec::new();
    for _ in 0..3 {
        let mut r = record(hour());
        r.owner = Some(alice.clone());
        create(&store, &r).await;
        mine.push(r.id);
    }
    let mut theirs = record(hour());
    theirs.owner = Some(bob.clone());
    create(&store, &theirs).await;
    let nobody = record(hour());
    create(&store, &nobody).await;
    let mut lookalikes = Vec::new();
    for owner in [format!("{alice} "), alice.to_uppercase()] {
        let mut r = record(hour());
        r.owner = Some(owner.clone());
        create(&store, &r).await;
        lookalikes.push((owner, r.id));
    }

    assert_eq!(
        sorted(store.ids_of_owner(&alice).await.expect("list")),
        sorted(mine.clone())
    );
    assert_eq!(store.delete_owner(&alice).await.expect("delete owner"), 3);
    for id in &mine {
        assert_eq!(load(&store, id).await, None);
    }
    assert!(store.ids_of_owner(&alice).await.expect("list").is_empty());
    assert_eq!(store.delete_owner(&alice).await.expect("delete owner"), 0);
    assert_eq!(
        store.ids_of_owner(&bob).await.expect("list"),
        vec![theirs.id]
    );
    assert!(load(&store, &theirs.id).await.is_some());
    assert!(load(&store, &nobody.id).await.is_some());
    for (owner, id) in &lookalikes {
        assert!(
            load(&store, id).await.is_some(),
            "{owner:?} was logged out with {alice:?}"
        );
        assert_eq!(store.ids_of_owner(owner).await.expect("list"), vec![*id]);
        assert_eq!(store.delete_owner(owner).await.expect("delete owner"), 1);
    }
    let impossible = format!("{bob}\0");
    let listed = store.ids_of_owner(&impossible).await;
    assert!(listed.expect("list an owner with NUL").is_empty());
    let deleted = store.delete_owner(&impossible).await;
    assert_eq!(deleted.expect("delete an owner with NUL"), 0);
    assert!(load(&store, &theirs.id).await.is_some());
}

/// A save that changes the owner moves the record in the index; a delete
/// removes it.
pub async fn owner_index_follows_saves_and_deletes(store: impl Store) {
    let alice = random_owner();
    let bob = random_owner();
    let mut r = record(hour());
    r.owner = Some(alice.clone());
    create(&store, &r).await;
    r.version = 1;
    r.owner = Some(bob.clone());
    assert_eq!(store.save(&r, 0).await.expect("save"), Saved::Saved);
    assert!(store.ids_of_owner(&alice).await.expect("list").is_empty());
    assert_eq!(store.ids_of_owner(&bob).await.expect("list"), vec![r.id]);
    r.version = 2;
    r.owner = None;
    assert_eq!(store.save(&r, 1).await.expect("save"), Saved::Saved);
    assert!(store.ids_of_owner(&bob).await.expect("list").is_empty());
    let mut s = record(hour());
    s.owner = Some(alice.clone());
    create(&store, &s).await;
    store.delete(&s.id).await.expect("delete");
    assert!(store.ids_of_owner(&alice).await.expect("list").is_empty());
    assert_eq!(
        store.delete_owner(&alice).await.expect("delete owner"),
        0,
        "delete_owner counted a record that was deleted or moved to another owner"
    );
    assert!(
        load(&store, &r.id).await.is_some(),
        "delete_owner of a former owner deleted the record"
    );
    // From no owner to one, and a conflicting save that would have set one.
    let carol = random_owner();
    r.version = 3;
    r.owner = Some(carol.clone());
    assert_eq!(store.save(&r, 2).await.expect("save"), Saved::Saved);
    assert_eq!(store.ids_of_owner(&carol).await.expect("list"), vec![r.id]);
    let dave = random_owner();
    let mut stale = r.clone();
    stale.version = 3;
    stale.owner = Some(dave.clone());
    assert_eq!(store.save(&stale, 2).await.expect("save"), Saved::Conflict);
    assert!(
        store.ids_of_owner(&dave).await.expect("list").is_empty(),
        "a save that conflicted changed the owner index"
    );
    assert_eq!(store.ids_of_owner(&carol).await.expect("list"), vec![r.id]);
}

/// Expired records do not appear in the owner index, nor in the count of
/// `delete_owner`.
pub async fn owner_index_hides_expired_records(store: impl Store) {
    let alice = random_owner();
    let mut dead = expired_record();
    dead.owner = Some(alice.clone());
    create_expired(&store, &dead).await;
    let mut soon = record(Duration::from_millis(800));
    soon.owner = Some(alice.clone());
    create(&store, &soon).await;
    assert_eq!(
        store.ids_of_owner(&alice).await.expect("list"),
        vec![soon.id]
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(store.ids_of_owner(&alice).await.expect("list").is_empty());
    assert_eq!(
        store.delete_owner(&alice).await.expect("delete owner"),
        0,
        "delete_owner counts the live records it deleted, not expired ones"
    );
}

/// `delete_owner` called first (no listing before it, for stores that
/// clean their index lazily) deletes and counts the owner's live records
/// only, not those that expired.
pub async fn delete_owner_counts_only_live_records(store: impl Store) {
    let alice = random_owner();
    let mut live = record(hour());
    live.owner = Some(alice.clone());
    create(&store, &live).await;
    let mut soon = record(Duration::from_millis(800));
    soon.owner = Some(alice.clone());
    create(&store, &soon).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        store.delete_owner(&alice).await.expect("delete owner"),
        1,
        "delete_owner counts the live records it deleted, not expired ones"
    );
    assert_eq!(load(&store, &live.id).await, None);
    assert!(store.ids_of_owner(&alice).await.expect("list").is_empty());
}

/// A touch may move a deadline earlier while it is still in the future:
/// the record then expires at the new deadline, and leaves its owner's
/// index with it.
pub async fn touch_to_an_earlier_deadline_ends_the_record_then(store: impl Store) {
    let alice = random_owner();
    let mut r = record(hour());
    r.owner = Some(alice.clone());
    create(&store, &r).await;
    let sooner = now() + Duration::from_millis(800);
    assert!(store
        .touch(&r.id, r.version, Some(&alice), sooner)
        .await
        .expect("touch"));
    assert_eq!(
        load(&store, &r.id).await.map(|r| r.expires_at),
        Some(sooner),
        "a load must return the deadline of the latest touch, earlier ones too"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(load(&store, &r.id).await, None);
    assert!(store.ids_of_owner(&alice).await.expect("list").is_empty());
    assert_eq!(store.delete_owner(&alice).await.expect("delete owner"), 0);
}

/// A touched session stays listed past its original deadline.
pub async fn owner_index_follows_touch(store: impl Store) {
    let alice = random_owner();
    let mut r = record(Duration::from_millis(800));
    r.owner = Some(alice.clone());
    create(&store, &r).await;
    assert!(store
        .touch(&r.id, r.version, Some(&alice), now() + hour())
        .await
        .expect("touch"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(load(&store, &r.id).await.is_some());
    assert_eq!(store.ids_of_owner(&alice).await.expect("list"), vec![r.id]);
    assert_eq!(store.delete_owner(&alice).await.expect("delete owner"), 1);
    assert_eq!(load(&store, &r.id).await, None);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Profile {
    name: String,
    age: u8,
    tags: Vec<String>,
    nested: Option<Box<Profile>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Role {
    Guest,
    Member { since: i64 },
}

/// Values of every serde shape survive a trip through the manager and the
/// store.
pub async fn every_value_type_round_trips(store: impl Store) {
    let m = manager(store);
    let s = m.session_from_cookies(None::<&str>);
    let profile = Profile {
        name: "Iris".into(),
        age: 7,
        tags: vec!["a".into(), "β".into()],
        nested: Some(Box::new(Profile {
            name: String::new(),
            age: 0,
            tags: vec![],
            nested: None,
        })),
    };
    let map: BTreeMap<String, i32> = [("x".to_owned(), -1), ("y".to_owned(), 2)].into();
    s.insert("string", "iris").await.unwrap();
    s.insert("i64", &i64::MIN).await.unwrap();
    s.insert("u64", &u64::MAX).await.unwrap();
    s.insert("f64", &1.5f64).await.unwrap();
    s.insert("bool", &true).await.unwrap();
    s.insert("unit", &()).await.unwrap();
    s.insert("none", &None::<u8>).await.unwrap();
    s.insert("bytes", &vec![0u8, 255, 7]).await.unwrap();
    s.insert("vec", &vec!["a", "b"]).await.unwrap();
    s.insert("map", &map).await.unwrap();
    s.insert("struct", &profile).await.unwrap();
    s.insert("enum", &Role::Member { since: 3 }).await.unwrap();
    s.insert("unit_variant", &Role::Guest).await.unwrap();
    s.insert("char", &'λ').await.unwrap();
    let cookie = issued(&s.commit().await.unwrap());

    let s = reopen(&m, &cookie);
    assert_eq!(s.get_string("string").await.unwrap(), "iris");
    assert_eq!(s.get::<i64>("i64").await.unwrap(), Some(i64::MIN));
    assert_eq!(s.get::<u64>("u64").await.unwrap(), Some(u64::MAX));
    assert_eq!(s.get::<f64>("f64").await.unwrap(), Some(1.5));
    assert_eq!(s.get::<bool>("bool").await.unwrap(), Some(true));
    assert_eq!(s.get::<()>("unit").await.unwrap(), Some(()));
    assert_eq!(s.get::<Option<u8>>("none").await.unwrap(), Some(None));
    assert_eq!(
        s.get::<Vec<u8>>("bytes").await.unwrap(),
        Some(vec![0, 255, 7])
    );
    assert_eq!(
        s.get::<Vec<String>>("vec").await.unwrap(),
        Some(vec!["a".into(), "b".into()])
    );
    assert_eq!(
        s.get::<BTreeMap<String, i32>>("map").await.unwrap(),
        Some(map)
    );
    assert_eq!(s.get::<Profile>("struct").await.unwrap(), Some(profile));
    assert_eq!(
        s.get::<Role>("enum").await.unwrap(),
        Some(Role::Member { since: 3 })
    );
    assert_eq!(
        s.get::<Role>("unit_variant").await.unwrap(),
        Some(Role::Guest)
    );
    assert_eq!(s.get::<char>("char").await.unwrap(), Some('λ'));
    assert_eq!(s.get::<String>("absent").await.unwrap(), None);
    // A value read as the wrong type is an error for that read only.
    assert!(s.get::<u64>("string").await.is_err());
    assert_eq!(s.get_string("string").await.unwrap(), "iris");
}

/// A 1 MiB value round-trips.
pub async fn large_values_round_trip(store: impl Store) {
    let mut r = record(hour());
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    r.data.insert("big".into(), big);
    create(&store, &r).await;
    assert_eq!(load(&store, &r.id).await, Some(r));
}

/// A thousand keys round-trip.
pub async fn many_keys_round_trip(store: impl Store) {
    let mut r = record(hour());
    for i in 0..1000u32 {
        r.data.insert(format!("key-{i}"), i.to_le_bytes().to_vec());
    }
    create(&store, &r).await;
    assert_eq!(load(&store, &r.id).await, Some(r));
}

/// Unicode keys, the empty key and empty values round-trip.
pub async fn unicode_and_empty_keys_round_trip(store: impl Store) {
    let mut r = record(hour());
    for key in [
        "",
        "名前",
        "ключ",
        "🔑",
        "a b",
        "quote\"'",
        "nul\u{0}byte",
        "\u{1}flash:x",
    ] {
        r.data.insert(key.to_owned(), key.as_bytes().to_vec());
    }
    r.data.insert("empty".into(), Vec::new());
    create(&store, &r).await;
    assert_eq!(load(&store, &r.id).await, Some(r));
}

/// Record ids at the edges of their range and the longest owner key work.
pub async fn extreme_ids_and_longest_owner(store: impl Store) {
    // Random bytes keep parallel runs on a shared backend apart; the edges are
    // covered by forcing the first and last bytes.
    let base = *random_rid().as_bytes();
    for edge in [0x00u8, 0xff] {
        let mut bytes = base;
        bytes[0] = edge;
        bytes[31] = edge;
        let mut r = record(hour());
        r.id = RecordId::from_bytes(bytes);
        let mut owner = random_owner();
        while owner.len() < MAX_OWNER_LEN {
            owner.push('é');
        }
        while owner.len() > MAX_OWNER_LEN {
            owner.pop();
        }
        r.owner = Some(owner.clone());
        create(&store, &r).await;
        assert_eq!(load(&store, &r.id).await, Some(r.clone()));
        assert_eq!(store.ids_of_owner(&owner).await.expect("list"), vec![r.id]);
        assert_eq!(store.delete_owner(&owner).await.expect("delete owner"), 1);
    }
}

/// Many requests writing different keys of one session at once lose none.
pub async fn concurrent_writers_lose_no_key(store: impl Store) {
    let m = manager(store);
    let s = m.session_from_cookies(None::<&str>);
    s.insert("seed", &0).await.unwrap();
    let cookie = issued(&s.commit().await.unwrap());
    let cookie = Arc::new(cookie);
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let m = m.clone();
            let cookie = cookie.clone();
            tokio::spawn(async move {
                let s = reopen(&m, &cookie);
                s.insert(&format!("key-{i}"), &i).await.unwrap();
                s.commit().await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let s = reopen(&m, &cookie);
    for i in 0..32 {
        assert_eq!(
            s.get::<i32>(&format!("key-{i}")).await.unwrap(),
            Some(i),
            "key-{i} lost"
        );
    }
    assert_eq!(s.get::<i32>("seed").await.unwrap(), Some(0));
}

/// Concurrent `update`s of one counter end at exactly their number.
pub async fn concurrent_updates_count_exactly(store: impl Store) {
    count_concurrently(&[manager(store)], 50).await;
}

/// Concurrent `update`s of one counter through two managers sharing the store
/// (two processes) end at exactly their number: each manager's shortcut of
/// starting from the copy it saved last is checked by the compare-and-set.
pub async fn updates_from_two_processes_count_exactly(store: impl Store) {
    let store: Arc<dyn Store> = Arc::new(store);
    let managers = [
        Manager::from_arc(store.clone(), config()),
        Manager::from_arc(store, config()),
    ];
    count_concurrently(&managers, 60).await;
}

/// Runs `requests` concurrent increments of one session's counter, spread
/// over `managers`, and checks that every manager sees exactly `requests`.
async fn count_concurrently(managers: &[Manager], requests: u64) {
    let s = managers[0].session_from_cookies(None::<&str>);
    s.insert("n", &0u64).await.unwrap();
    let cookie = Arc::new(issued(&s.commit().await.unwrap()));
    let tasks: Vec<_> = (0..requests)
        .zip(managers.iter().cycle())
        .map(|(_, m)| {
            let m = m.clone();
            let cookie = cookie.clone();
            tokio::spawn(async move {
                let s = reopen(&m, &cookie);
                s.update("n", |n: Option<u64>| n.unwrap_or(0) + 1)
                    .await
                    .unwrap();
                s.commit().await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for m in managers {
        assert_eq!(
            reopen(m, &cookie).get::<u64>("n").await.unwrap(),
            Some(requests)
        );
    }
}

/// Of concurrent creates of one id, and of concurrent saves of one version,
/// sent half through each of two instances (two app servers), exactly one
/// lands, and both instances then load the winner's record.
pub async fn across_instances_one_write_of_a_version_wins(a: impl Store, b: impl Store) {
    let stores: [Arc<dyn Store>; 2] = [Arc::new(a), Arc::new(b)];
    for _ in 0..10 {
        let r = record(hour());
        let start = Arc::new(tokio::sync::Barrier::new(16));
        let creates: Vec<_> = (0..16)
            .map(|i| {
                let (store, start, r) = (stores[i % 2].clone(), start.clone(), r.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    store.create(&r).await.expect("create")
                })
            })
            .collect();
        let mut created = 0;
        for t in creates {
            if t.await.expect("a create's task") == Created::Created {
                created += 1;
            }
        }
        assert_eq!(created, 1, "of 16 creates of one id, {created} created it");
        let start = Arc::new(tokio::sync::Barrier::new(16));
        let saves: Vec<_> = (0..16)
            .map(|i| {
                let mut next = r.clone();
                next.version = 1;
                next.data.insert("k".into(), i.to_string().into_bytes());
                let (store, start) = (stores[i % 2].clone(), start.clone());
                tokio::spawn(async move {
                    start.wait().await;
                    (i, store.save(&next, 0).await.expect("save"))
                })
            })
            .collect();
        let mut winner = None;
        for t in saves {
            match t.await.expect("a save's task") {
                (i, Saved::Saved) => {
                    assert!(winner.is_none(), "two saves of one version landed");
                    winner = Some(i);
                }
                (_, Saved::Conflict) => {}
                (_, other) => panic!("a save of a live record answered {other:?}"),
            }
        }
        let winner = winner.expect("no save of the stored version landed");
        for store in &stores {
            let loaded = load(&**store, &r.id).await.expect("live");
            assert_eq!(loaded.data.get("k"), Some(&winner.to_string().into_bytes()));
        }
    }
}

/// Concurrent `update`s of one counter through managers over two instances
/// of the store end at exactly their number.
pub async fn across_instances_updates_count_exactly(a: impl Store, b: impl Store) {
    count_concurrently(&[manager(a), manager(b)], 60).await;
}

/// A record deleted through one instance is gone for the other: it loads
/// as nothing there, and a save or touch there does not bring it back.
pub async fn across_instances_a_delete_ends_the_record_everywhere(a: impl Store, b: impl Store) {
    let r = record(hour());
    create(&a, &r).await;
    assert_eq!(load(&b, &r.id).await, Some(r.clone()));
    b.delete(&r.id).await.expect("delete");
    assert_eq!(load(&a, &r.id).await, None);
    let mut next = r.clone();
    next.version = 1;
    assert_eq!(a.save(&next, 0).await.expect("save"), Saved::Missing);
    assert!(!a
        .touch(&r.id, 0, None, now() + hour())
        .await
        .expect("touch"));
    assert_eq!(load(&b, &r.id).await, None);
}

/// An owner's sessions created through two instances are listed, and
/// deleted, through either.
pub async fn across_instances_the_owner_index_is_one(a: impl Store, b: impl Store) {
    let alice = random_owner();
    let mut first = record(hour());
    first.owner = Some(alice.clone());
    create(&a, &first).await;
    let mut second = record(hour());
    second.owner = Some(alice.clone());
    create(&b, &second).await;
    let mut both = vec![first.id, second.id];
    both.sort();
    for store in [&a as &dyn Store, &b] {
        let mut listed = store.ids_of_owner(&alice).await.expect("list");
        listed.sort();
        assert_eq!(listed, both);
    }
    assert_eq!(b.delete_owner(&alice).await.expect("delete owner"), 2);
    assert_eq!(load(&a, &first.id).await, None);
    assert_eq!(load(&a, &second.id).await, None);
    assert!(a.ids_of_owner(&alice).await.expect("list").is_empty());
}

/// A request that loaded a session before another destroyed it writes
/// nothing back, and its client is told to drop the cookie.
pub async fn destroyed_session_is_never_resurrected(store: impl Store) {
    let m = manager(store);
    let s = m.session_from_cookies(None::<&str>);
    s.insert("name", "iris").await.unwrap();
    let cookie = issued(&s.commit().await.unwrap());

    let slow = reopen(&m, &cookie);
    assert_eq!(slow.get_string("name").await.unwrap(), "iris");
    let killer = reopen(&m, &cookie);
    killer.destroy().await.unwrap();
    assert_eq!(killer.commit().await.unwrap(), SetCookie::Remove);

    slow.insert("late", "write").await.unwrap();
    assert_eq!(
        slow.commit().await.unwrap(),
        SetCookie::Remove,
        "a commit of a session deleted meanwhile must drop the cookie: \
         the store's save must answer Missing for a deleted record"
    );
    let again = reopen(&m, &cookie);
    assert_eq!(
        again.get::<String>("late").await.unwrap(),
        None,
        "a save wrote a destroyed session back"
    );
    assert!(again.is_empty().await.unwrap());
    assert!(again
        .update("n", |n: Option<u8>| n.unwrap_or(0))
        .await
        .is_ok());
    // That update started a brand-new session under a new id.
    let fresh = issued(&again.commit().await.unwrap());
    assert_ne!(fresh, cookie);
}

/// `login` moves the session to a new id, sets the owner, and the old id
/// stops working.
pub async fn login_rotates_and_invalidates_the_old_id(store: impl Store) {
    let m = manager(store);
    let owner = random_owner();
    let s = m.session_from_cookies(None::<&str>);
    s.insert("cart", &3).await.unwrap();
    let before = issued(&s.commit().await.unwrap());

    let s = reopen(&m, &before);
    s.login(&owner).await.unwrap();
    let after = issued(&s.commit().await.unwrap());
    assert_ne!(before, after);

    let old = reopen(&m, &before);
    assert!(old.is_empty().await.unwrap());
    let new = reopen(&m, &after);
    assert_eq!(new.get::<i32>("cart").await.unwrap(), Some(3));
    assert_eq!(new.owner().await.unwrap().as_deref(), Some(owner.as_str()));
    assert_eq!(m.sessions_of(&owner).await.unwrap().len(), 1);
    assert_eq!(m.destroy_all_of(&owner).await.unwrap(), 1);
    assert!(reopen(&m, &after).is_empty().await.unwrap());
}

/// `logout` keeps the data under a new id without the owner: the old id
/// stops working, and the owner's index no longer lists the session, so
/// ending the owner's sessions leaves it alone.
pub async fn logout_keeps_the_data_and_leaves_the_owner(store: impl Store) {
    let m = manager(store);
    let owner = random_owner();
    let s = m.session_from_cookies(None::<&str>);
    s.insert("cart", &3).await.unwrap();
    s.login(&owner).await.unwrap();
    let signed_in = issued(&s.commit().await.unwrap());

    let s = reopen(&m, &signed_in);
    s.logout().await.unwrap();
    let signed_out = issued(&s.commit().await.unwrap());
    assert_ne!(signed_in, signed_out);

    assert!(reopen(&m, &signed_in).is_empty().await.unwrap());
    let kept = reopen(&m, &signed_out);
    assert_eq!(kept.get::<i32>("cart").await.unwrap(), Some(3));
    assert_eq!(kept.owner().await.unwrap(), None);
    assert!(m.sessions_of(&owner).await.unwrap().is_empty());
    assert_eq!(m.destroy_all_of(&owner).await.unwrap(), 0);
    assert_eq!(
        reopen(&m, &signed_out).get::<i32>("cart").await.unwrap(),
        Some(3)
    );
}

/// A "log out everywhere" that lands while other requests of the owner are
/// mid-flight is never undone by their saves.
pub async fn logout_everywhere_is_never_undone_by_slow_writers(store: impl Store) {
    let m = manager(store);
    let owner = random_owner();
    let mut cookies = Vec::new();
    for _ in 0..3 {
        let s = m.session_from_cookies(None::<&str>);
        s.login(&owner).await.unwrap();
        cookies.push(issued(&s.commit().await.unwrap()));
    }
    // Slow writers have loaded their sessions...
    let writers: Vec<Session> = cookies.iter().map(|c| reopen(&m, c)).collect();
    for w in &writers {
        assert_eq!(w.owner().await.unwrap().as_deref(), Some(owner.as_str()));
        w.insert("late", "write").await.unwrap();
    }
    // ...when the owner logs out everywhere.
    assert_eq!(m.destroy_all_of(&owner).await.unwrap(), 3);
    for w in &writers {
        assert_eq!(w.commit().await.unwrap(), SetCookie::Remove);
    }
    assert!(m.sessions_of(&owner).await.unwrap().is_empty());
    for c in &cookies {
        assert!(
            reopen(&m, c).is_empty().await.unwrap(),
            "a session came back"
        );
    }
    // An update racing the logout fails clearly instead of resurrecting.
    let s = m.session_from_cookies(None::<&str>);
    s.login(&owner).await.unwrap();
    let cookie = issued(&s.commit().await.unwrap());
    let slow = reopen(&m, &cookie);
    slow.get::<u8>("n").await.unwrap();
    m.destroy_all_of(&owner).await.unwrap();
    assert!(matches!(
        slow.update("n", |n: Option<u8>| n.unwrap_or(0) + 1).await,
        Err(crate::Error::Ended)
    ));
    assert!(m.sessions_of(&owner).await.unwrap().is_empty());
}

/// With a cap of 2 sessions per owner, a third login ends the oldest (none
/// is used after its login, so the oldest is also the least recently used).
pub async fn owner_cap_ends_the_oldest_sessions(store: impl Store) {
    let config = Config::builder()
        .with_secure(false)
        .with_max_sessions_per_owner(Some(2))
        .build()
        .expect("valid config");
    let m = Manager::new(store, config);
    let owner = random_owner();
    let mut cookies = Vec::new();
    for _ in 0..3 {
        let s = m.session_from_cookies(None::<&str>);
        s.login(&owner).await.unwrap();
        cookies.push(issued(&s.commit().await.unwrap()));
        // Distinct creation times, whatever the store's clock precision.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(m.sessions_of(&owner).await.unwrap().len(), 2);
    assert!(
        reopen(&m, &cookies[0]).owner().await.unwrap().is_none(),
        "the oldest ended"
    );
    for c in &cookies[1..] {
        assert_eq!(
            reopen(&m, c).owner().await.unwrap().as_deref(),
            Some(owner.as_str())
        );
    }
    m.destroy_all_of(&owner).await.unwrap();
}

/// "Log out my other devices" ends every other session of the owner.
pub async fn end_other_sessions_keeps_only_this_one(store: impl Store) {
    let m = manager(store);
    let owner = random_owner();
    let mut cookies = Vec::new();
    for _ in 0..3 {
        let s = m.session_from_cookies(None::<&str>);
        s.login(&owner).await.unwrap();
        cookies.push(issued(&s.commit().await.unwrap()));
    }
    let me = reopen(&m, &cookies[2]);
    assert_eq!(me.end_other_sessions().await.unwrap(), 2);
    let mine = me.record_id().await.unwrap().expect("stored");
    assert_eq!(m.sessions_of(&owner).await.unwrap(), vec![mine]);
    assert!(reopen(&m, &cookies[0]).is_empty().await.unwrap());
    m.destroy_all_of(&owner).await.unwrap();
}
