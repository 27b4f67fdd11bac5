//! The pages and forms:
//!
//! | route | what |
//! |---|---|
//! | `GET /forgot`, `POST /forgot` | ask for a link; the same answer for every valid address |
//! | `GET /forgot/sent` | that answer (after a redirect, so reloading does not post again) |
//! | `GET /reset?token=T` | checks the token; if usable, puts it in a cookie and redirects to `/reset`, so the token leaves the address bar and the history entry; otherwise says why not |
//! | `GET /reset`, `POST /reset` | the new-password form, and setting it |
//! | `GET /reset/done` | success |
//! | `GET /login`, `POST /login` | log in; a signed cookie holds the user id and credential epoch |
//! | `GET /account`, `POST /logout` | who is logged in; log out |

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::http::header::{self, HeaderMap};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use latchkey_client::{ApiError, Error, TokenState, UserStatus};
use serde::Deserialize;

use crate::pages;
use crate::security::{
    self, ClientIp, CookieSpec, Failure, Session, RESET_COOKIE, RESET_COOKIE_MAX_AGE_SECS,
    SESSION_COOKIE, SESSION_LIFETIME_SECS,
};
use crate::AppState;

/// What handlers return: a response, or a failure shown as "service unavailable".
type Result<T = Response, E = Failure> = std::result::Result<T, E>;

/// Every route, behind the CSRF check and the security headers.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(|| async { pages::home() }))
        .route("/style.css", get(stylesheet))
        .route("/forgot", get(forgot_form).post(forgot_submit))
        .route("/forgot/sent", get(|| async { pages::forgot_sent() }))
        .route("/reset", get(reset_page).post(reset_submit))
        .route("/reset/done", get(|| async { pages::reset_done() }))
        .route("/login", get(login_form).post(login_submit))
        .route("/account", get(account))
        .route("/logout", post(logout))
        .fallback(|| async { pages::not_found() })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            security::csrf_guard,
        ))
        // Outermost, so that the CSRF refusals and axum's own error responses get the
        // headers too.
        .layer(middleware::from_fn(security::headers))
        .with_state(state)
}

/// The stylesheet; the one response that may be cached.
async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        pages::STYLESHEET,
    )
}

/// The "forgot password" form's fields. Every field defaults to empty, so a form missing one
/// gets the page's own error message rather than a bare 422; the CSRF field was checked
/// before the handler ran.
#[derive(Deserialize)]
struct ForgotForm {
    /// The address typed.
    #[serde(default)]
    email: String,
}

/// `GET /forgot`.
async fn forgot_form(State(app): State<AppState>, headers: HeaderMap) -> Result {
    let csrf = app.csrf(&headers)?;
    Ok(pages::forgot_form(&csrf.field, "", None)
        .cookie(csrf.set_cookie)
        .into_response())
}

/// `POST /forgot`: asks the daemon to mail a link. Known, unknown and disabled addresses all
/// end at the same page; only a malformed address or a rate limit is said.
async fn forgot_submit(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<ForgotForm>,
) -> Result {
    let email = form.email.trim();
    let asked = app
        .daemon
        .call(|client| async move {
            client
                .request_password_reset(email, ip.as_deref(), None)
                .await
        })
        .await;
    let error = match asked {
        Ok(()) => return Ok(see_other("/forgot/sent")),
        Err(e) => match e.api() {
            Some(ApiError::RateLimited { retry_after_secs }) => {
                return Ok(pages::rate_limited(*retry_after_secs).into_response())
            }
            Some(ApiError::InvalidEmail | ApiError::InvalidInput { .. }) => {
                "That does not look like an email address."
            }
            _ => return Err(e.into()),
        },
    };
    let csrf = app.csrf(&headers)?;
    Ok(pages::forgot_form(&csrf.field, email, Some(error))
        .status(StatusCode::UNPROCESSABLE_ENTITY)
        .into_response())
}

