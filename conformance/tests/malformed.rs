//! Rust and both oracles agree on accept versus reject for every near-valid document of
//! `keyway_conformance::malformed`, and on the value when both accept. Known oracle deviations
//! are listed, with their evidence, in `malformed::KNOWN`; a listed deviation that stops
//! happening fails too, so the list stays true.

use std::path::PathBuf;

use keyway_conformance::malformed::{run, KNOWN};
use keyway_conformance::oracle::Oracle;

fn sets() -> Vec<PathBuf> {
    let dir = std::env::temp_dir().join(format!("keyway-malformed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kitchen = dir.join("kitchen.binpb");
    std::fs::write(
        &kitchen,
        keyway_conformance::kitchen_sink::FILE_DESCRIPTOR_SET,
    )
    .unwrap();
    vec![kitchen]
}

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
    check(Oracle::python(&sets()));
}

#[test]
fn rust_and_node_agree_on_near_valid_input() {
    check(Oracle::node(&sets()));
}
