//! Online backup over the socket: `backup_read` gives the backup file (`store/dump.rs`) piece
//! by piece, so the operator's `latchkey backup FILE` writes it where the operator can write,
//! not where the sandboxed daemon can. One backup runs at a time; one left without a call for
//! [`IDLE`] is abandoned, which ends its snapshot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use latchkey_client::{ApiError, BackupChunk};
use tokio::sync::Mutex;

use super::Service;
use crate::store::Backup;

/// How long a backup may wait for its next call before it is abandoned.
pub(crate) const IDLE: Duration = Duration::from_secs(60);

/// The backup in progress, if any.
#[derive(Default)]
pub(crate) struct Backups {
    /// Shared with the task that abandons an idle session.
    current: Arc<Mutex<Option<Session>>>,
}

/// One backup being read.
struct Session {
    /// What the caller passes back; random, below 2^53 for callers whose numbers are doubles.
    id: u64,
    /// The snapshot being read.
    backup: Backup,
    /// When it started, for the log.
    started: Instant,
    /// The last call, for abandoning it.
    used: Instant,
    /// Bytes given out so far.
    bytes: u64,
}

/// Room in a reply frame for everything around the data.
const CHUNK_ENVELOPE: usize = 256;

/// The next piece of the backup `session` (a new one when `None`).
pub(super) async fn backup_read(
    service: &Service,
    session: Option<u64>,
) -> Result<BackupChunk, ApiError> {
    let backups = &service.state.backups;
    let mut current = backups.current.lock().await;
    let running = match (session, current.as_mut()) {
        (None, Some(s)) => {
            return Err(busy(format!(
                "another backup is running (started {} s ago)",
                s.started.elapsed().as_secs()
            )))
        }
        (None, None) => {
            let backup = service.state.store.begin_backup().await?;
            let id = (u64::from_be_bytes(crate::random::bytes::<8>()) >> 11).max(1);
            tracing::info!(session = id, "backup started");
            backups.watch(id);
            current.insert(Session {
                id,
                backup,
                started: Instant::now(),
                used: Instant::now(),
                bytes: 0,
            })
        }
        (Some(id), Some(s)) if s.id == id => s,
        (Some(_), _) => return Err(no_session()),
    };
    // Base64 makes 4 bytes of every 3.
    let budget = service.state.max_frame_bytes.saturating_sub(CHUNK_ENVELOPE) / 4 * 3;
    let bytes = match running.backup.next_bytes(budget).await {
        Ok(bytes) => bytes.unwrap_or_default(),
        Err(e) => {
            let id = running.id;
            *current = None;
            tracing::warn!(session = id, error = %e, "backup failed");
            return Err(e.into());
        }
    };
    if bytes.len() > budget {
        let id = running.id;
        *current = None;
        tracing::warn!(
            session = id,
            line = bytes.len(),
            "backup record too large for a frame"
        );
        return Err(busy(format!(
            "a record of {} bytes does not fit in a reply frame; raise server.max_frame_bytes (and the client's) to at least {}",
            bytes.len(),
            bytes.len() / 3 * 4 + CHUNK_ENVELOPE + 4
        )));
    }
    running.used = Instant::now();
    running.bytes += bytes.len() as u64;
    let chunk = BackupChunk {
        session: running.id,
        data: base64::engine::general_purpose::STANDARD.encode(&bytes),
        last: running.backup.finished(),
    };
    if chunk.last {
        tracing::info!(
            session = running.id,
            bytes = running.bytes,
            secs = running.started.elapsed().as_secs_f64(),
            "backup finished"
        );
        *current = None;
    }
    Ok(chunk)
}

/// Abandons the backup `session`.
pub(super) async fn backup_cancel(service: &Service, session: u64) -> Result<(), ApiError> {
    let mut current = service.state.backups.current.lock().await;
    match current.as_ref() {
        Some(s) if s.id == session => {
            tracing::info!(session, "backup cancelled");
            *current = None;
            Ok(())
        }
        _ => Err(no_session()),
    }
}

impl Backups {
    /// Abandons session `id` once it has been idle for [`IDLE`].
    fn watch(&self, id: u64) {
        let current = Arc::downgrade(&self.current);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(IDLE / 4).await;
                let Some(current) = current.upgrade() else {
                    return;
                };
                let mut current = current.lock().await;
                match current.as_ref() {
                    Some(s) if s.id == id => {
                        if s.used.elapsed() >= IDLE {
                            tracing::warn!(
                                session = id,
                                "backup abandoned after 60 s without a call"
                            );
                            *current = None;
                            return;
                        }
                    }
                    _ => return,
                }
            }
        });
    }
}

fn busy(reason: String) -> ApiError {
    ApiError::InvalidInput {
        field: "backup".into(),
        reason,
    }
}

fn no_session() -> ApiError {
    ApiError::InvalidInput {
        field: "session".into(),
        reason: "no such backup: it finished, failed, was cancelled, or was abandoned after 60 s without a call".into(),
    }
}
