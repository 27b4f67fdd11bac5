//! Password policy and argon2id hashing.
//!
//! The policy follows NIST SP 800-63B: a minimum and a maximum length counted in Unicode code
//! points after NFKC normalisation, no composition rules, no truncation, and a check against
//! commonly used passwords. The NFKC form is what gets hashed, so a password typed on another
//! keyboard (full-width digits, a precomposed accent) still matches.
//!
//! Hashing is deliberately slow (tens of milliseconds), so it runs on dedicated threads
//! (`workers`) behind a fair gate (`fair`): at most `max_concurrent_hashes` at once, handed
//! out in turn to the flows waiting (who the hash is for), and cheap calls never wait behind
//! a hash on the async threads.

mod config;
mod fair;
mod policy;
mod workers;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::PasswordHasher;
use argon2::{Algorithm, Argon2, Params, Version};
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::oneshot;

use self::fair::FairGate;
use self::workers::{Job, Scratch, Workers};

pub use config::PasswordConfig;
pub use fair::Flow;
pub use policy::PolicyError;

/// The result of checking a password.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The password matched the stored hash.
    pub matched: bool,
    /// It matched, and the stored hash is bcrypt or argon2 weaker than configured: store a
    /// fresh hash of the password.
    pub rehash: bool,
}

/// Whether a stored hash is bcrypt.
fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
}

/// The most memory one argon2 hash may take, configured or imported: 2 GiB, RFC 9106's first
/// recommended setting. Each hashing slot may hold that much at once.
pub const MAX_MEMORY_KIB: u32 = 2 * 1024 * 1024;

/// The most argon2 work one hash may take, configured or imported: memory × passes in KiB,
/// four passes over 2 GiB, a few seconds on one core. A stored hash with a huge cost would
/// hold a hashing slot for hours at every login, or abort the daemon on allocation.
pub const MAX_WORK_KIB: u64 = 4 * MAX_MEMORY_KIB as u64;

/// The highest bcrypt cost accepted from an import: 2^16 rounds, a few seconds per login.
pub const MAX_BCRYPT_COST: u32 = 16;

/// Checks argon2 parameters against [`MAX_MEMORY_KIB`] and [`MAX_WORK_KIB`].
pub fn check_argon2_cost(memory_kib: u32, iterations: u32) -> Result<(), String> {
    if memory_kib > MAX_MEMORY_KIB {
        return Err(format!(
            "argon2 memory of {memory_kib} KiB is more than the {MAX_MEMORY_KIB} KiB allowed"
        ));
    }
    let work = u64::from(memory_kib) * u64::from(iterations);
    if work > MAX_WORK_KIB {
        return Err(format!(
            "argon2 work of {memory_kib} KiB × {iterations} passes is more than the \
             {MAX_WORK_KIB} KiB-passes allowed"
        ));
    }
    Ok(())
}

/// Checks that a hash brought in from elsewhere is one `verify` understands and can afford:
/// bcrypt (`$2a$`, `$2b$`, `$2y$`, cost 4 to [`MAX_BCRYPT_COST`]) or an argon2 PHC string
/// (argon2id, argon2i or argon2d, version 0x10 or 0x13, within [`check_argon2_cost`]).
/// Returns why not.
pub fn check_stored_hash(hash: &str) -> Result<(), String> {
    if is_bcrypt(hash) {
        let parts = hash
            .parse::<bcrypt::HashParts>()
            .map_err(|e| format!("not a valid bcrypt hash: {e}"))?;
        let cost = parts.get_cost();
        if cost > MAX_BCRYPT_COST {
            return Err(format!(
                "bcrypt cost {cost} is more than the {MAX_BCRYPT_COST} allowed"
            ));
        }
        return Ok(());
    }
    let parsed = match PasswordHash::new(hash) {
        Ok(parsed) if parsed.algorithm.as_str().starts_with("argon2") => parsed,
        _ => return Err("not a bcrypt ($2a$, $2b$, $2y$) or argon2 PHC hash".into()),
    };
    Algorithm::new(parsed.algorithm.as_str())
        .map_err(|e| format!("unknown argon2 variant {}: {e}", parsed.algorithm))?;
    if let Some(version) = parsed.version {
        Version::try_from(version).map_err(|e| format!("bad argon2 version {version}: {e}"))?;
    }
    let params = Params::try_from(&parsed).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    check_argon2_cost(params.m_cost(), params.t_cost())
}

