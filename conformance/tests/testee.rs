//! The conformance testee (`keyway-conformance-testee`), driven the way protobuf's
//! conformance runner drives it: length-prefixed requests on its standard input, answers on its
//! standard output, the failure list first, the end of input last.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use keyway_conformance::kitchen_sink::keyway::fixtures::kitchen::{
    kitchen_sink::{Choice, Nested},
    KitchenSink,
};
use keyway_conformance::testee::protocol::conformance::{
    conformance_request::Payload, conformance_response::Result as Outcome, ConformanceRequest,
    ConformanceResponse, FailureSet, TestCategory, WireFormat,
};
use keyway_conformance::testee::{self, JsonOptions, MessageType, MessageTypes};
use keyway_runtime::{json, wkt};
use prost::Message;

const KITCHEN_SINK: &str = "keyway.fixtures.kitchen.KitchenSink";

/// The testee as a child process, spoken to like the runner does.
struct Testee {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
}

impl Testee {
    fn start() -> Testee {
        let mut child = Command::new(env!("CARGO_BIN_EXE_keyway-conformance-testee"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the testee binary starts");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        Testee {
            child,
            stdin,
            stdout,
        }
    }

    fn send_raw(&mut self, frame: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(frame).expect("write to the testee");
        stdin.flush().expect("flush to the testee");
    }

    fn ask_raw(&mut self, request: &[u8]) -> Outcome {
        let len = u32::try_from(request.len()).expect("a small request");
        let mut frame = len.to_le_bytes().to_vec();
        frame.extend_from_slice(request);
        self.send_raw(&frame);
        let mut prefix = [0u8; 4];
        self.stdout
            .read_exact(&mut prefix)
            .expect("the testee answers with a length");
        let mut response = vec![0u8; u32::from_le_bytes(prefix) as usize];
        self.stdout
            .read_exact(&mut response)
            .expect("the testee answers with the whole response");
        ConformanceResponse::decode(response.as_slice())
            .expect("the answer is a ConformanceResponse")
            .result
            .expect("the answer has a result")
    }

    fn ask(&mut self, request: &ConformanceRequest) -> Outcome {
        self.ask_raw(&request.encode_to_vec())
    }

    /// Close the testee's input; returns its exit code and standard error, after checking that
    /// it wrote nothing more.
    fn finish(mut self) -> (Option<i32>, String) {
        drop(self.stdin.take());
        let mut rest = Vec::new();
        self.stdout
            .read_to_end(&mut rest)
            .expect("read the testee's output to the end");
        assert!(rest.is_empty(), "unasked output: {rest:?}");
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut stderr)
                .expect("read the testee's stderr");
        }
        let status = self.child.wait().expect("the testee exits");
        (status.code(), stderr)
    }

    /// Close the testee's input and require a clean exit.
    fn finish_cleanly(self) {
        let (code, stderr) = self.finish();
        assert_eq!(code, Some(0), "the testee exited with {code:?}: {stderr}");
    }
}

fn request(
    message_type: &str,
    payload: Payload,
    output: WireFormat,
    category: TestCategory,
) -> ConformanceRequest {
    ConformanceRequest {
        payload: Some(payload),
        requested_output_format: output as i32,
        message_type: message_type.to_owned(),
        test_category: category as i32,
        ..Default::default()
    }
}

fn binary_request(message: &KitchenSink, output: WireFormat) -> ConformanceRequest {
    request(
        KITCHEN_SINK,
        Payload::ProtobufPayload(message.encode_to_vec()),
        output,
        TestCategory::BinaryTest,
    )
}

fn json_request(json: &str, output: WireFormat, category: TestCategory) -> ConformanceRequest {
    request(
        KITCHEN_SINK,
        Payload::JsonPayload(json.to_owned()),
        output,
        category,
    )
}

fn binary_payload(outcome: Outcome) -> KitchenSink {
    match outcome {
        Outcome::ProtobufPayload(bytes) => {
            KitchenSink::decode(bytes.as_slice()).expect("the answer is a KitchenSink")
        }
        other => panic!("expected a binary payload, got {other:?}"),
    }
}

