//! Pending sign-ups of the concealing sign-up mode: records keyed by selector (holding only a
//! hash of the verifier), and a purge index the sweeper walks from its start.

use latchkey_client::EventKind;

use super::super::records::{IssuedSignUp, NewEvent, PendingSignUp, SignUpState, UserRecord};
use super::{abort, keys, SledStore, StoreError, Tx, TxResult};

const SIGNUPS: &str = "selector_signup";

impl Tx<'_> {
    /// Deletes one pending sign-up and its purge index entry.
    fn remove_sign_up(&self, selector: &[u8; 16]) -> TxResult<()> {
        if let Some(record) = Tx::get::<PendingSignUp>(&self.signups, SIGNUPS, selector)? {
            self.signup_expiry
                .remove(keys::expiry(record.purge_at, selector))?;
        }
        self.signups.remove(selector.as_slice())?;
        Ok(())
    }
}

impl SledStore {
    /// See [`crate::store::Store::begin_sign_up`].
    pub(in crate::store) async fn begin_sign_up(
        &self,
        pending: &IssuedSignUp,
        confirm_mail: &[u8],
        existing_mail: &[u8],
    ) -> Result<bool, StoreError> {
        let now = pending.record.issued_at;
        // Both messages are sealed and numbered whichever is queued: the same work either way.
        let confirm = self.prepare_mail(Some(confirm_mail), now)?;
        let existing = self.prepare_mail(Some(existing_mail), now)?;
        let (Some(confirm), Some(existing)) = (confirm, existing) else {
            return Err(StoreError::NotFound);
        };
        let taken = self.transact(|tx| {
            let taken = tx.emails.get(keys::email(&pending.record.email))?.is_some();
            if taken {
                tx.enqueue(&existing)?;
            } else {
                Tx::put(&tx.signups, SIGNUPS, &pending.selector, &pending.record)?;
                tx.signup_expiry.insert(
                    keys::expiry(pending.record.purge_at, &pending.selector),
                    &[],
                )?;
                tx.enqueue(&confirm)?;
            }
            Ok(taken)
        })?;
        self.durable().await?;
        Ok(taken)
    }

    /// See [`crate::store::Store::pending_sign_up`].
    pub(in crate::store) fn pending_sign_up(
        &self,
        selector: &[u8; 16],
    ) -> Result<Option<PendingSignUp>, StoreError> {
        match self.inner.trees.signups.get(selector)? {
            Some(bytes) => Ok(Some(super::decode(SIGNUPS, &bytes)?)),
            None => Ok(None),
        }
    }

    /// See [`crate::store::Store::sign_up_failed`].
    pub(in crate::store) async fn sign_up_failed(
        &self,
        selector: &[u8; 16],
        max_failures: u32,
    ) -> Result<(), StoreError> {
        self.transact(|tx| {
            let Some(mut record) = Tx::get::<PendingSignUp>(&tx.signups, SIGNUPS, selector)? else {
                return Ok(());
            };
            record.failures = record.failures.saturating_add(1);
            if record.failures >= max_failures {
                tx.remove_sign_up(selector)
            } else {
                Tx::put(&tx.signups, SIGNUPS, selector, &record)
            }
        })?;
        self.durable().await
    }

