//! Rust and Python's official protobuf library agree on the meaning of every golden vector and
//! of random contract and kitchen-sink messages, in both directions.
//!
//! Needs the oracle: `pip install -r conformance/oracles/python/requirements.txt` (CI does).
//! Cases: 64 per direction, or `KEYWAY_ORACLE_CASES` for a long run.

use std::path::PathBuf;

use keyway_conformance::oracle::{same_json, Oracle};
use keyway_conformance::vectors;
use keyway_runtime::json::{self, JsonMessage};
use keyway_runtime::topic::Contract;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

fn sets() -> Vec<PathBuf> {
    let dir = std::env::temp_dir().join(format!("keyway-oracle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let contract = dir.join("contract.binpb");
    let kitchen = dir.join("kitchen.binpb");
    std::fs::write(&contract, keyway::DESCRIPTOR_SET).unwrap();
    std::fs::write(
        &kitchen,
        keyway_conformance::kitchen_sink::FILE_DESCRIPTOR_SET,
    )
    .unwrap();
    vec![contract, kitchen]
}

fn cases() -> u32 {
    std::env::var("KEYWAY_ORACLE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

fn parse(json: &str) -> serde_json::Value {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

#[test]
fn golden_vectors_mean_the_same_to_python() {
    let mut oracle = Oracle::python(&sets());
    for v in vectors().unwrap() {
        let ours = String::from_utf8(v.json.clone()).unwrap();
        let theirs = oracle
            .json_roundtrip(&v.message, &ours)
            .unwrap_or_else(|e| panic!("{} rejected {}/{}: {e}", oracle.name(), v.message, v.case));
        if let Err(diff) = same_json(&parse(&ours), &parse(&theirs), "") {
            panic!(
                "{}/{}: {} disagrees at {diff}",
                v.message,
                v.case,
                oracle.name()
            );
        }
    }
}

/// Both directions for random values of `M`.
fn differential<M>(type_name: &str)
where
    M: JsonMessage + prost::Message + Default + Arbitrary + std::fmt::Debug + 'static,
{
    let oracle = std::cell::RefCell::new(Oracle::python(&sets()));
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&any::<M>(), |m| {
        // Rust encodes → Python decodes and re-encodes → the same JSON values.
        let ours = json::to_string(&m).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let theirs = oracle
            .borrow_mut()
            .json_roundtrip(type_name, &ours)
            .map_err(|e| {
                TestCaseError::fail(format!("python rejected Rust's JSON: {e}\n{ours}"))
            })?;
        same_json(&parse(&ours), &parse(&theirs), "").map_err(|d| {
            TestCaseError::fail(format!(
                "Rust → Python: {d}\nours:   {ours}\ntheirs: {theirs}"
            ))
        })?;
        // Python encodes (from the binary) → Rust decodes → the same message.
        let binary = m.encode_to_vec();
        let theirs = oracle
            .borrow_mut()
            .binary_to_json(type_name, &binary)
            .map_err(|e| TestCaseError::fail(format!("python: {e}")))?;
        let decoded: M = json::from_str(&theirs).map_err(|e| {
            TestCaseError::fail(format!("Rust rejected Python's JSON: {e}\n{theirs}"))
        })?;
        let expected = json::to_vec(&M::decode(binary.as_slice()).unwrap()).unwrap();
        let got = json::to_vec(&decoded).unwrap();
        prop_assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected),
            "Python → Rust, from {}",
            theirs
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{type_name}: {e}");
    }
}

#[test]
fn merge_request_agrees_with_python() {
    differential::<keyway::runway::messagequeue::MergeRequest>(
        <keyway::runway::messagequeue::MergeRequest as Contract>::FULL_NAME,
    );
}

#[test]
fn merge_result_agrees_with_python() {
    differential::<keyway::runway::messagequeue::MergeResult>(
        <keyway::runway::messagequeue::MergeResult as Contract>::FULL_NAME,
    );
}

#[test]
fn kitchen_sink_agrees_with_python() {
    differential::<keyway_conformance::kitchen_sink::keyway::fixtures::kitchen::KitchenSink>(
        "keyway.fixtures.kitchen.KitchenSink",
    );
}
