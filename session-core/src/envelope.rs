//! The byte encoding of a [`Record`]: a MessagePack map with one-letter keys
//! (`f` format, `i` id, `d` data, `c` created, `e` expires, `v` version, `o`
//! owner, `l` lifetime), written and read field by field with `rmp` instead
//! of through serde. The bytes are the same as serde's named-struct encoding
//! (a test checks it), at a fraction of the cost: every load and save of every
//! store goes through here.

use rmp::decode;
use rmp::encode;

use crate::id::RecordId;
use crate::record::{Data, Lifetime, Record, RecordDecodeError};
use crate::timestamp::Timestamp;

/// The only format this release writes; others are refused.
pub(crate) const FORMAT: u8 = 1;

fn invalid(e: impl std::fmt::Display) -> RecordDecodeError {
    RecordDecodeError(e.to_string())
}

/// How deeply the fields read through serde (the lifetime, and fields of
/// later releases that this one skips) may nest: enough for any of them,
/// and far too little for a corrupted or hostile record of one-byte arrays
/// nested a thousand deep to exhaust the stack.
const MAX_DEPTH: usize = 32;

/// Reads one value through serde, at most [`MAX_DEPTH`] deep.
fn through_serde<T: serde::de::DeserializeOwned>(rd: &mut &[u8]) -> Result<T, RecordDecodeError> {
    let mut de = rmp_serde::Deserializer::new(rd);
    de.set_max_depth(MAX_DEPTH);
    T::deserialize(&mut de).map_err(invalid)
}

/// The length of a string or binary field, which MessagePack writes in at
/// most 32 bits: anything longer is refused rather than written with a
/// wrong length.
fn len32(bytes: &[u8]) -> Result<(), RecordDecodeError> {
    u32::try_from(bytes.len())
        .map(|_| ())
        .map_err(|_| invalid("a key, value or owner is 4 GiB or longer"))
}

/// Encodes `record`.
pub(crate) fn encode(record: &Record) -> Result<Vec<u8>, RecordDecodeError> {
    let values: usize = record
        .data
        .iter()
        .map(|(k, v)| k.len() + v.len() + 10)
        .sum();
    let mut buf = Vec::with_capacity(96 + values);
    let w = &mut buf;
    encode::write_map_len(w, 8).map_err(invalid)?;
    encode::write_str(w, "f").map_err(invalid)?;
    encode::write_uint(w, u64::from(FORMAT)).map_err(invalid)?;
    encode::write_str(w, "i").map_err(invalid)?;
    encode::write_bin(w, record.id.as_bytes()).map_err(invalid)?;
    encode::write_str(w, "d").map_err(invalid)?;
    let len = u32::try_from(record.data.len()).map_err(invalid)?;
    encode::write_map_len(w, len).map_err(invalid)?;
    for (key, value) in &record.data {
        len32(key.as_bytes())?;
        len32(value)?;
        encode::write_str(w, key).map_err(invalid)?;
        encode::write_bin(w, value).map_err(invalid)?;
    }
    encode::write_str(w, "c").map_err(invalid)?;
    encode::write_sint(w, record.created_at.unix_millis()).map_err(invalid)?;
    encode::write_str(w, "e").map_err(invalid)?;
    encode::write_sint(w, record.expires_at.unix_millis()).map_err(invalid)?;
    encode::write_str(w, "v").map_err(invalid)?;
    encode::write_uint(w, record.version).map_err(invalid)?;
    encode::write_str(w, "o").map_err(invalid)?;
    match &record.owner {
        Some(owner) => {
            len32(owner.as_bytes())?;
            encode::write_str(w, owner).map_err(invalid)?;
        }
        None => encode::write_nil(w).map_err(invalid)?,
    }
    encode::write_str(w, "l").map_err(invalid)?;
    match &record.lifetime {
        Some(lifetime) => rmp_serde::encode::write_named(w, lifetime).map_err(invalid)?,
        None => encode::write_nil(w).map_err(invalid)?,
    }
    Ok(buf)
}