/// Hashing failed for a reason that is ours, not the caller's.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// argon2 refused (bad parameters or a malformed stored hash).
    #[error("argon2: {0}")]
    Argon2(String),
    /// The hashing threads could not be started.
    #[error("cannot start the hashing threads: {0}")]
    Spawn(#[from] std::io::Error),
    /// A stored hash that verification refuses to compute (see [`check_stored_hash`]).
    #[error("stored hash refused: {0}")]
    Refused(String),
    /// The hash was lost: the job panicked.
    #[error("the hashing job failed")]
    Lost,
    /// The pool is closed (shutting down).
    #[error("hash pool closed")]
    Closed,
}

/// The policy, the hasher and its worker limit. Cheap to clone.
#[derive(Clone)]
pub struct Passwords {
    /// Shared state.
    inner: Arc<Inner>,
}

/// What [`Passwords`] shares.
struct Inner {
    /// argon2id with the configured parameters.
    argon2: Argon2<'static>,
    /// The configured policy.
    policy: PasswordConfig,
    /// One slot per hash that may run at once, handed out fairly among flows.
    permits: Arc<FairGate>,
    /// The threads that hash.
    workers: Workers,
    /// Calls waiting for a permit right now.
    waiting: AtomicUsize,
    /// Where the time spent waiting for a permit is recorded.
    wait_times: Histogram,
    /// A hash of a random password, verified against when there is no account, so an unknown
    /// email costs the same argon2 work as a known one.
    dummy_hash: String,
}

impl Inner {
    /// Whether an argon2 hash was made with another variant or weaker parameters than ours.
    fn weaker_than_configured(&self, parsed: &PasswordHash) -> bool {
        let p = &self.policy;
        match Params::try_from(parsed) {
            Ok(params) => {
                parsed.algorithm.as_str() != "argon2id"
                    || params.m_cost() < p.memory_kib
                    || params.t_cost() < p.iterations
                    || params.p_cost() < p.parallelism
            }
            Err(_) => true,
        }
    }
}

