//! Seeded mutations of the golden vectors (and of a few documents for the kitchen-sink and
//! test-message fixtures), each decoded as several message types under several options. For
//! every input: no panic; and every input that decodes is a fixed point of the codec — it
//! encodes, its encoding decodes to the same message, and encoding that gives the same bytes.
//!
//! Deterministic: the mutations come from a seeded generator. `KEYWAY_FUZZ_CASES` sets the
//! number of mutated inputs (default 5000, a few seconds), `KEYWAY_FUZZ_SEED` the seed; both
//! are printed, with the input of any failure.

use std::fmt::Debug;
use std::panic::{catch_unwind, AssertUnwindSafe};

use keyway::base::change::Change;
use keyway::runway::messagequeue::{MergeRequest, MergeResult, MergeStep, StepOutput, StepResult};
use keyway_conformance::kitchen_sink::keyway::fixtures::kitchen::{
    kitchen_sink::Nested, KitchenSink,
};
use keyway_conformance::test_messages::protobuf_test_messages::{proto2, proto3};
use keyway_runtime::json::{self, FieldNames, JsonMessage, JsonOptions};

/// splitmix64: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A message type to decode inputs as.
struct Target {
    name: &'static str,
    check: fn(&[u8], &JsonOptions) -> Result<bool, String>,
}

/// Decode `input` as `M`; when that succeeds, require the fixed point. `Ok(true)` when the
/// input was accepted, `Ok(false)` when it was rejected, `Err` with what broke.
fn fixed_point<M: JsonMessage + PartialEq + Debug>(
    input: &[u8],
    options: &JsonOptions,
) -> Result<bool, String> {
    let Ok(message) = json::from_slice_with::<M>(input, options) else {
        return Ok(false);
    };
    let first = json::to_vec_with(&message, options)
        .map_err(|e| format!("decodes but does not encode: {e}\n  decoded: {message:?}"))?;
    let shown = String::from_utf8_lossy(&first).into_owned();
    let back = json::from_slice_with::<M>(&first, options)
        .map_err(|e| format!("its encoding does not decode: {e}\n  encoding: {shown}"))?;
    let second = json::to_vec_with(&back, options)
        .map_err(|e| format!("its encoding decodes but does not encode again: {e}"))?;
    if second != first {
        return Err(format!(
            "encoding is not stable\n  first:  {shown}\n  second: {}",
            String::from_utf8_lossy(&second)
        ));
    }
    // NaN is not equal to itself: such a message is compared by its canonical encoding above.
    #[allow(clippy::eq_op)]
    let comparable = message == message;
    if comparable && back != message {
        return Err(format!(
            "decode(encode(x)) != x\n  x:    {message:?}\n  back: {back:?}\n  encoding: {shown}"
        ));
    }
    Ok(true)
}

macro_rules! targets {
    ($($ty:ty),* $(,)?) => {
        vec![$(Target { name: stringify!($ty), check: fixed_point::<$ty> }),*]
    };
}

