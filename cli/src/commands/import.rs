//! `latchkey import`: JSON lines in, batches of [`ImportUser`] to the daemon, one outcome per
//! line out. How one line becomes an account, or why it cannot, is [`line`].

mod line;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{bail, Context as _};
use latchkey_client::{Client, ImportUser};

use self::line::{parse_line, Problem};
use crate::output::ImportSummary;

/// Lines per batch, and so at most this many accounts per `import_users` call (the daemon
/// takes up to 1000).
const BATCH_LINES: usize = 500;

/// The most bytes of serialised accounts per call: the daemon's default frame limit is
/// 64 KiB (`server.max_frame_bytes`, and the client's `DEFAULT_MAX_FRAME_BYTES`), a larger
/// frame closes the connection, and tarpc wraps the accounts in an envelope (request id,
/// deadline, trace context) of a few hundred bytes. A quarter left over is ample.
const BATCH_BYTES: usize = 48 * 1024;

/// What a line holds.
enum Entry {
    /// An account for the daemon.
    Account(ImportUser),
    /// Why the line is skipped without asking the daemon.
    Skipped(Problem),
}

/// The lines read since the last call, so that their outcomes are reported in line order
/// once the daemon has judged the accounts among them.
#[derive(Default)]
struct Batch {
    /// Each line's number and what it holds.
    entries: Vec<(u64, Entry)>,
    /// The serialised size of the accounts among them.
    bytes: usize,
}

/// Reads `file` (`-` for stdin) and imports its accounts, reporting each skipped line on
/// stderr as each batch is done. Fails only when the input cannot be read or a whole call
/// fails (the daemon refused the batch, or the connection was lost): the batches before
/// are imported, the rest are not.
pub(crate) async fn run(client: &Client, file: &Path) -> anyhow::Result<ImportSummary> {
    let mut input: Box<dyn BufRead> = if file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let opened = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        Box::new(BufReader::new(opened))
    };
    let mut summary = ImportSummary::default();
    let mut batch = Batch::default();
    let mut bytes = Vec::new();
    let mut line = 0;
    loop {
        bytes.clear();
        let read = input
            .read_until(b'\n', &mut bytes)
            .with_context(|| format!("cannot read {} after line {line}", file.display()))?;
        if read == 0 {
            break;
        }
        line += 1;
        let parsed = match std::str::from_utf8(&bytes) {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => parse_line(text.trim_end_matches(['\n', '\r'])),
            Err(_) => Err(Problem::json("not UTF-8 text")),
        };
        let (entry, size) = match parsed {
            Ok(user) => {
                // The comma before it in the JSON array counts too.
                let size = serde_json::to_vec(&user)
                    .context("cannot encode an account")?
                    .len()
                    + 1;
                if size > BATCH_BYTES {
                    let message =
                        format!("{}: the account is too large ({size} bytes)", user.email);
                    (Entry::Skipped(Problem::new("TooLarge", message)), 0)
                } else {
                    (Entry::Account(user), size)
                }
            }
            Err(problem) => (Entry::Skipped(problem), 0),
        };
        if batch.entries.len() == BATCH_LINES || batch.bytes + size > BATCH_BYTES {
            send(client, &mut batch, &mut summary).await?;
        }
        batch.entries.push((line, entry));
        batch.bytes += size;
    }
    send(client, &mut batch, &mut summary).await?;
    Ok(summary)
}

/// Sends the batch's accounts (if any) and records every line's outcome.
async fn send(
    client: &Client,
    batch: &mut Batch,
    summary: &mut ImportSummary,
) -> anyhow::Result<()> {
    let Batch { entries, .. } = std::mem::take(batch);
    let accounts: Vec<(u64, &ImportUser)> = entries
        .iter()
        .filter_map(|(line, entry)| match entry {
            Entry::Account(user) => Some((*line, user)),
            Entry::Skipped(_) => None,
        })
        .collect();
    let mut outcomes = match accounts.first() {
        None => Vec::new(),
        Some(&(first, _)) => {
            let users = accounts.iter().map(|(_, user)| (*user).clone()).collect();
            let outcomes = client.import_users(users).await.with_context(|| {
                format!(
                    "the import stopped at line {first}, after {} accounts were imported; \
                     line {first} and those after it were not imported",
                    summary.imported
                )
            })?;
            if outcomes.len() != accounts.len() {
                bail!(
                    "the daemon answered {} outcomes for {} accounts from line {first} on",
                    outcomes.len(),
                    accounts.len()
                );
            }
            outcomes
        }
    }
    .into_iter();
    for (line, entry) in entries {
        let user = match entry {
            Entry::Account(user) => user,
            Entry::Skipped(problem) => {
                summary.skip(line, problem.code, problem.message);
                continue;
            }
        };
        match outcomes.next() {
            Some(Ok(_)) => summary.imported += 1,
            Some(Err(e)) => {
                let mut message = format!("{}: {e}", user.email);
                // The daemon's reasons do not quote the hash; make sure of it.
                if !user.password_hash.is_empty() {
                    message = message.replace(user.password_hash.as_str(), "<the hash>");
                }
                summary.skip(line, e.code(), message);
            }
            None => bail!("the daemon gave no outcome for line {line}"),
        }
    }
    Ok(())
}
