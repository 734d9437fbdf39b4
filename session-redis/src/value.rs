//! The string a session is kept in: a fixed header the server-side scripts
//! read with `string.sub` (and `touch` rewrites with `SETRANGE`), then the
//! encoded [`Record`].
//!
//! Layout: the version (`u64`, big-endian), the deadline (unix milliseconds,
//! `i64`, big-endian), the owner's length (`u16`, big-endian, `0` for none),
//! the owner's UTF-8 bytes, [`Record::to_bytes`], then [`TOKENS`] eight-byte
//! write tokens: those of the writes this one replaced, oldest first (zeros
//! until the save script fills them in from the value it replaces), and this
//! write's own last. The header's deadline is the one that counts (a touch
//! rewrites only those eight bytes); its version and owner repeat the
//! record's, for the scripts. The tokens, which the record's decoder never
//! reaches, make each write's value unique, so the save script can tell a
//! resent command (the Cluster client resends one whose connection dropped
//! before the reply) from another process's write of the same version with
//! the same data, even when up to `TOKENS - 1` other writes have already
//! landed on top of the first send. Values written before the tokens existed
//! end with record bytes instead (or with fewer tokens), and read the same.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use session_core::{Record, RecordId, StoreError, StoreErrorKind, Timestamp};

/// Where the deadline starts: the offset `touch` passes to `SETRANGE`.
pub(crate) const DEADLINE_AT: usize = 8;
const OWNER_LEN_AT: usize = 16;
const OWNER_AT: usize = 18;

/// The length of a write token.
pub(crate) const TOKEN_LEN: usize = 8;

/// How many write tokens end each value: the writes it replaced, then its
/// own. A save resent after this many writes have landed on top of its first
/// send is no longer recognised (it answers a conflict).
pub(crate) const TOKENS: usize = 4;

/// The tokens that end each value.
pub(crate) const TRAILER_LEN: usize = TOKENS * TOKEN_LEN;

/// The header deadline of a value a rotation retired: a touch to a
/// deadline already past keeps the value for [`RETIRED_FOR_MS`] with this
/// deadline and the touch's token in its last eight bytes, so that the same
/// touch sent again is recognised, and nothing else reads it as live.
pub(crate) const RETIRED: [u8; 8] = [0; 8];

/// How long a retired value stays (unless deleted sooner, as a rotation
/// does right after): longer than the Cluster client goes on resending.
pub(crate) const RETIRED_FOR_MS: u64 = 60_000;

/// How long a value's header is with an owner of `owner_len` bytes: what
/// [`is_live_at`] and [`owner`] read.
pub(crate) const fn head_len(owner_len: usize) -> usize {
    OWNER_AT + owner_len
}

/// Whether a stored value's header deadline is after `now_ms`: what `load`
/// checks, for the calls that read only the header. A retired value is
/// never live.
pub(crate) fn is_live_at(value: &[u8], now_ms: i64) -> bool {
    word(value, DEADLINE_AT).is_some_and(|d| d != RETIRED && i64::from_be_bytes(d) > now_ms)
}

/// A token no other write has: a random start per process, then a count.
pub(crate) fn token() -> [u8; TOKEN_LEN] {
    static START: LazyLock<u64> = LazyLock::new(|| match session_core::Id::generate() {
        Ok(id) => {
            let mut start = [0; 8];
            start.copy_from_slice(&id.record_id().as_bytes()[..8]);
            u64::from_be_bytes(start)
        }
        // No OS randomness (the manager refuses to make ids then anyway):
        // the clock and the process id still keep processes apart.
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            (nanos as u64) ^ (u64::from(std::process::id()) << 32)
        }
    });
    static NEXT: AtomicU64 = AtomicU64::new(0);
    START
        .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
        .to_be_bytes()
}

/// The version as the header holds it, for the compare-and-set script.
pub(crate) fn version_bytes(version: u64) -> [u8; 8] {
    version.to_be_bytes()
}

/// The deadline as the header holds it, for `touch`.
pub(crate) fn deadline_bytes(expires_at: Timestamp) -> [u8; 8] {
    expires_at.unix_millis().to_be_bytes()
}

