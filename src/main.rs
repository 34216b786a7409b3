//! The `keyway` command.
//!
//! Exit codes: 0 success, 1 the command ran and failed, 2 usage error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod contract_cli;
mod ops;

use keyway::merge_service::config::MergerConfig;
use keyway::merge_service::{AnyMerger, FakeMerger};
use keyway::orchestrator::{Batch, LandStrategy, Request};
use keyway::stages::app::{self, Role};
use keyway::stages::store::Store;
use keyway::stages::submit::{self, NewRequest};
use keyway_runtime::json;
use keyway_runtime::redis::config::redact_url;
use keyway_runtime::redis::{Config, EmbeddedOptions, EmbeddedRedis, RedisBackend, Shutdown};
use ops::acl::AclRole;
use ops::connect::{connect_patiently, Connected, StopSignals};
use ops::logging::LogFormat;
use ops::metrics_http::{Endpoint, Source};

/// mimalloc: under glibc's malloc a quarter of the stages' CPU went to its arena locks and
/// fast-bin consolidation (tokio workers free what others allocated).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// How a long-lived command logs: `tracing` events on standard error.
#[derive(Debug, clap::Args)]
struct Logs {
    /// Log lines for people, or one JSON object per line for log shippers. Which events:
    /// KEYWAY_LOG (else RUST_LOG), e.g. `debug` or `keyway_runtime=debug,info`; default `info`
    /// for Keyway, `warn` for the rest.
    #[arg(
        long,
        value_enum,
        default_value = "human",
        env = "KEYWAY_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole merge loop on seeded queues and print the outcome; exits 1 if anything
    /// turned out other than seeded.
    ///
    /// Uses REDIS_URL (waiting for it to be reachable), or starts its own redis-server in a
    /// scratch directory when it is unset.
    Demo {
        #[command(flatten)]
        redis: Redis,
        #[command(flatten)]
        logs: Logs,
    },
    /// Run stage roles until SIGTERM or Ctrl-C.
    ///
    /// Waits for Redis when it is not reachable yet, retrying with backoff; a wrong URL,
    /// password or configuration fails at once.
    Run {
        /// The roles to run in this process.
        #[arg(required = true, value_enum, value_name = "ROLE")]
        roles: Vec<RoleName>,
        #[command(flatten)]
        redis: Redis,
        #[command(flatten)]
        logs: Logs,
        /// Serve Prometheus metrics on http://ADDR/metrics, e.g. 127.0.0.1:9464 (port 0 picks
        /// a free port, which is logged).
        #[arg(long, env = "KEYWAY_METRICS_ADDR", value_name = "ADDR")]
        metrics_addr: Option<SocketAddr>,
        /// Worker threads of this process, 1 to 256. The roles mostly wait on Redis: one
        /// thread spends the least CPU per batch and keeps up with a Redis server; more let
        /// one process's roles use more cores.
        #[arg(
            long,
            env = "KEYWAY_THREADS",
            value_name = "N",
            default_value_t = 1,
            value_parser = clap::value_parser!(u16).range(1..=256)
        )]
        threads: u16,
    },
    /// Print the Redis ACL rules each role needs: one `ACL SETUSER` command per role, to pipe
    /// into `redis-cli`.
    ///
    /// Each role may run the commands it sends and touch the keys it uses, nothing more: only
    /// Runway, the reconciler and the mergesignal stage that consumes it can write
    /// merge-signal. The command replaces the user's
    /// permissions and keeps its passwords; give a new user one with
    /// `ACL SETUSER keyway-<role> >PASSWORD` and connect with
    /// REDIS_URL=redis://keyway-<role>:PASSWORD@host:6379. Keys follow the configuration's
    /// key prefix and streams (--config or KEYWAY_CONFIG).
    Acl {
        /// The roles, repeatable or comma-separated.
        #[arg(
            long = "role",
            required = true,
            value_enum,
            value_name = "ROLE",
            value_delimiter = ','
        )]
        roles: Vec<AclRole>,
        /// One user of this name with the rules of every role given (for a process that runs
        /// several), instead of a user `keyway-<role>` per role.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// Print only the rules, one line per user.
        #[arg(long)]
        rules_only: bool,
        /// The runtime configuration (key prefix, streams).
        #[arg(long, env = "KEYWAY_CONFIG", value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Hand Keyway a batch to land and print its id.
    ///
    /// One request of the URIs given (a stack, bottom first), or the requests of a TOML file:
    /// `[[requests]]` tables with `uris = [...]` and `strategy = "rebase"`.
    Submit {
        /// The queue to land on.
        #[arg(long, required_unless_present = "resume")]
        queue: Option<String>,
        /// How to land the URIs given on the command line.
        #[arg(long, default_value = "default", value_parser = ["default", "rebase", "squash-rebase", "merge", "promote"])]
        strategy: String,
        /// Change URIs: git://<host>/<repo>/<percent-encoded ref>/<sha> or
        /// file:///<path>/<percent-encoded ref>/<sha>.
        #[arg(
            value_name = "URI",
            required_unless_present_any = ["file", "resume"],
            conflicts_with_all = ["file", "resume"]
        )]
        uris: Vec<String>,
        /// A TOML file of requests.
        #[arg(long, value_name = "FILE", conflicts_with = "resume")]
        file: Option<PathBuf>,
        /// Hand a batch that is recorded but was not handed over (the submission's hand-over
        /// failed) to the merge stage again; a batch already handed over is not merged twice.
        #[arg(long, value_name = "BATCH")]
        resume: Option<String>,
        #[command(flatten)]
        redis: Redis,
    },
    /// A batch's state and its requests' states and landed revisions.
    Status {
        /// The batch id `keyway submit` printed.
        batch: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        format: StatusFormat,
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
    /// Contract tools for CI: check, breaking, descriptor, topics; gen for other languages.
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

/// How `keyway status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StatusFormat {
    /// A table.
    Human,
    /// `{"batch": <Batch>, "requests": [<Request>...]}` in protobuf JSON.
    Json,
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
        Command::Demo { redis, logs } => runtime().block_on(demo_command(redis, logs.log_format)),
        Command::Acl {
            roles,
            user,
            rules_only,
            config,
        } => acl_command(&roles, user.as_deref(), rules_only, config.as_deref()),
        Command::Contract { command } => contract_cli::run(command),
        Command::Dlq {
            command: DlqCommand::List { redis },
        } => runtime().block_on(dlq_list(redis)),
        Command::Submit {
            resume: Some(batch),
            redis,
            ..
        } => runtime().block_on(resume_command(&batch, redis)),
        Command::Submit {
            queue,
            strategy,
            uris,
            file,
            redis,
            resume: None,
        } => {
            let queue = queue.unwrap_or_default();
            let requests = match file {
                Some(path) => batch_file(&path),
                None => Ok(vec![NewRequest {
                    uris,
                    strategy: submit::strategy(&strategy).unwrap_or(LandStrategy::Unset),
                }]),
            };
            match requests.and_then(|r| {
                submit::check(&queue, &r)
                    .map(|()| r)
                    .map_err(|e| e.to_string())
            }) {
                Ok(requests) => runtime().block_on(submit_command(&queue, &requests, redis)),
                Err(e) => {
                    eprintln!("keyway: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Status {
            batch,
            format,
            redis,
        } => runtime().block_on(status(&batch, format, redis)),
        Command::Run {
            roles,
            redis,
            logs,
            metrics_addr,
            threads,
        } => {
            let mut parsed: Vec<Role> = Vec::new();
            for role in roles.iter().flat_map(|r| r.roles()) {
                if !parsed.contains(role) {
                    parsed.push(*role);
                }
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(usize::from(threads))
                .enable_all()
                .build()
                .expect("a tokio runtime starts");
            runtime.block_on(run_command(parsed, redis, logs.log_format, metrics_addr))
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
        None => {
            // With no file, the password may still come from REDIS_PASSWORD(_FILE).
            let mut config = app::config(url);
            config
                .redis
                .apply_password_env(std::env::vars())
                .map_err(|e| e.to_string())?;
            Ok((config, None))
        }
    }
}

/// The backend a one-shot command (`dlq`, `submit`, `status`) works on.
async fn connect(redis: &Redis) -> Result<RedisBackend, String> {
    let url = redis_url(redis)?;
    let (config, _) = settings(&url, redis)?;
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

/// Install the log subscriber, run `body`, and log its error: the shell of `run` and `demo`.
async fn logged(
    format: LogFormat,
    body: impl std::future::Future<Output = Result<(), String>>,
) -> ExitCode {
    if let Err(e) = ops::logging::init(format) {
        return fail(e);
    }
    match body.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}

async fn demo_command(redis: Redis, format: LogFormat) -> ExitCode {
    logged(format, demo(redis)).await
}

async fn demo(redis: Redis) -> Result<(), String> {
    // With no REDIS_URL, a server of our own in a scratch directory, removed on exit.
    let (url, server) = match &redis.redis_url {
        Some(url) => (url.clone(), None),
        None => {
            let server =
                EmbeddedRedis::start(EmbeddedOptions::default()).map_err(|e| e.to_string())?;
            println!(
                "started redis-server on {} (data in {})",
                server.url(),
                server.dir().display()
            );
            (server.url(), Some(server))
        }
    };
    let (config, _) = settings(&url, &redis)?;
    let mut stop = StopSignals::new()?;
    let backend = match connect_patiently(config, &mut stop).await? {
        Connected::Ready(backend) => backend,
        Connected::Stopped(why) => return Err(format!("{why} before Redis was reachable")),
    };
    let mut out = std::io::stdout();
    let result = tokio::select! {
        result = keyway::demo::run(&backend, &mut out) => result,
        why = stop.recv() => Err(format!("{why} before the loop settled")),
    };
    drop(server);
    result
}

async fn run_command(
    roles: Vec<Role>,
    redis: Redis,
    format: LogFormat,
    metrics_addr: Option<SocketAddr>,
) -> ExitCode {
    logged(format, run_roles(roles, redis, metrics_addr)).await
}

async fn run_roles(
    roles: Vec<Role>,
    redis: Redis,
    metrics_addr: Option<SocketAddr>,
) -> Result<(), String> {
    let url = redis_url(&redis)?;
    let (config, runway) = settings(&url, &redis)?;
    // Only the runway role lands anything; the others never call the merger.
    let merger = match (roles.contains(&Role::Runway), runway) {
        (false, _) => AnyMerger::Fake(FakeMerger),
        (true, Some(runway)) => AnyMerger::from_config(runway).await?,
        (true, None) => return Err(
            "the runway role needs a [runway] section in the config (--config or KEYWAY_CONFIG): \
                 queues for the git merger, or merger = \"fake\""
                .to_owned(),
        ),
    };
    let mut stop = StopSignals::new()?;
    // The endpoint is up (and answers keyway_ready 0) while the process waits for Redis.
    let source = Source::default();
    let endpoint = match metrics_addr {
        Some(addr) => {
            let endpoint = Endpoint::bind(addr).await?;
            let addr = endpoint.addr();
            tracing::info!(%addr, "serving metrics on http://{addr}/metrics");
            Some(tokio::spawn(endpoint.serve(source.clone())))
        }
        None => None,
    };
    let result = run_until_stopped(&roles, config, &merger, &mut stop, &source).await;
    if let Some(endpoint) = endpoint {
        endpoint.abort();
    }
    result
}

async fn run_until_stopped(
    roles: &[Role],
    config: Config,
    merger: &AnyMerger,
    stop: &mut StopSignals,
    source: &Source,
) -> Result<(), String> {
    let shown = redact_url(&config.redis.url);
    let backend = match connect_patiently(config, stop).await? {
        Connected::Ready(backend) => backend,
        Connected::Stopped(why) => {
            tracing::info!("{why} before Redis was reachable: stopping");
            return Ok(());
        }
    };
    source.set(backend.metrics().clone());
    let (trigger, shutdown) = Shutdown::new();
    let mut tasks = app::start(&backend, roles, merger, &shutdown);
    let names = roles
        .iter()
        .map(|r| r.name())
        .collect::<Vec<_>>()
        .join(", ");
    tracing::info!("running {names} against {shown}");
    let mut failed = None;
    tokio::select! {
        why = stop.recv() => tracing::info!("{why}: stopping"),
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
        None => {
            tracing::info!("stopped");
            Ok(())
        }
        Some(e) => Err(e),
    }
}

/// `keyway acl`: the rules of each role, or of one user holding several.
fn acl_command(
    roles: &[AclRole],
    user: Option<&str>,
    rules_only: bool,
    config: Option<&std::path::Path>,
) -> ExitCode {
    let config = match config {
        Some(path) => match app::load_config(path, None) {
            Ok(c) => c,
            Err(e) => return fail(e),
        },
        None => app::config("redis://127.0.0.1:6379"),
    };
    let mut singles: Vec<AclRole> = Vec::new();
    for one in roles.iter().flat_map(|r| r.expand()) {
        if !singles.contains(&one) {
            singles.push(one);
        }
    }
    let mut users: Vec<(String, ops::acl::Grants)> = Vec::new();
    for role in &singles {
        match ops::acl::grants(*role, &config) {
            Ok(g) => users.push((format!("keyway-{}", role.name()), g)),
            Err(e) => return fail(e),
        }
    }
    if let Some(name) = user {
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            eprintln!("keyway: --user {name:?}: a Redis user name without spaces");
            return ExitCode::from(2);
        }
        let mut union = ops::acl::Grants::default();
        for (_, g) in &users {
            union.merge(g);
        }
        users = vec![(name.to_owned(), union)];
    }
    for (name, g) in &users {
        if rules_only {
            println!("{}", g.rules().join(" "));
        } else {
            println!("{}", g.setuser(name));
        }
    }
    ExitCode::SUCCESS
}

async fn dlq_list(redis: Redis) -> ExitCode {
    let backend = match connect(&redis).await {
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

/// The requests of a TOML batch file.
fn batch_file(path: &std::path::Path) -> Result<Vec<NewRequest>, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("{shown}: invalid TOML: {e}"))?;
    let mut requests = Vec::new();
    for (key, value) in &table {
        if key != "requests" {
            return Err(format!(
                "{shown}: unknown key `{key}` (expected [[requests]])"
            ));
        }
        let list = value.as_array().ok_or_else(|| {
            format!("{shown}: `requests` must be an array of tables ([[requests]])")
        })?;
        for (i, item) in list.iter().enumerate() {
            let at = format!("{shown}: requests[{i}]");
            let t = item
                .as_table()
                .ok_or_else(|| format!("{at}: expected a table"))?;
            let mut request = NewRequest {
                uris: Vec::new(),
                strategy: LandStrategy::Unset,
            };
            for (key, value) in t {
                match key.as_str() {
                    "uris" => {
                        request.uris = value
                            .as_array()
                            .and_then(|a| a.iter().map(|u| u.as_str().map(str::to_owned)).collect())
                            .ok_or_else(|| format!("{at}.uris: expected a list of strings"))?
                    }
                    "strategy" => {
                        let name = value
                            .as_str()
                            .ok_or_else(|| format!("{at}.strategy: expected a string"))?;
                        request.strategy = submit::strategy(name).ok_or_else(|| {
                            format!("{at}.strategy: {name:?} is not one of default, rebase, squash-rebase, merge, promote")
                        })?;
                    }
                    other => {
                        return Err(format!(
                            "{at}.{other}: unknown key (expected uris, strategy)"
                        ))
                    }
                }
            }
            requests.push(request);
        }
    }
    Ok(requests)
}

async fn submit_command(queue: &str, requests: &[NewRequest], redis: Redis) -> ExitCode {
    let backend = match connect(&redis).await {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let store = Store::new(&backend);
    match submit::submit(&backend, &store, queue, requests).await {
        Ok(batch) => {
            println!("{}", batch.id);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e.to_string()),
    }
}

async fn resume_command(id: &str, redis: Redis) -> ExitCode {
    let backend = match connect(&redis).await {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let store = Store::new(&backend);
    match store.batch(id).await {
        Ok(Some(batch)) => match submit::hand_over(&backend, &batch).await {
            Ok(()) => {
                println!("{}", batch.id);
                ExitCode::SUCCESS
            }
            Err(e) => fail(e.to_string()),
        },
        Ok(None) => fail(format!("no batch {id:?}")),
        Err(e) => fail(e.to_string()),
    }
}

async fn status(id: &str, format: StatusFormat, redis: Redis) -> ExitCode {
    let backend = match connect(&redis).await {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let store = Store::new(&backend);
    let batch: Batch = match store.batch(id).await {
        Ok(Some(b)) => b,
        Ok(None) => return fail(format!("no batch {id:?}")),
        Err(e) => return fail(e.to_string()),
    };
    let mut requests: Vec<Request> = Vec::new();
    for r in &batch.contains {
        match store.request(r).await {
            Ok(Some(r)) => requests.push(r),
            Ok(None) => {
                return fail(format!(
                    "batch {id} names request {r:?}, which does not exist"
                ))
            }
            Err(e) => return fail(e.to_string()),
        }
    }
    match format {
        StatusFormat::Json => {
            let encoded: Result<Vec<String>, _> = requests.iter().map(json::to_string).collect();
            match (json::to_string(&batch), encoded) {
                (Ok(b), Ok(r)) => println!("{{\"batch\":{b},\"requests\":[{}]}}", r.join(",")),
                (Err(e), _) | (_, Err(e)) => return fail(e.to_string()),
            }
        }
        StatusFormat::Human => {
            let state = batch
                .state()
                .as_str_name()
                .trim_start_matches("BATCH_STATE_");
            println!("{}  {state}  {}", batch.id, batch.failure_reason);
            for r in &requests {
                let state = r.state().as_str_name().trim_start_matches("REQUEST_STATE_");
                let detail = if r.revisions.is_empty() {
                    r.error.clone()
                } else {
                    r.revisions.join(" ")
                };
                println!("  {:<16} {:<9} {detail}", r.id, state);
            }
        }
    }
    ExitCode::SUCCESS
}
