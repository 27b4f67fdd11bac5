//! The durable outbox: messages queued in the same transaction as the change that caused
//! them, with a schedule index the sender scans for due messages. Payloads are sealed (see
//! `seal.rs`); the store hands out and takes plaintext.

use std::time::Duration;

use super::super::records::{Claimed, OutboxMessage, OutboxRecord, OutboxState};
use super::{abort, decode, keys, SledStore, StoreError, Tx, TxResult};

const OUTBOX: &str = "msgid_message";

impl SledStore {
    /// Numbers and seals a payload, ready to enqueue in a transaction.
    pub(super) fn prepare_mail(
        &self,
        payload: Option<&[u8]>,
        now: u64,
    ) -> Result<Option<OutboxRecord>, StoreError> {
        let Some(payload) = payload else {
            return Ok(None);
        };
        let id = self.next_id()?;
        Ok(Some(OutboxRecord {
            id,
            created_at: now,
            attempts: 0,
            next_attempt_ms: now.saturating_mul(1000),
            state: OutboxState::Queued,
            last_error: None,
            payload: self.inner.seal.seal(id, payload)?,
        }))
    }

    /// Queues a message on its own. Durable on return. Every message the daemon queues goes
    /// with the change that caused it, in its transaction; this is for tests of the outbox.
    #[cfg(test)]
    pub(in crate::store) async fn enqueue_mail(
        &self,
        payload: &[u8],
        now: u64,
    ) -> Result<u64, StoreError> {
        let Some(record) = self.prepare_mail(Some(payload), now)? else {
            return Err(StoreError::NotFound);
        };
        self.transact(|tx| tx.enqueue(&record))?;
        self.durable().await?;
        Ok(record.id)
    }

    /// See [`crate::store::Store::claim_mail`]. Walks the schedule from its start, past the
    /// messages leased now (at most the sender's concurrency).
    pub(in crate::store) fn claim_mail(
        &self,
        now_ms: u64,
        limit: usize,
        lease: Duration,
    ) -> Result<Claimed, StoreError> {
        let mut claimed = Claimed::default();
        let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        for kv in self.inner.trees.outbox_due.iter() {
            let (key, _) = kv?;
            let (Some(at), Some(id)) = (keys::read_u64(&key), keys::second_u64(&key)) else {
                continue;
            };
            if self.leased(id, now_ms)? {
                continue;
            }
            if at > now_ms || claimed.due.len() >= limit {
                claimed.next_due_ms = Some(at);
                break;
            }
            match self.mail(id) {
                Ok(Some(message)) => {
                    self.lease(id, now_ms, now_ms.saturating_add(lease_ms))?;
                    claimed.due.push(message);
                }
                Ok(None) => {}
                // One record that cannot be read (a damaged payload, a replaced key file) must
                // not hold back every other message: it can never be sent, so it is set
                // aside as dead, where an operator sees it.
                Err(e @ StoreError::Corrupt { .. }) => self.bury(id, &key, &e.to_string())?,
                Err(e) => return Err(e),
            }
        }
        Ok(claimed)
    }

    /// Whether message `id` is leased to a delivery at `now_ms`.
    fn leased(&self, id: u64, now_ms: u64) -> Result<bool, StoreError> {
        let leases = self.inner.leases.lock().map_err(|_| poisoned())?;
        Ok(leases.get(&id).is_some_and(|until| *until > now_ms))
    }

    /// Leases message `id` until `until_ms`, forgetting leases that ended before `now_ms`.
    fn lease(&self, id: u64, now_ms: u64, until_ms: u64) -> Result<(), StoreError> {
        let mut leases = self.inner.leases.lock().map_err(|_| poisoned())?;
        leases.retain(|_, until| *until > now_ms);
        leases.insert(id, until_ms);
        Ok(())
    }

    /// Ends the lease of message `id`, once its outcome is recorded.
    fn release(&self, id: u64) {
        if let Ok(mut leases) = self.inner.leases.lock() {
            leases.remove(&id);
        }
    }

