//! The example web app end to end (issue 9): a real browser (headless Chromium over
//! WebDriver), the real daemon and a real SMTP server catching the mail. The flow a person
//! follows: ask for a link, open it from the mail, choose a new password, log in with it;
//! then the used link is refused. And what the browser hides: the security headers, the
//! cookies' attributes, and forged POSTs refused.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`bash scripts/install-browser`) and
//! Python's aiosmtpd (`./scripts/test` installs it); fails, saying so, without them.

// The helpers of this test crate fail the test the way its #[test] functions do, by
// panicking with a message; clippy.toml allows that only inside the test functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod util;

use std::time::Duration;

use latchkey_client::UserRef;
use util::{http, Browser, Stack, Webmail};

/// Ada's password before the reset.
const OLD_PASSWORD: &str = "correct horse battery staple";

/// The password she chooses.
const NEW_PASSWORD: &str = "a brand new passphrase for Ada";

/// What everyone is told after asking for a link, account or not.
const SENT: &str = "If an account exists for that address, we have sent it a link";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_password_is_reset_in_a_real_browser_and_the_used_link_is_refused() {
    let stack = Stack::start().await;
    stack
        .create_user("ada@example.com", "Ada", OLD_PASSWORD)
        .await;
    let browser = Browser::start().await;

    // Ada is logged in somewhere with her old password; the reset must end that session.
    log_in(&browser, &stack, "ada@example.com", OLD_PASSWORD).await;
    browser
        .expect("Your account", "Logged in as Ada (ada@example.com).")
        .await;

    // "Forgot password": an address without an account gets the very same answer.
    let nobody = ask_for_link(&browser, &stack, "nobody@example.com").await;
    let ada = ask_for_link(&browser, &stack, "ada@example.com").await;
    assert_eq!(nobody, ada, "the answer must not depend on the account");

    // Ada's mail arrives with the link in both parts.
    let mail = stack.sink.wait_for(1).await.remove(0);
    assert_eq!(mail.rcpt_tos, ["ada@example.com"]);
    let link = mail.link_starting(&stack.link_prefix());
    let token = link
        .strip_prefix(&stack.link_prefix())
        .expect("the link starts with the prefix");
    assert!(mail.html().contains(&link), "{}", mail.html());

    // She clicks it in her webmail (another site). The app checks the token and redirects:
    // the address bar and the history show no token.
    let webmail = Webmail::serve(mail.html()).await;
    browser.open(&webmail.url).await;
    browser.click("a[href*='/reset?token=']").await;
    browser.expect("Choose a new password", "").await;
    assert_eq!(browser.url().await, stack.url("/reset"));
    assert!(
        !browser.source().await.contains(token),
        "the form page must not hold the token"
    );
    browser.back().await;
    assert_eq!(
        browser.url().await,
        webmail.url,
        "the link's own address must not be a history entry"
    );
    browser.forward().await;
    browser.expect("Choose a new password", "").await;
    assert_eq!(browser.url().await, stack.url("/reset"));

    // The form explains its refusals and keeps the link usable.
    set_password(&browser, NEW_PASSWORD, "not the same passphrase").await;
    browser
        .expect(
            "Choose a new password",
            "The two passwords are not the same.",
        )
        .await;
    set_password(&browser, "password", "password").await;
    browser
        .expect("Choose a new password", "That password cannot be used:")
        .await;

    set_password(&browser, NEW_PASSWORD, NEW_PASSWORD).await;
    browser.expect("Your password has been changed", "").await;
    assert_eq!(browser.url().await, stack.url("/reset/done"));
    let cookies = browser.cookie_names().await;
    assert!(
        !cookies.iter().any(|c| c == "lk_reset"),
        "the token's cookie must go once it is used: {cookies:?}"
    );

    // The session from before the reset has ended.
    browser.open(&stack.url("/account")).await;
    browser.expect("Log in", "Your password was changed").await;

    // The old password is refused, the new one works.
    log_in(&browser, &stack, "ada@example.com", OLD_PASSWORD).await;
    browser.expect("Log in", "Wrong email or password.").await;
    log_in(&browser, &stack, "ada@example.com", NEW_PASSWORD).await;
    browser
        .expect("Your account", "Logged in as Ada (ada@example.com).")
        .await;

    // The link from the mail, opened again, is refused plainly.
    browser.open(&link).await;
    browser
        .expect("This link was already used", "each link works only once")
        .await;

    // Nothing the browser sent the app named one of the app's own pages as its referrer: the
    // pages that carried a token in their address leaked it nowhere.
    let requests = stack.requests();
    let origin = stack.url("");
    for seen in &requests {
        if let Some(referer) = &seen.referer {
            assert!(
                !referer.starts_with(&origin) && !referer.contains("token"),
                "a request carried the referrer {referer:?}: {seen:?}\nall: {requests:#?}"
            );
        }
    }
    assert!(
        requests.iter().any(|r| r.uri == "/style.css"),
        "the pages load their stylesheet, so the check above covers subresources: {requests:#?}"
    );
    // Ada's mail: the link, then the notice of the change. None went to the unknown address.
    let received = stack.sink.wait_for(2).await;
    for mail in &received {
        assert_eq!(mail.rcpt_tos, ["ada@example.com"], "{received:#?}");
    }
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_forbids_referrers_and_framing_and_posts_without_the_csrf_token_get_403() {
    let stack = Stack::start().await;
    stack
        .create_user("ada@example.com", "Ada", OLD_PASSWORD)
        .await;

    let form = http::get(&stack.url("/forgot"), None).await;
    assert_eq!(form.status, 200);
    assert_security_headers(&form);
    assert_eq!(form.header("cache-control"), "no-store");
    let csrf_cookie = form.set_cookie("lk_csrf").expect("a CSRF cookie");
    assert!(
        csrf_cookie.contains("; HttpOnly") && csrf_cookie.contains("; SameSite=Strict"),
        "{csrf_cookie}"
    );
    let cookie = form.cookie_pair("lk_csrf");
    let field = form.form_field("csrf");

    // Forged posts: no token, a token without its cookie, a cookie without the token, and a
    // token from another browser's cookie. None reaches the daemon: had one asked for Ada's
    // link, the genuine request below would be refused by the per-address rate limit.
    let forgot = stack.url("/forgot");
    let ada = ("email", "ada@example.com");
    let other = http::get(&stack.url("/login"), None)
        .await
        .form_field("csrf");
    let forged = [
        ("no token and no cookie", None, vec![ada]),
        (
            "a token without its cookie",
            None,
            vec![ada, ("csrf", &*field)],
        ),
        ("a cookie without the token", Some(&*cookie), vec![ada]),
        (
            "another browser's token",
            Some(&*cookie),
            vec![ada, ("csrf", &*other)],
        ),
    ];
    for (what, cookies, fields) in &forged {
        let reply = http::post_form(&forgot, *cookies, fields).await;
        assert_eq!(reply.status, 403, "a POST with {what}");
        assert_security_headers(&reply);
        assert!(
            reply.body.contains("This form has expired"),
            "{}",
            reply.body
        );
    }
    for path in ["/login", "/reset", "/logout"] {
        let reply = http::post_form(&stack.url(path), None, &[("email", "x")]).await;
        assert_eq!(reply.status, 403, "POST {path} without a CSRF token");
    }
    let genuine = http::post_form(&forgot, Some(&cookie), &[ada, ("csrf", &field)]).await;
    assert_eq!(genuine.status, 303, "{genuine:#?}");
    assert_eq!(genuine.header("location"), "/forgot/sent");
    assert_security_headers(&genuine);
    stack.sink.wait_for(1).await;

    // A valid link: the token goes into a cookie for /reset only, and the redirect, like
    // every response, tells the browser to send no referrer.
    let link = stack
        .client()
        .admin_reset_link(UserRef::Email("ada@example.com".into()), None)
        .await
        .expect("admin_reset_link")
        .link;
    let opened = http::get(&link, None).await;
    assert_eq!(opened.status, 303, "{opened:#?}");
    assert_eq!(opened.header("location"), "/reset");
    assert_security_headers(&opened);
    assert_eq!(opened.header("cache-control"), "no-store");
    let reset_cookie = opened.set_cookie("lk_reset").expect("the token's cookie");
    for attribute in [
        "; Path=/reset",
        "; HttpOnly",
        "; SameSite=Lax",
        "; Max-Age=",
    ] {
        assert!(reset_cookie.contains(attribute), "{reset_cookie}");
    }
    let token = link
        .strip_prefix(&stack.link_prefix())
        .expect("a link of ours");
    let page = http::get(&stack.url("/reset"), Some(&opened.cookie_pair("lk_reset"))).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Choose a new password"), "{}", page.body);
    assert!(
        !page.body.contains(token),
        "the page must not hold the token"
    );
    assert_security_headers(&page);
    assert_eq!(page.header("cache-control"), "no-store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_broken_links_say_so_plainly() {
    let stack = Stack::start().await;
    stack
        .create_user("ada@example.com", "Ada", OLD_PASSWORD)
        .await;
    let link = stack
        .client()
        .admin_reset_link(UserRef::Email("ada@example.com".into()), Some(1))
        .await
        .expect("admin_reset_link")
        .link;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = http::get(&link, None).await;
    assert_eq!(expired.status, 410);
    assert!(
        expired.body.contains("This link has expired"),
        "{}",
        expired.body
    );
    assert!(
        expired.body.contains("href=\"/forgot\""),
        "{}",
        expired.body
    );
    assert_security_headers(&expired);

    let broken = http::get(&format!("{}{}", stack.link_prefix(), "abc.def"), None).await;
    assert_eq!(broken.status, 400);
    assert!(
        broken.body.contains("This link is not valid"),
        "{}",
        broken.body
    );
    let injected = http::get(&stack.url("/reset?token=a%3B%20Path%3D%2F"), None).await;
    assert_eq!(injected.status, 400);
    assert!(injected
        .set_cookie("lk_reset")
        .is_none_or(|c| c.contains("Max-Age=0")));

    let without = http::get(&stack.url("/reset"), None).await;
    assert!(
        without.body.contains("No password reset in progress"),
        "{}",
        without.body
    );
}

/// Fails unless `reply` carries the headers every response must.
#[track_caller]
fn assert_security_headers(reply: &http::Reply) {
    assert_eq!(reply.header("referrer-policy"), "no-referrer");
    assert_eq!(reply.header("x-frame-options"), "DENY");
    assert_eq!(reply.header("x-content-type-options"), "nosniff");
    let csp = reply.header("content-security-policy");
    for directive in ["default-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(directive), "{csp}");
    }
}

/// Logs in through the login form.
async fn log_in(browser: &Browser, stack: &Stack, email: &str, password: &str) {
    browser.open(&stack.url("/login")).await;
    browser.fill("#email", email).await;
    browser.fill("#password", password).await;
    browser.submit().await;
}

/// Asks for a reset link through the form and returns the text of the page that answers.
async fn ask_for_link(browser: &Browser, stack: &Stack, email: &str) -> String {
    browser.open(&stack.url("/forgot")).await;
    browser.fill("#email", email).await;
    browser.submit().await;
    let page = browser.expect("Check your email", SENT).await;
    assert_eq!(browser.url().await, stack.url("/forgot/sent"));
    page
}

/// Fills and sends the new-password form.
async fn set_password(browser: &Browser, password: &str, confirm: &str) {
    browser.fill("#password", password).await;
    browser.fill("#confirm", confirm).await;
    browser.submit().await;
}
