//! What keeps the pages safe to use:
//!
//! - [`headers`] puts the security headers on every response, errors included: no referrer
//!   (the reset page's address once held a token), no framing, no scripts or styles from
//!   elsewhere, and nothing cached unless a handler says so.
//! - [`csrf_guard`] refuses every POST whose CSRF token is missing or wrong, before any
//!   handler runs, so no form can forget the check. The tokens are *signed double-submit*
//!   tokens (OWASP's recommendation when the server keeps no session state): a random value
//!   in an HttpOnly cookie, and in each form the HMAC of that value under a key only the
//!   server has. Another site can make a browser post a form here, but cannot read the cookie
//!   or the page, so cannot produce the field; even a cookie planted from a sibling subdomain
//!   does not help without the key.
//! - [`Keys::sign_session`] and [`Keys::verify_session`] make and check the login cookie: the
//!   user id and credential epoch, signed, so the app needs no session store and a password
//!   change (which bumps the epoch) ends every older session.
//! - The reset token's cookie (see [`RESET_COOKIE`]) keeps the token out of the address bar.
//! - [`ClientIp`] is the address the daemon rate-limits by.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue, InvalidHeaderValue};
use axum::http::request::Parts;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use latchkey_client::UserId;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{pages, AppState};

/// The `Content-Security-Policy` of every response: only this origin's resources (the pages
/// use no scripts at all), never framed, forms posted only here, no `<base>` tricks.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// The largest POST body read, in bytes. The forms hold an email, two passwords of at most
/// the daemon's 1024-byte cap and a CSRF token: 16 KiB is ample and bounds what a client can
/// make the app buffer.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// The cookie holding the random CSRF value. Lives until the browser closes; `SameSite=Strict`
/// because only this site's own pages need to send it.
pub const CSRF_COOKIE: &str = "lk_csrf";

/// The form field holding the signed CSRF value.
pub const CSRF_FIELD: &str = "csrf";

/// The login cookie: `<user id>.<epoch>.<expiry>.<signature>`.
pub const SESSION_COOKIE: &str = "lk_session";

/// How long a login lasts, in seconds (12 hours).
pub const SESSION_LIFETIME_SECS: u64 = 12 * 60 * 60;

/// The cookie holding a checked reset token between the link's redirect and the form's POST.
/// Path `/reset` only, HttpOnly, and no longer than the token lives (at most
/// [`RESET_COOKIE_MAX_AGE_SECS`]); removed once the token is used or found dead.
///
/// `SameSite=Lax`, not `Strict`: the link is usually clicked in a webmail page on another
/// site, and browsers treat the redirect that follows such a click as cross-site, so they
/// would withhold a `Strict` cookie from it and the visitor would be told no reset is in
/// progress. `Lax` cookies go with top-level GET navigations only, never with another site's
/// POST, and the POST also needs the CSRF token.
pub const RESET_COOKIE: &str = "lk_reset";

/// The longest the reset cookie is kept, in seconds: the daemon's longest token lifetime
/// (24 hours). Normally the token's own expiry comes first.
pub const RESET_COOKIE_MAX_AGE_SECS: u64 = 24 * 60 * 60;

/// The longest reset token accepted from a link; the daemon's are about 70 characters.
const MAX_TOKEN_CHARS: usize = 256;

/// Adds the security headers to every response.
pub async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    // For browsers that predate frame-ancestors.
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    // Pages hold CSRF tokens, account details or a reset form: keep them out of every cache
    // and the back-forward cache. Only the stylesheet says otherwise.
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Refuses with 403 any request other than GET or HEAD whose form lacks a CSRF field that
/// matches the CSRF cookie; passes the others on with their body intact.
pub async fn csrf_guard(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return pages::form_too_large().into_response();
    };
    let field = form_urlencoded::parse(&bytes)
        .find(|(name, _)| name == CSRF_FIELD)
        .map(|(_, value)| value.into_owned());
    let cookie = cookie(&parts.headers, CSRF_COOKIE);
    if !app.keys.csrf_matches(cookie, field.as_deref()) {
        return pages::csrf_refused().into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The keys that sign CSRF values and login cookies.
pub struct Keys {
    /// Signs CSRF values. 64 bytes: HMAC-SHA256's block size, the longest key it uses as
    /// it is.
    csrf: [u8; 64],
    /// Signs login cookies.
    session: [u8; 64],
}

/// What a valid login cookie says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    /// Who logged in.
    pub user_id: UserId,
    /// Their credential epoch at the time; a later password change makes it stale.
    pub epoch: u64,
}

/// A CSRF value for a form, and the cookie to set if the browser had none.
pub struct CsrfToken {
    /// The value of the form's hidden field.
    pub field: String,
    /// A `Set-Cookie` header for a new CSRF cookie, when the request brought none.
    pub set_cookie: Option<HeaderValue>,
}

