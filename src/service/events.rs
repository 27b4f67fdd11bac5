//! The event log, read by applications after a cursor (to revoke their own sessions).

use latchkey_client::{ApiError, CredentialChange, CredentialChanges, Event, EventKind};

use super::{page, Service};

/// Events after the cursor `after`, as many as fit one reply frame.
pub(super) async fn events(
    service: &Service,
    after: u64,
    limit: u32,
) -> Result<Vec<Event>, ApiError> {
    Ok(service.fit_frame(service.state.store.events_after(after, page(limit)).await?))
}

/// How many events one `credential_changes` call looks at, matching or not: enough to skip
/// a burst of login failures quickly, little enough to keep the call short.
const CREDENTIAL_SCAN: usize = 2000;

/// Whether an event outdates the account's sessions.
fn ends_sessions(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::ResetCompleted
            | EventKind::PasswordChanged
            | EventKind::PasswordSet
            | EventKind::UserDisabled
            | EventKind::UserDeleted
    )
}

/// The credential changes after `after`: the events that end sessions, without client IPs,
/// looking at most [`CREDENTIAL_SCAN`] events; `next` is past every event looked at, so a
/// page of other events moves the cursor on even when it holds no change.
pub(super) async fn credential_changes(
    service: &Service,
    after: u64,
    limit: u32,
) -> Result<CredentialChanges, ApiError> {
    let want = page(limit);
    let scanned = service
        .state
        .store
        .events_after(after, CREDENTIAL_SCAN)
        .await?;
    let mut caught_up = scanned.len() < CREDENTIAL_SCAN;
    let mut next = after;
    let mut changes = Vec::new();
    for event in scanned {
        if changes.len() == want {
            caught_up = false;
            break;
        }
        next = event.seq;
        if let (true, Some(user_id)) = (ends_sessions(event.kind), event.user_id) {
            changes.push(CredentialChange {
                seq: event.seq,
                at: event.at,
                kind: event.kind,
                user_id,
            });
        }
    }
    let found = changes.len();
    let fitted = service.fit_frame(changes);
    if fitted.len() < found {
        // The frame cut the page short: resume right after the last change sent.
        next = fitted.last().map_or(after, |c| c.seq);
        caught_up = false;
    }
    Ok(CredentialChanges {
        changes: fitted,
        next,
        caught_up,
    })
}
