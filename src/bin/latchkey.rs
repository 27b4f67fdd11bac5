//! `latchkey`: the operator's command line for `latchkeyd`.
//!
//! It connects to the daemon's socket, makes one call and prints the result, either as a short
//! line for people or, with `--json`, as one JSON document on stdout for scripts.
//!
//! Passwords are never taken from the command line, where every user on the host can read them
//! in `/proc/PID/cmdline` and shells keep them in their history: `user add` asks on the
//! terminal (twice), or reads the first line of stdin with `--password-stdin`.
//!
//! Exit status: 0 on success; 1 when the daemon refused the call (its `ApiError` code is
//! printed, and with `--json` also written to stdout) or on any other failure; 2 for usage
//! errors, clap's own and ours (such as a deletion that cannot be confirmed); 3 when the
//! daemon cannot be reached or the connection is lost mid-call.

use std::fmt;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use latchkey_client::{
    ApiError, Client, ConnectOptions, Health, NewUser, User, UserId, UserStatus,
};
use serde::Serialize;

/// The socket tried when neither `--socket` nor `LATCHKEY_SOCKET` names one; the daemon's
/// default, relative to the working directory.
const DEFAULT_SOCKET: &str = "latchkey.sock";

/// Command line for latchkeyd, the password-reset and credential daemon.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// The daemon's socket [default: $LATCHKEY_SOCKET, else latchkey.sock].
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Seconds to wait for the connection and for the answer [default: 5 and 10].
    #[arg(long, global = true, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    /// Print results (and daemon errors) as JSON on stdout, for scripts.
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

/// A mistake in how the command was used that clap cannot see, such as a deletion that
/// cannot be confirmed. Exits 2, like clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

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
    /// Text printed as it is (already a machine-readable format).
    Text(String),
}

fn main() -> ExitCode {
    // Usage errors exit here with clap's status 2 and message.
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e, cli.json),
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    // One thread is enough for one call at a time, and it makes the blocking terminal reads
    // below harmless: the only other task is the client's dispatcher, idle while we read.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let outcome = runtime.block_on(async {
        let client = connect(cli).await?;
        execute(&cli.command, &client).await
    })?;
    outcome.print(cli.json)
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

/// Runs one command against the daemon.
async fn execute(command: &Command, client: &Client) -> anyhow::Result<Outcome> {
    let user = match command {
        Command::Health => return Ok(Outcome::Health(client.health().await?)),
        Command::Metrics => return Ok(Outcome::Text(client.metrics().await?)),
        Command::User(UserCommand::Add(args)) => {
            let password = read_new_password(args)?;
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
        Command::User(UserCommand::Show { user }) => match user.trim().parse::<UserId>() {
            Ok(id) => client.get_user(id).await,
            Err(_) => client.find_user(user).await,
        }
        .with_context(|| format!("cannot show user {user}"))?,
        Command::User(UserCommand::Disable { id }) => {
            set_status(client, *id, UserStatus::Disabled).await?
        }
        Command::User(UserCommand::Enable { id }) => {
            set_status(client, *id, UserStatus::Active).await?
        }
        Command::User(UserCommand::Delete { id, yes }) => {
            if !yes {
                confirm_delete(client, *id).await?;
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
        .with_context(|| format!("cannot set user {id} {}", status_name(status)))
}

/// Asks before a deletion, showing whom it would delete. Refuses when nobody can answer:
/// a script that forgot `--yes` must not hang, nor delete on a guess.
async fn confirm_delete(client: &Client, id: UserId) -> anyhow::Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(format!(
            "refusing to delete user {id} without confirmation: stdin is not a terminal; \
             pass --yes"
        ))
        .into());
    }
    let user = client
        .get_user(id)
        .await
        .with_context(|| format!("cannot delete user {id}"))?;
    eprint!("Delete {}? This cannot be undone. [y/N] ", UserLine(&user));
    std::io::stderr()
        .flush()
        .context("cannot write the prompt")?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        bail!("not deleted");
    }
    Ok(())
}

/// The new account's password: the first line of stdin with `--password-stdin`, else asked
/// twice on the terminal.
fn read_new_password(args: &AddArgs) -> anyhow::Result<String> {
    if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        // Only the line ending is removed: other spaces may be part of the password.
        let password = line
            .strip_suffix('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .unwrap_or(&line);
        if password.is_empty() {
            return Err(UsageError("--password-stdin: stdin has no password".into()).into());
        }
        return Ok(password.to_owned());
    }
    let tty_error = "cannot read the password from the terminal (use --password-stdin)";
    let password =
        rpassword::prompt_password(format!("Password for {}: ", args.email)).context(tty_error)?;
    let again = rpassword::prompt_password("Repeat the password: ").context(tty_error)?;
    if password != again {
        bail!("the passwords do not match; nothing was created");
    }
    Ok(password)
}

impl Outcome {
    /// Writes the outcome to stdout, as JSON or as a short line.
    fn print(&self, json: bool) -> anyhow::Result<()> {
        let text = match self {
            Outcome::Text(text) => text.trim_end().to_owned(),
            _ if json => serde_json::to_string(self).context("cannot encode the result as JSON")?,
            _ => self.to_string(),
        };
        write_stdout(&text)
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
                match h.caller_role {
                    latchkey_client::CallerRole::App => "app",
                    latchkey_client::CallerRole::Admin => "admin",
                }
            ),
            Outcome::User(user) => UserLine(user).fmt(f),
            Outcome::Deleted { deleted } => write!(f, "deleted user {deleted}"),
            Outcome::Text(text) => f.write_str(text),
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
        write!(f, " role={} status={}", u.role, status_name(u.status))?;
        if let Some(locale) = &u.locale {
            write!(f, " locale={locale}")?;
        }
        write!(f, " epoch={}", u.credential_epoch)
    }
}

/// A status as the wire and `--json` spell it.
fn status_name(status: UserStatus) -> &'static str {
    match status {
        UserStatus::Active => "active",
        UserStatus::Disabled => "disabled",
    }
}

/// Writes one line to stdout; a closed pipe (`latchkey ... | head -0`) is not an error.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
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