impl Keys {
    /// Two fresh random keys from the operating system.
    pub fn generate() -> Result<Keys, getrandom::Error> {
        let mut keys = Keys {
            csrf: [0; 64],
            session: [0; 64],
        };
        getrandom::fill(&mut keys.csrf)?;
        getrandom::fill(&mut keys.session)?;
        Ok(keys)
    }

    /// The form field for the CSRF cookie in `headers`, making a new cookie if there is none.
    pub fn csrf_token(&self, headers: &HeaderMap, secure: bool) -> Result<CsrfToken, Failure> {
        if let Some(value) = cookie(headers, CSRF_COOKIE).filter(|v| is_cookie_safe(v)) {
            return Ok(CsrfToken {
                field: self.csrf_field(value),
                set_cookie: None,
            });
        }
        let mut nonce = [0u8; 32];
        getrandom::fill(&mut nonce)?;
        let value = URL_SAFE_NO_PAD.encode(nonce);
        let set_cookie = CookieSpec::new(CSRF_COOKIE, "/", "Strict", secure).set(&value, None)?;
        Ok(CsrfToken {
            field: self.csrf_field(&value),
            set_cookie: Some(set_cookie),
        })
    }

    /// The signed field value for a CSRF cookie value.
    fn csrf_field(&self, cookie: &str) -> String {
        URL_SAFE_NO_PAD.encode(mac(&self.csrf, cookie.as_bytes()))
    }

    /// Whether `field` is the signed form of `cookie`, compared in constant time.
    fn csrf_matches(&self, cookie: Option<&str>, field: Option<&str>) -> bool {
        let (Some(cookie), Some(field)) = (cookie, field) else {
            return false;
        };
        let Ok(given) = URL_SAFE_NO_PAD.decode(field) else {
            return false;
        };
        let expected = mac(&self.csrf, cookie.as_bytes());
        expected.as_slice().ct_eq(&given).into()
    }

    /// The login cookie's value for `session`, valid until `now` plus
    /// [`SESSION_LIFETIME_SECS`].
    pub fn sign_session(&self, session: Session, now: u64) -> String {
        let claims = format!(
            "{}.{}.{}",
            session.user_id,
            session.epoch,
            now + SESSION_LIFETIME_SECS
        );
        let signature = URL_SAFE_NO_PAD.encode(mac(&self.session, claims.as_bytes()));
        format!("{claims}.{signature}")
    }

    /// What a login cookie says, if it is ours, intact and not expired at `now`.
    pub fn verify_session(&self, value: &str, now: u64) -> Option<Session> {
        let (claims, signature) = value.rsplit_once('.')?;
        let given = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let expected = mac(&self.session, claims.as_bytes());
        if !bool::from(expected.as_slice().ct_eq(&given)) {
            return None;
        }
        let mut fields = claims.split('.').map(str::parse::<u64>);
        let (Some(Ok(user_id)), Some(Ok(epoch)), Some(Ok(expires)), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return None;
        };
        (now < expires).then_some(Session { user_id, epoch })
    }
}

/// HMAC-SHA256 of `data` under `key`.
fn mac(key: &[u8; 64], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new(key.into());
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
}

/// Whether `value` can go into a cookie and a header as it is: the URL-safe base64 alphabet,
/// digits and dots, which is everything the app and the daemon make.
fn is_cookie_safe(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `token` could be a reset token at all. Anything else is shown as an invalid link
/// without asking the daemon, and can never reach a `Set-Cookie` header.
pub fn plausible_token(token: &str) -> bool {
    token.len() <= MAX_TOKEN_CHARS && is_cookie_safe(token)
}

/// A cookie's name and attributes; every cookie of the app is HttpOnly.
pub struct CookieSpec {
    /// The cookie's name.
    name: &'static str,
    /// The path it is sent for.
    path: &'static str,
    /// `Strict` or `Lax`.
    same_site: &'static str,
    /// Whether it is marked `Secure`.
    secure: bool,
}

impl CookieSpec {
    /// A cookie called `name` for `path`.
    pub fn new(
        name: &'static str,
        path: &'static str,
        same_site: &'static str,
        secure: bool,
    ) -> CookieSpec {
        CookieSpec {
            name,
            path,
            same_site,
            secure,
        }
    }

    /// A `Set-Cookie` header giving it `value`, for `max_age` seconds (or until the browser
    /// closes). Fails for a value a header cannot carry.
    pub fn set(&self, value: &str, max_age: Option<u64>) -> Result<HeaderValue, Failure> {
        if !is_cookie_safe(value) {
            return Err(Failure::BadCookieValue);
        }
        let mut text = format!(
            "{}={value}; Path={}; HttpOnly; SameSite={}",
            self.name, self.path, self.same_site
        );
        if let Some(secs) = max_age {
            text.push_str(&format!("; Max-Age={secs}"));
        }
        if self.secure {
            text.push_str("; Secure");
        }
        Ok(HeaderValue::from_str(&text)?)
    }

    /// A `Set-Cookie` header that removes it.
    pub fn clear(&self) -> Result<HeaderValue, Failure> {
        let secure = if self.secure { "; Secure" } else { "" };
        let text = format!(
            "{}=; Path={}; HttpOnly; SameSite={}; Max-Age=0{secure}",
            self.name, self.path, self.same_site
        );
        Ok(HeaderValue::from_str(&text)?)
    }
}

/// The client's IP address as the daemon should see it: the peer address, or with
/// [`crate::Settings::trust_forwarded_for`] the right-most `X-Forwarded-For` entry (the one
/// the app's own proxy appended; entries to its left come from the client and prove nothing).
/// `None` when neither is known, as in tests that call the router directly.
pub struct ClientIp(pub Option<String>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Infallible> {
        if app.settings.trust_forwarded_for {
            if let Some(ip) = forwarded_for(&parts.headers) {
                return Ok(ClientIp(Some(ip.to_string())));
            }
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());
        Ok(ClientIp(peer))
    }
}

/// The right-most address of the last `X-Forwarded-For` header, if it parses.
fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let last = headers.get_all("x-forwarded-for").iter().next_back()?;
    last.to_str().ok()?.rsplit(',').next()?.trim().parse().ok()
}

