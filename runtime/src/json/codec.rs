//! Per-type codecs and the per-field helpers that generated code calls.
//!
//! Each proto scalar type has a zero-sized codec value (`Int32`, `Str`, ...); messages use
//! [`Message`], enums [`Enum`]. Generated code passes the codec as a value so the Rust type of
//! the field is inferred, which keeps generated code independent of how prost lays a field out
//! (boxed or not, wrapper types mapped to primitives).
//!
//! The rules they implement, for every field:
//! - written only when not the default (proto3 scalars), when present (`optional`, proto2
//!   fields, messages, oneof members, wrappers, extensions), always (proto2 `required`), or
//!   when not empty (repeated, maps); with the option to emit default values, fields without
//!   presence are written at their default too;
//! - `null` reads as the default (absent for presence fields, empty for repeated and maps),
//!   except for `google.protobuf.Value` and `NullValue`, where `null` is the value itself;
//! - `null` as an element of a list or a map value is rejected, for the same reason;
//! - an unknown enum name, and a number that is no value of a closed enum, follow the
//!   unknown-fields option: ignored like an unknown field (the field keeps its default, the
//!   list element or map entry is dropped) or rejected with the path;
//! - a number that is no value of a closed enum is written as if absent (protobuf's libraries
//!   keep it among the unknown fields, which JSON does not show).

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::marker::PhantomData;

use super::error::{DecodeError, DecodeErrorKind, EncodeError, PathSegment};
use super::read::{integer_value, scan_number, Parser};
use super::write::Writer;
use super::{JsonEnum, JsonMessage};

