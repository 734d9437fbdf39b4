//! Another session of the same owner, read-only: what a "your devices" page
//! lists.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use time::OffsetDateTime;

use crate::codec::{self, Codec};
use crate::error::Result;
use crate::id::RecordId;
use crate::record::{Lifetime, Record};
use crate::session::{is_value_key, Session};
use crate::timestamp::Timestamp;

/// A live session of an owner as the store holds it, from
/// [`Manager::load_sessions_of`](crate::Manager::load_sessions_of): when it
/// started, when it was last seen, and its values, for a page that lists a
/// user's devices and lets them end one
/// ([`Manager::destroy_session_of`](crate::Manager::destroy_session_of)).
///
/// It is a copy taken when loaded; nothing written here reaches the store.
/// The cookie's secret id is never part of it, only the
/// [`RecordId`] (the id's hash), which cannot be used as a cookie.
///
/// ```
/// # async fn devices(manager: session_core::Manager, session: session_core::Session, user: &str)
/// #     -> session_core::Result<()> {
/// let this_one = session.record_id().await?;
/// for s in manager.load_sessions_of(user).await? {
///     let device: Option<String> = s.get("user_agent")?; // stored at login
///     println!(
///         "{} {} since {}{}",
///         s.record_id().short(),
///         device.as_deref().unwrap_or("unknown device"),
///         s.created_at(),
///         if Some(s.record_id()) == this_one { " (this one)" } else { "" },
///     );
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SessionView {
    record: Record,
    idle_timeout: Option<std::time::Duration>,
    loaded_at: Timestamp,
    codec: Arc<dyn Codec>,
}

impl fmt::Debug for SessionView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionView")
            .field("id", &self.record.id)
            .field("created_at", &self.record.created_at)
            .field("expires_at", &self.record.expires_at)
            .field("entries", &self.record.data.len())
            .finish_non_exhaustive()
    }
}

impl SessionView {
    pub(crate) fn new(
        record: Record,
        lifetime: Lifetime,
        loaded_at: Timestamp,
        codec: Arc<dyn Codec>,
    ) -> Self {
        Self {
            record,
            idle_timeout: lifetime.idle_timeout(),
            loaded_at,
            codec,
        }
    }

    /// The session's record id: what
    /// [`Manager::destroy_session_of`](crate::Manager::destroy_session_of)
    /// takes, and what [`Session::record_id`] answers for the current
    /// request's session. Its `Display` and `FromStr` round-trip it through a
    /// form.
    pub fn record_id(&self) -> RecordId {
        self.record.id
    }

    /// When the session was created or last logged in ([`Session::login`]
    /// restarts the absolute timeout; [`Session::cycle_id`] keeps it): the
    /// order of [`Manager::load_sessions_of`](crate::Manager::load_sessions_of).
    pub fn created_at(&self) -> OffsetDateTime {
        self.record.created_at.into()
    }

    /// When the session ends unless it is used again.
    pub fn expires_at(&self) -> OffsetDateTime {
        self.record.expires_at.into()
    }

    /// When the session was last used, as far as the store knows: its idle
    /// deadline minus the idle timeout in force (the session's own, else the
    /// configured one), never before its creation nor after it was loaded.
    /// The deadline is written only when it moves by the touch interval (60 s
    /// by default), so the real last use may be that much later; near the
    /// absolute deadline, which caps the idle one, it may be later still.
    /// `None` without an idle timeout.
    pub fn last_seen(&self) -> Option<OffsetDateTime> {
        let seen = self.record.last_seen(self.idle_timeout?, self.loaded_at);
        Some(seen.into())
    }

    /// The value under `key`, decoded as `T`; `None` when absent. Flash
    /// values are not listed here.
    ///
    /// # Errors
    /// [`Error::Value`](crate::Error::Value) when the value does not decode
    /// as `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        if !is_value_key(key) {
            return Ok(None);
        }
        self.record
            .data
            .get(key)
            .map(|b| {
                codec::decode(&*self.codec, b).map_err(|e| Session::value_error(key, "decoded", e))
            })
            .transpose()
    }

    /// The keys of the session's values, sorted (flash values left out).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.record
            .data
            .keys()
            .map(String::as_str)
            .filter(|k| is_value_key(k))
    }
}
