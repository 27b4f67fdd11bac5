//! The store: users, reset tokens, the outbox and the event log, behind one interface with two
//! backends. [`Store`] is what the rest of the daemon sees; nothing above this module knows
//! which backend runs.
//!
//! - `sled/`: the embedded default (sled 0.34.7), one daemon per data directory, with group
//!   commit for durability.
//! - `postgres/`: one PostgreSQL shared by the daemons of every host of an application.
//!
//! Both honour the same semantics, and the integration suite runs against each: every change
//! a caller is told succeeded is durable first; every change that touches more than one kind
//! of record is one transaction; a token is consumed at most once; a password change revokes
//! every token of the user; queued mail is claimed by one sender at a time; the event log has
//! one order and a reader following it never misses an event. Outbox payloads are sealed
//! under a key kept outside the database (`seal.rs`) on both.

mod config;
pub mod dump;
mod failures;
mod hex32;
pub mod load;
mod postgres;
mod records;
mod seal;
mod sled;

use std::time::Duration;

pub use config::{Backend, PostgresConfig, PostgresTls, StoreConfig};
pub use records::{
    Claimed, EventRecord, FailedLogins, IssuedSignUp, IssuedToken, Levels, NewEvent, NewUserRecord,
    OutboxMessage, OutboxRecord, OutboxState, PendingSignUp, Probe, ProbeCell, SharedLimit,
    SignUpState, TokenRecord, TokenState, UserRecord, DEFAULT_ROLE,
};

use self::postgres::{PgBackup, PgStore};
use self::sled::{SledBackup, SledStore};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an I/O or corruption error.
    #[error("database error: {0}")]
    Db(#[from] ::sled::Error),
    /// PostgreSQL refused a statement or failed; the message is the server's.
    #[error("database error: {0}")]
    Sql(String),
    /// The database cannot be reached now (down, restarting, or the pool timed out).
    #[error("database unreachable: {0}")]
    Unreachable(String),
    /// The database's schema cannot be used by this daemon (newer than it knows, or a failed
    /// migration).
    #[error("database schema: {0}")]
    Schema(String),
    /// A record could not be decoded.
    #[error("corrupt record in {tree}: {reason}")]
    Corrupt {
        /// The tree or table holding the record.
        tree: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// The flush that makes a write durable failed; the write may be lost on a crash.
    #[error("could not make the write durable: {0}")]
    Durability(String),
    /// The outbox key could not be read or created, or does not open the queued mail.
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
    /// A backup cannot be taken or loaded (one is running already, too much changed while
    /// it ran, a target that is not empty).
    #[error("backup: {0}")]
    Backup(String),
}

/// A cheap, cloneable handle to the open store.
#[derive(Clone)]
pub struct Store {
    /// The backend in use.
    backend: Handle,
    /// Failed logins on the embedded store, which one daemon serves; PostgreSQL keeps them
    /// in a table every host shares.
    failures: std::sync::Arc<failures::FailureBook>,
}

/// The backends.
#[derive(Clone)]
enum Handle {
    /// The embedded store.
    Sled(SledStore),
    /// A shared PostgreSQL.
    Postgres(PgStore),
}

/// Runs a blocking sled call off the async threads.
async fn blocking<T: Send + 'static>(
    store: &SledStore,
    call: impl FnOnce(&SledStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || call(&store))
        .await
        .map_err(|e| StoreError::Durability(format!("store task failed: {e}")))?
}

