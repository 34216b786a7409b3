//! `google.protobuf.Any`: `{"@type": "<url>", ...}`, the packed message's fields inline, or
//! `"value": <special form>` for a well-known type with a special form.
//!
//! Packing needs to know the packed type, so types are looked up by full name (the type URL's
//! last segment) in a process-wide registry. The well-known types are always registered;
//! register your own messages with [`register`] before encoding or decoding an `Any` that holds
//! them. An unregistered type is an error, never a silent pass-through.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use prost::{Message as ProstMessage, Name};
use prost_types::{Any, Duration, FieldMask, ListValue, Struct, Timestamp, Value};

use super::codec::{self, Codec};
use super::error::{DecodeError, DecodeErrorKind, EncodeError, PathSegment};
use super::read::Parser;
use super::write::Writer;
use super::JsonMessage;

/// Writes the members after `"@type":"…"` (each preceded by a comma) from the binary value.
type EncodeFn = fn(&[u8], &mut Writer) -> Result<(), EncodeError>;
/// Reads the whole `Any` object (skipping `@type`) and returns the binary value. The `&str` is
/// the packed type's full name, for errors.
type DecodeFn = fn(&mut Parser<'_>, &str) -> Result<Vec<u8>, DecodeError>;

#[derive(Clone, Copy)]
struct Entry {
    encode: EncodeFn,
    decode: DecodeFn,
}

fn registry() -> &'static RwLock<HashMap<String, Entry>> {
    static REGISTRY: OnceLock<RwLock<HashMap<String, Entry>>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut map = HashMap::new();
        let mut special = |name: String, encode: EncodeFn, decode: DecodeFn| {
            map.insert(name, Entry { encode, decode });
        };
        special(
            Timestamp::full_name(),
            encode_special::<Timestamp, codec::Message>,
            decode_special::<Timestamp, codec::Message>,
        );
        special(
            Duration::full_name(),
            encode_special::<Duration, codec::Message>,
            decode_special::<Duration, codec::Message>,
        );
        special(
            "google.protobuf.FieldMask".to_owned(),
            encode_special::<FieldMask, codec::Message>,
            decode_special::<FieldMask, codec::Message>,
        );
        special(
            "google.protobuf.Struct".to_owned(),
            encode_special::<Struct, codec::Message>,
            decode_special::<Struct, codec::Message>,
        );
        special(
            "google.protobuf.Value".to_owned(),
            encode_special::<Value, codec::Message>,
            decode_special::<Value, codec::Message>,
        );
        special(
            "google.protobuf.ListValue".to_owned(),
            encode_special::<ListValue, codec::Message>,
            decode_special::<ListValue, codec::Message>,
        );
        special(
            Any::full_name(),
            encode_special::<Any, codec::Message>,
            decode_special::<Any, codec::Message>,
        );
        special(
            bool::full_name(),
            encode_special::<bool, codec::Bool>,
            decode_special::<bool, codec::Bool>,
        );
        special(
            i32::full_name(),
            encode_special::<i32, codec::Int32>,
            decode_special::<i32, codec::Int32>,
        );
        special(
            u32::full_name(),
            encode_special::<u32, codec::Uint32>,
            decode_special::<u32, codec::Uint32>,
        );
        special(
            i64::full_name(),
            encode_special::<i64, codec::Int64>,
            decode_special::<i64, codec::Int64>,
        );
        special(
            u64::full_name(),
            encode_special::<u64, codec::Uint64>,
            decode_special::<u64, codec::Uint64>,
        );
        special(
            f32::full_name(),
            encode_special::<f32, codec::Float>,
            decode_special::<f32, codec::Float>,
        );
        special(
            f64::full_name(),
            encode_special::<f64, codec::Double>,
            decode_special::<f64, codec::Double>,
        );
        special(
            String::full_name(),
            encode_special::<String, codec::Str>,
            decode_special::<String, codec::Str>,
        );
        special(
            Vec::<u8>::full_name(),
            encode_special::<Vec<u8>, codec::Bytes>,
            decode_special::<Vec<u8>, codec::Bytes>,
        );
        // Empty has no special form: `{"@type": "…Empty"}`.
        map.insert(
            <()>::full_name(),
            Entry {
                encode: encode_fields::<EmptyMessage>,
                decode: decode_fields::<EmptyMessage>,
            },
        );
        RwLock::new(map)
    })
}

