//! The log output of `keyway run` and `keyway demo`: `tracing` events on standard error, as
//! lines for people or as JSON objects for log shippers.
//!
//! - Which events: `KEYWAY_LOG`, else `RUST_LOG`, in `tracing-subscriber`'s `EnvFilter` syntax
//!   (`info`, `keyway_runtime=debug,warn`, ...); unset, `info` for Keyway's crates and `warn` for
//!   everything else. A filter that does not parse is an error, not a silent default.
//! - Spans of Keyway's crates are always recorded, whatever the filter: an event that passes the
//!   filter keeps the context of the delivery it is about (topic, group, message id, partition
//!   key, attempt) even with `KEYWAY_LOG=warn`.
//! - JSON: one object per line with `timestamp`, `level`, `target`, `message` and the event's
//!   fields at the top level, and the innermost span's fields under `span`.
//! - Nothing here prints a Redis URL: what is logged is redacted where it is formatted.

use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The filter when neither `KEYWAY_LOG` nor `RUST_LOG` is set.
pub(crate) const DEFAULT_FILTER: &str = "warn,keyway=info,keyway_runtime=info";

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One line per event, for people.
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The filter text and where it came from.
fn filter_spec(keyway_log: Option<String>, rust_log: Option<String>) -> (&'static str, String) {
    let set = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    match (set(keyway_log), set(rust_log)) {
        (Some(spec), _) => ("KEYWAY_LOG", spec),
        (None, Some(spec)) => ("RUST_LOG", spec),
        (None, None) => ("the default filter", DEFAULT_FILTER.to_owned()),
    }
}

fn parse_filter(source: &str, spec: &str) -> Result<EnvFilter, String> {
    EnvFilter::builder()
        .parse(spec)
        .map_err(|e| format!("{source} {spec:?} is not a log filter: {e}"))
}

/// Install the process-wide subscriber. Fails when the filter does not parse.
pub(crate) fn init(format: LogFormat) -> Result<(), String> {
    let (source, spec) = filter_spec(
        std::env::var("KEYWAY_LOG").ok(),
        std::env::var("RUST_LOG").ok(),
    );
    let events = parse_filter(source, &spec)?;
    let spans = filter_fn(|meta| meta.is_span() && meta.target().starts_with("keyway"));
    let filter = events.or(spans);
    let layer = match format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyway_log_wins_then_rust_log_then_the_default() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            filter_spec(s("debug"), s("trace")),
            ("KEYWAY_LOG", "debug".to_owned())
        );
        assert_eq!(
            filter_spec(None, s("trace")),
            ("RUST_LOG", "trace".to_owned())
        );
        assert_eq!(filter_spec(s(" "), None).1, DEFAULT_FILTER);
        assert!(parse_filter("KEYWAY_LOG", DEFAULT_FILTER).is_ok());
        let e = parse_filter("KEYWAY_LOG", "keyway=loud").unwrap_err();
        assert!(
            e.starts_with("KEYWAY_LOG \"keyway=loud\" is not a log filter"),
            "{e}"
        );
    }
}
