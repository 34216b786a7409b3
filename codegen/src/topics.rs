//! Topic bindings: the `topic_keys` message option read from the descriptor pool, validated,
//! and turned into typed Rust bindings.
//!
//! Rules, each reported at the option in the `.proto` file, all at once:
//! - a key is a valid topic name: 1 to 255 characters of `[a-z0-9_-]`;
//! - a key is listed once per message;
//! - a key is bound to one message only;
//! - only top-level messages are payloads. A nested message is part of its parent's shape, and
//!   keeping payloads at the top level gives each one a stable full name to pair across
//!   versions of the contract;
//! - two keys do not map to the same Rust name (`a-b` and `a_b` both give `AB`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use prost_reflect::{DescriptorPool, ExtensionDescriptor, MessageDescriptor, Value};

use crate::diagnostics::{Diagnostic, Location};
use crate::names;

/// The name of the option that binds topic keys to a payload message.
pub const TOPIC_KEYS_OPTION: &str = "topic_keys";
/// Its field number on `google.protobuf.MessageOptions`.
pub const TOPIC_KEYS_NUMBER: u32 = 50001;

/// One key bound to one message.
#[derive(Debug, Clone)]
pub struct TopicBinding {
    /// The key, as written.
    pub key: String,
    /// The message it carries.
    pub message: MessageDescriptor,
    /// Where the option is written, when the descriptor has source info.
    pub location: Option<Location>,
}

impl TopicBinding {
    /// The marker type's name: the key in UpperCamelCase (`runway-merge` → `RunwayMerge`).
    pub fn rust_name(&self) -> String {
        names::upper_camel(&self.key.replace('-', "_"))
    }
}

/// The `topic_keys` extension of `pool`: the one extension of `google.protobuf.MessageOptions`
/// named `topic_keys`, or the one named `full_name` when given.
pub(crate) fn find_extension(
    pool: &DescriptorPool,
    full_name: Option<&str>,
) -> Result<Option<ExtensionDescriptor>, Vec<Diagnostic>> {
    if let Some(name) = full_name {
        return match pool.get_extension_by_name(name) {
            Some(ext) => Ok(Some(ext)),
            None => Err(vec![Diagnostic::message(format!(
                "the topic keys option `{name}` is not defined in the compiled files"
            ))]),
        };
    }
    let found: Vec<ExtensionDescriptor> = pool
        .all_extensions()
        .filter(|e| {
            e.containing_message().full_name() == "google.protobuf.MessageOptions"
                && e.name() == TOPIC_KEYS_OPTION
        })
        .collect();
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        many => Err(vec![Diagnostic::message(format!(
            "more than one `topic_keys` message option is defined ({}); choose one with Builder::topic_keys_extension",
            many.iter().map(|e| e.full_name()).collect::<Vec<_>>().join(", ")
        ))]),
    }
}

/// Every binding in `pool`, in file order, then message order, then option order.
pub(crate) fn bindings(
    pool: &DescriptorPool,
    extension: &ExtensionDescriptor,
    sources: &BTreeMap<String, String>,
) -> Vec<TopicBinding> {
    let mut out = Vec::new();
    for message in pool.all_messages() {
        let options = message.options();
        if !options.has_extension(extension) {
            continue;
        }
        let Value::List(keys) = options.get_extension(extension).into_owned() else {
            continue;
        };
        for (index, key) in keys.iter().enumerate() {
            let Some(key) = key.as_str() else { continue };
            let mut path = message.path().to_vec();
            path.extend([7, extension.number() as i32, index as i32]);
            out.push(TopicBinding {
                key: key.to_owned(),
                location: Location::of_path(
                    &message.parent_file(),
                    &path,
                    message.path().len(),
                    sources,
                ),
                message: message.clone(),
            });
        }
    }
    out
}

