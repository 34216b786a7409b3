//! Contract checks for CI, as pure functions over compiled descriptor pools:
//! - [`check`]: topic bindings, the configured registry against the bindings, and
//!   protojson-safe conventions on payload messages;
//! - [`breaking`]: what changed between a baseline and the new tree that a protobuf-JSON reader
//!   or writer of the old version would notice.
//!
//! The breaking rules ask, per change, what a reader or writer of one version observes from a
//! writer or reader of the other in the queue's JSON form: keys are proto field names on write,
//! proto names and `json_name`s are read, unknown fields and unknown enum names are ignored,
//! enums are written by name and default values are left out. So:
//! - errors: a JSON key that changes or disappears (renamed or removed fields, enum names), a
//!   value whose JSON form or range changes (`int32` → `int64`, `string` → `bytes`, a list
//!   for a single value), fields that become exclusive in a oneof or stop being so, proto2
//!   `required` and default changes, and the topic contract (removed or moved keys, removed
//!   payloads);
//! - warnings: what only binary protobuf readers see (`int32` → `sint32`, a scalar ↔ its wrapper
//!   type, renumbered fields and enum values), presence that old readers lose, `json_name`
//!   changes (seen only by writers of lowerCamelCase keys), added enum values, released
//!   reservations;
//! - nothing: type, package, file and oneof renames, comments and declaration order, adding
//!   `optional`, since no JSON carries them. Types are compared by shape wherever they are
//!   used, so a renamed type is still compared field by field.
//!
//! [`CHECK_RULES`] and [`BREAKING_RULES`] list every rule with its usual severity.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{
    Cardinality, EnumDescriptor, ExtensionDescriptor, FieldDescriptor, FileDescriptor, Kind,
    MessageDescriptor,
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
                            "field `{}` of `{}` sets json_name {:?}: queue payloads are written with proto field names, so it only adds a key that readers also accept",
                            field.name(),
                            message.full_name(),
                            field.json_name()
                        ),
                        "remove json_name: it misleads about the key payloads carry",
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

/// One rule of a check: its id, its usual severity and what it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The id findings carry, such as `field-removed`.
    pub id: &'static str,
    /// The severity its findings have unless an option changes it.
    pub severity: Severity,
    /// One line saying what the rule reports.
    pub summary: &'static str,
}

const fn rule(id: &'static str, severity: Severity, summary: &'static str) -> Rule {
    Rule {
        id,
        severity,
        summary,
    }
}

/// The rules of [`check`].
pub const CHECK_RULES: &[Rule] = &[
    rule(
        "topic-keys-option",
        Severity::Error,
        "the topic_keys option is missing its definition or defined twice",
    ),
    rule(
        "topic-binding",
        Severity::Error,
        "a topic key is bound to two messages, repeated, invalid, or on a nested message",
    ),
    rule(
        "config-key-unbound",
        Severity::Error,
        "a topic key in the runtime configuration that no message carries",
    ),
    rule(
        "bound-key-unconfigured",
        Severity::Error,
        "a bound topic key missing from the runtime configuration",
    ),
    rule(
        "field-name-case",
        Severity::Error,
        "a payload field whose name (its JSON key) is not lower_snake_case",
    ),
    rule(
        "json-name-override",
        Severity::Error,
        "a payload field with a json_name, which queue payloads do not write",
    ),
    rule(
        "enum-zero-value",
        Severity::Error,
        "an enum whose zero value, read for every absent field, looks like a real value",
    ),
];

/// The rules of [`breaking`].
pub const BREAKING_RULES: &[Rule] = &[
    rule(
        "topic-keys-renumbered",
        Severity::Error,
        "the topic_keys option moved to another field number",
    ),
    rule(
        "payload-message-removed",
        Severity::Error,
        "a payload message is gone and its topic keys carry nothing like it",
    ),
    rule(
        "topic-key-removed",
        Severity::Error,
        "a topic key is no longer bound",
    ),
    rule(
        "topic-key-moved",
        Severity::Error,
        "a topic key now carries a message whose JSON old readers or writers cannot use",
    ),
    rule(
        "field-removed",
        Severity::Error,
        "a field (JSON key) is gone: new readers drop it, old readers get its default",
    ),
    rule(
        "field-renamed",
        Severity::Error,
        "a field's JSON key changed, so the other version's readers drop it",
    ),
    rule(
        "field-type-changed",
        Severity::Error,
        "a field's JSON value changed form or range, so readers reject or misread it",
    ),
    rule(
        "oneof-changed",
        Severity::Error,
        "fields that one version lets writers set together, the other's readers reject together",
    ),
    rule(
        "required-changed",
        Severity::Error,
        "a proto2 field became required or optional, so readers reject messages without it",
    ),
    rule(
        "default-changed",
        Severity::Error,
        "an absent field reads as a different value in the other version",
    ),
    rule(
        "enum-value-removed",
        Severity::Error,
        "an enum name old writers send is gone, so new readers drop it",
    ),
    rule(
        "enum-value-renamed",
        Severity::Error,
        "an enum value is written under a name the other version's readers drop",
    ),
    rule(
        "field-renumbered",
        Severity::Warning,
        "a field's number changed: JSON is unaffected, binary protobuf readers lose the field",
    ),
    rule(
        "reserved-released",
        Severity::Warning,
        "a reserved field name or number is free again for reuse with another meaning",
    ),
    rule(
        "enum-value-added",
        Severity::Warning,
        "a new enum name that readers of the old version drop",
    ),
    rule(
        "enum-value-renumbered",
        Severity::Warning,
        "an enum value's number changed: JSON (by name) is unaffected, binary readers misread it",
    ),
    rule(
        "binary-type-changed",
        Severity::Warning,
        "a type change with the same JSON that binary protobuf readers misread",
    ),
    rule(
        "presence-removed",
        Severity::Warning,
        "a field no longer tracks presence, so old readers see a zero from new writers as unset",
    ),
    rule(
        "json-name-changed",
        Severity::Warning,
        "a json_name change: queue payloads are unaffected, writers of json_name keys are not",
    ),
    rule(
        "type-name-changed",
        Severity::Warning,
        "a message renamed while the tree uses google.protobuf.Any, whose JSON names types",
    ),
];

/// The scalar JSON forms: the part of a scalar type (or its wrapper) a JSON reader sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    /// int32, sint32, sfixed32 and `Int32Value`: a number in the 32-bit signed range.
    Int32,
    /// uint32, fixed32 and `UInt32Value`.
    Uint32,
    /// int64, sint64, sfixed64 and `Int64Value`: a decimal string.
    Int64,
    /// uint64, fixed64 and `UInt64Value`.
    Uint64,
    Float,
    Double,
    Bool,
    String,
    /// Base64 text.
    Bytes,
}

