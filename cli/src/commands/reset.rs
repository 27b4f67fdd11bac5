//! `latchkey reset ...`: request a reset as an application would, make a link for support
//! staff, check a token without using it.

use anyhow::Context as _;
use latchkey_client::Client;

use super::user::user_ref;
use crate::cli::ResetCommand;
use crate::input::read_token;
use crate::output::Outcome;

/// Runs `latchkey reset ...`.
pub(crate) async fn run(command: &ResetCommand, client: &Client) -> anyhow::Result<Outcome> {
    match command {
        ResetCommand::Request { email, ip, locale } => {
            client
                .request_password_reset(email, ip.as_deref(), locale.as_deref())
                .await
                .with_context(|| format!("cannot request a reset for {email}"))?;
            Ok(Outcome::ResetRequested {
                reset_requested: email.clone(),
            })
        }
        ResetCommand::Link { user, lifetime } => {
            let link = client
                .admin_reset_link(user_ref(user), *lifetime)
                .await
                .with_context(|| format!("cannot make a reset link for {user}"))?;
            Ok(Outcome::ResetLink(link))
        }
        ResetCommand::Check(args) => {
            let token = read_token(args)?;
            let check = client
                .check_reset_token(&token, None)
                .await
                .context("cannot check the token")?;
            Ok(Outcome::TokenCheck(check))
        }
    }
}
