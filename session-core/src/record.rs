//! What a store keeps for one session.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::id::RecordId;

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
    pub fn deadline(&self, created_at: OffsetDateTime, now: OffsetDateTime) -> OffsetDateTime {
        let idle = self.idle.map(|d| now.saturating_add(to_time(d)));
        let absolute = self.absolute.map(|d| created_at.saturating_add(to_time(d)));
        match (idle, absolute) {
            (Some(i), Some(a)) => i.min(a),
            (Some(i), None) => i,
            (None, Some(a)) => a,
            // Refused by config validation; a far deadline keeps this total.
            (None, None) => now.saturating_add(time::Duration::days(400)),
        }
    }
}

impl Lifetime {
    /// [`Lifetime::deadline`] in unix milliseconds ([`unix_millis`]), for the
    /// check every request makes: integer arithmetic where `OffsetDateTime`
    /// does calendar arithmetic.
    pub(crate) fn deadline_ms(&self, created_ms: i64, now_ms: i64) -> i64 {
        // Where `OffsetDateTime`'s saturating arithmetic stops.
        static LATEST: LazyLock<i64> =
            LazyLock::new(|| unix_millis(time::PrimitiveDateTime::MAX.assume_utc()));
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let idle = self.idle.map(|d| now_ms.saturating_add(ms(d)));
        let absolute = self.absolute.map(|d| created_ms.saturating_add(ms(d)));
        let deadline = match (idle, absolute) {
            (Some(i), Some(a)) => i.min(a),
            (Some(i), None) => i,
            (None, Some(a)) => a,
            (None, None) => now_ms.saturating_add(400 * 86_400_000),
        };
        deadline.min(*LATEST)
    }
}

fn to_time(d: Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}

mod opt_secs {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        d.map(|d| d.as_millis() as u64).serialize(s)
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
/// use session_core::{Id, Record};
/// use time::OffsetDateTime;
///
/// // Stores keep timestamps to the millisecond.
/// let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
/// let mut record = Record::new(Id::generate().unwrap().record_id(), now, now + time::Duration::hours(1));
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
    pub created_at: OffsetDateTime,
    /// When the session expires: stores never return it after this instant.
    pub expires_at: OffsetDateTime,
    /// Incremented by every save; the compare-and-set token.
    pub version: u64,
    /// The user this session belongs to, for "log out everywhere".
    pub owner: Option<String>,
    /// A per-session override of the configured timeouts.
    pub lifetime: Option<Lifetime>,
}

impl Record {
    /// A new record at version 0 with no data and no owner.
    pub fn new(id: RecordId, created_at: OffsetDateTime, expires_at: OffsetDateTime) -> Self {
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
    pub fn is_expired(&self, now: OffsetDateTime) -> bool {
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

    /// Decodes bytes written by [`Record::to_bytes`].
    ///
    /// # Errors
    /// [`RecordDecodeError`] when the bytes are not a record: corrupted,
    /// truncated, or written by something else. Never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RecordDecodeError> {
        crate::envelope::decode(bytes)
    }
}

/// A stored record could not be decoded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("stored session record is corrupted: {0}")]
pub struct RecordDecodeError(pub(crate) String);

/// `t` truncated to whole milliseconds, the precision stores keep.
pub(crate) fn truncate_ms(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(t)
}

/// Milliseconds since the Unix epoch, rounded down: the unit in which
/// records and the stores keep deadlines.
///
/// Whole seconds and the millisecond field: no 128-bit division, which is
/// what `unix_timestamp_nanos` would cost on every save.
///
/// ```
/// use time::OffsetDateTime;
///
/// let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
/// assert_eq!(session_core::unix_millis(t), 1_700_000_000_123);
/// ```
pub fn unix_millis(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
        .saturating_mul(1000)
        .saturating_add(i64::from(t.millisecond()))
}

/// The system clock now, in [`unix_millis`]: cheaper than going through an
/// `OffsetDateTime`, for stores that read it on every call.
pub fn now_unix_millis() -> i64 {
    system_millis(SystemTime::now())
}

/// `t` in unix milliseconds, rounded down like [`unix_millis`].
fn system_millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        // A clock set before 1970: negative milliseconds, rounded down.
        Err(e) => {
            let before = e.duration();
            let ms = i64::try_from(before.as_millis()).unwrap_or(i64::MAX);
            if before.subsec_nanos() % 1_000_000 == 0 {
                -ms
            } else {
                -ms - 1
            }
        }
    }
}

