//! The records every backend stores and hands out, and the judgement of a token against its
//! owner, which must be the same on every backend.

use latchkey_client::{Event, EventKind, PasswordChanged, User, UserStatus};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// A user as stored: the API's [`User`] plus the password hash.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UserRecord {
    /// The user's id.
    pub id: u64,
    /// The normalised email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Application role label.
    pub role: String,
    /// Active or disabled.
    pub status: UserStatus,
    /// The password hash as a PHC string.
    pub password_hash: String,
    /// Preferred locale for mail.
    pub locale: Option<String>,
    /// Creation time (Unix seconds).
    pub created_at: u64,
    /// Last change of any field.
    pub updated_at: u64,
    /// Last password change.
    pub password_changed_at: u64,
    /// Bumped on every password change.
    pub credential_epoch: u64,
}

impl UserRecord {
    /// A new user's record under the id the store gave it.
    pub(super) fn new(id: u64, new: NewUserRecord) -> UserRecord {
        UserRecord {
            id,
            email: new.email,
            name: new.name,
            role: new.role,
            status: new.status,
            password_hash: new.password_hash,
            locale: new.locale,
            created_at: new.created_at,
            updated_at: new.created_at,
            password_changed_at: new.created_at,
            credential_epoch: 0,
        }
    }

    /// What a caller is told after a password change.
    pub fn password_changed(&self) -> PasswordChanged {
        PasswordChanged {
            user_id: self.id,
            credential_epoch: self.credential_epoch,
        }
    }

    /// The record as the API shows it, without the hash.
    pub fn to_api(&self) -> User {
        User {
            id: self.id,
            email: self.email.clone(),
            name: self.name.clone(),
            role: self.role.clone(),
            status: self.status,
            locale: self.locale.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            password_changed_at: self.password_changed_at,
            credential_epoch: self.credential_epoch,
        }
    }

    /// Every password change, whatever caused it: the new hash, a bumped epoch and change
    /// time. The backend revokes the user's tokens in the same transaction.
    pub(super) fn change_password(&mut self, password_hash: &str, now: u64) {
        self.password_hash = password_hash.to_owned();
        self.credential_epoch += 1;
        self.password_changed_at = now;
        self.updated_at = now;
    }
}

/// The two fields of a user record a token check needs. Decoding only these skips the
/// strings (email, name, password hash) that a check never looks at.
#[derive(Clone, Copy, Debug, Deserialize)]
pub struct UserGate {
    /// Active or disabled.
    pub status: UserStatus,
    /// Bumped on every password change.
    pub credential_epoch: u64,
}

impl From<&UserRecord> for UserGate {
    fn from(user: &UserRecord) -> UserGate {
        UserGate {
            status: user.status,
            credential_epoch: user.credential_epoch,
        }
    }
}

/// What the service hands over to create a user (already validated and hashed).
#[derive(Clone, Debug)]
pub struct NewUserRecord {
    /// Normalised email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Role label.
    pub role: String,
    /// Initial status.
    pub status: UserStatus,
    /// PHC string of the password.
    pub password_hash: String,
    /// Preferred locale.
    pub locale: Option<String>,
    /// Creation time to record.
    pub created_at: u64,
}

/// A reset token as stored. The verifier itself is never stored, only its SHA-256.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Whose password the token resets.
    pub user_id: u64,
    /// SHA-256 of the verifier.
    #[serde(with = "super::hex32")]
    pub verifier_hash: [u8; 32],
    /// The user's credential epoch when the token was issued; a later password change makes
    /// the token invalid.
    pub credential_epoch: u64,
    /// Issue time (Unix seconds).
    pub issued_at: u64,
    /// Expiry time (Unix seconds).
    pub expires_at: u64,
    /// When it was used, if it was. A used token is kept until `purge_at` so a second click
    /// can be told "already used" rather than "invalid".
    pub used_at: Option<u64>,
    /// When the sweeper deletes the record.
    pub purge_at: u64,
}

/// A token the service has generated, ready to store.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    /// The random selector, the record's key.
    pub selector: [u8; 16],
    /// The record to store.
    pub record: TokenRecord,
}