    /// Marks a message that cannot be read as dead and takes it off the schedule.
    fn bury(&self, id: u64, due_key: &[u8], reason: &str) -> Result<(), StoreError> {
        tracing::error!(
            id,
            error = reason,
            "outbox message cannot be read; marked dead"
        );
        let note = format!("cannot be read: {reason}");
        self.transact(|tx| {
            tx.outbox_due.remove(due_key)?;
            let Some(bytes) = tx.outbox.get(keys::user(id))? else {
                return Ok(());
            };
            if let Ok(mut record) = decode::<OutboxRecord>(OUTBOX, &bytes) {
                record.state = OutboxState::Dead;
                record.last_error = Some(note.clone());
                Tx::put(&tx.outbox, OUTBOX, &keys::user(id), &record)?;
            } else {
                // Not even the record decodes: nothing about it can be shown or retried.
                tx.outbox.remove(&keys::user(id))?;
            }
            Ok(())
        })
    }

    /// One message with its payload opened.
    fn mail(&self, id: u64) -> Result<Option<OutboxMessage>, StoreError> {
        let Some(bytes) = self.inner.trees.outbox.get(keys::user(id))? else {
            return Ok(None);
        };
        let record: OutboxRecord = decode(OUTBOX, &bytes)?;
        let payload = self.inner.seal.open(id, &record.payload)?;
        Ok(Some(OutboxMessage { record, payload }))
    }

    /// Messages with ids above `after`, in id order, at most `limit`.
    pub(in crate::store) fn mail_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        let mut out = Vec::new();
        for kv in self
            .inner
            .trees
            .outbox
            .range(keys::user(after.saturating_add(1))..)
        {
            if out.len() >= limit {
                break;
            }
            let (_, bytes) = kv?;
            let record: OutboxRecord = decode(OUTBOX, &bytes)?;
            // A payload that does not open is listed with an empty one: admins still see the
            // message (dead, with its error) and can drop it.
            let payload = self
                .inner
                .seal
                .open(record.id, &record.payload)
                .unwrap_or_default();
            out.push(OutboxMessage { record, payload });
        }
        Ok(out)
    }

    /// Counts of queued and dead messages and the creation time of the oldest queued one.
    pub(super) fn outbox_stats(&self) -> Result<(usize, usize, Option<u64>), StoreError> {
        let (mut queued, mut dead, mut oldest) = (0, 0, None::<u64>);
        for kv in self.inner.trees.outbox.iter() {
            let record: OutboxRecord = decode(OUTBOX, &kv?.1)?;
            match record.state {
                OutboxState::Queued => {
                    queued += 1;
                    oldest = Some(oldest.map_or(record.created_at, |o| o.min(record.created_at)));
                }
                OutboxState::Dead => dead += 1,
            }
        }
        Ok((queued, dead, oldest))
    }

    /// Removes a delivered message. Durable on return, so a restart does not send it again.
    pub(in crate::store) async fn mail_sent(&self, id: u64) -> Result<(), StoreError> {
        self.transact(|tx| {
            let Some(record) = Tx::get::<OutboxRecord>(&tx.outbox, OUTBOX, &keys::user(id))? else {
                return Ok(());
            };
            tx.outbox.remove(&keys::user(id))?;
            tx.outbox_due
                .remove(&keys::due(record.next_attempt_ms, id))?;
            Ok(())
        })?;
        self.release(id);
        self.durable().await
    }

    /// Records a failed attempt: reschedules the message at `retry_at_ms`, or marks it dead
    /// when that is `None`. Durable on return.
    pub(in crate::store) async fn mail_failed(
        &self,
        id: u64,
        error: &str,
        retry_at_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        self.transact(|tx| {
            let Some(mut record) = Tx::get::<OutboxRecord>(&tx.outbox, OUTBOX, &keys::user(id))?
            else {
                return abort(StoreError::NotFound);
            };
            tx.outbox_due
                .remove(&keys::due(record.next_attempt_ms, id))?;
            record.attempts += 1;
            record.last_error = Some(error.to_owned());
            match retry_at_ms {
                Some(at) => {
                    record.next_attempt_ms = at;
                    record.state = OutboxState::Queued;
                    tx.outbox_due.insert(&keys::due(at, id), &[])?;
                }
                None => record.state = OutboxState::Dead,
            }
            Tx::put(&tx.outbox, OUTBOX, &keys::user(id), &record)
        })?;
        self.release(id);
        self.durable().await
    }

    /// Puts a message (dead or queued) back in the queue, due now, with its attempt count
    /// reset. Durable on return.
    pub(in crate::store) async fn mail_retry(
        &self,
        id: u64,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        self.transact(|tx| {
            let Some(mut record) = Tx::get::<OutboxRecord>(&tx.outbox, OUTBOX, &keys::user(id))?
            else {
                return abort(StoreError::NotFound);
            };
            tx.outbox_due
                .remove(&keys::due(record.next_attempt_ms, id))?;
            record.attempts = 0;
            record.state = OutboxState::Queued;
            record.next_attempt_ms = now_ms;
            tx.outbox_due.insert(&keys::due(now_ms, id), &[])?;
            Tx::put(&tx.outbox, OUTBOX, &keys::user(id), &record)
        })?;
        self.release(id);
        self.durable().await
    }

    /// Deletes a message without sending it. Durable on return.
    pub(in crate::store) async fn mail_drop(&self, id: u64) -> Result<(), StoreError> {
        self.transact(|tx| {
            let Some(record) = Tx::get::<OutboxRecord>(&tx.outbox, OUTBOX, &keys::user(id))? else {
                return abort(StoreError::NotFound);
            };
            tx.outbox.remove(&keys::user(id))?;
            tx.outbox_due
                .remove(&keys::due(record.next_attempt_ms, id))?;
            Ok(())
        })?;
        self.release(id);
        self.durable().await
    }
}

