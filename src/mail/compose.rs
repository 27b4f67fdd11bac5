//! Turns a queued [`MailJob`] into a complete message: rendered text and HTML parts in one
//! `multipart/alternative`, and the headers a receiving server expects (`Date`, `Message-ID`,
//! `From`, `To`, `Subject`, `MIME-Version`, plus `Auto-Submitted` so auto-responders stay
//! quiet and `Content-Language` naming the template's locale).

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::{Address, Message};

use super::config::{parse_mailbox, MailConfig};
use super::template::Vars;
use super::templates::{utc, Templates};
use super::{MailJob, MailKind, SetupError};

/// Everything needed to build a message, fixed at start-up.
#[derive(Debug)]
pub(crate) struct Composer {
    /// `mail.from`.
    from: Mailbox,
    /// `mail.reply_to`.
    reply_to: Option<Mailbox>,
    /// `mail.product_name`.
    product: String,
    /// The templates.
    templates: Templates,
}

/// Why a job cannot become a message. Every case is permanent: trying again gives the same
/// answer, so the message goes dead at once.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ComposeError {
    /// The recipient is not an address lettre accepts.
    #[error("the recipient address is not valid: {0}")]
    Recipient(String),
    /// A job of a kind with a link, without its link (a bug in whatever queued it).
    #[error("a mail that needs a link has none")]
    NoLink,
    /// The link expired while the mail waited; sending it would only confuse.
    #[error("the link expired before the mail could be sent")]
    Expired,
    /// lettre refused the message.
    #[error("cannot build the message: {0}")]
    Build(String),
}

impl Composer {
    /// Parses the sender addresses and loads the templates.
    pub(crate) fn new(config: &MailConfig) -> Result<Composer, SetupError> {
        let mailbox = |key, text: &str| {
            parse_mailbox(text).map_err(|reason| SetupError::Config { key, reason })
        };
        Ok(Composer {
            from: mailbox("mail.from", &config.from)?,
            reply_to: match &config.reply_to {
                Some(r) => Some(mailbox("mail.reply_to", r)?),
                None => None,
            },
            product: config.product_name.clone(),
            templates: Templates::load(config)?,
        })
    }

    /// The message for outbox entry `id` (queued at `created_at`), sent at `now` (Unix
    /// seconds).
    ///
    /// The `Message-ID` depends only on the entry, so every attempt at one message carries
    /// the same id and a receiver can tell a repeat delivery from a second message.
    pub(crate) fn compose(
        &self,
        job: &MailJob,
        id: u64,
        created_at: u64,
        now: u64,
    ) -> Result<Message, ComposeError> {
        let address: Address = job
            .to
            .parse()
            .map_err(|e| ComposeError::Recipient(format!("{e}")))?;
        let mut vars = Vars::default();
        vars.set("product", self.product.clone());
        vars.set("email", job.to.clone());
        vars.set("client_ip", job.client_ip.clone().unwrap_or_default());
        vars.set("at", utc(job.at));
        if job.kind == MailKind::SignUpExisting {
            vars.set("link", job.link.as_deref().ok_or(ComposeError::NoLink)?);
        }
        if job.kind.has_expiring_link() {
            let link = job.link.as_deref().ok_or(ComposeError::NoLink)?;
            let expires_at = job.expires_at.unwrap_or(0);
            if expires_at <= now {
                return Err(ComposeError::Expired);
            }
            vars.set("link", link);
            vars.set("expires_at", utc(expires_at));
            // Rounded rather than truncated, so a mail sent the moment a 30-minute link is
            // issued says 30, not 29.
            vars.set(
                "expires_in_minutes",
                ((expires_at - now + 30) / 60).max(1).to_string(),
            );
        }
        let rendered = self
            .templates
            .render(job.kind, job.locale.as_deref(), &vars);
        let to = Mailbox::new(None, address);
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject)
            .message_id(Some(format!(
                "<latchkey.{created_at}.{id}@{}>",
                self.from.email.domain()
            )))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".into(),
            ))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Content-Language"),
                rendered.locale,
            ));
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                rendered.text,
                rendered.html,
            ))
            .map_err(|e| ComposeError::Build(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(kind: MailKind) -> MailJob {
        MailJob {
            kind,
            to: "ada@example.com".into(),
            locale: None,
            link: Some("https://app.example/reset?token=abc".into()),
            expires_at: Some(1_000_000 + 1800),
            client_ip: Some("192.0.2.1".into()),
            at: 1_000_000,
        }
    }

    #[test]
    fn a_reset_mail_has_every_header_and_both_parts() {
        let composer = Composer::new(&MailConfig::default()).unwrap();
        let message = composer
            .compose(&job(MailKind::PasswordReset), 7, 1_000_000, 1_000_000)
            .unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        for header in [
            "From: Latchkey <no-reply@localhost>\r\n",
            "To: ada@example.com\r\n",
            "Subject: Reset your Latchkey password\r\n",
            "Message-ID: <latchkey.1000000.7@localhost>\r\n",
            "Auto-Submitted: auto-generated\r\n",
            "Content-Language: en\r\n",
            "MIME-Version: 1.0\r\n",
            "Content-Type: multipart/alternative;",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Type: text/html; charset=utf-8",
            "\r\nDate: ",
        ] {
            assert!(text.contains(header), "missing {header:?} in\n{text}");
        }
        assert_eq!(
            message.envelope().to(),
            ["ada@example.com".parse().unwrap()]
        );
    }

    #[test]
    fn an_expired_link_is_not_sent_and_a_bad_recipient_is_refused() {
        let composer = Composer::new(&MailConfig::default()).unwrap();
        let reset = job(MailKind::PasswordReset);
        let late = composer.compose(&reset, 1, 0, 1_000_000 + 1800);
        assert!(matches!(late, Err(ComposeError::Expired)));
        let bad = MailJob {
            to: "not an address".into(),
            ..job(MailKind::PasswordChanged)
        };
        assert!(matches!(
            composer.compose(&bad, 1, 0, 0),
            Err(ComposeError::Recipient(_))
        ));
    }
}
