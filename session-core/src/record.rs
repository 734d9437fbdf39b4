//! What a store keeps for one session.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::RecordId;
use crate::timestamp::Timestamp;

/// The values of a session: key -> value encoded by the configured
/// [`Codec`](crate::Codec).
pub type Data = BTreeMap<String, Vec<u8>>;

/// A per-session override of the configured timeouts ("remember me").
///
/// It is stored in the [`Record`], so it holds on every later request until it is
/// changed or the session ends. Set it with
/// [`Session::set_lifetime`](crate::Session::set_lifetime).
///
/// ```
/// use std::time::Duration;
/// use session_core::Lifetime;
///
/// let remember_me = Lifetime::new()
///     .with_idle_timeout(Some(Duration::from_secs(30 * 24 * 3600)))
///     .with_absolute_timeout(Some(Duration::from_secs(90 * 24 * 3600)))
///     .with_persistent_cookie(true);
/// assert!(remember_me.persistent_cookie());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[doc(alias("Expiry"))]
pub struct Lifetime {
    #[serde(default, with = "opt_secs")]
    idle: Option<Duration>,
    #[serde(default, with = "opt_secs")]
    absolute: Option<Duration>,
    #[serde(default)]
    persistent: bool,
}

impl Lifetime {
    /// A lifetime with no timeouts and a browser-session cookie; set what you
    /// need with the `with_*` methods. A lifetime needs at least one timeout to
    /// be accepted by [`Session::set_lifetime`](crate::Session::set_lifetime).
    pub const fn new() -> Self {
        Self {
            idle: None,
            absolute: None,
            persistent: false,
        }
    }

    /// Ends the session after this long without a request that uses it.
    pub const fn with_idle_timeout(mut self, idle: Option<Duration>) -> Self {
        self.idle = idle;
        self
    }

    /// A "remember me": the session lasts `idle` after each use and at most
    /// `absolute` after its creation, in a cookie that survives a browser
    /// restart. For [`Session::set_lifetime`](crate::Session::set_lifetime)
    /// after a login, which refuses `idle` longer than `absolute`, and either
    /// under a second or over 400 days.
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_core::Lifetime;
    ///
    /// let day = Duration::from_secs(24 * 3600);
    /// let remember_me = Lifetime::remember_me(30 * day, 90 * day);
    /// assert_eq!(remember_me.idle_timeout(), Some(30 * day));
    /// assert_eq!(remember_me.absolute_timeout(), Some(90 * day));
    /// assert!(remember_me.persistent_cookie());
    /// ```
    #[doc(alias("OnInactivity", "PersistentSession"))]
    pub const fn remember_me(idle: Duration, absolute: Duration) -> Self {
        Self {
            idle: Some(idle),
            absolute: Some(absolute),
            persistent: true,
        }
    }

    /// Ends the session this long after it was created, whatever its activity.
    pub const fn with_absolute_timeout(mut self, absolute: Option<Duration>) -> Self {
        self.absolute = absolute;
        self
    }

