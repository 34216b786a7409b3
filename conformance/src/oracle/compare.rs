//! Whether two protobuf-JSON documents of one message mean the same, judged by the message's
//! descriptor: each value is compared as its field's type reads it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Number, Value};

/// Every message the oracles load: the contract's descriptor set and the kitchen-sink
/// fixture's.
pub fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut pool = DescriptorPool::decode(keyway::DESCRIPTOR_SET)
            .expect("the contract's descriptor set decodes");
        pool.decode_file_descriptor_set(crate::kitchen_sink::FILE_DESCRIPTOR_SET)
            .expect("the kitchen-sink descriptor set decodes");
        pool
    })
}

/// Whether `a` and `b`, protobuf JSON of the message `type_name` (a full name from
/// [`pool`]), mean the same message. The error names the path of the first difference, such
/// as `.f_nested.a: 1 vs 2` or `.m_double["x"]: 0.1 vs absent`.
///
/// - A field is written under its proto name or its JSON name; a key on one side only is a
///   field present on one side only, a difference.
/// - `float` fields and `FloatValue`: the same `f32` (one side may write double precision).
/// - `double` fields, `DoubleValue` and the numbers of `Struct`, `ListValue` and `Value`: the
///   same `f64`. Numbers compare by value: `-0` equals `0`, and `"NaN"` equals `"NaN"`.
/// - Integer fields of every width: the same integer, whether written as a number or as a
///   string.
/// - Strings, bytes, bools, enums, `Timestamp`, `Duration` and `FieldMask`: the same JSON.
/// - Lists element by element; maps key by key, values by the map's value type; messages field
///   by field; wrappers by the wrapped type.
/// - `Any`: the same `@type`, then the rest as that type (its `value` for a well-known type
///   written in a special form).
pub fn same_json(type_name: &str, a: &Value, b: &Value) -> Result<(), String> {
    let message = pool()
        .get_message_by_name(type_name)
        .ok_or_else(|| format!("{type_name} is not a message of the oracles' descriptor sets"))?;
    self::message(&message, a, b, &At::Root)
}

/// Where in the document: rendered only for the error.
enum At<'a> {
    Root,
    Field(&'a At<'a>, &'a str),
    Index(&'a At<'a>, usize),
    Key(&'a At<'a>, &'a str),
}

impl At<'_> {
    fn field<'a>(&'a self, name: &'a str) -> At<'a> {
        At::Field(self, name)
    }
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            At::Root => Ok(()),
            At::Field(parent, name) => write!(f, "{parent}.{name}"),
            At::Index(parent, i) => write!(f, "{parent}[{i}]"),
            At::Key(parent, key) => write!(f, "{parent}[{key:?}]"),
        }
    }
}

fn differ(at: &At<'_>, a: Option<&Value>, b: Option<&Value>) -> String {
    let show = |v: Option<&Value>| v.map_or_else(|| "absent".to_owned(), Value::to_string);
    let mut path = at.to_string();
    if path.is_empty() {
        path.push_str("(the document)");
    }
    format!("{path}: {} vs {}", show(a), show(b))
}

fn exact(a: &Value, b: &Value, at: &At<'_>) -> Result<(), String> {
    if a == b {
        Ok(())
    } else {
        Err(differ(at, Some(a), Some(b)))
    }
}

/// A value present on both sides or on neither, or else a difference.
fn both<'v, F>(
    at: &At<'_>,
    a: Option<&'v Value>,
    b: Option<&'v Value>,
    same: F,
) -> Result<(), String>
where
    F: FnOnce(&'v Value, &'v Value) -> Result<(), String>,
{
    match (a, b) {
        (Some(a), Some(b)) => same(a, b),
        (None, None) => Ok(()),
        _ => Err(differ(at, a, b)),
    }
}

