//! `latchkey-bench`: starts the real `latchkeyd` and measures it against baselines it runs
//! itself, in the same run, on the same machine, so each figure is a ratio that survives a
//! change of hardware (issue 8; the figures and where we stand are in BENCHMARKS.md).
//!
//! What is measured, each against its baseline:
//! - cheap calls (`check_reset_token`, `health`) at 1, 16 and 64 clients against a bare tarpc
//!   JSON echo service on the same kind of socket, run in its own process (this binary
//!   re-executed with the hidden `--echo-server SOCKET`), so daemon and baseline are like for
//!   like;
//! - hash-bound calls (`verify_password`, `complete_password_reset`) against raw argon2id with
//!   the daemon's parameters on one thread per core;
//! - `check_reset_token` latency with 1k, 100k and 1M live tokens;
//! - cheap-call latency while hash-bound calls saturate the cores;
//! - `request_password_reset` for known against unknown addresses (means, percentiles and
//!   Welch's t);
//! - the daemon's RSS after a million distinct rate-limiter keys and after they idle out;
//! - durable write throughput at 1 and 32 writers.
//!
//! Criterion does not fit here: it times closures in its own process, while every figure
//! here is a daemon in another process driven by many concurrent clients, compared with a
//! baseline measured in the same run.
//!
//! The bench exits non-zero only when it cannot measure (the daemon does not start, a call
//! fails); a figure that misses its target is reported as MISS, never as a failure.
//! `--short` runs everything at tiny sizes in well under a minute, for CI.

use std::fmt::Write as _;
use std::fs::File;
use std::future::Future;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};
use clap::{Parser, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use latchkey_client::{
    ApiError, Client, ConnectOptions, Error as ClientError, ImportUser, UserRef,
};
use rand::seq::SliceRandom;
use rand::RngExt;
use serde::Serialize;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Json;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::LengthDelimitedCodec;

/// The argon2id parameters written into every bench daemon's configuration and used by the
/// raw hashing baseline: the daemon's defaults (the OWASP minimum, which it refuses to go
/// below), stated here so both sides are certain to use the same.
const ARGON2_MEMORY_KIB: u32 = 19456;
/// See [`ARGON2_MEMORY_KIB`].
const ARGON2_ITERATIONS: u32 = 2;
/// See [`ARGON2_MEMORY_KIB`].
const ARGON2_PARALLELISM: u32 = 1;

/// The password of every account the bench imports; long enough and not on the blocklist.
const PASSWORD: &str = "bench password, correct horse";
/// The new password set by `complete_password_reset`.
const NEW_PASSWORD: &str = "bench password, battery staple";
/// The client IP passed with calls that take one; rate limits are generous enough that one
/// IP never hits them, except in the limiter-memory section, which uses a million.
const CLIENT_IP: &str = "192.0.2.10";
/// Largest frame, the daemon's default; import batches are sized to stay below it.
const MAX_FRAME_BYTES: usize = 64 * 1024;
/// Accounts per `import_users` call: about 200 bytes of JSON each keeps a batch well below
/// the frame cap.
const IMPORT_BATCH: usize = 200;
/// The deadline of every call: far above any latency we expect, so a slow call is measured
/// rather than turned into an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a daemon may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon may take to exit on SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// latchkey-bench: measures latchkeyd against baselines it runs in the same process tree.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Tiny sizes, for CI: every section runs, in well under a minute; figures are rough.
    #[arg(long)]
    short: bool,
    /// Only these sections (comma-separated); all by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
    /// The latchkeyd binary; default: `latchkeyd` next to this executable.
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// The daemons' log filter (`[log] level`), to see what logging costs. Unset: the
    /// daemon's own default, since the lines it writes are part of what a call costs.
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Keep the daemons' temporary directories (logs, databases) and print where they are.
    #[arg(long)]
    keep: bool,
    /// Keep the limiter-memory daemon running this many seconds after its last figure, so
    /// its memory can be examined (pmap, gdb) before it is stopped.
    #[arg(long, value_name = "SECS")]
    hold_rss: Option<u64>,
    /// Internal: serve the echo baseline on this socket until killed.
    #[arg(long, hide = true)]
    echo_server: Option<PathBuf>,
}

/// The parts of the bench, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Section {
    /// Cheap calls against the echo baseline.
    Cheap,
    /// Hash-bound calls against raw argon2id.
    Hash,
    /// `check_reset_token` latency as live tokens grow.
    Tokens,
    /// Cheap-call latency while hashing saturates the cores.
    Saturation,
    /// `request_password_reset`, known against unknown addresses.
    Timing,
    /// Memory after a million limiter keys and after they idle out.
    Rss,
    /// Durable write throughput.
    Writes,
}

impl Section {
    const ALL: [Section; 7] = [
        Section::Cheap,
        Section::Hash,
        Section::Tokens,
        Section::Saturation,
        Section::Timing,
        Section::Rss,
        Section::Writes,
    ];
}

