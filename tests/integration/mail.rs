//! Mail that never gets lost (issue 4): the outbox delivered over real SMTP (aiosmtpd, see
//! `smtp.rs`) and as `.eml` files; outages, restarts and crashes delay mail but neither lose
//! nor repeat it; permanent rejections and exhausted retries go dead without holding back
//! other mail; templates are overridden per locale with a fallback.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use latchkey_client::{Client, MessageState, NewUser, OutboxMessage, TokenState};

use latchkey_test_support::smtp::{
    free_port, mail_toml, make_certificates, parse_eml, summary, Received, SmtpSink,
    ARRIVAL_TIMEOUT,
};
use latchkey_test_support::Setup;

/// A password that passes the policy.
const PASSWORD: &str = "correct horse battery staple";

/// The reset link template of these tests; the `&` checks that HTML parts escape it.
const LINK_PREFIX: &str = "https://app.example/reset?token=";

/// A configuration for mail over SMTP to 127.0.0.1:`port`, with retries a second or two
/// apart and no per-address cooldown between reset requests.
fn smtp_setup(port: u16) -> Setup {
    Setup::new()
        .toml(&format!(
            r#"
[limits]
reset_per_email = {{ burst = 100, per_secs = 60 }}
[reset]
link_template = "{LINK_PREFIX}{{token}}&via=mail"
"#
        ))
        .toml(&mail_toml(port))
}

/// Creates an account.
async fn user(client: &Client, email: &str, name: &str, locale: Option<&str>) {
    client
        .create_user(NewUser {
            email: email.into(),
            name: name.into(),
            password: PASSWORD.into(),
            role: None,
            locale: locale.map(str::to_owned),
        })
        .await
        .unwrap_or_else(|e| panic!("create_user({email}): {e}"));
}

/// Asks for a reset mail to `email`.
async fn request_reset(client: &Client, email: &str, locale: Option<&str>) {
    client
        .request_password_reset(email, Some("203.0.113.7"), locale)
        .await
        .unwrap_or_else(|e| panic!("request_password_reset({email}): {e}"));
}

/// The token inside a reset link.
fn token_of(link: &str) -> &str {
    let rest = link
        .strip_prefix(LINK_PREFIX)
        .unwrap_or_else(|| panic!("not a reset link: {link}"));
    rest.split('&').next().unwrap_or_default()
}

