//! Login throttling by consecutive failures (issue 19, item 7): guesses slow an attacker
//! down, never lock the owner out from an address that has not failed, and stop for good
//! at the NIST ceiling until the password is reset.

use latchkey_client::{ApiError, Client, UserRef};

use latchkey_test_support::{api_error, assert_api_error, new_user, Daemon, Setup};

use crate::reset::token_of;

const PASSWORD: &str = "original password 1";
const NEW_PASSWORD: &str = "a fresh new password 2";
const WRONG: &str = "wrong guess!";

/// A daemon where three failures are free and the fourth waits ten minutes.
async fn daemon(extra: &str) -> Daemon {
    Setup::new()
        .toml(&format!(
            "[limits.login_failures]\nfree = 3\nfirst_wait_secs = 600\n{extra}"
        ))
        .start()
        .await
}

async fn user(client: &Client, email: &str) {
    client
        .create_user(new_user(email, PASSWORD))
        .await
        .expect("create_user");
}

fn assert_waits(result: Result<latchkey_client::User, latchkey_client::Error>, at_most: u64) {
    match api_error(result) {
        ApiError::RateLimited { retry_after_secs } => assert!(
            (1..=at_most).contains(&retry_after_secs),
            "retry after {retry_after_secs}"
        ),
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

#[tokio::test]
async fn guesses_from_two_addresses_slow_the_guesser_and_the_owner_still_gets_in() {
    let daemon = daemon("").await;
    let client = daemon.client().await;
    user(&client, "ada@example.com").await;
    for ip in ["198.51.100.1", "198.51.100.2", "198.51.100.1"] {
        assert_api_error(
            client
                .verify_password("ada@example.com", WRONG, Some(ip))
                .await,
            ApiError::InvalidCredentials,
        );
    }
    // The account is under attack: the guessers wait, whatever they send.
    for ip in ["198.51.100.1", "198.51.100.2"] {
        assert_waits(
            client
                .verify_password("ada@example.com", WRONG, Some(ip))
                .await,
            600,
        );
        assert_waits(
            client
                .verify_password("ada@example.com", PASSWORD, Some(ip))
                .await,
            600,
        );
    }
    // So does a call that names no address: nothing shows it is not the guesser's.
    assert_waits(
        client
            .verify_password("ada@example.com", PASSWORD, None)
            .await,
        600,
    );
    // The owner, from her own address that has failed nothing, gets in...
    let ada = client
        .verify_password("ada@example.com", PASSWORD, Some("203.0.113.5"))
        .await
        .expect("the owner's correct password from a clean address");
    assert_eq!(ada.email, "ada@example.com");
    // ...and her success starts the count again: the next wrong guess is checked, not
    // throttled.
    assert_api_error(
        client
            .verify_password("ada@example.com", WRONG, Some("198.51.100.1"))
            .await,
        ApiError::InvalidCredentials,
    );
}

#[tokio::test]
async fn a_wrong_password_from_a_clean_address_counts_and_makes_it_unclean() {
    let daemon = daemon("").await;
    let client = daemon.client().await;
    user(&client, "bo@example.com").await;
    for _ in 0..3 {
        assert_api_error(
            client
                .verify_password("bo@example.com", WRONG, Some("198.51.100.7"))
                .await,
            ApiError::InvalidCredentials,
        );
    }
    // A fresh address is checked, and its wrong guess answered as one...
    assert_api_error(
        client
            .verify_password("bo@example.com", WRONG, Some("2001:db8:1:2::10"))
            .await,
        ApiError::InvalidCredentials,
    );
    // ...after which that address, and every other of its /64, waits like the guesser.
    assert_waits(
        client
            .verify_password("bo@example.com", PASSWORD, Some("2001:db8:1:2::99"))
            .await,
        1200,
    );
}

#[tokio::test]
async fn an_unknown_address_is_throttled_exactly_like_an_account() {
    let daemon = daemon("").await;
    let client = daemon.client().await;
    user(&client, "known@example.com").await;
    for email in ["known@example.com", "nobody@example.com"] {
        for _ in 0..3 {
            assert_api_error(
                client
                    .verify_password(email, WRONG, Some("198.51.100.9"))
                    .await,
                ApiError::InvalidCredentials,
            );
        }
        assert_waits(
            client
                .verify_password(email, WRONG, Some("198.51.100.9"))
                .await,
            600,
        );
    }
}

#[tokio::test]
async fn at_the_ceiling_no_password_gets_in_until_a_reset_and_then_the_new_one_does() {
    let daemon = daemon("max = 3").await;
    let client = daemon.client().await;
    user(&client, "cy@example.com").await;
    for _ in 0..3 {
        assert_api_error(
            client
                .verify_password("cy@example.com", WRONG, Some("198.51.100.3"))
                .await,
            ApiError::InvalidCredentials,
        );
    }
    // Three in a row is the ceiling here: even a clean address is refused, for up to the
    // memory (a day by default).
    assert_waits(
        client
            .verify_password("cy@example.com", PASSWORD, Some("203.0.113.8"))
            .await,
        86_400,
    );
    // The owner resets her password; that ends the lock.
    let link = client
        .admin_reset_link(UserRef::Email("cy@example.com".into()), None)
        .await
        .expect("admin_reset_link");
    client
        .complete_password_reset(&token_of(&link.link), NEW_PASSWORD, None, None)
        .await
        .expect("complete_password_reset");
    client
        .verify_password("cy@example.com", NEW_PASSWORD, Some("203.0.113.8"))
        .await
        .expect("the new password after the reset");
}

#[tokio::test]
async fn change_password_with_a_wrong_current_password_counts_as_a_failure() {
    let daemon = daemon("").await;
    let client = daemon.client().await;
    user(&client, "di@example.com").await;
    let id = client
        .verify_password("di@example.com", PASSWORD, None)
        .await
        .expect("login")
        .id;
    for _ in 0..3 {
        assert_api_error(
            client.change_password(id, WRONG, NEW_PASSWORD).await,
            ApiError::InvalidCredentials,
        );
    }
    assert!(matches!(
        api_error(client.change_password(id, PASSWORD, NEW_PASSWORD).await),
        ApiError::RateLimited { .. }
    ));
}
