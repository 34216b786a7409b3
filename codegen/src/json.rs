//! Emits the protobuf-JSON codec of every message and enum of one package: an impl of the
//! runtime's `JsonMessage` per message and `JsonEnum` per enum, writing and reading JSON
//! directly (no serde visitors, no intermediate tree).
//!
//! The generated code states the mapping per field; the runtime's helpers carry it out:
//! - keys on write: the proto field name and the JSON name, pre-rendered, the options picking
//!   one; keys on read: both names;
//! - singular proto3 scalars and enums are omitted at their default (unless the options emit
//!   defaults); `optional` fields, proto2 fields, message fields, wrappers and extensions when
//!   absent; oneof members are always written when set, and proto2 `required` fields (plain
//!   values in prost) always;
//! - wrappers (`google.protobuf.Int32Value`, ...) are held by prost as `Option<i32>`, ... and
//!   use the wrapped scalar's codec; `google.protobuf.Empty` is held as `Option<()>`;
//! - groups are messages, under the group's field name;
//! - enums are matched by every name, aliases included, and written by their first name; an
//!   enum declared in a proto2 file is closed;
//! - an extension of a generated message is a field of it (see [`extension_fields`]), under
//!   the key `"[full.name]"`;
//! - a key the message does not declare goes to the parser, which skips it or fails by the
//!   options.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use prost_reflect::{
    Cardinality, DescriptorPool, EnumDescriptor, ExtensionDescriptor, FieldDescriptor,
    FileDescriptor, Kind, MessageDescriptor, Syntax,
};

use crate::diagnostics::{Diagnostic, Location};
use crate::names;

/// Which name a field is written under; both are always read. The generator's copy of
/// `keyway_runtime::json::FieldNames`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldNames {
    /// The proto field name (`queue_name`): the queue contract's wire form.
    Proto,
    /// The JSON name: lowerCamelCase (`queueName`) or the field's `json_name`. Protobuf's
    /// default output.
    Json,
}

/// The JSON options a generated tree uses by default (the `to_vec`, `from_slice`, ... entry
/// points of `keyway_runtime::json`); callers can still choose others per call with the
/// `*_with` entry points. The generator's copy of `keyway_runtime::json::JsonOptions`, with the
/// same presets and setters; see there for what each option does.
///
/// ```
/// use keyway_codegen::{FieldNames, JsonOptions};
/// let options = JsonOptions::protobuf().with_ignore_unknown_fields(true);
/// assert_eq!(options.field_names(), FieldNames::Json);
/// assert!(options.ignores_unknown_fields());
/// assert_eq!(JsonOptions::default(), JsonOptions::queue());
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
    /// The queue contract's form: proto field names written, unknown fields and unknown enum
    /// names ignored, defaults omitted, enums by name.
    pub const fn queue() -> Self {
        JsonOptions {
            field_names: FieldNames::Proto,
            ignore_unknown_fields: true,
            emit_default_values: false,
            enums_as_numbers: false,
        }
    }

    /// Protobuf's defaults: lowerCamelCase JSON names written, unknown fields and unknown enum
    /// names rejected, defaults omitted, enums by name.
    pub const fn protobuf() -> Self {
        JsonOptions {
            field_names: FieldNames::Json,
            ignore_unknown_fields: false,
            emit_default_values: false,
            enums_as_numbers: false,
        }
    }

    /// Which name fields are written under.
    pub const fn with_field_names(mut self, names: FieldNames) -> Self {
        self.field_names = names;
        self
    }

    /// Whether unknown fields (and unknown enum names) are skipped rather than rejected.
    pub const fn with_ignore_unknown_fields(mut self, ignore: bool) -> Self {
        self.ignore_unknown_fields = ignore;
        self
    }

    /// Whether fields without presence are written at their default too.
    pub const fn with_emit_default_values(mut self, emit: bool) -> Self {
        self.emit_default_values = emit;
        self
    }

    /// Whether enums are written as numbers.
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

    /// The runtime's value of these options, as a constant expression: the nearer preset and
    /// a setter per option that differs from it.
    fn expression(&self, rt: &str) -> String {
        let (preset, base) = if self.field_names == FieldNames::Json && !self.ignore_unknown_fields
        {
            ("protobuf", JsonOptions::protobuf())
        } else {
            ("queue", JsonOptions::queue())
        };
        let mut code = format!("{rt}::JsonOptions::{preset}()");
        if self.field_names != base.field_names {
            let names = match self.field_names {
                FieldNames::Proto => "Proto",
                FieldNames::Json => "Json",
            };
            write!(code, ".with_field_names({rt}::FieldNames::{names})").unwrap();
        }
        if self.ignore_unknown_fields != base.ignore_unknown_fields {
            write!(
                code,
                ".with_ignore_unknown_fields({})",
                self.ignore_unknown_fields
            )
            .unwrap();
        }
        if self.emit_default_values != base.emit_default_values {
            write!(
                code,
                ".with_emit_default_values({})",
                self.emit_default_values
            )
            .unwrap();
        }
        if self.enums_as_numbers != base.enums_as_numbers {
            write!(code, ".with_enums_as_numbers({})", self.enums_as_numbers).unwrap();
        }
        code
    }
}

