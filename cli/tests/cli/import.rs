//! `import`: JSON lines of accounts with bcrypt or argon2 hashes.

use latchkey_client::UserStatus;
use latchkey_test_support::{bin, run, Daemon, Setup};

use latchkey_client::User;

use crate::json_lines;

/// The password every imported account had in the old system.
const OLD_PASSWORD: &str = "old node password";

#[tokio::test]
async fn import_reads_a_mongoexport_skips_bad_lines_by_number_and_accounts_log_in() {
    let hash = bcrypt::hash(OLD_PASSWORD, 4).expect("bcrypt");
    let other = bcrypt::hash("another password", 4).expect("bcrypt");
    let lines = [
        // 1: as mongoexport writes a Node app's users (relaxed mode).
        format!(
            r#"{{"_id":{{"$oid":"642817c0e1b2c3d4e5f60718"}},"email":"Ada@Example.com","password":"{hash}","name":"Ada","role":"admin","status":"active","createdAt":{{"$date":"2023-04-01T12:00:00.000Z"}},"__v":0}}"#
        ),
        // 2: canonical mode dates, another hash field, a boolean flag for the status.
        format!(
            r#"{{"_id":{{"$oid":"642817c0e1b2c3d4e5f60719"}},"email":"bob@example.com","passwordHash":"{hash}","name":"Bob","disabled":true,"createdAt":{{"$date":{{"$numberLong":"1680350400000"}}}}}}"#
        ),
        // 3: blank, not counted.
        "   ".to_owned(),
        // 4: the same person again: refused by the daemon.
        format!(r#"{{"email":"ADA@example.com","password":"{other}","name":"Ada again"}}"#),
        // 5: cut off.
        r#"{"email":"broken@example.com","password":"#.to_owned(),
        // 6: a hash the daemon does not know.
        r#"{"email":"plain@example.com","password":"hunter2"}"#.to_owned(),
        // 7: latchkey's own field names.
        format!(
            r#"{{"email":"cy@example.com","password_hash":"{hash}","locale":"de","role":"customer","created_at":1600000000}}"#
        ),
        // 8: an RFC 3339 time with an offset.
        format!(
            r#"{{"email":"dee@example.com","hash":"{hash}","createdAt":"2023-04-01T14:00:00+02:00"}}"#
        ),
    ];
    let setup = Setup::new();
    let file = setup.dir().join("users.json");
    std::fs::write(&file, lines.join("\n") + "\n").expect("write the export");
    let file = file.to_str().expect("UTF-8 path");
    let daemon = setup.start().await;

    let imported = daemon.cli(&["import", file], None).await;
    imported
        .assert_code(1)
        .assert_stdout_contains("imported 4, skipped 3")
        .assert_stderr_contains(
            "line 4: ADA@example.com: an account with that email exists already (EmailTaken)",
        )
        .assert_stderr_contains("line 5: not valid JSON")
        .assert_stderr_contains("line 6: plain@example.com: invalid password_hash");
    let reported: Vec<&str> = imported
        .stderr
        .lines()
        .filter_map(|line| line.split(':').next())
        .collect();
    assert_eq!(reported, ["line 4", "line 5", "line 6"], "{imported}");
    for secret in ["hunter2", &hash[7..], &other[7..]] {
        assert!(
            !imported.stderr.contains(secret),
            "the hash leaked\n{imported}"
        );
    }

    let client = daemon.client().await;
    for email in ["ada@example.com", "cy@example.com", "dee@example.com"] {
        client
            .verify_password(email, OLD_PASSWORD, None)
            .await
            .unwrap_or_else(|e| panic!("{email} logs in with the old password: {e}"));
    }
    let ada = client.find_user("ada@example.com").await.expect("find ada");
    assert_eq!(
        (
            ada.name.as_str(),
            ada.role.as_str(),
            ada.status,
            ada.created_at
        ),
        ("Ada", "admin", UserStatus::Active, 1_680_350_400)
    );
    let bob = client.find_user("bob@example.com").await.expect("find bob");
    assert_eq!(
        (bob.status, bob.created_at),
        (UserStatus::Disabled, 1_680_350_400)
    );
    let cy = client.find_user("cy@example.com").await.expect("find cy");
    assert_eq!(
        (cy.locale.as_deref(), cy.role.as_str(), cy.created_at),
        (Some("de"), "customer", 1_600_000_000)
    );
    let dee = client.find_user("dee@example.com").await.expect("find dee");
    assert_eq!(dee.created_at, 1_680_350_400);

    // Again, for a script: every account is there already, and each line says so.
    let again = daemon.cli(&["--json", "import", file], None).await;
    let summary: serde_json::Value = again.assert_code(1).json();
    assert_eq!(
        (summary["imported"].as_u64(), summary["skipped"].as_u64()),
        (Some(0), Some(7)),
        "{again}"
    );
    let errors: Vec<(u64, &str)> = summary["errors"]
        .as_array()
        .expect("an errors array")
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap_or(0),
                e["error"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            (1, "EmailTaken"),
            (2, "EmailTaken"),
            (4, "EmailTaken"),
            (5, "InvalidJson"),
            (6, "InvalidInput"),
            (7, "EmailTaken"),
            (8, "EmailTaken"),
        ],
        "{again}"
    );
    daemon.assert_log_lacks(&[OLD_PASSWORD, "hunter2"]);
}

