//! Every rule of the JSON mapping, on a fixture with every field shape
//! (`tests/fixtures/kitchen_sink.proto`), compiled by the generator users run; each codec option
//! both ways; and proto2 and proto3 on the protobuf-shaped test messages
//! (`conformance/proto/test_messages/`).

use keyway_conformance::kitchen_sink::keyway::fixtures::kitchen::{
    kitchen_sink::{Choice, Mood, Nested},
    KitchenSink, Level, Nothing,
};
use keyway_runtime::json::{self, from_str, to_string, DecodeErrorKind};
use keyway_runtime::wkt::{self, value::Kind};

fn ks(json: &str) -> KitchenSink {
    from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn enc(m: &KitchenSink) -> String {
    to_string(m).unwrap()
}

fn rejects(json: &str) -> String {
    match from_str::<KitchenSink>(json) {
        Ok(m) => panic!("{json} was accepted as {m:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn proto_names_are_written_and_both_names_read() {
    let m = KitchenSink {
        f_int32: 1,
        camel_case_name: 2,
        with_json_name: "x".into(),
        r#type: "t".into(),
        ..Default::default()
    };
    assert_eq!(
        enc(&m),
        r#"{"f_int32":1,"type":"t","camelCaseName":2,"with_json_name":"x"}"#
    );
    assert_eq!(
        ks(r#"{"fInt32":1,"type":"t","camelCaseName":2,"renamed":"x"}"#),
        m
    );
    assert_eq!(
        ks(r#"{"f_int32":1,"type":"t","camelCaseName":2,"with_json_name":"x"}"#),
        m
    );
    assert!(rejects(r#"{"with_json_name":"x","renamed":"y"}"#).contains("more than once"));
}

#[test]
fn defaults_are_omitted_but_presence_fields_are_written() {
    assert_eq!(enc(&KitchenSink::default()), "{}");
    let m = KitchenSink {
        o_int32: Some(0),
        o_string: Some(String::new()),
        o_mood: Some(0),
        f_nested: Some(Box::default()),
        w_int32: Some(0),
        w_string: Some(String::new()),
        w_empty: Some(()),
        ..Default::default()
    };
    assert_eq!(
        enc(&m),
        r#"{"f_nested":{},"o_int32":0,"o_string":"","o_mood":"MOOD_UNSPECIFIED","w_empty":{},"w_int32":0,"w_string":""}"#
    );
    assert_eq!(ks(&enc(&m)), m);
}

#[test]
fn null_reads_as_default_or_absent() {
    let every_field_null = r#"{"f_int32":null,"f_int64":null,"f_float":null,"f_bool":null,
        "f_string":null,"f_bytes":null,"f_nested":null,"f_mood":null,"o_int32":null,
        "o_nested":null,"r_int32":null,"r_nested":null,"m_int32":null,"m_nested":null,
        "w_timestamp":null,"w_int32":null,"w_empty":null,"c_uint32":null}"#;
    assert_eq!(ks(every_field_null), KitchenSink::default());
    // A null member of a oneof sets nothing, so another member may follow.
    assert_eq!(
        ks(r#"{"c_uint32":null,"c_string":"s"}"#).choice,
        Some(Choice::CString("s".into()))
    );
}

#[test]
fn null_is_a_value_for_value_and_null_value() {
    let m = ks(r#"{"w_value":null,"r_value":[null,1],"m_value":{"k":null},"c_null":null}"#);
    assert_eq!(m.w_value.as_ref().unwrap().kind, Some(Kind::NullValue(0)));
    assert_eq!(m.r_value[0].kind, Some(Kind::NullValue(0)));
    assert_eq!(m.m_value["k"].kind, Some(Kind::NullValue(0)));
    assert_eq!(m.choice, Some(Choice::CNull(0)));
    assert_eq!(
        enc(&m),
        r#"{"c_null":null,"w_value":null,"r_value":[null,1],"m_value":{"k":null}}"#
    );
}

#[test]
fn null_elements_and_map_values_are_rejected() {
    assert!(rejects(r#"{"r_int32":[1,null]}"#)
        .starts_with("r_int32[1]: expected a list element, found null"));
    assert!(rejects(r#"{"m_string":{"a":null}}"#)
        .starts_with(r#"m_string["a"]: expected a map value, found null"#));
    assert!(rejects(r#"{"r_wrapped_int32":[null]}"#).starts_with("r_wrapped_int32[0]"));
}

#[test]
fn enums_by_name_or_number_aliases_and_unknowns() {
    assert_eq!(ks(r#"{"f_mood":"GRUMPY"}"#).f_mood, Mood::Grumpy as i32);
    assert_eq!(ks(r#"{"f_mood":2}"#).f_mood, Mood::Grumpy as i32);
    assert_eq!(
        ks(r#"{"f_mood":"2"}"#).f_mood,
        0,
        "a string is a name, and \"2\" is no name"
    );
    // Aliases read; the first name of the number is written.
    let loud = ks(r#"{"f_level":"LOUD"}"#);
    assert_eq!(loud.f_level, Level::High as i32);
    assert_eq!(enc(&loud), r#"{"f_level":"HIGH"}"#);
    // Cross-package enum.
    assert_eq!(enc(&ks(r#"{"f_color":"GREEN"}"#)), r#"{"f_color":"GREEN"}"#);
    // Unknown names are ignored: the field keeps its default, elements and entries are dropped.
    let m = ks(
        r#"{"f_mood":"SLEEPY","o_mood":"SLEEPY","r_mood":["HAPPY","SLEEPY","GRUMPY"],"m_mood":{"a":"SLEEPY","b":"HAPPY"},"c_mood":"SLEEPY"}"#,
    );
    assert_eq!(m.f_mood, 0);
    assert_eq!(m.o_mood, None);
    assert_eq!(m.r_mood, vec![Mood::Happy as i32, Mood::Grumpy as i32]);
    assert_eq!(m.m_mood.len(), 1);
    assert_eq!(m.choice, None);
    // Unknown numbers are kept and written back as numbers.
    let m = ks(r#"{"f_mood":7,"r_mood":[1,-3]}"#);
    assert_eq!(enc(&m), r#"{"f_mood":7,"r_mood":["HAPPY",-3]}"#);
    assert!(rejects(r#"{"f_mood":2147483648}"#).contains("out of range"));
    assert!(
        rejects(r#"{"f_mood":true}"#).contains("expected an enum name or number, found a boolean")
    );
}

#[test]
fn unknown_fields_are_ignored_but_must_be_valid_json() {
    assert_eq!(
        ks(r#"{"nope":[1,{"a":"b"}],"f_int32":3,"@type":"x"}"#).f_int32,
        3
    );
    assert!(rejects(r#"{"nope":[1,}"#).contains("invalid JSON"));
    assert!(rejects("{\"nope\":\"\u{1}\"}").contains("control character"));
}

#[test]
fn duplicates_are_rejected() {
    assert!(rejects(r#"{"f_int32":1,"fInt32":1}"#).contains("`f_int32` is given more than once"));
    assert!(rejects(r#"{"c_uint32":1,"c_string":"a"}"#).contains("oneof `choice`"));
    assert!(rejects(r#"{"m_int32":{"1":1,"1":2}}"#).contains("map key is given more than once"));
}

#[test]
fn sixty_four_bit_integers_are_strings_on_write() {
    let m = KitchenSink {
        f_int64: i64::MIN,
        f_uint64: u64::MAX,
        f_sint64: -1,
        f_fixed64: 1,
        f_sfixed64: i64::MAX,
        r_int64: vec![1, -1],
        r_uint64: vec![u64::MAX],
        w_int64: Some(5),
        w_uint64: Some(6),
        ..Default::default()
    };
    assert_eq!(
        enc(&m),
        r#"{"f_int64":"-9223372036854775808","f_uint64":"18446744073709551615","f_sint64":"-1","f_fixed64":"1","f_sfixed64":"9223372036854775807","r_int64":["1","-1"],"r_uint64":["18446744073709551615"],"w_int64":"5","w_uint64":"6"}"#
    );
    assert_eq!(ks(&enc(&m)), m);
}

#[test]
fn integers_read_from_numbers_and_strings_exactly() {
    let m = ks(
        r#"{"f_int64":9223372036854775807,"f_uint64":"18446744073709551615","f_int32":"-2147483648","f_uint32":1e5,"f_sint32":100000.000,"f_fixed32":"4294967295","f_sfixed32":2.147483647e9}"#,
    );
    assert_eq!(m.f_int64, i64::MAX);
    assert_eq!(m.f_uint64, u64::MAX);
    assert_eq!(m.f_int32, i32::MIN);
    assert_eq!(m.f_uint32, 100_000);
    assert_eq!(m.f_sint32, 100_000);
    assert_eq!(m.f_fixed32, u32::MAX);
    assert_eq!(m.f_sfixed32, i32::MAX);
    // An escaped numeric string is still a number.
    assert_eq!(ks(r#"{"f_int32":"1\u0032"}"#).f_int32, 12);
    for (json, why) in [
        (r#"{"f_int32":2147483648}"#, "out of range"),
        (r#"{"f_int32":"-2147483649"}"#, "out of range"),
        (r#"{"f_uint32":-1}"#, "out of range"),
        (r#"{"f_uint64":"-1"}"#, "out of range"),
        (r#"{"f_int64":"9223372036854775808"}"#, "out of range"),
        (r#"{"f_int64":1.5}"#, "not an integer"),
        (r#"{"f_int32":"1.5"}"#, "not an integer"),
        (r#"{"f_int32":"3x3"}"#, "not a number"),
        (r#"{"f_int32":" 1"}"#, "not a number"),
        (r#"{"f_int32":"+1"}"#, "not a number"),
        (r#"{"f_int32":01}"#, "invalid JSON"),
        (r#"{"f_int32":true}"#, "expected a number, found a boolean"),
        (r#"{"m_int32":{"x":1}}"#, "map key"),
    ] {
        let e = rejects(json);
        assert!(e.contains(why), "{json}: {e}");
    }
}

#[test]
fn map_keys_of_every_type() {
    let m = ks(
        r#"{"m_int32":{"-1":1,"2":2},"m_int64":{"-9223372036854775808":"1"},"m_uint32":{"4294967295":1},"m_uint64":{"18446744073709551615":"1"},"m_sint32":{"-5":-5},"m_sint64":{"-5":"-5"},"m_fixed32":{"7":7},"m_fixed64":{"7":"7"},"m_sfixed32":{"-7":-7},"m_sfixed64":{"-7":"-7"},"m_bool":{"true":true,"false":false},"m_string":{"b":"2","a":"1"},"m_bytes":{"k":"AAE="},"m_nested":{"n":{"a":1}},"m_double":{"x":1.5}}"#,
    );
    assert_eq!(m.m_int32[&-1], 1);
    assert_eq!(m.m_int64[&i64::MIN], 1);
    assert!(!m.m_bool[&false]);
    assert_eq!(m.m_bytes["k"], vec![0, 1]);
    assert_eq!(m.m_nested["n"].a, 1);
    // Entries are written in key order, whatever the hash map's order.
    let out = enc(&m);
    assert!(out.contains(r#""m_int32":{"-1":1,"2":2}"#), "{out}");
    assert!(
        out.contains(r#""m_bool":{"false":false,"true":true}"#),
        "{out}"
    );
    assert!(out.contains(r#""m_string":{"a":"1","b":"2"}"#), "{out}");
    assert_eq!(ks(&out), m);
    assert!(rejects(r#"{"m_bool":{"yes":true}}"#).contains("invalid bool map key"));
    assert!(rejects(r#"{"m_int32":{"1.0":1}}"#).contains("not an integer"));
}

#[test]
fn bytes_are_base64() {
    let m = KitchenSink {
        f_bytes: vec![0xfb, 0xff, 0x00],
        ..Default::default()
    };
    assert_eq!(enc(&m), r#"{"f_bytes":"+/8A"}"#);
    assert_eq!(ks(r#"{"f_bytes":"-_8A"}"#), m, "URL-safe alphabet");
    assert_eq!(ks(r#"{"f_bytes":"+/8A"}"#), m);
    assert_eq!(
        ks(r#"{"r_bytes":["AQ","AQ=="]}"#).r_bytes,
        vec![vec![1], vec![1]]
    );
    assert!(rejects(r#"{"f_bytes":"!!!!"}"#).contains("f_bytes: invalid base64"));
    assert!(rejects(r#"{"w_bytes":"A"}"#).contains("w_bytes: invalid base64"));
}

#[test]
fn floats_and_doubles() {
    let m = KitchenSink {
        f_float: f32::NAN,
        f_double: f64::NEG_INFINITY,
        r_float: vec![f32::INFINITY, 0.1, -2.5],
        r_double: vec![0.1, 1e21, 5e-324],
        ..Default::default()
    };
    let out = enc(&m);
    assert_eq!(
        out,
        r#"{"f_float":"NaN","f_double":"-Infinity","r_float":["Infinity",0.1,-2.5],"r_double":[0.1,1e+21,5e-324]}"#
    );
    let back = ks(&out);
    assert!(back.f_float.is_nan());
    assert_eq!(back.r_double, m.r_double);
    assert_eq!(back.r_float, m.r_float);
    assert_eq!(ks(r#"{"f_double":"1.5","f_float":"-0.25"}"#).f_double, 1.5);
    for (json, why) in [
        (r#"{"f_float":3.5e38}"#, "out of range"),
        (r#"{"f_float":-3.5e38}"#, "out of range"),
        (r#"{"f_double":1e400}"#, "out of range"),
        (r#"{"f_double":"nan"}"#, "not a number"),
        (r#"{"f_double":"1.5 "}"#, "not a number"),
        (r#"{"f_double":.5}"#, "invalid JSON"),
    ] {
        let e = rejects(json);
        assert!(e.contains(why), "{json}: {e}");
    }
}

#[test]
fn oneof_members_are_written_even_at_default() {
    for (choice, json) in [
        (Choice::CUint32(0), r#"{"c_uint32":0}"#),
        (Choice::CString(String::new()), r#"{"c_string":""}"#),
        (Choice::CBool(false), r#"{"c_bool":false}"#),
        (Choice::CMood(0), r#"{"c_mood":"MOOD_UNSPECIFIED"}"#),
        (Choice::CNested(Box::default()), r#"{"c_nested":{}}"#),
        (Choice::CNull(0), r#"{"c_null":null}"#),
    ] {
        let m = KitchenSink {
            choice: Some(choice),
            ..Default::default()
        };
        assert_eq!(enc(&m), json);
        assert_eq!(ks(json), m);
    }
}

#[test]
fn recursive_messages_round_trip() {
    let json = r#"{"f_nested":{"a":1,"corecursive":{"f_nested":{"a":2}}}}"#;
    let m = ks(json);
    assert_eq!(
        m.f_nested
            .as_ref()
            .unwrap()
            .corecursive
            .as_ref()
            .unwrap()
            .f_nested
            .as_ref()
            .unwrap()
            .a,
        2
    );
    assert_eq!(enc(&m), json);
}

#[test]
fn well_known_types_use_their_special_forms() {
    let json = r#"{"w_timestamp":"2024-02-29T12:00:00.123Z","w_duration":"-3.000000500s","w_field_mask":"fInt32,fNested.a","w_struct":{"a":[true,{"b":null}],"n":-1.5},"w_value":"text","w_list_value":[1,"x"],"w_empty":{},"w_bool":false,"w_int32":-1,"w_int64":"-2","w_uint32":3,"w_uint64":"4","w_float":1.5,"w_double":"NaN","w_string":"s","w_bytes":"AQI=","r_wrapped_int32":[1,2],"r_timestamp":["1970-01-01T00:00:00Z"]}"#;
    let m = ks(json);
    assert_eq!(
        m.w_timestamp,
        Some(wkt::Timestamp {
            seconds: 1_709_208_000,
            nanos: 123_000_000
        })
    );
    assert_eq!(
        m.w_duration,
        Some(wkt::Duration {
            seconds: -3,
            nanos: -500
        })
    );
    assert_eq!(
        m.w_field_mask.as_ref().unwrap().paths,
        ["f_int32", "f_nested.a"]
    );
    assert_eq!(m.w_bool, Some(false));
    assert_eq!(m.w_bytes, Some(vec![1, 2]));
    assert_eq!(enc(&m), json);
    for (bad, why) in [
        (
            r#"{"w_timestamp":"2024-02-30T00:00:00Z"}"#,
            "w_timestamp: invalid Timestamp",
        ),
        (
            r#"{"w_timestamp":1}"#,
            "w_timestamp: expected a string, found a number",
        ),
        (r#"{"w_duration":"1"}"#, "w_duration: invalid Duration"),
        (
            r#"{"w_field_mask":"f_int32"}"#,
            "w_field_mask: invalid FieldMask",
        ),
        (r#"{"w_struct":[]}"#, "w_struct: expected an object"),
        (r#"{"w_list_value":{}}"#, "w_list_value: expected an array"),
        (r#"{"w_int32":"x"}"#, "w_int32: invalid int32"),
    ] {
        let e = rejects(bad);
        assert!(e.starts_with(why), "{bad}: {e}");
        assert!(!e.contains("invalid an "), "{e}");
    }
    let out_of_range = KitchenSink {
        w_timestamp: Some(wkt::Timestamp {
            seconds: 253_402_300_800,
            nanos: 0,
        }),
        ..Default::default()
    };
    assert!(to_string(&out_of_range)
        .unwrap_err()
        .to_string()
        .contains("Timestamp"));
}

#[test]
fn any_packs_registered_messages_and_well_known_types() {
    use prost::Message as _;
    json::register::<Nested>();
    let nested = Nested {
        a: 7,
        corecursive: None,
    };
    let m = KitchenSink {
        w_any: Some(wkt::Any {
            type_url: "type.googleapis.com/keyway.fixtures.kitchen.KitchenSink.Nested".into(),
            value: nested.encode_to_vec(),
        }),
        ..Default::default()
    };
    let json = r#"{"w_any":{"@type":"type.googleapis.com/keyway.fixtures.kitchen.KitchenSink.Nested","a":7}}"#;
    assert_eq!(enc(&m), json);
    assert_eq!(ks(json), m);
    // `@type` need not come first.
    assert_eq!(
        ks(
            r#"{"w_any":{"a":7,"@type":"type.googleapis.com/keyway.fixtures.kitchen.KitchenSink.Nested"}}"#
        ),
        m
    );

    let duration =
        ks(r#"{"w_any":{"@type":"type.googleapis.com/google.protobuf.Duration","value":"1.5s"}}"#);
    assert_eq!(
        enc(&duration),
        r#"{"w_any":{"@type":"type.googleapis.com/google.protobuf.Duration","value":"1.500s"}}"#
    );
    assert_eq!(enc(&ks(r#"{"w_any":{}}"#)), r#"{"w_any":{}}"#);
    assert!(
        rejects(r#"{"w_any":{"@type":"type.googleapis.com/no.Such"}}"#).contains("not registered")
    );
    assert!(rejects(r#"{"w_any":{"a":1}}"#).contains("no \"@type\""));
}

#[test]
fn messages_without_fields() {
    assert_eq!(to_string(&Nothing {}).unwrap(), "{}");
    assert_eq!(from_str::<Nothing>(r#"{"ignored":1}"#).unwrap(), Nothing {});
}

#[test]
fn nesting_beyond_the_limit_is_rejected_not_overflowed() {
    let deep = format!("{{\"w_value\":{}1{}}}", "[".repeat(200), "]".repeat(200));
    let e = from_str::<KitchenSink>(&deep).unwrap_err();
    assert_eq!(e.kind(), &DecodeErrorKind::TooDeep);
    let skipped = format!("{{\"unknown\":{}1{}}}", "[".repeat(200), "]".repeat(200));
    assert_eq!(
        from_str::<KitchenSink>(&skipped).unwrap_err().kind(),
        &DecodeErrorKind::TooDeep
    );
}

#[test]
fn a_full_message_round_trips() {
    let json = &r#"{"f_int32":-1,"f_int64":"-2","f_uint32":3,"f_uint64":"4","f_sint32":-5,"f_sint64":"-6","f_fixed32":7,"f_fixed64":"8","f_sfixed32":-9,"f_sfixed64":"-10","f_float":1.25,"f_double":-2.5e-10,"f_bool":true,"f_string":"é\u2028😀\n","f_bytes":"AP8=","f_nested":{"a":1},"f_mood":"HAPPY","f_level":"LOW","f_color":"RED","o_int32":0,"o_string":"","o_mood":"GRUMPY","o_nested":{},"r_int32":[1,-1],"r_uint32":[1],"r_bool":[true,false],"r_string":["a",""],"r_nested":[{},{"a":2}],"c_string":"chosen","w_value":{"k":[1,2]},"type":"kw"}"#
        .replace("\\u2028", "\u{2028}");
    let m = ks(json);
    assert_eq!(&enc(&m), json);
    assert_eq!(ks(&enc(&m)), m);
}

// Options: each one both ways, on the same messages.

use keyway_runtime::json::{
    from_str_with, to_string_with, FieldNames, JsonMessage as _, JsonOptions,
};

fn ks_with(json: &str, options: &JsonOptions) -> KitchenSink {
    from_str_with(json, options).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn rejects_with(json: &str, options: &JsonOptions) -> String {
    match from_str_with::<KitchenSink>(json, options) {
        Ok(m) => panic!("{json} was accepted as {m:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_tree_default_is_the_queue_form() {
    assert_eq!(KitchenSink::JSON_OPTIONS, JsonOptions::queue());
    let m = KitchenSink {
        f_int32: 1,
        ..Default::default()
    };
    assert_eq!(enc(&m), to_string_with(&m, &JsonOptions::queue()).unwrap());
}

#[test]
fn json_names_are_written_when_asked_and_both_names_are_read_either_way() {
    let m = KitchenSink {
        f_int32: 1,
        camel_case_name: 2,
        with_json_name: "x".into(),
        r#type: "t".into(),
        f_nested: Some(Box::new(Nested {
            a: 3,
            corecursive: Some(Box::new(KitchenSink {
                o_string: Some("deep".into()),
                ..Default::default()
            })),
        })),
        choice: Some(Choice::CUint32(4)),
        ..Default::default()
    };
    let json_names = JsonOptions::queue().with_field_names(FieldNames::Json);
    let camel = to_string_with(&m, &json_names).unwrap();
    assert_eq!(
        camel,
        r#"{"fInt32":1,"fNested":{"a":3,"corecursive":{"oString":"deep"}},"cUint32":4,"type":"t","camelCaseName":2,"renamed":"x"}"#
    );
    let proto = to_string_with(&m, &JsonOptions::queue()).unwrap();
    assert_eq!(
        proto,
        r#"{"f_int32":1,"f_nested":{"a":3,"corecursive":{"o_string":"deep"}},"c_uint32":4,"type":"t","camelCaseName":2,"with_json_name":"x"}"#
    );
    for options in [JsonOptions::queue(), json_names, JsonOptions::protobuf()] {
        assert_eq!(ks_with(&camel, &options), m);
        assert_eq!(ks_with(&proto, &options), m);
    }
}

#[test]
fn unknown_fields_are_rejected_with_their_path_when_asked() {
    let strict = JsonOptions::queue().with_ignore_unknown_fields(false);
    for (json, why) in [
        (r#"{"nope":1}"#, r#"unknown field "nope" (at byte 8)"#),
        (
            r#"{"f_nested":{"a":1,"zz":[2]}}"#,
            r#"f_nested: unknown field "zz""#,
        ),
        (
            r#"{"r_nested":[{},{"corecursive":{"x":null}}]}"#,
            r#"r_nested[1].corecursive: unknown field "x""#,
        ),
        (
            r#"{"m_nested":{"k":{"b":1}}}"#,
            r#"m_nested["k"]: unknown field "b""#,
        ),
        // `@type` belongs to an `Any`, not to other messages.
        (
            r#"{"f_nested":{"@type":"x"}}"#,
            r#"f_nested: unknown field "@type""#,
        ),
        (r#"{"w_empty":{"a":1}}"#, r#"w_empty: unknown field "a""#),
    ] {
        let e = rejects_with(json, &strict);
        assert!(e.starts_with(why), "{json}: {e}");
        // The same documents are fine when unknown fields are ignored.
        ks_with(json, &JsonOptions::queue());
    }
    let long = format!(r#"{{"{}":1}}"#, "k".repeat(500));
    let e = rejects_with(&long, &strict);
    assert!(e.len() < 100, "the key is cut short: {e}");
}

#[test]
fn unknown_enum_names_follow_the_unknown_fields_option() {
    let strict = JsonOptions::queue().with_ignore_unknown_fields(false);
    let mood = "keyway.fixtures.kitchen.KitchenSink.Mood";
    for (json, path) in [
        (r#"{"f_mood":"SLEEPY"}"#, "f_mood"),
        (r#"{"o_mood":"SLEEPY"}"#, "o_mood"),
        (r#"{"r_mood":["HAPPY","SLEEPY"]}"#, "r_mood[1]"),
        (r#"{"m_mood":{"a":"SLEEPY"}}"#, r#"m_mood["a"]"#),
        (r#"{"c_mood":"SLEEPY"}"#, "c_mood"),
    ] {
        let e = rejects_with(json, &strict);
        assert!(
            e.starts_with(&format!(r#"{path}: unknown enum name "SLEEPY" for {mood}"#)),
            "{json}: {e}"
        );
        // Ignored (the element or entry dropped) under the queue's options.
        let m = ks_with(json, &JsonOptions::queue());
        assert_eq!(m.f_mood, 0);
        assert_eq!(m.o_mood, None);
        assert!(!m.m_mood.contains_key("a"));
        assert_eq!(m.choice, None);
    }
    // Unknown *numbers* of an open enum are values, whatever the options.
    assert_eq!(ks_with(r#"{"f_mood":9}"#, &strict).f_mood, 9);
    assert!(rejects_with(r#"{"c_null":"NOPE"}"#, &strict)
        .starts_with(r#"c_null: unknown enum name "NOPE" for google.protobuf.NullValue"#));
}

#[test]
fn default_values_are_written_when_asked_for_fields_without_presence_only() {
    let emit = JsonOptions::queue().with_emit_default_values(true);
    let json = to_string_with(&KitchenSink::default(), &emit).unwrap();
    for present in [
        r#""f_int32":0"#,
        r#""f_int64":"0""#,
        r#""f_float":0"#,
        r#""f_bool":false"#,
        r#""f_string":"""#,
        r#""f_bytes":"""#,
        r#""f_mood":"MOOD_UNSPECIFIED""#,
        r#""f_level":"LEVEL_UNSPECIFIED""#,
        r#""r_int32":[]"#,
        r#""r_nested":[]"#,
        r#""m_int32":{}"#,
        r#""m_value":{}"#,
        r#""r_value":[]"#,
    ] {
        assert!(json.contains(present), "{present} not in {json}");
    }
    for absent in [
        "f_nested",
        "o_int32",
        "o_mood",
        "w_int32",
        "w_timestamp",
        "w_any",
        "c_uint32",
    ] {
        assert!(!json.contains(absent), "{absent} in {json}");
    }
    assert_eq!(ks(&json), KitchenSink::default());
    assert_eq!(enc(&KitchenSink::default()), "{}");
    // Keys and defaults combine.
    let both = emit.with_field_names(FieldNames::Json);
    assert!(to_string_with(&KitchenSink::default(), &both)
        .unwrap()
        .starts_with(r#"{"fInt32":0,"fInt64":"0","#));
}

#[test]
fn enums_are_written_as_numbers_when_asked() {
    let m = ks(
        r#"{"f_mood":"GRUMPY","r_mood":["HAPPY",7],"m_mood":{"a":"HAPPY"},"c_null":null,"f_level":"LOUD"}"#,
    );
    let numbers = JsonOptions::queue().with_enums_as_numbers(true);
    let json = to_string_with(&m, &numbers).unwrap();
    assert_eq!(
        json,
        r#"{"f_mood":2,"f_level":2,"r_mood":[1,7],"m_mood":{"a":1},"c_null":null}"#
    );
    assert_eq!(ks(&json), m);
    assert_eq!(
        enc(&m),
        r#"{"f_mood":"GRUMPY","f_level":"HIGH","r_mood":["HAPPY",7],"m_mood":{"a":"HAPPY"},"c_null":null}"#
    );
}

#[test]
fn options_reach_into_any_and_allow_its_type_key() {
    json::register::<KitchenSink>();
    let packed = KitchenSink {
        f_int32: 5,
        ..Default::default()
    };
    let m = KitchenSink {
        w_any: Some(wkt::Any {
            type_url: "type.googleapis.com/keyway.fixtures.kitchen.KitchenSink".into(),
            value: prost::Message::encode_to_vec(&packed),
        }),
        ..Default::default()
    };
    let json = to_string_with(&m, &JsonOptions::protobuf()).unwrap();
    assert_eq!(
        json,
        r#"{"wAny":{"@type":"type.googleapis.com/keyway.fixtures.kitchen.KitchenSink","fInt32":5}}"#
    );
    // `@type` is no unknown field of the packed message, even when unknown fields are rejected.
    assert_eq!(ks_with(&json, &JsonOptions::protobuf()), m);
    let e = rejects_with(
        r#"{"w_any":{"@type":"type.googleapis.com/keyway.fixtures.kitchen.KitchenSink","f_int32":5,"zz":1}}"#,
        &JsonOptions::protobuf(),
    );
    assert!(e.starts_with(r#"w_any: unknown field "zz""#), "{e}");
    // A well-known type in an Any has only `@type` and `value`.
    let wkt_extra =
        r#"{"w_any":{"@type":"type.googleapis.com/google.protobuf.Duration","value":"1s","x":1}}"#;
    assert!(rejects_with(wkt_extra, &JsonOptions::protobuf())
        .starts_with(r#"w_any: unknown field "x""#));
    assert!(ks(wkt_extra).w_any.is_some());
}

#[test]
fn any_type_urls_need_a_slash_and_special_forms_need_their_value() {
    let e = rejects(r#"{"w_any":{"@type":"google.protobuf.Value","value":1}}"#);
    assert!(
        e.starts_with(r#"w_any.@type: Any "@type" must be a type URL with a `/`"#),
        "{e}"
    );
    for name in [
        "Value",
        "Struct",
        "ListValue",
        "Timestamp",
        "Duration",
        "Int32Value",
    ] {
        let json =
            format!(r#"{{"w_any":{{"@type":"type.googleapis.com/google.protobuf.{name}"}}}}"#);
        let e = rejects(&json);
        assert!(
            e.starts_with(&format!(
                r#"w_any: Any of google.protobuf.{name} has no "value""#
            )),
            "{json}: {e}"
        );
    }
    // Empty has no special form: its fields (none) are inline.
    let empty = r#"{"w_any":{"@type":"type.googleapis.com/google.protobuf.Empty"}}"#;
    assert_eq!(enc(&ks(empty)), empty);
    // A value of `null` is a Value.
    let null = r#"{"w_any":{"@type":"type.googleapis.com/google.protobuf.Value","value":null}}"#;
    assert_eq!(enc(&ks(null)), null);
    // An Any holds its message in the binary format, which nests at most 100 messages: a
    // Value list nested 60 deep is 120 of them. Fine as a plain field, rejected in an Any.
    let deep = format!("{}null{}", "[".repeat(60), "]".repeat(60));
    let plain = format!(r#"{{"w_value":{deep}}}"#);
    assert_eq!(enc(&ks(&plain)), plain);
    let packed = format!(
        r#"{{"w_any":{{"@type":"type.googleapis.com/google.protobuf.Value","value":{deep}}}}}"#
    );
    let e = rejects(&packed);
    assert!(
        e.starts_with(
            "w_any: Any of google.protobuf.Value nests deeper than its binary form allows"
        ),
        "{e}"
    );
    // What cannot be read is not written either.
    let no_slash = KitchenSink {
        w_any: Some(wkt::Any {
            type_url: "google.protobuf.Empty".into(),
            value: Vec::new(),
        }),
        ..Default::default()
    };
    let e = to_string(&no_slash).unwrap_err().to_string();
    assert!(e.contains("has no `/`"), "{e}");
}

/// The proto2 and proto3 messages shaped like protobuf's conformance test messages: generated
/// with protobuf's JSON defaults for their tree, compiled by the conformance crate's build.
mod test_messages {
    use keyway_conformance::test_messages::protobuf_test_messages::{proto2, proto3};
    use keyway_runtime::json::{
        from_str, from_str_with, to_string, to_string_with, JsonMessage as _, JsonOptions,
    };
    use prost::Message as _;
    use proto2::{
        test_all_required_types_proto2 as required, test_all_types_proto2 as p2,
        TestAllRequiredTypesProto2, TestAllTypesProto2,
    };
    use proto3::{test_all_types_proto3 as p3, TestAllTypesProto3};

    fn p2(json: &str) -> TestAllTypesProto2 {
        from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    fn p3(json: &str) -> TestAllTypesProto3 {
        from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    fn p2_rejects(json: &str) -> String {
        match from_str::<TestAllTypesProto2>(json) {
            Ok(m) => panic!("{json} was accepted as {m:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// Decode, encode, decode again: the same message, and the same bytes as `json`.
    fn round_trips<M>(json: &str)
    where
        M: keyway_runtime::json::JsonMessage + PartialEq + std::fmt::Debug,
    {
        let m: M = from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        let out = to_string(&m).unwrap();
        assert_eq!(out, json);
        assert_eq!(from_str::<M>(&out).unwrap(), m);
    }

    #[test]
    fn the_tree_uses_protobufs_defaults() {
        assert_eq!(TestAllTypesProto3::JSON_OPTIONS, JsonOptions::protobuf());
        assert_eq!(TestAllTypesProto2::JSON_OPTIONS, JsonOptions::protobuf());
        let m = TestAllTypesProto3 {
            optional_int32: 1,
            ..Default::default()
        };
        assert_eq!(to_string(&m).unwrap(), r#"{"optionalInt32":1}"#);
        // Unknown fields are rejected by default here, and can be ignored per call.
        let unknown = r#"{"optionalInt32":1,"unknown":2}"#;
        assert!(from_str::<TestAllTypesProto3>(unknown).is_err());
        let lenient = JsonOptions::protobuf().with_ignore_unknown_fields(true);
        assert_eq!(
            from_str_with::<TestAllTypesProto3>(unknown, &lenient).unwrap(),
            m
        );
        // And the queue's form is one option away.
        assert_eq!(
            to_string_with(&m, &JsonOptions::queue()).unwrap(),
            r#"{"optional_int32":1}"#
        );
    }

    #[test]
    fn every_proto3_field_shape_round_trips() {
        round_trips::<TestAllTypesProto3>(concat!(
            r#"{"optionalInt32":-1,"optionalInt64":"-2","optionalUint32":3,"optionalUint64":"4","#,
            r#""optionalSint32":-5,"optionalSint64":"-6","optionalFixed32":7,"optionalFixed64":"8","#,
            r#""optionalSfixed32":-9,"optionalSfixed64":"-10","optionalFloat":1.5,"optionalDouble":-2.25,"#,
            r#""optionalBool":true,"optionalString":"s","optionalBytes":"AQI=","#,
            r#""optionalNestedMessage":{"a":1,"corecursive":{"optionalInt32":2}},"#,
            r#""optionalForeignMessage":{"c":3},"optionalNestedEnum":"NEG","optionalForeignEnum":"FOREIGN_BAZ","#,
            r#""optionalAliasedEnum":"ALIAS_BAZ","optionalStringPiece":"p","optionalCord":"c","#,
            r#""recursiveMessage":{"optionalUint32":1},"repeatedInt32":[1,-1],"repeatedInt64":["1"],"#,
            r#""repeatedFloat":["Infinity","-Infinity",0.1],"repeatedBytes":["","AA=="],"#,
            r#""repeatedNestedMessage":[{},{"a":1}],"repeatedNestedEnum":["FOO",123],"#,
            r#""mapInt32Int32":{"-1":1,"2":2},"mapInt64Int64":{"-3":"3"},"mapUint64Uint64":{"18446744073709551615":"1"},"#,
            r#""mapBoolBool":{"false":true,"true":false},"mapStringBytes":{"k":"AA=="},"#,
            r#""mapStringNestedMessage":{"m":{"a":1}},"mapStringForeignEnum":{"e":"FOREIGN_BAR"},"#,
            r#""packedInt32":[1],"packedNestedEnum":["BAR"],"unpackedDouble":[1e+300],"#,
            r#""oneofNullValue":null,"optionalBoolWrapper":false,"optionalInt64Wrapper":"0","#,
            r#""optionalBytesWrapper":"","repeatedUint32Wrapper":[0,1],"repeatedStringWrapper":["a"],"#,
            r#""optionalDuration":"-1.500s","optionalTimestamp":"1970-01-01T00:00:00.000001Z","#,
            r#""optionalFieldMask":"fooBar,baz","optionalStruct":{"a":[null,true,{"b":"c"}]},"#,
            r#""optionalAny":{"@type":"type.googleapis.com/google.protobuf.Duration","value":"1s"},"#,
            r#""optionalValue":1.5,"repeatedDuration":["0s"],"#,
            r#""repeatedTimestamp":["9999-12-31T23:59:59.999999999Z"],"repeatedFieldmask":[""],"#,
            r#""repeatedAny":[{}],"repeatedValue":[null,"x"],"repeatedListValue":[[]],"#,
            r#""repeatedStruct":[{}],"fieldname1":1,"FieldName18":18}"#
        ));
    }

    #[test]
    fn json_names_of_odd_field_names_are_the_descriptors() {
        let pool = prost_reflect::DescriptorPool::decode(
            keyway_conformance::test_messages::FILE_DESCRIPTOR_SET,
        )
        .unwrap();
        let descriptor = pool
            .get_message_by_name("protobuf_test_messages.proto3.TestAllTypesProto3")
            .unwrap();
        let m = TestAllTypesProto3 {
            fieldname1: 1,
            field_name2: 2,
            field_name3: 3,
            field_name4: 4,
            field0name5: 5,
            field_0_name6: 6,
            field_name7: 7,
            field_name8: 8,
            field_name9: 9,
            field_name10: 10,
            field_name11: 11,
            field_name12: 12,
            field_name13: 13,
            field_name14: 14,
            field_name15: 15,
            field_name16: 16,
            field_name17: 17,
            field_name18: 18,
            ..Default::default()
        };
        for (options, json_names) in [
            (JsonOptions::protobuf(), true),
            (JsonOptions::queue(), false),
        ] {
            let json = to_string_with(&m, &options).unwrap();
            let value: serde_json::Value = serde_json::from_str(&json).unwrap();
            let object = value.as_object().unwrap();
            assert_eq!(object.len(), 18, "{json}");
            for number in 401..=418 {
                let field = descriptor.get_field(number).unwrap();
                let key = if json_names {
                    field.json_name()
                } else {
                    field.name()
                };
                assert_eq!(
                    object[key],
                    serde_json::json!(number - 400),
                    "{key} in {json}"
                );
            }
            assert_eq!(from_str::<TestAllTypesProto3>(&json).unwrap(), m);
        }
    }

    #[test]
    fn open_enums_keep_unknown_numbers_and_aliases_read() {
        let m = p3(r#"{"optionalNestedEnum":123,"optionalAliasedEnum":"bAz"}"#);
        assert_eq!(m.optional_nested_enum, 123);
        assert_eq!(m.optional_aliased_enum, p3::AliasedEnum::AliasBaz as i32);
        assert_eq!(
            to_string(&m).unwrap(),
            r#"{"optionalNestedEnum":123,"optionalAliasedEnum":"ALIAS_BAZ"}"#
        );
        for alias in ["MOO", "moo", "bAz", "ALIAS_BAZ"] {
            let m = p3(&format!(r#"{{"optionalAliasedEnum":"{alias}"}}"#));
            assert_eq!(m.optional_aliased_enum, 2, "{alias}");
        }
    }

    #[test]
    fn closed_enums_hold_only_their_values() {
        let name = "protobuf_test_messages.proto2.TestAllTypesProto2.NestedEnum";
        for (json, path) in [
            (r#"{"optionalNestedEnum":7}"#, "optional_nested_enum"),
            (r#"{"repeatedNestedEnum":[1,7]}"#, "repeated_nested_enum[1]"),
            (
                r#"{"mapStringNestedEnum":{"k":7}}"#,
                r#"map_string_nested_enum["k"]"#,
            ),
            (r#"{"oneofEnum":7}"#, "oneof_enum"),
        ] {
            let e = p2_rejects(json);
            assert!(
                e.starts_with(&format!(
                    "{path}: 7 is not a value of the closed enum {name}"
                )),
                "{json}: {e}"
            );
        }
        // Ignored like an unknown field when unknown fields are.
        let lenient = JsonOptions::protobuf().with_ignore_unknown_fields(true);
        let m: TestAllTypesProto2 = from_str_with(
            r#"{"optionalNestedEnum":7,"repeatedNestedEnum":[1,7,-1],"mapStringNestedEnum":{"k":7,"l":2}}"#,
            &lenient,
        )
        .unwrap();
        assert_eq!(m.optional_nested_enum, None);
        assert_eq!(m.repeated_nested_enum, vec![1, -1]);
        assert_eq!(m.map_string_nested_enum.len(), 1);
        // A number without a name (from the binary format, or set in Rust) is written as if
        // absent, as protobuf's libraries keep it among the unknown fields.
        let m = TestAllTypesProto2 {
            optional_nested_enum: Some(7),
            optional_foreign_enum: Some(1),
            repeated_nested_enum: vec![7, 1, 7],
            packed_nested_enum: vec![7],
            map_string_nested_enum: [("k".to_owned(), 7), ("l".to_owned(), 0)].into(),
            oneof_field: Some(p2::OneofField::OneofEnum(7)),
            ..Default::default()
        };
        assert_eq!(
            to_string(&m).unwrap(),
            r#"{"optionalForeignEnum":"FOREIGN_BAR","repeatedNestedEnum":["BAR"],"mapStringNestedEnum":{"l":"FOO"}}"#
        );
        let emit = JsonOptions::protobuf().with_emit_default_values(true);
        assert!(to_string_with(&m, &emit)
            .unwrap()
            .contains(r#""packedNestedEnum":[]"#));
    }

    #[test]
    fn proto2_fields_have_presence_and_declared_defaults() {
        let m = p2("{}");
        assert_eq!(m.optional_int32, None);
        assert_eq!(m.default_int32, None);
        assert_eq!(m.default_int32(), -123_456_789);
        assert_eq!(m.default_string(), "Rosebud");
        assert_eq!(m.default_bytes(), b"joshua");
        assert_eq!(to_string(&m).unwrap(), "{}");
        // Set fields are written even at the type's zero; emitting defaults changes nothing for
        // fields with presence.
        let json =
            r#"{"optionalInt32":0,"optionalString":"","defaultInt32":0,"defaultBool":false}"#;
        round_trips::<TestAllTypesProto2>(json);
        let emit = JsonOptions::protobuf().with_emit_default_values(true);
        let out = to_string_with(&p2(r#"{"optionalInt32":0}"#), &emit).unwrap();
        assert!(
            out.starts_with(r#"{"optionalInt32":0,"repeatedInt32":[],"#),
            "{out}"
        );
        assert!(!out.contains("optionalInt64"), "{out}");
    }

    #[test]
    fn groups_are_keyed_by_their_field_name() {
        round_trips::<TestAllTypesProto2>(
            r#"{"data":{"groupInt32":1,"groupUint32":2},"multiwordgroupfield":{"groupInt32":3}}"#,
        );
        let m = p2(r#"{"data":{"group_int32":1},"multiwordgroupfield":{}}"#);
        assert_eq!(m.data.as_ref().unwrap().group_int32, Some(1));
        assert_eq!(
            to_string_with(&m, &JsonOptions::queue()).unwrap(),
            r#"{"data":{"group_int32":1},"multiwordgroupfield":{}}"#
        );
        // The binary form is a group (start and end tags), read back by prost.
        let bytes = m.encode_to_vec();
        assert_eq!(bytes[..2], [0xcb, 0x0c], "start group, field 201");
        assert_eq!(TestAllTypesProto2::decode(bytes.as_slice()).unwrap(), m);
    }

    #[test]
    fn extensions_are_bracketed_full_names() {
        // In field-number order, extensions among the fields: 120, 121, 500 and, inside, the
        // extensions 1547769 and 123456789.
        let json = concat!(
            r#"{"[protobuf_test_messages.proto2.extension_int32]":1,"#,
            r#""[protobuf_test_messages.proto2.groupfield]":{"groupInt32":5},"#,
            r#""messageSetCorrect":{"#,
            r#""[protobuf_test_messages.proto2.TestAllTypesProto2.MessageSetCorrectExtension1.message_set_extension]":{"str":"a"},"#,
            r#""[protobuf_test_messages.proto2.TestAllTypesProto2.ExtensionWithOneof.extension_with_oneof]":{"b":2}}}"#
        );
        round_trips::<TestAllTypesProto2>(json);
        let m = p2(json);
        assert_eq!(m.extension_int32, Some(1));
        assert_eq!(m.groupfield.as_ref().unwrap().group_int32, Some(5));
        let set = m.message_set_correct.as_ref().unwrap();
        assert_eq!(
            set.test_all_types_proto2_message_set_correct_extension1_message_set_extension
                .as_ref()
                .unwrap()
                .str
                .as_deref(),
            Some("a")
        );
        // The same key whatever the key option.
        assert!(to_string_with(&m, &JsonOptions::queue())
            .unwrap()
            .contains(r#""[protobuf_test_messages.proto2.extension_int32]":1"#));
        // In the binary format an extension is a field of its number (120: tag bytes c0 07).
        let bytes = TestAllTypesProto2 {
            extension_int32: Some(1),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(bytes, [0xc0, 0x07, 0x01]);
        assert_eq!(
            TestAllTypesProto2::decode(bytes.as_slice())
                .unwrap()
                .extension_int32,
            Some(1)
        );
        // An extension the tree does not declare is an unknown field.
        let unknown = r#"{"[protobuf_test_messages.proto2.nope]":1}"#;
        assert!(p2_rejects(unknown)
            .starts_with(r#"unknown field "[protobuf_test_messages.proto2.nope]""#));
        let lenient = JsonOptions::protobuf().with_ignore_unknown_fields(true);
        assert_eq!(
            from_str_with::<TestAllTypesProto2>(unknown, &lenient).unwrap(),
            TestAllTypesProto2::default()
        );
        // An extension is given once, like any field.
        assert!(p2_rejects(
            r#"{"[protobuf_test_messages.proto2.extension_int32]":1,"[protobuf_test_messages.proto2.extension_int32]":2}"#
        )
        .contains("more than once"));
    }

    #[test]
    fn required_fields_are_plain_values_always_written() {
        // Absent required fields read as their defaults, the declared ones included, as
        // protobuf's C++ and Python JSON parsers do; prost has no "missing" for them.
        let m: TestAllRequiredTypesProto2 = from_str("{}").unwrap();
        assert_eq!(m, TestAllRequiredTypesProto2::default());
        assert_eq!(m.required_int32, 0);
        assert_eq!(m.default_int32, -123_456_789);
        assert_eq!(m.default_string, "Rosebud");
        let json = to_string(&m).unwrap();
        for key in [
            r#""requiredInt32":0"#,
            r#""requiredString":"""#,
            r#""requiredNestedMessage":{"a":0}"#,
            r#""requiredForeignMessage":{}"#,
            r#""requiredNestedEnum":"FOO""#,
            r#""data":{"groupInt32":0,"groupUint32":0}"#,
            r#""defaultInt32":-123456789"#,
            r#""defaultUint64":"10123456789123456789""#,
            r#""defaultFloat":9000000000"#,
            r#""defaultDouble":7e+22"#,
            r#""defaultBytes":"am9zaHVh""#,
        ] {
            assert!(json.contains(key), "{key} not in {json}");
        }
        assert!(!json.contains("optionalRecursiveMessage"), "{json}");
        assert_eq!(from_str::<TestAllRequiredTypesProto2>(&json).unwrap(), m);
        // `null` keeps the default too.
        let m: TestAllRequiredTypesProto2 =
            from_str(r#"{"defaultInt32":null,"requiredNestedMessage":null}"#).unwrap();
        assert_eq!(m.default_int32, -123_456_789);
        // Set values, boxed recursion included.
        let m = TestAllRequiredTypesProto2 {
            required_int32: 5,
            required_nested_message: Box::new(required::NestedMessage {
                a: 1,
                corecursive: None,
                optional_corecursive: None,
            }),
            recursive_message: Some(Box::default()),
            data: required::Data {
                group_int32: 2,
                group_uint32: 3,
            },
            ..Default::default()
        };
        let back: TestAllRequiredTypesProto2 = from_str(&to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        assert_eq!(
            TestAllRequiredTypesProto2::decode(m.encode_to_vec().as_slice()).unwrap(),
            m
        );
    }

    #[test]
    fn proto2_messages_round_trip_through_both_formats() {
        let json = concat!(
            r#"{"optionalInt32":1,"optionalNestedMessage":{"a":2,"corecursive":{"optionalBool":true}},"#,
            r#""optionalNestedEnum":"NEG","repeatedInt64":["-1"],"packedFixed32":[1,2],"#,
            r#""mapInt32NestedMessage":{"1":{"a":1}},"mapInt32Bool":{"2":true},"oneofString":"o","#,
            r#""data":{"groupUint32":4},"defaultString":"set","fieldName7":7}"#
        );
        round_trips::<TestAllTypesProto2>(json);
        let m = p2(json);
        let binary = TestAllTypesProto2::decode(m.encode_to_vec().as_slice()).unwrap();
        assert_eq!(binary, m);
        assert_eq!(to_string(&binary).unwrap(), json);
    }
}