    /// Whether the cookie carries `Max-Age` (survives a browser restart).
    pub const fn with_persistent_cookie(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// The idle timeout.
    pub const fn idle_timeout(&self) -> Option<Duration> {
        self.idle
    }

    /// The absolute timeout.
    pub const fn absolute_timeout(&self) -> Option<Duration> {
        self.absolute
    }

    /// Whether the cookie is persistent.
    pub const fn persistent_cookie(&self) -> bool {
        self.persistent
    }

    /// The deadline of a session created at `created_at` and last used at `now`:
    /// the earlier of the idle and the absolute deadline.
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_core::{Lifetime, Timestamp};
    ///
    /// let l = Lifetime::new()
    ///     .with_idle_timeout(Some(Duration::from_secs(10)))
    ///     .with_absolute_timeout(Some(Duration::from_secs(100)));
    /// let t0 = Timestamp::UNIX_EPOCH;
    /// assert_eq!(l.deadline(t0, t0), t0 + Duration::from_secs(10));
    /// let late = t0 + Duration::from_secs(95);
    /// assert_eq!(l.deadline(t0, late), t0 + Duration::from_secs(100));
    /// ```
    pub fn deadline(&self, created_at: Timestamp, now: Timestamp) -> Timestamp {
        let idle = self.idle.map(|d| now + d);
        let absolute = self.absolute.map(|d| created_at + d);
        match (idle, absolute) {
            (Some(i), Some(a)) => i.min(a),
            (Some(i), None) => i,
            (None, Some(a)) => a,
            // Refused by config validation; a far deadline keeps this total.
            (None, None) => now + Duration::from_secs(400 * 86_400),
        }
    }
}

mod opt_secs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        // Kept to the millisecond; beyond u64::MAX milliseconds (half a
        // billion years), as long as that.
        d.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// One session as a store keeps it.
///
/// Stores see records, never cookies or raw ids. A store that keeps records as
/// bytes uses [`Record::to_bytes`] and [`Record::from_bytes`], which give a
/// compact, versioned encoding that tolerates fields added by later releases.
///
/// ```
/// use std::time::Duration;
/// use session_core::{Id, Record, Timestamp};
///
/// let now = Timestamp::now();
/// let mut record = Record::new(Id::generate().unwrap().record_id(), now, now + Duration::from_secs(3600));
/// record.data.insert("name".into(), b"\xa4iris".to_vec());
/// let bytes = record.to_bytes().unwrap();
/// assert_eq!(Record::from_bytes(&bytes).unwrap(), record);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record {
    /// The hash of the session id.
    pub id: RecordId,
    /// The values, each encoded by the manager's codec.
    pub data: Data,
    /// When the session was created (start of the absolute timeout).
    pub created_at: Timestamp,
    /// When the session expires: it is live strictly before this instant, and
    /// stores never return it from this instant on.
    pub expires_at: Timestamp,
    /// Incremented by every save; the compare-and-set token.
    pub version: u64,
    /// The user this session belongs to, for "log out everywhere".
    pub owner: Option<String>,
    /// A per-session override of the configured timeouts.
    pub lifetime: Option<Lifetime>,
}

impl Record {
    /// When the session was last used, as far as its idle deadline tells
    /// under idle timeout `idle`: never before its creation nor after `now`
    /// (see [`SessionView::last_seen`](crate::SessionView::last_seen)).
    pub(crate) fn last_seen(&self, idle: std::time::Duration, now: Timestamp) -> Timestamp {
        let created = self.created_at;
        (self.expires_at - idle).clamp(created, now.max(created))
    }

    /// A new record at version 0 with no data and no owner.
    pub fn new(id: RecordId, created_at: Timestamp, expires_at: Timestamp) -> Self {
        Self {
            id,
            data: Data::new(),
            created_at,
            expires_at,
            version: 0,
            owner: None,
            lifetime: None,
        }
    }

    /// Whether the record has expired at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }

    /// A rough count of the bytes the record occupies, for weighing caches.
    pub fn approximate_size(&self) -> usize {
        let data: usize = self.data.iter().map(|(k, v)| k.len() + v.len() + 48).sum();
        std::mem::size_of::<Self>() + data + self.owner.as_ref().map_or(0, String::len)
    }

    /// Encodes the record for a store that keeps bytes.
    ///
    /// # Errors
    /// Only if the encoder fails, which a well-formed record never makes it do.
    pub fn to_bytes(&self) -> Result<Vec<u8>, RecordDecodeError> {
        crate::envelope::encode(self)
    }

