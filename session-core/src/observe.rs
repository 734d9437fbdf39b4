//! Tracing events and `metrics` counters for the session life cycle. Ids
//! appear only as the short hash of their record id.

use crate::id::RecordId;

/// Adds `n` to a counter when the `metrics` feature is on.
#[allow(unused_variables)]
pub(crate) fn count(name: &'static str, n: u64) {
    #[cfg(feature = "metrics")]
    metrics::counter!(name).increment(n);
}

pub(crate) fn loaded(id: &RecordId, found: bool) {
    tracing::debug!(id = %id.short(), found, "session loaded");
    count("session_loads_total", 1);
}

pub(crate) fn created(id: &RecordId) {
    tracing::debug!(id = %id.short(), "session created");
    count("session_creates_total", 1);
}

pub(crate) fn saved(id: &RecordId, version: u64) {
    tracing::debug!(id = %id.short(), version, "session saved");
    count("session_saves_total", 1);
}

pub(crate) fn conflict(id: &RecordId) {
    tracing::debug!(id = %id.short(), "session save conflict; reloading and re-applying");
    count("session_conflicts_total", 1);
}

pub(crate) fn touched(id: &RecordId) {
    tracing::trace!(id = %id.short(), "session deadline extended");
    count("session_touches_total", 1);
}

pub(crate) fn rotated(old: Option<&RecordId>, new: &RecordId) {
    let old = old.map_or_else(|| "none".to_owned(), RecordId::short);
    tracing::info!(%old, new = %new.short(), "session id rotated");
    count("session_rotations_total", 1);
}

pub(crate) fn destroyed(id: &RecordId) {
    tracing::info!(id = %id.short(), "session destroyed");
    count("session_destroys_total", 1);
}

pub(crate) fn ended(id: &RecordId) {
    tracing::info!(id = %id.short(), "session ended by another request; nothing written back");
    count("session_ended_total", 1);
}

/// The last handle of a committed session went with changes made after the
/// commit that nothing saved (a task or a streaming body that wrote after the
/// response without [`Session::save`](crate::Session::save)).
pub(crate) fn dropped_after_commit() {
    tracing::warn!(
        "changes made to the session after its commit were dropped unsaved; \
         a task or body that writes after the response must call Session::save"
    );
    count("session_changes_dropped_total", 1);
}

/// A handler panicked while it held the session: its deferred changes are
/// dropped at commit.
pub(crate) fn abandoned() {
    tracing::warn!(
        "the handler panicked while it held the session; its deferred changes are not saved"
    );
    count("session_abandoned_total", 1);
}

/// A request presented the session cookie but no valid id: counted when the
/// value is looked at, which for signed and private cookies is the session's
/// first use (requests that never use it do not verify their cookie).
pub(crate) fn rejected_cookie() {
    tracing::debug!("session cookie rejected: malformed, oversized or failed verification");
    count("session_rejected_cookies_total", 1);
}

pub(crate) fn corrupt_value(key: &str) {
    tracing::warn!(key, "session value could not be decoded");
    count("session_value_errors_total", 1);
}

