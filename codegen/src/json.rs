//! Emits the protobuf-JSON codec of every message and enum of one package: an impl of the
//! runtime's `JsonMessage` per message and `JsonEnum` per enum, writing and reading JSON
//! directly (no serde visitors, no intermediate tree).
//!
//! The generated code states the mapping per field; the runtime's helpers carry it out:
//! - key on write: the proto field name; keys on read: the proto name and the JSON name;
//! - singular proto3 scalars and enums are omitted at their default; `optional` fields, message
//!   fields and wrappers when absent; oneof members are always written when set;
//! - wrappers (`google.protobuf.Int32Value`, ...) are held by prost as `Option<i32>`, ... and
//!   use the wrapped scalar's codec; `google.protobuf.Empty` is held as `Option<()>`;
//! - enums are matched by every name, aliases included, and written by their first name.

use std::fmt::Write as _;

use prost_reflect::{EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor};

use crate::names;

/// Generated JSON code for the messages and enums of `files` (all of one package).
pub(crate) fn generate(files: &[FileDescriptor], package: &str, runtime: &str) -> String {
    let mut out = String::new();
    for file in files {
        for message in file.messages() {
            emit_message_tree(&mut out, &message, package, runtime);
        }
        for enumeration in file.enums() {
            emit_enum(&mut out, &enumeration, runtime);
        }
    }
    out
}

fn emit_message_tree(out: &mut String, message: &MessageDescriptor, package: &str, runtime: &str) {
    if message.is_map_entry() {
        return;
    }
    emit_message(out, message, package, runtime);
    for child in message.child_messages() {
        emit_message_tree(out, &child, package, runtime);
    }
    for enumeration in message.child_enums() {
        emit_enum(out, &enumeration, runtime);
    }
}

/// How prost holds a field, which decides the helper used for it.
enum Shape {
    /// Proto3 field without presence: omitted at its default.
    Singular,
    /// `Option<T>`: proto3 `optional`, messages, wrappers.
    Optional,
    Repeated,
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

fn plan(field: &FieldDescriptor, package: &str, runtime: &str) -> FieldPlan {
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
        (Shape::Repeated, codec(&kind, package, runtime))
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
    } else if field.supports_presence() {
        (Shape::Optional, codec(&kind, package, runtime))
    } else {
        (Shape::Singular, codec(&kind, package, runtime))
    };
    FieldPlan {
        proto_name: field.name().to_owned(),
        json_name: field.json_name().to_owned(),
        rust_name: names::snake(field.name()),
        shape,
        codec,
    }
}

fn emit_message(out: &mut String, message: &MessageDescriptor, package: &str, runtime: &str) {
    let rt = format!("{runtime}::__private");
    let path = names::message_path(message);
    let fields: Vec<FieldPlan> = message
        .fields()
        .map(|f| plan(&f, package, runtime))
        .collect();

    writeln!(out, "impl {rt}::JsonMessage for {path} {{").unwrap();

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
        let key = format!("b\"\\\"{}\\\":\"", f.proto_name);
        match &f.shape {
            Shape::Singular => writeln!(
                out,
                "{rt}::write_singular(w, first, {key}, &self.{}, {})?;",
                f.rust_name, f.codec
            ),
            Shape::Optional => writeln!(
                out,
                "{rt}::write_optional(w, first, {key}, &self.{}, {})?;",
                f.rust_name, f.codec
            ),
            Shape::Repeated => writeln!(
                out,
                "{rt}::write_repeated(w, first, {key}, &self.{}, {})?;",
                f.rust_name, f.codec
            ),
            Shape::Map { key: key_codec } => writeln!(
                out,
                "{rt}::write_map(w, first, {key}, &self.{}, {key_codec}, {})?;",
                f.rust_name, f.codec
            ),
            Shape::Oneof { field, enum_path, .. } => {
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
                                "Some({enum_path}::{variant}(v)) => {rt}::write_present(w, first, b\"\\\"{}\\\":\", v, {})?,",
                                member.proto_name, member.codec
                            )
                            .unwrap();
                        }
                    }
                }
                writeln!(out, "None => {{}}\n}}")
            }
        }
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
            Shape::Repeated => writeln!(
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
    out.push_str("_ => p.skip_value()?,\n}\n}\nOk(msg)\n}\n}\n\n");
}

fn emit_enum(out: &mut String, enumeration: &EnumDescriptor, runtime: &str) {
    let rt = format!("{runtime}::__private");
    let path = names::type_path(enumeration.parent_message(), enumeration.name());
    writeln!(out, "impl {rt}::JsonEnum for {path} {{").unwrap();
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
