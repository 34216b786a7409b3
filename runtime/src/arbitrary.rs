//! proptest strategies that reach the edges of the protobuf-JSON mapping, used by the
//! `Arbitrary` impls the generator emits with `Builder::arbitrary(true)` (feature `proptest`).
//!
//! - strings: empty, long, U+2028/U+2029, emoji, control characters, quotes and backslashes;
//! - integers: zero, both extremes, and anything in between;
//! - floats and doubles: NaN (canonical), ±infinity, ±0, ±the largest finite value, ±the
//!   smallest normal value, subnormals (the smallest and largest of them included), anything;
//! - enums: every declared number, and numbers nobody declared (proto3 enums are open);
//! - well-known types: anywhere in their documented range, the limits included;
//! - `Any`: empty, or packing a well-known type (one level of `Any` in `Any` included) with
//!   its `type.googleapis.com/…` URL and its binary encoding. Only well-known types, which the
//!   JSON codec's `Any` registry always knows: packing a message of the caller's would need
//!   [`register`](crate::json::register), without which encoding fails;
//! - lists, maps, `Struct`, `ListValue` and `FieldMask` paths: from empty up to
//!   [`max_len`] entries, 4 unless the environment variable `KEYWAY_PROPTEST_MAX_LEN` says
//!   otherwise (read once per process). Raise it for a long run; the size of a random message
//!   grows about as `max_len` to the power of its nesting depth.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;

use crate::wkt::{value::Kind, Any, Duration, FieldMask, ListValue, Struct, Timestamp, Value};

/// The most entries a list, map, `Struct`, `ListValue` or `FieldMask` gets:
/// `KEYWAY_PROPTEST_MAX_LEN`, or 4 when it is unset.
///
/// # Panics
///
/// When `KEYWAY_PROPTEST_MAX_LEN` is set but is not a number: a long run that silently ran
/// with the default would claim more than it checked.
pub fn max_len() -> usize {
    static MAX_LEN: OnceLock<usize> = OnceLock::new();
    *MAX_LEN.get_or_init(|| match std::env::var("KEYWAY_PROPTEST_MAX_LEN") {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("KEYWAY_PROPTEST_MAX_LEN={v:?} is not a number")),
        Err(_) => 4,
    })
}

/// `0..=max_len()`, as a collection size.
fn sizes() -> proptest::collection::SizeRange {
    (0..=max_len()).into()
}

/// Characters that stress JSON escaping and UTF-8 handling.
const SPECIALS: &[&str] = &[
    "\u{2028}", "\u{2029}", "😀", "\u{1}", "\u{1f}", "\u{7f}", "\"", "\\", "\n", "\t", "é", "中",
    "/",
];

/// Strings: empty, printable, specials, long.
pub fn string() -> BoxedStrategy<String> {
    prop_oneof![
        2 => Just(String::new()),
        4 => "\\PC{0,12}",
        3 => proptest::collection::vec(proptest::sample::select(SPECIALS), 1..6).prop_map(|v| v.concat()),
        1 => "[a-z]{200,400}",
    ]
    .boxed()
}

/// Bytes: empty or up to 32 arbitrary bytes.
pub fn bytes() -> BoxedStrategy<Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..32).boxed()
}

macro_rules! integers {
    ($($name:ident: $ty:ty),*) => {$(
        /// Zero, the extremes, or any value.
        pub fn $name() -> BoxedStrategy<$ty> {
            prop_oneof![
                1 => Just(0 as $ty),
                1 => Just(<$ty>::MIN),
                1 => Just(<$ty>::MAX),
                5 => any::<$ty>(),
            ]
            .boxed()
        }
    )*};
}

integers!(int32: i32, int64: i64, uint32: u32, uint64: u64);

/// Booleans.
pub fn boolean() -> BoxedStrategy<bool> {
    any::<bool>().boxed()
}

