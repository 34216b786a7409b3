//! The `keyway` command.
//!
//! Exit codes: 0 success, 1 the command ran and failed, 2 usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod contract_cli;

use keyway::merge_service::config::MergerConfig;
use keyway::merge_service::{AnyMerger, FakeMerger};
use keyway::stages::app::{self, Role};
use keyway::stages::demo;
use keyway_runtime::json;
use keyway_runtime::redis::config::redact_url;
use keyway_runtime::redis::{Config, EmbeddedOptions, EmbeddedRedis, RedisBackend, Shutdown};

/// Keyway: the `.proto` file is the contract for your message queues. Runs the merge loop's
/// stages on Redis Streams and checks contracts in CI.
///
/// Exit codes: 0 success, 1 the command ran and failed, 2 usage error.
#[derive(Debug, Parser)]
#[command(name = "keyway", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where Redis is: `REDIS_URL`, or `--redis-url`. The value is never echoed in help.
#[derive(Debug, clap::Args)]
struct Redis {
    /// Redis to use, e.g. redis://127.0.0.1:6379 (rediss:// for TLS).
    #[arg(long, env = "REDIS_URL", hide_env_values = true, value_name = "URL")]
    redis_url: Option<String>,
    /// TOML file with streams, Redis settings and per-topic subscription overrides.
    #[arg(long, env = "KEYWAY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole merge loop on seeded queues and print the outcome; exits 1 if anything
    /// turned out other than seeded.
    ///
    /// Uses REDIS_URL, or starts its own redis-server in a scratch directory when it is unset.
    Demo {
        #[command(flatten)]
        redis: Redis,
    },
    /// Run stage roles until SIGTERM or Ctrl-C.
    Run {
        /// The roles to run in this process.
        #[arg(required = true, value_enum, value_name = "ROLE")]
        roles: Vec<RoleName>,
        #[command(flatten)]
        redis: Redis,
    },
    /// Dead letters the reconcilers parked for an operator.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Write the contract's encoded FileDescriptorSet to standard output.
    Descriptor,
    /// Contract tools for CI: check, breaking, descriptor, topics.
    ///
    /// Exit codes: 0 clean (warnings allowed), 1 violations found, 2 usage or compile error.
    Contract {
        #[command(subcommand)]
        command: contract_cli::Command,
    },
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// List the parked dead letters.
    List {
        #[command(flatten)]
        redis: Redis,
    },
}

/// A role on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RoleName {
    /// submitqueue-merge → runway-merge.
    Merge,
    /// merge-signal → batch state, conclude, speculate.
    Mergesignal,
    /// The Runway responder.
    Runway,
    /// Every dead-letter reconciler.
    Reconcile,
    /// The conclude stage.
    Conclude,
    /// The speculate stage.
    Speculate,
    /// Every role.
    All,
}

