//! User records and the email index.

use latchkey_client::EventKind;

use super::super::records::{NewEvent, NewUserRecord, UserGate, UserRecord};
use super::super::{EventRecord, OutboxRecord};
use super::{abort, decode, keys, SledStore, StoreError, Tx, TxResult};

pub(super) const USERS: &str = "userid_user";

impl Tx<'_> {
    /// The user with this id, inside a transaction.
    pub(super) fn user(&self, id: u64) -> TxResult<Option<UserRecord>> {
        Tx::get(&self.users, USERS, &keys::user(id))
    }

    /// Writes a user record.
    pub(super) fn put_user(&self, record: &UserRecord) -> TxResult<()> {
        Tx::put(&self.users, USERS, &keys::user(record.id), record)
    }
}

impl SledStore {
    /// Adds several users, each in its own transaction (one taken address does not stop the
    /// others), with one durable flush for the batch. Returns each user's outcome in order.
    pub(in crate::store) async fn insert_users(
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
        let record = UserRecord::new(id, new);
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
    pub(in crate::store) async fn rehash(
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
    pub(in crate::store) fn user(&self, id: u64) -> Result<Option<UserRecord>, StoreError> {
        match self.inner.trees.users.get(keys::user(id))? {
            Some(bytes) => Ok(Some(decode(USERS, &bytes)?)),
            None => Ok(None),
        }
    }

    /// The status and credential epoch of the user with this id.
    pub(in crate::store) fn user_gate(&self, id: u64) -> Result<Option<UserGate>, StoreError> {
        match self.inner.trees.users.get(keys::user(id))? {
            Some(bytes) => Ok(Some(decode(USERS, &bytes)?)),
            None => Ok(None),
        }
    }

    /// The user with this normalised email.
    pub(in crate::store) fn user_by_email(
        &self,
        email: &str,
    ) -> Result<Option<UserRecord>, StoreError> {
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
    pub(in crate::store) fn users_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<UserRecord>, StoreError> {
        let start = keys::user(after.saturating_add(1));
        self.inner
            .trees
            .users
            .range(start..)
            .take(limit)
            .map(|kv| decode(USERS, &kv?.1))
            .collect()
    }

    /// Applies `change` to a user atomically and records `event` (if any) with it; `NotFound`
    /// if there is no such user. Durable on return.
    pub(in crate::store) async fn update_user(
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
    pub(in crate::store) async fn set_password(
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
    pub(in crate::store) async fn delete_user(&self, id: u64) -> Result<UserRecord, StoreError> {
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
        record.change_password(change.password_hash, change.now);
        self.put_user(record)?;
        self.revoke_user_tokens(record.id, keep)?;
        self.append_event(change.event)?;
        if let Some(notice) = change.notice {
            self.enqueue(notice)?;
        }
        Ok(())
    }
}
