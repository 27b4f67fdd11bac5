//! `outbox list`, `outbox retry` and `outbox drop`.

use std::time::{Duration, Instant};

use latchkey_client::{MessageState, OutboxMessage};
use latchkey_test_support::{free_port, new_user, Setup};

use crate::{json_lines, PASSWORD, WAIT};

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
