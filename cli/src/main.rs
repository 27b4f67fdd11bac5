//! `latchkey`: the operator's command line for `latchkeyd`.
//!
//! It connects to the daemon's socket, makes its calls and prints the results: short lines for
//! people or, with `--json`, JSON on stdout for scripts. A command with one result prints one
//! JSON document; a listing (`user list`, `outbox list`, `events tail`) prints one JSON object
//! per line (JSON lines), as it pages through the daemon, so a long or endless listing
//! (`events tail --follow`) needs no memory and shows each item as soon as it arrives.
//!
//! ```text
//! health                                      the daemon's version, uptime and our role
//! metrics                                     metrics in the Prometheus text format
//! schema                                      the wire protocol as JSON Schema
//! user add EMAIL [--name N] [--role R] [--locale L] [--password-stdin]
//! user show ID|EMAIL
//! user list [--after ID] [--limit N]          in id order, all of them unless --limit
//! user set-password ID [--password-stdin]
//! user disable ID | user enable ID
//! user delete ID [--yes]
//! reset request EMAIL [--ip IP] [--locale L]  as an application would; the answer never
//!                                             says whether the account exists
//! reset link ID|EMAIL [--lifetime SECS]       a link for support staff to hand over
//! reset check [TOKEN|-] [--token-stdin]       valid, expired, used or invalid
//! outbox list [--dead]                        queued and dead mail (never the bodies)
//! outbox retry ID
//! outbox drop ID [--yes]
//! events tail [--after SEQ] [--follow] [--interval SECS]
//! import FILE|-                               accounts with bcrypt or argon2 hashes, as
//!                                             JSON lines (a `mongoexport` will do)
//! export                                      every account with its hash, as JSON lines
//!                                             that import reads
//! backup FILE                                 an online backup of the whole store
//! backup --verify FILE                        checks a backup file (no daemon needed)
//! ```
//!
//! Everything but `health`, `metrics`, `user add`, `user show` and `reset request|check`
//! needs the admin role (`health` and `metrics` are all the monitor role may call).
//!
//! Secrets are never taken from the command line, where every user on the host can read them
//! in `/proc/PID/cmdline` and shells keep them in their history: `user add` and
//! `user set-password` ask on the terminal (twice), or read the first line of stdin with
//! `--password-stdin`; `reset check` reads the token from stdin unless it is given as an
//! argument, which its help warns against.
//!
//! Exit status:
//! - 0: success; for `reset check`, the token is valid; for `import`, no line was skipped.
//! - 1: the daemon refused the call (its `ApiError` code is printed, and with `--json` also
//!   written to stdout), or any other failure; `reset check` found the token expired, used or
//!   invalid; `import` skipped lines (each reported on stderr as `line N: reason`).
//! - 2: usage errors, clap's own and ours (such as a deletion that cannot be confirmed).
//! - 3: the daemon cannot be reached, or the connection was lost mid-call.
//!
//! The layout: [`cli`] is the command line as clap reads it; [`commands`] has one module per
//! command group (`user`, `reset`, `outbox`, `events`, `import`); [`output`] prints results,
//! [`input`] reads secrets and confirmations, [`page`] pages through listings and [`utc`]
//! converts times. This file connects, dispatches and turns failures into exit statuses.

mod cli;
mod commands;
mod input;
mod output;
mod page;
mod utc;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use latchkey_client::{ApiError, Client, ConnectOptions};

use crate::cli::{Cli, Command};
use crate::input::UsageError;
use crate::output::{write_stdout, Outcome, StdoutClosed};

/// The socket tried when neither `--socket` nor `LATCHKEY_SOCKET` names one; the daemon's
/// default, relative to the working directory.
const DEFAULT_SOCKET: &str = "latchkey.sock";

/// Parses the command line, runs the command and reports a failure.
fn main() -> ExitCode {
    // Usage errors exit here with clap's status 2 and message.
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) if e.chain().any(|cause| cause.is::<StdoutClosed>()) => ExitCode::SUCCESS,
        Err(e) => report(&e, cli.json),
    }
}

