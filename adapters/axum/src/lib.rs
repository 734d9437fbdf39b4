//! [axum] adapter for [`session_core`]: a tower [`SessionLayer`] and a
//! [`Session`] extractor.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use session_axum::{Config, Manager, Session, SessionLayer};
//! use session_memory::MemoryStore;
//!
//! async fn set_name(session: Session) -> Result<&'static str, session_axum::SessionError> {
//!     session.insert("name", "iris").await?;
//!     Ok("set")
//! }
//!
//! async fn get_name(session: Session) -> Result<String, session_axum::SessionError> {
//!     Ok(session.get_string("name").await?)
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let manager = Manager::new(MemoryStore::new(), Config::default());
//! let app = Router::new()
//!     .route("/set", get(set_name))
//!     .route("/get", get(get_name))
//!     .layer(SessionLayer::new(manager));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await
//! # }
//! ```
//!
//! The layer reads the id from the request (cookie, or the configured header),
//! puts a lazy [`session_core::Session`] in the request extensions, runs the
//! handler, then commits the session: nothing at all for a request that did
//! not use it, otherwise one store write at most when no other request writes
//! the session at the same time (each lost compare-and-set adds a reload and
//! another save, up to the configured retries). When the id must change on
//! the client it adds `Set-Cookie` (or the header), `Cache-Control: no-store`
//! and `Vary`. If the commit fails, the response becomes a bare, uncacheable
//! error with the status a handler's `SessionError` would give for the same
//! error, [`session_core::Error::http_status`]: `503 Service Unavailable` for a
//! store that is down, too slow or too contended. (A session that another
//! request ended meanwhile is not a failure: the response removes its cookie.)
//! The error is logged; store errors never reach a response body. If this
//! request had already stored the session under a new id (`login`), the error
//! response still carries it; after `destroy`, the cookie's removal.
//!
//! An error from a service inside the layer (a `tower` middleware such as a
//! timeout, between the layer and the router) passes through as it came,
//! and the session is not committed: nothing the handler deferred is saved,
//! and a `login` made before it leaves the client on the retired id. Turn
//! such errors into responses inside the layer (axum's `HandleErrorLayer`
//! between the two), so that the session is committed with them, as
//! session-actix does for an inner middleware's error.
//!
//! A handler that panics saves none of its deferred changes. axum does not
//! catch the panic, so the client gets no response at all, not even the new
//! id of a `login` made before the panic. With `tower_http`'s
//! `CatchPanicLayer` inside the [`SessionLayer`] the client gets a 500 that
//! carries it, as on Rocket, which catches panics itself.
//!
//! # Testing handlers
//!
//! A test can start from any session state, a logged-in user say, without
//! going through the app's login route: make the session with the manager,
//! commit it, and send its cookie with the requests. The example drives the
//! router with `tower`'s `oneshot` (dev-dependency
//! `tower = { version = "0.5", features = ["util"] }`).
//!
//! ```
//! use axum::http::{header, Request};
//! use axum::{body::Body, routing::get, Router};
//! use session_axum::{Config, Manager, Session, SessionError, SessionLayer};
//! use session_memory::MemoryStore;
//! use tower::ServiceExt;
//!
//! async fn whoami(session: Session) -> Result<String, SessionError> {
//!     Ok(session.owner().await?.unwrap_or_else(|| "guest".into()))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let manager = Manager::new(MemoryStore::new(), Config::default());
//! // Alice's session, as the login route would leave it.
//! let session = manager.session_from_cookies(None::<&str>);
//! session.insert("cart", vec!["book"]).await?;
//! session.login("alice").await?;
//! let cookie = manager
//!     .cookie_header(&session.commit().await?)
//!     .expect("a new session sets its cookie"); // "session=..."
//!
//! let app = Router::new()
//!     .route("/whoami", get(whoami))
//!     .layer(SessionLayer::new(manager));
//! let request = Request::get("/whoami")
//!     .header(header::COOKIE, cookie)
//!     .body(Body::empty())?;
//! let response = app.oneshot(request).await?;
//! assert_eq!(axum::body::to_bytes(response.into_body(), 1024).await?, "alice");
//! # Ok(())
//! # }
//! ```
//!
//! # Typed sessions
//!
//! An extractor of the app's own can stand for one part of the session, so
//! that handlers never spell its key or type. Built on
//! [`update`](session_core::Session::update), its changes are exact under
//! concurrent requests.
//!
//! ```
//! use axum::extract::FromRequestParts;
//! use axum::http::request::Parts;
//! use serde::{Deserialize, Serialize};
//! use session_axum::{MissingLayer, Session, SessionError};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Cart {
//!     items: Vec<String>,
//! }
//!
//! /// The cart in the request's session.
//! struct CartSession(Session);
//!
//! impl CartSession {
//!     const KEY: &'static str = "cart";
//!
//!     async fn items(&self) -> Result<Vec<String>, SessionError> {
//!         let cart: Option<Cart> = self.0.get(Self::KEY).await?;
//!         Ok(cart.unwrap_or_default().items)
//!     }
//!
//!     async fn add(&self, item: &str) -> Result<usize, SessionError> {
//!         let cart = self
//!             .0
//!             .update(Self::KEY, |cart: Option<Cart>| {
//!                 let mut cart = cart.unwrap_or_default();
//!                 cart.items.push(item.to_owned());
//!                 cart
//!             })
//!             .await?;
//!         Ok(cart.items.len())
//!     }
//! }
//!
//! impl<S: Send + Sync> FromRequestParts<S> for CartSession {
//!     type Rejection = MissingLayer;
//!
//!     async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, MissingLayer> {
//!         Session::from_request_parts(parts, state).await.map(Self)
//!     }
//! }
//!
//! async fn add_book(cart: CartSession) -> Result<String, SessionError> {
//!     Ok(format!("{} items", cart.add("book").await?))
//! }
//!
//! async fn show(cart: CartSession) -> Result<String, SessionError> {
//!     Ok(cart.items().await?.join(", "))
//! }
//! # let _ = axum::Router::<()>::new()
//! #     .route("/add", axum::routing::post(add_book))
//! #     .route("/", axum::routing::get(show));
//! ```
//!
//! [axum]: https://docs.rs/axum

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::{HeaderMap, Request, StatusCode};
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
use tower_layer::Layer;
use tower_service::Service;

