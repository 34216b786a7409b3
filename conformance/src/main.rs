//! `keyway-conformance report`: per-rule agreement of Keyway's codec with each oracle (Python's
//! protobuf, @bufbuild/protobuf), with their versions.
//!
//! Run: `cargo run -p keyway-conformance -- report`. Each oracle is set up as the tests set it
//! up (see `keyway_conformance::oracle`); one that cannot be is reported in one line naming
//! what to install. Exit code 0 when every oracle ran and agreed, 1 otherwise, 2 for bad usage.

use std::process::ExitCode;

use keyway_conformance::malformed;
use keyway_conformance::oracle::{same_json, Kind, Oracle};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("report") {
        eprintln!("usage: keyway-conformance report");
        return ExitCode::from(2);
    }
    let mut failed = false;
    println!(
        "keyway-runtime {} (this build)\n",
        env!("CARGO_PKG_VERSION")
    );
    for kind in Kind::ALL {
        let mut oracle = match Oracle::start(kind) {
            Ok(oracle) => oracle,
            Err(e) => {
                println!("== {kind}\n  {e}\n");
                failed = true;
                continue;
            }
        };
        println!("== {}", oracle.name());
        let vectors = keyway_conformance::vectors().unwrap_or_default();
        let agreeing = vectors
            .iter()
            .filter(|v| {
                let ours = String::from_utf8_lossy(&v.json).into_owned();
                oracle
                    .json_roundtrip(&v.message, &ours)
                    .is_ok_and(|theirs| {
                        match (serde_json::from_str(&ours), serde_json::from_str(&theirs)) {
                            (Ok(a), Ok(b)) => same_json(&v.message, &a, &b).is_ok(),
                            _ => false,
                        }
                    })
            })
            .count();
        failed |= agreeing != vectors.len();
        println!(
            "  {:<14} {:>3}/{:<3} {}",
            "golden vectors",
            agreeing,
            vectors.len(),
            if agreeing == vectors.len() {
                "pass"
            } else {
                "FAIL"
            }
        );
        let verdicts = malformed::run(&mut oracle);
        let mut rules: Vec<&str> = verdicts.iter().map(|v| v.case.rule).collect();
        rules.dedup();
        for rule in rules {
            let of_rule: Vec<_> = verdicts.iter().filter(|v| v.case.rule == rule).collect();
            let agree = of_rule.iter().filter(|v| v.disagreement.is_none()).count();
            let known = of_rule
                .iter()
                .filter(|v| v.disagreement.is_some() && v.known.is_some())
                .count();
            let unexplained = of_rule.len() - agree - known;
            failed |= unexplained > 0;
            println!(
                "  {:<14} {:>3}/{:<3} {}{}",
                rule,
                agree,
                of_rule.len(),
                if unexplained == 0 { "pass" } else { "FAIL" },
                if known > 0 {
                    format!(" ({known} known oracle deviation(s))")
                } else {
                    String::new()
                }
            );
        }
        println!();
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
