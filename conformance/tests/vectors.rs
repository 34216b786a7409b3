//! The golden vectors decode and re-encode byte for byte, and cover the contract.

use keyway_conformance::{reencode_contract, vectors};

#[test]
fn every_vector_reencodes_byte_identically() {
    let vectors = vectors().expect("vectors directory is readable");
    assert!(
        vectors.len() >= 25,
        "expected the full vector set, found {}",
        vectors.len()
    );
    let mut failures = Vec::new();
    for v in &vectors {
        match reencode_contract(&v.message, &v.json) {
            Ok(out) if out == v.json => {}
            Ok(out) => failures.push(format!(
                "{}/{}: re-encoded differently\n  file: {}\n  ours: {}",
                v.message,
                v.case,
                String::from_utf8_lossy(&v.json),
                String::from_utf8_lossy(&out)
            )),
            Err(e) => failures.push(format!("{}/{}: {e}", v.message, v.case)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn vectors_cover_every_message_and_enum_value() {
    let vectors = vectors().unwrap();
    for message in [
        "keyway.base.change.Change",
        "keyway.runway.messagequeue.MergeStep",
        "keyway.runway.messagequeue.MergeRequest",
        "keyway.runway.messagequeue.StepOutput",
        "keyway.runway.messagequeue.StepResult",
        "keyway.runway.messagequeue.MergeResult",
    ] {
        assert!(
            vectors.iter().any(|v| v.message == message),
            "no vector for {message}"
        );
    }
    let all: String = vectors
        .iter()
        .map(|v| String::from_utf8_lossy(&v.json).into_owned())
        .collect();
    for name in [
        "REBASE",
        "\"SQUASH_REBASE\"",
        "\"MERGE\"",
        "PROMOTE",
        "SUCCEEDED",
        "FAILED",
    ] {
        assert!(all.contains(name), "no vector uses {name}");
    }
    // The zero values are written by omission: some step and some result leave them out.
    let request = vectors
        .iter()
        .find(|v| v.case == "every-strategy")
        .expect("every-strategy vector");
    assert!(String::from_utf8_lossy(&request.json).contains(r#"{"step_id":"payments/50","change""#));
    assert!(vectors.iter().any(|v| v.case == "outcome-unspecified"
        && !String::from_utf8_lossy(&v.json).contains("outcome")));
    for needle in ["\u{2028}", "🚀", "\\u0001", "\\t", "\\\""] {
        assert!(all.contains(needle), "no vector has {needle:?}");
    }
}

#[test]
fn unknown_message_names_are_reported() {
    let err = reencode_contract("keyway.nope.Missing", b"{}").unwrap_err();
    assert!(err.contains("keyway.nope.Missing"), "{err}");
}