/// Doubles that sit on an edge of the format, each as likely as any other.
const DOUBLE_EDGES: &[f64] = &[
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    0.0,
    -0.0,
    f64::MAX,
    f64::MIN,
    f64::MIN_POSITIVE,
    -f64::MIN_POSITIVE,
    // The smallest and the largest subnormal, both signs.
    f64::from_bits(1),
    -f64::from_bits(1),
    f64::from_bits(0x000f_ffff_ffff_ffff),
    -f64::from_bits(0x000f_ffff_ffff_ffff),
];

/// Floats that sit on an edge of the format, each as likely as any other.
const FLOAT_EDGES: &[f32] = &[
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    0.0,
    -0.0,
    f32::MAX,
    f32::MIN,
    f32::MIN_POSITIVE,
    -f32::MIN_POSITIVE,
    f32::from_bits(1),
    -f32::from_bits(1),
    f32::from_bits(0x007f_ffff),
    -f32::from_bits(0x007f_ffff),
];

/// Doubles: an edge (about a third of the time), a subnormal of either sign, or any double.
/// NaN is always the canonical `f64::NAN`.
pub fn double() -> BoxedStrategy<f64> {
    use proptest::num::f64 as class;
    prop_oneof![
        4 => proptest::sample::select(DOUBLE_EDGES),
        1 => class::POSITIVE | class::NEGATIVE | class::SUBNORMAL,
        7 => any::<f64>().prop_map(|v| if v.is_nan() { f64::NAN } else { v }),
    ]
    .boxed()
}

/// Floats: an edge (about a third of the time), a subnormal of either sign, or any float.
/// NaN is always the canonical `f32::NAN`.
pub fn float() -> BoxedStrategy<f32> {
    use proptest::num::f32 as class;
    prop_oneof![
        4 => proptest::sample::select(FLOAT_EDGES),
        1 => class::POSITIVE | class::NEGATIVE | class::SUBNORMAL,
        7 => any::<f32>().prop_map(|v| if v.is_nan() { f32::NAN } else { v }),
    ]
    .boxed()
}

/// An enum field: a declared number, or one nobody declared.
pub fn enumeration(declared: &'static [i32]) -> BoxedStrategy<i32> {
    prop_oneof![
        6 => proptest::sample::select(declared),
        1 => any::<i32>(),
    ]
    .boxed()
}

/// Up to [`max_len`] elements.
pub fn list<T: std::fmt::Debug + 'static>(element: BoxedStrategy<T>) -> BoxedStrategy<Vec<T>> {
    proptest::collection::vec(element, sizes()).boxed()
}

/// Up to [`max_len`] entries.
pub fn map<K, V, M>(key: BoxedStrategy<K>, value: BoxedStrategy<V>) -> BoxedStrategy<M>
where
    K: Ord + std::fmt::Debug + 'static,
    V: std::fmt::Debug + 'static,
    M: FromIterator<(K, V)> + std::fmt::Debug + 'static,
{
    proptest::collection::btree_map(key, value, sizes())
        .prop_map(|m: BTreeMap<K, V>| m.into_iter().collect())
        .boxed()
}

/// One of `options`, picked evenly.
pub fn one_of<T: std::fmt::Debug + 'static>(options: Vec<BoxedStrategy<T>>) -> BoxedStrategy<T> {
    proptest::strategy::Union::new(options).boxed()
}

/// Present or absent.
pub fn optional<T: std::fmt::Debug + 'static>(inner: BoxedStrategy<T>) -> BoxedStrategy<Option<T>> {
    proptest::option::of(inner).boxed()
}

/// Timestamps from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
pub fn timestamp() -> BoxedStrategy<Timestamp> {
    prop_oneof![
        1 => Just(Timestamp { seconds: -62_135_596_800, nanos: 0 }),
        1 => Just(Timestamp { seconds: 253_402_300_799, nanos: 999_999_999 }),
        6 => (-62_135_596_800i64..=253_402_300_799, prop_oneof![Just(0), Just(1_000_000), 0..1_000_000_000i32])
            .prop_map(|(seconds, nanos)| Timestamp { seconds, nanos }),
    ]
    .boxed()
}