/// Takes `n` bytes off the front of `rd`.
fn take<'a>(rd: &mut &'a [u8], n: u32) -> Result<&'a [u8], RecordDecodeError> {
    let n = usize::try_from(n).map_err(invalid)?;
    if rd.len() < n {
        return Err(invalid("record is truncated"));
    }
    let (head, rest) = rd.split_at(n);
    *rd = rest;
    Ok(head)
}

/// A MessagePack string's bytes, not checked for UTF-8: the record's field
/// names are compared as bytes.
fn raw_str<'a>(rd: &mut &'a [u8]) -> Result<&'a [u8], RecordDecodeError> {
    // Field names and most keys are short: a fixstr's length is in its marker.
    let n = match rd.split_first() {
        Some((&marker @ 0xa0..=0xbf, rest)) => {
            *rd = rest;
            u32::from(marker & 0x1f)
        }
        _ => decode::read_str_len(rd).map_err(invalid)?,
    };
    take(rd, n)
}

/// A MessagePack string (a data key or the owner), checked for UTF-8.
fn key<'a>(rd: &mut &'a [u8]) -> Result<&'a str, RecordDecodeError> {
    std::str::from_utf8(raw_str(rd)?).map_err(invalid)
}

fn bin<'a>(rd: &mut &'a [u8]) -> Result<&'a [u8], RecordDecodeError> {
    // The id and small values: a bin8's length is its second byte.
    let n = match *rd {
        [0xc4, len, ref rest @ ..] => {
            *rd = rest;
            u32::from(*len)
        }
        _ => decode::read_bin_len(rd).map_err(invalid)?,
    };
    take(rd, n)
}

/// Whether the next value is nil; consumes it if so.
fn nil(rd: &mut &[u8]) -> bool {
    if rd.first() == Some(&0xc0) {
        *rd = &rd[1..];
        true
    } else {
        false
    }
}

fn data(rd: &mut &[u8]) -> Result<Data, RecordDecodeError> {
    let n = decode::read_map_len(rd).map_err(invalid)?;
    let mut data = Data::new();
    for _ in 0..n {
        let k = key(rd)?.to_owned();
        let v = bin(rd)?.to_vec();
        // Bytes this crate never writes: keeping either value would drop
        // the other at the next save.
        if data.insert(k, v).is_some() {
            return Err(invalid("a key appears twice in the record's values"));
        }
    }
    Ok(data)
}

