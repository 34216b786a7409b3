//! Every rule of the JSON mapping, on a fixture with every field shape
//! (`tests/fixtures/kitchen_sink.proto`), compiled by the generator users run.

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
