//! Durable write throughput (`create_user`, `request_password_reset`) at 1 and 32 writers:
//! what a flushed write costs, and how well concurrent writers share the flushes.

use latchkey_client::Client;

use super::Env;
use crate::report::Row;
use crate::setup::{
    import_users, ok, password_hash, CLIENT_IP, GENEROUS_LIMITS, LONG_TOKENS, PASSWORD,
};
use crate::stats::{closed_loop, secs};

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
        let reset = closed_loop(&conns, 1, warmup, measure, move |c: Client, n| async move {
            let email = format!("writer{}@bench.example", n as usize % known);
            ok(
                "request_password_reset",
                c.request_password_reset(&email, Some(CLIENT_IP), None)
                    .await,
            )?;
            Ok(true)
        })
        .await?;
        for (name, run) in [("create_user", &create), ("request_password_reset", &reset)] {
            rows.push(Row::new(
                "writes",
                format!("{name}, {writers} writers"),
                run.rate(),
                "calls/s",
            ));
            rows.push(Row::new(
                "writes",
                format!("{name} p50, {writers} writers"),
                run.p50(),
                "µs",
            ));
            rows.push(Row::new(
                "writes",
                format!("{name} p99, {writers} writers"),
                run.p99(),
                "µs",
            ));
        }
    }
    Ok(rows)
}
