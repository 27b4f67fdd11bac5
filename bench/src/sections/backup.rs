//! Online backup (issue 16): what one `backup_read` session costs the calls that run while
//! it reads, at 100k and 1M accounts.
//!
//! One daemon grows through the stages. At each, eight writers toggle `set_status` on random
//! accounts (a user record and an event in one durable transaction, no hashing) and eight
//! readers alternate `get_user` and `find_user`, all in a closed loop, while one more client
//! reads a whole backup and throws the data away. Every call's start and latency is kept. The
//! calls that start while the backup runs are compared with those of a baseline window of
//! the same total length without one, taken half just before the backup and half just after
//! (so a neighbour's load that drifts in or out, or the page cache that the backup's walk
//! leaves colder, falls on both sides alike). Beside the load, a probe overwrites and syncs
//! one 4 KiB block in the daemon's directory every 10 ms: the floor of a durable write at that
//! moment, so a write that waited for the disk can be told from one that waited for the
//! backup.
//!
//! The target: no call waits longer than 100 ms while a backup runs, and reads do not
//! wait for it. Those rows have the target; the others are for the record.
//!
//! On sled the backup keeps the before-image of every record written ahead of its reader
//! (`src/store/sled/backup.rs`), so writers do a little more while it runs; on PostgreSQL it
//! is one REPEATABLE READ transaction that nothing waits for. Both run the same load.

use std::future::Future;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use latchkey_client::{Client, UserStatus};
use rand::RngExt;

use super::Env;
use crate::harness::Daemon;
use crate::report::{count_label, Row, Target};
use crate::setup::{import_users, ok, password_hash, GENEROUS_LIMITS, LONG_TOKENS};
use crate::stats::{secs, Samples};

/// Writing clients of the steady load, one connection each.
const WRITERS: usize = 8;
/// Reading clients of the steady load, one connection each.
const READERS: usize = 8;
/// Accounts imported between two progress lines, so a million does not go by silently.
const IMPORT_STEP: usize = 100_000;
/// The bound on any call while a backup runs, in milliseconds.
const MAX_WAIT_MS: f64 = 100.0;
/// Pause between two syncs of the disk probe: often enough to catch a stall of the disk,
/// rarely enough to add nothing to the daemon's own flushes worth measuring.
const SYNC_EVERY: Duration = Duration::from_millis(10);

/// Grows one daemon through the stages and times the load with and without a backup at each.
pub(crate) async fn run(env: &Env) -> anyhow::Result<Vec<Row>> {
    let s = &env.sizes;
    let daemon = env.daemon("backup", LONG_TOKENS, GENEROUS_LIMITS).await?;
    let hash = password_hash()?;
    let admin = daemon.clients(4).await?;
    let writers = daemon.clients(WRITERS).await?;
    let readers = daemon.clients(READERS).await?;
    let backup_client = daemon.client().await?;
    let mut ids: Vec<u64> = Vec::new();
    let mut rows = Vec::new();
    for &stage in &s.backup_stages {
        let began = Instant::now();
        let from = ids.len();
        while ids.len() < stage {
            let next = (ids.len() + IMPORT_STEP).min(stage);
            ids.extend(import_users(&daemon, &admin, "b", ids.len()..next, &hash).await?);
            env.progress(&format!(
                "{next} accounts ({:.0} imported/s)",
                (next - from) as f64 / began.elapsed().as_secs_f64()
            ));
        }
        let imported = (stage - from) as f64 / began.elapsed().as_secs_f64();
        let label = count_label(stage);
        env.progress(&format!(
            "{label} accounts: {WRITERS} writers and {READERS} readers, then a backup read \
             while they run"
        ));
        let accounts = Arc::new(ids.clone());
        let rss_before = daemon.rss_mib()?.0;
        let window = measure(
            &writers,
            &readers,
            accounts,
            secs(s.warmup_secs),
            secs(s.backup_before_secs),
            daemon.dir().join("sync-probe"),
            read_backup(&daemon, &backup_client),
        )
        .await
        .map_err(|e| daemon.failed(e))?;
        let rss_after = daemon.rss_mib()?.0;
        env.progress(&format!(
            "backup of {:.1} MB in {:.2} s; {} writes and {} reads during it",
            window.backup.bytes as f64 / 1e6,
            window.during.as_secs_f64(),
            window.writes.during.len(),
            window.reads.during.len()
        ));
        rows.push(Row::new(
            "backup",
            format!("import_users, up to {label} accounts"),
            imported,
            "accounts/s",
        ));
        rows.extend(backup_rows(&label, &window, rss_before, rss_after));
        for (kind, calls) in [
            ("set_status", &window.writes),
            ("get_user/find_user", &window.reads),
        ] {
            rows.extend(call_rows(&label, kind, calls));
        }
        rows.extend(sync_rows(&label, &window.syncs));
    }
    Ok(rows)
}

