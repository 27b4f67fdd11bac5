//! The embedded backend (sled 0.34.7). One daemon per data directory.
//!
//! One tree per record kind, named `key_value`; key encodings live in [`keys`]. Every change
//! that touches more than one tree runs in one sled transaction over [`Tx`]. Every change a
//! caller is told succeeded is on disk first: writers call [`SledStore::durable`], which waits
//! for the group-commit thread (see `commit.rs`).

mod backup;
mod commit;
mod events;
pub mod keys;
mod load;
mod outbox;
mod signups;
mod tokens;
mod users;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

pub(super) use self::backup::SledBackup;
use self::backup::{Kept, Kind, Snapshot};
pub(super) use self::load::SledLoader;

use super::seal::Sealer;
use super::{Levels, StoreError};

/// A cheap, cloneable handle to the open sled store.
#[derive(Clone)]
pub(super) struct SledStore {
    /// Shared trees and the commit thread; lives as long as the last handle.
    inner: Arc<Inner>,
}

/// The open database and its trees.
struct Inner {
    /// The database; kept for id generation and flushing.
    db: sled::Db,
    /// Every tree, in the order [`Tx`] names them.
    trees: Trees,
    /// Seals outbox payloads (they hold reset links) under a key kept outside the database.
    seal: Sealer,
    /// The group-commit thread that makes writes durable.
    commit: commit::GroupCommit,
    /// Event numbers handed out whose transaction has not finished: readers stop before the
    /// lowest, so an event that commits after a later-numbered one is never skipped.
    pending_events: Mutex<BTreeSet<u64>>,
    /// Messages claimed by the sender, with the end of each lease (Unix milliseconds). One
    /// daemon owns the directory, so leases live in memory and end with the process.
    leases: Mutex<HashMap<u64, u64>>,
    /// The backup being read, if one is: writers save what they overwrite (`backup.rs`).
    snapshot: ArcSwapOption<Snapshot>,
    /// `store.backup_saved_bytes`: most bytes a backup keeps of overwritten records.
    backup_cap: std::sync::atomic::AtomicU64,
    /// Added to sled's id counter: a store restored from a backup starts its counter again
    /// at 0, and must not hand out the ids in the backup a second time.
    id_base: u64,
}

/// The trees. See [`Tx`] for what each holds.
struct Trees {
    users: sled::Tree,
    emails: sled::Tree,
    tokens: sled::Tree,
    user_tokens: sled::Tree,
    token_expiry: sled::Tree,
    outbox: sled::Tree,
    outbox_due: sled::Tree,
    events: sled::Tree,
    decoy: sled::Tree,
    signups: sled::Tree,
    signup_expiry: sled::Tree,
    /// `name_value`: the store's own facts (the outbox key check).
    meta: sled::Tree,
}

impl Trees {
    /// Opens (or creates) every tree of `db`.
    fn open(db: &sled::Db) -> Result<Trees, StoreError> {
        Ok(Trees {
            users: db.open_tree("userid_user")?,
            emails: db.open_tree("email_userid")?,
            tokens: db.open_tree("selector_token")?,
            user_tokens: db.open_tree("userid_selectors")?,
            token_expiry: db.open_tree("purgeat_selector")?,
            outbox: db.open_tree("msgid_message")?,
            outbox_due: db.open_tree("dueat_msgid")?,
            events: db.open_tree("seq_event")?,
            decoy: db.open_tree("decoy")?,
            signups: db.open_tree("selector_signup")?,
            signup_expiry: db.open_tree("purgeat_signupselector")?,
            meta: db.open_tree("name_value")?,
        })
    }
}

