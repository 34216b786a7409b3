//! `keyway contract …`: the contract tools for CI, a thin shell over `keyway_codegen::contract`.
//!
//! Exit codes: 0 clean (warnings allowed), 1 violations found, 2 usage or compile error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use keyway_codegen::contract::{self, BreakingOptions, CheckOptions, Finding, Rule, Severity};
use keyway_codegen::{Compiled, Location};

/// How findings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// `file:line:col`, the source line, a caret and the fix; a count at the end.
    #[value(alias = "human")]
    Text,
    /// One JSON object: the findings and the counts.
    Json,
    /// GitHub Actions workflow commands (`::error file=..,line=..,col=..::..`), one a line.
    Github,
    /// A SARIF 2.1.0 log, for code-scanning upload.
    Sarif,
}

/// How a table is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TableFormat {
    /// Aligned columns.
    #[value(alias = "human")]
    Text,
    /// A JSON array of rows.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Level {
    Error,
    Warning,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Inputs {
    /// Directory to search for imports and (when no FILES are given) the files to check;
    /// repeatable. Default: the current directory.
    #[arg(long = "proto-path", short = 'I', value_name = "DIR")]
    proto_paths: Vec<PathBuf>,
    /// Files to compile, relative to a proto path; default: every .proto under the proto paths.
    files: Vec<String>,
}

