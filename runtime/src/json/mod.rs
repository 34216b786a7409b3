//! Protobuf JSON for generated messages: the proto3 JSON mapping, with options.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use keyway_runtime::json::{self, JsonOptions};
//! use keyway_runtime::wkt::Duration;
//! let d: Duration = json::from_str("\"1.500s\"")?;
//! assert_eq!((d.seconds, d.nanos), (1, 500_000_000));
//! assert_eq!(json::to_string(&d)?, "\"1.500s\"");
//! // Per call, other options: here protobuf's defaults.
//! assert_eq!(json::to_string_with(&d, &JsonOptions::protobuf())?, "\"1.500s\"");
//! # Ok(()) }
//! ```
//!
//! # Options
//!
//! [`JsonOptions`] choose what protobuf's libraries let their callers choose; each generated
//! tree has defaults ([`JsonMessage::JSON_OPTIONS`], set with
//! `keyway_codegen::Builder::json_options`) and the `*_with` entry points override them per
//! call:
//!
//! | option | [`JsonOptions::queue`] (a tree's default) | [`JsonOptions::protobuf`] |
//! |---|---|---|
//! | keys written | proto name (`queue_name`) | JSON name (`queueName`, or `json_name`) |
//! | unknown fields, unknown enum names | ignored | rejected, naming the path |
//! | fields without presence at their default | omitted | omitted |
//! | enums | by name | by name |
//!
//! Emitting default values and enums as numbers are off in both presets and can be turned on.
//!
//! # The mapping
//!
//! Whatever the options:
//! - Both the proto name and the JSON name of a field are read. A field given twice, under
//!   either name, is an error. Extensions declared in the generated tree are keys of their full
//!   name in brackets, `"[pkg.ext]"` (generated as fields of the message they extend); others
//!   are unknown fields.
//! - Fields without presence at their default are omitted unless the options emit defaults;
//!   fields with presence (messages, `optional`, proto2 fields, oneof members, extensions)
//!   are written when set; proto2 `required` fields (plain values in prost) are always
//!   written, and read as their default (the declared `[default = …]` included) when absent,
//!   as protobuf's C++ and Python parsers do. `null` reads as the default.
//! - Enums are read by name or number. An unknown *number* of an open (proto3) enum is kept and
//!   written back as a number; a closed (proto2) enum holds only its declared numbers, so
//!   another number is treated like an unknown name on read and written as if absent.
//! - 64-bit integers are written as decimal strings and read from strings or numbers; any
//!   integer is read from an exact form such as `1e5` or `100000.000`, and rejected when it has
//!   a fraction or does not fit.
//! - `bytes` are standard base64 with padding; URL-safe and unpadded base64 are read too.
//! - Floats: non-finite values as `"NaN"`, `"Infinity"`, `"-Infinity"`; finite ones as the
//!   shortest round-tripping decimal, except negative zero (`-0.0`, which is not the default and
//!   is written) and floats at the very ends of their range (written at full precision so that
//!   readers which range-check the double first accept them).
//! - The well-known types use their special forms: `Timestamp` as RFC 3339 in UTC with `Z`,
//!   `Duration` as `"1.5s"`, wrappers as their value, `Struct`/`Value`/`ListValue` as plain JSON,
//!   `FieldMask` as a comma-separated lowerCamelCase string, `Any` with `@type`, `Empty` as
//!   `{}`. Out-of-range timestamps and durations are errors on read *and* write. An `Any`'s
//!   type URL must contain a `/`, an `Any` of a well-known type with a special form must have
//!   its `"value"`, and what an `Any` holds must nest at most 100 messages deep (it is kept in
//!   the binary format, whose decoder stops there).
//! - Output is compact, fields in field-number order, with map entries in key order whether
//!   the generated map is a `HashMap` (prost's default) or a `BTreeMap`, so the same message
//!   always encodes to the same bytes.
//! - Whatever is accepted writes back: encoding a decoded message succeeds, and decoding that
//!   gives the same message.
//!
//! Binary unknown fields are not kept: prost drops fields it does not know when it decodes the
//! binary format, so a message read from binary and written as JSON (or binary) has none.

mod any;
pub(crate) mod base64;
pub(crate) mod codec;
mod error;
mod options;
pub(crate) mod read;
mod swar;
mod wkt;
pub(crate) mod write;

pub use any::register;
pub use error::{DecodeError, DecodeErrorKind, EncodeError, PathSegment};
pub use options::{FieldNames, JsonOptions};

use read::Parser;
use write::Writer;

/// How deep objects and arrays may nest in a document (as the reference implementations do).
pub const MAX_DEPTH: usize = 100;

/// A message with a protobuf-JSON codec. Implemented by generated code and by the well-known
/// types; use it through [`to_vec`], [`from_slice`] and friends.
pub trait JsonMessage: Sized {
    /// Whether JSON `null` is a value of this type (only `google.protobuf.Value`).
    #[doc(hidden)]
    const NULL_IS_VALUE: bool = false;

