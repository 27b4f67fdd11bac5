//! The `latchkey` CLI (issue 5): the operator's commands for users, resets, the outbox, the
//! event log and imports, run as the real binary against a real daemon, the way an operator
//! or a script runs them. Secrets (passwords, reset tokens) only ever travel on stdin.
//!
//! The first CLI tests (user add/show/disable/enable/delete, health, exit statuses) live in
//! `foundation.rs`.

use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use latchkey_client::{
    ApiError, Event, EventKind, MessageState, OutboxMessage, PasswordChanged, ResetLink,
    TokenCheck, TokenState, User, UserStatus,
};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use crate::smtp::free_port;
use crate::util::{assert_api_error, new_user, run, Daemon, Run, Setup, LATCHKEY};

/// A password that passes the policy.
const PASSWORD: &str = "correct horse battery staple";

/// How long a test waits for something the daemon does in the background.
const WAIT: Duration = Duration::from_secs(20);

/// The JSON lines a listing printed with `--json`, one `T` per line.
#[track_caller]
fn json_lines<T: DeserializeOwned>(run: &Run) -> Vec<T> {
    run.stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not the expected JSON line: {e}\n{line}\n{run}"))
        })
        .collect()
}

/// The token in a reset link made from the default template (`...?token=TOKEN`).
#[track_caller]
fn token_of(link: &str) -> &str {
    link.split_once("token=")
        .map(|(_, token)| token)
        .unwrap_or_else(|| panic!("no token in the link {link:?}"))
}

/// Seconds since the epoch.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

#[tokio::test]
async fn user_list_pages_in_id_order_and_set_password_takes_the_password_from_stdin() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    let mut users = Vec::new();
    for email in ["ann@example.com", "bob@example.com", "cy@example.com"] {
        let user = client.create_user(new_user(email, PASSWORD)).await;
        users.push(user.expect("create_user"));
    }

    let listed = daemon.cli(&["user", "list"], None).await;
    listed.assert_success();
    let ids: Vec<String> = listed
        .stdout
        .lines()
        .map(|line| line.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .collect();
    let expected: Vec<String> = users
        .iter()
        .map(|u| format!("user {} {}", u.id, u.email))
        .collect();
    assert_eq!(ids, expected, "{listed}");
    let json: Vec<User> = json_lines(
        daemon
            .cli(&["--json", "user", "list"], None)
            .await
            .assert_success(),
    );
    assert_eq!(json, users);
    let after_first = users[0].id.to_string();
    let page = daemon
        .cli(
            &[
                "--json",
                "user",
                "list",
                "--after",
                &after_first,
                "--limit",
                "1",
            ],
            None,
        )
        .await;
    assert_eq!(json_lines::<User>(page.assert_success()), users[1..2]);

    let bob = &users[1];
    let id = bob.id.to_string();
    let new_password = "bob's new passphrase, typed once";
    let set = daemon
        .cli(
            &["user", "set-password", &id, "--password-stdin"],
            Some(&format!("{new_password}\n")),
        )
        .await;
    set.assert_success().assert_stdout_contains(&format!(
        "password set for user {id}; credential epoch now 1"
    ));
    let logged_in = client
        .verify_password("bob@example.com", new_password, None)
        .await
        .expect("login with the password set by the CLI");
    assert_eq!(logged_in.credential_epoch, 1);
    assert_api_error(
        client
            .verify_password("bob@example.com", PASSWORD, None)
            .await,
        ApiError::InvalidCredentials,
    );
    let changed: PasswordChanged = daemon
        .cli(
            &["--json", "user", "set-password", &id, "--password-stdin"],
            Some("another new passphrase\n"),
        )
        .await
        .assert_success()
        .json();
    assert_eq!((changed.user_id, changed.credential_epoch), (bob.id, 2));

    // A wrong id fails before any password is read (stdin is empty: reading it first would be
    // a usage error); a weak one is refused by the daemon.
    daemon
        .cli(&["user", "set-password", "999", "--password-stdin"], None)
        .await
        .assert_code(1)
        .assert_stderr_contains("NotFound");
    daemon
        .cli(
            &["user", "set-password", &id, "--password-stdin"],
            Some("short\n"),
        )
        .await
        .assert_code(1)
        .assert_stderr_contains("WeakPassword");
    daemon
        .cli(&["user", "set-password", &id, "--password-stdin"], Some(""))
        .await
        .assert_code(2)
        .assert_stderr_contains("stdin has no password");
    daemon
        .cli(&["user", "set-password", &id, "--password", PASSWORD], None)
        .await
        .assert_code(2);
    daemon.assert_log_lacks(&[PASSWORD, new_password]);
}