/// The inverse of [`unix_millis`], for every load.
pub(crate) fn from_unix_millis(ms: i64) -> Result<OffsetDateTime, RecordDecodeError> {
    let millis = u16::try_from(ms.rem_euclid(1000)).unwrap_or(0);
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .and_then(|t| t.replace_millisecond(millis))
        .map_err(|_| RecordDecodeError(format!("timestamp {ms} out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Id;

    fn sample() -> Record {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let mut r = Record::new(
            Id::generate().unwrap().record_id(),
            now,
            now + time::Duration::hours(2),
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

    #[test]
    fn unix_millis_round_trips_and_agrees_with_nanoseconds() {
        for ms in [
            0,
            1,
            999,
            1_000,
            1_700_000_000_123,
            -1,
            -999,
            -1_000,
            -1_001,
            253_402_300_799_999, // 9999-12-31T23:59:59.999Z, time's default maximum
        ] {
            let t = from_unix_millis(ms).unwrap();
            assert_eq!(t.unix_timestamp_nanos(), i128::from(ms) * 1_000_000, "{ms}");
            assert_eq!(unix_millis(t), ms, "{ms}");
        }
        assert!(from_unix_millis(i64::MAX).is_err());
        assert!(from_unix_millis(i64::MIN).is_err());
    }

    #[test]
    fn the_system_clock_in_millis_agrees_with_offset_date_time() {
        let before = unix_millis(OffsetDateTime::now_utc());
        let now = now_unix_millis();
        let after = unix_millis(OffsetDateTime::now_utc());
        assert!(
            before <= now && now <= after,
            "{before} <= {now} <= {after}"
        );
        for nanos in [
            1_700_000_000_123_456_789_i128,
            0,
            -1,
            -500_000,
            -1_000_000,
            -1_000_001,
            -86_400_000_000_000,
        ] {
            let t = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap();
            let expected = i64::try_from(nanos.div_euclid(1_000_000)).unwrap();
            assert_eq!(unix_millis(t), expected, "{nanos} ns");
            assert_eq!(system_millis(SystemTime::from(t)), expected, "{nanos} ns");
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
                created_at: unix_millis(r.created_at),
                expires_at: unix_millis(r.expires_at),
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

    #[test]
    fn the_deadline_in_milliseconds_agrees_with_the_calendar() {
        let created = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        let later = [
            time::Duration::ZERO,
            time::Duration::milliseconds(1),
            time::Duration::minutes(59),
            time::Duration::hours(30),
            time::Duration::days(500),
        ];
        let lifetimes = [
            Lifetime::new(),
            Lifetime::new().with_idle_timeout(Some(Duration::from_secs(1800))),
            Lifetime::new().with_absolute_timeout(Some(Duration::from_secs(86_400))),
            Lifetime::new()
                .with_idle_timeout(Some(Duration::from_secs(1800)))
                .with_absolute_timeout(Some(Duration::from_secs(7200))),
            Lifetime::new()
                .with_idle_timeout(None)
                .with_absolute_timeout(None),
            Lifetime::new().with_idle_timeout(Some(Duration::MAX)),
        ];
        for lifetime in lifetimes {
            for after in later {
                let now = created + after;
                assert_eq!(
                    lifetime.deadline_ms(unix_millis(created), unix_millis(now)),
                    unix_millis(lifetime.deadline(created, now)),
                    "{lifetime:?} at +{after}"
                );
            }
        }
    }

    #[test]
    fn deadline_is_the_earlier_of_idle_and_absolute() {
        let t0 = OffsetDateTime::from_unix_timestamp(0).unwrap();
        let l = Lifetime::new()
            .with_idle_timeout(Some(Duration::from_secs(10)))
            .with_absolute_timeout(Some(Duration::from_secs(100)));
        assert_eq!(l.deadline(t0, t0), t0 + time::Duration::seconds(10));
        let late = t0 + time::Duration::seconds(95);
        assert_eq!(l.deadline(t0, late), t0 + time::Duration::seconds(100));
    }
}
