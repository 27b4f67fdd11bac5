//! The password-reset flow (issue 3): tokens, their checks and uses, the generic replies, the
//! rate limits and the event log, against the real daemon.

use std::time::Duration;

use latchkey_client::{ApiError, Client, EventKind, TokenState, UserRef, UserStatus};

use latchkey_test_support::{api_error, assert_api_error, new_user, our_uid, Daemon, Setup};

const PASSWORD: &str = "original password 1";
const NEW_PASSWORD: &str = "a fresh new password 2";

/// Creates a user and returns its id.
async fn user(client: &Client, email: &str) -> u64 {
    client
        .create_user(new_user(email, PASSWORD))
        .await
        .expect("create_user")
        .id
}

/// A reset token for `id`, made through the admin link (the same issue path as a mailed one).
async fn token(client: &Client, id: u64, lifetime_secs: Option<u64>) -> String {
    let link = client
        .admin_reset_link(UserRef::Id(id), lifetime_secs)
        .await
        .expect("admin_reset_link");
    token_of(&link.link)
}

/// The token in a reset link.
pub fn token_of(link: &str) -> String {
    link.split_once("token=")
        .map(|(_, t)| t.to_owned())
        .unwrap_or_else(|| panic!("no token in link {link:?}"))
}

async fn state(client: &Client, token: &str) -> TokenState {
    client
        .check_reset_token(token, Some("203.0.113.9"))
        .await
        .expect("check_reset_token")
        .state
}

#[tokio::test]
async fn a_token_resets_the_password_once_and_revokes_the_users_other_tokens() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    let id = user(&client, "ada@example.com").await;
    let first = token(&client, id, None).await;
    let second = token(&client, id, None).await;
    let check = client.check_reset_token(&first, None).await.expect("check");
    assert_eq!(check.state, TokenState::Valid);
    assert!(check
        .expires_at
        .is_some_and(|at| at > latchkey_test_support::now() + 1700));
    // Checking does not use the token up.
    assert_eq!(state(&client, &first).await, TokenState::Valid);

    let done = client
        .complete_password_reset(
            &first,
            NEW_PASSWORD,
            Some(NEW_PASSWORD),
            Some("203.0.113.9"),
        )
        .await
        .expect("complete_password_reset");
    assert_eq!(done.user_id, id);
    assert_eq!(done.credential_epoch, 1);

    let user = client
        .verify_password("ada@example.com", NEW_PASSWORD, None)
        .await
        .expect("the new password logs in");
    assert_eq!(user.credential_epoch, 1);
    assert_api_error(
        client
            .verify_password("ada@example.com", PASSWORD, None)
            .await,
        ApiError::InvalidCredentials,
    );
    assert_eq!(state(&client, &first).await, TokenState::Used);
    assert_eq!(state(&client, &second).await, TokenState::Invalid);
    assert_api_error(
        client
            .complete_password_reset(&first, "yet another password 3", None, None)
            .await,
        ApiError::InvalidToken,
    );
    assert_api_error(
        client
            .complete_password_reset(&second, "yet another password 3", None, None)
            .await,
        ApiError::InvalidToken,
    );
}

#[tokio::test]
async fn issuing_past_the_per_user_cap_revokes_the_oldest_token() {
    let daemon = Setup::new()
        .toml("[reset]\nmax_live_tokens = 2")
        .start()
        .await;
    let client = daemon.client().await;
    let id = user(&client, "cap@example.com").await;
    let oldest = token(&client, id, None).await;
    let middle = token(&client, id, None).await;
    let newest = token(&client, id, None).await;
    assert_eq!(state(&client, &oldest).await, TokenState::Invalid);
    assert_eq!(state(&client, &middle).await, TokenState::Valid);
    assert_eq!(state(&client, &newest).await, TokenState::Valid);
}

#[tokio::test]
async fn an_expired_token_is_reported_expired_and_refused() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    let id = user(&client, "late@example.com").await;
    let token = token(&client, id, Some(1)).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(state(&client, &token).await, TokenState::Expired);
    assert_api_error(
        client
            .complete_password_reset(&token, NEW_PASSWORD, None, None)
            .await,
        ApiError::InvalidToken,
    );
    client
        .verify_password("late@example.com", PASSWORD, None)
        .await
        .expect("the password is unchanged");
}

