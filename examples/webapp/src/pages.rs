//! The HTML. Plain `format!` with every interpolated value passed through [`escape`]; the
//! pages need no script, so the Content-Security-Policy forbids all of them.

use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use latchkey_client::{TokenState, User};

use crate::security::CSRF_FIELD;

/// The stylesheet, served from this origin (the CSP allows no inline styles).
pub const STYLESHEET: &str = "\
body { font: 16px/1.5 system-ui, sans-serif; margin: 0; background: #f4f4f5; color: #18181b; }
main { max-width: 26rem; margin: 4rem auto; padding: 2rem; background: #fff; border-radius: 8px; }
h1 { font-size: 1.4rem; margin-top: 0; }
label { display: block; margin-top: 1rem; font-weight: 600; }
input { box-sizing: border-box; width: 100%; padding: .5rem; font: inherit; }
button { margin-top: 1.5rem; padding: .5rem 1rem; font: inherit; }
.error { color: #b91c1c; } .notice { color: #15803d; }
";

/// A page: a status, a title, a body and any extra headers (cookies, redirects).
#[must_use]
pub struct Page {
    /// The HTTP status.
    status: StatusCode,
    /// The `<title>` and `<h1>`, unescaped.
    title: String,
    /// The HTML after the heading, already escaped.
    body: String,
    /// Extra headers, such as `Set-Cookie`.
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Page {
    /// A 200 page titled `title` (escaped here) with `body` (HTML, escaped by the caller).
    pub fn new(title: &str, body: String) -> Page {
        Page {
            status: StatusCode::OK,
            title: title.to_owned(),
            body,
            headers: Vec::new(),
        }
    }

    /// The same page with another status.
    pub fn status(mut self, status: StatusCode) -> Page {
        self.status = status;
        self
    }

    /// The same page with another header (headers are appended, so cookies add up).
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Page {
        self.headers.push((name, value));
        self
    }

    /// The same page with `Set-Cookie: cookie`, if there is one.
    pub fn cookie(self, cookie: Option<HeaderValue>) -> Page {
        match cookie {
            Some(value) => self.header(header::SET_COOKIE, value),
            None => self,
        }
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let title = escape(&self.title);
        let html = format!(
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta name=\"referrer\" content=\"no-referrer\">\n\
             <title>{title}</title>\n<link rel=\"stylesheet\" href=\"/style.css\">\n</head>\n\
             <body>\n<main>\n<h1>{title}</h1>\n{}\n</main>\n</body>\n</html>\n",
            self.body
        );
        let mut response = (self.status, Html(html)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

/// `text` with the characters that mean something in HTML replaced by entities; safe in
/// element content and in quoted attribute values.
///
/// ```
/// use latchkey_webapp::pages::escape;
/// assert_eq!(escape(r#"<a href="x">Tom & 'Jerry'</a>"#),
///            "&lt;a href=&quot;x&quot;&gt;Tom &amp; &#39;Jerry&#39;&lt;/a&gt;");
/// ```
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A paragraph of plain text.
fn para(text: &str) -> String {
    format!("<p>{}</p>\n", escape(text))
}

/// An error message above a form, if there is one.
fn error_para(error: Option<&str>) -> String {
    error.map_or_else(String::new, |e| {
        format!("<p class=\"error\" role=\"alert\">{}</p>\n", escape(e))
    })
}

/// Links, one paragraph: `(href, text)`.
fn links(links: &[(&str, &str)]) -> String {
    let items: Vec<String> = links
        .iter()
        .map(|(href, text)| format!("<a href=\"{}\">{}</a>", escape(href), escape(text)))
        .collect();
    format!("<p>{}</p>\n", items.join(" · "))
}

/// The hidden CSRF field every form carries.
fn csrf_input(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{CSRF_FIELD}\" value=\"{}\">\n",
        escape(csrf)
    )
}

/// The home page.
pub fn home() -> Page {
    Page::new(
        "Example app",
        para("This app keeps its accounts in latchkeyd.")
            + &links(&[("/login", "Log in"), ("/forgot", "Forgot your password?")]),
    )
}

/// The "forgot password" form, with the address typed so far and an error, if any.
pub fn forgot_form(csrf: &str, email: &str, error: Option<&str>) -> Page {
    let body = format!(
        "{}{}<form method=\"post\" action=\"/forgot\">\n{}\
         <label for=\"email\">Email address</label>\n\
         <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"email\" required \
         value=\"{}\">\n<button type=\"submit\">Send me a link</button>\n</form>\n{}",
        para("Enter the address of your account and we will email you a link to choose a new password."),
        error_para(error),
        csrf_input(csrf),
        escape(email),
        links(&[("/login", "Back to log in")]),
    );
    Page::new("Forgot your password?", body)
}

/// What everyone sees after asking for a link, whether or not the address has an account.
pub fn forgot_sent() -> Page {
    Page::new(
        "Check your email",
        para(
            "If an account exists for that address, we have sent it a link to choose a new \
             password. The link works once and expires after a while.",
        ) + &para("Nothing arrived? Check your spam folder, or ask again in a few minutes.")
            + &links(&[("/login", "Back to log in")]),
    )
}

/// The new-password form (the token is in a cookie, never in the page).
pub fn reset_form(csrf: &str, error: Option<&str>) -> Page {
    let body = format!(
        "{}<form method=\"post\" action=\"/reset\">\n{}\
         <label for=\"password\">New password</label>\n\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" \
         required>\n\
         <label for=\"confirm\">Repeat the new password</label>\n\
         <input id=\"confirm\" name=\"confirm\" type=\"password\" autocomplete=\"new-password\" \
         required>\n<button type=\"submit\">Set the new password</button>\n</form>\n",
        error_para(error),
        csrf_input(csrf),
    );
    Page::new("Choose a new password", body)
}

/// What a link that cannot be used amounts to, said plainly.
pub fn link_unusable(state: TokenState) -> Page {
    let (status, title, text) = match state {
        TokenState::Expired => (
            StatusCode::GONE,
            "This link has expired",
            "Password reset links work for a limited time. Ask for a new one and use it soon \
             after it arrives.",
        ),
        TokenState::Used => (
            StatusCode::GONE,
            "This link was already used",
            "A new password has been set with this link already, and each link works only \
             once. If that was you, log in with the new password. If it was not, ask for a \
             new link and choose another password.",
        ),
        // A check that says "valid" cannot come here, and a state a newer daemon adds is
        // unknown here: treat both like a bad link to be safe.
        _ => (
            StatusCode::BAD_REQUEST,
            "This link is not valid",
            "It may have been copied incompletely, or a newer link or a password change has \
             replaced it. Ask for a new one.",
        ),
    };
    Page::new(
        title,
        para(text) + &links(&[("/forgot", "Send me a new link"), ("/login", "Log in")]),
    )
    .status(status)
}

/// The reset form was reached without a checked link (or with cookies off).
pub fn no_reset_in_progress() -> Page {
    Page::new(
        "No password reset in progress",
        para(
            "Open the link from the email again, or ask for a new one. This page needs \
             cookies to remember the link between steps.",
        ) + &links(&[("/forgot", "Send me a new link")]),
    )
    .status(StatusCode::BAD_REQUEST)
}

/// After a successful reset.
pub fn reset_done() -> Page {
    Page::new(
        "Your password has been changed",
        para(
            "Log in with your new password. Every session that was open with the old one has \
             been signed out, and any other reset links you asked for no longer work.",
        ) + &links(&[("/login", "Log in")]),
    )
}

/// The login form, with the address typed so far, an error and a notice, if any.
pub fn login_form(csrf: &str, email: &str, error: Option<&str>, notice: Option<&str>) -> Page {
    let notice = notice.map_or_else(String::new, |n| {
        format!("<p class=\"notice\">{}</p>\n", escape(n))
    });
    let body = format!(
        "{notice}{}<form method=\"post\" action=\"/login\">\n{}\
         <label for=\"email\">Email address</label>\n\
         <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required \
         value=\"{}\">\n\
         <label for=\"password\">Password</label>\n\
         <input id=\"password\" name=\"password\" type=\"password\" \
         autocomplete=\"current-password\" required>\n\
         <button type=\"submit\">Log in</button>\n</form>\n{}",
        error_para(error),
        csrf_input(csrf),
        escape(email),
        links(&[("/forgot", "Forgot your password?")]),
    );
    Page::new("Log in", body)
}

/// The account page of a logged-in user.
pub fn account(user: &User, csrf: &str) -> Page {
    let who = if user.name.is_empty() {
        user.email.clone()
    } else {
        format!("{} ({})", user.name, user.email)
    };
    let body = format!(
        "<p id=\"who\">Logged in as {}.</p>\n<form method=\"post\" action=\"/logout\">\n{}\
         <button type=\"submit\">Log out</button>\n</form>\n",
        escape(&who),
        csrf_input(csrf),
    );
    Page::new("Your account", body)
}

/// Too many attempts; `retry_after_secs` from the daemon, said in whole minutes.
pub fn rate_limited(retry_after_secs: u64) -> Page {
    let minutes = retry_after_secs.div_ceil(60).max(1);
    let unit = if minutes == 1 { "minute" } else { "minutes" };
    let retry_after = HeaderValue::from(retry_after_secs);
    Page::new(
        "Too many requests",
        para(&format!(
            "Too many requests; try again in {minutes} {unit}."
        )),
    )
    .status(StatusCode::TOO_MANY_REQUESTS)
    .header(header::RETRY_AFTER, retry_after)
}

/// A POST without a valid CSRF token.
pub fn csrf_refused() -> Page {
    Page::new(
        "This form has expired",
        para(
            "The form was not sent from this site's own page, or it is too old. Go back, \
             reload the page and try again.",
        ),
    )
    .status(StatusCode::FORBIDDEN)
}

/// A POST body over the limit.
pub fn form_too_large() -> Page {
    Page::new("Form too large", para("The form sent was too large."))
        .status(StatusCode::PAYLOAD_TOO_LARGE)
}

/// The daemon could not be reached or failed.
pub fn unavailable() -> Page {
    Page::new(
        "Service unavailable",
        para("The account service is not answering. Try again in a minute."),
    )
    .status(StatusCode::SERVICE_UNAVAILABLE)
}

/// No such page.
pub fn not_found() -> Page {
    Page::new("Page not found", links(&[("/", "Home")])).status(StatusCode::NOT_FOUND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_from_visitors_cannot_break_out_of_attributes_or_text() {
        let page = forgot_form("c\"srf", "\"><script>alert(1)</script>", Some("<b>"));
        let html = format!("{}{}", page.title, page.body);
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<b>"), "{html}");
        assert!(html.contains("value=\"c&quot;srf\""), "{html}");
    }

    #[test]
    fn waits_are_rounded_up_to_whole_minutes() {
        let text = |secs| rate_limited(secs).body;
        assert!(text(1).contains("try again in 1 minute."));
        assert!(text(60).contains("try again in 1 minute."));
        assert!(text(61).contains("try again in 2 minutes."));
        assert!(text(900).contains("try again in 15 minutes."));
    }
}
