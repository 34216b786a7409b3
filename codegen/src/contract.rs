//! Contract checks for CI, as pure functions over compiled descriptor pools:
//! - [`check`]: topic bindings, the configured registry against the bindings, and
//!   protojson-safe conventions on payload messages;
//! - [`breaking`]: what changed between a baseline and the new tree that a protobuf-JSON reader
//!   or writer of the old version would notice.
//!
//! The breaking rules follow what reaches the JSON wire when field names are proto names and
//! unknown fields are ignored on read: a removed or renamed field loses data silently, a type
//! change that changes the JSON form or range fails or corrupts, a removed enum name fails.
//! Declaration order, comments, `json_name`, and type or package renames do not reach the wire
//! and are not reported.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{
    Cardinality, EnumDescriptor, FieldDescriptor, FileDescriptor, Kind, MessageDescriptor,
};

use crate::diagnostics::{Diagnostic, Location};
use crate::topics::{self, TopicBinding};
use crate::Compiled;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Fails the check.
    Error,
    /// Reported, does not fail.
    Warning,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One problem a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Stable rule id, such as `field-removed`.
    pub rule: &'static str,
    /// How bad it is.
    pub severity: Severity,
    /// One line saying what is wrong.
    pub message: String,
    /// What to do instead.
    pub fix: String,
    /// Where, in the new tree (or the checked tree).
    pub location: Option<Location>,
    /// Where, in the baseline.
    pub old_location: Option<Location>,
}

impl Finding {
    fn new(
        rule: &'static str,
        severity: Severity,
        message: String,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            rule,
            severity,
            message,
            fix: fix.into(),
            location: None,
            old_location: None,
        }
    }

    fn at(mut self, location: Option<Location>) -> Self {
        self.location = location;
        self
    }

    fn was_at(mut self, location: Option<Location>) -> Self {
        self.old_location = location;
        self
    }

    /// The human form: `file:line:col`, the source line, a caret, and the fix.
    pub fn render(&self) -> String {
        let mut help = self.fix.clone();
        if let Some(old) = &self.old_location {
            help = format!(
                "{help} (baseline: {}:{}:{})",
                old.file, old.line, old.column
            );
        }
        Diagnostic {
            message: format!("[{}] {}", self.rule, self.message),
            location: self.location.clone(),
            label: Some(self.rule.to_owned()),
            help: Some(help),
        }
        .render_as(self.severity.as_str())
    }
}

/// Options of [`check`].
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// The topic keys the runtime's registry configures, with the config file's name and each
    /// key's line there; `None` skips the registry comparison.
    pub configured: Option<(String, BTreeMap<String, Option<usize>>)>,
    /// The `topic_keys` extension to use (default: the one named `topic_keys`).
    pub topic_keys_extension: Option<String>,
}

fn field_location(field: &FieldDescriptor, texts: &BTreeMap<String, String>) -> Option<Location> {
    Location::of_path(
        &field.parent_message().parent_file(),
        field.path(),
        2,
        texts,
    )
}

fn message_location(
    message: &MessageDescriptor,
    texts: &BTreeMap<String, String>,
) -> Option<Location> {
    Location::of_path(&message.parent_file(), message.path(), 2, texts)
}

fn enum_location(
    e: &EnumDescriptor,
    path_tail: &[i32],
    texts: &BTreeMap<String, String>,
) -> Option<Location> {
    let mut path = e.path().to_vec();
    path.extend_from_slice(path_tail);
    Location::of_path(&e.parent_file(), &path, e.path().len(), texts)
}

fn is_lower_snake(name: &str) -> bool {
    name.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.contains("__")
        && !name.ends_with('_')
}

fn zero_value_is_default(name: &str) -> bool {
    ["UNSPECIFIED", "DEFAULT", "UNSET", "UNKNOWN"]
        .iter()
        .any(|suffix| name == *suffix || name.ends_with(&format!("_{suffix}")))
}

