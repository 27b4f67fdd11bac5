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
//! ```
//!
//! Everything but `health`, `user add`, `user show` and `reset request|check` needs the admin
//! role.
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

use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use latchkey_client::{
    ApiError, Client, ConnectOptions, Event, Health, ImportUser, MessageState, NewUser,
    OutboxMessage, PasswordChanged, ResetLink, TokenCheck, TokenState, UnixTime, User, UserId,
    UserRef, UserStatus,
};
use serde::Serialize;

/// The socket tried when neither `--socket` nor `LATCHKEY_SOCKET` names one; the daemon's
/// default, relative to the working directory.
const DEFAULT_SOCKET: &str = "latchkey.sock";

// ---------------------------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------------------------

/// Command line for latchkeyd, the password-reset and credential daemon.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The daemon's socket [default: $LATCHKEY_SOCKET, else latchkey.sock].
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Seconds to wait for the connection and for each answer [default: 5 and 10].
    #[arg(long, global = true, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    /// Print results (and daemon errors) as JSON on stdout, for scripts; listings as one
    /// object per line.
    #[arg(long, global = true)]
    json: bool,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    /// Print the daemon's metrics in the Prometheus text format (admin role).
    Metrics,
}

#[derive(Subcommand)]
enum UserCommand {
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

#[derive(Args)]
struct AddArgs {
    /// The account's email address.
    email: String,
    /// Display name.
    #[arg(long, default_value = "", hide_default_value = true)]
    name: String,
    /// Role label for the application [default: user].
    #[arg(long)]
    role: Option<String>,
    /// Preferred locale for mail, such as "de" or "pt-BR".
    #[arg(long)]
    locale: Option<String>,
    /// Read the password from the first line of stdin instead of the terminal.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Subcommand)]
enum ResetCommand {
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

#[derive(Args)]
struct CheckArgs {
    /// The token, or "-" (the default) to read it from stdin (asked for without echo on a
    /// terminal). Avoid giving the token itself: while the command runs, every user on the
    /// host can read it in the process list, and the shell keeps it in its history.
    #[arg(
        value_name = "TOKEN",
        default_value = "-",
        hide_default_value = true,
        conflicts_with = "token_stdin"
    )]
    token: String,
    /// Read the token from the first line of stdin (the same as TOKEN "-").
    #[arg(long)]
    token_stdin: bool,
}

#[derive(Subcommand)]
enum OutboxCommand {
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

#[derive(Subcommand)]
enum EventsCommand {
    /// Print events oldest first, one per line: sequence number, time, kind, user, client IP.
    Tail(TailArgs),
}

#[derive(Args)]
struct TailArgs {
    /// Start after this sequence number [default: the start of the log].
    #[arg(
        long,
        value_name = "SEQ",
        default_value_t = 0,
        hide_default_value = true
    )]
    after: u64,
    /// Keep polling for new events until interrupted (Ctrl-C exits with status 0).
    #[arg(long)]
    follow: bool,
    /// Seconds between two polls with --follow; fractions allowed.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_interval,
          requires = "follow")]
    interval: Duration,
}

#[derive(Args)]
struct ImportArgs {
    /// A file of JSON lines, or "-" for stdin.
    #[arg(value_name = "FILE|-")]
    file: PathBuf,
}