/// `GET /reset?token=T` and `GET /reset`.
///
/// With a token: checks it (checking does not use it up, so mail scanners that open links do
/// no harm). A usable token goes into the reset cookie and the browser is sent on to
/// `/reset`: the address bar and the history entry then show no token, and the form page's
/// own requests cannot carry it in a `Referer`. The token is never put in a page.
///
/// Without one: shows the form if the cookie holds a token that is still usable.
async fn reset_page(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result {
    let reset_cookie = app.reset_cookie();
    let from_link = query.as_deref().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(name, _)| name == "token")
            .map(|(_, value)| value.into_owned())
    });
    if let Some(token) = from_link {
        let state = app.check_token(&token, ip.as_deref()).await?;
        let expires_at = match state {
            Checked::State(TokenState::Valid, expires_at) => expires_at,
            Checked::State(state, _) => {
                return Ok(pages::link_unusable(state)
                    .cookie(Some(reset_cookie.clear()?))
                    .into_response())
            }
            Checked::RateLimited(secs) => return Ok(pages::rate_limited(secs).into_response()),
        };
        let max_age = expires_at
            .map_or(RESET_COOKIE_MAX_AGE_SECS, |at| at.saturating_sub(now()))
            .min(RESET_COOKIE_MAX_AGE_SECS);
        let mut response = see_other("/reset");
        response
            .headers_mut()
            .append(header::SET_COOKIE, reset_cookie.set(&token, Some(max_age))?);
        return Ok(response);
    }
    let Some(token) = security::cookie(&headers, RESET_COOKIE) else {
        return Ok(pages::no_reset_in_progress().into_response());
    };
    // The token may have died since the redirect (used in another tab, expired, replaced).
    match app.check_token(token, ip.as_deref()).await? {
        Checked::State(TokenState::Valid, _) => {
            let csrf = app.csrf(&headers)?;
            Ok(pages::reset_form(&csrf.field, None)
                .cookie(csrf.set_cookie)
                .into_response())
        }
        Checked::State(state, _) => Ok(pages::link_unusable(state)
            .cookie(Some(reset_cookie.clear()?))
            .into_response()),
        Checked::RateLimited(secs) => Ok(pages::rate_limited(secs).into_response()),
    }
}

/// The new-password form's fields.
#[derive(Deserialize)]
struct ResetForm {
    /// The new password.
    #[serde(default)]
    password: String,
    /// The same again.
    #[serde(default)]
    confirm: String,
}

/// `POST /reset`: sets the new password with the token from the cookie.
async fn reset_submit(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<ResetForm>,
) -> Result {
    let Some(token) = security::cookie(&headers, RESET_COOKIE) else {
        return Ok(pages::no_reset_in_progress().into_response());
    };
    let reset_cookie = app.reset_cookie();
    let ip = ip.as_deref();
    let (password, confirm) = (&form.password, &form.confirm);
    let done = app
        .daemon
        .call(|client| async move {
            client
                .complete_password_reset(token, password, Some(confirm), ip)
                .await
        })
        .await;
    let error = match done {
        Ok(_) => {
            let mut response = see_other("/reset/done");
            response
                .headers_mut()
                .append(header::SET_COOKIE, reset_cookie.clear()?);
            return Ok(response);
        }
        Err(e) => match e.api() {
            Some(ApiError::PasswordMismatch) => {
                "The two passwords are not the same. Type the new password twice.".to_owned()
            }
            Some(ApiError::WeakPassword { reason }) => {
                format!("That password cannot be used: {reason}. Choose another.")
            }
            Some(ApiError::RateLimited { retry_after_secs }) => {
                return Ok(pages::rate_limited(*retry_after_secs).into_response())
            }
            // Used or expired since the form was shown: say which.
            Some(ApiError::InvalidToken) => {
                let state = match app.check_token(token, ip).await? {
                    Checked::State(state, _) => state,
                    Checked::RateLimited(_) => TokenState::Invalid,
                };
                return Ok(pages::link_unusable(state)
                    .cookie(Some(reset_cookie.clear()?))
                    .into_response());
            }
            _ => return Err(e.into()),
        },
    };
    let csrf = app.csrf(&headers)?;
    Ok(pages::reset_form(&csrf.field, Some(&error))
        .status(StatusCode::UNPROCESSABLE_ENTITY)
        .into_response())
}

/// The login form's fields.
#[derive(Deserialize)]
struct LoginForm {
    /// The address typed.
    #[serde(default)]
    email: String,
    /// The password typed.
    #[serde(default)]
    password: String,
}