/// Decodes bytes written by [`encode`] (or by an older or newer release:
/// unknown fields are skipped, optional ones default). A known field or a
/// value's key that appears twice, or an owner `login` would refuse, makes
/// the bytes no record.
pub(crate) fn decode(mut rd: &[u8]) -> Result<Record, RecordDecodeError> {
    let rd = &mut rd;
    let fields = decode::read_map_len(rd).map_err(invalid)?;
    let mut format = None;
    let mut id = None;
    let mut values = Data::new();
    let mut created = None;
    let mut expires = None;
    let mut version = 0;
    let mut owner = None;
    let mut lifetime: Option<Lifetime> = None;
    // The known fields read so far, one bit each: a second one is bytes
    // this crate never writes, and which of the two counts is anyone's
    // guess.
    let mut seen = 0u8;
    let mut once = |bit: u8, name: &str| {
        if seen & (1 << bit) != 0 {
            return Err(invalid(format!(
                "field {name:?} appears twice in the record"
            )));
        }
        seen |= 1 << bit;
        Ok(())
    };
    for _ in 0..fields {
        match raw_str(rd)? {
            b"f" => {
                once(0, "f")?;
                format = Some(decode::read_int::<u8, _>(rd).map_err(invalid)?);
            }
            b"i" => {
                once(1, "i")?;
                let bytes: [u8; 32] = bin(rd)?
                    .try_into()
                    .map_err(|_| invalid("record id is not 32 bytes"))?;
                id = Some(RecordId::from_bytes(bytes));
            }
            b"d" => {
                once(2, "d")?;
                values = data(rd)?;
            }
            b"c" => {
                once(3, "c")?;
                created = Some(decode::read_int::<i64, _>(rd).map_err(invalid)?);
            }
            b"e" => {
                once(4, "e")?;
                expires = Some(decode::read_int::<i64, _>(rd).map_err(invalid)?);
            }
            b"v" => {
                once(5, "v")?;
                if !nil(rd) {
                    version = decode::read_int::<u64, _>(rd).map_err(invalid)?;
                }
            }
            b"o" => {
                once(6, "o")?;
                if !nil(rd) {
                    owner = Some(key(rd)?.to_owned());
                }
            }
            b"l" => {
                once(7, "l")?;
                if !nil(rd) {
                    lifetime = Some(through_serde(rd)?);
                }
            }
            _ => {
                let _: serde::de::IgnoredAny = through_serde(rd)?;
            }
        }
    }
    // An owner `login` would refuse (empty, too long, a NUL) came from
    // damaged or foreign bytes: the app would take the client for that
    // user.
    if owner
        .as_deref()
        .is_some_and(|o| !crate::session::is_valid_owner(o))
    {
        return Err(invalid("record's owner is not one a login accepts"));
    }
    match format {
        Some(FORMAT) => {}
        Some(other) => return Err(invalid(format!("unknown record format {other}"))),
        None => return Err(invalid("record has no format")),
    }
    // A lifetime `set_lifetime` would refuse (no timeout, or one under a
    // second or over 400 days) came from damaged or foreign bytes: it would
    // replace the configured timeouts (a deadline in the year 9999, no
    // absolute timeout). The configured lifetime applies instead.
    let lifetime = lifetime.filter(|l| match crate::config::validate_lifetime(l) {
        Ok(()) => true,
        Err(why) => {
            tracing::warn!(%why, "a stored session's own lifetime is not valid; the configured one applies");
            false
        }
    });
    Ok(Record {
        id: id.ok_or_else(|| invalid("record has no id"))?,
        data: values,
        created_at: timestamp(created.ok_or_else(|| invalid("record has no creation time"))?)?,
        expires_at: timestamp(expires.ok_or_else(|| invalid("record has no deadline"))?)?,
        version,
        owner,
        lifetime,
    })
}

/// `bytes` (a record written by [`encode`], or by an older or newer release)
/// with its deadline set to `expires_at`, every other byte kept: fields this
/// release does not know, and anything after the record, stay as they were.
pub(crate) fn with_expires_at(
    bytes: &[u8],
    expires_at: Timestamp,
) -> Result<Vec<u8>, RecordDecodeError> {
    let mut rest = bytes;
    let rd = &mut rest;
    let fields = decode::read_map_len(rd).map_err(invalid)?;
    // The last `e` (a record has one: `decode` refuses bytes with two).
    let mut deadline = None;
    for _ in 0..fields {
        let is_deadline = raw_str(rd)? == b"e";
        let start = bytes.len() - rd.len();
        if is_deadline {
            decode::read_int::<i64, _>(rd).map_err(invalid)?;
            deadline = Some((start, bytes.len() - rd.len()));
        } else {
            let _: serde::de::IgnoredAny = through_serde(rd)?;
        }
    }
    let (start, end) = deadline.ok_or_else(|| invalid("record has no deadline"))?;
    let mut out = Vec::with_capacity(bytes.len() + 8);
    out.extend_from_slice(&bytes[..start]);
    encode::write_sint(&mut out, expires_at.unix_millis()).map_err(invalid)?;
    out.extend_from_slice(&bytes[end..]);
    Ok(out)
}

/// A stored timestamp: out of range means the bytes are not a record.
fn timestamp(ms: i64) -> Result<Timestamp, RecordDecodeError> {
    Timestamp::checked_from_unix_millis(ms)
        .ok_or_else(|| invalid(format!("timestamp {ms} out of range")))
}
