//! The outbox seen from the service: the "your password was changed" notice queued with
//! every password change, and the admin's view of the queue (list, retry, drop). The reset
//! mail is queued by `reset`; mail is sent by `crate::mail`'s sender.

use latchkey_client::{ApiError, MessageState, OutboxMessage};

use super::{page, Service};
use crate::clock::now_ms;
use crate::mail::{MailJob, MailKind};
use crate::store::{self, UserRecord};

/// Queued and dead messages after `after` (never the bodies).
pub(super) async fn outbox_list(
    service: &Service,
    after: u64,
    limit: u32,
) -> Result<Vec<OutboxMessage>, ApiError> {
    let messages = service.state.store.mail_after(after, page(limit)).await?;
    Ok(service.fit_frame(messages.iter().map(outbox_view).collect()))
}

/// Puts a message back in the queue, due now, and wakes the sender.
pub(super) async fn outbox_retry(service: &Service, id: u64) -> Result<(), ApiError> {
    service.state.store.mail_retry(id, now_ms()).await?;
    service.state.mail_wake.notify_one();
    Ok(())
}

/// Deletes a message without sending it.
pub(super) async fn outbox_drop(service: &Service, id: u64) -> Result<(), ApiError> {
    service.state.store.mail_drop(id).await?;
    Ok(())
}

impl Service {
    /// The "your password was changed" notice for `user`, as outbox payload.
    pub(super) fn changed_notice(
        &self,
        user: &UserRecord,
        client_ip: Option<&str>,
        now: u64,
    ) -> Vec<u8> {
        MailJob {
            kind: MailKind::PasswordChanged,
            to: user.email.clone(),
            locale: user.locale.clone(),
            link: None,
            expires_at: None,
            client_ip: client_ip.map(str::to_owned),
            at: now,
        }
        .to_bytes()
    }
}

/// An outbox message as admins see it: the body stays sealed.
fn outbox_view(m: &store::OutboxMessage) -> OutboxMessage {
    let job = MailJob::from_bytes(&m.payload).ok();
    let (kind, to) = match &job {
        Some(job) => (job.kind.name(), job.to.clone()),
        None => ("unreadable", String::new()),
    };
    let r = &m.record;
    OutboxMessage {
        id: r.id,
        kind: kind.into(),
        to,
        state: match r.state {
            store::OutboxState::Queued => MessageState::Queued,
            store::OutboxState::Dead => MessageState::Dead,
        },
        attempts: r.attempts,
        created_at: r.created_at,
        next_attempt_at: (r.state == store::OutboxState::Queued)
            .then(|| r.next_attempt_ms.div_ceil(1000)),
        last_error: r.last_error.clone(),
    }
}
