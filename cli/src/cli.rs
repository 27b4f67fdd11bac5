//! The command line as clap reads it: every command, argument and help text.
//!
//! Only the definitions live here; `commands/` runs them. The help text is part of the
//! interface (scripts and the integration tests read it), so a change here is a change users
//! see.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use latchkey_client::UserId;

/// Command line for latchkeyd, the password-reset and credential daemon.
#[derive(Parser)]
#[command(version)]
pub(crate) struct Cli {
    /// The daemon's socket [default: $LATCHKEY_SOCKET, else latchkey.sock].
    #[arg(long, global = true, value_name = "PATH")]
    pub(crate) socket: Option<PathBuf>,
    /// Seconds to wait for the connection and for each answer [default: 5 and 10].
    #[arg(long, global = true, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) timeout: Option<u64>,
    /// Print results (and daemon errors) as JSON on stdout, for scripts; listings as one
    /// object per line.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The commands; each group has its own file under `commands/`.
#[derive(Subcommand)]
pub(crate) enum Command {
    /// Check that the daemon answers; shows its version, uptime and our role.
    Health,
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCommand),
    /// Password resets: request one, make a link for support staff, check a token.
    #[command(subcommand)]
    Reset(ResetCommand),
    /// The queue of outgoing mail (admin role).
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// The event log (admin role).
    #[command(subcommand)]
    Events(EventsCommand),
    /// Import accounts with their existing password hashes from JSON lines (admin role).
    ///
    /// One account per line, as latchkey names the fields (email, name, role, status,
    /// password_hash, locale, created_at) or as a `mongoexport` of a Node application's users
    /// collection writes them: the hash may be under password_hash, password, passwordHash or
    /// hash (bcrypt $2a$/$2b$/$2y$, or an argon2 PHC string); created_at or createdAt may be
    /// Unix seconds, Unix milliseconds, an RFC 3339 time, {"$date": "<RFC 3339>"} or
    /// {"$date": {"$numberLong": "<ms>"}}; the status may be "active"/"disabled" or a boolean
    /// `disabled` or `active`. Other fields (such as _id) are ignored, and so are blank lines.
    ///
    /// Accounts are sent in batches. A line that cannot be imported (bad JSON, a missing
    /// field, an email that is taken, a hash that is not bcrypt or argon2) is reported on
    /// stderr as `line N: reason` and skipped; the rest go on. The summary says how many were
    /// imported and skipped (with --json: {"imported": N, "skipped": N, "errors": [{"line": N,
    /// "error": CODE, "message": TEXT}]}); the status is 1 if any line was skipped. Running an
    /// import again is safe: the accounts already there are skipped as taken.
    Import(ImportArgs),
    /// Write every account with its password hash as JSON lines to stdout, in the form
    /// `latchkey import` reads (admin role).
    ///
    /// `latchkey export > accounts.jsonl` then `latchkey --socket OTHER import accounts.jsonl`
    /// gives the other daemon the same accounts, logging in with the same passwords (reset
    /// tokens, queued mail and the event log stay behind). The file holds every password
    /// hash: keep it as safe as the database. A warning and the count go to stderr.
    Export,
    /// Print the daemon's metrics in the Prometheus text format (any role, monitor included).
    Metrics,
    /// Print the wire protocol as JSON Schema (draft 2020-12), generated from the types
    /// this `latchkey` was built with; no daemon needed. docs/protocol.schema.json is the
    /// same document.
    Schema,
    /// Write an online backup of the store to FILE while the daemon serves (admin role), or
    /// check a backup file with --verify (no daemon needed).
    ///
    /// The backup is one point in time across every record: accounts with their password
    /// hashes, reset tokens (only the hashes of their verifiers), the outbox and the event
    /// log. It is written to a temporary file beside FILE, synced, checked and renamed, so
    /// FILE is either a whole backup or untouched. It does not hold the outbox key (queued
    /// mail is sealed under it): keep the key file separately; without it, only the queued
    /// mail is lost. Restore with `latchkeyd restore FILE --data-dir DIR`.
    Backup(BackupArgs),
}

/// `latchkey backup FILE [--verify]`.
#[derive(Args)]
pub(crate) struct BackupArgs {
    /// The backup file to write (replaced if it exists) or, with --verify, to check.
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// Check FILE (version, checksum, every record) instead of writing one.
    #[arg(long)]
    pub(crate) verify: bool,
}

/// `latchkey user ...`: accounts.
#[derive(Subcommand)]
pub(crate) enum UserCommand {
    /// Create an account. The password is asked for on the terminal, never taken as an
    /// argument.
    Add(AddArgs),
    /// Show an account by numeric id or by email.
    Show {
        /// A numeric id, or an email address (any case, surrounding spaces ignored).
        user: String,
    },
    /// List accounts in id order (admin role).
    List {
        /// Start after this id.
        #[arg(
            long,
            value_name = "ID",
            default_value_t = 0,
            hide_default_value = true
        )]
        after: UserId,
        /// Print at most this many [default: all].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
    },
    /// Set an account's password without the current one (admin role). The password is asked
    /// for on the terminal, never taken as an argument. Revokes the account's reset tokens
    /// and bumps its credential epoch.
    SetPassword {
        /// The account's id.
        id: UserId,
        /// Read the password from the first line of stdin instead of the terminal.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Disable an account: logins are refused and no reset mail is sent (admin role).
    Disable {
        /// The account's id.
        id: UserId,
    },
    /// Enable a disabled account again (admin role).
    Enable {
        /// The account's id.
        id: UserId,
    },
    /// Delete an account and everything attached to it (admin role). Cannot be undone.
    Delete {
        /// The account's id.
        id: UserId,
        /// Do not ask for confirmation; required when stdin is not a terminal.
        #[arg(long)]
        yes: bool,
    },
}

