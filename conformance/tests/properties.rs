//! Properties of the generated codec, on values from the generated proptest strategies, for
//! every message of the contract and of the kitchen-sink fixture. Each is a test of its own,
//! on values of its own, and none assumes another holds:
//! - `canonical`: decoding and re-encoding an encoding gives the same bytes;
//! - `round_trip`: `decode(encode(m)) == m` (for values without NaN, which is not equal to
//!   itself; `==` also takes `-0.0` for `0.0`);
//! - `binary_keeps_the_json`: `m` → binary → decode → JSON is the JSON of `m`, compared as
//!   JSON trees with numbers compared bit for bit. The JSON is then a function of the
//!   protobuf value alone (not, say, of a map's iteration order). Where prost's binary form
//!   cannot carry a `-0.0` (ARCHITECTURE.md, "Property and differential conformance") the
//!   expectation says so, from the schema: prost omits a float or double that equals the
//!   default when it has no presence, that is a singular field, a map value or the value
//!   inside a `FloatValue` or `DoubleValue`, so it comes back as `0.0`. Repeated, optional
//!   and oneof floats keep the sign;
//! - `json_keeps_the_binary`: `m` → JSON → decode → binary means what the binary of `m`
//!   means: both are read with the descriptors and compared field by field, map entries in key
//!   order, floats bit for bit (so NaN and `-0.0` count, unlike in `round_trip`).
//!
//! Cases per property: 64, or `KEYWAY_PROPTEST_CASES` for a long run. Collection sizes:
//! `KEYWAY_PROPTEST_MAX_LEN` (see `keyway_runtime::arbitrary`).

use std::fmt::Write as _;
use std::sync::OnceLock;

use keyway_conformance::kitchen_sink::keyway::fixtures::kitchen::{
    kitchen_sink::Nested, KitchenSink, Nothing,
};
use keyway_runtime::json::{self, JsonMessage};
use proptest::prelude::*;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor};
use serde_json::Value as Json;

fn config() -> ProptestConfig {
    let cases = std::env::var("KEYWAY_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        max_global_rejects: cases * 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The trait bounds every property needs.
trait Subject:
    JsonMessage + prost::Message + prost::Name + PartialEq + Default + std::fmt::Debug
{
}
impl<M> Subject for M where
    M: JsonMessage + prost::Message + prost::Name + PartialEq + Default + std::fmt::Debug
{
}

fn encode<M: Subject>(m: &M) -> Result<Vec<u8>, TestCaseError> {
    json::to_vec(m).map_err(|e| TestCaseError::fail(format!("encode of {m:?}: {e}")))
}

fn decode<M: Subject>(encoded: &[u8]) -> Result<M, TestCaseError> {
    json::from_slice(encoded).map_err(|e| {
        TestCaseError::fail(format!(
            "decode of {}: {e}",
            String::from_utf8_lossy(encoded)
        ))
    })
}

fn canonical<M: Subject>(m: &M) -> Result<(), TestCaseError> {
    let encoded = encode(m)?;
    let again = encode(&decode::<M>(&encoded)?)?;
    prop_assert_eq!(
        String::from_utf8_lossy(&again),
        String::from_utf8_lossy(&encoded),
        "not canonical"
    );
    Ok(())
}

fn round_trip<M: Subject>(m: &M) -> Result<(), TestCaseError> {
    // A value holding NaN is not equal to itself; `json_keeps_the_binary` covers it.
    #[allow(clippy::eq_op)]
    let comparable = m == m;
    if comparable {
        let encoded = encode(m)?;
        prop_assert_eq!(
            &decode::<M>(&encoded)?,
            m,
            "round trip through {}",
            String::from_utf8_lossy(&encoded)
        );
    }
    Ok(())
}

fn binary_keeps_the_json<M: Subject>(m: &M) -> Result<(), TestCaseError> {
    let via_binary = M::decode(m.encode_to_vec().as_slice())
        .map_err(|e| TestCaseError::fail(format!("binary decode: {e}")))?;
    let actual = parse(&encode(&via_binary)?);
    let mut expected = parse(&encode(m)?);
    through_binary(&mut expected, &descriptor::<M>());
    if let Err(at) = same(&expected, &actual, "") {
        return Err(TestCaseError::fail(format!(
            "after binary, the JSON differs at {at}\nexpected {expected}\n  actual {actual}"
        )));
    }
    Ok(())
}

fn json_keeps_the_binary<M: Subject>(m: &M) -> Result<(), TestCaseError> {
    let encoded = encode(m)?;
    let via_json: M = decode(&encoded)?;
    let descriptor = descriptor::<M>();
    prop_assert_eq!(
        binary_meaning(&via_json.encode_to_vec(), &descriptor),
        binary_meaning(&m.encode_to_vec(), &descriptor),
        "the binary changed through {}",
        String::from_utf8_lossy(&encoded)
    );
    Ok(())
}

fn parse(encoded: &[u8]) -> Json {
    serde_json::from_slice(encoded)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(encoded)))
}

