//! `keyway-conformance report`: per-rule agreement of Keyway's codec with each oracle (Python's
//! protobuf, @bufbuild/protobuf), with their versions.
//!
//! Run: `cargo run -p keyway-conformance -- report`.

use std::process::ExitCode;

use keyway_conformance::malformed;
use keyway_conformance::oracle::{same_json, Oracle};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("report") {
        eprintln!("usage: keyway-conformance report");
        return ExitCode::from(2);
    }
    let dir = std::env::temp_dir().join(format!("keyway-report-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let sets = [dir.join("contract.binpb"), dir.join("kitchen.binpb")];
    if std::fs::write(&sets[0], keyway::DESCRIPTOR_SET).is_err()
        || std::fs::write(
            &sets[1],
            keyway_conformance::kitchen_sink::FILE_DESCRIPTOR_SET,
        )
        .is_err()
    {
        eprintln!("cannot write descriptor sets to {}", dir.display());
        return ExitCode::from(1);
    }
    let mut failed = false;
    println!(
        "keyway-runtime {} (this build)\n",
        env!("CARGO_PKG_VERSION")
    );
    for mut oracle in [Oracle::python(&sets), Oracle::node(&sets)] {
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
                            (Ok(a), Ok(b)) => same_json(&a, &b, "").is_ok(),
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
    let _ = std::fs::remove_dir_all(&dir);
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