/// How one proto type is written and read.
pub trait Codec<T> {
    /// Whether JSON `null` is a value of this type rather than "absent".
    const NULL_IS_VALUE: bool = false;
    /// Whether some values have no JSON form and are written as if absent (see
    /// [`Codec::is_unknown`]). Lets the writers skip the check for every other type.
    const MAY_BE_UNKNOWN: bool = false;
    /// Whether `v` is the proto3 default, omitted on write.
    fn is_default(&self, v: &T) -> bool;
    /// Whether `v` is a value the JSON form has no place for, written as if absent: a number
    /// that is no value of a closed (proto2) enum, which protobuf's libraries keep among the
    /// unknown fields. Only consulted when [`Codec::MAY_BE_UNKNOWN`].
    #[inline]
    fn is_unknown(&self, _v: &T) -> bool {
        false
    }
    /// Write `v`.
    fn encode(&self, v: &T, w: &mut Writer) -> Result<(), EncodeError>;
    /// Read a value; `Ok(None)` means "ignore it" (an unknown enum name).
    fn decode(&self, p: &mut Parser<'_>) -> Result<Option<T>, DecodeError>;
}

/// How a map key type is written and read (map keys are always JSON strings).
pub trait KeyCodec<K> {
    /// Write `"key":`.
    fn write_key(&self, k: &K, w: &mut Writer);
    /// Parse a key from its string form.
    fn read_key(&self, s: &str) -> Result<K, String>;
}

/// The map types prost generates: `HashMap` (its default) and `BTreeMap`.
pub trait ProtoMap<K, V> {
    /// Entries in key order, so the same map always encodes to the same bytes.
    fn sorted_entries(&self) -> Vec<(&K, &V)>;
    /// Insert, returning the previous value of the key.
    fn put(&mut self, key: K, value: V) -> Option<V>;
    /// Remove every entry.
    fn clear_all(&mut self);
}

impl<K: Ord, V> ProtoMap<K, V> for BTreeMap<K, V> {
    fn sorted_entries(&self) -> Vec<(&K, &V)> {
        self.iter().collect()
    }
    fn put(&mut self, key: K, value: V) -> Option<V> {
        self.insert(key, value)
    }
    fn clear_all(&mut self) {
        self.clear();
    }
}

impl<K: Ord + Hash, V, S: std::hash::BuildHasher> ProtoMap<K, V> for HashMap<K, V, S> {
    fn sorted_entries(&self) -> Vec<(&K, &V)> {
        let mut entries: Vec<_> = self.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        entries
    }
    fn put(&mut self, key: K, value: V) -> Option<V> {
        self.insert(key, value)
    }
    fn clear_all(&mut self) {
        self.clear();
    }
}

/// Cut `s` to a short, printable excerpt for an error message.
fn excerpt(s: &str) -> String {
    const MAX: usize = 24;
    let mut out: String = s.chars().take(MAX).flat_map(char::escape_debug).collect();
    if s.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

fn integer<T: TryFrom<i128>>(
    p: &mut Parser<'_>,
    what: &'static str,
    expected: &'static str,
) -> Result<T, DecodeError> {
    let start = p.offset();
    let n = p.number_or_string(expected)?;
    let (negative, magnitude) = integer_value(n.text.as_bytes()).map_err(|why| {
        p.invalid(
            start,
            format!("invalid {what} \"{}\": {why}", excerpt(&n.text)),
        )
    })?;
    let value = if negative {
        -i128::from(magnitude)
    } else {
        i128::from(magnitude)
    };
    T::try_from(value).map_err(|_| {
        p.invalid(
            start,
            format!("invalid {what} \"{}\": out of range", excerpt(&n.text)),
        )
    })
}

fn integer_key<T: TryFrom<i128>>(s: &str, what: &str) -> Result<T, String> {
    let plain = s
        .bytes()
        .enumerate()
        .all(|(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-'));
    let (negative, magnitude) = if plain {
        integer_value(s.as_bytes())
            .map_err(|why| format!("invalid {what} map key \"{}\": {why}", excerpt(s)))?
    } else {
        return Err(format!(
            "invalid {what} map key \"{}\": not an integer",
            excerpt(s)
        ));
    };
    let value = if negative {
        -i128::from(magnitude)
    } else {
        i128::from(magnitude)
    };
    T::try_from(value)
        .map_err(|_| format!("invalid {what} map key \"{}\": out of range", excerpt(s)))
}

macro_rules! int_codec {
    ($(#[$doc:meta])* $name:ident, $ty:ty, $what:literal, $write:ident, quoted = $quoted:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name;

        impl Codec<$ty> for $name {
            #[inline]
            fn is_default(&self, v: &$ty) -> bool {
                *v == 0
            }
            #[inline]
            fn encode(&self, v: &$ty, w: &mut Writer) -> Result<(), EncodeError> {
                if $quoted {
                    w.byte(b'"');
                    w.$write((*v).into());
                    w.byte(b'"');
                } else {
                    w.$write((*v).into());
                }
                Ok(())
            }
            fn decode(&self, p: &mut Parser<'_>) -> Result<Option<$ty>, DecodeError> {
                integer(p, $what, "a number").map(Some)
            }
        }

        impl KeyCodec<$ty> for $name {
            fn write_key(&self, k: &$ty, w: &mut Writer) {
                w.byte(b'"');
                w.$write((*k).into());
                w.raw(b"\":");
            }
            fn read_key(&self, s: &str) -> Result<$ty, String> {
                integer_key(s, $what)
            }
        }
    };
}

int_codec!(
    /// `int32`, `sint32`, `sfixed32`: a JSON number.
    Int32, i32, "int32", i64, quoted = false
);
int_codec!(
    /// `uint32`, `fixed32`: a JSON number.
    Uint32, u32, "uint32", u64, quoted = false
);
int_codec!(
    /// `int64`, `sint64`, `sfixed64`: a decimal string (a number is accepted on read).
    Int64, i64, "int64", i64, quoted = true
);
int_codec!(
    /// `uint64`, `fixed64`: a decimal string (a number is accepted on read).
    Uint64, u64, "uint64", u64, quoted = true
);

fn float_text<'a>(p: &mut Parser<'a>) -> Result<(usize, super::read::NumberText<'a>), DecodeError> {
    let start = p.offset();
    let n = p.number_or_string("a number")?;
    Ok((start, n))
}

macro_rules! float_codec {
    ($(#[$doc:meta])* $name:ident, $ty:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name;

        impl Codec<$ty> for $name {
            #[inline]
            fn is_default(&self, v: &$ty) -> bool {
                // Only +0.0 is the default: -0.0 is a value and is written (`-0`), as the
                // reference implementations do. (prost's binary encoding drops it.)
                *v == 0.0 && v.is_sign_positive()
            }
            fn encode(&self, v: &$ty, w: &mut Writer) -> Result<(), EncodeError> {
                w.$ty(*v);
                Ok(())
            }
            fn decode(&self, p: &mut Parser<'_>) -> Result<Option<$ty>, DecodeError> {
                let (start, n) = float_text(p)?;
                if n.quoted {
                    match &*n.text {
                        "NaN" => return Ok(Some(<$ty>::NAN)),
                        "Infinity" => return Ok(Some(<$ty>::INFINITY)),
                        "-Infinity" => return Ok(Some(<$ty>::NEG_INFINITY)),
                        text if scan_number(text.as_bytes(), 0) != Some(text.len()) => {
                            return Err(p.invalid(
                                start,
                                format!("invalid {} \"{}\": not a number", $what, excerpt(text)),
                            ))
                        }
                        _ => {}
                    }
                }
                match n.text.parse::<$ty>() {
                    Ok(v) if v.is_finite() => Ok(Some(v)),
                    _ => Err(p.invalid(
                        start,
                        format!("invalid {} \"{}\": out of range", $what, excerpt(&n.text)),
                    )),
                }
            }
        }
    };
}

float_codec!(
    /// `float`: a JSON number, or `"NaN"`, `"Infinity"`, `"-Infinity"`; range-checked on read.
    Float, f32, "float"
);
float_codec!(
    /// `double`: a JSON number, or `"NaN"`, `"Infinity"`, `"-Infinity"`.
    Double, f64, "double"
);

/// `bool`: `true` or `false`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bool;

impl Codec<bool> for Bool {
    fn is_default(&self, v: &bool) -> bool {
        !*v
    }
    fn encode(&self, v: &bool, w: &mut Writer) -> Result<(), EncodeError> {
        w.bool(*v);
        Ok(())
    }
    fn decode(&self, p: &mut Parser<'_>) -> Result<Option<bool>, DecodeError> {
        p.bool().map(Some)
    }
}

impl KeyCodec<bool> for Bool {
    fn write_key(&self, k: &bool, w: &mut Writer) {
        w.raw(if *k { b"\"true\":" } else { b"\"false\":" });
    }
    fn read_key(&self, s: &str) -> Result<bool, String> {
        match s {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(format!(
                "invalid bool map key \"{}\": expected \"true\" or \"false\"",
                excerpt(s)
            )),
        }
    }
}

/// `string`: a JSON string.
#[derive(Debug, Clone, Copy, Default)]
pub struct Str;

impl Codec<String> for Str {
    #[inline]
    fn is_default(&self, v: &String) -> bool {
        v.is_empty()
    }
    #[inline]
    fn encode(&self, v: &String, w: &mut Writer) -> Result<(), EncodeError> {
        w.string(v);
        Ok(())
    }
    #[inline]
    fn decode(&self, p: &mut Parser<'_>) -> Result<Option<String>, DecodeError> {
        p.string().map(|s| Some(s.into_owned()))
    }
}

impl KeyCodec<String> for Str {
    fn write_key(&self, k: &String, w: &mut Writer) {
        w.string(k);
        w.byte(b':');
    }
    fn read_key(&self, s: &str) -> Result<String, String> {
        Ok(s.to_owned())
    }
}

/// `bytes`: a base64 string (standard alphabet and padding on write; URL-safe accepted).
#[derive(Debug, Clone, Copy, Default)]
pub struct Bytes;

impl Codec<Vec<u8>> for Bytes {
    fn is_default(&self, v: &Vec<u8>) -> bool {
        v.is_empty()
    }
    fn encode(&self, v: &Vec<u8>, w: &mut Writer) -> Result<(), EncodeError> {
        w.base64(v);
        Ok(())
    }
    fn decode(&self, p: &mut Parser<'_>) -> Result<Option<Vec<u8>>, DecodeError> {
        let start = p.offset();
        let s = p.string()?;
        super::base64::decode(s.as_bytes())
            .map(Some)
            .map_err(|why| p.invalid(start, why))
    }
}

/// A message type, through its [`JsonMessage`] impl.
#[derive(Debug, Clone, Copy, Default)]
pub struct Message;

impl<M: JsonMessage> Codec<M> for Message {
    const NULL_IS_VALUE: bool = M::NULL_IS_VALUE;
    fn is_default(&self, _: &M) -> bool {
        false
    }
    #[inline]
    fn encode(&self, v: &M, w: &mut Writer) -> Result<(), EncodeError> {
        v.encode_json(w)
    }
    #[inline]
    fn decode(&self, p: &mut Parser<'_>) -> Result<Option<M>, DecodeError> {
        M::decode_json(p).map(Some)
    }
}

/// `google.protobuf.Empty`, which prost maps to `()`: always `{}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Empty;

impl Codec<()> for Empty {
    fn is_default(&self, _: &()) -> bool {
        false
    }
    fn encode(&self, _: &(), w: &mut Writer) -> Result<(), EncodeError> {
        w.raw(b"{}");
        Ok(())
    }
    fn decode(&self, p: &mut Parser<'_>) -> Result<Option<()>, DecodeError> {
        p.begin_object()?;
        let mut first = true;
        while let Some(key) = p.next_key(&mut first)? {
            p.unknown_field(&key)?;
        }
        Ok(Some(()))
    }
}

/// An enum field (stored as `i32` by prost), through the enum's [`JsonEnum`] impl.
pub struct Enum<E>(PhantomData<fn() -> E>);

impl<E> Clone for Enum<E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<E> Copy for Enum<E> {}

/// The codec of enum `E`.
pub const fn enumeration<E: JsonEnum>() -> Enum<E> {
    Enum(PhantomData)
}

impl<E: JsonEnum> Codec<i32> for Enum<E> {
    const NULL_IS_VALUE: bool = E::NULL_IS_VALUE;
    const MAY_BE_UNKNOWN: bool = E::CLOSED;
    #[inline]
    fn is_default(&self, v: &i32) -> bool {
        *v == 0
    }
    #[inline]
    fn is_unknown(&self, v: &i32) -> bool {
        E::CLOSED && E::json_name(*v).is_none()
    }
    fn encode(&self, v: &i32, w: &mut Writer) -> Result<(), EncodeError> {
        if E::NULL_IS_VALUE {
            w.raw(b"null");
        } else if w.options().writes_enums_as_numbers() {
            w.i64((*v).into());
        } else {
            match E::json_name(*v) {
                Some(name) => w.string(name),
                // Open enums keep a number without a name and write it back.
                None => w.i64((*v).into()),
            }
        }
        Ok(())
    }
    fn decode(&self, p: &mut Parser<'_>) -> Result<Option<i32>, DecodeError> {
        if E::NULL_IS_VALUE && p.null() {
            return Ok(Some(0));
        }
        let start = p.offset();
        if p.at_string() {
            let name = p.string()?;
            return match E::from_json_name(&name) {
                Some(number) => Ok(Some(number)),
                None if p.options().ignores_unknown_fields() => Ok(None),
                None => Err(p.invalid(
                    start,
                    format!(
                        "unknown enum name \"{}\" for {}",
                        excerpt(&name),
                        E::FULL_NAME
                    ),
                )),
            };
        }
        let number = integer(p, "enum number", "an enum name or number")?;
        if E::CLOSED && E::json_name(number).is_none() {
            // A closed enum holds only its declared values; protobuf's libraries treat any
            // other number like an unknown field.
            if p.options().ignores_unknown_fields() {
                return Ok(None);
            }
            return Err(p.invalid(
                start,
                format!(
                    "{number} is not a value of the closed enum {}",
                    E::FULL_NAME
                ),
            ));
        }
        Ok(Some(number))
    }
}

/// Record that field `index` was read; a second time is an error.
#[inline]
pub fn mark_seen(
    p: &Parser<'_>,
    seen: &mut [u64],
    index: usize,
    name: &'static str,
) -> Result<(), DecodeError> {
    let (word, bit) = (index / 64, 1u64 << (index % 64));
    if seen[word] & bit != 0 {
        return Err(p.error(DecodeErrorKind::DuplicateField(name)));
    }
    seen[word] |= bit;
    Ok(())
}

/// Write a field without presence (a proto3 scalar or enum): skipped at its default, unless the
/// options emit default values. `proto_key` and `json_key` are the pre-rendered `"name":` keys
/// (`json_key` empty when the names are the same); the options pick one (so do the other
/// writers', see [`Writer::field_key`]).
#[inline]
pub fn write_singular<T, C: Codec<T>>(
    w: &mut Writer,
    first: &mut bool,
    proto_key: &[u8],
    json_key: &[u8],
    v: &T,
    codec: C,
) -> Result<(), EncodeError> {
    if (!codec.is_default(v) || w.options().emits_default_values())
        && !(C::MAY_BE_UNKNOWN && codec.is_unknown(v))
    {
        w.field_key(first, proto_key, json_key);
        codec.encode(v, w)?;
    }
    Ok(())
}

/// Write a field with presence (`optional`, proto2, message, wrapper, extension): skipped when
/// absent.
#[inline]
pub fn write_optional<T, C: Codec<T>>(
    w: &mut Writer,
    first: &mut bool,
    proto_key: &[u8],
    json_key: &[u8],
    v: &Option<T>,
    codec: C,
) -> Result<(), EncodeError> {
    if let Some(v) = v {
        write_present(w, first, proto_key, json_key, v, codec)?;
    }
    Ok(())
}

/// Write a value that is set: a oneof member or a proto2 `required` field. Always written,
/// default or not.
#[inline]
pub fn write_present<T, C: Codec<T>>(
    w: &mut Writer,
    first: &mut bool,
    proto_key: &[u8],
    json_key: &[u8],
    v: &T,
    codec: C,
) -> Result<(), EncodeError> {
    if C::MAY_BE_UNKNOWN && codec.is_unknown(v) {
        return Ok(());
    }
    w.field_key(first, proto_key, json_key);
    codec.encode(v, w)
}

/// Write a repeated field as an array: skipped when empty, unless the options emit default
/// values.
#[inline]
pub fn write_repeated<T, C: Codec<T>>(
    w: &mut Writer,
    first: &mut bool,
    proto_key: &[u8],
    json_key: &[u8],
    v: &[T],
    codec: C,
) -> Result<(), EncodeError> {
    write_list::<T, C, false>(w, first, proto_key, json_key, v, codec)
}

/// Write a repeated extension as an array: skipped when empty (an extension is written only
/// when set), whatever the options.
#[inline]
pub fn write_repeated_extension<T, C: Codec<T>>(
    w: &mut Writer,
    first: &mut bool,
    proto_key: &[u8],
    json_key: &[u8],
    v: &[T],
    codec: C,
) -> Result<(), EncodeError> {
    write_list::<T, C, true>(w, first, proto_key, json_key, v, codec)
}

#[inline]
fn write_list<T, C: Codec<T>, const EXTENSION: bool>(
    w: &mut Writer,
    first: &mut bool,
    proto_key: &[u8],
    json_key: &[u8],
    v: &[T],
    codec: C,
) -> Result<(), EncodeError> {
    if C::MAY_BE_UNKNOWN && v.iter().any(|item| codec.is_unknown(item)) {
        return write_known(w, first, proto_key, json_key, v, codec, EXTENSION);
    }
    match v.split_first() {
        Some((head, tail)) => {
            w.field_key(first, proto_key, json_key);
            w.byte(b'[');
            codec.encode(head, w)?;
            for item in tail {
                w.byte(b',');
                codec.encode(item, w)?;
            }
            w.byte(b']');
        }
        None if !EXTENSION && w.options().emits_default_values() => {
            w.field_key(first, proto_key, json_key);
            w.raw(b"[]");
        }
        None => {}
    }
    Ok(())
}

/// [`write_list`] for a list with values that have no JSON form, which are left out.
#[cold]
fn write_known<T, C: Codec<T>>(
    w: &mut Writer,
    first: &mut bool,
    proto_key: &[u8],
    json_key: &[u8],
    v: &[T],
    codec: C,
    extension: bool,
) -> Result<(), EncodeError> {
    let known: Vec<&T> = v.iter().filter(|item| !codec.is_unknown(item)).collect();
    if known.is_empty() && (extension || !w.options().emits_default_values()) {
        return Ok(());
    }
    w.field_key(first, proto_key, json_key);
    w.byte(b'[');
    for (i, item) in known.into_iter().enumerate() {
        if i > 0 {
            w.byte(b',');
        }
        codec.encode(item, w)?;
    }
    w.byte(b']');
    Ok(())
}

/// Write a map field as an object, in key order: skipped when empty, unless the options emit
/// default values.
pub fn write_map<K, V, M: ProtoMap<K, V>, KC: KeyCodec<K>, VC: Codec<V>>(
    w: &mut Writer,
    first: &mut bool,
    proto_key: &[u8],
    json_key: &[u8],
    v: &M,
    key_codec: KC,
    value_codec: VC,
) -> Result<(), EncodeError> {
    let mut entries = v.sorted_entries();
    if VC::MAY_BE_UNKNOWN {
        // Entries whose value has no JSON form are left out.
        entries.retain(|(_, value)| !value_codec.is_unknown(value));
    }
    if entries.is_empty() && !w.options().emits_default_values() {
        return Ok(());
    }
    w.field_key(first, proto_key, json_key);
    w.byte(b'{');
    let mut inner_first = true;
    for (k, v) in entries {
        if !inner_first {
            w.byte(b',');
        }
        inner_first = false;
        key_codec.write_key(k, w);
        value_codec.encode(v, w)?;
    }
    w.byte(b'}');
    Ok(())
}

/// Read a proto3 field without presence.
#[inline]
pub fn read_singular<T: Default, C: Codec<T>>(
    p: &mut Parser<'_>,
    name: &'static str,
    slot: &mut T,
    codec: C,
) -> Result<(), DecodeError> {
    if !C::NULL_IS_VALUE && p.null() {
        *slot = T::default();
        return Ok(());
    }
    read_required(p, name, slot, codec)
}

/// Read a proto2 `required` field, which prost holds as a plain value. `null` (like an absent
/// key) leaves it at its default, the declared `[default = …]` included.
#[inline]
pub fn read_required<T, C: Codec<T>>(
    p: &mut Parser<'_>,
    name: &'static str,
    slot: &mut T,
    codec: C,
) -> Result<(), DecodeError> {
    if !C::NULL_IS_VALUE && p.null() {
        return Ok(());
    }
    match codec.decode(p) {
        Ok(Some(v)) => *slot = v,
        Ok(None) => {}
        Err(e) => return Err(e.push(PathSegment::Field(name))),
    }
    Ok(())
}

/// Read a field with presence; `null` leaves it absent.
#[inline]
pub fn read_optional<T, C: Codec<T>>(
    p: &mut Parser<'_>,
    name: &'static str,
    slot: &mut Option<T>,
    codec: C,
) -> Result<(), DecodeError> {
    if !C::NULL_IS_VALUE && p.null() {
        *slot = None;
        return Ok(());
    }
    match codec.decode(p) {
        Ok(Some(v)) => *slot = Some(v),
        Ok(None) => {}
        Err(e) => return Err(e.push(PathSegment::Field(name))),
    }
    Ok(())
}

/// Read a oneof member; `None` when it is `null` (or an unknown enum name), which sets nothing.
#[inline]
pub fn read_oneof<T, C: Codec<T>>(
    p: &mut Parser<'_>,
    name: &'static str,
    codec: C,
) -> Result<Option<T>, DecodeError> {
    if !C::NULL_IS_VALUE && p.null() {
        return Ok(None);
    }
    codec
        .decode(p)
        .map_err(|e| e.push(PathSegment::Field(name)))
}

/// Set a oneof to `value`; an error when another member was already set in this object.
#[inline]
pub fn set_oneof<O>(
    p: &Parser<'_>,
    slot: &mut Option<O>,
    value: O,
    oneof: &'static str,
) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(p.error(DecodeErrorKind::DuplicateOneof(oneof)));
    }
    *slot = Some(value);
    Ok(())
}

/// Read a repeated field from an array; `null` reads as empty.
pub fn read_repeated<T, C: Codec<T>>(
    p: &mut Parser<'_>,
    name: &'static str,
    slot: &mut Vec<T>,
    codec: C,
) -> Result<(), DecodeError> {
    slot.clear();
    if p.null() {
        return Ok(());
    }
    p.begin_array()
        .map_err(|e| e.push(PathSegment::Field(name)))?;
    let mut first = true;
    let mut index = 0;
    let at = |e: DecodeError, index| {
        e.push(PathSegment::Index(index))
            .push(PathSegment::Field(name))
    };
    while p.next_element(&mut first).map_err(|e| at(e, index))? {
        if !C::NULL_IS_VALUE && p.null() {
            return Err(at(
                p.error(DecodeErrorKind::Type {
                    expected: "a list element",
                    found: "null",
                }),
                index,
            ));
        }
        match codec.decode(p) {
            Ok(Some(v)) => slot.push(v),
            Ok(None) => {}
            Err(e) => return Err(at(e, index)),
        }
        index += 1;
    }
    Ok(())
}

/// Read a map field from an object; `null` reads as empty.
pub fn read_map<K, V, M: ProtoMap<K, V>, KC: KeyCodec<K>, VC: Codec<V>>(
    p: &mut Parser<'_>,
    name: &'static str,
    slot: &mut M,
    key_codec: KC,
    value_codec: VC,
) -> Result<(), DecodeError> {
    slot.clear_all();
    if p.null() {
        return Ok(());
    }
    p.begin_object()
        .map_err(|e| e.push(PathSegment::Field(name)))?;
    let mut first = true;
    while let Some(key) = p
        .next_key(&mut first)
        .map_err(|e| e.push(PathSegment::Field(name)))?
    {
        let at = |e: DecodeError| {
            e.push(PathSegment::Key(key.to_string()))
                .push(PathSegment::Field(name))
        };
        let start = p.offset();
        let k = key_codec
            .read_key(&key)
            .map_err(|why| at(p.invalid(start, why)))?;
        if !VC::NULL_IS_VALUE && p.null() {
            return Err(at(p.error(DecodeErrorKind::Type {
                expected: "a map value",
                found: "null",
            })));
        }
        match value_codec.decode(p) {
            Ok(Some(v)) => {
                if slot.put(k, v).is_some() {
                    return Err(at(p.error(DecodeErrorKind::DuplicateKey)));
                }
            }
            Ok(None) => {}
            Err(e) => return Err(at(e)),
        }
    }
    Ok(())
}
