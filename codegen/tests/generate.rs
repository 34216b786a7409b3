//! The generator's output for a small fixture, and its diagnostics for bad input.

use std::path::Path;

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

fn generated(file: &str) -> String {
    let compiled = keyway_codegen::compile(&["small/small.proto"], &[fixtures()]).unwrap();
    let files = keyway_codegen::Builder::new().generate(&compiled).unwrap();
    let found = files.iter().find(|f| f.name == file).unwrap_or_else(|| {
        panic!(
            "{file} not generated; got {:?}",
            files.iter().map(|f| &f.name).collect::<Vec<_>>()
        )
    });
    String::from_utf8(found.contents.clone()).unwrap()
}

#[test]
fn json_codec_code() {
    insta::assert_snapshot!(generated("snap.v1.json.rs"));
}

#[test]
fn module_tree() {
    insta::assert_snapshot!(generated("_includes.rs"));
}

#[test]
fn prost_types_reach_prost_through_the_runtime() {
    let code = generated("snap.v1.rs");
    assert!(
        code.contains("::keyway_runtime::__private::prost::Message"),
        "{code}"
    );
    assert!(!code.contains(" ::prost::"), "{code}");
    // Wrappers are held as options of primitives.
    assert!(code.contains("pub note: ::core::option::Option<"), "{code}");
}

#[test]
fn runtime_path_is_configurable() {
    let compiled = keyway_codegen::compile(&["small/small.proto"], &[fixtures()]).unwrap();
    let files = keyway_codegen::Builder::new()
        .runtime_path("::my_runtime")
        .generate(&compiled)
        .unwrap();
    let json = files.iter().find(|f| f.name == "snap.v1.json.rs").unwrap();
    let json = String::from_utf8_lossy(&json.contents);
    assert!(json.contains("::my_runtime::__private::JsonMessage"));
    assert!(!json.contains("keyway_runtime"));
}

#[test]
fn unformatted_output_is_the_same_code() {
    let compiled = keyway_codegen::compile(&["small/small.proto"], &[fixtures()]).unwrap();
    let raw = keyway_codegen::Builder::new()
        .format(false)
        .generate(&compiled)
        .unwrap();
    let json = raw.iter().find(|f| f.name == "snap.v1.json.rs").unwrap();
    let text = String::from_utf8_lossy(&json.contents);
    let reformatted = prettyplease::unparse(&syn::parse_file(&text).unwrap());
    assert!(generated("snap.v1.json.rs").ends_with(&reformatted));
    assert_ne!(text.lines().count(), reformatted.lines().count());
}

#[test]
fn descriptor_set_keeps_custom_options_and_source_info() {
    let compiled = keyway_codegen::compile(&["small/small.proto"], &[fixtures()]).unwrap();
    let files = keyway_codegen::Builder::new().generate(&compiled).unwrap();
    let set = files
        .iter()
        .find(|f| f.name == keyway_codegen::DESCRIPTOR_SET_FILE)
        .unwrap();
    let pool = prost_reflect::DescriptorPool::decode(set.contents.as_slice()).unwrap();
    let item = pool.get_message_by_name("snap.v1.Item").unwrap();
    assert_eq!(item.fields().count(), 9);
    let file = pool.get_file_by_name("small/small.proto").unwrap();
    assert!(file.file_descriptor_proto().source_code_info.is_some());
    assert!(
        pool.get_file_by_name("google/protobuf/wrappers.proto")
            .is_some(),
        "imports kept"
    );
}

#[test]
fn sources_list_every_file_read() {
    let compiled = keyway_codegen::compile(&["small/small.proto"], &[fixtures()]).unwrap();
    assert!(compiled
        .sources
        .iter()
        .any(|p| p.ends_with("small/small.proto")));
}

fn diagnostic(file: &str) -> String {
    match keyway_codegen::compile(&[file], &[fixtures()]) {
        Ok(_) => panic!("{file} compiled"),
        Err(e) => {
            assert!(e.is_compile());
            // Normalise the absolute path of the fixtures directory.
            e.to_string()
                .replace(&fixtures().display().to_string(), "<fixtures>")
        }
    }
}

#[test]
fn undefined_type_points_at_the_use() {
    insta::assert_snapshot!(diagnostic("bad/undefined_type.proto"));
}

#[test]
fn syntax_error_points_at_the_token() {
    insta::assert_snapshot!(diagnostic("bad/syntax_error.proto"));
}

#[test]
fn missing_import_points_at_the_import() {
    insta::assert_snapshot!(diagnostic("bad/missing_import.proto"));
}

