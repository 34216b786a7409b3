//! Waiting for Redis: a role started before its server (a reboot, a rollout, a failover) waits
//! and retries with backoff, and is ready as soon as the server is. Only what can get better by
//! waiting is retried (refused or timed-out connections, a server still loading); a wrong URL, a
//! refused password or a refused eviction policy fails at once.

use std::time::Duration;

use keyway_runtime::redis::config::redact_url;
use keyway_runtime::redis::{Config, RedisBackend};
use tokio::signal::unix::{signal, Signal, SignalKind};

/// The first wait between attempts; it doubles up to [`MAX_DELAY`].
pub(crate) const FIRST_DELAY: Duration = Duration::from_millis(500);
/// The longest wait between attempts.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(10);

/// SIGTERM and SIGINT (Ctrl-C), watched from the start so that none is missed between waits.
pub(crate) struct StopSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl StopSignals {
    /// Start watching.
    pub(crate) fn new() -> Result<Self, String> {
        let watch = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| format!("cannot watch {name}: {e}"))
        };
        Ok(StopSignals {
            terminate: watch(SignalKind::terminate(), "SIGTERM")?,
            interrupt: watch(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    /// The next stop signal: `"SIGTERM"` or `"SIGINT"`. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// How waiting for Redis ended.
pub(crate) enum Connected {
    /// Connected, preflight done (its warnings are logged).
    Ready(RedisBackend),
    /// A stop signal came first.
    Stopped(&'static str),
}

/// The reason in a connection error, without the `cannot connect to Redis at <url>: ` the
/// backend puts in front of it.
fn reason(message: &str, shown: &str) -> String {
    let prefix = format!("cannot connect to Redis at {shown}: ");
    message.strip_prefix(&prefix).unwrap_or(message).to_owned()
}

/// Connect with `config`, retrying what may get better with time until it works or a stop
/// signal arrives. Each failed attempt is logged with the redacted URL, the reason and the wait.
pub(crate) async fn connect_patiently(
    config: Config,
    stop: &mut StopSignals,
) -> Result<Connected, String> {
    let shown = redact_url(&config.redis.url);
    let mut delay = FIRST_DELAY;
    loop {
        tokio::select! {
            attempt = RedisBackend::connect(config.clone()) => match attempt {
                Ok((backend, _)) => return Ok(Connected::Ready(backend)),
                Err(e) if e.is_retryable() => tracing::warn!(
                    "Redis at {shown} not reachable ({}); retrying in {}",
                    reason(&e.to_string(), &shown),
                    super::human(delay),
                ),
                Err(e) => return Err(e.to_string()),
            },
            why = stop.recv() => return Ok(Connected::Stopped(why)),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            why = stop.recv() => return Ok(Connected::Stopped(why)),
        }
        delay = (delay * 2).min(MAX_DELAY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_is_the_part_after_the_url() {
        let shown = "redis://app:***@127.0.0.1:6390";
        assert_eq!(
            reason(
                "cannot connect to Redis at redis://app:***@127.0.0.1:6390: connection refused",
                shown
            ),
            "connection refused"
        );
        assert_eq!(reason("redis: timed out", shown), "redis: timed out");
    }
}
