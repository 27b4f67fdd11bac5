//! The outbox sender: one task that watches the outbox's schedule and starts deliveries, each
//! in its own task, at most `mail.concurrency` at once.
//!
//! The loop sleeps until the earliest queued message is due, until the service queues one
//! (`wake`), until a delivery finishes (freeing a slot), or until `stop`. It never waits on a
//! delivery to start another: a message stuck on a slow server holds its own slot and nothing
//! else, and each delivery is cut off after a bounded time.
//!
//! # Exactly once
//!
//! A message leaves the outbox only after the transport accepted it (`mail_sent`, durable on
//! return), and a message is never handed to two deliveries at once (the in-flight set). So
//! an outage, a restart or a `kill -9` delays mail but neither loses nor repeats it, except in
//! one window no sender can close: a crash after the SMTP server accepted a message and before
//! `mail_sent` reached the disk. That message is sent again after the restart, with the same
//! `Message-ID`, so receivers that deduplicate can tell. A delivery cut off by the timeout
//! while the server was still answering the message's end has the same window: the server
//! may have taken it, and it is retried.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::compose::Composer;
use super::config::MailConfig;
use super::transport::{Failure, Transport, TransportSetup};
use super::{MailJob, SetupError};
use crate::clock::now_ms;
use crate::store::{OutboxMessage, Store, StoreError};

/// After the store fails to list due mail, how long until the sender looks again.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// The longest the sender sleeps without looking at the schedule, so that a step of the
/// wall clock (due times are wall-clock times) delays mail by at most this much, and so that
/// on a shared database mail queued by another host that stopped is found soon.
const MAX_SLEEP: Duration = Duration::from_secs(10);

/// How much longer than the longest delivery a claimed message stays leased.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// A delivery is cut off after this many `mail.smtp.timeout_secs`. lettre's async transport
/// bounds only connecting; this bounds the rest (TLS, EHLO, AUTH, MAIL, RCPT, DATA), so a
/// server that stops answering holds a delivery slot for a while, not for ever.
const SEND_TIMEOUTS: u32 = 4;

/// Longest `last_error` kept in the outbox, in characters.
const MAX_REASON_CHARS: usize = 500;

/// The sender, set up and checked, before it runs.
pub struct Mailer {
    /// Builds messages; swapped by [`Templates::reload`] on SIGHUP.
    composer: Arc<ArcSwap<Composer>>,
    /// The transport, started when the sender runs.
    transport: TransportSetup,
    /// Attempts, backoff and jitter.
    policy: RetryPolicy,
    /// Deliveries at once.
    concurrency: usize,
    /// A bound on one delivery.
    send_timeout: Duration,
    /// How long deliveries in progress may take to finish on shutdown.
    shutdown_grace: Duration,
}

/// Re-reads what messages are made of: templates, subjects, the sender address, the product
/// name and the default locale. Messages already queued are rendered at send time, so they
/// get the new templates too.
#[derive(Clone)]
pub struct Templates {
    /// The sender's composer.
    composer: Arc<ArcSwap<Composer>>,
}

impl Templates {
    /// Builds a composer from `config` and puts it in force; on error the old one stays.
    pub fn reload(&self, config: &MailConfig) -> Result<(), SetupError> {
        let composer = Composer::new(config)?;
        self.composer.store(Arc::new(composer));
        Ok(())
    }
}

/// When to try again.
#[derive(Clone, Copy, Debug)]
struct RetryPolicy {
    /// `mail.max_attempts`.
    max_attempts: u32,
    /// `mail.backoff_base_secs`, in milliseconds.
    base_ms: u64,
    /// `mail.backoff_max_secs`, in milliseconds.
    max_ms: u64,
    /// `mail.jitter`.
    jitter: f64,
}

impl RetryPolicy {
    /// When a message that just failed its `attempt`-th attempt (counting from 1) is tried
    /// again, or `None` when that was the last attempt allowed. `unit` is a random number in
    /// `[0, 1)`.
    fn retry_at(&self, attempt: u32, now_ms: u64, unit: f64) -> Option<u64> {
        if attempt >= self.max_attempts {
            return None;
        }
        let doublings = attempt.saturating_sub(1).min(63);
        let wait = self
            .base_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_ms);
        // The product is at most `wait`, so the cast back cannot overflow.
        let wait = (wait as f64 * (1.0 - self.jitter * unit)) as u64;
        Some(now_ms.saturating_add(wait.max(1)))
    }
}

