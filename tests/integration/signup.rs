//! Sign-up from an application's form (issue 19, item 11): at once by default; with
//! `signup.conceal_taken_addresses`, the same reply for every address, the difference mailed
//! (over real SMTP, aiosmtpd), and the account created only by the mailed link used with the
//! password chosen at sign-up.

use latchkey_client::{ApiError, Client, EventKind, SignUp, SignUpOutcome};

use latchkey_test_support::smtp::{free_port, mail_toml, summary, Received, SmtpSink};
use latchkey_test_support::{api_error, assert_api_error, new_user, Daemon, Setup};

/// The owner's password.
const OWNER_PASSWORD: &str = "the owner's own password";
/// What somebody else types into the sign-up form for the owner's address.
const OTHER_PASSWORD: &str = "somebody else's password";
/// The new person's password.
const NEW_PASSWORD: &str = "a brand new password 42";

/// The sign-up link of these tests.
const CONFIRM_PREFIX: &str = "https://app.example/confirm?token=";
/// The link in the notice to an owner.
const EXISTING_LINK: &str = "https://app.example/forgot";

/// A sign-up form.
fn form(email: &str, password: &str) -> SignUp {
    SignUp {
        email: email.into(),
        name: "Someone".into(),
        password: password.into(),
        locale: None,
    }
}

/// A daemon concealing taken addresses, mailing to a sink on a free port.
async fn concealing(extra: &str) -> (Daemon, SmtpSink) {
    let port = free_port();
    let sink = SmtpSink::start(port).await;
    let daemon = Setup::new()
        .toml(&format!(
            r#"
[signup]
conceal_taken_addresses = true
confirm_link_template = "{CONFIRM_PREFIX}{{token}}"
existing_account_link = "{EXISTING_LINK}"
{extra}
"#
        ))
        .toml(&mail_toml(port))
        .start()
        .await;
    (daemon, sink)
}

/// The messages to `email` among `received`.
fn to<'a>(received: &'a [Received], email: &str) -> Vec<&'a Received> {
    received
        .iter()
        .filter(|m| m.rcpt_tos.iter().any(|r| r == email))
        .collect()
}

/// The token in a sign-up mail.
fn token_in(mail: &Received) -> String {
    let link = mail.link_starting(CONFIRM_PREFIX);
    link[CONFIRM_PREFIX.len()..].to_owned()
}

/// Signs up and expects the concealing answer.
async fn sign_up(client: &Client, email: &str, password: &str) {
    let outcome = client
        .sign_up(form(email, password), Some("203.0.113.20"))
        .await
        .unwrap_or_else(|e| panic!("sign_up({email}): {e}"));
    assert_eq!(outcome, SignUpOutcome::ConfirmationSent, "{email}");
}

#[tokio::test]
async fn by_default_a_sign_up_creates_the_account_and_says_when_the_address_is_taken() {
    let daemon = Daemon::start().await;
    let client = daemon.client().await;
    let outcome = client
        .sign_up(form("ada@example.com", NEW_PASSWORD), Some("203.0.113.20"))
        .await
        .expect("sign_up");
    let SignUpOutcome::Created { user } = outcome else {
        panic!("expected the account at once, got {outcome:?}");
    };
    assert_eq!(user.email, "ada@example.com");
    assert_eq!(user.role, "user");
    let logged_in = client
        .verify_password("ada@example.com", NEW_PASSWORD, None)
        .await
        .expect("the new account logs in");
    assert_eq!(logged_in.id, user.id);
    assert_api_error(
        client
            .sign_up(
                form("ADA@example.com", OTHER_PASSWORD),
                Some("203.0.113.20"),
            )
            .await,
        ApiError::EmailTaken,
    );
    // A weak password is refused before anything is counted or stored.
    assert!(matches!(
        api_error(client.sign_up(form("bob@example.com", "short"), None).await),
        ApiError::WeakPassword { .. }
    ));
    assert_api_error(
        client.find_user("bob@example.com").await,
        ApiError::NotFound,
    );
}