/// Messages a payload reaches through its fields (itself included), within user packages.
fn reachable(roots: impl IntoIterator<Item = MessageDescriptor>) -> Vec<MessageDescriptor> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut stack: Vec<MessageDescriptor> = roots.into_iter().collect();
    while let Some(m) = stack.pop() {
        if m.package_name() == "google.protobuf" || !seen.insert(m.full_name().to_owned()) {
            continue;
        }
        for f in m.fields() {
            if let Kind::Message(inner) = f.kind() {
                stack.push(inner);
            }
        }
        out.push(m);
    }
    out.sort_by(|a, b| a.full_name().cmp(b.full_name()));
    out
}

/// Run the contract lint: binding rules, registry drift (with a configuration), conventions.
pub fn check(compiled: &Compiled, options: &CheckOptions) -> Vec<Finding> {
    let mut findings = Vec::new();
    let texts = &compiled.texts;
    let bindings =
        match topics::find_extension(&compiled.pool, options.topic_keys_extension.as_deref()) {
            Err(diagnostics) => {
                for d in diagnostics {
                    findings.push(Finding::new(
                        "topic-keys-option",
                        Severity::Error,
                        d.message,
                        "define exactly one `topic_keys` option",
                    ));
                }
                Vec::new()
            }
            Ok(None) => Vec::new(),
            Ok(Some(ext)) => {
                let bindings = topics::bindings(&compiled.pool, &ext, texts);
                for d in topics::validate(&bindings) {
                    findings.push(Finding {
                        rule: "topic-binding",
                        severity: Severity::Error,
                        message: d.message,
                        fix: d.help.unwrap_or_default(),
                        location: d.location,
                        old_location: None,
                    });
                }
                bindings
            }
        };

    if let Some((config_file, configured)) = &options.configured {
        let bound: BTreeSet<&str> = bindings.iter().map(|b| b.key.as_str()).collect();
        for (key, line) in configured {
            if !bound.contains(key.as_str()) {
                let location = line.map(|line| Location {
                    file: config_file.clone(),
                    line,
                    column: 1,
                    source_line: String::new(),
                    width: 1,
                });
                findings.push(
                    Finding::new(
                        "config-key-unbound",
                        Severity::Error,
                        format!("topic key {key:?} is configured but no message carries it"),
                        "bind it with a `topic_keys` option, or remove it from the configuration",
                    )
                    .at(location),
                );
            }
        }
        for b in &bindings {
            if !configured.contains_key(&b.key) {
                findings.push(
                    Finding::new(
                        "bound-key-unconfigured",
                        Severity::Error,
                        format!(
                            "topic key {:?} (bound to `{}`) is not in the configuration {config_file}",
                            b.key,
                            b.message.full_name()
                        ),
                        "add it under [topics] with its stream name",
                    )
                    .at(b.location.clone()),
                );
            }
        }
    }

    let payloads = reachable(bindings.iter().map(|b| b.message.clone()));
    let mut enums_seen = BTreeSet::new();
    for message in &payloads {
        for field in message.fields() {
            if !is_lower_snake(field.name()) {
                findings.push(
                    Finding::new(
                        "field-name-case",
                        Severity::Error,
                        format!(
                            "field `{}` of payload message `{}` is not lower_snake_case",
                            field.name(),
                            message.full_name()
                        ),
                        "payload JSON uses proto field names: name fields in lower_snake_case",
                    )
                    .at(field_location(&field, texts)),
                );
            }
            if field.field_descriptor_proto().json_name.is_some()
                && field.field_descriptor_proto().json_name() != default_json_name(field.name())
            {
                let mut path = field.path().to_vec();
                path.push(10);
                findings.push(
                    Finding::new(
                        "json-name-override",
                        Severity::Error,
                        format!(
                            "field `{}` of `{}` sets json_name {:?}, which payloads never use",
                            field.name(),
                            message.full_name(),
                            field.json_name()
                        ),
                        "remove json_name: the wire carries proto field names, so it only misleads",
                    )
                    .at(Location::of_path(
                        &message.parent_file(),
                        &path,
                        field.path().len(),
                        texts,
                    )),
                );
            }
            if let Kind::Enum(e) = field.kind() {
                if e.package_name() != "google.protobuf"
                    && enums_seen.insert(e.full_name().to_owned())
                {
                    let zero = e.values().find(|v| v.number() == 0);
                    if let Some(zero) = zero.filter(|z| !zero_value_is_default(z.name())) {
                        let index = e
                            .values()
                            .position(|v| v.name() == zero.name())
                            .unwrap_or(0);
                        let declared = e
                            .enum_descriptor_proto()
                            .value
                            .iter()
                            .position(|v| v.name() == zero.name())
                            .unwrap_or(index);
                        findings.push(
                            Finding::new(
                                "enum-zero-value",
                                Severity::Error,
                                format!(
                                    "the zero value of enum `{}` is `{}`, which reads as a real value when a field is absent",
                                    e.full_name(),
                                    zero.name()
                                ),
                                "name the zero value `<ENUM>_UNSPECIFIED` (or DEFAULT when it truly is the default)",
                            )
                            .at(enum_location(&e, &[2, declared as i32], texts)),
                        );
                    }
                }
            }
        }
    }
    findings
}

