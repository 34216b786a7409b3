//! Compiles the kitchen-sink fixture the way pbjson's documentation sets it up: prost-build
//! types with pbjson-types for the well-known types, and pbjson-build serde impls with proto
//! field names, unknown fields and unknown enum names ignored (the closest it comes to the
//! mapping queue payloads use).
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let compiled = keyway_codegen::compile(&["kitchen_sink.proto"], &["../../tests/fixtures"])?;
    for source in &compiled.sources {
        println!("cargo:rerun-if-changed={}", source.display());
    }
    let all = compiled.pool.encode_to_vec();
    let mut set = prost_types::FileDescriptorSet::decode(all.as_slice())?;
    set.file.retain(|f| f.package() != "google.protobuf");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    prost_build::Config::new()
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(set)?;
    pbjson_build::Builder::new()
        .register_descriptors(&all)?
        .extern_path(".google.protobuf", "::pbjson_types")
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .ignore_unknown_enum_variants()
        .out_dir(&out)
        .build(&[".keyway"])?;
    Ok(())
}