/// The rows about the backup itself: how long, how big, how fast, its own calls, and what the
/// daemon's memory while it ran and once the window was over.
fn backup_rows(label: &str, w: &Window, rss_before: f64, rss_after: f64) -> Vec<Row> {
    let b = &w.backup;
    let seconds = w.during.as_secs_f64();
    let mb = b.bytes as f64 / 1e6;
    vec![
        Row::new(
            "backup",
            format!("backup duration, {label} accounts"),
            seconds,
            "s",
        ),
        Row::new("backup", format!("backup size, {label} accounts"), mb, "MB"),
        Row::new(
            "backup",
            format!("backup rate, {label} accounts"),
            mb / seconds.max(1e-9),
            "MB/s",
        ),
        Row::new(
            "backup",
            format!("backup_read calls, {label} accounts"),
            b.calls.len() as f64,
            "",
        ),
        Row::new(
            "backup",
            format!("backup_read first call (starts it), {label} accounts"),
            b.first_us / 1000.0,
            "ms",
        ),
        Row::new(
            "backup",
            format!("backup_read p50, {label} accounts"),
            b.calls.p50() / 1000.0,
            "ms",
        ),
        Row::new(
            "backup",
            format!("backup_read max, {label} accounts"),
            b.calls.max_us() / 1000.0,
            "ms",
        ),
        Row::new(
            "backup",
            format!("daemon RSS growth while the backup ran, {label} accounts"),
            b.rss_peak_mib - rss_before,
            "MiB",
        ),
        Row::new(
            "backup",
            format!("daemon RSS growth, still there after the backup, {label} accounts"),
            rss_after - rss_before,
            "MiB",
        ),
    ]
}

/// p50, p99 and max of one kind of call with the backup against without, its rate, and how
/// many calls took longer than the bound.
fn call_rows(label: &str, kind: &str, c: &Split) -> Vec<Row> {
    let (with, without) = (&c.during, &c.baseline);
    let row = |what: &str, value: f64, base: f64, unit: &'static str| {
        Row::new(
            "backup",
            format!("{kind} {what} during backup, {label} accounts"),
            value,
            unit,
        )
        .baseline(base)
    };
    let over = |s: &Samples| s.count_above_us(MAX_WAIT_MS * 1000.0) as f64;
    vec![
        row("p50", with.p50(), without.p50(), "µs"),
        row("p99", with.p99(), without.p99(), "µs"),
        row(
            "max",
            with.max_us() / 1000.0,
            without.max_us() / 1000.0,
            "ms",
        )
        .target(Target::AtMost(MAX_WAIT_MS)),
        row("rate", with.rate(), without.rate(), "calls/s"),
        row("calls over 100 ms", over(with), over(without), ""),
    ]
}