#[tokio::test]
async fn import_sends_a_large_file_in_batches_below_the_frame_limit_and_user_list_pages_it() {
    let daemon = Daemon::start().await;
    let hash = bcrypt::hash(OLD_PASSWORD, 4).expect("bcrypt");
    // About 190 bytes an account: 1200 of them are several 64 KiB frames' worth.
    let total = 1200;
    // One line the CLI refuses, and one the daemon refuses in a late batch: both must be
    // reported with their own line numbers.
    let (broken, duplicate) = (1000, 1100);
    let line = |i: usize, email: &str| {
        format!(
            r#"{{"email":"{email}","password":"{hash}","name":"Imported user number {i}","createdAt":{{"$date":"2023-04-01T12:00:00.000Z"}}}}"#
        )
    };
    let text: String = (1..=total)
        .map(|i| match i {
            _ if i == broken => "{\"email\": \"broken@example.com\"\n".to_owned(),
            _ if i == duplicate => line(i, "user0005@example.com") + "\n",
            _ => line(i, &format!("user{i:04}@example.com")) + "\n",
        })
        .collect();
    let imported = daemon.cli(&["import", "-"], Some(&text)).await;
    imported
        .assert_code(1)
        .assert_stdout_contains(&format!("imported {}, skipped 2", total - 2))
        .assert_stderr_contains(&format!("line {broken}: not valid JSON"))
        .assert_stderr_contains(&format!(
            "line {duplicate}: user0005@example.com: an account with that email exists already"
        ));
    assert_eq!(imported.stderr.lines().count(), 2, "{imported}");

    let listed = daemon.cli(&["user", "list"], None).await;
    assert_eq!(listed.assert_success().stdout.lines().count(), total - 2);
    let all: Vec<User> = json_lines(
        daemon
            .cli(&["--json", "user", "list"], None)
            .await
            .assert_success(),
    );
    let emails: Vec<&str> = all.iter().map(|u| u.email.as_str()).collect();
    let expected: Vec<String> = (1..=total)
        .filter(|&i| i != broken && i != duplicate)
        .map(|i| format!("user{i:04}@example.com"))
        .collect();
    assert_eq!(emails, expected);

    let some = daemon.cli(&["user", "list", "--limit", "3"], None).await;
    assert_eq!(some.assert_success().stdout.lines().count(), 3, "{some}");
    let after = all[599].id.to_string();
    let page: Vec<User> = json_lines(
        daemon
            .cli(
                &["--json", "user", "list", "--after", &after, "--limit", "2"],
                None,
            )
            .await
            .assert_success(),
    );
    assert_eq!(page, all[600..602]);

    let client = daemon.client().await;
    client
        .verify_password("user1200@example.com", OLD_PASSWORD, None)
        .await
        .expect("the last account, from the last batch, logs in");
}

#[tokio::test]
async fn import_exits_3_when_the_daemon_is_unreachable() {
    let setup = Setup::new();
    let socket = setup.dir().join("nobody-listens.sock");
    let socket = socket.to_str().expect("UTF-8 path");
    let result = run(bin::latchkey(), &["--socket", socket, "import", "-"], None).await;
    result
        .assert_code(3)
        .assert_stderr_contains("cannot reach latchkeyd");
}

#[tokio::test]
async fn export_then_import_into_a_fresh_daemon_gives_the_same_accounts_with_the_same_passwords() {
    let source = Daemon::start().await;
    let client = source.client().await;
    let mut made = Vec::new();
    for (email, password) in [
        ("ada@example.com", "ada's long password"),
        ("bob@example.com", "bob's long password"),
        ("cy@example.com", "cy's long password"),
    ] {
        let user = client
            .create_user(latchkey_test_support::new_user(email, password))
            .await
            .expect("create_user");
        made.push((user, password));
    }
    // A changed password and a disabled account travel too.
    client
        .set_password(made[1].0.id, "bob's changed password")
        .await
        .expect("set_password");
    made[1].1 = "bob's changed password";
    client
        .set_status(made[2].0.id, UserStatus::Disabled)
        .await
        .expect("set_status");

    let exported = source.cli(&["export"], None).await;
    exported
        .assert_success()
        .assert_stderr_contains("password hash")
        .assert_stderr_contains("exported 3 accounts");
    assert_eq!(exported.stdout.lines().count(), 3, "{exported}");
    source.assert_log_lacks(&["ada's long password"]);

    let target = Daemon::start().await;
    let imported = target.cli(&["import", "-"], Some(&exported.stdout)).await;
    imported.assert_success();
    let other = target.client().await;
    for (user, password) in &made[..2] {
        let logged_in = other
            .verify_password(&user.email, password, None)
            .await
            .unwrap_or_else(|e| panic!("{} does not log in after the round trip: {e}", user.email));
        assert_eq!(logged_in.name, user.name);
        assert_eq!(logged_in.role, user.role);
        assert_eq!(logged_in.created_at, user.created_at);
    }
    let cy = other.find_user("cy@example.com").await.expect("find_user");
    assert_eq!(cy.status, UserStatus::Disabled);
    // The file is exactly what import reads: exporting the copy gives the same lines, but
    // for the ids the new store gave.
    let again = target.cli(&["export"], None).await;
    again.assert_success();
    let strip_id = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
                v.as_object_mut().expect("an object").remove("id");
                v
            })
            .collect()
    };
    assert_eq!(strip_id(&again.stdout), strip_id(&exported.stdout));
}