/// protoc's default JSON name: lowerCamelCase of the field name.
fn default_json_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Options of [`breaking`].
#[derive(Debug, Clone)]
pub struct BreakingOptions {
    /// Severity of a removed field (reserved or not). Default: error.
    pub removed_field: Severity,
    /// The `topic_keys` extension to use.
    pub topic_keys_extension: Option<String>,
}

impl Default for BreakingOptions {
    fn default() -> Self {
        BreakingOptions {
            removed_field: Severity::Error,
            topic_keys_extension: None,
        }
    }
}

/// How a value is written in protobuf JSON: the part of a field's type a reader sees.
#[derive(Debug, Clone, PartialEq, Eq)]
enum JsonForm {
    /// int32, sint32, sfixed32: a number in the 32-bit signed range.
    Int32,
    /// uint32, fixed32.
    Uint32,
    /// int64, sint64, sfixed64: a decimal string.
    Int64,
    /// uint64, fixed64.
    Uint64,
    Float,
    Double,
    Bool,
    String,
    Bytes,
    /// By value name.
    Enum(String),
    /// A well-known type's special form.
    WellKnown(String),
    Message(String),
}

impl JsonForm {
    fn of(kind: &Kind) -> JsonForm {
        match kind {
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => JsonForm::Int32,
            Kind::Uint32 | Kind::Fixed32 => JsonForm::Uint32,
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => JsonForm::Int64,
            Kind::Uint64 | Kind::Fixed64 => JsonForm::Uint64,
            Kind::Float => JsonForm::Float,
            Kind::Double => JsonForm::Double,
            Kind::Bool => JsonForm::Bool,
            Kind::String => JsonForm::String,
            Kind::Bytes => JsonForm::Bytes,
            Kind::Enum(e) => JsonForm::Enum(e.full_name().to_owned()),
            Kind::Message(m) if m.package_name() == "google.protobuf" => {
                JsonForm::WellKnown(m.full_name().to_owned())
            }
            Kind::Message(m) => JsonForm::Message(m.full_name().to_owned()),
        }
    }