#[tokio::test]
async fn reset_request_link_and_check_with_the_token_on_stdin() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    let ann = client
        .create_user(new_user("ann@example.com", PASSWORD))
        .await
        .expect("create_user");

    // The answer is the same whether or not the account exists.
    let known = daemon
        .cli(
            &[
                "reset",
                "request",
                "ann@example.com",
                "--ip",
                "203.0.113.7",
                "--locale",
                "de",
            ],
            None,
        )
        .await;
    known
        .assert_success()
        .assert_stdout_contains("a reset link was sent");
    let unknown = daemon
        .cli(&["reset", "request", "nobody@example.com"], None)
        .await;
    unknown.assert_success();
    assert_eq!(
        known.stdout.replace("ann@", "nobody@"),
        unknown.stdout,
        "{known}\n{unknown}"
    );
    daemon
        .cli(&["reset", "request", "not an address"], None)
        .await
        .assert_code(1)
        .assert_stderr_contains("InvalidEmail");

    let text = daemon
        .cli(
            &["reset", "link", "ann@example.com", "--lifetime", "600"],
            None,
        )
        .await;
    text.assert_success()
        .assert_stdout_contains(&format!("user {}, expires ", ann.id));
    assert!(
        text.stdout
            .starts_with("http://localhost:3000/reset-password?token="),
        "expected the link on the first line\n{text}"
    );
    let link: ResetLink = daemon
        .cli(&["--json", "reset", "link", &ann.id.to_string()], None)
        .await
        .assert_success()
        .json();
    assert_eq!(link.user_id, ann.id);
    // The daemon's default token lifetime is 30 minutes.
    assert!(link.expires_at.abs_diff(now() + 1800) < 60, "{link:?}");
    let token = token_of(&link.link);
    let stdin = format!("{token}\n");

    for args in [
        &["reset", "check", "-"][..],
        &["reset", "check", "--token-stdin"],
        &["reset", "check"],
    ] {
        daemon
            .cli(args, Some(&stdin))
            .await
            .assert_success()
            .assert_stdout_contains("valid, expires ");
    }
    let check: TokenCheck = daemon
        .cli(&["--json", "reset", "check", "-"], Some(&stdin))
        .await
        .assert_success()
        .json();
    assert_eq!(
        (check.state, check.expires_at),
        (TokenState::Valid, Some(link.expires_at))
    );

    client
        .complete_password_reset(token, "a brand new passphrase", None, None)
        .await
        .expect("complete_password_reset");
    let used = daemon.cli(&["reset", "check", "-"], Some(&stdin)).await;
    assert_eq!(used.assert_code(1).stdout, "used\n", "{used}");
    let check: TokenCheck = daemon
        .cli(&["--json", "reset", "check"], Some(&stdin))
        .await
        .assert_code(1)
        .json();
    assert_eq!(check.state, TokenState::Used);
    let invalid = daemon
        .cli(&["reset", "check", "-"], Some("not-a-token\n"))
        .await;
    assert_eq!(invalid.assert_code(1).stdout, "invalid\n", "{invalid}");
    daemon
        .cli(&["reset", "check", "-"], Some(""))
        .await
        .assert_code(2)
        .assert_stderr_contains("stdin has no token");

    daemon
        .cli(&["reset", "link", "nobody@example.com"], None)
        .await
        .assert_code(1)
        .assert_stderr_contains("NotFound");
    daemon.assert_log_lacks(&[token]);
}