impl RoleName {
    fn roles(self) -> &'static [Role] {
        match self {
            RoleName::Merge => &[Role::Merge],
            RoleName::Mergesignal => &[Role::MergeSignal],
            RoleName::Runway => &[Role::Runway],
            RoleName::Reconcile => &[Role::Reconcile],
            RoleName::Conclude => &[Role::Conclude],
            RoleName::Speculate => &[Role::Speculate],
            RoleName::All => &Role::ALL,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Descriptor => {
            use std::io::Write;
            match std::io::stdout().write_all(keyway::DESCRIPTOR_SET) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(format!("writing the descriptor set: {e}")),
            }
        }
        Command::Demo { redis } => runtime().block_on(demo_command(redis)),
        Command::Contract { command } => contract_cli::run(command),
        Command::Dlq {
            command: DlqCommand::List { redis },
        } => runtime().block_on(dlq_list(redis)),
        Command::Run { roles, redis } => {
            let mut parsed: Vec<Role> = Vec::new();
            for role in roles.iter().flat_map(|r| r.roles()) {
                if !parsed.contains(role) {
                    parsed.push(*role);
                }
            }
            runtime().block_on(run_roles(parsed, redis))
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}

fn fail(message: String) -> ExitCode {
    eprintln!("keyway: {message}");
    ExitCode::from(1)
}

/// The runtime config and the `[runway]` section, from `--config`/`KEYWAY_CONFIG` or the
/// defaults.
fn settings(url: &str, redis: &Redis) -> Result<(Config, Option<MergerConfig>), String> {
    match &redis.config {
        Some(path) => app::load_settings(path, Some(url)),
        None => Ok((app::config(url), None)),
    }
}

async fn connect(url: &str, redis: &Redis) -> Result<RedisBackend, String> {
    let (config, _) = settings(url, redis)?;
    connect_with(config).await
}

async fn connect_with(config: Config) -> Result<RedisBackend, String> {
    let (backend, preflight) = RedisBackend::connect(config)
        .await
        .map_err(|e| e.to_string())?;
    for warning in preflight.warnings {
        eprintln!("keyway: warning: {warning}");
    }
    Ok(backend)
}

fn redis_url(redis: &Redis) -> Result<String, String> {
    redis.redis_url.clone().ok_or_else(|| {
        "REDIS_URL is not set (for example redis://127.0.0.1:6379; or pass --redis-url)".to_owned()
    })
}

async fn demo_command(redis: Redis) -> ExitCode {
    // With no REDIS_URL, a server of our own in a scratch directory, removed on exit.
    let (url, server) = match &redis.redis_url {
        Some(url) => (url.clone(), None),
        None => match EmbeddedRedis::start(EmbeddedOptions::default()) {
            Ok(server) => {
                println!(
                    "started redis-server on {} (data in {})",
                    server.url(),
                    server.dir().display()
                );
                (server.url(), Some(server))
            }
            Err(e) => return fail(e.to_string()),
        },
    };
    let backend = match connect(&url, &redis).await {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let result = demo::run(&backend, &mut std::io::stdout()).await;
    drop(server);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

async fn run_roles(roles: Vec<Role>, redis: Redis) -> ExitCode {
    let url = match redis_url(&redis) {
        Ok(u) => u,
        Err(e) => return fail(e),
    };
    let (config, runway) = match settings(&url, &redis) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    // Only the runway role lands anything; the others never call the merger.
    let merger = match (roles.contains(&Role::Runway), runway) {
        (false, _) => AnyMerger::Fake(FakeMerger),
        (true, Some(runway)) => match AnyMerger::from_config(runway).await {
            Ok(m) => m,
            Err(e) => return fail(e),
        },
        (true, None) => {
            return fail(
                "the runway role needs a [runway] section in the config (--config or KEYWAY_CONFIG): \
                 queues for the git merger, or merger = \"fake\""
                    .to_owned(),
            )
        }
    };
    let backend = match connect_with(config).await {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let (trigger, shutdown) = Shutdown::new();
    let mut tasks = app::start(&backend, &roles, &merger, &shutdown);
    let names: Vec<&str> = roles.iter().map(|r| r.name()).collect();
    eprintln!(
        "keyway: running {} against {}",
        names.join(", "),
        redact_url(&url)
    );
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => return fail(format!("cannot watch SIGTERM: {e}")),
        };
    let mut failed = None;
    tokio::select! {
        _ = terminate.recv() => eprintln!("keyway: SIGTERM, stopping"),
        _ = tokio::signal::ctrl_c() => eprintln!("keyway: interrupted, stopping"),
        done = tasks.join_next() => failed = Some(match done {
            Some(Ok(Err(e))) => format!("a stage failed: {e}"),
            Some(Err(e)) => format!("a stage crashed: {e}"),
            _ => "a stage stopped early".to_owned(),
        }),
    }
    trigger.trigger();
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done {
            failed.get_or_insert(format!("a stage failed: {e}"));
        }
    }
    match failed {
        None => ExitCode::SUCCESS,
        Some(e) => fail(e),
    }
}

async fn dlq_list(redis: Redis) -> ExitCode {
    let url = match redis_url(&redis) {
        Ok(u) => u,
        Err(e) => return fail(e),
    };
    let backend = match connect(&url, &redis).await {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let parked = match backend.peek("parked", 1000).await {
        Ok(p) => p,
        Err(e) => return fail(e.to_string()),
    };
    if parked.is_empty() {
        println!("no parked dead letters");
    }
    for stored in parked {
        match json::from_slice::<keyway::orchestrator::Parked>(&stored.payload) {
            Ok(p) => println!(
                "{}  topic={} id={:?} reason={} payload={} bytes",
                stored.entry,
                p.topic,
                p.message_id,
                p.reason,
                p.payload.len()
            ),
            Err(e) => println!("{}  (unreadable parking record: {e})", stored.entry),
        }
    }
    ExitCode::SUCCESS
}
