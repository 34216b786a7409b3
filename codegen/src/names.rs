//! Rust names of proto items, exactly as prost-build derives them, so that code generated here
//! can name the structs, fields, oneof enums and enums prost-build emits.

use heck::{ToSnakeCase, ToUpperCamelCase};
use prost_reflect::{EnumDescriptor, ExtensionDescriptor, MessageDescriptor, OneofDescriptor};

/// prost-build's identifier escaping: raw identifiers for keywords, a `_` suffix for those that
/// cannot be raw, a `_` prefix for a leading digit.
fn sanitize(ident: String) -> String {
    match ident.as_str() {
        "as" | "break" | "const" | "continue" | "else" | "enum" | "false" | "fn" | "for" | "if"
        | "impl" | "in" | "let" | "loop" | "match" | "mod" | "move" | "mut" | "pub" | "ref"
        | "return" | "static" | "struct" | "trait" | "true" | "type" | "unsafe" | "use"
        | "where" | "while" | "dyn" | "abstract" | "become" | "box" | "do" | "final" | "macro"
        | "override" | "priv" | "typeof" | "unsized" | "virtual" | "yield" | "async" | "await"
        | "try" | "gen" => format!("r#{ident}"),
        "_" | "super" | "self" | "Self" | "extern" | "crate" => format!("{ident}_"),
        s if s.starts_with(|c: char| c.is_numeric()) => format!("_{ident}"),
        _ => ident,
    }
}

/// A field or module name: `lower_snake`.
pub(crate) fn snake(name: &str) -> String {
    sanitize(name.to_snake_case())
}

/// A type or variant name: `UpperCamel`.
pub(crate) fn upper_camel(name: &str) -> String {
    sanitize(name.to_upper_camel_case())
}

/// Path of a message or enum relative to its package's module: `outer::Inner`.
pub(crate) fn type_path(parent: Option<MessageDescriptor>, name: &str) -> String {
    let mut parts = Vec::new();
    let mut cursor = parent;
    while let Some(m) = cursor {
        parts.push(snake(m.name()));
        cursor = m.parent_message();
    }
    parts.reverse();
    parts.push(upper_camel(name));
    parts.join("::")
}

/// Path of `message`'s struct from its package's module.
pub(crate) fn message_path(message: &MessageDescriptor) -> String {
    type_path(message.parent_message(), message.name())
}

/// Path of the enum prost-build emits for a (non-synthetic) oneof, from the package module.
pub(crate) fn oneof_enum_path(oneof: &OneofDescriptor) -> String {
    let parent = oneof.parent_message();
    let conflict = parent
        .child_messages()
        .map(|m| upper_camel(m.name()))
        .chain(parent.child_enums().map(|e| upper_camel(e.name())))
        .any(|n| n == upper_camel(oneof.name()));
    let mut name = upper_camel(oneof.name());
    if conflict {
        name.push_str("OneOf");
    }
    let module = type_path(parent.parent_message(), parent.name());
    // `type_path` ends with the struct name; the oneof lives in the module of the same name.
    let module = match module.rsplit_once("::") {
        Some((outer, _)) => format!("{outer}::{}", snake(parent.name())),
        None => snake(parent.name()),
    };
    format!("{module}::{name}")
}

/// Path of `target` as seen from the module of package `from`, the way prost-build resolves a
/// type reference: `super::` up to the common ancestor, then down. Well-known types live in the
/// runtime's `wkt` module.
pub(crate) fn enum_path_from(target: &EnumDescriptor, from: &str, runtime: &str) -> String {
    let local_path = type_path(target.parent_message(), target.name());
    resolve_from(
        target.package_name(),
        target.full_name(),
        local_path,
        from,
        runtime,
    )
}

/// [`enum_path_from`] for a message.
pub(crate) fn message_path_from(target: &MessageDescriptor, from: &str, runtime: &str) -> String {
    resolve_from(
        target.package_name(),
        target.full_name(),
        message_path(target),
        from,
        runtime,
    )
}

fn resolve_from(
    package: &str,
    full: &str,
    in_package: String,
    from: &str,
    runtime: &str,
) -> String {
    if package == "google.protobuf" {
        return format!("{runtime}::wkt::{in_package}");
    }
    let mut local: Vec<&str> = from.split('.').filter(|s| !s.is_empty()).collect();
    let mut ident: Vec<&str> = full.split('.').collect();
    let last = ident.pop().expect("a full name has at least one part");
    let common = local.iter().zip(&ident).take_while(|(a, b)| a == b).count();
    local.drain(..common);
    ident.drain(..common);
    local
        .iter()
        .map(|_| "super".to_owned())
        .chain(ident.iter().map(|p| snake(p)))
        .chain(std::iter::once(upper_camel(last)))
        .collect::<Vec<_>>()
        .join("::")
}

/// The proto-level name of the field an extension becomes in the message it extends (prost
/// then snake-cases it): the extension's full name relative to the extended message's package
/// when it is declared there or below, else its full name, with `.` as `_`. A file-level
/// `extend` in the same package gives the extension's own name (`extension_int32`); one nested
/// in a message `Scope` gives `Scope_ext`, generated as `scope_ext`.
pub(crate) fn extension_field_name(extension: &ExtensionDescriptor) -> String {
    let package = extension.containing_message().package_name().to_owned();
    let full = extension.full_name();
    let relative = if package.is_empty() {
        full
    } else {
        full.strip_prefix(package.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or(full)
    };
    relative.replace('.', "_")
}

/// Module path of a package, as prost-build lays out modules: `keyway::base::change`.
pub(crate) fn package_modules(package: &str) -> Vec<String> {
    package
        .split('.')
        .filter(|p| !p.is_empty())
        .map(snake)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_matches_prost_build() {
        assert_eq!(snake("type"), "r#type");
        assert_eq!(snake("self"), "self_");
        assert_eq!(snake("queueName"), "queue_name");
        assert_eq!(upper_camel("HTTPRequest"), "HttpRequest");
        assert_eq!(upper_camel("Self"), "Self_");
        assert_eq!(snake("1st"), "_1st");
    }
}