/// Make message type `M` packable in `google.protobuf.Any` JSON. Idempotent.
pub fn register<M>()
where
    M: JsonMessage + ProstMessage + Name + Default,
{
    let entry = Entry {
        encode: encode_fields::<M>,
        decode: decode_fields::<M>,
    };
    registry()
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(M::full_name(), entry);
}

/// The full name a type URL names: what follows its last `/`. `None` without a `/`: protobuf's
/// C++ and Go libraries require one (`type.googleapis.com/pkg.Message`).
fn type_name(type_url: &str) -> Option<&str> {
    type_url.rsplit_once('/').map(|(_, name)| name)
}

fn lookup(name: &str) -> Option<Entry> {
    registry()
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(name)
        .copied()
}

fn unpack<M: ProstMessage + Default>(bytes: &[u8]) -> Result<M, EncodeError> {
    M::decode(bytes).map_err(|e| {
        EncodeError::new(format!(
            "the value of an Any does not decode as its @type ({}): {e}",
            std::any::type_name::<M>()
        ))
    })
}

/// `()` is prost's Empty; give it a JSON message impl for Any's sake.
#[derive(Clone, PartialEq, Default, Debug)]
struct EmptyMessage;

impl ProstMessage for EmptyMessage {
    fn encode_raw(&self, _: &mut impl prost::bytes::BufMut) {}
    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }
    fn encoded_len(&self) -> usize {
        0
    }
    fn clear(&mut self) {}
}

impl Name for EmptyMessage {
    const NAME: &'static str = "Empty";
    const PACKAGE: &'static str = "google.protobuf";
}

impl JsonMessage for EmptyMessage {
    fn encode_json(&self, w: &mut Writer) -> Result<(), EncodeError> {
        codec::Empty.encode(&(), w)
    }
    fn decode_json(p: &mut Parser<'_>) -> Result<Self, DecodeError> {
        codec::Empty.decode(p).map(|_| EmptyMessage)
    }
}

fn encode_fields<M: JsonMessage + ProstMessage + Default>(
    bytes: &[u8],
    w: &mut Writer,
) -> Result<(), EncodeError> {
    let message: M = unpack(bytes)?;
    let mut inner = Writer::with_capacity(64, *w.options());
    message.encode_json(&mut inner)?;
    let inner = inner.as_bytes();
    // `{…}` → `,…` (nothing for `{}`).
    if inner.len() > 2 {
        w.byte(b',');
        w.raw(&inner[1..inner.len() - 1]);
    }
    Ok(())
}

fn decode_fields<M: JsonMessage + ProstMessage + Default>(
    p: &mut Parser<'_>,
    type_name: &str,
) -> Result<Vec<u8>, DecodeError> {
    let start = p.offset();
    // `@type` is not a field name; the message's own decoder skips it, in this object only.
    let bytes = p.packed_message(M::decode_json)?.encode_to_vec();
    unpackable::<M>(p, start, type_name, bytes)
}