/// An extension of a generated message, generated into it as a field: prost keeps no
/// extensions (its structs have no place for them, and it drops their binary fields as
/// unknown), so each extension declared in the compiled tree becomes a field of the message it
/// extends, with the extension's number. Binary and JSON then read and write it like any field.
#[derive(Debug, Clone)]
pub(crate) struct ExtensionField {
    pub(crate) extension: ExtensionDescriptor,
    /// The field's proto-level name (see [`names::extension_field_name`]).
    pub(crate) field_name: String,
}

/// The extensions of every generated message, by the message's full name, in number order.
/// Extensions of the well-known types and of descriptor options (`google.protobuf.*`) are not
/// generated. Fails when a field name would collide with another field of the message.
pub(crate) fn extension_fields(
    pool: &DescriptorPool,
    texts: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, Vec<ExtensionField>>, Vec<Diagnostic>> {
    let mut by_message: BTreeMap<String, Vec<ExtensionField>> = BTreeMap::new();
    for extension in pool.all_extensions() {
        let extended = extension.containing_message();
        if extended.package_name() == "google.protobuf" {
            continue;
        }
        by_message
            .entry(extended.full_name().to_owned())
            .or_default()
            .push(ExtensionField {
                field_name: names::extension_field_name(&extension),
                extension,
            });
    }
    let mut problems = Vec::new();
    for (message, fields) in &mut by_message {
        fields.sort_by_key(|f| f.extension.number());
        let Some(message) = pool.get_message_by_name(message) else {
            continue;
        };
        let mut taken: BTreeMap<String, String> = message
            .fields()
            .map(|f| (names::snake(f.name()), format!("field `{}`", f.name())))
            .chain(
                message
                    .oneofs()
                    .filter(|o| !o.is_synthetic())
                    .map(|o| (names::snake(o.name()), format!("oneof `{}`", o.name()))),
            )
            .collect();
        for field in fields.iter() {
            let rust = names::snake(&field.field_name);
            let ext = &field.extension;
            if let Some(other) = taken.get(&rust) {
                problems.push(Diagnostic::at(
                    format!(
                        "extension `{}` would be generated as field `{rust}` of `{}`, which {other} already takes",
                        ext.full_name(),
                        message.full_name()
                    ),
                    Location::of_path(&ext.parent_file(), ext.path(), 2, texts),
                    "extension declared here",
                    Some("rename the extension or the field".to_owned()),
                ));
            } else {
                taken.insert(rust, format!("extension `{}`", ext.full_name()));
            }
        }
    }
    if problems.is_empty() {
        Ok(by_message)
    } else {
        Err(problems)
    }
}

/// Every cycle of proto2 `required` message fields. prost holds a required message as a plain
/// (boxed) value, so such a cycle has no finite default and its `Default` would never return.
pub(crate) fn required_cycles(
    pool: &DescriptorPool,
    texts: &BTreeMap<String, String>,
) -> Vec<Diagnostic> {
    fn required_messages(message: &MessageDescriptor) -> Vec<(FieldDescriptor, MessageDescriptor)> {
        message
            .fields()
            .filter(|f| f.cardinality() == Cardinality::Required)
            .filter_map(|f| match f.kind() {
                Kind::Message(m) => Some((f, m)),
                _ => None,
            })
            .collect()
    }
    let mut problems = Vec::new();
    let mut reported: Vec<String> = Vec::new();
    for start in pool.all_messages() {
        if start.package_name() == "google.protobuf" {
            continue;
        }
        // Depth-first along required message fields, looking for a way back to `start`.
        let mut stack: Vec<(MessageDescriptor, Vec<FieldDescriptor>)> =
            vec![(start.clone(), Vec::new())];
        let mut visited = vec![start.full_name().to_owned()];
        while let Some((message, trail)) = stack.pop() {
            for (field, target) in required_messages(&message) {
                let mut trail = trail.clone();
                trail.push(field.clone());
                if target.full_name() == start.full_name() {
                    let first = &trail[0];
                    if reported.iter().any(|r| r == first.full_name()) {
                        continue;
                    }
                    reported.extend(trail.iter().map(|f| f.full_name().to_owned()));
                    let cycle: Vec<&str> = trail.iter().map(|f| f.full_name()).collect();
                    problems.push(Diagnostic::at(
                        format!(
                            "required message fields form a cycle ({}), which prost cannot hold: its `Default` would never return",
                            cycle.join(" → ")
                        ),
                        Location::of_path(&first.parent_file(), first.path(), 2, texts),
                        "required here",
                        Some("make one field of the cycle `optional`".to_owned()),
                    ));
                } else if !visited.iter().any(|v| v == target.full_name()) {
                    visited.push(target.full_name().to_owned());
                    stack.push((target, trail));
                }
            }
        }
    }
    problems
}

/// Generated JSON code for the messages and enums of `files` (all of one package).
pub(crate) fn generate(
    files: &[FileDescriptor],
    package: &str,
    runtime: &str,
    options: &JsonOptions,
    extensions: &BTreeMap<String, Vec<ExtensionField>>,
) -> String {
    let cx = Context {
        package,
        runtime,
        options,
        extensions,
    };
    let mut out = String::new();
    // The trait's default is the queue's form; other options are one constant per package,
    // which every message's impl names.
    if *options != JsonOptions::queue() && files.iter().any(|f| f.messages().len() > 0) {
        let rt = format!("{runtime}::__private");
        writeln!(
            out,
            "/// The JSON options of this tree's messages.\nconst KEYWAY_JSON_OPTIONS: {rt}::JsonOptions = {};",
            options.expression(&rt),
        )
        .unwrap();
    }
    for file in files {
        for message in file.messages() {
            emit_message_tree(&mut out, &message, &cx);
        }
        for enumeration in file.enums() {
            emit_enum(&mut out, &enumeration, runtime);
        }
    }
    out
}

struct Context<'a> {
    package: &'a str,
    runtime: &'a str,
    options: &'a JsonOptions,
    extensions: &'a BTreeMap<String, Vec<ExtensionField>>,
}

