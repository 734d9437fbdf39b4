//! Redis stopped, paused and corrupted, with a manager in front.

use std::time::{Duration, Instant};

use session_core::testing::{
    acknowledged_writes_survive_cuts, manager_with_timeout, read_name as name,
    stored_session as stored, FaultProxy,
};
use session_core::{Error, Manager, Store};
use session_redis::{RedisStore, RedisStoreError};

use crate::support::{unique_prefix, Throwaway};

fn manager(store: RedisStore) -> Manager {
    manager_with_timeout(store, Duration::from_millis(500))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_times_out_and_recovers_with_data_intact() {
    let Some(server) = Throwaway::start() else {
        return;
    };
    let m = manager(RedisStore::connect(&server.url()).await.expect("connect"));
    let cookie = stored(&m).await;
    server.pause();
    let started = Instant::now();
    let err = name(&m, &cookie).await.expect_err("paused Redis must fail");
    // The manager's store timeout: the connection has no timer of its own.
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    server.resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match name(&m, &cookie).await {
            Ok(n) => {
                assert_eq!(n, "iris");
                break;
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet recovered: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("did not recover: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_redis_is_a_clear_error_and_the_store_recovers_without_restart() {
    let Some(mut server) = Throwaway::start() else {
        return;
    };
    let m = manager(RedisStore::connect(&server.url()).await.expect("connect"));
    let cookie = stored(&m).await;
    server.stop();
    let started = Instant::now();
    let err = name(&m, &cookie)
        .await
        .expect_err("stopped Redis must fail");
    assert!(
        matches!(err, Error::Store { .. } | Error::Timeout { .. }),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // A write fails too, and never as a silently fresh session.
    let s = m.session_from_cookies(None::<&str>);
    s.insert("k", &1)
        .await
        .expect("a new session needs no store call yet");
    assert!(s.commit().await.is_err());

    server.restart();
    // The server came back empty (no persistence): the old session is gone,
    // and new sessions work through the same store, without a restart.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = m.session_from_cookies(None::<&str>);
        let ok = s.insert("k", &1).await.is_ok() && s.commit().await.is_ok();
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "the store did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(name(&m, &cookie).await.expect("load"), "");
}

/// How many keys database `db` holds.
async fn keys_in(raw: &mut redis::aio::MultiplexedConnection, db: u8) -> u64 {
    let (n,): (u64,) = redis::pipe()
        .cmd("SELECT")
        .arg(db)
        .ignore()
        .cmd("DBSIZE")
        .query_async(raw)
        .await
        .expect("DBSIZE");
    n
}

/// Puts a hash where the string under `key` was, as an older release
/// wrote sessions.
async fn replace_with_hash(raw: &mut redis::aio::MultiplexedConnection, key: &str) {
    let _: () = redis::cmd("DEL")
        .arg(key)
        .query_async(raw)
        .await
        .expect("clear it");
    let _: () = redis::cmd("HSET")
        .arg(key)
        .arg("d")
        .arg("x")
        .query_async(raw)
        .await
        .expect("write a hash");
}

/// Iris's `Password` and `Database` settings are parts of the URL here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_carries_the_password_and_the_database() {
    let Some(server) = Throwaway::start_with(&["--requirepass", "s3cret"]) else {
        return;
    };
    let url =
        |password: &str, db: u8| format!("redis://:{password}@127.0.0.1:{}/{db}", server.port);
    let m = manager(
        RedisStore::connect(&url("s3cret", 3))
            .await
            .expect("connect"),
    );
    let cookie = stored(&m).await;
    assert_eq!(name(&m, &cookie).await.expect("load"), "iris");
    let mut raw = redis::Client::open(url("s3cret", 0))
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    assert_eq!(
        keys_in(&mut raw, 0).await,
        0,
        "nothing in the default database"
    );
    assert!(
        keys_in(&mut raw, 3).await >= 1,
        "the session is in database 3"
    );

    // A wrong password is a clear error: at connect time, or at the first
    // use of a lazy store, never a session that silently lives nowhere.
    match RedisStore::connect(&url("wrong", 3)).await {
        Err(RedisStoreError::Connect(e)) => {
            assert_eq!(e.kind(), redis::ErrorKind::AuthenticationFailed, "{e}");
        }
        Err(e) => panic!("not reported as a refused connection: {e}"),
        Ok(_) => panic!("connected with a wrong password"),
    }
    // Time enough for the connection's retries: the refusal, not a timeout.
    let m = manager_with_timeout(
        RedisStore::connect_lazy(&url("wrong", 3)).expect("a valid URL"),
        Duration::from_secs(10),
    );
    let s = m.session_from_cookies(None::<&str>);
    s.insert("k", &1).await.expect("no store call yet");
    let err = s.commit().await.expect_err("a wrong password must fail");
    assert!(
        matches!(&err, Error::Store { source, .. }
            if source.kind() == session_core::StoreErrorKind::Rejected),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_record_is_no_session() {
    let Some(server) = Throwaway::start() else {
        return;
    };
    let prefix = unique_prefix();
    let store = RedisStore::connect(&server.url())
        .await
        .expect("connect")
        .with_prefix(prefix.clone());
    let m = manager(store.clone());
    let cookie = stored(&m).await;
    let value = cookie.split_once('=').expect("pair").1;
    let rid = session_core::Id::parse(value).expect("id").record_id();
    let mut raw = redis::Client::open(server.url().as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    let key = format!("{prefix}{rid}");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(b"\xc1 not a record".as_slice())
        .query_async(&mut raw)
        .await
        .expect("corrupt it");
    assert_eq!(store.load(&rid).await.expect("load"), None);
    assert_eq!(name(&m, &cookie).await.expect("load"), "");
    // A key of another type (a hash, as an older release wrote) is no
    // session either, and can still be deleted.
    let cookie = stored(&m).await;
    let rid = session_core::Id::parse(cookie.split_once('=').expect("pair").1)
        .expect("id")
        .record_id();
    let key = format!("{prefix}{rid}");
    replace_with_hash(&mut raw, &key).await;
    assert_eq!(store.load(&rid).await.expect("load"), None);
    assert_eq!(name(&m, &cookie).await.expect("load"), "");
    // A save, a touch or a rotation's retiring touch over it finds no
    // session, as a load does, instead of failing in its script.
    let mut over = session_core::testing::sample_record();
    over.id = rid;
    over.version = 1;
    assert_eq!(
        store.save(&over, 0).await.expect("save over a hash"),
        session_core::Saved::Missing
    );
    let (later, past) = (
        session_core::Timestamp::now() + Duration::from_secs(3600),
        session_core::Timestamp::from_unix_millis(1),
    );
    for deadline in [later, past] {
        assert!(!store
            .touch(&rid, 0, None, deadline)
            .await
            .expect("touch over a hash"));
    }
    store.delete(&rid).await.expect("delete a foreign key");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut raw)
        .await
        .expect("exists");
    assert_eq!(exists, 0);
    // An owner's listing that finds a hash under a listed id leaves it out.
    let mut listed = session_core::testing::sample_record();
    listed.owner = Some("carol".to_owned());
    listed.expires_at = later;
    assert_eq!(
        store.create(&listed).await.expect("create"),
        session_core::Created::Created
    );
    let key = format!("{prefix}{}", listed.id);
    replace_with_hash(&mut raw, &key).await;
    assert!(store.ids_of_owner("carol").await.expect("list").is_empty());

    // A value whose header names an owner that is not UTF-8 (written by
    // something else) is no session, and a save over it, whose script
    // answers with those bytes, still reports what it did.
    let mut record = session_core::testing::sample_record();
    record.owner = Some("alice".to_owned());
    record.expires_at = session_core::Timestamp::now() + std::time::Duration::from_secs(3600);
    assert_eq!(
        store.create(&record).await.expect("create"),
        session_core::Created::Created
    );
    let key = format!("{prefix}{}", record.id);
    let _: () = redis::cmd("SETRANGE")
        .arg(&key)
        .arg(18)
        .arg(b"\xff".as_slice())
        .query_async(&mut raw)
        .await
        .expect("damage the owner");
    assert_eq!(store.load(&record.id).await.expect("load"), None);
    let expected = record.version;
    record.version += 1;
    record.owner = None;
    assert_eq!(
        store.save(&record, expected).await.expect("save"),
        session_core::Saved::Saved
    );
    let saved = store.load(&record.id).await.expect("load").expect("saved");
    assert_eq!(
        (saved.version, saved.owner, saved.data),
        (record.version, None, record.data.clone())
    );

    // A value cut short after its version (written by something else) is
    // no session, and a save carrying that version finds it missing
    // instead of failing in the script.
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(record.version.to_be_bytes().as_slice())
        .query_async(&mut raw)
        .await
        .expect("cut the value short");
    assert_eq!(store.load(&record.id).await.expect("load"), None);
    let later = session_core::Timestamp::now() + std::time::Duration::from_secs(7200);
    assert!(
        !store
            .touch(&record.id, record.version, None, later)
            .await
            .expect("touch"),
        "a touch moved the deadline of a value that loads as no session"
    );
    let expected = record.version;
    record.version += 1;
    assert_eq!(
        store.save(&record, expected).await.expect("save"),
        session_core::Saved::Missing
    );
    // At another version too: missing, not a conflict.
    assert_eq!(
        store.save(&record, expected + 5).await.expect("save"),
        session_core::Saved::Missing
    );
    store.delete(&record.id).await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_cut_connections() {
    let Some(server) = Throwaway::start() else {
        return;
    };
    let upstream = format!("127.0.0.1:{}", server.port).parse().expect("addr");
    let proxy = FaultProxy::start(upstream).await.expect("proxy");
    let store = RedisStore::connect(&format!("redis://{}", proxy.addr()))
        .await
        .expect("connect through the proxy");
    acknowledged_writes_survive_cuts(&manager(store), &proxy).await;
}

#[test]
fn connect_lazy_outside_a_runtime_is_a_clear_error() {
    let err = RedisStore::connect_lazy("redis://127.0.0.1:6379").expect_err("no runtime");
    assert!(
        matches!(err, session_redis::RedisStoreError::Config(_)),
        "{err}"
    );
    assert!(RedisStore::connect_lazy("not a url").is_err());
}

/// A lazily connected store starts without a round trip, so a Redis that is
/// down shows as failed requests, and the same store serves once it is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_store_starts_while_redis_is_down_and_serves_once_it_is_up() {
    let Some(mut server) = Throwaway::start() else {
        return;
    };
    server.stop();
    let store = RedisStore::connect_lazy(&server.url())
        .expect("no round trip at start")
        .with_prefix(unique_prefix());
    let m = manager(store);
    let s = m.session_from_cookies(None::<&str>);
    s.insert("name", "iris").await.expect("no store call yet");
    assert!(s.commit().await.is_err(), "Redis is down");

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    let cookie = loop {
        let s = m.session_from_cookies(None::<&str>);
        s.insert("name", "iris").await.expect("insert");
        match s.commit().await {
            Ok(session_core::SetCookie::Set { value, .. }) => {
                break format!("{}={value}", m.config().cookie_name());
            }
            Ok(other) => panic!("a new session must set its cookie: {other:?}"),
            Err(e) => {
                assert!(Instant::now() < deadline, "never connected: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(name(&m, &cookie).await.expect("load"), "iris");
}
