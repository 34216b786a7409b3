//! Protobuf JSON for generated messages, with the options queue payloads use.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use keyway_runtime::wkt::Duration;
//! let d: Duration = keyway_runtime::json::from_str("\"1.500s\"")?;
//! assert_eq!((d.seconds, d.nanos), (1, 500_000_000));
//! assert_eq!(keyway_runtime::json::to_string(&d)?, "\"1.500s\"");
//! # Ok(()) }
//! ```
//!
//! The mapping is the proto3 JSON mapping, with these choices fixed:
//! - Field names are written as proto names (`queue_name`); both the proto name and the
//!   lowerCamelCase JSON name are read. A field given twice, under either name, is an error.
//! - Fields at their default value are omitted; `null` reads as the default.
//! - Enums are written by name and read by name or number. An unknown *name* is ignored like an
//!   unknown field; an unknown *number* is kept (proto3 enums are open) and written back as a
//!   number.
//! - Unknown fields are ignored on read, so producers may add fields first.
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
//!   `{}`. Out-of-range timestamps and durations are errors on read *and* write.
//! - Output is compact, with map entries in key order (maps are `BTreeMap`), so the same message
//!   always encodes to the same bytes.

mod any;
pub(crate) mod base64;
pub(crate) mod codec;
mod error;
pub(crate) mod read;
mod swar;
mod wkt;
pub(crate) mod write;

pub use any::register;
pub use error::{DecodeError, DecodeErrorKind, EncodeError, PathSegment};

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

    /// Write `self` as one JSON value.
    #[doc(hidden)]
    fn encode_json(&self, w: &mut Writer) -> Result<(), EncodeError>;

    /// Read one JSON value.
    #[doc(hidden)]
    fn decode_json(p: &mut Parser<'_>) -> Result<Self, DecodeError>;
}

impl<M: JsonMessage> JsonMessage for Box<M> {
    const NULL_IS_VALUE: bool = M::NULL_IS_VALUE;

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

    /// The name written for `value`, if it has one.
    fn json_name(value: i32) -> Option<&'static str>;

    /// The number of a name, aliases included.
    fn from_json_name(name: &str) -> Option<i32>;
}

/// Encode `message` as protobuf JSON.
pub fn to_vec<M: JsonMessage>(message: &M) -> Result<Vec<u8>, EncodeError> {
    let mut w = Writer::with_capacity(256);
    message.encode_json(&mut w)?;
    Ok(w.into_inner())
}

/// Encode `message` as protobuf JSON, appending to `out`. On error `out` is left as it was.
pub fn to_writer<M: JsonMessage>(message: &M, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let mut w = Writer::from_vec(std::mem::take(out));
    let len = w.as_bytes().len();
    let result = message.encode_json(&mut w);
    *out = w.into_inner();
    if result.is_err() {
        out.truncate(len);
    }
    result
}

/// Encode `message` as a protobuf-JSON string.
pub fn to_string<M: JsonMessage>(message: &M) -> Result<String, EncodeError> {
    let bytes = to_vec(message)?;
    Ok(String::from_utf8(bytes).expect("the writer only emits UTF-8"))
}

/// Decode a message from protobuf JSON. The whole input must be one value (white space around
/// it is allowed).
pub fn from_slice<M: JsonMessage>(json: &[u8]) -> Result<M, DecodeError> {
    let mut p = Parser::new(json);
    let message = M::decode_json(&mut p)?;
    p.finish()?;
    Ok(message)
}

/// Decode a message from a protobuf-JSON string.
pub fn from_str<M: JsonMessage>(json: &str) -> Result<M, DecodeError> {
    from_slice(json.as_bytes())
}
