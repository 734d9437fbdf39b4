//! What an adapter runs around a handler: its response, then the commit.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;

use crate::error::Result;
use crate::session::Session;
use crate::transport::SetCookie;

type Commit = Pin<Box<dyn Future<Output = Result<SetCookie>> + Send>>;

pin_project! {
    /// A handler's response future followed by the commit of its session:
    /// resolves to the response and the commit's outcome, for the adapter to
    /// turn into headers (or an error response). Made by [`Session::commit_after`].
    ///
    /// A session that was not used, or only read within the touch interval,
    /// is committed on the spot ([`Session::commit_without_store`]): no
    /// allocation and no extra poll. Only a commit that must reach the store
    /// boxes its future.
    ///
    /// Dropped while its commit waits for the store (the server dropped the
    /// request because its client went away), it finishes the commit on a
    /// task of its own on the current Tokio runtime: the handler completed,
    /// so what it wrote is saved, as on frameworks that run every request to
    /// its end. Each store call stays bounded by the store timeout, and the
    /// whole commit by a minute; a commit dropped outside a runtime, or by a
    /// runtime shutting down, is lost as before. Dropped before the response
    /// is ready, it commits nothing.
    ///
    /// An error of the inner future is passed on as is; the session is then
    /// not committed (nothing the handler wrote is saved). An adapter whose
    /// inner service can fail with an error that still becomes a response
    /// (actix-web's middlewares) maps it to an answer first, as
    /// session-actix does.
    #[must_use = "futures do nothing unless polled"]
    pub struct CommitAfter<F, R> {
        #[pin]
        inner: F,
        session: Session,
        // The response, held while its commit waits for the store.
        pending: Option<(R, Commit)>,
    }

    impl<F, R> PinnedDrop for CommitAfter<F, R> {
        fn drop(this: Pin<&mut Self>) {
            if let Some((_, commit)) = this.project().pending.take() {
                finish_detached(commit);
            }
        }
    }
}

/// How long the commit of a request nobody waits for may take in all (its
/// retries included), whatever the store timeout: a store that hangs must
/// not collect such commits for ever.
const ABANDONED_COMMIT_LIMIT: Duration = Duration::from_secs(60);

/// Finishes a commit that nobody waits for any more, on the current Tokio
/// runtime; outside one (or while it shuts down) the commit is dropped.
fn finish_detached(commit: Commit) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            match crate::deadline::within(ABANDONED_COMMIT_LIMIT, commit).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "session commit of an abandoned request failed");
                }
                Err(_) => tracing::warn!(
                    limit_s = ABANDONED_COMMIT_LIMIT.as_secs(),
                    "session commit of an abandoned request gave up"
                ),
            }
        });
    }
}

impl Session {
    /// *For adapters: handlers never call it.* Runs `response` (the inner
    /// service's future), then commits this session: what a framework
    /// adapter wraps around every request.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), session_core::Error> {
    /// # #[derive(Debug, Default)] struct MyStore;
    /// # #[session_core::async_trait] impl session_core::Store for MyStore {
    /// #   async fn load(&self, _: &session_core::RecordId) -> Result<Option<session_core::Record>, session_core::StoreError> { Ok(None) }
    /// #   async fn create(&self, _: &session_core::Record) -> Result<session_core::Created, session_core::StoreError> { Ok(session_core::Created::Created) }
    /// #   async fn save(&self, _: &session_core::Record, _: u64) -> Result<session_core::Saved, session_core::StoreError> { Ok(session_core::Saved::Missing) }
    /// #   async fn touch(&self, _: &session_core::RecordId, _: u64, _: Option<&str>, _: session_core::Timestamp) -> Result<bool, session_core::StoreError> { Ok(false) }
    /// #   async fn delete(&self, _: &session_core::RecordId) -> Result<(), session_core::StoreError> { Ok(()) }
    /// #   async fn delete_expired(&self) -> Result<u64, session_core::StoreError> { Ok(0) }
    /// #   async fn ids_of_owner(&self, _: &str) -> Result<Vec<session_core::RecordId>, session_core::StoreError> { Ok(vec![]) }
    /// #   async fn delete_owner(&self, _: &str) -> Result<u64, session_core::StoreError> { Ok(0) }
    /// #   async fn delete_all(&self) -> Result<u64, session_core::StoreError> { Ok(0) }
    /// # }
    /// use session_core::{Config, Manager, SetCookie};
    ///
    /// let manager = Manager::new(MyStore, Config::default());
    /// let session = manager.session_from_cookies(std::iter::empty());
    /// let handler = {
    ///     let session = session.clone();
    ///     async move {
    ///         session.insert("name", "iris").await?;
    ///         Ok::<_, session_core::Error>("the response")
    ///     }
    /// };
    /// let (response, outcome) = session.commit_after(handler).await?;
    /// assert_eq!(response, "the response");
    /// assert!(matches!(outcome?, SetCookie::Set { .. }));
    /// # Ok(())
    /// # }
    /// ```
    pub fn commit_after<F, R, E>(self, response: F) -> CommitAfter<F, R>
    where
        F: Future<Output = std::result::Result<R, E>>,
    {
        CommitAfter {
            inner: response,
            session: self,
            pending: None,
        }
    }
}

impl<F, R> CommitAfter<F, R> {
    /// The session being committed.
    pub fn session(&self) -> &Session {
        &self.session
    }
}