/// Decoded with Keyway's reader, which takes either key style, so the check is on values.
fn json_payload(outcome: Outcome) -> KitchenSink {
    match outcome {
        Outcome::JsonPayload(text) => {
            json::from_str(&text).unwrap_or_else(|e| panic!("{text} does not decode: {e}"))
        }
        other => panic!("expected a JSON payload, got {other:?}"),
    }
}

fn sample() -> KitchenSink {
    KitchenSink {
        f_int32: -7,
        f_int64: i64::MIN,
        f_uint64: u64::MAX,
        f_sint32: -3,
        f_double: 0.1,
        f_bool: true,
        f_string: "tü\"pe\n".into(),
        f_bytes: vec![0, 255, 10],
        f_nested: Some(Box::new(Nested {
            a: 5,
            corecursive: Some(Box::new(KitchenSink {
                f_int32: 9,
                ..Default::default()
            })),
        })),
        o_int32: Some(0),
        r_int64: vec![1, -1, i64::MAX],
        r_string: vec![String::new(), "x".into()],
        m_string: HashMap::from([("k".into(), "v".into()), ("".into(), "empty".into())]),
        m_int32: HashMap::from([(1, -1), (-2, 2)]),
        choice: Some(Choice::CString("chosen".into())),
        w_timestamp: Some(wkt::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5_000,
        }),
        w_int32: Some(0),
        r#type: "kind".into(),
        camel_case_name: 3,
        ..Default::default()
    }
}

#[test]
fn the_failure_list_comes_first_and_is_empty() {
    let mut testee = Testee::start();
    // The runner's first request: no payload, only the type name.
    let outcome = testee.ask(&ConformanceRequest {
        message_type: testee::FAILURE_SET.into(),
        requested_output_format: WireFormat::Protobuf as i32,
        ..Default::default()
    });
    match outcome {
        Outcome::ProtobufPayload(bytes) => {
            let failures = FailureSet::decode(bytes.as_slice()).expect("a FailureSet");
            assert_eq!(failures, FailureSet::default());
        }
        other => panic!("expected a FailureSet, got {other:?}"),
    }
    testee.finish_cleanly();
}

#[test]
fn binary_and_json_round_trip_through_the_process() {
    let mut testee = Testee::start();
    let message = sample();

    let binary = binary_payload(testee.ask(&binary_request(&message, WireFormat::Protobuf)));
    assert_eq!(binary, message);

    let json_out = json_payload(testee.ask(&binary_request(&message, WireFormat::Json)));
    assert_eq!(json_out, message);

    let text = json::to_string(&message).expect("the sample encodes");
    let from_json = binary_payload(testee.ask(&json_request(
        &text,
        WireFormat::Protobuf,
        TestCategory::JsonTest,
    )));
    assert_eq!(from_json, message);

    let json_again = json_payload(testee.ask(&json_request(
        &text,
        WireFormat::Json,
        TestCategory::JsonTest,
    )));
    assert_eq!(json_again, message);

    // lowerCamelCase input reads as well as proto names.
    let camel = binary_payload(testee.ask(&json_request(
        r#"{"fInt32":4,"oInt32":0,"renamed":"r"}"#,
        WireFormat::Protobuf,
        TestCategory::JsonTest,
    )));
    assert_eq!(
        camel,
        KitchenSink {
            f_int32: 4,
            o_int32: Some(0),
            with_json_name: "r".into(),
            ..Default::default()
        }
    );
    testee.finish_cleanly();
}

#[test]
fn any_can_hold_every_type_of_the_table() {
    let mut testee = Testee::start();
    let json = r#"{"w_any":{"@type":"type.googleapis.com/keyway.fixtures.kitchen.KitchenSink.Nested","a":12}}"#;
    let message = binary_payload(testee.ask(&json_request(
        json,
        WireFormat::Protobuf,
        TestCategory::JsonTest,
    )));
    let any = message.w_any.expect("w_any is set");
    assert_eq!(
        any.type_url,
        "type.googleapis.com/keyway.fixtures.kitchen.KitchenSink.Nested"
    );
    assert_eq!(
        Nested::decode(any.value.as_slice()).expect("a Nested"),
        Nested {
            a: 12,
            corecursive: None
        }
    );
    testee.finish_cleanly();
}

