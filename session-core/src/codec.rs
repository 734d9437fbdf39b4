//! How session values become bytes.

use std::fmt;

/// The error of one value's encoding or decoding.
pub type CodecError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Receives the deserializer of one value; see [`Codec::decode`].
pub type DecodeVisitor<'v> = &'v mut dyn for<'de> FnMut(
    &mut dyn erased_serde::Deserializer<'de>,
) -> Result<(), erased_serde::Error>;

/// Turns session values into bytes and back.
///
/// The trait is object-safe through [`erased_serde`], so a
/// [`Config`](crate::Config) holds any codec. The default is [`MessagePack`];
/// `JsonCodec` comes with the `json` feature.
///
/// A codec should tolerate struct fields added by a later release (decode
/// them with `#[serde(default)]`), so a deploy that adds a field does not make
/// stored sessions unreadable; both built-in codecs write field names. Both
/// write `None` and `()` alike, so an `Option<()>` or `Option<Option<T>>`
/// holding `Some(())` or `Some(None)` comes back as `None`.
///
/// ```
/// use session_core::{Codec, MessagePack};
///
/// let codec = MessagePack;
/// let bytes = codec.encode(&"iris").unwrap();
/// let mut out = None;
/// codec
///     .decode(&bytes, &mut |de| {
///         out = Some(erased_serde::deserialize::<String>(de)?);
///         Ok(())
///     })
///     .unwrap();
/// assert_eq!(out.as_deref(), Some("iris"));
/// ```
pub trait Codec: fmt::Debug + Send + Sync + 'static {
    /// Encodes one value.
    fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Vec<u8>, CodecError>;

    /// Decodes one value by handing a deserializer over `bytes` to `visit`.
    fn decode(&self, bytes: &[u8], visit: DecodeVisitor<'_>) -> Result<(), CodecError>;
}

/// How deeply a value [`MessagePack`] decodes may nest.
const MAX_DEPTH: usize = 128;

/// MessagePack through `rmp-serde`, structs written as maps with field names.
/// Compact, fast and tolerant of added fields. The default codec. A value
/// nested more than 127 levels deep (arrays, maps and enum variants
/// together) does not decode.
#[derive(Debug, Clone, Copy, Default)]
pub struct MessagePack;

impl Codec for MessagePack {
    fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Vec<u8>, CodecError> {
        let mut buf = Vec::with_capacity(32);
        let mut ser = rmp_serde::Serializer::new(&mut buf).with_struct_map();
        erased_serde::serialize(value, &mut ser)?;
        Ok(buf)
    }

    fn decode(&self, bytes: &[u8], visit: DecodeVisitor<'_>) -> Result<(), CodecError> {
        // serde_json's own limit: a stored value nested deeper (one byte a
        // level in MessagePack) is refused before it can exhaust the stack.
        let limited = || {
            let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
            de.set_max_depth(MAX_DEPTH);
            de
        };
        // rmp-serde counts the levels of arrays, maps and extensions, but
        // not of enums: it reads a variant with data (a map of one entry)
        // without counting, so a recursive enum (`Not(Box<Filter>)`) would
        // nest two bytes a level until the stack overflowed. Read as
        // `IgnoredAny`, every variant is a map that counts. A value no longer
        // than the limit cannot nest deeper, so the common small value is
        // read once.
        if bytes.len() > MAX_DEPTH {
            <serde::de::IgnoredAny as serde::Deserialize>::deserialize(&mut limited())?;
        }
        let mut de = limited();
        let mut erased = <dyn erased_serde::Deserializer>::erase(&mut de);
        visit(&mut erased)?;
        Ok(())
    }
}

/// JSON through `serde_json`: larger and slower than [`MessagePack`], but
/// readable by humans looking at the store.
#[cfg(feature = "json")]
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

#[cfg(feature = "json")]
impl Codec for JsonCodec {
    fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Vec<u8>, CodecError> {
        Ok(serde_json::to_vec(value)?)
    }

