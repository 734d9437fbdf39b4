//! [actix-web] adapter for [`session_core`]: the [`SessionMiddleware`] and a
//! [`Session`] extractor, with the same behaviour as every other adapter.
//!
//! ```no_run
//! use actix_web::{web, App, HttpServer};
//! use session_actix::{Config, Manager, Session, SessionError, SessionMiddleware};
//! use session_memory::MemoryStore;
//!
//! async fn count(session: Session) -> Result<String, SessionError> {
//!     Ok(session.increment("count", 1).await?.to_string())
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let manager = Manager::new(MemoryStore::new(), Config::default());
//! HttpServer::new(move || {
//!     App::new()
//!         .wrap(SessionMiddleware::new(manager.clone()))
//!         .route("/count", web::get().to(count))
//! })
//! .bind(("127.0.0.1", 8080))?
//! .run()
//! .await
//! # }
//! ```
//!
//! The middleware reads the id from the request (cookie, or the configured
//! header), puts a lazy [`session_core::Session`] in the request extensions,
//! runs the handler, then commits the session: nothing at all for a request
//! that did not use it, otherwise one store write at most when no other
//! request writes the session at the same time (each lost compare-and-set
//! adds a reload and another save, up to the configured retries). When the id
//! must change on the client it adds `Set-Cookie` (or the header),
//! `Cache-Control: no-store` and `Vary`. If the commit fails, the response
//! becomes a bare, uncacheable error with the status a handler's `SessionError`
//! would give for the same error, [`session_core::Error::http_status`]: `503
//! Service Unavailable` for a store that is down, too slow or too contended. (A
//! session that another request ended meanwhile is not a failure: the response
//! removes its cookie.) The error is logged; store errors never reach a
//! response body. If this request had already stored the session under a new id
//! (`login`), the error response still carries it; after `destroy`, the
//! cookie's removal.
//!
//! A handler that panics saves none of its deferred changes. actix-web does
//! not catch the panic: it unwinds through the middleware and ends the
//! connection's task, so the client gets no response at all, not even the
//! new id of a `login` made before the panic (what was already stored, such
//! as that login's new record, stays stored).
//!
//! # A network store: one connection per worker
//!
//! actix-web runs each worker on a single-threaded runtime of its own. A
//! Redis store connected in `main` keeps its connection's I/O on the main
//! thread, so every request of every worker crosses threads twice to reach
//! Redis. Build the store and the manager in the app factory instead, with
//! `RedisStore::connect_lazy`, which needs no `.await`: each worker then has
//! its own connection on its own thread (BENCHMARKS.md in the repository
//! measures the difference). Keep one shared manager for an in-process store
//! such as the memory store, which must be the same for every worker.
//!
//! ```no_run
//! use actix_web::{App, HttpServer};
//! use session_actix::{Config, Manager, SessionMiddleware};
//! use session_redis::RedisStore;
//!
//! # async fn run() -> std::io::Result<()> {
//! HttpServer::new(|| {
//!     let store = RedisStore::connect_lazy("redis://127.0.0.1:6379").expect("a valid URL");
//!     App::new().wrap(SessionMiddleware::new(Manager::new(store, Config::default())))
//! })
//! .bind(("127.0.0.1", 8080))?
//! .run()
//! .await
//! # }
//! ```
//!
//! [actix-web]: https://docs.rs/actix-web/4

use std::borrow::Cow;
use std::fmt;
use std::future::{ready, Future, Ready};
use std::ops::Deref;
use std::pin::Pin;
use std::task::{self, Context, Poll};

use actix_web::body::EitherBody;
use actix_web::dev::{forward_ready, Payload, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue, CACHE_CONTROL};
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use pin_project_lite::pin_project;
use session_core::CommitAfter;

