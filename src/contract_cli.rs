//! `keyway contract …`: the contract tools for CI, a thin shell over `keyway_codegen::contract`.
//!
//! Exit codes: 0 clean (warnings allowed), 1 violations found, 2 usage or compile error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use keyway_codegen::contract::{self, BreakingOptions, CheckOptions, Finding, Severity};
use keyway_codegen::Compiled;

/// Contract tools for CI: lint topic bindings and conventions, detect breaking changes, export
/// the descriptor set, list topics.
///
/// Exit codes: 0 clean (warnings allowed), 1 violations found, 2 usage or compile error.
#[derive(Debug, Parser)]
#[command(name = "keyway contract", version)]
pub(crate) struct ContractCli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Level {
    Error,
    Warning,
}

#[derive(Debug, clap::Args)]
struct Inputs {
    /// Directory to search for imports and (when no FILES are given) the files to check;
    /// repeatable.
    #[arg(
        long = "proto-path",
        short = 'I',
        value_name = "DIR",
        default_value = "."
    )]
    proto_paths: Vec<PathBuf>,
    /// Files to compile, relative to a proto path; default: every .proto under the proto paths.
    files: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
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

/// Run `keyway contract` with `args` (the words after `contract`).
pub(crate) fn main(args: &[&str]) -> ExitCode {
    let cli = match ContractCli::try_parse_from(
        std::iter::once("keyway contract").chain(args.iter().copied()),
    ) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli.command) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}

fn compile(inputs: &Inputs) -> Result<Compiled, String> {
    let result = if inputs.files.is_empty() {
        keyway_codegen::read_tree(&inputs.proto_paths).and_then(|sources| {
            if sources.is_empty() {
                Ok(None)
            } else {
                keyway_codegen::compile_sources(&sources).map(Some)
            }
        })
    } else {
        keyway_codegen::compile(&inputs.files, &inputs.proto_paths).map(Some)
    };
    match result {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(format!(
            "no .proto files under {}",
            inputs
                .proto_paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Err(e) => Err(e.to_string()),
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

fn run(command: Command) -> Result<ExitCode, String> {
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
            let old = baseline(&against, &inputs.proto_paths)?;
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
