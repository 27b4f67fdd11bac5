//! The test harness every test crate of the workspace shares (the model is cargo's own
//! `cargo-test-support`): the daemon's integration tests, the CLI's tests, the polyglot
//! client tests and the web example's end-to-end test.
//!
//! - [`daemon`]: a fresh, real `latchkeyd` per test in its own temporary directory, with a
//!   cleared environment; its log is printed when the test fails.
//! - [`bin`]: where the workspace's binaries are, refusing a missing or stale one.
//! - [`run`]: one-shot runs of a binary with readable expected/got failures.
//! - [`smtp`]: a real SMTP server (Python's aiosmtpd) that keeps what it receives, and the
//!   parser of the file transport's `.eml` files.
//! - [`api`]: small helpers for calls through the client crate.
//! - [`postgres`]: a real PostgreSQL cluster per test binary and a database per test;
//!   `LK_TEST_BACKEND=postgres` runs every daemon of the suite on it.
//!
//! ```ignore
//! let daemon = Daemon::start().await;                             // defaults
//! let daemon = Setup::new().toml("[auth]\napp_uids = [0]").start().await;
//! let client = daemon.client().await;
//! let sink = SmtpSink::start(free_port()).await;
//! ```
//!
//! A failed setup step fails the test: there is no fallback to a default anywhere here.
// This crate is only ever linked into tests, and a panic with a message is how a test
// harness reports a failed step; the workspace's deny set is for the product's code.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

pub mod api;
pub mod bin;
pub mod daemon;
pub mod postgres;
pub mod run;
pub mod smtp;

use std::path::Path;

pub use api::{api_error, assert_api_error, assert_closed_by_daemon, new_user};
pub use daemon::{Daemon, Setup};
pub use run::{run, Run};
pub use rustix::process::Signal;
pub use smtp::{free_port, SmtpSink};

/// Our own effective uid, which the daemon sees as the peer's.
pub fn our_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Whether this test can do what needs root (`why` says what). Without root it says so and
/// the test should return; under `CI`, which runs as root, that fails the test instead of
/// skipping it.
#[track_caller]
pub fn have_root(why: &str) -> bool {
    if our_uid() == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI runs as root, and this test needs it: it {why}"
    );
    eprintln!("this test {why}, which needs root (CI runs as root)");
    false
}

/// A uid that is not ours, for configurations that must not match us.
pub fn another_uid() -> u32 {
    our_uid().wrapping_add(1)
}

/// Now, in Unix seconds, as the daemon stamps its records.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// A path as a string, for TOML files and arguments; test paths are always UTF-8.
pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// The workspace's root directory.
pub fn workspace_root() -> &'static Path {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .expect("test-support lies inside the workspace")
}
