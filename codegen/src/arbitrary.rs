//! Emits proptest `Arbitrary` impls for every message of a package (`Builder::arbitrary`),
//! built from the edge-reaching strategies in `keyway_runtime::arbitrary`. Recursion is bounded
//! by a depth: past it, message fields are absent and lists of messages empty.

use std::fmt::Write as _;

use prost_reflect::{FieldDescriptor, FileDescriptor, Kind, MessageDescriptor};

use crate::names;

/// The generated code for the messages of `files` (one package).
pub(crate) fn generate(files: &[FileDescriptor], package: &str, runtime: &str) -> String {
    let mut out = String::new();
    for file in files {
        for message in file.messages() {
            emit_tree(&mut out, &message, package, runtime);
        }
    }
    out
}

fn emit_tree(out: &mut String, message: &MessageDescriptor, package: &str, runtime: &str) {
    if message.is_map_entry() {
        return;
    }
    emit(out, message, package, runtime);
    for child in message.child_messages() {
        emit_tree(out, &child, package, runtime);
    }
}

fn wkt_strategy(m: &MessageDescriptor) -> Option<&'static str> {
    if m.package_name() != "google.protobuf" {
        return None;
    }
    Some(match m.name() {
        "Timestamp" => "arb::timestamp()",
        "Duration" => "arb::duration()",
        "FieldMask" => "arb::field_mask()",
        "Struct" => "arb::structure()",
        "Value" => "arb::value()",
        "ListValue" => "arb::list_value()",
        "Any" => "arb::any_message()",
        "Empty" => "arb::empty()",
        "DoubleValue" => "arb::double()",
        "FloatValue" => "arb::float()",
        "Int64Value" => "arb::int64()",
        "UInt64Value" => "arb::uint64()",
        "Int32Value" => "arb::int32()",
        "UInt32Value" => "arb::uint32()",
        "BoolValue" => "arb::boolean()",
        "StringValue" => "arb::string()",
        "BytesValue" => "arb::bytes()",
        _ => return None,
    })
}

/// A strategy for one value of `kind` (an element, a map value, a singular field's content).
/// `None` for a user message type, whose strategy depends on the depth.
fn scalar(kind: &Kind) -> Option<String> {
    Some(match kind {
        Kind::Double => "arb::double()".into(),
        Kind::Float => "arb::float()".into(),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => "arb::int32()".into(),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => "arb::int64()".into(),
        Kind::Uint32 | Kind::Fixed32 => "arb::uint32()".into(),
        Kind::Uint64 | Kind::Fixed64 => "arb::uint64()".into(),
        Kind::Bool => "arb::boolean()".into(),
        Kind::String => "arb::string()".into(),
        Kind::Bytes => "arb::bytes()".into(),
        Kind::Enum(e) if e.full_name() == "google.protobuf.NullValue" => {
            "proptest::strategy::Just(0i32).boxed()".into()
        }
        Kind::Enum(e) => {
            let mut numbers: Vec<i32> = e.values().map(|v| v.number()).collect();
            numbers.dedup();
            format!("arb::enumeration(&{numbers:?})")
        }
        Kind::Message(m) => wkt_strategy(m)?.to_owned(),
    })
}

fn message_strategy(m: &MessageDescriptor, package: &str, runtime: &str) -> String {
    format!(
        "{}::__arbitrary(next)",
        names::message_path_from(m, package, runtime)
    )
}

/// `(strategy expression, assignment target)` of one field; oneofs come whole.
fn field(f: &FieldDescriptor, package: &str, runtime: &str) -> String {
    let kind = f.kind();
    if f.is_map() {
        let Kind::Message(entry) = &kind else {
            unreachable!()
        };
        let key = scalar(&entry.map_entry_key_field().kind()).expect("map keys are scalars");
        let value_kind = entry.map_entry_value_field().kind();
        return match scalar(&value_kind) {
            Some(value) => format!("arb::map({key}, {value})"),
            None => {
                let Kind::Message(m) = &value_kind else {
                    unreachable!()
                };
                format!(
                    "if deep {{ arb::map({key}, {}) }} else {{ proptest::strategy::Just(::core::default::Default::default()).boxed() }}",
                    message_strategy(m, package, runtime)
                )
            }
        };
    }
    if f.is_list() {
        return match scalar(&kind) {
            Some(element) => format!("arb::list({element})"),
            None => {
                let Kind::Message(m) = &kind else {
                    unreachable!()
                };
                format!(
                    "if deep {{ arb::list({}) }} else {{ proptest::strategy::Just(::std::vec::Vec::new()).boxed() }}",
                    message_strategy(m, package, runtime)
                )
            }
        };
    }
    let presence = f.supports_presence();
    match (scalar(&kind), &kind) {
        // Value: `Option<Value>`, a message field.
        (Some(s), Kind::Message(_)) => format!("arb::optional({s})"),
        (Some(s), _) if presence => format!("arb::optional({s})"),
        (Some(s), _) => s,
        (None, Kind::Message(m)) => format!(
            "if deep {{ arb::optional({}.prop_map(::core::convert::Into::into).boxed()) }} else {{ proptest::strategy::Just(::core::option::Option::None).boxed() }}",
            message_strategy(m, package, runtime)
        ),
        (None, _) => unreachable!("only messages lack a scalar strategy"),
    }
}

