//! `backup` and `latchkeyd restore` (issue 16): an online backup of a serving daemon, written
//! by the CLI, restored with the daemon's own binary into a fresh data directory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use latchkey_client::{TokenState, UserRef, UserStatus};
use latchkey_test_support::daemon::files_under;
use latchkey_test_support::{bin, free_port, new_user, run, Daemon, Run, Setup, SmtpSink};

use crate::PASSWORD;

/// `base` with mail to a port where nothing listens, so a requested reset stays queued.
fn queued_mail(base: Setup) -> Setup {
    base.toml(&format!(
        "[mail]\ntransport = \"smtp\"\nmax_attempts = 50\nbackoff_base_secs = 1\nbackoff_max_secs = 2\n[mail.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\ntimeout_secs = 5\n",
        free_port()
    ))
}

/// `latchkeyd --config CONFIG restore FILE --data-dir DIR ARGS...`, into the setup's own
/// data directory.
async fn restore(setup: &Setup, file: &Path, extra: &[&str]) -> Run {
    restore_into(setup, &setup.dir().join("data"), file, extra).await
}

/// Like [`restore`], into `data`.
async fn restore_into(setup: &Setup, data: &Path, file: &Path, extra: &[&str]) -> Run {
    let config = setup.write_config();
    let mut args = vec![
        "--config",
        config.to_str().expect("utf-8 path"),
        "restore",
        file.to_str().expect("utf-8 path"),
        "--data-dir",
        data.to_str().expect("utf-8 path"),
    ];
    args.extend_from_slice(extra);
    run(bin::latchkeyd(), &args, None).await
}

/// Every file under `dir` with its contents: what "changes nothing" compares.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    if !dir.exists() {
        return BTreeMap::new();
    }
    files_under(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_default();
            (p, bytes)
        })
        .collect()
}

