//! Wiring: which subscriptions each role runs, with which handler.

use std::sync::Arc;
use std::time::Duration;

use keyway_runtime::redis::{Config, RedisBackend, RedisConfig, Registry, Shutdown};
use keyway_runtime::stub::Consumer;
use keyway_runtime::transport::{Backoff, Handler, SubscriptionConfig, TransportError};
use tokio::task::JoinSet;

use super::orchestrator::{ConcludeStage, MergeSignalStage, MergeStage, Outbox, SpeculateStage};
use super::reconcile::{BatchReconciler, FanOutReconciler, Parking, RunwayReconciler};
use super::store::Store;
use crate::merge_service::config::MergerConfig;
use crate::merge_service::{self, AnyMerger, Responder};
use crate::orchestrator::topics as otopics;
use crate::topics as rtopics;

/// A long-lived process role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `submitqueue-merge` → `runway-merge`.
    Merge,
    /// `merge-signal` → batch state, `conclude`, `speculate`.
    MergeSignal,
    /// The Runway responder, with the configured merger.
    Runway,
    /// Every dead-letter reconciler: one for each dead-letter stream the other roles write.
    Reconcile,
    /// The minimal `conclude` stage.
    Conclude,
    /// The minimal `speculate` stage.
    Speculate,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 6] = [
        Role::Merge,
        Role::MergeSignal,
        Role::Runway,
        Role::Reconcile,
        Role::Conclude,
        Role::Speculate,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::Merge => "merge",
            Role::MergeSignal => "mergesignal",
            Role::Runway => "runway",
            Role::Reconcile => "reconcile",
            Role::Conclude => "conclude",
            Role::Speculate => "speculate",
        }
    }

    /// The role named `name`.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// Every topic the stages use, each on the stream of its own name.
pub fn registry() -> Registry {
    let keys = rtopics::TopicKey::ALL
        .iter()
        .map(|k| k.as_str())
        .chain(otopics::TopicKey::ALL.iter().map(|k| k.as_str()));
    Registry::identity(keys).expect("generated topic keys are valid topic names")
}

/// The configuration the stages run with against `url`: every stage topic on the stream of its
/// own name, default subscriptions with quick retries (a configuration file can override any
/// of them, see [`load_config`]).
pub fn config(url: &str) -> Config {
    Config {
        redis: RedisConfig {
            url: url.to_owned(),
            shutdown_deadline: Duration::from_secs(5),
            ..RedisConfig::default()
        },
        registry: registry(),
        subscriptions: Default::default(),
    }
}

/// The configuration from the TOML file at `path` (with `KEYWAY__…` environment overrides):
/// its `[redis]` settings and `[subscriptions]` (matched to stages by topic) apply, and its
/// `[topics]` must give a stream to every topic the stages use. `url` replaces the file's
/// `redis.url` when given.
pub fn load_config(path: &std::path::Path, url: Option<&str>) -> Result<Config, String> {
    load_settings(path, url).map(|(config, _)| config)
}

/// Like [`load_config`], with the file's `[runway]` section (see
/// [`crate::merge_service::config`]), if it has one.
pub fn load_settings(
    path: &std::path::Path,
    url: Option<&str>,
) -> Result<(Config, Option<MergerConfig>), String> {
    let (mut config, sections) =
        Config::load_with(path, &["runway"]).map_err(|e| format!("{}: {e}", path.display()))?;
    let runway = match sections.get("runway") {
        Some(toml::Value::Table(t)) => Some(
            merge_service::config::parse(t)
                .map_err(|e| format!("{}: config key {e}", path.display()))?,
        ),
        Some(_) => {
            return Err(format!(
                "{}: config key `runway` must be a table",
                path.display()
            ))
        }
        None => None,
    };
    for (key, _) in registry().iter() {
        if config.registry.stream(key).is_none() {
            return Err(format!(
                "{}: config key `topics.{key}` is missing: the stages publish or consume it",
                path.display()
            ));
        }
    }
    if let Some(url) = url {
        config.redis.url = url.to_owned();
    }
    Ok((config, runway))
}

/// The stages' default timings: a 10 s visibility timeout, retries after 100 ms doubling to 2 s.
fn quick(base: SubscriptionConfig) -> SubscriptionConfig {
    SubscriptionConfig {
        visibility_timeout: Duration::from_secs(10),
        backoff: Backoff {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max: Duration::from_secs(2),
        },
        ..base
    }
}

fn sub(topic: &str, group: &str) -> SubscriptionConfig {
    quick(SubscriptionConfig::new(topic, group))
}

