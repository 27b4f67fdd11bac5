//! The daemon's memory while 200 connections keep 64 logins each in flight with 60 KB
//! passwords, and after (issue 19, item 10: about 0.9 GiB stayed pinned, and resident after
//! the calls had ended). Each such login is checked against the dummy hash, so nearly all of
//! them wait in the hashing queue until their deadline: what a waiting call holds is what
//! the peak shows.

use std::time::{Duration, Instant};

use futures::StreamExt;

use super::Env;
use crate::report::Row;
use crate::setup::{ok, CLIENT_IP, GENEROUS_LIMITS, LONG_TOKENS};

/// Connections of the burst.
const CONNECTIONS: usize = 200;
/// Logins in flight on each.
const PER_CONNECTION: usize = 64;
/// Bytes of each password: as much as fits in a frame with the rest of the call.
const PASSWORD_BYTES: usize = 60_000;

/// Sends the burst, then reads the daemon's RSS once the calls have ended and once more after
/// the next limiter cleanup, when freed memory is given back.
pub(crate) async fn run(env: &Env) -> anyhow::Result<Vec<Row>> {
    let limits = format!("{GENEROUS_LIMITS}\ncleanup_interval_secs = 5");
    let daemon = env.daemon("big-calls", LONG_TOKENS, &limits).await?;
    let conns = daemon.clients(CONNECTIONS).await?;
    ok("health", conns[0].health().await)?;
    let (before, _) = daemon.rss_mib()?;
    env.progress(&format!(
        "{CONNECTIONS} connections x {PER_CONNECTION} logins with {PASSWORD_BYTES}-byte passwords"
    ));
    let password = "p".repeat(PASSWORD_BYTES);
    let began = Instant::now();
    let answered = futures::stream::iter(0..CONNECTIONS * PER_CONNECTION)
        .map(|i| {
            let (client, password) = (conns[i % CONNECTIONS].clone(), password.clone());
            async move {
                client
                    .verify_password("nobody@bench.example", &password, Some(CLIENT_IP))
                    .await
                    .is_ok()
            }
        })
        .buffer_unordered(CONNECTIONS * PER_CONNECTION)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    let took = began.elapsed();
    let (ended, peak) = daemon.rss_mib()?;
    env.progress(&format!(
        "done in {:.1} s ({answered} answered); RSS {ended:.1} MiB, peak {peak:.1} MiB",
        took.as_secs_f64()
    ));
    // Past the next cleanup (every 5 s here), which gives freed memory back.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (after, _) = daemon.rss_mib()?;
    Ok(vec![
        Row::new(
            "big-calls",
            "RSS peak, 200 x 64 logins with 60 KB passwords",
            peak,
            "MiB",
        )
        .baseline(before),
        Row::new("big-calls", "RSS when the calls have ended", ended, "MiB").baseline(before),
        Row::new("big-calls", "RSS 12 s later", after, "MiB").baseline(before),
    ])
}