/// A daemon whose mail goes over SMTP to a port where nothing listens: every delivery fails at
/// once, so messages stay in the outbox (queued again about half a minute later, dead after
/// `max_attempts` failures).
fn undeliverable_mail(max_attempts: u32) -> Setup {
    Setup::new().toml(&format!(
        r#"
[mail]
transport = "smtp"
max_attempts = {max_attempts}
[mail.smtp]
host = "127.0.0.1"
port = {}
tls = "none"
timeout_secs = 5
"#,
        free_port()
    ))
}

#[tokio::test]
async fn outbox_lists_retries_and_drops_mail_that_cannot_be_delivered() {
    let daemon = undeliverable_mail(12).start().await;
    let client = daemon.client().await;
    client
        .create_user(new_user("ann@example.com", PASSWORD))
        .await
        .expect("create_user");
    client
        .request_password_reset("ann@example.com", None, None)
        .await
        .expect("request_password_reset");

    let listed = daemon.cli(&["outbox", "list"], None).await;
    listed
        .assert_success()
        .assert_stdout_contains("password_reset to ann@example.com queued attempts=");
    let messages: Vec<OutboxMessage> = json_lines(
        daemon
            .cli(&["--json", "outbox", "list"], None)
            .await
            .assert_success(),
    );
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(
        (
            messages[0].kind.as_str(),
            messages[0].to.as_str(),
            messages[0].state
        ),
        ("password_reset", "ann@example.com", MessageState::Queued)
    );
    let dead = daemon.cli(&["outbox", "list", "--dead"], None).await;
    assert_eq!(dead.assert_success().stdout, "", "{dead}");

    let id = messages[0].id.to_string();
    daemon
        .cli(&["outbox", "retry", &id], None)
        .await
        .assert_success()
        .assert_stdout_contains(&format!("message {id} queued again"));
    daemon
        .cli(&["outbox", "retry", "999"], None)
        .await
        .assert_code(1)
        .assert_stderr_contains("NotFound");

    // Dropping needs confirmation, and with stdin not a terminal only --yes gives it.
    daemon
        .cli(&["outbox", "drop", &id], None)
        .await
        .assert_code(2)
        .assert_stderr_contains("--yes");
    assert_eq!(
        client.outbox_list(0, 10).await.expect("outbox_list").len(),
        1
    );
    daemon
        .cli(&["outbox", "drop", &id, "--yes"], None)
        .await
        .assert_success()
        .assert_stdout_contains(&format!("dropped message {id}"));
    let empty = daemon.cli(&["outbox", "list"], None).await;
    assert_eq!(empty.assert_success().stdout, "", "{empty}");
    daemon
        .cli(&["outbox", "drop", &id, "--yes"], None)
        .await
        .assert_code(1)
        .assert_stderr_contains("NotFound");
}