/// One transaction's view of every tree.
struct Tx<'a> {
    /// `userid_user`: user id → [`UserRecord`].
    users: Kept<'a>,
    /// `email_userid`: normalised email → user id. Unique.
    emails: Kept<'a>,
    /// `selector_token`: token selector → [`TokenRecord`] (the verifier only as a hash).
    tokens: Kept<'a>,
    /// `userid_selectors`: user id → the user's live token selectors, oldest first.
    user_tokens: Kept<'a>,
    /// `purgeat_selector`: purge time ++ selector → (), the sweeper's index.
    token_expiry: Kept<'a>,
    /// `msgid_message`: message id → [`OutboxRecord`] with a sealed payload.
    outbox: Kept<'a>,
    /// `dueat_msgid`: next attempt time ++ message id → (), the sender's schedule.
    outbox_due: Kept<'a>,
    /// `seq_event`: sequence number → [`EventRecord`].
    events: Kept<'a>,
    /// `decoy`: fixed keys overwritten by requests for unknown accounts, so they do the same
    /// store work as requests for known ones.
    decoy: Kept<'a>,
    /// `selector_signup`: selector → [`super::PendingSignUp`] (the verifier only as a hash).
    /// Not in backups: a pending sign-up lives a day at most, and after a restore its owner
    /// signs up again.
    signups: Kept<'a>,
    /// `purgeat_signupselector`: purge time ++ selector → (), the sweeper's index of them.
    signup_expiry: Kept<'a>,
}

/// The `name_value` key of the outbox key check value.
const OUTBOX_KEY_CHECK: &[u8] = b"outbox_key_check";

/// The `name_value` key of the id base (8 bytes, big-endian), written by a restore.
const ID_BASE: &[u8] = b"id_base";

/// A transaction body's result.
type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

impl SledStore {
    /// Opens (or creates) the database in `data_dir/db`, sealing mail with `seal`.
    pub(super) fn open(
        data_dir: &Path,
        cache_bytes: u64,
        seal: Sealer,
    ) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(data_dir.join("db"))
            .cache_capacity(cache_bytes)
            // Durability comes from our own group commit, not from sled's timer.
            .flush_every_ms(None)
            .open()?;
        let trees = Trees::open(&db)?;
        let id_base = match trees.meta.get(ID_BASE)? {
            Some(bytes) => keys::read_u64(&bytes).ok_or_else(|| StoreError::Corrupt {
                tree: "name_value",
                reason: "id_base is not 8 bytes".into(),
            })?,
            None => 0,
        };
        let commit = commit::GroupCommit::start(db.clone())
            .map_err(|e| StoreError::Durability(e.to_string()))?;
        Ok(SledStore {
            inner: Arc::new(Inner {
                db,
                trees,
                seal,
                commit,
                pending_events: Mutex::new(BTreeSet::new()),
                leases: Mutex::new(HashMap::new()),
                snapshot: ArcSwapOption::empty(),
                backup_cap: std::sync::atomic::AtomicU64::new(backup::MAX_SAVED_BYTES),
                id_base,
            }),
        })
    }

    /// Refuses an outbox key that does not open the queued mail; see `Sealer::judge_check`.
    pub(super) fn check_key(&self) -> Result<(), StoreError> {
        let remembered = self.inner.trees.meta.get(OUTBOX_KEY_CHECK)?;
        let (queued, dead, _) = self.outbox_stats()?;
        if let Some(value) = self.inner.seal.judge_check(
            remembered.as_deref(),
            u64::try_from(queued + dead).unwrap_or(u64::MAX),
        )? {
            self.inner.trees.meta.insert(OUTBOX_KEY_CHECK, value)?;
            self.inner.db.flush()?;
        }
        Ok(())
    }

    /// Waits until every write made before this call is on disk.
    pub(super) async fn durable(&self) -> Result<(), StoreError> {
        self.inner.commit.wait().await
    }

    /// Flushes synchronously; used once at shutdown.
    pub(super) fn flush_now(&self) -> Result<(), StoreError> {
        self.inner.db.flush()?;
        Ok(())
    }

    /// The levels a metrics scrape reports. Counting walks the trees.
    pub(super) fn levels(&self) -> Result<Levels, StoreError> {
        let (queued, dead, oldest_queued_at) = self.outbox_stats()?;
        let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        Ok(Levels {
            users: count(self.inner.trees.users.len()),
            tokens: count(self.inner.trees.tokens.len()),
            queued: count(queued),
            dead: count(dead),
            oldest_queued_at,
            bytes: self.inner.db.size_on_disk()?,
        })
    }

    /// A new unique id (never reused, even across crashes). Starts at 1.
    fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.inner.db.generate_id()? + 1 + self.inner.id_base)
    }

    /// Runs `body` as one transaction over every tree. sled may run it more than once on
    /// conflict, so it must not have side effects outside the transaction.
    fn transact<T>(&self, body: impl Fn(&Tx<'_>) -> TxResult<T>) -> Result<T, StoreError> {
        let t = &self.inner.trees;
        let result = (
            &t.users,
            &t.emails,
            &t.tokens,
            &t.user_tokens,
            &t.token_expiry,
            &t.outbox,
            &t.outbox_due,
            &t.events,
            &t.decoy,
            &t.signups,
            &t.signup_expiry,
        )
            .transaction(
                |(
                    users,
                    emails,
                    tokens,
                    user_tokens,
                    token_expiry,
                    outbox,
                    outbox_due,
                    events,
                    decoy,
                    signups,
                    signup_expiry,
                )| {
                    // Loaded inside the transaction, which sled runs alone: a backup starts
                    // between two transactions, and every later one sees it.
                    let snapshot = self.inner.snapshot.load();
                    let snapshot = snapshot.as_deref();
                    let kept = |tree, kind| Kept {
                        tree,
                        kind,
                        snapshot,
                    };
                    body(&Tx {
                        users: kept(users, Some(Kind::Users)),
                        emails: kept(emails, None),
                        tokens: kept(tokens, Some(Kind::Tokens)),
                        user_tokens: kept(user_tokens, None),
                        token_expiry: kept(token_expiry, None),
                        outbox: kept(outbox, Some(Kind::Outbox)),
                        outbox_due: kept(outbox_due, None),
                        events: kept(events, Some(Kind::Events)),
                        decoy: kept(decoy, None),
                        signups: kept(signups, None),
                        signup_expiry: kept(signup_expiry, None),
                    })
                },
            );
        match result {
            Ok(v) => Ok(v),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(StoreError::Db(e)),
        }
    }
}

