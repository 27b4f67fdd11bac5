//! The `latchkey` CLI (issue 5): the operator's commands for users, resets, the outbox, the
//! event log and imports, run as the real binary against a real daemon, the way an operator
//! or a script runs them. Secrets (passwords, reset tokens) only ever travel on stdin.
//!
//! One test binary (`cargo test -p latchkey-cli --test cli`), one module per command group,
//! as in `src/commands/`; the daemon, the SMTP sink and the runs come from
//! `latchkey-test-support`.

// The helpers of this test crate fail the test the way its #[test] functions do, by
// panicking with a message; clippy.toml allows that only inside the test functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod backup;
mod events;
mod import;
mod outbox;
mod reset;
mod schema;
mod users;

use std::time::Duration;

pub(crate) use latchkey_test_support::now;
use latchkey_test_support::Run;
use serde::de::DeserializeOwned;

/// A password that passes the policy.
const PASSWORD: &str = "correct horse battery staple";

/// How long a test waits for something the daemon does in the background.
const WAIT: Duration = Duration::from_secs(20);

/// The JSON lines a listing printed with `--json`, one `T` per line.
#[track_caller]
pub(crate) fn json_lines<T: DeserializeOwned>(run: &Run) -> Vec<T> {
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
pub(crate) fn token_of(link: &str) -> &str {
    link.split_once("token=")
        .map(|(_, token)| token)
        .unwrap_or_else(|| panic!("no token in the link {link:?}"))
}
