//! `keyway contract …`: the contract tools for CI, a thin shell over `keyway_codegen::contract`.
//!
//! Exit codes: 0 clean (warnings allowed), 1 violations found, 2 usage or compile error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use keyway_codegen::contract::{self, BreakingOptions, CheckOptions, Finding, Severity};
use keyway_codegen::Compiled;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Human,
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
        #[arg(long, value_enum, default_value = "human")]
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
        #[arg(long, value_enum, default_value = "human")]
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
    /// Topic key → message → stream name.
    Topics {
        #[command(flatten)]
        inputs: Inputs,
        /// The runtime's TOML config, for stream names.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        format: Format,
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

fn location_json(prefix: &str, l: &Option<keyway_codegen::Location>) -> String {
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

/// Print findings and return the exit code: 1 when any is an error.
fn report(findings: &[Finding], format: Format) -> ExitCode {
    let errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    let warnings = findings.len() - errors;
    match format {
        Format::Human => {
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
            Ok(report(&contract::check(&compiled, &options), format))
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
            Ok(report(&contract::breaking(&old, &new, &options), format))
        }
        Command::Descriptor { inputs, output } => {
            let compiled = compile(&inputs)?;
            std::fs::write(&output, compiled.pool.encode_to_vec())
                .map_err(|e| format!("{}: {e}", output.display()))?;
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
                Format::Human => {
                    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(3).max(3);
                    let mwidth = rows.iter().map(|r| r.1.len()).max().unwrap_or(7).max(7);
                    println!("{:<width$}  {:<mwidth$}  STREAM", "KEY", "MESSAGE");
                    for (k, m, s) in &rows {
                        println!("{k:<width$}  {m:<mwidth$}  {s}");
                    }
                }
                Format::Json => {
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
