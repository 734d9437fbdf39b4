//! How [`MemoryStore`](crate::MemoryStore) keeps a record: one allocation
//! holding the encoded record behind a small header, so that expiry,
//! compare-and-set and the owner index read what they need without decoding.
//!
//! Layout: `expires_at` (unix milliseconds, `i64` little-endian), `version`
//! (`u64` little-endian), the owner's length (`u16` little-endian, `0` for
//! none), the owner's UTF-8 bytes, then [`Record::to_bytes`]. The header's
//! `expires_at` is the one that counts: [`Entry::set_expiry`] rewrites only
//! the header, so a touch costs eight bytes, not an encode.

use session_core::{Record, StoreError, StoreErrorKind, Timestamp};

const EXPIRES: usize = 0;
const VERSION: usize = 8;
const OWNER_LEN: usize = 16;
const OWNER: usize = 18;

/// One record in memory.
pub(crate) struct Entry(Box<[u8]>);

fn rejected(message: String) -> StoreError {
    StoreError::new(StoreErrorKind::Rejected, message)
}

impl Entry {
    /// Encodes `record`.
    ///
    /// # Errors
    /// [`StoreErrorKind::Rejected`] if the record does not encode or its owner
    /// is longer than 65 535 bytes (the manager accepts at most 512).
    pub(crate) fn new(record: &Record) -> Result<Self, StoreError> {
        let body = record.to_bytes().map_err(|e| rejected(e.to_string()))?;
        let owner = record.owner.as_deref().unwrap_or("").as_bytes();
        let owner_len = u16::try_from(owner.len())
            .map_err(|_| rejected(format!("owner of {} bytes is too long", owner.len())))?;
        let mut bytes = Vec::with_capacity(OWNER + owner.len() + body.len());
        bytes.extend_from_slice(&record.expires_at.unix_millis().to_le_bytes());
        bytes.extend_from_slice(&record.version.to_le_bytes());
        bytes.extend_from_slice(&owner_len.to_le_bytes());
        bytes.extend_from_slice(owner);
        bytes.extend_from_slice(&body);
        Ok(Self(bytes.into()))
    }

    fn word(&self, at: usize) -> [u8; 8] {
        let mut w = [0; 8];
        w.copy_from_slice(&self.0[at..at + 8]);
        w
    }

    fn expires_millis(&self) -> i64 {
        i64::from_le_bytes(self.word(EXPIRES))
    }

    /// Whether the record is still live at `now` (unix milliseconds).
    pub(crate) fn is_live(&self, now: i64) -> bool {
        self.expires_millis() > now
    }

    /// The deadline, in unix milliseconds: entries compare by it.
    pub(crate) fn deadline(&self) -> i64 {
        self.expires_millis()
    }

    /// The record's version, the compare-and-set token.
    pub(crate) fn version(&self) -> u64 {
        u64::from_le_bytes(self.word(VERSION))
    }

    fn owner_end(&self) -> usize {
        OWNER
            + usize::from(u16::from_le_bytes([
                self.0[OWNER_LEN],
                self.0[OWNER_LEN + 1],
            ]))
    }

    /// The record's owner, if it has one.
    pub(crate) fn owner(&self) -> Option<&str> {
        let owner = &self.0[OWNER..self.owner_end()];
        // Written from a `&str` by `new`, so always UTF-8.
        std::str::from_utf8(owner).ok().filter(|o| !o.is_empty())
    }

    /// Bytes held, for the memory budget.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The record, with the header's deadline.
    ///
    /// # Errors
    /// [`StoreErrorKind::Corrupted`] if the bytes do not decode, which only a
    /// bug could cause: they never leave this process.
    pub(crate) fn record(&self) -> Result<Record, StoreError> {
        let mut record = Record::from_bytes(&self.0[self.owner_end()..])
            .map_err(|e| StoreError::new(StoreErrorKind::Corrupted, e.to_string()))?;
        // Differs only after a touch, which rewrites the header alone.
        record.expires_at = Timestamp::from_unix_millis(self.expires_millis());
        Ok(record)
    }

    /// Moves the deadline.
    pub(crate) fn set_expiry(&mut self, expires_at: Timestamp) {
        self.0[EXPIRES..EXPIRES + 8].copy_from_slice(&expires_at.unix_millis().to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use session_core::Id;

    fn sample(owner: Option<&str>) -> Record {
        let now = Timestamp::from_unix_millis(1_700_000_000_000);
        let mut r = Record::new(
            Id::generate().unwrap().record_id(),
            now,
            now + std::time::Duration::from_secs(3600),
        );
        r.version = 7;
        r.owner = owner.map(str::to_owned);
        r.data.insert("n".into(), vec![1, 2, 3]);
        r
    }

    #[test]
    fn round_trips_with_and_without_an_owner() {
        for owner in [None, Some("alice"), Some("ü")] {
            let r = sample(owner);
            let e = Entry::new(&r).unwrap();
            assert_eq!(e.record().unwrap(), r);
            assert_eq!(e.version(), 7);
            assert_eq!(e.owner(), owner);
            assert!(e.is_live(r.created_at.unix_millis()));
            assert!(!e.is_live(r.expires_at.unix_millis()));
        }
    }

    #[test]
    fn a_new_deadline_rewrites_only_the_header() {
        let r = sample(Some("alice"));
        let later = r.expires_at + std::time::Duration::from_secs(7200);
        let mut e = Entry::new(&r).unwrap();
        e.set_expiry(later);
        let back = e.record().unwrap();
        assert_eq!(back.expires_at, later);
        assert_eq!(back.data, r.data);
        assert_eq!(e.owner(), Some("alice"));
        assert!(e.is_live(r.expires_at.unix_millis()));
    }

    #[test]
    fn an_oversized_owner_is_refused() {
        let r = sample(Some(&"x".repeat(70_000)));
        assert!(Entry::new(&r).is_err());
    }
}
