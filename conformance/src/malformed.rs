//! Near-valid protobuf JSON for the kitchen-sink fixture: every field kind crossed with the
//! values that sit at the edge of what the mapping accepts (wrong JSON types, out-of-range and
//! fractional integers, exponent forms, bad base64, out-of-range or badly formatted timestamps
//! and durations, duplicate keys, bad escapes and surrogates, trailing data). Implementations
//! must agree on accept versus reject, and on the value when they accept.

use crate::kitchen_sink::keyway::fixtures::kitchen::KitchenSink;
use crate::oracle::{same_json, Oracle};

/// The message every case is read as.
pub const TYPE: &str = "keyway.fixtures.kitchen.KitchenSink";

/// How Rust and an oracle judged one case.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The case.
    pub case: Case,
    /// What differed, if anything.
    pub disagreement: Option<String>,
    /// The reason on record, when the disagreement is a known oracle deviation.
    pub known: Option<&'static str>,
}

/// Run every case through Rust and `oracle`.
pub fn run(oracle: &mut Oracle) -> Vec<Verdict> {
    let name = oracle.name().to_owned();
    cases()
        .into_iter()
        .map(|case| {
            let ours = keyway_runtime::json::from_str::<KitchenSink>(&case.json)
                .map(|m| keyway_runtime::json::to_string(&m).expect("decoded messages encode"));
            let theirs = oracle.json_roundtrip(TYPE, &case.json);
            let disagreement = match (&ours, &theirs) {
                (Ok(a), Ok(b)) => match (serde_json::from_str(a), serde_json::from_str(b)) {
                    (Ok(a), Ok(b)) => same_json(TYPE, &a, &b)
                        .err()
                        .map(|d| format!("both accept, values differ at {d}")),
                    _ => Some(format!("unparsable output: {a} / {b}")),
                },
                (Err(_), Err(_)) => None,
                (Ok(a), Err(e)) => Some(format!("Rust accepts ({a}), oracle rejects: {e}")),
                (Err(e), Ok(b)) => Some(format!("Rust rejects ({e}), oracle accepts: {b}")),
            };
            let known = KNOWN
                .iter()
                .find(|(o, id, _)| name.starts_with(o) && *id == case.id)
                .map(|(_, _, why)| *why);
            Verdict {
                case,
                disagreement,
                known,
            }
        })
        .collect()
}

/// One generated document.
#[derive(Debug, Clone)]
pub struct Case {
    /// Stable id: `<rule>/<field>/<n>`.
    pub id: String,
    /// The rule family, for the report.
    pub rule: &'static str,
    /// The document.
    pub json: String,
}