impl Scalar {
    fn of(kind: &Kind) -> Option<Scalar> {
        Some(match kind {
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Scalar::Int32,
            Kind::Uint32 | Kind::Fixed32 => Scalar::Uint32,
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Scalar::Int64,
            Kind::Uint64 | Kind::Fixed64 => Scalar::Uint64,
            Kind::Float => Scalar::Float,
            Kind::Double => Scalar::Double,
            Kind::Bool => Scalar::Bool,
            Kind::String => Scalar::String,
            Kind::Bytes => Scalar::Bytes,
            Kind::Message(m) => return Scalar::wrapper(m.full_name()),
            Kind::Enum(_) => return None,
        })
    }

    /// The scalar a wrapper well-known type is written as.
    fn wrapper(full_name: &str) -> Option<Scalar> {
        Some(match full_name {
            "google.protobuf.Int32Value" => Scalar::Int32,
            "google.protobuf.UInt32Value" => Scalar::Uint32,
            "google.protobuf.Int64Value" => Scalar::Int64,
            "google.protobuf.UInt64Value" => Scalar::Uint64,
            "google.protobuf.FloatValue" => Scalar::Float,
            "google.protobuf.DoubleValue" => Scalar::Double,
            "google.protobuf.BoolValue" => Scalar::Bool,
            "google.protobuf.StringValue" => Scalar::String,
            "google.protobuf.BytesValue" => Scalar::Bytes,
            _ => return None,
        })
    }

    fn is_integer(self) -> bool {
        matches!(
            self,
            Scalar::Int32 | Scalar::Uint32 | Scalar::Int64 | Scalar::Uint64
        )
    }

    fn range(self) -> (i128, i128) {
        match self {
            Scalar::Int32 => (i32::MIN.into(), i32::MAX.into()),
            Scalar::Uint32 => (0, u32::MAX.into()),
            Scalar::Int64 => (i64::MIN.into(), i64::MAX.into()),
            _ => (0, u64::MAX.into()),
        }
    }

    fn range_name(self) -> &'static str {
        match self {
            Scalar::Int32 => "32-bit signed",
            Scalar::Uint32 => "32-bit unsigned",
            Scalar::Int64 => "64-bit signed",
            _ => "64-bit unsigned",
        }
    }

    /// How a writer of this form writes the integer `n`.
    fn render(self, n: i128) -> String {
        match self {
            Scalar::Int64 | Scalar::Uint64 => format!("\"{n}\""),
            _ => n.to_string(),
        }
    }

    fn shape(self) -> &'static str {
        match self {
            Scalar::Int32 | Scalar::Uint32 => "numbers",
            Scalar::Int64 | Scalar::Uint64 => "decimal strings",
            Scalar::Float | Scalar::Double => "numbers",
            Scalar::Bool => "true/false",
            Scalar::String => "strings",
            Scalar::Bytes => "base64 strings",
        }
    }
}

/// How a singular value is written in protobuf JSON.
#[derive(Debug, Clone)]
enum Form {
    Scalar(Scalar),
    /// By value name.
    Enum(EnumDescriptor),
    /// A JSON object keyed by field names.
    Message(MessageDescriptor),
    /// A well-known type with a JSON form of its own (`Timestamp`, `Struct`, `Any`, ...).
    WellKnown(MessageDescriptor),
}

impl Form {
    fn of(kind: &Kind) -> Form {
        if let Some(s) = Scalar::of(kind) {
            return Form::Scalar(s);
        }
        match kind {
            Kind::Enum(e) => Form::Enum(e.clone()),
            Kind::Message(m) if m.package_name() == "google.protobuf" => Form::WellKnown(m.clone()),
            Kind::Message(m) => Form::Message(m.clone()),
            _ => unreachable!("every other kind is a scalar"),
        }
    }

    fn shape(&self) -> String {
        match self {
            Form::Scalar(s) => s.shape().to_owned(),
            Form::Enum(e) => format!("names of `{}`", e.full_name()),
            Form::Message(_) => "JSON objects".to_owned(),
            Form::WellKnown(m) => match m.name() {
                "Timestamp" => "RFC 3339 timestamp strings".to_owned(),
                "Duration" => "duration strings such as \"1.5s\"".to_owned(),
                "FieldMask" => "field mask strings such as \"a,b.c\"".to_owned(),
                "Struct" => "JSON objects of any values".to_owned(),
                "ListValue" => "JSON arrays".to_owned(),
                "Value" => "any JSON value".to_owned(),
                "NullValue" => "null".to_owned(),
                "Any" => "objects with an \"@type\"".to_owned(),
                "Empty" => "empty objects".to_owned(),
                _ => format!("the JSON of `{}`", m.full_name()),
            },
        }
    }

    /// Whether the form is a JSON string that a `string` reader takes as text.
    fn is_text(&self) -> bool {
        match self {
            Form::Scalar(s) => matches!(
                s,
                Scalar::String | Scalar::Bytes | Scalar::Int64 | Scalar::Uint64
            ),
            Form::Enum(_) => true,
            Form::WellKnown(m) => matches!(m.name(), "Timestamp" | "Duration" | "FieldMask"),
            Form::Message(_) => false,
        }
    }
}

/// The proto type of a field's values, as written in a `.proto` file.
fn type_name(kind: &Kind) -> String {
    match kind {
        Kind::Double => "double".into(),
        Kind::Float => "float".into(),
        Kind::Int32 => "int32".into(),
        Kind::Int64 => "int64".into(),
        Kind::Uint32 => "uint32".into(),
        Kind::Uint64 => "uint64".into(),
        Kind::Sint32 => "sint32".into(),
        Kind::Sint64 => "sint64".into(),
        Kind::Fixed32 => "fixed32".into(),
        Kind::Fixed64 => "fixed64".into(),
        Kind::Sfixed32 => "sfixed32".into(),
        Kind::Sfixed64 => "sfixed64".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "bytes".into(),
        Kind::Enum(e) => format!("enum `{}`", e.full_name()),
        Kind::Message(m) => format!("`{}`", m.full_name()),
    }
}

/// The binary encoding of a field's values, for warnings about changes JSON does not see.
fn wire_name(kind: &Kind, group: bool) -> &'static str {
    match kind {
        _ if group => "a group",
        Kind::Int32 | Kind::Int64 | Kind::Uint32 | Kind::Uint64 | Kind::Bool | Kind::Enum(_) => {
            "a varint"
        }
        Kind::Sint32 | Kind::Sint64 => "a zigzag varint",
        Kind::Fixed32 | Kind::Sfixed32 | Kind::Float => "4 fixed bytes",
        Kind::Fixed64 | Kind::Sfixed64 | Kind::Double => "8 fixed bytes",
        Kind::String | Kind::Bytes => "length-delimited bytes",
        Kind::Message(_) => "an embedded message",
    }
}

