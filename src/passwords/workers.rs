//! The hashing threads.
//!
//! argon2id with the default parameters works through a 19 MiB array of blocks. Allocating
//! it for every hash on tokio's blocking pool meant zeroing it and faulting it in each time,
//! about a fifth of the CPU a hash took (see BENCHMARKS.md). Here a fixed set of threads,
//! one per hashing slot, each keeps its array between hashes and lets it go once it has
//! been idle for a while, so a quiet daemon gives the memory back.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

/// A unit of work for a hashing thread.
pub(super) type Job = Box<dyn FnOnce(&mut Scratch) + Send>;

/// How long a thread keeps its block array without work.
const IDLE_RELEASE: Duration = Duration::from_secs(10);

/// The block array a thread reuses from one hash to the next.
pub(super) struct Scratch {
    /// Kept between hashes; empty while idle.
    blocks: Vec<Block>,
    /// The block count of the configured parameters: arrays up to this size are kept, larger
    /// ones (an imported hash with a higher memory cost) are allocated for that hash only.
    keep: usize,
}

impl Scratch {
    /// A thread's scratch for arrays of up to `keep` blocks.
    fn new(keep: usize) -> Scratch {
        Scratch {
            blocks: Vec::new(),
            keep,
        }
    }

    /// Runs argon2 into `out`, reusing the kept array when it is large enough.
    fn hash_into(
        &mut self,
        argon2: &Argon2<'_>,
        password: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), argon2::Error> {
        let count = argon2.params().block_count();
        if count > self.keep {
            let mut once = blocks(count)?;
            return argon2.hash_password_into_with_memory(password, salt, out, &mut once[..]);
        }
        // The kept array is either empty (released while idle) or `keep` blocks long.
        if self.blocks.len() < count {
            self.blocks = blocks(self.keep)?;
        }
        let blocks = &mut self.blocks[..count];
        argon2.hash_password_into_with_memory(password, salt, out, blocks)
    }

    /// A new PHC string for `password`: a fresh 16-byte salt from the OS, the output length
    /// and parameters of `argon2`. The same string `PasswordHasher::hash_password` makes.
    pub(super) fn hash(&mut self, argon2: &Argon2<'_>, password: &[u8]) -> Result<String, String> {
        let mut salt = [0u8; Salt::RECOMMENDED_LENGTH];
        crate::random::fill(&mut salt);
        let mut buffer = [0u8; Output::MAX_LENGTH];
        let len = argon2
            .params()
            .output_len()
            .unwrap_or(Params::DEFAULT_OUTPUT_LEN);
        let out = buffer
            .get_mut(..len)
            .ok_or_else(|| format!("output length {len} is too long"))?;
        self.hash_into(argon2, password, &salt, out)
            .map_err(|e| e.to_string())?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(argon2.params()).map_err(|e| e.to_string())?,
            salt: Some(Salt::new(&salt).map_err(|e| e.to_string())?),
            hash: Some(Output::new(out).map_err(|e| e.to_string())?),
        };
        Ok(phc.to_string())
    }

    /// Whether `password` matches an argon2 PHC string, computed with the string's own
    /// variant, version and parameters, and compared in constant time.
    pub(super) fn verify(&mut self, password: &[u8], phc: &PasswordHash) -> Result<bool, String> {
        let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
            return Ok(false);
        };
        let algorithm = Algorithm::new(phc.algorithm.as_str()).map_err(|e| e.to_string())?;
        let version = match phc.version {
            Some(v) => Version::try_from(v).map_err(|e| e.to_string())?,
            None => Version::default(),
        };
        let params = Params::try_from(phc).map_err(|e| e.to_string())?;
        let argon2 = Argon2::new(algorithm, version, params);
        let mut buffer = [0u8; Output::MAX_LENGTH];
        let out = buffer
            .get_mut(..expected.len())
            .ok_or("hash output too long")?;
        self.hash_into(&argon2, password, salt.as_ref(), out)
            .map_err(|e| e.to_string())?;
        // `Output`'s equality is constant-time (subtle).
        Ok(Output::new(out).map_err(|e| e.to_string())? == *expected)
    }
}

/// A zeroed block array, or `OutOfMemory` where `vec!` would abort the whole daemon (as the
/// argon2 crate's own allocation does).
fn blocks(count: usize) -> Result<Vec<Block>, argon2::Error> {
    let mut blocks = Vec::new();
    blocks
        .try_reserve_exact(count)
        .map_err(|_| argon2::Error::OutOfMemory)?;
    blocks.resize(count, Block::default());
    Ok(blocks)
}

/// The hashing threads and the queue that feeds them. Dropping it ends the threads once
/// the queued jobs are done.
pub(super) struct Workers {
    /// Where jobs go.
    jobs: Sender<Job>,
}

