//! Hash-bound calls (`verify_password`, `complete_password_reset`) against raw argon2id with
//! the daemon's parameters on one thread per core: how close the daemon comes to the
//! machine's hashing ceiling, and, where it falls short, whether it spends more CPU per call
//! or leaves cores idle.
//!
//! On PostgreSQL, `complete_password_reset` is one hash plus a transaction on the server,
//! so its baseline is both: raw hashing and a pgbench script with the statements of its
//! transaction ([`Baseline::consume`]), each measured alone at full load and combined as
//! sequential costs (`1 / (1/hash + 1/transaction)`). The target, within 1.2x of that cost,
//! is a rate of at least 1/1.2 of it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use latchkey_client::Client;

use super::pg_scripts::Baseline;
use super::Env;
use crate::harness::{cores, process_cpu, Daemon};
use crate::report::{Row, Target};
use crate::setup::{
    argon2, import_users, issue_tokens, ok, password_hash, CLIENT_IP, GENEROUS_LIMITS, LONG_TOKENS,
    NEW_PASSWORD, PASSWORD,
};
use crate::stats::{closed_loop, secs, Samples};

/// What the raw baseline does per operation.
#[derive(Clone, Copy)]
enum RawOp {
    /// Parse a stored PHC string and verify a password against it, as a login does.
    Verify,
    /// Hash a password with a fresh salt, as a password change does.
    Hash,
}

/// Raw argon2id operations on one thread per core, counted over `measure` after a short
/// warm-up: the ceiling the daemon's hash-bound calls can reach on this machine. Returns the
/// operations begun inside the window, the window, and every operation done (warm-up
/// included).
fn raw_argon2(op: RawOp, warmup: Duration, measure: Duration) -> anyhow::Result<RawRun> {
    let argon2 = argon2()?;
    let stored = password_hash()?;
    let start = Instant::now() + warmup;
    let end = start + measure;
    let failed = AtomicBool::new(false);
    let total = AtomicU64::new(0);
    let all = AtomicU64::new(0);
    let (cpu_before, faults_before) = process_cpu(std::process::id())?;
    let wall = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..cores() {
            scope.spawn(|| {
                let mut count = 0;
                while Instant::now() < end {
                    all.fetch_add(1, Ordering::Relaxed);
                    let began = Instant::now();
                    let good = match op {
                        RawOp::Verify => PasswordHash::new(&stored).is_ok_and(|parsed| {
                            argon2.verify_password(PASSWORD.as_bytes(), &parsed).is_ok()
                        }),
                        RawOp::Hash => argon2.hash_password(NEW_PASSWORD.as_bytes()).is_ok(),
                    };
                    failed.fetch_or(!good, Ordering::Relaxed);
                    // Count operations begun inside the window, as the closed loop does.
                    if began >= start && began < end {
                        count += 1;
                    }
                }
                total.fetch_add(count, Ordering::Relaxed);
            });
        }
    });
    if failed.load(Ordering::Relaxed) {
        bail!("raw argon2 failed");
    }
    let (cpu_after, faults_after) = process_cpu(std::process::id())?;
    Ok(RawRun {
        ops: total.load(Ordering::Relaxed),
        window: measure,
        cost: Cost {
            cpu: cpu_after.saturating_sub(cpu_before),
            faults: faults_after.saturating_sub(faults_before),
            wall: wall.elapsed(),
            ops: all.load(Ordering::Relaxed),
        },
    })
}

/// One window of raw hashing.
struct RawRun {
    /// Operations begun inside the window.
    ops: u64,
    /// The window.
    window: Duration,
    /// What the whole run (warm-up included) cost.
    cost: Cost,
}

/// CPU time spent by a process over a run, the run's wall time and the operations done.
#[derive(Clone, Copy, Default)]
struct Cost {
    /// User and system CPU time of the process.
    cpu: Duration,
    /// Minor page faults of the process.
    faults: u64,
    /// Wall time.
    wall: Duration,
    /// Operations completed.
    ops: u64,
}

impl Cost {
    /// Adds another run's cost to this one.
    fn add(&mut self, other: Cost) {
        self.cpu += other.cpu;
        self.faults += other.faults;
        self.wall += other.wall;
        self.ops += other.ops;
    }

    /// CPU milliseconds per operation.
    fn cpu_ms_per_op(&self) -> f64 {
        self.cpu.as_secs_f64() * 1000.0 / self.ops.max(1) as f64
    }

