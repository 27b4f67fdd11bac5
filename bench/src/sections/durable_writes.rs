//! Durable write throughput (`create_user`, `request_password_reset`) at 1 and 32 writers:
//! what a flushed write costs, and how well concurrent writers share the flushes.
//!
//! On PostgreSQL, `request_password_reset` is also measured against a pgbench script with
//! the same statements ([`Baseline::reset`]) at the same concurrency, in alternating
//! windows: what the daemon adds to the database work it cannot avoid.

use latchkey_client::Client;

use super::pg_scripts::Baseline;
use super::Env;
use crate::report::{Row, Target};
use crate::setup::{
    import_users, ok, password_hash, CLIENT_IP, GENEROUS_LIMITS, LONG_TOKENS, PASSWORD,
};
use crate::stats::Samples;
use crate::stats::{closed_loop, secs};

/// The daemon's default `[reset] max_live_tokens`, which the writes daemon keeps: the
/// script trims a user's live tokens to as many.
const DEFAULT_MAX_LIVE_TOKENS: usize = 3;

/// Runs both writing calls in a closed loop at each writer count.
pub(crate) async fn run(env: &Env) -> anyhow::Result<Vec<Row>> {
    let s = &env.sizes;
    let daemon = env.daemon("writes", LONG_TOKENS, GENEROUS_LIMITS).await?;
    let (warmup, measure) = (secs(s.warmup_secs), secs(s.write_secs));
    let mut rows = Vec::new();
    let hash = password_hash()?;
    let known = 1000;
    let admin = daemon.clients(4).await?;
    import_users(&daemon, &admin, "writer", 0..known, &hash).await?;
    let baseline = match &env.harness.postgres {
        Some(cluster) => {
            env.progress("preparing the pgbench reset script's database");
            let b = Baseline::reset(env, cluster, "writer", known, DEFAULT_MAX_LIVE_TOKENS).await?;
            Some((cluster, b))
        }
        None => None,
    };
    for writers in [1, 32] {
        let conns = daemon.clients(writers).await?;
        env.progress(&format!("create_user, {writers} writers"));
        let create = closed_loop(&conns, 1, warmup, measure, move |c: Client, n| async move {
            let user = latchkey_client::NewUser {
                email: format!("new{writers}-{n}@bench.example"),
                name: String::new(),
                password: PASSWORD.into(),
                role: None,
                locale: None,
            };
            ok("create_user", c.create_user(user).await)?;
            Ok(true)
        })
        .await?;
        env.progress(&format!("request_password_reset, {writers} writers"));
        let reset_call = move |c: Client, n: u64| async move {
            let email = format!("writer{}@bench.example", n as usize % known);
            ok(
                "request_password_reset",
                c.request_password_reset(&email, Some(CLIENT_IP), None)
                    .await,
            )?;
            Ok(true)
        };
        let (reset, script) = match &baseline {
            None => (
                closed_loop(&conns, 1, warmup, measure, reset_call).await?,
                None,
            ),
            Some((cluster, b)) => {
                // Alternating windows of whole seconds (pgbench counts no less), as many as
                // the other sections' rounds.
                let window = (s.write_secs / s.rounds as f64).max(1.0).ceil();
                let (mut daemon_runs, mut script_runs) = (Vec::new(), Vec::new());
                for _ in 0..s.rounds {
                    script_runs.push(tokio::task::block_in_place(|| {
                        cluster.pgbench(
                            &b.database,
                            &b.script,
                            writers,
                            window as u64,
                            &b.defines(),
                        )
                    })?);
                    daemon_runs
                        .push(closed_loop(&conns, 1, warmup, secs(window), reset_call).await?);
                }
                (
                    Samples::pooled(daemon_runs),
                    Some(Samples::pooled(script_runs)),
                )
            }
        };
        for (name, run) in [("create_user", &create), ("request_password_reset", &reset)] {
            let base = script.as_ref().filter(|_| name == "request_password_reset");
            let rate = Row::new(
                "writes",
                format!("{name}, {writers} writers"),
                run.rate(),
                "calls/s",
            );
            let (mut p50, mut p99) = (
                Row::new(
                    "writes",
                    format!("{name} p50, {writers} writers"),
                    run.p50(),
                    "µs",
                ),
                Row::new(
                    "writes",
                    format!("{name} p99, {writers} writers"),
                    run.p99(),
                    "µs",
                ),
            );
            let rate = match base {
                Some(base) => {
                    p50 = p50.baseline(base.p50());
                    p99 = p99.baseline(base.p99());
                    let rate = rate.baseline(base.rate());
                    // The target is at the concurrency where the reply floor (5 ms
                    // per call and connection) does not bind; one writer is for the record.
                    if writers == 32 {
                        rate.target(Target::RatioAtLeast(0.7))
                    } else {
                        rate
                    }
                }
                None => rate,
            };
            rows.extend([rate, p50, p99]);
        }
    }
    if let Some((_, b)) = &baseline {
        // So a reader of the table knows which daemon the script mirrors: one before the
        // shared limits (schema 1) or one with them.
        rows.push(Row::new(
            "writes",
            "pgbench reset script takes the shared limit (1 = yes)",
            f64::from(u8::from(b.shared_limits())),
            "",
        ));
    }
    Ok(rows)
}
