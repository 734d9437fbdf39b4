//! The errors handlers see.

use std::time::Duration;

use crate::codec::CodecError;
use crate::id::RandomError;
use crate::store::StoreError;

/// Everything that can go wrong while using a session.
///
/// Messages are meant for logs; adapters answer 5xx without putting them in a
/// response body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed; the source error is kept.
    #[error("session store failed to {op}")]
    Store {
        /// The store operation (`load`, `save`, ...).
        op: &'static str,
        /// What the store reported.
        #[source]
        source: StoreError,
    },
    /// The store did not answer within the configured store timeout (or,
    /// for an update's save gathered with others, twice that): what was
    /// sent may still land.
    #[error("session store did not {op} within {after:?}")]
    Timeout {
        /// The store operation.
        op: &'static str,
        /// The limit that passed.
        after: Duration,
    },
    /// One value could not be encoded, or decoded as the requested type. Only
    /// this value is affected: the rest of the session is intact.
    ///
    /// After a deploy that changes a value's type, sessions written before it
    /// hold the old shape: a handler that answers this error with `?` answers
    /// 500 to those users until their sessions end. Treat the old value as
    /// absent instead:
    ///
    /// ```
    /// # async fn cart(session: session_core::Session) -> session_core::Result<Vec<String>> {
    /// let items: Vec<String> = match session.get("cart").await {
    ///     Ok(items) => items.unwrap_or_default(),
    ///     Err(session_core::Error::Value { .. }) => {
    ///         session.remove("cart").await?; // the old shape, dropped
    ///         Vec::new()
    ///     }
    ///     Err(e) => return Err(e),
    /// };
    /// # Ok(items) }
    /// ```
    #[error("session value {key:?} could not be {action}")]
    Value {
        /// The key of the value.
        key: String,
        /// `encoded` or `decoded`.
        action: &'static str,
        /// The codec's error.
        #[source]
        source: CodecError,
    },
    /// Another request ended this session (destroy, log out everywhere, expiry)
    /// while this one used it. Nothing was written back.
    #[error("the session was ended by another request; nothing was written back")]
    Ended,
    /// A save lost the compare-and-set race more times than the configured
    /// retries, because many requests write the same session at once; or an
    /// update waited for its session's turn (held by other updates in their
    /// store calls) longer than the store timeout. Nothing was written.
    #[error("session write gave up after {attempts} attempts: too many concurrent writes to one session")]
    Contention {
        /// How many attempts were made (saves, or an update's waits for
        /// its session's turn).
        attempts: u32,
    },
    /// An argument was refused (an empty owner, a lifetime without timeouts).
    #[error("invalid session argument: {0}")]
    Invalid(String),
    /// The OS random source failed while drawing a new id.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// A malformed id or record id from the app's own input (a "your devices"
/// page posting a record id back, an admin tool) is an invalid argument, so
/// `?` works on [`Id::parse`](crate::Id::parse) and
/// [`RecordId::parse`](crate::RecordId::parse) in a function returning
/// [`Result`].
///
/// ```
/// use session_core::{Error, RecordId};
///
/// fn parse(text: &str) -> session_core::Result<RecordId> {
///     Ok(RecordId::parse(text)?)
/// }
/// assert!(matches!(parse("not an id"), Err(Error::Invalid(_))));
/// assert_eq!(parse("not an id").unwrap_err().http_status(), 500);
/// ```
impl From<crate::id::InvalidId> for Error {
    fn from(e: crate::id::InvalidId) -> Self {
        Self::Invalid(e.to_string())
    }
}

/// `Result` with the session [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The HTTP status every adapter answers with when a handler returns this
    /// error: 503 for a store error or timeout and for [`Error::Contention`]
    /// (retrying later may work), 409 for [`Error::Ended`] (another request
    /// ended the session, for instance a log out everywhere: the client's
    /// state changed under it, the server did not fail), 500 otherwise.
    ///
    /// ```
    /// use session_core::Error;
    ///
    /// let e = Error::Timeout { op: "load", after: std::time::Duration::from_secs(1) };
    /// assert_eq!(e.http_status(), 503);
    /// assert_eq!(Error::Contention { attempts: 4 }.http_status(), 503);
    /// assert_eq!(Error::Ended.http_status(), 409);
    /// assert_eq!(Error::Invalid("empty owner".into()).http_status(), 500);
    /// ```
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Store { .. } | Self::Timeout { .. } | Self::Contention { .. } => 503,
            Self::Ended => 409,
            _ => 500,
        }
    }
}

/// Answers [`Error::http_status`] with a bare body that names no detail, and
/// logs the error: `session.get(..).await?` in a handler returning
/// `actix_web::Result` (feature `actix-web`, which session-actix turns on).
#[cfg(feature = "actix-web")]
impl actix_web::ResponseError for Error {
    fn status_code(&self) -> actix_web::http::StatusCode {
        actix_web::http::StatusCode::from_u16(self.http_status())
            .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> actix_web::HttpResponse {
        tracing::error!(error = %self, "session error in a handler");
        let status = self.status_code();
        actix_web::HttpResponse::build(status)
            .content_type("text/plain; charset=utf-8")
            .body(status.canonical_reason().unwrap_or("error"))
    }
}
