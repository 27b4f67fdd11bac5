//! User records and the email index.

use latchkey_client::{EventKind, PasswordChanged, User, UserStatus};
use serde::{Deserialize, Serialize};

use super::{
    abort, decode, keys, EventRecord, NewEvent, OutboxRecord, Store, StoreError, Tx, TxResult,
};

pub(super) const USERS: &str = "userid_user";

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

impl Tx<'_> {
    /// The user with this id, inside a transaction.
    pub(super) fn user(&self, id: u64) -> TxResult<Option<UserRecord>> {
        Tx::get(self.users, USERS, &keys::user(id))
    }

    /// Writes a user record.
    pub(super) fn put_user(&self, record: &UserRecord) -> TxResult<()> {
        Tx::put(self.users, USERS, &keys::user(record.id), record)
    }
}

impl Store {
    /// Adds a user and its email index entry in one transaction; `EmailTaken` if the address
    /// is in use. Durable on return.
    pub async fn insert_user(&self, new: NewUserRecord) -> Result<UserRecord, StoreError> {
        let mut results = self.insert_users(vec![new]).await?;
        results.pop().unwrap_or(Err(StoreError::NotFound))
    }

    /// Adds several users, each in its own transaction (one taken address does not stop the
    /// others), with one durable flush for the batch. Returns each user's outcome in order.
    pub async fn insert_users(
        &self,
        users: Vec<NewUserRecord>,
    ) -> Result<Vec<Result<UserRecord, StoreError>>, StoreError> {
        let mut results = Vec::with_capacity(users.len());
        for new in users {
            results.push(self.insert_one(new));
        }
        self.durable().await?;
        Ok(results)
    }

    /// One user's insert transaction, not yet durable.
    fn insert_one(&self, new: NewUserRecord) -> Result<UserRecord, StoreError> {
        let id = self.next_id()?;
        let record = UserRecord {
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
        };
        let event = self.new_event(NewEvent::user(EventKind::UserCreated, id, None))?;
        self.transact(|tx| {
            if tx.emails.get(keys::email(&record.email))?.is_some() {
                return abort(StoreError::EmailTaken);
            }
            tx.emails
                .insert(keys::email(&record.email), &keys::user(id))?;
            tx.put_user(&record)?;
            tx.append_event(&event)
        })?;
        Ok(record)
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
        let replaced = self.transact(|tx| {
            let Some(mut record) = tx.user(id)? else {
                return Ok(false);
            };
            if record.password_hash != old_hash {
                return Ok(false);
            }
            record.password_hash = new_hash.to_owned();
            tx.put_user(&record)?;
            Ok(true)
        })?;
        self.durable().await?;
        Ok(replaced)
    }

    /// The user with this id.
    pub fn user(&self, id: u64) -> Result<Option<UserRecord>, StoreError> {
        match self.inner.trees.users.get(keys::user(id))? {
            Some(bytes) => Ok(Some(decode(USERS, &bytes)?)),
            None => Ok(None),
        }
    }

    /// The status and credential epoch of the user with this id.
    pub fn user_gate(&self, id: u64) -> Result<Option<UserGate>, StoreError> {
        match self.inner.trees.users.get(keys::user(id))? {
            Some(bytes) => Ok(Some(decode(USERS, &bytes)?)),
            None => Ok(None),
        }
    }

