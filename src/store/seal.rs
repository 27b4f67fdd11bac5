//! Sealing of outbox payloads with XChaCha20-Poly1305.
//!
//! A queued reset mail holds the reset link, and the raw token must never rest in the
//! database. The payload is sealed under a key kept in its own file beside the database
//! (mode 0600), so a copy of the database alone (a backup, a support bundle) reveals no live
//! token. The message id is the associated data, so sealed payloads cannot be swapped between
//! records.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use super::{StoreConfig, StoreError};

/// Length of the random nonce stored in front of each sealed payload.
const NONCE_LEN: usize = 24;

/// The outbox cipher, and a key derived from it for hashing rate-limit keys.
pub(super) struct Sealer {
    /// The cipher keyed from the key file.
    cipher: XChaCha20Poly1305,
    /// SHA-256 of a label and the key: keys the hashes under which shared rate limits are
    /// stored, so the database holds no address a limit was kept for.
    digest_key: [u8; 32],
}

/// What the key check record holds, sealed under the id 0 that no message has. A store
/// remembers it from its first start, so a daemon given another key is told at start instead
/// of burying every queued message as unreadable.
const CHECK: &[u8] = b"latchkey outbox key check";

impl Sealer {
    /// The key `config` names: a systemd credential, or a file (by default
    /// `data_dir/outbox.key`) created with a fresh random key when it does not exist.
    pub(super) fn load(config: &StoreConfig) -> Result<Sealer, StoreError> {
        if let Some(name) = &config.outbox_key_credential {
            let path = crate::setting::credential_path("store.outbox_key_credential", name)
                .map_err(|e| StoreError::Key(e.to_string()))?;
            let key = std::fs::read(&path)
                .map_err(|e| StoreError::Key(format!("cannot read {}: {e}", path.display())))?;
            return Sealer::from_key(&key, &path);
        }
        let path = config
            .outbox_key_file
            .clone()
            .unwrap_or_else(|| config.data_dir.join("outbox.key"));
        Sealer::load_or_create(&path)
    }

    /// A sealer under a random key that is never stored: for reading a store whose mail is
    /// copied sealed and never opened (`copy-store`).
    pub(super) fn ephemeral() -> Sealer {
        let key = crate::random::bytes::<32>();
        let cipher = XChaCha20Poly1305::new((&key).into());
        Sealer {
            cipher,
            digest_key: [0; 32],
        }
    }

