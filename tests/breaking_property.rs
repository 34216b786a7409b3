//! `keyway contract breaking` against what protobuf JSON shows.
//!
//! Each case builds a random proto3 schema (a payload with a topic key and a few messages and
//! enums: scalar, wrapper, enum, message, list, map, oneof and optional fields), then applies
//! single random changes to it, one at a time. For each change, random messages written under
//! one version are encoded to protobuf JSON in the queue's form (proto field names, default
//! values left out, enums by name) and read under the other (unknown fields and enum names
//! ignored), with prost-reflect's dynamic messages, both ways; and what an old writer sends is
//! relayed through a reader and writer of the new version back to an old reader. Values are
//! compared field by field through the identities the change keeps (a renamed field is still
//! the same field), so that a field or enum name the reader does not know is an expected loss
//! only when the writer's version added it. A change breaks when some message fails to decode
//! or loses or changes a value; the checker's verdict (any error) must be the same, and every
//! error it reports must name the changed field or value.
//!
//! `KEYWAY_PROPTEST_CASES` sets the number of schemas (default 64), each with
//! [`CHANGES_PER_SCHEMA`] changes, the kinds taken in turn; a disagreement names the
//! `KEYWAY_BREAKING_SEED=<seed>@<kind>` that replays its schema. Run with `--nocapture` for
//! the table of change kinds and agreement.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use keyway_codegen::contract::{self, BreakingOptions, Severity};
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use prost_reflect::{
    DeserializeOptions, DynamicMessage, MapKey, MessageDescriptor, ReflectMessage,
    SerializeOptions, Value,
};

/// Changes tried on each random schema.
const CHANGES_PER_SCHEMA: usize = 4;
/// Messages written per direction and change, before the checker's verdict is consulted.
const SAMPLES: usize = 12;
/// Messages tried in all before a break the checker reports counts as not observable.
const MAX_SAMPLES: usize = 400;

// ---------------------------------------------------------------------------------------------
// Randomness: one seed per schema, so a case can be replayed.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

// ---------------------------------------------------------------------------------------------
// The schema model: every field, message, enum and enum value has an identity that changes
// keep, which is what values are compared through.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sc {
    Int32,
    Sint32,
    Sfixed32,
    Uint32,
    Fixed32,
    Int64,
    Sint64,
    Sfixed64,
    Uint64,
    Fixed64,
    Float,
    Double,
    Bool,
    String,
    Bytes,
}

const SCALARS: &[Sc] = &[
    Sc::Int32,
    Sc::Sint32,
    Sc::Sfixed32,
    Sc::Uint32,
    Sc::Fixed32,
    Sc::Int64,
    Sc::Sint64,
    Sc::Sfixed64,
    Sc::Uint64,
    Sc::Fixed64,
    Sc::Float,
    Sc::Double,
    Sc::Bool,
    Sc::String,
    Sc::Bytes,
];

const MAP_KEYS: &[Sc] = &[
    Sc::Int32,
    Sc::Sint32,
    Sc::Sfixed32,
    Sc::Uint32,
    Sc::Fixed32,
    Sc::Int64,
    Sc::Sint64,
    Sc::Sfixed64,
    Sc::Uint64,
    Sc::Fixed64,
    Sc::Bool,
    Sc::String,
];