#[tokio::test]
async fn a_token_from_before_a_password_change_is_dead() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    let id = user(&client, "changer@example.com").await;
    let token = token(&client, id, None).await;
    client
        .change_password(id, PASSWORD, NEW_PASSWORD)
        .await
        .expect("change_password");
    assert_eq!(state(&client, &token).await, TokenState::Invalid);
    assert_api_error(
        client
            .complete_password_reset(&token, "third password here", None, None)
            .await,
        ApiError::InvalidToken,
    );
    // An admin-set password kills tokens too.
    let token = crate::reset::token(&client, id, None).await;
    client
        .set_password(id, "set by an admin 4")
        .await
        .expect("set_password");
    assert_eq!(state(&client, &token).await, TokenState::Invalid);
}

#[tokio::test]
async fn tampered_and_malformed_tokens_are_invalid() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    let id = user(&client, "tamper@example.com").await;
    let good = token(&client, id, None).await;
    let (selector, verifier) = good.split_once('.').expect("selector.verifier");
    let flip = |s: &str, at: usize| {
        let mut chars: Vec<char> = s.chars().collect();
        chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
        chars.into_iter().collect::<String>()
    };
    let huge = "x".repeat(60_000);
    let bad = [
        format!("{}.{verifier}", flip(selector, 3)),
        format!("{selector}.{}", flip(verifier, 10)),
        format!("{selector}.{}", flip(verifier, verifier.len() - 1)),
        format!("{selector}.{}", &verifier[..verifier.len() - 1]),
        format!("{selector}{verifier}"),
        String::new(),
        "not a token".into(),
        format!("{selector}.{verifier}\0"),
        huge,
    ];
    for token in &bad {
        assert_eq!(
            state(&client, token).await,
            TokenState::Invalid,
            "{:.80}",
            token
        );
        assert_api_error(
            client
                .complete_password_reset(token, NEW_PASSWORD, None, None)
                .await,
            ApiError::InvalidToken,
        );
    }
    // None of that harmed the real token.
    assert_eq!(state(&client, &good).await, TokenState::Valid);
}

