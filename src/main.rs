//! The `latchkeyd` binary: parses the command line, loads the configuration and runs the
//! daemon until SIGTERM or SIGINT.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use latchkeyd::config::Config;
use tokio::signal::unix::{signal, SignalKind};

/// latchkeyd: password-reset and credential daemon on a Unix socket.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file (must exist if given). Settings not in it keep their defaults;
    /// LATCHKEY_* environment variables override both.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    check_config: bool,
    /// Run even as root (refused otherwise; same as server.allow_root = true).
    #[arg(long)]
    allow_root: bool,
    /// An offline job instead of the daemon (with the daemon stopped).
    #[command(subcommand)]
    command: Option<Command>,
}

/// The jobs run with the daemon stopped.
#[derive(Subcommand)]
enum Command {
    /// Restores a backup written by `latchkey backup` into an empty data directory. The file
    /// is checked whole first; nothing is written unless it is sound. The outbox key the mail
    /// was sealed under must be in place (store.outbox_key_file, by default DIR/outbox.key).
    Restore {
        /// The backup file.
        file: PathBuf,
        /// The data directory to restore into (store.data_dir when not given).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Replace the store in the directory; it is kept beside, as db.replaced-TIME.
        #[arg(long)]
        force: bool,
        /// Leave the queued mail out, when the outbox key it was sealed under is lost.
        #[arg(long)]
        drop_mail: bool,
    },
    /// Copies every record of a stopped store to another backend: from `sled:DIR` (a data
    /// directory) or `backup:FILE`, to `postgres` (the server of [store.postgres]) or
    /// `sled:DIR`. Run again, it gives the same result; the counts of both sides are
    /// compared at the end. The outbox key the mail was sealed under must be the one the
    /// configuration names.
    CopyStore {
        /// Where the records are: sled:DIR or backup:FILE.
        #[arg(long)]
        from: latchkeyd::load::Place,
        /// Where they go: postgres or sled:DIR.
        #[arg(long)]
        to: latchkeyd::load::Place,
        /// Leave the queued mail out, when the outbox key it was sealed under is lost.
        #[arg(long)]
        drop_mail: bool,
    },
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("latchkeyd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    tame_malloc();
    // Everything the daemon and its offline jobs create (the store's files, the outbox key,
    // .eml files, restored stores) is for its own user only, whatever umask it was started
    // with: outside systemd's UMask= a shell's 022 made the database files world-readable
    // (issue 19, item 12). Modes set explicitly (the socket's 0660) are not affected.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let args = Args::parse();
    let config = Config::load(args.config.as_deref()).context("invalid configuration")?;
    if args.check_config {
        print!("{}", config.redacted_toml());
        return Ok(());
    }
    if let Some(command) = args.command {
        return offline(command, config);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .context("invalid log.level")?;
    // Log lines are written by a background thread, so a call never waits for stderr (the
    // journal, a pipe, a slow terminal). Not lossy: when the queue is full, callers wait
    // rather than lines being dropped. `_flush` writes what is queued when main returns.
    let (writer, _flush) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    // Colour codes only for a terminal: in a file or the journal they are noise that breaks
    // grep. Under systemd (JOURNAL_STREAM is set) the journal stamps each line itself.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    runtime.block_on(async {
        let mut term = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
        let mut hup = signal(SignalKind::hangup()).context("cannot catch SIGHUP")?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        let (reload, reloads) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                // A reload already pending covers this one too.
                let _ = reload.try_send(());
            }
        });
        let options = latchkeyd::Options {
            config,
            config_path: args.config,
            allow_root: args.allow_root,
        };
        latchkeyd::run(options, shutdown, reloads).await?;
        Ok(())
    })
}

/// Runs an offline job and prints what it did.
fn offline(command: Command, mut config: Config) -> anyhow::Result<()> {
    match command {
        Command::Restore {
            file,
            data_dir,
            force,
            drop_mail,
        } => {
            if let Some(dir) = data_dir {
                config.store.data_dir = dir;
            }
            let options = latchkeyd::load::RestoreOptions { force, drop_mail };
            let restored = latchkeyd::load::restore_sled(&file, &config.store, options)
                .with_context(|| format!("cannot restore {}", file.display()))?;
            println!(
                "restored {} into {}",
                restored.counts,
                config.store.data_dir.display()
            );
            if restored.mail_dropped > 0 {
                println!("left out {} messages (--drop-mail)", restored.mail_dropped);
            }
            if let Some(aside) = restored.replaced {
                println!("the store that was there is now {}", aside.display());
            }
            Ok(())
        }
        Command::CopyStore {
            from,
            to,
            drop_mail,
        } => {
            let options = latchkeyd::load::RestoreOptions {
                force: false,
                drop_mail,
            };
            let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
            let copied = runtime
                .block_on(latchkeyd::load::copy_store(
                    &from,
                    &to,
                    &config.store,
                    options,
                ))
                .context("cannot copy the store")?;
            println!(
                "copied {}; the target holds {}",
                copied.source, copied.target
            );
            if copied.mail_dropped > 0 {
                println!("left out {} messages (--drop-mail)", copied.mail_dropped);
            }
            Ok(())
        }
    }
}

/// Makes glibc give freed memory back to the system.
///
/// glibc raises its mmap and trim thresholds each time a large mmapped block is freed: after
/// argon2's 19 MiB array the trim threshold is 38 MiB, so the rate limiters' tables, freed
/// when a flood of keys idles out, stayed in the heap for good (66.6 MiB instead of 15.5 MiB
/// in BENCHMARKS.md). Setting the trim threshold (to 1 MiB, eight times glibc's default)
/// turns the dynamic adjustment off for both thresholds, leaving the mmap threshold at its
/// default. An operator who sets any `glibc.malloc.*` tunable in `GLIBC_TUNABLES` keeps
/// glibc's behaviour with those settings instead.
fn tame_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tuned = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."));
        if !tuned {
            // A raw call because neither rustix nor nix wraps glibc's mallopt.
            // SAFETY: mallopt only sets allocator parameters; it is called before any other
            // thread exists.
            unsafe {
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
            }
        }
    }
}