/// The disk probe's p99 and max, with the backup against without.
fn sync_rows(label: &str, c: &Split) -> Vec<Row> {
    let row = |what: &str, value: f64, base: f64| {
        Row::new(
            "backup",
            format!("4 KiB write + fdatasync {what} during backup, {label} accounts"),
            value,
            "ms",
        )
        .baseline(base)
    };
    vec![
        row("p99", c.during.p99() / 1000.0, c.baseline.p99() / 1000.0),
        row(
            "max",
            c.during.max_us() / 1000.0,
            c.baseline.max_us() / 1000.0,
        ),
    ]
}

/// One kind of call, split by when each call started.
struct Split {
    /// The calls that started while the backup ran.
    during: Samples,
    /// The calls of the baseline window: as long as the backup, half just before it and
    /// half just after.
    baseline: Samples,
}

/// What one measurement gave.
struct Window {
    /// The writers' calls.
    writes: Split,
    /// The readers' calls.
    reads: Split,
    /// The disk probe's syncs.
    syncs: Split,
    /// The backup's own figures.
    backup: BackupRun,
    /// How long the backup ran, first call to last reply.
    during: Duration,
}

/// One whole backup read.
struct BackupRun {
    /// Bytes of the backup file (decoded).
    bytes: u64,
    /// Latency of every `backup_read` call.
    calls: Samples,
    /// Latency of the first call, which starts the backup, in microseconds.
    first_us: f64,
    /// The daemon's largest RSS seen between chunks, in MiB.
    rss_peak_mib: f64,
}

/// Reads one whole backup through `client`, counting the bytes and throwing them away.
async fn read_backup(daemon: &Daemon, client: &Client) -> anyhow::Result<BackupRun> {
    let began = Instant::now();
    let mut session = None;
    let mut bytes = 0u64;
    let mut nanos = Vec::new();
    let mut rss_peak_mib = daemon.rss_mib()?.0;
    loop {
        let t0 = Instant::now();
        let chunk = ok("backup_read", client.backup_read(session).await)?;
        nanos.push(t0.elapsed().as_nanos() as u64);
        bytes += base64_decoded_len(&chunk.data);
        rss_peak_mib = rss_peak_mib.max(daemon.rss_mib()?.0);
        if chunk.last {
            break;
        }
        session = Some(chunk.session);
    }
    let first_us = nanos.first().map_or(f64::NAN, |&n| n as f64 / 1000.0);
    Ok(BackupRun {
        bytes,
        calls: Samples::new(nanos, began.elapsed()),
        first_us,
        rss_peak_mib,
    })
}

/// The length of what standard padded base64 decodes to, without decoding it.
fn base64_decoded_len(data: &str) -> u64 {
    let padding = data.bytes().rev().take_while(|&b| b == b'=').count();
    (data.len() / 4 * 3).saturating_sub(padding) as u64
}

/// Each call of one load task: when it started (since the load began) and how long it took,
/// both in nanoseconds.
type Calls = Vec<(u64, u64)>;