impl Passwords {
    /// Builds the hasher; fails on parameters argon2 rejects.
    /// `wait_times` records how long each hash waited for a slot.
    pub fn new(
        policy: &PasswordConfig,
        concurrency: usize,
        wait_times: Histogram,
    ) -> Result<Passwords, HashError> {
        let params = Params::new(
            policy.memory_kib,
            policy.iterations,
            policy.parallelism,
            None,
        )
        .map_err(|e| HashError::Argon2(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut random = [0u8; 32];
        crate::random::fill(&mut random);
        let dummy_hash = argon2
            .hash_password(&random)
            .map_err(|e| HashError::Argon2(e.to_string()))?
            .to_string();
        let concurrency = concurrency.max(1);
        let workers = Workers::start(concurrency, argon2.params().block_count())?;
        Ok(Passwords {
            inner: Arc::new(Inner {
                argon2,
                policy: policy.clone(),
                permits: FairGate::new(concurrency),
                workers,
                waiting: AtomicUsize::new(0),
                wait_times,
                dummy_hash,
            }),
        })
    }

    /// Hashes a password that passed [`Passwords::check_policy`], in turn with the other
    /// flows waiting.
    pub async fn hash(&self, normalised: String, flow: Flow) -> Result<String, HashError> {
        let inner = self.inner.clone();
        self.run(flow, move |scratch| {
            scratch
                .hash(&inner.argon2, normalised.as_bytes())
                .map_err(HashError::Argon2)
        })
        .await?
    }

    /// Checks `password` against a stored hash, or against the dummy hash when there is none,
    /// so both cases cost the same argon2 work. Never matches without a hash.
    ///
    /// Stored hashes may be argon2 PHC strings (ours; the NFKC form is checked) or bcrypt
    /// (`$2a$`, `$2b$`, `$2y$`, imported from other systems; checked against the password as
    /// given, as the system that made it did). A match says whether the hash should be
    /// replaced by one with the configured argon2id parameters.
    pub async fn verify(
        &self,
        password: &str,
        stored: Option<&str>,
        flow: Flow,
    ) -> Result<Verdict, HashError> {
        // Over-long input is not normalised or hashed as given; it is checked against the
        // dummy so the reply takes the usual time and says nothing.
        let oversized = password.len() > self.inner.policy.max_bytes;
        let candidate = if oversized {
            String::new()
        } else {
            password.to_owned()
        };
        let real = stored.filter(|_| !oversized).map(str::to_owned);
        // Only imports bring in other parameters, and they are checked; this also covers
        // records stored before the limits existed.
        if let Some(real) = &real {
            check_stored_hash(real).map_err(HashError::Refused)?;
        }
        let inner = self.inner.clone();
        self.run(flow, move |scratch| {
            let phc = real.as_deref().unwrap_or(&inner.dummy_hash);
            if is_bcrypt(phc) {
                let matched = bcrypt::verify(candidate.as_bytes(), phc).unwrap_or(false);
                return Ok(Verdict {
                    matched,
                    rehash: matched,
                });
            }
            let parsed = PasswordHash::new(phc).map_err(|e| HashError::Argon2(e.to_string()))?;
            let normalised = Passwords::normalise(&candidate);
            let matched = scratch
                .verify(normalised.as_bytes(), &parsed)
                .map_err(HashError::Argon2)?
                && real.is_some();
            let rehash = matched && inner.weaker_than_configured(&parsed);
            Ok(Verdict { matched, rehash })
        })
        .await?
    }

    /// Cuts a password argument that is over `max_bytes` down to the first few bytes past the
    /// limit, and gives the rest of its memory back. Such a password is only ever checked
    /// against the dummy hash, which needs nothing of it but that it is too long; a call
    /// waiting for a hashing slot would otherwise hold the whole argument (issue 19, item 10:
    /// 200 connections x 64 logins with 64 KB passwords pinned about 0.9 GiB).
    pub fn cut(&self, password: &mut String) {
        let limit = self.inner.policy.max_bytes;
        if password.len() <= limit {
            return;
        }
        let end = (limit + 1..=password.len())
            .find(|&i| password.is_char_boundary(i))
            .unwrap_or(password.len());
        password.truncate(end);
        password.shrink_to_fit();
    }

    /// Calls waiting for a hashing slot right now.
    pub fn queue_depth(&self) -> usize {
        self.inner.waiting.load(Ordering::Relaxed)
    }

    /// Runs `work` on a hashing thread once `flow`'s turn gives it a slot. The slot travels
    /// with the job and is given back by the thread when the hash is done, so the next
    /// caller's hash starts without waiting for this caller's task to be polled.
    async fn run<T: Send + 'static>(
        &self,
        flow: Flow,
        work: impl FnOnce(&mut Scratch) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let started = Instant::now();
        let waiting = Waiting::enter(&self.inner.waiting);
        let permit = self.inner.permits.acquire(flow).await;
        drop(waiting);
        self.inner
            .wait_times
            .observe(started.elapsed().as_secs_f64());
        let permit = permit.ok_or(HashError::Closed)?;
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move |scratch| {
            // A caller that has gone (its deadline passed, its connection closed) needs no
            // hash; the slot goes to the next one.
            if !reply.is_closed() {
                let _ = reply.send(work(scratch));
            }
            drop(permit);
        });
        self.inner
            .workers
            .submit(job)
            .map_err(|()| HashError::Closed)?;
        result.await.map_err(|_| HashError::Lost)
    }
}

