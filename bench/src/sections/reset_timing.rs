//! `request_password_reset` for known against unknown addresses (means, percentiles and
//! Welch's t): whether the reply's timing tells an attacker which addresses have accounts.

use std::time::Instant;

use rand::seq::SliceRandom;

use super::Env;
use crate::report::{Row, Target};
use crate::setup::{import_users, ok, password_hash, CLIENT_IP, GENEROUS_LIMITS, LONG_TOKENS};
use crate::stats::{welch_t, Samples};

/// Asks for a reset once per known and once per unknown address, interleaved at random.
pub(crate) async fn run(env: &Env) -> anyhow::Result<Vec<Row>> {
    let n = env.sizes.timing_each;
    let daemon = env.daemon("timing", LONG_TOKENS, GENEROUS_LIMITS).await?;
    let conns = daemon.clients(4).await?;
    let hash = password_hash()?;
    import_users(&daemon, &conns, "known", 0..n, &hash).await?;
    // Interleaved in random order, so drift (a growing database, a neighbour's build, the
    // mail sender catching up) falls on both kinds alike. Each address is asked once.
    let mut order: Vec<(bool, usize)> = (0..n).flat_map(|i| [(true, i), (false, i)]).collect();
    order.shuffle(&mut rand::rng());
    let client = &conns[0];
    // A warm-up on other addresses, not counted.
    for i in 0..(n / 20).max(10) {
        let email = format!("warm{i}@bench.example");
        ok(
            "request_password_reset",
            client
                .request_password_reset(&email, Some(CLIENT_IP), None)
                .await,
        )?;
    }
    env.progress(&format!("{n} known and {n} unknown, interleaved"));
    let (mut known, mut unknown) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let began = Instant::now();
    if env.harness.keep {
        // For matching the daemon's log lines (its per-call `micros`) to the kinds afterwards.
        let kinds: String = order
            .iter()
            .map(|(known, _)| if *known { "known\n" } else { "unknown\n" })
            .collect();
        std::fs::write(daemon.dir().join("timing-order.txt"), kinds)?;
    }
    for (is_known, i) in order {
        let email = if is_known {
            format!("known{i}@bench.example")
        } else {
            format!("other{i}@bench.example")
        };
        let t0 = Instant::now();
        ok(
            "request_password_reset",
            client
                .request_password_reset(&email, Some(CLIENT_IP), None)
                .await,
        )?;
        let took = t0.elapsed().as_nanos() as u64;
        if is_known {
            known.push(took);
        } else {
            unknown.push(took);
        }
    }
    let elapsed = began.elapsed();
    let (known, unknown) = (Samples::new(known, elapsed), Samples::new(unknown, elapsed));
    Ok(two_kinds(
        "timing",
        "request_password_reset",
        ("known", &known),
        ("unknown", &unknown),
    ))
}

/// The figures that tell whether one call answers two kinds of address alike: both means
/// (within 5%), p50s and p99s, and Welch's t (|t| < 4.5), the first kind against the second.
pub(crate) fn two_kinds(
    section: &'static str,
    call: &str,
    (a, first): (&str, &Samples),
    (b, second): (&str, &Samples),
) -> Vec<Row> {
    let (mean_a, _) = first.mean_var_us();
    let (mean_b, _) = second.mean_var_us();
    let t = welch_t(first, second);
    vec![
        Row::new(section, format!("{call} mean, {a}"), mean_a, "µs")
            .baseline(mean_b)
            .target(Target::RatioWithin(0.05)),
        Row::new(section, format!("{call} mean, {b}"), mean_b, "µs"),
        Row::new(section, format!("{call} p50, {a}"), first.p50(), "µs").baseline(second.p50()),
        Row::new(section, format!("{call} p99, {a}"), first.p99(), "µs").baseline(second.p99()),
        Row::new(section, format!("{call} p50, {b}"), second.p50(), "µs"),
        Row::new(section, format!("{call} p99, {b}"), second.p99(), "µs"),
        Row::new(
            section,
            format!("Welch's t, {a} vs {b}, {} each", first.len()),
            t,
            "",
        )
        .target(Target::AbsBelow(4.5)),
    ]
}