#[tokio::test]
async fn a_concealed_sign_up_answers_alike_mails_the_difference_and_creates_only_with_the_link() {
    let (daemon, sink) = concealing("").await;
    let client = daemon.client().await;
    let owner = client
        .create_user(new_user("ada@example.com", OWNER_PASSWORD))
        .await
        .expect("create_user");

    // The same answer for the taken address and for a new one.
    sign_up(&client, "ada@example.com", OTHER_PASSWORD).await;
    sign_up(&client, "bob@example.com", NEW_PASSWORD).await;
    let received = sink.wait_for(2).await;
    assert_eq!(received.len(), 2, "{}", summary(&received));

    // The owner is told, with no link that could make or change anything; the account is
    // as it was.
    let notice = to(&received, "ada@example.com");
    assert_eq!(notice.len(), 1, "{}", summary(&received));
    assert!(notice[0].header("Subject").contains("already have"));
    assert!(notice[0].text().contains(EXISTING_LINK));
    assert!(!notice[0].text().contains(CONFIRM_PREFIX));
    client
        .verify_password("ada@example.com", OWNER_PASSWORD, None)
        .await
        .expect("the owner's password still logs in");
    assert_api_error(
        client
            .verify_password("ada@example.com", OTHER_PASSWORD, None)
            .await,
        ApiError::InvalidCredentials,
    );
    assert_eq!(
        client.find_user("ada@example.com").await.expect("ada").id,
        owner.id
    );

    // The new address has no account until its link is used: signing in after signing up
    // tells whoever typed it nothing.
    assert_api_error(
        client.find_user("bob@example.com").await,
        ApiError::NotFound,
    );
    assert_api_error(
        client
            .verify_password("bob@example.com", NEW_PASSWORD, None)
            .await,
        ApiError::InvalidCredentials,
    );
    let mail = to(&received, "bob@example.com");
    assert_eq!(mail.len(), 1, "{}", summary(&received));
    assert!(mail[0].header("Subject").contains("Finish signing up"));
    let token = token_in(mail[0]);

    // The link with a wrong password makes nothing; with the password chosen, the account.
    assert_api_error(
        client
            .confirm_sign_up(&token, OTHER_PASSWORD, Some("203.0.113.20"))
            .await,
        ApiError::InvalidCredentials,
    );
    let user = client
        .confirm_sign_up(&token, NEW_PASSWORD, Some("203.0.113.20"))
        .await
        .expect("confirm_sign_up");
    assert_eq!(user.email, "bob@example.com");
    assert_eq!(user.role, "user");
    client
        .verify_password("bob@example.com", NEW_PASSWORD, None)
        .await
        .expect("the confirmed account logs in");
    // Once only.
    assert_api_error(
        client.confirm_sign_up(&token, NEW_PASSWORD, None).await,
        ApiError::InvalidToken,
    );
    assert_api_error(
        client
            .confirm_sign_up("not a token", NEW_PASSWORD, None)
            .await,
        ApiError::InvalidToken,
    );
    let events = client.events(0, 100).await.expect("events");
    let created: Vec<u64> = events
        .iter()
        .filter(|e| e.kind == EventKind::UserCreated)
        .filter_map(|e| e.user_id)
        .collect();
    assert_eq!(created, vec![owner.id, user.id]);

    // Neither the log nor anything stored holds a password or the raw token.
    let secrets = [OWNER_PASSWORD, OTHER_PASSWORD, NEW_PASSWORD, token.as_str()];
    daemon.assert_log_lacks(&secrets);
    for (name, bytes) in daemon.stored() {
        let text = String::from_utf8_lossy(&bytes);
        for secret in secrets {
            assert!(!text.contains(secret), "{name} holds {secret:?}");
        }
    }
}

#[tokio::test]
async fn nobody_can_sign_up_somebody_elses_address_and_the_owners_own_sign_up_wins() {
    let (daemon, sink) = concealing("").await;
    let client = daemon.client().await;
    // Somebody signs up an address that is not theirs: the link goes to its mailbox.
    sign_up(&client, "carol@example.com", OTHER_PASSWORD).await;
    // Its owner signs up herself.
    sign_up(&client, "carol@example.com", NEW_PASSWORD).await;
    let received = sink.wait_for(2).await;
    let mails = to(&received, "carol@example.com");
    assert_eq!(mails.len(), 2, "{}", summary(&received));
    let tokens: Vec<String> = mails.iter().map(|m| token_in(m)).collect();
    assert_ne!(tokens[0], tokens[1]);
    // Clicking the other person's link with her own password creates nothing.
    let (theirs, hers) = (&tokens[0], &tokens[1]);
    let first = client.confirm_sign_up(theirs, NEW_PASSWORD, None).await;
    let second = client.confirm_sign_up(hers, NEW_PASSWORD, None).await;
    // Mail order is the queue's, not guaranteed: exactly one of the two is hers.
    let (wrong, right) = match (&first, &second) {
        (Err(_), Ok(_)) => (first, second),
        (Ok(_), Err(_)) => (second, first),
        _ => panic!("expected one link to be hers: {first:?} {second:?}"),
    };
    assert_eq!(api_error(wrong), ApiError::InvalidCredentials);
    let user = right.expect("her link");
    client
        .verify_password("carol@example.com", NEW_PASSWORD, None)
        .await
        .expect("her password logs in");
    assert_api_error(
        client
            .verify_password("carol@example.com", OTHER_PASSWORD, None)
            .await,
        ApiError::InvalidCredentials,
    );
    assert_eq!(user.email, "carol@example.com");
}

#[tokio::test]
async fn a_sign_up_link_dies_after_its_wrong_passwords_and_the_limits_count_every_address_alike() {
    let (daemon, sink) = concealing("max_confirm_failures = 3").await;
    let client = daemon.client().await;
    client
        .create_user(new_user("taken@example.com", OWNER_PASSWORD))
        .await
        .expect("create_user");
    sign_up(&client, "dan@example.com", NEW_PASSWORD).await;
    let received = sink.wait_for(1).await;
    let token = token_in(to(&received, "dan@example.com")[0]);
    for _ in 0..3 {
        assert_api_error(
            client.confirm_sign_up(&token, OTHER_PASSWORD, None).await,
            ApiError::InvalidCredentials,
        );
    }
    assert_api_error(
        client.confirm_sign_up(&token, NEW_PASSWORD, None).await,
        ApiError::InvalidToken,
    );
    assert_api_error(
        client.find_user("dan@example.com").await,
        ApiError::NotFound,
    );

    // Three sign-ups an hour per address (limits.signup_per_email), taken or not, then the
    // same refusal for both.
    for _ in 0..2 {
        sign_up(&client, "dan@example.com", NEW_PASSWORD).await;
    }
    for _ in 0..3 {
        sign_up(&client, "taken@example.com", OTHER_PASSWORD).await;
    }
    let new = api_error(
        client
            .sign_up(form("dan@example.com", NEW_PASSWORD), None)
            .await,
    );
    let taken = api_error(
        client
            .sign_up(form("taken@example.com", OTHER_PASSWORD), None)
            .await,
    );
    assert!(matches!(new, ApiError::RateLimited { .. }), "{new:?}");
    assert!(matches!(taken, ApiError::RateLimited { .. }), "{taken:?}");
}