#[tokio::test]
async fn of_racing_completions_of_one_token_exactly_one_wins() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    let id = user(&client, "race@example.com").await;
    let token = token(&client, id, None).await;
    let mut racers = Vec::new();
    for i in 0..8 {
        let client = daemon.client().await;
        let token = token.clone();
        racers.push(tokio::spawn(async move {
            client
                .complete_password_reset(&token, &format!("racing password {i}"), None, None)
                .await
        }));
    }
    let mut winners = Vec::new();
    for (i, racer) in racers.into_iter().enumerate() {
        match racer.await.expect("racer task") {
            Ok(done) => winners.push((i, done)),
            Err(e) => assert_eq!(e.api(), Some(&ApiError::InvalidToken), "racer {i}: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let (i, done) = &winners[0];
    assert_eq!(done.credential_epoch, 1);
    client
        .verify_password("race@example.com", &format!("racing password {i}"), None)
        .await
        .expect("the winner's password logs in");
}

#[tokio::test]
async fn unknown_disabled_and_known_accounts_get_the_same_reply_and_only_known_get_mail() {
    // Mail goes to an SMTP port nothing listens on, so it stays in the outbox to be counted.
    let daemon = Setup::new()
        .toml("[limits]\nreset_per_email = { burst = 10, per_secs = 60 }")
        .toml(&format!(
            "[mail]\ntransport = \"smtp\"\n[mail.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"",
            latchkey_test_support::free_port()
        ))
        .start()
        .await;
    let client = daemon.client().await;
    let known = user(&client, "known@example.com").await;
    let disabled = user(&client, "disabled@example.com").await;
    client
        .set_status(disabled, UserStatus::Disabled)
        .await
        .expect("disable");

    for email in [
        "known@example.com",
        "nobody@example.com",
        "disabled@example.com",
        " KNOWN@example.com ",
    ] {
        let reply = client
            .request_password_reset(email, Some("198.51.100.1"), None)
            .await;
        assert!(reply.is_ok(), "{email}: {reply:?}");
    }
    assert_api_error(
        client
            .request_password_reset("not-an-address", None, None)
            .await,
        ApiError::InvalidEmail,
    );
    let outbox = client.outbox_list(0, 100).await.expect("outbox_list");
    let resets: Vec<_> = outbox
        .iter()
        .filter(|m| m.kind == "password_reset")
        .collect();
    assert_eq!(resets.len(), 2, "{outbox:?}");
    assert!(
        resets.iter().all(|m| m.to == "known@example.com"),
        "{outbox:?}"
    );
    let events = client.events(0, 1000).await.expect("events");
    let requested: Vec<_> = events
        .iter()
        .filter(|e| e.kind == EventKind::ResetRequested)
        .map(|e| e.user_id)
        .collect();
    assert_eq!(requested, vec![Some(known), Some(known)]);
}

#[tokio::test]
async fn reset_requests_are_rate_limited_alike_for_known_and_unknown_addresses() {
    let daemon = Setup::new()
        .toml("[limits]\nreset_per_ip = { burst = 3, per_secs = 900 }")
        .start()
        .await;
    let client = daemon.client().await;
    user(&client, "limited@example.com").await;
    for email in ["limited@example.com", "ghost@example.com"] {
        client
            .request_password_reset(email, None, None)
            .await
            .expect("first request");
        match api_error(client.request_password_reset(email, None, None).await) {
            ApiError::RateLimited { retry_after_secs } => {
                assert!(
                    (1..=60).contains(&retry_after_secs),
                    "{email}: {retry_after_secs}"
                )
            }
            other => panic!("{email}: expected RateLimited, got {other:?}"),
        }
    }
    // Per IP: three requests pass, the fourth from the same IP does not; another IP does.
    for i in 0..3 {
        client
            .request_password_reset(&format!("ip{i}@example.com"), Some("192.0.2.7"), None)
            .await
            .expect("within the per-IP burst");
    }
    match api_error(
        client
            .request_password_reset("ip9@example.com", Some("192.0.2.7"), None)
            .await,
    ) {
        ApiError::RateLimited { retry_after_secs } => {
            assert!((1..=300).contains(&retry_after_secs), "{retry_after_secs}")
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    client
        .request_password_reset("ip9@example.com", Some("192.0.2.8"), None)
        .await
        .expect("another IP has its own bucket");
}

#[tokio::test]
async fn password_spraying_is_throttled_per_ip_and_token_guessing_per_ip() {
    let daemon = Setup::new()
        .toml("[limits]\nlogin_per_ip = { burst = 5, per_secs = 300 }\ntoken_per_ip = { burst = 4, per_secs = 60 }")
        .start()
        .await;
    let client = daemon.client().await;
    // Per IP, across accounts: one wrong guess each, so no account's failures engage.
    for i in 0..5 {
        assert_api_error(
            client
                .verify_password(
                    &format!("spray{i}@example.com"),
                    "wrong guess!",
                    Some("192.0.2.50"),
                )
                .await,
            ApiError::InvalidCredentials,
        );
    }
    assert!(matches!(
        api_error(
            client
                .verify_password("spray9@example.com", "wrong guess!", Some("192.0.2.50"))
                .await
        ),
        ApiError::RateLimited { .. }
    ));
    // Token guessing per IP.
    for _ in 0..4 {
        let check = client
            .check_reset_token("AAAA.BBBB", Some("192.0.2.60"))
            .await;
        assert!(check.is_ok());
    }
    assert!(matches!(
        api_error(
            client
                .check_reset_token("AAAA.BBBB", Some("192.0.2.60"))
                .await
        ),
        ApiError::RateLimited { .. }
    ));
}

#[tokio::test]
async fn policy_failures_and_confirm_mismatch_leave_the_token_usable() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    let id = user(&client, "policy@example.com").await;
    let token = token(&client, id, None).await;
    assert_api_error(
        client
            .complete_password_reset(&token, NEW_PASSWORD, Some("something else entirely"), None)
            .await,
        ApiError::PasswordMismatch,
    );
    assert!(matches!(
        api_error(
            client
                .complete_password_reset(&token, "short", None, None)
                .await
        ),
        ApiError::WeakPassword { .. }
    ));
    assert!(matches!(
        api_error(
            client
                .complete_password_reset(&token, &"z".repeat(257), None, None)
                .await
        ),
        ApiError::WeakPassword { .. }
    ));
    assert!(matches!(
        api_error(
            client
                .complete_password_reset(&token, "password123", None, None)
                .await
        ),
        ApiError::WeakPassword { .. }
    ));
    assert_api_error(
        client
            .complete_password_reset(&token, NEW_PASSWORD, None, Some("not an ip"))
            .await,
        ApiError::InvalidInput {
            field: "client_ip".into(),
            reason: "not an IPv4 or IPv6 address".into(),
        },
    );
    assert_eq!(state(&client, &token).await, TokenState::Valid);
    client
        .complete_password_reset(&token, NEW_PASSWORD, None, None)
        .await
        .expect("a good password still works with the same token");
}

#[tokio::test]
async fn admin_only_reset_methods_are_refused_to_apps() {
    let daemon = Setup::new()
        .toml(&format!(
            "[auth]\nadmin_uids = [{}]\napp_uids = [{}]",
            our_uid().wrapping_add(1),
            our_uid()
        ))
        .start()
        .await;
    let client = daemon.client().await;
    let id = user(&client, "app@example.com").await;
    assert_api_error(
        client.admin_reset_link(UserRef::Id(id), None).await,
        ApiError::Forbidden,
    );
    assert_api_error(client.events(0, 10).await, ApiError::Forbidden);
    assert_api_error(client.outbox_list(0, 10).await, ApiError::Forbidden);
    assert_api_error(client.list_users(0, 10).await, ApiError::Forbidden);
    assert_api_error(client.import_users(Vec::new()).await, ApiError::Forbidden);
    assert_api_error(client.export_users(0, 10).await, ApiError::Forbidden);
    assert_api_error(client.backup_read(None).await, ApiError::Forbidden);
    assert_api_error(client.backup_cancel(1).await, ApiError::Forbidden);
    // Metrics are for every role since issue 17 (a scraper needs no admin connection).
    assert!(client
        .metrics()
        .await
        .is_ok_and(|m| m.contains("latchkey_calls_total")));
    assert_api_error(
        client.set_password(id, NEW_PASSWORD).await,
        ApiError::Forbidden,
    );
    // The app calls of the flow work.
    client
        .request_password_reset("app@example.com", None, None)
        .await
        .expect("apps may request resets");
}

/// A failed login for `email` (account `id`) from 192.0.2.1, then a reset from 192.0.2.2;
/// returns the token it used.
async fn fail_then_reset(client: &Client, id: u64, email: &str) -> String {
    assert_api_error(
        client
            .verify_password(email, "wrong password!", Some("192.0.2.1"))
            .await,
        ApiError::InvalidCredentials,
    );
    let token = token(client, id, None).await;
    client
        .complete_password_reset(&token, NEW_PASSWORD, None, Some("192.0.2.2"))
        .await
        .expect("complete");
    token
}

#[tokio::test]
async fn the_event_log_reads_after_a_cursor_and_holds_no_secret() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    let id = user(&client, "events@example.com").await;
    let token = fail_then_reset(&client, id, "events@example.com").await;
    client
        .set_status(id, UserStatus::Disabled)
        .await
        .expect("disable");
    client.delete_user(id).await.expect("delete");

    let all = client.events(0, 1000).await.expect("events");
    let kinds: Vec<EventKind> = all.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::UserCreated,
            EventKind::LoginFailed,
            EventKind::ResetRequested,
            EventKind::ResetCompleted,
            EventKind::UserDisabled,
            EventKind::UserDeleted,
        ]
    );
    assert!(all.iter().all(|e| e.user_id == Some(id)));
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(all[1].client_ip.as_deref(), Some("192.0.2.1"));
    assert_eq!(all[3].client_ip.as_deref(), Some("192.0.2.2"));
    // Paging after a cursor.
    let rest = client
        .events(all[2].seq, 2)
        .await
        .expect("events after cursor");
    assert_eq!(rest, all[3..5].to_vec());
    let text = format!("{all:?}");
    for secret in [PASSWORD, NEW_PASSWORD, token.as_str()] {
        assert!(!text.contains(secret), "an event holds {secret:?}");
    }
}

