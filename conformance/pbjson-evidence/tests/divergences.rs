//! Where pbjson-build 0.9 (with pbjson-types 0.9, proto field names, unknown fields and enum
//! names ignored) departs from the proto3 JSON mapping, each next to what keyway's generated
//! codec does on the same fixture. These are the reasons keyway generates its own codec
//! (ARCHITECTURE.md). Should pbjson change, a test here fails and the decision is revisited.

use keyway_conformance::kitchen_sink::keyway::fixtures::kitchen::KitchenSink as Kw;
use keyway_pbjson_evidence::keyway::fixtures::kitchen::KitchenSink as Pb;

/// pbjson: decode, then encode (`Err` with the message if either fails).
fn pbjson(json: &str) -> Result<String, String> {
    let m: Pb = serde_json::from_str(json).map_err(|e| e.to_string())?;
    serde_json::to_string(&m).map_err(|e| e.to_string())
}

/// keyway: decode, then encode.
fn keyway(json: &str) -> Result<String, String> {
    let m: Kw = keyway_runtime::json::from_str(json).map_err(|e| e.to_string())?;
    keyway_runtime::json::to_string(&m).map_err(|e| e.to_string())
}

fn pbjson_encode(m: &Pb) -> Result<String, String> {
    serde_json::to_string(m).map_err(|e| e.to_string())
}

#[test]
fn non_finite_floats_are_written_as_null() {
    // Mapping: "NaN", "Infinity" and "-Infinity" are written as strings.
    for json in [r#"{"f_double":"NaN"}"#, r#"{"f_float":"-Infinity"}"#] {
        assert!(pbjson(json).unwrap().contains(":null"), "{json}");
        assert_eq!(keyway(json).unwrap(), json);
    }
}