/// How big each measurement is; the full and the short run differ only here.
///
/// Each comparison runs in `rounds` rounds that alternate the daemon and its baseline
/// window by window, and the windows of each side are pooled: the machine is shared, and a
/// neighbour's build that starts halfway through then slows both sides alike instead of one.
struct Sizes {
    /// Rounds of each comparison.
    rounds: usize,
    /// Unmeasured seconds before each timed window, so the closed loop is in its steady state.
    warmup_secs: f64,
    /// Measured seconds per cheap-call window (one call kind at one client count).
    cheap_secs: f64,
    /// Measured seconds per hash-bound window (daemon and raw baseline alike).
    hash_secs: f64,
    /// Live-token counts at which `check_reset_token` is timed, against a daemon that holds
    /// the first count throughout.
    token_stages: Vec<usize>,
    /// Accounts the tokens are spread over (each holds at most a handful, like real users).
    token_users: usize,
    /// Timed `check_reset_token` calls per stage and side.
    token_samples: usize,
    /// Measured seconds per window of cheap calls, idle or under hashing saturation.
    saturation_secs: f64,
    /// `request_password_reset` calls per kind (known, unknown).
    timing_each: usize,
    /// Distinct limiter keys created.
    rss_keys: usize,
    /// `per_secs` of the burst-1 bucket the limiter-memory section fills. governor's cleanup
    /// (`retain_recent`) drops a key once its theoretical arrival time is a whole period old,
    /// which for one call is two periods after it: twice this must exceed the time it takes
    /// to make every key, or the first keys go before the last are made.
    rss_key_secs: u64,
    /// The daemon's `[limits] cleanup_interval_secs` in the memory section.
    rss_cleanup_secs: u64,
    /// Measured seconds per durable-write run.
    write_secs: f64,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            rounds: 5,
            warmup_secs: 0.3,
            cheap_secs: 1.0,
            hash_secs: 2.0,
            token_stages: vec![1_000, 100_000, 1_000_000],
            token_users: 100_000,
            token_samples: 5_000,
            saturation_secs: 2.0,
            timing_each: 10_000,
            rss_keys: 1_000_000,
            rss_key_secs: 30,
            rss_cleanup_secs: 5,
            write_secs: 5.0,
        }
    }

    fn short() -> Sizes {
        Sizes {
            rounds: 1,
            warmup_secs: 0.1,
            cheap_secs: 0.3,
            hash_secs: 1.0,
            token_stages: vec![100, 1_000],
            token_users: 100,
            token_samples: 300,
            saturation_secs: 1.0,
            timing_each: 200,
            rss_keys: 10_000,
            rss_key_secs: 1,
            rss_cleanup_secs: 1,
            write_secs: 0.5,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match &args.echo_server {
        Some(socket) => echo_server(socket),
        None => run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("latchkey-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let daemon_exe = match &args.daemon {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("cannot find this executable")?
            .with_file_name("latchkeyd"),
    };
    if !daemon_exe.is_file() {
        bail!(
            "no daemon binary at {} (build it with `cargo build --release --bin latchkeyd`, \
             or pass --daemon PATH)",
            daemon_exe.display()
        );
    }
    let sizes = if args.short {
        Sizes::short()
    } else {
        Sizes::full()
    };
    let sections: Vec<Section> = if args.only.is_empty() {
        Section::ALL.to_vec()
    } else {
        Section::ALL
            .into_iter()
            .filter(|s| args.only.contains(s))
            .collect()
    };
    let machine = Machine::read();
    eprintln!(
        "latchkey-bench {} mode: {} cores ({}), load average {}",
        if args.short { "short" } else { "full" },
        machine.cores,
        machine.cpu,
        machine.load_start
    );
    let env = Env {
        daemon_exe,
        log_level: args.log_level.clone(),
        keep: args.keep,
        hold_rss: args.hold_rss,
        sizes,
        started: Instant::now(),
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    let mut report = Report::default();
    // A section that cannot measure is reported and the others still run: one broken part
    // should not cost the figures of a ten-minute run. The exit status still says so.
    let mut failed = Vec::new();
    runtime.block_on(async {
        for section in &sections {
            env.progress(&format!("== {section:?}"));
            let rows = match section {
                Section::Cheap => cheap_calls(&env).await,
                Section::Hash => hash_bound(&env).await,
                Section::Tokens => token_scaling(&env).await,
                Section::Saturation => saturation(&env).await,
                Section::Timing => reset_timing(&env).await,
                Section::Rss => limiter_memory(&env).await,
                Section::Writes => durable_writes(&env).await,
            };
            match rows {
                Ok(rows) => report.rows.extend(rows),
                Err(e) => {
                    eprintln!("latchkey-bench: section {section:?} failed: {e:#}");
                    failed.push(format!("{section:?}"));
                }
            }
        }
    });
    let mut machine = machine;
    machine.finish();
    report.machine = Some(machine);
    report.mode = if args.short { "short" } else { "full" }.into();
    report.seconds = env.started.elapsed().as_secs_f64();
    print!("{}", report.markdown());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).context("cannot encode the results")?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if !failed.is_empty() {
        bail!("could not measure: {}", failed.join(", "));
    }
    Ok(())
}

/// What every section needs.
struct Env {
    /// The daemon binary.
    daemon_exe: PathBuf,
    /// `[log] level` for the daemons, if not their default.
    log_level: Option<String>,
    /// Keep temporary directories.
    keep: bool,
    /// Seconds to keep the limiter-memory daemon alive after measuring it.
    hold_rss: Option<u64>,
    /// How big the measurements are.
    sizes: Sizes,
    /// When the run began, for progress lines.
    started: Instant,
}

impl Env {
    /// A progress line on stderr (the results go to stdout).
    fn progress(&self, what: &str) {
        eprintln!("[{:7.1}s] {what}", self.started.elapsed().as_secs_f64());
    }

    /// Starts a daemon with the bench's base settings plus `reset` and `limits` sections.
    async fn daemon(&self, name: &str, reset: &str, limits: &str) -> anyhow::Result<Daemon> {
        Daemon::start(self, name, reset, limits).await
    }
}

// ---------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------

/// What a figure should be.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
enum Target {
    /// The ratio to the baseline is at least this.
    RatioAtLeast(f64),
    /// The ratio to the baseline is at most this.
    RatioAtMost(f64),
    /// The ratio to the baseline differs from 1 by at most this fraction.
    RatioWithin(f64),
    /// The value is at most this (in the row's unit).
    AtMost(f64),
    /// The absolute value is below this.
    AbsBelow(f64),
}

impl Target {
    fn met(self, value: f64, ratio: Option<f64>) -> Option<bool> {
        Some(match self {
            Target::RatioAtLeast(x) => ratio? >= x,
            Target::RatioAtMost(x) => ratio? <= x,
            Target::RatioWithin(x) => (ratio? - 1.0).abs() <= x,
            Target::AtMost(x) => value <= x,
            Target::AbsBelow(x) => value.abs() < x,
        })
    }

    fn describe(self, unit: &str) -> String {
        match self {
            Target::RatioAtLeast(x) => format!(">= {x:.2}x"),
            Target::RatioAtMost(x) => format!("<= {x:.2}x"),
            Target::RatioWithin(x) => format!("within {:.0}%", x * 100.0),
            Target::AtMost(x) => format!("<= {} {unit}", number(x)),
            Target::AbsBelow(x) => format!("|t| < {x}"),
        }
    }
}

/// One measured figure.
#[derive(Clone, Debug, Serialize)]
struct Row {
    /// Which part of the bench.
    section: &'static str,
    /// What was measured.
    figure: String,
    /// The measurement.
    value: f64,
    /// Its unit.
    unit: &'static str,
    /// The baseline measured in the same run, if the figure has one.
    baseline: Option<f64>,
    /// `value / baseline`.
    ratio: Option<f64>,
    /// What it should be, if the issue sets a target.
    target: Option<Target>,
    /// Whether the target is met.
    pass: Option<bool>,
}

impl Row {
    fn new(
        section: &'static str,
        figure: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Row {
        Row {
            section,
            figure: figure.into(),
            value,
            unit,
            baseline: None,
            ratio: None,
            target: None,
            pass: None,
        }
    }

    fn baseline(mut self, baseline: f64) -> Row {
        self.baseline = Some(baseline);
        self.ratio = (baseline != 0.0).then(|| self.value / baseline);
        self.pass = self.target.and_then(|t| t.met(self.value, self.ratio));
        self
    }

    fn target(mut self, target: Target) -> Row {
        self.target = Some(target);
        self.pass = target.met(self.value, self.ratio);
        self
    }
}

/// Everything measured in one run.
#[derive(Default, Serialize)]
struct Report {
    /// `full` or `short`.
    mode: String,
    /// Where it ran.
    machine: Option<Machine>,
    /// How long the run took.
    seconds: f64,
    /// The figures.
    rows: Vec<Row>,
}

impl Report {
    /// The results as a Markdown table, readable in a terminal and ready for BENCHMARKS.md.
    fn markdown(&self) -> String {
        let mut out = String::new();
        if let Some(m) = &self.machine {
            let _ = writeln!(
                out,
                "\n{} run, {}: {} cores, {}, Linux {}, {}; load average {} at start, {} at end; \
                 steal {:.1}%; {:.0} s\n",
                self.mode,
                m.date,
                m.cores,
                m.cpu,
                m.kernel,
                m.rustc,
                m.load_start,
                m.load_end,
                m.steal_percent,
                self.seconds
            );
        }
        let _ = writeln!(
            out,
            "| section | figure | value | baseline | ratio | target | verdict |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---|---|");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} {} | {} | {} | {} | {} |",
                r.section,
                r.figure,
                number(r.value),
                r.unit,
                r.baseline.map(number).unwrap_or_default(),
                r.ratio.map(|x| format!("{x:.2}x")).unwrap_or_default(),
                r.target.map(|t| t.describe(r.unit)).unwrap_or_default(),
                match r.pass {
                    Some(true) => "PASS",
                    Some(false) => "MISS",
                    None => "",
                }
            );
        }
        out
    }
}