/// Issue 17: what an application needs to end sessions, without the admin role: the changes
/// that outdate them, no login failures, no client IPs, with a cursor that pages.
#[tokio::test]
async fn credential_changes_give_apps_what_ends_sessions_and_nothing_else() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    let id = user(&client, "changes@example.com").await;
    let other = user(&client, "other@example.com").await;
    let token = fail_then_reset(&client, id, "changes@example.com").await;
    client
        .change_password(other, PASSWORD, NEW_PASSWORD)
        .await
        .expect("change");
    client.set_password(other, PASSWORD).await.expect("set");
    client
        .set_status(id, UserStatus::Disabled)
        .await
        .expect("disable");
    client.delete_user(id).await.expect("delete");

    let page = client.credential_changes(0, 100).await.expect("changes");
    assert!(page.caught_up, "{page:?}");
    let text = format!("{page:?}");
    for secret in [token.as_str(), "192.0.2.1", "192.0.2.2"] {
        assert!(!text.contains(secret), "a change holds {secret:?}");
    }
    let seen: Vec<(EventKind, u64)> = page.changes.iter().map(|c| (c.kind, c.user_id)).collect();
    assert_eq!(
        seen,
        [
            (EventKind::ResetCompleted, id),
            (EventKind::PasswordChanged, other),
            (EventKind::PasswordSet, other),
            (EventKind::UserDisabled, id),
            (EventKind::UserDeleted, id),
        ]
    );
    let all = client.events(0, 1000).await.expect("events");
    assert_eq!(page.next, all.last().expect("events").seq);
    // One at a time, the cursor walks the same changes and then says it caught up.
    let mut cursor = 0;
    let mut walked = Vec::new();
    loop {
        let step = client
            .credential_changes(cursor, 1)
            .await
            .expect("a page of one");
        assert!(step.changes.len() <= 1, "{step:?}");
        walked.extend(step.changes);
        assert!(step.next >= cursor);
        cursor = step.next;
        if step.caught_up {
            break;
        }
    }
    assert_eq!(walked, page.changes);
    let again = client
        .credential_changes(cursor, 100)
        .await
        .expect("at the end");
    assert!(
        again.caught_up && again.changes.is_empty() && again.next == cursor,
        "{again:?}"
    );

    // An app may read them; it may not read the whole log; a monitor may read neither.
    let app = Setup::new()
        .toml(&format!(
            "[auth]\nadmin_uids = [{}]\napp_uids = [{}]\n",
            latchkey_test_support::another_uid(),
            our_uid()
        ))
        .start()
        .await;
    let app_client = app.client().await;
    let mine = user(&app_client, "app@example.com").await;
    app_client
        .change_password(mine, PASSWORD, NEW_PASSWORD)
        .await
        .expect("change");
    let changes = app_client
        .credential_changes(0, 10)
        .await
        .expect("apps may read them");
    assert_eq!(changes.changes.len(), 1, "{changes:?}");
    assert_eq!(changes.changes[0].user_id, mine);
    assert_api_error(app_client.events(0, 10).await, ApiError::Forbidden);
}