/// What a handler can fail with besides the daemon's typed errors.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The daemon could not be reached, did not answer, or answered with an error the page
    /// has nothing to say about (such as `Unavailable`).
    #[error("the call to latchkeyd failed")]
    Daemon(#[from] latchkey_client::Error),
    /// The operating system could not supply random bytes.
    #[error("no random bytes")]
    Random(#[from] getrandom::Error),
    /// A cookie value had characters a cookie cannot carry.
    #[error("a cookie value a header cannot carry")]
    BadCookieValue,
    /// A header value could not be built.
    #[error("a header value could not be built")]
    Header(#[from] InvalidHeaderValue),
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        tracing::warn!(error = %self, source = ?std::error::Error::source(&self), "request failed");
        pages::unavailable().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys {
            csrf: [1; 64],
            session: [2; 64],
        }
    }

    #[test]
    fn a_csrf_field_matches_only_its_own_cookie() {
        let keys = keys();
        let field = keys.csrf_field("abc");
        assert!(keys.csrf_matches(Some("abc"), Some(&field)));
        assert!(!keys.csrf_matches(Some("abd"), Some(&field)));
        assert!(!keys.csrf_matches(Some("abc"), Some("abc")));
        assert!(!keys.csrf_matches(None, Some(&field)));
        assert!(!keys.csrf_matches(Some("abc"), None));
        let other = Keys {
            csrf: [3; 64],
            session: [2; 64],
        };
        assert!(!other.csrf_matches(Some("abc"), Some(&field)));
    }

    #[test]
    fn a_session_cookie_holds_until_it_expires_and_cannot_be_edited() {
        let keys = keys();
        let session = Session {
            user_id: 7,
            epoch: 3,
        };
        let value = keys.sign_session(session, 1000);
        assert_eq!(keys.verify_session(&value, 1000), Some(session));
        assert_eq!(
            keys.verify_session(&value, 1000 + SESSION_LIFETIME_SECS),
            None
        );
        let edited = value.replacen("7.3.", "8.3.", 1);
        assert_eq!(keys.verify_session(&edited, 1000), None);
        assert_eq!(keys.verify_session("7.3.99999999999", 1000), None);
        assert_eq!(keys.verify_session("", 1000), None);
    }

    #[test]
    fn cookies_are_found_by_exact_name_across_headers() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; lk_csrfx=2"));
        headers.append(header::COOKIE, HeaderValue::from_static("lk_csrf=3"));
        assert_eq!(cookie(&headers, "lk_csrf"), Some("3"));
        assert_eq!(cookie(&headers, "a"), Some("1"));
        assert_eq!(cookie(&headers, "b"), None);
    }

    #[test]
    fn only_the_right_most_forwarded_address_counts() {
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.1, 203.0.113.7"),
        );
        assert_eq!(forwarded_for(&headers), "203.0.113.7".parse().ok());
        headers.append("x-forwarded-for", HeaderValue::from_static("not an ip"));
        assert_eq!(forwarded_for(&headers), None);
    }

    #[test]
    fn tokens_that_could_inject_cookie_attributes_are_implausible() {
        assert!(plausible_token("AbC-_9.xYz"));
        assert!(!plausible_token(""));
        assert!(!plausible_token("a; Domain=evil.example"));
        assert!(!plausible_token(&"a".repeat(MAX_TOKEN_CHARS + 1)));
    }
}
