//! The embedded store (sled 0.34.7). Nothing outside this module sees a sled type: the service
//! talks to [`Store`] in terms of records, so a second backend can sit behind the same methods
//! and load tests can tell store stalls from everything else.
//!
//! One tree per record kind, named `key_value`; key encodings live in [`keys`]. Every change
//! that touches more than one tree runs in one sled transaction over [`Tx`]. Every change a
//! caller is told succeeded is on disk first: writers call [`Store::durable`], which waits for
//! the group-commit thread (see `commit.rs`).

mod commit;
mod events;
mod hex32;
pub mod keys;
mod outbox;
mod seal;
mod tokens;
mod users;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

pub use events::{EventRecord, NewEvent};
pub use outbox::{OutboxMessage, OutboxRecord, OutboxState};
pub use tokens::{IssuedToken, TokenRecord, TokenState};
pub use users::{NewUserRecord, UserRecord};

/// Where the data lives.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Data directory; the embedded database lives in `db/` below it.
    pub data_dir: PathBuf,
    /// sled's page cache size in bytes.
    pub cache_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: PathBuf::from("latchkey-data"),
            cache_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an I/O or corruption error.
    #[error("database error: {0}")]
    Db(#[from] sled::Error),
    /// A record could not be decoded.
    #[error("corrupt record in {tree}: {reason}")]
    Corrupt {
        /// The tree holding the record.
        tree: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// The flush that makes a write durable failed; the write may be lost on a crash.
    #[error("could not make the write durable: {0}")]
    Durability(String),
    /// The outbox key file could not be read or created.
    #[error("outbox key: {0}")]
    Key(String),
    /// The email index has the address already.
    #[error("email already taken")]
    EmailTaken,
    /// The record named does not exist.
    #[error("no such record")]
    NotFound,
    /// The record changed since it was read (for example, a password changed meanwhile).
    #[error("record changed concurrently")]
    Stale,
    /// The token cannot be used (unknown, expired, used or from an older epoch).
    #[error("token not usable")]
    TokenRejected,
}

/// A cheap, cloneable handle to the open store.
#[derive(Clone)]
pub struct Store {
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
    seal: seal::Sealer,
    /// The group-commit thread that makes writes durable.
    commit: commit::GroupCommit,
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
}

/// One transaction's view of every tree.
struct Tx<'a> {
    /// `userid_user`: user id → [`UserRecord`].
    users: &'a TransactionalTree,
    /// `email_userid`: normalised email → user id. Unique.
    emails: &'a TransactionalTree,
    /// `selector_token`: token selector → [`TokenRecord`] (the verifier only as a hash).
    tokens: &'a TransactionalTree,
    /// `userid_selectors`: user id → the user's live token selectors, oldest first.
    user_tokens: &'a TransactionalTree,
    /// `purgeat_selector`: purge time ++ selector → (), the sweeper's index.
    token_expiry: &'a TransactionalTree,
    /// `msgid_message`: message id → [`OutboxRecord`] with a sealed payload.
    outbox: &'a TransactionalTree,
    /// `dueat_msgid`: next attempt time ++ message id → (), the sender's schedule.
    outbox_due: &'a TransactionalTree,
    /// `seq_event`: sequence number → [`EventRecord`].
    events: &'a TransactionalTree,
    /// `decoy`: fixed keys overwritten by requests for unknown accounts, so they do the same
    /// store work as requests for known ones.
    decoy: &'a TransactionalTree,
}

/// A transaction body's result.
type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

impl Store {
    /// Opens (or creates) the store: the database in `data_dir/db`, the outbox key in
    /// `data_dir/outbox.key`.
    pub fn open(data_dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let seal = seal::Sealer::load_or_create(&data_dir.join("outbox.key"))?;
        let db = sled::Config::new()
            .path(data_dir.join("db"))
            .cache_capacity(cache_bytes)
            // Durability comes from our own group commit, not from sled's timer.
            .flush_every_ms(None)
            .open()?;
        let trees = Trees {
            users: db.open_tree("userid_user")?,
            emails: db.open_tree("email_userid")?,
            tokens: db.open_tree("selector_token")?,
            user_tokens: db.open_tree("userid_selectors")?,
            token_expiry: db.open_tree("purgeat_selector")?,
            outbox: db.open_tree("msgid_message")?,
            outbox_due: db.open_tree("dueat_msgid")?,
            events: db.open_tree("seq_event")?,
            decoy: db.open_tree("decoy")?,
        };
        let commit = commit::GroupCommit::start(db.clone())
            .map_err(|e| StoreError::Durability(e.to_string()))?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                trees,
                seal,
                commit,
            }),
        })
    }

    /// Waits until every write made before this call is on disk.
    pub async fn durable(&self) -> Result<(), StoreError> {
        self.inner.commit.wait().await
    }

    /// Flushes synchronously; used once at shutdown.
    pub fn flush_now(&self) -> Result<(), StoreError> {
        self.inner.db.flush()?;
        Ok(())
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.inner.db.size_on_disk()?)
    }

    /// A new unique id (never reused, even across crashes). Starts at 1.
    fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.inner.db.generate_id()? + 1)
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
                )| {
                    body(&Tx {
                        users,
                        emails,
                        tokens,
                        user_tokens,
                        token_expiry,
                        outbox,
                        outbox_due,
                        events,
                        decoy,
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
        tree: &TransactionalTree,
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
        tree: &TransactionalTree,
        name: &'static str,
        key: &[u8],
        value: &T,
    ) -> TxResult<()> {
        let bytes = aborting(encode(name, value))?;
        tree.insert(key, bytes)?;
        Ok(())
    }
}
