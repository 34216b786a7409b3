//! The generated contract: its descriptor set, and the `keyway` binary built on it.

use prost_reflect::{DescriptorPool, Value};

fn pool() -> DescriptorPool {
    DescriptorPool::decode(keyway::DESCRIPTOR_SET).expect("the embedded descriptor set decodes")
}

fn topic_keys(pool: &DescriptorPool, message: &str) -> Vec<String> {
    let ext = pool
        .get_extension_by_name("keyway.base.messagequeue.topic_keys")
        .expect("the topic_keys extension is in the set");
    assert_eq!(ext.number(), 50001);
    let options = pool.get_message_by_name(message).unwrap().options();
    match options.get_extension(&ext).as_ref() {
        Value::List(keys) => keys
            .iter()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect(),
        other => panic!("topic_keys of {message} is {other:?}"),
    }
}

#[test]
fn descriptor_set_keeps_topic_keys_options() {
    let pool = pool();
    assert_eq!(
        topic_keys(&pool, "keyway.runway.messagequeue.MergeRequest"),
        ["merge-conflict-check", "runway-merge"]
    );
    assert_eq!(
        topic_keys(&pool, "keyway.runway.messagequeue.MergeResult"),
        ["merge-conflict-check-signal", "merge-signal"]
    );
    assert!(topic_keys(&pool, "keyway.runway.messagequeue.MergeStep").is_empty());
}

#[test]
fn descriptor_set_keeps_imports_and_source_info() {
    let pool = pool();
    for file in [
        "google/protobuf/descriptor.proto",
        "keyway/base/change.proto",
        "keyway/base/mergestrategy.proto",
        "keyway/base/messagequeue.proto",
        "keyway/runway/messagequeue.proto",
    ] {
        assert!(pool.get_file_by_name(file).is_some(), "{file} missing");
    }
    let file = pool
        .get_file_by_name("keyway/runway/messagequeue.proto")
        .unwrap();
    let info = file
        .file_descriptor_proto()
        .source_code_info
        .as_ref()
        .expect("source info");
    assert!(info.location.iter().any(|l| l
        .leading_comments()
        .contains("Runway's answer to a MergeRequest")));
}

#[test]
fn wire_facts_of_the_contract() {
    let pool = pool();
    let number = |message: &str, field: &str| {
        pool.get_message_by_name(message)
            .unwrap()
            .get_field_by_name(field)
            .unwrap_or_else(|| panic!("{message}.{field}"))
            .number()
    };
    let m = "keyway.runway.messagequeue.";
    for (message, field, n) in [
        ("MergeStep", "step_id", 1),
        ("MergeStep", "change", 2),
        ("MergeStep", "strategy", 3),
        ("MergeRequest", "id", 1),
        ("MergeRequest", "queue_name", 2),
        ("MergeRequest", "steps", 3),
        ("StepOutput", "id", 1),
        ("StepResult", "step_id", 1),
        ("StepResult", "outputs", 2),
        ("StepResult", "reason", 3),
        ("MergeResult", "id", 1),
        ("MergeResult", "outcome", 2),
        ("MergeResult", "reason", 3),
        ("MergeResult", "steps", 4),
        ("MergeResult", "queue_name", 5),
    ] {
        assert_eq!(
            number(&format!("{m}{message}"), field),
            n,
            "{message}.{field}"
        );
    }
    assert_eq!(number("keyway.base.change.Change", "uris"), 1);
    let strategy = pool
        .get_enum_by_name("keyway.base.mergestrategy.Strategy")
        .unwrap();
    let values: Vec<_> = strategy
        .values()
        .map(|v| (v.name().to_owned(), v.number()))
        .collect();
    assert_eq!(
        values,
        [
            ("DEFAULT", 0),
            ("REBASE", 1),
            ("SQUASH_REBASE", 2),
            ("MERGE", 3),
            ("PROMOTE", 4)
        ]
        .map(|(n, v)| (n.to_owned(), v))
    );
    let outcome = pool
        .get_enum_by_name("keyway.runway.messagequeue.Outcome")
        .unwrap();
    let values: Vec<_> = outcome
        .values()
        .map(|v| (v.name().to_owned(), v.number()))
        .collect();
    assert_eq!(
        values,
        [("OUTCOME_UNSPECIFIED", 0), ("SUCCEEDED", 1), ("FAILED", 2)]
            .map(|(n, v)| (n.to_owned(), v))
    );
}