/// The message's descriptor, from the contract's or the fixture's descriptor set.
fn descriptor<M: prost::Name>() -> MessageDescriptor {
    static POOLS: OnceLock<Vec<DescriptorPool>> = OnceLock::new();
    let pools = POOLS.get_or_init(|| {
        [
            keyway::DESCRIPTOR_SET,
            keyway_conformance::kitchen_sink::FILE_DESCRIPTOR_SET,
        ]
        .into_iter()
        .map(|set| DescriptorPool::decode(set).expect("descriptor set"))
        .collect()
    });
    let name = M::full_name();
    pools
        .iter()
        .find_map(|pool| pool.get_message_by_name(&name))
        .unwrap_or_else(|| panic!("{name} is in no descriptor set"))
}

fn is_negative_zero(v: &Json) -> bool {
    v.as_f64().is_some_and(|f| f == 0.0 && f.is_sign_negative())
}

/// Turns the JSON of a message into the JSON of what prost's binary form keeps of it: the
/// `-0.0`s it cannot carry become `0.0`, or go when the field is then at its default.
fn through_binary(json: &mut Json, message: &MessageDescriptor) {
    let Some(object) = json.as_object_mut() else {
        return;
    };
    for field in message.fields() {
        let Some(member) = object.get_mut(field.name()) else {
            continue;
        };
        let kind = field.kind();
        if field.is_map() {
            let Kind::Message(entry) = &kind else {
                unreachable!("a map field's kind is its entry")
            };
            let value = entry.map_entry_value_field().kind();
            for v in member
                .as_object_mut()
                .into_iter()
                .flat_map(|o| o.values_mut())
            {
                element_through_binary(v, &value, true);
            }
        } else if field.is_list() {
            for v in member.as_array_mut().into_iter().flatten() {
                element_through_binary(v, &kind, false);
            }
        } else if matches!(kind, Kind::Float | Kind::Double) {
            if !field.supports_presence() && is_negative_zero(member) {
                object.remove(field.name());
            }
        } else {
            element_through_binary(member, &kind, false);
        }
    }
}

/// One value of `kind`: a map value when `in_map` (where a float without presence loses its
/// sign), a list element, or a singular message.
fn element_through_binary(v: &mut Json, kind: &Kind, in_map: bool) {
    match kind {
        Kind::Float | Kind::Double if in_map && is_negative_zero(v) => *v = Json::from(0.0),
        // The wrappers' JSON is their value.
        Kind::Message(m)
            if m.package_name() == "google.protobuf"
                && matches!(m.name(), "FloatValue" | "DoubleValue")
                && is_negative_zero(v) =>
        {
            *v = Json::from(0.0)
        }
        // The other well-known types hold no float without presence (`Value`'s number is a
        // oneof member) or are opaque bytes (`Any`).
        Kind::Message(m) if m.package_name() == "google.protobuf" => {}
        Kind::Message(m) => through_binary(v, m),
        _ => {}
    }
}