fn message(desc: &MessageDescriptor, a: &Value, b: &Value, at: &At<'_>) -> Result<(), String> {
    if let Some(form) = own_form(desc.full_name()) {
        return in_form(form, a, b, at);
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => fields(desc, x, y, None, at),
        _ => exact(a, b, at),
    }
}

/// The keys of an object, sorted into fields (by number) and keys that name no field.
struct Fields<'v> {
    known: BTreeMap<u32, &'v Value>,
    unknown: BTreeMap<&'v str, &'v Value>,
}

fn sort_keys<'v>(
    desc: &MessageDescriptor,
    object: &'v Map<String, Value>,
    skip: Option<&str>,
    at: &At<'_>,
) -> Result<Fields<'v>, String> {
    let mut sorted = Fields {
        known: BTreeMap::new(),
        unknown: BTreeMap::new(),
    };
    for (key, value) in object {
        if Some(key.as_str()) == skip {
            continue;
        }
        let field = desc
            .get_field_by_name(key)
            .or_else(|| desc.get_field_by_json_name(key));
        match field {
            Some(field) => {
                if sorted.known.insert(field.number(), value).is_some() {
                    return Err(format!(
                        "{}: written under both of its names",
                        At::Field(at, field.name())
                    ));
                }
            }
            None => {
                sorted.unknown.insert(key, value);
            }
        }
    }
    Ok(sorted)
}

/// The fields of two objects of `desc`, in declaration order, ignoring the key `skip`. Keys
/// that name no field compare as plain JSON.
fn fields(
    desc: &MessageDescriptor,
    x: &Map<String, Value>,
    y: &Map<String, Value>,
    skip: Option<&str>,
    at: &At<'_>,
) -> Result<(), String> {
    let (x, y) = (sort_keys(desc, x, skip, at)?, sort_keys(desc, y, skip, at)?);
    for field in desc.fields() {
        let here = at.field(field.name());
        let (p, q) = (x.known.get(&field.number()), y.known.get(&field.number()));
        both(&here, p.copied(), q.copied(), |p, q| {
            value(&field, p, q, &here)
        })?;
    }
    let keys: BTreeSet<&str> = x.unknown.keys().chain(y.unknown.keys()).copied().collect();
    for key in keys {
        let here = at.field(key);
        let (p, q) = (x.unknown.get(key), y.unknown.get(key));
        both(&here, p.copied(), q.copied(), |p, q| {
            json_value(p, q, &here)
        })?;
    }
    Ok(())
}

/// A field's value: a list, a map or a single value.
fn value(field: &FieldDescriptor, a: &Value, b: &Value, at: &At<'_>) -> Result<(), String> {
    if field.is_map() {
        let entry = field.kind();
        let entry = entry
            .as_message()
            .expect("a map field's type is its entry message");
        let value_kind = entry.map_entry_value_field().kind();
        let (Value::Object(x), Value::Object(y)) = (a, b) else {
            return exact(a, b, at);
        };
        let keys: BTreeSet<&str> = x.keys().chain(y.keys()).map(String::as_str).collect();
        for key in keys {
            let here = At::Key(at, key);
            both(&here, x.get(key), y.get(key), |p, q| {
                single(&value_kind, p, q, &here)
            })?;
        }
        Ok(())
    } else if field.is_list() {
        let (Value::Array(x), Value::Array(y)) = (a, b) else {
            return exact(a, b, at);
        };
        list(x, y, at, |p, q, here| single(&field.kind(), p, q, here))
    } else {
        single(&field.kind(), a, b, at)
    }
}