/// Runs the load in a closed loop: after `warmup`, `before` seconds of baseline, then
/// `backup` while the load goes on, then as much baseline again as the backup took less what
/// was taken before it; the baseline is the last half-backup-length of the time before (all
/// of it if the backup took longer than twice `before`) and the rest after.
async fn measure<F>(
    writers: &[Client],
    readers: &[Client],
    accounts: Arc<Vec<u64>>,
    warmup: Duration,
    before: Duration,
    probe: PathBuf,
    backup: F,
) -> anyhow::Result<Window>
where
    F: Future<Output = anyhow::Result<BackupRun>>,
{
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let sequence = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (n, client) in writers.iter().chain(readers).enumerate() {
        let writes = n < writers.len();
        let (client, stop, sequence, accounts) = (
            client.clone(),
            stop.clone(),
            sequence.clone(),
            accounts.clone(),
        );
        tasks.push((
            if writes { Role::Write } else { Role::Read },
            tokio::spawn(async move {
                let mut calls = Calls::new();
                while !stop.load(Ordering::Relaxed) {
                    let i = rand::rng().random_range(0..accounts.len());
                    let id = accounts[i];
                    let seq = sequence.fetch_add(1, Ordering::Relaxed);
                    let t0 = Instant::now();
                    if writes {
                        let status = if seq % 2 == 0 {
                            UserStatus::Disabled
                        } else {
                            UserStatus::Active
                        };
                        ok("set_status", client.set_status(id, status).await)?;
                    } else if seq % 2 == 0 {
                        ok("get_user", client.get_user(id).await)?;
                    } else {
                        let email = format!("b{i}@bench.example");
                        ok("find_user", client.find_user(&email).await)?;
                    }
                    let took = t0.elapsed().as_nanos() as u64;
                    calls.push(((t0 - origin).as_nanos() as u64, took));
                }
                anyhow::Ok(calls)
            }),
        ));
    }
    let probe_stop = stop.clone();
    tasks.push((
        Role::Sync,
        tokio::task::spawn_blocking(move || sync_probe(&probe, origin, &probe_stop)),
    ));
    // Stop the load however this ends, so no task outlives a failed backup.
    let stopper = StopOnDrop(stop.clone());
    tokio::time::sleep(warmup + before).await;
    let started = Instant::now();
    let run = backup.await?;
    let ended = Instant::now();
    let during = ended - started;
    let before_used = before.min(during / 2);
    tokio::time::sleep(during - before_used).await;
    drop(stopper);
    let after_end = Instant::now();
    let nanos = |t: Instant| (t - origin).as_nanos() as u64;
    let (base_from, start, end, base_to) = (
        nanos(started - before_used),
        nanos(started),
        nanos(ended),
        nanos(after_end),
    );
    let (mut writes, mut reads, mut syncs) = (Calls::new(), Calls::new(), Calls::new());
    for (role, task) in tasks {
        let calls = task.await.context("a load task panicked")??;
        match role {
            Role::Write => writes.extend(calls),
            Role::Read => reads.extend(calls),
            Role::Sync => syncs.extend(calls),
        }
    }
    let split = |calls: Calls| {
        let during_calls = calls
            .iter()
            .filter(|(t, _)| (start..end).contains(t))
            .map(|&(_, n)| n)
            .collect();
        let baseline_nanos = calls
            .iter()
            .filter(|(t, _)| (base_from..start).contains(t) || (end..base_to).contains(t))
            .map(|&(_, n)| n)
            .collect();
        Split {
            during: Samples::new(during_calls, during),
            baseline: Samples::new(baseline_nanos, during),
        }
    };
    Ok(Window {
        writes: split(writes),
        reads: split(reads),
        syncs: split(syncs),
        backup: run,
        during,
    })
}

/// What a task of [`measure`] does.
#[derive(Clone, Copy)]
enum Role {
    /// `set_status`.
    Write,
    /// `get_user` and `find_user`.
    Read,
    /// The disk probe ([`sync_probe`]).
    Sync,
}

/// Overwrites one block of `path` and syncs it, every [`SYNC_EVERY`] until `stop`: what one
/// durable write costs the disk at that moment, the floor of the daemon's group commit, so
/// a slow write can be told from a slow disk.
fn sync_probe(path: &Path, origin: Instant, stop: &AtomicBool) -> anyhow::Result<Calls> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let block = [0x5a_u8; 4096];
    let mut calls = Calls::new();
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        file.write_all_at(&block, 0)?;
        file.sync_data()?;
        calls.push((
            (t0 - origin).as_nanos() as u64,
            t0.elapsed().as_nanos() as u64,
        ));
        std::thread::sleep(SYNC_EVERY);
    }
    Ok(calls)
}

/// Sets the flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_length_counts_the_padding() {
        assert_eq!(base64_decoded_len(""), 0);
        assert_eq!(base64_decoded_len("YQ=="), 1);
        assert_eq!(base64_decoded_len("YWI="), 2);
        assert_eq!(base64_decoded_len("YWJj"), 3);
    }
}