impl Store {
    /// Opens the backend `config` names: sled in `data_dir`, or a connection pool to
    /// PostgreSQL with the schema brought up to date. Checks that the outbox key opens the
    /// mail already queued.
    pub async fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        let sealer = seal::Sealer::load(config)?;
        let backend = match config.backend {
            Backend::Sled => {
                let sled = SledStore::open(&config.data_dir, config.cache_bytes, sealer)?;
                sled.set_backup_cap(config.backup_saved_bytes);
                Handle::Sled(sled)
            }
            Backend::Postgres => Handle::Postgres(PgStore::open(&config.postgres, sealer).await?),
        };
        let store = Store {
            backend,
            failures: Default::default(),
        };
        store.check_key().await?;
        Ok(store)
    }

    /// Which backend runs, for the start-up log.
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Handle::Sled(_) => "sled",
            Handle::Postgres(_) => "postgres",
        }
    }

    /// Refuses a key that is not the one the queued mail was sealed with, instead of letting
    /// the sender bury every message as unreadable. The first open records a check value.
    async fn check_key(&self) -> Result<(), StoreError> {
        match &self.backend {
            Handle::Sled(s) => blocking(s, |s| s.check_key()).await,
            Handle::Postgres(p) => p.check_key().await,
        }
    }

    /// How the store is doing: a durable write within `within`, or why not.
    pub async fn probe(&self, within: Duration) -> Probe {
        match &self.backend {
            Handle::Sled(s) => match tokio::time::timeout(within, s.durable()).await {
                Ok(Ok(())) => Probe::Ok,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "store flush failed");
                    Probe::Stalled
                }
                Err(_) => Probe::Stalled,
            },
            Handle::Postgres(p) => p.probe(within).await,
        }
    }

    /// Makes everything durable and closes; used once at shutdown.
    pub async fn close(&self) -> Result<(), StoreError> {
        match &self.backend {
            Handle::Sled(s) => blocking(s, |s| s.flush_now()).await,
            Handle::Postgres(p) => {
                p.close().await;
                Ok(())
            }
        }
    }

    /// The levels a metrics scrape reports.
    pub async fn levels(&self) -> Result<Levels, StoreError> {
        match &self.backend {
            Handle::Sled(s) => blocking(s, |s| s.levels()).await,
            Handle::Postgres(p) => p.levels().await,
        }
    }

    /// Adds a user and its email index entry in one transaction; `EmailTaken` if the address
    /// is in use. Durable on return.
    pub async fn insert_user(&self, new: NewUserRecord) -> Result<UserRecord, StoreError> {
        let mut results = self.insert_users(vec![new]).await?;
        results.pop().unwrap_or(Err(StoreError::NotFound))
    }

    /// Adds several users, each in its own transaction (one taken address does not stop the
    /// others). Durable on return. Returns each user's outcome in order.
    pub async fn insert_users(
        &self,
        users: Vec<NewUserRecord>,
    ) -> Result<Vec<Result<UserRecord, StoreError>>, StoreError> {
        match &self.backend {
            Handle::Sled(s) => s.insert_users(users).await,
            Handle::Postgres(p) => p.insert_users(users).await,
        }
    }

    /// Replaces a password hash with an equivalent stronger one (after a login with a bcrypt
    /// or weaker argon2 hash), if it is still `old_hash`: a password changed meanwhile wins.
    /// Neither the epoch nor the change time moves, since the password is the same. Durable
    /// on return. Returns whether it replaced the hash.
    pub async fn rehash(
        &self,
        id: u64,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool, StoreError> {
        match &self.backend {
            Handle::Sled(s) => s.rehash(id, old_hash, new_hash).await,
            Handle::Postgres(p) => p.rehash(id, old_hash, new_hash).await,
        }
    }

    /// The user with this id.
    pub async fn user(&self, id: u64) -> Result<Option<UserRecord>, StoreError> {
        match &self.backend {
            Handle::Sled(s) => s.user(id),
            Handle::Postgres(p) => p.user(id).await,
        }
    }

    /// The user with this normalised email.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        match &self.backend {
            Handle::Sled(s) => s.user_by_email(email),
            Handle::Postgres(p) => p.user_by_email(email).await,
        }
    }

    /// Users in id order, starting after `after`, at most `limit`.
    pub async fn users_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<UserRecord>, StoreError> {
        match &self.backend {
            Handle::Sled(s) => s.users_after(after, limit),
            Handle::Postgres(p) => p.users_after(after, limit).await,
        }
    }

    /// Applies `change` to a user atomically and records `event` (if any) with it; `NotFound`
    /// if there is no such user. Durable on return.
    pub async fn update_user(
        &self,
        id: u64,
        event: Option<NewEvent>,
        change: impl Fn(&mut UserRecord) -> Result<(), StoreError> + Send + Sync,
    ) -> Result<UserRecord, StoreError> {
        match &self.backend {
            Handle::Sled(s) => s.update_user(id, event, change).await,
            Handle::Postgres(p) => p.update_user(id, event, change).await,
        }
    }

    /// Replaces the password hash if the user's credential epoch is still `expected_epoch`
    /// (`Stale` otherwise), bumps the epoch, revokes every reset token of the user and queues
    /// `notice` (a mail payload). Durable on return.
    pub async fn set_password(
        &self,
        id: u64,
        expected_epoch: u64,
        password_hash: &str,
        now: u64,
        event: NewEvent,
        notice: Option<&[u8]>,
    ) -> Result<UserRecord, StoreError> {
        match &self.backend {
            Handle::Sled(s) => {
                s.set_password(id, expected_epoch, password_hash, now, event, notice)
                    .await
            }
            Handle::Postgres(p) => {
                p.set_password(id, expected_epoch, password_hash, now, event, notice)
                    .await
            }
        }
    }

    /// Removes a user, its email index entry and its tokens; `NotFound` if there is none.
    /// Durable on return.
    pub async fn delete_user(&self, id: u64) -> Result<UserRecord, StoreError> {
        match &self.backend {
            Handle::Sled(s) => s.delete_user(id).await,
            Handle::Postgres(p) => p.delete_user(id).await,
        }
    }

    /// Stores a newly issued token for an active user whose epoch is still the token's,
    /// revoking the user's oldest tokens beyond `max_live`, with the reset mail and the event,
    /// all in one transaction. Durable on return. `Stale` if the user changed meanwhile.
    pub async fn issue_token(
        &self,
        token: &IssuedToken,
        max_live: usize,
        mail: Option<&[u8]>,
        event: NewEvent,
    ) -> Result<(), StoreError> {
        match &self.backend {
            Handle::Sled(s) => s.issue_token(token, max_live, mail, event).await,
            Handle::Postgres(p) => p.issue_token(token, max_live, mail, event).await,
        }
    }

    /// Does the store work of [`Store::issue_token`] for a request that issues nothing (an
    /// unknown or disabled account): the same reads, the same number and size of writes and
    /// the same durable commit, against fixed decoy records that never grow. The reply time
    /// then says nothing about whether the account exists.
    pub async fn issue_decoy(&self, token: &IssuedToken, mail: &[u8]) -> Result<(), StoreError> {
        match &self.backend {
            Handle::Sled(s) => s.issue_decoy(token, mail).await,
            Handle::Postgres(p) => p.issue_decoy(token, mail).await,
        }
    }

    /// A sign-up in the concealing mode, in one transaction whichever way it goes: if the
    /// address has no account, stores `pending` and queues `confirm_mail` (to the address);
    /// if it has one, queues `existing_mail` (to the owner) and stores nothing else. Both ways
    /// read the index, write one record's worth and one sealed message, and wait for one
    /// durable commit. Returns whether the address was taken.
    pub async fn begin_sign_up(
        &self,
        pending: &IssuedSignUp,
        confirm_mail: &[u8],
        existing_mail: &[u8],
    ) -> Result<bool, StoreError> {
        match &self.backend {
            Handle::Sled(s) => s.begin_sign_up(pending, confirm_mail, existing_mail).await,
            Handle::Postgres(p) => p.begin_sign_up(pending, confirm_mail, existing_mail).await,
        }
    }

    /// The pending sign-up under `selector`, if there is one.
    pub async fn pending_sign_up(
        &self,
        selector: &[u8; 16],
    ) -> Result<Option<PendingSignUp>, StoreError> {
        match &self.backend {
            Handle::Sled(s) => s.pending_sign_up(selector),
            Handle::Postgres(p) => p.pending_sign_up(selector).await,
        }
    }

    /// Counts a wrong password given with a sign-up link; at `max_failures` the pending
    /// sign-up is deleted, so its link is dead. Durable on return.
    pub async fn sign_up_failed(
        &self,
        selector: &[u8; 16],
        max_failures: u32,
    ) -> Result<(), StoreError> {
        match &self.backend {
            Handle::Sled(s) => s.sign_up_failed(selector, max_failures).await,
            Handle::Postgres(p) => p.sign_up_failed(selector, max_failures).await,
        }
    }

    /// Confirms a pending sign-up: in one transaction, checks it again (`TokenRejected` if it
    /// is not valid at `now`), marks it used, and creates the account with its email index
    /// entry and its `user_created` event; `EmailTaken` (the link still used) if the address
    /// got an account meanwhile. Of two racing calls, on one host or several, exactly one
    /// creates the account. Durable on return.
    pub async fn complete_sign_up(
        &self,
        selector: &[u8; 16],
        verifier_hash: &[u8; 32],
        now: u64,
    ) -> Result<UserRecord, StoreError> {
        match &self.backend {
            Handle::Sled(s) => s.complete_sign_up(selector, verifier_hash, now).await,
            Handle::Postgres(p) => p.complete_sign_up(selector, verifier_hash, now).await,
        }
    }

    /// Judges a presented token without changing anything.
    pub async fn check_token(
        &self,
        selector: &[u8; 16],
        verifier_hash: &[u8; 32],
        now: u64,
    ) -> Result<TokenState, StoreError> {
        match &self.backend {
            Handle::Sled(s) => s.check_token(selector, verifier_hash, now),
            Handle::Postgres(p) => p.check_token(selector, verifier_hash, now).await,
        }
    }

    /// Uses a token: in one transaction, checks it again, sets the new password hash, bumps
    /// the user's epoch, marks the token used, deletes the user's other tokens, queues the
    /// notice and records the event. Of two racing calls with the same token, on one host or
    /// several, exactly one succeeds. `TokenRejected` if it cannot be used. Durable on return.
    pub async fn consume_token(
        &self,
        selector: &[u8; 16],
        verifier_hash: &[u8; 32],
        password_hash: &str,
        now: u64,
        event: NewEvent,
        notice: Option<&[u8]>,
    ) -> Result<UserRecord, StoreError> {
        match &self.backend {
            Handle::Sled(s) => {
                s.consume_token(selector, verifier_hash, password_hash, now, event, notice)
                    .await
            }
            Handle::Postgres(p) => {
                p.consume_token(selector, verifier_hash, password_hash, now, event, notice)
                    .await
            }
        }
    }

    /// Deletes up to `limit` tokens and up to `limit` pending sign-ups whose purge time has
    /// passed, walking only what it removes. Returns how many went; on PostgreSQL, 0 when
    /// another host is sweeping.
    pub async fn sweep_tokens(&self, now: u64, limit: usize) -> Result<usize, StoreError> {
        match &self.backend {
            Handle::Sled(s) => {
                blocking(s, move |s| {
                    Ok(s.sweep_tokens(now, limit)? + s.sweep_sign_ups(now, limit)?)
                })
                .await
            }
            Handle::Postgres(p) => p.sweep_tokens(now, limit).await,
        }
    }

    /// Takes one call from the limit `limit` for `key` (`burst` calls, refilled evenly over
    /// `per_secs`), counted across every host; returns the seconds to wait when it is spent.
    /// On sled there is one daemon, whose in-process limiter is already the whole count, so
    /// this takes nothing. On PostgreSQL the bucket is a row, updated in one statement.
    pub async fn take_shared(
        &self,
        limit: SharedLimit,
        key: &str,
        burst: u32,
        per_secs: u64,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        match &self.backend {
            Handle::Sled(_) => Ok(None),
            Handle::Postgres(p) => p.take_shared(limit, key, burst, per_secs, now_ms).await,
        }
    }

    /// Drops shared rate-limit buckets that are full again, up to `limit` of them, and the
    /// login failures that are forgotten: of accounts last failed before
    /// `account_before_ms`, of client addresses before `address_before_ms`.
    pub async fn sweep_limits(
        &self,
        now_ms: u64,
        limit: usize,
        account_before_ms: u64,
        address_before_ms: u64,
    ) -> Result<usize, StoreError> {
        match &self.backend {
            Handle::Sled(_) => Ok(self.failures.sweep(account_before_ms, address_before_ms)),
            Handle::Postgres(p) => {
                let buckets = p.sweep_limits(now_ms, limit).await?;
                let failures = p
                    .sweep_failures(account_before_ms, address_before_ms, limit)
                    .await?;
                Ok(buckets + failures)
            }
        }
    }

    /// The failed logins remembered for `account` (a normalised address) and, when the call
    /// has one, for the client address `ip` (as the per-IP limits key it).
    pub async fn failed_logins(
        &self,
        account: &str,
        ip: Option<std::net::IpAddr>,
    ) -> Result<FailedLogins, StoreError> {
        match &self.backend {
            Handle::Sled(_) => Ok(self.failures.failed_logins(account, ip)),
            Handle::Postgres(p) => p.failed_logins(account, ip).await,
        }
    }

    /// Counts a failed login on `account` (one more in a row, or the first if the last was
    /// before `forget_before_ms`) and from `ip`. Not made durable: a crash forgets at most
    /// the last few, and waiting for a flush would make a failure slower than a login for
    /// an unknown address.
    pub async fn login_failed(
        &self,
        account: &str,
        ip: Option<std::net::IpAddr>,
        now_ms: u64,
        forget_before_ms: u64,
    ) -> Result<(), StoreError> {
        match &self.backend {
            Handle::Sled(_) => {
                self.failures
                    .login_failed(account, ip, now_ms, forget_before_ms);
                Ok(())
            }
            Handle::Postgres(p) => p.login_failed(account, ip, now_ms, forget_before_ms).await,
        }
    }

    /// Forgets the failed logins of `account`, after a success or a new password.
    pub async fn forget_login_failures(&self, account: &str) -> Result<(), StoreError> {
        match &self.backend {
            Handle::Sled(_) => {
                self.failures.forget(account);
                Ok(())
            }
            Handle::Postgres(p) => p.forget_login_failures(account).await,
        }
    }

    /// Appends an event on its own, durable within a fraction of a second but not waited on:
    /// for events that no caller is told about (a failed login), where waiting for a flush
    /// would only slow the failure path and make it distinguishable by timing from a login
    /// for an unknown address. sled's group commit is asked for a flush at once; PostgreSQL
    /// commits asynchronously and its WAL writer flushes within `wal_writer_delay`.
    pub async fn record_event(&self, event: NewEvent) -> Result<(), StoreError> {
        match &self.backend {
            Handle::Sled(s) => s.record_event(event),
            Handle::Postgres(p) => p.record_event(event).await,
        }
    }

    /// Events with a sequence number above `after`, oldest first, at most `limit`. An event
    /// still being committed holds back the ones numbered after it, so a reader that passes
    /// the last number it saw as `after` never misses one.
    pub async fn events_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        match &self.backend {
            Handle::Sled(s) => s.events_after(after, limit),
            Handle::Postgres(p) => p.events_after(after, limit).await,
        }
    }

    /// Drops the oldest events beyond `max_count` and those older than `min_at`; returns how
    /// many went. On PostgreSQL, 0 when another host is trimming.
    pub async fn trim_events(&self, max_count: usize, min_at: u64) -> Result<usize, StoreError> {
        match &self.backend {
            Handle::Sled(s) => blocking(s, move |s| s.trim_events(max_count, min_at)).await,
            Handle::Postgres(p) => p.trim_events(max_count, min_at).await,
        }
    }

    /// Claims up to `limit` queued messages due at `now_ms`, earliest first, leased to this
    /// daemon for `lease`: no other sender takes them until the lease ends or the outcome
    /// is recorded. A daemon that dies mid-delivery leaves its messages to the others after
    /// the lease.
    pub async fn claim_mail(
        &self,
        now_ms: u64,
        limit: usize,
        lease: Duration,
    ) -> Result<Claimed, StoreError> {
        match &self.backend {
            Handle::Sled(s) => blocking(s, move |s| s.claim_mail(now_ms, limit, lease)).await,
            Handle::Postgres(p) => p.claim_mail(now_ms, limit, lease).await,
        }
    }

    /// Messages with ids above `after`, in id order, at most `limit`. A payload that does not
    /// open is listed empty.
    pub async fn mail_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        match &self.backend {
            Handle::Sled(s) => s.mail_after(after, limit),
            Handle::Postgres(p) => p.mail_after(after, limit).await,
        }
    }

    /// Removes a delivered message. Durable on return, so a restart does not send it again.
    pub async fn mail_sent(&self, id: u64) -> Result<(), StoreError> {
        match &self.backend {
            Handle::Sled(s) => s.mail_sent(id).await,
            Handle::Postgres(p) => p.mail_sent(id).await,
        }
    }

    /// Records a failed attempt: reschedules the message at `retry_at_ms`, or marks it dead
    /// when that is `None`, and ends the lease. Durable on return.
    pub async fn mail_failed(
        &self,
        id: u64,
        error: &str,
        retry_at_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        match &self.backend {
            Handle::Sled(s) => s.mail_failed(id, error, retry_at_ms).await,
            Handle::Postgres(p) => p.mail_failed(id, error, retry_at_ms).await,
        }
    }

    /// Puts a message (dead or queued) back in the queue, due now, with its attempt count
    /// reset. Durable on return.
    pub async fn mail_retry(&self, id: u64, now_ms: u64) -> Result<(), StoreError> {
        match &self.backend {
            Handle::Sled(s) => s.mail_retry(id, now_ms).await,
            Handle::Postgres(p) => p.mail_retry(id, now_ms).await,
        }
    }

    /// Deletes a message without sending it. Durable on return.
    pub async fn mail_drop(&self, id: u64) -> Result<(), StoreError> {
        match &self.backend {
            Handle::Sled(s) => s.mail_drop(id).await,
            Handle::Postgres(p) => p.mail_drop(id).await,
        }
    }
}