impl Workers {
    /// Starts `count` threads, each keeping arrays of up to `keep` blocks.
    pub(super) fn start(count: usize, keep: usize) -> std::io::Result<Workers> {
        let (jobs, queue) = crossbeam_channel::unbounded::<Job>();
        for n in 0..count.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("latchkey-hash-{n}"))
                .spawn(move || work(&queue, Scratch::new(keep)))?;
        }
        Ok(Workers { jobs })
    }

    /// Queues a job; fails only when every thread has gone.
    pub(super) fn submit(&self, job: Job) -> Result<(), ()> {
        self.jobs.send(job).map_err(|_| ())
    }
}

/// One thread's loop: run jobs until the queue closes, and let the array go when idle.
fn work(queue: &Receiver<Job>, mut scratch: Scratch) {
    loop {
        match queue.recv_timeout(IDLE_RELEASE) {
            Ok(job) => {
                // A panic in argon2 must not take the thread with it: the caller's reply
                // channel is dropped with the job, so it sees an error, and the next job
                // starts from a fresh array.
                if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut scratch))).is_err() {
                    scratch.blocks = Vec::new();
                }
            }
            Err(RecvTimeoutError::Timeout) => scratch.blocks = Vec::new(),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    use super::*;

    fn small() -> Argon2<'static> {
        let params = Params::new(1024, 2, 1, None).expect("small argon2 parameters are valid");
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    fn parse(phc: &str) -> Option<PasswordHash> {
        PasswordHash::new(phc).ok()
    }

    #[test]
    fn strings_match_the_argon2_crate_both_ways() {
        let argon2 = small();
        let mut scratch = Scratch::new(1024);
        let ours = scratch
            .hash(&argon2, b"correct horse")
            .expect("hashing works");
        assert!(ours.starts_with("$argon2id$v=19$m=1024,t=2,p=1$"), "{ours}");
        // The crate's own verifier accepts ours ...
        let parsed = parse(&ours);
        assert!(parsed
            .as_ref()
            .is_some_and(|p| argon2.verify_password(b"correct horse", p).is_ok()));
        assert!(parsed
            .as_ref()
            .is_some_and(|p| argon2.verify_password(b"correct horsE", p).is_err()));
        // ... and ours accepts the crate's, reusing the same array.
        let theirs = argon2
            .hash_password(b"battery staple")
            .map(|h| h.to_string())
            .expect("the argon2 crate hashes");
        let theirs = parse(&theirs);
        let check = |scratch: &mut Scratch, pw: &[u8]| {
            theirs
                .as_ref()
                .map(|p| scratch.verify(pw, p))
                .unwrap_or(Err("no hash".into()))
        };
        assert_eq!(check(&mut scratch, b"battery staple"), Ok(true));
        assert_eq!(check(&mut scratch, b"battery stapler"), Ok(false));
        // Two hashes of one password differ (fresh salt).
        let again = scratch
            .hash(&argon2, b"correct horse")
            .expect("hashing works");
        assert_ne!(ours, again);
    }

    #[test]
    fn reference_vectors_verify_including_a_larger_memory_cost() {
        // From the argon2 crate's tests (made with the reference implementation); 65536 KiB
        // is more than this scratch keeps, so it takes the one-off allocation.
        let known = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$\
                     CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
        let parsed = parse(known);
        let mut scratch = Scratch::new(1024);
        let check = |scratch: &mut Scratch, pw: &[u8]| {
            parsed
                .as_ref()
                .map(|p| scratch.verify(pw, p))
                .unwrap_or(Err("unparsable".into()))
        };
        assert_eq!(check(&mut scratch, b"password"), Ok(true));
        assert_eq!(check(&mut scratch, b"sassword"), Ok(false));
        assert!(scratch.blocks.len() <= 1024);
    }

    #[test]
    fn threads_run_jobs_and_survive_a_panicking_one() {
        // One thread: if the panic took it, the jobs after it would never run.
        let workers = Workers::start(1, 8);
        let Ok(workers) = workers else {
            unreachable!("threads start");
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let boom: Job = Box::new(|_| panic!("a job that panics"));
        assert!(workers.submit(boom).is_ok());
        assert!(workers.submit(boom_free(tx.clone(), 1)).is_ok());
        assert!(workers.submit(boom_free(tx.clone(), 2)).is_ok());
        assert!(workers.submit(boom_free(tx, 3)).is_ok());
        let wait = Duration::from_secs(10);
        let mut got: Vec<u32> = (0..3).filter_map(|_| rx.recv_timeout(wait).ok()).collect();
        got.sort_unstable();
        assert_eq!(got, [1, 2, 3]);
    }

    #[test]
    fn an_array_too_large_to_allocate_is_an_error_not_an_abort() {
        assert!(matches!(
            blocks(usize::MAX / 1024),
            Err(argon2::Error::OutOfMemory)
        ));
    }

    fn boom_free(tx: std::sync::mpsc::Sender<u32>, n: u32) -> Job {
        Box::new(move |_| {
            let _ = tx.send(n);
        })
    }
}
