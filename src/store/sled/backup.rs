//! Online backup: a snapshot of the four record trees (users, tokens, outbox, events) at one
//! point in time, read while the daemon goes on serving.
//!
//! sled 0.34 has no snapshots, so a backup keeps the *before* image of whatever changes
//! while it reads. It starts inside an empty transaction: sled runs transactions one at a
//! time, so that instant is between two of them, and every transaction after it sees the
//! snapshot. From then on, the first write to a key the reader has not passed yet saves the
//! key's value as it was (or that it was absent) before the write lands. The reader walks
//! each tree in key order; under the same lock as those saves, it takes a key's current value
//! when nothing was saved for it (nothing changed it since the start), skips it otherwise,
//! and when every tree is walked, adds the saved values. Every key is then read once, as it
//! was at the start: a completed reset is wholly in the backup or not at all.
//!
//! What waits: starting waits for the transaction in progress (one transaction); while a
//! backup runs, each write to a not-yet-read key takes a mutex and copies one value.
//! Reads never wait. The saved values are bounded by [`MAX_SAVED_BYTES`]: a backup that would
//! need more fails (with a clear error) rather than grow the daemon without bound.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use sled::transaction::{TransactionalTree, UnabortableTransactionError};
use sled::IVec;

use super::super::dump::{self, DumpMail, DumpToken, Item};
use super::super::records::{EventRecord, OutboxRecord, TokenRecord, UserRecord};
use super::{decode, SledStore, StoreError, OUTBOX_KEY_CHECK};

/// Most bytes of before-images one backup keeps (keys, values and bookkeeping) unless
/// `store.backup_saved_bytes` says otherwise: a few hundred thousand changed records.
pub(super) const MAX_SAVED_BYTES: u64 = 128 << 20;

/// The trees a backup holds, in the order it reads them. The others (the email index, each
/// user's token list, the schedules, the decoy) are rebuilt from these on restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Users = 0,
    Tokens = 1,
    Outbox = 2,
    Events = 3,
}

const KINDS: [Kind; 4] = [Kind::Users, Kind::Tokens, Kind::Outbox, Kind::Events];

/// How far the reader has walked one tree.
#[derive(Clone, Debug)]
enum Passed {
    /// Not started.
    Nothing,
    /// Every key up to and including this one.
    UpTo(IVec),
    /// The whole tree.
    All,
}

impl Passed {
    fn covers(&self, key: &[u8]) -> bool {
        match self {
            Passed::Nothing => false,
            Passed::UpTo(last) => key <= last.as_ref(),
            Passed::All => true,
        }
    }
}

/// One running backup, shared by the reader and every writer.
pub(super) struct Snapshot {
    /// What the reader has passed and what writers saved.
    state: Mutex<Saved>,
}

/// The before-images, and how far the reader is.
struct Saved {
    passed: [Passed; 4],
    /// Per tree: key → its value at the start (`None`: it did not exist).
    before: [BTreeMap<IVec, Option<IVec>>; 4],
    /// Bytes in `before`.
    bytes: u64,
    /// Most bytes `before` may hold.
    cap: u64,
    /// Set when `before` outgrew [`MAX_SAVED_BYTES`]; the backup then fails.
    overflowed: bool,
}

impl Snapshot {
    /// A snapshot at its start: nothing read, nothing saved, at most `cap` bytes to save.
    fn new(cap: u64) -> Snapshot {
        let nothing = || Passed::Nothing;
        Snapshot {
            state: Mutex::new(Saved {
                passed: [nothing(), nothing(), nothing(), nothing()],
                before: Default::default(),
                bytes: 0,
                cap,
                overflowed: false,
            }),
        }
    }

    /// Saves `key`'s value before its first write since the start, unless the reader has
    /// passed it already (it took the value then). `current` reads it inside the writing
    /// transaction, which sled runs alone, so it is the committed value.
    pub(super) fn before_write(
        &self,
        kind: Kind,
        key: &[u8],
        current: impl FnOnce() -> Result<Option<IVec>, UnabortableTransactionError>,
    ) -> Result<(), UnabortableTransactionError> {
        let Ok(mut saved) = self.state.lock() else {
            return Ok(());
        };
        let i = kind as usize;
        if saved.overflowed || saved.passed[i].covers(key) || saved.before[i].contains_key(key) {
            return Ok(());
        }
        let value = current()?;
        saved.bytes += (key.len() + value.as_ref().map_or(0, |v| v.len()) + 64) as u64;
        if saved.bytes > saved.cap {
            saved.overflowed = true;
            saved.before = Default::default();
            return Ok(());
        }
        saved.before[i].insert(IVec::from(key), value);
        Ok(())
    }