/// Equal JSON trees, numbers compared bit for bit as doubles when either is not an integer
/// (so `-0.0` is not `0`); `Err` names the first difference.
fn same(expected: &Json, actual: &Json, at: &str) -> Result<(), String> {
    match (expected, actual) {
        (Json::Object(e), Json::Object(a)) => {
            for (key, value) in e {
                let path = format!("{at}.{key}");
                match a.get(key) {
                    Some(other) => same(value, other, &path)?,
                    None => return Err(format!("{path} (missing)")),
                }
            }
            match a.keys().find(|key| !e.contains_key(*key)) {
                Some(extra) => Err(format!("{at}.{extra} (unexpected)")),
                None => Ok(()),
            }
        }
        (Json::Array(e), Json::Array(a)) if e.len() == a.len() => e
            .iter()
            .zip(a)
            .enumerate()
            .try_for_each(|(i, (e, a))| same(e, a, &format!("{at}[{i}]"))),
        (Json::Number(e), Json::Number(a)) if e.is_f64() || a.is_f64() => {
            let bits = |n: &serde_json::Number| n.as_f64().map(f64::to_bits);
            if bits(e) == bits(a) {
                Ok(())
            } else {
                Err(format!("{at}: {e} vs {a}"))
            }
        }
        (e, a) if e == a => Ok(()),
        (e, a) => Err(format!("{at}: {e} vs {a}")),
    }
}

/// The binary encoding of a message read with its descriptor and written out field by field:
/// the same text for two encodings exactly when they hold the same fields, whatever order
/// their map entries came in. Floats are written as bits.
fn binary_meaning(bytes: &[u8], message: &MessageDescriptor) -> String {
    let decoded = DynamicMessage::decode(message.clone(), bytes)
        .unwrap_or_else(|e| panic!("{} does not read its own binary: {e}", message.full_name()));
    let mut out = String::new();
    describe_message(&decoded, &mut out);
    out
}

fn describe_message(message: &DynamicMessage, out: &mut String) {
    let mut fields: Vec<_> = message.fields().collect();
    fields.sort_by_key(|(field, _)| field.number());
    out.push('{');
    for (field, value) in fields {
        write!(out, "{}:", field.name()).unwrap();
        describe(value, out);
        out.push(';');
    }
    for unknown in message.unknown_fields() {
        write!(out, "unknown {unknown:?};").unwrap();
    }
    out.push('}');
}

fn describe(value: &prost_reflect::Value, out: &mut String) {
    use prost_reflect::Value;
    match value {
        Value::F32(f) => write!(out, "f32:{:#010x}", f.to_bits()).unwrap(),
        Value::F64(f) => write!(out, "f64:{:#018x}", f.to_bits()).unwrap(),
        Value::Message(m) => describe_message(m, out),
        Value::List(items) => {
            out.push('[');
            for item in items {
                describe(item, out);
                out.push(',');
            }
            out.push(']');
        }
        Value::Map(entries) => {
            let mut entries: Vec<(String, String)> = entries
                .iter()
                .map(|(key, value)| {
                    let mut described = String::new();
                    describe(value, &mut described);
                    (format!("{key:?}"), described)
                })
                .collect();
            entries.sort();
            out.push('{');
            for (key, value) in entries {
                write!(out, "{key}=>{value},").unwrap();
            }
            out.push('}');
        }
        other => write!(out, "{other:?}").unwrap(),
    }
}

macro_rules! properties {
    ($($name:ident: $ty:ty),* $(,)?) => {$(
        mod $name {
            use super::*;

            proptest! {
                #![proptest_config(config())]

                #[test]
                fn canonical(m in any::<$ty>()) {
                    super::canonical(&m)?;
                }

                #[test]
                fn round_trip(m in any::<$ty>()) {
                    super::round_trip(&m)?;
                }

                #[test]
                fn binary_keeps_the_json(m in any::<$ty>()) {
                    super::binary_keeps_the_json(&m)?;
                }

                #[test]
                fn json_keeps_the_binary(m in any::<$ty>()) {
                    super::json_keeps_the_binary(&m)?;
                }
            }
        }
    )*};
}

properties!(
    merge_request: keyway::runway::messagequeue::MergeRequest,
    merge_result: keyway::runway::messagequeue::MergeResult,
    merge_step: keyway::runway::messagequeue::MergeStep,
    step_result: keyway::runway::messagequeue::StepResult,
    change: keyway::base::change::Change,
    kitchen_sink: KitchenSink,
    nested: Nested,
    nothing: Nothing,
);