fn dead_letter_sub(topic: &str, group: &str) -> SubscriptionConfig {
    quick(SubscriptionConfig::dead_letter_consumer(topic, group))
}

/// The subscription of `default` from the configuration, when one there reads the same topic.
fn configured(backend: &RedisBackend, default: SubscriptionConfig) -> SubscriptionConfig {
    backend
        .config()
        .subscriptions
        .values()
        .find(|s| s.topic == default.topic)
        .cloned()
        .unwrap_or(default)
}

fn spawn<H: Handler + 'static>(
    tasks: &mut JoinSet<Result<(), TransportError>>,
    backend: &RedisBackend,
    sub: SubscriptionConfig,
    handler: H,
    shutdown: &Shutdown,
) {
    let sub = configured(backend, sub);
    let (backend, shutdown) = (backend.clone(), shutdown.clone());
    let handler = Arc::new(handler);
    tasks.spawn(async move { backend.run(sub, handler, shutdown).await });
}

/// Start the subscriptions of `roles` on `backend`, Runway's with `merger`; they stop when
/// `shutdown` is triggered.
pub fn start(
    backend: &RedisBackend,
    roles: &[Role],
    merger: &AnyMerger,
    shutdown: &Shutdown,
) -> JoinSet<Result<(), TransportError>> {
    let store = Store::new(backend);
    let outbox = Outbox::new(backend);
    let mut tasks = JoinSet::new();
    for role in roles {
        match role {
            Role::Merge => spawn(
                &mut tasks,
                backend,
                sub("submitqueue-merge", "orchestrator-merge"),
                Consumer::<otopics::SubmitqueueMerge, _>::new(MergeStage {
                    store: store.clone(),
                    outbox: outbox.clone(),
                }),
                shutdown,
            ),
            Role::MergeSignal => spawn(
                &mut tasks,
                backend,
                sub("merge-signal", "orchestrator-mergesignal"),
                Consumer::<rtopics::MergeSignal, _>::new(MergeSignalStage {
                    store: store.clone(),
                    outbox: outbox.clone(),
                }),
                shutdown,
            ),
            Role::Conclude => spawn(
                &mut tasks,
                backend,
                sub("conclude", "orchestrator-conclude"),
                Consumer::<otopics::Conclude, _>::new(ConcludeStage {
                    store: store.clone(),
                    outbox: outbox.clone(),
                }),
                shutdown,
            ),
            Role::Speculate => spawn(
                &mut tasks,
                backend,
                sub("speculate", "orchestrator-speculate"),
                Consumer::<otopics::Speculate, _>::new(SpeculateStage {
                    store: store.clone(),
                }),
                shutdown,
            ),
            Role::Runway => {
                let responder = Responder::new(merger.clone(), backend);
                spawn(
                    &mut tasks,
                    backend,
                    sub("runway-merge", "runway"),
                    Consumer::<rtopics::RunwayMerge, _>::new(responder.clone()),
                    shutdown,
                );
                spawn(
                    &mut tasks,
                    backend,
                    sub("merge-conflict-check", "runway"),
                    Consumer::<rtopics::MergeConflictCheck, _>::new(responder),
                    shutdown,
                );
            }
            Role::Reconcile => {
                // Each reconciler parks what still fails on its subscription's last attempt.
                let last = |topic: &str, group: &str| {
                    configured(backend, dead_letter_sub(topic, group)).max_attempts
                };
                for topic in ["submitqueue-merge_dlq", "merge-signal_dlq"] {
                    let group = "orchestrator-reconcile";
                    let batches = BatchReconciler {
                        store: store.clone(),
                        outbox: outbox.clone(),
                        parking: Parking::new(backend).last_attempt(last(topic, group)),
                    };
                    spawn(
                        &mut tasks,
                        backend,
                        dead_letter_sub(topic, group),
                        batches,
                        shutdown,
                    );
                }
                for topic in ["runway-merge_dlq", "merge-conflict-check_dlq"] {
                    let group = "runway-reconcile";
                    let runway = RunwayReconciler::new(backend).last_attempt(last(topic, group));
                    spawn(
                        &mut tasks,
                        backend,
                        dead_letter_sub(topic, group),
                        runway,
                        shutdown,
                    );
                }
                for topic in ["conclude_dlq", "speculate_dlq"] {
                    let group = "orchestrator-reconcile";
                    let fan_out = FanOutReconciler::new(backend).last_attempt(last(topic, group));
                    spawn(
                        &mut tasks,
                        backend,
                        dead_letter_sub(topic, group),
                        fan_out,
                        shutdown,
                    );
                }
            }
        }
    }
    tasks
}