/// The lines of a backup file as JSON values.
fn lines(file: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(file)
        .expect("read the backup")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// A support link for `ada` (its token), a reset mail for bob queued, and then the event
/// log and the ids of the queued mail.
async fn links_and_mail(
    client: &latchkey_client::Client,
    ada: u64,
) -> (String, Vec<latchkey_client::Event>, Vec<u64>) {
    let link = client
        .admin_reset_link(UserRef::Id(ada), None)
        .await
        .expect("a reset link");
    let token = link.link.rsplit('=').next().expect("a token").to_owned();
    client
        .request_password_reset("bob@example.com", None, None)
        .await
        .expect("a reset, queued");
    let events = client.events(0, 1000).await.expect("events");
    (token, events, mail_ids(client).await)
}

/// Polls `done` every 50 ms; fails the test after 60 s.
async fn wait_until(done: impl Fn() -> bool) {
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "waited 60 s in vain");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The ids of the messages in the outbox.
async fn mail_ids(client: &latchkey_client::Client) -> Vec<u64> {
    let mail = client.outbox_list(0, 1000).await.expect("outbox");
    mail.iter().map(|m| m.id).collect()
}

fn copy_key(from: &Daemon, to: &Setup) {
    std::fs::create_dir_all(to.dir().join("data")).expect("data dir");
    std::fs::copy(
        from.data_dir().join("outbox.key"),
        to.dir().join("data").join("outbox.key"),
    )
    .expect("copy the outbox key");
}

#[tokio::test]
async fn a_backup_of_a_serving_daemon_restores_with_the_same_logins_tokens_events_and_mail() {
    // On the backend under test (LK_TEST_BACKEND); the restore is into sled.
    let source = queued_mail(Setup::new()).start().await;
    let client = source.client().await;
    let ada = client
        .create_user(new_user("ada@example.com", "ada's long password"))
        .await
        .expect("create ada");
    let bob = client
        .create_user(new_user("bob@example.com", "bob's long password"))
        .await
        .expect("create bob");
    let cy = client
        .create_user(new_user("cy@example.com", PASSWORD))
        .await
        .expect("create cy");
    client
        .set_password(bob.id, "bob's changed password")
        .await
        .expect("set_password");
    client
        .set_status(cy.id, UserStatus::Disabled)
        .await
        .expect("disable cy");
    let (token, events, mail) = links_and_mail(&client, ada.id).await;
    assert_eq!(mail.len(), 2, "bob's reset and his password notice wait");

    let file = source.dir().join("store.backup");
    let file_arg = file.to_str().expect("utf-8 path");
    let written = source.cli(&["backup", file_arg], None).await;
    written
        .assert_success()
        .assert_stdout_contains("wrote")
        .assert_stdout_contains("3 users");
    let checked = source.cli(&["backup", "--verify", file_arg], None).await;
    checked
        .assert_success()
        .assert_stdout_contains("verified")
        .assert_stdout_contains("2 messages");
    // No raw token, no password: only hashes and sealed mail.
    let text = std::fs::read_to_string(&file).expect("read the backup");
    for secret in [
        token.as_str(),
        "ada's long password",
        "bob's changed password",
        PASSWORD,
    ] {
        assert!(!text.contains(secret), "the backup holds a secret");
    }
    source.assert_log_lacks(&[&token, "ada's long password"]);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&file).expect("metadata").permissions(),
    );
    assert_eq!(mode & 0o077, 0, "the backup is readable by its owner only");

    // A fresh directory with the source's outbox key, and a mail server that takes mail.
    let sink = SmtpSink::start(free_port()).await;
    let target = Setup::sled().toml(&format!(
        "[mail]\ntransport = \"smtp\"\n[mail.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
        sink.port()
    ));
    copy_key(&source, &target);
    let restored = restore(&target, &file, &[]).await;
    restored
        .assert_success()
        .assert_stdout_contains("restored 3 users");
    let target = target.start().await;
    let other = target.client().await;
    other
        .verify_password("ada@example.com", "ada's long password", None)
        .await
        .expect("ada logs in on the restored store");
    other
        .verify_password("bob@example.com", "bob's changed password", None)
        .await
        .expect("bob logs in with his changed password");
    assert_eq!(
        other.get_user(cy.id).await.expect("cy").status,
        UserStatus::Disabled
    );
    let check = other
        .check_reset_token(&token, None)
        .await
        .expect("check the token");
    assert_eq!(check.state, TokenState::Valid, "ada's link still works");
    assert_eq!(other.events(0, 1000).await.expect("events"), events);
    // The queued mail opens under the restored key and goes out: bob's reset link works.
    let delivered = sink.wait_for(mail.len()).await;
    let prefix = "http://localhost:3000/reset-password?token=";
    let reset = delivered
        .iter()
        .find(|m| m.text().contains(prefix))
        .unwrap_or_else(|| panic!("no reset mail among {} delivered", delivered.len()));
    let bob_token = reset.link_starting(prefix)[prefix.len()..].to_owned();
    other
        .complete_password_reset(&bob_token, "bob's reset password", None, None)
        .await
        .expect("bob's queued link works on the restored store");
    // New ids start above every restored one.
    let dee = other
        .create_user(new_user("dee@example.com", PASSWORD))
        .await
        .expect("create dee");
    let highest = events.iter().map(|e| e.seq).max().unwrap_or(0);
    assert!(
        dee.id > highest && dee.id > cy.id,
        "{} after {highest}",
        dee.id
    );
    // And the token is used once, there.
    other
        .complete_password_reset(&token, "ada's new password", None, None)
        .await
        .expect("complete the reset on the restored store");
}