/// What every delivery task needs.
struct Shared {
    /// The outbox.
    store: Store,
    /// Builds messages.
    composer: Arc<ArcSwap<Composer>>,
    /// Delivers them.
    transport: Transport,
    /// When to retry.
    policy: RetryPolicy,
    /// A bound on one delivery.
    send_timeout: Duration,
}

impl Mailer {
    /// Checks and loads everything the sender needs: the sender addresses, the templates, the
    /// transport (the mail directory is created; the SMTP password and CA file are read).
    /// `data_dir` is the store's data directory, home of the default mail directory.
    pub fn new(config: &MailConfig, data_dir: &Path) -> Result<Mailer, SetupError> {
        config.validate().map_err(|reason| SetupError::Config {
            key: "mail",
            reason,
        })?;
        Ok(Mailer {
            composer: Arc::new(ArcSwap::from_pointee(Composer::new(config)?)),
            transport: TransportSetup::new(config, data_dir)?,
            policy: RetryPolicy {
                max_attempts: config.max_attempts,
                base_ms: config.backoff_base_secs.saturating_mul(1000),
                max_ms: config.backoff_max_secs.saturating_mul(1000),
                jitter: config.jitter,
            },
            concurrency: config.concurrency,
            send_timeout: Duration::from_secs(config.smtp.timeout_secs) * SEND_TIMEOUTS,
            shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
        })
    }

    /// A handle that re-reads the templates, subjects and sender address while the sender
    /// runs.
    pub fn templates(&self) -> Templates {
        Templates {
            composer: self.composer.clone(),
        }
    }

    /// Delivers the outbox until `stop` is cancelled; `wake` is notified when mail is queued
    /// or retried. On stop, deliveries in progress get `mail.shutdown_grace_secs` to finish;
    /// any still running then are abandoned and stay queued.
    pub async fn run(self, store: Store, wake: Arc<Notify>, stop: CancellationToken) {
        let shared = Arc::new(Shared {
            store,
            composer: self.composer,
            transport: self.transport.start(),
            policy: self.policy,
            send_timeout: self.send_timeout,
        });
        let mut tasks = JoinSet::new();
        // Message ids being delivered, and the same by task, so a task that fails to report
        // (it cannot, but a panic would) still frees its message.
        let mut in_flight: HashSet<u64> = HashSet::new();
        let mut by_task: HashMap<tokio::task::Id, u64> = HashMap::new();
        loop {
            let next_due = match start_due(
                &shared,
                self.concurrency,
                &mut tasks,
                &mut in_flight,
                &mut by_task,
            )
            .await
            {
                Ok(next) => next.map(|at| Duration::from_millis(at.saturating_sub(now_ms()))),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the outbox");
                    Some(STORE_RETRY)
                }
            };
            let sleep = tokio::time::sleep(next_due.unwrap_or(MAX_SLEEP).min(MAX_SLEEP));
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = wake.notified() => {}
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    finished(done, &mut in_flight, &mut by_task);
                }
                _ = sleep => {}
            }
        }
        if !tasks.is_empty() {
            let draining = async {
                while let Some(done) = tasks.join_next_with_id().await {
                    finished(done, &mut in_flight, &mut by_task);
                }
            };
            if tokio::time::timeout(self.shutdown_grace, draining)
                .await
                .is_err()
            {
                tracing::warn!(
                    ids = ?in_flight,
                    "stopping with deliveries unfinished; they stay queued and are sent after \
                     the next start"
                );
                tasks.shutdown().await;
            }
        }
        let _ = tokio::time::timeout(self.shutdown_grace, shared.transport.shutdown()).await;
    }
}

/// Claims due messages for the free slots and starts their deliveries; returns when the
/// next message not claimed here is due (Unix milliseconds), if one is queued.
async fn start_due(
    shared: &Arc<Shared>,
    concurrency: usize,
    tasks: &mut JoinSet<()>,
    in_flight: &mut HashSet<u64>,
    by_task: &mut HashMap<tokio::task::Id, u64>,
) -> Result<Option<u64>, StoreError> {
    let free = concurrency.saturating_sub(tasks.len());
    if free == 0 {
        // A finishing delivery wakes the loop.
        return Ok(None);
    }
    // Leased until the delivery has surely ended: a lease that ran out mid-delivery would let
    // another host send the message too.
    let lease = shared.send_timeout + LEASE_MARGIN;
    let claimed = shared.store.claim_mail(now_ms(), free, lease).await?;
    for message in claimed.due {
        let id = message.record.id;
        if !in_flight.insert(id) {
            continue;
        }
        let handle = tasks.spawn(deliver(shared.clone(), message));
        by_task.insert(handle.id(), id);
    }
    Ok(claimed.next_due_ms)
}