#[test]
fn bad_payloads_are_parse_errors_and_unwritable_ones_serialize_errors() {
    let mut testee = Testee::start();
    for (json, names) in [
        (r#"{"f_int32":"twelve"}"#, "f_int32"),
        (r#"{"f_int32":1"#, "JSON payload"),
        (r#"{"r_int64":[1,1.5]}"#, "r_int64[1]"),
    ] {
        match testee.ask(&json_request(
            json,
            WireFormat::Protobuf,
            TestCategory::JsonTest,
        )) {
            Outcome::ParseError(e) => assert!(e.contains(names), "{json}: {e}"),
            other => panic!("{json}: expected a parse error, got {other:?}"),
        }
    }

    // A field-1 varint cut short.
    let truncated = request(
        KITCHEN_SINK,
        Payload::ProtobufPayload(vec![0x08, 0xff]),
        WireFormat::Json,
        TestCategory::BinaryTest,
    );
    match testee.ask(&truncated) {
        Outcome::ParseError(e) => assert!(e.starts_with("binary payload"), "{e}"),
        other => panic!("expected a parse error, got {other:?}"),
    }

    // Valid binary, but a Timestamp outside 0001–9999 has no JSON form.
    let far = KitchenSink {
        w_timestamp: Some(wkt::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        }),
        ..Default::default()
    };
    match testee.ask(&binary_request(&far, WireFormat::Json)) {
        Outcome::SerializeError(e) => assert!(e.contains("Timestamp"), "{e}"),
        other => panic!("expected a serialize error, got {other:?}"),
    }
    // The same message is fine in binary.
    assert_eq!(
        binary_payload(testee.ask(&binary_request(&far, WireFormat::Protobuf))),
        far
    );
    testee.finish_cleanly();
}

#[test]
fn unknown_fields_are_ignored_when_the_category_says_so() {
    let mut testee = Testee::start();
    let message = binary_payload(testee.ask(&json_request(
        r#"{"f_int32":1,"no_such_field":{"a":[1,{"b":null}]}}"#,
        WireFormat::Protobuf,
        TestCategory::JsonIgnoreUnknownParsingTest,
    )));
    assert_eq!(
        message,
        KitchenSink {
            f_int32: 1,
            ..Default::default()
        }
    );
    testee.finish_cleanly();
}

#[test]
fn json_options_follow_the_test_category() {
    for category in [
        TestCategory::UnspecifiedTest,
        TestCategory::BinaryTest,
        TestCategory::JsonTest,
        TestCategory::JsonIgnoreUnknownParsingTest,
    ] {
        let options = JsonOptions::for_category(category);
        assert!(options.camel_case_keys, "{category:?}");
        assert_eq!(
            options.ignore_unknown_fields,
            category == TestCategory::JsonIgnoreUnknownParsingTest,
            "{category:?}"
        );
    }
}

#[test]
fn what_the_testee_does_not_support_is_skipped() {
    let mut testee = Testee::start();
    let message = sample().encode_to_vec();
    let cases = [
        (
            request(
                "protobuf_test_messages.no_such.Message",
                Payload::ProtobufPayload(message.clone()),
                WireFormat::Protobuf,
                TestCategory::BinaryTest,
            ),
            "protobuf_test_messages.no_such.Message",
        ),
        (
            request(
                "protobuf_test_messages.editions.proto3.TestAllTypesProto3",
                Payload::ProtobufPayload(message.clone()),
                WireFormat::Protobuf,
                TestCategory::BinaryTest,
            ),
            "editions",
        ),
        (
            request(
                KITCHEN_SINK,
                Payload::TextPayload("f_int32: 1".into()),
                WireFormat::TextFormat,
                TestCategory::TextFormatTest,
            ),
            "text format",
        ),
        (
            request(
                KITCHEN_SINK,
                Payload::ProtobufPayload(message.clone()),
                WireFormat::TextFormat,
                TestCategory::BinaryTest,
            ),
            "text-format output",
        ),
        (
            request(
                KITCHEN_SINK,
                Payload::JspbPayload("[]".into()),
                WireFormat::Jspb,
                TestCategory::JspbTest,
            ),
            "JSPB",
        ),
    ];
    for (request, says) in cases {
        match testee.ask(&request) {
            Outcome::Skipped(why) => assert!(why.contains(says), "{why}"),
            other => panic!("{request:?}: expected skipped, got {other:?}"),
        }
    }
    testee.finish_cleanly();
}

#[test]
fn a_bad_request_is_a_runtime_error_and_serving_goes_on() {
    let mut testee = Testee::start();
    // Field 1, length-delimited, claims 5 bytes that are not there: not a ConformanceRequest.
    match testee.ask_raw(&[0x0a, 0x05]) {
        Outcome::RuntimeError(e) => assert!(e.contains("ConformanceRequest"), "{e}"),
        other => panic!("expected a runtime error, got {other:?}"),
    }
    let no_format = ConformanceRequest {
        requested_output_format: WireFormat::Unspecified as i32,
        ..binary_request(&sample(), WireFormat::Protobuf)
    };
    match testee.ask(&no_format) {
        Outcome::RuntimeError(e) => assert!(e.contains("no output format"), "{e}"),
        other => panic!("expected a runtime error, got {other:?}"),
    }
    let no_payload = ConformanceRequest {
        payload: None,
        ..binary_request(&sample(), WireFormat::Protobuf)
    };
    match testee.ask(&no_payload) {
        Outcome::RuntimeError(e) => assert!(e.contains("no payload"), "{e}"),
        other => panic!("expected a runtime error, got {other:?}"),
    }
    assert_eq!(
        binary_payload(testee.ask(&binary_request(&sample(), WireFormat::Protobuf))),
        sample()
    );
    testee.finish_cleanly();
}

#[test]
fn input_ending_inside_a_request_fails_naming_it() {
    let mut testee = Testee::start();
    assert!(matches!(
        testee.ask(&binary_request(&sample(), WireFormat::Protobuf)),
        Outcome::ProtobufPayload(_)
    ));
    let mut frame = 100u32.to_le_bytes().to_vec();
    frame.extend_from_slice(&[0; 10]);
    testee.send_raw(&frame);
    let (code, stderr) = testee.finish();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("request 2 (10 of 100 bytes)"),
        "stderr: {stderr}"
    );

    let mut testee = Testee::start();
    testee.send_raw(&[7, 0]);
    let (code, stderr) = testee.finish();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("length prefix of request 1 (2 of 4 bytes)"),
        "stderr: {stderr}"
    );
}

