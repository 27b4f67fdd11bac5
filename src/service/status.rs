//! Health and metrics.

use latchkey_client::{ApiError, Health};

use super::{Service, State};

/// The daemon's version, uptime and the caller's role.
pub(super) async fn health(service: &Service) -> Result<Health, ApiError> {
    Ok(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_secs: service.state.started.elapsed().as_secs(),
        caller_role: service.peer.role,
        store: service.state.store_probe.get().name().into(),
        protocol: latchkey_client::PROTOCOL_VERSION,
        methods: latchkey_client::METHODS
            .iter()
            .map(|m| (*m).to_owned())
            .collect(),
    })
}

/// The metrics as Prometheus text, the store's levels read now. A store that cannot be read
/// leaves its gauges out rather than failing the scrape.
pub(super) async fn metrics(service: &Service) -> Result<String, ApiError> {
    Ok(render_metrics(&service.state).await)
}

/// The metrics text, for the `metrics` method and the HTTP listener (`scrape`).
pub(crate) async fn render_metrics(state: &State) -> String {
    let levels = match state.store.levels().await {
        Ok(levels) => Some(levels),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the store's levels for metrics");
            None
        }
    };
    state.metrics.render(levels)
}