/// Encodes a record.
fn encode<T: Serialize>(tree: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
        tree,
        reason: e.to_string(),
    })
}

/// Decodes a record.
fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        tree,
        reason: e.to_string(),
    })
}

/// Turns a store error inside a transaction body into an abort.
fn aborting<T>(r: Result<T, StoreError>) -> TxResult<T> {
    r.map_err(ConflictableTransactionError::Abort)
}

/// Aborts a transaction with a store error.
fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

impl Tx<'_> {
    /// Reads and decodes a record from `tree`.
    fn get<T: DeserializeOwned>(
        tree: &Kept<'_>,
        name: &'static str,
        key: &[u8],
    ) -> TxResult<Option<T>> {
        match tree.get(key)? {
            Some(bytes) => aborting(decode(name, &bytes).map(Some)),
            None => Ok(None),
        }
    }

    /// Encodes and writes a record to `tree`.
    fn put<T: Serialize>(
        tree: &Kept<'_>,
        name: &'static str,
        key: &[u8],
        value: &T,
    ) -> TxResult<()> {
        let bytes = aborting(encode(name, value))?;
        tree.insert(key, bytes)?;
        Ok(())
    }
}

/// A sealer with a fresh key file in `dir`, for unit tests.
#[cfg(test)]
pub(super) fn test_sealer(dir: &Path) -> Sealer {
    let config = super::StoreConfig {
        data_dir: dir.to_path_buf(),
        ..super::StoreConfig::default()
    };
    Sealer::load(&config).expect("a key file in a fresh directory")
}