/// What a reader of form `reader` does wrong with values written in form `writer`, as a verb
/// phrase ("reject ..."); `None` when it reads every such value exactly.
fn read_problem(writer: &Form, reader: &Form) -> Option<String> {
    match (writer, reader) {
        (Form::Scalar(w), Form::Scalar(r)) if w == r => None,
        (Form::Scalar(w), Form::Scalar(r)) => scalar_problem(*w, *r),
        (Form::Enum(e), Form::Scalar(Scalar::String)) => Some(format!(
            "get the names of `{}` as plain text (and reject numbers written for values the writer does not know)",
            e.full_name()
        )),
        (Form::Enum(e), _) => Some(format!(
            "expect {}, not names of `{}`",
            reader.shape(),
            e.full_name()
        )),
        (Form::Scalar(s), Form::Enum(e)) if s.is_integer() => Some(format!(
            "read the numbers as values of `{}` (numbers it does not declare stay bare numbers)",
            e.full_name()
        )),
        (Form::Scalar(Scalar::String), Form::Enum(e)) => Some(format!(
            "drop strings that are not names of `{}`",
            e.full_name()
        )),
        (_, Form::Scalar(Scalar::String)) if writer.is_text() => {
            Some(format!("get {} as plain text", writer.shape()))
        }
        (_, Form::WellKnown(m)) if m.name() == "Value" => Some(format!(
            "read {} as untyped `google.protobuf.Value`s",
            writer.shape()
        )),
        _ => Some(format!(
            "expect {}, not {}",
            reader.shape(),
            writer.shape()
        )),
    }
}

/// An integer that writers of `w` may write and readers of `r` reject (ranges of integer
/// forms only).
fn range_example(w: Scalar, r: Scalar) -> i128 {
    let (lo, hi) = r.range();
    let (wlo, whi) = w.range();
    [-1, 1 << 31, 1 << 32, -(1 << 31) - 1, 1 << 63, -(1 << 63)]
        .into_iter()
        .find(|n| (wlo..=whi).contains(n) && !(lo..=hi).contains(n))
        .unwrap_or(whi)
}

/// [`read_problem`] for two different scalar forms.
fn scalar_problem(w: Scalar, r: Scalar) -> Option<String> {
    let (lo, hi) = r.range();
    let (wlo, whi) = w.range();
    Some(match (w, r) {
        (w, r) if w.is_integer() && r.is_integer() => {
            if lo <= wlo && whi <= hi {
                return None;
            }
            format!(
                "reject values outside the {} range, such as {}",
                r.range_name(),
                w.render(range_example(w, r))
            )
        }
        (w, Scalar::Float) if w.is_integer() => format!(
            "round integers above 2^24 to a float: {} reads as 16777216",
            w.render(16_777_217)
        ),
        (Scalar::Int32 | Scalar::Uint32, Scalar::Double) | (Scalar::Float, Scalar::Double) => {
            return None
        }
        (w, Scalar::Double) if w.is_integer() => format!(
            "round integers above 2^53 to a double: {} reads as 9007199254740992",
            w.render(9_007_199_254_740_993)
        ),
        (Scalar::Float | Scalar::Double, r) if r.is_integer() => {
            "reject fractional values such as 1.5".to_owned()
        }
        (Scalar::Double, Scalar::Float) => {
            "round doubles to floats (0.1 loses digits) and reject values beyond the float range, such as 1e300".to_owned()
        }
        (Scalar::String, Scalar::Bytes) => {
            "read the text as base64: \"TWFu\" becomes the bytes of \"Man\", and text that is not base64 is rejected".to_owned()
        }
        (Scalar::Bytes, Scalar::String) => {
            "get the base64 text (\"YWJj\") instead of the bytes (\"abc\")".to_owned()
        }
        (Scalar::Int64 | Scalar::Uint64, Scalar::String) => {
            "get the numbers as decimal text (\"5\")".to_owned()
        }
        (Scalar::String, r) if r != Scalar::Bool => {
            format!("reject strings that are not {}, such as \"abc\"", r.shape())
        }
        (w, r) => format!("expect {}, not {}", r.shape(), w.shape()),
    })
}

/// What a reader with map keys of form `reader` does wrong with keys of form `writer` (JSON
/// map keys are always strings).
fn key_problem(writer: Scalar, reader: Scalar) -> Option<String> {
    if writer == reader {
        return None;
    }
    Some(match (writer, reader) {
        (w, r) if w.is_integer() && r.is_integer() => {
            let ((lo, hi), (wlo, whi)) = (r.range(), w.range());
            if lo <= wlo && whi <= hi {
                return None;
            }
            let n = range_example(w, r);
            format!(
                "reject keys outside the {} range, such as \"{n}\"",
                r.range_name()
            )
        }
        (_, Scalar::Bool) => "reject keys other than \"true\" and \"false\"".to_owned(),
        (Scalar::String, _) => "reject keys that are not numbers, such as \"abc\"".to_owned(),
        (_, Scalar::String) => "get the keys as plain text".to_owned(),
        (Scalar::Bool, _) => "reject the keys \"true\" and \"false\"".to_owned(),
        (w, r) => format!("expect {} keys, not {} keys", r.shape(), w.shape()),
    })
}

/// A field or an extension, as the breaking rules see it.
#[derive(Clone)]
struct FieldView {
    /// The JSON key queue payloads use: the proto field name, or `[full.name]`.
    key: String,
    /// The lowerCamelCase key (or `[full.name]`).
    json_name: String,
    /// How findings name it: "field `x`" or "extension `[p.x]`".
    what: String,
    number: u32,
    kind: Kind,
    list: bool,
    map: bool,
    group: bool,
    presence: bool,
    required: bool,
    default: Option<String>,
    explicit_json_name: bool,
    /// The real oneof it belongs to.
    oneof: Option<String>,
    location: Option<Location>,
}

impl FieldView {
    fn field(f: &FieldDescriptor, texts: &BTreeMap<String, String>) -> FieldView {
        FieldView {
            key: f.name().to_owned(),
            json_name: f.json_name().to_owned(),
            what: format!("field `{}`", f.name()),
            number: f.number(),
            kind: f.kind(),
            list: f.is_list(),
            map: f.is_map(),
            group: f.is_group(),
            presence: f.supports_presence(),
            required: f.cardinality() == Cardinality::Required,
            default: f.field_descriptor_proto().default_value.clone(),
            explicit_json_name: f.field_descriptor_proto().json_name.is_some()
                && f.field_descriptor_proto().json_name() != default_json_name(f.name()),
            oneof: f
                .containing_oneof()
                .filter(|o| !o.is_synthetic())
                .map(|o| o.name().to_owned()),
            location: field_location(f, texts),
        }
    }

    fn extension(e: &ExtensionDescriptor, texts: &BTreeMap<String, String>) -> FieldView {
        let key = format!("[{}]", e.full_name());
        FieldView {
            what: format!("extension `{key}`"),
            json_name: key.clone(),
            key,
            number: e.number(),
            kind: e.kind(),
            list: e.is_list(),
            map: e.is_map(),
            group: e.is_group(),
            presence: e.supports_presence(),
            required: false,
            default: e.field_descriptor_proto().default_value.clone(),
            explicit_json_name: false,
            oneof: None,
            location: Location::of_path(&e.parent_file(), e.path(), 2, texts),
        }
    }

    /// The keys a protobuf-JSON reader of this field accepts.
    fn accepts(&self, key: &str) -> bool {
        key == self.key || key == self.json_name
    }

