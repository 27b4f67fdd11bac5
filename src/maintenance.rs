//! Background upkeep: sweeping tokens past their purge time through the purge index, trimming
//! the event log by count and age, and dropping idle rate-limiter keys. Runs until cancelled.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::clock::now;
use crate::limits::LiveLimits;
use crate::store::Store;

/// The event log.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Most events kept; the oldest go first.
    pub max_events: usize,
    /// Events older than this are dropped.
    pub max_age_days: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            max_events: 1_000_000,
            max_age_days: 90,
        }
    }
}

/// Tokens deleted per sweep step; the sweep repeats until a step finds fewer.
const SWEEP_BATCH: usize = 10_000;

/// What the sweeps work on; lives as long as the daemon.
pub(crate) struct Maintenance {
    /// Tokens and events to sweep.
    pub(crate) store: Store,
    /// The event log's retention; SIGHUP may replace it.
    pub(crate) events: Arc<ArcSwap<EventsConfig>>,
    /// The rate limiters whose idle keys are dropped.
    pub(crate) limits: LiveLimits,
    /// How often tokens and events are swept (`reset.sweep_interval_secs`).
    pub(crate) sweep_every: Duration,
}

/// Runs the sweeps until `stop` is cancelled.
pub(crate) async fn run(work: Arc<Maintenance>, stop: CancellationToken) {
    let mut sweep = tokio::time::interval(work.sweep_every);
    let mut cleanup = tokio::time::interval(Duration::from_secs(
        work.limits.load().config().cleanup_interval_secs,
    ));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = sweep.tick() => sweep_once(&work).await,
            _ = cleanup.tick() => {
                work.limits.load().cleanup();
                tokio::task::spawn_blocking(give_back_freed_memory);
            }
        }
    }
}

/// Returns the heap pages nothing uses to the system, in every malloc arena.
///
/// glibc gives memory back only from the top of each arena; after a burst of large calls
/// (issue 19, item 10: 200 connections x 64 logins with 64 KB passwords) the freed buffers in
/// the middle of the tokio workers' arenas stayed resident. `malloc_trim` releases them; once
/// per limiter cleanup (a minute by default) it costs a walk of the free lists, off the async
/// threads.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages to the system; glibc makes it safe to call
    // from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// One round of token and event sweeping. On a shared database one host at a time does it;
/// the store tells the others there was nothing for them.
async fn sweep_once(work: &Maintenance) {
    let now = now();
    let mut tokens = 0;
    loop {
        match work.store.sweep_tokens(now, SWEEP_BATCH).await {
            Ok(n) => {
                tokens += n;
                if n < SWEEP_BATCH {
                    break;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "token sweep failed");
                break;
            }
        }
    }
    let now_ms = now.saturating_mul(1000);
    let failures = work.limits.load().config().login_failures;
    let addresses = now_ms.saturating_sub(failures.clean_ip_secs.saturating_mul(1000));
    if let Err(e) = work
        .store
        .sweep_limits(
            now_ms,
            SWEEP_BATCH,
            failures.forget_before_ms(now_ms),
            addresses,
        )
        .await
    {
        tracing::error!(error = %e, "shared rate-limit sweep failed");
    }
    let events = work.events.load();
    let min_at = now.saturating_sub(events.max_age_days.saturating_mul(86400));
    let trimmed = work
        .store
        .trim_events(events.max_events, min_at)
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "event trim failed");
            0
        });
    if tokens > 0 || trimmed > 0 {
        tracing::debug!(tokens, events = trimmed, "swept");
    }
}
