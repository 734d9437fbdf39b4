//! [Rocket] adapter for [`session_core`]: the [`SessionFairing`] and a
//! [`Session`] request guard, with the same behaviour as every other adapter.
//!
//! ```no_run
//! use rocket::{get, routes};
//! use session_memory::MemoryStore;
//! use session_rocket::{Config, Manager, Session, SessionError, SessionFairing};
//!
//! #[get("/count")]
//! async fn count(session: Session) -> Result<String, SessionError> {
//!     Ok(session.increment("count", 1).await?.to_string())
//! }
//!
//! # async fn run() -> Result<(), rocket::Error> {
//! let manager = Manager::new(MemoryStore::new(), Config::default());
//! rocket::build()
//!     .attach(SessionFairing::new(manager))
//!     .mount("/", routes![count])
//!     .launch()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! The fairing reads the id from the request (cookie, or the configured
//! header) and keeps a lazy [`session_core::Session`] in the request's local
//! cache; after the handler it commits the session: nothing at all for a
//! request that did not use it, otherwise one store write at most when no
//! other request writes the session at the same time (each lost
//! compare-and-set adds a reload and another save, up to the configured
//! retries). When the id must change on the client it adds `Set-Cookie` (or
//! the header), `Cache-Control: no-store` and `Vary`. If the commit fails, the
//! response becomes a bare, uncacheable error with the status a handler's
//! `SessionError` would give for the same error,
//! [`session_core::Error::http_status`]: `503 Service Unavailable` for a store
//! that is down, too slow or too contended. (A session that another request
//! ended meanwhile is not a failure: the response removes its cookie.) The
//! error is logged; store errors never reach a response body. If this request
//! had already stored the session under a new id (`login`), the error response
//! still carries it; after `destroy`, the cookie's removal.
//!
//! A route that takes a [`Session`] on a Rocket without the fairing does not
//! launch: the guard is a [`Sentinel`] that names the missing fairing. So
//! does one that takes `Option<Session>` (Rocket's sentinel for an `Option`
//! is its content's), where axum and actix-web give `None`. A guard of your
//! own that asks for the session (`req.guard::<Session>()`) should implement
//! [`Sentinel`] by calling `Session::abort`, or a Rocket without the fairing
//! launches and answers its routes with a bare 500. Attaching the fairing
//! twice is harmless: the second replaces the first.
//!
//! Rocket drops a header value that is not UTF-8 before any fairing sees it.
//! A `Cookie` header that carries another app's cookie in another encoding
//! (a Latin-1 `ü`, say) beside the session's therefore reaches the fairing
//! as no cookie at all, and the request starts a new session; axum and
//! actix-web read such a header cookie by cookie and find the session.
//!
//! [Rocket]: https://docs.rs/rocket/0.5

use std::io::Cursor;
use std::ops::Deref;

use rocket::fairing::{self, Fairing, Info, Kind};
use rocket::http::{Cookie, Header, Status};
use rocket::request::{FromRequest, Outcome};
use rocket::response::{self, Responder};
use rocket::{Build, Data, Ignite, Request, Response, Rocket, Sentinel};

/// The core crate, re-exported: an app depends on this adapter and a store
/// crate, and names core types (`session_core::Error` in its own error
/// type, say) through this path.
pub use session_core;
/// Re-exported from [`session_core`]: what building the manager and
/// configuring sessions take.
pub use session_core::{
    Config, CookieKeys, CookieSecurity, Key, Lifetime, Manager, SameSite, SessionView, Sweeper,
};

/// Adds sessions to every request of the Rocket it is attached to.
///
/// When the session cannot be committed after the handler (the store is
/// down, say), the fairing answers a bare error (503, or 500) with
/// `Cache-Control: no-store` in place of the handler's response. Rocket
/// runs response fairings in the order they were attached, so attach this
/// one before fairings that add response headers (CORS, security headers):
/// theirs are then added to that error response too, where the headers of
/// a fairing attached before it go with the handler's response. Rocket
/// attaches its own [`Shield`](rocket::shield::Shield) (security headers)
/// first: attach `Shield::default()` again after this fairing (it is a
/// singleton, so it moves) for that error to carry them too. A response
/// fairing attached after it runs after the commit: what it changes in the
/// session through deferred writes (`insert`, `remove`, `clear`) is not
/// saved (an `update` or `increment` still writes at once).
#[derive(Clone, Debug)]
pub struct SessionFairing {
    manager: Manager,
}

