//! Time limits for store calls, with one timer per runtime thread instead of
//! one per call.
//!
//! `tokio::time::timeout` registers a timer for every call, and registering a
//! timer that expires before everything else the runtime waits for makes Tokio
//! wake its I/O driver: a write to an eventfd, a system call, even when the
//! thread registering the timer is the driver's own (tokio-rs/tokio#5207). A
//! store that answers over the network (Redis, SQL) paid for that on every
//! request, and a Redis read paid twice (the Redis client has a reply timer
//! too): `strace` counted 4.3 system calls per request where 2.3 do the work,
//! and the load test measured about 3 µs of server CPU per Redis read.
//!
//! Here each pending store call puts its deadline in a queue shared by the
//! calls of its thread, and one watchdog task per thread and runtime sleeps
//! until the earliest deadline and wakes the calls that ran out of time. The
//! watchdog's timer moves only when it fires or when a call needs an earlier
//! deadline than the one it sleeps towards; with the manager's one store
//! timeout that is about once per timeout while calls keep coming, and never
//! once the calls stop. A call that ends in time takes its deadline out of the
//! queue.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The call did not finish within its limit.
#[derive(Debug)]
pub(crate) struct Elapsed;

/// Runs `fut` for at most `after`, like `tokio::time::timeout`, on the
/// thread's shared watchdog.
///
/// # Panics
/// Outside a Tokio runtime, or in one built without timers, as
/// `tokio::time::timeout` does.
pub(crate) async fn within<F: Future>(after: Duration, fut: F) -> Result<F::Output, Elapsed> {
    let deadline = Instant::now() + after;
    let mut fut = pin!(fut);
    let mut slot: Option<Slot> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match &slot {
            Some(s) if s.watch.alive.load(Ordering::Acquire) => {
                if !s.watch.refresh(s.key, cx.waker()) {
                    // The watchdog took the deadline out: time is up.
                    return Poll::Ready(Err(Elapsed));
                }
            }
            // First wait, or the watchdog's runtime has shut down under a
            // call that lives on: (re)join the current thread's.
            _ => {
                if Instant::now() >= deadline {
                    return Poll::Ready(Err(Elapsed));
                }
                let watch = current();
                let key = watch.register(deadline, cx.waker());
                slot = Some(Slot { watch, key });
            }
        }
        Poll::Pending
    })
    .await
}

/// A call's place in the queue: its deadline, then an arrival number that
/// tells apart calls with the same deadline.
type Key = (Instant, u64);

/// A pending call's entry, taken out of the queue when the call ends.
struct Slot {
    watch: Arc<Watch>,
    key: Key,
}

impl Drop for Slot {
    fn drop(&mut self) {
        lock(&self.watch.state).calls.remove(&self.key);
    }
}

/// The pending calls of one thread in one runtime, and their watchdog.
struct Watch {
    runtime: tokio::runtime::Id,
    state: Mutex<State>,
    /// Wakes the watchdog when a call needs an earlier deadline than the
    /// one it sleeps towards, or any deadline while it sleeps without one.
    notify: Notify,
    /// False once the watchdog task has ended: its runtime shut down.
    alive: AtomicBool,
}

#[derive(Default)]
struct State {
    calls: BTreeMap<Key, Waker>,
    arrivals: u64,
    /// The deadline the watchdog sleeps towards; `None` while it waits for
    /// calls without a timer.
    target: Option<Instant>,
}

/// Locks the queue; every change under the lock is a single map operation,
/// so a panic elsewhere cannot leave it inconsistent.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

thread_local! {
    static WATCH: RefCell<Option<Arc<Watch>>> = const { RefCell::new(None) };
}

/// The watchdog of the current thread and runtime, started on first use.
fn current() -> Arc<Watch> {
    let handle = Handle::current();
    let found = WATCH.try_with(|cell| {
        let mut cell = cell.borrow_mut();
        match cell.as_ref() {
            Some(w) if w.runtime == handle.id() && w.alive.load(Ordering::Acquire) => Arc::clone(w),
            _ => {
                let w = Watch::start(&handle);
                *cell = Some(Arc::clone(&w));
                w
            }
        }
    });
    // While the thread's locals are being torn down, a watchdog of its own.
    found.unwrap_or_else(|_| Watch::start(&handle))
}

impl Watch {
    fn start(handle: &Handle) -> Arc<Self> {
        let watch = Arc::new(Self {
            runtime: handle.id(),
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            alive: AtomicBool::new(true),
        });
        // Made here, in the caller's context, so that a runtime without
        // timers panics in the call with Tokio's message, as before.
        let sleep = tokio::time::sleep_until(Instant::now());
        // Owned by the task, so that its end is seen even if the runtime
        // drops the task without ever running it.
        let ended = Ended(Arc::clone(&watch));
        handle.spawn(async move {
            let ended = ended;
            watchdog(&ended.0, sleep).await;
        });
        watch
    }

    fn register(&self, deadline: Instant, waker: &Waker) -> Key {
        let mut state = lock(&self.state);
        let key = (deadline, state.arrivals);
        state.arrivals += 1;
        state.calls.insert(key, waker.clone());
        if state.target.is_none_or(|t| deadline < t) {
            state.target = Some(deadline);
            drop(state);
            self.notify.notify_one();
        }
        key
    }

    /// Keeps the call's waker current; false if its deadline has passed.
    fn refresh(&self, key: Key, waker: &Waker) -> bool {
        match lock(&self.state).calls.get_mut(&key) {
            Some(w) => {
                if !w.will_wake(waker) {
                    w.clone_from(waker);
                }
                true
            }
            None => false,
        }
    }