    /// Decodes bytes written by [`Record::to_bytes`]. Bytes after the record
    /// are not read, so a store may keep its own after it (the Redis store
    /// keeps write tokens there). A lifetime comes back to the millisecond.
    ///
    /// # Errors
    /// [`RecordDecodeError`] when the bytes are not a record: corrupted,
    /// truncated, or written by something else. Never panics, also on
    /// deeply nested input.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RecordDecodeError> {
        crate::envelope::decode(bytes)
    }

    /// The bytes of a record (written by [`Record::to_bytes`], of this
    /// release or another) with its deadline set to `expires_at` and every
    /// other byte kept, for a store that keeps only the bytes and implements
    /// [`Store::touch`](crate::Store::touch): decoding and encoding the record
    /// instead would drop the fields a newer release wrote, which an app
    /// rolled back to this one must not lose. Bytes after the record are
    /// kept too.
    ///
    /// ```
    /// use std::time::Duration;
    /// use session_core::{Id, Record, Timestamp};
    ///
    /// let now = Timestamp::now();
    /// let mut record = Record::new(Id::generate()?.record_id(), now, now + Duration::from_secs(60));
    /// record.data.insert("name".into(), b"iris".to_vec());
    /// let later = now + Duration::from_secs(3600);
    /// let touched = Record::bytes_with_expires_at(&record.to_bytes()?, later)?;
    /// record.expires_at = later;
    /// assert_eq!(Record::from_bytes(&touched)?, record);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// The bytes are read only as far as finding the deadline takes (the
    /// map's fields, skipped whole), not checked as a record: decode them
    /// first, as a store checking the version does anyway.
    ///
    /// # Errors
    /// [`RecordDecodeError`] when the bytes hold no readable deadline. Never
    /// panics.
    pub fn bytes_with_expires_at(
        bytes: &[u8],
        expires_at: Timestamp,
    ) -> Result<Vec<u8>, RecordDecodeError> {
        crate::envelope::with_expires_at(bytes, expires_at)
    }
}