    /// The reader reaches `key`: whether to take its current value (nothing changed it).
    fn pass(&self, kind: Kind, key: &IVec) -> Result<bool, StoreError> {
        let mut saved = self.state.lock().map_err(|_| poisoned())?;
        let i = kind as usize;
        saved.passed[i] = Passed::UpTo(key.clone());
        Ok(!saved.before[i].contains_key(key))
    }

    /// The reader has walked the whole tree.
    fn pass_all(&self, kind: Kind) -> Result<(), StoreError> {
        let mut saved = self.state.lock().map_err(|_| poisoned())?;
        saved.passed[kind as usize] = Passed::All;
        Ok(())
    }

    /// Every saved value that existed at the start, once every tree is walked (no writer
    /// saves anything after that).
    fn take_saved(&self) -> Result<Vec<(Kind, IVec, IVec)>, StoreError> {
        let mut saved = self.state.lock().map_err(|_| poisoned())?;
        if saved.overflowed {
            return Err(too_busy(saved.cap));
        }
        let before = std::mem::take(&mut saved.before);
        saved.bytes = 0;
        Ok(KINDS
            .iter()
            .zip(before)
            .flat_map(|(kind, map)| {
                map.into_iter()
                    .filter_map(move |(k, v)| v.map(|v| (*kind, k, v)))
            })
            .collect())
    }

    /// The cap, if the saved values went over it.
    fn overflowed(&self) -> Option<u64> {
        match self.state.lock() {
            Ok(s) if s.overflowed => Some(s.cap),
            Ok(_) => None,
            Err(_) => Some(0),
        }
    }
}

fn poisoned() -> StoreError {
    StoreError::Durability("backup lock poisoned".into())
}

fn too_busy(cap: u64) -> StoreError {
    StoreError::Backup(format!(
        "more than {} MiB of records changed while the backup ran (store.backup_saved_bytes); run it again when the store is quieter, or raise it",
        cap >> 20
    ))
}

/// A backup being read, page by page. Dropping it ends the snapshot.
pub(in crate::store) struct SledBackup {
    store: SledStore,
    snapshot: Arc<Snapshot>,
    /// The tree being walked (an index into [`KINDS`]; 4 when all are).
    tree: usize,
    /// The last key read in it.
    after: Option<IVec>,
    /// The saved values, once every tree is walked; emitted from the end.
    saved: Option<Vec<(Kind, IVec, IVec)>>,
    /// The id counter and outbox key check at the start.
    pub(in crate::store) next_id: u64,
    pub(in crate::store) key_check: Option<Vec<u8>>,
}

impl Drop for SledBackup {
    fn drop(&mut self) {
        self.store.inner.snapshot.store(None);
    }
}

