//! The `keyway` command.
//!
//! Exit codes: 0 success, 1 the command ran and failed, 2 usage error.

use std::process::ExitCode;

mod contract_cli;

use keyway::stages::app::{self, Role};
use keyway::stages::demo;
use keyway_runtime::json;
use keyway_runtime::redis::{EmbeddedOptions, EmbeddedRedis, RedisBackend, Shutdown};

const USAGE: &str = "\
usage: keyway <command>

commands:
  demo                 run the whole merge loop on seeded queues and print the outcome;
                       uses REDIS_URL, or starts its own redis-server when REDIS_URL is unset
  run <role>...        run stage roles against REDIS_URL until SIGTERM or Ctrl-C;
                       roles: merge, mergesignal, runway, reconcile, conclude, speculate, all;
                       KEYWAY_CONFIG=<file.toml> sets streams, Redis and subscription settings
  dlq list             list the dead letters the reconcilers parked for an operator (REDIS_URL)
  descriptor           write the contract's encoded FileDescriptorSet to standard output
  contract <command>   contract tools for CI: check, breaking, descriptor, topics
                       (`keyway contract --help`)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["descriptor"] => {
            use std::io::Write;
            match std::io::stdout().write_all(keyway::DESCRIPTOR_SET) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(format!("writing the descriptor set: {e}")),
            }
        }
        ["-h" | "--help" | "help"] => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        ["demo"] => runtime().block_on(demo_command()),
        ["contract", rest @ ..] => contract_cli::main(rest),
        ["dlq", "list"] => runtime().block_on(dlq_list()),
        ["run", roles @ ..] if !roles.is_empty() => {
            let mut parsed = Vec::new();
            for name in roles {
                match *name {
                    "all" => parsed.extend(Role::ALL),
                    other => match Role::parse(other) {
                        Some(role) => parsed.push(role),
                        None => {
                            eprintln!("keyway: unknown role {other:?}\n");
                            eprint!("{USAGE}");
                            return ExitCode::from(2);
                        }
                    },
                }
            }
            runtime().block_on(run_roles(parsed))
        }
        _ => {
            eprint!("{USAGE}");
            ExitCode::from(2)
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

async fn connect(url: &str) -> Result<RedisBackend, String> {
    // KEYWAY_CONFIG names a TOML file with the registry, Redis settings and subscriptions.
    let config = match std::env::var_os("KEYWAY_CONFIG") {
        Some(path) => app::load_config(std::path::Path::new(&path), Some(url))?,
        None => app::config(url),
    };
    let (backend, preflight) = RedisBackend::connect(config)
        .await
        .map_err(|e| format!("cannot use Redis at {url}: {e}"))?;
    for warning in preflight.warnings {
        eprintln!("keyway: warning: {warning}");
    }
    Ok(backend)
}

fn redis_url() -> Result<String, String> {
    std::env::var("REDIS_URL")
        .map_err(|_| "REDIS_URL is not set (for example redis://127.0.0.1:6379)".to_owned())
}

async fn demo_command() -> ExitCode {
    // With no REDIS_URL, a server of our own in a scratch directory, removed on exit.
    let (url, server) = match std::env::var("REDIS_URL") {
        Ok(url) => (url, None),
        Err(_) => match EmbeddedRedis::start(EmbeddedOptions::default()) {
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
    let backend = match connect(&url).await {
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

async fn run_roles(roles: Vec<Role>) -> ExitCode {
    let url = match redis_url() {
        Ok(u) => u,
        Err(e) => return fail(e),
    };
    let backend = match connect(&url).await {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let (trigger, shutdown) = Shutdown::new();
    let mut tasks = app::start(&backend, &roles, &shutdown);
    let names: Vec<&str> = roles.iter().map(|r| r.name()).collect();
    eprintln!("keyway: running {} against {url}", names.join(", "));
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => return fail(format!("cannot watch SIGTERM: {e}")),
        };
    let mut failed = None;
    tokio::select! {
        _ = terminate.recv() => eprintln!("keyway: SIGTERM, stopping"),
        _ = tokio::signal::ctrl_c() => eprintln!("keyway: interrupted, stopping"),
        done = tasks.join_next() => failed = Some(format!("a stage stopped early: {done:?}")),
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

async fn dlq_list() -> ExitCode {
    let url = match redis_url() {
        Ok(u) => u,
        Err(e) => return fail(e),
    };
    let backend = match connect(&url).await {
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