    fn decode(&self, bytes: &[u8], visit: DecodeVisitor<'_>) -> Result<(), CodecError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let mut erased = <dyn erased_serde::Deserializer>::erase(&mut de);
        visit(&mut erased)?;
        de.end()?;
        Ok(())
    }
}

/// Encodes a typed value with a codec.
pub(crate) fn encode<T: serde::Serialize>(
    codec: &dyn Codec,
    value: &T,
) -> Result<Vec<u8>, CodecError> {
    codec.encode(value)
}

/// Decodes a typed value with a codec.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    codec: &dyn Codec,
    bytes: &[u8],
) -> Result<T, CodecError> {
    let mut out = None;
    codec.decode(bytes, &mut |de| {
        out = Some(erased_serde::deserialize::<T>(de)?);
        Ok(())
    })?;
    out.ok_or_else(|| "codec produced no value".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct V1 {
        name: String,
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct V2 {
        name: String,
        #[serde(default)]
        age: u32,
    }

    fn added_field_is_tolerated(codec: &dyn Codec) {
        let old = encode(codec, &V1 { name: "a".into() }).unwrap();
        let new: V2 = decode(codec, &old).unwrap();
        assert_eq!(
            new,
            V2 {
                name: "a".into(),
                age: 0
            }
        );
        // And the other way: a removed field is ignored.
        let newer = encode(
            codec,
            &V2 {
                name: "b".into(),
                age: 3,
            },
        )
        .unwrap();
        let back: V1 = decode(codec, &newer).unwrap();
        assert_eq!(back, V1 { name: "b".into() });
    }

    #[test]
    fn messagepack_tolerates_added_and_removed_fields() {
        added_field_is_tolerated(&MessagePack);
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_tolerates_added_and_removed_fields() {
        added_field_is_tolerated(&JsonCodec);
    }

    /// A stored value nested a thousand levels deep (a byte a level) is an
    /// error, not a stack overflow, on a thread with a small stack.
    #[test]
    fn deeply_nested_values_are_refused() {
        let mut deep = vec![0x91; 10_000];
        deep.push(0xc0);
        let shallow = [0x91, 0x91, 0xc0];
        let decoded = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                (
                    decode::<serde::de::IgnoredAny>(&MessagePack, &deep).is_err(),
                    decode::<serde::de::IgnoredAny>(&MessagePack, &shallow).is_ok(),
                )
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(decoded, (true, true));
    }

    /// Enums nest without rmp-serde counting them: a recursive enum whose
    /// stored value wraps a hundred thousand variants (two bytes a level) is
    /// an error on a small stack too, and one nested within the limit
    /// decodes.
    #[test]
    fn deeply_nested_enums_are_refused() {
        #[derive(Serialize, Deserialize, Debug, PartialEq)]
        enum Filter {
            Any,
            Not(Box<Filter>),
        }
        let nested =
            |levels: usize| (0..levels).fold(Filter::Any, |inner, _| Filter::Not(Box::new(inner)));
        let mut deep = [0x81, 0x01].repeat(100_000);
        deep.push(0x00);
        let within = encode(&MessagePack, &nested(100)).unwrap();
        assert!(within.len() > MAX_DEPTH, "long enough to be checked");
        let decoded = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(move || {
                (
                    decode::<Filter>(&MessagePack, &deep).is_err(),
                    decode::<Filter>(&MessagePack, &within).ok(),
                )
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(decoded, (true, Some(nested(100))));
    }

    #[test]
    fn wrong_type_and_garbage_are_errors() {
        let bytes = encode(&MessagePack, &"text").unwrap();
        assert!(decode::<u64>(&MessagePack, &bytes).is_err());
        assert!(decode::<String>(&MessagePack, &[0xc1]).is_err());
        assert!(decode::<Vec<u8>>(&MessagePack, &[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