/// The core crate, re-exported: an app depends on this adapter and a store
/// crate, and names core types (`session_core::Error` in its own error
/// type, say) through this path.
pub use session_core;
/// Re-exported from [`session_core`]: what building the manager and
/// configuring sessions take.
pub use session_core::{
    Config, CookieKeys, CookieSecurity, Key, Lifetime, Manager, SameSite, SessionView, Sweeper,
};

/// Adds sessions to every request of the app (or scope) it wraps.
///
/// A request that already has a session of the same manager, from a
/// [`SessionMiddleware`] further out (the app's, around a scope that wraps
/// one too), keeps it: the outer middleware loads and commits it, once. A
/// middleware of another manager gives the services inside it a session of
/// its own. Build the manager once and give every middleware a clone: two
/// managers built alike are two, and where they carry the id in one cookie
/// each middleware answers a cookie of that name (logged as a warning,
/// [`Manager::defers_to`]).
#[derive(Clone, Debug)]
pub struct SessionMiddleware {
    manager: Manager,
}

impl SessionMiddleware {
    /// A middleware handing out sessions of `manager`.
    pub fn new(manager: Manager) -> Self {
        Self { manager }
    }
}

impl<S, B> Transform<S, ServiceRequest> for SessionMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = SessionService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(SessionService {
            service,
            manager: self.manager.clone(),
        }))
    }
}

/// The service [`SessionMiddleware`] produces.
#[derive(Debug)]
pub struct SessionService<S> {
    service: S,
    manager: Manager,
}

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    let values = match known_name(name) {
        Some(known) => headers.get_all(known),
        None => headers.get_all(name),
    };
    // UTF-8, not just visible ASCII (`to_str`), and `Cookie` cookie by
    // cookie where the whole is not (see `header_text`).
    session_core::header_text(name, values.map(HeaderValue::as_bytes))
}

fn header_joined(headers: &HeaderMap, name: &str) -> Option<String> {
    session_core::join_header_values(header_values(headers, name))
}

/// The names the session reads and writes, as constants: no parsing on the
/// hot path.
fn known_name(name: &str) -> Option<HeaderName> {
    match name {
        "cookie" => Some(header::COOKIE),
        "set-cookie" => Some(header::SET_COOKIE),
        "cache-control" => Some(header::CACHE_CONTROL),
        "vary" => Some(header::VARY),
        _ => None,
    }
}

/// Writes the headers the commit outcome calls for.
#[inline]
fn write_headers(manager: &Manager, outcome: &session_core::SetCookie, headers: &mut HeaderMap) {
    // Most responses: nothing to write, decided without a call.
    if *outcome == session_core::SetCookie::Unchanged {
        return;
    }
    for update in manager.response_headers(outcome, |name| header_joined(headers, name)) {
        let name = known_name(&update.name)
            .map_or_else(|| HeaderName::from_bytes(update.name.as_bytes()), Ok);
        let value = match update.value {
            Cow::Borrowed(v) => HeaderValue::from_str(v),
            // Moved into the header without a copy.
            Cow::Owned(v) => HeaderValue::try_from(v),
        };
        let (Ok(name), Ok(value)) = (name, value) else {
            tracing::error!(header = %update.name, "session header value is not valid in HTTP; not sent");
            continue;
        };
        if update.append {
            headers.append(name, value);
        } else {
            headers.insert(name, value);
        }
    }
}

impl<S, B> Service<ServiceRequest> for SessionService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = ResponseFuture<S::Future, B>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        // A middleware of this manager outside this one (the app's, around a
        // scope that wraps it again) has the session and commits it: a
        // second would load and commit it again, and answer a cookie of its
        // own.
        let outer = req
            .extensions()
            .get::<session_core::Session>()
            .is_some_and(|outer| self.manager.defers_to(outer));
        if outer {
            return ResponseFuture {
                inner: Inner::Outer {
                    response: self.service.call(req),
                },
            };
        }
        let session = self
            .manager
            .session_from_request(|name| header_values(req.headers(), name));
        req.extensions_mut().insert(session.clone());
        ResponseFuture {
            inner: Inner::Commit {
                commit: session.commit_after(Answered {
                    inner: self.service.call(req),
                }),
            },
        }
    }
}

