//! Topics: the binding of a logical topic key to the one message type it carries.
//!
//! The generator reads the `topic_keys` message option and emits, per compiled set:
//! - a zero-sized marker type per key implementing [`Topic`], so a producer or consumer of the
//!   wrong message for a key does not compile;
//! - an impl of [`Contract`] for every payload message, naming its keys;
//! - a `TopicKey` enum of every key, parsed with [`UnknownTopicKey`] as its error.

use std::fmt;

use crate::json::JsonMessage;

/// A payload message: a message that some topic key carries.
pub trait Contract: JsonMessage + prost::Message + Default + Send + Sync + 'static {
    /// Fully qualified proto name, such as `keyway.runway.messagequeue.MergeRequest`.
    const FULL_NAME: &'static str;
    /// The topic keys that carry this message, in declaration order.
    const TOPIC_KEYS: &'static [&'static str];
}

/// A topic key and the message bound to it. Implemented by generated zero-sized marker types.
pub trait Topic: Send + Sync + 'static {
    /// The one message type this key carries.
    type Message: Contract;
    /// The logical key, such as `runway-merge`. A deployment maps it to a stream name.
    const KEY: &'static str;
}

/// A string that is not one of the compiled topic keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownTopicKey {
    key: String,
    valid: &'static [&'static str],
}

impl UnknownTopicKey {
    /// The error for `key`, given every valid key.
    pub fn new(key: &str, valid: &'static [&'static str]) -> Self {
        UnknownTopicKey {
            key: key.chars().take(300).collect(),
            valid,
        }
    }

    /// The key that was not found.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Every valid key.
    pub fn valid(&self) -> &'static [&'static str] {
        self.valid
    }
}

impl fmt::Display for UnknownTopicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown topic key {:?}; valid keys: ", self.key)?;
        if self.valid.is_empty() {
            return f.write_str("(none)");
        }
        f.write_str(&self.valid.join(", "))
    }
}

impl std::error::Error for UnknownTopicKey {}

/// Whether `key` is a valid topic name: 1 to 255 characters of `[a-z0-9_-]`.
pub fn is_valid_topic_name(key: &str) -> bool {
    (1..=255).contains(&key.len())
        && key
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(is_valid_topic_name("merge-signal"));
        assert!(is_valid_topic_name("a_1"));
        assert!(is_valid_topic_name(&"a".repeat(255)));
        assert!(!is_valid_topic_name(&"a".repeat(256)));
        assert!(!is_valid_topic_name(""));
        assert!(!is_valid_topic_name("Merge"));
        assert!(!is_valid_topic_name("merge.signal"));
        assert!(!is_valid_topic_name("merge signal"));
    }

    #[test]
    fn unknown_key_lists_the_valid_ones() {
        let e = UnknownTopicKey::new("nope", &["a", "b"]);
        assert_eq!(
            e.to_string(),
            "unknown topic key \"nope\"; valid keys: a, b"
        );
    }
}
