//! The embedded store (sled 0.34.7). Nothing outside this module sees a sled type: the service
//! talks to [`Store`] in terms of records, so a second backend can sit behind the same methods
//! and load tests can tell store stalls from everything else.
//!
//! One tree per record kind, named `key_value`. Every change that touches two trees runs in
//! one sled transaction. Every change a caller is told succeeded is on disk first: writers call
//! [`Store::durable`], which waits for the group-commit thread (see [`commit`]).

mod commit;
pub mod keys;
mod users;

use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError};

pub use users::{NewUserRecord, UserRecord};

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
    /// The email index has the address already.
    #[error("email already taken")]
    EmailTaken,
    /// The record named does not exist.
    #[error("no such record")]
    NotFound,
    /// The record changed since it was read (for example, a password changed meanwhile).
    #[error("record changed concurrently")]
    Stale,
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
    /// `userid_user`: user id → [`UserRecord`] (JSON).
    users: sled::Tree,
    /// `email_userid`: normalised email → user id. Unique.
    emails: sled::Tree,
    /// The group-commit thread that makes writes durable.
    commit: commit::GroupCommit,
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // Durability comes from our own group commit, not from sled's timer.
            .flush_every_ms(None)
            .open()?;
        let users = db.open_tree("userid_user")?;
        let emails = db.open_tree("email_userid")?;
        let commit = commit::GroupCommit::start(db.clone())
            .map_err(|e| StoreError::Durability(e.to_string()))?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                users,
                emails,
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

/// Aborts a transaction with a store error.
fn abort<T>(e: StoreError) -> Result<T, ConflictableTransactionError<StoreError>> {
    Err(ConflictableTransactionError::Abort(e))
}

/// Flattens a transaction result.
fn tx_result<T>(r: Result<T, TransactionError<StoreError>>) -> Result<T, StoreError> {
    match r {
        Ok(v) => Ok(v),
        Err(TransactionError::Abort(e)) => Err(e),
        Err(TransactionError::Storage(e)) => Err(StoreError::Db(e)),
    }
}
