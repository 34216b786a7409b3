//! The codec's options: which keys are written, whether unknown fields are rejected, whether
//! fields without presence are written at their default, and how enums are written.
//!
//! Each generated tree has default options ([`JsonMessage::JSON_OPTIONS`], chosen with
//! `keyway_codegen::Builder::json_options`), which [`to_vec`](super::to_vec),
//! [`from_slice`](super::from_slice) and friends use; the `*_with` entry points take options per
//! call. Options apply to the whole document, nested messages and `Any` contents included.
//!
//! [`JsonMessage::JSON_OPTIONS`]: super::JsonMessage::JSON_OPTIONS

/// Which name a field is written under. Both are always read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldNames {
    /// The proto field name (`queue_name`): the queue contract's wire form.
    Proto = 0,
    /// The JSON name: lowerCamelCase (`queueName`) or the field's `json_name`. Protobuf's
    /// default output.
    Json = 1,
}

/// How messages are written and read. A small `Copy` value; build one from a preset:
///
/// ```
/// use keyway_runtime::json::{FieldNames, JsonOptions};
///
/// // The queue contract's form: proto names, unknown fields ignored.
/// let queue = JsonOptions::queue();
/// assert_eq!(queue.field_names(), FieldNames::Proto);
/// assert!(queue.ignores_unknown_fields());
///
/// // Protobuf's defaults (C++ `JsonPrintOptions`/`JsonParseOptions`, Go `protojson`, Python
/// // `json_format`): lowerCamelCase names, unknown fields rejected.
/// let protobuf = JsonOptions::protobuf();
/// assert_eq!(protobuf.field_names(), FieldNames::Json);
/// assert!(!protobuf.ignores_unknown_fields());
///
/// // Anything in between.
/// let lenient = JsonOptions::protobuf().with_ignore_unknown_fields(true);
/// assert!(lenient.ignores_unknown_fields());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JsonOptions {
    field_names: FieldNames,
    ignore_unknown_fields: bool,
    emit_default_values: bool,
    enums_as_numbers: bool,
}

impl Default for JsonOptions {
    /// [`JsonOptions::queue`].
    fn default() -> Self {
        JsonOptions::queue()
    }
}

impl JsonOptions {
    /// The queue contract's form, and the default of a tree: proto field names written,
    /// unknown fields and unknown enum names ignored on read, fields at their default omitted,
    /// enums by name.
    pub const fn queue() -> Self {
        JsonOptions {
            field_names: FieldNames::Proto,
            ignore_unknown_fields: true,
            emit_default_values: false,
            enums_as_numbers: false,
        }
    }

    /// Protobuf's own defaults: lowerCamelCase JSON names written, unknown fields and unknown
    /// enum names rejected on read, fields at their default omitted, enums by name.
    pub const fn protobuf() -> Self {
        JsonOptions {
            field_names: FieldNames::Json,
            ignore_unknown_fields: false,
            emit_default_values: false,
            enums_as_numbers: false,
        }
    }

    /// Which name fields are written under (protobuf: `preserving_proto_field_name`,
    /// `UseProtoNames`). Reading accepts both names either way.
    pub const fn with_field_names(mut self, names: FieldNames) -> Self {
        self.field_names = names;
        self
    }

    /// Whether reading skips fields the message does not declare (their values must still be
    /// well-formed JSON) instead of failing with the path of the field. Unknown enum names
    /// follow the same choice, as in protobuf's libraries: skipped (a singular field keeps its
    /// default, a list element or map entry is dropped) or rejected. So do numbers that are no
    /// value of a closed (proto2) enum. Protobuf: `ignore_unknown_fields`, `DiscardUnknown`.
    pub const fn with_ignore_unknown_fields(mut self, ignore: bool) -> Self {
        self.ignore_unknown_fields = ignore;
        self
    }

    /// Whether fields without presence are written even at their default: proto3 scalars and
    /// enums (`0`, `""`, `false`, the zero enum value), and empty lists and maps (`[]`, `{}`).
    /// Fields with presence (messages, `optional`, proto2 fields, oneof members, extensions)
    /// are written exactly when set, either way. Protobuf:
    /// `always_print_fields_with_no_presence`, `EmitDefaultValues`.
    pub const fn with_emit_default_values(mut self, emit: bool) -> Self {
        self.emit_default_values = emit;
        self
    }

    /// Whether enums are written as numbers instead of names (`google.protobuf.NullValue`
    /// stays `null`). Both are always read. Protobuf: `always_print_enums_as_ints`,
    /// `UseEnumNumbers`.
    pub const fn with_enums_as_numbers(mut self, numbers: bool) -> Self {
        self.enums_as_numbers = numbers;
        self
    }

    /// See [`JsonOptions::with_field_names`].
    pub const fn field_names(&self) -> FieldNames {
        self.field_names
    }

    /// See [`JsonOptions::with_ignore_unknown_fields`].
    pub const fn ignores_unknown_fields(&self) -> bool {
        self.ignore_unknown_fields
    }

    /// See [`JsonOptions::with_emit_default_values`].
    pub const fn emits_default_values(&self) -> bool {
        self.emit_default_values
    }

    /// See [`JsonOptions::with_enums_as_numbers`].
    pub const fn writes_enums_as_numbers(&self) -> bool {
        self.enums_as_numbers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_differ_only_where_documented() {
        assert_eq!(JsonOptions::default(), JsonOptions::queue());
        let queue = JsonOptions::queue();
        let protobuf = JsonOptions::protobuf();
        assert_eq!(
            queue
                .with_field_names(FieldNames::Json)
                .with_ignore_unknown_fields(false),
            protobuf
        );
        assert!(!queue.emits_default_values() && !protobuf.emits_default_values());
        assert!(!queue.writes_enums_as_numbers() && !protobuf.writes_enums_as_numbers());
        let all = protobuf
            .with_emit_default_values(true)
            .with_enums_as_numbers(true);
        assert!(all.emits_default_values() && all.writes_enums_as_numbers());
    }
}
