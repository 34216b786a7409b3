//! Running Keyway as a service: what an operator needs around the roles.
//!
//! - [`connect`]: wait for Redis with backoff instead of exiting when it is not up yet.
//! - [`logging`]: the `tracing` subscriber of `keyway run` and `keyway demo` (human or JSON).
//! - [`metrics_http`]: `GET /metrics` in the Prometheus text format.
//! - [`acl`]: the Redis ACL rules each role needs, and nothing more.

pub(crate) mod acl;
pub(crate) mod connect;
pub(crate) mod logging;
pub(crate) mod metrics_http;

/// A duration as people write it: `250ms`, `2s`, `1.5s`.
pub(crate) fn human(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(super::human(Duration::from_millis(250)), "250ms");
        assert_eq!(super::human(Duration::from_secs(2)), "2s");
        assert_eq!(super::human(Duration::from_millis(1500)), "1.5s");
    }
}