/// `--interval`: positive seconds, fractions allowed.
fn parse_interval(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>().map(Duration::try_from_secs_f64) {
        Ok(Ok(interval)) if !interval.is_zero() => Ok(interval),
        _ => Err("expected a positive number of seconds, such as 2 or 0.5".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// Running a command, and failing
// ---------------------------------------------------------------------------------------------

/// A mistake in how the command was used that clap cannot see, such as a deletion that
/// cannot be confirmed. Exits 2, like clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

/// Whoever reads our stdout has gone (`latchkey events tail --follow | head -3`): stop quietly,
/// as a successful run.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
struct StdoutClosed;

fn main() -> ExitCode {
    // Usage errors exit here with clap's status 2 and message.
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(e) if e.chain().any(|cause| cause.is::<StdoutClosed>()) => ExitCode::SUCCESS,
        Err(e) => report(&e, cli.json),
    }
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    // One thread is enough for one call at a time, and it makes the blocking reads of the
    // terminal, stdin and import files harmless: the only other task is the client's
    // dispatcher, idle while we read.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let outcome = runtime.block_on(async {
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
        Command::User(command) => user_command(command, client, json).await,
        Command::Reset(command) => reset_command(command, client).await,
        Command::Outbox(command) => outbox_command(command, client, json).await,
        Command::Events(EventsCommand::Tail(args)) => {
            if args.follow {
                // Ctrl-C ends the tail normally; it is how a follow is meant to stop.
                tokio::select! {
                    tailed = tail_events(client, args, json) => tailed?,
                    signal = tokio::signal::ctrl_c() => signal.context("cannot watch for Ctrl-C")?,
                }
            } else {
                tail_events(client, args, json).await?;
            }
            Ok(Outcome::Printed)
        }
        Command::Import(args) => Ok(Outcome::Import(import::run(client, &args.file).await?)),
    }
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

// ---------------------------------------------------------------------------------------------
// The commands
// ---------------------------------------------------------------------------------------------

async fn user_command(
    command: &UserCommand,
    client: &Client,
    json: bool,
) -> anyhow::Result<Outcome> {
    let user = match command {
        UserCommand::Add(args) => {
            let password =
                read_new_password(args.password_stdin, &format!("Password for {}", args.email))
                    .with_context(|| format!("cannot create {}", args.email))?;
            let new = NewUser {
                email: args.email.clone(),
                name: args.name.clone(),
                password,
                role: args.role.clone(),
                locale: args.locale.clone(),
            };
            client
                .create_user(new)
                .await
                .with_context(|| format!("cannot create {}", args.email))?
        }
        UserCommand::Show { user } => find(client, &user_ref(user))
            .await
            .with_context(|| format!("cannot show user {user}"))?,
        UserCommand::List { after, limit } => {
            let print = |user: &User| print_item(json, user, UserLine(user));
            page_through(*after, *limit, |a, n| client.list_users(a, n), print)
                .await
                .context("cannot list users")?;
            return Ok(Outcome::Printed);
        }
        UserCommand::SetPassword { id, password_stdin } => {
            let context = || format!("cannot set the password of user {id}");
            // Looked up first, so that a wrong id fails before the password is typed.
            let user = client.get_user(*id).await.with_context(context)?;
            let prompt = format!("New password for {}", user.email);
            let password = read_new_password(*password_stdin, &prompt).with_context(context)?;
            let changed = client
                .set_password(*id, &password)
                .await
                .with_context(context)?;
            return Ok(Outcome::PasswordSet(changed));
        }
        UserCommand::Disable { id } => set_status(client, *id, UserStatus::Disabled).await?,
        UserCommand::Enable { id } => set_status(client, *id, UserStatus::Active).await?,
        UserCommand::Delete { id, yes } => {
            if !yes {
                confirm(&format!("delete user {id}"), async {
                    let user = client
                        .get_user(*id)
                        .await
                        .with_context(|| format!("cannot delete user {id}"))?;
                    Ok(format!("Delete {}?", UserLine(&user)))
                })
                .await?;
            }
            client
                .delete_user(*id)
                .await
                .with_context(|| format!("cannot delete user {id}"))?;
            return Ok(Outcome::Deleted { deleted: *id });
        }
    };
    Ok(Outcome::User(user))
}

async fn set_status(client: &Client, id: UserId, status: UserStatus) -> anyhow::Result<User> {
    client
        .set_status(id, status)
        .await
        .with_context(|| format!("cannot set user {id} {}", wire_name(&status)))
}

/// An account named on the command line: a number is an id, anything else an email.
fn user_ref(text: &str) -> UserRef {
    match text.trim().parse::<UserId>() {
        Ok(id) => UserRef::Id(id),
        Err(_) => UserRef::Email(text.to_owned()),
    }
}

/// Looks an account up by id or email.
async fn find(client: &Client, user: &UserRef) -> Result<User, latchkey_client::Error> {
    match user {
        UserRef::Id(id) => client.get_user(*id).await,
        UserRef::Email(email) => client.find_user(email).await,
    }
}

async fn reset_command(command: &ResetCommand, client: &Client) -> anyhow::Result<Outcome> {
    match command {
        ResetCommand::Request { email, ip, locale } => {
            client
                .request_password_reset(email, ip.as_deref(), locale.as_deref())
                .await
                .with_context(|| format!("cannot request a reset for {email}"))?;
            Ok(Outcome::ResetRequested {
                reset_requested: email.clone(),
            })
        }
        ResetCommand::Link { user, lifetime } => {
            let link = client
                .admin_reset_link(user_ref(user), *lifetime)
                .await
                .with_context(|| format!("cannot make a reset link for {user}"))?;
            Ok(Outcome::ResetLink(link))
        }
        ResetCommand::Check(args) => {
            let token = read_token(args)?;
            let check = client
                .check_reset_token(&token, None)
                .await
                .context("cannot check the token")?;
            Ok(Outcome::TokenCheck(check))
        }
    }
}

async fn outbox_command(
    command: &OutboxCommand,
    client: &Client,
    json: bool,
) -> anyhow::Result<Outcome> {
    match command {
        OutboxCommand::List { dead } => {
            let print = |m: &OutboxMessage| match (*dead, m.state) {
                (true, MessageState::Queued) => Ok(()),
                _ => print_item(json, m, MessageLine(m)),
            };
            page_through(0, None, |a, n| client.outbox_list(a, n), print)
                .await
                .context("cannot list the outbox")?;
            Ok(Outcome::Printed)
        }
        OutboxCommand::Retry { id } => {
            client
                .outbox_retry(*id)
                .await
                .with_context(|| format!("cannot retry message {id}"))?;
            Ok(Outcome::Retried { retried: *id })
        }
        OutboxCommand::Drop { id, yes } => {
            let context = || format!("cannot drop message {id}");
            if !yes {
                confirm(&format!("drop message {id}"), async {
                    let message = outbox_message(client, *id).await.with_context(context)?;
                    Ok(format!("Drop {} unsent?", MessageLine(&message)))
                })
                .await?;
            }
            client.outbox_drop(*id).await.with_context(context)?;
            Ok(Outcome::Dropped { dropped: *id })
        }
    }
}

/// One outbox message by id; `NotFound` if there is none.
async fn outbox_message(client: &Client, id: u64) -> anyhow::Result<OutboxMessage> {
    let page = client.outbox_list(id.saturating_sub(1), 1).await?;
    match page.into_iter().next() {
        Some(message) if message.id == id => Ok(message),
        _ => Err(latchkey_client::Error::Api(ApiError::NotFound).into()),
    }
}

/// Prints the events after `args.after`; with `--follow`, then polls for more forever.
async fn tail_events(client: &Client, args: &TailArgs, json: bool) -> anyhow::Result<()> {
    let print = |event: &Event| print_item(json, event, EventLine(event));
    let mut after = args.after;
    loop {
        after = page_through(after, None, |a, n| client.events(a, n), print)
            .await
            .context("cannot read the event log")?;
        if !args.follow {
            return Ok(());
        }
        tokio::time::sleep(args.interval).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Paging through listings
// ---------------------------------------------------------------------------------------------

/// The most bytes of items a listing asks for per call. The daemon fills a page up to the
/// count asked for, whatever its size, and a reply over its frame limit (64 KiB by default,
/// `server.max_frame_bytes`) closes the connection: so each listing asks for as many items as
/// fit here in their largest possible encoding ([`Listed::MAX_BYTES`]), which leaves room for
/// tarpc's envelope. (500 typical users already make more than 64 KiB.)
const PAGE_BYTES: usize = 48 * 1024;

/// An item of a listing the daemon pages through by a cursor.
trait Listed: Serialize {
    /// The largest JSON encoding of one item, in bytes.
    const MAX_BYTES: usize;

    /// Items per call: as many as fit in [`PAGE_BYTES`] (35 users, 12 messages, 245 events).
    const PER_PAGE: u32 = (PAGE_BYTES / Self::MAX_BYTES) as u32;

    /// The cursor after this item: its id or sequence number.
    fn cursor(&self) -> u64;
}

impl Listed for User {
    /// Email (254 bytes) and name (256) that escaping may double, role (64), locale (35), and
    /// some 250 bytes of field names and numbers.
    const MAX_BYTES: usize = 1_400;

    fn cursor(&self) -> u64 {
        self.id
    }
}

impl Listed for OutboxMessage {
    /// The address (about 510 bytes escaped), the last error (500 characters, at most 6 bytes
    /// each escaped), and some 300 bytes more.
    const MAX_BYTES: usize = 3_800;

    fn cursor(&self) -> u64 {
        self.id
    }
}

impl Listed for Event {
    /// Numbers, a kind, an IP address and field names.
    const MAX_BYTES: usize = 200;

    fn cursor(&self) -> u64 {
        self.seq
    }
}

/// Pages through a listing: asks `fetch` for the items after `after`, [`Listed::PER_PAGE`] at
/// a time, and gives each to `each`, until the listing ends or `limit` items were seen.
/// Returns the cursor of the last item seen (`after` if none), from where a later call goes
/// on.
async fn page_through<T: Listed, Fut>(
    mut after: u64,
    limit: Option<u64>,
    mut fetch: impl FnMut(u64, u32) -> Fut,
    mut each: impl FnMut(&T) -> anyhow::Result<()>,
) -> anyhow::Result<u64>
where
    Fut: Future<Output = Result<Vec<T>, latchkey_client::Error>>,
{
    let mut left = limit;
    while left != Some(0) {
        let want = left.map_or(T::PER_PAGE, |left| {
            u32::try_from(left.min(u64::from(T::PER_PAGE))).unwrap_or(T::PER_PAGE)
        });
        let page = fetch(after, want).await?;
        let Some(last) = page.last() else { break };
        // A page that does not move the cursor on would be asked for again forever.
        if last.cursor() <= after {
            bail!("the daemon's listing did not advance past {after}");
        }
        after = last.cursor();
        for item in page.iter().take(want as usize) {
            each(item)?;
        }
        left = left.map(|left| left.saturating_sub(page.len() as u64));
    }
    Ok(after)
}

// ---------------------------------------------------------------------------------------------
// Reading secrets and answers
// ---------------------------------------------------------------------------------------------

/// A new password: the first line of stdin with `password_stdin`, else asked twice on the
/// terminal with `prompt`.
fn read_new_password(password_stdin: bool, prompt: &str) -> anyhow::Result<String> {
    if password_stdin {
        return read_stdin_line("password");
    }
    let tty_error = "cannot read the password from the terminal (use --password-stdin)";
    let password = rpassword::prompt_password(format!("{prompt}: ")).context(tty_error)?;
    let again = rpassword::prompt_password("Repeat the password: ").context(tty_error)?;
    if password != again {
        bail!("the passwords do not match");
    }
    Ok(password)
}

/// The token `reset check` is to check: its argument unless that is `-` or `--token-stdin` is
/// given; then asked for without echo on a terminal, else the first line of stdin.
fn read_token(args: &CheckArgs) -> anyhow::Result<String> {
    let token = if !args.token_stdin && args.token != "-" {
        args.token.clone()
    } else if std::io::stdin().is_terminal() {
        rpassword::prompt_password("Reset token: ")
            .context("cannot read the token from the terminal")?
    } else {
        read_stdin_line("token")?
    };
    // Tokens never contain spaces; a pasted one often brings some along.
    let token = token.trim();
    if token.is_empty() {
        return Err(UsageError("no token given".into()).into());
    }
    Ok(token.to_owned())
}

/// The first line of stdin without its line ending; a usage error if there is none.
fn read_stdin_line(what: &str) -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .with_context(|| format!("cannot read the {what} from stdin"))?;
    // Only the line ending is removed: other spaces may be part of a password.
    let text = line
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&line);
    if text.is_empty() {
        return Err(UsageError(format!("stdin has no {what}")).into());
    }
    Ok(text.to_owned())
}

/// Asks before an action that cannot be undone, showing the question `describe` makes (it
/// looks up what would be affected, so a wrong id fails before anyone is asked). Refuses when
/// nobody can answer: a script that forgot `--yes` must not hang, nor act on a guess.
async fn confirm(
    action: &str,
    describe: impl Future<Output = anyhow::Result<String>>,
) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(format!(
            "refusing to {action} without confirmation: stdin is not a terminal; pass --yes"
        ))
        .into());
    }
    let question = describe.await?;
    eprint!("{question} This cannot be undone. [y/N] ");
    std::io::stderr()
        .flush()
        .context("cannot write the prompt")?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        bail!("not confirmed; did not {action}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Import
// ---------------------------------------------------------------------------------------------

/// `latchkey import`: JSON lines in, batches of [`ImportUser`] to the daemon, one outcome per
/// line out.
mod import {
    use super::*;

    /// Lines per batch, and so at most this many accounts per `import_users` call (the daemon
    /// takes up to 1000).
    const BATCH_LINES: usize = 500;

    /// The most bytes of serialised accounts per call: the daemon's default frame limit is
    /// 64 KiB (`server.max_frame_bytes`, and the client's `DEFAULT_MAX_FRAME_BYTES`), a larger
    /// frame closes the connection, and tarpc wraps the accounts in an envelope (request id,
    /// deadline, trace context) of a few hundred bytes. A quarter left over is ample.
    const BATCH_BYTES: usize = 48 * 1024;

    /// What happened to the lines of an import.
    #[derive(Debug, Default, Serialize)]
    pub(super) struct Summary {
        /// Accounts created.
        pub imported: u64,
        /// Lines that were not blank and were not imported.
        pub skipped: u64,
        /// Why, line by line, in line order.
        pub errors: Vec<LineError>,
    }

    /// Why one line was skipped.
    #[derive(Debug, Serialize)]
    pub(super) struct LineError {
        /// The line number in the input, from 1.
        pub line: u64,
        /// The daemon's `ApiError` code (`EmailTaken`, `InvalidEmail`, `InvalidInput`), or
        /// ours for a line the daemon never saw: `InvalidJson`, `InvalidInput`, `TooLarge`.
        pub error: &'static str,
        /// What is wrong, for people. Never holds the password hash.
        pub message: String,
    }

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
    pub(super) async fn run(client: &Client, file: &Path) -> anyhow::Result<Summary> {
        let mut input: Box<dyn BufRead> = if file == Path::new("-") {
            Box::new(std::io::stdin().lock())
        } else {
            let opened =
                File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
            Box::new(BufReader::new(opened))
        };
        let mut summary = Summary::default();
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
    async fn send(client: &Client, batch: &mut Batch, summary: &mut Summary) -> anyhow::Result<()> {
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

    impl Summary {
        /// Records a skipped line and reports it on stderr.
        fn skip(&mut self, line: u64, error: &'static str, message: String) {
            eprintln!("line {line}: {message} ({error})");
            self.skipped += 1;
            self.errors.push(LineError {
                line,
                error,
                message,
            });
        }
    }

    /// Why a line is not an account, before the daemon sees it.
    #[derive(Debug)]
    pub(super) struct Problem {
        /// `InvalidJson`, `InvalidInput` or `TooLarge`.
        pub code: &'static str,
        /// What is wrong; never quotes the hash.
        pub message: String,
    }

    impl Problem {
        fn new(code: &'static str, message: impl Into<String>) -> Problem {
            Problem {
                code,
                message: message.into(),
            }
        }

        fn json(message: impl Into<String>) -> Problem {
            Problem::new("InvalidJson", message)
        }

        fn input(message: impl Into<String>) -> Problem {
            Problem::new("InvalidInput", message)
        }
    }

    /// The JSON object of one line, as read.
    type Fields = serde_json::Map<String, serde_json::Value>;

    /// Where the password hash may be, in order of preference: latchkey's name, then the
    /// names Node applications commonly give it.
    const HASH_FIELDS: [&str; 4] = ["password_hash", "password", "passwordHash", "hash"];

    /// Where the creation time may be.
    const CREATED_FIELDS: [&str; 2] = ["created_at", "createdAt"];

    /// Timestamps above this are milliseconds: as seconds it would be the year 5138, as
    /// milliseconds it is March 1973, before any account being imported.
    const MILLIS_ABOVE: f64 = 1e11;

    /// One line of input as an account to import.
    pub(super) fn parse_line(text: &str) -> Result<ImportUser, Problem> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            // serde_json says "at line 1 column N"; within one line only the column helps.
            let message = e.to_string();
            let reason = message.split(" at line ").next().unwrap_or(&message);
            Problem::json(format!("not valid JSON: {reason} at column {}", e.column()))
        })?;
        let fields = match value {
            serde_json::Value::Object(fields) => fields,
            serde_json::Value::Array(_) => {
                return Err(Problem::json(
                    "a JSON array, not an object: give one account per line (mongoexport \
                     without --jsonArray)",
                ))
            }
            _ => return Err(Problem::json("not a JSON object")),
        };
        let email = string(&fields, "email")?.ok_or_else(|| Problem::input("no email"))?;
        let missing_hash = || {
            Problem::input(format!(
                "{email}: no password hash (looked for {})",
                HASH_FIELDS.join(", ")
            ))
        };
        let password_hash = first_present(&fields, &HASH_FIELDS)
            .map(|(key, _)| string(&fields, key))
            .transpose()?
            .flatten()
            .ok_or_else(missing_hash)?;
        let created_at = match first_present(&fields, &CREATED_FIELDS) {
            Some((key, value)) => Some(
                timestamp(value)
                    .map_err(|reason| Problem::input(format!("{email}: {key}: {reason}")))?,
            ),
            None => None,
        };
        Ok(ImportUser {
            name: string(&fields, "name")?.unwrap_or_default(),
            role: string(&fields, "role")?,
            status: status(&fields)
                .map_err(|reason| Problem::input(format!("{email}: {reason}")))?,
            locale: string(&fields, "locale")?,
            created_at,
            password_hash,
            email,
        })
    }

    /// The first of `keys` present with a value other than `null`.
    fn first_present<'a>(
        fields: &'a Fields,
        keys: &[&'static str],
    ) -> Option<(&'static str, &'a serde_json::Value)> {
        keys.iter()
            .find_map(|&key| fields.get(key).filter(|v| !v.is_null()).map(|v| (key, v)))
    }

    /// A string field; `None` when absent or `null`. The error names the field, never its
    /// value, which may be the hash.
    fn string(fields: &Fields, key: &str) -> Result<Option<String>, Problem> {
        match fields.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(Problem::input(format!("{key}: expected a string"))),
        }
    }

    /// The status from `status` ("active" or "disabled"), `disabled` or `active` (booleans);
    /// `None` when none is given. Fields that disagree are refused rather than guessed at.
    fn status(fields: &Fields) -> Result<Option<UserStatus>, String> {
        let named = match fields.get("status") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(name)) => Some(match name.trim() {
                s if s.eq_ignore_ascii_case("active") => UserStatus::Active,
                s if s.eq_ignore_ascii_case("disabled") => UserStatus::Disabled,
                _ => {
                    return Err(format!(
                        "status: {name:?} is neither \"active\" nor \"disabled\""
                    ))
                }
            }),
            Some(_) => return Err("status: expected \"active\" or \"disabled\"".into()),
        };
        let flag = |key: &str, when_true: UserStatus, when_false: UserStatus| match fields.get(key)
        {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Bool(true)) => Ok(Some(when_true)),
            Some(serde_json::Value::Bool(false)) => Ok(Some(when_false)),
            Some(_) => Err(format!("{key}: expected true or false")),
        };
        let given = [
            ("status", named),
            (
                "disabled",
                flag("disabled", UserStatus::Disabled, UserStatus::Active)?,
            ),
            (
                "active",
                flag("active", UserStatus::Active, UserStatus::Disabled)?,
            ),
        ];
        let mut given = given.into_iter().filter_map(|(key, s)| s.map(|s| (key, s)));
        let first = given.next();
        if let Some((key, status)) = first {
            if let Some((other, _)) = given.find(|&(_, s)| s != status) {
                return Err(format!("{key} and {other} disagree"));
            }
        }
        Ok(first.map(|(_, status)| status))
    }

    /// The forms a creation time may take, for error messages.
    const TIME_FORMS: &str = "Unix seconds or milliseconds, an RFC 3339 time, \
        {\"$date\": \"<RFC 3339 time>\"} or {\"$date\": {\"$numberLong\": \"<ms>\"}}";

    /// A creation time in any of the accepted forms, as Unix seconds.
    pub(super) fn timestamp(value: &serde_json::Value) -> Result<UnixTime, String> {
        use serde_json::Value;
        let millis = |ms: f64| seconds(ms / 1000.0);
        match value {
            Value::Number(n) => {
                let n = n.as_f64().unwrap_or(f64::NAN);
                if n > MILLIS_ABOVE {
                    millis(n)
                } else {
                    seconds(n)
                }
            }
            Value::String(text) => rfc3339(text),
            Value::Object(object) => match object.get("$date") {
                Some(Value::String(text)) => rfc3339(text),
                Some(Value::Number(ms)) => millis(ms.as_f64().unwrap_or(f64::NAN)),
                Some(Value::Object(long)) => match long.get("$numberLong") {
                    Some(Value::String(ms)) => match ms.trim().parse::<i64>() {
                        Ok(ms) => millis(ms as f64),
                        Err(_) => Err(format!("$numberLong {ms:?} is not a number")),
                    },
                    _ => Err(format!("expected {TIME_FORMS}")),
                },
                _ => Err(format!("expected {TIME_FORMS}")),
            },
            _ => Err(format!("expected {TIME_FORMS}")),
        }
    }

    /// Whole seconds since the epoch from a count of seconds.
    fn seconds(secs: f64) -> Result<UnixTime, String> {
        if !secs.is_finite() {
            return Err("not a number of seconds".into());
        }
        if secs < 0.0 {
            return Err("lies before 1970".into());
        }
        // Saturates far beyond any plausible time; the daemon refuses times in the future.
        Ok(secs as UnixTime)
    }

    /// An RFC 3339 time: `2023-04-01T12:00:00Z`, fractions of a second allowed, `Z` or an
    /// offset such as `+02:00`.
    fn rfc3339(text: &str) -> Result<UnixTime, String> {
        let text = text.trim();
        let bad = || format!("{text:?} is not an RFC 3339 time such as 2023-04-01T12:00:00Z");
        let (utc_text, offset) = split_offset(text);
        let utc_text = match offset {
            Some(_) => format!("{utc_text}Z"),
            None => utc_text.to_owned(),
        };
        let at = humantime::parse_rfc3339(&utc_text).map_err(|_| bad())?;
        let secs = at
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "lies before 1970".to_owned())?
            .as_secs();
        let utc = i128::from(secs) - i128::from(offset.unwrap_or(0));
        UnixTime::try_from(utc).map_err(|_| "lies before 1970".to_owned())
    }

    /// Splits a trailing `+HH:MM` or `-HH:MM` offset off a time, which humantime does not
    /// read; returns the offset east of UTC in seconds.
    fn split_offset(text: &str) -> (&str, Option<i64>) {
        let Some(at) = text
            .len()
            .checked_sub(6)
            .filter(|&at| text.is_char_boundary(at))
        else {
            return (text, None);
        };
        let (time, offset) = text.split_at(at);
        let sign = match offset.as_bytes().first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return (text, None),
        };
        // A date alone ends in "-MM-DD", which is no offset: an offset follows a time.
        if !time.contains('T') || !offset.is_ascii() || offset.as_bytes().get(3) != Some(&b':') {
            return (text, None);
        }
        match (offset[1..3].parse::<i64>(), offset[4..].parse::<i64>()) {
            (Ok(hours), Ok(minutes)) => (time, Some(sign * (hours * 3600 + minutes * 60))),
            _ => (text, None),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

/// What a command produced, printed by [`Outcome::print`].
#[derive(Serialize)]
#[serde(untagged)]
enum Outcome {
    /// The daemon's health.
    Health(Health),
    /// An account as it is now.
    User(User),
    /// An account was deleted.
    Deleted {
        /// Its id.
        deleted: UserId,
    },
    /// An admin set a password.
    PasswordSet(PasswordChanged),
    /// A reset was requested (which says nothing about whether the account exists).
    ResetRequested {
        /// The address as given.
        reset_requested: String,
    },
    /// A reset link for support staff.
    ResetLink(ResetLink),
    /// What a reset token amounts to.
    TokenCheck(TokenCheck),
    /// An outbox message was queued again.
    Retried {
        /// Its id.
        retried: u64,
    },
    /// An outbox message was dropped.
    Dropped {
        /// Its id.
        dropped: u64,
    },
    /// What an import did.
    Import(import::Summary),
    /// Text printed as it is (already a machine-readable format).
    Text(String),
    /// Printed already, item by item (listings).
    #[serde(skip)]
    Printed,
}

impl Outcome {
    /// Writes the outcome to stdout, as JSON or as text.
    fn print(&self, json: bool) -> anyhow::Result<()> {
        let text = match self {
            Outcome::Printed => return Ok(()),
            Outcome::Text(text) => text.trim_end().to_owned(),
            _ if json => serde_json::to_string(self).context("cannot encode the result as JSON")?,
            _ => self.to_string(),
        };
        write_stdout(&text)
    }

    /// 1 when the command worked but the answer is "no" (see the module documentation).
    fn exit_code(&self) -> ExitCode {
        match self {
            Outcome::TokenCheck(check) if check.state != TokenState::Valid => ExitCode::from(1),
            Outcome::Import(summary) if summary.skipped > 0 => ExitCode::from(1),
            _ => ExitCode::SUCCESS,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Health(h) => write!(
                f,
                "{}: latchkeyd {}, up {} s, our role {}",
                h.status,
                h.version,
                h.uptime_secs,
                wire_name(&h.caller_role)
            ),
            Outcome::User(user) => UserLine(user).fmt(f),
            Outcome::Deleted { deleted } => write!(f, "deleted user {deleted}"),
            Outcome::PasswordSet(changed) => write!(
                f,
                "password set for user {}; credential epoch now {} (drop sessions from older \
                 epochs)",
                changed.user_id, changed.credential_epoch
            ),
            Outcome::ResetRequested { reset_requested } => write!(
                f,
                "if an active account exists for {reset_requested}, a reset link was sent to it"
            ),
            Outcome::ResetLink(link) => write!(
                f,
                "{}\nuser {}, expires {}",
                link.link,
                link.user_id,
                Expiry(link.expires_at)
            ),
            Outcome::TokenCheck(check) => {
                f.write_str(&wire_name(&check.state))?;
                match check.expires_at {
                    Some(at) => write!(f, ", expires {}", Expiry(at)),
                    None => Ok(()),
                }
            }
            Outcome::Retried { retried } => write!(f, "message {retried} queued again, due now"),
            Outcome::Dropped { dropped } => write!(f, "dropped message {dropped}"),
            Outcome::Import(summary) => write!(
                f,
                "imported {}, skipped {}",
                summary.imported, summary.skipped
            ),
            Outcome::Text(text) => f.write_str(text),
            Outcome::Printed => Ok(()),
        }
    }
}

/// A user on one line: `user 3 ada@example.com (Ada) role=user status=active epoch=0`.
struct UserLine<'a>(&'a User);