/// Seeds beyond the golden vectors: documents for the fixtures, close to their edges.
const FIXTURE_SEEDS: &[&str] = &[
    r#"{"f_int32":-1,"f_int64":"-2","f_uint64":"18446744073709551615","f_float":"NaN","f_double":-0.0,"f_bool":true,"f_string":"é\u2028😀\n","f_bytes":"AP8=","f_nested":{"a":1,"corecursive":{"o_mood":"GRUMPY"}},"f_mood":7,"f_level":"LOUD","r_mood":["HAPPY",-3],"m_bool":{"true":false},"m_int64":{"-9223372036854775808":"1"},"c_null":null}"#,
    r#"{"w_timestamp":"2024-02-29T12:00:00.123Z","w_duration":"-3.000000500s","w_field_mask":"fInt32,fNested.a","w_struct":{"a":[true,{"b":null}],"n":-1.5},"w_value":"text","w_list_value":[1,"x"],"w_empty":{},"w_bool":false,"w_int64":"-2","w_float":1.5,"w_double":"NaN","w_bytes":"AQI=","r_wrapped_int32":[1,2],"r_value":[null,{"k":[]}],"m_value":{"k":null}}"#,
    r#"{"w_any":{"@type":"type.googleapis.com/google.protobuf.Value","value":{"a":[1,null]}}}"#,
    r#"{"w_any":{"@type":"type.googleapis.com/google.protobuf.Value"}}"#,
    r#"{"w_any":{"@type":"google.protobuf.Value","value":1}}"#,
    r#"{"w_any":{"@type":"type.googleapis.com/keyway.fixtures.kitchen.KitchenSink.Nested","a":7,"corecursive":{"w_any":{"@type":"type.googleapis.com/google.protobuf.Duration","value":"1s"}}}}"#,
    r#"{"w_any":{"@type":"type.googleapis.com/google.protobuf.Any","value":{"@type":"type.googleapis.com/google.protobuf.Empty"}}}"#,
    r#"{"optionalInt32":1,"optionalNestedEnum":123,"optionalAliasedEnum":"bAz","repeatedFloat":["-Infinity",1e-46],"mapStringNestedMessage":{"m":{"a":1}},"oneofNullValue":null,"optionalValue":null,"optionalAny":{"@type":"type.googleapis.com/protobuf_test_messages.proto3.TestAllTypesProto3","optionalStruct":{}},"repeatedListValue":[[]],"FieldName18":18,"field__name4_":4}"#,
    r#"{"optionalInt32":0,"defaultString":"","optionalNestedEnum":"NEG","repeatedNestedEnum":[1,2],"mapStringNestedEnum":{"k":"BAZ"},"data":{"groupInt32":1},"multiwordgroupfield":{},"messageSetCorrect":{"[protobuf_test_messages.proto2.TestAllTypesProto2.MessageSetCorrectExtension1.message_set_extension]":{"str":"a"}},"[protobuf_test_messages.proto2.extension_int32]":1,"[protobuf_test_messages.proto2.groupfield]":{"groupUint32":2}}"#,
    r#"{"requiredInt32":1,"requiredNestedMessage":{"a":1,"corecursive":{}},"data":{"groupInt32":2},"defaultInt32":null,"requiredForeignEnum":"FOREIGN_BAR"}"#,
];

/// Pieces of JSON that reach the codec's edges, inserted or swapped in.
const TOKENS: &[&str] = &[
    "null",
    "true",
    "false",
    "{}",
    "[]",
    "\"\"",
    "0",
    "-0",
    "-0.0",
    "1e5",
    "1.5",
    "1e400",
    "-1e400",
    "1e-400",
    "3.4028235e38",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775809",
    "9223372036854775807",
    "2147483648",
    "0.0e99999999999",
    "\"NaN\"",
    "\"Infinity\"",
    "\"-Infinity\"",
    "\"1e5\"",
    "\" 1\"",
    "\"AA==\"",
    "\"-_8\"",
    "\"\\u0000\"",
    "\"\\ud83d\\ude00\"",
    "\"\\ud800\"",
    "\"\\/\"",
    "\"\\x\"",
    "\"0001-01-01T00:00:00Z\"",
    "\"9999-12-31T23:59:59.999999999Z\"",
    "\"315576000000.999999999s\"",
    "\"-0.5s\"",
    "\"fooBar,baz\"",
    "\"@type\"",
    "\"value\"",
    "\"type.googleapis.com/google.protobuf.Value\"",
    "\"type.googleapis.com/google.protobuf.Struct\"",
    "\"type.googleapis.com/google.protobuf.Timestamp\"",
    "\"type.googleapis.com/keyway.fixtures.kitchen.KitchenSink\"",
    "\"type.googleapis.com/protobuf_test_messages.proto3.TestAllTypesProto3\"",
    "\"[protobuf_test_messages.proto2.extension_int32]\"",
    "\"HAPPY\"",
    "\"SLEEPY\"",
    "\"NEG\"",
    "\"NULL_VALUE\"",
    ",",
    ":",
    "\"",
    "{",
    "}",
    "[",
    "]",
];

