//! Running as a system service (issue 6): systemd notifications and the watchdog, socket
//! activation, refusing root, live reload on SIGHUP, and the metrics operators read.

use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use latchkey_client::{ApiError, Client, ConnectOptions};

use latchkey_test_support::{api_error, new_user, our_uid, run, Daemon, Setup, Signal};

use crate::LATCHKEYD;

/// Reads notification datagrams until one contains `wanted` (10 s at most); returns all seen.
fn wait_for_notification(socket: &UnixDatagram, wanted: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = text.lines().any(|l| l == wanted);
            seen.push(text);
            if done {
                return seen;
            }
        }
    }
    panic!("no {wanted:?} notification within 10 s; got {seen:?}");
}

#[tokio::test]
async fn systemd_hears_ready_watchdog_pings_and_stopping() {
    let setup = Setup::new();
    let notify_path = setup.dir().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut daemon = setup
        .env("NOTIFY_SOCKET", notify_path.to_str().expect("utf-8 path"))
        .env("WATCHDOG_USEC", "400000")
        .start()
        .await;
    // READY=1 comes once the socket accepts connections (the harness waited for that too).
    wait_for_notification(&notify, "READY=1");
    // The watchdog is pinged at half its 400 ms interval while the store can flush.
    wait_for_notification(&notify, "WATCHDOG=1");
    wait_for_notification(&notify, "WATCHDOG=1");
    daemon.signal(Signal::TERM);
    wait_for_notification(&notify, "STOPPING=1");
    let status = daemon.wait().await;
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_socket_passed_by_systemd_is_used_and_left_in_place() {
    let setup = Setup::new();
    let socket = setup.dir().join("activated.sock");
    let config = setup.write_config();
    let listener = UnixListener::bind(&socket).expect("bind the activation socket");
    let fd = listener.as_raw_fd();
    // As systemd does: the socket is fd 3, and LISTEN_PID names the daemon itself. The shell
    // `exec`s the daemon, so its pid ($$) is the daemon's.
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!(
            "LISTEN_PID=$$ LISTEN_FDS=1 exec {LATCHKEYD} --config {}",
            config.display()
        ))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: dup2 is async-signal-safe; fd is open in the parent until after the spawn.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().expect("start latchkeyd");
    drop(listener);
    let options = ConnectOptions {
        call_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let mut client = None;
    for _ in 0..500 {
        if let Ok(c) = Client::connect_with(&socket, options.clone()).await {
            if c.health().await.is_ok() {
                client = Some(c);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = client.expect("the daemon answers on the passed socket");
    client
        .create_user(new_user("activated@example.com", "activation password"))
        .await
        .expect("create_user over the activated socket");
    // The configured socket path was never bound: the daemon used what it was given.
    assert!(!setup.dir().join("latchkey.sock").exists());
    // Our own unreaped child, so the pid cannot have been reused.
    latchkey_test_support::run::signal(child.id(), Signal::TERM);
    let status = child.wait().expect("wait");
    assert!(status.success(), "{status}");
    // systemd owns the socket file: the daemon does not remove it.
    assert!(socket.exists());
}

#[tokio::test]
async fn root_is_refused_unless_allowed() {
    let setup = Setup::new().toml("[server]\nallow_root = false");
    let config = setup.write_config();
    let config = config.to_str().expect("utf-8 path");
    if our_uid() == 0 {
        let refused = run(LATCHKEYD, &["--config", config], None).await;
        refused.assert_code(1);
        refused.assert_stderr_contains("refusing to run as root");
        // Told to, it starts (and --check-config never needs it).
        run(LATCHKEYD, &["--config", config, "--check-config"], None)
            .await
            .assert_success();
        let daemon = setup.toml("[server]\nallow_root = true").start().await;
        daemon.client().await.health().await.expect("health");
    } else {
        // An ordinary user needs no flag at all.
        let daemon = setup.start().await;
        daemon.client().await.health().await.expect("health");
    }
}

#[tokio::test]
async fn sighup_applies_live_settings_and_names_those_needing_a_restart() {
    let daemon = Setup::new()
        .toml("[limits]\nreset_per_email = { burst = 1, per_secs = 600 }")
        .start()
        .await;
    let client = daemon.client().await;
    client
        .request_password_reset("hup@example.com", None, None)
        .await
        .expect("first request");
    assert!(matches!(
        api_error(
            client
                .request_password_reset("hup@example.com", None, None)
                .await
        ),
        ApiError::RateLimited { .. }
    ));
    let original = std::fs::read_to_string(daemon.config_file()).expect("read config");

    // A file that no longer loads changes nothing.
    std::fs::write(daemon.config_file(), "[limits]\nbogus = 1\n").expect("write config");
    daemon.signal(Signal::HUP);
    daemon.wait_for_log("keeping the current settings").await;
    assert!(matches!(
        api_error(
            client
                .request_password_reset("hup@example.com", None, None)
                .await
        ),
        ApiError::RateLimited { .. }
    ));

    let text = original
        .replace("burst = 1", "burst = 5")
        .replace("[server]", "[server]\nmax_connections = 7");
    std::fs::write(daemon.config_file(), text).expect("write config");
    daemon.signal(Signal::HUP);
    daemon.wait_for_log("rate limits changed").await;
    let log = daemon.log();
    assert!(
        log.lines()
            .any(|l| l.contains("reload: applied") && l.contains("limits.reset_per_email.burst")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("needs a restart") && l.contains("server.max_connections")),
        "{log}"
    );
    client
        .request_password_reset("hup@example.com", None, None)
        .await
        .expect("the new, larger burst is in force");
}

#[tokio::test]
async fn metrics_count_calls_and_report_levels() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    client
        .create_user(new_user("metrics@example.com", "metrics password 1"))
        .await
        .expect("create");
    let _ = client
        .verify_password("metrics@example.com", "wrong password!", None)
        .await;
    let text = client.metrics().await.expect("metrics");
    for line in [
        r#"latchkey_calls_total{method="create_user",outcome="ok"} 1"#,
        r#"latchkey_calls_total{method="verify_password",outcome="InvalidCredentials"} 1"#,
        "latchkey_users 1",
        "latchkey_hash_queue_depth 0",
        "latchkey_outbox_dead 0",
        r#"latchkey_limiter_evicted_keys_total{limiter="reset_per_email"} 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in\n{text}"
        );
    }
    for prefix in [
        r#"latchkey_call_duration_seconds_bucket{le="#,
        "latchkey_hash_wait_seconds_count ",
        "latchkey_outbox_queued ",
        "latchkey_outbox_oldest_age_seconds ",
        "latchkey_limiter_keys ",
        "latchkey_store_bytes ",
        "latchkey_uptime_seconds ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(prefix)),
            "no {prefix:?} in\n{text}"
        );
    }
}

/// The text of every `.eml` file the file transport wrote so far.
fn mails(daemon: &Daemon) -> Vec<String> {
    std::fs::read_dir(daemon.data_dir().join("mail"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect()
}

/// Waits up to 10 s for a mail to `to`.
async fn mail_to(daemon: &Daemon, to: &str) -> String {
    for _ in 0..500 {
        if let Some(mail) = mails(daemon)
            .into_iter()
            .find(|m| m.contains(&format!("To: {to}")) || m.contains(&format!("<{to}>")))
        {
            return mail;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no mail to {to}; mails: {:?}", mails(daemon));
}

#[tokio::test]
async fn sighup_rereads_the_mail_templates() {
    let daemon = Setup::new().start().await;
    let client = daemon.client().await;
    for email in ["before@example.com", "after@example.com"] {
        client
            .create_user(new_user(email, "template password 1"))
            .await
            .expect("create");
    }
    client
        .request_password_reset("before@example.com", None, None)
        .await
        .expect("request");
    let before = mail_to(&daemon, "before@example.com").await;
    assert!(
        !before.contains("Subject: Custom reset for Latchkey"),
        "{before}"
    );

    let templates = daemon
        .data_dir()
        .parent()
        .expect("test dir")
        .join("templates/en");
    std::fs::create_dir_all(&templates).expect("mkdir");
    std::fs::write(
        templates.join("password_reset.subject"),
        "Custom reset for {{product}}\n",
    )
    .expect("write");
    std::fs::write(
        templates.join("password_reset.txt"),
        "Reset here: {{link}}\n",
    )
    .expect("write");
    std::fs::write(
        templates.join("password_reset.html"),
        "<p><a href=\"{{link}}\">Reset</a></p>\n",
    )
    .expect("write");
    std::fs::write(templates.join("password_changed.txt"), "Changed.\n").expect("write");
    std::fs::write(templates.join("password_changed.html"), "<p>Changed.</p>\n").expect("write");
    let config = std::fs::read_to_string(daemon.config_file()).expect("read config");
    let config = format!(
        "{config}\n[mail]\ntemplate_dir = {:?}\n",
        templates.parent().expect("dir").to_str().expect("utf-8")
    );
    std::fs::write(daemon.config_file(), config).expect("write config");
    daemon.signal(Signal::HUP);
    daemon.wait_for_log("mail templates re-read").await;
    assert!(daemon
        .log()
        .lines()
        .any(|l| l.contains("reload: applied") && l.contains("mail.template_dir")));
    client
        .request_password_reset("after@example.com", None, None)
        .await
        .expect("request");
    let after = mail_to(&daemon, "after@example.com").await;
    assert!(
        after.contains("Subject: Custom reset for Latchkey"),
        "{after}"
    );
    assert!(after.contains("Reset here: "), "{after}");
}

#[tokio::test]
async fn a_rust_client_connects_again_after_the_daemon_restarts() {
    let mut daemon = Daemon::start().await;
    let client = daemon.client().await;
    client.health().await.expect("before the restart");
    daemon.restart().await;
    // The call that finds the connection gone may fail (it cannot know whether the daemon
    // saw it); the client connects again for the calls after it.
    match client.health().await {
        Ok(_) | Err(latchkey_client::Error::Disconnected) => {}
        Err(e) => panic!("unexpected error: {e}"),
    }
    client.health().await.expect("after the restart");
    let clone = client.clone();
    clone
        .health()
        .await
        .expect("clones share the new connection");
}

/// Issue 19, item 12: outside systemd's `UMask=`, a shell's umask made the store's files
/// world-readable (0644). Started with umask 000, the most open there is, every file the
/// daemon makes is still its user's alone.
#[tokio::test]
async fn every_file_the_daemon_makes_is_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt as _;
    let setup = Setup::new().umask(0o000);
    let mail_dir = setup.dir().join("outgoing");
    let daemon = setup
        .toml(&format!(
            "[mail.file]\ndir = {:?}",
            mail_dir.to_str().expect("UTF-8")
        ))
        .start()
        .await;
    let client = daemon.client().await;
    client
        .create_user(new_user("ada@example.com", "ada's long password"))
        .await
        .expect("create_user");
    client
        .request_password_reset("ada@example.com", None, None)
        .await
        .expect("request_password_reset");
    daemon.wait_for_log("mail sent").await;
    let mut checked = Vec::new();
    for root in [daemon.data_dir(), mail_dir.as_path()] {
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let mode = std::fs::metadata(&dir)
                .expect("metadata")
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
            for entry in std::fs::read_dir(&dir).expect("read_dir") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let mode = std::fs::metadata(&path)
                    .expect("metadata")
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o077, 0, "{} is {:o}", path.display(), mode & 0o777);
                checked.push(path);
            }
        }
    }
    // What must have been checked: the outbox key, the mail, and on sled the store itself.
    let has = |what: &dyn Fn(&std::path::Path) -> bool| checked.iter().any(|p| what(p));
    assert!(has(&|p| p.ends_with("outbox.key")), "{checked:?}");
    assert!(
        has(&|p| p.extension().is_some_and(|e| e == "eml")),
        "{checked:?}"
    );
    if daemon.database().is_none() {
        let db = daemon.data_dir().join("db");
        assert!(has(&|p| p.starts_with(&db)), "{checked:?}");
    }
    // The socket keeps the mode it is given on purpose: the app group may connect.
    let socket = std::fs::metadata(daemon.socket())
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(socket & 0o777, 0o660);
}