impl SessionFairing {
    /// A fairing handing out sessions of `manager`.
    pub fn new(manager: Manager) -> Self {
        Self { manager }
    }
}

/// Managed state that tells the [`Session`] sentinel the fairing is attached.
struct Attached;

/// The request's session, in the request's local cache. Rocket fills a
/// request's cache slot once, with whatever asks first: a fairing attached
/// before [`SessionFairing`] that asks for the [`Session`] guard gets there
/// first (and finds no session yet), so the slot holds a cell that the
/// session fairing fills in, not the session itself.
struct RequestSession(std::sync::OnceLock<session_core::Session>);

/// The request's session slot, created empty by whatever asks first.
fn slot<'r>(req: &'r Request<'_>) -> &'r std::sync::OnceLock<session_core::Session> {
    &req.local_cache(|| RequestSession(std::sync::OnceLock::new()))
        .0
}

fn header_joined(res: &Response<'_>, name: &str) -> Option<String> {
    session_core::join_header_values(res.headers().get(name))
}

#[rocket::async_trait]
impl Fairing for SessionFairing {
    fn info(&self) -> Info {
        Info {
            name: "session",
            // Singleton: attached twice (a shared base Rocket, say), the
            // second replaces the first instead of failing at ignite.
            kind: Kind::Ignite | Kind::Request | Kind::Response | Kind::Singleton,
        }
    }

    async fn on_ignite(&self, rocket: Rocket<Build>) -> fairing::Result {
        Ok(rocket.manage(Attached))
    }

    async fn on_request(&self, req: &mut Request<'_>, _: &mut Data<'_>) {
        let config = self.manager.config();
        let name = config.cookie_name();
        let in_headers = session_core::cookie_values(req.headers().get("Cookie"), name)
            .next()
            .is_some();
        let session =
            if config.header().is_none() && !in_headers && !jar_named_from_headers(req, name) {
                // Rocket's local client (`Client::tracked`, `LocalRequest::cookie`)
                // puts cookies in the request's jar without a `Cookie` header (a
                // test may add one of its own beside them), where a request from
                // the network has them in its headers: read the jar, but none of
                // its cookies that came from the headers under another name.
                let pairs: Vec<String> = (req.cookies().iter())
                    .filter(|c| c.name() == name)
                    .map(|c| format!("{name}={}", c.value()))
                    .collect();
                let header = pairs.join("; ");
                (self.manager).session_from_cookies((!header.is_empty()).then_some(header.as_str()))
            } else {
                self.manager
                    .session_from_request(|name| req.headers().get(name))
            };
        // Already filled only if this fairing ran twice on one request,
        // which `Kind::Singleton` rules out; the first session stays.
        let _ = slot(req).set(session);
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        let Some(session) = slot(req).get() else {
            return;
        };
        match session.commit().await {
            Ok(outcome) => write_headers(&self.manager, &outcome, res),
            Err(error) => {
                let status = status_of(&error);
                tracing::error!(%error, %status, "session could not be committed");
                let mut failed = Response::build()
                    .status(status)
                    .raw_header("Cache-Control", "no-store")
                    .finalize();
                failed.set_sized_body(0, Cursor::new(""));
                *res = failed;
                write_headers(&self.manager, &session.failed_commit_outcome(), res);
            }
        }
    }
}

fn write_headers(manager: &Manager, outcome: &session_core::SetCookie, res: &mut Response<'_>) {
    for update in manager.response_headers(outcome, |name| header_joined(res, name)) {
        let header = Header::new(update.name, update.value);
        if update.append {
            res.adjoin_header(header);
        } else {
            res.set_header(header);
        }
    }
}

/// The session of the current request, as a Rocket request guard. Derefs to
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

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Session {
    type Error = MissingFairing;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        match slot(req).get() {
            Some(session) => Outcome::Success(Session(session.for_handler())),
            None => {
                tracing::error!("{MissingFairing}");
                Outcome::Error((Status::InternalServerError, MissingFairing))
            }
        }
    }
}

