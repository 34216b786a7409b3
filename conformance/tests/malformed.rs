//! Rust and both oracles agree on accept versus reject for every near-valid document of
//! `keyway_conformance::malformed`, and on the value when both accept. Known oracle deviations
//! are listed, with their evidence, in `malformed::KNOWN`; a listed deviation that stops
//! happening fails too, so the list stays true.
//!
//! An oracle that cannot be set up is skipped here (`oracles.rs` has the test that fails for
//! it); one that was set up and then fails is a failure.

use keyway_conformance::malformed::{run, KNOWN};
use keyway_conformance::oracle::{Kind, Oracle};

fn check(mut oracle: Oracle) {
    let name = oracle.name().to_owned();
    let verdicts = run(&mut oracle);
    let mut problems = Vec::new();
    for v in &verdicts {
        match (&v.disagreement, v.known) {
            (Some(what), None) => problems.push(format!(
                "unexplained: {}: {}  {what}",
                v.case.id, v.case.json
            )),
            (None, Some(why)) => problems.push(format!(
                "listed but no longer happens: {} ({why})",
                v.case.id
            )),
            _ => {}
        }
    }
    let listed = KNOWN.iter().filter(|(o, _, _)| name.starts_with(o)).count();
    let explained = verdicts
        .iter()
        .filter(|v| v.disagreement.is_some() && v.known.is_some())
        .count();
    assert_eq!(
        listed, explained,
        "{name}: every listed deviation names a generated case"
    );
    assert!(problems.is_empty(), "{name}:\n{}", problems.join("\n"));
}

#[test]
fn rust_and_python_agree_on_near_valid_input() {
    if let Some(oracle) = Oracle::start_or_skip(Kind::Python) {
        check(oracle);
    }
}

#[test]
fn rust_and_node_agree_on_near_valid_input() {
    if let Some(oracle) = Oracle::start_or_skip(Kind::Node) {
        check(oracle);
    }
}
