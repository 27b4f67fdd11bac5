//! Loading a backup into a new sled database, with the daemon stopped: the records as they
//! are in the file, and the indexes rebuilt from them.

use std::path::Path;

use super::super::dump::{self, Item};
use super::super::records::OutboxState;
use super::{encode, keys, StoreError, Trees, ID_BASE, OUTBOX_KEY_CHECK};

/// A new database being filled from a backup.
pub(in crate::store) struct SledLoader {
    db: sled::Db,
    trees: Trees,
    /// Unused tokens per user as (user, issue time, selector): each user's token list is
    /// written at the end, oldest first, as the store keeps it.
    lists: Vec<(u64, u64, [u8; 16])>,
}

impl SledLoader {
    /// Creates the database at `path`, which must not exist.
    pub(in crate::store) fn create(path: &Path) -> Result<SledLoader, StoreError> {
        if path.exists() {
            return Err(StoreError::Backup(format!(
                "{} exists already",
                path.display()
            )));
        }
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(None)
            .create_new(true)
            .open()?;
        let trees = Trees::open(&db)?;
        Ok(SledLoader {
            db,
            trees,
            lists: Vec::new(),
        })
    }

    /// Writes one record and its index entries.
    pub(in crate::store) fn load(&mut self, item: &Item) -> Result<(), StoreError> {
        let t = &self.trees;
        match item {
            Item::User(user) => {
                t.users
                    .insert(keys::user(user.id), encode("userid_user", user)?)?;
                t.emails
                    .insert(keys::email(&user.email), &keys::user(user.id))?;
            }
            Item::Token(token) => {
                let selector = dump::selector(&token.selector)
                    .ok_or_else(|| StoreError::Backup("a token selector is not hex".into()))?;
                t.tokens
                    .insert(selector, encode("selector_token", &token.record)?)?;
                t.token_expiry
                    .insert(keys::expiry(token.record.purge_at, &selector), &[])?;
                if token.record.used_at.is_none() {
                    self.lists
                        .push((token.record.user_id, token.record.issued_at, selector));
                }
            }
            Item::Mail(mail) => {
                let record = mail.to_record().ok_or_else(|| {
                    StoreError::Backup(format!("message {} is not base64", mail.id))
                })?;
                t.outbox
                    .insert(keys::user(record.id), encode("msgid_message", &record)?)?;
                if record.state == OutboxState::Queued {
                    t.outbox_due
                        .insert(keys::due(record.next_attempt_ms, record.id), &[])?;
                }
            }
            Item::Event(event) => {
                t.events
                    .insert(keys::user(event.seq), encode("seq_event", event)?)?;
            }
            Item::End(_) => {}
        }
        Ok(())
    }

    /// Writes the token lists, the id base and the key check value, and flushes.
    pub(in crate::store) fn finish(
        mut self,
        next_id: u64,
        key_check: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        self.lists.sort_unstable();
        for chunk in self.lists.chunk_by(|a, b| a.0 == b.0) {
            let Some((user, _, _)) = chunk.first() else {
                continue;
            };
            let list: Vec<u8> = chunk.iter().flat_map(|(_, _, s)| *s).collect();
            self.trees.user_tokens.insert(keys::user(*user), list)?;
        }
        // A fresh database counts from 0: new ids start above every id in the backup.
        self.trees.meta.insert(ID_BASE, &next_id.to_be_bytes())?;
        if let Some(check) = key_check {
            self.trees.meta.insert(OUTBOX_KEY_CHECK, check)?;
        }
        self.db.flush()?;
        Ok(())
    }
}