impl fmt::Display for UserLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let u = self.0;
        write!(f, "user {} {}", u.id, u.email)?;
        if !u.name.is_empty() {
            write!(f, " ({})", u.name)?;
        }
        write!(f, " role={} status={}", u.role, wire_name(&u.status))?;
        if let Some(locale) = &u.locale {
            write!(f, " locale={locale}")?;
        }
        write!(f, " epoch={}", u.credential_epoch)
    }
}

/// An outbox message on one line: `message 4 password_reset to ann@example.com queued
/// attempts=1 next=2025-01-01T12:00:30Z last_error="..."`.
struct MessageLine<'a>(&'a OutboxMessage);

impl fmt::Display for MessageLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "message {} {} to {} {} attempts={} queued_at={}",
            m.id,
            m.kind,
            m.to,
            wire_name(&m.state),
            m.attempts,
            Time(m.created_at)
        )?;
        if let Some(next) = m.next_attempt_at {
            write!(f, " next={}", Time(next))?;
        }
        if let Some(error) = &m.last_error {
            write!(f, " last_error={error:?}")?;
        }
        Ok(())
    }
}

/// An event on one line: `12 2025-01-01T12:00:00Z reset_requested user=3 ip=203.0.113.7`.
struct EventLine<'a>(&'a Event);