/// Adds sessions to every request of the services it wraps.
///
/// A request that already has a session of the same manager, from a
/// [`SessionLayer`] further out (on the outer router of a nested one, say),
/// keeps it: the outer layer loads and commits it, once. A layer of another
/// manager gives the services inside it a session of its own. Build the
/// manager once and give every layer a clone: two managers built alike are
/// two, and where they carry the id in one cookie each layer answers a
/// cookie of that name (logged as a warning, [`Manager::defers_to`]).
#[derive(Clone, Debug)]
#[doc(alias("SessionManagerLayer"))]
pub struct SessionLayer {
    manager: Manager,
}

impl SessionLayer {
    /// A layer handing out sessions of `manager`.
    pub fn new(manager: Manager) -> Self {
        Self { manager }
    }
}

impl<S> Layer<S> for SessionLayer {
    type Service = SessionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            manager: self.manager.clone(),
        }
    }
}

/// The service [`SessionLayer`] produces.
#[derive(Clone, Debug)]
pub struct SessionService<S> {
    inner: S,
    manager: Manager,
}

pin_project! {
    /// The future of [`SessionService`]: the inner response with the session
    /// committed ([`session_core::CommitAfter`]: for a request that did not
    /// use the session, or only read it, the commit allocates nothing; the
    /// session itself is one allocation per request). Under an outer layer
    /// of the same manager, the inner response as it is: the outer layer
    /// commits.
    pub struct ResponseFuture<F, B> {
        #[pin]
        inner: Inner<F, B>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<F, B> {
        Commit { #[pin] commit: CommitAfter<F, http::Response<B>> },
        Outer { #[pin] response: F },
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Commit { commit } => commit.fmt(f),
            Inner::Outer { .. } => f.write_str("ResponseFuture(committed by the outer layer)"),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    B: Default,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut inner = match self.project().inner.project() {
            InnerProj::Commit { commit } => commit,
            InnerProj::Outer { response } => return response.poll(cx),
        };
        let (mut response, outcome) = ready!(inner.as_mut().poll(cx))?;
        let session = inner.as_ref().get_ref().session();
        Poll::Ready(Ok(match outcome {
            Ok(outcome) => {
                write_headers(session.manager(), &outcome, response.headers_mut());
                response
            }
            Err(error) => {
                let status = status_of(&error);
                tracing::error!(%error, %status, "session could not be committed");
                let mut failed = http::Response::new(B::default());
                *failed.status_mut() = status;
                failed
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                let outcome = session.failed_commit_outcome();
                write_headers(session.manager(), &outcome, failed.headers_mut());
                failed
            }
        }))
    }
}

/// The status a session error answers, in a handler or at the commit.
fn status_of(error: &session_core::Error) -> StatusCode {
    StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn header_values<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    let values = match known_name(name) {
        Some(known) => headers.get_all(known),
        None => headers.get_all(name),
    };
    // UTF-8, not just visible ASCII (`to_str`), and `Cookie` cookie by
    // cookie where the whole is not (see `header_text`).
    session_core::header_text(name, values.into_iter().map(HeaderValue::as_bytes))
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for SessionService<S>
where
    S: Service<Request<ReqBody>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        // A layer of this manager outside this one (an outer router's, above
        // a middleware that already used the session) has the session and
        // commits it: a second would load and commit it again, and answer a
        // cookie of its own.
        if let Some(outer) = req.extensions().get::<session_core::Session>() {
            if self.manager.defers_to(outer) {
                return ResponseFuture {
                    inner: Inner::Outer {
                        response: self.inner.call(req),
                    },
                };
            }
        }
        let session = self
            .manager
            .session_from_request(|name| header_values(req.headers(), name));
        req.extensions_mut().insert(session.clone());
        ResponseFuture {
            inner: Inner::Commit {
                commit: session.commit_after(self.inner.call(req)),
            },
        }
    }
}

/// The session of the current request, as an axum extractor. Derefs to
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

impl Session {
    fn of(parts: &Parts) -> Option<Self> {
        Self::in_extensions(&parts.extensions)
    }

    fn in_extensions(extensions: &http::Extensions) -> Option<Self> {
        extensions
            .get::<session_core::Session>()
            .map(|s| Session(s.for_handler()))
    }
}

/// The session of a request, or of its parts, where no extractor runs: in
/// an `axum::middleware::from_fn` function that takes the whole request, or
/// a tower middleware, inside the [`SessionLayer`]. (The layer keeps a
/// [`session_core::Session`] in the extensions, so
/// `req.extensions().get::<session_axum::Session>()` finds nothing.)
///
/// ```
/// use axum::extract::Request;
/// use axum::http::HeaderValue;
/// use axum::middleware::{self, Next};
/// use axum::response::Response;
/// use axum::{routing::get, Router};
/// use session_axum::{Config, Manager, SessionExt, SessionLayer};
/// use session_memory::MemoryStore;
///
/// /// Tells the response whether someone is signed in.
/// async fn signed_in(req: Request, next: Next) -> Response {
///     let signed_in = match req.session() {
///         Some(session) => session.owner().await.ok().flatten().is_some(),
///         None => false,
///     };
///     let mut res = next.run(req).await;
///     let value = HeaderValue::from_static(if signed_in { "yes" } else { "no" });
///     res.headers_mut().insert("x-signed-in", value);
///     res
/// }
///
/// let manager = Manager::new(MemoryStore::new(), Config::default());
/// let app: Router = Router::new()
///     .route("/", get(|| async { "hello" }))
///     .layer(middleware::from_fn(signed_in))
///     .layer(SessionLayer::new(manager));
/// ```
pub trait SessionExt {
    /// The request's session, or `None` outside a [`SessionLayer`].
    fn session(&self) -> Option<Session>;
}

impl<B> SessionExt for Request<B> {
    fn session(&self) -> Option<Session> {
        Session::in_extensions(self.extensions())
    }
}

impl SessionExt for Parts {
    fn session(&self) -> Option<Session> {
        Session::of(self)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = MissingLayer;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Self::of(parts).ok_or(MissingLayer)
    }
}

/// `Option<Session>`: `None` on a route without a [`SessionLayer`] instead of
/// a 500, for handlers shared between routes with and without sessions.
///
/// ```
/// use session_axum::Session;
///
/// async fn greet(session: Option<Session>) -> String {
///     match session {
///         Some(s) => s.get_string("name").await.unwrap_or_default(),
///         None => "no sessions here".to_owned(),
///     }
/// }
/// # let _ = axum::Router::<()>::new().route("/", axum::routing::get(greet));
/// ```
impl<S: Send + Sync> OptionalFromRequestParts<S> for Session {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(Self::of(parts))
    }
}

/// The rejection when a handler asks for a [`Session`] on a route without a
/// [`SessionLayer`]: a 500 that says how to fix it.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no session on this request: add `.layer(session_axum::SessionLayer::new(manager))` to the router that serves this route")]
pub struct MissingLayer;

impl IntoResponse for MissingLayer {
    fn into_response(self) -> Response {
        tracing::error!("{self}");
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

/// The owner the request's session is signed in as
/// ([`login`](session_core::Session::login)),
/// as an extractor: a route that takes it answers `401 Unauthorized` to a
/// request whose session has no owner, before the handler runs.
/// `Option<SignedIn>` takes both, `None` for a visitor.
///
/// ```
/// use axum::{routing::get, Router};
/// use session_axum::SignedIn;
///
/// async fn dashboard(SignedIn(user): SignedIn) -> String {
///     format!("Hello, {user}")
/// }
///
/// async fn home(user: Option<SignedIn>) -> String {
///     match user {
///         Some(SignedIn(user)) => format!("Welcome back, {user}"),
///         None => "Welcome".to_owned(),
///     }
/// }
/// # let _ = Router::<()>::new().route("/dashboard", get(dashboard)).route("/", get(home));
/// ```
///
/// Its rejection is [`NotSignedIn`]: the 401, or the session's error (a
/// store that is down: [`SessionError`]'s status), or [`MissingLayer`]'s 500.
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
    /// No [`SessionLayer`] on the route.
    #[error(transparent)]
    MissingLayer(#[from] MissingLayer),
}

impl IntoResponse for NotSignedIn {
    fn into_response(self) -> Response {
        match self {
            Self::Anonymous => (StatusCode::UNAUTHORIZED, "Not signed in").into_response(),
            Self::Session(e) => e.into_response(),
            Self::MissingLayer(e) => e.into_response(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SignedIn {
    type Rejection = NotSignedIn;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let session = Session::of(parts).ok_or(MissingLayer)?;
        match session.owner().await {
            Ok(Some(owner)) => Ok(Self(owner)),
            Ok(None) => Err(NotSignedIn::Anonymous),
            Err(e) => Err(SessionError(e).into()),
        }
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for SignedIn {
    type Rejection = NotSignedIn;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        match <Self as FromRequestParts<S>>::from_request_parts(parts, state).await {
            Ok(signed_in) => Ok(Some(signed_in)),
            Err(NotSignedIn::Anonymous) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A [`session_core::Error`] as a handler error: logs it and answers a bare
/// status, [`session_core::Error::http_status`] (`503` for a store error,
/// a timeout or contention, `409` when another request ended the session,
/// `500` otherwise), never exposing the error in the body.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SessionError(#[from] pub session_core::Error);

impl IntoResponse for SessionError {
    fn into_response(self) -> Response {
        tracing::error!(error = %self.0, "session error in a handler");
        let status = status_of(&self.0);
        (status, status.canonical_reason().unwrap_or("error")).into_response()
    }
}
