//! The `keyway` command.
//!
//! Exit codes: 0 success, 1 the command ran and found a problem, 2 usage error.

use std::process::ExitCode;

use keyway::base::change::Change;
use keyway::base::mergestrategy::Strategy;
use keyway::runway::messagequeue::{MergeRequest, MergeResult, MergeStep};
use keyway_runtime::json;

const USAGE: &str = "\
usage: keyway <command>

commands:
  demo         encode, decode and reject sample queue payloads of the runway contract
  descriptor   write the contract's encoded FileDescriptorSet to standard output
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["demo"] => demo(),
        ["descriptor"] => {
            use std::io::Write;
            match std::io::stdout().write_all(keyway::DESCRIPTOR_SET) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("keyway: writing the descriptor set: {e}");
                    ExitCode::from(1)
                }
            }
        }
        ["-h" | "--help" | "help"] => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn demo() -> ExitCode {
    let request = MergeRequest {
        id: "payments/batch/7".into(),
        queue_name: "payments".into(),
        steps: (0..3)
            .map(|i| MergeStep {
                step_id: format!("payments/{}", 40 + i),
                change: Some(Change {
                    uris: vec![format!(
                        "git://git.example.com/payments/refs%2Fheads%2Fmain/{}",
                        format!("{:x}", 0xabc0 + i).repeat(10)
                    )],
                }),
                strategy: Strategy::SquashRebase as i32,
            })
            .collect(),
    };
    let encoded = match json::to_string(&request) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("keyway: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "MergeRequest as protobuf JSON ({} bytes):\n  {encoded}\n",
        encoded.len()
    );

    let decoded: MergeRequest = match json::from_str(&encoded) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("keyway: the encoded request does not decode: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "decoded back: equal to the original = {}\n",
        decoded == request
    );

    let from_other_client = r#"{"id":"payments/batch/7","outcome":1,"queueName":"payments",
        "steps":[{"stepId":"payments/40","outputs":[{"id":"3f786850e387550fdab836ed7e6dc881de23001b"}]}],
        "retried_by":"a field this reader does not know"}"#;
    match json::from_str::<MergeResult>(from_other_client) {
        Ok(result) => println!(
            "a MergeResult written with camelCase keys, an enum number and an unknown field decodes:\n  {:?}\n  canonical: {}\n",
            result.outcome(),
            json::to_string(&result).unwrap_or_default()
        ),
        Err(e) => {
            eprintln!("keyway: {e}");
            return ExitCode::from(1);
        }
    }

    let poison = br#"{"id":"payments/batch/8","steps":[{"change":{"uris":["ok",42]}}]}"#;
    match json::from_slice::<MergeRequest>(poison) {
        Ok(_) => {
            eprintln!("keyway: a malformed payload was accepted");
            return ExitCode::from(1);
        }
        Err(e) => println!("a malformed payload is rejected with its path:\n  {e}"),
    }
    ExitCode::SUCCESS
}
