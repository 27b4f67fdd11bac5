//! `reset request`, `reset link` and `reset check`.

use latchkey_client::{ResetLink, TokenCheck, TokenState};
use latchkey_test_support::{new_user, Daemon};

use crate::{now, token_of, PASSWORD};

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