/// `keyway contract …`.
/// A client language of `contract gen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Lang {
    /// `clients/python`: the registry module, messages from grpcio-tools' protoc.
    Python,
    /// `clients/typescript`: the registry module, messages from protoc-gen-es.
    Typescript,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Topic bindings (each key bound to one message, valid names), registry drift against a
    /// runtime config, and protojson-safe conventions on payload messages.
    Check {
        #[command(flatten)]
        inputs: Inputs,
        /// The runtime's TOML config: every configured key must be bound and every bound key
        /// configured.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// What breaks a protobuf-JSON reader or writer of the baseline.
    Breaking {
        #[command(flatten)]
        inputs: Inputs,
        /// The baseline: a directory, `git:<rev>` (read from the repository without a
        /// checkout, at the same proto paths), or an encoded FileDescriptorSet file.
        #[arg(long, value_name = "BASELINE")]
        against: String,
        /// Severity of a removed field (reserved or not).
        #[arg(long, value_enum, default_value = "error")]
        removed_field: Level,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Write the encoded FileDescriptorSet (imports, source info and custom options kept).
    Descriptor {
        #[command(flatten)]
        inputs: Inputs,
        /// Where to write it.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: PathBuf,
    },
    /// Another language's topic registry (every key, its message, typed producer and
    /// consumer helpers for `clients/python` or `clients/typescript`) and the descriptor set
    /// its message classes are generated from, with the command that generates them.
    Gen {
        #[command(flatten)]
        inputs: Inputs,
        /// The client language.
        #[arg(long, value_enum)]
        lang: Lang,
        /// The directory to write `topics.py` or `topics.ts`, and `descriptor_set.binpb`, to.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Topic key → message → stream name.
    Topics {
        #[command(flatten)]
        inputs: Inputs,
        /// The runtime's TOML config, for stream names.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: TableFormat,
    },
}

/// Run one contract command: 0 clean, 1 violations, 2 usage or compile error.
pub(crate) fn run(command: Command) -> ExitCode {
    match run_command(command) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}

impl Inputs {
    /// The proto paths given, or the current directory.
    fn paths(&self) -> Vec<PathBuf> {
        if self.proto_paths.is_empty() {
            vec![PathBuf::from(".")]
        } else {
            self.proto_paths.clone()
        }
    }
}

fn compile(inputs: &Inputs) -> Result<Compiled, String> {
    let paths = inputs.paths();
    let result = if inputs.files.is_empty() {
        keyway_codegen::read_tree(&paths).and_then(|sources| {
            if sources.is_empty() {
                Ok(None)
            } else {
                keyway_codegen::compile_sources(&sources).map(Some)
            }
        })
    } else {
        keyway_codegen::compile(&inputs.files, &paths).map(Some)
    };
    match result {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(format!(
            "no .proto files under {}",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Err(e) => {
            let mut message = e.to_string();
            for hint in import_hints(&e, inputs) {
                message.push_str("\n\n");
                message.push_str(&hint);
            }
            Err(message)
        }
    }
}

/// Directories not searched for a missing import's home.
const SKIPPED_DIRS: &[&str] = &["target", "node_modules"];

/// For each import that was not found: which `-I` would find it, or that none was given.
fn import_hints(error: &keyway_codegen::Error, inputs: &Inputs) -> Vec<String> {
    let mut hints = Vec::new();
    for d in error.diagnostics() {
        let Some(import) = d
            .message
            .strip_prefix("import '")
            .and_then(|m| m.strip_suffix("' not found"))
        else {
            continue;
        };
        let mut homes = Vec::new();
        for root in inputs.paths() {
            find_homes(&root, Path::new(import), 4, &mut homes);
        }
        let searched = if inputs.proto_paths.is_empty() {
            "no -I/--proto-path was given, so only the current directory was searched".to_owned()
        } else {
            format!(
                "searched {}",
                inputs
                    .proto_paths
                    .iter()
                    .map(|p| format!("-I {}", p.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let hint = match homes.as_slice() {
            [] => format!(
                "help: '{import}' is not under any proto path ({searched}); pass the directory \
                 it is relative to with -I"
            ),
            found => format!(
                "help: {searched}; `{}` would find '{import}'",
                found
                    .iter()
                    .map(|h| format!("-I {}", h.display()))
                    .collect::<Vec<_>>()
                    .join("` or `")
            ),
        };
        if !hints.contains(&hint) {
            hints.push(hint);
        }
    }
    hints
}

/// Directories under `dir` (down to `depth` levels, `dir` itself included) that contain
/// `import`, skipping hidden and build directories.
fn find_homes(dir: &Path, import: &Path, depth: usize, found: &mut Vec<PathBuf>) {
    if dir.join(import).is_file() {
        let home = dir.strip_prefix(".").unwrap_or(dir);
        found.push(if home.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            home.to_owned()
        });
        return;
    }
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            !name.starts_with('.') && !SKIPPED_DIRS.contains(&name.as_ref())
        })
        .map(|e| e.path())
        .collect();
    dirs.sort();
    for sub in dirs {
        find_homes(&sub, import, depth - 1, found);
    }
}

fn baseline(against: &str, proto_paths: &[PathBuf]) -> Result<Compiled, String> {
    if let Some(rev) = against.strip_prefix("git:") {
        let sources = contract::sources_from_git(rev, proto_paths)?;
        return keyway_codegen::compile_sources(&sources)
            .map_err(|e| format!("baseline {against}:\n{e}"));
    }
    let path = Path::new(against);
    if path.is_dir() {
        let sources = keyway_codegen::read_tree(&[path]).map_err(|e| e.to_string())?;
        return keyway_codegen::compile_sources(&sources)
            .map_err(|e| format!("baseline {against}:\n{e}"));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("baseline {against}: {e}"))?;
    let pool = prost_reflect::DescriptorPool::decode(bytes.as_slice())
        .map_err(|e| format!("baseline {against} is not an encoded FileDescriptorSet: {e}"))?;
    Ok(Compiled::from_pool(pool))
}

/// The directories a baseline's file names are relative to.
fn baseline_roots(against: &str, proto_paths: &[PathBuf]) -> Vec<PathBuf> {
    if against.starts_with("git:") {
        proto_paths.to_vec()
    } else if Path::new(against).is_dir() {
        vec![PathBuf::from(against)]
    } else {
        Vec::new()
    }
}

/// Topic keys of a runtime config, with their line numbers in the file.
fn configured_keys(
    path: &Path,
) -> Result<
    (
        keyway_runtime::redis::Config,
        BTreeMap<String, Option<usize>>,
    ),
    String,
> {
    let config = keyway_runtime::redis::Config::load(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut in_topics = false;
    let mut lines = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            in_topics = t == "[topics]";
            continue;
        }
        if in_topics {
            if let Some((key, _)) = t.split_once('=') {
                lines.insert(key.trim().trim_matches('"').to_owned(), n + 1);
            }
        }
    }
    let keys = config
        .registry
        .iter()
        .map(|(k, _)| (k.to_owned(), lines.get(k).copied()))
        .collect();
    Ok((config, keys))
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn location_json(prefix: &str, l: &Option<Location>) -> String {
    match l {
        Some(l) => format!(
            ",\"{prefix}file\":{},\"{prefix}line\":{},\"{prefix}column\":{}",
            json_string(&l.file),
            l.line,
            l.column
        ),
        None => String::new(),
    }
}

/// Where the compiled files are, to name them as paths from the working directory (what CI
/// annotations and code scanning need) instead of relative to a proto path.
#[derive(Debug, Clone, Default)]
struct Roots {
    /// The proto paths of the checked tree.
    new: Vec<PathBuf>,
    /// The directories the baseline's files are relative to (none for a descriptor set).
    old: Vec<PathBuf>,
}

impl Roots {
    fn path(roots: &[PathBuf], file: &str) -> String {
        let found = roots
            .iter()
            .map(|r| r.join(file))
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from(file));
        let shown = found.to_string_lossy().replace('\\', "/");
        let mut shown = shown.as_str();
        while let Some(rest) = shown.strip_prefix("./") {
            shown = rest;
        }
        shown.to_owned()
    }

    /// The finding's place as a path from the working directory: in the checked tree, or in
    /// the baseline when it has none there.
    fn place<'f>(&self, f: &'f Finding) -> Option<(String, &'f Location)> {
        if let Some(l) = &f.location {
            return Some((Self::path(&self.new, &l.file), l));
        }
        f.old_location
            .as_ref()
            .map(|l| (Self::path(&self.old, &l.file), l))
    }
}

/// The text of a finding for CI formats: the message, then the fix and the baseline's place.
fn ci_text(f: &Finding, roots: &Roots) -> String {
    let mut text = format!("{}\n{}", f.message, f.fix);
    if let (Some(_), Some(old)) = (&f.location, &f.old_location) {
        text.push_str(&format!(
            " (baseline: {}:{}:{})",
            Roots::path(&roots.old, &old.file),
            old.line,
            old.column
        ));
    } else if f.location.is_none() && f.old_location.is_some() {
        text.push_str(" (the place shown is in the baseline)");
    }
    text
}

/// A GitHub Actions workflow command's message: `%`, CR and LF escaped.
fn github_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow command's property value: the message escapes plus `:` and `,`.
fn github_property(s: &str) -> String {
    github_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// One `::error`/`::warning` workflow command per finding.
fn github_lines(findings: &[Finding], roots: &Roots) -> Vec<String> {
    findings
        .iter()
        .map(|f| {
            let command = match f.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let mut props = Vec::new();
            if let Some((path, l)) = roots.place(f) {
                props.push(format!("file={}", github_property(&path)));
                props.push(format!("line={}", l.line));
                props.push(format!("col={}", l.column));
            }
            props.push(format!(
                "title={}",
                github_property(&format!("keyway {}", f.rule))
            ));
            format!(
                "::{command} {}::{}",
                props.join(","),
                github_data(&ci_text(f, roots))
            )
        })
        .collect()
}

fn sarif_level(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// A relative path as a URI reference: bytes other than unreserved characters and `/`
/// percent-encoded.
fn uri_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn sarif_location(path: &str, l: &Location, extra: &str) -> String {
    format!(
        "{{{extra}\"physicalLocation\":{{\"artifactLocation\":{{\"uri\":{}}},\"region\":{{\"startLine\":{},\"startColumn\":{},\"endColumn\":{}}}}}}}",
        json_string(&uri_path(path)),
        l.line,
        l.column,
        l.column + l.width.max(1)
    )
}

/// A SARIF 2.1.0 log of one run: the tool with every rule of the command, and the findings.
fn sarif_log(findings: &[Finding], rules: &[Rule], roots: &Roots) -> String {
    let rule_items: Vec<String> = rules
        .iter()
        .map(|r| {
            format!(
                "{{\"id\":{},\"shortDescription\":{{\"text\":{}}},\"defaultConfiguration\":{{\"level\":{}}}}}",
                json_string(r.id),
                json_string(r.summary),
                json_string(sarif_level(r.severity))
            )
        })
        .collect();
    let results: Vec<String> = findings
        .iter()
        .map(|f| {
            let index = rules
                .iter()
                .position(|r| r.id == f.rule)
                .map(|i| format!(",\"ruleIndex\":{i}"))
                .unwrap_or_default();
            let mut out = format!(
                "{{\"ruleId\":{}{index},\"level\":{},\"message\":{{\"text\":{}}}",
                json_string(f.rule),
                json_string(sarif_level(f.severity)),
                json_string(&ci_text(f, roots))
            );
            if let Some((path, l)) = roots.place(f) {
                out.push_str(&format!(
                    ",\"locations\":[{}]",
                    sarif_location(&path, l, "")
                ));
            }
            if let (Some(_), Some(old)) = (&f.location, &f.old_location) {
                out.push_str(&format!(
                    ",\"relatedLocations\":[{}]",
                    sarif_location(
                        &Roots::path(&roots.old, &old.file),
                        old,
                        "\"id\":1,\"message\":{\"text\":\"in the baseline\"},"
                    )
                ));
            }
            out.push('}');
            out
        })
        .collect();
    format!(
        "{{\"$schema\":\"https://json.schemastore.org/sarif-2.1.0.json\",\"version\":\"2.1.0\",\"runs\":[{{\"tool\":{{\"driver\":{{\"name\":\"keyway\",\"version\":{},\"rules\":[{}]}}}},\"columnKind\":\"unicodeCodePoints\",\"results\":[{}]}}]}}",
        json_string(env!("CARGO_PKG_VERSION")),
        rule_items.join(","),
        results.join(",")
    )
}

/// Print findings and return the exit code: 1 when any is an error.
fn report(findings: &[Finding], format: Format, rules: &[Rule], roots: &Roots) -> ExitCode {
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    match format {
        Format::Text => {
            for f in findings {
                println!("{}", f.render());
            }
            println!("{errors} error(s), {warnings} warning(s)");
        }
        Format::Json => {
            let items: Vec<String> = findings
                .iter()
                .map(|f| {
                    format!(
                        "{{\"rule\":{},\"severity\":{},\"message\":{},\"fix\":{}{}{}}}",
                        json_string(f.rule),
                        json_string(f.severity.as_str()),
                        json_string(&f.message),
                        json_string(&f.fix),
                        location_json("", &f.location),
                        location_json("old_", &f.old_location)
                    )
                })
                .collect();
            println!(
                "{{\"findings\":[{}],\"errors\":{errors},\"warnings\":{warnings}}}",
                items.join(",")
            );
        }
        Format::Github => {
            for line in github_lines(findings, roots) {
                println!("{line}");
            }
        }
        Format::Sarif => println!("{}", sarif_log(findings, rules, roots)),
    }
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn run_command(command: Command) -> Result<ExitCode, String> {
    match command {
        Command::Check {
            inputs,
            config,
            format,
        } => {
            let compiled = compile(&inputs)?;
            let mut options = CheckOptions::default();
            if let Some(path) = config {
                let (_, keys) = configured_keys(&path)?;
                options.configured = Some((path.display().to_string(), keys));
            }
            let roots = Roots {
                new: inputs.paths(),
                old: Vec::new(),
            };
            Ok(report(
                &contract::check(&compiled, &options),
                format,
                contract::CHECK_RULES,
                &roots,
            ))
        }
        Command::Breaking {
            inputs,
            against,
            removed_field,
            format,
        } => {
            let new = compile(&inputs)?;
            let old = baseline(&against, &inputs.paths())?;
            let options = BreakingOptions {
                removed_field: match removed_field {
                    Level::Error => Severity::Error,
                    Level::Warning => Severity::Warning,
                },
                ..BreakingOptions::default()
            };
            let roots = Roots {
                new: inputs.paths(),
                old: baseline_roots(&against, &inputs.paths()),
            };
            Ok(report(
                &contract::breaking(&old, &new, &options),
                format,
                contract::BREAKING_RULES,
                &roots,
            ))
        }
        Command::Descriptor { inputs, output } => {
            let compiled = compile(&inputs)?;
            std::fs::write(&output, compiled.pool.encode_to_vec())
                .map_err(|e| format!("{}: {e}", output.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Gen { inputs, lang, out } => {
            let compiled = compile(&inputs)?;
            let bindings = compiled.topic_bindings(None).map_err(|diagnostics| {
                diagnostics
                    .iter()
                    .map(|d| d.render())
                    .collect::<Vec<_>>()
                    .join("\n")
            })?;
            let (file, text) = match lang {
                Lang::Python => (
                    "topics.py",
                    keyway_codegen::clients::python::python_registry(&compiled.pool, &bindings),
                ),
                Lang::Typescript => (
                    "topics.ts",
                    keyway_codegen::clients::typescript::typescript_registry(
                        &compiled.pool,
                        &bindings,
                    ),
                ),
            };
            std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
            let write = |name: &str, bytes: &[u8]| {
                let path = out.join(name);
                std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))
            };
            write(file, text.as_bytes())?;
            write("descriptor_set.binpb", &compiled.pool.encode_to_vec())?;
            let protos: Vec<String> = compiled
                .pool
                .files()
                .map(|f| f.name().to_owned())
                .filter(|name| !name.starts_with("google/protobuf/"))
                .collect();
            let set = out.join("descriptor_set.binpb");
            eprintln!(
                "wrote {} ({} topic keys) and {}",
                out.join(file).display(),
                bindings.len(),
                set.display()
            );
            match lang {
                Lang::Python => eprintln!(
                    "message classes: python -m grpc_tools.protoc --descriptor_set_in={} --python_out={dir} --pyi_out={dir} {}",
                    set.display(),
                    protos.join(" "),
                    dir = out.display()
                ),
                Lang::Typescript => eprintln!(
                    "message classes: run protoc-gen-es on a CodeGeneratorRequest of {} for {} (clients/typescript/scripts/generate.mjs does)",
                    set.display(),
                    protos.join(" ")
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Topics {
            inputs,
            config,
            format,
        } => {
            let compiled = compile(&inputs)?;
            let registry = match config {
                Some(path) => Some(configured_keys(&path)?.0.registry),
                None => None,
            };
            let rows: Vec<(String, String, String)> = contract::bindings(&compiled, None)
                .into_iter()
                .map(|b| {
                    let stream = registry
                        .as_ref()
                        .and_then(|r| r.stream(&b.key))
                        .unwrap_or_else(|| "-".to_owned());
                    (b.key, b.message.full_name().to_owned(), stream)
                })
                .collect();
            match format {
                TableFormat::Text => {
                    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(3).max(3);
                    let mwidth = rows.iter().map(|r| r.1.len()).max().unwrap_or(7).max(7);
                    println!("{:<width$}  {:<mwidth$}  STREAM", "KEY", "MESSAGE");
                    for (k, m, s) in &rows {
                        println!("{k:<width$}  {m:<mwidth$}  {s}");
                    }
                }
                TableFormat::Json => {
                    let items: Vec<String> = rows
                        .iter()
                        .map(|(k, m, s)| {
                            format!(
                                "{{\"key\":{},\"message\":{},\"stream\":{}}}",
                                json_string(k),
                                json_string(m),
                                if s == "-" {
                                    "null".to_owned()
                                } else {
                                    json_string(s)
                                }
                            )
                        })
                        .collect();
                    println!("[{}]", items.join(","));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_command_escapes() {
        assert_eq!(github_data("50% done\r\nnext"), "50%25 done%0D%0Anext");
        assert_eq!(
            github_property("a:b,c%\n"),
            "a%3Ab%2Cc%25%0A",
            "properties also escape `:` and `,`"
        );
        assert_eq!(
            github_data("a:b,c"),
            "a:b,c",
            "the message keeps `:` and `,`"
        );
    }

    #[test]
    fn sarif_uris_are_encoded() {
        assert_eq!(uri_path("api/a b/é.proto"), "api/a%20b/%C3%A9.proto");
        assert_eq!(uri_path("../x_y-1.proto"), "../x_y-1.proto");
    }

    #[test]
    fn paths_are_named_from_the_working_directory() {
        let dir = std::env::temp_dir().join(format!("keyway-roots-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("pkg")).unwrap();
        std::fs::write(dir.join("pkg/a.proto"), "").unwrap();
        let roots = vec![PathBuf::from("./nowhere"), dir.clone()];
        assert_eq!(
            Roots::path(&roots, "pkg/a.proto"),
            dir.join("pkg/a.proto").to_string_lossy().replace('\\', "/")
        );
        assert_eq!(Roots::path(&roots, "pkg/b.proto"), "pkg/b.proto");
        assert_eq!(
            Roots::path(&[PathBuf::from(".")], "Cargo.toml"),
            "Cargo.toml",
            "no ./ in front"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
