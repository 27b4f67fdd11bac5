//! Reset tokens: records keyed by selector (holding only a hash of the verifier), each user's
//! list of live selectors (for the per-user cap and for revoking them all), and a purge index
//! the sweeper walks from its start instead of scanning every token.

use latchkey_client::UserStatus;

use super::super::records::{IssuedToken, NewEvent, TokenRecord, TokenState, UserGate, UserRecord};
use super::users::PasswordChange;
use super::{abort, decode, keys, SledStore, StoreError, Tx, TxResult};

const TOKENS: &str = "selector_token";

/// Reads a user's list of live selectors (16 bytes each, oldest first).
fn selectors(bytes: Option<sled::IVec>) -> Vec<[u8; 16]> {
    bytes
        .map(|b| {
            b.chunks_exact(16)
                .filter_map(|c| <[u8; 16]>::try_from(c).ok())
                .collect()
        })
        .unwrap_or_default()
}

impl Tx<'_> {
    /// Deletes every token of a user except `keep`, and the user's list.
    pub(super) fn revoke_user_tokens(&self, user_id: u64, keep: Option<[u8; 16]>) -> TxResult<()> {
        let key = keys::user(user_id);
        for selector in selectors(self.user_tokens.get(key)?) {
            if Some(selector) == keep {
                continue;
            }
            self.remove_token(&selector)?;
        }
        self.user_tokens.remove(&key)?;
        Ok(())
    }

    /// Deletes one token record and its purge index entry.
    fn remove_token(&self, selector: &[u8; 16]) -> TxResult<()> {
        if let Some(record) = Tx::get::<TokenRecord>(&self.tokens, TOKENS, selector)? {
            self.token_expiry
                .remove(keys::expiry(record.purge_at, selector))?;
        }
        self.tokens.remove(selector.as_slice())?;
        Ok(())
    }
}

impl SledStore {
    /// Stores a newly issued token for an active user whose epoch is still the token's,
    /// revoking the user's oldest tokens beyond `max_live`, with the reset mail and the event,
    /// all in one transaction. Durable on return. `Stale` if the user changed meanwhile.
    pub(in crate::store) async fn issue_token(
        &self,
        token: &IssuedToken,
        max_live: usize,
        mail: Option<&[u8]>,
        event: NewEvent,
    ) -> Result<(), StoreError> {
        let event = self.new_event(event)?;
        let mail = self.prepare_mail(mail, token.record.issued_at)?;
        let user_key = keys::user(token.record.user_id);
        self.transact(|tx| {
            let user = tx.user(token.record.user_id)?;
            match &user {
                Some(u)
                    if u.credential_epoch == token.record.credential_epoch
                        && u.status == UserStatus::Active => {}
                _ => return abort(StoreError::Stale),
            }
            // Keep only tokens that can still be used, then make room for the new one.
            let mut live = Vec::new();
            for selector in selectors(tx.user_tokens.get(user_key)?) {
                match Tx::get::<TokenRecord>(&tx.tokens, TOKENS, &selector)? {
                    Some(t) if t.is_live(token.record.issued_at) => live.push(selector),
                    _ => {}
                }
            }
            while live.len() >= max_live.max(1) {
                let oldest = live.remove(0);
                tx.remove_token(&oldest)?;
            }
            live.push(token.selector);
            tx.user_tokens.insert(&user_key, live.concat())?;
            Tx::put(&tx.tokens, TOKENS, &token.selector, &token.record)?;
            tx.token_expiry
                .insert(keys::expiry(token.record.purge_at, &token.selector), &[])?;
            if let Some(mail) = &mail {
                tx.enqueue(mail)?;
            }
            tx.append_event(&event)
        })?;
        self.durable().await
    }

    /// Does the store work of [`Store::issue_token`] for a request that issues nothing (an
    /// unknown or disabled account): the same reads, the same number and size of writes, and
    /// the same durable flush, against fixed keys of the decoy tree. The reply time then says
    /// nothing about whether the account exists, and the decoy tree never grows.
    pub(in crate::store) async fn issue_decoy(
        &self,
        token: &IssuedToken,
        mail: &[u8],
    ) -> Result<(), StoreError> {
        let event = self.new_event(NewEvent {
            kind: latchkey_client::EventKind::ResetRequested,
            user_id: None,
            client_ip: None,
        })?;
        let event = super::encode("decoy", &*event)?;
        let mail = self.prepare_mail(Some(mail), token.record.issued_at)?;
        let record = super::encode(TOKENS, &token.record)?;
        let sealed = match &mail {
            Some(m) => super::encode("decoy", m)?,
            None => Vec::new(),
        };
        self.transact(|tx| {
            tx.decoy.get(b"user")?;
            let list = tx.decoy.get(b"list")?;
            tx.decoy.insert(
                b"list",
                list.map(|l| l.to_vec())
                    .unwrap_or_else(|| token.selector.to_vec()),
            )?;
            tx.decoy.insert(b"token", record.as_slice())?;
            tx.decoy.insert(b"purge", &token.selector)?;
            tx.decoy.insert(b"mail", sealed.as_slice())?;
            tx.decoy.insert(b"due", &token.selector)?;
            tx.decoy.insert(b"event", event.as_slice())?;
            Ok(())
        })?;
        self.durable().await
    }

