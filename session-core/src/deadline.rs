//! Time limits for store calls, with one timer per runtime thread instead of
//! one per call.
//!
//! `tokio::time::timeout` registers a timer for every call, and registering a
//! timer that expires before everything else the runtime waits for makes Tokio
//! wake its I/O driver: a write to an eventfd, a system call, even when the
//! thread registering the timer is the driver's own (tokio-rs/tokio#5207). A
//! store that answers over the network (Redis, SQL) paid for that on every
//! request, and a Redis read paid twice (the Redis client has a reply timer
//! too): `strace` counted 5.0 system calls per Redis read where 3.0 do the
//! work (BENCHMARKS.md, system-call table).
//!
//! Here each pending store call puts its deadline in a queue shared by the
//! calls started on its thread, and one watchdog task per thread and runtime
//! sleeps until the earliest deadline and wakes the calls that ran out of
//! time. The watchdog's timer moves only when it fires or when a call needs an
//! earlier deadline than the one it sleeps towards: with the manager's one
//! store timeout, about once per timeout while calls keep coming, and once
//! more after they stop. A call that ends in time takes its deadline out of
//! the queue. "Per thread" says which calls share a queue: in a
//! multi-threaded runtime the watchdog task itself runs on any worker. A
//! watchdog that no thread refers to any more (the thread ended,
//! or moved on to another runtime) ends once its queue is empty; while a
//! runtime shuts down, or while a thread's locals are torn down, a call falls
//! back to a Tokio timer of its own.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// The call did not finish within its limit.
#[derive(Debug)]
pub(crate) struct Elapsed;

/// Runs `fut` for at most `after`, like `tokio::time::timeout`, but sets the
/// limit only if `fut` is not ready on its first poll, and then on the
/// thread's shared watchdog. A limit too large to represent is no limit.
///
/// # Panics
/// If `fut` is not ready on its first poll: outside a Tokio runtime, or in
/// one built without timers, as `tokio::time::timeout` does.
pub(crate) fn within<F: Future>(after: Duration, fut: F) -> Within<F> {
    Within {
        fut,
        after,
        wait: Wait::NotYet,
    }
}

pin_project_lite::pin_project! {
    /// The future [`within`] returns: a struct rather than an `async fn`,
    /// which would keep `fut` and `after` twice (as arguments and as the
    /// locals they move into). Every store call is one, inside every
    /// request's future.
    #[must_use = "the store call runs only when polled"]
    pub(crate) struct Within<F> {
        #[pin]
        fut: F,
        after: Duration,
        wait: Wait,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.fut.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        this.wait.poll(*this.after, cx)
    }
}

/// How a pending call waits for its deadline.
enum Wait {
    /// Not polled yet: the limit starts at the first `Pending`.
    NotYet,
    /// Its deadline, without a place to wait yet (or any more).
    Unqueued(Instant),
    /// In a watchdog's queue.
    Queued(Slot),
    /// On a timer of its own, where no watchdog is available.
    Timer(Pin<Box<Sleep>>),
    /// The limit is too far away to represent.
    Unlimited,
}

impl Wait {
    /// Called after the call's future returned `Pending`.
    fn poll<T>(&mut self, after: Duration, cx: &mut Context<'_>) -> Poll<Result<T, Elapsed>> {
        loop {
            match self {
                Self::NotYet => {
                    *self = match Instant::now().checked_add(after) {
                        Some(deadline) => Self::Unqueued(deadline),
                        None => Self::Unlimited,
                    };
                }
                Self::Unqueued(deadline) => {
                    let deadline = *deadline;
                    if Instant::now() >= deadline {
                        return Poll::Ready(Err(Elapsed));
                    }
                    let queued = current().and_then(|watch| {
                        let key = watch.register(deadline, cx.waker())?;
                        Some(Slot { watch, key })
                    });
                    *self = match queued {
                        Some(slot) => Self::Queued(slot),
                        // Its runtime is shutting down, or this thread's
                        // locals are being torn down.
                        None => Self::Timer(Box::pin(tokio::time::sleep_until(deadline))),
                    };
                }
                Self::Queued(slot) => match slot.watch.refresh(slot.key, cx.waker()) {
                    Queue::Waiting => return Poll::Pending,
                    Queue::Expired => return Poll::Ready(Err(Elapsed)),
                    // The watchdog ended (its runtime shut down) under a call
                    // that lives on: join the current thread's.
                    Queue::Closed => *self = Self::Unqueued(slot.key.0),
                },
                Self::Timer(sleep) => return sleep.as_mut().poll(cx).map(|()| Err(Elapsed)),
                Self::Unlimited => return Poll::Pending,
            }
        }
    }
}

/// A call's place in the queue: its deadline, then an arrival number that
/// tells apart calls with the same one.
type Key = (Instant, u64);

