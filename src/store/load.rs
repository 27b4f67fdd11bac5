//! Restoring a backup into a new sled data directory, with the daemon stopped. The file is
//! checked whole before anything is written, the database is built beside the target and
//! renamed into place last, so a refused or failed restore changes nothing.

use std::path::{Path, PathBuf};

use super::dump::{self, Counts, DumpError};
use super::seal::Sealer;
use super::sled::SledLoader;
use super::{StoreConfig, StoreError};

/// Why a restore or a copy did not happen. Nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The backup file was refused.
    #[error(transparent)]
    Dump(#[from] DumpError),
    /// The store could not be opened, read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The restore was refused before it wrote anything; the message says why and what to do.
    #[error("{0}")]
    Refused(String),
}

/// What a restore may do beyond the safe default.
#[derive(Clone, Copy, Debug, Default)]
pub struct RestoreOptions {
    /// Replace a data directory that holds a store (it is kept beside, renamed).
    pub force: bool,
    /// Restore without the queued mail, when the outbox key it was sealed under is lost.
    pub drop_mail: bool,
}

/// What a restore did.
#[derive(Clone, Debug)]
pub struct Restored {
    /// The records restored.
    pub counts: Counts,
    /// Messages left out (`drop_mail`).
    pub mail_dropped: u64,
    /// Where the store that was replaced now is (`force`).
    pub replaced: Option<PathBuf>,
}

/// Restores `file` into the sled store of `config` (its `data_dir`).
pub fn restore_sled(
    file: &Path,
    config: &StoreConfig,
    options: RestoreOptions,
) -> Result<Restored, LoadError> {
    let summary = dump::verify(file)?;
    let db_path = config.data_dir.join("db");
    if db_path.exists() {
        // sled locks its directory: a running daemon makes the open fail, and nothing is
        // touched.
        match sled::Config::new().path(&db_path).open() {
            Err(e) => {
                return Err(LoadError::Refused(format!(
                    "{} is in use (is latchkeyd running on it? stop it first): {e}",
                    db_path.display()
                )))
            }
            Ok(db) => {
                let mut empty = true;
                for name in [
                    "userid_user",
                    "selector_token",
                    "msgid_message",
                    "seq_event",
                ] {
                    empty &= db.open_tree(name).map_err(StoreError::from)?.is_empty();
                }
                drop(db);
                if !empty && !options.force {
                    return Err(LoadError::Refused(format!(
                        "{} holds a store already; restore into an empty data directory, or pass --force to replace it (it is kept, renamed)",
                        db_path.display()
                    )));
                }
            }
        }
    }
    let with_mail = summary.counts.mail > 0 && !options.drop_mail;
    let key_check = if with_mail {
        let (sealer, key_path) = Sealer::load_existing(config)?;
        let Some(sealer) = sealer else {
            return Err(LoadError::Refused(format!(
                "the backup holds {} messages sealed under an outbox key, and there is no key at {}: copy the key file of the store the backup came from there, or pass --drop-mail to restore without the queued mail",
                summary.counts.mail,
                key_path.display()
            )));
        };
        let check = summary.header.key_check();
        if let Some(check) = &check {
            if !sealer.opens_check(check) {
                return Err(LoadError::Refused(format!(
                    "the outbox key at {} is not the one the backup's mail was sealed under: use the key file of the store the backup came from, or pass --drop-mail to restore without the queued mail",
                    key_path.display()
                )));
            }
        }
        check
    } else {
        None
    };
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        LoadError::Refused(format!("cannot create {}: {e}", config.data_dir.display()))
    })?;
    let building = config.data_dir.join("db.restoring");
    if building.exists() {
        // Left by a restore that did not finish; it was never in use.
        std::fs::remove_dir_all(&building).map_err(|e| {
            LoadError::Refused(format!("cannot remove {}: {e}", building.display()))
        })?;
    }
    let written = build(file, &building, with_mail, key_check.as_deref());
    let counts = match written {
        Ok(counts) => counts,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&building);
            return Err(e);
        }
    };
    let replaced = if db_path.exists() {
        let aside = config
            .data_dir
            .join(format!("db.replaced-{}", crate::clock::now()));
        std::fs::rename(&db_path, &aside).map_err(|e| {
            LoadError::Refused(format!("cannot move {} aside: {e}", db_path.display()))
        })?;
        Some(aside)
    } else {
        None
    };
    std::fs::rename(&building, &db_path).map_err(|e| {
        LoadError::Refused(format!("cannot move the restored store into place: {e}"))
    })?;
    sync_dir(&config.data_dir)?;
    Ok(Restored {
        counts,
        mail_dropped: if with_mail { 0 } else { summary.counts.mail },
        replaced,
    })
}

/// Writes the new database at `path` from `file`, checking the file again as it goes (it may
/// have changed since it was verified).
fn build(
    file: &Path,
    path: &Path,
    with_mail: bool,
    key_check: Option<&[u8]>,
) -> Result<Counts, LoadError> {
    let mut loader = SledLoader::create(path)?;
    let mut counts = Counts::default();
    let summary = dump::read(file, |item| {
        if matches!(item, dump::Item::Mail(_)) && !with_mail {
            return Ok(());
        }
        loader
            .load(item)
            .map_err(|e| DumpError::Io(std::io::Error::other(e.to_string())))?;
        match item {
            dump::Item::User(_) => counts.users += 1,
            dump::Item::Token(_) => counts.tokens += 1,
            dump::Item::Mail(_) => counts.mail += 1,
            dump::Item::Event(_) => counts.events += 1,
            dump::Item::End(_) => {}
        }
        Ok(())
    })?;
    loader.finish(summary.header.next_id, key_check)?;
    Ok(counts)
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), LoadError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LoadError::Refused(format!("cannot sync {}: {e}", dir.display())))
}
