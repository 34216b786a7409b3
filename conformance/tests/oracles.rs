//! Rust, Python's official protobuf library and `@bufbuild/protobuf` agree on the meaning of
//! every golden vector and of random contract and kitchen-sink messages, in both directions.
//!
//! Needs the oracles: `pip install -r conformance/oracles/python/requirements.txt` and
//! `npm ci --prefix conformance/oracles/node` (CI does both).
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

fn golden_vectors(mut oracle: Oracle) {
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
fn differential<M>(oracle: Oracle, type_name: &str)
where
    M: JsonMessage + prost::Message + Default + Arbitrary + std::fmt::Debug + 'static,
{
    let name = oracle.name().to_owned();
    let oracle = std::cell::RefCell::new(oracle);
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
            .map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
        let decoded: M = json::from_str(&theirs).map_err(|e| {
            TestCaseError::fail(format!("Rust rejected Python's JSON: {e}\n{theirs}"))
        })?;
        // Compared as JSON values: JavaScript writes a `Value` of -0.0 as `0` (JSON.stringify
        // drops the sign of zero), which the mapping's number model does not distinguish.
        let expected = json::to_string(&M::decode(binary.as_slice()).unwrap()).unwrap();
        let got = json::to_string(&decoded).unwrap();
        same_json(&parse(&got), &parse(&expected), "").map_err(|d| {
            TestCaseError::fail(format!(
                "{name} → Rust: {d}\nvia {name}: {got}\nexpected: {expected}"
            ))
        })?;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{type_name} against {name}: {e}");
    }
}

macro_rules! against {
    ($($oracle:ident),*) => {$(
        mod $oracle {
            use super::*;

            #[test]
            fn golden_vectors_mean_the_same() {
                golden_vectors(Oracle::$oracle(&sets()));
            }

            #[test]
            fn merge_request() {
                differential::<keyway::runway::messagequeue::MergeRequest>(
                    Oracle::$oracle(&sets()),
                    <keyway::runway::messagequeue::MergeRequest as Contract>::FULL_NAME,
                );
            }

            #[test]
            fn merge_result() {
                differential::<keyway::runway::messagequeue::MergeResult>(
                    Oracle::$oracle(&sets()),
                    <keyway::runway::messagequeue::MergeResult as Contract>::FULL_NAME,
                );
            }

            #[test]
            fn kitchen_sink() {
                differential::<keyway_conformance::kitchen_sink::keyway::fixtures::kitchen::KitchenSink>(
                    Oracle::$oracle(&sets()),
                    "keyway.fixtures.kitchen.KitchenSink",
                );
            }
        }
    )*};
}

against!(python, node);
