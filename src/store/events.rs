//! The append-only event log: numbered entries a host application reads after a cursor (to
//! revoke its own sessions, for example), trimmed by count and age.

use latchkey_client::{Event, EventKind};

use super::{decode, keys, Store, StoreError, Tx, TxResult};

const EVENTS: &str = "seq_event";

/// An event about to be recorded; the store numbers and stamps it.
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// What happened.
    pub kind: EventKind,
    /// The account concerned.
    pub user_id: Option<u64>,
    /// The client IP given with the call.
    pub client_ip: Option<String>,
}

impl NewEvent {
    /// An event about one user.
    pub fn user(kind: EventKind, user_id: u64, client_ip: Option<String>) -> NewEvent {
        NewEvent {
            kind,
            user_id: Some(user_id),
            client_ip,
        }
    }
}

/// A numbered event, as stored and as returned.
pub type EventRecord = Event;

impl Store {
    /// Numbers and stamps an event, ready to append in a transaction.
    pub(super) fn new_event(&self, event: NewEvent) -> Result<EventRecord, StoreError> {
        Ok(Event {
            seq: self.next_id()?,
            at: crate::clock::now(),
            kind: event.kind,
            user_id: event.user_id,
            client_ip: event.client_ip,
        })
    }

    /// Appends an event on its own, without waiting for durability: for events that no caller
    /// is told about (a failed login), where a flush would only slow the failure path and
    /// make it distinguishable by timing from a login for an unknown address.
    pub fn record_event(&self, event: NewEvent) -> Result<(), StoreError> {
        let event = self.new_event(event)?;
        let bytes = super::encode(EVENTS, &event)?;
        self.inner
            .trees
            .events
            .insert(keys::user(event.seq), bytes)?;
        Ok(())
    }

    /// Events with a sequence number above `after`, oldest first, at most `limit`.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        self.inner
            .trees
            .events
            .range(keys::user(after.saturating_add(1))..)
            .take(limit)
            .map(|kv| decode(EVENTS, &kv?.1))
            .collect()
    }

    /// Drops the oldest events beyond `max_count` and those older than `min_at`; returns how
    /// many went. Not waited on for durability: losing a trim to a crash only repeats it.
    pub fn trim_events(&self, max_count: usize, min_at: u64) -> Result<usize, StoreError> {
        let tree = &self.inner.trees.events;
        let excess = tree.len().saturating_sub(max_count);
        let mut removed = 0;
        for kv in tree.iter() {
            let (key, value) = kv?;
            let event: EventRecord = decode(EVENTS, &value)?;
            if removed >= excess && event.at >= min_at {
                break;
            }
            tree.remove(key)?;
            removed += 1;
        }
        Ok(removed)
    }
}

impl Tx<'_> {
    /// Appends a numbered event inside a transaction.
    pub(super) fn append_event(&self, event: &EventRecord) -> TxResult<()> {
        Tx::put(self.events, EVENTS, &keys::user(event.seq), event)
    }
}
