//! Compiles the kitchen-sink fixture with the same generator users run, with proptest
//! strategies for the property suites.
fn main() -> Result<(), keyway_codegen::Error> {
    keyway_codegen::Builder::new()
        .arbitrary(true)
        .compile_protos(&["kitchen_sink.proto"], &["../tests/fixtures"])
}