/// The role of an account created without one (and of every account a sign-up makes).
pub const DEFAULT_ROLE: &str = "user";

/// A sign-up waiting for its address to be confirmed (`signup.conceal_taken_addresses`): the
/// account it will become, under a random selector, with only the SHA-256 of the verifier
/// mailed to the address. Nothing is in the email index until it is confirmed, so a pending
/// sign-up holds no address against its real owner.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingSignUp {
    /// SHA-256 of the verifier.
    #[serde(with = "super::hex32")]
    pub verifier_hash: [u8; 32],
    /// The normalised address it was made for.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Preferred locale.
    pub locale: Option<String>,
    /// PHC string of the password chosen at sign-up; confirming needs the password again.
    pub password_hash: String,
    /// Issue time (Unix seconds).
    pub issued_at: u64,
    /// Expiry time (Unix seconds).
    pub expires_at: u64,
    /// When it was confirmed, if it was; kept until `purge_at` so a second click is told
    /// "used" rather than "invalid".
    pub used_at: Option<u64>,
    /// When the sweeper deletes the record.
    pub purge_at: u64,
    /// Wrong passwords given with the link so far.
    pub failures: u32,
}

impl PendingSignUp {
    /// What a presented verifier amounts to at `now`.
    pub fn state(&self, verifier_hash: &[u8; 32], now: u64) -> SignUpState {
        if !bool::from(self.verifier_hash.ct_eq(verifier_hash)) {
            SignUpState::Invalid
        } else if self.used_at.is_some() {
            SignUpState::Used
        } else if now >= self.expires_at {
            SignUpState::Expired
        } else {
            SignUpState::Valid
        }
    }

    /// The account it becomes, created at `now`.
    pub fn to_new_user(&self, now: u64) -> NewUserRecord {
        NewUserRecord {
            email: self.email.clone(),
            name: self.name.clone(),
            role: DEFAULT_ROLE.into(),
            status: UserStatus::Active,
            password_hash: self.password_hash.clone(),
            locale: self.locale.clone(),
            created_at: now,
        }
    }
}

/// A pending sign-up the service has made, ready to store.
#[derive(Clone, Debug)]
pub struct IssuedSignUp {
    /// The random selector, the record's key.
    pub selector: [u8; 16],
    /// The record to store.
    pub record: PendingSignUp,
}

/// What a presented sign-up link amounts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignUpState {
    /// Can be confirmed now.
    Valid,
    /// Was valid but has expired.
    Expired,
    /// Was confirmed already.
    Used,
    /// Unknown selector or wrong verifier.
    Invalid,
}

/// What a presented token amounts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenState {
    /// Can be used now, until the expiry time.
    Valid {
        /// The user it belongs to.
        user_id: u64,
        /// When it expires.
        expires_at: u64,
    },
    /// Was valid but has expired.
    Expired,
    /// Was used already.
    Used,
    /// Unknown, tampered with, revoked, or from before a password change.
    Invalid,
}

impl TokenRecord {
    /// Judges this record against a presented verifier hash, the owner's current record and
    /// the time. The hash comparison is constant-time.
    pub(super) fn state(
        &self,
        verifier_hash: &[u8; 32],
        user: Option<UserGate>,
        now: u64,
    ) -> TokenState {
        if !bool::from(self.verifier_hash.ct_eq(verifier_hash)) {
            return TokenState::Invalid;
        }
        let Some(user) = user else {
            return TokenState::Invalid;
        };
        if user.credential_epoch != self.credential_epoch && self.used_at.is_none() {
            return TokenState::Invalid;
        }
        if self.used_at.is_some() {
            return TokenState::Used;
        }
        if user.status != UserStatus::Active {
            return TokenState::Invalid;
        }
        if now >= self.expires_at {
            return TokenState::Expired;
        }
        TokenState::Valid {
            user_id: self.user_id,
            expires_at: self.expires_at,
        }
    }

    /// Whether the token still counts against its owner's cap of live tokens at `now`.
    pub(super) fn is_live(&self, now: u64) -> bool {
        self.used_at.is_none() && self.expires_at > now
    }
}