#[test]
fn exact_integer_forms_are_rejected() {
    // Mapping: an integer field accepts any JSON number or numeric string with an integral value.
    for (json, canonical) in [
        (r#"{"f_int32":1e5}"#, r#"{"f_int32":100000}"#),
        (r#"{"f_int32":100000.000}"#, r#"{"f_int32":100000}"#),
        (r#"{"f_int64":"1e5"}"#, r#"{"f_int64":"100000"}"#),
    ] {
        assert!(pbjson(json).is_err(), "{json}");
        assert_eq!(keyway(json).unwrap(), canonical);
    }
}

#[test]
fn unknown_enum_numbers_are_dropped_on_read_and_fail_on_write() {
    // Mapping: proto3 enums are open; an unknown number is kept and written as a number.
    assert_eq!(pbjson(r#"{"f_mood":7}"#).unwrap(), "{}");
    let m = Pb {
        f_mood: 7,
        ..Default::default()
    };
    assert!(pbjson_encode(&m).unwrap_err().contains("Invalid variant 7"));
    assert_eq!(keyway(r#"{"f_mood":7}"#).unwrap(), r#"{"f_mood":7}"#);
}

#[test]
fn enum_aliases_are_not_read() {
    // `LOUD` is an alias of `HIGH` (allow_alias); both names must read as 2.
    assert_eq!(pbjson(r#"{"f_level":"LOUD"}"#).unwrap(), "{}");
    assert_eq!(
        keyway(r#"{"f_level":"LOUD"}"#).unwrap(),
        r#"{"f_level":"HIGH"}"#
    );
}

#[test]
fn unknown_enum_names_in_lists_become_the_zero_value() {
    // Ignoring an unknown name must drop the element, not turn it into another value.
    assert_eq!(
        pbjson(r#"{"r_mood":["HAPPY","SLEEPY"]}"#).unwrap(),
        r#"{"r_mood":["HAPPY","MOOD_UNSPECIFIED"]}"#
    );
    assert_eq!(
        keyway(r#"{"r_mood":["HAPPY","SLEEPY"]}"#).unwrap(),
        r#"{"r_mood":["HAPPY"]}"#
    );
}

#[test]
fn null_is_rejected_for_lists_maps_and_enums() {
    // Mapping: null is accepted for every field type and means the default.
    for json in [
        r#"{"r_int32":null}"#,
        r#"{"m_int32":null}"#,
        r#"{"f_mood":null}"#,
    ] {
        assert!(pbjson(json).is_err(), "{json}");
        assert_eq!(keyway(json).unwrap(), "{}");
    }
}

#[test]
fn null_values_of_value_and_null_value_are_lost() {
    // For google.protobuf.Value and NullValue, null is the value itself, not "absent".
    for json in [r#"{"w_value":null}"#, r#"{"c_null":null}"#] {
        assert_eq!(pbjson(json).unwrap(), "{}", "{json}");
        assert_eq!(keyway(json).unwrap(), json);
    }
}

#[test]
fn timestamps_are_written_with_an_offset_and_not_range_checked() {
    // Mapping: always UTC with `Z`; 0001-01-01 to 9999-12-31 only, on read and on write.
    assert_eq!(
        pbjson(r#"{"w_timestamp":"1970-01-01T00:00:00.5Z"}"#).unwrap(),
        r#"{"w_timestamp":"1970-01-01T00:00:00.500+00:00"}"#
    );
    assert_eq!(
        keyway(r#"{"w_timestamp":"1970-01-01T00:00:00.5Z"}"#).unwrap(),
        r#"{"w_timestamp":"1970-01-01T00:00:00.500Z"}"#
    );
    assert!(pbjson(r#"{"w_timestamp":"0000-01-01T00:00:00Z"}"#).is_ok());
    assert!(keyway(r#"{"w_timestamp":"0000-01-01T00:00:00Z"}"#).is_err());
    let m = Pb {
        w_timestamp: Some(pbjson_types::Timestamp {
            seconds: 253_402_300_800,
            nanos: 0,
        }),
        ..Default::default()
    };
    assert!(pbjson_encode(&m).unwrap().contains("+10000-01-01"));
}

#[test]
fn durations_are_not_range_checked() {
    assert_eq!(
        pbjson(r#"{"w_duration":"315576000001s"}"#).unwrap(),
        r#"{"w_duration":"315576000001s"}"#
    );
    assert!(keyway(r#"{"w_duration":"315576000001s"}"#).is_err());
}

#[test]
fn field_masks_use_an_object_instead_of_a_string() {
    assert!(pbjson(r#"{"w_field_mask":"fooBar,baz"}"#).is_err());
    let m = Pb {
        w_field_mask: Some(pbjson_types::FieldMask {
            paths: vec!["foo_bar".into()],
        }),
        ..Default::default()
    };
    assert_eq!(
        pbjson_encode(&m).unwrap(),
        r#"{"w_field_mask":{"paths":["foo_bar"]}}"#
    );
    assert_eq!(
        keyway(r#"{"w_field_mask":"fooBar,baz"}"#).unwrap(),
        r#"{"w_field_mask":"fooBar,baz"}"#
    );
}

#[test]
fn any_uses_type_url_and_base64_instead_of_at_type() {
    let json = r#"{"w_any":{"@type":"type.googleapis.com/google.protobuf.Duration","value":"1s"}}"#;
    assert!(pbjson(json).unwrap_err().contains("@type"));
    let m = Pb {
        w_any: Some(pbjson_types::Any {
            type_url: "type.googleapis.com/google.protobuf.Empty".into(),
            value: Default::default(),
        }),
        ..Default::default()
    };
    assert!(pbjson_encode(&m).unwrap().contains("typeUrl"));
    assert_eq!(keyway(json).unwrap(), json);
}

#[test]
fn out_of_range_floats_are_accepted_and_written_as_null() {
    assert_eq!(
        pbjson(r#"{"f_float":3.5e38}"#).unwrap(),
        r#"{"f_float":null}"#
    );
    assert!(keyway(r#"{"f_float":3.5e38}"#)
        .unwrap_err()
        .contains("out of range"));
}

#[test]
fn where_pbjson_already_agrees() {
    // Recorded so the list above stays honest: these were checked and match the mapping.
    for (json, canonical) in [
        (r#"{"f_bytes":"-_8A"}"#, r#"{"f_bytes":"+/8A"}"#),
        (r#"{"f_bytes":"AQ"}"#, r#"{"f_bytes":"AQ=="}"#),
        (
            r#"{"f_int64":9223372036854775807}"#,
            r#"{"f_int64":"9223372036854775807"}"#,
        ),
        (r#"{"f_int32":"1\u0032"}"#, r#"{"f_int32":12}"#),
        (r#"{"m_bool":{"true":true}}"#, r#"{"m_bool":{"true":true}}"#),
    ] {
        assert_eq!(pbjson(json).unwrap(), canonical, "{json}");
        assert_eq!(keyway(json).unwrap(), canonical, "{json}");
    }
    for json in [
        r#"{"f_int32":1,"fInt32":2}"#,
        r#"{"c_uint32":1,"c_string":"a"}"#,
        r#"{"f_int32":" 1"}"#,
    ] {
        assert!(pbjson(json).is_err() && keyway(json).is_err(), "{json}");
    }
}
