//! The contract's generated topic registry.

use keyway::runway::messagequeue::{MergeRequest, MergeResult};
use keyway::topics::{
    MergeConflictCheck, MergeConflictCheckSignal, MergeSignal, RunwayMerge, TopicKey,
};
use keyway_runtime::topic::{Contract, Topic};

#[test]
fn the_contract_binds_exactly_four_keys_each_to_one_message() {
    let bound: Vec<(&str, &str)> = TopicKey::ALL
        .iter()
        .map(|k| (k.as_str(), k.message_name()))
        .collect();
    assert_eq!(
        bound,
        [
            (
                "merge-conflict-check",
                "keyway.runway.messagequeue.MergeRequest"
            ),
            ("runway-merge", "keyway.runway.messagequeue.MergeRequest"),
            (
                "merge-conflict-check-signal",
                "keyway.runway.messagequeue.MergeResult"
            ),
            ("merge-signal", "keyway.runway.messagequeue.MergeResult"),
        ]
    );
}

#[test]
fn keys_parse_and_display() {
    for key in TopicKey::ALL {
        assert_eq!(key.as_str().parse::<TopicKey>().unwrap(), *key);
        assert_eq!(key.to_string(), key.as_str());
    }
    let err = "runway_merge".parse::<TopicKey>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unknown topic key \"runway_merge\"; valid keys: merge-conflict-check, runway-merge, merge-conflict-check-signal, merge-signal"
    );
}

#[test]
fn the_reverse_index_agrees_with_each_contract() {
    fn keys_of<M: Contract>() -> Vec<&'static str> {
        TopicKey::for_message(M::FULL_NAME)
            .map(TopicKey::as_str)
            .collect()
    }
    assert_eq!(keys_of::<MergeRequest>(), MergeRequest::TOPIC_KEYS);
    assert_eq!(keys_of::<MergeResult>(), MergeResult::TOPIC_KEYS);
    assert_eq!(
        MergeRequest::TOPIC_KEYS,
        ["merge-conflict-check", "runway-merge"]
    );
    assert_eq!(
        MergeResult::FULL_NAME,
        "keyway.runway.messagequeue.MergeResult"
    );
    assert_eq!(
        TopicKey::for_message("keyway.runway.messagequeue.MergeStep").count(),
        0
    );
}

#[test]
fn markers_carry_their_key_and_message() {
    fn key<T: Topic>() -> &'static str {
        T::KEY
    }
    fn same<A: 'static, B: 'static>() -> bool {
        std::any::TypeId::of::<A>() == std::any::TypeId::of::<B>()
    }
    assert_eq!(key::<RunwayMerge>(), "runway-merge");
    assert_eq!(RunwayMerge::TOPIC_KEY, TopicKey::RunwayMerge);
    assert!(same::<<RunwayMerge as Topic>::Message, MergeRequest>());
    assert!(same::<<MergeConflictCheck as Topic>::Message, MergeRequest>());
    assert!(same::<<MergeSignal as Topic>::Message, MergeResult>());
    assert!(same::<
        <MergeConflictCheckSignal as Topic>::Message,
        MergeResult,
    >());
}