    /// Judges a presented token without changing anything.
    pub(in crate::store) fn check_token(
        &self,
        selector: &[u8; 16],
        verifier_hash: &[u8; 32],
        now: u64,
    ) -> Result<TokenState, StoreError> {
        let Some(bytes) = self.inner.trees.tokens.get(selector)? else {
            return Ok(TokenState::Invalid);
        };
        let record: TokenRecord = decode(TOKENS, &bytes)?;
        let user = self.user_gate(record.user_id)?;
        Ok(record.state(verifier_hash, user, now))
    }

    /// Uses a token: in one transaction, checks it again, sets the new password hash, bumps
    /// the user's epoch, marks the token used, deletes the user's other tokens, queues the
    /// notice and records the event. Of two racing calls with the same token exactly one
    /// succeeds: sled runs conflicting transactions one after the other, and the second sees
    /// the token used. `TokenRejected` if it cannot be used. Durable on return.
    pub(in crate::store) async fn consume_token(
        &self,
        selector: &[u8; 16],
        verifier_hash: &[u8; 32],
        password_hash: &str,
        now: u64,
        event: NewEvent,
        notice: Option<&[u8]>,
    ) -> Result<UserRecord, StoreError> {
        let event = self.new_event(event)?;
        let notice = self.prepare_mail(notice, now)?;
        let user = self.transact(|tx| {
            let Some(mut token) = Tx::get::<TokenRecord>(&tx.tokens, TOKENS, selector)? else {
                return abort(StoreError::TokenRejected);
            };
            let Some(mut user) = tx.user(token.user_id)? else {
                return abort(StoreError::TokenRejected);
            };
            if !matches!(
                token.state(verifier_hash, Some(UserGate::from(&user)), now),
                TokenState::Valid { .. }
            ) {
                return abort(StoreError::TokenRejected);
            }
            token.used_at = Some(now);
            Tx::put(&tx.tokens, TOKENS, selector, &token)?;
            let mut event = event.clone();
            event.user_id = Some(user.id);
            let change = PasswordChange {
                password_hash,
                now,
                event: &event,
                notice: notice.as_ref(),
            };
            tx.change_password(&mut user, &change, Some(*selector))?;
            Ok(user)
        })?;
        self.durable().await?;
        Ok(user)
    }

    /// Deletes up to `limit` tokens whose purge time has passed, walking the purge index from
    /// its start. Returns how many went. Not waited on: a lost sweep is repeated.
    pub(in crate::store) fn sweep_tokens(
        &self,
        now: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut removed = 0;
        let end = keys::expiry(now, &[]);
        let due: Vec<[u8; 16]> = self
            .inner
            .trees
            .token_expiry
            .range(..end)
            .take(limit)
            .filter_map(|kv| kv.ok().and_then(|(k, _)| k.get(8..24)?.try_into().ok()))
            .collect();
        for selector in due {
            self.transact(|tx| {
                let Some(record) = Tx::get::<TokenRecord>(&tx.tokens, TOKENS, &selector)? else {
                    return Ok(());
                };
                if record.purge_at > now {
                    return Ok(());
                }
                tx.remove_token(&selector)?;
                // Drop it from the owner's list too, if it is still there.
                let key = keys::user(record.user_id);
                let list = selectors(tx.user_tokens.get(key)?);
                if list.contains(&selector) {
                    let rest: Vec<[u8; 16]> = list.into_iter().filter(|s| *s != selector).collect();
                    if rest.is_empty() {
                        tx.user_tokens.remove(&key)?;
                    } else {
                        tx.user_tokens.insert(&key, rest.concat())?;
                    }
                }
                Ok(())
            })?;
            removed += 1;
        }
        Ok(removed)
    }

    /// How many token records exist (live, used and expired-but-not-purged).
    #[cfg(test)]
    fn token_count(&self) -> usize {
        self.inner.trees.tokens.len()
    }
}

#[cfg(test)]
mod tests {
    use latchkey_client::EventKind;