fn oneof_strategy(oneof: &prost_reflect::OneofDescriptor, package: &str, runtime: &str) -> String {
    let enum_path = names::oneof_enum_path(oneof);
    let mut code = String::from("{ let mut arms = ::std::vec![proptest::strategy::Just(::core::option::Option::None).boxed()];\n");
    for f in oneof.fields() {
        let variant = names::upper_camel(f.name());
        match scalar(&f.kind()) {
            Some(s) => writeln!(
                code,
                "arms.push({s}.prop_map(|v| ::core::option::Option::Some({enum_path}::{variant}(::core::convert::Into::into(v)))).boxed());"
            ),
            None => {
                let Kind::Message(m) = f.kind() else { unreachable!() };
                writeln!(
                    code,
                    "if deep {{ arms.push({}.prop_map(|v| ::core::option::Option::Some({enum_path}::{variant}(::core::convert::Into::into(v)))).boxed()); }}",
                    message_strategy(&m, package, runtime)
                )
            }
        }
        .unwrap();
    }
    code.push_str("arb::one_of(arms) }");
    code
}

fn emit(out: &mut String, message: &MessageDescriptor, package: &str, runtime: &str) {
    let rt = format!("{runtime}::__private");
    let path = names::message_path(message);
    // (strategy, assignment) in declaration order, a oneof at its first member.
    let mut parts: Vec<(String, String)> = Vec::new();
    let mut oneofs_done = Vec::new();
    for f in message.fields() {
        match f.containing_oneof().filter(|o| !o.is_synthetic()) {
            Some(o) => {
                if oneofs_done.contains(&o.name().to_owned()) {
                    continue;
                }
                oneofs_done.push(o.name().to_owned());
                parts.push((oneof_strategy(&o, package, runtime), names::snake(o.name())));
            }
            None => parts.push((field(&f, package, runtime), names::snake(f.name()))),
        }
    }
    writeln!(out, "impl {path} {{").unwrap();
    writeln!(
        out,
        "#[doc(hidden)]\npub fn __arbitrary(depth: u32) -> {rt}::proptest::strategy::BoxedStrategy<Self> {{"
    )
    .unwrap();
    writeln!(
        out,
        "#[allow(unused_imports)]\nuse {rt}::proptest;\nuse {rt}::proptest::strategy::Strategy as _;"
    )
    .unwrap();
    if !parts.is_empty() {
        writeln!(out, "use {rt}::arb;").unwrap();
    }
    if parts.is_empty() {
        out.push_str("let _ = depth;\nproptest::strategy::Just(Self::default()).boxed()\n}\n}\n");
    } else {
        out.push_str("#[allow(unused_variables)]\nlet next = depth.saturating_sub(1);\n#[allow(unused_variables)]\nlet deep = depth > 0;\n(");
        let chunks: Vec<&[(String, String)]> = parts.chunks(10).collect();
        for chunk in &chunks {
            out.push('(');
            for (strategy, _) in *chunk {
                write!(out, "{strategy}, ").unwrap();
            }
            out.push_str("),");
        }
        out.push_str(").prop_map(|(");
        for (c, chunk) in chunks.iter().enumerate() {
            out.push('(');
            for i in 0..chunk.len() {
                write!(out, "v{c}_{i}, ").unwrap();
            }
            out.push_str("),");
        }
        // Every field (and every oneof) has a strategy, so the literal names them all.
        out.push_str(")| Self {\n");
        for (c, chunk) in chunks.iter().enumerate() {
            for (i, (_, target)) in chunk.iter().enumerate() {
                writeln!(out, "{target}: v{c}_{i},").unwrap();
            }
        }
        out.push_str("}).boxed()\n}\n}\n");
    }
    writeln!(
        out,
        "impl {rt}::proptest::arbitrary::Arbitrary for {path} {{\n\
         type Parameters = ();\n\
         type Strategy = {rt}::proptest::strategy::BoxedStrategy<Self>;\n\
         fn arbitrary_with(_: ()) -> Self::Strategy {{ Self::__arbitrary(3) }}\n}}\n"
    )
    .unwrap();
}
