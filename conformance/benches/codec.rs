//! Encode and decode cost of Keyway's generated protobuf-JSON codec, against two baselines
//! measured in the same run, interleaved round by round so machine noise hits all alike:
//! - `serde`: serde_json on plain `#[derive(Serialize, Deserialize)]` structs that produce the
//!   identical JSON (what a hand-written codec would cost);
//! - `reflect`: prost-reflect's `DynamicMessage` with serde_json (the generic alternative).
//!
//! Run: `cargo bench -p keyway-conformance --bench codec`. Prints ns/op (median of rounds) and
//! each codec's ratio to `serde`. `KEYWAY_BENCH_ROUNDS` sets the rounds (default 31).

use std::hint::black_box;
use std::time::{Duration, Instant};

use keyway::base::change::Change;
use keyway::base::mergestrategy::Strategy;
use keyway::runway::messagequeue::{
    MergeRequest, MergeResult, MergeStep, Outcome, StepOutput, StepResult,
};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde::{Deserialize, Serialize};

mod plain {
    //! Plain serde structs whose JSON is byte-identical to the canonical protobuf JSON.
    use super::*;

    fn is_default<T: Default + PartialEq>(v: &T) -> bool {
        *v == T::default()
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug, Default)]
    pub(crate) struct Change {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub(crate) uris: Vec<String>,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug, Default, Clone, Copy)]
    #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
    pub(crate) enum Strategy {
        #[default]
        Default,
        Rebase,
        SquashRebase,
        Merge,
        Promote,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug, Default)]
    pub(crate) struct MergeStep {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub(crate) step_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub(crate) change: Option<Change>,
        #[serde(default, skip_serializing_if = "is_default")]
        pub(crate) strategy: Strategy,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug, Default)]
    pub(crate) struct MergeRequest {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub(crate) id: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub(crate) queue_name: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub(crate) steps: Vec<MergeStep>,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug, Default)]
    pub(crate) struct StepOutput {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub(crate) id: String,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug, Default)]
    pub(crate) struct StepResult {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub(crate) step_id: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub(crate) outputs: Vec<StepOutput>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub(crate) reason: String,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug, Default, Clone, Copy)]
    #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
    pub(crate) enum Outcome {
        #[default]
        #[serde(rename = "OUTCOME_UNSPECIFIED")]
        Unspecified,
        Succeeded,
        Failed,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug, Default)]
    pub(crate) struct MergeResult {
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub(crate) id: String,
        #[serde(default, skip_serializing_if = "is_default")]
        pub(crate) outcome: Outcome,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub(crate) reason: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub(crate) steps: Vec<StepResult>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub(crate) queue_name: String,
    }
}

fn sha(i: usize) -> String {
    format!("{:040x}", 0x5eed_0000_u64 as usize * 7919 + i)
}

/// 8 steps of 2 URIs each, SQUASH_REBASE: about 2.2 KB of JSON.
fn merge_request() -> MergeRequest {
    MergeRequest {
        id: "payments/batch/1207".into(),
        queue_name: "payments".into(),
        steps: (0..8)
            .map(|i| MergeStep {
                step_id: format!("payments/{}", 4000 + i),
                change: Some(Change {
                    uris: vec![
                        format!(
                            "git://git.example.com/payments/refs%2Fheads%2Fmain/{}",
                            sha(i)
                        ),
                        format!(
                            "github://github.example.com/acme/payments/pull/{}/{}",
                            900 + i,
                            sha(i + 100)
                        ),
                    ],
                }),
                strategy: Strategy::SquashRebase as i32,
            })
            .collect(),
    }
}

fn merge_result() -> MergeResult {
    MergeResult {
        id: "payments/batch/1207".into(),
        outcome: Outcome::Succeeded as i32,
        reason: String::new(),
        steps: (0..8)
            .map(|i| StepResult {
                step_id: format!("payments/{}", 4000 + i),
                outputs: vec![StepOutput { id: sha(i + 200) }],
                reason: String::new(),
            })
            .collect(),
        queue_name: "payments".into(),
    }
}

type Encode = Box<dyn Fn() -> Vec<u8>>;
type Decode = Box<dyn Fn(&[u8])>;

struct Case {
    name: &'static str,
    json: Vec<u8>,
    keyway_encode: Encode,
    keyway_decode: Decode,
    serde_encode: Encode,
    serde_decode: Decode,
    reflect_encode: Encode,
    reflect_decode: Decode,
}

fn reflect_encode(message: &DynamicMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::new(&mut out);
    message
        .serialize_with_options(
            &mut ser,
            &SerializeOptions::new().use_proto_field_name(true),
        )
        .expect("reflect encodes");
    out
}