impl SledStore {
    /// Sets `store.backup_saved_bytes`.
    pub(in crate::store) fn set_backup_cap(&self, bytes: u64) {
        self.inner
            .backup_cap
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts a backup; `Backup` if one is running already.
    pub(in crate::store) fn begin_backup(&self) -> Result<SledBackup, StoreError> {
        let cap = self
            .inner
            .backup_cap
            .load(std::sync::atomic::Ordering::Relaxed);
        let snapshot = Arc::new(Snapshot::new(cap));
        // Read before the transaction: a plain read inside one would wait for it for ever.
        let key_check = self
            .inner
            .trees
            .meta
            .get(OUTBOX_KEY_CHECK)?
            .map(|v| v.to_vec());
        let next_id = self.transact(|tx| {
            let installed = self
                .inner
                .snapshot
                .compare_and_swap(&None::<Arc<Snapshot>>, Some(snapshot.clone()));
            if installed.is_some() {
                return super::abort(StoreError::Backup("another backup is running".into()));
            }
            // Every id handed out before this point is below it (ids are taken before the
            // transactions that use them, and those have not committed if they come later).
            // The transaction's own counter: `Db::generate_id` would wait for this transaction.
            Ok(tx.users.tree.generate_id()? + 1 + self.inner.id_base)
        })?;
        Ok(SledBackup {
            store: self.clone(),
            snapshot,
            tree: 0,
            after: None,
            saved: None,
            next_id,
            key_check,
        })
    }
}

impl SledBackup {
    /// Up to about `budget` bytes of records, in order; empty when the backup is complete.
    pub(in crate::store) fn next_page(&mut self, budget: usize) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut used = 0usize;
        while self.tree < KINDS.len() {
            let kind = KINDS[self.tree];
            let tree = self.store.tree_of(kind);
            let range = match &self.after {
                None => tree.range::<&[u8], _>(..),
                Some(after) => tree.range::<&[u8], _>((
                    std::ops::Bound::Excluded(after.as_ref()),
                    std::ops::Bound::Unbounded,
                )),
            };
            for kv in range {
                let (key, value) = kv?;
                if self.snapshot.pass(kind, &key)? {
                    used += value.len();
                    items.push(item(kind, &key, &value)?);
                }
                self.after = Some(key);
                if used >= budget {
                    return self.checked(items);
                }
            }
            self.snapshot.pass_all(kind)?;
            self.tree += 1;
            self.after = None;
        }
        if self.saved.is_none() {
            let mut saved = self.snapshot.take_saved()?;
            saved.reverse();
            self.saved = Some(saved);
        }
        let saved = self.saved.as_mut().ok_or_else(poisoned)?;
        while used < budget {
            let Some((kind, key, value)) = saved.pop() else {
                break;
            };
            used += value.len();
            items.push(item(kind, &key, &value)?);
        }
        Ok(items)
    }

    fn checked(&self, items: Vec<Item>) -> Result<Vec<Item>, StoreError> {
        if let Some(cap) = self.snapshot.overflowed() {
            return Err(too_busy(cap));
        }
        Ok(items)
    }
}

impl SledStore {
    fn tree_of(&self, kind: Kind) -> &sled::Tree {
        let t = &self.inner.trees;
        match kind {
            Kind::Users => &t.users,
            Kind::Tokens => &t.tokens,
            Kind::Outbox => &t.outbox,
            Kind::Events => &t.events,
        }
    }
}

/// The backup record of one stored key and value.
fn item(kind: Kind, key: &[u8], value: &[u8]) -> Result<Item, StoreError> {
    Ok(match kind {
        Kind::Users => Item::User(decode::<UserRecord>(super::users::USERS, value)?),
        Kind::Tokens => Item::Token(DumpToken {
            selector: dump::hex(key),
            record: decode::<TokenRecord>("selector_token", value)?,
        }),
        Kind::Outbox => Item::Mail(DumpMail::from_record(&decode::<OutboxRecord>(
            "msgid_message",
            value,
        )?)),
        Kind::Events => Item::Event(decode::<EventRecord>("seq_event", value)?),
    })
}

/// A tree inside a transaction, seen through the running backup (if any): a write to one of
/// the four record trees saves the key's value first. The index trees pass straight through.
pub(super) struct Kept<'a> {
    /// The transaction's view of the tree.
    pub(super) tree: &'a TransactionalTree,
    /// Which record tree it is; `None` for an index tree.
    pub(super) kind: Option<Kind>,
    /// The backup running when the transaction started.
    pub(super) snapshot: Option<&'a Snapshot>,
}

type TxOp<T> = Result<T, UnabortableTransactionError>;

impl Kept<'_> {
    fn note(&self, key: &[u8]) -> TxOp<()> {
        match (self.kind, self.snapshot) {
            (Some(kind), Some(snapshot)) => snapshot.before_write(kind, key, || self.tree.get(key)),
            _ => Ok(()),
        }
    }

    /// Reads a key.
    pub(super) fn get<K: AsRef<[u8]>>(&self, key: K) -> TxOp<Option<IVec>> {
        self.tree.get(key)
    }

    /// Writes a key.
    pub(super) fn insert<K, V>(&self, key: K, value: V) -> TxOp<Option<IVec>>
    where
        K: AsRef<[u8]> + Into<IVec>,
        V: Into<IVec>,
    {
        self.note(key.as_ref())?;
        self.tree.insert(key, value)
    }

    /// Deletes a key.
    pub(super) fn remove<K>(&self, key: K) -> TxOp<Option<IVec>>
    where
        K: AsRef<[u8]> + Into<IVec>,
    {
        self.note(key.as_ref())?;
        self.tree.remove(key)
    }
}