    /// The JSON shape of the whole field: an array, an object, or the value's own form.
    fn shape(&self) -> String {
        if self.map {
            "a JSON object (a map)".to_owned()
        } else if self.list {
            "a JSON array (a list)".to_owned()
        } else {
            format!("a single value ({})", Form::of(&self.kind).shape())
        }
    }

    fn map_entry(&self) -> Option<(Kind, Kind)> {
        let Kind::Message(entry) = &self.kind else {
            return None;
        };
        self.map.then(|| {
            (
                entry.map_entry_key_field().kind(),
                entry.map_entry_value_field().kind(),
            )
        })
    }
}

/// How old and new readers fare with a change, as "reading what new writers send, old readers
/// ...; reading what old writers send, new readers ..." (only the sides that go wrong).
fn both_ways(new_to_old: Option<String>, old_to_new: Option<String>) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(p) = new_to_old {
        parts.push(format!("reading what new writers send, old readers {p}"));
    }
    if let Some(p) = old_to_new {
        parts.push(format!("reading what old writers send, new readers {p}"));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Where an enum is used, which decides what dropping one of its names costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct EnumUse {
    /// A singular field without presence: the zero value is never written.
    implicit: bool,
    /// A field with presence (optional, oneof, proto2): a dropped name unsets it.
    explicit: bool,
    /// A list element or map value: a dropped name drops the element or entry.
    collection: bool,
}

impl EnumUse {
    fn union(self, other: EnumUse) -> EnumUse {
        EnumUse {
            implicit: self.implicit || other.implicit,
            explicit: self.explicit || other.explicit,
            collection: self.collection || other.collection,
        }
    }

    fn is_unused(self) -> bool {
        self == EnumUse::default()
    }
}

fn enum_uses(pool: &prost_reflect::DescriptorPool) -> BTreeMap<String, EnumUse> {
    let mut uses: BTreeMap<String, EnumUse> = BTreeMap::new();
    let mut note = |kind: Kind, list: bool, map_value: bool, presence: bool| {
        if let Kind::Enum(e) = kind {
            let u = uses.entry(e.full_name().to_owned()).or_default();
            if list || map_value {
                u.collection = true;
            } else if presence {
                u.explicit = true;
            } else {
                u.implicit = true;
            }
        }
    };
    for m in pool.all_messages() {
        for f in m.fields() {
            if m.is_map_entry() {
                if f.number() == 2 {
                    note(f.kind(), false, true, false);
                }
            } else {
                note(f.kind(), f.is_list(), false, f.supports_presence());
            }
        }
    }
    for e in pool.all_extensions() {
        note(e.kind(), e.is_list(), false, e.supports_presence());
    }
    uses
}

/// Whether a tree has a field of type `google.protobuf.Any` outside the well-known types.
fn uses_any(pool: &prost_reflect::DescriptorPool) -> bool {
    pool.all_messages()
        .filter(|m| m.package_name() != "google.protobuf")
        .flat_map(|m| m.fields().collect::<Vec<_>>())
        .any(|f| matches!(f.kind(), Kind::Message(m) if m.full_name() == "google.protobuf.Any"))
}

/// How a message pair was reached, for findings on messages that are not paired by name.
#[derive(Debug, Clone)]
struct Pair<T> {
    old: T,
    new: T,
    /// "the type of field `line` of `acme.Order`", for pairs found through a field.
    via: Option<String>,
}

/// The state of one breaking comparison: pairs still to compare and what was found.
struct Comparer<'a> {
    options: &'a BreakingOptions,
    old_texts: &'a BTreeMap<String, String>,
    new_texts: &'a BTreeMap<String, String>,
    enum_uses: BTreeMap<String, EnumUse>,
    any_in_old: bool,
    new_pool: &'a prost_reflect::DescriptorPool,
    messages: Vec<Pair<MessageDescriptor>>,
    enums: Vec<Pair<EnumDescriptor>>,
    seen_messages: BTreeSet<(String, String)>,
    seen_enums: BTreeSet<(String, String)>,
    findings: Vec<Finding>,
}

impl<'a> Comparer<'a> {
    fn new(old: &'a Compiled, new: &'a Compiled, options: &'a BreakingOptions) -> Self {
        let old_uses = enum_uses(&old.pool);
        let new_uses = enum_uses(&new.pool);
        Comparer {
            options,
            old_texts: &old.texts,
            new_texts: &new.texts,
            enum_uses: old_uses.into_iter().chain(new_uses).fold(
                BTreeMap::new(),
                |mut acc, (k, v)| {
                    let e: &mut EnumUse = acc.entry(k).or_default();
                    *e = e.union(v);
                    acc
                },
            ),
            any_in_old: uses_any(&old.pool),
            new_pool: &new.pool,
            messages: Vec::new(),
            enums: Vec::new(),
            seen_messages: BTreeSet::new(),
            seen_enums: BTreeSet::new(),
            findings: Vec::new(),
        }
    }

    fn pair_messages(
        &mut self,
        old: MessageDescriptor,
        new: MessageDescriptor,
        via: Option<String>,
    ) {
        if self
            .seen_messages
            .insert((old.full_name().to_owned(), new.full_name().to_owned()))
        {
            self.messages.push(Pair { old, new, via });
        }
    }

    fn pair_enums(&mut self, old: EnumDescriptor, new: EnumDescriptor, via: Option<String>) {
        if self
            .seen_enums
            .insert((old.full_name().to_owned(), new.full_name().to_owned()))
        {
            self.enums.push(Pair { old, new, via });
        }
    }

    /// Compare every queued pair, including the pairs found on the way.
    fn run(&mut self) {
        let (mut m, mut e) = (0, 0);
        while m < self.messages.len() || e < self.enums.len() {
            if m < self.messages.len() {
                let pair = self.messages[m].clone();
                m += 1;
                self.compare_messages(&pair);
            } else {
                let pair = self.enums[e].clone();
                e += 1;
                self.compare_enums(&pair);
            }
        }
    }

