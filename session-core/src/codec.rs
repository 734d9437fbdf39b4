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
/// together) does not decode, nor do stored bytes with anything after the
/// value.
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
        // rmp-serde counts the levels of arrays, maps and extensions, but
        // not of enums: it reads a variant with data (a map of one entry)
        // without counting, so a recursive enum (`Not(Box<Filter>)`) would
        // nest two bytes a level until the stack overflowed. `one_value`
        // counts every map, so variants too; it also refuses bytes after
        // the value, which rmp-serde's borrowing reader ignores.
        one_value(bytes)?;
        let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
        de.set_max_depth(MAX_DEPTH);
        let mut erased = <dyn erased_serde::Deserializer>::erase(&mut de);
        visit(&mut erased)?;
        Ok(())
    }
}

/// How many levels of containers [`one_value`] keeps track of without an
/// allocation.
const NEAR_LEVELS: usize = 8;

/// Why bytes are not one MessagePack value.
#[derive(Debug, thiserror::Error)]
enum Shape {
    #[error("the value ends early")]
    Truncated,
    #[error("{0} bytes follow the value")]
    Trailing(usize),
    #[error("the value nests more than {} levels deep", MAX_DEPTH - 1)]
    TooDeep,
    #[error("the byte 0xc1 is not MessagePack")]
    Reserved,
}

/// Checks that `bytes` hold exactly one MessagePack value, with arrays and
/// maps nested at most `MAX_DEPTH - 1` levels deep: serde_json's own limit,
/// so a stored value nested deeper (one byte a level) is refused before its
/// decoding can exhaust the stack. Lengths only are read, without
/// recursion or allocation; what the bytes mean is left to rmp-serde.
fn one_value(bytes: &[u8]) -> Result<(), Shape> {
    // The items still to read in each enclosing container, innermost last:
    // the first few levels in place (every value decoded starts by zeroing
    // them), deeper ones on the heap.
    let mut near = [0usize; NEAR_LEVELS];
    let mut far: Vec<usize> = Vec::new();
    let mut depth = 0;
    // The items still to read at this level: the value itself at the top.
    let mut left = 1usize;
    let mut rd = bytes;
    loop {
        while left == 0 {
            if depth == 0 {
                return match rd.len() {
                    0 => Ok(()),
                    n => Err(Shape::Trailing(n)),
                };
            }
            depth -= 1;
            left = match near.get(depth) {
                Some(&left) => left,
                None => far.pop().unwrap_or_default(),
            };
        }
        left -= 1;
        let (&marker, rest) = rd.split_first().ok_or(Shape::Truncated)?;
        rd = rest;
        // What follows the marker: bytes to skip, then items to read.
        let (skip, items) = match rmp::Marker::from_u8(marker) {
            rmp::Marker::FixPos(_)
            | rmp::Marker::FixNeg(_)
            | rmp::Marker::Null
            | rmp::Marker::True
            | rmp::Marker::False => (0, 0),
            rmp::Marker::Reserved => return Err(Shape::Reserved),
            rmp::Marker::U8 | rmp::Marker::I8 => (1, 0),
            rmp::Marker::U16 | rmp::Marker::I16 => (2, 0),
            rmp::Marker::U32 | rmp::Marker::I32 | rmp::Marker::F32 => (4, 0),
            rmp::Marker::U64 | rmp::Marker::I64 | rmp::Marker::F64 => (8, 0),
            rmp::Marker::FixStr(n) => (usize::from(n), 0),
            rmp::Marker::Str8 | rmp::Marker::Bin8 => (length(&mut rd, 1)?, 0),
            rmp::Marker::Str16 | rmp::Marker::Bin16 => (length(&mut rd, 2)?, 0),
            rmp::Marker::Str32 | rmp::Marker::Bin32 => (length(&mut rd, 4)?, 0),
            // An extension's type byte, then its data.
            rmp::Marker::FixExt1 => (2, 0),
            rmp::Marker::FixExt2 => (3, 0),
            rmp::Marker::FixExt4 => (5, 0),
            rmp::Marker::FixExt8 => (9, 0),
            rmp::Marker::FixExt16 => (17, 0),
            rmp::Marker::Ext8 => (length(&mut rd, 1)?.saturating_add(1), 0),
            rmp::Marker::Ext16 => (length(&mut rd, 2)?.saturating_add(1), 0),
            rmp::Marker::Ext32 => (length(&mut rd, 4)?.saturating_add(1), 0),
            rmp::Marker::FixArray(n) => (0, usize::from(n)),
            rmp::Marker::Array16 => (0, length(&mut rd, 2)?),
            rmp::Marker::Array32 => (0, length(&mut rd, 4)?),
            rmp::Marker::FixMap(n) => (0, 2 * usize::from(n)),
            rmp::Marker::Map16 => (0, 2 * length(&mut rd, 2)?),
            // A count past the end is found once the bytes run out.
            rmp::Marker::Map32 => (0, length(&mut rd, 4)?.saturating_mul(2)),
        };
        rd = rd.get(skip..).ok_or(Shape::Truncated)?;
        if items > 0 {
            if depth + 1 >= MAX_DEPTH {
                return Err(Shape::TooDeep);
            }
            match near.get_mut(depth) {
                Some(slot) => *slot = left,
                None => far.push(left),
            }
            depth += 1;
            left = items;
        }
    }
}

