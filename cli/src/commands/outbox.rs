//! `latchkey outbox ...`: list the queue of outgoing mail (never the bodies, which may hold a
//! reset link), queue a message again, drop one.

use anyhow::Context as _;
use latchkey_client::{ApiError, Client, MessageState, OutboxMessage};

use crate::cli::OutboxCommand;
use crate::input::confirm;
use crate::output::{print_item, MessageLine, Outcome};
use crate::page::page_through;

/// Runs `latchkey outbox ...`.
pub(crate) async fn run(
    command: &OutboxCommand,
    client: &Client,
    json: bool,
) -> anyhow::Result<Outcome> {
    match command {
        OutboxCommand::List { dead } => {
            let print = |m: &OutboxMessage| match (*dead, m.state) {
                (true, MessageState::Queued) => Ok(()),
                _ => print_item(json, m, MessageLine(m)),
            };
            page_through(0, None, |a, n| client.outbox_list(a, n), print)
                .await
                .context("cannot list the outbox")?;
            Ok(Outcome::Printed)
        }
        OutboxCommand::Retry { id } => {
            client
                .outbox_retry(*id)
                .await
                .with_context(|| format!("cannot retry message {id}"))?;
            Ok(Outcome::Retried { retried: *id })
        }
        OutboxCommand::Drop { id, yes } => {
            let context = || format!("cannot drop message {id}");
            if !yes {
                confirm(&format!("drop message {id}"), async {
                    let message = outbox_message(client, *id).await.with_context(context)?;
                    Ok(format!("Drop {} unsent?", MessageLine(&message)))
                })
                .await?;
            }
            client.outbox_drop(*id).await.with_context(context)?;
            Ok(Outcome::Dropped { dropped: *id })
        }
    }
}

/// One outbox message by id; `NotFound` if there is none.
async fn outbox_message(client: &Client, id: u64) -> anyhow::Result<OutboxMessage> {
    let page = client.outbox_list(id.saturating_sub(1), 1).await?;
    match page.into_iter().next() {
        Some(message) if message.id == id => Ok(message),
        _ => Err(latchkey_client::Error::Api(ApiError::NotFound).into()),
    }
}
