//! `events tail`, once and with `--follow`.

use std::process::{ExitStatus, Stdio};

use latchkey_client::{Event, EventKind, UserStatus};
use latchkey_test_support::{bin, new_user, Daemon, Signal};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use crate::{json_lines, now, PASSWORD, WAIT};

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
        let mut child = tokio::process::Command::new(bin::latchkey())
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
        // Our own unreaped child, so the pid cannot have been reused.
        latchkey_test_support::run::signal(pid, Signal::INT);
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
        fields[1].parse::<jiff::Timestamp>().is_ok(),
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