/// `bytes`, if they unpack again: an `Any` holds its message in the binary format, whose
/// decoder limits nesting to 100 messages, while the JSON read here may nest deeper in message
/// terms (every level of a `google.protobuf.Value` list is two messages). What could not be
/// unpacked could not be written back, so it is rejected here.
fn unpackable<M: ProstMessage + Default>(
    p: &Parser<'_>,
    start: usize,
    type_name: &str,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, DecodeError> {
    // Bytes just encoded can only fail to decode on nesting (prost's error would list every
    // level, so it is not quoted).
    match M::decode(bytes.as_slice()) {
        Ok(_) => Ok(bytes),
        Err(_) => Err(p.invalid(
            start,
            format!("Any of {type_name} nests deeper than its binary form allows (100 messages)"),
        )),
    }
}

fn encode_special<T, C>(bytes: &[u8], w: &mut Writer) -> Result<(), EncodeError>
where
    T: ProstMessage + Default,
    C: Codec<T> + Default,
{
    let value: T = unpack(bytes)?;
    w.raw(b",\"value\":");
    C::default().encode(&value, w)
}

fn decode_special<T, C>(p: &mut Parser<'_>, type_name: &str) -> Result<Vec<u8>, DecodeError>
where
    T: ProstMessage + Default,
    C: Codec<T> + Default,
{
    let start = p.offset();
    p.begin_object()?;
    let mut first = true;
    let mut value = None;
    while let Some(key) = p.next_key(&mut first)? {
        match &*key {
            "value" if value.is_some() => {
                return Err(p.error(DecodeErrorKind::DuplicateField("value")))
            }
            "value" => {
                value = Some(
                    C::default()
                        .decode(p)
                        .map_err(|e| e.push(PathSegment::Field("value")))?,
                )
            }
            "@type" => p.skip_value()?,
            _ => p.unknown_field(&key)?,
        }
    }
    match value {
        // `Ok(None)` (a value to ignore) cannot come from these codecs; read it as the default.
        Some(value) => unpackable::<T>(
            p,
            start,
            type_name,
            value.unwrap_or_default().encode_to_vec(),
        ),
        // The special form is the value: without it there is nothing to read (and a
        // `google.protobuf.Value` would have no kind, which cannot be written back).
        None => Err(p.invalid(start, format!("Any of {type_name} has no \"value\""))),
    }
}

impl JsonMessage for Any {
    fn encode_json(&self, w: &mut Writer) -> Result<(), EncodeError> {
        if self.type_url.is_empty() && self.value.is_empty() {
            w.raw(b"{}");
            return Ok(());
        }
        let name = type_name(&self.type_url).ok_or_else(|| {
            EncodeError::new(format!(
                "Any type URL {:?} has no `/` (expected type.googleapis.com/<full name>)",
                self.type_url
            ))
        })?;
        let entry = lookup(name).ok_or_else(|| {
            EncodeError::new(format!(
                "Any type {:?} is not registered (see keyway_runtime::json::register)",
                self.type_url
            ))
        })?;
        w.raw(b"{\"@type\":");
        w.string(&self.type_url);
        (entry.encode)(&self.value, w)?;
        w.byte(b'}');
        Ok(())
    }

    fn decode_json(p: &mut Parser<'_>) -> Result<Self, DecodeError> {
        let checkpoint = p.checkpoint();
        p.begin_object()?;
        let mut first = true;
        let mut type_url: Option<(String, usize)> = None;
        let mut members = 0;
        while let Some(key) = p.next_key(&mut first)? {
            members += 1;
            if key == "@type" {
                if type_url.is_some() {
                    return Err(p.error(DecodeErrorKind::DuplicateField("@type")));
                }
                let at = p.offset();
                type_url = Some((
                    p.string()
                        .map_err(|e| e.push(PathSegment::Field("@type")))?
                        .into_owned(),
                    at,
                ));
            } else {
                p.skip_value()?;
            }
        }
        let Some((type_url, at)) = type_url else {
            if members == 0 {
                return Ok(Any::default());
            }
            return Err(p.invalid(p.offset(), "Any has fields but no \"@type\""));
        };
        let name = type_name(&type_url).ok_or_else(|| {
            p.invalid(
                at,
                "Any \"@type\" must be a type URL with a `/`, such as \"type.googleapis.com/pkg.Message\"",
            )
            .push(PathSegment::Field("@type"))
        })?;
        let entry = lookup(name).ok_or_else(|| {
            p.invalid(at, "Any \"@type\" names a type that is not registered (see keyway_runtime::json::register)")
                .push(PathSegment::Field("@type"))
        })?;
        let end = p.checkpoint();
        p.rewind(checkpoint);
        let value = (entry.decode)(p, name)?;
        debug_assert_eq!(p.checkpoint(), end);
        Ok(Any { type_url, value })
    }
}
