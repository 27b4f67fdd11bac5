//! Group commit: one thread calls `db.flush()` in a loop while writers wait for their turn.
//!
//! sled 0.34.7's `flush_async` can hang for ever when several tasks call it at once (sled issue
//! 1308), and a flush per write would serialise every writer behind one fsync. Instead each
//! writer takes a sequence number after its write and waits until a flush that started after
//! that number finishes; one flush makes a whole batch of writes durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use tokio::sync::watch;

use super::StoreError;

/// What the flush thread has done so far.
#[derive(Clone, Copy, Debug, Default)]
struct Progress {
    /// Every write numbered up to this is durable.
    flushed: u64,
    /// The highest number whose flush failed; writes up to it get an error.
    failed: u64,
}

/// The writers' side of the commit thread.
pub(super) struct GroupCommit {
    /// The number given to the latest writer.
    requested: Arc<AtomicU64>,
    /// Wakes the thread; capacity one, because one pending wake-up covers every writer.
    wake: SyncSender<()>,
    /// The thread's progress.
    progress: watch::Receiver<Progress>,
}

impl GroupCommit {
    /// Starts the commit thread for `db`. It ends when the `GroupCommit` is dropped.
    pub(super) fn start(db: sled::Db) -> std::io::Result<GroupCommit> {
        let requested = Arc::new(AtomicU64::new(0));
        let (wake, wakes) = sync_channel(1);
        let (progress_tx, progress) = watch::channel(Progress::default());
        let seen = requested.clone();
        std::thread::Builder::new()
            .name("latchkey-commit".into())
            .spawn(move || run(db, seen, wakes, progress_tx))?;
        Ok(GroupCommit {
            requested,
            wake,
            progress,
        })
    }

    /// Asks for a flush that covers every write made before the call, without waiting for
    /// it; returns the ticket that flush will reach.
    pub(super) fn request(&self) -> Result<u64, StoreError> {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        match self.wake.try_send(()) {
            // Full means a wake-up is pending already; the flush it triggers reads `requested`
            // after our increment, so it covers this ticket.
            Ok(()) | Err(TrySendError::Full(())) => Ok(ticket),
            Err(TrySendError::Disconnected(())) => {
                Err(StoreError::Durability("commit thread stopped".into()))
            }
        }
    }

    /// Waits until every write made before the call is durable.
    pub(super) async fn wait(&self) -> Result<(), StoreError> {
        let ticket = self.request()?;
        let mut progress = self.progress.clone();
        let seen = progress
            .wait_for(|p| p.flushed >= ticket || p.failed >= ticket)
            .await
            .map_err(|_| StoreError::Durability("commit thread stopped".into()))?;
        if seen.flushed >= ticket {
            Ok(())
        } else {
            Err(StoreError::Durability("flush failed".into()))
        }
    }
}

/// The commit thread's loop.
fn run(
    db: sled::Db,
    requested: Arc<AtomicU64>,
    wakes: Receiver<()>,
    progress: watch::Sender<Progress>,
) {
    while wakes.recv().is_ok() {
        // Read the target before flushing: everything numbered up to it was written before
        // this point, so this flush covers it.
        let target = requested.load(Ordering::SeqCst);
        match db.flush() {
            Ok(_) => progress.send_modify(|p| p.flushed = p.flushed.max(target)),
            Err(e) => {
                tracing::error!(error = %e, "store flush failed; writes are not durable");
                progress.send_modify(|p| p.failed = p.failed.max(target));
            }
        }
    }
}