fn emit_message_tree(out: &mut String, message: &MessageDescriptor, cx: &Context<'_>) {
    if message.is_map_entry() {
        return;
    }
    emit_message(out, message, cx);
    for child in message.child_messages() {
        emit_message_tree(out, &child, cx);
    }
    for enumeration in message.child_enums() {
        emit_enum(out, &enumeration, cx.runtime);
    }
}

/// How prost holds a field, which decides the helper used for it.
enum Shape {
    /// Proto3 field without presence: omitted at its default.
    Singular,
    /// `Option<T>`: proto3 `optional`, proto2 `optional`, messages, wrappers, extensions.
    Optional,
    /// A proto2 `required` field: a plain `T` (boxed when the type recurses), always written.
    Required,
    /// `Vec<T>`; an extension's is written only when not empty, whatever the options.
    Repeated {
        extension: bool,
    },
    Map {
        key: String,
    },
    /// A member of a real oneof: the oneof's field name, its enum's path, the variant.
    Oneof {
        field: String,
        enum_path: String,
        variant: String,
        oneof: String,
    },
}

struct FieldPlan {
    number: u32,
    proto_name: String,
    json_name: String,
    rust_name: String,
    shape: Shape,
    codec: String,
}

fn is_wrapper(message: &MessageDescriptor) -> Option<Kind> {
    if message.package_name() != "google.protobuf" {
        return None;
    }
    match message.name() {
        "DoubleValue" | "FloatValue" | "Int64Value" | "UInt64Value" | "Int32Value"
        | "UInt32Value" | "BoolValue" | "StringValue" | "BytesValue" => {
            Some(message.get_field(1).expect("wrappers have field 1").kind())
        }
        _ => None,
    }
}

fn is_empty_wkt(message: &MessageDescriptor) -> bool {
    message.full_name() == "google.protobuf.Empty"
}

