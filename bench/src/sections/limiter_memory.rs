//! The daemon's memory after a million distinct rate-limiter keys and after they idle out:
//! whether the limiters' key cap and cleanup bound what a flood of client IPs can cost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use futures::{StreamExt, TryStreamExt};
use latchkey_client::ApiError;

use super::Env;
use crate::report::{count_label, Row, Target};
use crate::setup::{ok, LONG_TOKENS};

/// Fills the token-per-IP limiter with one key per client IP, then waits for them to go.
pub(crate) async fn run(env: &Env) -> anyhow::Result<Vec<Row>> {
    let s = &env.sizes;
    // One call per IP through a burst-1 bucket: each key is held until two periods after its
    // call (see `Sizes::rss_key_secs`), then dropped by the next cleanup. The key cap keeps
    // the daemon's default (a million per limiter), as in production.
    let limits = format!(
        "token_per_ip = {{ burst = 1, per_secs = {} }}\ncleanup_interval_secs = {}",
        s.rss_key_secs, s.rss_cleanup_secs
    );
    let daemon = env.daemon("rss", LONG_TOKENS, &limits).await?;
    let conns = daemon.clients(16).await?;
    let admin = &conns[0];
    ok("health", admin.health().await)?;
    let (start_rss, _) = daemon.rss_mib()?;
    env.progress(&format!("{} distinct client IPs", s.rss_keys));
    let refused = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    futures::stream::iter(0..s.rss_keys)
        .map(|i| {
            let client = conns[i % conns.len()].clone();
            let refused = refused.clone();
            // 10.0.0.0/8 holds 16.7M addresses: one each.
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 | i as u32).to_string();
            async move {
                match client.check_reset_token("not-a-token", Some(&ip)).await {
                    Ok(_) => Ok(()),
                    // The key cap can engage for the last few keys of the million.
                    Err(e) if matches!(e.api(), Some(ApiError::RateLimited { .. })) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                    Err(e) => Err(anyhow::Error::new(e).context("check_reset_token failed")),
                }
            }
        })
        .buffer_unordered(512)
        .try_collect::<()>()
        .await?;
    let fill_secs = began.elapsed().as_secs_f64();
    let keys = daemon.gauge(admin, "limiter_keys").await?;
    let (full_rss, peak_rss) = daemon.rss_mib()?;
    env.progress(&format!(
        "{keys} keys held after {fill_secs:.1} s; RSS {full_rss:.1} MiB; waiting for idle-out"
    ));
    if fill_secs > 2.0 * s.rss_key_secs as f64 {
        eprintln!(
            "warning: filling took longer than a key lives; some keys idled out before the \
             last was made"
        );
    }
    // Keys idle out two periods after their call; the next cleanup drops them.
    let deadline =
        Instant::now() + Duration::from_secs(2 * s.rss_key_secs + 4 * s.rss_cleanup_secs + 30);
    loop {
        let left = daemon.gauge(admin, "limiter_keys").await?;
        if left == 0.0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{left} limiter keys still held long after they should have idled out");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // One more cleanup round, so whatever cleanup frees has been freed.
    tokio::time::sleep(Duration::from_secs(s.rss_cleanup_secs + 1)).await;
    let (idle_rss, _) = daemon.rss_mib()?;
    if let Some(hold) = env.hold_rss {
        env.progress(&format!(
            "holding pid {} for {hold} s (RSS {idle_rss:.1} MiB)",
            daemon.pid()
        ));
        tokio::time::sleep(Duration::from_secs(hold)).await;
    }
    let label = count_label(s.rss_keys);
    Ok(vec![
        Row::new("rss", "RSS of a fresh daemon", start_rss, "MiB"),
        Row::new(
            "rss",
            format!("limiter keys held after {label} client IPs"),
            keys,
            "keys",
        ),
        Row::new(
            "rss",
            format!("RSS after {label} limiter keys"),
            full_rss,
            "MiB",
        )
        .baseline(start_rss)
        .target(Target::AtMost(128.0)),
        Row::new("rss", "peak RSS (VmHWM)", peak_rss, "MiB"),
        Row::new("rss", "RSS after the keys idled out", idle_rss, "MiB")
            .baseline(start_rss)
            .target(Target::AtMost(64.0)),
        Row::new(
            "rss",
            format!("calls refused by the key cap, of {label}"),
            refused.load(Ordering::Relaxed) as f64,
            "calls",
        ),
    ])
}