impl fmt::Display for EventLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        write!(f, "{} {} {}", e.seq, Time(e.at), wire_name(&e.kind))?;
        if let Some(user) = e.user_id {
            write!(f, " user={user}")?;
        }
        if let Some(ip) = &e.client_ip {
            write!(f, " ip={ip}")?;
        }
        Ok(())
    }
}

/// A Unix time as RFC 3339 in UTC, to the second.
struct Time(UnixTime);

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match UNIX_EPOCH.checked_add(Duration::from_secs(self.0)) {
            Some(at) => humantime::format_rfc3339_seconds(at).fmt(f),
            None => write!(f, "@{}", self.0),
        }
    }
}

/// An expiry time and how far away it is: `2025-01-01T12:30:00Z (in 29m 59s)`.
struct Expiry(UnixTime);

impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match self.0.checked_sub(now) {
            Some(left) if left > 0 => write!(
                f,
                "{} (in {})",
                Time(self.0),
                humantime::format_duration(Duration::from_secs(left))
            ),
            _ => write!(f, "{} (passed)", Time(self.0)),
        }
    }
}

/// A unit variant's name as the wire and `--json` spell it (`active`, `reset_requested`), so
/// text and JSON output cannot drift apart.
fn wire_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "?".into(),
    }
}

/// Writes one item of a listing: a JSON object on its own line with `--json`, else `text`.
fn print_item<T: Serialize>(json: bool, item: &T, text: impl fmt::Display) -> anyhow::Result<()> {
    if json {
        write_stdout(&serde_json::to_string(item).context("cannot encode the result as JSON")?)
    } else {
        write_stdout(&text.to_string())
    }
}