/// (rule, field, values) — each value is inserted as the field's JSON value.
const FIELDS: &[(&str, &str, &[&str])] = &[
    (
        "integers",
        "f_int32",
        &[
            "1",
            "-1",
            "1e5",
            "1E5",
            "100000.000",
            "\"7\"",
            "\"-7\"",
            "\"1e2\"",
            "1.5",
            "2147483648",
            "-2147483649",
            "\"2147483648\"",
            "\"abc\"",
            "\" 1\"",
            "\"0x10\"",
            "true",
            "[1]",
            "{}",
            "-0",
            "0.0",
            "1e-1",
            "\"\"",
        ],
    ),
    (
        "integers",
        "f_int64",
        &[
            "\"9223372036854775807\"",
            "9223372036854775807",
            "\"-9223372036854775808\"",
            "\"9223372036854775808\"",
            "\"1.5\"",
            "\"1e3\"",
            "1e3",
            "\"01\"",
            "\"+1\"",
        ],
    ),
    (
        "integers",
        "f_uint32",
        &["4294967295", "4294967296", "-1", "\"4294967295\"", "\"-0\""],
    ),
    (
        "integers",
        "f_uint64",
        &[
            "\"18446744073709551615\"",
            "\"18446744073709551616\"",
            "\"-1\"",
            "18446744073709551615",
        ],
    ),
    (
        "floats",
        "f_float",
        &[
            "1.5",
            "\"1.5\"",
            "3.4028234663852886e38",
            "3.5e38",
            "-3.5e38",
            "1e-50",
            "\"NaN\"",
            "\"Infinity\"",
            "\"-Infinity\"",
            "\"nan\"",
            "\"inf\"",
            "\"1.5 \"",
            "true",
            "1e400",
        ],
    ),
    (
        "floats",
        "f_double",
        &[
            "1e308",
            "1e309",
            "\"1e309\"",
            "-1e-400",
            "\"NaN\"",
            "\"-0\"",
            "\"0x1p3\"",
            "\".5\"",
            "\"5.\"",
        ],
    ),
    (
        "bools",
        "f_bool",
        &["true", "false", "\"true\"", "1", "0", "null"],
    ),
    (
        "strings",
        "f_string",
        &[
            "\"\"",
            "\"\\u2028\"",
            "\"\\ud83d\\ude00\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\x41\"",
            "\"\\/\"",
            "123",
            "true",
            "[\"a\"]",
            "\"\\u00e9\"",
            "\"\\U0041\"",
        ],
    ),
    (
        "bytes",
        "f_bytes",
        &[
            "\"AQID\"",
            "\"AQI=\"",
            "\"AQI\"",
            "\"-_8A\"",
            "\"+/8A\"",
            "\"!!!!\"",
            "\"A\"",
            "\"AQ==x\"",
            "\"A=Q=\"",
            "1",
        ],
    ),
    (
        "enums",
        "f_mood",
        &[
            "\"HAPPY\"",
            "1",
            "7",
            "-1",
            "\"NOPE\"",
            "1.5",
            "\"1\"",
            "true",
            "2147483648",
        ],
    ),
    (
        "timestamps",
        "w_timestamp",
        &[
            "\"1970-01-01T00:00:00Z\"",
            "\"1970-01-01T00:00:00.5Z\"",
            "\"1970-01-01T08:00:00+08:00\"",
            "\"1970-01-01T00:00:00\"",
            "\"1970-01-01t00:00:00Z\"",
            "\"1970-01-01T00:00:00z\"",
            "\"0001-01-01T00:00:00Z\"",
            "\"0000-12-31T23:59:59Z\"",
            "\"9999-12-31T23:59:59.999999999Z\"",
            "\"10000-01-01T00:00:00Z\"",
            "\"1970-01-01T00:00:00.1234567891Z\"",
            "\"1970-02-30T00:00:00Z\"",
            "\"1970-01-01 00:00:00Z\"",
            "0",
        ],
    ),
    (
        "durations",
        "w_duration",
        &[
            "\"1s\"",
            "\"-1.5s\"",
            "\"0.000000001s\"",
            "\"1\"",
            "\"1.5\"",
            "\"315576000000s\"",
            "\"315576000001s\"",
            "\"1.0000000001s\"",
            "\"+1s\"",
            "\"1S\"",
            "\"s\"",
            "1",
        ],
    ),
    (
        "field-masks",
        "w_field_mask",
        &["\"a,b.cD\"", "\"\"", "\"a_b\"", "[\"a\"]"],
    ),
    (
        "map-keys",
        "m_int32",
        &[
            "{\"1\":1}",
            "{\"-1\":1}",
            "{\"x\":1}",
            "{\"1.0\":1}",
            "{\"1\":1,\"1\":2}",
            "{\"1\":null}",
            "[]",
        ],
    ),
    (
        "map-keys",
        "m_bool",
        &["{\"true\":true}", "{\"True\":true}", "{\"1\":true}"],
    ),
    (
        "lists",
        "r_int32",
        &["[1,2]", "[]", "null", "[1,null]", "[1,\"2\"]", "1", "[1,]"],
    ),
];