/// Lists the outbox until `done` holds for it; fails, showing the last listing, after
/// [`ARRIVAL_TIMEOUT`].
async fn outbox_until(
    client: &Client,
    what: &str,
    done: impl Fn(&[OutboxMessage]) -> bool,
) -> Vec<OutboxMessage> {
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    loop {
        let outbox = client.outbox_list(0, 1000).await.expect("outbox_list");
        if done(&outbox) {
            return outbox;
        }
        if Instant::now() > deadline {
            panic!("expected the outbox to show {what}\n     got: {outbox:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the outbox is empty, then a while longer (beyond the configured backoff), and
/// checks that the sink got exactly `recipients` (in any order), each message once.
async fn assert_delivered_once(client: &Client, sink: &SmtpSink, recipients: &[&str]) {
    sink.wait_for(recipients.len()).await;
    outbox_until(client, "no message left", |o| o.is_empty()).await;
    // A repeat would come after a retry, at most backoff_max_secs (2 s) later.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let received = sink.received();
    let ids: HashSet<&str> = received.iter().map(|m| m.header("Message-ID")).collect();
    assert_eq!(
        ids.len(),
        received.len(),
        "a message arrived twice\n{}",
        summary(&received)
    );
    let mut got: Vec<&str> = received
        .iter()
        .flat_map(|m| m.rcpt_tos.iter().map(String::as_str))
        .collect();
    let mut expected = recipients.to_vec();
    got.sort_unstable();
    expected.sort_unstable();
    assert_eq!(got, expected, "{}", summary(&received));
}

/// The message sent to `to`; fails unless there is exactly one.
#[track_caller]
fn mail_to<'a>(received: &'a [Received], to: &str) -> &'a Received {
    let found: Vec<&Received> = received.iter().filter(|m| m.rcpt_tos == [to]).collect();
    match found[..] {
        [one] => one,
        _ => panic!(
            "expected one message to {to}\n     got: {}",
            summary(received)
        ),
    }
}

/// Checks the headers and structure every message of ours has.
#[track_caller]
fn assert_well_formed(mail: &Received) {
    assert_eq!(mail.header("From"), "Latchkey <no-reply@localhost>");
    assert_eq!(mail.header("MIME-Version"), "1.0");
    assert_eq!(mail.header("Auto-Submitted"), "auto-generated");
    let id = mail.header("Message-ID");
    assert!(
        id.starts_with("<latchkey.") && id.ends_with("@localhost>"),
        "Message-ID: {id}"
    );
    assert!(!mail.header("Date").is_empty());
    assert_eq!(mail.content_type, "multipart/alternative");
    assert_eq!(
        mail.parts,
        ["multipart/alternative", "text/plain", "text/html"]
    );
}

#[tokio::test]
async fn a_reset_mail_arrives_over_smtp_with_its_link_and_the_change_notice_follows() {
    let sink = SmtpSink::start(free_port()).await;
    let daemon = smtp_setup(sink.port()).start().await;
    let client = daemon.client().await;
    // A display name is whatever a sign-up form let someone type; none reaches a mail
    // (issue 19, item 8: this one was printed verbatim into the product's genuine mail).
    let name = "Ada. URGENT: reset it NOW at https://evil.example/ <Lovelace>";
    user(&client, "ada@example.com", name, None).await;

    request_reset(&client, "ada@example.com", None).await;
    let received = sink.wait_for(1).await;
    let mail = &received[0];
    assert_well_formed(mail);
    assert_eq!(mail.mail_from.as_deref(), Some("no-reply@localhost"));
    assert_eq!(mail.rcpt_tos, ["ada@example.com"]);
    assert_eq!(mail.header("To"), "ada@example.com");
    assert_eq!(mail.header("Subject"), "Reset your Latchkey password");
    assert_eq!(mail.header("Content-Language"), "en");
    let link = mail.link();
    assert!(link.ends_with("&via=mail"), "{link}");
    let token = token_of(&link);
    let (text, html) = (mail.text(), mail.html());
    assert_eq!(text.lines().next(), Some("Hello,"), "{text}");
    let headers = format!("{:?}", mail.headers);
    for part in [text, html, &headers] {
        for piece in ["URGENT", "evil.example", "Lovelace"] {
            assert!(
                !part.contains(piece),
                "{piece:?} of the name in the mail: {part}"
            );
        }
    }
    assert!(text.contains("expires in 30 minutes"), "{text}");
    assert!(
        text.contains("The request came from 203.0.113.7 at "),
        "{text}"
    );
    assert!(html.contains("<p>Hello,</p>"), "{html}");
    let escaped = link.replace('&', "&amp;");
    assert!(html.contains(&format!("href=\"{escaped}\"")), "{html}");

    let check = client.check_reset_token(token, None).await.expect("check");
    assert_eq!(check.state, TokenState::Valid);
    let new_password = "a brand new passphrase";
    client
        .complete_password_reset(token, new_password, Some(new_password), None)
        .await
        .expect("complete_password_reset");
    let received = sink.wait_for(2).await;
    let notice = &received[1];
    assert_well_formed(notice);
    assert_eq!(
        notice.header("Subject"),
        "Your Latchkey password was changed"
    );
    assert_eq!(
        notice.text().lines().next(),
        Some("Hello,"),
        "{}",
        notice.text()
    );
    assert!(!notice.text().contains("URGENT"), "{}", notice.text());
    assert!(!notice.text().contains("https://"), "{}", notice.text());
    assert_ne!(notice.header("Message-ID"), mail.header("Message-ID"));

    daemon.wait_for_log("mail sent").await;
    daemon.assert_log_lacks(&[&link, token]);
}

#[tokio::test]
async fn mail_queued_while_smtp_is_down_arrives_exactly_once_when_it_comes_back() {
    let port = free_port();
    let daemon = smtp_setup(port).start().await;
    let client = daemon.client().await;
    user(&client, "ann@example.com", "Ann", None).await;
    user(&client, "bob@example.com", "Bob", None).await;

    // Nothing listens: the replies come at once all the same, as the mail is only queued.
    let started = Instant::now();
    for email in ["ann@example.com", "bob@example.com", "ann@example.com"] {
        request_reset(&client, email, None).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let outbox = outbox_until(&client, "three failed attempts, still queued", |o| {
        o.len() == 3
            && o.iter().all(|m| {
                m.attempts >= 1 && m.state == MessageState::Queued && m.last_error.is_some()
            })
    })
    .await;
    for message in &outbox {
        let error = message.last_error.as_deref().unwrap_or_default();
        assert!(error.to_lowercase().contains("connect"), "{message:?}");
        assert!(message.next_attempt_at.is_some(), "{message:?}");
    }

    let sink = SmtpSink::start(port).await;
    assert_delivered_once(
        &client,
        &sink,
        &["ann@example.com", "ann@example.com", "bob@example.com"],
    )
    .await;
    let links: HashSet<String> = sink.received().iter().map(Received::link).collect();
    assert_eq!(links.len(), 3, "each request has its own link");
}

#[tokio::test]
async fn mail_queued_before_a_shutdown_and_a_crash_is_delivered_after_the_restart() {
    let port = free_port();
    let mut daemon = smtp_setup(port).start().await;
    let client = daemon.client().await;
    user(&client, "ann@example.com", "Ann", None).await;
    request_reset(&client, "ann@example.com", None).await;
    outbox_until(&client, "a failed attempt", |o| {
        o.iter().any(|m| m.attempts >= 1)
    })
    .await;
    drop(client);
    let status = daemon.terminate().await;
    assert!(
        status.success(),
        "latchkeyd exited with {status} on SIGTERM"
    );

    daemon.restart().await;
    let client = daemon.client().await;
    request_reset(&client, "ann@example.com", None).await;
    outbox_until(&client, "two messages, both tried", |o| {
        o.len() == 2 && o.iter().all(|m| m.attempts >= 1)
    })
    .await;
    drop(client);
    daemon.kill9().await;

    let sink = SmtpSink::start(port).await;
    daemon.restart().await;
    let client = daemon.client().await;
    assert_delivered_once(&client, &sink, &["ann@example.com", "ann@example.com"]).await;
}

#[tokio::test]
async fn a_permanently_rejected_address_goes_dead_without_holding_back_the_next_mail() {
    let sink = SmtpSink::rejecting(free_port(), "^bounce@").await;
    // One delivery at a time, so the next mail really waits behind the rejected one.
    let daemon = smtp_setup(sink.port())
        .toml("[mail]\nconcurrency = 1")
        .start()
        .await;
    let client = daemon.client().await;
    user(&client, "bounce@example.com", "Bounce", None).await;
    user(&client, "next@example.com", "Next", None).await;
    request_reset(&client, "bounce@example.com", None).await;
    request_reset(&client, "next@example.com", None).await;

    let received = sink.wait_for(1).await;
    assert_eq!(received[0].rcpt_tos, ["next@example.com"]);
    let outbox = outbox_until(&client, "the rejected message dead", |o| {
        o.len() == 1 && o[0].state == MessageState::Dead
    })
    .await;
    let dead = &outbox[0];
    assert_eq!(dead.to, "bounce@example.com");
    assert_eq!(dead.attempts, 1, "a 5xx is not retried: {dead:?}");
    assert_eq!(dead.next_attempt_at, None);
    let error = dead.last_error.as_deref().unwrap_or_default();
    assert!(
        error.contains("550") && error.contains("recipient rejected"),
        "{error}"
    );
    daemon.wait_for_log("giving up").await;

    // An admin retry sends it once more (rejected again); a drop removes it for good.
    client.outbox_retry(dead.id).await.expect("outbox_retry");
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    while daemon.log().matches("giving up").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "no second attempt after outbox_retry\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.outbox_drop(dead.id).await.expect("outbox_drop");
    assert_eq!(client.outbox_list(0, 100).await.expect("outbox_list"), []);
    assert_eq!(sink.received().len(), 1, "{}", summary(&sink.received()));
}

#[tokio::test]
async fn a_message_that_keeps_failing_goes_dead_after_max_attempts() {
    let port = free_port();
    let daemon = smtp_setup(port)
        .toml("[mail]\nmax_attempts = 2")
        .start()
        .await;
    let client = daemon.client().await;
    user(&client, "ann@example.com", "Ann", None).await;
    request_reset(&client, "ann@example.com", None).await;
    let outbox = outbox_until(&client, "the message dead", |o| {
        o.len() == 1 && o[0].state == MessageState::Dead
    })
    .await;
    assert_eq!(outbox[0].attempts, 2, "{outbox:?}");
    assert!(outbox[0].last_error.is_some(), "{outbox:?}");
}

#[tokio::test]
async fn smtp_auth_uses_the_password_file_and_a_refused_login_is_retried_not_dead() {
    let sink = SmtpSink::with_auth(free_port(), "mailer", "s3cret smtp pass").await;
    let setup = smtp_setup(sink.port());
    let password_file = setup.dir().join("smtp-password");
    write(&password_file, "a wrong guess\n");
    let mut daemon = setup
        .toml(&format!(
            "[mail.smtp]\nusername = \"mailer\"\npassword_file = {:?}",
            password_file.to_str().expect("UTF-8 path")
        ))
        .start()
        .await;
    let client = daemon.client().await;
    user(&client, "ann@example.com", "Ann", None).await;
    request_reset(&client, "ann@example.com", None).await;
    // 535 is about the login, not the message: fix the password and the mail still goes.
    outbox_until(&client, "a refused login, retried", |o| {
        o.len() == 1
            && o[0].attempts >= 2
            && o[0].state == MessageState::Queued
            && o[0]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("535"))
    })
    .await;
    assert!(sink.received().is_empty());

    write(&password_file, "s3cret smtp pass\n");
    drop(client);
    daemon.restart().await;
    let client = daemon.client().await;
    assert_delivered_once(&client, &sink, &["ann@example.com"]).await;
    daemon.assert_log_lacks(&["s3cret smtp pass", "a wrong guess"]);
}

#[tokio::test]
async fn starttls_and_implicit_tls_check_the_server_against_the_configured_ca() {
    let certs_dir = tempfile::tempdir().expect("tempdir");
    let certs = make_certificates(certs_dir.path()).await;
    let ca = certs.ca.to_str().expect("UTF-8 path");
    for (tls, sink_mode) in [("starttls", "starttls"), ("tls", "implicit")] {
        let sink = SmtpSink::with_tls(free_port(), sink_mode, &certs).await;
        let daemon = smtp_setup(sink.port())
            .toml(&format!("[mail.smtp]\ntls = \"{tls}\"\nca_file = {ca:?}"))
            .start()
            .await;
        let client = daemon.client().await;
        user(&client, "ann@example.com", "Ann", None).await;
        request_reset(&client, "ann@example.com", None).await;
        let received = sink.wait_for(1).await;
        assert_eq!(received[0].rcpt_tos, ["ann@example.com"], "tls = {tls}");
    }

    // Without the CA the server is not trusted: nothing is sent, and it is retried, since the
    // fix (the CA, a renewed certificate) is on the operator's side.
    let sink = SmtpSink::with_tls(free_port(), "starttls", &certs).await;
    let daemon = smtp_setup(sink.port())
        .toml("[mail.smtp]\ntls = \"starttls\"")
        .start()
        .await;
    let client = daemon.client().await;
    user(&client, "ann@example.com", "Ann", None).await;
    request_reset(&client, "ann@example.com", None).await;
    let outbox = outbox_until(&client, "a refused certificate, retried", |o| {
        o.len() == 1 && o[0].attempts >= 1 && o[0].state == MessageState::Queued
    })
    .await;
    let error = outbox[0].last_error.as_deref().unwrap_or_default();
    assert!(error.contains("UnknownIssuer"), "{error}");
    assert!(sink.received().is_empty(), "{}", summary(&sink.received()));
}

#[tokio::test]
async fn templates_are_overridden_per_locale_with_a_fallback_to_the_default() {
    let sink = SmtpSink::start(free_port()).await;
    let setup = smtp_setup(sink.port());
    let templates = setup.dir().join("templates");
    write(
        &templates.join("pt/password_reset.subject"),
        "Redefina a sua senha {{product}}\n",
    );
    write(
        &templates.join("pt/password_reset.txt"),
        "Olá {{email}}! Nova senha: {{link}} ({{expires_in_minutes}} minutos)\n",
    );
    write(
        &templates.join("pt/password_reset.html"),
        "<p>Olá {{email}}!</p><p><a href=\"{{link}}\">Nova senha</a></p>\n",
    );
    write(
        &templates.join("en/password_reset.txt"),
        "Custom English for {{email}}: {{link}}\n",
    );
    write(
        &templates.join("en/password_reset.html"),
        "<p>Custom <a href=\"{{link}}\">reset</a></p>\n",
    );
    let daemon = setup
        .toml(&format!(
            "[mail]\ntemplate_dir = {:?}\nproduct_name = \"Acme\"\n\
             [mail.subjects]\npassword_reset = \"Acme: reset for {{{{email}}}}\"",
            templates.to_str().expect("UTF-8 path")
        ))
        .start()
        .await;
    let client = daemon.client().await;
    user(&client, "joao@example.com", "João <Silva>", Some("pt-BR")).await;
    user(&client, "fred@example.com", "Fred", Some("fr")).await;
    user(&client, "anon@example.com", "", None).await;

    request_reset(&client, "joao@example.com", None).await;
    request_reset(&client, "fred@example.com", None).await;
    // No locale on the account: the one passed with the request counts.
    request_reset(&client, "anon@example.com", Some("pt_PT")).await;
    let received = sink.wait_for(3).await;

    // pt-BR falls back to pt.
    let joao = mail_to(&received, "joao@example.com");
    assert_well_formed(joao);
    assert_eq!(joao.header("Subject"), "Redefina a sua senha Acme");
    assert_eq!(joao.header("Content-Language"), "pt");
    let link = joao.link();
    assert!(
        joao.text()
            .starts_with(&format!("Olá joao@example.com! Nova senha: {link} (")),
        "{}",
        joao.text()
    );
    let html = joao.html();
    assert!(html.contains("<p>Olá joao@example.com!</p>"), "{html}");
    assert!(
        html.contains(&format!("href=\"{}\"", link.replace('&', "&amp;"))),
        "{html}"
    );

    // fr has no variant: the default locale's override, with the configured subject.
    let fred = mail_to(&received, "fred@example.com");
    assert_eq!(fred.header("Subject"), "Acme: reset for fred@example.com");
    assert_eq!(fred.header("Content-Language"), "en");
    assert!(
        fred.text()
            .starts_with("Custom English for fred@example.com: https://"),
        "{}",
        fred.text()
    );

    let anon = mail_to(&received, "anon@example.com");
    assert_eq!(anon.header("Content-Language"), "pt");
    assert!(
        anon.text().starts_with("Olá anon@example.com! Nova senha"),
        "{}",
        anon.text()
    );

    // No pt variant of the change notice anywhere: the built-in English one.
    let id = client
        .find_user("joao@example.com")
        .await
        .expect("find_user")
        .id;
    client
        .change_password(id, PASSWORD, "another fine passphrase")
        .await
        .expect("change_password");
    let received = sink.wait_for(4).await;
    let notice = &received[3];
    assert_eq!(notice.header("Subject"), "Your Acme password was changed");
    assert_eq!(notice.header("Content-Language"), "en");
    assert!(
        notice.text().lines().next() == Some("Hello,"),
        "{}",
        notice.text()
    );
}

#[tokio::test]
async fn the_file_transport_writes_a_private_eml_with_the_link_and_both_parts() {
    let setup = Setup::new();
    let mail_dir = setup.dir().join("outgoing");
    let daemon = setup
        .toml(&format!(
            "[reset]\nlink_template = \"{LINK_PREFIX}{{token}}&via=mail\"\n\
             [mail.file]\ndir = {:?}",
            mail_dir.to_str().expect("UTF-8 path")
        ))
        .start()
        .await;
    let client = daemon.client().await;
    user(&client, "ada@example.com", "Ada", Some("en-GB")).await;
    request_reset(&client, "ada@example.com", None).await;

    let files = eml_files_eventually(&mail_dir, 1).await;
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&files[0]), 0o600, "the file holds a live link");
    assert_eq!(mode(&mail_dir), 0o700);
    let mail = parse_eml(&files[0]).await;
    assert_well_formed(&mail);
    assert_eq!(mail.header("To"), "ada@example.com");
    assert_eq!(mail.header("Subject"), "Reset your Latchkey password");
    let link = mail.link();
    assert!(
        mail.html().contains(&link.replace('&', "&amp;")),
        "{}",
        mail.html()
    );
    let check = client
        .check_reset_token(token_of(&link), None)
        .await
        .expect("check");
    assert_eq!(check.state, TokenState::Valid);
    outbox_until(&client, "no message left", |o| o.is_empty()).await;
    daemon.assert_log_lacks(&[&link, token_of(&link)]);
}

