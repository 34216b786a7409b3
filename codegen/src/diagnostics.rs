//! Rendering of compile problems as `file:line:col` diagnostics with the source line and a caret,
//! the form editors and CI logs recognise.

use std::fmt::Write as _;

use miette::{Diagnostic as _, SourceSpan};

/// One problem, at a place in a `.proto` file when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// What is wrong.
    pub message: String,
    /// `file:line:col` (1-based) and the source line, when the problem has a place.
    pub location: Option<Location>,
    /// The label under the caret, such as "imported here".
    pub label: Option<String>,
    /// How to fix it, when known.
    pub help: Option<String>,
}

/// A place in a source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// File name as given to the compiler (relative to its include path).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The whole source line.
    pub source_line: String,
    /// Length of the span on that line, in characters (at least 1).
    pub width: usize,
}

impl Location {
    /// The source location of descriptor `path` in `file` (from its source info), falling back
    /// to shorter paths, down to `min_len` elements, when the exact one was not recorded.
    /// `texts` supplies the source line (file name → text).
    pub(crate) fn of_path(
        file: &prost_reflect::FileDescriptor,
        path: &[i32],
        min_len: usize,
        texts: &std::collections::BTreeMap<String, String>,
    ) -> Option<Location> {
        let info = file.file_descriptor_proto().source_code_info.as_ref()?;
        let name = file.name();
        for len in (min_len.min(path.len())..=path.len()).rev() {
            let Some(loc) = info.location.iter().find(|l| l.path == path[..len]) else {
                continue;
            };
            let span = &loc.span;
            let (line, col) = (*span.first()? as usize, *span.get(1)? as usize);
            let (end_line, end_col) = match span.len() {
                3 => (line, span[2] as usize),
                _ => (*span.get(2)? as usize, *span.get(3)? as usize),
            };
            let source_line = texts
                .get(name)
                .and_then(|text| text.lines().nth(line))
                .unwrap_or_default()
                .to_owned();
            let width = if end_line == line {
                end_col.saturating_sub(col).max(1)
            } else {
                1
            };
            return Some(Location {
                file: name.to_owned(),
                line: line + 1,
                column: col + 1,
                source_line,
                width,
            });
        }
        None
    }

    /// Locate byte `offset` (and `len` bytes after it) in `source`.
    pub(crate) fn in_source(file: &str, source: &str, offset: usize, len: usize) -> Location {
        let offset = offset.min(source.len());
        let line_start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[offset..]
            .find('\n')
            .map_or(source.len(), |i| offset + i);
        let line = source[..offset].matches('\n').count() + 1;
        let column = source[line_start..offset].chars().count() + 1;
        let span_end = (offset + len).min(line_end);
        let width = source[offset..span_end].chars().count().max(1);
        Location {
            file: file.to_owned(),
            line,
            column,
            source_line: source[line_start..line_end]
                .trim_end_matches('\r')
                .to_owned(),
            width,
        }
    }
}

impl Diagnostic {
    /// A problem without a place in a file.
    pub(crate) fn message(message: impl Into<String>) -> Self {
        Diagnostic {
            message: message.into(),
            location: None,
            label: None,
            help: None,
        }
    }

    /// A problem at `location` (when known), with a label under the caret and optional help.
    pub(crate) fn at(
        message: impl Into<String>,
        location: Option<Location>,
        label: &str,
        help: Option<String>,
    ) -> Self {
        Diagnostic {
            message: message.into(),
            location,
            label: Some(label.to_owned()),
            help,
        }
    }

    /// The rendered form:
    ///
    /// ```text
    /// error: name 'Foo' is not defined
    ///   --> runway/messagequeue.proto:12:3
    ///    |
    /// 12 |   Foo foo = 1;
    ///    |   ^^^ found here
    /// ```
    pub fn render(&self) -> String {
        self.render_as("error")
    }

    /// The rendered form with another level than `error` (such as `warning`).
    pub fn render_as(&self, level: &str) -> String {
        let mut out = format!("{level}: {}\n", self.message);
        let mut pad = " ".to_owned();
        if let Some(loc) = &self.location {
            let gutter = loc.line.to_string().len();
            pad = " ".repeat(gutter);
            writeln!(out, "{pad}--> {}:{}:{}", loc.file, loc.line, loc.column).unwrap();
            if !loc.source_line.is_empty() {
                self.render_snippet(&mut out, loc, &pad);
            }
        }
        if let Some(help) = &self.help {
            writeln!(out, "{pad} = help: {help}").unwrap();
        }
        out
    }

    fn render_snippet(&self, out: &mut String, loc: &Location, pad: &str) {
        writeln!(out, "{pad} |").unwrap();
        writeln!(out, "{} | {}", loc.line, loc.source_line).unwrap();
        let lead: String = loc
            .source_line
            .chars()
            .take(loc.column - 1)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        write!(out, "{pad} | {lead}{}", "^".repeat(loc.width)).unwrap();
        if let Some(label) = &self.label {
            write!(out, " {label}").unwrap();
        }
        out.push('\n');
    }

    /// The diagnostics of a protox compile error: one per labelled span, or one without a place.
    pub(crate) fn from_protox(error: &protox::Error) -> Vec<Diagnostic> {
        let message = error.to_string();
        let help = error.help().map(|h| h.to_string());
        let mut found = Vec::new();
        if let (Some(source), Some(labels)) = (error.source_code(), error.labels()) {
            for label in labels {
                let span: SourceSpan = *label.inner();
                // Ask for every line around the span, so the data is the whole file (or as
                // much as the source holds) and the line can be shown in full.
                let Ok(contents) = source.read_span(&span, usize::MAX / 4, usize::MAX / 4) else {
                    continue;
                };
                let file_name = contents
                    .name()
                    .map(str::to_owned)
                    .or_else(|| error.file().map(str::to_owned))
                    .unwrap_or_default();
                let text = String::from_utf8_lossy(contents.data());
                let start = contents.span().offset();
                let mut location = Location::in_source(
                    &file_name,
                    &text,
                    span.offset().saturating_sub(start),
                    span.len(),
                );
                location.line += contents.line();
                found.push(Diagnostic {
                    message: message.clone(),
                    location: Some(location),
                    label: label.label().map(str::to_owned),
                    help: help.clone(),
                });
            }
        }
        if found.is_empty() {
            let message = match error.file() {
                Some(file) if !message.contains(file) => format!("{file}: {message}"),
                _ => message,
            };
            found.push(Diagnostic {
                message,
                location: None,
                label: None,
                help,
            });
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_line_and_column() {
        let src = "syntax = \"proto3\";\nmessage A {\n  Foo foo = 1;\n}\n";
        let at = src.find("Foo").unwrap();
        let loc = Location::in_source("a.proto", src, at, 3);
        assert_eq!((loc.line, loc.column, loc.width), (3, 3, 3));
        assert_eq!(loc.source_line, "  Foo foo = 1;");
        let d = Diagnostic {
            message: "name 'Foo' is not defined".into(),
            location: Some(loc),
            label: Some("found here".into()),
            help: None,
        };
        assert_eq!(
            d.render(),
            "error: name 'Foo' is not defined\n --> a.proto:3:3\n  |\n3 |   Foo foo = 1;\n  |   ^^^ found here\n"
        );
    }
}
