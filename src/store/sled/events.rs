//! The append-only event log: numbered entries a host application reads after a cursor (to
//! revoke its own sessions, for example), trimmed by count and age.

use std::collections::BTreeSet;
use std::ops::Deref;
use std::sync::Mutex;

use latchkey_client::Event;

use super::super::records::{EventRecord, NewEvent};
use super::{decode, keys, SledStore, StoreError, Tx, TxResult};

const EVENTS: &str = "seq_event";

/// Events removed per transaction when trimming.
const TRIM_BATCH: usize = 1000;

/// A numbered event whose transaction has not finished. While it lives, readers stop before
/// its number: a transaction that took a number earlier may commit after one that took a
/// later number, and a reader that had moved past the gap would never see it.
pub(super) struct Pending<'a> {
    /// The event.
    event: EventRecord,
    /// The set its number is held in until it is dropped.
    held: &'a Mutex<BTreeSet<u64>>,
}

impl Deref for Pending<'_> {
    type Target = EventRecord;
    fn deref(&self) -> &EventRecord {
        &self.event
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(&self.event.seq);
        }
    }
}

impl SledStore {
    /// Numbers and stamps an event, ready to append in a transaction.
    pub(super) fn new_event(&self, event: NewEvent) -> Result<Pending<'_>, StoreError> {
        let held = &self.inner.pending_events;
        // Number and hold under one lock, so no reader sees the number before it is held.
        let mut set = held
            .lock()
            .map_err(|_| StoreError::Durability("event numbering lock poisoned".into()))?;
        let seq = self.next_id()?;
        set.insert(seq);
        drop(set);
        Ok(Pending {
            event: Event {
                seq,
                at: crate::clock::now(),
                kind: event.kind,
                user_id: event.user_id,
                client_ip: event.client_ip,
            },
            held,
        })
    }

    /// See [`crate::store::Store::record_event`].
    pub(in crate::store) fn record_event(&self, event: NewEvent) -> Result<(), StoreError> {
        let event = self.new_event(event)?;
        // A transaction of its own, like every write, so a running backup sees it.
        self.transact(|tx| tx.append_event(&event))?;
        // Durable at the next flush, which is asked for now and not waited on: within
        // milliseconds, not at whatever durable write happens to come next (issue 19, item
        // 12), and the caller's reply is not held up by it.
        self.inner.commit.request().map(|_| ())
    }

    /// See [`crate::store::Store::events_after`].
    pub(in crate::store) fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        // Read the horizon before the tree: an event numbered below it has committed or failed.
        let horizon = self
            .inner
            .pending_events
            .lock()
            .map_err(|_| StoreError::Durability("event numbering lock poisoned".into()))?
            .first()
            .copied()
            .unwrap_or(u64::MAX);
        self.inner
            .trees
            .events
            .range(keys::user(after.saturating_add(1))..keys::user(horizon))
            .take(limit)
            .map(|kv| decode(EVENTS, &kv?.1))
            .collect()
    }

    /// See [`crate::store::Store::trim_events`].
    pub(in crate::store) fn trim_events(
        &self,
        max_count: usize,
        min_at: u64,
    ) -> Result<usize, StoreError> {
        let tree = &self.inner.trees.events;
        let excess = tree.len().saturating_sub(max_count);
        let mut removed = 0;
        loop {
            // Batches of keys, each removed in one transaction (so a running backup sees it).
            let mut batch = Vec::new();
            for kv in tree.iter() {
                let (key, value) = kv?;
                let event: EventRecord = decode(EVENTS, &value)?;
                if removed + batch.len() >= excess && event.at >= min_at {
                    break;
                }
                batch.push(key);
                if batch.len() == TRIM_BATCH {
                    break;
                }
            }
            if batch.is_empty() {
                return Ok(removed);
            }
            self.transact(|tx| {
                for key in &batch {
                    tx.events.remove(key)?;
                }
                Ok(())
            })?;
            removed += batch.len();
        }
    }
}

impl Tx<'_> {
    /// Appends a numbered event inside a transaction.
    pub(super) fn append_event(&self, event: &EventRecord) -> TxResult<()> {
        Tx::put(&self.events, EVENTS, &keys::user(event.seq), event)
    }
}