    fn push(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    /// "`acme.Line`", or "`acme.Line` (now `acme.LineItem`, the type of ...)".
    fn title(old: &str, new: &str, via: &Option<String>) -> String {
        let mut notes = Vec::new();
        if old != new {
            notes.push(format!("now `{new}`"));
        }
        if let Some(via) = via {
            notes.push(via.clone());
        }
        if notes.is_empty() {
            format!("`{old}`")
        } else {
            format!("`{old}` ({})", notes.join(", "))
        }
    }

    fn compare_messages(&mut self, pair: &Pair<MessageDescriptor>) {
        let (old, new) = (&pair.old, &pair.new);
        let title = Self::title(old.full_name(), new.full_name(), &pair.via);
        let gone = self.new_pool.get_message_by_name(old.full_name()).is_none();
        if old.full_name() != new.full_name() && gone && self.any_in_old {
            self.push(
                Finding::new(
                    "type-name-changed",
                    Severity::Warning,
                    format!(
                        "message `{}` is now `{}`: its JSON keys and values are unchanged, but an `Any` holding it names the type in \"@type\" (type.googleapis.com/{}), which readers of the new version cannot resolve",
                        old.full_name(),
                        new.full_name(),
                        old.full_name()
                    ),
                    "keep the message's full name while `Any` values may hold it",
                )
                .at(message_location(new, self.new_texts))
                .was_at(message_location(old, self.old_texts)),
            );
        }
        let old_names: BTreeSet<String> = old.fields().map(|f| f.name().to_owned()).collect();
        let mut pairs: Vec<(FieldView, FieldView)> = Vec::new();
        for of in old.fields() {
            let ov = FieldView::field(&of, self.old_texts);
            let nf = new.get_field_by_name(of.name()).or_else(|| {
                new.get_field(of.number())
                    .filter(|nf| !old_names.contains(nf.name()))
            });
            match nf {
                Some(nf) => {
                    let nv = FieldView::field(&nf, self.new_texts);
                    pairs.push((ov, nv));
                }
                None => self.removed(&ov, &title, message_location(new, self.new_texts)),
            }
        }
        for (ov, nv) in &pairs {
            self.compare_fields(ov, nv, &title, new.full_name());
        }
        for nf in new.fields() {
            let paired = pairs.iter().any(|(_, nv)| nv.number == nf.number());
            if !paired && nf.cardinality() == Cardinality::Required {
                let nv = FieldView::field(&nf, self.new_texts);
                self.push(
                    Finding::new(
                        "required-changed",
                        Severity::Error,
                        format!(
                            "{} (key \"{}\") of {title} is new and required: new readers that check required fields reject every message from old writers, which never send it",
                            nv.what, nv.key
                        ),
                        "add the field as optional",
                    )
                    .at(nv.location.clone()),
                );
            }
        }
        self.compare_oneofs(&pairs, &title);
        self.reserved_released(old, new, &title);
    }

    fn removed(&mut self, ov: &FieldView, title: &str, at: Option<Location>) {
        self.push(
            Finding::new(
                "field-removed",
                self.options.removed_field,
                format!(
                    "{} ({}, key \"{}\") of {title} is gone: new readers drop the key old writers send, and old readers get its default from every new writer",
                    ov.what, ov.number, ov.key
                ),
                "keep the field (deprecated) until no reader needs it",
            )
            .at(at)
            .was_at(ov.location.clone()),
        );
    }

    fn compare_fields(&mut self, ov: &FieldView, nv: &FieldView, title: &str, new_message: &str) {
        let at = |f: Finding| f.at(nv.location.clone()).was_at(ov.location.clone());
        let field = format!("{} (key \"{}\") of {title}", nv.what, nv.key);

        // The key: queue payloads write proto names; readers accept the name or json_name.
        let mut renamed = false;
        if ov.key != nv.key {
            let new_to_old = (!ov.accepts(&nv.key)).then(|| format!("drop the key \"{}\"", nv.key));
            let old_to_new = (!nv.accepts(&ov.key)).then(|| format!("drop the key \"{}\"", ov.key));
            if let Some(why) = both_ways(new_to_old, old_to_new) {
                renamed = true;
                self.push(at(Finding::new(
                    "field-renamed",
                    Severity::Error,
                    format!(
                        "field {} of {title} was renamed from `{}` to `{}`, so its JSON key changed: {why}",
                        ov.number, ov.key, nv.key
                    ),
                    "keep the old name; add a new field for a new meaning",
                )));
            }
        }
        if ov.number != nv.number {
            self.push(at(Finding::new(
                "field-renumbered",
                Severity::Warning,
                format!(
                    "{field} moved from number {} to {}: its JSON is unchanged, but binary protobuf readers of the other version lose it",
                    ov.number, nv.number
                ),
                "keep the field's number",
            )));
        }
        if !renamed && (ov.json_name != nv.json_name || (ov.key != nv.key && nv.explicit_json_name))
        {
            let new_to_old =
                (!ov.accepts(&nv.json_name)).then(|| format!("drop \"{}\"", nv.json_name));
            let old_to_new =
                (!nv.accepts(&ov.json_name)).then(|| format!("drop \"{}\"", ov.json_name));
            if let Some(why) = both_ways(new_to_old, old_to_new) {
                self.push(at(Finding::new(
                    "json-name-changed",
                    Severity::Warning,
                    format!(
                        "the json_name of {field} changed from \"{}\" to \"{}\": queue payloads (keyed by proto names) are unaffected, but for writers that emit json_name keys (protobuf's default output), {why}",
                        ov.json_name, nv.json_name
                    ),
                    "keep the json_name",
                )));
            }
        }

        // The shape: a single value, a list or a map.
        let cardinality = |f: &FieldView| (f.map, f.list && !f.map);
        if cardinality(ov) != cardinality(nv) {
            self.push(at(Finding::new(
                "field-type-changed",
                Severity::Error,
                format!(
                    "{field} changed from {} to {}: each side misreads or rejects what the other writes",
                    ov.shape(),
                    nv.shape()
                ),
                "add a new field with the new shape instead",
            )));
            return;
        }
        let via = format!("the type of {} of `{new_message}`", nv.what);
        let mut type_ok = true;
        if let (Some((ok, ovk)), Some((nk, nvk))) = (ov.map_entry(), nv.map_entry()) {
            let (a, b) = (
                Scalar::of(&ok).expect("map keys are scalars"),
                Scalar::of(&nk).expect("map keys are scalars"),
            );
            if let Some(why) = both_ways(key_problem(b, a), key_problem(a, b)) {
                type_ok = false;
                self.push(at(Finding::new(
                    "field-type-changed",
                    Severity::Error,
                    format!(
                        "the map keys of {field} changed from {} to {}: {why}",
                        type_name(&ok),
                        type_name(&nk)
                    ),
                    "add a new map field instead",
                )));
            } else if type_name(&ok) != type_name(&nk) {
                self.push(at(Finding::new(
                    "binary-type-changed",
                    Severity::Warning,
                    format!(
                        "the map keys of {field} changed from {} to {}: JSON keys are unchanged, but binary protobuf readers of the other version misread them ({} is written as {}, {} as {})",
                        type_name(&ok), type_name(&nk), type_name(&ok), wire_name(&ok, false), type_name(&nk), wire_name(&nk, false)
                    ),
                    "keep the key type",
                )));
            }
            type_ok &= self.compare_values(&ovk, &nvk, true, (ov, nv), &field, &via);
        } else {
            type_ok &= self.compare_values(&ov.kind, &nv.kind, false, (ov, nv), &field, &via);
        }
        if !type_ok {
            return;
        }

        // Presence, required and defaults, for single values.
        if ov.list || ov.map {
            return;
        }
        if ov.required != nv.required {
            let why = if nv.required {
                "new readers that check required fields reject messages from old writers that leave it out"
            } else {
                "old readers that check required fields reject messages from new writers that leave it out"
            };
            self.push(at(Finding::new(
                "required-changed",
                Severity::Error,
                format!(
                    "{field} changed from {} to {}: {why}",
                    if ov.required { "required" } else { "optional" },
                    if nv.required { "required" } else { "optional" }
                ),
                "keep the field's label",
            )));
        } else if ov.presence && !nv.presence {
            self.push(at(Finding::new(
                "presence-removed",
                Severity::Warning,
                format!(
                    "{field} no longer tracks presence: the values read are the same, but new writers leave out a zero value, so old readers that test presence see it as unset"
                ),
                "keep `optional` (or the wrapper type) if readers test presence",
            )));
        }
        if ov.default != nv.default && !matches!(ov.kind, Kind::Message(_)) {
            let show = |d: &Option<String>| {
                d.as_ref()
                    .map_or("the type's default".to_owned(), |d| format!("`{d}`"))
            };
            self.push(at(Finding::new(
                "default-changed",
                Severity::Error,
                format!(
                    "the default of {field} changed from {} to {}: a message that leaves the key out reads as the old default in old readers and the new one in new readers",
                    show(&ov.default),
                    show(&nv.default)
                ),
                "keep the default; add a new field for a new default",
            )));
        }
    }

    /// Compare the value types of a paired field (its values, or its map's values); queue
    /// message and enum pairs found on the way. `false` when an error was reported.
    fn compare_values(
        &mut self,
        ok: &Kind,
        nk: &Kind,
        map_values: bool,
        (ov, nv): (&FieldView, &FieldView),
        field: &str,
        via: &str,
    ) -> bool {
        let at = |f: Finding| f.at(nv.location.clone()).was_at(ov.location.clone());
        let what = if map_values {
            format!("the map values of {field}")
        } else {
            field.to_owned()
        };
        let (old_group, new_group) = (ov.group && !map_values, nv.group && !map_values);
        let (a, b) = (Form::of(ok), Form::of(nk));
        match (&a, &b) {
            (Form::Message(om), Form::Message(nm)) => {
                if om.full_name() != nm.full_name() {
                    self.pair_messages(om.clone(), nm.clone(), Some(via.to_owned()));
                }
            }
            (Form::Enum(oe), Form::Enum(ne)) => {
                if oe.full_name() != ne.full_name() {
                    self.pair_enums(oe.clone(), ne.clone(), Some(via.to_owned()));
                }
            }
            (Form::Scalar(x), Form::Scalar(y)) if x == y => {}
            (Form::WellKnown(x), Form::WellKnown(y)) if x.full_name() == y.full_name() => {}
            _ => {
                let why = both_ways(read_problem(&b, &a), read_problem(&a, &b))
                    .expect("different JSON forms differ one way at least");
                self.push(at(Finding::new(
                    "field-type-changed",
                    Severity::Error,
                    format!(
                        "{what} changed from {} to {}: {why}",
                        type_name(ok),
                        type_name(nk)
                    ),
                    "add a new field with the new type instead",
                )));
                return false;
            }
        }
        let named = matches!(
            (&a, &b),
            (Form::Message(_), Form::Message(_)) | (Form::Enum(_), Form::Enum(_))
        );
        if (type_name(ok) != type_name(nk) && !named) || old_group != new_group {
            self.push(at(Finding::new(
                "binary-type-changed",
                Severity::Warning,
                format!(
                    "{what} changed from {} to {}: its JSON is the same, but binary protobuf readers of the other version misread or drop it ({} is written as {}, {} as {})",
                    type_name(ok),
                    type_name(nk),
                    type_name(ok),
                    wire_name(ok, old_group),
                    type_name(nk),
                    wire_name(nk, new_group)
                ),
                "keep the type if anyone reads the binary form",
            )));
        }
        true
    }

    /// Fields that become exclusive (or stop being exclusive) with each other.
    fn compare_oneofs(&mut self, pairs: &[(FieldView, FieldView)], title: &str) {
        let n = pairs.len();
        let together = |i: usize, j: usize, new: bool| {
            let (a, b) = if new {
                (&pairs[i].1, &pairs[j].1)
            } else {
                (&pairs[i].0, &pairs[j].0)
            };
            a.oneof.is_some() && a.oneof == b.oneof
        };
        // For each field, the paired fields whose exclusivity with it changed.
        let mut changed: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
        for (i, set) in changed.iter_mut().enumerate() {
            set.extend((0..n).filter(|&j| i != j && together(i, j, false) != together(i, j, true)));
        }
        // Report the fields that explain the most changes first, and among those the ones
        // that moved in or out of a oneof rather than the ones that stayed.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| {
            let moved = pairs[i].0.oneof.is_some() != pairs[i].1.oneof.is_some();
            (std::cmp::Reverse(changed[i].len()), !moved, i)
        });
        let mut explained: BTreeSet<(usize, usize)> = BTreeSet::new();
        for i in order {
            let open: Vec<usize> = changed[i]
                .iter()
                .copied()
                .filter(|&j| !explained.contains(&(i.min(j), i.max(j))))
                .collect();
            if open.is_empty() {
                continue;
            }
            for &j in &changed[i] {
                explained.insert((i.min(j), i.max(j)));
            }
            let (ov, nv) = &pairs[i];
            let names = |js: &mut dyn Iterator<Item = usize>| {
                js.map(|j| format!("`{}`", pairs[j].1.key))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let joined: Vec<usize> = changed[i]
                .iter()
                .copied()
                .filter(|&j| together(i, j, true))
                .collect();
            let left: Vec<usize> = changed[i]
                .iter()
                .copied()
                .filter(|&j| together(i, j, false))
                .collect();
            let mut parts = Vec::new();
            if !joined.is_empty() {
                parts.push(format!(
                    "it now shares oneof `{}` with {}: old writers may set them together, and new readers reject a message that sets two members of one oneof",
                    nv.oneof.as_deref().unwrap_or_default(),
                    names(&mut joined.iter().copied())
                ));
            }
            if !left.is_empty() {
                parts.push(format!(
                    "it no longer shares oneof `{}` with {}: new writers may set them together, and old readers reject a message that sets two members of one oneof",
                    ov.oneof.as_deref().unwrap_or_default(),
                    names(&mut left.iter().copied())
                ));
            }
            self.push(
                Finding::new(
                    "oneof-changed",
                    Severity::Error,
                    format!(
                        "{} (key \"{}\") of {title}: {}",
                        nv.what,
                        nv.key,
                        parts.join("; ")
                    ),
                    "keep oneof membership; add new fields instead",
                )
                .at(nv.location.clone())
                .was_at(ov.location.clone()),
            );
        }
    }