#[cfg(test)]
mod tests {
    use latchkey_client::{EventKind, UserStatus};

    use super::super::test_sealer;
    use super::*;
    use crate::store::records::NewEvent;
    use crate::store::NewUserRecord;

    fn new_user(n: u64) -> NewUserRecord {
        NewUserRecord {
            email: format!("u{n}@example.com"),
            name: format!("user {n}"),
            role: "user".into(),
            status: UserStatus::Active,
            password_hash: "$argon2id$stub".into(),
            locale: None,
            created_at: n,
        }
    }

    /// Every record as the backup gives it, keyed, to compare with the store's own view.
    fn users_of(items: &[Item]) -> BTreeMap<u64, (String, u64)> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::User(u) => Some((u.id, (u.name.clone(), u.credential_epoch))),
                _ => None,
            })
            .collect()
    }

    async fn users_now(store: &SledStore) -> BTreeMap<u64, (String, u64)> {
        store
            .users_after(0, 100_000)
            .expect("users")
            .into_iter()
            .map(|u| (u.id, (u.name, u.credential_epoch)))
            .collect()
    }

    #[tokio::test]
    async fn a_backup_is_the_store_as_it_was_when_it_began_whatever_changes_while_it_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), 1 << 20, test_sealer(dir.path())).expect("open");
        let made = store
            .insert_users((1..=300).map(new_user).collect())
            .await
            .expect("insert");
        let ids: Vec<u64> = made.into_iter().map(|r| r.expect("inserted").id).collect();
        let before = users_now(&store).await;
        let events_before = store.events_after(0, 100_000).expect("events").len();

        let mut backup = store.begin_backup().expect("begin");
        assert!(
            matches!(store.begin_backup(), Err(StoreError::Backup(_))),
            "a second backup is refused while one runs"
        );
        // A first page: part of the users tree.
        let mut items = backup.next_page(2_000).expect("page");
        assert!(!items.is_empty() && items.len() < 300, "{}", items.len());
        // Now change records behind and ahead of the reader: rename, change a password
        // (user + event in one transaction), delete, and add users.
        for id in [ids[0], ids[150], ids[299]] {
            store
                .update_user(id, None, |u| {
                    u.name = "renamed".into();
                    Ok(())
                })
                .await
                .expect("update");
        }
        let event = NewEvent::user(EventKind::PasswordChanged, ids[200], None);
        store
            .set_password(ids[200], 0, "$argon2id$new", 9, event, None)
            .await
            .expect("set_password");
        store.delete_user(ids[1]).await.expect("delete behind");
        store.delete_user(ids[250]).await.expect("delete ahead");
        store
            .insert_users((1000..1010).map(new_user).collect())
            .await
            .expect("insert more");
        store
            .record_event(NewEvent::user(EventKind::LoginFailed, ids[3], None))
            .expect("event");
        loop {
            let page = backup.next_page(2_000).expect("page");
            if page.is_empty() {
                break;
            }
            items.extend(page);
        }
        drop(backup);

        assert_eq!(
            users_of(&items),
            before,
            "the users as they were at the start"
        );
        let events = items.iter().filter(|i| matches!(i, Item::Event(_))).count();
        assert_eq!(
            events, events_before,
            "the events as they were at the start"
        );
        // The changes are all in the store itself.
        let after = users_now(&store).await;
        assert_eq!(after.len(), 300 - 2 + 10);
        assert_eq!(after[&ids[150]].0, "renamed");
        assert_eq!(after[&ids[200]].1, 1);
        // The backup ended: writes no longer save anything, and a new one may start.
        assert!(store.inner.snapshot.load().is_none());
        let again = store
            .begin_backup()
            .expect("a new backup after the first ended");
        drop(again);
    }

    #[test]
    fn the_saved_values_are_bounded() {
        let snapshot = Snapshot::new(1000);
        if let Ok(mut saved) = snapshot.state.lock() {
            saved.bytes = 900;
        }
        let big = IVec::from(vec![0u8; 200]);
        let saved = snapshot.before_write(Kind::Users, b"k", || Ok(Some(big.clone())));
        assert!(saved.is_ok());
        assert_eq!(snapshot.overflowed(), Some(1000));
        assert!(matches!(snapshot.take_saved(), Err(StoreError::Backup(_))));
    }
}