/// Every violation of the binding rules.
pub(crate) fn validate(bindings: &[TopicBinding]) -> Vec<Diagnostic> {
    let mut problems = Vec::new();
    let mut first_binding: BTreeMap<&str, &TopicBinding> = BTreeMap::new();
    let mut rust_names: BTreeMap<String, &TopicBinding> = BTreeMap::new();
    for b in bindings {
        let message = b.message.full_name();
        if !is_valid_topic_name(&b.key) {
            problems.push(Diagnostic::at(
                format!(
                    "topic key {:?} on `{message}` is not a valid topic name",
                    b.key
                ),
                b.location.clone(),
                "invalid key",
                Some("topic names are 1 to 255 characters of `a-z`, `0-9`, `_` and `-`".into()),
            ));
        }
        if b.message.parent_message().is_some() {
            problems.push(Diagnostic::at(
                format!("`{message}` is a nested message and cannot carry topic keys"),
                b.location.clone(),
                "on a nested message",
                Some(
                    "move the message to the top level of its file: its JSON does not change"
                        .into(),
                ),
            ));
        }
        match first_binding.get(b.key.as_str()) {
            Some(first) if first.message.full_name() == message => {
                problems.push(Diagnostic::at(
                    format!(
                        "topic key {:?} is listed more than once on `{message}`",
                        b.key
                    ),
                    b.location.clone(),
                    "listed again here",
                    Some("remove the repeated option".into()),
                ));
                continue;
            }
            Some(first) => {
                problems.push(Diagnostic::at(
                    format!(
                        "topic key {:?} is bound to both `{}` and `{message}`",
                        b.key,
                        first.message.full_name()
                    ),
                    b.location.clone(),
                    "second binding",
                    Some(format!(
                        "a topic key carries exactly one message type; the first binding is {}",
                        first
                            .location
                            .as_ref()
                            .map(|l| format!("at {}:{}:{}", l.file, l.line, l.column))
                            .unwrap_or_else(|| format!("on `{}`", first.message.full_name()))
                    )),
                ));
                continue;
            }
            None => {
                first_binding.insert(&b.key, b);
            }
        }
        let rust_name = b.rust_name();
        match rust_names.get(&rust_name) {
            Some(other) if other.key != b.key => problems.push(Diagnostic::at(
                format!(
                    "topic keys {:?} and {:?} both become the Rust name `{rust_name}`",
                    other.key, b.key
                ),
                b.location.clone(),
                "same Rust name",
                Some("keys that differ only in `-` versus `_` cannot both be used".into()),
            )),
            _ => {
                rust_names.insert(rust_name, b);
            }
        }
    }
    problems
}

