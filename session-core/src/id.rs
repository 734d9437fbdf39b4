//! Session ids: the secret that travels in the cookie, and the hash that keys
//! the store.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// Number of random bytes in an [`Id`] (256 bits).
pub const ID_BYTES: usize = 32;

/// Length of an [`Id`] in its text form (URL-safe base64 without padding).
pub const ID_TEXT_LEN: usize = 43;

/// A session id: 256 bits from the operating system's CSPRNG.
///
/// This is the secret the client holds. Its text form is URL-safe base64 without
/// padding (43 characters), so it fits a cookie or a header unchanged. Parsing is
/// strict: anything of another length or alphabet, or a non-canonical encoding,
/// is rejected.
///
/// The `Debug` form does not show the secret, so an `Id` may appear in logs by
/// accident without leaking a usable session.
///
/// ```
/// use session_core::Id;
///
/// let id = Id::generate().expect("the OS random source works");
/// let text = id.to_string();
/// assert_eq!(text.len(), 43);
/// assert_eq!(text.parse::<Id>().unwrap(), id);
/// assert!("not-an-id".parse::<Id>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Id([u8; ID_BYTES]);

/// Why a text is not a valid [`Id`] or [`RecordId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidId {
    /// The text does not have the expected length.
    #[error("session id has length {found}, expected {expected}")]
    Length {
        /// Length of the rejected text.
        found: usize,
        /// Length a valid id has.
        expected: usize,
    },
    /// The text has characters outside the id's alphabet, or a non-canonical
    /// encoding.
    #[error("session id is not canonical {alphabet}")]
    Alphabet {
        /// The alphabet that was expected.
        alphabet: &'static str,
    },
}

/// The operating system's random source failed.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomError(getrandom::Error);

impl Id {
    /// Draws a new id from the operating system's CSPRNG.
    ///
    /// # Errors
    /// Fails only when the OS random source is unavailable.
    pub fn generate() -> Result<Self, RandomError> {
        let mut bytes = [0u8; ID_BYTES];
        getrandom::getrandom(&mut bytes).map_err(RandomError)?;
        Ok(Self(bytes))
    }

    /// The id under which a store keeps this session: its SHA-256 hash.
    ///
    /// Stores never see the raw id, so a leaked store dump or a timing side
    /// channel on store lookups yields nothing a client could present.
    pub fn record_id(&self) -> RecordId {
        RecordId(Sha256::digest(self.0).into())
    }

    /// Parses the text form, rejecting anything that is not exactly a valid id.
    ///
    /// # Errors
    /// [`InvalidId`] for a wrong length, a character outside the URL-safe base64
    /// alphabet, or a non-canonical encoding.
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        if text.len() != ID_TEXT_LEN {
            return Err(InvalidId::Length {
                found: text.len(),
                expected: ID_TEXT_LEN,
            });
        }
        let mut bytes = [0u8; ID_BYTES];
        // The engine is strict: it rejects padding and non-zero trailing bits,
        // so every id has exactly one text form.
        match URL_SAFE_NO_PAD.decode_slice(text, &mut bytes) {
            Ok(ID_BYTES) => Ok(Self(bytes)),
            _ => Err(InvalidId::Alphabet {
                alphabet: "URL-safe base64",
            }),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; ID_TEXT_LEN];
        let n = URL_SAFE_NO_PAD
            .encode_slice(self.0, &mut buf)
            .map_err(|_| fmt::Error)?;
        f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.record_id().short())
    }
}

impl FromStr for Id {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for Id {
    type Error = InvalidId;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

/// Length of a [`RecordId`] in its text form (lowercase hex).
pub const RECORD_ID_TEXT_LEN: usize = 64;

/// The key of a session record in a store: the SHA-256 hash of its [`Id`].
///
/// Its text form is 64 lowercase hex characters. It is safe to log (it cannot be
/// turned back into an id); [`RecordId::short`] gives the 8-character prefix the
/// library uses in its own logs.
///
/// ```
/// use session_core::{Id, RecordId};
///
/// let id = Id::generate().unwrap();
/// let rid = id.record_id();
/// assert_eq!(rid.to_string().len(), 64);
/// assert_eq!(rid.to_string().parse::<RecordId>().unwrap(), rid);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId([u8; 32]);

impl RecordId {
    /// Builds a record id from its 32 raw bytes.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 hex characters: enough to correlate log lines, useless to an
    /// attacker.
    pub fn short(&self) -> String {
        let mut s = String::with_capacity(RECORD_ID_TEXT_LEN);
        self.push_hex(&mut s);
        s.truncate(8);
        s
    }

