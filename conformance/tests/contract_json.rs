//! The contract's JSON: tolerant where the mapping says so, strict and precise elsewhere.

use keyway::base::change::Change;
use keyway::base::mergestrategy::Strategy;
use keyway::runway::messagequeue::{MergeRequest, MergeResult, MergeStep, Outcome};
use keyway_runtime::json::{from_slice, from_str, to_string, DecodeError, DecodeErrorKind};

fn request(json: &str) -> MergeRequest {
    from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn error(json: &[u8]) -> DecodeError {
    match from_slice::<MergeRequest>(json) {
        Ok(m) => panic!("{} decoded to {m:?}", String::from_utf8_lossy(json)),
        Err(e) => e,
    }
}

#[test]
fn camel_case_keys_are_read() {
    let r = request(r#"{"queueName":"q","steps":[{"stepId":"s"}]}"#);
    assert_eq!(r.queue_name, "q");
    assert_eq!(r.steps[0].step_id, "s");
}

#[test]
fn enums_read_by_name_or_number_and_write_by_name() {
    let by_name = request(r#"{"steps":[{"strategy":"MERGE"}]}"#);
    let by_number = request(r#"{"steps":[{"strategy":3}]}"#);
    assert_eq!(by_name, by_number);
    assert_eq!(by_name.steps[0].strategy(), Strategy::Merge);
    assert_eq!(
        to_string(&by_number).unwrap(),
        r#"{"steps":[{"strategy":"MERGE"}]}"#
    );
}

#[test]
fn unknown_enum_numbers_are_kept_and_written_back() {
    let r = request(r#"{"steps":[{"strategy":42}]}"#);
    assert_eq!(r.steps[0].strategy, 42);
    assert_eq!(to_string(&r).unwrap(), r#"{"steps":[{"strategy":42}]}"#);
}

#[test]
fn unknown_enum_names_are_ignored_like_unknown_fields() {
    let r = request(r#"{"steps":[{"step_id":"s","strategy":"OCTOPUS"}]}"#);
    assert_eq!(r.steps[0].strategy, 0);
    assert_eq!(r.steps[0].step_id, "s");
}

#[test]
fn null_reads_as_default() {
    let r = request(r#"{"id":null,"queue_name":"q","steps":null}"#);
    assert_eq!(
        r,
        MergeRequest {
            queue_name: "q".into(),
            ..Default::default()
        }
    );
    let s: MergeStep = from_str(r#"{"change":null,"strategy":null}"#).unwrap();
    assert_eq!(s, MergeStep::default());
}

#[test]
fn unknown_fields_are_ignored() {
    let r = request(r#"{"id":"b","added_later":{"deep":[1,{"x":null}]},"priority":7}"#);
    assert_eq!(r.id, "b");
}

#[test]
fn defaults_are_omitted_on_write() {
    let result = MergeResult {
        outcome: Outcome::Unspecified as i32,
        ..Default::default()
    };
    assert_eq!(to_string(&result).unwrap(), "{}");
    let step = MergeStep {
        change: Some(Change::default()),
        ..Default::default()
    };
    assert_eq!(to_string(&step).unwrap(), r#"{"change":{}}"#);
}

#[test]
fn wrong_json_types_name_the_path() {
    let e = error(br#"{"steps":[{},{},{"change":{"uris":[7]}}]}"#);
    assert_eq!(e.path_string(), "steps[2].change.uris[0]");
    assert_eq!(
        e.kind(),
        &DecodeErrorKind::Type {
            expected: "a string",
            found: "a number"
        }
    );
    assert!(
        e.to_string()
            .starts_with("steps[2].change.uris[0]: expected a string, found a number"),
        "{e}"
    );

    let e = error(br#"{"id":12}"#);
    assert_eq!(
        e.to_string(),
        "id: expected a string, found a number (at byte 6)"
    );
    let e = error(br#"{"steps":{}}"#);
    assert_eq!(e.path_string(), "steps");
    let e = error(br#"[]"#);
    assert_eq!(e.path_string(), "");
    assert_eq!(
        e.kind(),
        &DecodeErrorKind::Type {
            expected: "an object",
            found: "an array"
        }
    );
}

#[test]
fn a_field_given_twice_is_rejected_under_either_name() {
    let e = error(br#"{"queue_name":"a","queueName":"b"}"#);
    assert_eq!(e.kind(), &DecodeErrorKind::DuplicateField("queue_name"));
    let e = error(br#"{"id":"a","id":"a"}"#);
    assert_eq!(e.kind(), &DecodeErrorKind::DuplicateField("id"));
}

#[test]
fn invalid_utf8_is_rejected_with_its_path() {
    let e = error(b"{\"steps\":[{\"step_id\":\"ok\xff\"}]}");
    assert_eq!(e.kind(), &DecodeErrorKind::InvalidUtf8);
    assert_eq!(e.path_string(), "steps[0].step_id");
}

#[test]
fn truncated_and_malformed_json_is_rejected() {
    for bad in [
        &br#"{"id":"b""#[..],
        br#"{"id":"b"#,
        br#"{"id":"#,
        br#"{"steps":[{}"#,
        br#"{"id":"b",}"#,
        br#"{"id" "b"}"#,
        br#"{"id":"b"} x"#,
        br#"{id:"b"}"#,
        b"",
    ] {
        let e = error(bad);
        assert!(
            matches!(
                e.kind(),
                DecodeErrorKind::Syntax(_) | DecodeErrorKind::Type { .. }
            ),
            "{}: {e}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn numbers_where_strings_belong_and_out_of_range_enums_are_rejected() {
    let e = error(br#"{"queue_name":1.5}"#);
    assert_eq!(e.path_string(), "queue_name");
    // A string in an enum field is a name; a name nobody knows is ignored, not parsed.
    assert_eq!(
        request(r#"{"steps":[{"strategy":"3"}]}"#).steps[0].strategy,
        0
    );
    let e = error(br#"{"steps":[{"strategy":2147483648}]}"#);
    assert!(e.to_string().contains("out of range"), "{e}");
    let e = error(br#"{"steps":[{"strategy":1.5}]}"#);
    assert!(e.to_string().contains("not an integer"), "{e}");
}

#[test]
fn errors_never_echo_the_payload() {
    let secret = "s3cr3t-".repeat(200);
    let json = format!(r#"{{"id":"{secret}","steps":[{{"step_id":{{"x":"{secret}"}}}}]}}"#);
    let e = error(json.as_bytes());
    assert!(!e.to_string().contains("s3cr3t"), "{e}");
    assert_eq!(e.path_string(), "steps[0].step_id");
}