/// What the inner service answered: a response, or the error of a
/// middleware inside [`SessionMiddleware`] (an authorization check that
/// turns the request away, say). Both are committed: the session such a
/// middleware changed is saved, and its headers ride on the error's
/// response.
enum Answer<B> {
    Response(ServiceResponse<B>),
    Error(actix_web::Error),
}

pin_project! {
    /// The inner service's future, answering an [`Answer`] either way.
    struct Answered<F> {
        #[pin]
        inner: F,
    }
}

impl<F, B> Future for Answered<F>
where
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
{
    type Output = Result<Answer<B>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(Ok(match task::ready!(self.project().inner.poll(cx)) {
            Ok(response) => Answer::Response(response),
            Err(error) => Answer::Error(error),
        }))
    }
}

pin_project! {
    /// The future of [`SessionService`]: the inner response with the session
    /// committed ([`session_core::CommitAfter`]: for a request that did not
    /// use the session, or only read it, the commit allocates nothing; the
    /// session itself is one allocation per request). Under an outer
    /// middleware of the same manager, the inner response as it is: the
    /// outer middleware commits.
    pub struct ResponseFuture<F, B> {
        #[pin]
        inner: Inner<F, B>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<F, B> {
        Commit { #[pin] commit: CommitAfter<Answered<F>, Answer<B>> },
        Outer { #[pin] response: F },
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Commit { commit } => commit.fmt(f),
            Inner::Outer { .. } => f.write_str("ResponseFuture(committed by the outer middleware)"),
        }
    }
}

impl<F, B> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
{
    type Output = Result<ServiceResponse<EitherBody<B>>, actix_web::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut inner = match self.project().inner.project() {
            InnerProj::Commit { commit } => commit,
            InnerProj::Outer { response } => {
                return response
                    .poll(cx)
                    .map_ok(ServiceResponse::map_into_left_body)
            }
        };
        let (answer, outcome) = match task::ready!(inner.as_mut().poll(cx)) {
            Ok(answered) => answered,
            Err(never) => match never {},
        };
        let session = inner.as_ref().get_ref().session();
        let manager = session.manager();
        Poll::Ready(match (answer, outcome) {
            (Answer::Response(mut response), Ok(outcome)) => {
                write_headers(manager, &outcome, response.headers_mut());
                Ok(response.map_into_left_body())
            }
            (Answer::Response(response), Err(error)) => Ok(response
                .into_response(failed_commit(session, &error))
                .map_into_right_body()),
            // Nothing for the client to learn: the error as it came, so
            // that the middlewares outside find their own error type.
            (Answer::Error(error), Ok(session_core::SetCookie::Unchanged)) => Err(error),
            // The error's own response, with the session's headers: as an
            // error still, for the middlewares outside this one.
            (Answer::Error(error), Ok(outcome)) => Err(CommittedError {
                error,
                manager: manager.clone(),
                outcome,
                failed_commit: None,
            }
            .into()),
            (Answer::Error(inner), Err(error)) => {
                tracing::warn!(error = %inner, "a middleware inside the session middleware answered an error");
                let status = error.status_code();
                tracing::error!(%error, %status, "session could not be committed");
                Err(CommittedError {
                    error: inner,
                    manager: manager.clone(),
                    outcome: session.failed_commit_outcome(),
                    failed_commit: Some(status),
                }
                .into())
            }
        })
    }
}

/// The error a middleware inside [`SessionMiddleware`] answered, after the
/// session was committed: it answers the error's own status and response
/// with the session's headers added (a new id, a removed cookie), however
/// often it is asked; if the commit failed, the failed commit's bare,
/// uncacheable status instead, as every failed commit answers. Middlewares
/// outside that look for their own error types find them with
/// [`CommittedError::inner`]. (An error that leaves the client's cookie as
/// it is reaches them as it came, without this wrapper.)
pub struct CommittedError {
    error: actix_web::Error,
    manager: Manager,
    outcome: session_core::SetCookie,
    /// The commit failed too, with this status: the response is the failed
    /// commit's.
    failed_commit: Option<StatusCode>,
}

impl CommittedError {
    /// The error the inner middleware answered (also when the commit failed
    /// and the response is the commit's).
    pub fn inner(&self) -> &actix_web::Error {
        &self.error
    }
}

impl fmt::Debug for CommittedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.error, f)
    }
}

