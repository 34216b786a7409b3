//! Generates the contract bindings from `api/` with keyway-codegen.
fn main() -> Result<(), keyway_codegen::Error> {
    keyway_codegen::compile_protos(
        &[
            "keyway/base/messagequeue.proto",
            "keyway/runway/messagequeue.proto",
        ],
        &["api"],
    )
}