    fn reserved_released(&mut self, old: &MessageDescriptor, new: &MessageDescriptor, title: &str) {
        let old_proto = old.descriptor_proto();
        let new_proto = new.descriptor_proto();
        for reserved in &old_proto.reserved_name {
            if !new_proto.reserved_name.contains(reserved)
                && new.get_field_by_name(reserved).is_none()
            {
                self.push(
                    Finding::new(
                        "reserved-released",
                        Severity::Warning,
                        format!(
                            "reserved name `{reserved}` of {title} is no longer reserved: nothing changes on the wire now, but a new field could reuse the key with another meaning"
                        ),
                        "keep it reserved so it is not reused with another meaning",
                    )
                    .at(message_location(new, self.new_texts)),
                );
            }
        }
        for range in &old_proto.reserved_range {
            let kept = new_proto
                .reserved_range
                .iter()
                .any(|r| r.start() <= range.start() && r.end() >= range.end());
            if !kept {
                self.push(
                    Finding::new(
                        "reserved-released",
                        Severity::Warning,
                        format!(
                            "{} of {title}: nothing changes on the wire now, but binary readers of old data would misread a new field that reuses one",
                            if range.end() - range.start() == 1 {
                                format!("reserved number {} is no longer reserved", range.start())
                            } else {
                                format!(
                                    "reserved numbers {} to {} are no longer all reserved",
                                    range.start(),
                                    range.end() - 1
                                )
                            }
                        ),
                        "keep them reserved so they are not reused with another meaning",
                    )
                    .at(message_location(new, self.new_texts)),
                );
            }
        }
    }

