//! Generates the bindings with keyway-codegen: the runway contract from `api/`, and the
//! orchestrator's own payloads and records from `orchestrator/proto/` (a tree of its own, so the
//! contract's topic registry holds the contract's keys only).
fn main() -> Result<(), keyway_codegen::Error> {
    let arbitrary = std::env::var_os("CARGO_FEATURE_ARBITRARY").is_some();
    keyway_codegen::Builder::new()
        .arbitrary(arbitrary)
        .compile_protos(
            &[
                "keyway/base/messagequeue.proto",
                "keyway/runway/messagequeue.proto",
            ],
            &["api"],
        )?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    keyway_codegen::Builder::new()
        .arbitrary(arbitrary)
        .out_dir(out.join("orchestrator"))
        .compile_protos(
            &["keyway/orchestrator/v1/messages.proto"],
            &["orchestrator/proto", "api"],
        )
}