/// Writes `text` to `path`, creating its directory.
fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("a file in a directory")).expect("mkdir");
    std::fs::write(path, text).expect("cannot write a template");
}

/// Waits until `dir` holds at least `count` `.eml` files and returns them.
async fn eml_files_eventually(dir: &Path, count: usize) -> Vec<PathBuf> {
    let deadline = Instant::now() + ARRIVAL_TIMEOUT;
    loop {
        let files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        if files.len() >= count {
            return files;
        }
        assert!(
            Instant::now() < deadline,
            "expected {count} .eml files in {} within {ARRIVAL_TIMEOUT:?}, got {files:?}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 19, item 12: `.eml` files with live links stayed forever in the file transport's
/// directory. Those past `mail.file.keep_secs` are deleted; others are left alone.
#[tokio::test]
async fn eml_files_past_their_retention_are_deleted_and_the_rest_kept() {
    let setup = Setup::new();
    let mail_dir = setup.dir().join("outgoing");
    std::fs::create_dir_all(&mail_dir).expect("mkdir");
    let two_days_ago = std::time::SystemTime::now() - Duration::from_secs(2 * 86_400);
    let put = |name: &str, old: bool| {
        let path = mail_dir.join(name);
        let file = std::fs::File::create(&path).expect("create");
        if old {
            file.set_modified(two_days_ago).expect("set mtime");
        }
        path
    };
    let old_mail = put("old.eml", true);
    let old_other = put("notes.txt", true);
    let recent_mail = put("recent.eml", false);
    let daemon = setup
        .toml(&format!(
            "[mail.file]\ndir = {:?}\nkeep_secs = 86400",
            mail_dir.to_str().expect("UTF-8 path")
        ))
        .start()
        .await;
    daemon
        .wait_for_log("deleted .eml files past mail.file.keep_secs")
        .await;
    assert!(!old_mail.exists(), "a two-day-old .eml is kept");
    assert!(
        old_other.exists(),
        "a file that is no mail is not ours to delete"
    );
    assert!(recent_mail.exists(), "a recent .eml is deleted");
}