/// Counts one call in [`Inner::waiting`] while it lives. A guard, so a caller that goes away
/// while it waits (its deadline passed, its connection closed) is counted out too.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    /// Counts a caller in.
    fn enter(count: &'a AtomicUsize) -> Waiting<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A pool with the default parameters and one hashing slot, for the tests of this module
/// and its children.
#[cfg(test)]
pub(crate) fn test_pool() -> Passwords {
    match Passwords::new(&PasswordConfig::default(), 1, Histogram::new([1.0])) {
        Ok(p) => p,
        Err(e) => unreachable!("default parameters are valid: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn nfkc_equivalent_passwords_verify() {
        let p = test_pool();
        // Full-width digits normalise to ASCII digits.
        let hash = match p.check_policy("pass１２３４５６", None) {
            Ok(n) => p.hash(n, Flow(0)).await.ok(),
            Err(_) => None,
        };
        let hash = hash.as_deref();
        assert!(hash.is_some_and(|h| h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$")));
        let yes = Verdict {
            matched: true,
            rehash: false,
        };
        let no = Verdict {
            matched: false,
            rehash: false,
        };
        assert_eq!(p.verify("pass123456", hash, Flow(0)).await.ok(), Some(yes));
        assert_eq!(
            p.verify("pass１２３４５６", hash, Flow(0)).await.ok(),
            Some(yes)
        );
        assert_eq!(p.verify("pass123457", hash, Flow(0)).await.ok(), Some(no));
        assert_eq!(p.verify("pass123456", None, Flow(0)).await.ok(), Some(no));
    }

    #[tokio::test]
    async fn bcrypt_and_weak_argon2_hashes_verify_and_ask_for_a_rehash() {
        let p = test_pool();
        let bcrypt = bcrypt::hash("legacy secret", 4).expect("bcrypt hashes");
        for prefix in ["$2a$", "$2b$", "$2y$"] {
            let hash = format!("{prefix}{}", &bcrypt[4..]);
            assert_eq!(check_stored_hash(&hash), Ok(()));
            let verdict = p.verify("legacy secret", Some(&hash), Flow(0)).await.ok();
            assert_eq!(
                verdict,
                Some(Verdict {
                    matched: true,
                    rehash: true
                }),
                "{prefix}"
            );
            let verdict = p.verify("legacy secreT", Some(&hash), Flow(0)).await.ok();
            assert_eq!(
                verdict,
                Some(Verdict {
                    matched: false,
                    rehash: false
                })
            );
        }
        // argon2id with less memory than configured.
        let weak = Params::new(8192, 2, 1, None)
            .ok()
            .map(|params| Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
            .and_then(|a| a.hash_password(b"weakly hashed").ok())
            .map(|h| h.to_string())
            .expect("a weaker argon2id hash is made");
        assert_eq!(check_stored_hash(&weak), Ok(()));
        let verdict = p.verify("weakly hashed", Some(&weak), Flow(0)).await.ok();
        assert_eq!(
            verdict,
            Some(Verdict {
                matched: true,
                rehash: true
            })
        );
        assert!(check_stored_hash("$2b$10$tooshort").is_err());
        assert!(check_stored_hash("plaintext").is_err());
        assert!(check_stored_hash("$pbkdf2-sha256$29000$abc$def").is_err());
    }

    #[tokio::test]
    async fn stored_hashes_beyond_the_cost_limits_are_refused_not_computed() {
        let p = test_pool();
        let salt_and_hash = "c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
        // 4 TiB of memory: allocating it aborted the daemon.
        let huge = format!("$argon2id$v=19$m=4294967295,t=1,p=1${salt_and_hash}");
        // Within the memory limit, but 2 GiB × 5 passes is too much work.
        let slow = format!("$argon2id$v=19$m=2097152,t=5,p=1${salt_and_hash}");
        let bcrypt = bcrypt::hash("legacy secret", 4).expect("bcrypt hashes");
        let costly_bcrypt = bcrypt.replacen("$04$", "$17$", 1);
        for hash in [&huge, &slow, &costly_bcrypt] {
            let why = check_stored_hash(hash);
            assert!(
                why.as_ref().is_err_and(|w| w.contains("allowed")),
                "{hash}: {why:?}"
            );
            let verdict = p.verify("password", Some(hash), Flow(0)).await;
            assert!(
                matches!(verdict, Err(HashError::Refused(_))),
                "{hash}: {verdict:?}"
            );
        }
        // Variants and versions argon2 does not know are refused at import too.
        for hash in [
            format!("$argon2id$v=18$m=19456,t=2,p=1${salt_and_hash}"),
            format!("$argon2x$v=19$m=19456,t=2,p=1${salt_and_hash}"),
        ] {
            assert!(check_stored_hash(&hash).is_err(), "{hash}");
        }
        // At the limits, and with the older version 0x10, a hash is accepted.
        assert_eq!(
            check_stored_hash(&format!("$argon2id$v=16$m=2097152,t=4,p=1${salt_and_hash}")),
            Ok(())
        );
        assert_eq!(
            check_stored_hash(&bcrypt.replacen("$04$", "$16$", 1)),
            Ok(())
        );
    }

    #[tokio::test]
    async fn an_over_long_password_is_cut_to_just_over_the_limit_and_still_fails() {
        let p = test_pool();
        let limit = p.inner.policy.max_bytes;
        let mut fine = "é".repeat(limit / 2);
        p.cut(&mut fine);
        assert_eq!(fine, "é".repeat(limit / 2), "within the limit: untouched");
        let stored = p.hash("pass123456".into(), Flow(0)).await.expect("hash");
        for unit in ["p", "é", "😀"] {
            let mut long = format!("pass123456{}", unit.repeat(64 * 1024 / unit.len()));
            p.cut(&mut long);
            assert!(
                long.len() > limit && long.len() <= limit + 4,
                "{}",
                long.len()
            );
            assert!(long.capacity() <= limit + 4, "the rest is given back");
            let verdict = p
                .verify(&long, Some(&stored), Flow(0))
                .await
                .expect("verify");
            assert!(!verdict.matched);
        }
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_while_waiting_leaves_the_queue() {
        let p = test_pool();
        // One slot: the first hash holds it, the second caller waits for it.
        let first = tokio::spawn({
            let p = p.clone();
            async move { p.hash("first password".into(), Flow(0)).await }
        });
        let mut waited = 0;
        while p.inner.permits.free() > 0 && waited < 500 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            waited += 1;
        }
        let second = tokio::time::timeout(
            std::time::Duration::from_millis(1),
            p.hash("second password".into(), Flow(1)),
        );
        let depth_meanwhile = tokio::spawn({
            let p = p.clone();
            async move { p.queue_depth() }
        });
        assert!(second.await.is_err(), "the second caller gave up");
        assert_eq!(depth_meanwhile.await.ok(), Some(1));
        assert_eq!(p.queue_depth(), 0);
        assert!(first.await.is_ok_and(|h| h.is_ok()));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use unicode_normalization::UnicodeNormalization;

    use super::*;

    proptest! {
        #[test]
        fn the_policy_never_panics_and_accepts_only_lengths_in_range(raw in "\\PC{0,300}") {
            let p = test_pool();
            if let Ok(normal) = p.check_policy(&raw, None) {
                let chars = normal.chars().count();
                prop_assert!((8..=256).contains(&chars));
                prop_assert!(normal.len() <= 1024);
                // What is hashed is the NFKC form, and normalising it again changes nothing.
                prop_assert_eq!(normal.nfkc().collect::<String>(), normal.clone());
                prop_assert_eq!(p.check_policy(&normal, None), Ok(normal));
            }
        }

        #[test]
        fn nothing_is_ever_truncated(len in 257usize..600) {
            let p = test_pool();
            prop_assert_eq!(
                p.check_policy(&"q".repeat(len), None),
                Err(PolicyError::TooLong { max: 256 })
            );
        }
    }
}
