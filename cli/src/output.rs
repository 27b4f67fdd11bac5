//! What the CLI prints: each command's result ([`Outcome`]), the one-line forms of users,
//! outbox messages and events, times, and the writing to stdout itself.
//!
//! Text and `--json` output are made here side by side from the same values, so that the two
//! cannot drift apart; the integration tests and operators' scripts read both.

use std::fmt;
use std::io::Write;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use latchkey_client::{
    Event, Health, OutboxMessage, PasswordChanged, ResetLink, TokenCheck, TokenState, UnixTime,
    User, UserId,
};
use serde::Serialize;

use crate::utc;

/// Whoever reads our stdout has gone (`latchkey events tail --follow | head -3`): stop quietly,
/// as a successful run.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
pub(crate) struct StdoutClosed;

/// What a command produced, printed by [`Outcome::print`].
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum Outcome {
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
    Import(ImportSummary),
    /// A backup written or checked.
    Backup(BackupSummary),
    /// Text printed as it is (already a machine-readable format).
    Text(String),
    /// Printed already, item by item (listings).
    #[serde(skip)]
    Printed,
}

/// What `latchkey backup` wrote or `backup --verify` found.
#[derive(Serialize)]
pub(crate) struct BackupSummary {
    /// The file.
    pub(crate) file: String,
    /// Whether it was written now (else checked).
    pub(crate) written: bool,
    /// Accounts in it.
    pub(crate) users: u64,
    /// Token records.
    pub(crate) tokens: u64,
    /// Messages.
    pub(crate) mail: u64,
    /// Events.
    pub(crate) events: u64,
    /// When the snapshot was taken (Unix seconds).
    pub(crate) created_at: u64,
    /// The backend it came from.
    pub(crate) backend: String,
    /// The daemon that wrote it.
    pub(crate) daemon_version: String,
    /// Its size.
    pub(crate) bytes: u64,
}

impl Outcome {
    /// Writes the outcome to stdout, as JSON or as text.
    pub(crate) fn print(&self, json: bool) -> anyhow::Result<()> {
        let text = match self {
            Outcome::Printed => return Ok(()),
            Outcome::Text(text) => text.trim_end().to_owned(),
            _ if json => serde_json::to_string(self).context("cannot encode the result as JSON")?,
            _ => self.to_string(),
        };
        write_stdout(&text)
    }

    /// 1 when the command worked but the answer is "no" (see the crate documentation).
    pub(crate) fn exit_code(&self) -> ExitCode {
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
            Outcome::Health(h) => {
                write!(
                    f,
                    "{}: latchkeyd {}, up {} s, our role {}",
                    h.status,
                    h.version,
                    h.uptime_secs,
                    wire_name(&h.caller_role)
                )?;
                match h.store.as_str() {
                    "" => Ok(()),
                    store => write!(f, ", store {store}"),
                }
            }
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
            Outcome::Backup(b) => write!(
                f,
                "{} {}: {} users, {} tokens, {} messages, {} events; taken {} from {} by latchkeyd {}",
                if b.written { "wrote" } else { "verified" },
                b.file,
                b.users,
                b.tokens,
                b.mail,
                b.events,
                Time(b.created_at),
                b.backend,
                b.daemon_version
            ),
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

/// What happened to the lines of an import (see `commands/import.rs`).
#[derive(Debug, Default, Serialize)]
pub(crate) struct ImportSummary {
    /// Accounts created.
    pub(crate) imported: u64,
    /// Lines that were not blank and were not imported.
    pub(crate) skipped: u64,
    /// Why, line by line, in line order.
    pub(crate) errors: Vec<LineError>,
}

/// Why one line of an import was skipped.
#[derive(Debug, Serialize)]
pub(crate) struct LineError {
    /// The line number in the input, from 1.
    pub(crate) line: u64,
    /// The daemon's `ApiError` code (`EmailTaken`, `InvalidEmail`, `InvalidInput`), or
    /// ours for a line the daemon never saw: `InvalidJson`, `InvalidInput`, `TooLarge`.
    pub(crate) error: &'static str,
    /// What is wrong, for people. Never holds the password hash.
    pub(crate) message: String,
}

impl ImportSummary {
    /// Records a skipped line and reports it on stderr at once, so that a long import shows
    /// its problems as it goes.
    pub(crate) fn skip(&mut self, line: u64, error: &'static str, message: String) {
        eprintln!("line {line}: {message} ({error})");
        self.skipped += 1;
        self.errors.push(LineError {
            line,
            error,
            message,
        });
    }
}

/// A user on one line: `user 3 ada@example.com (Ada) role=user status=active epoch=0`.
pub(crate) struct UserLine<'a>(pub(crate) &'a User);

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
pub(crate) struct MessageLine<'a>(pub(crate) &'a OutboxMessage);

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
pub(crate) struct EventLine<'a>(pub(crate) &'a Event);

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

