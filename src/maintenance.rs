//! Background upkeep: sweeping tokens past their purge time through the purge index, trimming
//! the event log by count and age, and dropping idle rate-limiter keys. Runs until cancelled.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::service::{now, State};

/// Tokens deleted per sweep step; the sweep repeats until a step finds fewer.
const SWEEP_BATCH: usize = 10_000;

/// Runs the sweeps until `stop` is cancelled.
pub async fn run(state: Arc<State>, stop: CancellationToken) {
    let mut sweep =
        tokio::time::interval(Duration::from_secs(state.config.reset.sweep_interval_secs));
    let mut cleanup = tokio::time::interval(Duration::from_secs(
        state.limits().config().cleanup_interval_secs,
    ));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = sweep.tick() => {
                let state = state.clone();
                // sled calls block; keep them off the async threads.
                let swept = tokio::task::spawn_blocking(move || sweep_once(&state)).await;
                if let Err(e) = swept {
                    tracing::error!(error = %e, "sweep task failed");
                }
            }
            _ = cleanup.tick() => state.limits().cleanup(),
        }
    }
}

/// One round of token and event sweeping.
fn sweep_once(state: &State) {
    let now = now();
    let mut tokens = 0;
    loop {
        match state.store.sweep_tokens(now, SWEEP_BATCH) {
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
    let live = state.live.load();
    let events = &live.events;
    let min_at = now.saturating_sub(events.max_age_days.saturating_mul(86400));
    let trimmed = state
        .store
        .trim_events(events.max_events, min_at)
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "event trim failed");
            0
        });
    if tokens > 0 || trimmed > 0 {
        tracing::debug!(tokens, events = trimmed, "swept");
    }
}
