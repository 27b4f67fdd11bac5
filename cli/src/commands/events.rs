//! `latchkey events tail`: the event log, oldest first, one event per line; with `--follow`,
//! polled for new events until interrupted.

use anyhow::Context as _;
use latchkey_client::{Client, Event};

use crate::cli::{EventsCommand, TailArgs};
use crate::output::{print_item, EventLine, Outcome};
use crate::page::page_through;

/// Runs `latchkey events ...`. The events are printed as they arrive, so the outcome is
/// [`Outcome::Printed`].
pub(crate) async fn run(
    command: &EventsCommand,
    client: &Client,
    json: bool,
) -> anyhow::Result<Outcome> {
    let EventsCommand::Tail(args) = command;
    if args.follow {
        // Ctrl-C ends the tail normally; it is how a follow is meant to stop.
        tokio::select! {
            tailed = tail_events(client, args, json) => tailed?,
            signal = tokio::signal::ctrl_c() => signal.context("cannot watch for Ctrl-C")?,
        }
    } else {
        tail_events(client, args, json).await?;
    }
    Ok(Outcome::Printed)
}

/// Prints the events after `args.after`; with `--follow`, then polls for more forever.
async fn tail_events(client: &Client, args: &TailArgs, json: bool) -> anyhow::Result<()> {
    let print = |event: &Event| print_item(json, event, EventLine(event));
    let mut after = args.after;
    loop {
        after = page_through(after, None, |a, n| client.events(a, n), print)
            .await
            .context("cannot read the event log")?;
        if !args.follow {
            return Ok(());
        }
        tokio::time::sleep(args.interval).await;
    }
}