/// Durations within ±315,576,000,000 s, signs agreeing.
pub fn duration() -> BoxedStrategy<Duration> {
    (
        0i64..=315_576_000_000,
        prop_oneof![Just(0), Just(500_000_000), 0..1_000_000_000i32],
        any::<bool>(),
    )
        .prop_map(|(s, n, negative)| {
            if negative {
                Duration {
                    seconds: -s,
                    nanos: -n,
                }
            } else {
                Duration {
                    seconds: s,
                    nanos: n,
                }
            }
        })
        .boxed()
}

/// Field masks whose paths survive the lowerCamelCase round trip.
pub fn field_mask() -> BoxedStrategy<FieldMask> {
    proptest::collection::vec(
        "[a-z]{1,5}(_[a-z]{1,5}){0,2}(\\.[a-z]{1,5}(_[a-z]{1,5}){0,1}){0,2}",
        sizes(),
    )
    .prop_map(|paths| FieldMask { paths })
    .boxed()
}

/// JSON values (no NaN or infinity, which `Value` cannot hold), nested a few levels.
pub fn value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Kind::NullValue(0)),
        any::<bool>().prop_map(Kind::BoolValue),
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(Kind::NumberValue),
        string().prop_map(Kind::StringValue),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone().prop_map(|k| Value { kind: Some(k) }), sizes())
                .prop_map(|values| Kind::ListValue(ListValue { values })),
            proptest::collection::btree_map(
                string(),
                inner.prop_map(|k| Value { kind: Some(k) }),
                sizes()
            )
            .prop_map(|fields| Kind::StructValue(Struct { fields })),
        ]
    })
    .prop_map(|k| Value { kind: Some(k) })
    .boxed()
}

/// JSON objects.
pub fn structure() -> BoxedStrategy<Struct> {
    proptest::collection::btree_map(string(), value(), sizes())
        .prop_map(|fields| Struct { fields })
        .boxed()
}

/// JSON arrays.
pub fn list_value() -> BoxedStrategy<ListValue> {
    proptest::collection::vec(value(), sizes())
        .prop_map(|values| ListValue { values })
        .boxed()
}