/// Where a message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    /// Waiting for its next attempt.
    Queued,
    /// Gave up: rejected permanently or out of attempts. Kept until an admin retries or drops
    /// it.
    Dead,
}

impl OutboxState {
    /// The state stored under `name`.
    pub(super) fn from_name(name: &str) -> Option<OutboxState> {
        match name {
            "queued" => Some(OutboxState::Queued),
            "dead" => Some(OutboxState::Dead),
            _ => None,
        }
    }
}

/// A queued message as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutboxRecord {
    /// The message id.
    pub id: u64,
    /// When it was queued (Unix seconds).
    pub created_at: u64,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When the next attempt is due (Unix milliseconds); meaningless when dead.
    pub next_attempt_ms: u64,
    /// Queued or dead.
    pub state: OutboxState,
    /// The last delivery error, for operators (an SMTP reply; never a secret).
    pub last_error: Option<String>,
    /// The sealed payload.
    pub(super) payload: Vec<u8>,
}

/// A message and its opened payload.
#[derive(Clone, Debug)]
pub struct OutboxMessage {
    /// The stored record.
    pub record: OutboxRecord,
    /// The payload in clear, as it was queued.
    pub payload: Vec<u8>,
}

/// What a sender claimed from the outbox.
#[derive(Debug, Default)]
pub struct Claimed {
    /// Messages due now, leased to this daemon: no other sender takes them until the lease
    /// runs out or this one reports the outcome.
    pub due: Vec<OutboxMessage>,
    /// When the earliest queued message not claimed here is due (Unix milliseconds), if one
    /// is queued.
    pub next_due_ms: Option<u64>,
}

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

/// The levels a metrics scrape reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct Levels {
    /// Accounts.
    pub users: u64,
    /// Token records, live or remembered.
    pub tokens: u64,
    /// Messages waiting for delivery.
    pub queued: u64,
    /// Messages that gave up.
    pub dead: u64,
    /// When the oldest queued message was queued (Unix seconds).
    pub oldest_queued_at: Option<u64>,
    /// Bytes the data takes on disk.
    pub bytes: u64,
}

/// A rate limit that must hold for every host at once: spreading calls over hosts must gain
/// nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedLimit {
    /// Reset requests per normalised address (the cooldown between mails).
    ResetPerEmail,
    /// Sign-ups per normalised address.
    SignUpPerEmail,
}

impl SharedLimit {
    /// The number the bucket is stored under.
    pub(super) fn id(self) -> i16 {
        match self {
            SharedLimit::ResetPerEmail => 1,
            SharedLimit::SignUpPerEmail => 2,
        }
    }
}

/// The failed logins remembered for one attempt: of its account (a normalised address, with
/// or without an account behind it) and of its client address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FailedLogins {
    /// Consecutive failures on the account (0 when none is remembered).
    pub account_failures: u32,
    /// When the account's last failure was (Unix ms).
    pub account_last_ms: u64,
    /// When the client address last failed a login on any account (Unix ms).
    pub ip_last_ms: Option<u64>,
}

/// How the store is doing, as the watchdog and `health` see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A write can be made durable.
    Ok,
    /// The database cannot be reached (refused, reset, restarting): restarting this daemon
    /// would not help, and it reconnects by itself.
    Unreachable,
    /// The store does not answer in time: a restart may help.
    Stalled,
}

impl Probe {
    /// The name `health` reports.
    pub fn name(self) -> &'static str {
        match self {
            Probe::Ok => "ok",
            Probe::Unreachable => "unreachable",
            Probe::Stalled => "stalled",
        }
    }
}

/// The latest probe, shared between the monitor that takes it and `health` that reports it.
#[derive(Debug, Default)]
pub struct ProbeCell(std::sync::atomic::AtomicU8);

impl ProbeCell {
    /// Records a probe.
    pub fn set(&self, probe: Probe) {
        let n = match probe {
            Probe::Ok => 0,
            Probe::Unreachable => 1,
            Probe::Stalled => 2,
        };
        self.0.store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// The latest probe (`Ok` before the first).
    pub fn get(&self) -> Probe {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            0 => Probe::Ok,
            1 => Probe::Unreachable,
            _ => Probe::Stalled,
        }
    }
}