impl Sentinel for Session {
    fn abort(rocket: &Rocket<Ignite>) -> bool {
        if rocket.state::<Attached>().is_none() {
            tracing::error!("{MissingFairing}");
            return true;
        }
        false
    }
}

/// The owner the request's session is signed in as
/// ([`login`](session_core::Session::login)),
/// as a request guard: a route that takes it fails with `401 Unauthorized`
/// (Rocket's catcher for it answers) when the session has no owner, before
/// the handler runs.
///
/// ```
/// use rocket::get;
/// use session_rocket::SignedIn;
///
/// #[get("/dashboard")]
/// fn dashboard(user: SignedIn) -> String {
///     format!("Hello, {}", user.0)
/// }
/// ```
///
/// For a route open to visitors too, take the [`Session`] and read
/// [`owner`](session_core::Session::owner): Rocket's `Option<T>` guard turns
/// every failure into `None`, a store that is down included. A store error
/// fails with [`SessionError`]'s status (`503` when the store is down).
#[derive(Debug, Clone, PartialEq, Eq)]
#[doc(alias("CurrentUser", "AuthUser", "login_required"))]
pub struct SignedIn(pub String);

/// Why a [`SignedIn`] guard failed.
#[derive(Debug, thiserror::Error)]
pub enum NotSignedIn {
    /// The session has no owner: `401 Unauthorized`.
    #[error("not signed in")]
    Anonymous,
    /// The session could not be read.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// No [`SessionFairing`] on the Rocket.
    #[error(transparent)]
    MissingFairing(#[from] MissingFairing),
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for SignedIn {
    type Error = NotSignedIn;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let session = match Session::from_request(req).await {
            Outcome::Success(session) => session,
            Outcome::Error((status, missing)) => return Outcome::Error((status, missing.into())),
            Outcome::Forward(status) => return Outcome::Forward(status),
        };
        match session.owner().await {
            Ok(Some(owner)) => Outcome::Success(Self(owner)),
            Ok(None) => Outcome::Error((Status::Unauthorized, NotSignedIn::Anonymous)),
            Err(e) => {
                tracing::error!(error = %e, "session error in a request guard");
                Outcome::Error((status_of(&e), SessionError(e).into()))
            }
        }
    }
}

/// Whether Rocket filled the request's jar with a cookie called `name` from
/// its `Cookie` headers. Rocket percent-decodes the names it reads there and
/// trims Unicode whitespace from them, so `%73ession=…` or `session` beside a
/// no-break space lands in the jar as `session`: a cookie browsers keep apart
/// from the session's (the `__Host-` and `__Secure-` rules hold only for names
/// that carry the prefix byte for byte, so a sibling subdomain can plant
/// `%5F%5FHost-session`), never read as it.
fn jar_named_from_headers(req: &Request<'_>, name: &str) -> bool {
    (req.headers().get("Cookie"))
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| Cookie::parse_encoded(pair.trim()).ok())
        .any(|cookie| cookie.name() == name)
}

/// A route asks for a [`Session`] but the Rocket has no [`SessionFairing`].
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no session on this request: attach `session_rocket::SessionFairing::new(manager)` to the Rocket")]
pub struct MissingFairing;

/// The status a session error answers, in a handler or at the commit.
fn status_of(error: &session_core::Error) -> Status {
    Status::from_code(error.http_status()).unwrap_or(Status::InternalServerError)
}

/// A [`session_core::Error`] as a handler error: logs it and answers a bare
/// status, [`session_core::Error::http_status`] (`503` for a store error,
/// a timeout or contention, `409` when another request ended the session,
/// `500` otherwise), never exposing the error in the body.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SessionError(#[from] pub session_core::Error);

impl<'r> Responder<'r, 'static> for SessionError {
    fn respond_to(self, _: &'r Request<'_>) -> response::Result<'static> {
        tracing::error!(error = %self.0, "session error in a handler");
        let status = status_of(&self.0);
        let text = status.reason().unwrap_or("error");
        Response::build()
            .status(status)
            .header(rocket::http::ContentType::Plain)
            .sized_body(text.len(), Cursor::new(text))
            .ok()
    }
}