/// Runs the command: connects, makes its calls, prints the outcome; returns the exit status
/// of a command that worked (see the crate documentation).
fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    // One thread is enough for one call at a time, and it makes the blocking reads of the
    // terminal, stdin and import files harmless: the only other task is the client's
    // dispatcher, idle while we read.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let outcome = runtime.block_on(async {
        if let Command::Schema = &cli.command {
            return schema();
        }
        if let Command::Backup(args) = &cli.command {
            if args.verify {
                // A file on its own: no daemon needed.
                return commands::backup::verify(&args.file);
            }
        }
        let client = connect(cli).await?;
        execute(&cli.command, &client, cli.json).await
    })?;
    outcome.print(cli.json)?;
    Ok(outcome.exit_code())
}

/// Connects to the socket chosen by `--socket`, `LATCHKEY_SOCKET` or the default.
async fn connect(cli: &Cli) -> anyhow::Result<Client> {
    let socket = cli
        .socket
        .clone()
        .or_else(|| {
            std::env::var_os("LATCHKEY_SOCKET")
                .filter(|s| !s.is_empty())
                .map(Into::into)
        })
        .unwrap_or_else(|| DEFAULT_SOCKET.into());
    let mut options = ConnectOptions::default();
    if let Some(secs) = cli.timeout {
        options.connect_timeout = Duration::from_secs(secs);
        options.call_timeout = Duration::from_secs(secs);
    }
    Client::connect_with(&socket, options)
        .await
        .with_context(|| {
            format!(
                "cannot reach latchkeyd at {} (start it, or name its socket with --socket or \
             LATCHKEY_SOCKET)",
                socket.display()
            )
        })
}

/// Runs one command against the daemon. Listings print as they go and return
/// [`Outcome::Printed`]; everything else returns its result for [`Outcome::print`].
async fn execute(command: &Command, client: &Client, json: bool) -> anyhow::Result<Outcome> {
    match command {
        Command::Health => Ok(Outcome::Health(client.health().await?)),
        Command::Metrics => Ok(Outcome::Text(client.metrics().await?)),
        Command::Schema => schema(),
        Command::User(command) => commands::user::run(command, client, json).await,
        Command::Reset(command) => commands::reset::run(command, client).await,
        Command::Outbox(command) => commands::outbox::run(command, client, json).await,
        Command::Events(command) => commands::events::run(command, client, json).await,
        Command::Export => commands::export::run(client).await,
        Command::Backup(args) => commands::backup::run(client, &args.file).await,
        Command::Import(args) => Ok(Outcome::Import(
            commands::import::run(client, &args.file).await?,
        )),
    }
}

/// `latchkey schema`: the protocol's JSON Schema, from the types built in; no daemon needed,
/// so `run` calls it before connecting.
fn schema() -> anyhow::Result<Outcome> {
    Ok(Outcome::Text(serde_json::to_string_pretty(
        &latchkey_client::schema(),
    )?))
}

/// Prints a failure to stderr (and a daemon error to stdout too under `--json`) and picks the
/// exit status.
fn report(e: &anyhow::Error, json: bool) -> ExitCode {
    let client_error = e
        .chain()
        .find_map(|cause| cause.downcast_ref::<latchkey_client::Error>());
    let api_error = client_error.and_then(latchkey_client::Error::api);
    match api_error {
        Some(api) => eprintln!("latchkey: {} ({})", error_chain(e), api.code()),
        None => eprintln!("latchkey: {}", error_chain(e)),
    }
    if let (true, Some(api)) = (json, api_error) {
        // Ignore a failed write: the message is on stderr already and the status says it.
        let _ = write_stdout(&json_error(api).to_string());
    }
    let code = match client_error {
        Some(latchkey_client::Error::Api(_)) => 1,
        Some(_) => 3,
        None if e.chain().any(|cause| cause.is::<UsageError>()) => 2,
        None => 1,
    };
    ExitCode::from(code)
}

/// `{"error": "NotFound", "message": "not found", "detail": <the error as on the wire>}`.
fn json_error(api: &ApiError) -> serde_json::Value {
    serde_json::json!({
        "error": api.code(),
        "message": api.to_string(),
        "detail": api,
    })
}

/// The error and its causes joined by ": ", leaving out a cause whose text the previous
/// message already ends with (errors that both print and expose their source, such as the
/// client's connection errors, would otherwise say it twice).
fn error_chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let message = cause.to_string();
        if text.ends_with(&message) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&message);
    }
    text
}