/// A number with as many digits as it deserves.
fn number(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// Where the bench ran.
#[derive(Clone, Debug, Serialize)]
struct Machine {
    /// UTC date and time of the run.
    date: String,
    /// Cores available to the process.
    cores: usize,
    /// The CPU model from /proc/cpuinfo.
    cpu: String,
    /// The kernel release.
    kernel: String,
    /// `rustc --version`, if a rustc is on the PATH (the binaries may have been built by
    /// another).
    rustc: String,
    /// /proc/loadavg when the run began.
    load_start: String,
    /// /proc/loadavg when it ended.
    load_end: String,
    /// Share of CPU time the hypervisor gave to other guests during the run (steal), in
    /// percent: noise no load average shows.
    steal_percent: f64,
    /// /proc/stat's cpu times when the run began, for the steal share.
    #[serde(skip)]
    cpu_start: Vec<u64>,
}

impl Machine {
    fn read() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let rustc = Command::new("rustc")
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "rustc unknown".into());
        Machine {
            date: utc_now(),
            cores: cores(),
            cpu,
            kernel,
            rustc,
            load_start: load_average(),
            load_end: String::new(),
            steal_percent: 0.0,
            cpu_start: cpu_times(),
        }
    }

    /// Notes the load average and the steal share at the end of the run.
    fn finish(&mut self) {
        self.load_end = load_average();
        let end = cpu_times();
        let delta: Vec<u64> = end
            .iter()
            .zip(&self.cpu_start)
            .map(|(e, s)| e.saturating_sub(*s))
            .collect();
        let total: u64 = delta.iter().sum();
        // Fields: user nice system idle iowait irq softirq steal (guest time is already
        // counted in user and nice).
        let steal = delta.get(7).copied().unwrap_or(0);
        self.steal_percent = 100.0 * steal as f64 / total.max(1) as f64;
    }
}