/// A queued call's entry, taken out of the queue when the call ends.
struct Slot {
    watch: Arc<Watch>,
    key: Key,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let removed = lock(&self.watch.state).calls.remove(&self.key);
        // Dropped after the lock is released.
        drop(removed);
    }
}

/// Where a queued call stands.
enum Queue {
    Waiting,
    Expired,
    Closed,
}

/// The pending calls started on one thread in one runtime, and their
/// watchdog.
struct Watch {
    runtime: tokio::runtime::Id,
    state: Mutex<State>,
    /// Wakes the watchdog when a call needs an earlier deadline than the one
    /// it sleeps towards (or any, while it sleeps without one), and when its
    /// thread lets go of it.
    notify: Notify,
}

#[derive(Default)]
struct State {
    calls: BTreeMap<Key, Waker>,
    arrivals: u64,
    /// The deadline the watchdog sleeps towards; `None` while it waits
    /// without a timer.
    target: Option<Instant>,
    /// The watchdog has ended: nothing joins this queue any more.
    closed: bool,
}

/// Locks a queue; every change under the lock is a single map operation or
/// flag, so a panic elsewhere cannot leave it inconsistent.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A thread's watchdog. Weak, so that the watchdog task owns it: the task
/// ends when its thread lets go of it and its queue is empty.
struct Local(Option<Weak<Watch>>);

impl Local {
    /// Lets go of the watchdog and tells it so.
    fn release(&mut self) {
        if let Some(watch) = self.0.take().and_then(|weak| weak.upgrade()) {
            watch.notify.notify_one();
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        self.release();
    }
}

thread_local! {
    static WATCH: RefCell<Local> = const { RefCell::new(Local(None)) };
}

/// The watchdog of the current thread and runtime, started on first use;
/// `None` while the thread's locals are being torn down.
///
/// # Panics
/// Outside a Tokio runtime, or in one without timers.
fn current() -> Option<Arc<Watch>> {
    let handle = Handle::current();
    WATCH
        .try_with(|cell| {
            let mut local = cell.borrow_mut();
            let found = local.0.as_ref().and_then(Weak::upgrade);
            match found {
                Some(watch) if watch.runtime == handle.id() => watch,
                _ => {
                    local.release();
                    let watch = Arc::new(Watch {
                        runtime: handle.id(),
                        state: Mutex::new(State::default()),
                        notify: Notify::new(),
                    });
                    // Referred to before its task starts, which may be at
                    // once on another worker thread.
                    local.0 = Some(Arc::downgrade(&watch));
                    watch.start(&handle);
                    watch
                }
            }
        })
        .ok()
}

impl Watch {
    /// Spawns the watchdog task.
    fn start(self: &Arc<Self>, handle: &Handle) {
        // Made here, in the caller's context, so that a runtime without
        // timers panics in the call with Tokio's message, as before.
        let sleep = tokio::time::sleep_until(Instant::now());
        // Owned by the task, so that its end is seen even if the runtime
        // drops the task without ever running it.
        let ended = Ended(Arc::clone(self));
        handle.spawn(async move {
            let ended = ended;
            watchdog(&ended.0, sleep).await;
        });
    }

    /// Queues a call; `None` once the watchdog has ended.
    fn register(&self, deadline: Instant, waker: &Waker) -> Option<Key> {
        let mut state = lock(&self.state);
        if state.closed {
            return None;
        }
        let key = (deadline, state.arrivals);
        state.arrivals += 1;
        state.calls.insert(key, waker.clone());
        if state.target.is_none_or(|t| deadline < t) {
            state.target = Some(deadline);
            drop(state);
            self.notify.notify_one();
        }
        Some(key)
    }

    /// Keeps the call's waker current and tells where it stands.
    fn refresh(&self, key: Key, waker: &Waker) -> Queue {
        let mut state = lock(&self.state);
        if state.closed {
            return Queue::Closed;
        }
        match state.calls.get_mut(&key) {
            Some(w) => {
                if !w.will_wake(waker) {
                    let old = std::mem::replace(w, waker.clone());
                    drop(state);
                    drop(old);
                }
                Queue::Waiting
            }
            None => Queue::Expired,
        }
    }

    /// Takes out the calls whose deadline has passed; returns their wakers
    /// and the next deadline.
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

