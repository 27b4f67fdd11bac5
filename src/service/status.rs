//! Health and metrics.

use latchkey_client::{ApiError, Health};

use super::Service;

/// The daemon's version, uptime and the caller's role.
pub(super) async fn health(service: &Service) -> Result<Health, ApiError> {
    Ok(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_secs: service.state.started.elapsed().as_secs(),
        caller_role: service.peer.role,
    })
}

/// The metrics as Prometheus text, levels read now, off the async threads.
pub(super) async fn metrics(service: &Service) -> Result<String, ApiError> {
    let state = service.state.clone();
    // Reading the outbox levels walks a tree; keep it off the async threads.
    tokio::task::spawn_blocking(move || state.metrics.render())
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "metrics task failed");
            ApiError::Unavailable
        })
}