#[cfg(all(test, feature = "metrics"))]
pub(crate) mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    use crate::testing::TestStore;
    use crate::{Config, Manager, SetCookie};

    #[derive(Default)]
    pub(crate) struct Counts(Mutex<HashMap<String, Arc<AtomicU64>>>);

    struct Handle(Arc<AtomicU64>);

    impl CounterFn for Handle {
        fn increment(&self, value: u64) {
            self.0.fetch_add(value, Ordering::SeqCst);
        }
        fn absolute(&self, value: u64) {
            self.0.store(value, Ordering::SeqCst);
        }
    }

    impl Recorder for Counts {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let mut map = self.0.lock().unwrap();
            let cell = map.entry(key.name().to_owned()).or_default().clone();
            Counter::from_arc(Arc::new(Handle(cell)))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    impl Counts {
        pub(crate) fn get(&self, name: &str) -> u64 {
            self.0
                .lock()
                .unwrap()
                .get(name)
                .map_or(0, |c| c.load(Ordering::SeqCst))
        }
    }

    /// Runs `test` on a fresh runtime while `Counts` records this thread's
    /// metrics; returns the counts.
    pub(crate) fn counted(test: impl AsyncFnOnce(&Counts)) -> Counts {
        let counts = Counts::default();
        {
            let _guard = metrics::set_default_local_recorder(&counts);
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(test(&counts));
        }
        counts
    }

    #[test]
    fn life_cycle_events_are_counted() {
        let counts = counted(async |_| {
            let m = Manager::new(TestStore::default(), Config::default());
            let s = m.session_from_cookies(None::<&str>);
            s.insert("k", &1).await.unwrap();
            let SetCookie::Set { value, .. } = s.commit().await.unwrap() else {
                panic!("expected a cookie");
            };
            let header = format!("session={value}");
            let s = m.session_from_cookies([header.as_str()]);
            s.insert("k", &2).await.unwrap();
            s.commit().await.unwrap();
            s.login("alice").await.unwrap();
            s.destroy().await.unwrap();
            m.session_from_cookies(["session=garbage"]);
        });
        assert_eq!(
            counts.get("session_creates_total"),
            2,
            "first store + login"
        );
        assert_eq!(counts.get("session_loads_total"), 1);
        assert_eq!(counts.get("session_saves_total"), 1);
        assert_eq!(counts.get("session_rotations_total"), 1);
        assert_eq!(counts.get("session_destroys_total"), 1);
        assert_eq!(counts.get("session_rejected_cookies_total"), 1);
    }

    #[test]
    fn a_signed_cookie_is_verified_only_when_the_session_is_used() {
        counted(async |counts| {
            let config = Config::builder()
                .with_security(crate::CookieSecurity::Signed(crate::CookieKeys::new(
                    crate::Key::generate(),
                )))
                .build()
                .unwrap();
            let m = Manager::new(TestStore::default(), config);
            // Signed under another key: of the issued length, so kept
            // sealed until used.
            let other = Config::builder()
                .with_security(crate::CookieSecurity::Signed(crate::CookieKeys::new(
                    crate::Key::generate(),
                )))
                .build()
                .unwrap();
            let forged = format!(
                "session={}",
                crate::transport::encode_value(&other, &crate::Id::generate().unwrap())
            );
            // Never used: not verified, so not counted as rejected.
            let s = m.session_from_cookies([forged.as_str()]);
            assert_eq!(s.commit_without_store(), Some(SetCookie::Unchanged));
            assert_eq!(counts.get("session_rejected_cookies_total"), 0);
            // Used: verified once, though an update asks for the id twice
            // (to find the record's turn, then to load).
            let s = m.session_from_cookies([forged.as_str()]);
            assert_eq!(s.increment("n", 1).await.unwrap(), 1);
            assert_eq!(s.get::<i64>("n").await.unwrap(), Some(1));
            assert_eq!(counts.get("session_rejected_cookies_total"), 1);
            assert_eq!(
                counts.get("session_loads_total"),
                0,
                "a forged id is never looked up"
            );
        });
    }
}

#[cfg(test)]
mod documented {
    /// Every counter the crate writes is listed in its README.
    #[test]
    fn every_counter_is_in_the_readme() {
        let readme = include_str!("../README.md");
        let sources = [include_str!("observe.rs"), include_str!("manager.rs")];
        let mut found = 0;
        for source in sources {
            for (at, _) in source.match_indices("count(\"session_") {
                let name = &source[at + "count(\"".len()..];
                let name = &name[..name.find('"').expect("a closing quote")];
                assert!(
                    readme.contains(&format!("`{name}`")),
                    "{name} is not in session-core/README.md"
                );
                found += 1;
            }
        }
        assert!(found >= 13, "found only {found} counters");
    }
}
