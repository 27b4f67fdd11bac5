//! `latchkey-bench`: starts the real `latchkeyd` and measures it against baselines it runs
//! itself, in the same run, on the same machine, so each figure is a ratio that survives a
//! change of hardware (issue 8; the figures and where we stand are in BENCHMARKS.md).
//!
//! What is measured, each against its baseline (one file each under `sections/`):
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
//! - `sign_up` concealing taken addresses, taken against new ones (the same figures);
//! - the daemon's RSS after a million distinct rate-limiter keys and after they idle out;
//! - durable write throughput at 1 and 32 writers;
//! - write and read latency while an online backup is read, at 100k and 1M accounts, against
//!   the same load without one.
//!
//! The rest of the tree, lowest first: `harness/` starts and stops the daemon and the echo
//! baseline as child processes and reads their CPU time and memory and the machine's facts;
//! `stats` holds latency samples, their percentiles, Welch's t and the closed-loop driver;
//! `report` turns figures into rows with targets and renders them; `setup` imports accounts
//! and issues tokens for the sections. This file only parses the command line and runs the
//! chosen sections in order.
//!
//! Criterion does not fit here: it times closures in its own process, while every figure
//! here is a daemon in another process driven by many concurrent clients, compared with a
//! baseline measured in the same run.
//!
//! The bench exits non-zero only when it cannot measure (the daemon does not start, a call
//! fails); a figure that misses its target is reported as MISS, never as a failure.
//! `--short` runs everything at tiny sizes in well under a minute, for CI.
//!
//! `--backend postgres` runs the daemons on a PostgreSQL cluster the bench starts for the run
//! (`harness/postgres.rs`), and measures the calls that read or write the store against
//! pgbench on the same server: `pgbench -S` for token checks, and scripts with the daemon's
//! own statements for the reset transactions (`sections/pg_scripts.rs`).

mod harness;
mod report;
mod sections;
mod setup;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};

use crate::harness::{Harness, Machine};
use crate::report::Report;
use crate::sections::{Env, Sizes};

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
    /// Where the daemons store: `sled` (each in its own directory) or `postgres` (a
    /// PostgreSQL cluster the bench starts for the run, a fresh database per daemon, with
    /// pgbench baselines on the same server).
    #[arg(long, value_enum, default_value_t = Backend::Sled)]
    backend: Backend,
    /// The PostgreSQL server binaries (initdb, postgres, pg_ctl, psql, pgbench) for
    /// `--backend postgres`; default: the newest /usr/lib/postgresql/*/bin.
    #[arg(long, value_name = "DIR")]
    pg_bin: Option<PathBuf>,
    /// Internal: serve the echo baseline on this socket until killed.
    #[arg(long, hide = true)]
    echo_server: Option<PathBuf>,
}

/// The daemons' store backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// sled, embedded, one database directory per daemon.
    Sled,
    /// A PostgreSQL cluster started by the bench.
    Postgres,
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
    /// One client's login latency beside another's login flood.
    Fairness,
    /// `request_password_reset`, known against unknown addresses.
    Timing,
    /// Concealed `sign_up`, taken against new addresses.
    Signup,
    /// Memory after a million limiter keys and after they idle out.
    Rss,
    /// Memory during and after a burst of calls with 60 KB passwords.
    BigCalls,
    /// Durable write throughput.
    Writes,
    /// Call latency while an online backup is read.
    Backup,
}

impl Section {
    /// Every section, in the order they run.
    const ALL: [Section; 11] = [
        Section::Cheap,
        Section::Hash,
        Section::Tokens,
        Section::Saturation,
        Section::Fairness,
        Section::Timing,
        Section::Signup,
        Section::Rss,
        Section::BigCalls,
        Section::Writes,
        Section::Backup,
    ];
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match &args.echo_server {
        Some(socket) => harness::echo::serve(socket),
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

/// Runs the chosen sections, prints the report and writes the JSON.
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
        "latchkey-bench {} mode, {:?} backend: {} cores ({}), load average {}",
        if args.short { "short" } else { "full" },
        args.backend,
        machine.cores,
        machine.cpu,
        machine.load_start
    );
    let started = Instant::now();
    let postgres = match args.backend {
        Backend::Sled => None,
        // Started here, on the main thread, before any runtime: the server gets its
        // parent-death signal when the bench exits, however it exits.
        Backend::Postgres => Some(
            harness::Cluster::start(args.pg_bin.as_deref(), args.keep)
                .context("cannot start PostgreSQL")?,
        ),
    };
    let env = Env {
        harness: Harness {
            daemon_exe,
            log_level: args.log_level.clone(),
            keep: args.keep,
            started,
            postgres,
        },
        hold_rss: args.hold_rss,
        sizes,
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
                Section::Cheap => sections::cheap_calls::run(&env).await,
                Section::Hash => sections::hash_bound::run(&env).await,
                Section::Tokens => sections::token_scaling::run(&env).await,
                Section::Saturation => sections::saturation::run(&env).await,
                Section::Fairness => sections::fairness::run(&env).await,
                Section::Timing => sections::reset_timing::run(&env).await,
                Section::Signup => sections::signup_timing::run(&env).await,
                Section::Rss => sections::limiter_memory::run(&env).await,
                Section::BigCalls => sections::big_calls::run(&env).await,
                Section::Writes => sections::durable_writes::run(&env).await,
                Section::Backup => sections::backup::run(&env).await,
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
    report.backend = match args.backend {
        Backend::Sled => "sled",
        Backend::Postgres => "postgres",
    }
    .into();
    report.seconds = env.harness.started.elapsed().as_secs_f64();
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