fn topics_code(protos: &[&str]) -> String {
    let compiled = keyway_codegen::compile(protos, &[fixtures().join("topics")]).unwrap();
    let files = keyway_codegen::Builder::new().generate(&compiled).unwrap();
    let found = files
        .iter()
        .find(|f| f.name == keyway_codegen::TOPICS_FILE)
        .unwrap();
    String::from_utf8(found.contents.clone()).unwrap()
}

#[test]
fn topic_bindings_code() {
    insta::assert_snapshot!(topics_code(&[
        "orders/v1/orders.proto",
        "billing/v1/billing.proto",
        "common/v1/common.proto",
    ]));
}

#[test]
fn no_topic_keys_option_gives_an_empty_registry() {
    let code = generated(keyway_codegen::TOPICS_FILE);
    assert!(code.contains("pub enum TopicKey {}"), "{code}");
    assert!(
        !code.contains("impl ::keyway_runtime::__private::Topic for"),
        "{code}"
    );
}

#[test]
fn topic_bindings_in_file_and_option_order() {
    let compiled = keyway_codegen::compile(
        &["orders/v1/orders.proto", "billing/v1/billing.proto"],
        &[fixtures().join("topics")],
    )
    .unwrap();
    let bindings = compiled.topic_bindings(None).unwrap();
    let keys: Vec<(&str, &str)> = bindings
        .iter()
        .map(|b| (b.key.as_str(), b.message.full_name()))
        .collect();
    assert_eq!(
        keys,
        [
            ("order-placed", "acme.orders.v1.OrderPlaced"),
            ("order_audit", "acme.orders.v1.OrderPlaced"),
            ("invoice-due", "acme.billing.v1.InvoiceDue"),
        ]
    );
    let loc = bindings[1].location.as_ref().unwrap();
    assert_eq!(
        (loc.file.as_str(), loc.line),
        ("orders/v1/orders.proto", 11)
    );
    assert!(loc.source_line.contains("order_audit"), "{loc:?}");
}

#[test]
fn every_binding_violation_is_reported_at_its_option() {
    let compiled =
        keyway_codegen::compile(&["bad.proto"], &[fixtures().join("topics_bad")]).unwrap();
    let err = keyway_codegen::Builder::new()
        .generate(&compiled)
        .unwrap_err();
    assert!(err.is_compile());
    assert_eq!(err.diagnostics().len(), 6, "{err}");
    insta::assert_snapshot!(err.to_string());
}

#[test]
fn a_chosen_topic_keys_extension_must_exist() {
    let compiled = keyway_codegen::compile(&["small/small.proto"], &[fixtures()]).unwrap();
    let err = keyway_codegen::Builder::new()
        .topic_keys_extension("nowhere.topic_keys")
        .generate(&compiled)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("`nowhere.topic_keys` is not defined"),
        "{err}"
    );
}

#[test]
fn walkthrough_is_up_to_date() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/walkthrough"));
    let checked_in = root.join("generated");
    if std::env::var_os("KEYWAY_BLESS").is_some() {
        keyway_codegen::Builder::new()
            .out_dir(&checked_in)
            .compile_protos(&["acme/orders/v1/orders.proto"], &[root.join("proto")])
            .unwrap();
    }
    let compiled =
        keyway_codegen::compile(&["acme/orders/v1/orders.proto"], &[root.join("proto")]).unwrap();
    let files = keyway_codegen::Builder::new().generate(&compiled).unwrap();
    for file in files {
        let on_disk = std::fs::read(checked_in.join(&file.name)).unwrap_or_default();
        assert!(
            on_disk == file.contents,
            "walkthrough/generated/{} is stale: run KEYWAY_BLESS=1 cargo test -p keyway-codegen --test generate",
            file.name
        );
    }
}

#[test]
fn arbitrary_impls_are_emitted_only_when_asked() {
    let compiled = keyway_codegen::compile(&["small/small.proto"], &[fixtures()]).unwrap();
    let without = keyway_codegen::Builder::new().generate(&compiled).unwrap();
    assert!(!without.iter().any(|f| f.name.ends_with(".arbitrary.rs")));
    let with = keyway_codegen::Builder::new()
        .arbitrary(true)
        .generate(&compiled)
        .unwrap();
    let code = with
        .iter()
        .find(|f| f.name == "snap.v1.arbitrary.rs")
        .map(|f| String::from_utf8_lossy(&f.contents).into_owned())
        .expect("snap.v1.arbitrary.rs");
    assert!(
        code.contains("proptest::arbitrary::Arbitrary for Item"),
        "{code}"
    );
    assert!(code.contains("arb::enumeration(&[0, 1])"), "{code}");
    let includes = with.iter().find(|f| f.name == "_includes.rs").unwrap();
    assert!(
        String::from_utf8_lossy(&includes.contents).contains("include!(\"snap.v1.arbitrary.rs\")")
    );
}