#[tokio::test]
async fn raw_tokens_and_passwords_never_reach_the_log_or_the_store_files() {
    let mut daemon = Setup::new()
        .toml("[log]\nlevel = \"trace\"\n[limits]\nreset_per_email = { burst = 10, per_secs = 60 }")
        .start()
        .await;
    let client = daemon.client().await;
    let id = user(&client, "secret@example.com").await;
    let used = token(&client, id, None).await;
    let live = token(&client, id, None).await;
    client
        .request_password_reset("secret@example.com", None, None)
        .await
        .expect("request");
    client
        .complete_password_reset(&used, NEW_PASSWORD, None, None)
        .await
        .expect("complete");
    let status = daemon.terminate().await;
    assert!(status.success());

    let mut secrets: Vec<String> = vec![PASSWORD.into(), NEW_PASSWORD.into()];
    for token in [&used, &live] {
        let (selector, verifier) = token.split_once('.').expect("token form");
        secrets.push(token.to_string());
        secrets.push(verifier.to_string());
        // The selector is stored as raw bytes, never as its text form.
        secrets.push(selector.to_string());
    }
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    daemon.assert_log_lacks(&refs);
    for (name, bytes) in daemon.stored() {
        for secret in &secrets {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "{name} contains {secret:?}"
            );
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn disabling_an_account_kills_its_reset_links_for_good_and_its_sessions() {
    // Issue 19, item 6: re-enabling an account used to bring its old links back.
    let daemon = Setup::new().start().await;
    let client = daemon.client().await;
    let id = user(&client, "paused@example.com").await;
    let link = client
        .admin_reset_link(UserRef::Id(id), None)
        .await
        .expect("a support link");
    let token = link.link.rsplit('=').next().expect("a token").to_owned();
    let disabled = client
        .set_status(id, UserStatus::Disabled)
        .await
        .expect("disable");
    assert_eq!(disabled.credential_epoch, 1, "the app drops the sessions");
    let enabled = client
        .set_status(id, UserStatus::Active)
        .await
        .expect("enable");
    assert_eq!(enabled.credential_epoch, 1, "enabling bumps nothing");
    let check = client.check_reset_token(&token, None).await.expect("check");
    assert_eq!(check.state, TokenState::Invalid);
    assert_api_error(
        client
            .complete_password_reset(&token, NEW_PASSWORD, None, None)
            .await,
        ApiError::InvalidToken,
    );
    // A link made after it was enabled again works.
    let fresh = client
        .admin_reset_link(UserRef::Id(id), None)
        .await
        .expect("a new link");
    let token = fresh.link.rsplit('=').next().expect("a token").to_owned();
    client
        .complete_password_reset(&token, NEW_PASSWORD, None, None)
        .await
        .expect("the new link works");
}
