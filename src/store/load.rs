//! Restoring a backup into a new sled data directory, and copying a store to PostgreSQL,
//! with the daemons stopped. The file is checked whole before anything is written; a sled
//! database is built beside the target and renamed into place last, so a refused or failed
//! restore changes nothing; a copy to PostgreSQL replaces rows by their keys, so running it
//! again after a failure finishes it.

use std::path::{Path, PathBuf};

use super::dump::{self, Counts, DumpError};
use super::postgres::PgStore;
use super::seal::Sealer;
use super::sled::{SledLoader, SledStore};
use super::{Handle, Store, StoreConfig, StoreError};

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
    let (with_mail, key_check) = mail_key(config, &summary, options)?;
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

/// Whether the mail goes along, and the key check to record with it: the key `config` names
/// must be the one the backup's mail was sealed under, or `drop_mail` given.
fn mail_key(
    config: &StoreConfig,
    summary: &dump::Summary,
    options: RestoreOptions,
) -> Result<(bool, Option<Vec<u8>>), LoadError> {
    if summary.counts.mail == 0 || options.drop_mail {
        return Ok((false, None));
    }
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
    Ok((true, check))
}

/// Where `copy-store` reads from or writes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// The sled store in this data directory.
    Sled(PathBuf),
    /// A backup file (a source only).
    Backup(PathBuf),
    /// The PostgreSQL of `[store.postgres]` (a target only).
    Postgres,
}

impl std::str::FromStr for Place {
    type Err = String;
    fn from_str(text: &str) -> Result<Place, String> {
        match text.split_once(':') {
            Some(("sled", dir)) if !dir.is_empty() => Ok(Place::Sled(dir.into())),
            Some(("backup", file)) if !file.is_empty() => Ok(Place::Backup(file.into())),
            None if text == "postgres" => Ok(Place::Postgres),
            _ => Err(format!(
                "{text:?} is not sled:DIR, backup:FILE or postgres (whose connection is [store.postgres])"
            )),
        }
    }
}

/// What a copy did.
#[derive(Clone, Debug)]
pub struct Copied {
    /// The records the source held (less the mail left out).
    pub source: Counts,
    /// The records the target holds after the copy.
    pub target: Counts,
    /// Messages left out (`drop_mail`).
    pub mail_dropped: u64,
}

/// Copies every record from `from` to `to`, with the daemons of both stopped. `config`
/// names the outbox key (which must open the mail copied) and, for PostgreSQL, the server.
/// The counts of both sides are compared at the end.
pub async fn copy_store(
    from: &Place,
    to: &Place,
    config: &StoreConfig,
    options: RestoreOptions,
) -> Result<Copied, LoadError> {
    let (file, temporary) = match from {
        Place::Backup(file) => (file.clone(), false),
        Place::Sled(dir) => (backup_offline(dir, config.cache_bytes).await?, true),
        Place::Postgres => {
            return Err(LoadError::Refused(
                "copy-store reads from sled:DIR or backup:FILE; to move a PostgreSQL store, write a file with latchkey backup against one of its daemons and copy or restore that".into(),
            ))
        }
    };
    let copied = copy_file(&file, to, config, options).await;
    if temporary {
        let _ = std::fs::remove_file(&file);
    }
    copied
}

/// Writes a backup of the (stopped) sled store in `dir` to a file beside it.
async fn backup_offline(dir: &Path, cache_bytes: u64) -> Result<PathBuf, LoadError> {
    if !dir.join("db").exists() {
        return Err(LoadError::Refused(format!(
            "there is no sled store in {}",
            dir.display()
        )));
    }
    let source = SledStore::open(dir, cache_bytes, Sealer::ephemeral()).map_err(|e| {
        LoadError::Refused(format!(
            "cannot open the store in {} (is latchkeyd running on it? stop it first): {e}",
            dir.display()
        ))
    })?;
    let store = Store {
        backend: Handle::Sled(source),
        failures: Default::default(),
    };
    let path = dir.join("copy-store.backup");
    let write = async {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| LoadError::Refused(format!("cannot create {}: {e}", path.display())))?;
        let mut backup = store.begin_backup().await?;
        while let Some(bytes) = backup.next_bytes(1 << 20).await? {
            out.write_all(&bytes)
                .map_err(|e| LoadError::Refused(format!("cannot write {}: {e}", path.display())))?;
        }
        out.sync_all()
            .map_err(|e| LoadError::Refused(format!("cannot sync {}: {e}", path.display())))?;
        Ok::<_, LoadError>(())
    };
    match write.await {
        Ok(()) => Ok(path),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

/// Copies the records of a backup file to `to`.
async fn copy_file(
    file: &Path,
    to: &Place,
    config: &StoreConfig,
    options: RestoreOptions,
) -> Result<Copied, LoadError> {
    match to {
        Place::Sled(dir) => {
            let config = StoreConfig {
                data_dir: dir.clone(),
                ..config.clone()
            };
            let restored = restore_sled(file, &config, options)?;
            Ok(Copied {
                source: restored.counts,
                target: restored.counts,
                mail_dropped: restored.mail_dropped,
            })
        }
        Place::Postgres => copy_to_postgres(file, config, options).await,
        Place::Backup(_) => Err(LoadError::Refused(
            "copy-store writes to postgres or sled:DIR; to write a backup file, use latchkey backup".into(),
        )),
    }
}

/// Records per transaction when copying to PostgreSQL.
const BATCH: usize = 1000;

async fn copy_to_postgres(
    file: &Path,
    config: &StoreConfig,
    options: RestoreOptions,
) -> Result<Copied, LoadError> {
    let summary = dump::verify(file)?;
    let (with_mail, key_check) = mail_key(config, &summary, options)?;
    let sealer = Sealer::load(config)?;
    let target = PgStore::open(&config.postgres, sealer).await?;
    let mut reader = dump::Reader::open(file)?;
    let mut batch = Vec::with_capacity(BATCH);
    let mut tokens = Vec::new();
    while let Some(item) = reader.next()? {
        match item {
            dump::Item::Token(token) => tokens.push(token),
            dump::Item::Mail(_) if !with_mail => {}
            item => batch.push(item),
        }
        if batch.len() == BATCH {
            target.load(&batch).await?;
            batch.clear();
        }
    }
    target.load(&batch).await?;
    target.load_tokens(&tokens).await?;
    target
        .finish_load(summary.header.next_id, key_check.as_deref())
        .await?;
    let mut source = summary.counts;
    let mail_dropped = if with_mail { 0 } else { source.mail };
    source.mail -= mail_dropped;
    let counted = target.load_counts().await?;
    target.close().await;
    if counted != source {
        return Err(LoadError::Refused(format!(
            "every record was copied, but the target holds {counted} where the source held {source}: it held other records before the copy"
        )));
    }
    Ok(Copied {
        source,
        target: counted,
        mail_dropped,
    })
}