    fn describe(&self) -> String {
        match self {
            JsonForm::Int32 => "a 32-bit signed number".into(),
            JsonForm::Uint32 => "a 32-bit unsigned number".into(),
            JsonForm::Int64 => "a 64-bit signed integer string".into(),
            JsonForm::Uint64 => "a 64-bit unsigned integer string".into(),
            JsonForm::Float => "a float".into(),
            JsonForm::Double => "a double".into(),
            JsonForm::Bool => "a boolean".into(),
            JsonForm::String => "a string".into(),
            JsonForm::Bytes => "base64 bytes".into(),
            JsonForm::Enum(n) => format!("enum {n}"),
            JsonForm::WellKnown(n) => n.clone(),
            JsonForm::Message(n) => format!("message {n}"),
        }
    }
}

fn label(field: &FieldDescriptor) -> String {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            unreachable!()
        };
        format!(
            "map<{}, {}>",
            JsonForm::of(&entry.map_entry_key_field().kind()).describe(),
            JsonForm::of(&entry.map_entry_value_field().kind()).describe()
        )
    } else if field.cardinality() == Cardinality::Repeated {
        "a list".into()
    } else {
        "a single value".into()
    }
}

fn real_oneof(field: &FieldDescriptor) -> Option<String> {
    field
        .containing_oneof()
        .filter(|o| !o.is_synthetic())
        .map(|o| o.name().to_owned())
}

fn proto3_optional(field: &FieldDescriptor) -> bool {
    field.field_descriptor_proto().proto3_optional()
}

/// Whether two messages read and write the same JSON: same field names, forms, labels,
/// presence, recursively (cycles assumed equal).
fn same_shape(a: &MessageDescriptor, b: &MessageDescriptor, depth: usize) -> bool {
    if depth > 32 || a.full_name() == b.full_name() {
        return true;
    }
    let fields_a: BTreeMap<String, FieldDescriptor> =
        a.fields().map(|f| (f.name().to_owned(), f)).collect();
    let fields_b: BTreeMap<String, FieldDescriptor> =
        b.fields().map(|f| (f.name().to_owned(), f)).collect();
    if fields_a.keys().ne(fields_b.keys()) {
        return false;
    }
    fields_a.iter().all(|(name, fa)| {
        let fb = &fields_b[name];
        label(fa) == label(fb)
            && proto3_optional(fa) == proto3_optional(fb)
            && real_oneof(fa).is_some() == real_oneof(fb).is_some()
            && same_kind(&fa.kind(), &fb.kind(), depth + 1)
    })
}

fn same_kind(a: &Kind, b: &Kind, depth: usize) -> bool {
    match (a, b) {
        (Kind::Message(ma), Kind::Message(mb))
            if ma.package_name() != "google.protobuf" && mb.package_name() != "google.protobuf" =>
        {
            same_shape(ma, mb, depth)
        }
        // The same enum: its value changes are reported on the enum itself.
        (Kind::Enum(ea), Kind::Enum(eb)) if ea.full_name() == eb.full_name() => true,
        (Kind::Enum(ea), Kind::Enum(eb)) => {
            let names = |e: &EnumDescriptor| {
                e.values()
                    .map(|v| (v.number(), v.name().to_owned()))
                    .collect::<BTreeSet<_>>()
            };
            names(ea) == names(eb)
        }
        _ => JsonForm::of(a) == JsonForm::of(b),
    }
}

struct Side<'a> {
    compiled: &'a Compiled,
    bindings: Vec<TopicBinding>,
    extension_number: Option<u32>,
}

impl<'a> Side<'a> {
    fn new(compiled: &'a Compiled, extension: Option<&str>) -> Self {
        let ext = topics::find_extension(&compiled.pool, extension)
            .ok()
            .flatten();
        let bindings = ext
            .as_ref()
            .map(|e| topics::bindings(&compiled.pool, e, &compiled.texts))
            .unwrap_or_default();
        Side {
            compiled,
            bindings,
            extension_number: ext.map(|e| e.number()),
        }
    }

    fn messages(&self) -> BTreeMap<String, MessageDescriptor> {
        self.compiled
            .pool
            .all_messages()
            .filter(|m| m.package_name() != "google.protobuf" && !m.is_map_entry())
            .map(|m| (m.full_name().to_owned(), m))
            .collect()
    }

