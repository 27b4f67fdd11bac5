//! Cheap-call latency while hash-bound calls saturate the cores, against the same daemon
//! idle: whether hashing, which runs off the async threads, still starves the cheap calls.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use latchkey_client::Client;

use super::Env;
use crate::harness::cores;
use crate::report::{Row, Target};
use crate::setup::{
    import_users, issue_tokens, ok, password_hash, CLIENT_IP, GENEROUS_LIMITS, LONG_TOKENS,
    PASSWORD,
};
use crate::stats::{closed_loop, secs, Samples};

/// Times one client's `check_reset_token` idle and under a login load, in alternating rounds.
pub(crate) async fn run(env: &Env) -> anyhow::Result<Vec<Row>> {
    let s = &env.sizes;
    let daemon = env
        .daemon("saturation", LONG_TOKENS, GENEROUS_LIMITS)
        .await?;
    let admin = daemon.client().await?;
    let hash = password_hash()?;
    let ids = import_users(&daemon, std::slice::from_ref(&admin), "sat", 0..1, &hash).await?;
    let tokens = issue_tokens(&daemon, &[admin], ids.into_iter(), 1).await?;
    let token = Arc::new(
        tokens
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no token"))?,
    );
    let (warmup, measure) = (secs(s.warmup_secs), secs(s.saturation_secs));
    let probe = daemon.clients(1).await?;
    let check = |token: Arc<String>| {
        move |c: Client, _| {
            let token = token.clone();
            async move {
                ok(
                    "check_reset_token",
                    c.check_reset_token(&token, Some(CLIENT_IP)).await,
                )?;
                Ok(true)
            }
        }
    };

    // Hash-bound load: four logins per core in a closed loop while `active` is set.
    let hashers = 4 * cores();
    let load_conns = daemon.clients(hashers).await?;
    let active = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let hashed = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for c in load_conns {
        let (active, stop, hashed) = (active.clone(), stop.clone(), hashed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if !active.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                ok(
                    "verify_password",
                    c.verify_password("sat0@bench.example", PASSWORD, Some(CLIENT_IP))
                        .await,
                )?;
                hashed.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let (mut idle, mut busy) = (Vec::new(), Vec::new());
    let (mut logins, mut busy_time) = (0, Duration::ZERO);
    for round in 1..=s.rounds {
        env.progress(&format!(
            "round {round}/{}: cheap calls on an idle daemon, then while {hashers} clients log in",
            s.rounds
        ));
        // Let the logins in flight finish, so the idle window is idle.
        tokio::time::sleep(Duration::from_millis(200)).await;
        idle.push(closed_loop(&probe, 1, warmup, measure, check(token.clone())).await?);
        active.store(true, Ordering::Relaxed);
        // Let the hashing queue fill before timing.
        tokio::time::sleep(secs(s.warmup_secs.max(0.3))).await;
        let (before, t0) = (hashed.load(Ordering::Relaxed), Instant::now());
        busy.push(closed_loop(&probe, 1, warmup, measure, check(token.clone())).await?);
        logins += hashed.load(Ordering::Relaxed) - before;
        busy_time += t0.elapsed();
        active.store(false, Ordering::Relaxed);
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.context("a login task panicked")??;
    }
    let (idle, busy) = (Samples::pooled(idle), Samples::pooled(busy));
    Ok(vec![
        Row::new(
            "saturation",
            "check_reset_token p50, 1 client, cores saturated",
            busy.p50(),
            "µs",
        )
        .baseline(idle.p50()),
        Row::new(
            "saturation",
            "check_reset_token p99, 1 client, cores saturated",
            busy.p99(),
            "µs",
        )
        .baseline(idle.p99())
        .target(Target::AtMost(2000.0)),
        Row::new(
            "saturation",
            format!("verify_password meanwhile, {hashers} clients"),
            logins as f64 / busy_time.as_secs_f64(),
            "calls/s",
        ),
    ])
}