    /// Takes out the calls whose deadline has passed and returns their
    /// wakers and the next deadline.
    fn expire(&self, now: Instant) -> (Vec<Waker>, Option<Instant>) {
        let mut state = lock(&self.state);
        let mut due = Vec::new();
        while let Some(entry) = state.calls.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        state.target = state.calls.first_key_value().map(|(k, _)| k.0);
        (due, state.target)
    }
}

/// Marks the watchdog gone and wakes its calls, which then join another.
struct Ended(Arc<Watch>);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Release);
        let wakers: Vec<Waker> = std::mem::take(&mut lock(&self.0.state).calls)
            .into_values()
            .collect();
        wakers.into_iter().for_each(Waker::wake);
    }
}

async fn watchdog(watch: &Watch, sleep: tokio::time::Sleep) {
    let mut sleep = pin!(sleep);
    loop {
        let notified = watch.notify.notified();
        let (due, target) = watch.expire(Instant::now());
        due.into_iter().for_each(Waker::wake);
        match target {
            Some(t) => {
                sleep.as_mut().reset(t);
                let mut notified = pin!(notified);
                std::future::poll_fn(|cx| {
                    if sleep.as_mut().poll(cx).is_ready() || notified.as_mut().poll(cx).is_ready() {
                        Poll::Ready(())
                    } else {
                        Poll::Pending
                    }
                })
                .await;
            }
            None => notified.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(watch: &Watch) -> usize {
        lock(&watch.state).calls.len()
    }

    /// `within` under a far longer Tokio timeout, so that a watchdog that
    /// fails to wake its calls fails the test instead of hanging it.
    async fn bounded<F: Future>(after: Duration, fut: F) -> Result<F::Output, Elapsed> {
        tokio::time::timeout(Duration::from_secs(600), within(after, fut))
            .await
            .expect("the watchdog never ended the call")
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_ends_in_time_leaves_nothing_queued() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let call = tokio::spawn(within(Duration::from_secs(5), rx));
        tokio::task::yield_now().await;
        let watch = current();
        assert_eq!(entries(&watch), 1);
        tx.send(7).unwrap();
        assert_eq!(call.await.unwrap().unwrap().unwrap(), 7);
        assert_eq!(entries(&watch), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_its_deadline_ends_with_elapsed_at_that_time() {
        let started = Instant::now();
        let never = std::future::pending::<()>();
        assert!(bounded(Duration::from_millis(200), never).await.is_err());
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        assert_eq!(entries(&current()), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn calls_in_a_row_leave_the_watchdogs_timer_where_it_is() {
        let limit = Duration::from_secs(5);
        let watch = current();
        let mut first_target = None;
        for _ in 0..3 {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let call = tokio::spawn(within(limit, rx));
            tokio::task::yield_now().await;
            let target = lock(&watch.state).target;
            assert!(target.is_some());
            // Each later call's deadline is further away: the watchdog keeps
            // sleeping towards the first one instead of moving its timer.
            assert_eq!(*first_target.get_or_insert(target), target);
            tx.send(()).unwrap();
            call.await.unwrap().unwrap().unwrap();
            tokio::time::advance(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_watchdog_wakes_for_the_next_call() {
        let never = || std::future::pending::<()>();
        assert!(bounded(Duration::from_secs(1), never()).await.is_err());
        // Nothing is pending: the watchdog waits without a timer.
        tokio::task::yield_now().await;
        assert_eq!(lock(&current().state).target, None);
        let started = Instant::now();
        assert!(bounded(Duration::from_secs(1), never()).await.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn calls_with_different_limits_each_end_at_their_own() {
        let started = Instant::now();
        let long = tokio::spawn(async move {
            bounded(Duration::from_secs(5), std::future::pending::<()>()).await
        });
        tokio::task::yield_now().await;
        // Earlier than the deadline the watchdog sleeps towards.
        let short = bounded(Duration::from_secs(1), std::future::pending::<()>()).await;
        assert!(short.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert!(long.await.unwrap().is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_finishes_first_wins_over_its_deadline() {
        let answer = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            "done"
        };
        assert_eq!(
            within(Duration::from_secs(1), answer).await.unwrap(),
            "done"
        );
    }

    #[test]
    fn a_call_outlives_the_runtime_of_its_first_watchdog() {
        // Polled first on one runtime, which then shuts down, and finished on
        // another: the deadline moves to the second runtime's watchdog.
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let mut call = Box::pin(within(Duration::from_secs(2), std::future::pending::<()>()));
        first.block_on(async {
            assert!(futures_poll_once(call.as_mut()).await.is_pending());
        });
        let old = WATCH.with(|w| w.borrow().clone()).unwrap();
        drop(first);
        assert!(!old.alive.load(Ordering::Acquire), "the watchdog has ended");
        assert_eq!(entries(&old), 0, "its calls were woken and let go");
        let second = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        second.block_on(async {
            let outcome = tokio::time::timeout(Duration::from_secs(600), call).await;
            assert!(outcome
                .expect("the second watchdog never ended the call")
                .is_err());
        });
    }

    async fn futures_poll_once<F: Future + Unpin>(mut fut: F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut fut).poll(cx))).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_calls_across_threads_all_end() {
        let calls: Vec<_> = (0..64u64)
            .map(|i| {
                tokio::spawn(async move {
                    let work = async move {
                        if i % 2 == 0 {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            Some(i)
                        } else {
                            std::future::pending().await
                        }
                    };
                    bounded(Duration::from_millis(50), work).await
                })
            })
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            let result = call.await.unwrap();
            assert_eq!(result.is_ok(), i % 2 == 0, "call {i}");
        }
    }
}