/// Whole-document cases: (rule, document).
const DOCUMENTS: &[(&str, &str)] = &[
    ("duplicates", r#"{"f_int32":1,"f_int32":2}"#),
    ("duplicates", r#"{"f_int32":1,"fInt32":2}"#),
    ("duplicates", r#"{"c_uint32":1,"c_string":"a"}"#),
    ("duplicates", r#"{"c_uint32":null,"c_string":"a"}"#),
    ("syntax", r#"{"f_int32":1} x"#),
    ("syntax", r#"{"f_int32":1,}"#),
    ("syntax", r#"{'f_int32':1}"#),
    ("syntax", r#"{"f_int32":NaN}"#),
    ("syntax", r#"{"f_int32":01}"#),
    ("syntax", r#"{"f_int32":+1}"#),
    ("syntax", r#"{"f_int32":1 /* c */}"#),
    ("syntax", "{\"f_string\":\"a\u{1}b\"}"),
    (
        "syntax",
        r#"{"unknown":{"deep":[1,2,{"x":null}]},"f_int32":3}"#,
    ),
    ("syntax", r#"[]"#),
    ("syntax", r#"null"#),
    ("syntax", r#"{"f_int32":1"#),
];

/// Every generated case, in a stable order.
pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for (rule, field, values) in FIELDS {
        for (n, value) in values.iter().enumerate() {
            out.push(Case {
                id: format!("{rule}/{field}/{n}"),
                rule,
                json: format!("{{\"{field}\":{value}}}"),
            });
        }
    }
    for (n, (rule, json)) in DOCUMENTS.iter().enumerate() {
        out.push(Case {
            id: format!("{rule}/document/{n}"),
            rule,
            json: (*json).to_owned(),
        });
    }
    out
}

/// Disagreements that are the oracle's, with the evidence, keyed by oracle name prefix and
/// case id. An unlisted disagreement fails; a listed one that no longer happens fails too, so
/// the list stays true.
pub const KNOWN: &[(&str, &str, &str)] = &[
    (
        "python protobuf",
        "integers/f_int64/7",
        "accepts the string \"01\" (int() parsing); the mapping's integer strings follow the JSON number grammar, which has no leading zeros",
    ),
    (
        "python protobuf",
        "integers/f_int64/8",
        "accepts \"+1\" (int() parsing); JSON numbers have no plus sign",
    ),
    (
        "python protobuf",
        "floats/f_float/10",
        "accepts \"inf\" (float() parsing); the mapping's names are \"Infinity\" and \"-Infinity\"",
    ),
    (
        "python protobuf",
        "floats/f_float/11",
        "accepts \"1.5 \" with trailing white space (float() parsing)",
    ),
    (
        "python protobuf",
        "floats/f_float/12",
        "accepts `true` for a float (Python's bool is an int): a type error in the mapping",
    ),
    (
        "python protobuf",
        "floats/f_double/2",
        "reads \"1e309\" as Infinity; an out-of-range double is an error (conformance: DoubleFieldTooLarge)",
    ),
    (
        "python protobuf",
        "floats/f_double/7",
        "accepts \".5\"; JSON numbers need a digit before the point",
    ),
    (
        "python protobuf",
        "floats/f_double/8",
        "accepts \"5.\"; JSON numbers need a digit after the point",
    ),
    (
        "python protobuf",
        "bytes/f_bytes/5",
        "decodes \"!!!!\" as empty bytes: base64 decoding skips characters outside the alphabet, silently losing data",
    ),
    (
        "python protobuf",
        "bytes/f_bytes/7",
        "decodes \"AQ==x\" ignoring the trailing data",
    ),
    (
        "python protobuf",
        "bytes/f_bytes/8",
        "decodes \"A=Q=\" with padding in the middle",
    ),
    (
        "python protobuf",
        "enums/f_mood/5",
        "reads 1.5 as enum number 1 (truncation); an enum number must be an integer",
    ),
    (
        "python protobuf",
        "enums/f_mood/6",
        "reads the string \"1\" as enum number 1; a string is a value name, and no value is named \"1\" (ignored as unknown)",
    ),
    (
        "python protobuf",
        "enums/f_mood/7",
        "reads `true` as enum number 1 (Python's bool is an int)",
    ),
    (
        "python protobuf",
        "durations/w_duration/7",
        "truncates \"1.0000000001s\" to 1s; the mapping allows at most nanosecond precision",
    ),
    (
        "python protobuf",
        "durations/w_duration/8",
        "accepts \"+1s\"; durations have an optional minus sign only",
    ),
    (
        "python protobuf",
        "map-keys/m_int32/3",
        "reads map key \"1.0\" as 1; integer map keys are decimal integers",
    ),
    (
        "python protobuf",
        "duplicates/document/1",
        "accepts the same field under its proto and JSON names, keeping the last (conformance: FieldNameDuplicateDifferentCasing is required to fail)",
    ),
    (
        "python protobuf",
        "syntax/document/13",
        "reads a top-level array `[]` as an empty message",
    ),
    (
        "@bufbuild/protobuf",
        "integers/f_int32/14",
        "accepts \"0x10\" as 16 (JavaScript Number() parsing)",
    ),
    (
        "@bufbuild/protobuf",
        "integers/f_int64/1",
        "rejects the number 9223372036854775807: JSON.parse rounds it to a double first (9223372036854776000), out of range",
    ),
    (
        "@bufbuild/protobuf",
        "integers/f_int64/5",
        "rejects \"1e3\" for an int64; the mapping accepts any integral JSON number form, in a string too (Python agrees with Keyway)",
    ),
    (
        "@bufbuild/protobuf",
        "integers/f_int64/7",
        "accepts the string \"01\" (BigInt() parsing)",
    ),
    (
        "@bufbuild/protobuf",
        "integers/f_int64/8",
        "accepts \"+1\" (BigInt() parsing)",
    ),
    (
        "@bufbuild/protobuf",
        "integers/f_uint64/3",
        "rejects the number 18446744073709551615: JSON.parse rounds it to a double first, out of range",
    ),
    (
        "@bufbuild/protobuf",
        "floats/f_float/5",
        "keeps 1e-50 in a float field at double precision; as a float it is 0 (Python agrees with Keyway)",
    ),
    (
        "@bufbuild/protobuf",
        "floats/f_double/7",
        "accepts \".5\" (JavaScript Number() parsing)",
    ),
    (
        "@bufbuild/protobuf",
        "floats/f_double/8",
        "accepts \"5.\" (JavaScript Number() parsing)",
    ),
    (
        "@bufbuild/protobuf",
        "bytes/f_bytes/8",
        "decodes \"A=Q=\" with padding in the middle",
    ),
    (
        "@bufbuild/protobuf",
        "timestamps/w_timestamp/11",
        "accepts 1970-02-30 and rolls it over to March 2 (JavaScript Date)",
    ),
    (
        "@bufbuild/protobuf",
        "map-keys/m_int32/3",
        "reads map key \"1.0\" as 1",
    ),
];
