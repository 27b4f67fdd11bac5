//! `latchkey export`: every account with its password hash, one JSON object per line, in
//! exactly the form `latchkey import` reads (plus the id, which an import ignores), so that
//! export then import into a fresh daemon gives the same accounts, logging in with the same
//! passwords.

use anyhow::Context as _;
use latchkey_client::{Client, ExportedUser};

use crate::output::{print_item, Outcome};
use crate::page::page_through;

/// Runs `latchkey export`, printing accounts as they arrive; says on stderr that the output
/// holds password hashes, and how many accounts went out.
pub(crate) async fn run(client: &Client) -> anyhow::Result<Outcome> {
    eprintln!(
        "latchkey export: the output holds every account's password hash; keep it as safe as \
         the database"
    );
    let mut exported = 0u64;
    let print = |user: &ExportedUser| {
        exported += 1;
        // Always JSON: it is the import format, whatever --json says.
        print_item(true, user, "")
    };
    page_through(0, None, |a, n| client.export_users(a, n), print)
        .await
        .context("cannot export the accounts")?;
    eprintln!("exported {exported} accounts");
    Ok(Outcome::Printed)
}