/// Encodes `record` with its header.
///
/// # Errors
/// [`StoreErrorKind::Rejected`] if the record does not encode or its owner is
/// longer than 65 535 bytes (the manager accepts at most 512).
pub(crate) fn encode(record: &Record) -> Result<Vec<u8>, StoreError> {
    let rejected = |m: String| StoreError::new(StoreErrorKind::Rejected, m);
    let body = record.to_bytes().map_err(|e| rejected(e.to_string()))?;
    let owner = record.owner.as_deref().unwrap_or("").as_bytes();
    let owner_len = u16::try_from(owner.len())
        .map_err(|_| rejected(format!("owner of {} bytes is too long", owner.len())))?;
    let mut value = Vec::with_capacity(OWNER_AT + owner.len() + body.len() + TRAILER_LEN);
    value.extend_from_slice(&version_bytes(record.version));
    value.extend_from_slice(&deadline_bytes(record.expires_at));
    value.extend_from_slice(&owner_len.to_be_bytes());
    value.extend_from_slice(owner);
    value.extend_from_slice(&body);
    value.extend_from_slice(&[0; TRAILER_LEN - TOKEN_LEN]);
    value.extend_from_slice(&token());
    Ok(value)
}

/// Whether two values are the same write: equal but for the deadline, which
/// a touch may have moved since.
pub(crate) fn same_write(a: &[u8], b: &[u8]) -> bool {
    let end = DEADLINE_AT + 8;
    a.len() == b.len()
        && a.len() >= end
        && a[..DEADLINE_AT] == b[..DEADLINE_AT]
        && a[end..] == b[end..]
}

fn word(value: &[u8], at: usize) -> Option<[u8; 8]> {
    value.get(at..at + 8)?.try_into().ok()
}

/// The owner's bytes and where the record starts, if the header is whole.
fn owner_span(value: &[u8]) -> Option<(&[u8], usize)> {
    let len = value.get(OWNER_LEN_AT..OWNER_AT)?;
    let end = OWNER_AT + usize::from(u16::from_be_bytes([len[0], len[1]]));
    Some((value.get(OWNER_AT..end)?, end))
}

/// The owner a stored value names, if any.
pub(crate) fn owner(value: &[u8]) -> Option<String> {
    let (owner, _) = owner_span(value)?;
    let owner = std::str::from_utf8(owner).ok()?;
    (!owner.is_empty()).then(|| owner.to_owned())
}