/// Byte spans of the tokens of `input` (strings, numbers, words, punctuation); anything else
/// is a one-byte token. Works on broken input too.
fn tokenize(input: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut i = 0;
    while i < input.len() {
        let start = i;
        match input[i] {
            b' ' | b'\n' | b'\r' | b'\t' => {
                i += 1;
                continue;
            }
            b'"' => {
                i += 1;
                while i < input.len() && input[i] != b'"' {
                    i += if input[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(input.len());
            }
            b'-' | b'0'..=b'9' => {
                while i < input.len()
                    && matches!(input[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
            }
            b'a'..=b'z' => {
                while i < input.len() && input[i].is_ascii_alphabetic() {
                    i += 1;
                }
            }
            _ => i += 1,
        }
        spans.push((start, i));
    }
    spans
}

/// The spans of `"key":value` members: a string token followed by `:` and one value token or a
/// balanced group. Used to duplicate members.
fn members(input: &[u8], tokens: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for (k, &(start, end)) in tokens.iter().enumerate() {
        if input[start] != b'"' || end - start < 2 {
            continue;
        }
        let Some(&(colon, _)) = tokens.get(k + 1) else {
            continue;
        };
        if input[colon] != b':' {
            continue;
        }
        let Some(&(value_start, mut value_end)) = tokens.get(k + 2) else {
            continue;
        };
        if matches!(input[value_start], b'{' | b'[') {
            let mut depth = 0i32;
            for &(s, e) in &tokens[k + 2..] {
                match input[s] {
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => depth -= 1,
                    _ => {}
                }
                value_end = e;
                if depth == 0 {
                    break;
                }
            }
        }
        out.push((start, value_end));
    }
    out
}

/// One mutation of `input`; `other` is another seed, for splices.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    let tokens = tokenize(input);
    match rng.below(10) {
        // Flip a bit.
        0 if !input.is_empty() => {
            let at = rng.below(input.len());
            input[at] ^= 1 << rng.below(8);
        }
        // Insert a byte.
        1 => {
            let at = rng.below(input.len() + 1);
            let byte = *rng.pick(b"{}[],:\"\\-.0eE1nu \x00\xff\xc3");
            input.insert(at, byte);
        }
        // Delete a few bytes.
        2 if !input.is_empty() => {
            let at = rng.below(input.len());
            let len = (1 + rng.below(8)).min(input.len() - at);
            input.drain(at..at + len);
        }
        // Replace a token by an edge token.
        3 if !tokens.is_empty() => {
            let (start, end) = *rng.pick(&tokens);
            let token = rng.pick(TOKENS).as_bytes();
            input.splice(start..end, token.iter().copied());
        }
        // Insert an edge token between tokens.
        4 => {
            let at = if tokens.is_empty() {
                0
            } else {
                rng.pick(&tokens).1
            };
            let token = rng.pick(TOKENS).as_bytes();
            input.splice(at..at, token.iter().copied());
        }
        // Delete a run of tokens.
        5 if !tokens.is_empty() => {
            let first = rng.below(tokens.len());
            let last = (first + rng.below(4)).min(tokens.len() - 1);
            input.drain(tokens[first].0..tokens[last].1);
        }
        // Splice in a run of tokens from another seed.
        6 => {
            let theirs = tokenize(other);
            if theirs.is_empty() {
                return;
            }
            let first = rng.below(theirs.len());
            let last = (first + rng.below(6)).min(theirs.len() - 1);
            let piece = other[theirs[first].0..theirs[last].1].to_vec();
            let at = if tokens.is_empty() {
                0
            } else {
                rng.pick(&tokens).0
            };
            input.splice(at..at, piece);
        }
        // Duplicate a member (a key given twice), or move it next to itself.
        7 => {
            let members = members(input, &tokens);
            if members.is_empty() {
                return;
            }
            let (start, end) = *rng.pick(&members);
            let mut copy = input[start..end].to_vec();
            copy.push(b',');
            input.splice(start..start, copy);
        }
        // Nest a value deeply.
        8 if !tokens.is_empty() => {
            let (start, end) = *rng.pick(&tokens);
            let depth = 1 + rng.below(160);
            let (open, close): (&[u8], &[u8]) = if rng.below(2) == 0 {
                (b"[", b"]")
            } else {
                (b"{\"a\":", b"}")
            };
            let mut nested = open.repeat(depth);
            nested.extend_from_slice(&input[start..end]);
            nested.extend(close.repeat(depth));
            input.splice(start..end, nested);
        }
        // An odd escape inside a string.
        _ => {
            let strings: Vec<_> = tokens
                .iter()
                .filter(|&&(s, e)| input[s] == b'"' && e - s >= 2)
                .collect();
            if strings.is_empty() {
                return;
            }
            let &&(start, end) = rng.pick(&strings);
            let at = start + 1 + rng.below(end - start - 1);
            let escapes: [&[u8]; 13] = [
                b"\\u0041",
                b"\\u00e9",
                b"\\u2028",
                b"\\ud83d\\ude00",
                b"\\udc00",
                b"\\ud800\\u0041",
                b"\\/",
                b"\\b",
                b"\\u000",
                b"\\U0041",
                b"\\",
                b"\x7f",
                b"\xe2\x80",
            ];
            let escape = rng.pick(&escapes);
            input.splice(at..at, escape.iter().copied());
        }
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

#[test]
fn mutated_inputs_never_panic_and_every_accepted_one_is_a_fixed_point() {
    let cases = env_number("KEYWAY_FUZZ_CASES", 5000);
    let seed = env_number("KEYWAY_FUZZ_SEED", 0x6b65_7977_6179);
    println!("KEYWAY_FUZZ_CASES={cases} KEYWAY_FUZZ_SEED={seed}");

    json::register::<KitchenSink>();
    json::register::<Nested>();
    json::register::<proto3::TestAllTypesProto3>();
    json::register::<proto2::TestAllTypesProto2>();

    let mut seeds: Vec<Vec<u8>> = keyway_conformance::vectors()
        .expect("vectors directory is readable")
        .into_iter()
        .map(|v| v.json)
        .collect();
    assert!(seeds.len() >= 25, "the golden vectors are there");
    seeds.extend(FIXTURE_SEEDS.iter().map(|s| s.as_bytes().to_vec()));

    let targets = targets![
        Change,
        MergeStep,
        MergeRequest,
        StepOutput,
        StepResult,
        MergeResult,
        KitchenSink,
        proto3::TestAllTypesProto3,
        proto2::TestAllTypesProto2,
        proto2::TestAllRequiredTypesProto2,
    ];
    let option_sets = [
        JsonOptions::queue(),
        JsonOptions::protobuf(),
        JsonOptions::queue()
            .with_field_names(FieldNames::Json)
            .with_emit_default_values(true)
            .with_enums_as_numbers(true),
    ];

    let mut rng = Rng(seed);
    let mut failures = Vec::new();
    let (mut decodes, mut accepted) = (0u64, 0u64);
    let mut accepted_by: Vec<u64> = vec![0; targets.len()];
    // The seeds themselves first, then their mutations.
    let total = seeds.len() as u64 + cases;
    for case in 0..total {
        let input = if case < seeds.len() as u64 {
            seeds[case as usize].clone()
        } else {
            let mut input = rng.pick(&seeds).clone();
            for _ in 0..1 + rng.below(3) {
                let other = rng.pick(&seeds).clone();
                mutate(&mut rng, &mut input, &other);
            }
            input
        };
        // Every input as a few types: two drawn at random and, every time, the kitchen sink
        // and the proto3 test message (the two with every well-known type).
        let mut chosen = vec![6, 7, rng.below(targets.len()), rng.below(targets.len())];
        chosen.sort_unstable();
        chosen.dedup();
        for index in chosen {
            let target = &targets[index];
            for options in &option_sets {
                decodes += 1;
                let outcome = catch_unwind(AssertUnwindSafe(|| (target.check)(&input, options)));
                let shown = String::from_utf8_lossy(&input);
                match outcome {
                    Ok(Ok(true)) => {
                        accepted += 1;
                        accepted_by[index] += 1;
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(why)) => failures.push(format!(
                        "{} with {options:?}: {why}\n  input: {shown}",
                        target.name
                    )),
                    Err(_) => failures.push(format!(
                        "{} with {options:?}: panicked\n  input: {shown}",
                        target.name
                    )),
                }
            }
        }
        if failures.len() >= 10 {
            break;
        }
    }
    println!("{decodes} decodes of {total} inputs, {accepted} accepted");
    for (target, count) in targets.iter().zip(&accepted_by) {
        println!("  {}: {count} accepted", target.name);
    }
    assert!(
        failures.is_empty(),
        "{} failures (seed {seed}):\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The mutations must leave enough inputs valid to exercise the fixed point for each type.
    for (target, count) in targets.iter().zip(&accepted_by) {
        assert!(
            *count > 0,
            "no input was accepted as {}: the mutations are too destructive",
            target.name
        );
    }
    assert!(
        accepted * 20 > decodes,
        "only {accepted} of {decodes} decodes accepted"
    );
}

#[test]
fn the_mutator_is_deterministic_and_covers_every_kind() {
    let seed = br#"{"a":[1,"x\"y",{"b":null}],"c":-1.5e3,"d":true}"#.to_vec();
    let tokens = tokenize(&seed);
    let texts: Vec<&str> = tokens
        .iter()
        .map(|&(s, e)| std::str::from_utf8(&seed[s..e]).unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "{",
            "\"a\"",
            ":",
            "[",
            "1",
            ",",
            "\"x\\\"y\"",
            ",",
            "{",
            "\"b\"",
            ":",
            "null",
            "}",
            "]",
            ",",
            "\"c\"",
            ":",
            "-1.5e3",
            ",",
            "\"d\"",
            ":",
            "true",
            "}"
        ]
    );
    let spans = members(&seed, &tokens);
    let shown: Vec<&str> = spans
        .iter()
        .map(|&(s, e)| std::str::from_utf8(&seed[s..e]).unwrap())
        .collect();
    assert_eq!(
        shown,
        [
            r#""a":[1,"x\"y",{"b":null}]"#,
            r#""b":null"#,
            r#""c":-1.5e3"#,
            r#""d":true"#
        ]
    );
    let run = |seed_value| {
        let mut rng = Rng(seed_value);
        (0..200)
            .map(|_| {
                let mut input = seed.clone();
                mutate(&mut rng, &mut input, b"[2]");
                input
            })
            .collect::<Vec<_>>()
    };
    let first = run(7);
    assert_eq!(first, run(7), "the same seed gives the same mutations");
    assert_ne!(first, run(8));
    assert!(
        first.iter().any(|m| m.len() > seed.len() + 100),
        "deep nesting"
    );
    assert!(first.iter().any(|m| m.len() < seed.len()), "deletions");
    assert!(
        first.iter().any(|m| std::str::from_utf8(m).is_err()),
        "raw bytes"
    );
    assert!(
        first
            .iter()
            .any(|m| String::from_utf8_lossy(m).matches("\"d\":true").count() == 2),
        "duplicated members"
    );
}
