//! Counters and histograms, written in the Prometheus text exposition format.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use strata::projection::ProjectionInfo;

/// Upper bounds of the append latency histogram, in seconds.
const LATENCY_BUCKETS_S: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The server's metrics. All updates are lock-free.
#[derive(Debug, Default)]
pub struct Metrics {
    appends: AtomicU64,
    events_appended: AtomicU64,
    append_replays: AtomicU64,
    conflicts: AtomicU64,
    append_errors: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS_S.len()],
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
    subscriptions_open: AtomicI64,
    subscriptions_total: AtomicU64,
    subscribers_lagged: AtomicU64,
    events_delivered: AtomicU64,
    responses: [AtomicU64; 5],
    connections_rejected: AtomicU64,
    connection_timeouts: AtomicU64,
    bodies_refused: AtomicU64,
    corruption_errors: AtomicU64,
    hand_over_gaps: AtomicU64,
    scavenges: AtomicU64,
    scavenges_failed: AtomicU64,
    scavenge_events_removed: AtomicU64,
    archive_passes: AtomicU64,
    archive_passes_failed: AtomicU64,
    archive_segments: AtomicU64,
    archive_bytes: AtomicU64,
}

impl Metrics {
    /// A successful append of `events` that took `took`; `replayed` when it was an
    /// idempotent retry, which wrote nothing and so counts no events.
    pub fn append_ok(&self, events: usize, replayed: bool, took: Duration) {
        self.appends.fetch_add(1, Ordering::Relaxed);
        if replayed {
            self.append_replays.fetch_add(1, Ordering::Relaxed);
        } else {
            self.events_appended
                .fetch_add(events as u64, Ordering::Relaxed);
        }
        self.observe(took);
    }

