//! One caller's logins while another floods the hashing queue (issue 19, item 4): before the
//! fair queue, 32 connections × 64 `verify_password` made a legitimate login wait about 11 s
//! and miss its deadline. The flood goes in from 32 other connections with the client IP of
//! one attacker, as an application relays a flood from one address; the login's p99 under
//! it is compared with its p99 on the idle daemon, in alternating rounds.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use latchkey_client::Client;

use super::Env;
use crate::report::{Row, Target};
use crate::setup::{
    import_users, ok, password_hash, CLIENT_IP, GENEROUS_LIMITS, LONG_TOKENS, PASSWORD,
};
use crate::stats::{closed_loop, secs, Samples};

/// Connections of the flood.
const FLOOD_CONNECTIONS: usize = 32;
/// Calls the flood keeps in flight on each.
const FLOOD_PER_CONNECTION: usize = 64;
/// The flooding client's address.
const FLOOD_IP: &str = "198.51.100.66";

/// Times one client's logins idle and under the flood.
pub(crate) async fn run(env: &Env) -> anyhow::Result<Vec<Row>> {
    let s = &env.sizes;
    let daemon = env.daemon("fairness", LONG_TOKENS, GENEROUS_LIMITS).await?;
    let admin = daemon.client().await?;
    let hash = password_hash()?;
    import_users(&daemon, std::slice::from_ref(&admin), "fair", 0..2, &hash).await?;
    let (warmup, measure) = (secs(s.warmup_secs), secs(s.saturation_secs));
    let probe = daemon.clients(1).await?;
    let login = |c: Client, _| async move {
        ok(
            "verify_password",
            c.verify_password("fair0@bench.example", PASSWORD, Some(CLIENT_IP))
                .await,
        )?;
        Ok(true)
    };

    let flood_conns = daemon.clients(FLOOD_CONNECTIONS).await?;
    let active = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    // The flood's calls on their way: the idle windows wait until none is left.
    let in_flight = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    for c in flood_conns {
        for _ in 0..FLOOD_PER_CONNECTION {
            let (c, active, stop) = (c.clone(), active.clone(), stop.clone());
            let answered = answered.clone();
            let in_flight = in_flight.clone();
            flood.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if !active.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    // Most of the flood misses its deadline: it waits behind itself.
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    let outcome = c
                        .verify_password("fair1@bench.example", PASSWORD, Some(FLOOD_IP))
                        .await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    if outcome.is_ok() {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
    }
    let (mut idle, mut busy) = (Vec::new(), Vec::new());
    let mut flood_time = Duration::ZERO;
    let mut flood_answered = 0;
    for round in 1..=s.rounds {
        env.progress(&format!(
            "round {round}/{}: logins on an idle daemon, then under a {FLOOD_CONNECTIONS}x\
             {FLOOD_PER_CONNECTION} login flood",
            s.rounds
        ));
        idle.push(closed_loop(&probe, 1, warmup, measure, login).await?);
        active.store(true, Ordering::Relaxed);
        // Let the flood fill the queue before timing.
        tokio::time::sleep(secs(s.warmup_secs.max(0.5))).await;
        let (before, t0) = (answered.load(Ordering::Relaxed), Instant::now());
        busy.push(closed_loop(&probe, 1, warmup, measure, login).await?);
        flood_answered += answered.load(Ordering::Relaxed) - before;
        flood_time += t0.elapsed();
        active.store(false, Ordering::Relaxed);
        // The flood's calls in flight end at their deadlines at the latest; wait them out
        // so the next idle window is idle.
        while in_flight.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        task.await.context("a flood task panicked")?;
    }
    let (idle, busy) = (Samples::pooled(idle), Samples::pooled(busy));
    Ok(vec![
        Row::new(
            "fairness",
            "verify_password p50, 1 client, beside a 32x64 login flood",
            busy.p50(),
            "µs",
        )
        .baseline(idle.p50()),
        Row::new(
            "fairness",
            "verify_password p99, 1 client, beside a 32x64 login flood",
            busy.p99(),
            "µs",
        )
        .baseline(idle.p99())
        .target(Target::RatioAtMost(3.0)),
        Row::new(
            "fairness",
            "the flood's logins answered meanwhile",
            flood_answered as f64 / flood_time.as_secs_f64(),
            "calls/s",
        ),
    ])
}