    fn compare_enums(&mut self, pair: &Pair<EnumDescriptor>) {
        let (old, new) = (&pair.old, &pair.new);
        let title = Self::title(old.full_name(), new.full_name(), &pair.via);
        let uses = self
            .enum_uses
            .get(old.full_name())
            .copied()
            .unwrap_or_default()
            .union(
                self.enum_uses
                    .get(new.full_name())
                    .copied()
                    .unwrap_or_default(),
            );
        // An enum no field of either tree uses may be used by another tree: assume any use.
        let uses = if uses.is_unused() {
            EnumUse {
                implicit: true,
                explicit: true,
                collection: true,
            }
        } else {
            uses
        };
        let declared = |e: &EnumDescriptor| -> Vec<(String, i32)> {
            e.enum_descriptor_proto()
                .value
                .iter()
                .map(|v| (v.name().to_owned(), v.number()))
                .collect()
        };
        let (old_values, new_values) = (declared(old), declared(new));
        // What writers write for a number: the first name declared with it.
        let primary = |values: &[(String, i32)], n: i32| {
            values
                .iter()
                .find(|(_, v)| *v == n)
                .map(|(name, _)| name.clone())
        };
        let index = |values: &[(String, i32)], name: &str| {
            values.iter().position(|(n, _)| n == name).unwrap_or(0) as i32
        };
        let old_at =
            |name: &str| enum_location(old, &[2, index(&old_values, name)], self.old_texts);
        let new_at =
            |name: &str| enum_location(new, &[2, index(&new_values, name)], self.new_texts);
        // The zero value (proto3) or first value (proto2) is what an absent field reads as.
        let default_number = old_values.first().map(|(_, n)| *n).unwrap_or(0);
        let new_name = |name: &str| new_values.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        let old_name = |name: &str| old_values.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        // What a reader dropping a name costs for values of `number`.
        let drop_cost = |number: i32| -> (Severity, &'static str) {
            if uses.collection {
                (
                    Severity::Error,
                    "a list loses the element, a map the entry, and a field holding it reads as unset",
                )
            } else if number != default_number {
                (
                    Severity::Error,
                    "a field holding it reads as unset, the default value",
                )
            } else if uses.explicit {
                (
                    Severity::Warning,
                    "it is the default value, so the value read is the same, but a field with presence set to it reads as unset",
                )
            } else {
                (
                    Severity::Warning,
                    "it is the default value, which fields without presence never write, so queue payloads are unaffected; readers that reject unknown enum names fail on JSON written with default values",
                )
            }
        };
        let mut findings = Vec::new();
        let mut explained = BTreeSet::new();
        for (name, number) in &old_values {
            let number = *number;
            match new_name(name) {
                Some(n) if n != number => findings.push(
                    Finding::new(
                        "enum-value-renumbered",
                        Severity::Warning,
                        format!(
                            "enum value `{name}` of {title} moved from number {number} to {n}: JSON carries the name, so it is unchanged, but binary protobuf readers of the other version read the other number"
                        ),
                        "keep the value's number",
                    )
                    .at(new_at(name))
                    .was_at(old_at(name)),
                ),
                Some(_) => {}
                None => {
                    // Old writers write `name` only when it is the first name of its number.
                    let old_primary = primary(&old_values, number).unwrap_or_default();
                    let (mut severity, cost) = if old_primary == *name {
                        let (s, c) = drop_cost(number);
                        (s, c.to_owned())
                    } else {
                        (
                            Severity::Warning,
                            format!("writers write `{old_primary}`, never this alias, but JSON written by hand with it no longer reads"),
                        )
                    };
                    let mut why = format!(
                        "new readers drop the name \"{name}\" that old writers send ({cost})"
                    );
                    let successor =
                        primary(&new_values, number).filter(|to| old_name(to).is_none());
                    match successor {
                        Some(to) => {
                            explained.insert(number);
                            let (back, back_cost) = drop_cost(number);
                            severity = severity.min(back);
                            why = if back_cost == cost {
                                format!(
                                    "new readers drop the name \"{name}\" that old writers send, and old readers the name \"{to}\" that new writers send ({cost})"
                                )
                            } else {
                                format!(
                                    "{why}; old readers drop the name \"{to}\" that new writers send ({back_cost})"
                                )
                            };
                            findings.push(
                                Finding::new(
                                    "enum-value-renamed",
                                    severity,
                                    format!(
                                        "enum value {number} of {title} was renamed from `{name}` to `{to}`: {why}"
                                    ),
                                    "enums travel by name: keep the old name (add the new one as an alias after it)",
                                )
                                .at(new_at(&to))
                                .was_at(old_at(name)),
                            );
                        }
                        None => findings.push(
                            Finding::new(
                                "enum-value-removed",
                                severity,
                                format!("enum value `{name}` ({number}) of {title} is gone: {why}"),
                                "keep the value (deprecate it instead): old writers still send its name",
                            )
                            .at(enum_location(new, &[], self.new_texts))
                            .was_at(old_at(name)),
                        ),
                    }
                }
            }
        }
        // Names new writers write that old readers do not know.
        let mut numbers: Vec<i32> = new_values.iter().map(|(_, n)| *n).collect();
        numbers.sort_unstable();
        numbers.dedup();
        for number in numbers {
            let Some(written) = primary(&new_values, number) else {
                continue;
            };
            if old_name(&written).is_some() || explained.contains(&number) {
                continue;
            }
            match primary(&old_values, number) {
                Some(before) => {
                    let (severity, cost) = drop_cost(number);
                    findings.push(
                        Finding::new(
                            "enum-value-renamed",
                            severity,
                            format!(
                                "enum value {number} of {title} is now written as `{written}`, declared before `{before}`: old readers drop the name \"{written}\" that new writers send ({cost})"
                            ),
                            "declare the old name first: writers write the first name declared for a number",
                        )
                        .at(new_at(&written))
                        .was_at(old_at(&before)),
                    );
                }
                None => findings.push(
                    Finding::new(
                        "enum-value-added",
                        Severity::Warning,
                        format!(
                            "enum value `{written}` ({number}) added to {title}: old readers drop the name \"{written}\", so a field holding it reads as unset there (readers that reject unknown enum names fail instead)"
                        ),
                        "upgrade readers before writers send it",
                    )
                    .at(new_at(&written)),
                ),
            }
        }
        for f in findings {
            self.push(f);
        }
    }
}

