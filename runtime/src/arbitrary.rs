//! proptest strategies that reach the edges of the protobuf-JSON mapping, used by the
//! `Arbitrary` impls the generator emits with `Builder::arbitrary(true)` (feature `proptest`).
//!
//! - strings: empty, long, U+2028/U+2029, emoji, control characters, quotes and backslashes;
//! - integers: zero, both extremes, and anything in between;
//! - floats: NaN (canonical), ±infinity, ±0, extremes, anything finite;
//! - enums: every declared number, and numbers nobody declared (proto3 enums are open);
//! - well-known types: anywhere in their documented range, the limits included.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::strategy::BoxedStrategy;

use crate::wkt::{value::Kind, Duration, FieldMask, ListValue, Struct, Timestamp, Value};

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

/// Doubles, with the special values; NaN is always the canonical `f64::NAN`.
pub fn double() -> BoxedStrategy<f64> {
    prop_oneof![
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(-0.0),
        1 => Just(f64::MAX),
        1 => Just(f64::MIN_POSITIVE),
        6 => any::<f64>().prop_map(|v| if v.is_nan() { f64::NAN } else { v }),
    ]
    .boxed()
}

/// Floats, with the special values; NaN is always the canonical `f32::NAN`.
pub fn float() -> BoxedStrategy<f32> {
    prop_oneof![
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => Just(f32::MAX),
        6 => any::<f32>().prop_map(|v| if v.is_nan() { f32::NAN } else { v }),
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

/// Up to three elements (none when `depth` is exhausted and elements are messages).
pub fn list<T: std::fmt::Debug + 'static>(element: BoxedStrategy<T>) -> BoxedStrategy<Vec<T>> {
    proptest::collection::vec(element, 0..4).boxed()
}

/// Up to three entries.
pub fn map<K, V, M>(key: BoxedStrategy<K>, value: BoxedStrategy<V>) -> BoxedStrategy<M>
where
    K: Ord + std::fmt::Debug + 'static,
    V: std::fmt::Debug + 'static,
    M: FromIterator<(K, V)> + std::fmt::Debug + 'static,
{
    proptest::collection::btree_map(key, value, 0..4)
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
        0..3,
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
            proptest::collection::vec(inner.clone().prop_map(|k| Value { kind: Some(k) }), 0..4)
                .prop_map(|values| Kind::ListValue(ListValue { values })),
            proptest::collection::btree_map(
                string(),
                inner.prop_map(|k| Value { kind: Some(k) }),
                0..4
            )
            .prop_map(|fields| Kind::StructValue(Struct { fields })),
        ]
    })
    .prop_map(|k| Value { kind: Some(k) })
    .boxed()
}

/// JSON objects.
pub fn structure() -> BoxedStrategy<Struct> {
    proptest::collection::btree_map(string(), value(), 0..4)
        .prop_map(|fields| Struct { fields })
        .boxed()
}

/// JSON arrays.
pub fn list_value() -> BoxedStrategy<ListValue> {
    proptest::collection::vec(value(), 0..4)
        .prop_map(|values| ListValue { values })
        .boxed()
}

/// `Any` is left empty: packing needs a registry, which properties set up themselves.
pub fn any_message() -> BoxedStrategy<crate::wkt::Any> {
    Just(crate::wkt::Any::default()).boxed()
}

/// `Empty`, held by prost as `()`.
pub fn empty() -> BoxedStrategy<()> {
    Just(()).boxed()
}
