//! proto2 and the JSON options in the generated code: required fields, groups, closed enums
//! and extensions, and the diagnostics for what prost cannot hold. (That the code compiles and
//! behaves is shown by `keyway-conformance`, which generates protobuf-shaped proto2 and proto3
//! test messages in its build.)

use std::path::Path;

use keyway_codegen::{Builder, FieldNames, JsonOptions};

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

fn generate(
    proto: &str,
    builder: &mut Builder,
) -> Result<Vec<keyway_codegen::GeneratedFile>, keyway_codegen::Error> {
    let compiled = keyway_codegen::compile(&[proto], &[fixtures()]).unwrap();
    builder.generate(&compiled)
}

fn file(files: &[keyway_codegen::GeneratedFile], name: &str) -> String {
    let found = files
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("{name} not generated"));
    String::from_utf8(found.contents.clone()).unwrap()
}

/// The generated code without its layout, to search for calls regardless of line breaks.
fn flat(code: &str) -> String {
    code.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn proto2_json_code() {
    let files = generate("proto2/shapes.proto", &mut Builder::new()).unwrap();
    insta::assert_snapshot!(file(&files, "shapes.v1.json.rs"));
}

#[test]
fn required_fields_are_plain_values_in_prost_and_in_the_codec() {
    let files = generate("proto2/shapes.proto", &mut Builder::new()).unwrap();
    let prost = flat(&file(&files, "shapes.v1.rs"));
    assert!(
        prost.contains("pub id: ::keyway_runtime::__private::prost::alloc::string::String"),
        "{prost}"
    );
    assert!(prost.contains("pub first: order::Line"), "{prost}");
    let json = flat(&file(&files, "shapes.v1.json.rs"));
    // Always written, read without `Option`.
    assert!(
        json.contains(r#"write_present( w, first, b"\"id\":", b"", &self.id,"#),
        "{json}"
    );
    assert!(
        json.contains(r#"read_required( p, "first", &mut msg.first,"#),
        "{json}"
    );
    // Optional proto2 scalars have presence.
    assert!(
        json.contains(r#"write_optional( w, first, b"\"count\":", b"", &self.count,"#),
        "{json}"
    );
}

#[test]
fn groups_are_messages_under_their_field_name() {
    let files = generate("proto2/shapes.proto", &mut Builder::new()).unwrap();
    let json = flat(&file(&files, "shapes.v1.json.rs"));
    assert!(
        json.contains(r#"b"\"note\":", b"", &self.note, ::keyway_runtime::__private::Message"#),
        "{json}"
    );
    assert!(
        json.contains(r#"write_repeated( w, first, b"\"tag\":", b"", &self.tag,"#),
        "{json}"
    );
    assert!(
        json.contains("impl ::keyway_runtime::__private::JsonMessage for order::Note"),
        "{json}"
    );
}

#[test]
fn proto2_enums_are_closed_and_proto3_enums_open() {
    let files = generate("proto2/shapes.proto", &mut Builder::new()).unwrap();
    let json = file(&files, "shapes.v1.json.rs");
    assert!(json.contains("const CLOSED: bool = true;"), "{json}");
    assert!(
        json.contains(r#"const FULL_NAME: &'static str = "shapes.v1.Color";"#),
        "{json}"
    );
    let files = generate("small/small.proto", &mut Builder::new()).unwrap();
    let json = file(&files, "snap.v1.json.rs");
    assert!(!json.contains("CLOSED"), "{json}");
}

#[test]
fn extensions_become_fields_of_the_extended_message() {
    let files = generate("proto2/shapes.proto", &mut Builder::new()).unwrap();
    let prost = flat(&file(&files, "shapes.v1.rs"));
    // A file-level extension is named by its name, a nested one by its scope and name; both
    // carry their number, and the doc comment of the declaration.
    for field in [
        r#"#[prost(int32, optional, tag = "100")] pub priority:"#,
        r#"#[prost(string, optional, tag = "101")] pub order_nested_ext:"#,
        r#"#[prost(enumeration = "Color", repeated, packed = "false", tag = "102")] pub colors:"#,
        "/// A nested extension.",
    ] {
        assert!(prost.contains(field), "{field} not in {prost}");
    }
    let json = flat(&file(&files, "shapes.v1.json.rs"));
    assert!(
        json.contains(r#"b"\"[shapes.v1.priority]\":", b"", &self.priority,"#),
        "{json}"
    );
    assert!(
        json.contains(r#""[shapes.v1.Order.nested_ext]" => {"#),
        "{json}"
    );
    // A repeated extension is written only when it has elements, whatever the options.
    assert!(json.contains("write_repeated_extension("), "{json}");
    // The descriptor set keeps them as extensions.
    let set = files
        .iter()
        .find(|f| f.name == keyway_codegen::DESCRIPTOR_SET_FILE)
        .unwrap();
    let pool = prost_reflect::DescriptorPool::decode(set.contents.as_slice()).unwrap();
    let order = pool.get_message_by_name("shapes.v1.Order").unwrap();
    assert!(order.get_field(100).is_none());
    assert_eq!(order.extensions().count(), 3);
}

#[test]
fn a_cycle_of_required_messages_is_an_error_at_its_field() {
    let err = generate("proto2/required_cycle.proto", &mut Builder::new()).unwrap_err();
    assert!(err.is_compile());
    assert_eq!(err.diagnostics().len(), 1, "{err}");
    insta::assert_snapshot!(err.to_string());
}

#[test]
fn an_extension_that_would_collide_with_a_field_is_an_error_at_its_declaration() {
    let err = generate("proto2/extension_collision.proto", &mut Builder::new()).unwrap_err();
    assert!(err.is_compile());
    insta::assert_snapshot!(err.to_string());
}

#[test]
fn the_trees_json_options_are_the_builders() {
    // Default: the queue's form, which is the runtime's default too, so nothing is emitted.
    let files = generate("small/small.proto", &mut Builder::new()).unwrap();
    assert!(!file(&files, "snap.v1.json.rs").contains("JSON_OPTIONS"));
    for (options, expression) in [
        (
            JsonOptions::protobuf(),
            "::keyway_runtime::__private::JsonOptions::protobuf()",
        ),
        (
            JsonOptions::queue().with_field_names(FieldNames::Json),
            "::keyway_runtime::__private::JsonOptions::queue() .with_field_names(::keyway_runtime::__private::FieldNames::Json)",
        ),
        (
            JsonOptions::protobuf()
                .with_emit_default_values(true)
                .with_enums_as_numbers(true),
            "::keyway_runtime::__private::JsonOptions::protobuf() .with_emit_default_values(true) .with_enums_as_numbers(true)",
        ),
    ] {
        let files = generate("small/small.proto", Builder::new().json_options(options)).unwrap();
        let json = flat(&file(&files, "snap.v1.json.rs"));
        assert!(
            json.contains(&format!("const KEYWAY_JSON_OPTIONS: ::keyway_runtime::__private::JsonOptions = {expression};")),
            "{options:?}: {json}"
        );
        // Every message's impl names the tree's constant.
        assert_eq!(
            json.matches("const JSON_OPTIONS: ::keyway_runtime::__private::JsonOptions = KEYWAY_JSON_OPTIONS;").count(),
            2,
            "{json}"
        );
    }
}