/// The runtime codec expression for values of `kind`.
fn codec(kind: &Kind, package: &str, runtime: &str) -> String {
    let rt = format!("{runtime}::__private");
    match kind {
        Kind::Double => format!("{rt}::Double"),
        Kind::Float => format!("{rt}::Float"),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => format!("{rt}::Int32"),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => format!("{rt}::Int64"),
        Kind::Uint32 | Kind::Fixed32 => format!("{rt}::Uint32"),
        Kind::Uint64 | Kind::Fixed64 => format!("{rt}::Uint64"),
        Kind::Bool => format!("{rt}::Bool"),
        Kind::String => format!("{rt}::Str"),
        Kind::Bytes => format!("{rt}::Bytes"),
        Kind::Enum(e) => format!(
            "{rt}::enumeration::<{}>()",
            names::enum_path_from(e, package, runtime)
        ),
        Kind::Message(m) => match is_wrapper(m) {
            Some(inner) => codec(&inner, package, runtime),
            None if is_empty_wkt(m) => format!("{rt}::Empty"),
            None => format!("{rt}::Message"),
        },
    }
}

fn plan(field: &FieldDescriptor, cx: &Context<'_>) -> FieldPlan {
    let (package, runtime) = (cx.package, cx.runtime);
    let kind = field.kind();
    let (shape, codec) = if field.is_map() {
        let Kind::Message(entry) = &kind else {
            unreachable!("a map field's type is its entry message")
        };
        let key = entry.map_entry_key_field().kind();
        let value = entry.map_entry_value_field().kind();
        (
            Shape::Map {
                key: codec(&key, package, runtime),
            },
            codec(&value, package, runtime),
        )
    } else if field.is_list() {
        (
            Shape::Repeated { extension: false },
            codec(&kind, package, runtime),
        )
    } else if let Some(oneof) = field.containing_oneof().filter(|o| !o.is_synthetic()) {
        (
            Shape::Oneof {
                field: names::snake(oneof.name()),
                enum_path: names::oneof_enum_path(&oneof),
                variant: names::upper_camel(field.name()),
                oneof: oneof.name().to_owned(),
            },
            codec(&kind, package, runtime),
        )
    } else if field.cardinality() == Cardinality::Required {
        // prost holds required fields as plain values, not options.
        (Shape::Required, codec(&kind, package, runtime))
    } else if field.supports_presence() {
        (Shape::Optional, codec(&kind, package, runtime))
    } else {
        (Shape::Singular, codec(&kind, package, runtime))
    };
    FieldPlan {
        number: field.number(),
        proto_name: field.name().to_owned(),
        json_name: field.json_name().to_owned(),
        rust_name: names::snake(field.name()),
        shape,
        codec,
    }
}

fn plan_extension(field: &ExtensionField, cx: &Context<'_>) -> FieldPlan {
    let ext = &field.extension;
    let shape = if ext.is_list() {
        Shape::Repeated { extension: true }
    } else {
        Shape::Optional
    };
    FieldPlan {
        number: ext.number(),
        proto_name: ext.json_name().to_owned(),
        json_name: ext.json_name().to_owned(),
        rust_name: names::snake(&field.field_name),
        shape,
        codec: codec(&ext.kind(), cx.package, cx.runtime),
    }
}

/// A Rust byte-string literal of `bytes`.
fn byte_literal(bytes: &[u8]) -> String {
    let mut out = String::from("b\"");
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => write!(out, "\\x{b:02x}").unwrap(),
        }
    }
    out.push('"');
    out
}

/// `"name":` as JSON (escaped as the runtime's writer escapes strings), as a byte literal.
fn key_literal(name: &str) -> String {
    let mut json = String::from("\"");
    for c in name.chars() {
        match c {
            '"' => json.push_str("\\\""),
            '\\' => json.push_str("\\\\"),
            '\u{8}' => json.push_str("\\b"),
            '\u{c}' => json.push_str("\\f"),
            '\n' => json.push_str("\\n"),
            '\r' => json.push_str("\\r"),
            '\t' => json.push_str("\\t"),
            c if (c as u32) < 0x20 => write!(json, "\\u{:04x}", c as u32).unwrap(),
            c => json.push(c),
        }
    }
    json.push_str("\":");
    byte_literal(json.as_bytes())
}