/// Reads a big-endian length of `width` bytes.
fn length(rd: &mut &[u8], width: usize) -> Result<usize, Shape> {
    let (digits, rest) = rd.split_at_checked(width).ok_or(Shape::Truncated)?;
    *rd = rest;
    let n = digits.iter().fold(0u64, |n, &d| n << 8 | u64::from(d));
    usize::try_from(n).map_err(|_| Shape::Truncated)
}

/// JSON through `serde_json`: larger and slower than [`MessagePack`], but
/// readable by humans looking at the store. JSON has no NaN or infinity:
/// `serde_json` writes such a float as `null`, which then does not read
/// back as a float ([`MessagePack`] keeps them).
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

    /// Every kind of MessagePack value, at the edges of its length classes,
    /// is one value exactly: with a byte less it ends early, with a byte
    /// more something follows it.
    #[test]
    fn every_kind_of_value_is_measured_exactly() {
        let mut values: Vec<Vec<u8>> = Vec::new();
        let mut push = |v: Vec<u8>| values.push(v);
        for n in [
            0u64,
            127,
            128,
            255,
            256,
            65_535,
            65_536,
            u64::from(u32::MAX) + 1,
        ] {
            push(encode(&MessagePack, &n).unwrap());
        }
        for n in [-1i64, -32, -33, -129, -32_769, i64::from(i32::MIN) - 1] {
            push(encode(&MessagePack, &n).unwrap());
        }
        push(encode(&MessagePack, &1.5f32).unwrap());
        push(encode(&MessagePack, &1.5f64).unwrap());
        push(encode(&MessagePack, &(true, false, ())).unwrap());
        for len in [0, 31, 32, 255, 256, 65_535, 65_536] {
            push(encode(&MessagePack, &"x".repeat(len)).unwrap());
            push(encode(&MessagePack, &serde_bytes::ByteBuf::from(vec![7; len])).unwrap());
        }
        for len in [1, 15, 16, 65_535, 65_536] {
            push(encode(&MessagePack, &vec![1u8; len]).unwrap());
            let map: std::collections::BTreeMap<u32, bool> =
                (0..len as u32).map(|k| (k, true)).collect();
            push(encode(&MessagePack, &map).unwrap());
        }
        push(
            encode(
                &MessagePack,
                &V2 {
                    name: "n".into(),
                    age: 3,
                },
            )
            .unwrap(),
        );
        // Containers followed by more items at their own level, nested
        // past the levels kept without an allocation.
        push(encode(&MessagePack, &(vec![vec![1u8], vec![]], 2u8, "after")).unwrap());
        let siblings = (0..3 * NEAR_LEVELS).fold(vec![0x01], |inner, _| {
            [vec![0x93], inner, vec![0x02, 0xa1, b's']].concat()
        });
        push(siblings);
        // Extensions, which serde types do not write: each fixed size, and
        // the three with a length.
        for (marker, data) in [(0xd4, 1), (0xd5, 2), (0xd6, 4), (0xd7, 8), (0xd8, 16)] {
            push([vec![marker, 5], vec![9; data]].concat());
        }
        push([vec![0xc7, 3, 5], vec![9; 3]].concat());
        push([vec![0xc8, 1, 0, 5], vec![9; 256]].concat());
        push([vec![0xc9, 0, 1, 0, 0, 5], vec![9; 65_536]].concat());
        // An array of extensions, so that their ends are checked inside.
        push([vec![0x92, 0xd4, 5, 9, 0xc7, 1, 5], vec![9]].concat());
        for bytes in values {
            assert!(
                one_value(&bytes).is_ok(),
                "{:x?}",
                &bytes[..bytes.len().min(8)]
            );
            assert!(
                matches!(one_value(&bytes[..bytes.len() - 1]), Err(Shape::Truncated)),
                "{:x?} cut short",
                &bytes[..bytes.len().min(8)]
            );
            let longer = [&bytes[..], &[0xc0]].concat();
            assert!(
                matches!(one_value(&longer), Err(Shape::Trailing(1))),
                "{:x?} with a byte more",
                &bytes[..bytes.len().min(8)]
            );
        }
    }

    /// Bytes after a stored value, which rmp-serde would ignore, make it
    /// undecodable, as `JsonCodec` treats them.
    #[test]
    fn bytes_after_the_value_are_refused() {
        let mut bytes = encode(&MessagePack, &"iris").unwrap();
        assert_eq!(decode::<String>(&MessagePack, &bytes).unwrap(), "iris");
        bytes.extend_from_slice(b"junk");
        let err = decode::<String>(&MessagePack, &bytes).unwrap_err();
        assert_eq!(err.to_string(), "4 bytes follow the value");
        assert!(decode::<String>(&MessagePack, &[]).is_err());
    }

    /// A hundred and twenty-seven levels decode, a hundred and twenty-eight
    /// do not, also in values too short to have been checked before.
    #[test]
    fn nesting_is_limited_to_the_documented_depth() {
        let nested = |levels: usize| [vec![0x91; levels], vec![0xc0]].concat();
        assert!(decode::<serde::de::IgnoredAny>(&MessagePack, &nested(MAX_DEPTH - 1)).is_ok());
        let err = decode::<serde::de::IgnoredAny>(&MessagePack, &nested(MAX_DEPTH)).unwrap_err();
        assert_eq!(err.to_string(), "the value nests more than 127 levels deep");
        // Maps count as arrays do.
        let maps = [[0x81, 0x01].repeat(MAX_DEPTH), vec![0x00]].concat();
        assert!(matches!(one_value(&maps), Err(Shape::TooDeep)));
    }

    /// Lengths that claim more than the bytes hold are refused without
    /// reserving room for them.
    #[test]
    fn lengths_past_the_end_are_refused() {
        for bytes in [
            &[0xdf, 0xff, 0xff, 0xff, 0xff][..],
            &[0xdd, 0xff, 0xff, 0xff, 0xff],
            &[0xdb, 0xff, 0xff, 0xff, 0xff],
            &[0xc9, 0xff, 0xff, 0xff, 0xff, 1],
            &[0xd9],
            &[0x92, 0x01],
        ] {
            assert!(
                matches!(one_value(bytes), Err(Shape::Truncated)),
                "{bytes:x?}"
            );
        }
        assert!(matches!(one_value(&[0xc1]), Err(Shape::Reserved)));
    }

    /// A MessagePack value of any kind, nested a few levels.
    #[derive(Debug, Clone)]
    enum Tree {
        Nil,
        Bool(bool),
        Int(i64),
        Uint(u64),
        F32(f32),
        F64(f64),
        Str(String),
        Bin(Vec<u8>),
        Ext(i8, Vec<u8>),
        Arr(Vec<Tree>),
        Map(Vec<(Tree, Tree)>),
    }

    /// Writes `tree` with rmp's own encoders, which pick the shortest
    /// form of each length.
    fn write(tree: &Tree, out: &mut Vec<u8>) {
        use rmp::encode as e;
        match tree {
            Tree::Nil => e::write_nil(out).unwrap(),
            Tree::Bool(b) => e::write_bool(out, *b).unwrap(),
            Tree::Int(i) => drop(e::write_sint(out, *i).unwrap()),
            Tree::Uint(u) => drop(e::write_uint(out, *u).unwrap()),
            Tree::F32(f) => e::write_f32(out, *f).unwrap(),
            Tree::F64(f) => e::write_f64(out, *f).unwrap(),
            Tree::Str(t) => e::write_str(out, t).unwrap(),
            Tree::Bin(b) => e::write_bin(out, b).unwrap(),
            Tree::Ext(kind, data) => {
                let len = u32::try_from(data.len()).unwrap();
                e::write_ext_meta(out, len, *kind).unwrap();
                out.extend_from_slice(data);
            }
            Tree::Arr(items) => {
                e::write_array_len(out, u32::try_from(items.len()).unwrap()).unwrap();
                items.iter().for_each(|t| write(t, out));
            }
            Tree::Map(entries) => {
                e::write_map_len(out, u32::try_from(entries.len()).unwrap()).unwrap();
                for (k, v) in entries {
                    write(k, out);
                    write(v, out);
                }
            }
        }
    }

    fn tree() -> impl proptest::strategy::Strategy<Value = Tree> {
        use proptest::prelude::*;
        // Lengths across the short and 8- and 16-bit length classes.
        let bytes = || proptest::collection::vec(any::<u8>(), 0..300);
        let leaf = prop_oneof![
            Just(Tree::Nil),
            any::<bool>().prop_map(Tree::Bool),
            any::<i64>().prop_map(Tree::Int),
            any::<u64>().prop_map(Tree::Uint),
            any::<f32>().prop_map(Tree::F32),
            any::<f64>().prop_map(Tree::F64),
            "[a-z\u{e9}]{0,300}".prop_map(Tree::Str),
            bytes().prop_map(Tree::Bin),
            (any::<i8>(), bytes()).prop_map(|(k, d)| Tree::Ext(k, d)),
        ];
        leaf.prop_recursive(4, 64, 20, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..20).prop_map(Tree::Arr),
                proptest::collection::vec((inner.clone(), inner), 0..20).prop_map(Tree::Map),
            ]
        })
    }

    /// What rmp-serde makes of `bytes`: whether they read as one value (of
    /// any shape, at any depth this test reaches) with nothing after it.
    fn rmp_serde_reads_one_value(bytes: &[u8]) -> bool {
        use serde::de::{Deserialize as _, IgnoredAny};
        let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
        de.set_max_depth(4 * MAX_DEPTH);
        IgnoredAny::deserialize(&mut de).is_ok() && de.position() == bytes.len() as u64
    }

    proptest::proptest! {
        // 256 cases by default; PROPTEST_CASES=N runs N (a long campaign).
        #![proptest_config(proptest::prelude::ProptestConfig::default())]

        /// Every encoded value is one value exactly: each prefix ends
        /// early, and a byte more is one byte too many.
        #[test]
        fn encoded_values_are_measured_exactly(tree in tree(), extra in 0u8..) {
            let mut bytes = Vec::new();
            write(&tree, &mut bytes);
            proptest::prop_assert!(one_value(&bytes).is_ok());
            for end in 0..bytes.len() {
                proptest::prop_assert!(matches!(one_value(&bytes[..end]), Err(Shape::Truncated)));
            }
            bytes.push(extra);
            proptest::prop_assert!(matches!(one_value(&bytes), Err(Shape::Trailing(1))));
        }

        /// On any bytes (an encoded value with a byte changed, or noise),
        /// the walker accepts exactly what rmp-serde reads as one whole
        /// value.
        #[test]
        fn the_walker_agrees_with_rmp_serde(
            tree in tree(),
            // Half the changed bytes from the markers with lengths after
            // them (0xc0 to 0xdf), where a miscount would hide.
            flip in proptest::option::of((
                proptest::prelude::any::<proptest::sample::Index>(),
                proptest::prop_oneof![proptest::prelude::any::<u8>(), 0xc0u8..=0xdf],
            )),
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..48),
            use_noise in proptest::prelude::any::<bool>(),
        ) {
            let mut bytes = Vec::new();
            write(&tree, &mut bytes);
            if let Some((at, byte)) = flip {
                let at = at.index(bytes.len());
                bytes[at] = byte;
            }
            let bytes = if use_noise { noise } else { bytes };
            proptest::prop_assert_eq!(
                one_value(&bytes).is_ok(),
                rmp_serde_reads_one_value(&bytes),
                "{:02x?}",
                bytes
            );
        }
    }

    #[test]
    fn wrong_type_and_garbage_are_errors() {
        let bytes = encode(&MessagePack, &"text").unwrap();
        assert!(decode::<u64>(&MessagePack, &bytes).is_err());
        assert!(decode::<String>(&MessagePack, &[0xc1]).is_err());
        assert!(decode::<Vec<u8>>(&MessagePack, &[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