/// A backup being read: the bytes of a backup file (`dump.rs`) of the store as it was when
/// [`Store::begin_backup`] returned, while the store goes on serving. Dropping it ends it.
pub struct Backup {
    /// Where the records come from.
    source: BackupSource,
    /// Counts and checksums the lines; `None` until the header is out.
    writer: Option<dump::Writer>,
    /// The header, until it is given out.
    header: Option<dump::Header>,
    /// Lines made but not yet given out (they did not fit the last chunk).
    carry: std::collections::VecDeque<Vec<u8>>,
    /// Set once the trailer is made (it is given out when `carry` is empty).
    done: bool,
}

/// The backends' backup readers.
enum BackupSource {
    /// sled's; `None` only while a page is being read off the async threads.
    Sled(Option<SledBackup>),
    /// PostgreSQL's: a snapshot on a connection of its own.
    Postgres(Box<PgBackup>),
}

impl Store {
    /// Starts a backup at this instant. `Backup` if one is running already.
    pub async fn begin_backup(&self) -> Result<Backup, StoreError> {
        match &self.backend {
            Handle::Sled(s) => {
                let backup = blocking(s, |s| s.begin_backup()).await?;
                let header = dump::Header::new("sled", backup.next_id, backup.key_check.as_deref());
                Ok(Backup::new(BackupSource::Sled(Some(backup)), header))
            }
            Handle::Postgres(p) => {
                let backup = p.begin_backup().await?;
                let header =
                    dump::Header::new("postgres", backup.next_id, backup.key_check.as_deref());
                Ok(Backup::new(
                    BackupSource::Postgres(Box::new(backup)),
                    header,
                ))
            }
        }
    }
}