fn panics(_: testee::Input<'_>, _: testee::Output, _: &JsonOptions) -> Outcome {
    panic!("a bug in a message type");
}

#[test]
fn a_panic_is_answered_as_a_runtime_error_and_serving_goes_on() {
    let types = MessageTypes::new(vec![
        MessageType::of::<KitchenSink>(),
        MessageType::custom("test.Panics", panics),
    ]);
    let mut input = Vec::new();
    for request in [
        request(
            "test.Panics",
            Payload::ProtobufPayload(Vec::new()),
            WireFormat::Protobuf,
            TestCategory::BinaryTest,
        ),
        binary_request(&sample(), WireFormat::Protobuf),
    ] {
        let bytes = request.encode_to_vec();
        input.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        input.extend_from_slice(&bytes);
    }
    let mut output = Vec::new();
    let served = testee::serve(input.as_slice(), &mut output, &types).expect("serving succeeds");
    assert_eq!(served, 2);

    let mut rest = output.as_slice();
    let mut outcomes = Vec::new();
    while !rest.is_empty() {
        let (prefix, tail) = rest.split_at(4);
        let len = u32::from_le_bytes(prefix.try_into().expect("4 bytes")) as usize;
        let (response, tail) = tail.split_at(len);
        outcomes.push(
            ConformanceResponse::decode(response)
                .expect("a ConformanceResponse")
                .result
                .expect("a result"),
        );
        rest = tail;
    }
    assert_eq!(outcomes.len(), 2);
    match &outcomes[0] {
        Outcome::RuntimeError(e) => {
            assert!(
                e.contains("test.Panics") && e.contains("a bug in a message type"),
                "{e}"
            )
        }
        other => panic!("expected a runtime error, got {other:?}"),
    }
    assert_eq!(binary_payload(outcomes[1].clone()), sample());
}

#[test]
fn the_builtin_table_names_the_generated_messages() {
    let types = MessageTypes::builtin();
    let names: Vec<&str> = types.names().collect();
    assert!(names.contains(&KITCHEN_SINK), "{names:?}");
    for name in names {
        assert_eq!(types.get(name).map(MessageType::full_name), Some(name));
    }
    assert!(types.get(testee::FAILURE_SET).is_none());
}