/// Decodes a stored value: the live record with id `id` it holds at
/// `now_ms`, or `None` (logged when it is not a record at all).
pub(crate) fn decode(id: &RecordId, value: &[u8], now_ms: i64) -> Option<Record> {
    let corrupted = |why: &dyn std::fmt::Display| {
        tracing::warn!(id = %id.short(), %why, "undecodable session record in Redis; treating it as no session");
        None
    };
    let (Some(version), Some(deadline), Some((owner, body_at))) =
        (word(value, 0), word(value, DEADLINE_AT), owner_span(value))
    else {
        return corrupted(&"truncated header");
    };
    let mut record = match Record::from_bytes(&value[body_at..]) {
        Ok(r) => r,
        Err(e) => return corrupted(&e),
    };
    if record.id != *id {
        return corrupted(&"record id does not match its key");
    }
    if record.version != u64::from_be_bytes(version) {
        return corrupted(&"header and record disagree on the version");
    }
    if owner != record.owner.as_deref().unwrap_or_default().as_bytes() {
        return corrupted(&"header and record disagree on the owner");
    }
    let ms = i64::from_be_bytes(deadline);
    let Some(expires_at) = Timestamp::checked_from_unix_millis(ms) else {
        return corrupted(&"deadline out of range");
    };
    record.expires_at = expires_at;
    (ms > now_ms).then_some(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::Id;

    fn sample(owner: Option<&str>) -> Record {
        let mut r = session_core::testing::sample_record();
        r.version = 7;
        r.owner = owner.map(str::to_owned);
        r
    }

    /// An owner's listing reads only `head_len` bytes of each value: they
    /// must tell the owner exactly (a longer or shorter stored owner is
    /// another), a retired value from a live one, and whether the deadline
    /// has passed.
    #[test]
    fn a_values_head_tells_its_owner_and_whether_it_is_live() {
        for stored in ["alice", "al", "alice2", "bob"] {
            let r = sample(Some(stored));
            let (now, deadline) = (r.created_at.unix_millis(), r.expires_at.unix_millis());
            let v = encode(&r).unwrap();
            for asked in ["alice", "al", "alice2"] {
                let head = &v[..head_len(asked.len()).min(v.len())];
                assert_eq!(owner(head).as_deref() == Some(asked), stored == asked);
                assert!(is_live_at(head, now) && is_live_at(head, deadline - 1));
                assert!(
                    !is_live_at(head, deadline),
                    "live strictly before its deadline"
                );
            }
            let mut retired = v.clone();
            retired[DEADLINE_AT..DEADLINE_AT + 8].copy_from_slice(&RETIRED);
            assert!(!is_live_at(&retired[..head_len(stored.len())], i64::MIN));
        }
        assert!(!is_live_at(&[0; 12], i64::MIN), "a truncated header");
        // A missing key reads as an empty head: no owner.
        assert_eq!(owner(&[]), None);
    }

    #[test]
    fn round_trips_with_and_without_an_owner() {
        for o in [None, Some("alice"), Some("ü")] {
            let r = sample(o);
            let v = encode(&r).unwrap();
            assert_eq!(
                decode(&r.id, &v, r.created_at.unix_millis()),
                Some(r.clone())
            );
            assert_eq!(owner(&v).as_deref(), o);
            assert_eq!(&v[..8], &version_bytes(7));
        }
    }

    #[test]
    fn the_same_write_is_recognised_whatever_its_deadline() {
        let r = sample(Some("alice"));
        let v = encode(&r).unwrap();
        let mut touched = v.clone();
        touched[DEADLINE_AT..DEADLINE_AT + 8].copy_from_slice(&deadline_bytes(
            r.expires_at + std::time::Duration::from_secs(3600),
        ));
        assert!(same_write(&v, &v));
        assert!(same_write(&v, &touched));
        let mut newer = r.clone();
        newer.version += 1;
        assert!(!same_write(&v, &encode(&newer).unwrap()));
        let mut other = r.clone();
        other.data.insert("k".into(), vec![1]);
        assert!(!same_write(&v, &encode(&other).unwrap()));
        assert!(!same_write(&v[..10], &v[..10]), "not a whole header");
        // The same record encoded again is another write: another token.
        assert!(!same_write(&v, &encode(&r).unwrap()));
    }

    #[test]
    fn the_header_deadline_counts_and_expired_is_none() {
        let r = sample(None);
        let mut v = encode(&r).unwrap();
        let later = r.expires_at + std::time::Duration::from_secs(7200);
        v[DEADLINE_AT..DEADLINE_AT + 8].copy_from_slice(&deadline_bytes(later));
        let back = decode(&r.id, &v, r.expires_at.unix_millis()).unwrap();
        assert_eq!(back.expires_at, later);
        assert_eq!(decode(&r.id, &v, later.unix_millis()), None);
    }

    #[test]
    fn damaged_values_are_no_session_never_a_panic() {
        let r = sample(Some("alice"));
        let v = encode(&r).unwrap();
        let now = r.created_at.unix_millis();
        // The record ends before the write tokens; cut anywhere inside it, the
        // value is damaged.
        let record_end = v.len() - TRAILER_LEN;
        for cut in 0..record_end {
            assert_eq!(decode(&r.id, &v[..cut], now), None, "cut at {cut}");
            let _ = owner(&v[..cut]);
        }
        // Without the tokens (as written before they existed), or with
        // fewer, it reads the same.
        for tokens in 0..TOKENS {
            assert_eq!(
                decode(&r.id, &v[..record_end + tokens * TOKEN_LEN], now),
                Some(r.clone())
            );
        }
        let other = Id::generate().unwrap().record_id();
        assert_eq!(decode(&other, &v, now), None);
        let mut wrong_version = v.clone();
        wrong_version[..8].copy_from_slice(&version_bytes(8));
        assert_eq!(decode(&r.id, &wrong_version, now), None);
        let mut other_owner = v.clone();
        other_owner[OWNER_AT + 4] = b'f';
        assert_eq!(decode(&r.id, &other_owner, now), None);
        let mut long_owner = v;
        long_owner[OWNER_LEN_AT..OWNER_AT].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(decode(&r.id, &long_owner, now), None);
        assert_eq!(owner(&long_owner), None);
    }

    #[test]
    fn an_oversized_owner_is_refused() {
        let r = sample(Some(&"x".repeat(70_000)));
        assert!(encode(&r).is_err());
    }
}