/// `value` packed under the type URL of well-known type `google.protobuf.<name>`.
fn pack<M>(name: &'static str, value: BoxedStrategy<M>) -> BoxedStrategy<Any>
where
    M: prost::Message + std::fmt::Debug + 'static,
{
    value
        .prop_map(move |m| Any {
            type_url: format!("type.googleapis.com/google.protobuf.{name}"),
            value: m.encode_to_vec(),
        })
        .boxed()
}

/// Every well-known type except `Any` itself, packed.
fn packed_well_known() -> BoxedStrategy<Any> {
    one_of(vec![
        pack("Timestamp", timestamp()),
        pack("Duration", duration()),
        pack("FieldMask", field_mask()),
        pack("Struct", structure()),
        pack("Value", value()),
        pack("ListValue", list_value()),
        pack("Empty", empty()),
        pack("BoolValue", boolean()),
        pack("Int32Value", int32()),
        pack("UInt32Value", uint32()),
        pack("Int64Value", int64()),
        pack("UInt64Value", uint64()),
        pack("FloatValue", float()),
        pack("DoubleValue", double()),
        pack("StringValue", string()),
        pack("BytesValue", bytes()),
    ])
}

/// `Any`: empty (a fifth of the time), a packed well-known type, or an `Any` packing one.
pub fn any_message() -> BoxedStrategy<Any> {
    prop_oneof![
        2 => Just(Any::default()),
        7 => packed_well_known(),
        1 => pack("Any", packed_well_known()),
    ]
    .boxed()
}

/// `Empty`, held by prost as `()`.
pub fn empty() -> BoxedStrategy<()> {
    Just(()).boxed()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    use super::*;

    fn samples<T: std::fmt::Debug>(strategy: BoxedStrategy<T>, n: usize) -> Vec<T> {
        let mut runner = TestRunner::deterministic();
        (0..n)
            .map(|_| strategy.new_tree(&mut runner).unwrap().current())
            .collect()
    }

    #[test]
    fn floats_reach_every_edge_and_other_subnormals() {
        let seen = samples(float(), 3000);
        for edge in FLOAT_EDGES {
            assert!(
                seen.iter().any(|v| v.to_bits() == edge.to_bits()),
                "{edge:e} never drawn"
            );
        }
        let other_subnormals = |negative: bool| {
            seen.iter().any(|v| {
                v.is_subnormal()
                    && v.is_sign_negative() == negative
                    && !FLOAT_EDGES.iter().any(|e| e.to_bits() == v.to_bits())
            })
        };
        assert!(other_subnormals(false) && other_subnormals(true));
        assert!(seen
            .iter()
            .all(|v| !v.is_nan() || v.to_bits() == f32::NAN.to_bits()));
    }

    #[test]
    fn doubles_reach_every_edge_and_other_subnormals() {
        let seen = samples(double(), 3000);
        for edge in DOUBLE_EDGES {
            assert!(
                seen.iter().any(|v| v.to_bits() == edge.to_bits()),
                "{edge:e} never drawn"
            );
        }
        let other_subnormals = |negative: bool| {
            seen.iter().any(|v| {
                v.is_subnormal()
                    && v.is_sign_negative() == negative
                    && !DOUBLE_EDGES.iter().any(|e| e.to_bits() == v.to_bits())
            })
        };
        assert!(other_subnormals(false) && other_subnormals(true));
        assert!(seen
            .iter()
            .all(|v| !v.is_nan() || v.to_bits() == f64::NAN.to_bits()));
    }

    #[test]
    fn any_packs_every_well_known_type_that_json_reads_back() {
        let seen = samples(any_message(), 2000);
        let urls: BTreeSet<&str> = seen.iter().map(|a| a.type_url.as_str()).collect();
        let mut expected: BTreeSet<String> = [
            "Timestamp",
            "Duration",
            "FieldMask",
            "Struct",
            "Value",
            "ListValue",
            "Empty",
            "BoolValue",
            "Int32Value",
            "UInt32Value",
            "Int64Value",
            "UInt64Value",
            "FloatValue",
            "DoubleValue",
            "StringValue",
            "BytesValue",
            "Any",
        ]
        .iter()
        .map(|name| format!("type.googleapis.com/google.protobuf.{name}"))
        .collect();
        expected.insert(String::new());
        assert_eq!(urls, expected.iter().map(String::as_str).collect());
        assert!(seen
            .iter()
            .any(|a| a.type_url.ends_with(".Any") && !a.value.is_empty()));
        for any in &seen {
            let encoded =
                crate::json::to_vec(any).unwrap_or_else(|e| panic!("{any:?} does not encode: {e}"));
            let decoded: Any = crate::json::from_slice(&encoded).unwrap_or_else(|e| {
                panic!("{} does not decode: {e}", String::from_utf8_lossy(&encoded))
            });
            assert_eq!(&decoded, any, "{}", String::from_utf8_lossy(&encoded));
        }
    }

    #[test]
    fn collections_run_from_empty_to_max_len() {
        let lengths: BTreeSet<usize> = samples(list(boolean()), 500).iter().map(Vec::len).collect();
        assert_eq!(lengths, (0..=max_len()).collect());
        let sizes: BTreeSet<usize> =
            samples(map::<_, _, BTreeMap<u32, bool>>(uint32(), boolean()), 500)
                .iter()
                .map(BTreeMap::len)
                .collect();
        assert_eq!(sizes, (0..=max_len()).collect());
    }
}