/// Two lists element by element; a longer list differs at its first extra element.
fn list<F>(x: &[Value], y: &[Value], at: &At<'_>, same: F) -> Result<(), String>
where
    F: Fn(&Value, &Value, &At<'_>) -> Result<(), String>,
{
    for i in 0..x.len().max(y.len()) {
        let here = At::Index(at, i);
        both(&here, x.get(i), y.get(i), |p, q| same(p, q, &here))?;
    }
    Ok(())
}

/// One value of a field's type.
fn single(kind: &Kind, a: &Value, b: &Value, at: &At<'_>) -> Result<(), String> {
    match kind {
        Kind::Double => numbers(a, b, at, |p, q| p == q),
        Kind::Float => numbers(a, b, at, |p, q| p as f32 == q as f32),
        Kind::Int32
        | Kind::Sint32
        | Kind::Sfixed32
        | Kind::Int64
        | Kind::Sint64
        | Kind::Sfixed64
        | Kind::Uint32
        | Kind::Fixed32
        | Kind::Uint64
        | Kind::Fixed64 => match (integer(a), integer(b)) {
            (Some(p), Some(q)) if p == q => Ok(()),
            (None, None) => exact(a, b, at),
            _ => Err(differ(at, Some(a), Some(b))),
        },
        Kind::Bool | Kind::String | Kind::Bytes | Kind::Enum(_) => exact(a, b, at),
        Kind::Message(desc) => message(desc, a, b, at),
    }
}

/// Two numbers of a floating-point field, `equal` by value (NaN equals NaN). Values that are
/// not numbers compare as JSON.
fn numbers<F>(a: &Value, b: &Value, at: &At<'_>, equal: F) -> Result<(), String>
where
    F: Fn(f64, f64) -> bool,
{
    match (floating(a), floating(b)) {
        (Some(p), Some(q)) if (p.is_nan() && q.is_nan()) || equal(p, q) => Ok(()),
        (None, None) => exact(a, b, at),
        _ => Err(differ(at, Some(a), Some(b))),
    }
}

/// A floating-point value as written: a number, `"NaN"`, `"Infinity"`, `"-Infinity"`, or a
/// number in a string.
fn floating(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            s => s.parse::<Number>().ok()?.as_f64(),
        },
        _ => None,
    }
}

/// An integer value as written: a number (in any integral form, `1e3` included) or a number in
/// a string.
fn integer(v: &Value) -> Option<i128> {
    let n = match v {
        Value::Number(n) => n.clone(),
        Value::String(s) => s.parse::<Number>().ok()?,
        _ => return None,
    };
    if let Some(i) = n.as_i64() {
        return Some(i.into());
    }
    if let Some(u) = n.as_u64() {
        return Some(u.into());
    }
    let f = n.as_f64()?;
    // Integral doubles of this size are exact in an i128.
    (f.fract() == 0.0 && f.abs() < 1e38).then_some(f as i128)
}

/// JSON as `google.protobuf.Value` reads it: numbers are doubles, compared by value.
fn json_value(a: &Value, b: &Value, at: &At<'_>) -> Result<(), String> {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => numbers(a, b, at, |p, q| p == q),
        (Value::Object(x), Value::Object(y)) => object(x, y, at),
        (Value::Array(x), Value::Array(y)) => list(x, y, at, json_value),
        _ => exact(a, b, at),
    }
}

/// `google.protobuf.Struct`: keys and their `Value`s.
fn object(x: &Map<String, Value>, y: &Map<String, Value>, at: &At<'_>) -> Result<(), String> {
    let keys: BTreeSet<&str> = x.keys().chain(y.keys()).map(String::as_str).collect();
    for key in keys {
        let here = At::Key(at, key);
        both(&here, x.get(key), y.get(key), |p, q| {
            json_value(p, q, &here)
        })?;
    }
    Ok(())
}

/// How a well-known type with a JSON form of its own is written.
enum Form {
    /// A string compared as written: `Timestamp`, `Duration`, `FieldMask`.
    Exact,
    /// `Value`: any JSON.
    Value,
    /// `Struct`: an object of `Value`s.
    Struct,
    /// `ListValue`: an array of `Value`s.
    List,
    /// `Any`.
    Any,
    /// A wrapper: the wrapped value.
    Wrapped(Kind),
}

