//! Metrics for operators, rendered in the Prometheus/OpenMetrics text format by the admin
//! `metrics` method (and `latchkey metrics`). Call counts and latencies are recorded as calls
//! happen; levels (queues, store size, keys held) are read by a collector ([`Levels`]) when
//! the metrics are rendered, so they cost nothing between scrapes.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::limits::LiveLimits;
use crate::passwords::Passwords;
use crate::store;

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

/// Labels of the limiter eviction counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimiterLabels {
    /// The limiter's setting name.
    limiter: &'static str,
}

/// Labels of the refused-connection counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    /// The limit the connection was over.
    reason: &'static str,
}

/// Every metric the daemon exports.
pub(crate) struct Metrics {
    /// Holds the metrics for rendering, and the [`Levels`] collector once registered.
    registry: Registry,
    /// Calls by method and outcome.
    calls: Family<CallLabels, Counter>,
    /// Call latency by method.
    latency: Family<MethodLabels, Histogram>,
    /// Time hash requests waited for a hashing slot.
    hash_wait: Histogram,
    /// Connections closed at accept, by the limit they were over.
    connections_refused: Family<ReasonLabels, Counter>,
    /// Request frames that were not run, by what was wrong with them.
    frames_refused: Family<ReasonLabels, Counter>,
    /// The store's levels for the render in progress, read by the collector.
    store_levels: StoreLevels,
}

/// The store's levels, read (asynchronously) before each render; `None` when they could not
/// be read, and the store gauges are left out.
pub(crate) type StoreLevels = Arc<Mutex<Option<store::Levels>>>;

fn latency_histogram() -> Histogram {
    // 100 µs to about 26 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 19))
}

impl Metrics {
    /// A fresh set of metrics, registered under the `latchkey_` prefix.
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("latchkey");
        let calls = Family::<CallLabels, Counter>::default();
        let latency = Family::<MethodLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let hash_wait = latency_histogram();
        registry.register("calls", "RPC calls by method and outcome", calls.clone());
        registry.register(
            "call_duration_seconds",
            "RPC call latency by method",
            latency.clone(),
        );
        registry.register(
            "hash_wait_seconds",
            "Time a password hash waited for a hashing slot",
            hash_wait.clone(),
        );
        let connections_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed at accept, by the limit they were over",
            connections_refused.clone(),
        );
        let frames_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "frames_refused",
            "Request frames not run: unknown_method and invalid_request got an error reply, \
             dropped (JSON with no readable request id) none, not_json closed the connection",
            frames_refused.clone(),
        );
        Metrics {
            registry,
            calls,
            latency,
            hash_wait,
            connections_refused,
            frames_refused,
            store_levels: StoreLevels::default(),
        }
    }

    /// The slot the store's levels go in before a render, for the [`Levels`] collector.
    pub(crate) fn store_levels(&self) -> StoreLevels {
        self.store_levels.clone()
    }

    /// Reads `levels` at every render from now on.
    pub(crate) fn collect(&mut self, levels: Levels) {
        self.registry.register_collector(Box::new(levels));
    }

    /// Records one call.
    pub(crate) fn call(&self, method: &'static str, outcome: &'static str, took: Duration) {
        self.calls
            .get_or_create(&CallLabels { method, outcome })
            .inc();
        self.latency
            .get_or_create(&MethodLabels { method })
            .observe(took.as_secs_f64());
    }

    /// Counts one connection refused for `reason`.
    pub(crate) fn connection_refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts a request frame that was not run (see `frames_refused`).
    pub(crate) fn frame_refused(&self, reason: &'static str) {
        self.frames_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// The histogram the password pool records its waits in.
    pub(crate) fn hash_wait_histogram(&self) -> Histogram {
        self.hash_wait.clone()
    }

    /// Everything as text, with the store's `levels` as read just before.
    pub(crate) fn render(&self, levels: Option<store::Levels>) -> String {
        // Two renders at once may each show the levels the other read; both are fresh.
        let mut slot = match self.store_levels.lock() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = levels;
        drop(slot);
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot render metrics");
        }
        out
    }
}

/// The levels read at each scrape, from the parts that hold them.
pub(crate) struct Levels {
    /// Accounts, tokens, the outbox and the bytes on disk, as read before this render.
    pub(crate) store: StoreLevels,
    /// The hashing queue.
    pub(crate) passwords: Passwords,
    /// Keys held by the rate limiters in force.
    pub(crate) limits: LiveLimits,
    /// When the daemon started, for uptime.
    pub(crate) started: Instant,
}

impl fmt::Debug for Levels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Levels")
    }
}

impl Collector for Levels {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let now = crate::clock::now();
        let mut gauge = |name: &str, help: &str, value: i64| {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
        };
        gauge(
            "hash_queue_depth",
            "Password hashes waiting for a slot",
            count(self.passwords.queue_depth()),
        )?;
        gauge(
            "limiter_keys",
            "Keys held by the rate limiters",
            count(self.limits.load().keys_held()),
        )?;
        let levels = match self.store.lock() {
            Ok(levels) => *levels,
            Err(poisoned) => *poisoned.into_inner(),
        };
        match levels {
            Some(levels) => {
                let age = levels
                    .oldest_queued_at
                    .map_or(0, |at| count(now.saturating_sub(at)));
                gauge(
                    "outbox_queued",
                    "Mail messages waiting for delivery",
                    count(levels.queued),
                )?;
                gauge(
                    "outbox_dead",
                    "Mail messages that gave up (dead letters)",
                    count(levels.dead),
                )?;
                gauge(
                    "outbox_oldest_age_seconds",
                    "Age of the oldest queued mail message",
                    age,
                )?;
                gauge(
                    "store_bytes",
                    "Bytes the database takes on disk",
                    count(levels.bytes),
                )?;
                gauge("users", "Accounts", count(levels.users))?;
                gauge(
                    "reset_tokens",
                    "Reset token records, live or remembered",
                    count(levels.tokens),
                )?;
            }
            None => tracing::warn!("store levels unavailable; their gauges are left out"),
        }
        {
            // A counter per limiter since its settings were last loaded.
            let mut family = encoder.encode_descriptor(
                "limiter_evicted_keys",
                "Keys a full rate limiter evicted (limits.max_keys reached)",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (limiter, evicted) in self.limits.load().evicted() {
                let counter = prometheus_client::metrics::counter::ConstCounter::new(evicted);
                counter.encode(family.encode_family(&LimiterLabels { limiter })?)?;
            }
        }
        let uptime = ConstGauge::new(self.started.elapsed().as_secs_f64());
        uptime.encode(encoder.encode_descriptor(
            "uptime_seconds",
            "Seconds since the daemon started",
            None,
            uptime.metric_type(),
        )?)
    }
}

/// A count as a gauge value.
fn count(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}
