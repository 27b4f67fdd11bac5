//! Metrics for operators, rendered in the Prometheus/OpenMetrics text format by the admin
//! `metrics` method (and `latchkey metrics`). Call counts and latencies are recorded as calls
//! happen; levels (queues, store size, keys held) are read when the metrics are rendered, so
//! they cost nothing between scrapes.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::service::State;

/// Labels of the call counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    /// The RPC method.
    method: &'static str,
    /// `ok` or the `ApiError` variant.
    outcome: &'static str,
}

/// Labels of the latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    /// The RPC method.
    method: &'static str,
}

/// A float gauge.
type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric the daemon exports.
pub struct Metrics {
    /// Holds the metrics for rendering.
    registry: Registry,
    /// Calls by method and outcome.
    calls: Family<CallLabels, Counter>,
    /// Call latency by method.
    latency: Family<MethodLabels, Histogram>,
    /// Time hash requests waited for a hashing slot.
    hash_wait: Histogram,
    /// Hash requests waiting for a slot now.
    hash_queue: Gauge,
    /// Messages waiting for delivery.
    outbox_queued: Gauge,
    /// Messages that gave up.
    outbox_dead: Gauge,
    /// Age of the oldest queued message.
    outbox_oldest_age: Gauge,
    /// Keys held by the rate limiters.
    limiter_keys: Gauge,
    /// Bytes the database takes on disk.
    store_bytes: Gauge,
    /// Accounts.
    users: Gauge,
    /// Token records (live, used or expired but remembered).
    tokens: Gauge,
    /// Seconds since start.
    uptime: FloatGauge,
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 26 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, registered under the `latchkey_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("latchkey");
        let calls = Family::<CallLabels, Counter>::default();
        let latency = Family::<MethodLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let m = Metrics {
            calls,
            latency,
            hash_wait: latency_histogram(),
            hash_queue: Gauge::default(),
            outbox_queued: Gauge::default(),
            outbox_dead: Gauge::default(),
            outbox_oldest_age: Gauge::default(),
            limiter_keys: Gauge::default(),
            store_bytes: Gauge::default(),
            users: Gauge::default(),
            tokens: Gauge::default(),
            uptime: FloatGauge::default(),
            registry: Registry::default(),
        };
        registry.register("calls", "RPC calls by method and outcome", m.calls.clone());
        registry.register(
            "call_duration_seconds",
            "RPC call latency by method",
            m.latency.clone(),
        );
        registry.register(
            "hash_wait_seconds",
            "Time a password hash waited for a hashing slot",
            m.hash_wait.clone(),
        );
        registry.register(
            "hash_queue_depth",
            "Password hashes waiting for a slot",
            m.hash_queue.clone(),
        );
        registry.register(
            "outbox_queued",
            "Mail messages waiting for delivery",
            m.outbox_queued.clone(),
        );
        registry.register(
            "outbox_dead",
            "Mail messages that gave up (dead letters)",
            m.outbox_dead.clone(),
        );
        registry.register(
            "outbox_oldest_age_seconds",
            "Age of the oldest queued mail message",
            m.outbox_oldest_age.clone(),
        );
        registry.register(
            "limiter_keys",
            "Keys held by the rate limiters",
            m.limiter_keys.clone(),
        );
        registry.register(
            "store_bytes",
            "Bytes the database takes on disk",
            m.store_bytes.clone(),
        );
        registry.register("users", "Accounts", m.users.clone());
        registry.register(
            "reset_tokens",
            "Reset token records, live or remembered",
            m.tokens.clone(),
        );
        registry.register(
            "uptime_seconds",
            "Seconds since the daemon started",
            m.uptime.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Records one call.
    pub fn call(&self, method: &'static str, outcome: &'static str, took: Duration) {
        self.calls
            .get_or_create(&CallLabels { method, outcome })
            .inc();
        self.latency
            .get_or_create(&MethodLabels { method })
            .observe(took.as_secs_f64());
    }

    /// The histogram the password pool records its waits in.
    pub fn hash_wait_histogram(&self) -> Histogram {
        self.hash_wait.clone()
    }

    /// Reads the levels from `state` and renders everything as text.
    pub fn render(&self, state: &State) -> String {
        let now = crate::service::now();
        self.hash_queue.set(count(state.passwords.queue_depth()));
        match state.store.outbox_stats() {
            Ok((queued, dead, oldest)) => {
                self.outbox_queued.set(count(queued));
                self.outbox_dead.set(count(dead));
                self.outbox_oldest_age
                    .set(oldest.map_or(0, |at| count(now.saturating_sub(at))));
            }
            Err(e) => tracing::warn!(error = %e, "cannot read outbox levels for metrics"),
        }
        self.limiter_keys.set(count(state.limits().keys_held()));
        self.store_bytes
            .set(state.store.size_on_disk().map_or(-1, count));
        self.users.set(count(state.store.user_count()));
        self.tokens.set(count(state.store.token_count()));
        self.uptime.set(state.started.elapsed().as_secs_f64());
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot render metrics");
        }
        out
    }
}

/// A count as a gauge value.
fn count(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}