/// Frees the slot of a finished delivery.
fn finished(
    done: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
    in_flight: &mut HashSet<u64>,
    by_task: &mut HashMap<tokio::task::Id, u64>,
) {
    let task = match done {
        Ok((task, ())) => task,
        Err(e) => {
            tracing::error!(error = %e, "a mail delivery task failed");
            e.id()
        }
    };
    if let Some(id) = by_task.remove(&task) {
        in_flight.remove(&id);
    }
}

/// One attempt at one message, and its outcome recorded in the outbox.
async fn deliver(shared: Arc<Shared>, message: OutboxMessage) {
    let record = &message.record;
    let id = record.id;
    let attempt = record.attempts.saturating_add(1);
    let job = MailJob::from_bytes(&message.payload);
    let kind = job.as_ref().map_or("unreadable", |j| j.kind.name());
    let outcome = match job {
        Err(e) => Err(Failure::permanent(format!(
            "the queued payload cannot be read: {e}"
        ))),
        Ok(job) => {
            let now = now_ms() / 1000;
            match shared
                .composer
                .load()
                .compose(&job, id, record.created_at, now)
            {
                Err(e) => Err(Failure::permanent(e.to_string())),
                Ok(mail) => {
                    let file_name = format!("{}-{id}.eml", record.created_at);
                    let send = shared.transport.send(mail, &file_name);
                    match tokio::time::timeout(shared.send_timeout, send).await {
                        Ok(result) => result,
                        Err(_) => Err(Failure::transient(format!(
                            "no answer within {} s",
                            shared.send_timeout.as_secs()
                        ))),
                    }
                }
            }
        }
    };
    match outcome {
        Ok(reply) => {
            if let Err(e) = shared.store.mail_sent(id).await {
                tracing::error!(
                    id, kind, attempt, error = %e,
                    "mail delivered but not marked sent; it will be sent again"
                );
            } else {
                tracing::info!(id, kind, attempt, reply = %reply, "mail sent");
            }
        }
        Err(failure) => {
            let reason: String = failure.reason.chars().take(MAX_REASON_CHARS).collect();
            let now = now_ms();
            let retry_at = if failure.permanent {
                None
            } else {
                shared.policy.retry_at(attempt, now, random_unit())
            };
            match shared.store.mail_failed(id, &reason, retry_at).await {
                Err(StoreError::NotFound) => {
                    tracing::info!(id, kind, "mail dropped while it was being sent");
                }
                Err(e) => {
                    tracing::error!(id, kind, attempt, error = %e, "cannot record a failed delivery");
                }
                Ok(()) => match retry_at {
                    Some(at) => tracing::warn!(
                        id, kind, attempt,
                        retry_in_secs = at.saturating_sub(now).div_ceil(1000),
                        error = %reason,
                        "mail not delivered; will retry"
                    ),
                    None if failure.permanent => tracing::warn!(
                        id, kind, attempt,
                        error = %reason,
                        "mail rejected permanently; giving up (dead)"
                    ),
                    None => tracing::warn!(
                        id, kind, attempt,
                        error = %reason,
                        "mail not delivered in max_attempts tries; giving up (dead)"
                    ),
                },
            }
        }
    }
}

/// A random number in `[0, 1)` for jitter.
fn random_unit() -> f64 {
    let bits = u64::from_le_bytes(crate::random::bytes::<8>()) >> 11;
    bits as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_then_gives_up() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base_ms: 30_000,
            max_ms: 100_000,
            jitter: 0.0,
        };
        let waits: Vec<Option<u64>> = (1..=5).map(|a| policy.retry_at(a, 1000, 0.5)).collect();
        assert_eq!(
            waits,
            [
                Some(31_000),
                Some(61_000),
                Some(101_000),
                Some(101_000),
                None
            ]
        );
    }

    #[test]
    fn jitter_only_shortens_the_wait_by_at_most_its_share() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_ms: 10_000,
            max_ms: 10_000,
            jitter: 0.2,
        };
        assert_eq!(policy.retry_at(1, 0, 0.0), Some(10_000));
        assert_eq!(policy.retry_at(1, 0, 0.5), Some(9_000));
        assert!(policy.retry_at(1, 0, 0.999_999).is_some_and(|w| w >= 8_000));
        let unit = random_unit();
        assert!((0.0..1.0).contains(&unit));
    }
}