#[tokio::test]
async fn a_backup_under_writers_holds_every_write_acknowledged_before_it_and_none_half_done() {
    let source = Setup::new().start().await;
    let client = source.client().await;
    let changed = client
        .create_user(new_user("changed@example.com", PASSWORD))
        .await
        .expect("create");
    // Each account created: its email, when the call began and when it was acknowledged.
    let acked: Arc<Mutex<Vec<(String, Instant, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let client = source.client().await;
        let acked = acked.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let email = format!("w{w}-{n}@example.com");
                n += 1;
                let started = Instant::now();
                if client.create_user(new_user(&email, PASSWORD)).await.is_ok() {
                    acked
                        .lock()
                        .expect("lock")
                        .push((email, started, Instant::now()));
                }
            }
        }));
    }
    // A writer whose each change is a user record and an event in one transaction.
    let epochs = {
        let client = source.client().await;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut changes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let password = format!("changed password {changes}");
                if client.set_password(changed.id, &password).await.is_ok() {
                    changes += 1;
                }
            }
            changes
        })
    };
    // Until the writers have some accounts in; then the backup; then until a create that
    // began after it has been acknowledged.
    wait_until(|| acked.lock().expect("lock").len() >= 6).await;
    let file = source.dir().join("busy.backup");
    let before = Instant::now();
    let written = source
        .cli(&["backup", file.to_str().expect("utf-8 path")], None)
        .await;
    let after = Instant::now();
    wait_until(|| {
        acked
            .lock()
            .expect("lock")
            .iter()
            .any(|(_, started, _)| *started > after)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    let changes = epochs.await.expect("password writer");
    written.assert_success();
    assert!(changes > 0, "the password writer ran");

    let lines = lines(&file);
    let emails: BTreeSet<String> = lines
        .iter()
        .filter_map(|l| l.get("user")?.get("email")?.as_str().map(str::to_owned))
        .collect();
    let acked = acked.lock().expect("lock").clone();
    let mut acked_before = 0;
    for (email, started, done) in &acked {
        let present = emails.contains(email);
        if *done < before {
            assert!(
                present,
                "{email} was acknowledged before the backup and is not in it"
            );
            acked_before += 1;
        }
        if *started > after {
            assert!(
                !present,
                "{email} was created after the backup ended and is in it"
            );
        }
    }
    assert!(
        acked_before > 5 && acked.iter().any(|(_, s, _)| *s > after),
        "the writers were busy before and after the backup"
    );
    // Nothing half-written: each account with its creation event, each password change
    // with its event.
    let created_events = lines
        .iter()
        .filter(|l| l.get("event").and_then(|e| e.get("kind")) == Some(&"user_created".into()))
        .count();
    assert_eq!(
        created_events,
        emails.len(),
        "one creation event per account"
    );
    let user = lines
        .iter()
        .find_map(|l| l.get("user").filter(|u| u["id"] == changed.id))
        .expect("the changed user");
    let password_events = lines
        .iter()
        .filter(|l| {
            l.get("event")
                .is_some_and(|e| e["kind"] == "password_set" && e["user_id"] == changed.id)
        })
        .count() as u64;
    assert_eq!(user["credential_epoch"], password_events);

    // Restored, the store has exactly those accounts.
    let target = Setup::sled();
    copy_key(&source, &target);
    restore(&target, &file, &[]).await.assert_success();
    let target = target.start().await;
    let other = target.client().await;
    let listed = target.cli(&["--json", "user", "list"], None).await;
    listed.assert_success();
    assert_eq!(listed.stdout.lines().count(), emails.len());
    let password = match password_events {
        0 => PASSWORD.to_owned(),
        n => format!("changed password {}", n - 1),
    };
    other
        .verify_password("changed@example.com", &password, None)
        .await
        .expect("the password the backup holds");
}

#[tokio::test]
async fn every_bad_file_and_every_unsafe_target_is_refused_and_changes_nothing() {
    let mut source = queued_mail(Setup::sled()).start().await;
    let client = source.client().await;
    client
        .create_user(new_user("ada@example.com", PASSWORD))
        .await
        .expect("create");
    client
        .request_password_reset("ada@example.com", None, None)
        .await
        .expect("a reset, queued");
    let good = source.dir().join("good.backup");
    source
        .cli(&["backup", good.to_str().expect("utf-8 path")], None)
        .await
        .assert_success();
    let bytes = std::fs::read(&good).expect("read");
    let text = String::from_utf8(bytes.clone()).expect("utf-8");
    let bad = |name: &str, contents: &[u8]| {
        let path = source.dir().join(name);
        std::fs::write(&path, contents).expect("write");
        path
    };
    let files = [
        (bad("truncated", &bytes[..bytes.len() * 2 / 3]), "truncated"),
        (
            bad("tampered", text.replacen("ada@", "eve@", 1).as_bytes()),
            "checksum does not match",
        ),
        (
            bad(
                "newer",
                text.replacen("\"version\":1", "\"version\":2", 1)
                    .as_bytes(),
            ),
            "backup version 2 is newer",
        ),
        (
            bad("not-a-backup", b"{\"email\":\"ada@example.com\"}\n"),
            "not a latchkey backup",
        ),
    ];

    // Into a fresh directory holding the right key.
    let target = Setup::sled();
    copy_key(&source, &target);
    let data = target.dir().join("data");
    let before = snapshot(&data);
    for (file, message) in &files {
        let verified = source
            .cli(
                &["backup", "--verify", file.to_str().expect("utf-8 path")],
                None,
            )
            .await;
        verified.assert_code(1).assert_stderr_contains(message);
        let refused = restore(&target, file, &[]).await;
        refused.assert_code(1).assert_stderr_contains(message);
        assert_eq!(snapshot(&data), before, "{message}: the target changed");
    }
    // No key, or another key: the queued mail could not be sent.
    std::fs::remove_file(data.join("outbox.key")).expect("remove the key");
    let before = snapshot(&data);
    restore(&target, &good, &[])
        .await
        .assert_code(1)
        .assert_stderr_contains("no key at")
        .assert_stderr_contains("--drop-mail");
    assert_eq!(snapshot(&data), before);
    std::fs::write(data.join("outbox.key"), [7u8; 32]).expect("another key");
    let before = snapshot(&data);
    restore(&target, &good, &[])
        .await
        .assert_code(1)
        .assert_stderr_contains("not the one the backup's mail was sealed under");
    assert_eq!(snapshot(&data), before);
    // Without the mail, it restores under the new key.
    restore(&target, &good, &["--drop-mail"])
        .await
        .assert_success()
        .assert_stdout_contains("restored 1 users, 1 tokens, 0 messages")
        .assert_stdout_contains("left out 1 messages");

    // Over a store: refused unless --force, and never under a running daemon.
    let over = restore(&target, &good, &[]).await;
    over.assert_code(1)
        .assert_stderr_contains("holds a store already");
    let source_data = source.data_dir().to_path_buf();
    let before = snapshot(&source_data.join("db"));
    restore_into(&target, &source_data, &good, &["--force"])
        .await
        .assert_code(1)
        .assert_stderr_contains("is in use");
    assert_eq!(snapshot(&source_data.join("db")).len(), before.len());
    source
        .client()
        .await
        .verify_password("ada@example.com", PASSWORD, None)
        .await
        .expect("the running daemon is untouched");
    // Stopped, --force replaces it and keeps the old one beside.
    source.terminate().await;
    restore_into(&target, &source_data, &good, &["--force"])
        .await
        .assert_success()
        .assert_stdout_contains("the store that was there is now");
    let kept = std::fs::read_dir(&source_data)
        .expect("read dir")
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().starts_with("db.replaced-"));
    assert!(kept, "the replaced store is kept");
}

