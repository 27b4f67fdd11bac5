//! `user` commands, `health` and `metrics`, and how the CLI exits when the daemon refuses
//! it or cannot be reached.

use std::os::unix::process::CommandExt;
use std::process::Command;

use latchkey_client::{ApiError, PasswordChanged, User, UserStatus};
use latchkey_test_support::{assert_api_error, bin, new_user, our_uid, run, Daemon, Setup};

use crate::{json_lines, PASSWORD};

#[tokio::test]
async fn cli_manages_users_without_passwords_in_argv_or_log() {
    let daemon = Daemon::start().await;
    let cli_password = "stdin only, never argv";

    let added = daemon
        .cli(
            &[
                "user",
                "add",
                "Ada@Example.com",
                "--name",
                "Ada",
                "--password-stdin",
            ],
            Some(&format!("{cli_password}\n")),
        )
        .await;
    added
        .assert_success()
        .assert_stdout_contains("ada@example.com (Ada) role=user status=active epoch=0");
    let client = daemon.client().await;
    let user = client
        .verify_password("ada@example.com", cli_password, None)
        .await
        .expect("the CLI-created user logs in with the password from stdin");
    let id = user.id.to_string();

    let line = format!("user {id} ada@example.com (Ada) role=user status=active epoch=0");
    let shown = daemon
        .cli(&["user", "show", " ADA@example.com"], None)
        .await;
    shown.assert_success().assert_stdout_contains(&line);
    daemon
        .cli(&["user", "show", &id], None)
        .await
        .assert_success()
        .assert_stdout_contains(&line);
    let json: User = daemon
        .cli(&["--json", "user", "show", &id], None)
        .await
        .assert_success()
        .json();
    assert_eq!(json, user);

    daemon
        .cli(&["user", "disable", &id], None)
        .await
        .assert_success()
        .assert_stdout_contains("status=disabled");
    let json: User = daemon
        .cli(&["user", "enable", &id, "--json"], None)
        .await
        .assert_success()
        .json();
    assert_eq!(json.status, UserStatus::Active);

    daemon
        .cli(&["health"], None)
        .await
        .assert_success()
        .assert_stdout_contains("ok")
        .assert_stdout_contains("store ok");
    let health: serde_json::Value = daemon
        .cli(&["--json", "health"], None)
        .await
        .assert_success()
        .json();
    assert_eq!(health["status"], "ok", "health JSON: {health}");
    assert_eq!(health["store"], "ok", "health JSON: {health}");

    // A daemon error exits 1 and names its code.
    let missing = daemon
        .cli(&["user", "show", "nobody@example.com"], None)
        .await;
    missing.assert_code(1).assert_stderr_contains("NotFound");
    let missing = daemon
        .cli(&["--json", "user", "show", "nobody@example.com"], None)
        .await;
    let error: serde_json::Value = missing.assert_code(1).json();
    assert_eq!(error["error"], "NotFound", "error JSON: {error}");

    // Deleting needs confirmation, and with stdin not a terminal only --yes gives it.
    daemon
        .cli(&["user", "delete", &id], None)
        .await
        .assert_code(2)
        .assert_stderr_contains("--yes");
    client
        .get_user(user.id)
        .await
        .expect("the user survives an unconfirmed delete");
    daemon
        .cli(&["user", "delete", &id, "--yes"], None)
        .await
        .assert_success();
    assert_api_error(client.get_user(user.id).await, ApiError::NotFound);

    // A password on the command line is a usage error, not an option.
    let refused = daemon.cli(
        &["user", "add", "eve@example.com", "--password", PASSWORD],
        None,
    );
    refused.await.assert_code(2);

    daemon.assert_log_lacks(&[cli_password, PASSWORD]);
}

#[tokio::test]
async fn cli_exits_3_with_a_clear_message_when_the_daemon_is_unreachable() {
    let setup = Setup::new();
    let socket = setup.dir().join("nobody-listens.sock");
    let socket = socket.to_str().expect("UTF-8 path");
    let result = run(bin::latchkey(), &["--socket", socket, "health"], None).await;
    result
        .assert_code(3)
        .assert_stderr_contains("cannot reach latchkeyd")
        .assert_stderr_contains(socket);
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
async fn metrics_prints_what_the_daemon_renders() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    client
        .create_user(new_user("metrics@example.com", "metrics password 1"))
        .await
        .expect("create");
    daemon
        .cli(&["metrics"], None)
        .await
        .assert_success()
        .assert_stdout_contains("latchkey_users 1");
}

/// Runs the CLI's `health` as `uid` with primary group `gid` and supplementary `groups`.
fn health_as(
    socket: &std::path::Path,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
) -> std::process::Output {
    let mut command = Command::new(bin::latchkey());
    command
        .args([
            "--socket",
            socket.to_str().expect("utf-8"),
            "--json",
            "health",
        ])
        .env_clear();
    // SAFETY: setgroups, setgid and setuid are async-signal-safe system calls; the vector is
    // allocated before the fork.
    unsafe {
        command.pre_exec(move || {
            let list: Vec<libc::gid_t> = groups.clone();
            if libc::setgroups(list.len(), list.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.output().expect("run latchkey as another user")
}

#[tokio::test]
async fn a_supplementary_member_of_the_app_group_gets_the_app_role_and_others_are_refused() {
    if our_uid() != 0 {
        eprintln!("this test runs clients under other uids, which needs root (CI runs as root)");
        return;
    }
    let app_group = 64_242;
    let setup = Setup::new().toml(&format!(
        "[server]\nsocket_mode = \"0666\"\n[auth]\napp_gids = [{app_group}]"
    ));
    // Let the other uids reach the socket inside the test's private directory.
    std::fs::set_permissions(
        setup.dir(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let daemon = setup.start().await;
    let member = health_as(daemon.socket(), 64_243, 64_244, vec![app_group]);
    assert!(member.status.success(), "{member:?}");
    let health: serde_json::Value = serde_json::from_slice(&member.stdout).expect("json");
    assert_eq!(health["caller_role"], "app", "{health}");
    let stranger = health_as(daemon.socket(), 64_245, 64_244, vec![64_246]);
    assert_eq!(stranger.status.code(), Some(3), "{stranger:?}");
    daemon.wait_for_log("refused connection").await;
}
