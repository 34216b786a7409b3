//! Typed errors of the protobuf-JSON codec.
//!
//! A [`DecodeError`] names where in the document the problem is (a JSON path such as
//! `steps[2].change.uris[0]`), what is wrong, and the byte offset. It never quotes the payload
//! beyond the short token it tripped on, so logging one cannot leak a whole message.

use std::fmt;

/// One step of the path from the document root to the value that failed to decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    /// A message field, by its proto name.
    Field(&'static str),
    /// An element of a repeated field or of a `google.protobuf.ListValue`.
    Index(usize),
    /// An entry of a map field or of a `google.protobuf.Struct`.
    Key(String),
}

/// What went wrong while decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The JSON is not well formed (truncated, a stray character, a bad escape, trailing data).
    Syntax(String),
    /// Well-formed JSON of the wrong type for the field: `expected`, `found`.
    Type {
        /// What the field accepts, for example "a string".
        expected: &'static str,
        /// What the document had instead, for example "a number".
        found: &'static str,
    },
    /// The right JSON type, but a value the field cannot hold (range, format, base64, ...).
    Value(String),
    /// A field given twice in one object, under its proto name or its JSON name.
    DuplicateField(&'static str),
    /// Two members of one `oneof` set in one object.
    DuplicateOneof(&'static str),
    /// A map key given twice in one object.
    DuplicateKey,
    /// A key the message does not declare, when the options reject unknown fields. The path
    /// is the object's; the key is cut to a short excerpt.
    UnknownField(String),
    /// A string that is not valid UTF-8.
    InvalidUtf8,
    /// Objects and arrays nested deeper than [`MAX_DEPTH`](crate::json::MAX_DEPTH).
    TooDeep,
}

/// A payload could not be decoded as protobuf JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    inner: Box<DecodeErrorInner>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct DecodeErrorInner {
    kind: DecodeErrorKind,
    /// Innermost segment first: segments are pushed while the error unwinds.
    path_rev: Vec<PathSegment>,
    offset: usize,
}

impl DecodeError {
    #[cold]
    pub(crate) fn new(kind: DecodeErrorKind, offset: usize) -> Self {
        DecodeError {
            inner: Box::new(DecodeErrorInner {
                kind,
                path_rev: Vec::new(),
                offset,
            }),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> &DecodeErrorKind {
        &self.inner.kind
    }

    /// Byte offset into the input where the problem was found.
    pub fn offset(&self) -> usize {
        self.inner.offset
    }

    /// The path from the root to the failing value, outermost first.
    pub fn path(&self) -> impl Iterator<Item = &PathSegment> {
        self.inner.path_rev.iter().rev()
    }

    /// The path rendered as `steps[2].change.uris[0]`; empty at the document root.
    pub fn path_string(&self) -> String {
        let mut out = String::new();
        for segment in self.path() {
            match segment {
                PathSegment::Field(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                PathSegment::Index(i) => {
                    out.push('[');
                    out.push_str(&i.to_string());
                    out.push(']');
                }
                PathSegment::Key(k) => {
                    out.push('[');
                    push_quoted_excerpt(&mut out, k);
                    out.push(']');
                }
            }
        }
        out
    }

    #[cold]
    pub(crate) fn push(mut self, segment: PathSegment) -> Self {
        self.inner.path_rev.push(segment);
        self
    }
}

/// Quote a map key for a path, cut to a short excerpt so a huge key is never echoed.
fn push_quoted_excerpt(out: &mut String, key: &str) {
    const MAX: usize = 32;
    out.push('"');
    for (n, c) in key.chars().enumerate() {
        if n == MAX {
            out.push('…');
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeErrorKind::Syntax(msg) => write!(f, "invalid JSON: {msg}"),
            DecodeErrorKind::Type { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
            DecodeErrorKind::Value(msg) => f.write_str(msg),
            DecodeErrorKind::DuplicateField(name) => {
                write!(f, "field `{name}` is given more than once")
            }
            DecodeErrorKind::DuplicateOneof(name) => {
                write!(f, "more than one member of oneof `{name}` is set")
            }
            DecodeErrorKind::DuplicateKey => f.write_str("map key is given more than once"),
            DecodeErrorKind::UnknownField(name) => {
                write!(f, "unknown field {:?}", name)
            }
            DecodeErrorKind::InvalidUtf8 => f.write_str("string is not valid UTF-8"),
            DecodeErrorKind::TooDeep => write!(
                f,
                "objects and arrays nest deeper than {}",
                crate::json::MAX_DEPTH
            ),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path_string();
        if path.is_empty() {
            write!(f, "{} (at byte {})", self.inner.kind, self.inner.offset)
        } else {
            write!(
                f,
                "{path}: {} (at byte {})",
                self.inner.kind, self.inner.offset
            )
        }
    }
}

impl std::error::Error for DecodeError {}

/// A message holds a value that has no protobuf-JSON form.
///
/// Only the well-known types can fail: a `Timestamp` or `Duration` outside its documented range,
/// a `google.protobuf.Value` holding NaN or infinity or no kind at all, a `FieldMask` path that
/// does not survive the lowerCamelCase round trip, or an `Any` whose type URL has no `/` or
/// names a type that is not registered. A message decoded from JSON always encodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError {
    message: String,
}

impl EncodeError {
    #[cold]
    pub(crate) fn new(message: impl Into<String>) -> Self {
        EncodeError {
            message: message.into(),
        }
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot encode as protobuf JSON: {}", self.message)
    }
}

impl std::error::Error for EncodeError {}
