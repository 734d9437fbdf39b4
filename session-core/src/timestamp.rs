//! Instants as records and stores keep them: whole milliseconds since the
//! Unix epoch.

use std::fmt;
use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::{OffsetDateTime, PrimitiveDateTime};

/// An instant in UTC, to the millisecond: the precision every store keeps,
/// and integer arithmetic for the checks every request makes (is the session
/// live, is its idle deadline due to move) where a calendar date would cost
/// a conversion each way.
///
/// It spans what [`OffsetDateTime`] can hold in UTC (years -9999 to 9999):
/// a UTC instant converts to it and back exactly, to the millisecond (the
/// finer part is rounded down, and a date past either end clamps to it).
/// Arithmetic takes [`Duration`]s in whole milliseconds, rounded down, and
/// saturates at the ends.
///
/// ```
/// use std::time::Duration;
/// use session_core::Timestamp;
/// use time::OffsetDateTime;
///
/// let t = Timestamp::from_unix_millis(1_700_000_000_123);
/// assert_eq!((t + Duration::from_secs(1)).unix_millis(), 1_700_000_001_123);
/// let date: OffsetDateTime = t.into();
/// assert_eq!(date.unix_timestamp(), 1_700_000_000);
/// assert_eq!(Timestamp::from(date), t);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The earliest instant: -9999-01-01T00:00:00Z.
    pub const MIN: Self = Self(PrimitiveDateTime::MIN.assume_utc().unix_timestamp() * 1000);
    /// The latest instant: 9999-12-31T23:59:59.999Z.
    pub const MAX: Self = Self(PrimitiveDateTime::MAX.assume_utc().unix_timestamp() * 1000 + 999);
    /// 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Self = Self(0);

    /// The instant `ms` milliseconds after the Unix epoch (before it when
    /// negative), clamped to [`MIN`](Self::MIN)..=[`MAX`](Self::MAX).
    pub const fn from_unix_millis(ms: i64) -> Self {
        if ms < Self::MIN.0 {
            Self::MIN
        } else if ms > Self::MAX.0 {
            Self::MAX
        } else {
            Self(ms)
        }
    }

    /// [`from_unix_millis`](Self::from_unix_millis), or `None` outside the
    /// range: for decoding, where such a value means corrupted bytes.
    pub const fn checked_from_unix_millis(ms: i64) -> Option<Self> {
        if ms < Self::MIN.0 || ms > Self::MAX.0 {
            None
        } else {
            Some(Self(ms))
        }
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// The system clock now, rounded down to the millisecond.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// `self + d`, or [`MAX`](Self::MAX).
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        Self::from_unix_millis(self.0.saturating_add(millis(d)))
    }

    /// `self - d`, or [`MIN`](Self::MIN).
    #[must_use]
    pub fn saturating_sub(self, d: Duration) -> Self {
        Self::from_unix_millis(self.0.saturating_sub(millis(d)))
    }

    /// How long after `earlier` this is; zero if it is not after it.
    pub fn duration_since(self, earlier: Self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

/// Whole milliseconds of `d`, saturating.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Add<Duration> for Timestamp {
    type Output = Self;

    /// Saturating, as [`Timestamp::saturating_add`].
    fn add(self, d: Duration) -> Self {
        self.saturating_add(d)
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Self;

    /// Saturating, as [`Timestamp::saturating_sub`].
    fn sub(self, d: Duration) -> Self {
        self.saturating_sub(d)
    }
}

impl AddAssign<Duration> for Timestamp {
    /// Saturating, as [`Timestamp::saturating_add`].
    fn add_assign(&mut self, d: Duration) {
        *self = self.saturating_add(d);
    }
}

impl SubAssign<Duration> for Timestamp {
    /// Saturating, as [`Timestamp::saturating_sub`].
    fn sub_assign(&mut self, d: Duration) {
        *self = self.saturating_sub(d);
    }
}

impl From<OffsetDateTime> for Timestamp {
    /// Rounded down to the millisecond. Whole seconds and the millisecond
    /// field: no 128-bit division.
    fn from(t: OffsetDateTime) -> Self {
        Self::from_unix_millis(
            t.unix_timestamp()
                .saturating_mul(1000)
                .saturating_add(i64::from(t.millisecond())),
        )
    }
}

impl From<Timestamp> for OffsetDateTime {
    fn from(t: Timestamp) -> Self {
        let millis = u16::try_from(t.0.rem_euclid(1000)).unwrap_or(0);
        // In range by construction; the fallbacks are never taken.
        OffsetDateTime::from_unix_timestamp(t.0.div_euclid(1000))
            .and_then(|s| s.replace_millisecond(millis))
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

impl From<SystemTime> for Timestamp {
    /// Rounded down to the millisecond, before 1970 too.
    fn from(t: SystemTime) -> Self {
        Self::from_unix_millis(match t.duration_since(UNIX_EPOCH) {
            Ok(d) => millis(d),
            Err(e) => {
                let before = e.duration();
                let ms = millis(before);
                if before.subsec_nanos() % 1_000_000 == 0 {
                    -ms
                } else {
                    ms.saturating_neg().saturating_sub(1)
                }
            }
        })
    }
}

impl fmt::Debug for Timestamp {
    /// RFC 3339, as the instant reads in logs: `2023-11-14T22:13:20.123Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC, to the millisecond, for years 0 to 9999 (earlier
    /// ones, which RFC 3339 cannot write, start with a minus sign).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = OffsetDateTime::from(*self);
        let (year, month, day) = t.to_calendar_date();
        write!(
            f,
            "{year:04}-{:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            u8::from(month),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_both_ways_at_every_edge() {
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
            Timestamp::MAX.0,
            Timestamp::MIN.0,
        ] {
            let t = Timestamp::from_unix_millis(ms);
            let date = OffsetDateTime::from(t);
            assert_eq!(
                date.unix_timestamp_nanos(),
                i128::from(ms) * 1_000_000,
                "{ms}"
            );
            assert_eq!(Timestamp::from(date), t, "{ms}");
        }
        assert_eq!(Timestamp::MAX.0, 253_402_300_799_999);
        assert_eq!(
            OffsetDateTime::from(Timestamp::MIN),
            PrimitiveDateTime::MIN.assume_utc()
        );
        assert_eq!(Timestamp::from_unix_millis(i64::MAX), Timestamp::MAX);
        assert_eq!(Timestamp::from_unix_millis(i64::MIN), Timestamp::MIN);
        assert_eq!(Timestamp::checked_from_unix_millis(i64::MAX), None);
        assert_eq!(
            Timestamp::checked_from_unix_millis(Timestamp::MIN.0 - 1),
            None
        );
        assert_eq!(
            Timestamp::checked_from_unix_millis(-5),
            Some(Timestamp::from_unix_millis(-5))
        );
    }

    #[test]
    fn rounds_down_to_the_millisecond_from_either_clock() {
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
            assert_eq!(Timestamp::from(t).0, expected, "{nanos} ns");
            assert_eq!(
                Timestamp::from(SystemTime::from(t)).0,
                expected,
                "{nanos} ns"
            );
        }
        let before = Timestamp::from(OffsetDateTime::now_utc());
        let now = Timestamp::now();
        let after = Timestamp::from(OffsetDateTime::now_utc());
        assert!(
            before <= now && now <= after,
            "{before} <= {now} <= {after}"
        );
    }

    #[test]
    fn arithmetic_saturates_and_agrees_with_the_calendar() {
        let t = Timestamp::from_unix_millis(1_700_000_000_123);
        let date = OffsetDateTime::from(t);
        for d in [
            Duration::ZERO,
            Duration::from_millis(1),
            Duration::from_secs(59 * 60),
            Duration::from_secs(30 * 3600),
            Duration::from_secs(500 * 86_400),
        ] {
            let calendar = date + time::Duration::try_from(d).unwrap();
            assert_eq!(t + d, Timestamp::from(calendar), "{d:?}");
            assert_eq!((t + d) - d, t, "{d:?}");
            assert_eq!((t + d).duration_since(t), d, "{d:?}");
        }
        assert_eq!(t + Duration::MAX, Timestamp::MAX);
        assert_eq!(t - Duration::MAX, Timestamp::MIN);
        assert_eq!(t.duration_since(t + Duration::from_secs(1)), Duration::ZERO);
        let mut moved = t;
        moved += Duration::from_secs(2);
        moved -= Duration::from_secs(1);
        assert_eq!(moved, t + Duration::from_secs(1));
    }

    #[test]
    fn displays_as_rfc_3339() {
        assert_eq!(
            Timestamp::from_unix_millis(1_700_000_000_123).to_string(),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            format!("{:?}", Timestamp::from_unix_millis(-1)),
            "1969-12-31T23:59:59.999Z"
        );
    }
}