    /// The options [`to_vec`], [`from_slice`] and the other entry points without `_with` use
    /// for this message: its generated tree's (`keyway_codegen::Builder::json_options`); the
    /// queue's ([`JsonOptions::queue`]) for the well-known types.
    const JSON_OPTIONS: JsonOptions = JsonOptions::queue();

    /// Write `self` as one JSON value.
    #[doc(hidden)]
    fn encode_json(&self, w: &mut Writer) -> Result<(), EncodeError>;

    /// Read one JSON value.
    #[doc(hidden)]
    fn decode_json(p: &mut Parser<'_>) -> Result<Self, DecodeError>;
}

impl<M: JsonMessage> JsonMessage for Box<M> {
    const NULL_IS_VALUE: bool = M::NULL_IS_VALUE;
    const JSON_OPTIONS: JsonOptions = M::JSON_OPTIONS;

    fn encode_json(&self, w: &mut Writer) -> Result<(), EncodeError> {
        (**self).encode_json(w)
    }

    fn decode_json(p: &mut Parser<'_>) -> Result<Self, DecodeError> {
        M::decode_json(p).map(Box::new)
    }
}

/// An enum with JSON names. Implemented by generated code.
pub trait JsonEnum {
    /// Whether the enum is `google.protobuf.NullValue`, written as `null`.
    #[doc(hidden)]
    const NULL_IS_VALUE: bool = false;

    /// The enum's full proto name, for error messages.
    const FULL_NAME: &'static str;

    /// Whether the enum is closed (declared in a proto2 file): a field of it holds only its
    /// declared numbers. Open enums (proto3) keep any number.
    const CLOSED: bool = false;

    /// The name written for `value`, if it has one.
    fn json_name(value: i32) -> Option<&'static str>;

    /// The number of a name, aliases included.
    fn from_json_name(name: &str) -> Option<i32>;
}

/// Encode `message` as protobuf JSON, with its tree's options ([`JsonMessage::JSON_OPTIONS`]).
pub fn to_vec<M: JsonMessage>(message: &M) -> Result<Vec<u8>, EncodeError> {
    to_vec_with(message, &M::JSON_OPTIONS)
}

/// Encode `message` as protobuf JSON with `options`.
pub fn to_vec_with<M: JsonMessage>(
    message: &M,
    options: &JsonOptions,
) -> Result<Vec<u8>, EncodeError> {
    let mut w = Writer::with_capacity(256, *options);
    message.encode_json(&mut w)?;
    Ok(w.into_inner())
}

/// Encode `message` as protobuf JSON, appending to `out`, with its tree's options. On error
/// `out` is left as it was.
pub fn to_writer<M: JsonMessage>(message: &M, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    to_writer_with(message, out, &M::JSON_OPTIONS)
}

/// Encode `message` as protobuf JSON with `options`, appending to `out`. On error `out` is
/// left as it was.
pub fn to_writer_with<M: JsonMessage>(
    message: &M,
    out: &mut Vec<u8>,
    options: &JsonOptions,
) -> Result<(), EncodeError> {
    let mut w = Writer::from_vec(std::mem::take(out), *options);
    let len = w.as_bytes().len();
    let result = message.encode_json(&mut w);
    *out = w.into_inner();
    if result.is_err() {
        out.truncate(len);
    }
    result
}

/// Encode `message` as a protobuf-JSON string, with its tree's options.
pub fn to_string<M: JsonMessage>(message: &M) -> Result<String, EncodeError> {
    to_string_with(message, &M::JSON_OPTIONS)
}

/// Encode `message` as a protobuf-JSON string with `options`.
pub fn to_string_with<M: JsonMessage>(
    message: &M,
    options: &JsonOptions,
) -> Result<String, EncodeError> {
    let bytes = to_vec_with(message, options)?;
    Ok(String::from_utf8(bytes).expect("the writer only emits UTF-8"))
}

/// Decode a message from protobuf JSON, with its tree's options. The whole input must be one
/// value (white space around it is allowed).
pub fn from_slice<M: JsonMessage>(json: &[u8]) -> Result<M, DecodeError> {
    from_slice_with(json, &M::JSON_OPTIONS)
}

/// Decode a message from protobuf JSON with `options`. The whole input must be one value
/// (white space around it is allowed).
pub fn from_slice_with<M: JsonMessage>(
    json: &[u8],
    options: &JsonOptions,
) -> Result<M, DecodeError> {
    let mut p = Parser::with_options(json, *options);
    let message = M::decode_json(&mut p)?;
    p.finish()?;
    Ok(message)
}

/// Decode a message from a protobuf-JSON string, with its tree's options.
pub fn from_str<M: JsonMessage>(json: &str) -> Result<M, DecodeError> {
    from_slice(json.as_bytes())
}

/// Decode a message from a protobuf-JSON string with `options`.
pub fn from_str_with<M: JsonMessage>(json: &str, options: &JsonOptions) -> Result<M, DecodeError> {
    from_slice_with(json.as_bytes(), options)
}
