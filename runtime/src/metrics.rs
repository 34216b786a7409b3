//! Counters, gauges and latency histograms per topic and outcome, rendered in the Prometheus
//! text exposition format.
//!
//! - Counters only grow (`keyway_deliveries_total`, ...).
//! - Gauges hold the last value reported (a group's consumers, pending entries and lag, set
//!   each time the consume loop looks after its group); a gauge whose value is unknown is
//!   removed rather than left stale.
//! - Histograms have fixed buckets from 1 ms to 10 s.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    counters: BTreeMap<(&'static str, Labels), u64>,
    gauges: BTreeMap<(&'static str, Labels), i64>,
    histograms: BTreeMap<(&'static str, Labels), Histogram>,
}

/// A registry of counters and histograms.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Metrics::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add `by` to counter `name` with `labels`.
    pub fn count(&self, name: &'static str, label_pairs: &[(&'static str, &str)], by: u64) {
        *self
            .lock()
            .counters
            .entry((name, labels(label_pairs)))
            .or_default() += by;
    }

    /// Set gauge `name` with `labels` to `value`.
    pub fn set_gauge(&self, name: &'static str, label_pairs: &[(&'static str, &str)], value: i64) {
        self.lock()
            .gauges
            .insert((name, labels(label_pairs)), value);
    }

    /// Forget gauge `name` with `labels` (its value is no longer known).
    pub fn remove_gauge(&self, name: &'static str, label_pairs: &[(&'static str, &str)]) {
        self.lock().gauges.remove(&(name, labels(label_pairs)));
    }

    /// The current value of a gauge, if set.
    pub fn gauge(&self, name: &str, label_pairs: &[(&'static str, &str)]) -> Option<i64> {
        let key = labels(label_pairs);
        self.lock()
            .gauges
            .iter()
            .find(|((n, l), _)| *n == name && *l == key)
            .map(|(_, v)| *v)
    }

    /// Record one observation of `latency` in histogram `name`.
    pub fn observe(
        &self,
        name: &'static str,
        label_pairs: &[(&'static str, &str)],
        latency: Duration,
    ) {
        let secs = latency.as_secs_f64();
        let mut inner = self.lock();
        let h = inner
            .histograms
            .entry((name, labels(label_pairs)))
            .or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// The current value of a counter (0 when never counted).
    pub fn counter(&self, name: &str, label_pairs: &[(&'static str, &str)]) -> u64 {
        let key = labels(label_pairs);
        self.lock()
            .counters
            .iter()
            .find(|((n, l), _)| *n == name && *l == key)
            .map_or(0, |(_, v)| *v)
    }

    /// Everything, in the Prometheus text format.
    pub fn render_prometheus(&self) -> String {
        let inner = self.lock();
        let mut out = String::new();
        let fmt_labels = |labels: &Labels, extra: Option<(&str, String)>| {
            let mut parts: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            if let Some((k, v)) = extra {
                parts.push(format!("{k}=\"{v}\""));
            }
            if parts.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", parts.join(","))
            }
        };
        let mut typed = Vec::new();
        for ((name, labels), value) in &inner.counters {
            if !typed.contains(name) {
                writeln!(out, "# TYPE {name} counter").unwrap();
                typed.push(name);
            }
            writeln!(out, "{name}{} {value}", fmt_labels(labels, None)).unwrap();
        }
        for ((name, labels), value) in &inner.gauges {
            if !typed.contains(name) {
                writeln!(out, "# TYPE {name} gauge").unwrap();
                typed.push(name);
            }
            writeln!(out, "{name}{} {value}", fmt_labels(labels, None)).unwrap();
        }
        for ((name, labels), h) in &inner.histograms {
            if !typed.contains(name) {
                writeln!(out, "# TYPE {name} histogram").unwrap();
                typed.push(name);
            }
            for (bound, count) in BUCKETS.iter().zip(h.counts) {
                writeln!(
                    out,
                    "{name}_bucket{} {count}",
                    fmt_labels(labels, Some(("le", bound.to_string())))
                )
                .unwrap();
            }
            writeln!(
                out,
                "{name}_bucket{} {}",
                fmt_labels(labels, Some(("le", "+Inf".into()))),
                h.count
            )
            .unwrap();
            writeln!(out, "{name}_sum{} {}", fmt_labels(labels, None), h.sum).unwrap();
            writeln!(out, "{name}_count{} {}", fmt_labels(labels, None), h.count).unwrap();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::new();
        m.count(
            "keyway_deliveries_total",
            &[("topic", "t"), ("outcome", "ack")],
            2,
        );
        m.observe(
            "keyway_handler_seconds",
            &[("topic", "t")],
            Duration::from_millis(3),
        );
        assert_eq!(
            m.counter(
                "keyway_deliveries_total",
                &[("topic", "t"), ("outcome", "ack")]
            ),
            2
        );
        let text = m.render_prometheus();
        assert!(text.contains("# TYPE keyway_deliveries_total counter\nkeyway_deliveries_total{topic=\"t\",outcome=\"ack\"} 2\n"), "{text}");
        assert!(
            text.contains("keyway_handler_seconds_bucket{topic=\"t\",le=\"0.0025\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("keyway_handler_seconds_bucket{topic=\"t\",le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("keyway_handler_seconds_count{topic=\"t\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn gauges_hold_the_last_value_until_removed() {
        let m = Metrics::new();
        let labels = [("topic", "t"), ("group", "g")];
        assert_eq!(m.gauge("keyway_group_consumers", &labels), None);
        m.set_gauge("keyway_group_consumers", &labels, 5);
        m.set_gauge("keyway_group_consumers", &labels, 2);
        m.set_gauge("keyway_group_lag", &labels, 7);
        assert_eq!(m.gauge("keyway_group_consumers", &labels), Some(2));
        let text = m.render_prometheus();
        assert!(
            text.contains("# TYPE keyway_group_consumers gauge\nkeyway_group_consumers{topic=\"t\",group=\"g\"} 2\n"),
            "{text}"
        );
        m.remove_gauge("keyway_group_lag", &labels);
        assert_eq!(m.gauge("keyway_group_lag", &labels), None);
        assert!(!m.render_prometheus().contains("keyway_group_lag"));
    }
}
