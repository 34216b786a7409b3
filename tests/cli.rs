//! The `keyway` binary, run as a user would.

use std::process::Command;

fn keyway(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keyway"))
        .args(args)
        .output()
        .expect("the keyway binary runs")
}

#[test]
fn demo_round_trips_and_rejects_a_poison_payload() {
    let out = keyway(&["demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("equal to the original = true"), "{stdout}");
    assert!(
        stdout.contains("steps[0].change.uris[1]: expected a string, found a number"),
        "{stdout}"
    );
}

#[test]
fn descriptor_writes_the_embedded_set() {
    let out = keyway(&["descriptor"]);
    assert!(out.status.success());
    assert_eq!(out.stdout, keyway::DESCRIPTOR_SET);
}

#[test]
fn usage_errors_exit_2() {
    let out = keyway(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: keyway"));
}