/// Writes one line to stdout and flushes it, so a follower sees each line at once. A closed
/// pipe is [`StdoutClosed`], which ends the run quietly.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

#[cfg(test)]
mod tests {
    use super::import::{parse_line, timestamp};
    use super::*;

    /// A well-formed bcrypt hash (of "password", cost 10).
    const HASH: &str = "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy";

    fn ts(json: &str) -> Result<UnixTime, String> {
        timestamp(&serde_json::from_str(json).map_err(|e| e.to_string())?)
    }

    #[test]
    fn every_accepted_creation_time_form_gives_the_same_second() {
        let at = 1_680_350_400; // 2023-04-01T12:00:00Z
        for form in [
            "1680350400",
            "1680350400000",
            "1680350400123.0",
            "\"2023-04-01T12:00:00Z\"",
            "\"2023-04-01T12:00:00.000Z\"",
            "\"2023-04-01T14:00:00+02:00\"",
            "\"2023-04-01T07:30:00-04:30\"",
            "{\"$date\": \"2023-04-01T12:00:00.000Z\"}",
            "{\"$date\": {\"$numberLong\": \"1680350400000\"}}",
            "{\"$date\": 1680350400000}",
        ] {
            assert_eq!(ts(form), Ok(at), "{form}");
        }
    }

