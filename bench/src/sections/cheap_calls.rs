//! Cheap calls (`check_reset_token`, `health`) at 1, 16 and 64 clients against the echo
//! baseline, which does no work over the same transport: what the daemon adds to a call that
//! does almost nothing.
//!
//! On PostgreSQL a token check is a round trip to the server, so `check_reset_token` is
//! measured against `pgbench -S` instead (a primary-key read per transaction, prepared, at
//! the same number of clients, on the same server): what the daemon adds to the one read it
//! cannot avoid. `health` touches no store and keeps the echo baseline.

use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use latchkey_client::Client;

use super::Env;
use crate::harness::{EchoClient, Script};
use crate::report::{Row, Target};
use crate::setup::{
    import_users, issue_tokens, ok, password_hash, CLIENT_IP, GENEROUS_LIMITS, LONG_TOKENS,
};
use crate::stats::{closed_loop, secs, Samples};

/// Measures the cheap calls and the echo baseline in alternating rounds per client count.
pub(crate) async fn run(env: &Env) -> anyhow::Result<Vec<Row>> {
    let s = &env.sizes;
    let daemon = env.daemon("cheap", LONG_TOKENS, GENEROUS_LIMITS).await?;
    let echo = env.echo().await?;
    let admin = daemon.client().await?;
    let hash = password_hash()?;
    let ids = import_users(&daemon, std::slice::from_ref(&admin), "cheap", 0..16, &hash).await?;
    let tokens = Arc::new(issue_tokens(&daemon, &[admin], ids.into_iter(), 16).await?);
    let (warmup, measure) = (secs(s.warmup_secs), secs(s.cheap_secs));
    // pgbench's select-only tables at scale 1 (100 000 accounts), in their own database.
    let pgbench_db = match &env.harness.postgres {
        Some(cluster) => {
            let db = cluster.unique("lkb_pgbench_select");
            env.progress("pgbench -i for the select-only baseline");
            tokio::task::block_in_place(|| {
                cluster.create_database(&db)?;
                cluster.pgbench_init(&db, 1)
            })?;
            Some((cluster, db))
        }
        None => None,
    };
    let mut rows = Vec::new();
    for clients in [1, 16, 64] {
        env.progress(&format!(
            "cheap calls, {clients} clients, {} rounds",
            s.rounds
        ));
        let echo_conns = echo.clients(clients).await?;
        let conns = daemon.clients(clients).await?;
        let (mut base, mut check, mut health) = (Vec::new(), Vec::new(), Vec::new());
        let mut select = Vec::new();
        for _ in 0..s.rounds {
            if let Some((cluster, db)) = &pgbench_db {
                // pgbench counts whole seconds; its first moments (connecting) are left out
                // of its rate, as the closed loop's warm-up is.
                let whole = s.cheap_secs.ceil() as u64;
                select.push(tokio::task::block_in_place(|| {
                    cluster.pgbench(db, &Script::SelectOnly, clients, whole, &[])
                })?);
            }
            let token = tokens[0].clone();
            base.push(
                closed_loop(&echo_conns, 1, warmup, measure, move |c: EchoClient, _| {
                    let token = token.clone();
                    async move {
                        c.echo(tarpc::context::current(), token, Some(CLIENT_IP.to_owned()))
                            .await
                            .context("echo failed")?
                            .map_err(|e| anyhow!("echo: {e}"))?;
                        Ok(true)
                    }
                })
                .await?,
            );
            let tk = tokens.clone();
            check.push(
                closed_loop(&conns, 1, warmup, measure, move |c: Client, n| {
                    let token = tk[n as usize % tk.len()].clone();
                    async move {
                        ok(
                            "check_reset_token",
                            c.check_reset_token(&token, Some(CLIENT_IP)).await,
                        )?;
                        Ok(true)
                    }
                })
                .await?,
            );
            health.push(
                closed_loop(&conns, 1, warmup, measure, |c: Client, _| async move {
                    ok("health", c.health().await)?;
                    Ok(true)
                })
                .await?,
            );
        }
        let base = Samples::pooled(base);
        let calls = if pgbench_db.is_some() {
            let select = Samples::pooled(select);
            rows.extend(against_pgbench(clients, &Samples::pooled(check), &select));
            vec![("health", health)]
        } else {
            vec![("check_reset_token", check), ("health", health)]
        };
        for (name, run) in calls {
            let run = Samples::pooled(run);
            rows.push(
                Row::new(
                    "cheap",
                    format!("{name} throughput, {clients} clients"),
                    run.rate(),
                    "calls/s",
                )
                .baseline(base.rate())
                .target(Target::RatioAtLeast(0.8)),
            );
            rows.push(
                Row::new(
                    "cheap",
                    format!("{name} p50, {clients} clients"),
                    run.p50(),
                    "µs",
                )
                .baseline(base.p50()),
            );
            let p99 = Row::new(
                "cheap",
                format!("{name} p99, {clients} clients"),
                run.p99(),
                "µs",
            )
            .baseline(base.p99());
            rows.push(if clients == 16 {
                p99.target(Target::AtMost(1000.0))
            } else {
                p99
            });
        }
    }
    Ok(rows)
}

/// The PostgreSQL rows of `check_reset_token` at `clients` clients against `pgbench -S` at
/// as many; the issue's target is at 16 clients.
fn against_pgbench(clients: usize, check: &Samples, select: &Samples) -> Vec<Row> {
    let name = "check_reset_token";
    let rate = Row::new(
        "cheap",
        format!("{name} throughput, {clients} clients (baseline pgbench -S)"),
        check.rate(),
        "calls/s",
    )
    .baseline(select.rate());
    vec![
        if clients == 16 {
            rate.target(Target::RatioAtLeast(0.7))
        } else {
            rate
        },
        Row::new(
            "cheap",
            format!("{name} p50, {clients} clients (baseline pgbench -S)"),
            check.p50(),
            "µs",
        )
        .baseline(select.p50()),
        Row::new(
            "cheap",
            format!("{name} p99, {clients} clients (baseline pgbench -S)"),
            check.p99(),
            "µs",
        )
        .baseline(select.p99()),
    ]
}