/// The form of `full_name`; `None` for every other message (`Empty` included: it is written as
/// an object without fields).
fn own_form(full_name: &str) -> Option<Form> {
    Some(match full_name {
        "google.protobuf.Timestamp" | "google.protobuf.Duration" | "google.protobuf.FieldMask" => {
            Form::Exact
        }
        "google.protobuf.Value" => Form::Value,
        "google.protobuf.Struct" => Form::Struct,
        "google.protobuf.ListValue" => Form::List,
        "google.protobuf.Any" => Form::Any,
        "google.protobuf.DoubleValue" => Form::Wrapped(Kind::Double),
        "google.protobuf.FloatValue" => Form::Wrapped(Kind::Float),
        "google.protobuf.Int64Value" => Form::Wrapped(Kind::Int64),
        "google.protobuf.UInt64Value" => Form::Wrapped(Kind::Uint64),
        "google.protobuf.Int32Value" => Form::Wrapped(Kind::Int32),
        "google.protobuf.UInt32Value" => Form::Wrapped(Kind::Uint32),
        "google.protobuf.BoolValue" => Form::Wrapped(Kind::Bool),
        "google.protobuf.StringValue" => Form::Wrapped(Kind::String),
        "google.protobuf.BytesValue" => Form::Wrapped(Kind::Bytes),
        _ => return None,
    })
}

fn in_form(form: Form, a: &Value, b: &Value, at: &At<'_>) -> Result<(), String> {
    match (form, a, b) {
        (Form::Value, _, _) => json_value(a, b, at),
        (Form::Struct, Value::Object(x), Value::Object(y)) => object(x, y, at),
        (Form::List, Value::Array(x), Value::Array(y)) => list(x, y, at, json_value),
        (Form::Any, _, _) => any(a, b, at),
        (Form::Wrapped(kind), _, _) => single(&kind, a, b, at),
        _ => exact(a, b, at),
    }
}

