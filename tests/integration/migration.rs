//! Migration from other systems (issue 5): accounts imported with their bcrypt hashes log in
//! with their old passwords, and their hashes become argon2id at the first login.

use latchkey_client::{ApiError, ImportUser, UserStatus};

use latchkey_test_support::{assert_api_error, Daemon};

fn import(email: &str, password_hash: &str) -> ImportUser {
    ImportUser {
        email: email.into(),
        name: "Imported".into(),
        role: Some("customer".into()),
        status: None,
        password_hash: password_hash.into(),
        locale: None,
        created_at: Some(1_600_000_000),
    }
}

#[tokio::test]
async fn imported_bcrypt_accounts_log_in_and_are_upgraded_to_argon2id_once() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    // Node's bcryptjs writes $2a$, the bcrypt package $2b$, PHP $2y$: the same algorithm.
    let hash = bcrypt::hash("old node password", 4).expect("bcrypt");
    let as_2a = format!("$2a${}", &hash[4..]);
    let as_2y = format!("$2y${}", &hash[4..]);
    let mut disabled = import("gone@example.com", &hash);
    disabled.status = Some(UserStatus::Disabled);
    let outcomes = client
        .import_users(vec![
            import("b@example.com", &hash),
            import("a@example.com", &as_2a),
            import(" Y@Example.com ", &as_2y),
            import("b@example.com", &hash),
            import("plain@example.com", "hunter2"),
            import("not an email", &hash),
            disabled,
        ])
        .await
        .expect("import_users");
    assert!(outcomes[..3].iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(outcomes[3], Err(ApiError::EmailTaken));
    assert!(
        matches!(&outcomes[4], Err(ApiError::InvalidInput { field, .. }) if field == "password_hash"),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[5], Err(ApiError::InvalidEmail));
    assert!(outcomes[6].is_ok());

    let user = client.find_user("y@example.com").await.expect("find");
    assert_eq!(
        (user.role.as_str(), user.created_at),
        ("customer", 1_600_000_000)
    );
    for email in ["a@example.com", "b@example.com", "y@example.com"] {
        let user = client
            .verify_password(email, "old node password", None)
            .await
            .unwrap_or_else(|e| panic!("{email}: {e}"));
        assert_eq!(
            user.credential_epoch, 0,
            "an upgrade is not a password change"
        );
        assert_api_error(
            client.verify_password(email, "wrong password", None).await,
            ApiError::InvalidCredentials,
        );
    }
    assert_api_error(
        client
            .verify_password("gone@example.com", "old node password", None)
            .await,
        ApiError::InvalidCredentials,
    );
    let upgrades = |log: &str| log.matches("password hash upgraded").count();
    // Log lines are written by a background thread: give the three a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while upgrades(&daemon.log()) < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(upgrades(&daemon.log()), 3, "{}", daemon.log());
    // The second login checks the new argon2id hash: nothing left to upgrade.
    client
        .verify_password("b@example.com", "old node password", None)
        .await
        .expect("login after the upgrade");
    assert_eq!(upgrades(&daemon.log()), 3);
    daemon.assert_log_lacks(&["old node password", &hash[7..]]);
}

/// Found in review: a stored argon2 hash asking for 4 TiB made the hashing thread's allocation
/// abort the whole daemon at the first login, and a huge cost would hold a hashing slot for
/// hours. Such hashes are refused at import, by name.
#[tokio::test]
async fn imported_hashes_too_costly_to_verify_are_refused_and_the_daemon_stays_up() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    let tail = "c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
    let bcrypt = bcrypt::hash("old password", 4).expect("bcrypt");
    let outcomes = client
        .import_users(vec![
            import(
                "huge@example.com",
                &format!("$argon2id$v=19$m=4294967295,t=1,p=1${tail}"),
            ),
            import(
                "slow@example.com",
                &format!("$argon2id$v=19$m=65536,t=1000000,p=1${tail}"),
            ),
            import("bcrypt31@example.com", &bcrypt.replacen("$04$", "$31$", 1)),
            import(
                "v18@example.com",
                &format!("$argon2id$v=18$m=65536,t=2,p=1${tail}"),
            ),
        ])
        .await
        .expect("import_users");
    for outcome in &outcomes {
        assert!(
            matches!(outcome, Err(ApiError::InvalidInput { field, .. }) if field == "password_hash"),
            "{outcomes:?}"
        );
    }
    for email in ["huge@example.com", "slow@example.com"] {
        assert_api_error(
            client.verify_password(email, "password", None).await,
            ApiError::InvalidCredentials,
        );
    }
    client.health().await.expect("the daemon is still up");
}

#[tokio::test]
async fn an_oversized_import_batch_is_refused_whole() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    let hash = bcrypt::hash("x", 4).expect("bcrypt");
    let too_many: Vec<ImportUser> = (0..1001)
        .map(|i| import(&format!("u{i}@example.com"), &hash))
        .collect();
    match client.import_users(too_many).await {
        // Either the frame cap or the per-call cap stops it; nothing is imported.
        Err(latchkey_client::Error::Api(ApiError::InvalidInput { field, .. })) => {
            assert_eq!(field, "users")
        }
        Err(latchkey_client::Error::Disconnected) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    let client = daemon.client().await;
    assert_eq!(client.list_users(0, 10).await.expect("list").len(), 0);
}

#[tokio::test]
async fn listing_many_users_pages_within_the_frame_cap() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    let hash = bcrypt::hash("x", 4).expect("bcrypt");
    let batch: Vec<ImportUser> = (0..400)
        .map(|i| {
            let mut u = import(&format!("listed{i:04}@example.com"), &hash);
            u.name = "N".repeat(100);
            u
        })
        .collect();
    for chunk in batch.chunks(100) {
        let outcomes = client.import_users(chunk.to_vec()).await.expect("import");
        assert!(outcomes.iter().all(Result::is_ok));
    }
    // 400 users of ~300 bytes each do not fit one 64 KiB frame: the daemon sends what fits
    // and the caller pages on.
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let page = client.list_users(after, 1000).await.expect("list_users");
        let Some(last) = page.last() else { break };
        assert!(page.len() < 400, "one page held everything: {}", page.len());
        after = last.id;
        seen.extend(page.into_iter().map(|u| u.email));
    }
    assert_eq!(seen.len(), 400);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
}