    #[test]
    fn unreadable_creation_times_are_refused() {
        for form in [
            "-5",
            "\"2023-04-01\"",
            "\"yesterday\"",
            "\"2023-04-01T12:00:00\"",
            "{\"$date\": {\"$numberLong\": \"soon\"}}",
            "{\"when\": 1}",
            "true",
            "{\"$date\": \"1969-12-31T23:59:59Z\"}",
        ] {
            assert!(ts(form).is_err(), "{form}: {:?}", ts(form));
        }
    }

    #[test]
    fn a_mongoexport_line_becomes_an_account() {
        let line = format!(
            r#"{{"_id":{{"$oid":"642817c0e1b2c3d4e5f60718"}},"email":"Ada@Example.com","password":"{HASH}","name":"Ada","role":"admin","status":"active","createdAt":{{"$date":"2023-04-01T12:00:00.000Z"}},"__v":0}}"#
        );
        let user = parse_line(&line).expect("parses");
        assert_eq!(
            user,
            ImportUser {
                email: "Ada@Example.com".into(),
                name: "Ada".into(),
                role: Some("admin".into()),
                status: Some(UserStatus::Active),
                password_hash: HASH.into(),
                locale: None,
                created_at: Some(1_680_350_400),
            }
        );
    }

    #[test]
    fn the_hash_is_found_under_each_name_and_the_status_under_each_form() {
        for key in ["password_hash", "password", "passwordHash", "hash"] {
            let line = format!(r#"{{"email":"a@example.com","{key}":"{HASH}"}}"#);
            assert_eq!(parse_line(&line).expect(key).password_hash, HASH);
        }
        for (fields, status) in [
            (r#""disabled":true"#, Some(UserStatus::Disabled)),
            (r#""active":false"#, Some(UserStatus::Disabled)),
            (
                r#""status":"Disabled","disabled":true"#,
                Some(UserStatus::Disabled),
            ),
            (r#""active":true"#, Some(UserStatus::Active)),
            (r#""status":null"#, None),
        ] {
            let line = format!(r#"{{"email":"a@example.com","hash":"{HASH}",{fields}}}"#);
            assert_eq!(parse_line(&line).expect(fields).status, status, "{fields}");
        }
    }

    #[test]
    fn bad_lines_say_why_without_quoting_the_hash() {
        for (line, code, says) in [
            (
                r#"{"email": "a@example.com","#,
                "InvalidJson",
                "not valid JSON",
            ),
            (
                r#"[{"email": "a@example.com"}]"#,
                "InvalidJson",
                "--jsonArray",
            ),
            (r#""a@example.com""#, "InvalidJson", "not a JSON object"),
            (
                r#"{"name":"x","password":"$2b$secret"}"#,
                "InvalidInput",
                "no email",
            ),
            (
                r#"{"email":"a@example.com"}"#,
                "InvalidInput",
                "no password hash",
            ),
            (
                r#"{"email":"a@example.com","password":7}"#,
                "InvalidInput",
                "password: expected a string",
            ),
            (
                r#"{"email":"a@example.com","hash":"$2b$secret","status":"banned"}"#,
                "InvalidInput",
                "banned",
            ),
            (
                r#"{"email":"a@example.com","hash":"$2b$secret","active":true,"disabled":true}"#,
                "InvalidInput",
                "disabled and active disagree",
            ),
            (
                r#"{"email":"a@example.com","hash":"$2b$secret","createdAt":"soon"}"#,
                "InvalidInput",
                "createdAt",
            ),
        ] {
            let problem = match parse_line(line) {
                Ok(user) => panic!("{line}: expected an error, got {user:?}"),
                Err(problem) => problem,
            };
            assert_eq!(problem.code, code, "{line}: {problem:?}");
            assert!(problem.message.contains(says), "{line}: {problem:?}");
            assert!(!problem.message.contains("secret"), "{line}: {problem:?}");
        }
    }

    /// The largest encoding of `item` fits its [`Listed::MAX_BYTES`], so a page of them fits
    /// in [`PAGE_BYTES`].
    #[track_caller]
    fn assert_fits<T: Listed>(item: &T) {
        let size = serde_json::to_vec(item).expect("encodes").len();
        assert!(size <= T::MAX_BYTES, "{size} bytes > {}", T::MAX_BYTES);
    }

    #[test]
    fn the_largest_possible_items_fit_their_page_budget() {
        // Quotes escape to two bytes, control characters (refused in names, possible in an
        // SMTP error) to six.
        assert_fits(&User {
            id: u64::MAX,
            email: format!("{}@{}", "\"".repeat(64), "x".repeat(189)),
            name: "\"".repeat(256),
            role: "r".repeat(64),
            status: UserStatus::Disabled,
            locale: Some("l".repeat(35)),
            created_at: u64::MAX,
            updated_at: u64::MAX,
            password_changed_at: u64::MAX,
            credential_epoch: u64::MAX,
        });
        assert_fits(&OutboxMessage {
            id: u64::MAX,
            kind: "password_changed".into(),
            to: format!("{}@{}", "\"".repeat(64), "x".repeat(189)),
            state: MessageState::Queued,
            attempts: u32::MAX,
            created_at: u64::MAX,
            next_attempt_at: Some(u64::MAX),
            last_error: Some("\u{1}".repeat(500)),
        });
        assert_fits(&Event {
            seq: u64::MAX,
            at: u64::MAX,
            kind: latchkey_client::EventKind::PasswordChanged,
            user_id: Some(u64::MAX),
            client_ip: Some("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".into()),
        });
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
