//! The owner index while a session is being created. On a standalone server:
//! the commands and the checks are the same on a Cluster. (Resent creates and
//! saves are tested in the crate's unit tests, which can send one value
//! twice.)

use session_core::testing::{sample_record, WithCleanup};
use session_core::{Created, Store};
use session_redis::RedisStore;

use crate::support::{delete_prefix, missing, unique_prefix, Scoped};

/// A store under a prefix of its own, whose keys are deleted when it is
/// dropped (even by a failing test), and a plain connection for setting up
/// what the store alone would not produce.
async fn store() -> Option<(Scoped, redis::aio::MultiplexedConnection, String)> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = unique_prefix();
    let store = match RedisStore::connect(&url).await {
        Ok(store) => store.with_prefix(prefix.clone()),
        Err(e) => {
            missing(&format!("Redis at {url} (REDIS_URL)"), &e.to_string());
            return None;
        }
    };
    let raw = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    let cleanup = {
        let prefix = prefix.clone();
        move || delete_prefix(url, prefix)
    };
    Some((WithCleanup::new(store, cleanup), raw, prefix))
}

/// Takes a session's value away, as if its `SET` had not landed yet.
async fn take(raw: &mut redis::aio::MultiplexedConnection, key: &str) -> Vec<u8> {
    redis::cmd("GETDEL")
        .arg(key)
        .query_async(raw)
        .await
        .expect("take the record")
}

/// Puts a value taken with [`take`] back.
async fn put(raw: &mut redis::aio::MultiplexedConnection, key: &str, value: &[u8]) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(raw)
        .await
        .expect("put it back");
}

fn live_record(owner: Option<&str>) -> session_core::Record {
    let mut r = sample_record();
    r.owner = owner.map(str::to_owned);
    r
}

#[tokio::test]
async fn listing_an_owner_keeps_a_session_whose_record_is_not_written_yet() {
    let Some((scoped, mut raw, prefix)) = store().await else {
        return;
    };
    let store = scoped.inner();
    let r = live_record(Some("alice"));
    assert_eq!(store.create(&r).await.expect("create"), Created::Created);
    // The moment inside `create` between the index entry and the record:
    // take the record away, list, then put it back.
    let key = format!("{prefix}{}", r.id);
    let value = take(&mut raw, &key).await;
    assert_eq!(store.ids_of_owner("alice").await.expect("list"), vec![]);
    put(&mut raw, &key, &value).await;
    // Still indexed, so the owner's logout finds it...
    assert_eq!(store.ids_of_owner("alice").await.expect("list"), vec![r.id]);
    // ...and a logout that runs in that moment too leaves the entry.
    take(&mut raw, &key).await;
    assert_eq!(store.delete_owner("alice").await.expect("logout"), 0);
    put(&mut raw, &key, &value).await;
    assert_eq!(store.ids_of_owner("alice").await.expect("list"), vec![r.id]);
    assert_eq!(store.delete_owner("alice").await.expect("logout"), 1);
    assert_eq!(store.load(&r.id).await.expect("load"), None);
}

#[tokio::test]
async fn a_touch_to_now_ends_the_session_and_its_index_entry() {
    let Some((scoped, mut raw, prefix)) = store().await else {
        return;
    };
    let store = scoped.inner();
    let r = live_record(Some("alice"));
    assert_eq!(store.create(&r).await.expect("create"), Created::Created);
    let now = session_core::Timestamp::now();
    assert!(store
        .touch(&r.id, r.version, Some("alice"), now)
        .await
        .expect("touch"));
    assert_eq!(store.load(&r.id).await.expect("load"), None);
    // What is left is the retired value, which no command reads as a
    // session and which leaves within a minute (it is kept so that the same
    // touch, resent by the Cluster client, is recognised); the index entry
    // is gone.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut raw)
        .await
        .expect("keys");
    assert_eq!(keys.len(), 1, "left behind: {keys:?}");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut raw)
        .await
        .expect("pttl");
    assert!(0 < ttl && ttl <= 60_000, "kept for {ttl} ms");
    assert!(store.ids_of_owner("alice").await.expect("list").is_empty());
    store.delete(&r.id).await.expect("delete");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut raw)
        .await
        .expect("keys");
    assert!(keys.is_empty(), "left behind: {keys:?}");
}

/// `delete_all` deletes this store's sessions and owner indexes only: a
/// prefix holding `SCAN`'s pattern characters matches only itself, so the
/// sessions of a store whose prefix it would match as a pattern stay, and a
/// key under the prefix that the store did not write stays too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_all_deletes_this_stores_keys_only() {
    let Some((scoped, mut raw, prefix)) = store().await else {
        return;
    };
    let (glob, plain) = (
        scoped.inner().clone().with_prefix(format!("{prefix}a*")),
        scoped.inner().clone().with_prefix(format!("{prefix}ab")),
    );
    let mut owned = sample_record();
    owned.owner = Some("alice".into());
    owned.expires_at = session_core::Timestamp::now() + std::time::Duration::from_secs(3600);
    let mut other = owned.clone();
    other.id = session_core::Id::generate().expect("random").record_id();
    for (store, r) in [(&glob, &owned), (&plain, &other)] {
        assert_eq!(store.create(r).await.expect("create"), Created::Created);
    }
    let foreign = format!("{prefix}a*not-a-session");
    let _: () = redis::cmd("SET")
        .arg(&foreign)
        .arg("x")
        .query_async(&mut raw)
        .await
        .expect("a foreign key");
    assert_eq!(glob.delete_all().await.expect("delete all"), 1);
    assert_eq!(glob.load(&owned.id).await.expect("load"), None);
    assert!(glob.ids_of_owner("alice").await.expect("list").is_empty());
    assert_eq!(
        plain.load(&other.id).await.expect("load"),
        Some(other.clone())
    );
    assert_eq!(
        plain.ids_of_owner("alice").await.expect("list"),
        vec![other.id]
    );
    let kept: Option<String> = redis::cmd("GET")
        .arg(&foreign)
        .query_async(&mut raw)
        .await
        .expect("get");
    assert_eq!(kept.as_deref(), Some("x"));
}

/// A store whose prefix is another's followed by `owner:` finds that
/// store's owner indexes under its own prefix, named by 64 hex digits like
/// its own sessions: its `delete_all` must leave them, or logging that
/// owner out everywhere would miss the sessions they list.
#[tokio::test]
async fn delete_all_leaves_the_owner_indexes_of_a_store_under_a_shorter_prefix() {
    let Some((scoped, _raw, prefix)) = store().await else {
        return;
    };
    let outer = scoped.inner().clone().with_prefix(format!("{prefix}app:"));
    let nested = scoped
        .inner()
        .clone()
        .with_prefix(format!("{prefix}app:owner:"));
    let mut owned = sample_record();
    owned.owner = Some("alice".into());
    owned.expires_at = session_core::Timestamp::now() + std::time::Duration::from_secs(3600);
    assert_eq!(
        outer.create(&owned).await.expect("create"),
        Created::Created
    );
    assert_eq!(nested.delete_all().await.expect("delete all"), 0);
    assert_eq!(
        outer.ids_of_owner("alice").await.expect("list"),
        vec![owned.id]
    );
    assert_eq!(outer.delete_owner("alice").await.expect("log out"), 1);
    assert_eq!(outer.load(&owned.id).await.expect("load"), None);
}
