//! A background task that removes expired records, for stores without
//! native expiry.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;

use crate::store::Store;

/// The handle of a sweeper task: it calls [`Store::delete_expired`] every
/// interval until stopped or dropped. Requests never wait for it (stores never
/// return expired records anyway); it only keeps the storage from filling with
/// dead sessions.
///
/// A sweep that has not finished after [`Sweeper::limit`] (the interval,
/// at least a minute and at most an hour) is abandoned and logged as an
/// error, and the next interval sweeps again: a store that hangs cannot stop
/// the sweeping for good. Stopping or dropping the sweeper abandons a sweep
/// in progress at once. Stores delete in batches (the SQL stores 1 000 rows
/// at a time), so an abandoned sweep keeps what it removed.
///
/// ```no_run
/// use std::time::Duration;
/// use session_core::{Manager, Sweeper};
///
/// # async fn run(manager: Manager) {
/// let sweeper = Sweeper::spawn(manager.store().clone(), Duration::from_secs(60));
/// // ... serve ...
/// sweeper.stop().await;
/// # }
/// ```
#[derive(Debug)]
#[must_use = "dropping the Sweeper stops it: keep it for as long as the app runs"]
pub struct Sweeper {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sweeper {
    /// The shortest interval between sweeps: a shorter one is raised to it,
    /// so that a store that fails at once is not asked (and its failure
    /// logged) thousands of times a second.
    pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

    /// The longest a sweep may take, whatever the interval.
    pub const MAX_LIMIT: Duration = Duration::from_secs(3600);