impl fmt::Display for CommittedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl ResponseError for CommittedError {
    fn status_code(&self) -> StatusCode {
        self.failed_commit
            .unwrap_or_else(|| self.error.as_response_error().status_code())
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = match self.failed_commit {
            Some(status) => HttpResponse::build(status)
                .insert_header((CACHE_CONTROL, "no-store"))
                .finish(),
            None => self.error.error_response(),
        };
        write_headers(&self.manager, &self.outcome, response.headers_mut());
        response
    }
}

/// The response to a failed commit: the error's status, no body, and what
/// the client must still learn ([`session_core::Session::failed_commit_outcome`]).
fn failed_commit(session: &session_core::Session, error: &session_core::Error) -> HttpResponse {
    let status = error.status_code();
    tracing::error!(%error, %status, "session could not be committed");
    let mut failed = HttpResponse::build(status)
        .insert_header((CACHE_CONTROL, "no-store"))
        .finish();
    let outcome = session.failed_commit_outcome();
    write_headers(session.manager(), &outcome, failed.headers_mut());
    failed
}

/// The session of the current request, as an actix-web extractor. Derefs to
/// [`session_core::Session`].
///
/// Extracting it costs nothing; the store is read the first time a method
/// needs the data.
#[derive(Clone, Debug)]
pub struct Session(pub session_core::Session);

impl Deref for Session {
    type Target = session_core::Session;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl FromRequest for Session {
    type Error = MissingMiddleware;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(req.session().ok_or(MissingMiddleware))
    }
}

/// The owner the request's session is signed in as
/// ([`login`](session_core::Session::login)),
/// as an extractor: a route that takes it answers `401 Unauthorized` to a
/// request whose session has no owner, before the handler runs.
///
/// ```
/// use session_actix::SignedIn;
///
/// async fn dashboard(SignedIn(user): SignedIn) -> String {
///     format!("Hello, {user}")
/// }
/// # let _ = actix_web::web::get().to(dashboard);
/// ```
///
/// For a route open to visitors too, take the [`Session`] and read
/// [`owner`](session_core::Session::owner): actix-web's `Option<T>`
/// extractor turns every error into `None`, a store that is down included.
/// Its error is [`NotSignedIn`]: the 401, the session's error (a store that
/// is down: [`SessionError`]'s status), or [`MissingMiddleware`]'s 500.
#[derive(Debug, Clone, PartialEq, Eq)]
#[doc(alias("CurrentUser", "AuthUser", "login_required"))]
pub struct SignedIn(pub String);

/// Why a [`SignedIn`] extractor refused the request.
#[derive(Debug, thiserror::Error)]
pub enum NotSignedIn {
    /// The session has no owner: `401 Unauthorized`.
    #[error("not signed in")]
    Anonymous,
    /// The session could not be read.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// No [`SessionMiddleware`] on the route.
    #[error(transparent)]
    MissingMiddleware(#[from] MissingMiddleware),
}

impl ResponseError for NotSignedIn {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Anonymous => StatusCode::UNAUTHORIZED,
            Self::Session(e) => e.status_code(),
            Self::MissingMiddleware(e) => e.status_code(),
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Anonymous => HttpResponse::Unauthorized().body("Not signed in"),
            Self::Session(e) => e.error_response(),
            Self::MissingMiddleware(e) => e.error_response(),
        }
    }
}