    /// A failed append; `conflict` when it was a wrong expected version.
    pub fn append_failed(&self, conflict: bool, took: Duration) {
        if conflict {
            self.conflicts.fetch_add(1, Ordering::Relaxed);
        } else {
            self.append_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.observe(took);
    }

    /// One increment per observation: the bucket it falls in (none past the last bound);
    /// `render` sums them into Prometheus' cumulative buckets.
    fn observe(&self, took: Duration) {
        let s = took.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS_S.iter().position(|b| s <= *b) {
            self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_sum_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    /// A subscription opened (`+1`) or closed (`-1`).
    pub fn subscription(&self, delta: i64) {
        self.subscriptions_open.fetch_add(delta, Ordering::Relaxed);
        if delta > 0 {
            self.subscriptions_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A subscriber was disconnected for being slow.
    pub fn lagged(&self) {
        self.subscribers_lagged.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` events were handed to a subscriber's connection.
    pub fn delivered(&self, n: u64) {
        self.events_delivered.fetch_add(n, Ordering::Relaxed);
    }

    /// A connection past `connections_max` was answered `503 overloaded` (or closed).
    pub fn connection_rejected(&self) {
        self.connections_rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was closed for taking too long to send a request head, or for idling.
    pub fn connection_timed_out(&self) {
        self.connection_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// A request body did not fit in `request_bodies_in_flight_max_bytes`.
    pub fn body_refused(&self) {
        self.bodies_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A read (or a subscription) met a stored event that failed its integrity checks.
    pub fn corruption(&self) {
        self.corruption_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A subscription found the live fan-out ahead of what it had read from storage and read
    /// the events in between from storage.
    pub fn hand_over_gap(&self) {
        self.hand_over_gaps.fetch_add(1, Ordering::Relaxed);
    }

    /// A scavenge removed `n` more events.
    pub fn scavenge_removed(&self, n: u64) {
        self.scavenge_events_removed.fetch_add(n, Ordering::Relaxed);
    }

    /// An archive pass ended: it copied `segments` segments of `bytes` bytes (`ok`), or
    /// failed.
    pub fn archive_pass(&self, ok: bool, segments: u64, bytes: u64) {
        self.archive_passes.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.archive_passes_failed.fetch_add(1, Ordering::Relaxed);
        }
        self.archive_segments.fetch_add(segments, Ordering::Relaxed);
        self.archive_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A scavenge ran to its end: finished (`ok`) or failed.
    pub fn scavenge_ended(&self, ok: bool) {
        self.scavenges.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.scavenges_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A response with `status`.
    pub fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Open subscriptions now.
    pub fn subscriptions_open(&self) -> i64 {
        self.subscriptions_open.load(Ordering::Relaxed)
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            &mut o,
            "strata_appends_total",
            "Successful append requests.",
            g(&self.appends),
        );
        counter(
            &mut o,
            "strata_events_appended_total",
            "Events written by successful appends (rate() gives events per second); idempotent retries write none.",
            g(&self.events_appended),
        );
        counter(
            &mut o,
            "strata_append_replays_total",
            "Successful appends that were idempotent retries of stored events: answered with the original result, nothing written.",
            g(&self.append_replays),
        );
        counter(
            &mut o,
            "strata_append_conflicts_total",
            "Appends refused with wrong_expected_version.",
            g(&self.conflicts),
        );
        counter(
            &mut o,
            "strata_append_errors_total",
            "Appends that failed for any other reason.",
            g(&self.append_errors),
        );
        counter(
            &mut o,
            "strata_subscriptions_total",
            "Subscriptions opened.",
            g(&self.subscriptions_total),
        );
        counter(
            &mut o,
            "strata_subscribers_lagged_total",
            "Subscribers disconnected because they fell behind.",
            g(&self.subscribers_lagged),
        );
        counter(
            &mut o,
            "strata_subscription_events_total",
            "Events handed to subscribers.",
            g(&self.events_delivered),
        );
        counter(
            &mut o,
            "strata_subscription_hand_over_gaps_total",
            "Times a subscription found the live fan-out ahead of its storage read and read the events in between from storage.",
            g(&self.hand_over_gaps),
        );
        counter(
            &mut o,
            "strata_corruption_errors_total",
            "Reads and subscriptions answered `corruption`: a stored event failed its integrity checks.",
            g(&self.corruption_errors),
        );
        counter(
            &mut o,
            "strata_connections_rejected_total",
            "Connections past connections_max, answered 503 overloaded (or closed).",
            g(&self.connections_rejected),
        );
        counter(
            &mut o,
            "strata_connection_timeouts_total",
            "Connections closed for a slow request head or a long idle keep-alive.",
            g(&self.connection_timeouts),
        );
        counter(
            &mut o,
            "strata_request_bodies_refused_total",
            "Requests answered 503 overloaded because their body did not fit in request_bodies_in_flight_max_bytes.",
            g(&self.bodies_refused),
        );
        counter(
            &mut o,
            "strata_scavenges_total",
            "Scavenges started through this server that ran to their end (finished or failed).",
            g(&self.scavenges),
        );
        counter(
            &mut o,
            "strata_scavenges_failed_total",
            "Scavenges started through this server that failed.",
            g(&self.scavenges_failed),
        );
        counter(
            &mut o,
            "strata_scavenge_events_removed_total",
            "Events removed by scavenges started through this server.",
            g(&self.scavenge_events_removed),
        );
        counter(
            &mut o,
            "strata_archive_passes_total",
            "Archive passes that ended (copied what was sealed, or failed).",
            g(&self.archive_passes),
        );
        counter(
            &mut o,
            "strata_archive_passes_failed_total",
            "Archive passes that failed (each is tried again with a backoff).",
            g(&self.archive_passes_failed),
        );
        counter(
            &mut o,
            "strata_archive_segments_total",
            "Sealed segments copied to the archive by this server.",
            g(&self.archive_segments),
        );
        counter(
            &mut o,
            "strata_archive_bytes_total",
            "Bytes copied to the archive by this server.",
            g(&self.archive_bytes),
        );
        let _ = writeln!(
            o,
            "# HELP strata_subscriptions_open Open server-sent-event subscriptions.\n# TYPE strata_subscriptions_open gauge\nstrata_subscriptions_open {}",
            self.subscriptions_open.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP strata_append_duration_seconds Time to acknowledge an append (durable).\n# TYPE strata_append_duration_seconds histogram"
        );
        let mut cumulative = 0u64;
        for (i, b) in LATENCY_BUCKETS_S.iter().enumerate() {
            cumulative += g(&self.latency_buckets[i]);
            let _ = writeln!(
                o,
                "strata_append_duration_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        // An observation counts in its bucket before it counts in the total, so a scrape in
        // between would see the buckets ahead of `+Inf`; the total is never below them.
        let count = g(&self.latency_count).max(cumulative);
        let _ = writeln!(
            o,
            "strata_append_duration_seconds_bucket{{le=\"+Inf\"}} {count}\nstrata_append_duration_seconds_sum {}\nstrata_append_duration_seconds_count {count}",
            g(&self.latency_sum_us) as f64 / 1e6
        );
        let _ = writeln!(
            o,
            "# HELP strata_http_responses_total HTTP responses by status class.\n# TYPE strata_http_responses_total counter"
        );
        for (i, a) in self.responses.iter().enumerate() {
            let _ = writeln!(
                o,
                "strata_http_responses_total{{class=\"{}xx\"}} {}",
                i + 1,
                g(a)
            );
        }
        o
    }
}

/// One gauge, in the text exposition.
pub(crate) fn render_gauge(o: &mut String, name: &str, help: &str, value: u64) {
    let _ = writeln!(
        o,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One gauge's value for a projection.
type Gauge = fn(&ProjectionInfo) -> f64;

/// The hosted projections' gauges: lag in events and in seconds, checkpoint, and a 1 for the
/// status each is in.
pub(crate) fn render_projections(o: &mut String, infos: &[ProjectionInfo]) {
    let gauges: [(&str, &str, Gauge); 3] = [
        (
            "strata_projection_lag_events",
            "Events between a projection's checkpoint and the store's head.",
            |i| i.lag_events as f64,
        ),
        (
            "strata_projection_lag_seconds",
            "Age of the oldest event a projection has not applied yet (0 when caught up).",
            |i| i.lag_seconds,
        ),
        (
            "strata_projection_checkpoint",
            "The last global position a projection has passed (-1: none yet).",
            |i| i.checkpoint.map_or(-1.0, |c| c.0 as f64),
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge");
        for i in infos {
            let _ = writeln!(
                o,
                "{name}{{projection=\"{}\"}} {}",
                label(&i.name),
                value(i)
            );
        }
    }
    let _ = writeln!(
        o,
        "# HELP strata_projection_status A projection's status (1 for the one it is in).\n# TYPE strata_projection_status gauge"
    );
    for i in infos {
        let status = serde_json::to_value(i.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "strata_projection_status{{projection=\"{}\",status=\"{status}\"}} 1",
            label(&i.name)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_are_cumulative() {
        let m = Metrics::default();
        m.append_ok(1, false, Duration::from_micros(50));
        m.append_ok(1, false, Duration::from_millis(2));
        m.append_failed(true, Duration::from_secs(5));
        let text = m.render();
        let bucket = |le: &str| {
            let prefix = format!("strata_append_duration_seconds_bucket{{le=\"{le}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .unwrap_or_else(|| panic!("no bucket {le} in {text}"))
                .parse::<u64>()
                .unwrap()
        };
        assert_eq!(bucket("0.0001"), 1);
        assert_eq!(bucket("0.001"), 1);
        assert_eq!(bucket("0.0025"), 2);
        assert_eq!(bucket("2.5"), 2);
        assert_eq!(bucket("+Inf"), 3);
        assert!(text.contains("strata_append_conflicts_total 1"));
    }

    #[test]
    fn an_idempotent_retry_counts_as_an_append_but_writes_no_events() {
        let m = Metrics::default();
        m.append_ok(3, false, Duration::from_micros(50));
        m.append_ok(3, true, Duration::from_micros(50));
        let text = m.render();
        assert!(text.contains("\nstrata_appends_total 2\n"), "{text}");
        assert!(
            text.contains("\nstrata_events_appended_total 3\n"),
            "{text}"
        );
        assert!(text.contains("\nstrata_append_replays_total 1\n"), "{text}");
    }
}