#[tokio::test]
async fn outbox_list_dead_shows_the_dead_letters_with_their_last_error() {
    let daemon = undeliverable_mail(1).start().await;
    let client = daemon.client().await;
    client
        .create_user(new_user("ann@example.com", PASSWORD))
        .await
        .expect("create_user");
    client
        .request_password_reset("ann@example.com", None, None)
        .await
        .expect("request_password_reset");

    let deadline = Instant::now() + WAIT;
    let dead = loop {
        let run = daemon
            .cli(&["--json", "outbox", "list", "--dead"], None)
            .await;
        let dead: Vec<OutboxMessage> = json_lines(run.assert_success());
        if !dead.is_empty() {
            break dead;
        }
        assert!(
            Instant::now() < deadline,
            "the message never went dead\n{run}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].state, dead[0].attempts), (MessageState::Dead, 1));
    assert!(dead[0].last_error.is_some(), "{dead:?}");
    daemon
        .cli(&["outbox", "list", "--dead"], None)
        .await
        .assert_success()
        .assert_stdout_contains("to ann@example.com dead attempts=1")
        .assert_stdout_contains(" last_error=\"");
}

/// A `latchkey events tail --follow` running in the background, read line by line.
struct Follower {
    /// The process; killed if the test ends first.
    child: Child,
    /// Its stdout.
    lines: Lines<BufReader<ChildStdout>>,
}

impl Follower {
    /// Starts `latchkey --socket SOCKET events tail --follow ARGS...`.
    fn start(daemon: &Daemon, args: &[&str]) -> Follower {
        let socket = daemon.socket().to_str().expect("UTF-8 path");
        let mut child = tokio::process::Command::new(LATCHKEY)
            .args(["--socket", socket, "events", "tail", "--follow"])
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot start latchkey events tail --follow");
        let stdout = child.stdout.take().expect("stdout is piped");
        Follower {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// Reads lines until one contains `text`, and returns it.
    async fn wait_for(&mut self, text: &str) -> String {
        let mut seen = Vec::new();
        let found = tokio::time::timeout(WAIT, async {
            while let Some(line) = self.lines.next_line().await.expect("read stdout") {
                if line.contains(text) {
                    return Some(line);
                }
                seen.push(line);
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!("the follower never printed {text:?}; it printed {seen:#?}"),
        }
    }

    /// Interrupts it as Ctrl-C would and waits for it to exit.
    async fn interrupt(mut self) -> ExitStatus {
        let pid = self.child.id().expect("the follower is running");
        let pid = libc::pid_t::try_from(pid).expect("pids fit in pid_t");
        // SAFETY: kill has no memory-safety preconditions; the pid is our own unreaped child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0, "kill(SIGINT)");
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the follower exits on SIGINT")
            .expect("wait for the follower")
    }
}

#[tokio::test]
async fn events_tail_prints_lines_or_json_lines_and_follows_until_interrupted() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    let ann = client
        .create_user(new_user("ann@example.com", PASSWORD))
        .await
        .expect("create_user");
    daemon
        .cli(
            &["reset", "request", "ann@example.com", "--ip", "203.0.113.7"],
            None,
        )
        .await
        .assert_success();

    let tail = daemon.cli(&["events", "tail"], None).await;
    tail.assert_success();
    let lines: Vec<&str> = tail.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{tail}");
    let fields: Vec<&str> = lines[0].split(' ').collect();
    assert!(
        fields[0].parse::<u64>().is_ok(),
        "a sequence number first\n{tail}"
    );
    assert!(
        humantime::parse_rfc3339(fields[1]).is_ok(),
        "an RFC 3339 time second\n{tail}"
    );
    assert_eq!(
        fields[2..],
        ["user_created", &format!("user={}", ann.id)],
        "{tail}"
    );
    assert!(
        lines[1].ends_with(&format!(" reset_requested user={} ip=203.0.113.7", ann.id)),
        "{tail}"
    );

    let events: Vec<Event> = json_lines(
        daemon
            .cli(&["--json", "events", "tail"], None)
            .await
            .assert_success(),
    );
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::UserCreated, EventKind::ResetRequested]);
    assert_eq!(events[1].client_ip.as_deref(), Some("203.0.113.7"));
    assert!(events[1].at.abs_diff(now()) < 60, "{events:?}");
    let first = events[0].seq.to_string();
    let after: Vec<Event> = json_lines(
        daemon
            .cli(&["--json", "events", "tail", "--after", &first], None)
            .await
            .assert_success(),
    );
    assert_eq!(after, events[1..]);

    // Following from the end shows only what happens next.
    let last = events[1].seq.to_string();
    let mut follower = Follower::start(&daemon, &["--after", &last, "--interval", "0.1"]);
    let bob = client
        .create_user(new_user("bob@example.com", PASSWORD))
        .await
        .expect("create_user");
    let line = follower.wait_for(" user_created ").await;
    assert!(
        line.ends_with(&format!("user_created user={}", bob.id)),
        "{line}"
    );
    client
        .set_status(bob.id, UserStatus::Disabled)
        .await
        .expect("set_status");
    follower
        .wait_for(&format!("user_disabled user={}", bob.id))
        .await;
    let status = follower.interrupt().await;
    assert!(
        status.success(),
        "Ctrl-C ends a follow with status 0, got {status}"
    );

    daemon
        .cli(&["events", "tail", "--interval", "1"], None)
        .await
        .assert_code(2)
        .assert_stderr_contains("--follow");
}

/// The password every imported account had in the old system.
const OLD_PASSWORD: &str = "old node password";

#[tokio::test]
async fn import_reads_a_mongoexport_skips_bad_lines_by_number_and_accounts_log_in() {
    let hash = bcrypt::hash(OLD_PASSWORD, 4).expect("bcrypt");
    let other = bcrypt::hash("another password", 4).expect("bcrypt");
    let lines = [
        // 1: as mongoexport writes a Node app's users (relaxed mode).
        format!(
            r#"{{"_id":{{"$oid":"642817c0e1b2c3d4e5f60718"}},"email":"Ada@Example.com","password":"{hash}","name":"Ada","role":"admin","status":"active","createdAt":{{"$date":"2023-04-01T12:00:00.000Z"}},"__v":0}}"#
        ),
        // 2: canonical mode dates, another hash field, a boolean flag for the status.
        format!(
            r#"{{"_id":{{"$oid":"642817c0e1b2c3d4e5f60719"}},"email":"bob@example.com","passwordHash":"{hash}","name":"Bob","disabled":true,"createdAt":{{"$date":{{"$numberLong":"1680350400000"}}}}}}"#
        ),
        // 3: blank, not counted.
        "   ".to_owned(),
        // 4: the same person again: refused by the daemon.
        format!(r#"{{"email":"ADA@example.com","password":"{other}","name":"Ada again"}}"#),
        // 5: cut off.
        r#"{"email":"broken@example.com","password":"#.to_owned(),
        // 6: a hash the daemon does not know.
        r#"{"email":"plain@example.com","password":"hunter2"}"#.to_owned(),
        // 7: latchkey's own field names.
        format!(
            r#"{{"email":"cy@example.com","password_hash":"{hash}","locale":"de","role":"customer","created_at":1600000000}}"#
        ),
        // 8: an RFC 3339 time with an offset.
        format!(
            r#"{{"email":"dee@example.com","hash":"{hash}","createdAt":"2023-04-01T14:00:00+02:00"}}"#
        ),
    ];
    let setup = Setup::new();
    let file = setup.dir().join("users.json");
    std::fs::write(&file, lines.join("\n") + "\n").expect("write the export");
    let file = file.to_str().expect("UTF-8 path");
    let daemon = setup.start().await;

    let imported = daemon.cli(&["import", file], None).await;
    imported
        .assert_code(1)
        .assert_stdout_contains("imported 4, skipped 3")
        .assert_stderr_contains(
            "line 4: ADA@example.com: an account with that email exists already (EmailTaken)",
        )
        .assert_stderr_contains("line 5: not valid JSON")
        .assert_stderr_contains("line 6: plain@example.com: invalid password_hash");
    let reported: Vec<&str> = imported
        .stderr
        .lines()
        .filter_map(|line| line.split(':').next())
        .collect();
    assert_eq!(reported, ["line 4", "line 5", "line 6"], "{imported}");
    for secret in ["hunter2", &hash[7..], &other[7..]] {
        assert!(
            !imported.stderr.contains(secret),
            "the hash leaked\n{imported}"
        );
    }

    let client = daemon.client().await;
    for email in ["ada@example.com", "cy@example.com", "dee@example.com"] {
        client
            .verify_password(email, OLD_PASSWORD, None)
            .await
            .unwrap_or_else(|e| panic!("{email} logs in with the old password: {e}"));
    }
    let ada = client.find_user("ada@example.com").await.expect("find ada");
    assert_eq!(
        (
            ada.name.as_str(),
            ada.role.as_str(),
            ada.status,
            ada.created_at
        ),
        ("Ada", "admin", UserStatus::Active, 1_680_350_400)
    );
    let bob = client.find_user("bob@example.com").await.expect("find bob");
    assert_eq!(
        (bob.status, bob.created_at),
        (UserStatus::Disabled, 1_680_350_400)
    );
    let cy = client.find_user("cy@example.com").await.expect("find cy");
    assert_eq!(
        (cy.locale.as_deref(), cy.role.as_str(), cy.created_at),
        (Some("de"), "customer", 1_600_000_000)
    );
    let dee = client.find_user("dee@example.com").await.expect("find dee");
    assert_eq!(dee.created_at, 1_680_350_400);

    // Again, for a script: every account is there already, and each line says so.
    let again = daemon.cli(&["--json", "import", file], None).await;
    let summary: serde_json::Value = again.assert_code(1).json();
    assert_eq!(
        (summary["imported"].as_u64(), summary["skipped"].as_u64()),
        (Some(0), Some(7)),
        "{again}"
    );
    let errors: Vec<(u64, &str)> = summary["errors"]
        .as_array()
        .expect("an errors array")
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap_or(0),
                e["error"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            (1, "EmailTaken"),
            (2, "EmailTaken"),
            (4, "EmailTaken"),
            (5, "InvalidJson"),
            (6, "InvalidInput"),
            (7, "EmailTaken"),
            (8, "EmailTaken"),
        ],
        "{again}"
    );
    daemon.assert_log_lacks(&[OLD_PASSWORD, "hunter2"]);
}

#[tokio::test]
async fn import_sends_a_large_file_in_batches_below_the_frame_limit_and_user_list_pages_it() {
    let daemon = Daemon::start().await;
    let hash = bcrypt::hash(OLD_PASSWORD, 4).expect("bcrypt");
    // About 190 bytes an account: 1200 of them are several 64 KiB frames' worth.
    let total = 1200;
    // One line the CLI refuses, and one the daemon refuses in a late batch: both must be
    // reported with their own line numbers.
    let (broken, duplicate) = (1000, 1100);
    let line = |i: usize, email: &str| {
        format!(
            r#"{{"email":"{email}","password":"{hash}","name":"Imported user number {i}","createdAt":{{"$date":"2023-04-01T12:00:00.000Z"}}}}"#
        )
    };
    let text: String = (1..=total)
        .map(|i| match i {
            _ if i == broken => "{\"email\": \"broken@example.com\"\n".to_owned(),
            _ if i == duplicate => line(i, "user0005@example.com") + "\n",
            _ => line(i, &format!("user{i:04}@example.com")) + "\n",
        })
        .collect();
    let imported = daemon.cli(&["import", "-"], Some(&text)).await;
    imported
        .assert_code(1)
        .assert_stdout_contains(&format!("imported {}, skipped 2", total - 2))
        .assert_stderr_contains(&format!("line {broken}: not valid JSON"))
        .assert_stderr_contains(&format!(
            "line {duplicate}: user0005@example.com: an account with that email exists already"
        ));
    assert_eq!(imported.stderr.lines().count(), 2, "{imported}");

    let listed = daemon.cli(&["user", "list"], None).await;
    assert_eq!(listed.assert_success().stdout.lines().count(), total - 2);
    let all: Vec<User> = json_lines(
        daemon
            .cli(&["--json", "user", "list"], None)
            .await
            .assert_success(),
    );
    let emails: Vec<&str> = all.iter().map(|u| u.email.as_str()).collect();
    let expected: Vec<String> = (1..=total)
        .filter(|&i| i != broken && i != duplicate)
        .map(|i| format!("user{i:04}@example.com"))
        .collect();
    assert_eq!(emails, expected);

    let some = daemon.cli(&["user", "list", "--limit", "3"], None).await;
    assert_eq!(some.assert_success().stdout.lines().count(), 3, "{some}");
    let after = all[599].id.to_string();
    let page: Vec<User> = json_lines(
        daemon
            .cli(
                &["--json", "user", "list", "--after", &after, "--limit", "2"],
                None,
            )
            .await
            .assert_success(),
    );
    assert_eq!(page, all[600..602]);

    let client = daemon.client().await;
    client
        .verify_password("user1200@example.com", OLD_PASSWORD, None)
        .await
        .expect("the last account, from the last batch, logs in");
}

#[tokio::test]
async fn import_exits_3_when_the_daemon_is_unreachable() {
    let setup = Setup::new();
    let socket = setup.dir().join("nobody-listens.sock");
    let socket = socket.to_str().expect("UTF-8 path");
    let result = run(LATCHKEY, &["--socket", socket, "import", "-"], None).await;
    result
        .assert_code(3)
        .assert_stderr_contains("cannot reach latchkeyd");
}