/// A stored record could not be decoded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("stored session record is corrupted: {0}")]
pub struct RecordDecodeError(pub(crate) String);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Id;

    fn sample() -> Record {
        let now = Timestamp::from_unix_millis(1_700_000_000_000);
        let mut r = Record::new(
            Id::generate().unwrap().record_id(),
            now,
            now + Duration::from_secs(7200),
        );
        r.data.insert("a".into(), vec![1, 2, 3]);
        r.data.insert(String::new(), vec![]);
        r.version = 7;
        r.owner = Some("alice".into());
        r.lifetime = Some(
            Lifetime::new()
                .with_idle_timeout(Some(Duration::from_secs(60)))
                .with_persistent_cookie(true),
        );
        r
    }

    #[test]
    fn a_stored_lifetime_that_set_lifetime_would_refuse_is_dropped() {
        let mut r = sample();
        for bad in [
            // A deadline in the year 9999 and no absolute timeout.
            Lifetime::new().with_idle_timeout(Some(Duration::MAX)),
            // No timeout at all: extended by 400 days on every request.
            Lifetime::new(),
            Lifetime::new().with_idle_timeout(Some(Duration::ZERO)),
            Lifetime::new().with_absolute_timeout(Some(Duration::from_secs(401 * 86_400))),
        ] {
            r.lifetime = Some(bad);
            let back = Record::from_bytes(&r.to_bytes().unwrap()).unwrap();
            assert_eq!(back.lifetime, None, "{bad:?}");
            assert_eq!(back.data, r.data, "the rest of the record stays");
        }
        let good = sample();
        let back = Record::from_bytes(&good.to_bytes().unwrap()).unwrap();
        assert_eq!(back.lifetime, good.lifetime);
    }

    #[derive(Serialize)]
    struct EnvelopeRef<'a> {
        #[serde(rename = "f")]
        format: u8,
        #[serde(rename = "i")]
        id: &'a serde_bytes::Bytes,
        #[serde(rename = "d")]
        data: DataRef<'a>,
        #[serde(rename = "c")]
        created_at: i64,
        #[serde(rename = "e")]
        expires_at: i64,
        #[serde(rename = "v")]
        version: u64,
        #[serde(rename = "o")]
        owner: Option<&'a str>,
        #[serde(rename = "l")]
        lifetime: Option<&'a Lifetime>,
    }

    /// Serializes the values as MessagePack `bin`, not arrays of integers.
    struct DataRef<'a>(&'a Data);

    impl Serialize for DataRef<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_map(self.0.iter().map(|(k, v)| (k, serde_bytes::Bytes::new(v))))
        }
    }

    /// The hand-written encoder writes exactly what serde's named-struct
    /// encoding of the same envelope writes, so records stored by earlier
    /// releases and by this one are the same bytes.
    /// Keys and values at each MessagePack length boundary (fixstr, str8,
    /// str16; bin8, bin16, bin32), which the decoder reads by different paths.
    fn every_length_class() -> Record {
        let mut r = sample();
        for (key, value) in [
            (31, 255),
            (32, 256),
            (255, 65_535),
            (256, 65_536),
            (65_536, 0),
        ] {
            r.data.insert("k".repeat(key), vec![7; value]);
        }
        r.owner = Some("o".repeat(40));
        r
    }

    #[test]
    fn bytes_are_serde_named_encoding() {
        for r in [
            sample(),
            every_length_class(),
            Record::new(sample().id, sample().created_at, sample().expires_at),
        ] {
            let serde = rmp_serde::to_vec_named(&EnvelopeRef {
                format: 1,
                id: serde_bytes::Bytes::new(r.id.as_bytes()),
                data: DataRef(&r.data),
                created_at: r.created_at.unix_millis(),
                expires_at: r.expires_at.unix_millis(),
                version: r.version,
                owner: r.owner.as_deref(),
                lifetime: r.lifetime.as_ref(),
            })
            .unwrap();
            assert_eq!(r.to_bytes().unwrap(), serde);
        }
    }

    #[test]
    fn round_trips() {
        for r in [sample(), every_length_class()] {
            assert_eq!(Record::from_bytes(&r.to_bytes().unwrap()).unwrap(), r);
        }
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        let bytes = sample().to_bytes().unwrap();
        for n in 0..bytes.len() {
            assert!(Record::from_bytes(&bytes[..n]).is_err(), "prefix {n}");
        }
        assert!(Record::from_bytes(b"hello world").is_err());
        // A huge claimed map length with no content must not allocate it.
        assert!(Record::from_bytes(&[0xdf, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn data_keys_and_owners_must_be_utf8() {
        let mut r = sample();
        r.data.insert("\u{e9}".into(), vec![1]);
        r.owner = Some("\u{e9}\u{e9}".into());
        let bytes = r.to_bytes().unwrap();
        assert_eq!(Record::from_bytes(&bytes).unwrap(), r);
        // The key "é" (fixstr of 2 bytes) and the owner "éé" (4 bytes), each
        // made invalid UTF-8 in place.
        for (pattern, len) in [
            (&[0xa2, 0xc3, 0xa9][..], 3),
            (&[0xa4, 0xc3, 0xa9, 0xc3, 0xa9][..], 5),
        ] {
            let at = bytes
                .windows(len)
                .position(|w| w == pattern)
                .expect("the string is in the encoding");
            let mut broken = bytes.clone();
            broken[at + 1] = 0xff;
            assert!(Record::from_bytes(&broken).is_err(), "{pattern:x?}");
        }
    }

    #[test]
    fn unknown_fields_are_ignored_and_missing_optional_fields_default() {
        #[derive(Serialize)]
        struct Future<'a> {
            f: u8,
            i: &'a serde_bytes::Bytes,
            c: i64,
            e: i64,
            extra: &'a str,
        }
        let id = [9u8; 32];
        let bytes = rmp_serde::to_vec_named(&Future {
            f: 1,
            i: serde_bytes::Bytes::new(&id),
            c: 0,
            e: 1000,
            extra: "added by a later release",
        })
        .unwrap();
        let r = Record::from_bytes(&bytes).unwrap();
        assert_eq!(r.version, 0);
        assert!(r.data.is_empty());
        assert_eq!(r.owner, None);
    }

    /// A new deadline of any width replaces the old one in place: fields a
    /// later release added (here `x`, after the deadline) and bytes a store
    /// keeps after the record are kept; everything else decodes as before.
    #[test]
    fn a_new_deadline_keeps_every_other_byte() {
        let r = sample();
        let mut bytes = r.to_bytes().unwrap();
        assert_eq!(bytes[0], 0x88);
        bytes[0] = 0x89;
        let extra = [0xa1, b'x', 0x92, 0x01, 0xa2, b'h', b'i'];
        bytes.extend_from_slice(&extra);
        let tail = b"store's own";
        bytes.extend_from_slice(tail);
        for ms in [
            0,
            1,
            127,
            128,
            -1,
            -33,
            1 << 40,
            -(1 << 40),
            253_402_300_799_999,
        ] {
            let at = Timestamp::from_unix_millis(ms);
            let touched = Record::bytes_with_expires_at(&bytes, at).unwrap();
            let mut expected = r.clone();
            expected.expires_at = at;
            assert_eq!(Record::from_bytes(&touched).unwrap(), expected, "{ms}");
            let kept = &touched[touched.len() - tail.len() - extra.len()..];
            assert_eq!(kept, [&extra[..], &tail[..]].concat(), "{ms}");
            // Only the deadline's encoding moved: the record re-encoded with
            // the new deadline is what precedes the extra field.
            let head = &touched[..touched.len() - tail.len() - extra.len()];
            let mut reencoded = expected.to_bytes().unwrap();
            reencoded[0] = 0x89;
            assert_eq!(head, &reencoded[..], "{ms}");
        }
    }

    /// A data key `e` is a value of the map `d`, not the deadline; of two
    /// deadlines (bytes this crate never writes) the last one, which
    /// `from_bytes` reads, is the one that moves.
    #[test]
    fn a_new_deadline_moves_the_deadline_that_decoding_reads() {
        let mut r = sample();
        r.data.insert("e".into(), b"\xa1e".to_vec());
        let at = r.expires_at + Duration::from_secs(60);
        let touched = Record::bytes_with_expires_at(&r.to_bytes().unwrap(), at).unwrap();
        let mut expected = r.clone();
        expected.expires_at = at;
        assert_eq!(Record::from_bytes(&touched).unwrap(), expected);

        // Two deadlines make the bytes no record, before a touch or after.
        let mut twice = r.to_bytes().unwrap();
        twice[0] = 0x89;
        twice.extend_from_slice(&[0xa1, b'e', 0x05]);
        assert!(Record::from_bytes(&twice).is_err());
        let touched = Record::bytes_with_expires_at(&twice, at).unwrap();
        assert!(Record::from_bytes(&touched).is_err());
    }

    /// A known field or a value's key twice (bytes this crate never
    /// writes: keeping one would lose the other at the next save), or an
    /// owner `login` would refuse, make the bytes no record.
    #[test]
    fn repeated_fields_and_keys_and_refused_owners_are_no_record() {
        let r = sample();
        let bytes = r.to_bytes().unwrap();
        assert_eq!(Record::from_bytes(&bytes).unwrap(), r);
        // One more field, a repeat of each known field in turn: its name
        // and a value of the type the field takes.
        for repeat in [
            &b"\xa1f\x01"[..],
            b"\xa1i\xc4\x20\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09\x09",
            b"\xa1d\x80",
            b"\xa1c\x00",
            b"\xa1v\x00",
            b"\xa1o\xc0",
            b"\xa1l\xc0",
        ] {
            let mut again = bytes.clone();
            again[0] += 1;
            again.extend_from_slice(repeat);
            assert!(Record::from_bytes(&again).is_err(), "{repeat:x?}");
        }
        // An unknown field twice is no concern of this release.
        let mut unknown = bytes.clone();
        unknown[0] += 2;
        unknown.extend_from_slice(b"\xa1x\x01\xa1x\x02");
        assert_eq!(Record::from_bytes(&unknown).unwrap(), r);

        let mut twice = Data::new();
        twice.insert("k".into(), b"1".to_vec());
        let mut keyed = r.clone();
        keyed.data = twice;
        let once = keyed.to_bytes().unwrap();
        assert!(Record::from_bytes(&once).is_ok());
        // The map of one value claims two, and the same key follows again.
        let at = once
            .windows(6)
            .position(|w| w == b"\x81\xa1k\xc4\x01\x31")
            .expect("the values in the encoding");
        let mut repeated = once[..at].to_vec();
        repeated.extend_from_slice(b"\x82\xa1k\xc4\x01\x31\xa1k\xc4\x01\x32");
        repeated.extend_from_slice(&once[at + 6..]);
        assert!(Record::from_bytes(&repeated).is_err());

        for owner in [String::new(), "a\0b".into(), "o".repeat(513)] {
            let mut owned = r.clone();
            owned.owner = Some(owner);
            let bytes = owned.to_bytes().unwrap();
            assert!(Record::from_bytes(&bytes).is_err());
        }
        let mut longest = r.clone();
        longest.owner = Some("o".repeat(512));
        let bytes = longest.to_bytes().unwrap();
        assert_eq!(Record::from_bytes(&bytes).unwrap(), longest);
    }

    #[test]
    fn a_new_deadline_for_bytes_that_are_no_record_is_an_error() {
        let at = Timestamp::now();
        let bytes = sample().to_bytes().unwrap();
        // Every field is read (the last deadline counts), so every prefix
        // short of the whole record is refused.
        for n in 0..bytes.len() {
            assert!(
                Record::bytes_with_expires_at(&bytes[..n], at).is_err(),
                "prefix {n}"
            );
        }
        assert!(Record::bytes_with_expires_at(&bytes, at).is_ok());
        assert!(Record::bytes_with_expires_at(b"hello world", at).is_err());
        assert!(
            Record::bytes_with_expires_at(&[0x80], at).is_err(),
            "no deadline"
        );
        assert!(Record::bytes_with_expires_at(&[0x81, 0xa1, b'e', 0xc0], at).is_err());
    }

    /// A record with a field of a later release nested ten thousand deep
    /// (a byte a level) is refused, not a stack overflow, on a thread with
    /// a small stack; one nested a few levels is read.
    #[test]
    fn deeply_nested_unknown_fields_are_refused() {
        let r = sample();
        let with_extra = |depth: usize| {
            let mut bytes = r.to_bytes().unwrap();
            // One more field in the record's map (fixmap 8 -> 9).
            assert_eq!(bytes[0], 0x88);
            bytes[0] = 0x89;
            bytes.extend_from_slice(&[0xa1, b'x']);
            bytes.extend(std::iter::repeat_n(0x91, depth));
            bytes.push(0xc0);
            bytes
        };
        let (deep, shallow) = (with_extra(10_000), with_extra(4));
        let decoded = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                (
                    Record::from_bytes(&deep).is_err(),
                    Record::from_bytes(&shallow).map_err(|e| e.to_string()),
                )
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(decoded.0, "a record nested 10 000 deep was read");
        assert_eq!(decoded.1.unwrap(), r);
    }

    /// Bytes after the record are not read: the Redis store keeps its write
    /// tokens there.
    #[test]
    fn bytes_after_the_record_are_left_alone() {
        let r = sample();
        let mut bytes = r.to_bytes().unwrap();
        bytes.extend_from_slice(&[0xc1; 16]);
        assert_eq!(Record::from_bytes(&bytes).unwrap(), r);
    }

    /// Lifetimes are kept to the millisecond, and one beyond `u64::MAX`
    /// milliseconds is written as `u64::MAX` instead of wrapping to zero (a
    /// session that would expire at once). (Read back, either is dropped as
    /// a lifetime `set_lifetime` would refuse.)
    #[test]
    fn lifetimes_are_kept_to_the_millisecond_and_saturate() {
        let mut r = sample();
        let beyond = Duration::from_millis(u64::MAX) + Duration::from_millis(1);
        r.lifetime = Some(Lifetime::new().with_idle_timeout(Some(beyond)));
        let saturated = r.to_bytes().unwrap();
        r.lifetime = Some(Lifetime::new().with_idle_timeout(Some(Duration::from_millis(u64::MAX))));
        assert_eq!(saturated, r.to_bytes().unwrap());
        r.lifetime =
            Some(Lifetime::new().with_absolute_timeout(Some(Duration::from_micros(1_000_500))));
        let back = Record::from_bytes(&r.to_bytes().unwrap()).unwrap();
        assert_eq!(
            back.lifetime.unwrap().absolute_timeout(),
            Some(Duration::from_millis(1_000))
        );
    }

    #[test]
    fn deadlines_saturate_and_never_need_a_timeout() {
        let t0 = Timestamp::from_unix_millis(1_700_000_000_123);
        let none = Lifetime::new();
        assert_eq!(
            none.deadline(t0, t0),
            t0 + Duration::from_secs(400 * 86_400)
        );
        let forever = Lifetime::new().with_idle_timeout(Some(Duration::MAX));
        assert_eq!(forever.deadline(t0, t0), Timestamp::MAX);
        let absolute = Lifetime::new().with_absolute_timeout(Some(Duration::from_secs(60)));
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(absolute.deadline(t0, later), t0 + Duration::from_secs(60));
    }
}