impl<F, R> fmt::Debug for CommitAfter<F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommitAfter")
            .field("session", &self.session)
            .field("committing", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, R, E> Future for CommitAfter<F, R>
where
    F: Future<Output = std::result::Result<R, E>>,
{
    type Output = std::result::Result<(R, Result<SetCookie>), E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let (response, mut commit) = match this.pending.take() {
            Some(pending) => pending,
            None => {
                let response = ready!(this.inner.as_mut().poll(cx))?;
                if let Some(outcome) = this.session.commit_without_store() {
                    return Poll::Ready(Ok((response, Ok(outcome))));
                }
                let session = this.session.clone();
                let commit: Commit = Box::pin(async move { session.commit().await });
                (response, commit)
            }
        };
        match commit.as_mut().poll(cx) {
            Poll::Ready(outcome) => Poll::Ready(Ok((response, outcome))),
            Poll::Pending => {
                *this.pending = Some((response, commit));
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::{pin, Pin};
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use crate::testing::{Instrumented, TestStore};
    use crate::{Config, Manager, Session, SetCookie};

    fn manager() -> (Instrumented<TestStore>, Manager) {
        let store = Instrumented::new(TestStore::default());
        let manager = Manager::new(store.clone(), Config::default());
        (store, manager)
    }

    #[tokio::test]
    async fn an_unused_session_finishes_with_the_response_and_no_store_call() {
        let (store, manager) = manager();
        let session = manager.session_from_cookies(std::iter::empty());
        let mut after = pin!(session.commit_after(async { Ok::<_, ()>("response") }));
        let mut cx = Context::from_waker(Waker::noop());
        let Poll::Ready(Ok((response, outcome))) = after.as_mut().poll(&mut cx) else {
            panic!("an unused session must finish on the first poll");
        };
        assert_eq!(response, "response");
        assert_eq!(outcome.unwrap(), SetCookie::Unchanged);
        assert_eq!(store.counts().total(), 0);
    }

    /// `session`'s handler inserts a value, waits for `wait` and answers 7:
    /// its [`CommitAfter`](super::CommitAfter), polled once and pending.
    fn started(
        session: &Session,
        wait: impl Future<Output = ()>,
    ) -> Pin<Box<super::CommitAfter<impl Future<Output = crate::Result<i32>>, i32>>> {
        let handler = {
            let session = session.clone();
            async move {
                session.insert("name", "iris").await?;
                wait.await;
                Ok(7)
            }
        };
        let mut after = Box::pin(session.clone().commit_after(handler));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(after.as_mut().poll(&mut cx).is_pending());
        after
    }

    #[tokio::test]
    async fn a_commit_that_waits_for_the_store_keeps_the_response() {
        let (store, manager) = manager();
        store.delay(Some(Duration::from_millis(20)));
        let session = manager.session_from_cookies(std::iter::empty());
        let (response, outcome) = started(&session, async {}).await.unwrap();
        assert_eq!(response, 7);
        assert!(matches!(outcome.unwrap(), SetCookie::Set { .. }));
        assert_eq!(store.counts().create, 1);
    }

    #[tokio::test]
    async fn a_commit_under_way_when_the_request_is_dropped_still_lands() {
        let (store, manager) = manager();
        store.delay(Some(Duration::from_millis(20)));
        let session = manager.session_from_cookies(std::iter::empty());
        // The client went away: the server drops the request's future.
        drop(started(&session, async {}));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(store.inner().len(), 1, "the handler's write was lost");
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_commit_gives_up_after_a_minute_even_without_a_store_timeout() {
        let store = Instrumented::new(TestStore::default());
        let config = Config::builder().with_store_timeout(Duration::MAX);
        let manager = Manager::new(store.clone(), config.build().unwrap());
        store.delay(Some(Duration::from_secs(3600)));
        let session = manager.session_from_cookies(std::iter::empty());
        drop(started(&session, async {}));
        tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
        assert_eq!(
            store.inner().len(),
            0,
            "the abandoned commit ran for an hour"
        );
    }

    #[tokio::test]
    async fn a_request_dropped_before_its_response_commits_nothing() {
        let (store, manager) = manager();
        let session = manager.session_from_cookies(std::iter::empty());
        drop(started(&session, std::future::pending()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(store.counts().total(), 0);
    }

    #[tokio::test]
    async fn a_failed_handler_commits_nothing() {
        let (store, manager) = manager();
        let session = manager.session_from_cookies(std::iter::empty());
        let handler = {
            let session = session.clone();
            async move {
                session.insert("name", "iris").await.unwrap();
                Err::<(), _>("handler failed")
            }
        };
        assert_eq!(
            session.commit_after(handler).await.unwrap_err(),
            "handler failed"
        );
        assert_eq!(store.counts().total(), 0);
    }

    #[tokio::test]
    async fn a_failed_commit_is_reported_with_the_response() {
        let (store, manager) = manager();
        store.fail_with(Some(crate::StoreErrorKind::Unavailable));
        let session = manager.session_from_cookies(std::iter::empty());
        let handler = {
            let session = session.clone();
            async move {
                session.insert("name", "iris").await?;
                Ok::<_, crate::Error>("response")
            }
        };
        let (response, outcome) = session.commit_after(handler).await.unwrap();
        assert_eq!(response, "response");
        assert!(outcome.is_err());
    }
}
