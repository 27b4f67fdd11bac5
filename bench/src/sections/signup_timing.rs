//! `sign_up` with `signup.conceal_taken_addresses`, taken against new addresses (means,
//! percentiles and Welch's t): whether the reply's timing tells an attacker which addresses
//! have accounts, now that the reply itself does not (issue 19, item 11).

use std::time::Instant;

use latchkey_client::{SignUp, SignUpOutcome};
use rand::seq::SliceRandom;

use super::reset_timing::two_kinds;
use super::Env;
use crate::report::Row;
use crate::setup::{import_users, ok, password_hash, CLIENT_IP, GENEROUS_LIMITS, LONG_TOKENS};
use crate::stats::Samples;

/// The password every sign-up chooses (it passes the policy).
const SIGN_UP_PASSWORD: &str = "bench sign-up password, staple";

/// Signs up once per taken and once per new address, interleaved at random.
pub(crate) async fn run(env: &Env) -> anyhow::Result<Vec<Row>> {
    let n = env.sizes.signup_each;
    // The daemon's `[signup]` section follows its `[limits]` one.
    let limits = format!("{GENEROUS_LIMITS}\n\n[signup]\nconceal_taken_addresses = true");
    let daemon = env.daemon("signup", LONG_TOKENS, &limits).await?;
    let conns = daemon.clients(4).await?;
    let hash = password_hash()?;
    import_users(&daemon, &conns, "taken", 0..n, &hash).await?;
    // As in the reset timing: random interleaving puts drift on both kinds alike, and each
    // address is signed up once.
    let mut order: Vec<(bool, usize)> = (0..n).flat_map(|i| [(true, i), (false, i)]).collect();
    order.shuffle(&mut rand::rng());
    let client = &conns[0];
    let sign_up = |email: String| {
        let form = SignUp {
            email,
            name: String::new(),
            password: SIGN_UP_PASSWORD.into(),
            locale: None,
        };
        client.sign_up(form, Some(CLIENT_IP))
    };
    for i in 0..(n / 20).max(10) {
        let outcome = ok("sign_up", sign_up(format!("warm{i}@bench.example")).await)?;
        anyhow::ensure!(
            outcome == SignUpOutcome::ConfirmationSent,
            "the daemon does not conceal: {outcome:?}"
        );
    }
    env.progress(&format!("{n} taken and {n} new, interleaved"));
    let (mut taken, mut new) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let began = Instant::now();
    for (is_taken, i) in order {
        let email = if is_taken {
            format!("taken{i}@bench.example")
        } else {
            format!("new{i}@bench.example")
        };
        let t0 = Instant::now();
        let outcome = ok("sign_up", sign_up(email).await)?;
        let took = t0.elapsed().as_nanos() as u64;
        anyhow::ensure!(
            outcome == SignUpOutcome::ConfirmationSent,
            "a concealed sign-up answered {outcome:?}"
        );
        if is_taken {
            taken.push(took);
        } else {
            new.push(took);
        }
    }
    let elapsed = began.elapsed();
    let (taken, new) = (Samples::new(taken, elapsed), Samples::new(new, elapsed));
    Ok(two_kinds(
        "signup",
        "concealed sign_up",
        ("taken", &taken),
        ("new", &new),
    ))
}