/// A Unix time as RFC 3339 in UTC, to the second: `2025-01-01T12:30:00Z`; `@SECS` for a time
/// past the end of 9999 (which humantime, used before, failed to print at all).
struct Time(UnixTime);

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A civil time prints without a fraction when it has none, and ours never do.
        match utc::from_unix(self.0) {
            Some(at) => write!(f, "{at}Z"),
            None => write!(f, "@{}", self.0),
        }
    }
}

/// An expiry time and how far away it is: `2025-01-01T12:30:00Z (in 29m 59s)`.
struct Expiry(UnixTime);

impl fmt::Display for Expiry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not `jiff::Timestamp::now()`, which panics on a clock outside its range; a clock
        // before 1970 makes every expiry lie ahead, as it did before.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        match self.0.checked_sub(now) {
            Some(left) if left > 0 => write!(f, "{} (in {})", Time(self.0), Left(left)),
            _ => write!(f, "{} (passed)", Time(self.0)),
        }
    }
}

/// A positive number of seconds as humantime's `format_duration` wrote it, which the output
/// kept when the CLI moved to jiff: `29m 59s`, `1h 5m 3s`, `1day`, `2days 3h`, `1year 2months`.
/// jiff's friendly format counts no days in a duration (`24h`, `51h`) and names them `d` in a
/// span; humantime's years and months are fixed lengths (365.25 and 30.44 days), not calendar
/// ones, so neither jiff format can say the same.
struct Left(u64);

impl fmt::Display for Left {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Each unit's length in seconds, its name and whether the name takes a plural `s`.
        const UNITS: [(u64, &str, bool); 6] = [
            (31_557_600, "year", true),
            (2_630_016, "month", true),
            (86_400, "day", true),
            (3_600, "h", false),
            (60, "m", false),
            (1, "s", false),
        ];
        let mut rest = self.0;
        let mut separator = "";
        for (length, name, plural) in UNITS {
            let count = rest / length;
            rest %= length;
            if count > 0 {
                let s = if plural && count > 1 { "s" } else { "" };
                write!(f, "{separator}{count}{name}{s}")?;
                separator = " ";
            }
        }
        Ok(())
    }
}

/// A unit variant's name as the wire and `--json` spell it (`active`, `reset_requested`), so
/// text and JSON output cannot drift apart.
pub(crate) fn wire_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "?".into(),
    }
}

/// Writes one item of a listing: a JSON object on its own line with `--json`, else `text`.
pub(crate) fn print_item<T: Serialize>(
    json: bool,
    item: &T,
    text: impl fmt::Display,
) -> anyhow::Result<()> {
    if json {
        write_stdout(&serde_json::to_string(item).context("cannot encode the result as JSON")?)
    } else {
        write_stdout(&text.to_string())
    }
}

/// Writes one line to stdout and flushes it, so a follower sees each line at once. A closed
/// pipe is [`StdoutClosed`], which ends the run quietly.
pub(crate) fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

#[cfg(test)]
mod tests {
    use latchkey_client::EventKind;

    use super::*;

    #[test]
    fn times_print_as_rfc3339_in_utc_to_the_second() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (1_735_734_600, "2025-01-01T12:30:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (253_402_300_799, "9999-12-31T23:59:59Z"),
            // humantime failed to print these (a panic in `to_string`).
            (253_402_300_800, "@253402300800"),
            (u64::MAX, "@18446744073709551615"),
        ] {
            assert_eq!(Time(secs).to_string(), text);
        }
    }

    #[test]
    fn time_left_prints_as_humantime_printed_it() {
        // Each compared with humantime 2.4's `format_duration`.
        for (secs, text) in [
            (1, "1s"),
            (59, "59s"),
            (60, "1m"),
            (1_799, "29m 59s"),
            (3_903, "1h 5m 3s"),
            (86_399, "23h 59m 59s"),
            (86_400, "1day"),
            (86_401, "1day 1s"),
            (183_600, "2days 3h"),
            (2_630_016, "1month"),
            (36_817_632, "1year 2months"),
            (63_115_201, "2years 1s"),
            (u64::MAX, "584542046090years 7months 15days 17h 5m 3s"),
        ] {
            assert_eq!(Left(secs).to_string(), text);
        }
    }

    #[test]
    fn an_expiry_says_how_far_away_it_is() {
        assert_eq!(Expiry(0).to_string(), "1970-01-01T00:00:00Z (passed)");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_secs();
        let at = now + 1_800;
        let text = Expiry(at).to_string();
        // A second may pass between our clock reading and the one inside.
        let expected = [
            format!("{} (in 30m)", Time(at)),
            format!("{} (in 29m 59s)", Time(at)),
        ];
        assert!(expected.contains(&text), "{text}");
    }

    #[test]
    fn an_event_prints_on_one_line() {
        let event = Event {
            seq: 12,
            at: 1_735_732_800,
            kind: EventKind::ResetRequested,
            user_id: Some(3),
            client_ip: Some("203.0.113.7".into()),
        };
        assert_eq!(
            EventLine(&event).to_string(),
            "12 2025-01-01T12:00:00Z reset_requested user=3 ip=203.0.113.7"
        );
    }
}