/// `latchkey user add`.
#[derive(Args)]
pub(crate) struct AddArgs {
    /// The account's email address.
    pub(crate) email: String,
    /// Display name.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub(crate) name: String,
    /// Role label for the application [default: user].
    #[arg(long)]
    pub(crate) role: Option<String>,
    /// Preferred locale for mail, such as "de" or "pt-BR".
    #[arg(long)]
    pub(crate) locale: Option<String>,
    /// Read the password from the first line of stdin instead of the terminal.
    #[arg(long)]
    pub(crate) password_stdin: bool,
}

/// `latchkey reset ...`: password resets.
#[derive(Subcommand)]
pub(crate) enum ResetCommand {
    /// Start a reset as the application would: an active account is mailed a link. The
    /// answer is the same whether or not the account exists.
    Request {
        /// The address to send the link to.
        email: String,
        /// The end user's IP address, for the per-IP rate limit and the event log.
        #[arg(long)]
        ip: Option<String>,
        /// The mail's locale, for an account that has none.
        #[arg(long)]
        locale: Option<String>,
    },
    /// Make a reset link for support staff to hand to a user (admin role); prints the link
    /// and when it expires. The link is a secret: it resets the password.
    Link {
        /// A numeric id, or an email address.
        user: String,
        /// How long the link stays valid, at most 86400 [default: the daemon's token
        /// lifetime].
        #[arg(long, value_name = "SECS")]
        lifetime: Option<u64>,
    },
    /// Say whether a reset token is valid, expired, used or invalid, without using it. Exits
    /// 0 when it is valid, 1 otherwise.
    Check(CheckArgs),
}

/// `latchkey reset check`.
#[derive(Args)]
pub(crate) struct CheckArgs {
    /// The token, or "-" (the default) to read it from stdin (asked for without echo on a
    /// terminal). Avoid giving the token itself: while the command runs, every user on the
    /// host can read it in the process list, and the shell keeps it in its history.
    #[arg(
        value_name = "TOKEN",
        default_value = "-",
        hide_default_value = true,
        conflicts_with = "token_stdin"
    )]
    pub(crate) token: String,
    /// Read the token from the first line of stdin (the same as TOKEN "-").
    #[arg(long)]
    pub(crate) token_stdin: bool,
}

/// `latchkey outbox ...`: the queue of outgoing mail.
#[derive(Subcommand)]
pub(crate) enum OutboxCommand {
    /// List queued and dead messages; their bodies (which may hold a reset link) are never
    /// shown.
    List {
        /// Only dead letters: messages whose delivery gave up.
        #[arg(long)]
        dead: bool,
    },
    /// Queue a message (typically a dead one) again, due now, its attempts reset.
    Retry {
        /// The message's id.
        id: u64,
    },
    /// Delete a message unsent. Cannot be undone.
    Drop {
        /// The message's id.
        id: u64,
        /// Do not ask for confirmation; required when stdin is not a terminal.
        #[arg(long)]
        yes: bool,
    },
}

/// `latchkey events ...`: the event log.
#[derive(Subcommand)]
pub(crate) enum EventsCommand {
    /// Print events oldest first, one per line: sequence number, time, kind, user, client IP.
    Tail(TailArgs),
}

/// `latchkey events tail`.
#[derive(Args)]
pub(crate) struct TailArgs {
    /// Start after this sequence number [default: the start of the log].
    #[arg(
        long,
        value_name = "SEQ",
        default_value_t = 0,
        hide_default_value = true
    )]
    pub(crate) after: u64,
    /// Keep polling for new events until interrupted (Ctrl-C exits with status 0).
    #[arg(long)]
    pub(crate) follow: bool,
    /// Seconds between two polls with --follow; fractions allowed.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_interval,
          requires = "follow")]
    pub(crate) interval: Duration,
}

/// `latchkey import`.
#[derive(Args)]
pub(crate) struct ImportArgs {
    /// A file of JSON lines, or "-" for stdin.
    #[arg(value_name = "FILE|-")]
    pub(crate) file: PathBuf,
}

/// `--interval`: positive seconds, fractions allowed.
fn parse_interval(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>().map(Duration::try_from_secs_f64) {
        Ok(Ok(interval)) if !interval.is_zero() => Ok(interval),
        _ => Err("expected a positive number of seconds, such as 2 or 0.5".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definitions_hold_together() {
        // Conflicting names, a `requires` naming no argument and such only show when clap
        // builds the command; this builds all of them.
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn intervals_are_positive_seconds() {
        assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("2"), Ok(Duration::from_secs(2)));
        for bad in ["0", "-1", "soon", "NaN", "inf"] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }
}