/// The error for a poisoned lease lock (a panic elsewhere; there are none by design).
fn poisoned() -> StoreError {
    StoreError::Durability("outbox lease lock poisoned".into())
}

impl Tx<'_> {
    /// Queues a prepared message inside a transaction.
    pub(super) fn enqueue(&self, record: &OutboxRecord) -> TxResult<()> {
        Tx::put(&self.outbox, OUTBOX, &keys::user(record.id), record)?;
        self.outbox_due
            .insert(&keys::due(record.next_attempt_ms, record.id), &[])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreadable_message_is_set_aside_and_does_not_block_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), 1 << 20, super::super::test_sealer(dir.path()))
            .expect("open");
        let first = store.enqueue_mail(b"first", 10).await.expect("enqueue");
        let second = store.enqueue_mail(b"second", 10).await.expect("enqueue");
        // Damage the first payload, as a bad disk or a replaced key file would.
        let key = keys::user(first);
        let bytes = store
            .inner
            .trees
            .outbox
            .get(key)
            .ok()
            .flatten()
            .expect("the first message is stored");
        let mut record: OutboxRecord = decode(OUTBOX, &bytes).expect("the record decodes");
        if let Some(b) = record.payload.last_mut() {
            *b ^= 1;
        }
        let encoded = super::super::encode(OUTBOX, &record).expect("the record encodes");
        assert!(store.inner.trees.outbox.insert(key, encoded).is_ok());

        let claimed = store
            .claim_mail(u64::MAX, 10, Duration::from_secs(60))
            .expect("due mail reads");
        let due = claimed.due;
        let ids: Vec<u64> = due.iter().map(|m| m.record.id).collect();
        assert_eq!(ids, vec![second]);
        assert_eq!(due[0].payload, b"second");
        let listed = store.mail_after(0, 10).expect("the outbox lists");
        let dead = listed.iter().find(|m| m.record.id == first);
        assert!(dead.is_some_and(|m| m.record.state == OutboxState::Dead
            && m.record
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("cannot be read"))));
    }
}
