//! Integration tests of session-memory: the store conformance suite for
//! `MemoryStore`, for `CachedStore` over it, and for `CachedStore` over a
//! store that yields inside every call.

mod memory {
    session_core::store_conformance!(async { session_memory::MemoryStore::new() });
}

mod cached {
    session_core::store_conformance!(async {
        session_memory::CachedStore::builder(session_memory::MemoryStore::new()).build()
    });
}

/// `CachedStore` over a store that yields inside every call, before it
/// reaches the store and again before it answers (`MemoryStore` answers
/// without yielding): the cache's handling of calls that overlap (a load
/// during a delete, a save beside a touch) is then what the contract
/// cases see.
mod cached_over_a_yielding_store {
    session_core::store_conformance!(async {
        let backing =
            session_core::testing::Instrumented::new(session_core::testing::TestStore::default());
        backing.hop_around_calls(true);
        session_memory::CachedStore::builder(backing).build()
    });
}

/// `MemoryStore` saves each update at once instead of gathering concurrent
/// ones (`Store::group_commit`): through the counting wrapper the load test
/// uses, sixteen concurrent increments make sixteen saves and lose none.
mod group_commit {
    use session_core::testing::{Instrumented, TestStore};
    use session_core::{Config, Manager, SetCookie, Store};
    use session_memory::{CachedStore, MemoryStore};

    #[tokio::test]
    async fn concurrent_increments_save_at_once_and_lose_nothing() {
        let store = Instrumented::new(MemoryStore::new());
        let manager = Manager::new(store.clone(), Config::default());
        let s = manager.session_from_cookies(None::<&str>);
        s.insert("n", 0i64).await.unwrap();
        let SetCookie::Set { value, .. } = s.commit().await.unwrap() else {
            panic!("a new session sets its cookie");
        };
        let cookie = format!("session={value}");
        let before = store.counts();
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let s = manager.session_from_cookies(Some(cookie.as_str()));
                tokio::spawn(async move {
                    let n = s.increment("n", 1).await?;
                    s.commit().await?;
                    Ok::<_, session_core::Error>(n)
                })
            })
            .collect();
        let mut seen = Vec::new();
        for t in tasks {
            seen.push(t.await.unwrap().unwrap());
        }
        seen.sort_unstable();
        assert_eq!(seen, (1..=16).collect::<Vec<i64>>());
        let after = store.counts();
        assert_eq!(after.save - before.save, 16);
        let s = manager.session_from_cookies(Some(cookie.as_str()));
        assert_eq!(s.get::<i64>("n").await.unwrap(), Some(16));
    }

    #[test]
    fn a_cache_gathers_as_its_backing_store_does() {
        assert!(!MemoryStore::new().group_commit());
        assert!(!CachedStore::builder(MemoryStore::new())
            .build()
            .group_commit());
        assert!(TestStore::default().group_commit());
        assert!(CachedStore::builder(TestStore::default())
            .build()
            .group_commit());
    }
}