    /// See [`crate::store::Store::complete_sign_up`]. sled runs conflicting transactions one
    /// after the other: of two racing calls the second sees the record used.
    pub(in crate::store) async fn complete_sign_up(
        &self,
        selector: &[u8; 16],
        verifier_hash: &[u8; 32],
        now: u64,
    ) -> Result<UserRecord, StoreError> {
        let id = self.next_id()?;
        let event = self.new_event(NewEvent::user(EventKind::UserCreated, id, None))?;
        let outcome = self.transact(|tx| {
            let Some(mut pending) = Tx::get::<PendingSignUp>(&tx.signups, SIGNUPS, selector)?
            else {
                return abort(StoreError::TokenRejected);
            };
            if pending.state(verifier_hash, now) != SignUpState::Valid {
                return abort(StoreError::TokenRejected);
            }
            pending.used_at = Some(now);
            Tx::put(&tx.signups, SIGNUPS, selector, &pending)?;
            if tx.emails.get(keys::email(&pending.email))?.is_some() {
                // Used up all the same: the link did its one job, which is now moot.
                return Ok(Err(StoreError::EmailTaken));
            }
            let record = UserRecord::new(id, pending.to_new_user(now));
            tx.emails
                .insert(keys::email(&record.email), &keys::user(id))?;
            tx.put_user(&record)?;
            tx.append_event(&event)?;
            Ok(Ok(record))
        })?;
        self.durable().await?;
        outcome
    }

    /// Deletes up to `limit` pending sign-ups whose purge time has passed, walking the purge
    /// index from its start. Returns how many went.
    pub(in crate::store) fn sweep_sign_ups(
        &self,
        now: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let end = keys::expiry(now, &[]);
        let due: Vec<[u8; 16]> = self
            .inner
            .trees
            .signup_expiry
            .range(..end)
            .take(limit)
            .filter_map(|kv| kv.ok().and_then(|(k, _)| k.get(8..24)?.try_into().ok()))
            .collect();
        let mut removed = 0;
        for selector in due {
            self.transact(|tx| tx.remove_sign_up(&selector))?;
            removed += 1;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_sealer;
    use super::*;

    fn pending(email: &str, n: u8, purge_at: u64) -> IssuedSignUp {
        IssuedSignUp {
            selector: [n; 16],
            record: PendingSignUp {
                verifier_hash: [n; 32],
                email: email.into(),
                name: String::new(),
                locale: None,
                password_hash: "$argon2id$stub".into(),
                issued_at: 10,
                expires_at: purge_at,
                used_at: None,
                purge_at,
                failures: 0,
            },
        }
    }

    #[tokio::test]
    async fn a_sign_up_becomes_one_account_once_and_the_sweep_removes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), 1 << 20, test_sealer(dir.path())).expect("open");
        let first = pending("new@example.com", 1, 1_000);
        assert!(!store
            .begin_sign_up(&first, b"c", b"e")
            .await
            .expect("begin"));
        let second = pending("new@example.com", 2, 1_000);
        assert!(!store
            .begin_sign_up(&second, b"c", b"e")
            .await
            .expect("begin"));
        let mut wrong = [1u8; 32];
        wrong[0] ^= 1;
        assert!(matches!(
            store.complete_sign_up(&[1; 16], &wrong, 20).await,
            Err(StoreError::TokenRejected)
        ));
        let user = store
            .complete_sign_up(&[1; 16], &[1; 32], 20)
            .await
            .expect("confirmed");
        assert_eq!(user.email, "new@example.com");
        assert!(matches!(
            store.complete_sign_up(&[1; 16], &[1; 32], 21).await,
            Err(StoreError::TokenRejected)
        ));
        // The other link for the same address finds it taken, and is used up by trying.
        assert!(matches!(
            store.complete_sign_up(&[2; 16], &[2; 32], 22).await,
            Err(StoreError::EmailTaken)
        ));
        let used = store
            .pending_sign_up(&[2; 16])
            .expect("read")
            .expect("kept");
        assert_eq!(used.state(&[2; 32], 23), SignUpState::Used);
        // A taken address stores no pending record.
        let third = pending("new@example.com", 3, 1_000);
        assert!(store
            .begin_sign_up(&third, b"c", b"e")
            .await
            .expect("begin"));
        assert!(store.pending_sign_up(&[3; 16]).expect("read").is_none());
        assert_eq!(store.sweep_sign_ups(999, 100).ok(), Some(0));
        assert_eq!(store.sweep_sign_ups(1_001, 100).ok(), Some(2));
        assert!(store.pending_sign_up(&[1; 16]).expect("read").is_none());
    }
}