/// `GET /login`, with a notice when an old session was ended by a password change.
async fn login_form(
    State(app): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result {
    let notice = (query.as_deref() == Some("signed-out=password-changed"))
        .then_some("Your password was changed, so you were logged out. Log in with the new one.");
    let csrf = app.csrf(&headers)?;
    Ok(pages::login_form(&csrf.field, "", None, notice)
        .cookie(csrf.set_cookie)
        .into_response())
}

/// `POST /login`: checks the password with the daemon and sets the login cookie.
async fn login_submit(
    State(app): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result {
    let email = form.email.trim();
    let password = &form.password;
    let checked = app
        .daemon
        .call(|client| async move { client.verify_password(email, password, ip.as_deref()).await })
        .await;
    match checked {
        Ok(user) => {
            let session = Session {
                user_id: user.id,
                epoch: user.credential_epoch,
            };
            let value = app.keys.sign_session(session, now());
            let cookie = app
                .session_cookie()
                .set(&value, Some(SESSION_LIFETIME_SECS))?;
            let mut response = see_other("/account");
            response.headers_mut().append(header::SET_COOKIE, cookie);
            Ok(response)
        }
        Err(e) => match e.api() {
            Some(ApiError::RateLimited { retry_after_secs }) => {
                Ok(pages::rate_limited(*retry_after_secs).into_response())
            }
            // A malformed address or an oversized password cannot be right either; saying so
            // separately would add nothing an attacker needs and confuse everyone else.
            Some(
                ApiError::InvalidCredentials
                | ApiError::InvalidEmail
                | ApiError::InvalidInput { .. },
            ) => {
                let csrf = app.csrf(&headers)?;
                Ok(
                    pages::login_form(&csrf.field, email, Some("Wrong email or password."), None)
                        .status(StatusCode::UNPROCESSABLE_ENTITY)
                        .into_response(),
                )
            }
            _ => Err(e.into()),
        },
    }
}

/// `GET /account`: who is logged in. The login cookie is honoured only while the account is
/// active and its credential epoch is the one the cookie was issued under, so a password
/// change or reset ends every session opened before it.
async fn account(State(app): State<AppState>, headers: HeaderMap) -> Result {
    let session = security::cookie(&headers, SESSION_COOKIE)
        .and_then(|value| app.keys.verify_session(value, now()));
    let Some(session) = session else {
        return Ok(see_other("/login"));
    };
    let user = app
        .daemon
        .call(|client| async move { client.get_user(session.user_id).await })
        .await;
    let signed_out = |to: &str| -> Result {
        let mut response = see_other(to);
        response
            .headers_mut()
            .append(header::SET_COOKIE, app.session_cookie().clear()?);
        Ok(response)
    };
    match user {
        Ok(user) if user.status != UserStatus::Active => signed_out("/login"),
        Ok(user) if user.credential_epoch != session.epoch => {
            signed_out("/login?signed-out=password-changed")
        }
        Ok(user) => {
            let csrf = app.csrf(&headers)?;
            Ok(pages::account(&user, &csrf.field)
                .cookie(csrf.set_cookie)
                .into_response())
        }
        Err(e) if e.api() == Some(&ApiError::NotFound) => signed_out("/login"),
        Err(e) => Err(e.into()),
    }
}

/// `POST /logout`.
async fn logout(State(app): State<AppState>) -> Result {
    let mut response = see_other("/login");
    response
        .headers_mut()
        .append(header::SET_COOKIE, app.session_cookie().clear()?);
    Ok(response)
}

/// What a token check came to.
enum Checked {
    /// The daemon's verdict, and for a valid token its expiry.
    State(TokenState, Option<u64>),
    /// Too many checks from this IP; retry after this many seconds.
    RateLimited(u64),
}

impl AppState {
    /// A CSRF field for a form, and a cookie if the browser has none yet.
    fn csrf(&self, headers: &HeaderMap) -> Result<security::CsrfToken> {
        self.keys.csrf_token(headers, self.settings.secure_cookies)
    }

    /// The reset token's cookie.
    fn reset_cookie(&self) -> CookieSpec {
        CookieSpec::new(RESET_COOKIE, "/reset", "Lax", self.settings.secure_cookies)
    }

    /// The login cookie. `Lax` so that following a link to the app from elsewhere finds the
    /// visitor logged in; state-changing requests are POSTs, which need the CSRF token.
    fn session_cookie(&self) -> CookieSpec {
        CookieSpec::new(SESSION_COOKIE, "/", "Lax", self.settings.secure_cookies)
    }

    /// Asks the daemon what `token` amounts to; implausible tokens are invalid without asking.
    async fn check_token(&self, token: &str, ip: Option<&str>) -> Result<Checked> {
        if !security::plausible_token(token) {
            return Ok(Checked::State(TokenState::Invalid, None));
        }
        let checked = self
            .daemon
            .call(|client| async move { client.check_reset_token(token, ip).await })
            .await;
        match checked {
            Ok(check) => Ok(Checked::State(check.state, check.expires_at)),
            Err(Error::Api(ApiError::RateLimited { retry_after_secs })) => {
                Ok(Checked::RateLimited(retry_after_secs))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A 303 to `to`: after a POST the browser follows it with a GET, so reloading the result does
/// not send the form again.
fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// Seconds since the Unix epoch.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
