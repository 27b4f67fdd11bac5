//! The integration tests: one binary (`cargo test --test integration`), one module per area of
//! behaviour, every test against a real daemon started by the workspace's shared harness,
//! `latchkey-test-support`. The CLI's tests are in `cli/tests/`.

// The helpers of this test crate fail the test the way its #[test] functions do, by
// panicking with a message; clippy.toml allows that only inside the test functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// The daemon under test.
const LATCHKEYD: &str = env!("CARGO_BIN_EXE_latchkeyd");

/// Runs the daemon on `setup`'s configuration with `extra` arguments and checks that it
/// refuses to start, saying `why` on stderr.
async fn assert_refuses_to_start(setup: &latchkey_test_support::Setup, extra: &[&str], why: &str) {
    let config = setup.write_config();
    let mut args = vec!["--config", config.to_str().expect("UTF-8")];
    args.extend_from_slice(extra);
    let result = latchkey_test_support::run(LATCHKEYD, &args, None).await;
    assert!(!result.status.success(), "expected a refusal\n{result}");
    result.assert_stderr_contains(why);
}

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