impl FromRequest for SignedIn {
    type Error = NotSignedIn;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let session = req.session();
        Box::pin(async move {
            let session = session.ok_or(MissingMiddleware)?;
            match session.owner().await {
                Ok(Some(owner)) => Ok(Self(owner)),
                Ok(None) => Err(NotSignedIn::Anonymous),
                Err(e) => Err(SessionError(e).into()),
            }
        })
    }
}

/// The session of a request outside an extractor: in your own middleware
/// (inside [`SessionMiddleware`]) or from an `HttpRequest`; like
/// actix-session's `get_session`, but `None` where no [`SessionMiddleware`]
/// wraps the service. A middleware outside [`SessionMiddleware`] that reads
/// the session from the response's request after the inner service answered
/// runs after the commit: its deferred writes (`insert`, `remove`, `clear`)
/// are not saved (an `update` or `increment` still writes at once).
///
/// ```
/// use actix_web::HttpRequest;
/// use session_actix::SessionExt;
///
/// async fn handler(req: HttpRequest) -> String {
///     match req.session() {
///         Some(s) => s.get_string("name").await.unwrap_or_default(),
///         None => "no sessions here".to_owned(),
///     }
/// }
/// # let _ = actix_web::App::new().route("/", actix_web::web::get().to(handler));
/// ```
///
/// Not in a guard: a guard cannot await the store, so it could learn only
/// that the middleware is there, never what the session holds.
#[doc(alias = "get_session")]
pub trait SessionExt {
    /// The request's session, or `None` without [`SessionMiddleware`].
    ///
    /// A handle for the handler (or a middleware inside
    /// [`SessionMiddleware`]): dropped by a panic unwinding, it keeps the
    /// handler's deferred changes from being committed
    /// ([`session_core::Session::for_handler`]).
    #[doc(alias = "get_session")]
    fn session(&self) -> Option<Session>;
}

fn session_in(extensions: &actix_web::dev::Extensions) -> Option<Session> {
    extensions
        .get::<session_core::Session>()
        .map(|s| Session(s.for_handler()))
}

impl SessionExt for HttpRequest {
    fn session(&self) -> Option<Session> {
        session_in(&self.extensions())
    }
}

impl SessionExt for ServiceRequest {
    fn session(&self) -> Option<Session> {
        session_in(&self.extensions())
    }
}

/// The session of the response's request, for a middleware inside
/// [`SessionMiddleware`] that reads it after the handler. Outside it, the
/// session is already committed: deferred writes there are not saved, and
/// a new id (`login`, `cycle_id`) does not reach the client.
impl<B> SessionExt for ServiceResponse<B> {
    fn session(&self) -> Option<Session> {
        self.request().session()
    }
}

/// The error when a handler asks for a [`Session`] on an app without
/// [`SessionMiddleware`]: a 500 that says how to fix it.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no session on this request: add `.wrap(session_actix::SessionMiddleware::new(manager))` to the App that serves this route")]
pub struct MissingMiddleware;

impl ResponseError for MissingMiddleware {
    fn status_code(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    fn error_response(&self) -> HttpResponse {
        tracing::error!("{self}");
        HttpResponse::InternalServerError().body(self.to_string())
    }
}

/// A [`session_core::Error`] as a handler error: logs it and answers a bare
/// status, [`session_core::Error::http_status`] (`503` for a store error,
/// a timeout or contention, `409` when another request ended the session,
/// `500` otherwise), never exposing the error in the body.
///
/// `session_core::Error` itself answers the same way (this crate turns on
/// session-core's feature `actix-web`), so `?` also works in a handler that
/// returns `actix_web::Result` beside other errors:
///
/// ```
/// use session_actix::Session;
///
/// async fn visits(session: Session) -> actix_web::Result<String> {
///     let n = session.increment("visits", 1).await?;
///     Ok(format!("visit {n}"))
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SessionError(#[from] pub session_core::Error);

impl ResponseError for SessionError {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        self.0.error_response()
    }
}