    /// Parses the 64-character lowercase hex form.
    ///
    /// # Errors
    /// [`InvalidId`] for a wrong length or a character that is not lowercase hex.
    pub fn parse(text: &str) -> Result<Self, InvalidId> {
        if text.len() != RECORD_ID_TEXT_LEN {
            return Err(InvalidId::Length {
                found: text.len(),
                expected: RECORD_ID_TEXT_LEN,
            });
        }
        let mut out = [0u8; 32];
        let bytes = text.as_bytes();
        for (i, slot) in out.iter_mut().enumerate() {
            let hi = hex_val(bytes[2 * i]);
            let lo = hex_val(bytes[2 * i + 1]);
            match (hi, lo) {
                (Some(hi), Some(lo)) => *slot = (hi << 4) | lo,
                _ => {
                    return Err(InvalidId::Alphabet {
                        alphabet: "lowercase hex",
                    })
                }
            }
        }
        Ok(Self(out))
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl RecordId {
    /// Appends the 64 lowercase hex digits (what `to_string` gives) to
    /// `out`, without the formatting machinery: stores build a key from it
    /// on every call.
    ///
    /// ```
    /// let rid = session_core::Id::generate().unwrap().record_id();
    /// let mut key = String::from("session:");
    /// rid.push_hex(&mut key);
    /// assert_eq!(key, format!("session:{rid}"));
    /// ```
    pub fn push_hex(&self, out: &mut String) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; RECORD_ID_TEXT_LEN];
        for (pair, b) in text.chunks_exact_mut(2).zip(self.0) {
            pair[0] = HEX[usize::from(b >> 4)];
            pair[1] = HEX[usize::from(b & 0xf)];
        }
        // Always ASCII.
        if let Ok(text) = std::str::from_utf8(&text) {
            out.push_str(text);
        }
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(RECORD_ID_TEXT_LEN);
        self.push_hex(&mut s);
        f.write_str(&s)
    }
}

impl fmt::Debug for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordId({})", self.short())
    }
}

impl FromStr for RecordId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_round_trip_and_differ() {
        let a = Id::generate().unwrap();
        let b = Id::generate().unwrap();
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(text.len(), ID_TEXT_LEN);
        assert!(text
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(Id::parse(&text).unwrap(), a);
    }

    #[test]
    fn parse_rejects_wrong_length_and_alphabet() {
        assert!(matches!(Id::parse(""), Err(InvalidId::Length { .. })));
        assert!(matches!(
            Id::parse(&"A".repeat(44)),
            Err(InvalidId::Length { .. })
        ));
        // Right length, wrong alphabet (standard base64 and padding).
        assert!(matches!(
            Id::parse(&format!("{}+", "A".repeat(42))),
            Err(InvalidId::Alphabet { .. })
        ));
        assert!(Id::parse(&format!("{}=", "A".repeat(42))).is_err());
        // Multi-byte characters of the right byte length never panic.
        let multibyte = format!("{}A", "é".repeat(21));
        assert_eq!(multibyte.len(), 43);
        assert!(matches!(
            Id::parse(&multibyte),
            Err(InvalidId::Alphabet { .. })
        ));
    }

    #[test]
    fn parse_rejects_non_canonical_trailing_bits() {
        // 43 chars encode 258 bits; the last 2 must be zero. 'B' sets one.
        let canonical = format!("{}A", "A".repeat(42));
        assert!(Id::parse(&canonical).is_ok());
        let non_canonical = format!("{}B", "A".repeat(42));
        assert!(Id::parse(&non_canonical).is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let id = Id::generate().unwrap();
        let dbg = format!("{id:?}");
        assert!(!dbg.contains(&id.to_string()));
    }

    #[test]
    fn record_id_is_a_stable_hash() {
        let id = Id::parse(&format!("{}A", "A".repeat(42))).unwrap();
        // SHA-256 of 32 zero bytes.
        assert_eq!(
            id.record_id().to_string(),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
        assert_eq!(id.record_id().short(), "66687aad");
    }

    #[test]
    fn record_id_parse_is_strict() {
        let rid = Id::generate().unwrap().record_id();
        assert_eq!(RecordId::parse(&rid.to_string()).unwrap(), rid);
        assert!(RecordId::parse(&rid.to_string().to_uppercase()).is_err());
        assert!(RecordId::parse("abc").is_err());
        assert!(RecordId::parse(&"g".repeat(64)).is_err());
    }
}
