//! The event log, read by applications after a cursor (to revoke their own sessions).

use latchkey_client::{ApiError, Event};

use super::{page, Service};

/// Events after the cursor `after`, as many as fit one reply frame.
pub(super) async fn events(
    service: &Service,
    after: u64,
    limit: u32,
) -> Result<Vec<Event>, ApiError> {
    Ok(service.fit_frame(service.state.store.events_after(after, page(limit)).await?))
}