    /// Spawns the task on the current tokio runtime. The first sweep runs at
    /// once, then one every `interval` (at least [`Sweeper::MIN_INTERVAL`]);
    /// a failed sweep is logged and retried at the next interval, and so is
    /// one in which the store panicked.
    ///
    /// # Panics
    /// Outside a tokio runtime, like `tokio::spawn`, or in one built without
    /// its time driver (`enable_time`): here, rather than in the task, where
    /// the sweeping would stop before it started with nobody told.
    pub fn spawn(store: Arc<dyn Store>, interval: Duration) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let limit = Self::limit(interval);
        let mut tick = tokio::time::interval(interval.max(Self::MIN_INTERVAL));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {}
                }
                // The sweep races the stop too: stopping never waits for a
                // store that hangs.
                tokio::select! {
                    _ = &mut stopped => break,
                    swept = tokio::time::timeout(limit, AssertUnwindSafe(async { store.delete_expired().await }).catch_unwind()) => match swept {
                        Ok(Ok(Ok(0))) => {}
                        Ok(Ok(Ok(n))) => tracing::debug!(removed = n, "swept expired sessions"),
                        Ok(Ok(Err(e))) => tracing::error!(error = %e, "session sweep failed; retrying at the next interval"),
                        // The store's bug, not a reason to stop sweeping for
                        // good (the panic's message went to the panic hook).
                        Ok(Err(_)) => tracing::error!("session sweep panicked in the store; retrying at the next interval"),
                        Err(_) => tracing::error!(?limit, "session sweep abandoned: the store did not finish in time; retrying at the next interval"),
                    },
                }
            }
        });
        Self {
            stop: Some(stop),
            task,
        }
    }

    /// How long one sweep may take when sweeping every `interval`: the
    /// interval, at least a minute and at most [`Sweeper::MAX_LIMIT`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_core::Sweeper;
    ///
    /// assert_eq!(Sweeper::limit(Duration::from_secs(1)), Duration::from_secs(60));
    /// assert_eq!(Sweeper::limit(Duration::from_secs(600)), Duration::from_secs(600));
    /// assert_eq!(Sweeper::limit(Duration::MAX), Sweeper::MAX_LIMIT);
    /// ```
    pub fn limit(interval: Duration) -> Duration {
        interval.clamp(Duration::from_secs(60), Self::MAX_LIMIT)
    }

    /// Stops the task, abandoning a sweep in progress (what it removed stays
    /// removed), and waits for the task to end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(e) = (&mut self.task).await {
            if e.is_panic() {
                tracing::error!(error = %e, "the session sweeper task panicked");
            }
        }
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::forward_store;
    use crate::testing::{Instrumented, TestStore};
    use crate::Timestamp;
    use crate::{Created, Id, Record, RecordId, Saved};

    /// A store whose first sweep panics (a bug of its own); the others
    /// sweep.
    #[derive(Debug, Default)]
    struct PanicsOnce {
        inner: TestStore,
        sweeps: std::sync::atomic::AtomicUsize,
    }

    impl Store for PanicsOnce {
        forward_store!(|this| this.inner, PanicsOnce::pass);
    }

    async fn bug<T>() -> Result<T, crate::StoreError> {
        panic!("a bug in the store's first sweep")
    }

    impl PanicsOnce {
        fn pass<'f, T: 'f>(
            &self,
            op: crate::store::StoreOp,
            inner: crate::store::StoreFuture<'f, T>,
        ) -> crate::store::StoreFuture<'f, T> {
            let sweep = op == crate::store::StoreOp::DeleteExpired;
            if sweep
                && self
                    .sweeps
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                    == 0
            {
                return Box::pin(bug());
            }
            inner
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_sweep_in_which_the_store_panicked_is_retried_at_the_next_interval() {
        let store = Arc::new(PanicsOnce::default());
        let now = Timestamp::now();
        let expired = Record::new(Id::generate().unwrap().record_id(), now, now);
        store.inner.put_raw(expired);
        let sweeper = Sweeper::spawn(store.clone(), Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(store.sweeps.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(!store.inner.is_empty(), "the first sweep panicked");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(store.inner.is_empty(), "the next sweep ran");
        sweeper.stop().await;
    }

    /// A runtime without timers cannot sweep: the caller learns it at once,
    /// not a task that dies unseen.
    #[test]
    fn spawning_in_a_runtime_without_timers_panics_in_the_caller() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let spawned = runtime.block_on(async {
            std::panic::catch_unwind(|| {
                Sweeper::spawn(Arc::new(TestStore::default()), Duration::from_secs(1))
            })
        });
        assert!(spawned.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn sweeps_at_each_interval_until_stopped() {
        let store = TestStore::default();
        let now = Timestamp::now();
        for _ in 0..3 {
            let r = Record::new(
                Id::generate().unwrap().record_id(),
                now,
                now - Duration::from_secs(1),
            );
            store.put_raw(r);
        }
        let sweeper = Sweeper::spawn(Arc::new(store.clone()), Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(store.is_empty(), "expired records were swept");
        sweeper.stop().await;
        let r = Record::new(
            Id::generate().unwrap().record_id(),
            now,
            now - Duration::from_secs(1),
        );
        store.put_raw(r);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(store.len(), 1, "a stopped sweeper sweeps no more");
    }

    /// Stopping does not wait for a sweep that hangs, however long the
    /// interval (and so the limit) is.
    #[tokio::test(start_paused = true)]
    async fn stopping_abandons_a_hung_sweep() {
        for interval in [Duration::from_secs(3600), Duration::MAX] {
            let store = Instrumented::new(TestStore::default());
            store.delay(Some(Duration::from_secs(365 * 24 * 3600)));
            let sweeper = Sweeper::spawn(Arc::new(store.clone()), interval);
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(store.counts().other, 1, "the sweep is under way");
            let stopped = tokio::time::timeout(Duration::from_secs(5), sweeper.stop()).await;
            assert!(
                stopped.is_ok(),
                "stop waited for a hung sweep: {interval:?}"
            );
        }
    }

    /// An interval of zero is raised to [`Sweeper::MIN_INTERVAL`]: a store
    /// that fails at once is not asked again and again.
    #[tokio::test(start_paused = true)]
    async fn a_tiny_interval_is_raised_to_the_least() {
        let store = Instrumented::new(TestStore::default());
        store.fail_with(Some(crate::StoreErrorKind::Unavailable));
        let sweeper = Sweeper::spawn(Arc::new(store.clone()), Duration::ZERO);
        tokio::time::sleep(Sweeper::MIN_INTERVAL * 3 + Sweeper::MIN_INTERVAL / 2).await;
        assert_eq!(
            store.counts().other,
            4,
            "a sweep at once, then one per second"
        );
        sweeper.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_sweeper_sweeps_no_more() {
        let store = Instrumented::new(TestStore::default());
        let interval = Duration::from_secs(1);
        let sweeper = Sweeper::spawn(Arc::new(store.clone()), interval);
        // Half an interval off the ticks, so that none is due at the drop.
        tokio::time::sleep(interval * 3 + interval / 2).await;
        let swept = store.counts().other;
        assert_eq!(swept, 4, "a sweep at once, then one per interval");
        drop(sweeper);
        tokio::time::sleep(interval * 5).await;
        assert_eq!(store.counts().other, swept, "swept after the drop");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_sweep_is_abandoned_and_the_next_one_runs() {
        let store = Instrumented::new(TestStore::default());
        store.delay(Some(Duration::from_secs(24 * 3600)));
        let interval = Duration::from_secs(1);
        let sweeper = Sweeper::spawn(Arc::new(store.clone()), interval);
        // Paused time jumps to the next timer: each sweep hangs until the
        // limit abandons it, then the next interval starts another.
        tokio::time::sleep(Sweeper::limit(interval) * 3).await;
        assert!(
            store.counts().other >= 3,
            "a hung sweep stopped the sweeping: {:?}",
            store.counts()
        );
        store.delay(None);
        let r = Record::new(
            Id::generate().unwrap().record_id(),
            Timestamp::now(),
            Timestamp::now() - Duration::from_secs(1),
        );
        store.inner().put_raw(r);
        tokio::time::sleep(Sweeper::limit(interval) * 2).await;
        assert!(
            store.inner().is_empty(),
            "sweeping resumed when the store recovered"
        );
        sweeper.stop().await;
    }
}
