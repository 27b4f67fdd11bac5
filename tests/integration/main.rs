//! The integration tests: one binary (`cargo test --test integration`), one module per area of
//! behaviour, every test against a real daemon started by the workspace's shared harness,
//! `latchkey-test-support`. The CLI's tests are in `cli/tests/`.

// The helpers of this test crate fail the test the way its #[test] functions do, by
// panicking with a message; clippy.toml allows that only inside the test functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// The daemon under test.
const LATCHKEYD: &str = env!("CARGO_BIN_EXE_latchkeyd");

mod connections;
mod crash;
mod disk;
mod foundation;
mod hosts;
mod logins;
mod mail;
mod migration;
mod reset;
mod robustness;
mod scrape;
mod service;
mod signup;