/// The two pre-rendered keys of a field, as the writers' `proto_key, json_key` arguments; the
/// JSON key is empty when the names are the same, which spares the writer the choice.
fn keys(proto_name: &str, json_name: &str) -> String {
    if proto_name == json_name {
        format!("{}, b\"\"", key_literal(proto_name))
    } else {
        format!("{}, {}", key_literal(proto_name), key_literal(json_name))
    }
}

fn emit_message(out: &mut String, message: &MessageDescriptor, cx: &Context<'_>) {
    let rt = format!("{}::__private", cx.runtime);
    let path = names::message_path(message);
    let mut fields: Vec<FieldPlan> = message.fields().map(|f| plan(&f, cx)).collect();
    if let Some(extensions) = cx.extensions.get(message.full_name()) {
        fields.extend(extensions.iter().map(|e| plan_extension(e, cx)));
    }
    // Written in field-number order, as protobuf's libraries do, extensions among the fields.
    fields.sort_by_key(|f| f.number);

    writeln!(out, "impl {rt}::JsonMessage for {path} {{").unwrap();
    if *cx.options != JsonOptions::queue() {
        writeln!(
            out,
            "const JSON_OPTIONS: {rt}::JsonOptions = KEYWAY_JSON_OPTIONS;"
        )
        .unwrap();
    }

    // encode
    writeln!(
        out,
        "fn encode_json(&self, w: &mut {rt}::Writer) -> {rt}::Result<(), {rt}::EncodeError> {{"
    )
    .unwrap();
    out.push_str("w.byte(b'{');\n");
    if !fields.is_empty() {
        out.push_str("let first = &mut true;\n");
    }
    // Oneof members are written together, at the position of the oneof's first member.
    let mut oneofs_done: Vec<&str> = Vec::new();
    for f in &fields {
        let key = keys(&f.proto_name, &f.json_name);
        let helper = match &f.shape {
            Shape::Singular => "write_singular",
            Shape::Optional => "write_optional",
            Shape::Required => "write_present",
            Shape::Repeated { extension: false } => "write_repeated",
            Shape::Repeated { extension: true } => "write_repeated_extension",
            Shape::Map { key: key_codec } => {
                writeln!(
                    out,
                    "{rt}::write_map(w, first, {key}, &self.{}, {key_codec}, {})?;",
                    f.rust_name, f.codec
                )
                .unwrap();
                continue;
            }
            Shape::Oneof {
                field, enum_path, ..
            } => {
                if oneofs_done.contains(&field.as_str()) {
                    continue;
                }
                oneofs_done.push(field);
                writeln!(out, "match &self.{field} {{").unwrap();
                for member in &fields {
                    if let Shape::Oneof {
                        field: member_field,
                        variant,
                        ..
                    } = &member.shape
                    {
                        if member_field == field {
                            writeln!(
                                out,
                                "Some({enum_path}::{variant}(v)) => {rt}::write_present(w, first, {}, v, {})?,",
                                keys(&member.proto_name, &member.json_name),
                                member.codec
                            )
                            .unwrap();
                        }
                    }
                }
                out.push_str("None => {}\n}\n");
                continue;
            }
        };
        writeln!(
            out,
            "{rt}::{helper}(w, first, {key}, &self.{}, {})?;",
            f.rust_name, f.codec
        )
        .unwrap();
    }
    out.push_str("w.byte(b'}');\nOk(())\n}\n");

    // decode
    writeln!(
        out,
        "fn decode_json(p: &mut {rt}::Parser<'_>) -> {rt}::Result<Self, {rt}::DecodeError> {{"
    )
    .unwrap();
    if fields.is_empty() {
        out.push_str("let msg = Self::default();\n");
    } else {
        out.push_str("let mut msg = Self::default();\n");
        writeln!(out, "let mut seen = [0u64; {}];", fields.len().div_ceil(64)).unwrap();
    }
    out.push_str("p.begin_object()?;\nlet mut first = true;\n");
    out.push_str("while let Some(key) = p.next_key(&mut first)? {\nmatch &*key {\n");
    for (index, f) in fields.iter().enumerate() {
        if f.json_name == f.proto_name {
            writeln!(out, "{:?} => {{", f.proto_name).unwrap();
        } else {
            writeln!(out, "{:?} | {:?} => {{", f.proto_name, f.json_name).unwrap();
        }
        writeln!(
            out,
            "{rt}::mark_seen(p, &mut seen, {index}, {:?})?;",
            f.proto_name
        )
        .unwrap();
        let name = format!("{:?}", f.proto_name);
        match &f.shape {
            Shape::Singular => writeln!(
                out,
                "{rt}::read_singular(p, {name}, &mut msg.{}, {})?;",
                f.rust_name, f.codec
            ),
            Shape::Optional => writeln!(
                out,
                "{rt}::read_optional(p, {name}, &mut msg.{}, {})?;",
                f.rust_name, f.codec
            ),
            Shape::Required => writeln!(
                out,
                "{rt}::read_required(p, {name}, &mut msg.{}, {})?;",
                f.rust_name, f.codec
            ),
            Shape::Repeated { .. } => writeln!(
                out,
                "{rt}::read_repeated(p, {name}, &mut msg.{}, {})?;",
                f.rust_name, f.codec
            ),
            Shape::Map { key } => writeln!(
                out,
                "{rt}::read_map(p, {name}, &mut msg.{}, {key}, {})?;",
                f.rust_name, f.codec
            ),
            Shape::Oneof {
                field,
                enum_path,
                variant,
                oneof,
            } => writeln!(
                out,
                "if let Some(v) = {rt}::read_oneof(p, {name}, {})? {{\n{rt}::set_oneof(p, &mut msg.{field}, {enum_path}::{variant}(v), {oneof:?})?;\n}}",
                f.codec
            ),
        }
        .unwrap();
        out.push_str("}\n");
    }
    out.push_str("_ => p.unknown_field(&key)?,\n}\n}\nOk(msg)\n}\n}\n\n");
}

