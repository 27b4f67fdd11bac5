//! `check_reset_token` latency as live tokens grow (1k, 100k, 1M), against a reference daemon
//! that holds the first count throughout: whether a token lookup stays flat as the store
//! fills.
//!
//! On PostgreSQL the tokens are written by SQL rather than by a million `admin_reset_link`
//! calls, each a durable commit ([`pg_scripts::fill_tokens`]: rows of the same shape, both
//! indexes maintained by the server, the table vacuumed and analysed after each stage as
//! autovacuum would), and the tokens timed are drawn from all of them.

use std::time::Instant;

use anyhow::bail;
use latchkey_client::Client;
use rand::RngExt;

use super::{pg_scripts, Env};
use crate::harness::Daemon;
use crate::report::{count_label, Row, Target};
use crate::setup::{
    import_users, issue_tokens, password_hash, CLIENT_IP, GENEROUS_LIMITS, LONG_TOKENS,
};
use crate::stats::Samples;

/// Grows one daemon's live tokens through the stages and times it against the reference.
pub(crate) async fn run(env: &Env) -> anyhow::Result<Vec<Row>> {
    let s = &env.sizes;
    let (Some(&first), Some(&last)) = (s.token_stages.first(), s.token_stages.last()) else {
        bail!("no token stages");
    };
    let per_user = last.div_ceil(s.token_users);
    // Room for every token a user is given, so issuing never revokes one.
    let reset = format!("{LONG_TOKENS}\nmax_live_tokens = {}", per_user + 1);
    let hash = password_hash()?;
    // Two daemons with the same accounts: the reference keeps the first stage's tokens while
    // the other grows through the stages. At each stage they are timed in alternating rounds,
    // so the ratio compares token counts, not two moments of a shared machine.
    let reference = env.daemon("tokens-ref", &reset, GENEROUS_LIMITS).await?;
    let growing = env.daemon("tokens", &reset, GENEROUS_LIMITS).await?;
    let ref_conns = reference.clients(8).await?;
    let conns = growing.clients(8).await?;
    env.progress(&format!("importing {} users into each", s.token_users));
    let ref_ids = import_users(&reference, &ref_conns, "t", 0..s.token_users, &hash).await?;
    let ids = import_users(&growing, &conns, "t", 0..s.token_users, &hash).await?;
    let round_robin = |ids: &[u64], range: std::ops::Range<usize>| -> Vec<u64> {
        range.map(|n| ids[n % ids.len()]).collect()
    };
    let pg = match (
        &env.harness.postgres,
        reference.database(),
        growing.database(),
    ) {
        (Some(cluster), Some(r), Some(g)) => Some((cluster, r.to_owned(), g.to_owned())),
        _ => None,
    };
    // Enough distinct tokens that the timed checks do not keep hitting a few rows.
    let sample = (s.token_samples * 2).max(1000);
    let ref_tokens = match &pg {
        None => {
            issue_tokens(
                &reference,
                &ref_conns,
                round_robin(&ref_ids, 0..first).into_iter(),
                256,
            )
            .await?
        }
        Some((cluster, r, _)) => tokio::task::block_in_place(|| {
            pg_scripts::fill_tokens(cluster, r, 0, first)?;
            pg_scripts::sample_tokens(cluster, r, sample, first)
        })?,
    };
    let ref_probe = reference.client().await?;
    let probe = growing.client().await?;
    let mut tokens: Vec<String> = Vec::with_capacity(last);
    let mut filled = 0;
    let mut rows = Vec::new();
    let per_round = (s.token_samples / s.rounds).max(1);
    for &stage in &s.token_stages {
        let began = Instant::now();
        let issued_before = filled;
        match &pg {
            None => {
                // Round-robin over the users, so every user holds about the same number.
                let users = round_robin(&ids, tokens.len()..stage);
                tokens.extend(issue_tokens(&growing, &conns, users.into_iter(), 256).await?);
            }
            Some((cluster, _, g)) => {
                tokens = tokio::task::block_in_place(|| {
                    pg_scripts::fill_tokens(cluster, g, filled, stage)?;
                    pg_scripts::sample_tokens(cluster, g, sample, stage)
                })?;
            }
        }
        filled = stage;
        env.progress(&format!(
            "{stage} live tokens ({:.0} issued/s); timing check_reset_token",
            (filled - issued_before) as f64 / began.elapsed().as_secs_f64()
        ));
        let (mut base, mut run) = (Vec::new(), Vec::new());
        for _ in 0..s.rounds {
            base.push(time_token_checks(&reference, &ref_probe, &ref_tokens, per_round).await?);
            run.push(time_token_checks(&growing, &probe, &tokens, per_round).await?);
        }
        let (base, run) = (Samples::pooled(base), Samples::pooled(run));
        let label = count_label(stage);
        let row = Row::new(
            "tokens",
            format!("check_reset_token p50, {label} live tokens"),
            run.p50(),
            "µs",
        )
        .baseline(base.p50());
        rows.push(if stage == last {
            row.target(Target::RatioAtMost(1.5))
        } else {
            row
        });
        rows.push(
            Row::new(
                "tokens",
                format!("check_reset_token p99, {label} live tokens"),
                run.p99(),
                "µs",
            )
            .baseline(base.p99()),
        );
    }
    Ok(rows)
}

/// Times `samples` sequential checks of tokens drawn at random from `tokens`, after an
/// untimed warm-up of a tenth as many.
async fn time_token_checks(
    daemon: &Daemon,
    client: &Client,
    tokens: &[String],
    samples: usize,
) -> anyhow::Result<Samples> {
    let picks: Vec<usize> = {
        let mut rng = rand::rng();
        (0..samples + samples / 10)
            .map(|_| rng.random_range(0..tokens.len()))
            .collect()
    };
    let mut nanos = Vec::with_capacity(samples);
    let began = Instant::now();
    for (n, &i) in picks.iter().enumerate() {
        let t0 = Instant::now();
        let check = client
            .check_reset_token(&tokens[i], Some(CLIENT_IP))
            .await
            .map_err(|e| daemon.failed(e.into()))?;
        if check.state != latchkey_client::TokenState::Valid {
            bail!("a live token was reported {:?}", check.state);
        }
        if n >= samples / 10 {
            nanos.push(t0.elapsed().as_nanos() as u64);
        }
    }
    Ok(Samples::new(nanos, began.elapsed()))
}