impl Sc {
    fn proto(self) -> &'static str {
        match self {
            Sc::Int32 => "int32",
            Sc::Sint32 => "sint32",
            Sc::Sfixed32 => "sfixed32",
            Sc::Uint32 => "uint32",
            Sc::Fixed32 => "fixed32",
            Sc::Int64 => "int64",
            Sc::Sint64 => "sint64",
            Sc::Sfixed64 => "sfixed64",
            Sc::Uint64 => "uint64",
            Sc::Fixed64 => "fixed64",
            Sc::Float => "float",
            Sc::Double => "double",
            Sc::Bool => "bool",
            Sc::String => "string",
            Sc::Bytes => "bytes",
        }
    }

    /// The wrapper well-known type whose JSON is this scalar's.
    fn wrapper(self) -> &'static str {
        match self {
            Sc::Int32 | Sc::Sint32 | Sc::Sfixed32 => "google.protobuf.Int32Value",
            Sc::Uint32 | Sc::Fixed32 => "google.protobuf.UInt32Value",
            Sc::Int64 | Sc::Sint64 | Sc::Sfixed64 => "google.protobuf.Int64Value",
            Sc::Uint64 | Sc::Fixed64 => "google.protobuf.UInt64Value",
            Sc::Float => "google.protobuf.FloatValue",
            Sc::Double => "google.protobuf.DoubleValue",
            Sc::Bool => "google.protobuf.BoolValue",
            Sc::String => "google.protobuf.StringValue",
            Sc::Bytes => "google.protobuf.BytesValue",
        }
    }

    /// The scalar a wrapper holds.
    fn unwrapped(self) -> Sc {
        match self {
            Sc::Int32 | Sc::Sint32 | Sc::Sfixed32 => Sc::Int32,
            Sc::Uint32 | Sc::Fixed32 => Sc::Uint32,
            Sc::Int64 | Sc::Sint64 | Sc::Sfixed64 => Sc::Int64,
            Sc::Uint64 | Sc::Fixed64 => Sc::Uint64,
            other => other,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Ty {
    Scalar(Sc),
    /// A wrapper well-known type (`google.protobuf.Int32Value` for `Wrapper(Int32)`).
    Wrapper(Sc),
    Enum(u32),
    Message(u32),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Card {
    Single,
    List,
    /// A map with these keys (the field's type is the value type).
    Map(Sc),
}

#[derive(Debug, Clone)]
struct Field {
    id: u32,
    name: String,
    json_name: Option<String>,
    number: u32,
    ty: Ty,
    card: Card,
    optional: bool,
    oneof: Option<String>,
}

#[derive(Debug, Clone)]
struct Msg {
    id: u32,
    name: String,
    /// The message this one is nested in.
    parent: Option<u32>,
    fields: Vec<Field>,
    reserved_numbers: Vec<u32>,
    reserved_names: Vec<String>,
    topic_key: Option<String>,
}

#[derive(Debug, Clone)]
struct EnumValue {
    id: u32,
    name: String,
    number: i32,
}

#[derive(Debug, Clone)]
struct Enum {
    id: u32,
    name: String,
    values: Vec<EnumValue>,
}

#[derive(Debug, Clone)]
struct Schema {
    package: String,
    messages: Vec<Msg>,
    enums: Vec<Enum>,
    next_id: u32,
}

const WORDS: &[&str] = &[
    "count", "name", "total", "flag", "note", "kind", "size", "tag", "score", "label", "owner",
    "price",
];
const ROOT_KEY: &str = "root-events";

impl Schema {
    fn fresh(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn message(&self, id: u32) -> &Msg {
        self.messages.iter().find(|m| m.id == id).expect("message")
    }

    fn message_mut(&mut self, id: u32) -> &mut Msg {
        self.messages
            .iter_mut()
            .find(|m| m.id == id)
            .expect("message")
    }

    fn enum_(&self, id: u32) -> &Enum {
        self.enums.iter().find(|e| e.id == id).expect("enum")
    }

    fn root(&self) -> &Msg {
        &self.messages[0]
    }

    fn has_float_wrapper(&self) -> bool {
        self.messages.iter().any(|m| {
            m.fields
                .iter()
                .any(|f| matches!(f.ty, Ty::Wrapper(Sc::Float | Sc::Double)))
        })
    }

    fn full_name(&self, id: u32) -> String {
        let m = self.message(id);
        match m.parent {
            Some(p) => format!("{}.{}", self.full_name(p), m.name),
            None => format!("{}.{}", self.package, m.name),
        }
    }

    fn type_name(&self, ty: &Ty) -> String {
        match ty {
            Ty::Scalar(s) => s.proto().to_owned(),
            Ty::Wrapper(s) => s.wrapper().to_owned(),
            Ty::Enum(e) => format!(".{}.{}", self.package, self.enum_(*e).name),
            Ty::Message(m) => format!(".{}", self.full_name(*m)),
        }
    }

    fn field_name(&mut self, rng: &mut Rng) -> (u32, String) {
        let id = self.fresh();
        (id, format!("{}_{id}", rng.pick(WORDS)))
    }

    fn used_numbers(&self, m: &Msg) -> BTreeSet<u32> {
        m.fields
            .iter()
            .map(|f| f.number)
            .chain(m.reserved_numbers.iter().copied())
            .collect()
    }

    fn free_number(&self, m: &Msg, rng: &mut Rng) -> u32 {
        let used = self.used_numbers(m);
        loop {
            let n = 1 + rng.below(40) as u32;
            if !used.contains(&n) {
                return n;
            }
        }
    }

    /// Messages a field of `m` may use: later ones, so the type graph has no cycles.
    fn later_messages(&self, m: u32) -> Vec<u32> {
        let at = self.messages.iter().position(|x| x.id == m).unwrap_or(0);
        self.messages[at + 1..].iter().map(|x| x.id).collect()
    }

    fn random_type(&self, m: u32, rng: &mut Rng, allow_message: bool) -> Ty {
        let later = self.later_messages(m);
        match rng.below(10) {
            0..=4 => Ty::Scalar(*rng.pick(SCALARS)),
            5 => Ty::Wrapper(rng.pick(SCALARS).unwrapped()),
            6 | 7 if !self.enums.is_empty() => Ty::Enum(rng.pick(&self.enums).id),
            _ if allow_message && !later.is_empty() => Ty::Message(*rng.pick(&later)),
            _ => Ty::Scalar(*rng.pick(SCALARS)),
        }
    }

    fn random_field(&mut self, m: u32, rng: &mut Rng) -> Field {
        let (id, name) = self.field_name(rng);
        let number = {
            let msg = self.message(m).clone();
            self.free_number(&msg, rng)
        };
        let ty = self.random_type(m, rng, true);
        let card = match rng.below(10) {
            0..=5 => Card::Single,
            6 | 7 => Card::List,
            _ => Card::Map(*rng.pick(MAP_KEYS)),
        };
        let optional =
            card == Card::Single && matches!(ty, Ty::Scalar(_) | Ty::Enum(_)) && rng.chance(25);
        Field {
            id,
            name,
            json_name: None,
            number,
            ty,
            card,
            optional,
            oneof: None,
        }
    }

    fn generate(rng: &mut Rng) -> Schema {
        let mut s = Schema {
            package: "prop.v1".to_owned(),
            messages: Vec::new(),
            enums: Vec::new(),
            next_id: 0,
        };
        for e in 0..1 + rng.below(2) {
            let id = s.fresh();
            let name = format!("Enum{e}");
            let prefix = format!("ENUM{e}");
            let mut values = vec![EnumValue {
                id: s.fresh(),
                name: format!("{prefix}_UNSPECIFIED"),
                number: 0,
            }];
            for n in 1..=1 + rng.below(3) as i32 {
                values.push(EnumValue {
                    id: s.fresh(),
                    name: format!(
                        "{prefix}_{}",
                        rng.pick(WORDS).to_uppercase() + &n.to_string()
                    ),
                    number: n,
                });
            }
            s.enums.push(Enum { id, name, values });
        }
        let count = 1 + rng.below(3);
        for i in 0..count {
            let id = s.fresh();
            s.messages.push(Msg {
                id,
                name: if i == 0 {
                    "Root".to_owned()
                } else {
                    format!("Part{i}")
                },
                parent: None,
                fields: Vec::new(),
                reserved_numbers: Vec::new(),
                reserved_names: Vec::new(),
                topic_key: (i == 0).then(|| ROOT_KEY.to_owned()),
            });
        }
        // Nest some parts in an earlier message.
        for i in 1..count {
            if rng.chance(30) {
                let parent = s.messages[rng.below(i)].id;
                s.messages[i].parent = Some(parent);
            }
        }
        let ids: Vec<u32> = s.messages.iter().map(|m| m.id).collect();
        for (i, &m) in ids.iter().enumerate() {
            for _ in 0..2 + rng.below(4) {
                let f = s.random_field(m, rng);
                s.message_mut(m).fields.push(f);
            }
            // Every later message is used by an earlier one, so every message is reachable.
            if i + 1 < ids.len() {
                let (id, name) = s.field_name(rng);
                let msg = s.message(m).clone();
                let number = s.free_number(&msg, rng);
                let target = ids[i + 1];
                s.message_mut(m).fields.push(Field {
                    id,
                    name,
                    json_name: None,
                    number,
                    ty: Ty::Message(target),
                    card: if rng.chance(70) {
                        Card::Single
                    } else {
                        Card::List
                    },
                    optional: false,
                    oneof: None,
                });
            }
            // A oneof of two or three single fields, sometimes.
            if rng.chance(50) {
                let oneof = format!("choice_{}", s.fresh());
                let msg = s.message_mut(m);
                let mut members = 0;
                for f in msg.fields.iter_mut() {
                    if f.card == Card::Single && members < 3 && (members < 2 || rng.chance(50)) {
                        f.oneof = Some(oneof.clone());
                        f.optional = false;
                        members += 1;
                    }
                }
                if members == 1 {
                    for f in msg.fields.iter_mut() {
                        if f.oneof.as_deref() == Some(&oneof) {
                            f.oneof = None;
                        }
                    }
                }
            }
            if rng.chance(30) {
                let msg = s.message(m).clone();
                let n = 41 + rng.below(10) as u32;
                if !s.used_numbers(&msg).contains(&n) {
                    s.message_mut(m).reserved_numbers.push(n);
                }
                let id = s.fresh();
                s.message_mut(m).reserved_names.push(format!("gone_{id}"));
            }
        }
        // Every enum is used by some field.
        for e in s.enums.clone() {
            let used = s
                .messages
                .iter()
                .any(|m| m.fields.iter().any(|f| f.ty == Ty::Enum(e.id)));
            if !used {
                let (id, name) = s.field_name(rng);
                let msg = s.root().clone();
                let number = s.free_number(&msg, rng);
                let card = *rng.pick(&[Card::Single, Card::List, Card::Map(Sc::String)]);
                s.messages[0].fields.push(Field {
                    id,
                    name,
                    json_name: None,
                    number,
                    ty: Ty::Enum(e.id),
                    card,
                    optional: false,
                    oneof: None,
                });
            }
        }
        s
    }

    fn render(&self) -> BTreeMap<String, String> {
        let mut out = String::new();
        out.push_str("syntax = \"proto3\";\n\n");
        out.push_str(&format!("package {};\n\n", self.package));
        out.push_str("import \"google/protobuf/wrappers.proto\";\nimport \"q/options.proto\";\n\n");
        for e in &self.enums {
            out.push_str(&format!("enum {} {{\n", e.name));
            for v in &e.values {
                out.push_str(&format!("  {} = {};\n", v.name, v.number));
            }
            out.push_str("}\n\n");
        }
        for m in self.messages.iter().filter(|m| m.parent.is_none()) {
            self.render_message(m, 0, &mut out);
        }
        let mut files = BTreeMap::new();
        files.insert("prop/schema.proto".to_owned(), out);
        files.insert(
            "q/options.proto".to_owned(),
            "syntax = \"proto3\";\n\npackage q;\n\nimport \"google/protobuf/descriptor.proto\";\n\nextend google.protobuf.MessageOptions {\n  repeated string topic_keys = 50001;\n}\n"
                .to_owned(),
        );
        files
    }

    fn render_field(&self, f: &Field, indent: &str) -> String {
        let ty = self.type_name(&f.ty);
        let label = match f.card {
            Card::Map(k) => format!("map<{}, {ty}>", k.proto()),
            Card::List => format!("repeated {ty}"),
            Card::Single if f.optional => format!("optional {ty}"),
            Card::Single => ty,
        };
        let options = f
            .json_name
            .as_ref()
            .map(|j| format!(" [json_name = \"{j}\"]"))
            .unwrap_or_default();
        format!("{indent}{label} {} = {}{options};\n", f.name, f.number)
    }

    fn render_message(&self, m: &Msg, depth: usize, out: &mut String) {
        let pad = "  ".repeat(depth);
        out.push_str(&format!("{pad}message {} {{\n", m.name));
        if let Some(key) = &m.topic_key {
            out.push_str(&format!("{pad}  option (q.topic_keys) = \"{key}\";\n"));
        }
        let mut done = BTreeSet::new();
        for f in &m.fields {
            match &f.oneof {
                None => out.push_str(&self.render_field(f, &format!("{pad}  "))),
                Some(o) if done.insert(o.clone()) => {
                    out.push_str(&format!("{pad}  oneof {o} {{\n"));
                    for g in m.fields.iter().filter(|g| g.oneof.as_ref() == Some(o)) {
                        out.push_str(&self.render_field(g, &format!("{pad}    ")));
                    }
                    out.push_str(&format!("{pad}  }}\n"));
                }
                Some(_) => {}
            }
        }
        if !m.reserved_numbers.is_empty() {
            let list: Vec<String> = m.reserved_numbers.iter().map(u32::to_string).collect();
            out.push_str(&format!("{pad}  reserved {};\n", list.join(", ")));
        }
        if !m.reserved_names.is_empty() {
            let list: Vec<String> = m
                .reserved_names
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect();
            out.push_str(&format!("{pad}  reserved {};\n", list.join(", ")));
        }
        for child in self.messages.iter().filter(|c| c.parent == Some(m.id)) {
            self.render_message(child, depth + 1, out);
        }
        out.push_str(&format!("{pad}}}\n"));
    }
}

// ---------------------------------------------------------------------------------------------
// Changes.

/// What a change is about, for the check that every error names it.
#[derive(Debug, Clone, Default)]
struct Subject {
    /// Names of which one must appear in every error message.
    names: Vec<String>,
}

#[derive(Debug, Clone)]
struct Change {
    describe: String,
    subject: Subject,
}

/// Every kind of change the test makes.
const KINDS: &[&str] = &[
    "rename field",
    "rename field to its json_name",
    "rename field keeping both keys",
    "set json_name",
    "renumber field",
    "retype scalar",
    "retype across scalar and enum",
    "retype map key",
    "scalar to wrapper",
    "wrapper to scalar",
    "wrapper to another scalar",
    "wrap in a message",
    "unwrap a message field",
    "add optional",
    "remove optional",
    "move into a oneof with others",
    "move into a oneof of its own",
    "move out of a oneof",
    "rename oneof",
    "single to repeated",
    "repeated to single",
    "add enum value",
    "remove enum value",
    "rename enum value",
    "renumber enum value",
    "rename enum",
    "rename message",
    "rename package",
    "nest or unnest message",
    "add field",
    "delete field",
    "delete field and reserve it",
    "reserve a number and a name",
    "release a reservation",
    "remove the topic key",
];

fn fields_where(s: &Schema, pred: impl Fn(&Msg, &Field) -> bool) -> Vec<(u32, u32)> {
    s.messages
        .iter()
        .flat_map(|m| {
            m.fields
                .iter()
                .filter(|f| pred(m, f))
                .map(|f| (m.id, f.id))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn field_mut(s: &mut Schema, m: u32, f: u32) -> &mut Field {
    s.message_mut(m)
        .fields
        .iter_mut()
        .find(|x| x.id == f)
        .expect("field")
}

fn camel(name: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in name.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Apply a random change of `kind` to a copy of `base`; `None` when nothing in the schema fits.
fn mutate(base: &Schema, kind: &'static str, rng: &mut Rng) -> Option<(Schema, Change)> {
    let mut s = base.clone();
    let change = |describe: String, names: Vec<String>| Change {
        describe,
        subject: Subject { names },
    };
    let pick = |v: Vec<(u32, u32)>, rng: &mut Rng| -> Option<(u32, u32)> {
        (!v.is_empty()).then(|| v[rng.below(v.len())])
    };
    let single = |f: &Field| f.card == Card::Single;
    let result = match kind {
        "rename field" => {
            let (m, f) = pick(fields_where(&s, |_, _| true), rng)?;
            let id = s.fresh();
            let field = field_mut(&mut s, m, f);
            let old = field.name.clone();
            field.name = format!("renamed_{id}");
            let new = field.name.clone();
            change(format!("rename `{old}` to `{new}`"), vec![old, new])
        }
        "rename field to its json_name" => {
            let (m, f) = pick(fields_where(&s, |_, f| f.json_name.is_none()), rng)?;
            let field = field_mut(&mut s, m, f);
            let old = field.name.clone();
            field.name = camel(&old);
            let new = field.name.clone();
            change(format!("rename `{old}` to `{new}`"), vec![old, new])
        }
        "rename field keeping both keys" => {
            let (m, f) = pick(fields_where(&s, |_, f| f.json_name.is_none()), rng)?;
            let field = field_mut(&mut s, m, f);
            let old = field.name.clone();
            field.name = camel(&old);
            field.json_name = Some(old.clone());
            let new = field.name.clone();
            change(
                format!("rename `{old}` to `{new}` with json_name \"{old}\""),
                vec![old, new],
            )
        }
        "set json_name" => {
            let (m, f) = pick(fields_where(&s, |_, f| f.json_name.is_none()), rng)?;
            let id = s.fresh();
            let field = field_mut(&mut s, m, f);
            field.json_name = Some(format!("alt{id}"));
            let name = field.name.clone();
            change(format!("json_name \"alt{id}\" on `{name}`"), vec![name])
        }
        "renumber field" => {
            let (m, f) = pick(fields_where(&s, |_, _| true), rng)?;
            let msg = s.message(m).clone();
            let n = s.free_number(&msg, rng);
            let field = field_mut(&mut s, m, f);
            field.number = n;
            let name = field.name.clone();
            change(format!("renumber `{name}` to {n}"), vec![name])
        }
        "retype scalar" => {
            let (m, f) = pick(fields_where(&s, |_, f| matches!(f.ty, Ty::Scalar(_))), rng)?;
            let to = *rng.pick(SCALARS);
            let current = field_mut(&mut s, m, f).ty.clone();
            if current == Ty::Scalar(to) {
                return None;
            }
            let from = s.type_name(&current);
            let field = field_mut(&mut s, m, f);
            field.ty = Ty::Scalar(to);
            let name = field.name.clone();
            change(format!("`{name}`: {from} → {}", to.proto()), vec![name])
        }
        "retype across scalar and enum" => {
            let (m, f) = pick(
                fields_where(&s, |_, f| matches!(f.ty, Ty::Scalar(_) | Ty::Enum(_))),
                rng,
            )?;
            let current = field_mut(&mut s, m, f).ty.clone();
            let to = match current {
                Ty::Scalar(_) => Ty::Enum(rng.pick(&s.enums).id),
                _ => Ty::Scalar(*rng.pick(&[Sc::String, Sc::Int32, Sc::Int64, Sc::Uint32])),
            };
            let (from, to_name) = (s.type_name(&current), s.type_name(&to));
            let field = field_mut(&mut s, m, f);
            field.ty = to;
            let name = field.name.clone();
            change(format!("`{name}`: {from} → {to_name}"), vec![name])
        }
        "retype map key" => {
            let (m, f) = pick(fields_where(&s, |_, f| matches!(f.card, Card::Map(_))), rng)?;
            let to = *rng.pick(MAP_KEYS);
            let field = field_mut(&mut s, m, f);
            let Card::Map(from) = field.card else {
                unreachable!()
            };
            if from == to {
                return None;
            }
            field.card = Card::Map(to);
            let name = field.name.clone();
            change(
                format!("`{name}`: map key {} → {}", from.proto(), to.proto()),
                vec![name],
            )
        }
        "scalar to wrapper" => {
            let (m, f) = pick(fields_where(&s, |_, f| matches!(f.ty, Ty::Scalar(_))), rng)?;
            let field = field_mut(&mut s, m, f);
            let Ty::Scalar(sc) = field.ty else {
                unreachable!()
            };
            field.ty = Ty::Wrapper(sc.unwrapped());
            field.optional = false;
            let name = field.name.clone();
            change(
                format!("`{name}`: {} → {}", sc.proto(), sc.wrapper()),
                vec![name],
            )
        }
        "wrapper to scalar" | "wrapper to another scalar" => {
            let (m, f) = pick(fields_where(&s, |_, f| matches!(f.ty, Ty::Wrapper(_))), rng)?;
            let field = field_mut(&mut s, m, f);
            let Ty::Wrapper(sc) = field.ty else {
                unreachable!()
            };
            let to = if kind == "wrapper to scalar" {
                *rng.pick(
                    &SCALARS
                        .iter()
                        .copied()
                        .filter(|x| x.unwrapped() == sc)
                        .collect::<Vec<_>>(),
                )
            } else {
                let others: Vec<Sc> = SCALARS
                    .iter()
                    .copied()
                    .filter(|x| x.unwrapped() != sc)
                    .collect();
                *rng.pick(&others)
            };
            field.ty = Ty::Scalar(to);
            let name = field.name.clone();
            change(
                format!("`{name}`: {} → {}", sc.wrapper(), to.proto()),
                vec![name],
            )
        }
        "wrap in a message" => {
            let (m, f) = pick(
                fields_where(&s, |_, f| {
                    f.card == Card::Single && matches!(f.ty, Ty::Scalar(_) | Ty::Enum(_))
                }),
                rng,
            )?;
            let id = s.fresh();
            let inner = field_mut(&mut s, m, f).ty.clone();
            let value_id = s.fresh();
            s.messages.push(Msg {
                id,
                name: format!("Box{id}"),
                parent: None,
                fields: vec![Field {
                    id: value_id,
                    name: "value".to_owned(),
                    json_name: None,
                    number: 1,
                    ty: inner,
                    card: Card::Single,
                    optional: false,
                    oneof: None,
                }],
                reserved_numbers: Vec::new(),
                reserved_names: Vec::new(),
                topic_key: None,
            });
            let field = field_mut(&mut s, m, f);
            field.ty = Ty::Message(id);
            field.optional = false;
            let name = field.name.clone();
            change(format!("`{name}` wrapped in message Box{id}"), vec![name])
        }
        "unwrap a message field" => {
            let (m, f) = pick(fields_where(&s, |_, f| matches!(f.ty, Ty::Message(_))), rng)?;
            let to = *rng.pick(SCALARS);
            let field = field_mut(&mut s, m, f);
            field.ty = Ty::Scalar(to);
            let name = field.name.clone();
            change(format!("`{name}`: message → {}", to.proto()), vec![name])
        }
        "add optional" => {
            let (m, f) = pick(
                fields_where(&s, |_, f| {
                    single(f)
                        && f.oneof.is_none()
                        && !f.optional
                        && matches!(f.ty, Ty::Scalar(_) | Ty::Enum(_))
                }),
                rng,
            )?;
            let field = field_mut(&mut s, m, f);
            field.optional = true;
            let name = field.name.clone();
            change(format!("`{name}` made optional"), vec![name])
        }
        "remove optional" => {
            let (m, f) = pick(fields_where(&s, |_, f| f.optional), rng)?;
            let field = field_mut(&mut s, m, f);
            field.optional = false;
            let name = field.name.clone();
            change(format!("`{name}` no longer optional"), vec![name])
        }
        "move into a oneof with others" => {
            let (m, f) = pick(fields_where(&s, |_, f| single(f) && f.oneof.is_none()), rng)?;
            let msg = s.message(m).clone();
            let existing: Vec<String> = msg.fields.iter().filter_map(|x| x.oneof.clone()).collect();
            let partner: Vec<&Field> = msg
                .fields
                .iter()
                .filter(|x| x.id != f && single(x) && x.oneof.is_none())
                .collect();
            let name = field_mut(&mut s, m, f).name.clone();
            if !existing.is_empty() && (partner.is_empty() || rng.chance(50)) {
                let o = rng.pick(&existing).clone();
                let members: Vec<String> = msg
                    .fields
                    .iter()
                    .filter(|x| x.oneof.as_ref() == Some(&o))
                    .map(|x| x.name.clone())
                    .collect();
                let field = field_mut(&mut s, m, f);
                field.oneof = Some(o.clone());
                field.optional = false;
                let mut names = members;
                names.push(name.clone());
                change(format!("`{name}` moved into oneof `{o}`"), names)
            } else if let Some(p) = partner.first() {
                let (pid, pname) = (p.id, p.name.clone());
                let o = format!("pair_{}", s.fresh());
                for id in [f, pid] {
                    let field = field_mut(&mut s, m, id);
                    field.oneof = Some(o.clone());
                    field.optional = false;
                }
                change(
                    format!("`{name}` and `{pname}` moved into a new oneof `{o}`"),
                    vec![name, pname],
                )
            } else {
                return None;
            }
        }
        "move into a oneof of its own" => {
            let (m, f) = pick(fields_where(&s, |_, f| single(f) && f.oneof.is_none()), rng)?;
            let o = format!("alone_{}", s.fresh());
            let field = field_mut(&mut s, m, f);
            field.oneof = Some(o.clone());
            field.optional = false;
            let name = field.name.clone();
            change(format!("`{name}` moved into a new oneof `{o}`"), vec![name])
        }
        "move out of a oneof" => {
            let (m, f) = pick(fields_where(&s, |_, f| f.oneof.is_some()), rng)?;
            let msg = s.message(m).clone();
            let o = field_mut(&mut s, m, f).oneof.clone();
            let mut names: Vec<String> = msg
                .fields
                .iter()
                .filter(|x| x.oneof == o)
                .map(|x| x.name.clone())
                .collect();
            let field = field_mut(&mut s, m, f);
            field.oneof = None;
            let name = field.name.clone();
            names.push(name.clone());
            change(format!("`{name}` moved out of its oneof"), names)
        }
        "rename oneof" => {
            let (m, f) = pick(fields_where(&s, |_, f| f.oneof.is_some()), rng)?;
            let o = field_mut(&mut s, m, f).oneof.clone();
            let to = format!("renamed_{}", s.fresh());
            for x in s.message_mut(m).fields.iter_mut() {
                if x.oneof == o {
                    x.oneof = Some(to.clone());
                }
            }
            change(format!("oneof renamed to `{to}`"), vec![])
        }
        "single to repeated" => {
            let (m, f) = pick(fields_where(&s, |_, f| single(f)), rng)?;
            let field = field_mut(&mut s, m, f);
            field.card = Card::List;
            field.optional = false;
            field.oneof = None;
            let name = field.name.clone();
            change(format!("`{name}` made repeated"), vec![name])
        }
        "repeated to single" => {
            let (m, f) = pick(fields_where(&s, |_, f| f.card == Card::List), rng)?;
            let field = field_mut(&mut s, m, f);
            field.card = Card::Single;
            let name = field.name.clone();
            change(format!("`{name}` made single"), vec![name])
        }
        "add enum value" => {
            let e = rng.below(s.enums.len());
            let id = s.fresh();
            let number = s.enums[e]
                .values
                .iter()
                .map(|v| v.number)
                .max()
                .unwrap_or(0)
                + 1;
            let name = format!("{}_ADDED{id}", s.enums[e].name.to_uppercase());
            s.enums[e].values.push(EnumValue {
                id,
                name: name.clone(),
                number,
            });
            change(format!("enum value `{name}` added"), vec![name])
        }
        "remove enum value" => {
            let e = rng.below(s.enums.len());
            if s.enums[e].values.len() < 2 {
                return None;
            }
            let i = 1 + rng.below(s.enums[e].values.len() - 1);
            let v = s.enums[e].values.remove(i);
            change(format!("enum value `{}` removed", v.name), vec![v.name])
        }
        "rename enum value" => {
            let e = rng.below(s.enums.len());
            let i = rng.below(s.enums[e].values.len());
            let id = s.fresh();
            let v = &mut s.enums[e].values[i];
            let old = v.name.clone();
            v.name = format!("{old}_R{id}");
            let new = v.name.clone();
            change(
                format!("enum value `{old}` renamed `{new}`"),
                vec![old, new],
            )
        }
        "renumber enum value" => {
            let e = rng.below(s.enums.len());
            if s.enums[e].values.len() < 2 {
                return None;
            }
            let i = 1 + rng.below(s.enums[e].values.len() - 1);
            let n = s.enums[e]
                .values
                .iter()
                .map(|v| v.number)
                .max()
                .unwrap_or(0)
                + 3;
            let v = &mut s.enums[e].values[i];
            v.number = n;
            let name = v.name.clone();
            change(format!("enum value `{name}` renumbered {n}"), vec![name])
        }
        "rename enum" => {
            let e = rng.below(s.enums.len());
            let id = s.fresh();
            s.enums[e].name = format!("Renamed{id}");
            change(format!("enum renamed Renamed{id}"), vec![])
        }
        "rename message" => {
            let i = rng.below(s.messages.len());
            let id = s.fresh();
            s.messages[i].name = format!("Renamed{id}");
            change(format!("message renamed Renamed{id}"), vec![])
        }
        "rename package" => {
            s.package = "prop.v2".to_owned();
            change("package prop.v2".to_owned(), vec![])
        }
        "nest or unnest message" => {
            if s.messages.len() < 2 {
                return None;
            }
            let i = 1 + rng.below(s.messages.len() - 1);
            let to = if s.messages[i].parent.is_some() {
                None
            } else {
                Some(s.messages[rng.below(i)].id)
            };
            s.messages[i].parent = to;
            change(
                format!("message {} nested in {to:?}", s.messages[i].name),
                vec![],
            )
        }
        "add field" => {
            let m = s.messages[rng.below(s.messages.len())].id;
            let f = s.random_field(m, rng);
            let name = f.name.clone();
            s.message_mut(m).fields.push(f);
            change(format!("field `{name}` added"), vec![name])
        }
        "delete field" | "delete field and reserve it" => {
            let (m, f) = pick(fields_where(&s, |_, _| true), rng)?;
            let msg = s.message_mut(m);
            let at = msg.fields.iter().position(|x| x.id == f).expect("field");
            let gone = msg.fields.remove(at);
            if kind == "delete field and reserve it" {
                msg.reserved_numbers.push(gone.number);
                msg.reserved_names.push(gone.name.clone());
            }
            // A oneof left with one member is still a oneof; that is fine.
            change(format!("field `{}` deleted", gone.name), vec![gone.name])
        }
        "reserve a number and a name" => {
            let i = rng.below(s.messages.len());
            let msg = s.messages[i].clone();
            let n = s.free_number(&msg, rng);
            let id = s.fresh();
            s.messages[i].reserved_numbers.push(n);
            s.messages[i].reserved_names.push(format!("spare_{id}"));
            change(format!("reserved {n} and spare_{id}"), vec![])
        }
        "release a reservation" => {
            let with: Vec<usize> = (0..s.messages.len())
                .filter(|&i| {
                    !s.messages[i].reserved_numbers.is_empty()
                        || !s.messages[i].reserved_names.is_empty()
                })
                .collect();
            let i = *with.get(rng.below(with.len().max(1)))?;
            s.messages[i].reserved_numbers.clear();
            s.messages[i].reserved_names.clear();
            change(
                format!("reservations of {} released", s.messages[i].name),
                vec![],
            )
        }
        "remove the topic key" => {
            s.messages[0].topic_key = None;
            change("topic key removed".to_owned(), vec![ROOT_KEY.to_owned()])
        }
        other => unreachable!("unknown change {other}"),
    };
    Some((s, result))
}

// ---------------------------------------------------------------------------------------------
// Random messages.

fn scalar_value(sc: Sc, rng: &mut Rng, finite: bool) -> Value {
    let edge = rng.chance(70);
    let value = match sc {
        Sc::Int32 | Sc::Sint32 | Sc::Sfixed32 => Value::I32(if edge {
            *rng.pick(&[0, 1, -1, 7, i32::MIN, i32::MAX])
        } else {
            rng.next() as i32
        }),
        Sc::Uint32 | Sc::Fixed32 => Value::U32(if edge {
            *rng.pick(&[0, 1, 7, u32::MAX, 1 << 31])
        } else {
            rng.next() as u32
        }),
        Sc::Int64 | Sc::Sint64 | Sc::Sfixed64 => Value::I64(if edge {
            *rng.pick(&[
                0,
                -1,
                7,
                i64::MIN,
                i64::MAX,
                1 << 31,
                -(1 << 31) - 1,
                (1 << 53) + 1,
            ])
        } else {
            rng.next() as i64
        }),
        Sc::Uint64 | Sc::Fixed64 => Value::U64(if edge {
            *rng.pick(&[0, 1, 7, u64::MAX, 1 << 32, (1 << 53) + 1])
        } else {
            rng.next()
        }),
        // Not ±f32::MAX: prost-reflect writes it as its shortest digits, 3.4028235e38, which is
        // above the largest float and which prost-reflect then refuses to read back (Keyway
        // writes the exact value instead).
        Sc::Float => Value::F32(if edge {
            *rng.pick(&[
                0.0,
                1.5,
                -2.25,
                0.1,
                7.0,
                3.402_823e38,
                f32::MIN_POSITIVE,
                16_777_216.0,
                f32::NAN,
                f32::INFINITY,
            ])
        } else {
            let v = f32::from_bits(rng.next() as u32);
            if v.abs() == f32::MAX {
                1.0
            } else {
                v
            }
        }),
        Sc::Double => Value::F64(if edge {
            *rng.pick(&[
                0.0,
                1.5,
                0.1,
                7.0,
                1e300,
                -1e-300,
                9_007_199_254_740_992.0,
                f64::NAN,
                f64::NEG_INFINITY,
            ])
        } else {
            f64::from_bits(rng.next())
        }),
        Sc::Bool => Value::Bool(rng.chance(60)),
        Sc::String => Value::String(
            (*rng.pick(&[
                "",
                "abc",
                "TWFu",
                "5",
                "true",
                "h\u{e9}llo",
                "ENUM0_UNSPECIFIED",
            ]))
            .to_owned(),
        ),
        Sc::Bytes => Value::Bytes(
            rng.pick(&[&b""[..], b"abc", &[0, 255, 16], b"Man"])
                .to_vec()
                .into(),
        ),
    };
    // prost-reflect writes a non-finite `FloatValue`/`DoubleValue` as `null` (the mapping, and
    // Keyway, write "NaN", "Infinity", "-Infinity"): where a float may end up in a wrapper, the
    // values stay finite.
    match value {
        Value::F32(v) if finite && !v.is_finite() => Value::F32(1.5),
        Value::F64(v) if finite && !v.is_finite() => Value::F64(1.5),
        v => v,
    }
}

fn key_value(sc: Sc, rng: &mut Rng) -> MapKey {
    match scalar_value(sc, rng, true) {
        Value::I32(v) => MapKey::I32(v),
        Value::U32(v) => MapKey::U32(v),
        Value::I64(v) => MapKey::I64(v),
        Value::U64(v) => MapKey::U64(v),
        Value::Bool(v) => MapKey::Bool(v),
        Value::String(v) => MapKey::String(v),
        other => unreachable!("not a map key: {other:?}"),
    }
}

fn element(
    s: &Schema,
    ty: &Ty,
    kind: &prost_reflect::Kind,
    rng: &mut Rng,
    depth: usize,
    finite: bool,
) -> Value {
    match ty {
        Ty::Scalar(sc) => scalar_value(*sc, rng, finite),
        Ty::Wrapper(sc) => {
            let desc = kind.as_message().expect("wrapper").clone();
            let mut m = DynamicMessage::new(desc.clone());
            let field = desc.get_field_by_name("value").expect("value");
            m.set_field(&field, scalar_value(*sc, rng, true));
            Value::Message(m)
        }
        Ty::Enum(e) => Value::EnumNumber(rng.pick(&s.enum_(*e).values).number),
        Ty::Message(id) => {
            let desc = kind.as_message().expect("message").clone();
            Value::Message(message(s, *id, &desc, rng, depth + 1, finite))
        }
    }
}

fn message(
    s: &Schema,
    id: u32,
    desc: &MessageDescriptor,
    rng: &mut Rng,
    depth: usize,
    finite: bool,
) -> DynamicMessage {
    let mut out = DynamicMessage::new(desc.clone());
    if depth > 6 {
        return out;
    }
    let model = s.message(id);
    // Each oneof sets one member picked evenly, or none.
    let mut chosen: BTreeMap<&str, Option<u32>> = BTreeMap::new();
    for f in &model.fields {
        if let Some(o) = &f.oneof {
            chosen.entry(o).or_insert_with(|| {
                let members: Vec<u32> = model
                    .fields
                    .iter()
                    .filter(|g| g.oneof.as_ref() == Some(o))
                    .map(|g| g.id)
                    .collect();
                rng.chance(85).then(|| *rng.pick(&members))
            });
        }
    }
    for f in &model.fields {
        let set = match &f.oneof {
            Some(o) => chosen[o.as_str()] == Some(f.id),
            None => rng.chance(75),
        };
        if !set {
            continue;
        }
        let fd = desc.get_field(f.number).expect("field by number");
        let value = match f.card {
            Card::Single => element(s, &f.ty, &fd.kind(), rng, depth, finite),
            Card::List => Value::List(
                (0..rng.below(4))
                    .map(|_| element(s, &f.ty, &fd.kind(), rng, depth, finite))
                    .collect(),
            ),
            Card::Map(k) => {
                let entry = fd.kind().as_message().expect("map entry").clone();
                let value_kind = entry.map_entry_value_field().kind();
                let mut map = HashMap::new();
                for _ in 0..rng.below(4) {
                    map.insert(
                        key_value(k, rng),
                        element(s, &f.ty, &value_kind, rng, depth, finite),
                    );
                }
                Value::Map(map)
            }
        };
        out.set_field(&fd, value);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Values as the schemas see them, comparable across versions.

#[derive(Debug, Clone, PartialEq)]
enum A {
    Int(i128),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    Bytes(Vec<u8>),
    /// An enum value: its identity when the schema declares the number, and the number.
    Enum(Option<u32>, i32),
    /// A message, by field identity.
    Msg(BTreeMap<u32, A>),
    /// A message field that is not set.
    Absent,
    List(Vec<A>),
    Map(Vec<(A, A)>),
}

impl A {
    fn is_default(&self) -> bool {
        match self {
            A::Int(v) => *v == 0,
            A::F32(v) => *v == 0.0,
            A::F64(v) => *v == 0.0,
            A::Bool(v) => !v,
            A::Str(v) => v.is_empty(),
            A::Bytes(v) => v.is_empty(),
            A::Enum(_, n) => *n == 0,
            A::Msg(_) => false,
            A::Absent => true,
            A::List(v) => v.is_empty(),
            A::Map(v) => v.is_empty(),
        }
    }
}

fn scalar_a(v: &Value) -> A {
    match v {
        Value::I32(v) => A::Int((*v).into()),
        Value::U32(v) => A::Int((*v).into()),
        Value::I64(v) => A::Int((*v).into()),
        Value::U64(v) => A::Int((*v).into()),
        Value::F32(v) => A::F32(*v),
        Value::F64(v) => A::F64(*v),
        Value::Bool(v) => A::Bool(*v),
        Value::String(v) => A::Str(v.clone()),
        Value::Bytes(v) => A::Bytes(v.to_vec()),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn key_a(k: &MapKey) -> A {
    match k {
        MapKey::I32(v) => A::Int((*v).into()),
        MapKey::U32(v) => A::Int((*v).into()),
        MapKey::I64(v) => A::Int((*v).into()),
        MapKey::U64(v) => A::Int((*v).into()),
        MapKey::Bool(v) => A::Bool(*v),
        MapKey::String(v) => A::Str(v.clone()),
    }
}

fn default_scalar(sc: Sc) -> A {
    match sc {
        Sc::Float => A::F32(0.0),
        Sc::Double => A::F64(0.0),
        Sc::Bool => A::Bool(false),
        Sc::String => A::Str(String::new()),
        Sc::Bytes => A::Bytes(Vec::new()),
        _ => A::Int(0),
    }
}

fn element_a(s: &Schema, ty: &Ty, v: &Value) -> A {
    match (ty, v) {
        (Ty::Scalar(_), v) => scalar_a(v),
        (Ty::Wrapper(_), Value::Message(m)) => {
            let f = m.descriptor().get_field_by_name("value").expect("value");
            scalar_a(&m.get_field(&f))
        }
        (Ty::Enum(e), Value::EnumNumber(n)) => A::Enum(
            s.enum_(*e)
                .values
                .iter()
                .find(|v| v.number == *n)
                .map(|v| v.id),
            *n,
        ),
        (Ty::Message(id), Value::Message(m)) => A::Msg(message_a(s, *id, m)),
        (ty, v) => panic!("{v:?} is not a {ty:?}"),
    }
}

fn message_a(s: &Schema, id: u32, m: &DynamicMessage) -> BTreeMap<u32, A> {
    let mut out = BTreeMap::new();
    for f in &s.message(id).fields {
        let fd = m.descriptor().get_field(f.number).expect("field by number");
        let value = m.get_field(&fd);
        let a = match f.card {
            Card::Single => match (&f.ty, m.has_field(&fd)) {
                (Ty::Message(_), false) => A::Absent,
                (Ty::Wrapper(sc), false) => default_scalar(*sc),
                (ty, _) => element_a(s, ty, &value),
            },
            Card::List => A::List(
                value
                    .as_list()
                    .expect("list")
                    .iter()
                    .map(|v| element_a(s, &f.ty, v))
                    .collect(),
            ),
            Card::Map(_) => {
                let mut entries: Vec<(A, A)> = value
                    .as_map()
                    .expect("map")
                    .iter()
                    .map(|(k, v)| (key_a(k), element_a(s, &f.ty, v)))
                    .collect();
                entries.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
                A::Map(entries)
            }
        };
        out.insert(f.id, a);
    }
    out
}

/// Comparing what a writer had with what a reader got.
struct Compare<'a> {
    writer: &'a Schema,
    reader: &'a Schema,
}

impl Compare<'_> {
    /// An enum value the reader's version does not declare: dropping it is expected.
    fn unknown_to_reader(&self, w: &A, reader_ty: &Ty) -> bool {
        match (w, reader_ty) {
            (A::Enum(Some(id), _), Ty::Enum(e)) => {
                !self.reader.enum_(*e).values.iter().any(|v| v.id == *id)
            }
            _ => false,
        }
    }

    fn messages(
        &self,
        w: &BTreeMap<u32, A>,
        r: &BTreeMap<u32, A>,
        wm: u32,
        rm: u32,
    ) -> Result<(), String> {
        let (wmsg, rmsg) = (self.writer.message(wm), self.reader.message(rm));
        for wf in &wmsg.fields {
            let Some(rf) = rmsg.fields.iter().find(|f| f.id == wf.id) else {
                continue;
            };
            let (wv, rv) = (&w[&wf.id], &r[&rf.id]);
            self.field(wv, rv, wf, rf)
                .map_err(|e| format!("{}: {e}", wf.name))?;
        }
        Ok(())
    }

    fn field(&self, w: &A, r: &A, wf: &Field, rf: &Field) -> Result<(), String> {
        if w.is_default() && r.is_default() {
            return Ok(());
        }
        let differ = || Err(format!("wrote {w:?}, read {r:?}"));
        match (w, r) {
            (A::List(ws), A::List(rs)) => {
                let ws: Vec<&A> = ws
                    .iter()
                    .filter(|x| !self.unknown_to_reader(x, &rf.ty))
                    .collect();
                if ws.len() != rs.len() {
                    return differ();
                }
                for (a, b) in ws.iter().zip(rs) {
                    self.element(a, b, &wf.ty, &rf.ty)?;
                }
                Ok(())
            }
            (A::Map(ws), A::Map(rs)) => {
                let ws: Vec<&(A, A)> = ws
                    .iter()
                    .filter(|(_, v)| !self.unknown_to_reader(v, &rf.ty))
                    .collect();
                if ws.len() != rs.len() {
                    return differ();
                }
                for (k, v) in ws {
                    let Some((_, rv)) = rs.iter().find(|(rk, _)| same_scalar(k, rk)) else {
                        return differ();
                    };
                    self.element(v, rv, &wf.ty, &rf.ty)?;
                }
                Ok(())
            }
            (A::List(_) | A::Map(_), _) | (_, A::List(_) | A::Map(_)) => differ(),
            _ if self.unknown_to_reader(w, &rf.ty) => Ok(()),
            _ => self.element(w, r, &wf.ty, &rf.ty),
        }
    }

    fn element(&self, w: &A, r: &A, wt: &Ty, rt: &Ty) -> Result<(), String> {
        if w.is_default() && r.is_default() {
            return Ok(());
        }
        match (w, r, wt, rt) {
            (A::Msg(a), A::Msg(b), Ty::Message(wm), Ty::Message(rm)) => {
                self.messages(a, b, *wm, *rm)
            }
            (A::Enum(Some(a), _), A::Enum(Some(b), _), _, _) if a == b => Ok(()),
            (A::Absent, A::Absent, _, _) => Ok(()),
            _ if same_scalar(w, r) => Ok(()),
            _ => Err(format!("wrote {w:?}, read {r:?}")),
        }
    }
}

/// Whether a reader's scalar is exactly what the writer's scalar said.
fn same_scalar(w: &A, r: &A) -> bool {
    let int_float =
        |i: i128, f: f64| f.is_finite() && f.fract() == 0.0 && f as i128 == i && f.abs() < 1e39;
    match (w, r) {
        (A::Int(a), A::Int(b)) => a == b,
        (A::Int(a), A::F32(b)) => int_float(*a, f64::from(*b)),
        (A::Int(a), A::F64(b)) => int_float(*a, *b),
        (A::F32(a), A::F32(b)) => a == b || (a.is_nan() && b.is_nan()),
        (A::F64(a), A::F64(b)) => a == b || (a.is_nan() && b.is_nan()),
        // A reader of a different width reads the writer's value if it rounds back to it.
        (A::F32(a), A::F64(b)) => (*b as f32) == *a || (a.is_nan() && b.is_nan()),
        (A::F64(a), A::F32(b)) => f64::from(*b) == *a || (a.is_nan() && b.is_nan()),
        (A::F32(_) | A::F64(_), A::Int(_)) => false,
        (A::Bool(a), A::Bool(b)) => a == b,
        (A::Str(a), A::Str(b)) => a == b,
        (A::Bytes(a), A::Bytes(b)) => a == b,
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// The JSON round: the queue's form on both sides.

fn to_json(m: &DynamicMessage) -> String {
    let mut out = serde_json::Serializer::new(Vec::new());
    m.serialize_with_options(
        &mut out,
        &SerializeOptions::new().use_proto_field_name(true),
    )
    .expect("a dynamic message always serializes");
    String::from_utf8(out.into_inner()).expect("JSON is UTF-8")
}

fn from_json(desc: &MessageDescriptor, json: &str) -> Result<DynamicMessage, String> {
    let mut de = serde_json::Deserializer::from_str(json);
    let m = DynamicMessage::deserialize_with_options(
        desc.clone(),
        &mut de,
        &DeserializeOptions::new().deny_unknown_fields(false),
    )
    .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(m)
}

struct Version {
    schema: Schema,
    compiled: keyway_codegen::Compiled,
    root: MessageDescriptor,
}

impl Version {
    fn new(schema: Schema) -> Result<Version, String> {
        let files = schema.render();
        let compiled = keyway_codegen::compile_sources(&files)
            .map_err(|e| format!("{e}\n{}", files["prop/schema.proto"]))?;
        let root = compiled
            .pool
            .get_message_by_name(&schema.full_name(schema.root().id))
            .ok_or("no root message")?;
        Ok(Version {
            schema,
            compiled,
            root,
        })
    }

    fn text(&self) -> &str {
        &self.compiled.texts["prop/schema.proto"]
    }
}

/// A message of `writer` read by `reader`: `Err` says what went wrong.
fn read_across(writer: &Version, reader: &Version, m: &DynamicMessage) -> Result<(), String> {
    let json = to_json(m);
    let read = from_json(&reader.root, &json).map_err(|e| format!("{json} does not read: {e}"))?;
    let w = message_a(&writer.schema, writer.schema.root().id, m);
    let r = message_a(&reader.schema, reader.schema.root().id, &read);
    Compare {
        writer: &writer.schema,
        reader: &reader.schema,
    }
    .messages(&w, &r, writer.schema.root().id, reader.schema.root().id)
    .map_err(|e| format!("{json}: {e}"))
}

/// An old message through a reader and writer of the new version, back to an old reader.
fn relay(old: &Version, new: &Version, m: &DynamicMessage) -> Result<(), String> {
    let json = to_json(m);
    let mid = from_json(&new.root, &json).map_err(|e| format!("{json} does not read: {e}"))?;
    let json2 = to_json(&mid);
    let back = from_json(&old.root, &json2).map_err(|e| format!("{json2} does not read: {e}"))?;
    let root = old.schema.root().id;
    Compare {
        writer: &old.schema,
        reader: &old.schema,
    }
    .messages(
        &message_a(&old.schema, root, m),
        &message_a(&old.schema, root, &back),
        root,
        root,
    )
    .map_err(|e| format!("relayed {json} as {json2}: {e}"))
}

/// The first thing that shows the change breaks, in `samples` messages per direction.
fn observe(old: &Version, new: &Version, rng: &mut Rng, samples: usize) -> Option<String> {
    if old.schema.root().topic_key.is_some() && new.schema.root().topic_key.is_none() {
        return Some(format!("topic key {ROOT_KEY:?} is no longer bound"));
    }
    let finite = old.schema.has_float_wrapper() || new.schema.has_float_wrapper();
    for _ in 0..samples {
        let m = message(&new.schema, new.schema.root().id, &new.root, rng, 0, finite);
        if let Err(e) = read_across(new, old, &m) {
            return Some(format!("new writer → old reader: {e}"));
        }
        let m = message(&old.schema, old.schema.root().id, &old.root, rng, 0, finite);
        if let Err(e) = read_across(old, new, &m) {
            return Some(format!("old writer → new reader: {e}"));
        }
        if let Err(e) = relay(old, new, &m) {
            return Some(format!("old writer → new relay → old reader: {e}"));
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// The property.

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    cases: usize,
    agree: usize,
    breaking: usize,
    warned: usize,
}

/// Try [`CHANGES_PER_SCHEMA`] changes on the schema of `seed`, taking the kinds in turn from
/// `next_kind` on (which moves past each kind once it applied, so every kind gets its turns).
fn one_schema(
    seed: u64,
    next_kind: &mut usize,
    tallies: &RefCell<BTreeMap<&'static str, Tally>>,
) -> Result<Vec<String>, String> {
    let replay = format!("KEYWAY_BREAKING_SEED={seed}@{}", *next_kind);
    let mut rng = Rng(seed);
    let base = Schema::generate(&mut rng);
    let old = Version::new(base.clone()).map_err(|e| format!("{replay}: base schema: {e}"))?;
    let mut problems = Vec::new();
    for _ in 0..CHANGES_PER_SCHEMA {
        // The kind in turn, or when nothing in this schema fits it, the next one that fits.
        let applied = (0..KINDS.len()).find_map(|skip| {
            let kind = KINDS[(*next_kind + skip) % KINDS.len()];
            mutate(&base, kind, &mut rng).map(|m| (skip, kind, m))
        });
        let Some((skip, kind, (changed, change))) = applied else {
            continue;
        };
        if skip == 0 {
            *next_kind += 1;
        }
        let new =
            Version::new(changed).map_err(|e| format!("seed {seed}: {}: {e}", change.describe))?;
        let findings =
            contract::breaking(&old.compiled, &new.compiled, &BreakingOptions::default());
        let errors: Vec<_> = findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .collect();
        let says_breaks = !errors.is_empty();
        let mut observed = observe(&old, &new, &mut rng, SAMPLES);
        if says_breaks && observed.is_none() {
            observed = observe(&old, &new, &mut rng, MAX_SAMPLES);
        }
        // Every error must name what changed.
        let misnamed: Vec<_> = errors
            .iter()
            .filter(|f| {
                !change.subject.names.is_empty()
                    && !change.subject.names.iter().any(|n| {
                        f.message.contains(&format!("`{n}`"))
                            || f.message.contains(&format!("\"{n}\""))
                    })
            })
            .collect();
        let agree = says_breaks == observed.is_some() && misnamed.is_empty();
        {
            let mut t = tallies.borrow_mut();
            let t = t.entry(kind).or_default();
            t.cases += 1;
            t.agree += usize::from(agree);
            t.breaking += usize::from(observed.is_some());
            t.warned += usize::from(!says_breaks && !findings.is_empty());
        }
        if !agree {
            let rendered: Vec<String> = findings.iter().map(|f| f.render()).collect();
            problems.push(format!(
                "{replay}, change {:?} ({kind}): the checker says {}, JSON shows {}{}\n--- before\n{}--- after\n{}--- findings\n{}",
                change.describe,
                if says_breaks { "it breaks" } else { "it does not break" },
                observed.as_deref().unwrap_or("no break"),
                if misnamed.is_empty() {
                    String::new()
                } else {
                    format!("; errors that do not name {:?}", change.subject.names)
                },
                old.text(),
                new.text(),
                rendered.join("\n")
            ));
        }
    }
    Ok(problems)
}

#[test]
fn the_breaking_check_agrees_with_what_json_shows() {
    let cases: u32 = std::env::var("KEYWAY_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let tallies = RefCell::new(BTreeMap::new());
    let problems = RefCell::new(Vec::new());
    if let Ok(replay) = std::env::var("KEYWAY_BREAKING_SEED") {
        let (seed, kind) = replay.split_once('@').unwrap_or((&replay, "0"));
        let (Ok(seed), Ok(mut kind)) = (seed.parse(), kind.parse()) else {
            panic!("KEYWAY_BREAKING_SEED is <seed>@<kind index>, not {replay:?}");
        };
        let found = one_schema(seed, &mut kind, &tallies).unwrap_or_else(|e| panic!("{e}"));
        assert!(found.is_empty(), "{}", found.join("\n\n"));
        return;
    }
    let next_kind = RefCell::new(0);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 0,
        ..Config::default()
    });
    // Disagreements are collected rather than failed one at a time, so that one run reports
    // them all; a schema that does not compile fails at once.
    let result = runner.run(&proptest::num::u64::ANY, |seed| {
        let found =
            one_schema(seed, &mut next_kind.borrow_mut(), &tallies).map_err(TestCaseError::fail)?;
        problems.borrow_mut().extend(found);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let tallies = tallies.into_inner();
    let (total, agree) = tallies
        .values()
        .fold((0, 0), |(t, a), x| (t + x.cases, a + x.agree));
    println!(
        "{:<34} {:>6} {:>6} {:>9} {:>7}",
        "change", "cases", "agree", "breaking", "warned"
    );
    for (kind, t) in &tallies {
        println!(
            "{kind:<34} {:>6} {:>6} {:>9} {:>7}",
            t.cases, t.agree, t.breaking, t.warned
        );
    }
    println!("agreement: {agree}/{total} changes over {cases} schemas");
    let problems = problems.into_inner();
    for p in &problems {
        println!("\n{p}");
    }
    assert!(
        problems.is_empty(),
        "{} disagreements; the first ones:\n\n{}",
        problems.len(),
        problems
            .iter()
            .take(4)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
    assert_eq!(agree, total);
    let missing: Vec<&&str> = KINDS.iter().filter(|k| !tallies.contains_key(*k)).collect();
    assert!(
        cases < 16 || missing.is_empty(),
        "change kinds never tried: {missing:?}"
    );
}