impl Backup {
    fn new(source: BackupSource, header: dump::Header) -> Backup {
        Backup {
            source,
            writer: None,
            header: Some(header),
            carry: std::collections::VecDeque::new(),
            done: false,
        }
    }

    /// Whether every byte of the file, trailer included, has been given out.
    pub fn finished(&self) -> bool {
        self.done && self.carry.is_empty()
    }

    /// The next bytes of the file, about `budget` of them (a single line longer than that
    /// comes alone); `None` once the trailer has been given out.
    pub async fn next_bytes(&mut self, budget: usize) -> Result<Option<Vec<u8>>, StoreError> {
        if self.finished() {
            return Ok(None);
        }
        let mut out = Vec::new();
        if let Some(header) = self.header.take() {
            self.writer = Some(dump::Writer::start(&header, &mut out).map_err(encoding)?);
        }
        loop {
            // Lines made earlier first; a line that does not fit waits for the next call.
            while let Some(line) = self.carry.front() {
                if !out.is_empty() && out.len() + line.len() > budget {
                    return Ok(Some(out));
                }
                out.extend_from_slice(line);
                self.carry.pop_front();
            }
            if self.done || out.len() >= budget {
                return Ok(Some(out));
            }
            let items = self.page(budget - out.len()).await?;
            let writer = self
                .writer
                .as_mut()
                .ok_or_else(|| StoreError::Backup("no header".into()))?;
            if items.is_empty() {
                // Every record is out: the trailer, made once, goes out like any line.
                let (end, _) = writer.end().map_err(encoding)?;
                self.carry.push_back(end);
                self.done = true;
                continue;
            }
            for item in &items {
                self.carry.push_back(writer.line(item).map_err(encoding)?);
            }
        }
    }

    /// The next records from the backend.
    async fn page(&mut self, budget: usize) -> Result<Vec<dump::Item>, StoreError> {
        match &mut self.source {
            BackupSource::Sled(slot) => {
                let mut backup = slot
                    .take()
                    .ok_or_else(|| StoreError::Backup("an earlier page failed".into()))?;
                let (backup, page) = tokio::task::spawn_blocking(move || {
                    let page = backup.next_page(budget);
                    (backup, page)
                })
                .await
                .map_err(|e| StoreError::Durability(format!("backup task failed: {e}")))?;
                *slot = Some(backup);
                page
            }
            BackupSource::Postgres(backup) => backup.next_page().await,
        }
    }
}

/// A record that does not encode (it decoded a moment ago, so this does not happen).
fn encoding(e: serde_json::Error) -> StoreError {
    StoreError::Backup(format!("cannot encode a record: {e}"))
}