    /// Whether the watchdog can end: no thread will queue calls here any
    /// more, and none is queued.
    fn unused(self: &Arc<Self>) -> bool {
        Arc::weak_count(self) == 0 && lock(&self.state).calls.is_empty()
    }
}

/// Closes the queue and wakes its calls, which then join another.
struct Ended(Arc<Watch>);

impl Drop for Ended {
    fn drop(&mut self) {
        let calls = {
            let mut state = lock(&self.0.state);
            state.closed = true;
            std::mem::take(&mut state.calls)
        };
        calls.into_values().for_each(Waker::wake);
    }
}

async fn watchdog(watch: &Arc<Watch>, sleep: Sleep) {
    let mut sleep = pin!(sleep);
    loop {
        let notified = watch.notify.notified();
        let (due, target) = watch.expire(Instant::now());
        due.into_iter().for_each(Waker::wake);
        // After the expiry: the calls it just ended may have been the last
        // the queue held for a thread that let go of it, and nothing would
        // wake the task again.
        if watch.unused() {
            return;
        }
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    fn entries(watch: &Watch) -> usize {
        lock(&watch.state).calls.len()
    }

    fn this_threads() -> Arc<Watch> {
        current().expect("thread locals are alive")
    }

    /// `within` under a far longer Tokio timeout, so that a watchdog that
    /// fails to wake its calls fails the test instead of hanging it.
    async fn bounded<F: Future>(after: Duration, fut: F) -> Result<F::Output, Elapsed> {
        tokio::time::timeout(Duration::from_secs(600), within(after, fut))
            .await
            .expect("the watchdog never ended the call")
    }

    fn never() -> std::future::Pending<()> {
        std::future::pending()
    }

    /// Counts its wake-ups.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll_with<F: Future + Unpin>(fut: &mut F, waker: &Waker) -> Poll<F::Output> {
        Pin::new(fut).poll(&mut Context::from_waker(waker))
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_ready_at_once_sets_no_limit() {
        assert_eq!(
            within(Duration::from_secs(1), async { 7 }).await.unwrap(),
            7
        );
        let queued = WATCH.with(|w| w.borrow().0.as_ref().and_then(Weak::upgrade));
        assert!(queued.is_none(), "no watchdog was started");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_ends_in_time_leaves_nothing_queued() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
        let call = tokio::spawn(within(Duration::from_secs(5), rx));
        tokio::task::yield_now().await;
        let watch = this_threads();
        assert_eq!(entries(&watch), 1);
        tx.send(7).unwrap();
        assert_eq!(call.await.unwrap().unwrap().unwrap(), 7);
        assert_eq!(entries(&watch), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_call_leaves_nothing_queued() {
        let mut call = Box::pin(within(Duration::from_secs(5), never()));
        let waker = Waker::from(Arc::new(Counter::default()));
        assert!(poll_with(&mut call, &waker).is_pending());
        let watch = this_threads();
        assert_eq!(entries(&watch), 1);
        drop(call);
        assert_eq!(entries(&watch), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_its_deadline_ends_with_elapsed_at_that_time() {
        let started = Instant::now();
        assert!(bounded(Duration::from_millis(200), never()).await.is_err());
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        assert_eq!(entries(&this_threads()), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_too_large_to_represent_is_no_limit() {
        let answer = async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "late"
        };
        assert_eq!(within(Duration::MAX, answer).await.unwrap(), "late");
    }

    #[tokio::test(start_paused = true)]
    async fn the_latest_waker_is_the_one_woken() {
        let mut call = Box::pin(within(Duration::from_secs(1), never()));
        let (first, second) = (Arc::new(Counter::default()), Arc::new(Counter::default()));
        assert!(poll_with(&mut call, &Waker::from(Arc::clone(&first))).is_pending());
        assert!(poll_with(&mut call, &Waker::from(Arc::clone(&second))).is_pending());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
        assert!(poll_with(&mut call, &Waker::from(second)).is_ready());
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_finishes_after_its_deadline_passed_still_wins() {
        // The watchdog has already taken the deadline out when the answer
        // arrives: like `tokio::time::timeout`, the answer is polled first.
        let (tx, rx) = tokio::sync::oneshot::channel::<&str>();
        let mut call = Box::pin(within(Duration::from_secs(1), rx));
        let woken = Arc::new(Counter::default());
        let waker = Waker::from(Arc::clone(&woken));
        assert!(poll_with(&mut call, &waker).is_pending());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(woken.0.load(Ordering::SeqCst), 1, "the deadline has passed");
        tx.send("done").unwrap();
        match poll_with(&mut call, &waker) {
            Poll::Ready(Ok(Ok(answer))) => assert_eq!(answer, "done"),
            _ => panic!("the answer must win"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn calls_in_a_row_leave_the_watchdogs_timer_where_it_is() {
        let limit = Duration::from_secs(5);
        let mut first_target = None;
        for _ in 0..3 {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let call = tokio::spawn(within(limit, rx));
            tokio::task::yield_now().await;
            let target = lock(&this_threads().state).target;
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
        assert!(bounded(Duration::from_secs(1), never()).await.is_err());
        // Nothing is pending: the watchdog waits without a timer.
        tokio::task::yield_now().await;
        assert_eq!(lock(&this_threads().state).target, None);
        let started = Instant::now();
        assert!(bounded(Duration::from_secs(1), never()).await.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn calls_with_different_limits_each_end_at_their_own() {
        let started = Instant::now();
        let long = tokio::spawn(bounded(Duration::from_secs(5), never()));
        tokio::task::yield_now().await;
        // Earlier than the deadline the watchdog sleeps towards.
        let short = bounded(Duration::from_secs(1), never()).await;
        assert!(short.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        assert!(long.await.unwrap().is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_watchdog_its_thread_let_go_of_ends_once_its_calls_are_done() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let call = tokio::spawn(within(Duration::from_secs(5), rx));
        tokio::task::yield_now().await;
        // Strong: a weak reference would count as the thread's.
        let watch = this_threads();
        WATCH.with(|w| w.borrow_mut().release());
        tokio::task::yield_now().await;
        assert!(!lock(&watch.state).closed, "a call is still queued");
        tx.send(()).unwrap();
        call.await.unwrap().unwrap().unwrap();
        // It ends when its stale timer fires at the latest.
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(lock(&watch.state).closed, "the watchdog task has ended");
    }

    /// As above, when the last queued call times out rather than being
    /// answered.
    #[tokio::test(start_paused = true)]
    async fn a_watchdog_its_thread_let_go_of_ends_once_its_last_call_timed_out() {
        let call = tokio::spawn(within(Duration::from_secs(5), never()));
        tokio::task::yield_now().await;
        let watch = this_threads();
        WATCH.with(|w| w.borrow_mut().release());
        tokio::task::yield_now().await;
        assert!(!lock(&watch.state).closed, "a call is still queued");
        assert!(call.await.unwrap().is_err(), "the call timed out");
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(lock(&watch.state).closed, "the watchdog task has ended");
    }

    #[tokio::test(start_paused = true)]
    async fn a_watchdog_with_nothing_queued_ends_when_its_thread_lets_go() {
        assert!(bounded(Duration::from_secs(1), never()).await.is_err());
        let watch = this_threads();
        WATCH.with(|w| w.borrow_mut().release());
        tokio::task::yield_now().await;
        assert!(lock(&watch.state).closed);
        // The next call starts a new one.
        let next = this_threads();
        assert!(!Arc::ptr_eq(&watch, &next));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_watchdog_a_call_waits_on_a_timer_of_its_own() {
        // As while the runtime shuts down: the thread's watchdog takes no
        // more calls.
        lock(&this_threads().state).closed = true;
        let started = Instant::now();
        assert!(bounded(Duration::from_secs(1), never()).await.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    fn paused_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    }

    #[test]
    fn calls_outlive_the_runtime_of_their_first_watchdog() {
        // Polled first on one runtime, which then shuts down, and finished on
        // another: the deadlines move to the second runtime's watchdog.
        let first = paused_runtime();
        let limit = Duration::from_secs(2);
        let (tx, rx) = tokio::sync::oneshot::channel::<&str>();
        let mut answered = Box::pin(within(limit, rx));
        let mut unanswered = Box::pin(within(limit, never()));
        let waker = Waker::from(Arc::new(Counter::default()));
        let old = first.block_on(async {
            assert!(poll_with(&mut answered, &waker).is_pending());
            assert!(poll_with(&mut unanswered, &waker).is_pending());
            this_threads()
        });
        drop(first);
        assert!(lock(&old.state).closed, "the first watchdog has ended");
        assert_eq!(entries(&old), 0, "its calls were woken and let go");
        let second = paused_runtime();
        second.block_on(async {
            let started = Instant::now();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(1)).await;
                tx.send("in time").unwrap();
            });
            // Not ended early by the first watchdog's end.
            assert_eq!(answered.await.unwrap().unwrap(), "in time");
            let outcome = tokio::time::timeout(Duration::from_secs(600), unanswered).await;
            assert!(outcome
                .expect("the second watchdog never ended the call")
                .is_err());
            // At its deadline, set on the first runtime's clock a moment ago.
            let waited = started.elapsed();
            assert!(
                waited > Duration::from_millis(1500) && waited <= limit,
                "{waited:?}"
            );
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_calls_across_threads_all_end() {
        let calls: Vec<_> = (0..64u64)
            .map(|i| {
                tokio::spawn(async move {
                    let work = async move {
                        if i % 2 == 0 {
                            tokio::task::yield_now().await;
                            Some(i)
                        } else {
                            std::future::pending().await
                        }
                    };
                    bounded(Duration::from_secs(1), work).await
                })
            })
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            let result = call.await.unwrap();
            assert_eq!(result.is_ok(), i % 2 == 0, "call {i}");
        }
    }
}