fn reflect_decode(desc: &MessageDescriptor, json: &[u8]) -> DynamicMessage {
    let mut de = serde_json::Deserializer::from_slice(json);
    let m = DynamicMessage::deserialize(desc.clone(), &mut de).expect("reflect decodes");
    de.end().expect("no trailing data");
    m
}

fn case<K, P>(name: &'static str, message: K, desc: MessageDescriptor) -> Case
where
    K: keyway_runtime::json::JsonMessage + PartialEq + std::fmt::Debug + 'static,
    P: Serialize + for<'de> Deserialize<'de> + 'static,
{
    let json = keyway_runtime::json::to_vec(&message).expect("keyway encodes");
    let plain: P = serde_json::from_slice(&json).expect("plain decodes");
    let dynamic = reflect_decode(&desc, &json);

    // The three codecs must agree before their speed means anything.
    assert_eq!(
        serde_json::to_vec(&plain).unwrap(),
        json,
        "{name}: plain serde JSON differs"
    );
    assert_eq!(
        reflect_encode(&dynamic),
        json,
        "{name}: prost-reflect JSON differs"
    );
    let back: K = keyway_runtime::json::from_slice(&json).unwrap();
    assert_eq!(back, message);

    let desc2 = desc.clone();
    Case {
        name,
        json,
        keyway_encode: Box::new(move || keyway_runtime::json::to_vec(&message).unwrap()),
        keyway_decode: Box::new(|j| {
            black_box(keyway_runtime::json::from_slice::<K>(j).unwrap());
        }),
        serde_encode: Box::new(move || serde_json::to_vec(&plain).unwrap()),
        serde_decode: Box::new(|j| {
            black_box(serde_json::from_slice::<P>(j).unwrap());
        }),
        reflect_encode: Box::new(move || reflect_encode(&dynamic)),
        reflect_decode: Box::new(move |j| {
            black_box(reflect_decode(&desc2, j));
        }),
    }
}

/// Iterations of `f` that take about `target`.
fn calibrate(f: &dyn Fn(), target: Duration) -> u64 {
    let mut n = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        let took = start.elapsed();
        if took >= target / 4 {
            return (n as f64 * target.as_secs_f64() / took.as_secs_f64()).ceil() as u64;
        }
        n *= 2;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median ns/op of each function, measured in interleaved rounds.
fn measure(fns: &[(&str, &dyn Fn())], rounds: usize) -> Vec<f64> {
    let target = Duration::from_millis(20);
    let iters: Vec<u64> = fns.iter().map(|(_, f)| calibrate(*f, target)).collect();
    let mut samples = vec![Vec::with_capacity(rounds); fns.len()];
    for _ in 0..rounds {
        for (i, (_, f)) in fns.iter().enumerate() {
            let start = Instant::now();
            for _ in 0..iters[i] {
                f();
            }
            samples[i].push(start.elapsed().as_nanos() as f64 / iters[i] as f64);
        }
    }
    samples.into_iter().map(median).collect()
}

fn main() {
    // `cargo test --benches` passes `--bench`-less args; only run when asked to bench.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds: usize = std::env::var("KEYWAY_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(31);
    let pool = DescriptorPool::decode(keyway::DESCRIPTOR_SET).expect("descriptor set decodes");
    let desc = |name: &str| pool.get_message_by_name(name).expect("message in pool");
    let cases = [
        case::<MergeRequest, plain::MergeRequest>(
            "MergeRequest",
            merge_request(),
            desc("keyway.runway.messagequeue.MergeRequest"),
        ),
        case::<MergeResult, plain::MergeResult>(
            "MergeResult",
            merge_result(),
            desc("keyway.runway.messagequeue.MergeResult"),
        ),
    ];

    println!("rounds: {rounds} (median ns/op; ratio = codec / serde on plain structs)\n");
    println!(
        "{:<24} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "case", "keyway", "serde", "reflect", "keyway×", "reflect×"
    );
    for c in &cases {
        let json = c.json.clone();
        let enc: [(&str, &dyn Fn()); 3] = [
            ("keyway", &|| drop(black_box((c.keyway_encode)()))),
            ("serde", &|| drop(black_box((c.serde_encode)()))),
            ("reflect", &|| drop(black_box((c.reflect_encode)()))),
        ];
        let dec: [(&str, &dyn Fn()); 3] = [
            ("keyway", &|| (c.keyway_decode)(black_box(&json))),
            ("serde", &|| (c.serde_decode)(black_box(&json))),
            ("reflect", &|| (c.reflect_decode)(black_box(&json))),
        ];
        for (op, fns) in [("encode", &enc), ("decode", &dec)] {
            let ns = measure(fns, rounds);
            println!(
                "{:<24} {:>10.0} {:>10.0} {:>10.0} {:>9.2} {:>9.2}",
                format!("{op} {} ({} B)", c.name, c.json.len()),
                ns[0],
                ns[1],
                ns[2],
                ns[0] / ns[1],
                ns[2] / ns[1]
            );
        }
    }
}