/// `google.protobuf.Any`: `{"@type": "type.googleapis.com/<full name>", <fields>}`, or
/// `{"@type": .., "value": <its form>}` for a well-known type with a form of its own.
fn any(a: &Value, b: &Value, at: &At<'_>) -> Result<(), String> {
    let (Value::Object(x), Value::Object(y)) = (a, b) else {
        return exact(a, b, at);
    };
    let url_at = at.field("@type");
    let url = match (x.get("@type"), y.get("@type")) {
        (None, None) => return object(x, y, at),
        (Some(Value::String(p)), Some(Value::String(q))) if p == q => p,
        (p, q) => return Err(differ(&url_at, p, q)),
    };
    let name = url.rsplit_once('/').map_or(url.as_str(), |(_, name)| name);
    let Some(desc) = pool().get_message_by_name(name) else {
        return Err(format!(
            "{url_at}: {url} is not a type of the oracles' descriptor sets"
        ));
    };
    if own_form(desc.full_name()).is_some() {
        let here = at.field("value");
        both(&here, x.get("value"), y.get("value"), |p, q| {
            message(&desc, p, q, &here)
        })?;
        let rest = |m: &Map<String, Value>| -> Map<String, Value> {
            m.iter()
                .filter(|(k, _)| *k != "@type" && *k != "value")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        object(&rest(x), &rest(y), at)
    } else {
        fields(&desc, x, y, Some("@type"), at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SINK: &str = "keyway.fixtures.kitchen.KitchenSink";

    fn same(a: &str, b: &str) -> Result<(), String> {
        let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        same_json(SINK, &parse(a), &parse(b))
    }

    #[test]
    fn integers_compare_exactly() {
        assert_eq!(
            same(r#"{"f_int32":16777217}"#, r#"{"f_int32":16777216}"#).unwrap_err(),
            ".f_int32: 16777217 vs 16777216"
        );
        assert_eq!(
            same(r#"{"f_uint32":4294967295}"#, r#"{"f_uint32":4294967294}"#).unwrap_err(),
            ".f_uint32: 4294967295 vs 4294967294"
        );
        // 64-bit integers are strings, and readers take numbers too.
        same(
            r#"{"f_int64":"9007199254740993"}"#,
            r#"{"f_int64":9007199254740993}"#,
        )
        .unwrap();
        assert!(same(
            r#"{"f_int64":"9007199254740993"}"#,
            r#"{"f_int64":"9007199254740992"}"#
        )
        .is_err());
        same(
            r#"{"f_uint64":"18446744073709551615"}"#,
            r#"{"fUint64":"18446744073709551615"}"#,
        )
        .unwrap();
    }

    #[test]
    fn doubles_compare_as_doubles_and_floats_as_floats() {
        assert_eq!(
            same(r#"{"f_double":0.1}"#, r#"{"f_double":0.10000000149011612}"#).unwrap_err(),
            ".f_double: 0.1 vs 0.10000000149011612"
        );
        same(r#"{"f_float":0.1}"#, r#"{"f_float":0.10000000149011612}"#).unwrap();
        assert!(same(r#"{"f_float":0.1}"#, r#"{"f_float":0.1000001}"#).is_err());
        same(r#"{"f_double":100}"#, r#"{"f_double":1e2}"#).unwrap();
        same(r#"{"f_double":"NaN"}"#, r#"{"f_double":"NaN"}"#).unwrap();
        assert!(same(r#"{"f_double":"Infinity"}"#, r#"{"f_double":"-Infinity"}"#).is_err());
        same(
            r#"{"r_float":[0.1,1.5]}"#,
            r#"{"rFloat":[0.10000000149011612,1.5]}"#,
        )
        .unwrap();
        // Wrappers compare by the wrapped type.
        same(r#"{"w_float":0.1}"#, r#"{"w_float":0.10000000149011612}"#).unwrap();
        assert!(same(r#"{"w_double":0.1}"#, r#"{"w_double":0.10000000149011612}"#).is_err());
        assert!(same(r#"{"w_int32":16777217}"#, r#"{"w_int32":16777216}"#).is_err());
    }

    #[test]
    fn differences_name_their_path() {
        assert_eq!(
            same(
                r#"{"f_nested":{"corecursive":{"r_nested":[{"a":1},{"a":2}]}}}"#,
                r#"{"fNested":{"corecursive":{"rNested":[{"a":1},{"a":3}]}}}"#,
            )
            .unwrap_err(),
            ".f_nested.corecursive.r_nested[1].a: 2 vs 3"
        );
        assert_eq!(
            same(r#"{"f_int32":1,"f_bool":true}"#, r#"{"f_int32":1}"#).unwrap_err(),
            ".f_bool: true vs absent"
        );
        assert_eq!(
            same(r#"{"r_int32":[1,2]}"#, r#"{"r_int32":[1,2,3]}"#).unwrap_err(),
            ".r_int32[2]: absent vs 3"
        );
        assert_eq!(
            same(r#"{"f_int32":1,"fInt32":1}"#, r#"{"f_int32":1}"#).unwrap_err(),
            ".f_int32: written under both of its names"
        );
    }

    #[test]
    fn map_values_compare_by_the_value_type() {
        assert_eq!(
            same(
                r#"{"m_double":{"a":0.1}}"#,
                r#"{"m_double":{"a":0.10000000149011612}}"#
            )
            .unwrap_err(),
            r#".m_double["a"]: 0.1 vs 0.10000000149011612"#
        );
        assert_eq!(
            same(
                r#"{"m_int32":{"1":16777217}}"#,
                r#"{"m_int32":{"1":16777216}}"#
            )
            .unwrap_err(),
            r#".m_int32["1"]: 16777217 vs 16777216"#
        );
        same(r#"{"m_int64":{"-1":"5"}}"#, r#"{"mInt64":{"-1":5}}"#).unwrap();
        same(
            r#"{"m_nested":{"x":{"a":1}}}"#,
            r#"{"m_nested":{"x":{"a":1.0}}}"#,
        )
        .unwrap();
        assert_eq!(
            same(r#"{"m_string":{"x":"1"}}"#, r#"{"m_string":{"y":"1"}}"#).unwrap_err(),
            r#".m_string["x"]: "1" vs absent"#
        );
    }

    #[test]
    fn struct_and_value_numbers_are_doubles() {
        same(r#"{"w_value":1}"#, r#"{"w_value":1.0}"#).unwrap();
        assert!(same(r#"{"w_value":0.1}"#, r#"{"w_value":0.10000000149011612}"#).is_err());
        assert_eq!(
            same(
                r#"{"w_struct":{"k":[1,{"n":0.5}]}}"#,
                r#"{"w_struct":{"k":[1,{"n":0.25}]}}"#
            )
            .unwrap_err(),
            r#".w_struct["k"][1]["n"]: 0.5 vs 0.25"#
        );
        same(r#"{"m_value":{"x":null}}"#, r#"{"m_value":{"x":null}}"#).unwrap();
        assert!(same(r#"{"r_value":["1"]}"#, r#"{"r_value":[1]}"#).is_err());
    }

    #[test]
    fn any_compares_as_its_type() {
        let float =
            r#"{"w_any":{"@type":"type.googleapis.com/google.protobuf.FloatValue","value":0.1}}"#;
        same(float, &float.replace("0.1", "0.10000000149011612")).unwrap();
        let double = float.replace("FloatValue", "DoubleValue");
        assert_eq!(
            same(&double, &double.replace("0.1", "0.10000000149011612")).unwrap_err(),
            ".w_any.value: 0.1 vs 0.10000000149011612"
        );
        assert_eq!(
            same(&double, float).unwrap_err(),
            r#".w_any.@type: "type.googleapis.com/google.protobuf.DoubleValue" vs "type.googleapis.com/google.protobuf.FloatValue""#
        );
        let nested = r#"{"w_any":{"@type":"type.googleapis.com/keyway.fixtures.kitchen.KitchenSink","f_int32":16777217}}"#;
        assert_eq!(
            same(nested, &nested.replace("16777217", "16777216")).unwrap_err(),
            ".w_any.f_int32: 16777217 vs 16777216"
        );
        let inner = r#"{"w_any":{"@type":"type.googleapis.com/google.protobuf.Any","value":{"@type":"type.googleapis.com/google.protobuf.Int64Value","value":"1"}}}"#;
        same(inner, &inner.replace(r#""1""#, "1")).unwrap();
        let empty = r#"{"w_any":{"@type":"type.googleapis.com/google.protobuf.Empty"}}"#;
        same(empty, empty).unwrap();
        same(r#"{"w_any":{}}"#, r#"{"w_any":{}}"#).unwrap();
        same(r#"{"w_empty":{}}"#, r#"{"wEmpty":{}}"#).unwrap();
    }

    #[test]
    fn strings_enums_and_time_compare_exactly() {
        assert!(same(r#"{"f_mood":"HAPPY"}"#, r#"{"f_mood":1}"#).is_err());
        assert!(same(
            r#"{"w_timestamp":"1970-01-01T00:00:00Z"}"#,
            r#"{"w_timestamp":"1970-01-01T00:00:00.000Z"}"#
        )
        .is_err());
        same(r#"{"with_json_name":"x"}"#, r#"{"renamed":"x"}"#).unwrap();
        same(r#"{"c_null":null}"#, r#"{"cNull":null}"#).unwrap();
        assert!(same(r#"{"f_string":"a"}"#, r#"{"f_string":"b"}"#).is_err());
    }

    #[test]
    fn contract_messages_are_known() {
        let a = serde_json::json!({"id": "1"});
        same_json("keyway.runway.messagequeue.MergeRequest", &a, &a).unwrap();
        assert!(same_json("no.such.Message", &a, &a).is_err());
    }
}