#[tokio::test]
async fn copy_store_moves_a_sled_store_to_postgres_where_every_host_serves_it() {
    let mut source = queued_mail(Setup::sled()).start().await;
    let client = source.client().await;
    let ada = client
        .create_user(new_user("ada@example.com", "ada's long password"))
        .await
        .expect("create ada");
    client
        .create_user(new_user("bob@example.com", PASSWORD))
        .await
        .expect("create bob");
    let (token, events, mail) = links_and_mail(&client, ada.id).await;
    source.terminate().await;

    // The cut-over: the sled daemon stopped, its store copied to a fresh database, the
    // outbox key given to every host.
    let target = Setup::postgres().toml(&format!(
        "[mail]\ntransport = \"smtp\"\n[mail.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
        free_port()
    ));
    copy_key(&source, &target);
    let config = target.write_config();
    let from = format!("sled:{}", source.data_dir().to_str().expect("utf-8 path"));
    let copy = |config: PathBuf, from: String| async move {
        let args = [
            "--config",
            config.to_str().expect("utf-8 path"),
            "copy-store",
            "--from",
            &from,
            "--to",
            "postgres",
        ];
        run(bin::latchkeyd(), &args, None).await
    };
    copy(config.clone(), from.clone())
        .await
        .assert_success()
        .assert_stdout_contains("copied 2 users, 2 tokens, 1 messages, 4 events");
    // Again: the same database, the same counts.
    copy(config.clone(), from.clone())
        .await
        .assert_success()
        .assert_stdout_contains("the target holds 2 users, 2 tokens, 1 messages, 4 events");

    let a = target.start().await;
    let b = Setup::another_host(&a).start().await;
    let (on_a, on_b) = (a.client().await, b.client().await);
    on_b.verify_password("ada@example.com", "ada's long password", None)
        .await
        .expect("ada logs in on host B");
    assert_eq!(on_a.events(0, 1000).await.expect("events"), events);
    assert_eq!(mail_ids(&on_b).await, mail);
    let check = on_b.check_reset_token(&token, None).await.expect("check");
    assert_eq!(check.state, TokenState::Valid);
    on_a.complete_password_reset(&token, "ada's new password", None, None)
        .await
        .expect("the copied token completes on host A");
    on_b.verify_password("ada@example.com", "ada's new password", None)
        .await
        .expect("and the new password works on B");
    let carl = on_b
        .create_user(new_user("carl@example.com", PASSWORD))
        .await
        .expect("a new account");
    assert!(carl.id > mail.iter().copied().max().unwrap_or(0));
    let highest = events.iter().map(|e| e.seq).max().unwrap_or(0);
    let later = on_a
        .events(highest, 1000)
        .await
        .expect("events after the copy");
    assert!(!later.is_empty() && later.iter().all(|e| e.seq > highest));
    // And back: a backup of the shared store, taken while host B writes, restores into sled.
    let writer = tokio::spawn(async move {
        for n in 0..20 {
            let email = format!("during-{n}@example.com");
            on_b.create_user(new_user(&email, PASSWORD))
                .await
                .expect("a write during the backup");
        }
    });
    let file = a.dir().join("pg.backup");
    let file_arg = file.to_str().expect("utf-8 path");
    a.cli(&["backup", file_arg], None)
        .await
        .assert_success()
        .assert_stdout_contains("from postgres");
    writer.await.expect("writer");
    a.cli(&["backup", "--verify", file_arg], None)
        .await
        .assert_success();
    let back = Setup::sled();
    copy_key(&source, &back);
    restore(&back, &file, &[]).await.assert_success();
    let back = back.start().await;
    back.client()
        .await
        .verify_password("ada@example.com", "ada's new password", None)
        .await
        .expect("the account, back on sled");
    // A copy over a database that holds other records says so.
    copy(config, from)
        .await
        .assert_code(1)
        .assert_stderr_contains("held other records");
}