    /// The user with this normalised email.
    pub fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        match self.inner.trees.emails.get(keys::email(email))? {
            Some(id) => match keys::read_u64(&id) {
                Some(id) => self.user(id),
                None => Err(StoreError::Corrupt {
                    tree: "email_userid",
                    reason: "id is not 8 bytes".into(),
                }),
            },
            None => Ok(None),
        }
    }

    /// Users in id order, starting after `after`, at most `limit`.
    pub fn users_after(&self, after: u64, limit: usize) -> Result<Vec<UserRecord>, StoreError> {
        let start = keys::user(after.saturating_add(1));
        self.inner
            .trees
            .users
            .range(start..)
            .take(limit)
            .map(|kv| decode(USERS, &kv?.1))
            .collect()
    }

    /// How many users there are.
    pub fn user_count(&self) -> usize {
        self.inner.trees.users.len()
    }

    /// Applies `change` to a user atomically and records `event` (if any) with it; `NotFound`
    /// if there is no such user. Durable on return.
    pub async fn update_user(
        &self,
        id: u64,
        event: Option<NewEvent>,
        change: impl Fn(&mut UserRecord) -> Result<(), StoreError>,
    ) -> Result<UserRecord, StoreError> {
        let event = event.map(|e| self.new_event(e)).transpose()?;
        let record = self.transact(|tx| {
            let Some(mut record) = tx.user(id)? else {
                return abort(StoreError::NotFound);
            };
            if let Err(e) = change(&mut record) {
                return abort(e);
            }
            tx.put_user(&record)?;
            if let Some(event) = &event {
                tx.append_event(event)?;
            }
            Ok(record)
        })?;
        self.durable().await?;
        Ok(record)
    }

    /// Replaces the password hash if the user's credential epoch is still `expected_epoch`
    /// (`Stale` otherwise), bumps the epoch, revokes every reset token of the user and queues
    /// `notice` (a sealed mail payload). Durable on return.
    pub async fn set_password(
        &self,
        id: u64,
        expected_epoch: u64,
        password_hash: &str,
        now: u64,
        event: NewEvent,
        notice: Option<&[u8]>,
    ) -> Result<UserRecord, StoreError> {
        let event = self.new_event(event)?;
        let notice = self.prepare_mail(notice, now)?;
        let record = self.transact(|tx| {
            let Some(mut record) = tx.user(id)? else {
                return abort(StoreError::NotFound);
            };
            if record.credential_epoch != expected_epoch {
                return abort(StoreError::Stale);
            }
            let change = PasswordChange {
                password_hash,
                now,
                event: &event,
                notice: notice.as_ref(),
            };
            tx.change_password(&mut record, &change, None)?;
            Ok(record)
        })?;
        self.durable().await?;
        Ok(record)
    }

    /// Removes a user, its email index entry and its tokens; `NotFound` if there is none.
    /// Durable on return.
    pub async fn delete_user(&self, id: u64) -> Result<UserRecord, StoreError> {
        let event = self.new_event(NewEvent::user(EventKind::UserDeleted, id, None))?;
        let record = self.transact(|tx| {
            let Some(record) = tx.user(id)? else {
                return abort(StoreError::NotFound);
            };
            tx.users.remove(&keys::user(id))?;
            tx.emails.remove(keys::email(&record.email))?;
            tx.revoke_user_tokens(id, None)?;
            tx.append_event(&event)?;
            Ok(record)
        })?;
        self.durable().await?;
        Ok(record)
    }
}

/// What goes with every password change, prepared before its transaction.
pub(super) struct PasswordChange<'a> {
    /// The new hash.
    pub password_hash: &'a str,
    /// The change time.
    pub now: u64,
    /// The event to record.
    pub event: &'a EventRecord,
    /// The notice to queue.
    pub notice: Option<&'a OutboxRecord>,
}

impl Tx<'_> {
    /// Every password change, whatever caused it: the new hash, a bumped epoch and change
    /// time, every reset token of the user revoked but `keep`, the event and the notice.
    pub(super) fn change_password(
        &self,
        record: &mut UserRecord,
        change: &PasswordChange<'_>,
        keep: Option<[u8; 16]>,
    ) -> TxResult<()> {
        record.password_hash = change.password_hash.to_owned();
        record.credential_epoch += 1;
        record.password_changed_at = change.now;
        record.updated_at = change.now;
        self.put_user(record)?;
        self.revoke_user_tokens(record.id, keep)?;
        self.append_event(change.event)?;
        if let Some(notice) = change.notice {
            self.enqueue(notice)?;
        }
        Ok(())
    }
}