fn emit_enum(out: &mut String, enumeration: &EnumDescriptor, runtime: &str) {
    let rt = format!("{runtime}::__private");
    let path = names::type_path(enumeration.parent_message(), enumeration.name());
    writeln!(out, "impl {rt}::JsonEnum for {path} {{").unwrap();
    writeln!(
        out,
        "const FULL_NAME: &'static str = {:?};",
        enumeration.full_name()
    )
    .unwrap();
    // Enums of proto2 files are closed; proto3's are open.
    if enumeration.parent_file().syntax() == Syntax::Proto2 {
        out.push_str("const CLOSED: bool = true;\n");
    }
    out.push_str("fn json_name(value: i32) -> Option<&'static str> {\nmatch value {\n");
    // Declaration order: with `allow_alias`, the first name declared for a number is written.
    let declared = &enumeration.enum_descriptor_proto().value;
    let mut numbers_done = Vec::new();
    for value in declared {
        if numbers_done.contains(&value.number()) {
            continue;
        }
        numbers_done.push(value.number());
        writeln!(out, "{} => Some({:?}),", value.number(), value.name()).unwrap();
    }
    out.push_str("_ => None,\n}\n}\n");
    out.push_str("fn from_json_name(name: &str) -> Option<i32> {\nmatch name {\n");
    for value in declared {
        writeln!(out, "{:?} => Some({}),", value.name(), value.number()).unwrap();
    }
    out.push_str("_ => None,\n}\n}\n}\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_json_in_rust_byte_literals() {
        assert_eq!(key_literal("queue_name"), r#"b"\"queue_name\":""#);
        assert_eq!(key_literal("a\"b\\c"), r#"b"\"a\\\"b\\\\c\":""#);
        assert_eq!(key_literal("é\n"), r#"b"\"\xc3\xa9\\n\":""#);
        assert_eq!(key_literal("\u{1}"), r#"b"\"\\u0001\":""#);
    }

    #[test]
    fn options_render_as_a_constant_expression() {
        assert_eq!(
            JsonOptions::queue().expression("rt"),
            "rt::JsonOptions::queue()"
        );
        assert_eq!(
            JsonOptions::protobuf().expression("rt"),
            "rt::JsonOptions::protobuf()"
        );
        assert_eq!(
            JsonOptions::protobuf()
                .with_enums_as_numbers(true)
                .expression("rt"),
            "rt::JsonOptions::protobuf().with_enums_as_numbers(true)"
        );
        assert_eq!(
            JsonOptions::queue()
                .with_field_names(FieldNames::Json)
                .with_emit_default_values(true)
                .expression("rt"),
            "rt::JsonOptions::queue().with_field_names(rt::FieldNames::Json).with_emit_default_values(true)"
        );
    }
}
