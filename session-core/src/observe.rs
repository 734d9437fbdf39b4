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

pub(crate) fn conflict(id: &RecordId, attempt: u32) {
    tracing::debug!(id = %id.short(), attempt, "session save conflict; reloading and re-applying");
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

pub(crate) fn rejected_cookie() {
    tracing::debug!("session cookie rejected: malformed, oversized or failed verification");
    count("session_rejected_cookies_total", 1);
}

pub(crate) fn corrupt_value(key: &str) {
    tracing::warn!(key, "session value could not be decoded");
    count("session_value_errors_total", 1);
}