    /// Minor page faults per operation.
    fn faults_per_op(&self) -> f64 {
        self.faults as f64 / self.ops.max(1) as f64
    }

    /// Cores kept busy on average.
    fn cores_busy(&self) -> f64 {
        self.cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }
}

/// Operations per second over pooled raw windows.
fn pooled_rate(windows: &[RawRun]) -> f64 {
    let ops: u64 = windows.iter().map(|w| w.ops).sum();
    let time: Duration = windows.iter().map(|w| w.window).sum();
    ops as f64 / time.as_secs_f64().max(1e-9)
}

/// Runs a closed loop against `daemon` and reports what it cost the daemon's process.
async fn costed<F>(daemon: &Daemon, cost: &mut Cost, run: F) -> anyhow::Result<Samples>
where
    F: Future<Output = anyhow::Result<Samples>>,
{
    let ((cpu, faults), wall) = (process_cpu(daemon.pid())?, Instant::now());
    let samples = run.await?;
    let (cpu_after, faults_after) = process_cpu(daemon.pid())?;
    cost.add(Cost {
        cpu: cpu_after.saturating_sub(cpu),
        faults: faults_after.saturating_sub(faults),
        wall: wall.elapsed(),
        ops: samples.all,
    });
    Ok(samples)
}

/// Measures both hash-bound calls against their raw baselines in alternating rounds.
pub(crate) async fn run(env: &Env) -> anyhow::Result<Vec<Row>> {
    let s = &env.sizes;
    // Hash-bound windows need a longer warm-up: the hashing queue must fill first.
    let (warmup, measure) = (secs((s.warmup_secs * 2.0).max(0.2)), secs(s.hash_secs));
    let raw = |op| tokio::task::block_in_place(|| raw_argon2(op, warmup, measure));

    let daemon = env.daemon("hash", LONG_TOKENS, GENEROUS_LIMITS).await?;
    // Four callers per core keep every hashing slot busy with more waiting.
    let callers = 4 * cores();
    let conns = daemon.clients(callers).await?;
    let hash = password_hash()?;
    import_users(&daemon, &conns, "login", 0..1, &hash).await?;
    let consume = match &env.harness.postgres {
        Some(cluster) => {
            env.progress("preparing the pgbench consume script's database");
            // As many accounts as the measured daemon gets (a few per hash a window does).
            let users = if s.rounds > 1 { 2000 } else { 100 };
            Some((cluster, Baseline::consume(env, cluster, users).await?))
        }
        None => None,
    };
    let mut consume_runs = Vec::new();

    // Each completion uses up its token and revokes the user's others: one user and one
    // token per call. Before each window the queue is topped up to twice what raw hashing
    // just did in a window, so the window never runs dry.
    let queue = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut provisioned = 0;
    let (mut raw_verify, mut raw_hash) = (Vec::new(), Vec::new());
    let (mut verify, mut complete) = (Vec::new(), Vec::new());
    let (mut raw_verify_cost, mut raw_hash_cost) = (Cost::default(), Cost::default());
    let (mut verify_cost, mut complete_cost) = (Cost::default(), Cost::default());
    for round in 1..=s.rounds {
        env.progress(&format!(
            "round {round}/{}: raw verify, verify_password, raw hash, complete_password_reset \
             ({callers} clients)",
            s.rounds
        ));
        let run = raw(RawOp::Verify)?;
        raw_verify_cost.add(run.cost);
        raw_verify.push(run);
        let run = closed_loop(&conns, 1, warmup, measure, |c: Client, _| async move {
            ok(
                "verify_password",
                c.verify_password("login0@bench.example", PASSWORD, Some(CLIENT_IP))
                    .await,
            )?;
            Ok(true)
        });
        verify.push(costed(&daemon, &mut verify_cost, run).await?);
        let run = raw(RawOp::Hash)?;
        let window = (warmup + measure).as_secs_f64();
        let wanted = (run.ops as f64 / run.window.as_secs_f64() * window * 2.0) as usize + callers;
        raw_hash_cost.add(run.cost);
        raw_hash.push(run);
        if let Some((cluster, b)) = &consume {
            let whole = s.hash_secs.ceil() as u64;
            consume_runs.push(tokio::task::block_in_place(|| {
                cluster.pgbench(&b.database, &b.script, callers, whole, &b.defines())
            })?);
        }
        let have = queue.lock().map_or(0, |q| q.len());
        if have < wanted {
            let more = wanted - have;
            let range = provisioned..provisioned + more;
            provisioned += more;
            let ids = import_users(&daemon, &conns, "complete", range, &hash).await?;
            let tokens = issue_tokens(&daemon, &conns, ids.into_iter(), 64).await?;
            if let Ok(mut q) = queue.lock() {
                q.extend(tokens);
            }
        }
        let queue = queue.clone();
        let run = closed_loop(&conns, 1, warmup, measure, move |c: Client, _| {
            let token = queue.lock().map(|mut q| q.pop()).ok().flatten();
            async move {
                let Some(token) = token else {
                    return Ok(false);
                };
                ok(
                    "complete_password_reset",
                    c.complete_password_reset(
                        &token,
                        NEW_PASSWORD,
                        Some(NEW_PASSWORD),
                        Some(CLIENT_IP),
                    )
                    .await,
                )?;
                Ok(true)
            }
        });
        complete.push(costed(&daemon, &mut complete_cost, run).await?);
    }
    let (raw_verify, raw_hash) = (pooled_rate(&raw_verify), pooled_rate(&raw_hash));
    let (verify, complete) = (Samples::pooled(verify), Samples::pooled(complete));
    let complete_vs_hash = Row::new(
        "hash",
        format!("complete_password_reset, {callers} clients"),
        complete.rate(),
        "calls/s",
    )
    .baseline(raw_hash);
    // On PostgreSQL the call is a hash plus a server transaction; its target is against
    // both, further down.
    let complete_vs_hash = if consume.is_some() {
        complete_vs_hash
    } else {
        complete_vs_hash.target(Target::RatioAtLeast(0.9))
    };
    let mut rows = vec![
        Row::new(
            "hash",
            "raw argon2id verify, one thread per core",
            raw_verify,
            "ops/s",
        ),
        Row::new(
            "hash",
            format!("verify_password, {callers} clients"),
            verify.rate(),
            "calls/s",
        )
        .baseline(raw_verify)
        .target(Target::RatioAtLeast(0.9)),
        Row::new(
            "hash",
            "raw argon2id hash, one thread per core",
            raw_hash,
            "ops/s",
        ),
        complete_vs_hash,
        Row::new(
            "hash",
            format!("complete_password_reset p50, {callers} clients"),
            complete.p50(),
            "µs",
        ),
        // Where a throughput ratio falls short, these tell whether the daemon spends more CPU
        // per call than raw hashing does, or leaves cores idle.
        Row::new(
            "hash",
            "CPU per verify_password (daemon process)",
            verify_cost.cpu_ms_per_op(),
            "ms",
        )
        .baseline(raw_verify_cost.cpu_ms_per_op()),
        Row::new(
            "hash",
            "page faults per verify_password (daemon process)",
            verify_cost.faults_per_op(),
            "faults",
        )
        .baseline(raw_verify_cost.faults_per_op()),
        Row::new(
            "hash",
            "cores busy during verify_password",
            verify_cost.cores_busy(),
            "cores",
        )
        .baseline(raw_verify_cost.cores_busy()),
        Row::new(
            "hash",
            "CPU per complete_password_reset (daemon process)",
            complete_cost.cpu_ms_per_op(),
            "ms",
        )
        .baseline(raw_hash_cost.cpu_ms_per_op()),
        Row::new(
            "hash",
            "page faults per complete_password_reset (daemon process)",
            complete_cost.faults_per_op(),
            "faults",
        )
        .baseline(raw_hash_cost.faults_per_op()),
        Row::new(
            "hash",
            "cores busy during complete_password_reset",
            complete_cost.cores_busy(),
            "cores",
        )
        .baseline(raw_hash_cost.cores_busy()),
    ];
    if consume.is_some() {
        let transaction = Samples::pooled(consume_runs);
        let combined = 1.0 / (1.0 / raw_hash.max(1e-9) + 1.0 / transaction.rate().max(1e-9));
        rows.push(Row::new(
            "hash",
            format!("pgbench consume-transaction script, {callers} clients"),
            transaction.rate(),
            "tx/s",
        ));
        rows.push(
            Row::new(
                "hash",
                format!(
                    "complete_password_reset, {callers} clients (baseline raw hash + consume \
                     transaction)"
                ),
                complete.rate(),
                "calls/s",
            )
            .baseline(combined)
            .target(Target::RatioAtLeast(1.0 / 1.2)),
        );
    }
    Ok(rows)
}