/// The aggregate cpu line of /proc/stat, up to steal.
fn cpu_times() -> Vec<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            stat.lines().next().map(|line| {
                line.split_whitespace()
                    .skip(1)
                    .take(8)
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// The number of cores this process may use.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// CPU time (user and system) a process has used so far and its minor page faults, from
/// /proc.
fn process_cpu(pid: u32) -> anyhow::Result<(Duration, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after it are fixed: utime and stime are
    // the 12th and 13th after the closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))
    };
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((secs((ticks(11)? + ticks(12)?) as f64 / per_sec), ticks(7)?))
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Now as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_date(secs as i64)
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC` (civil-from-days, H. Hinnant), without a date
/// crate.
fn utc_date(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

// ---------------------------------------------------------------------------------------
// Latency samples
// ---------------------------------------------------------------------------------------

/// Latencies of one timed run and how long it took.
struct Samples {
    /// Each call's latency in nanoseconds.
    nanos: Vec<u64>,
    /// The measured window.
    elapsed: Duration,
    /// Calls completed in all, warm-up included (for work per call, where the process's CPU
    /// time is read around the whole run).
    all: u64,
}

impl Samples {
    fn new(mut nanos: Vec<u64>, elapsed: Duration) -> Samples {
        nanos.sort_unstable();
        let all = nanos.len() as u64;
        Samples {
            nanos,
            elapsed,
            all,
        }
    }

    /// Several windows of one side pooled: every latency, and the windows' total time.
    fn pooled(windows: Vec<Samples>) -> Samples {
        let elapsed = windows.iter().map(|w| w.elapsed).sum();
        let all = windows.iter().map(|w| w.all).sum();
        let mut pooled = Samples::new(windows.into_iter().flat_map(|w| w.nanos).collect(), elapsed);
        pooled.all = all;
        pooled
    }

    /// Calls per second.
    fn rate(&self) -> f64 {
        self.nanos.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (nearest rank) in microseconds.
    fn quantile_us(&self, q: f64) -> f64 {
        if self.nanos.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * self.nanos.len() as f64).ceil() as usize).clamp(1, self.nanos.len());
        self.nanos[rank - 1] as f64 / 1000.0
    }

    fn p50(&self) -> f64 {
        self.quantile_us(0.50)
    }

    fn p99(&self) -> f64 {
        self.quantile_us(0.99)
    }

    /// Mean and sample variance in microseconds.
    fn mean_var_us(&self) -> (f64, f64) {
        let n = self.nanos.len() as f64;
        let mean = self.nanos.iter().map(|&x| x as f64 / 1000.0).sum::<f64>() / n;
        let var = self
            .nanos
            .iter()
            .map(|&x| (x as f64 / 1000.0 - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0).max(1.0);
        (mean, var)
    }
}

/// Welch's t statistic of two samples.
fn welch_t(a: &Samples, b: &Samples) -> f64 {
    let (ma, va) = a.mean_var_us();
    let (mb, vb) = b.mean_var_us();
    (ma - mb) / (va / a.nanos.len() as f64 + vb / b.nanos.len() as f64).sqrt()
}

/// Runs `call` in a closed loop: `tasks_per_conn` tasks on each connection, each calling
/// again as soon as its previous call returns. Calls started during the warm-up are not
/// counted; the run ends when `measure` has passed or every task has returned `Ok(false)`
/// (nothing left to do), whichever comes first.
async fn closed_loop<C, F, Fut>(
    conns: &[C],
    tasks_per_conn: usize,
    warmup: Duration,
    measure: Duration,
    call: F,
) -> anyhow::Result<Samples>
where
    C: Clone + Send + 'static,
    F: Fn(C, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<bool>> + Send + 'static,
{
    let call = Arc::new(call);
    let start = Instant::now() + warmup;
    let end = start + measure;
    let sequence = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for conn in conns {
        for _ in 0..tasks_per_conn {
            let (conn, call, sequence) = (conn.clone(), call.clone(), sequence.clone());
            tasks.push(tokio::spawn(async move {
                let mut nanos = Vec::new();
                let mut last_done = start;
                let mut all = 0;
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let n = sequence.fetch_add(1, Ordering::Relaxed);
                    let more = call(conn.clone(), n).await?;
                    let done = Instant::now();
                    all += 1;
                    if t0 >= start {
                        nanos.push((done - t0).as_nanos() as u64);
                        last_done = done;
                    }
                    if !more {
                        break;
                    }
                }
                anyhow::Ok((nanos, last_done, all))
            }));
        }
    }
    let mut nanos = Vec::new();
    let mut completed = 0;
    let mut last = start;
    let mut ran_out = true;
    for task in tasks {
        let (task_nanos, last_done, all) = task.await.context("a client task panicked")??;
        nanos.extend(task_nanos);
        completed += all;
        last = last.max(last_done);
        ran_out &= last_done < end;
    }
    // A run that ran out of work early is measured up to its last reply.
    let elapsed = if ran_out {
        last.saturating_duration_since(start)
    } else {
        measure
    };
    let mut samples = Samples::new(nanos, elapsed);
    samples.all = completed;
    Ok(samples)
}

/// Seconds as a duration.
fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

// ---------------------------------------------------------------------------------------
// The daemon and the echo baseline as child processes
// ---------------------------------------------------------------------------------------

/// A private temporary directory, removed on drop unless kept.
struct WorkDir {
    /// The directory.
    path: PathBuf,
    /// Leave it behind for inspection.
    keep: bool,
}

impl WorkDir {
    fn new(name: &str, keep: bool) -> anyhow::Result<WorkDir> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        // Short, in the system temp dir: a Unix socket path must stay below 108 bytes.
        let path = std::env::temp_dir().join(format!(
            "lkb-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(WorkDir { path, keep })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept {}", self.path.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Makes a child die with the bench, so an interrupted run leaves no daemon behind.
fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of the
    // parent; it is the only thing done between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Waits until `socket` accepts a connection, or fails if `child` exits first.
async fn wait_for_socket(child: &mut Child, socket: &Path, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited with {status} before accepting connections");
        }
        if UnixStream::connect(socket).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what} did not accept connections within {START_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A running latchkeyd, killed on drop.
struct Daemon {
    /// The process.
    child: Child,
    /// Its socket.
    socket: PathBuf,
    /// Its log (stdout and stderr), shown when it dies.
    log: PathBuf,
    /// Its directory; dropped after the process is killed.
    dir: WorkDir,
}

impl Daemon {
    async fn start(env: &Env, name: &str, reset: &str, limits: &str) -> anyhow::Result<Daemon> {
        let dir = WorkDir::new(name, env.keep)?;
        let socket = dir.path.join("latchkey.sock");
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        // Calls per connection and connections are raised so that the bench's pipelined
        // set-up phases never meet a limit meant for misbehaving clients.
        let config = format!(
            "[server]\nsocket = {socket:?}\nallow_root = {root}\nmax_connections = 1024\n\
             max_requests_per_connection = 1024\n\n\
             [store]\ndata_dir = {data:?}\n\n\
             [passwords]\nmemory_kib = {ARGON2_MEMORY_KIB}\niterations = {ARGON2_ITERATIONS}\n\
             parallelism = {ARGON2_PARALLELISM}\n\n\
             [reset]\n{reset}\n\n[limits]\n{limits}\n{log}",
            data = dir.path.join("data"),
            log = match &env.log_level {
                Some(level) => format!("\n[log]\nlevel = {level:?}\n"),
                None => String::new(),
            },
        );
        let config_file = dir.path.join("latchkeyd.toml");
        std::fs::write(&config_file, config).context("cannot write the daemon config")?;
        let log = dir.path.join("latchkeyd.log");
        let log_file = File::create(&log).context("cannot create the daemon log")?;
        let mut command = Command::new(&env.daemon_exe);
        command
            .arg("--config")
            .arg(&config_file)
            // Only PATH: RUST_LOG or LATCHKEY_* from the caller's shell would change what is
            // measured. Mail goes to .eml files in the directory (the default transport).
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .current_dir(&dir.path)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", env.daemon_exe.display()))?;
        if let Err(e) = wait_for_socket(&mut child, &socket, "latchkeyd").await {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(e.context(format!("daemon log:\n{text}")));
        }
        env.progress(&format!(
            "latchkeyd ({name}) runs as pid {} in {}",
            child.id(),
            dir.path.display()
        ));
        Ok(Daemon {
            child,
            socket,
            log,
            dir,
        })
    }

    /// A new connection.
    async fn client(&self) -> anyhow::Result<Client> {
        let options = ConnectOptions {
            call_timeout: CALL_TIMEOUT,
            max_frame_bytes: MAX_FRAME_BYTES,
            ..ConnectOptions::default()
        };
        Client::connect_with(&self.socket, options)
            .await
            .map_err(|e| self.failed(e.into()))
    }

    /// `n` connections.
    async fn clients(&self, n: usize) -> anyhow::Result<Vec<Client>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.client().await?);
        }
        Ok(out)
    }

    /// The daemon's resident set size in MiB, from /proc.
    fn rss_mib(&self) -> anyhow::Result<(f64, f64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .context("cannot read the daemon's /proc status")?;
        let field = |name: &str| -> anyhow::Result<f64> {
            let kib: f64 = status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| anyhow!("no {name} in /proc status"))?;
            Ok(kib / 1024.0)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// A gauge from the daemon's metrics, by the end of its name.
    async fn gauge(&self, client: &Client, name: &str) -> anyhow::Result<f64> {
        let text = client.metrics().await.map_err(|e| self.failed(e.into()))?;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (key, value) = l.split_once(' ')?;
                key.ends_with(name).then(|| value.trim().parse().ok())?
            })
            .ok_or_else(|| anyhow!("no metric {name} in the daemon's metrics"))
    }

    /// An error with the tail of the daemon's log, for failures that may be the daemon's.
    fn failed(&self, e: anyhow::Error) -> anyhow::Error {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        e.context(format!(
            "latchkeyd log ({}), last lines:\n{}",
            self.log.display(),
            tail.join("\n")
        ))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SIGTERM first, so a daemon run under a profiler (`--daemon` naming a wrapper
        // script) can write its profile; SIGKILL if it takes long, since the data is thrown
        // away anyway.
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill has no memory-safety preconditions; the pid is our own unreaped
            // child, so it cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The echo baseline: this binary, re-executed with `--echo-server`, killed on drop.
struct EchoProcess {
    /// The process.
    child: Child,
    /// Its socket.
    socket: PathBuf,
    /// Its directory.
    _dir: WorkDir,
}

impl EchoProcess {
    async fn start(env: &Env) -> anyhow::Result<EchoProcess> {
        let dir = WorkDir::new("echo", env.keep)?;
        let socket = dir.path.join("echo.sock");
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("--echo-server")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        die_with_parent(&mut command);
        let mut child = command.spawn().context("cannot start the echo server")?;
        wait_for_socket(&mut child, &socket, "the echo server").await?;
        Ok(EchoProcess {
            child,
            socket,
            _dir: dir,
        })
    }

    async fn client(&self) -> anyhow::Result<EchoClient> {
        let stream = UnixStream::connect(&self.socket).await?;
        let framed = LengthDelimitedCodec::builder()
            .max_frame_length(MAX_FRAME_BYTES)
            .new_framed(stream);
        let transport = tarpc::serde_transport::new(framed, Json::default());
        Ok(EchoClient::new(tarpc::client::Config::default(), transport).spawn())
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The baseline service: the arguments and reply of `check_reset_token` in shape and size,
/// and no work.
#[tarpc::service]
trait Echo {
    /// Returns the token.
    async fn echo(token: String, client_ip: Option<String>) -> Result<String, String>;
}

/// The baseline's implementation.
#[derive(Clone)]
struct EchoService;

impl Echo for EchoService {
    async fn echo(
        self,
        _: tarpc::context::Context,
        token: String,
        _client_ip: Option<String>,
    ) -> Result<String, String> {
        Ok(token)
    }
}

/// Serves the echo baseline the way the daemon serves its socket (see `src/server.rs`): a
/// multi-threaded tokio runtime, length-delimited frames with the same cap, tarpc's JSON
/// transport, a spawned task per connection and per request. Runs until killed.
fn echo_server(socket: &Path) -> anyhow::Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) has no memory-safety preconditions.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)
            .with_context(|| format!("cannot bind {}", socket.display()))?;
        loop {
            let (stream, _) = listener.accept().await?;
            let framed = LengthDelimitedCodec::builder()
                .max_frame_length(MAX_FRAME_BYTES)
                .new_framed(stream);
            let transport = tarpc::serde_transport::new(framed, Json::default());
            let channel = BaseChannel::with_defaults(transport).max_concurrent_requests(64);
            tokio::spawn(async move {
                channel
                    .execute(EchoService.serve())
                    .for_each(|call| async {
                        tokio::spawn(call);
                    })
                    .await;
            });
        }
    })
}

// ---------------------------------------------------------------------------------------
// Daemon configurations and set-up helpers
// ---------------------------------------------------------------------------------------

/// `[limits]` so generous that no bench call is ever limited; the key cap is raised so a
/// million distinct emails do not fill a limiter.
const GENEROUS_LIMITS: &str = "\
reset_per_ip = { burst = 1000000000, per_secs = 1 }
reset_per_email = { burst = 1000000000, per_secs = 1 }
token_per_ip = { burst = 1000000000, per_secs = 1 }
login_per_ip = { burst = 1000000000, per_secs = 1 }
login_per_account = { burst = 1000000000, per_secs = 1 }
max_keys = 10000000";

/// `[reset]` for the general daemon: tokens last a day, the daemon's maximum, so none expires
/// during the run.
const LONG_TOKENS: &str = "token_lifetime_secs = 86400";

/// An argon2id hash of [`PASSWORD`] with the bench parameters, for imported accounts: importing
/// it costs no hashing, and logging in with it costs exactly one hash at the daemon's
/// parameters (no upgrade).
fn password_hash() -> anyhow::Result<String> {
    Ok(argon2()?
        .hash_password(PASSWORD.as_bytes())
        .map_err(|e| anyhow!("argon2: {e}"))?
        .to_string())
}

/// argon2id with the bench parameters.
fn argon2() -> anyhow::Result<Argon2<'static>> {
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
async fn import_users(
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
async fn issue_tokens(
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

/// Fails on an error reply; the bench treats any as a broken measurement.
fn ok<T>(what: &str, result: Result<T, ClientError>) -> anyhow::Result<T> {
    result.map_err(|e| match e.api() {
        Some(api) => anyhow!("{what}: the daemon answered {api:?}"),
        None => anyhow::Error::new(e).context(format!("{what} failed")),
    })
}

// ---------------------------------------------------------------------------------------
// Cheap calls against the echo baseline
// ---------------------------------------------------------------------------------------

async fn cheap_calls(env: &Env) -> anyhow::Result<Vec<Row>> {
    let s = &env.sizes;
    let daemon = env.daemon("cheap", LONG_TOKENS, GENEROUS_LIMITS).await?;
    let echo = EchoProcess::start(env).await?;
    let admin = daemon.client().await?;
    let hash = password_hash()?;
    let ids = import_users(&daemon, std::slice::from_ref(&admin), "cheap", 0..16, &hash).await?;
    let tokens = Arc::new(issue_tokens(&daemon, &[admin], ids.into_iter(), 16).await?);
    let (warmup, measure) = (secs(s.warmup_secs), secs(s.cheap_secs));
    let mut rows = Vec::new();
    for clients in [1, 16, 64] {
        env.progress(&format!(
            "cheap calls, {clients} clients, {} rounds",
            s.rounds
        ));
        let echo_conns = echo_clients(&echo, clients).await?;
        let conns = daemon.clients(clients).await?;
        let (mut base, mut check, mut health) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..s.rounds {
            let token = tokens[0].clone();
            base.push(
                closed_loop(&echo_conns, 1, warmup, measure, move |c: EchoClient, _| {
                    let token = token.clone();
                    async move {
                        c.echo(tarpc::context::current(), token, Some(CLIENT_IP.to_owned()))
                            .await
                            .context("echo failed")?
                            .map_err(|e| anyhow!("echo: {e}"))?;
                        Ok(true)
                    }
                })
                .await?,
            );
            let tk = tokens.clone();
            check.push(
                closed_loop(&conns, 1, warmup, measure, move |c: Client, n| {
                    let token = tk[n as usize % tk.len()].clone();
                    async move {
                        ok(
                            "check_reset_token",
                            c.check_reset_token(&token, Some(CLIENT_IP)).await,
                        )?;
                        Ok(true)
                    }
                })
                .await?,
            );
            health.push(
                closed_loop(&conns, 1, warmup, measure, |c: Client, _| async move {
                    ok("health", c.health().await)?;
                    Ok(true)
                })
                .await?,
            );
        }
        let base = Samples::pooled(base);
        for (name, run) in [("check_reset_token", check), ("health", health)] {
            let run = Samples::pooled(run);
            rows.push(
                Row::new(
                    "cheap",
                    format!("{name} throughput, {clients} clients"),
                    run.rate(),
                    "calls/s",
                )
                .baseline(base.rate())
                .target(Target::RatioAtLeast(0.8)),
            );
            rows.push(
                Row::new(
                    "cheap",
                    format!("{name} p50, {clients} clients"),
                    run.p50(),
                    "µs",
                )
                .baseline(base.p50()),
            );
            let p99 = Row::new(
                "cheap",
                format!("{name} p99, {clients} clients"),
                run.p99(),
                "µs",
            )
            .baseline(base.p99());
            rows.push(if clients == 16 {
                p99.target(Target::AtMost(1000.0))
            } else {
                p99
            });
        }
    }
    Ok(rows)
}

async fn echo_clients(echo: &EchoProcess, n: usize) -> anyhow::Result<Vec<EchoClient>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(echo.client().await?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Hash-bound calls against raw argon2id
// ---------------------------------------------------------------------------------------

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
    let ((cpu, faults), wall) = (process_cpu(daemon.child.id())?, Instant::now());
    let samples = run.await?;
    let (cpu_after, faults_after) = process_cpu(daemon.child.id())?;
    cost.add(Cost {
        cpu: cpu_after.saturating_sub(cpu),
        faults: faults_after.saturating_sub(faults),
        wall: wall.elapsed(),
        ops: samples.all,
    });
    Ok(samples)
}

async fn hash_bound(env: &Env) -> anyhow::Result<Vec<Row>> {
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
    Ok(vec![
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
        Row::new(
            "hash",
            format!("complete_password_reset, {callers} clients"),
            complete.rate(),
            "calls/s",
        )
        .baseline(raw_hash)
        .target(Target::RatioAtLeast(0.9)),
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
    ])
}

// ---------------------------------------------------------------------------------------
// check_reset_token as live tokens grow
// ---------------------------------------------------------------------------------------

async fn token_scaling(env: &Env) -> anyhow::Result<Vec<Row>> {
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
    let ref_tokens = issue_tokens(
        &reference,
        &ref_conns,
        round_robin(&ref_ids, 0..first).into_iter(),
        256,
    )
    .await?;
    let ref_probe = reference.client().await?;
    let probe = growing.client().await?;
    let mut tokens: Vec<String> = Vec::with_capacity(last);
    let mut rows = Vec::new();
    let per_round = (s.token_samples / s.rounds).max(1);
    for &stage in &s.token_stages {
        let began = Instant::now();
        let issued_before = tokens.len();
        // Round-robin over the users, so every user holds about the same number.
        let users = round_robin(&ids, tokens.len()..stage);
        tokens.extend(issue_tokens(&growing, &conns, users.into_iter(), 256).await?);
        env.progress(&format!(
            "{stage} live tokens ({:.0} issued/s); timing check_reset_token",
            (tokens.len() - issued_before) as f64 / began.elapsed().as_secs_f64()
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

/// 1000 → "1k", 1000000 → "1M".
fn count_label(n: usize) -> String {
    if n >= 1_000_000 && n % 1_000_000 == 0 {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n % 1000 == 0 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

// ---------------------------------------------------------------------------------------
// Cheap calls while hashing saturates the cores
// ---------------------------------------------------------------------------------------

async fn saturation(env: &Env) -> anyhow::Result<Vec<Row>> {
    let s = &env.sizes;
    let daemon = env
        .daemon("saturation", LONG_TOKENS, GENEROUS_LIMITS)
        .await?;
    let admin = daemon.client().await?;
    let hash = password_hash()?;
    let ids = import_users(&daemon, std::slice::from_ref(&admin), "sat", 0..1, &hash).await?;
    let tokens = issue_tokens(&daemon, &[admin], ids.into_iter(), 1).await?;
    let token = Arc::new(
        tokens
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no token"))?,
    );
    let (warmup, measure) = (secs(s.warmup_secs), secs(s.saturation_secs));
    let probe = daemon.clients(1).await?;
    let check = |token: Arc<String>| {
        move |c: Client, _| {
            let token = token.clone();
            async move {
                ok(
                    "check_reset_token",
                    c.check_reset_token(&token, Some(CLIENT_IP)).await,
                )?;
                Ok(true)
            }
        }
    };

    // Hash-bound load: four logins per core in a closed loop while `active` is set.
    let hashers = 4 * cores();
    let load_conns = daemon.clients(hashers).await?;
    let active = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let hashed = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for c in load_conns {
        let (active, stop, hashed) = (active.clone(), stop.clone(), hashed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if !active.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                ok(
                    "verify_password",
                    c.verify_password("sat0@bench.example", PASSWORD, Some(CLIENT_IP))
                        .await,
                )?;
                hashed.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let (mut idle, mut busy) = (Vec::new(), Vec::new());
    let (mut logins, mut busy_time) = (0, Duration::ZERO);
    for round in 1..=s.rounds {
        env.progress(&format!(
            "round {round}/{}: cheap calls on an idle daemon, then while {hashers} clients log in",
            s.rounds
        ));
        // Let the logins in flight finish, so the idle window is idle.
        tokio::time::sleep(Duration::from_millis(200)).await;
        idle.push(closed_loop(&probe, 1, warmup, measure, check(token.clone())).await?);
        active.store(true, Ordering::Relaxed);
        // Let the hashing queue fill before timing.
        tokio::time::sleep(secs(s.warmup_secs.max(0.3))).await;
        let (before, t0) = (hashed.load(Ordering::Relaxed), Instant::now());
        busy.push(closed_loop(&probe, 1, warmup, measure, check(token.clone())).await?);
        logins += hashed.load(Ordering::Relaxed) - before;
        busy_time += t0.elapsed();
        active.store(false, Ordering::Relaxed);
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.context("a login task panicked")??;
    }
    let (idle, busy) = (Samples::pooled(idle), Samples::pooled(busy));
    Ok(vec![
        Row::new(
            "saturation",
            "check_reset_token p50, 1 client, cores saturated",
            busy.p50(),
            "µs",
        )
        .baseline(idle.p50()),
        Row::new(
            "saturation",
            "check_reset_token p99, 1 client, cores saturated",
            busy.p99(),
            "µs",
        )
        .baseline(idle.p99())
        .target(Target::AtMost(2000.0)),
        Row::new(
            "saturation",
            format!("verify_password meanwhile, {hashers} clients"),
            logins as f64 / busy_time.as_secs_f64(),
            "calls/s",
        ),
    ])
}

// ---------------------------------------------------------------------------------------
// request_password_reset: known against unknown addresses
// ---------------------------------------------------------------------------------------

async fn reset_timing(env: &Env) -> anyhow::Result<Vec<Row>> {
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
    if env.keep {
        // For matching the daemon's log lines (its per-call `micros`) to the kinds afterwards.
        let kinds: String = order
            .iter()
            .map(|(known, _)| if *known { "known\n" } else { "unknown\n" })
            .collect();
        std::fs::write(daemon.dir.path.join("timing-order.txt"), kinds)?;
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
    let (mk, _) = known.mean_var_us();
    let (mu, _) = unknown.mean_var_us();
    let t = welch_t(&known, &unknown);
    Ok(vec![
        Row::new("timing", "request_password_reset mean, known", mk, "µs")
            .baseline(mu)
            .target(Target::RatioWithin(0.05)),
        Row::new("timing", "request_password_reset mean, unknown", mu, "µs"),
        Row::new(
            "timing",
            "request_password_reset p50, known",
            known.p50(),
            "µs",
        )
        .baseline(unknown.p50()),
        Row::new(
            "timing",
            "request_password_reset p99, known",
            known.p99(),
            "µs",
        )
        .baseline(unknown.p99()),
        Row::new(
            "timing",
            "request_password_reset p50, unknown",
            unknown.p50(),
            "µs",
        ),
        Row::new(
            "timing",
            "request_password_reset p99, unknown",
            unknown.p99(),
            "µs",
        ),
        Row::new(
            "timing",
            format!("Welch's t, known vs unknown, {n} each"),
            t,
            "",
        )
        .target(Target::AbsBelow(4.5)),
    ])
}

// ---------------------------------------------------------------------------------------
// Memory after a million limiter keys
// ---------------------------------------------------------------------------------------

async fn limiter_memory(env: &Env) -> anyhow::Result<Vec<Row>> {
    let s = &env.sizes;
    // One call per IP through a burst-1 bucket: each key is held until two periods after its
    // call (see `Sizes::rss_key_secs`), then dropped by the next cleanup. The key cap keeps
    // the daemon's default (a million per limiter), as in production.
    let limits = format!(
        "token_per_ip = {{ burst = 1, per_secs = {} }}\ncleanup_interval_secs = {}",
        s.rss_key_secs, s.rss_cleanup_secs
    );
    let daemon = env.daemon("rss", LONG_TOKENS, &limits).await?;
    let conns = daemon.clients(16).await?;
    let admin = &conns[0];
    ok("health", admin.health().await)?;
    let (start_rss, _) = daemon.rss_mib()?;
    env.progress(&format!("{} distinct client IPs", s.rss_keys));
    let refused = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    futures::stream::iter(0..s.rss_keys)
        .map(|i| {
            let client = conns[i % conns.len()].clone();
            let refused = refused.clone();
            // 10.0.0.0/8 holds 16.7M addresses: one each.
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 | i as u32).to_string();
            async move {
                match client.check_reset_token("not-a-token", Some(&ip)).await {
                    Ok(_) => Ok(()),
                    // The key cap can engage for the last few keys of the million.
                    Err(e) if matches!(e.api(), Some(ApiError::RateLimited { .. })) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                    Err(e) => Err(anyhow::Error::new(e).context("check_reset_token failed")),
                }
            }
        })
        .buffer_unordered(512)
        .try_collect::<()>()
        .await?;
    let fill_secs = began.elapsed().as_secs_f64();
    let keys = daemon.gauge(admin, "limiter_keys").await?;
    let (full_rss, peak_rss) = daemon.rss_mib()?;
    env.progress(&format!(
        "{keys} keys held after {fill_secs:.1} s; RSS {full_rss:.1} MiB; waiting for idle-out"
    ));
    if fill_secs > 2.0 * s.rss_key_secs as f64 {
        eprintln!(
            "warning: filling took longer than a key lives; some keys idled out before the \
             last was made"
        );
    }
    // Keys idle out two periods after their call; the next cleanup drops them.
    let deadline =
        Instant::now() + Duration::from_secs(2 * s.rss_key_secs + 4 * s.rss_cleanup_secs + 30);
    loop {
        let left = daemon.gauge(admin, "limiter_keys").await?;
        if left == 0.0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{left} limiter keys still held long after they should have idled out");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // One more cleanup round, so whatever cleanup frees has been freed.
    tokio::time::sleep(Duration::from_secs(s.rss_cleanup_secs + 1)).await;
    let (idle_rss, _) = daemon.rss_mib()?;
    if let Some(hold) = env.hold_rss {
        env.progress(&format!(
            "holding pid {} for {hold} s (RSS {idle_rss:.1} MiB)",
            daemon.child.id()
        ));
        tokio::time::sleep(Duration::from_secs(hold)).await;
    }
    let label = count_label(s.rss_keys);
    Ok(vec![
        Row::new("rss", "RSS of a fresh daemon", start_rss, "MiB"),
        Row::new(
            "rss",
            format!("limiter keys held after {label} client IPs"),
            keys,
            "keys",
        ),
        Row::new(
            "rss",
            format!("RSS after {label} limiter keys"),
            full_rss,
            "MiB",
        )
        .baseline(start_rss)
        .target(Target::AtMost(128.0)),
        Row::new("rss", "peak RSS (VmHWM)", peak_rss, "MiB"),
        Row::new("rss", "RSS after the keys idled out", idle_rss, "MiB")
            .baseline(start_rss)
            .target(Target::AtMost(64.0)),
        Row::new(
            "rss",
            format!("calls refused by the key cap, of {label}"),
            refused.load(Ordering::Relaxed) as f64,
            "calls",
        ),
    ])
}

// ---------------------------------------------------------------------------------------
// Durable writes
// ---------------------------------------------------------------------------------------

async fn durable_writes(env: &Env) -> anyhow::Result<Vec<Row>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let s = Samples::new((1..=100).rev().map(|us| us * 1000).collect(), secs(1.0));
        assert_eq!(s.p50(), 50.0);
        assert_eq!(s.p99(), 99.0);
        assert_eq!(s.quantile_us(1.0), 100.0);
        assert_eq!(s.rate(), 100.0);
    }

    #[test]
    fn welch_t_matches_a_worked_example() {
        // Means 2 and 4 µs, sample variances 1 and 1, five each: t = -2 / sqrt(2/5).
        let a = Samples::new([1, 2, 2, 2, 3].map(|x| x * 1000).to_vec(), secs(1.0));
        let b = Samples::new([3, 4, 4, 4, 5].map(|x| x * 1000).to_vec(), secs(1.0));
        let t = welch_t(&a, &b);
        let expected = -2.0 / (0.5f64 / 5.0 + 0.5 / 5.0).sqrt();
        assert!((t - expected).abs() < 1e-9, "{t} != {expected}");
    }

    #[test]
    fn targets_judge_the_ratio_or_the_value() {
        let row = Row::new("x", "y", 80.0, "calls/s").baseline(100.0);
        assert_eq!(
            row.clone().target(Target::RatioAtLeast(0.8)).pass,
            Some(true)
        );
        assert_eq!(
            row.clone().target(Target::RatioAtLeast(0.9)).pass,
            Some(false)
        );
        assert_eq!(
            row.clone().target(Target::RatioWithin(0.05)).pass,
            Some(false)
        );
        assert_eq!(row.target(Target::AtMost(80.0)).pass, Some(true));
        let t = Row::new("x", "t", -4.6, "").target(Target::AbsBelow(4.5));
        assert_eq!(t.pass, Some(false));
    }

    #[test]
    fn dates_and_counts_read_well() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400 + 3661), "2000-02-29 01:01 UTC");
        assert_eq!(count_label(1_000), "1k");
        assert_eq!(count_label(1_000_000), "1M");
        assert_eq!(count_label(1_500), "1500");
    }
}
