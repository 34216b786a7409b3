//! Compiles the kitchen-sink fixture with the same generator users run.
fn main() -> Result<(), keyway_codegen::Error> {
    keyway_codegen::compile_protos(&["kitchen_sink.proto"], &["../tests/fixtures"])
}