    fn enums(&self) -> BTreeMap<String, EnumDescriptor> {
        self.compiled
            .pool
            .all_enums()
            .filter(|e| e.package_name() != "google.protobuf")
            .map(|e| (e.full_name().to_owned(), e))
            .collect()
    }

    fn keys_of(&self, message: &str) -> Vec<&TopicBinding> {
        self.bindings
            .iter()
            .filter(|b| b.message.full_name() == message)
            .collect()
    }

    fn binding(&self, key: &str) -> Option<&TopicBinding> {
        self.bindings.iter().find(|b| b.key == key)
    }
}

/// Compare `new` against the baseline `old`.
pub fn breaking(old: &Compiled, new: &Compiled, options: &BreakingOptions) -> Vec<Finding> {
    let ext = options.topic_keys_extension.as_deref();
    let (old_side, new_side) = (Side::new(old, ext), Side::new(new, ext));
    let mut findings = Vec::new();
    let (old_texts, new_texts) = (&old.texts, &new.texts);

    if let (Some(a), Some(b)) = (old_side.extension_number, new_side.extension_number) {
        if a != b {
            findings.push(Finding::new(
                "topic-keys-renumbered",
                Severity::Error,
                format!("the topic_keys option moved from field {a} to {b}"),
                "keep the option's field number: readers of the descriptor look it up by number",
            ));
        }
    }

    // Pair messages by full name, then unpaired payloads by topic key.
    let old_messages = old_side.messages();
    let new_messages = new_side.messages();
    let mut pairs: Vec<(MessageDescriptor, MessageDescriptor)> = Vec::new();
    for (name, m) in &old_messages {
        if let Some(n) = new_messages.get(name) {
            pairs.push((m.clone(), n.clone()));
            continue;
        }
        let keys = old_side.keys_of(name);
        if keys.is_empty() {
            continue; // A non-payload type renamed or moved: fields that use it compare by shape.
        }
        let partner = keys
            .iter()
            .find_map(|k| new_side.binding(&k.key))
            .map(|b| b.message.clone());
        match partner {
            Some(n) if !old_messages.contains_key(n.full_name()) || n.full_name() == name => {
                pairs.push((m.clone(), n))
            }
            _ => findings.push(
                Finding::new(
                    "payload-message-removed",
                    Severity::Error,
                    format!(
                        "payload message `{name}` (topic keys {}) is gone",
                        keys.iter()
                            .map(|k| k.key.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    "keep the message, or keep binding its keys to a message of the same shape",
                )
                .was_at(message_location(m, old_texts)),
            ),
        }
    }
    for (o, n) in &pairs {
        compare_messages(o, n, options, old_texts, new_texts, &mut findings);
    }

    // Topic keys.
    for b in &old_side.bindings {
        match new_side.binding(&b.key) {
            None => findings.push(
                Finding::new(
                    "topic-key-removed",
                    Severity::Error,
                    format!(
                        "topic key {:?} (was bound to `{}`) is no longer bound",
                        b.key,
                        b.message.full_name()
                    ),
                    "keep the key bound: producers and consumers of it would lose their contract",
                )
                .was_at(b.location.clone()),
            ),
            Some(nb) if !same_shape(&b.message, &nb.message, 0) => {
                let paired = pairs.iter().any(|(o, n)| {
                    o.full_name() == b.message.full_name()
                        && n.full_name() == nb.message.full_name()
                });
                if !paired {
                    findings.push(
                        Finding::new(
                            "topic-key-moved",
                            Severity::Error,
                            format!(
                                "topic key {:?} moved from `{}` to `{}`, whose JSON differs",
                                b.key,
                                b.message.full_name(),
                                nb.message.full_name()
                            ),
                            "bind the key to a message of the same shape, or use a new key",
                        )
                        .at(nb.location.clone())
                        .was_at(b.location.clone()),
                    );
                }
            }
            Some(_) => {}
        }
    }

    // Enums by full name.
    let new_enums = new_side.enums();
    for (name, e) in old_side.enums() {
        if let Some(n) = new_enums.get(&name) {
            compare_enums(&e, n, old_texts, new_texts, &mut findings);
        }
    }
    findings
}

fn compare_enums(
    old: &EnumDescriptor,
    new: &EnumDescriptor,
    old_texts: &BTreeMap<String, String>,
    new_texts: &BTreeMap<String, String>,
    findings: &mut Vec<Finding>,
) {
    let declared = |e: &EnumDescriptor, name: &str| {
        e.enum_descriptor_proto()
            .value
            .iter()
            .position(|v| v.name() == name)
            .unwrap_or(0) as i32
    };
    for v in old.values() {
        let same_number: Vec<_> = new.values().filter(|n| n.number() == v.number()).collect();
        if same_number.is_empty() {
            findings.push(
                Finding::new(
                    "enum-value-removed",
                    Severity::Error,
                    format!(
                        "enum value `{}` ({}) of `{}` is gone",
                        v.name(),
                        v.number(),
                        old.full_name()
                    ),
                    "keep the value (deprecate it instead): old writers still send its name",
                )
                .at(enum_location(new, &[], new_texts))
                .was_at(enum_location(
                    old,
                    &[2, declared(old, v.name())],
                    old_texts,
                )),
            );
        } else if !same_number.iter().any(|n| n.name() == v.name()) {
            let renamed = same_number[0].name();
            findings.push(
                Finding::new(
                    "enum-value-renamed",
                    Severity::Error,
                    format!(
                        "enum value {} of `{}` was renamed from `{}` to `{renamed}`",
                        v.number(),
                        old.full_name(),
                        v.name()
                    ),
                    "enums travel by name: keep the old name (add the new one as an alias)",
                )
                .at(enum_location(new, &[2, declared(new, renamed)], new_texts))
                .was_at(enum_location(
                    old,
                    &[2, declared(old, v.name())],
                    old_texts,
                )),
            );
        }
    }
    for v in new.values() {
        if !old.values().any(|o| o.number() == v.number()) {
            findings.push(
                Finding::new(
                    "enum-value-added",
                    Severity::Warning,
                    format!(
                        "enum value `{}` ({}) added to `{}`",
                        v.name(),
                        v.number(),
                        new.full_name()
                    ),
                    "readers that reject unknown enum names will fail on it until they upgrade",
                )
                .at(enum_location(new, &[2, declared(new, v.name())], new_texts)),
            );
        }
    }
}

fn compare_messages(
    old: &MessageDescriptor,
    new: &MessageDescriptor,
    options: &BreakingOptions,
    old_texts: &BTreeMap<String, String>,
    new_texts: &BTreeMap<String, String>,
    findings: &mut Vec<Finding>,
) {
    let name = new.full_name();
    for of in old.fields() {
        let by_name = new.get_field_by_name(of.name());
        let by_number = new.get_field(of.number());
        let nf = match (by_name, by_number) {
            (Some(nf), _) => {
                if nf.number() != of.number() {
                    findings.push(
                        Finding::new(
                            "field-renumbered",
                            Severity::Warning,
                            format!("field `{}` of `{name}` moved from number {} to {}", of.name(), of.number(), nf.number()),
                            "JSON is unaffected, but binary readers lose the field: keep its number",
                        )
                        .at(field_location(&nf, new_texts))
                        .was_at(field_location(&of, old_texts)),
                    );
                }
                nf
            }
            (None, Some(nf)) => {
                findings.push(
                    Finding::new(
                        "field-renamed",
                        Severity::Error,
                        format!("field {} of `{name}` was renamed from `{}` to `{}`: its JSON key changed", of.number(), of.name(), nf.name()),
                        "keep the old name; add a new field for a new meaning",
                    )
                    .at(field_location(&nf, new_texts))
                    .was_at(field_location(&of, old_texts)),
                );
                nf
            }
            (None, None) => {
                findings.push(
                    Finding::new(
                        "field-removed",
                        options.removed_field,
                        format!("field `{}` ({}) of `{name}` is gone: readers of the old version silently lose its value", of.name(), of.number()),
                        "keep the field (deprecated) until no reader needs it",
                    )
                    .at(message_location(new, new_texts))
                    .was_at(field_location(&of, old_texts)),
                );
                continue;
            }
        };
        compare_fields(&of, &nf, name, old_texts, new_texts, findings);
    }
    // Reserved names and ranges released.
    let old_proto = old.descriptor_proto();
    let new_proto = new.descriptor_proto();
    for reserved in &old_proto.reserved_name {
        if !new_proto.reserved_name.contains(reserved) && new.get_field_by_name(reserved).is_none()
        {
            findings.push(
                Finding::new(
                    "reserved-released",
                    Severity::Warning,
                    format!("reserved name `{reserved}` of `{name}` is no longer reserved"),
                    "keep it reserved so it is not reused with another meaning",
                )
                .at(message_location(new, new_texts)),
            );
        }
    }
    for range in &old_proto.reserved_range {
        let kept = new_proto
            .reserved_range
            .iter()
            .any(|r| r.start() <= range.start() && r.end() >= range.end());
        if !kept {
            findings.push(
                Finding::new(
                    "reserved-released",
                    Severity::Warning,
                    format!(
                        "reserved numbers {}..{} of `{name}` are no longer all reserved",
                        range.start(),
                        range.end() - 1
                    ),
                    "keep them reserved so they are not reused with another meaning",
                )
                .at(message_location(new, new_texts)),
            );
        }
    }
}

fn compare_fields(
    of: &FieldDescriptor,
    nf: &FieldDescriptor,
    message: &str,
    old_texts: &BTreeMap<String, String>,
    new_texts: &BTreeMap<String, String>,
    findings: &mut Vec<Finding>,
) {
    let at = |f: Finding| {
        f.at(field_location(nf, new_texts))
            .was_at(field_location(of, old_texts))
    };
    let field = nf.name();
    if label(of) != label(nf) {
        findings.push(at(Finding::new(
            "field-type-changed",
            Severity::Error,
            format!(
                "field `{field}` of `{message}` changed from {} to {}",
                label(of),
                label(nf)
            ),
            "add a new field with the new type instead",
        )));
        return;
    }
    let (ok, nk) = (of.kind(), nf.kind());
    let kinds_differ = if of.is_map() {
        let (Kind::Message(oe), Kind::Message(ne)) = (&ok, &nk) else {
            unreachable!()
        };
        !same_kind(
            &oe.map_entry_value_field().kind(),
            &ne.map_entry_value_field().kind(),
            0,
        )
    } else {
        !same_kind(&ok, &nk, 0)
    };
    if kinds_differ && !of.is_map() {
        let (a, b) = (JsonForm::of(&ok), JsonForm::of(&nk));
        let why = if a == b {
            format!("the JSON of {} changed", a.describe())
        } else {
            format!("its JSON changed from {} to {}", a.describe(), b.describe())
        };
        findings.push(at(Finding::new(
            "field-type-changed",
            Severity::Error,
            format!("field `{field}` of `{message}` changed type: {why}"),
            "add a new field with the new type instead",
        )));
    } else if kinds_differ {
        findings.push(at(Finding::new(
            "field-type-changed",
            Severity::Error,
            format!("field `{field}` of `{message}`: the map's value type changed"),
            "add a new map field instead",
        )));
    }
    if proto3_optional(of) != proto3_optional(nf) {
        let (from, to) = if proto3_optional(of) {
            ("optional", "implicit")
        } else {
            ("implicit", "optional")
        };
        findings.push(at(Finding::new(
            "presence-changed",
            Severity::Error,
            format!("field `{field}` of `{message}` changed from {from} to {to} presence: whether a zero value is written changes"),
            "keep the field's presence; add a new field instead",
        )));
    }
    if real_oneof(of) != real_oneof(nf) {
        let show = |o: Option<String>| o.map_or("no oneof".to_owned(), |n| format!("oneof `{n}`"));
        findings.push(at(Finding::new(
            "oneof-changed",
            Severity::Error,
            format!(
                "field `{field}` of `{message}` moved from {} to {}: which fields may be set together changes",
                show(real_oneof(of)),
                show(real_oneof(nf))
            ),
            "keep oneof membership; add new fields instead",
        )));
    }
}

/// Every topic binding of `compiled`, for the `topics` table.
pub fn bindings(compiled: &Compiled, extension: Option<&str>) -> Vec<TopicBinding> {
    topics::find_extension(&compiled.pool, extension)
        .ok()
        .flatten()
        .map(|e| topics::bindings(&compiled.pool, &e, &compiled.texts))
        .unwrap_or_default()
}

/// The files of `compiled` that are not imports of the well-known types.
pub fn user_files(compiled: &Compiled) -> Vec<FileDescriptor> {
    compiled
        .pool
        .files()
        .filter(|f| f.package_name() != "google.protobuf")
        .collect()
}

/// Every `.proto` under `dirs` (relative to the current directory, inside a git work tree) as
/// of revision `rev`, read from the repository's objects without a checkout.
pub fn sources_from_git(
    rev: &str,
    dirs: &[impl AsRef<std::path::Path>],
) -> Result<BTreeMap<String, String>, String> {
    let git = |args: &[&str]| -> Result<Vec<u8>, String> {
        let out = std::process::Command::new("git")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run git: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(out.stdout)
    };
    let prefix = String::from_utf8_lossy(&git(&["rev-parse", "--show-prefix"])?)
        .trim()
        .to_owned();
    let mut out = BTreeMap::new();
    for dir in dirs {
        let dir = dir.as_ref().to_string_lossy().replace('\\', "/");
        let dir = dir.trim_start_matches("./").trim_end_matches('/');
        let spec = match (prefix.is_empty(), dir.is_empty() || dir == ".") {
            (_, true) => prefix.trim_end_matches('/').to_owned(),
            (true, false) => dir.to_owned(),
            (false, false) => format!("{prefix}{dir}"),
        };
        let listing = git(&[
            "ls-tree",
            "-r",
            "--name-only",
            rev,
            "--",
            if spec.is_empty() { "." } else { &spec },
        ])?;
        for path in String::from_utf8_lossy(&listing).lines() {
            if !path.ends_with(".proto") {
                continue;
            }
            let name = if spec.is_empty() {
                path.to_owned()
            } else {
                path.strip_prefix(&format!("{spec}/"))
                    .unwrap_or(path)
                    .to_owned()
            };
            let text = git(&["show", &format!("{rev}:{path}")])?;
            let text = String::from_utf8(text).map_err(|_| format!("{rev}:{path} is not UTF-8"))?;
            out.insert(name, text);
        }
    }
    if out.is_empty() {
        return Err(format!(
            "no .proto files under the proto paths at git revision {rev:?}"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naming_rules() {
        assert!(is_lower_snake("queue_name"));
        assert!(is_lower_snake("v2"));
        assert!(!is_lower_snake("queueName"));
        assert!(!is_lower_snake("Queue"));
        assert!(!is_lower_snake("a__b"));
        assert!(zero_value_is_default("OUTCOME_UNSPECIFIED"));
        assert!(zero_value_is_default("DEFAULT"));
        assert!(!zero_value_is_default("SUCCEEDED"));
        assert_eq!(default_json_name("queue_name"), "queueName");
    }
}
