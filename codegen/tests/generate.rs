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

/// The tokens of Rust source in order, groups marked by their delimiter: what two layouts of
/// the same code have in common. Whitespace and comments are gone and doc comments are
/// `#[doc]` attributes. Two liberties a formatter takes are undone: commas are dropped (it adds
/// trailing ones and drops those after match arms it wraps in braces) and so are the braces
/// around a match arm's body.
fn tokens(code: &str) -> Vec<String> {
    let wrapped = format!("tokens! {{\n{code}\n}}");
    let tokens = syn::parse_str::<syn::Macro>(&wrapped)
        .unwrap_or_else(|e| panic!("does not tokenize: {e}\n{code}"))
        .tokens;
    let buffer = syn::buffer::TokenBuffer::new2(tokens);
    let mut out = Vec::new();
    flatten(buffer.begin(), &mut out);
    out
}

fn flatten(mut cursor: syn::buffer::Cursor<'_>, out: &mut Vec<String>) {
    while !cursor.eof() {
        if let Some((inside, delimiter, _, next)) = cursor.any_group() {
            let arm_body = format!("{delimiter:?}") == "Brace"
                && out.len() >= 2
                && out[out.len() - 2..] == ["=", ">"];
            if !arm_body {
                out.push(format!("{delimiter:?}("));
            }
            flatten(inside, out);
            if !arm_body {
                out.push(format!("){delimiter:?}"));
            }
            cursor = next;
        } else if let Some((punct, next)) = cursor.punct() {
            if punct.as_char() != ',' {
                out.push(punct.as_char().to_string());
            }
            cursor = next;
        } else if let Some((tree, next)) = cursor.token_tree() {
            out.push(tree.to_string());
            cursor = next;
        }
    }
}

#[test]
fn unformatted_output_is_the_same_code() {
    let compiled = keyway_codegen::compile(&["small/small.proto"], &[fixtures()]).unwrap();
    let raw = keyway_codegen::Builder::new()
        .format(false)
        .generate(&compiled)
        .unwrap();
    let raw = raw.iter().find(|f| f.name == "snap.v1.json.rs").unwrap();
    let raw = String::from_utf8(raw.contents.clone()).unwrap();
    let formatted = generated("snap.v1.json.rs");
    assert!(raw.starts_with("// @generated"), "{raw}");
    // Still Rust, and the same Rust: the same tokens in the same order.
    assert!(tokens(&raw).len() > 1000);
    syn::parse_file(&raw).unwrap_or_else(|e| panic!("does not parse: {e}\n{raw}"));
    assert_eq!(tokens(&raw), tokens(&formatted));
    // But not laid out: the formatted output indents every body and keeps its lines short;
    // the generator's own text does neither.
    assert!(
        !raw.lines().any(|l| l.starts_with("    ")),
        "indented like formatted output:\n{raw}"
    );
    assert!(
        formatted.lines().any(|l| l.starts_with("    ")),
        "{formatted}"
    );
    let longest = |code: &str| code.lines().map(str::len).max().unwrap_or(0);
    assert!(
        longest(&raw) > 100 && longest(&formatted) <= 100,
        "raw lines up to {}, formatted up to {}",
        longest(&raw),
        longest(&formatted)
    );
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

/// `KEYWAY_BLESS` is set: rewrite checked-in output instead of only checking it.
fn blessing() -> bool {
    std::env::var_os("KEYWAY_BLESS").is_some()
}

/// Every problem with `dir` (shown as `shown`) as a checked-in copy of `files`: a file
/// missing or different, and a file there that the generator does not produce.
fn disk_differences(
    dir: &Path,
    shown: &str,
    files: &[keyway_codegen::GeneratedFile],
) -> Vec<String> {
    let mut problems = Vec::new();
    for file in files {
        match std::fs::read(dir.join(&file.name)) {
            Ok(on_disk) if on_disk == file.contents => {}
            Ok(_) => problems.push(format!("{shown}/{} is stale", file.name)),
            Err(e) => problems.push(format!("{shown}/{} is missing ({e})", file.name)),
        }
    }
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{shown}: {e}")) {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !files.iter().any(|f| f.name == name) {
            problems.push(format!("{shown}/{name} is not generated any more"));
        }
    }
    problems
}

#[test]
fn walkthrough_is_up_to_date() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/walkthrough"));
    let checked_in = root.join("generated");
    let protos = ["acme/orders/v1/orders.proto"];
    let includes = [root.join("proto")];
    let compiled = keyway_codegen::compile(&protos, &includes).unwrap();
    let files = keyway_codegen::Builder::new().generate(&compiled).unwrap();
    if blessing() {
        // Through the same shell a build script uses; what it writes is checked below.
        keyway_codegen::Builder::new()
            .out_dir(&checked_in)
            .compile_protos(&protos, &includes)
            .unwrap();
        for entry in std::fs::read_dir(&checked_in).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !files.iter().any(|f| f.name == name) {
                std::fs::remove_file(&path).unwrap();
            }
        }
    }
    let problems = disk_differences(&checked_in, "walkthrough/generated", &files);
    assert!(
        problems.is_empty(),
        "{}\nrun KEYWAY_BLESS=1 cargo test -p keyway-codegen --test generate",
        problems.join("\n")
    );
}

#[test]
fn a_checked_in_copy_that_is_missing_stale_or_extra_is_reported() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/walkthrough"));
    let protos = ["acme/orders/v1/orders.proto"];
    let includes = [root.join("proto")];
    let compiled = keyway_codegen::compile(&protos, &includes).unwrap();
    let files = keyway_codegen::Builder::new().generate(&compiled).unwrap();
    let dir = std::env::temp_dir().join(format!("keyway-checked-in-{}", std::process::id()));
    keyway_codegen::Builder::new()
        .out_dir(&dir)
        .compile_protos(&protos, &includes)
        .unwrap();
    assert_eq!(disk_differences(&dir, "copy", &files), Vec::<String>::new());

    // An empty file (a package with only options has no types) must still be there.
    let empty = files
        .iter()
        .find(|f| f.contents.is_empty())
        .expect("an empty generated file");
    let edited = files.iter().find(|f| !f.contents.is_empty()).unwrap();
    std::fs::remove_file(dir.join(&empty.name)).unwrap();
    std::fs::write(dir.join(&edited.name), b"// edited\n").unwrap();
    std::fs::write(dir.join("old.v0.rs"), b"").unwrap();
    let problems = disk_differences(&dir, "copy", &files);
    std::fs::remove_dir_all(&dir).unwrap();
    let expected = [
        format!("copy/{} is missing (", empty.name),
        format!("copy/{} is stale", edited.name),
        "copy/old.v0.rs is not generated any more".to_owned(),
    ];
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
    for start in expected {
        assert!(
            problems.iter().any(|p| p.starts_with(&start)),
            "{start:?} not in {problems:#?}"
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
