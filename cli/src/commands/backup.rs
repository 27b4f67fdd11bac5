//! `latchkey backup FILE`: reads an online backup from the daemon piece by piece and writes
//! it beside FILE, synced and checked before it is renamed to FILE; `backup --verify FILE`
//! checks a file with the same reader the daemon's restore uses.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use latchkey_client::Client;
use latchkeyd::backup::Summary;

use crate::output::{BackupSummary, Outcome};

/// Writes the backup; on any failure FILE is untouched and the daemon's session ended.
pub(crate) async fn run(client: &Client, file: &Path) -> anyhow::Result<Outcome> {
    let partial = partial_path(file)?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut session = None;
    let written = fetch(client, &mut out, &mut session).await;
    let written = written.and_then(|bytes| {
        out.sync_all().context("cannot sync the backup")?;
        drop(out);
        let summary = latchkeyd::backup::verify(&partial)
            .context("the backup received does not check out")?;
        Ok((bytes, summary))
    });
    let (bytes, summary) = match written {
        Ok(done) => done,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            if let Some(id) = session {
                // Best effort: the daemon abandons it after 60 s anyway.
                let _ = client.backup_cancel(id).await;
            }
            return Err(e);
        }
    };
    std::fs::rename(&partial, file)
        .with_context(|| format!("cannot rename the backup to {}", file.display()))?;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync {}", dir.display()))?;
    }
    Ok(Outcome::Backup(described(file, true, &summary, bytes)))
}

/// Checks a backup file.
pub(crate) fn verify(file: &Path) -> anyhow::Result<Outcome> {
    let summary = latchkeyd::backup::verify(file)
        .with_context(|| format!("{} is not a sound backup", file.display()))?;
    let bytes = std::fs::metadata(file).map_or(0, |m| m.len());
    Ok(Outcome::Backup(described(file, false, &summary, bytes)))
}

/// Reads every chunk into `out`; returns the bytes written.
async fn fetch(
    client: &Client,
    out: &mut std::fs::File,
    session: &mut Option<u64>,
) -> anyhow::Result<u64> {
    let mut bytes = 0u64;
    loop {
        let chunk = client
            .backup_read(*session)
            .await
            .context("the daemon refused the backup")?;
        *session = Some(chunk.session);
        let data = base64::engine::general_purpose::STANDARD
            .decode(chunk.data.as_bytes())
            .context("the daemon sent a chunk that is not base64")?;
        out.write_all(&data).context("cannot write the backup")?;
        bytes += data.len() as u64;
        if chunk.last {
            *session = None;
            return Ok(bytes);
        }
    }
}

/// `DIR/.NAME.partial-PID`: beside the file, so the rename stays on one filesystem.
fn partial_path(file: &Path) -> anyhow::Result<PathBuf> {
    let name = file
        .file_name()
        .with_context(|| format!("{} is not a file name", file.display()))?;
    let mut partial = std::ffi::OsString::from(".");
    partial.push(name);
    partial.push(format!(".partial-{}", std::process::id()));
    Ok(file.with_file_name(partial))
}

fn described(file: &Path, written: bool, summary: &Summary, bytes: u64) -> BackupSummary {
    BackupSummary {
        file: file.display().to_string(),
        written,
        users: summary.counts.users,
        tokens: summary.counts.tokens,
        mail: summary.counts.mail,
        events: summary.counts.events,
        created_at: summary.header.created_at,
        backend: summary.header.backend.clone(),
        daemon_version: summary.header.daemon_version.clone(),
        bytes,
    }
}