struct Side<'a> {
    compiled: &'a Compiled,
    bindings: Vec<TopicBinding>,
    extension: Option<ExtensionDescriptor>,
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
            extension: ext,
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

    /// Extensions of user messages (options extensions are not payload JSON).
    fn extensions(&self) -> Vec<ExtensionDescriptor> {
        self.compiled
            .pool
            .all_extensions()
            .filter(|e| e.containing_message().package_name() != "google.protobuf")
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
///
/// Messages are paired by full name, then payloads by topic key, then the types of paired
/// fields with each other (so renamed and moved types are compared too); fields by name, then
/// number; enum values by name, then number. Each finding says which JSON key or value changes
/// for which side; what JSON cannot observe is at most a warning.
pub fn breaking(old: &Compiled, new: &Compiled, options: &BreakingOptions) -> Vec<Finding> {
    let ext = options.topic_keys_extension.as_deref();
    let (old_side, new_side) = (Side::new(old, ext), Side::new(new, ext));
    let mut cmp = Comparer::new(old, new, options);
    let (old_texts, new_texts) = (&old.texts, &new.texts);

    if let (Some(a), Some(b)) = (&old_side.extension, &new_side.extension) {
        if a.number() != b.number() {
            cmp.push(
                Finding::new(
                    "topic-keys-renumbered",
                    Severity::Error,
                    format!(
                        "the topic_keys option `{}` moved from field {} to {}: tools that read the bindings from a descriptor look the option up by number",
                        b.full_name(),
                        a.number(),
                        b.number()
                    ),
                    "keep the option's field number",
                )
                .at(Location::of_path(&b.parent_file(), b.path(), 2, new_texts))
                .was_at(Location::of_path(&a.parent_file(), a.path(), 2, old_texts)),
            );
        }
    }

    // Pair messages by full name, then unpaired payloads by topic key.
    let old_messages = old_side.messages();
    let new_messages = new_side.messages();
    let mut by_key: Vec<(String, String)> = Vec::new();
    for (name, m) in &old_messages {
        if let Some(n) = new_messages.get(name) {
            cmp.pair_messages(m.clone(), n.clone(), None);
            continue;
        }
        let keys = old_side.keys_of(name);
        if keys.is_empty() {
            continue; // A non-payload type renamed or moved: the fields that use it pair it.
        }
        let partner = keys
            .iter()
            .find_map(|k| new_side.binding(&k.key))
            .map(|b| b.message.clone());
        match partner {
            Some(n) if !old_messages.contains_key(n.full_name()) || n.full_name() == name => {
                by_key.push((name.clone(), n.full_name().to_owned()));
                cmp.pair_messages(m.clone(), n, None);
            }
            _ => cmp.push(
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
    // Enums by full name.
    let new_enums = new_side.enums();
    for (name, e) in old_side.enums() {
        if let Some(n) = new_enums.get(&name) {
            cmp.pair_enums(e, n.clone(), None);
        }
    }
    // Extensions by full name, then by extended message and number.
    let new_extensions = new_side.extensions();
    for oe in old_side.extensions() {
        let ne = new_extensions
            .iter()
            .find(|n| n.full_name() == oe.full_name())
            .or_else(|| {
                new_extensions.iter().find(|n| {
                    n.number() == oe.number()
                        && n.containing_message().full_name() == oe.containing_message().full_name()
                })
            });
        let ov = FieldView::extension(&oe, old_texts);
        let title = format!("`{}`", oe.containing_message().full_name());
        match ne {
            Some(ne) => {
                let nv = FieldView::extension(ne, new_texts);
                cmp.compare_fields(&ov, &nv, &title, oe.containing_message().full_name());
            }
            None => {
                let at = new_messages
                    .get(oe.containing_message().full_name())
                    .and_then(|m| message_location(m, new_texts));
                cmp.removed(&ov, &title, at);
            }
        }
    }
    cmp.run();

    // Topic keys.
    for b in &old_side.bindings {
        match new_side.binding(&b.key) {
            None => cmp.push(
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
            Some(nb) if nb.message.full_name() != b.message.full_name() => {
                let paired = by_key
                    .iter()
                    .any(|(o, n)| o == b.message.full_name() && n == nb.message.full_name());
                if paired {
                    continue;
                }
                // Compare what old readers of the key expect with what the key now carries.
                let mut scratch = Comparer::new(old, new, options);
                scratch.pair_messages(b.message.clone(), nb.message.clone(), None);
                scratch.run();
                let errors: Vec<&Finding> = scratch
                    .findings
                    .iter()
                    .filter(|f| f.severity == Severity::Error)
                    .collect();
                if let Some(first) = errors.first() {
                    let more = match errors.len() - 1 {
                        0 => String::new(),
                        n => format!(" (and {n} more)"),
                    };
                    cmp.push(
                        Finding::new(
                            "topic-key-moved",
                            Severity::Error,
                            format!(
                                "topic key {:?} moved from `{}` to `{}`, whose JSON old readers and writers of the key cannot use: {}{more}",
                                b.key,
                                b.message.full_name(),
                                nb.message.full_name(),
                                first.message
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
    cmp.findings
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

    #[test]
    fn scalar_forms_differ_one_way_at_least() {
        use Scalar::*;
        let all = [
            Int32, Uint32, Int64, Uint64, Float, Double, Bool, String, Bytes,
        ];
        for a in all {
            for b in all {
                let (fa, fb) = (Form::Scalar(a), Form::Scalar(b));
                let either = read_problem(&fa, &fb).is_some() || read_problem(&fb, &fa).is_some();
                assert_eq!(either, a != b, "{a:?} and {b:?}");
                let keys = [Int32, Uint32, Int64, Uint64, Bool, String];
                if keys.contains(&a) && keys.contains(&b) {
                    let either = key_problem(a, b).is_some() || key_problem(b, a).is_some();
                    assert_eq!(either, a != b, "keys {a:?} and {b:?}");
                }
            }
        }
        // Widening reads every old value; the other way names a value that fails.
        assert_eq!(scalar_problem(Int32, Int64), None);
        assert_eq!(scalar_problem(Uint32, Double), None);
        assert_eq!(scalar_problem(Float, Double), None);
        assert_eq!(key_problem(Uint32, Int64), None);
        assert_eq!(
            scalar_problem(Int64, Int32).as_deref(),
            Some("reject values outside the 32-bit signed range, such as \"2147483648\"")
        );
        assert_eq!(
            key_problem(Int32, Uint64).as_deref(),
            Some("reject keys outside the 64-bit unsigned range, such as \"-1\"")
        );
    }
}
