//! Rust, Python's official protobuf library and `@bufbuild/protobuf` agree on the meaning of
//! every golden vector and of random contract and kitchen-sink messages, in both directions,
//! comparing JSON values by field type (`keyway_conformance::oracle::same_json`).
//!
//! The oracles set themselves up on first use (see `keyway_conformance::oracle`): a virtualenv
//! with the pinned protobuf under `target/oracles/python`, and `npm ci` in
//! `conformance/oracles/node`. What they need from the machine is `python3` with its venv
//! module, and `node` with `npm`; `KEYWAY_PYTHON` and `KEYWAY_NODE` pick other interpreters.
//! When an oracle cannot be set up, its `oracle_is_available` test fails with one line naming
//! what to install, and its other tests (here and in `malformed.rs`) print
//! `skipped: <oracle> oracle unavailable: <reason>` and pass; an oracle that was set up and
//! then fails is a failure everywhere.
//! Cases: 64 per direction, or `KEYWAY_ORACLE_CASES` for a long run.

use keyway_conformance::oracle::{self, same_json, Kind, Oracle};
use keyway_conformance::vectors;
use keyway_runtime::json::{self, JsonMessage};
use keyway_runtime::topic::Contract;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

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
        if let Err(diff) = same_json(&v.message, &parse(&ours), &parse(&theirs)) {
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
        // Rust encodes → the oracle decodes and re-encodes → the same JSON values.
        let ours = json::to_string(&m).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let theirs = oracle
            .borrow_mut()
            .json_roundtrip(type_name, &ours)
            .map_err(|e| {
                TestCaseError::fail(format!("{name} rejected Rust's JSON: {e}\n{ours}"))
            })?;
        same_json(type_name, &parse(&ours), &parse(&theirs)).map_err(|d| {
            TestCaseError::fail(format!(
                "Rust → {name}: {d}\nours:   {ours}\ntheirs: {theirs}"
            ))
        })?;
        // The oracle encodes (from the binary) → Rust decodes → the same message.
        let binary = m.encode_to_vec();
        let theirs = oracle
            .borrow_mut()
            .binary_to_json(type_name, &binary)
            .map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
        let decoded: M = json::from_str(&theirs).map_err(|e| {
            TestCaseError::fail(format!("Rust rejected {name}'s JSON: {e}\n{theirs}"))
        })?;
        // Compared as values, not bytes: JavaScript writes a `Value` of -0.0 as `0`
        // (JSON.stringify drops the sign of zero), and as numbers -0 and 0 are equal.
        let expected = json::to_string(&M::decode(binary.as_slice()).unwrap()).unwrap();
        let got = json::to_string(&decoded).unwrap();
        same_json(type_name, &parse(&got), &parse(&expected)).map_err(|d| {
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
    ($($oracle:ident => $kind:expr),*) => {$(
        mod $oracle {
            use super::*;

            const KIND: Kind = $kind;

            /// The one test that fails when the oracle cannot be set up.
            #[test]
            fn oracle_is_available() {
                if let Err(reason) = oracle::setup(KIND) {
                    panic!("{KIND} oracle unavailable: {reason}");
                }
            }

            #[test]
            fn golden_vectors_mean_the_same() {
                let Some(oracle) = Oracle::start_or_skip(KIND) else { return };
                golden_vectors(oracle);
            }

            #[test]
            fn merge_request() {
                let Some(oracle) = Oracle::start_or_skip(KIND) else { return };
                differential::<keyway::runway::messagequeue::MergeRequest>(
                    oracle,
                    <keyway::runway::messagequeue::MergeRequest as Contract>::FULL_NAME,
                );
            }

            #[test]
            fn merge_result() {
                let Some(oracle) = Oracle::start_or_skip(KIND) else { return };
                differential::<keyway::runway::messagequeue::MergeResult>(
                    oracle,
                    <keyway::runway::messagequeue::MergeResult as Contract>::FULL_NAME,
                );
            }

            #[test]
            fn kitchen_sink() {
                let Some(oracle) = Oracle::start_or_skip(KIND) else { return };
                differential::<keyway_conformance::kitchen_sink::keyway::fixtures::kitchen::KitchenSink>(
                    oracle,
                    "keyway.fixtures.kitchen.KitchenSink",
                );
            }
        }
    )*};
}

against!(python => Kind::Python, node => Kind::Node);
