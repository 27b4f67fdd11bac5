//! What the sections share to prepare a daemon before timing it: the daemon configurations,
//! the bench's accounts and passwords, the argon2id of the baseline, importing users and
//! issuing reset tokens in bulk, and turning an error reply into a failed measurement.

use anyhow::anyhow;
use argon2::password_hash::PasswordHasher;
use argon2::{Algorithm, Argon2, Params, Version};
use futures::{StreamExt, TryStreamExt};
use latchkey_client::{Client, Error as ClientError, ImportUser, UserRef};

use crate::harness::{Daemon, ARGON2_ITERATIONS, ARGON2_MEMORY_KIB, ARGON2_PARALLELISM};

/// The password of every account the bench imports; long enough and not on the blocklist.
pub(crate) const PASSWORD: &str = "bench password, correct horse";
/// The new password set by `complete_password_reset`.
pub(crate) const NEW_PASSWORD: &str = "bench password, battery staple";
/// The client IP passed with calls that take one; rate limits are generous enough that one
/// IP never hits them, except in the limiter-memory section, which uses a million.
pub(crate) const CLIENT_IP: &str = "192.0.2.10";
/// Accounts per `import_users` call: about 200 bytes of JSON each keeps a batch well below
/// the frame cap ([`crate::harness::MAX_FRAME_BYTES`]).
const IMPORT_BATCH: usize = 200;

/// `[limits]` so generous that no bench call is ever limited; the key cap is raised so a
/// million distinct emails do not fill a limiter.
pub(crate) const GENEROUS_LIMITS: &str = "\
reset_per_ip = { burst = 1000000000, per_secs = 1 }
reset_per_email = { burst = 1000000000, per_secs = 1 }
token_per_ip = { burst = 1000000000, per_secs = 1 }
login_per_ip = { burst = 1000000000, per_secs = 1 }
signup_per_ip = { burst = 1000000000, per_secs = 1 }
signup_per_email = { burst = 1000000000, per_secs = 1 }
login_failures = { free = 1000000000, max = 1000000000 }
max_keys = 10000000";

/// `[reset]` for the general daemon: tokens last a day, the daemon's maximum, so none expires
/// during the run.
pub(crate) const LONG_TOKENS: &str = "token_lifetime_secs = 86400";

/// An argon2id hash of [`PASSWORD`] with the bench parameters, for imported accounts: importing
/// it costs no hashing, and logging in with it costs exactly one hash at the daemon's
/// parameters (no upgrade).
pub(crate) fn password_hash() -> anyhow::Result<String> {
    Ok(argon2()?
        .hash_password(PASSWORD.as_bytes())
        .map_err(|e| anyhow!("argon2: {e}"))?
        .to_string())
}

/// argon2id with the bench parameters.
pub(crate) fn argon2() -> anyhow::Result<Argon2<'static>> {
    let params = Params::new(
        ARGON2_MEMORY_KIB,
        ARGON2_ITERATIONS,
        ARGON2_PARALLELISM,
        None,
    )
    .map_err(|e| anyhow!("argon2 parameters: {e}"))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Imports accounts `{prefix}{i}@bench.example` for `i` in `range`, all with `hash`, and
/// returns their ids in order.
pub(crate) async fn import_users(
    daemon: &Daemon,
    clients: &[Client],
    prefix: &str,
    range: std::ops::Range<usize>,
    hash: &str,
) -> anyhow::Result<Vec<u64>> {
    let batches: Vec<Vec<usize>> = range
        .collect::<Vec<_>>()
        .chunks(IMPORT_BATCH)
        .map(<[usize]>::to_vec)
        .collect();
    let results: Vec<Vec<u64>> = futures::stream::iter(batches.into_iter().enumerate())
        .map(|(n, batch)| {
            let client = clients[n % clients.len()].clone();
            let users: Vec<ImportUser> = batch
                .iter()
                .map(|i| ImportUser {
                    email: format!("{prefix}{i}@bench.example"),
                    name: String::new(),
                    role: None,
                    status: None,
                    password_hash: hash.to_owned(),
                    locale: None,
                    created_at: None,
                })
                .collect();
            async move {
                let outcomes = client
                    .import_users(users)
                    .await
                    .map_err(|e| daemon.failed(e.into()))?;
                outcomes
                    .into_iter()
                    .map(|o| o.map_err(|e| anyhow!("import refused an account: {e}")))
                    .collect::<anyhow::Result<Vec<u64>>>()
            }
        })
        .buffered(clients.len().max(1) * 2)
        .try_collect()
        .await?;
    Ok(results.into_iter().flatten().collect())
}

/// Issues one reset token (lifetime one day) for each user in `users`, `in_flight` calls at
/// a time, and returns the tokens.
pub(crate) async fn issue_tokens(
    daemon: &Daemon,
    clients: &[Client],
    users: impl Iterator<Item = u64>,
    in_flight: usize,
) -> anyhow::Result<Vec<String>> {
    futures::stream::iter(users.enumerate())
        .map(|(n, id)| {
            let client = clients[n % clients.len()].clone();
            async move {
                let link = client
                    .admin_reset_link(UserRef::Id(id), Some(86400))
                    .await
                    .map_err(|e| daemon.failed(e.into()))?;
                token_of(&link.link)
            }
        })
        .buffer_unordered(in_flight)
        .try_collect()
        .await
}

/// The token in a link made from the default template (`...?token=TOKEN`).
fn token_of(link: &str) -> anyhow::Result<String> {
    link.rsplit_once("token=")
        .map(|(_, t)| t.to_owned())
        .ok_or_else(|| anyhow!("no token in the link {link:?}"))
}

/// Seconds since the Unix epoch, as the daemon stamps its rows; 0 if the clock is before it.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Fails on an error reply; the bench treats any as a broken measurement.
pub(crate) fn ok<T>(what: &str, result: Result<T, ClientError>) -> anyhow::Result<T> {
    result.map_err(|e| match e.api() {
        Some(api) => anyhow!("{what}: the daemon answered {api:?}"),
        None => anyhow::Error::new(e).context(format!("{what} failed")),
    })
}
