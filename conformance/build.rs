//! Compiles the kitchen-sink fixture with the same generator users run, with proptest
//! strategies for the property suites.
fn main() -> Result<(), keyway_codegen::Error> {
    keyway_codegen::Builder::new()
        .arbitrary(true)
        .compile_protos(&["kitchen_sink.proto"], &["../tests/fixtures"])?;

    // The conformance runner's protocol, for the testee binary: a tree of its own.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    keyway_codegen::Builder::new()
        .out_dir(out.join("conformance_protocol"))
        .compile_protos(&["conformance/conformance.proto"], &["proto"])?;

    // proto2 and proto3 messages shaped like protobuf's conformance test messages, with
    // protobuf's JSON defaults (lowerCamelCase keys, unknown fields rejected) for the tree.
    keyway_codegen::Builder::new()
        .out_dir(out.join("test_messages"))
        .json_options(keyway_codegen::JsonOptions::protobuf())
        .compile_protos(
            &["test_messages/proto2.proto", "test_messages/proto3.proto"],
            &["proto"],
        )?;

    Ok(())
}