#[tokio::test]
async fn one_backup_runs_at_a_time_until_it_ends_or_is_cancelled() {
    let daemon = Setup::new().start().await;
    let client = daemon.client().await;
    let users = (0..300)
        .map(|n| latchkey_client::ImportUser {
            email: format!("many{n}@example.com"),
            password_hash: "$2b$04$4ZsH1Ab2pPc6e3jgS9eGVe5B1yS3Hr0rJb3Eq2m7i3iWbQqkE0a8K".into(),
            name: String::new(),
            role: None,
            status: None,
            locale: None,
            created_at: None,
        })
        .collect();
    let outcomes = client.import_users(users).await.expect("import");
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let first = client.backup_read(None).await.expect("a backup starts");
    assert!(!first.last, "300 accounts take more than one chunk");
    let refused = client.backup_read(None).await.expect_err("a second one");
    assert!(
        refused.to_string().contains("another backup is running"),
        "{refused}"
    );
    let unknown = client
        .backup_read(Some(first.session ^ 1))
        .await
        .expect_err("an unknown session");
    assert!(unknown.to_string().contains("no such backup"), "{unknown}");
    client
        .backup_cancel(first.session)
        .await
        .expect("cancel it");
    client
        .backup_read(Some(first.session))
        .await
        .expect_err("a cancelled session is over");
    // A new one runs to its end, and then another may start.
    let mut session = None;
    loop {
        let chunk = client.backup_read(session).await.expect("a chunk");
        if chunk.last {
            break;
        }
        session = Some(chunk.session);
    }
    let again = client
        .backup_read(None)
        .await
        .expect("after the end, a new one");
    client.backup_cancel(again.session).await.expect("cancel");
    daemon.wait_for_log("backup cancelled").await;
}