    /// The key `config` names if it exists, without creating one: for a restore, which must
    /// not invent a key for mail sealed under another. Returns where it looked too.
    pub(super) fn load_existing(
        config: &StoreConfig,
    ) -> Result<(Option<Sealer>, std::path::PathBuf), StoreError> {
        let path = match &config.outbox_key_credential {
            Some(name) => crate::setting::credential_path("store.outbox_key_credential", name)
                .map_err(|e| StoreError::Key(e.to_string()))?,
            None => config
                .outbox_key_file
                .clone()
                .unwrap_or_else(|| config.data_dir.join("outbox.key")),
        };
        match std::fs::read(&path) {
            Ok(key) => Ok((Some(Sealer::from_key(&key, &path)?), path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((None, path)),
            Err(e) => Err(StoreError::Key(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// Reads the key file, or creates it with a fresh random key when it does not exist.
    ///
    /// Several daemons may share one key file and start at once. The key is written whole to
    /// a private file beside it, synced, and then linked into place, which fails if another
    /// daemon got there first: no one ever reads a half-written key, and the loser reads the
    /// winner's.
    fn load_or_create(path: &Path) -> Result<Sealer, StoreError> {
        let err = |what: &str, e: std::io::Error| {
            StoreError::Key(format!("{what} {}: {e}", path.display()))
        };
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(parent) = parent {
            std::fs::create_dir_all(parent)
                .map_err(|e| err("cannot create the directory of", e))?;
        }
        let key = match std::fs::read(path) {
            Ok(key) => key,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Self::create_key(path, parent).map_err(|(what, e)| err(what, e))?
            }
            Err(e) => return Err(err("cannot read", e)),
        };
        if let Ok(meta) = std::fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), "outbox key file is readable by others; chmod 600 it");
            }
        }
        Sealer::from_key(&key, path)
    }

    /// Writes a fresh key to `path` unless one appears there meanwhile; returns the key that
    /// is there afterwards.
    fn create_key(
        path: &Path,
        parent: Option<&Path>,
    ) -> Result<Vec<u8>, (&'static str, std::io::Error)> {
        let key = crate::random::bytes::<32>();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let staged = path.with_file_name(format!(
            ".{name}.new-{}-{}",
            std::process::id(),
            super::dump::hex(&crate::random::bytes::<6>())
        ));
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&staged)
                .map_err(|e| ("cannot create", e))?;
            file.write_all(&key).map_err(|e| ("cannot write", e))?;
            file.sync_all().map_err(|e| ("cannot sync", e))?;
            match std::fs::hard_link(&staged, path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(("cannot create", e)),
            }
        })();
        // The staged file is only ever a private copy; it goes whatever happened.
        let _ = std::fs::remove_file(&staged);
        if written? {
            let dir = parent.unwrap_or(Path::new("."));
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| ("cannot sync the directory of", e))?;
            Ok(key.to_vec())
        } else {
            std::fs::read(path).map_err(|e| ("cannot read", e))
        }
    }

    /// The cipher for a key read from `path`.
    fn from_key(key: &[u8], path: &Path) -> Result<Sealer, StoreError> {
        let cipher = XChaCha20Poly1305::new_from_slice(key).map_err(|_| {
            StoreError::Key(format!("{} must hold exactly 32 bytes", path.display()))
        })?;
        let digest_key = Sha256::new()
            .chain_update(b"latchkey shared rate-limit keys\0")
            .chain_update(key)
            .finalize()
            .into();
        Ok(Sealer { cipher, digest_key })
    }

    /// A keyed hash of `value` in the rate-limit bucket `bucket` at the rate `rate` (burst,
    /// seconds); the same on every host with the same key.
    pub(super) fn limit_key(&self, bucket: i16, rate: (u32, u64), value: &[u8]) -> [u8; 32] {
        Sha256::new()
            .chain_update(self.digest_key)
            .chain_update(bucket.to_be_bytes())
            .chain_update(rate.0.to_be_bytes())
            .chain_update(rate.1.to_be_bytes())
            .chain_update(value)
            .finalize()
            .into()
    }

    /// A fresh key check value to remember in the store.
    pub(super) fn check_value(&self) -> Result<Vec<u8>, StoreError> {
        self.seal(0, CHECK)
    }

    /// Whether this key opens the check value the store remembers.
    pub(super) fn opens_check(&self, remembered: &[u8]) -> bool {
        self.open(0, remembered).is_ok_and(|plain| plain == CHECK)
    }

    /// Judges the key check value a store remembers (`None` on its first start) against this
    /// key. Returns a value to remember when there is none yet, or when the key changed but no
    /// mail is queued (nothing is lost then); refuses a changed key while `queued` messages
    /// wait, since none of them could be sent.
    pub(super) fn judge_check(
        &self,
        remembered: Option<&[u8]>,
        queued: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match remembered {
            Some(value) if self.opens_check(value) => Ok(None),
            None => Ok(Some(self.check_value()?)),
            Some(_) if queued == 0 => {
                tracing::warn!("the outbox key changed; no mail was queued, so nothing is lost");
                Ok(Some(self.check_value()?))
            }
            Some(_) => Err(StoreError::Key(format!(
                "this key is not the one the {queued} queued messages were sealed with; \
                 restore that key (on PostgreSQL every host must use the same \
                 store.outbox_key_file or store.outbox_key_credential)"
            ))),
        }
    }

    /// Seals `plain` for the message `id`.
    pub(super) fn seal(&self, id: u64, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        let nonce = crate::random::bytes::<NONCE_LEN>();
        let aad = id.to_be_bytes();
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .map_err(|_| StoreError::Key("sealing failed".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens a payload sealed for the message `id`.
    pub(super) fn open(&self, id: u64, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        let corrupt = || StoreError::Corrupt {
            tree: "msgid_message",
            reason: format!("message {id}: payload does not open with the outbox key"),
        };
        if sealed.len() < NONCE_LEN {
            return Err(corrupt());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let aad = id.to_be_bytes();
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .map_err(|_| corrupt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Daemons sharing one key file and starting together all end up with the one key that
    /// is in the file, and leave nothing else behind.
    #[test]
    fn daemons_creating_one_key_file_at_once_all_get_the_key_in_it() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("keys").join("outbox.key");
            let barrier = std::sync::Barrier::new(8);
            let keys: Vec<[u8; 32]> = std::thread::scope(|s| {
                let starts: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            Sealer::load_or_create(&path).map(|sealer| sealer.digest_key)
                        })
                    })
                    .collect();
                starts
                    .into_iter()
                    .map(|t| t.join().unwrap().expect("every start gets a key"))
                    .collect()
            });
            let on_disk = Sealer::from_key(&std::fs::read(&path).unwrap(), &path).unwrap();
            assert!(keys.iter().all(|k| *k == on_disk.digest_key));
            let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(left, ["outbox.key"]);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