/// 1 to 255 characters of `[a-z0-9_-]` (the runtime checks stream names by the same rule).
fn is_valid_topic_name(key: &str) -> bool {
    (1..=255).contains(&key.len())
        && key
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

/// The Rust path of `message` from the `topics` module, which sits at the root of the
/// generated module tree.
fn message_path_from_topics(message: &MessageDescriptor) -> String {
    let mut parts = vec!["super".to_owned()];
    parts.extend(names::package_modules(message.package_name()));
    parts.push(names::message_path(message));
    parts.join("::")
}

/// The `topics` module: `TopicKey`, a marker type per key, stub aliases, `Contract` impls.
pub(crate) fn generate(bindings: &[TopicBinding], runtime: &str) -> String {
    let rt = format!("{runtime}::__private");
    let mut out = String::new();

    out.push_str(
        "/// Every topic key of this contract, each bound to the one message type it carries.\n",
    );
    out.push_str("#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]\npub enum TopicKey {\n");
    for b in bindings {
        writeln!(
            out,
            "/// `{}`: carries `{}`.\n{},",
            b.key,
            b.message.full_name(),
            b.rust_name()
        )
        .unwrap();
    }
    out.push_str("}\n\nimpl TopicKey {\n");
    out.push_str("/// Every key, in the order the `.proto` files declare them.\npub const ALL: &'static [TopicKey] = &[");
    for b in bindings {
        write!(out, "TopicKey::{}, ", b.rust_name()).unwrap();
    }
    out.push_str("];\n\nconst NAMES: &'static [&'static str] = &[");
    for b in bindings {
        write!(out, "{:?}, ", b.key).unwrap();
    }
    out.push_str("];\n\n");
    out.push_str("/// The key as written in the `.proto` file.\npub const fn as_str(self) -> &'static str {\nmatch self {\n");
    for b in bindings {
        writeln!(out, "TopicKey::{} => {:?},", b.rust_name(), b.key).unwrap();
    }
    out.push_str("}\n}\n\n");
    out.push_str("/// Full proto name of the message this key carries.\npub const fn message_name(self) -> &'static str {\nmatch self {\n");
    for b in bindings {
        writeln!(
            out,
            "TopicKey::{} => {:?},",
            b.rust_name(),
            b.message.full_name()
        )
        .unwrap();
    }
    out.push_str("}\n}\n\n");
    out.push_str(
        "/// The keys that carry the message named `full_name`.\n\
         pub fn for_message(full_name: &str) -> impl Iterator<Item = TopicKey> + '_ {\n\
         Self::ALL.iter().copied().filter(move |k| k.message_name() == full_name)\n}\n}\n\n",
    );
    writeln!(
        out,
        "impl ::core::str::FromStr for TopicKey {{\ntype Err = {rt}::UnknownTopicKey;\nfn from_str(s: &str) -> ::core::result::Result<Self, Self::Err> {{\nmatch s {{"
    )
    .unwrap();
    for b in bindings {
        writeln!(out, "{:?} => Ok(TopicKey::{}),", b.key, b.rust_name()).unwrap();
    }
    writeln!(
        out,
        "_ => Err({rt}::UnknownTopicKey::new(s, Self::NAMES)),\n}}\n}}\n}}\n"
    )
    .unwrap();
    out.push_str(
        "impl ::core::fmt::Display for TopicKey {\n\
         fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {\n\
         f.write_str(self.as_str())\n}\n}\n\n",
    );

    for b in bindings {
        let name = b.rust_name();
        let message = message_path_from_topics(&b.message);
        let full = b.message.full_name();
        writeln!(
            out,
            "/// Topic `{key}`, which carries `{full}`.\n\
             #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]\n\
             pub struct {name};\n\n\
             impl {rt}::Topic for {name} {{\n\
             type Message = {message};\n\
             const KEY: &'static str = {key:?};\n}}\n\n\
             impl {name} {{\n\
             /// This topic's [`TopicKey`].\n\
             pub const TOPIC_KEY: TopicKey = TopicKey::{name};\n}}\n\n\
             /// Publishes `{full}` on `{key}`.\n\
             pub type {name}Producer<P> = {rt}::Producer<{name}, P>;\n\n\
             /// Consumes `{full}` from `{key}`.\n\
             pub type {name}Consumer<H> = {rt}::Consumer<{name}, H>;\n",
            key = b.key,
        )
        .unwrap();
    }

    // One Contract impl per payload message, its keys derived from the same bindings.
    let mut by_message: BTreeMap<String, (MessageDescriptor, Vec<&str>)> = BTreeMap::new();
    let mut order = Vec::new();
    for b in bindings {
        let entry = by_message
            .entry(b.message.full_name().to_owned())
            .or_insert_with(|| {
                order.push(b.message.full_name().to_owned());
                (b.message.clone(), Vec::new())
            });
        entry.1.push(&b.key);
    }
    for full in order {
        let (message, keys) = &by_message[&full];
        writeln!(
            out,
            "impl {rt}::Contract for {} {{\n\
             const FULL_NAME: &'static str = {full:?};\n\
             const TOPIC_KEYS: &'static [&'static str] = &{keys:?};\n}}\n",
            message_path_from_topics(message)
        )
        .unwrap();
    }
    out
}