    use super::super::test_sealer;
    use super::*;
    use crate::store::NewUserRecord;

    async fn store_with_user() -> (tempfile::TempDir, SledStore, UserRecord) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), 1 << 20, test_sealer(dir.path())).expect("open");
        let mut users = store
            .insert_users(vec![NewUserRecord {
                email: "sweep@example.com".into(),
                name: String::new(),
                role: "user".into(),
                status: UserStatus::Active,
                password_hash: "$argon2id$stub".into(),
                locale: None,
                created_at: 1,
            }])
            .await
            .expect("insert");
        let user = users.pop().expect("one result").expect("inserted");
        (dir, store, user)
    }

    fn token(user: &UserRecord, issued_at: u64, purge_at: u64, n: u8) -> IssuedToken {
        IssuedToken {
            selector: [n; 16],
            record: TokenRecord {
                user_id: user.id,
                verifier_hash: [n; 32],
                credential_epoch: user.credential_epoch,
                issued_at,
                expires_at: purge_at,
                used_at: None,
                purge_at,
            },
        }
    }

    #[tokio::test]
    async fn the_sweep_deletes_only_tokens_past_their_purge_time() {
        let (_dir, store, user) = store_with_user().await;
        let event = || NewEvent::user(EventKind::ResetRequested, user.id, None);
        for (n, purge_at) in [(1u8, 100u64), (2, 200), (3, 10_000)] {
            let t = token(&user, 50, purge_at, n);
            let issued = store.issue_token(&t, 10, None, event()).await;
            assert!(issued.is_ok(), "{issued:?}");
        }
        assert_eq!(store.token_count(), 3);
        assert_eq!(store.sweep_tokens(150, 100).ok(), Some(1));
        assert_eq!(store.sweep_tokens(150, 100).ok(), Some(0));
        assert_eq!(store.sweep_tokens(5_000, 100).ok(), Some(1));
        assert_eq!(store.token_count(), 1);
        let state = store.check_token(&[3; 16], &[3; 32], 60).ok();
        assert!(matches!(state, Some(TokenState::Valid { .. })), "{state:?}");
        // The swept tokens are gone from the user's list too: issuing up to the cap again
        // revokes nothing but what the cap demands.
        let list = store
            .inner
            .trees
            .user_tokens
            .get(keys::user(user.id))
            .ok()
            .flatten();
        assert_eq!(list.map(|l| l.len()), Some(16));
    }

    #[tokio::test]
    async fn a_wrong_verifier_is_invalid_even_for_a_live_selector() {
        let (_dir, store, user) = store_with_user().await;
        let t = token(&user, 50, 10_000, 7);
        let event = NewEvent::user(EventKind::ResetRequested, user.id, None);
        assert!(store.issue_token(&t, 3, None, event).await.is_ok());
        let mut wrong = [7u8; 32];
        wrong[31] ^= 1;
        assert_eq!(
            store.check_token(&[7; 16], &wrong, 60).ok(),
            Some(TokenState::Invalid)
        );
    }

    #[test]
    fn verifier_hashes_are_hex_and_old_number_arrays_still_read() {
        let mut hash = [0u8; 32];
        for (i, b) in hash.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37);
        }
        let record = TokenRecord {
            user_id: 9,
            verifier_hash: hash,
            credential_epoch: 2,
            issued_at: 3,
            expires_at: 4,
            used_at: None,
            purge_at: 5,
        };
        let json = serde_json::to_string(&record).expect("a record serialises");
        assert!(
            json.contains(r#""verifier_hash":"00254a6f94b9de03"#),
            "{json}"
        );
        let back: Option<TokenRecord> = serde_json::from_str(&json).ok();
        assert_eq!(back.map(|r| r.verifier_hash), Some(hash));
        // The format written before: an array of 32 numbers.
        let with = |hash: serde_json::Value| {
            let mut value = serde_json::to_value(&record).expect("a record serialises");
            value["verifier_hash"] = hash;
            serde_json::from_value::<TokenRecord>(value).map(|r| r.verifier_hash)
        };
        assert_eq!(with(serde_json::json!(hash.to_vec())).ok(), Some(hash));
        // Anything else is refused.
        let short = &hash[..31];
        let long = [&hash[..], &[1]].concat();
        for bad in [
            serde_json::json!("00"),
            serde_json::json!("g".repeat(64)),
            serde_json::json!("A".repeat(64)),
            serde_json::json!(short),
            serde_json::json!(long),
            serde_json::json!(7),
        ] {
            assert!(with(bad.clone()).is_err(), "{bad}");
        }
    }
}
