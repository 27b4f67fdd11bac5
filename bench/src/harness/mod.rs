//! The processes the bench measures and the machine it runs on: a private work directory per
//! process, starting the daemon ([`Daemon`]) and the echo baseline ([`EchoProcess`]) as
//! children that die with the bench, waiting for their sockets, and reading CPU time, page
//! faults and memory from /proc ([`machine`]).
//!
//! On `--backend postgres` the harness also runs a private PostgreSQL cluster
//! ([`postgres`]), gives every daemon a fresh database of it, and runs pgbench there.
//!
//! Nothing here knows what a section measures; sections start processes through
//! [`Harness`] and read figures from them.

mod daemon;
pub(crate) mod echo;
mod machine;
mod postgres;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::net::UnixStream;

pub(crate) use daemon::{Daemon, ARGON2_ITERATIONS, ARGON2_MEMORY_KIB, ARGON2_PARALLELISM};
pub(crate) use echo::{EchoClient, EchoProcess};
pub(crate) use machine::{cores, process_cpu, Machine};
pub(crate) use postgres::{Cluster, Script};

/// Largest frame, the daemon's default; the echo baseline uses the same cap, and import
/// batches are sized to stay below it.
pub(crate) const MAX_FRAME_BYTES: usize = 64 * 1024;
/// How long a daemon may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How the bench starts its child processes, and its progress lines.
pub(crate) struct Harness {
    /// The daemon binary.
    pub(crate) daemon_exe: PathBuf,
    /// `[log] level` for the daemons, if not their default.
    pub(crate) log_level: Option<String>,
    /// Keep temporary directories.
    pub(crate) keep: bool,
    /// When the run began, for progress lines and the report's duration.
    pub(crate) started: Instant,
    /// The PostgreSQL cluster every daemon stores in, on `--backend postgres`; `None` runs
    /// them on sled, each in its own directory.
    pub(crate) postgres: Option<Cluster>,
}

impl Harness {
    /// A progress line on stderr (the results go to stdout).
    pub(crate) fn progress(&self, what: &str) {
        eprintln!("[{:7.1}s] {what}", self.started.elapsed().as_secs_f64());
    }
}

/// A private temporary directory, removed on drop unless kept.
struct WorkDir {
    /// The directory.
    path: PathBuf,
    /// Leave it behind for inspection.
    keep: bool,
}

impl WorkDir {
    /// Creates `lkb-PID-N-{name}` in the system temp dir.
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

/// Makes the calling process receive SIGKILL when its parent dies. A failure is ignored: the
/// child then merely outlives an interrupted bench, and a normal run stops it on drop.
fn kill_me_with_parent() {
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
}

/// Makes a child die with the bench, so an interrupted run leaves no daemon behind.
fn die_with_parent(command: &mut Command) {
    // SAFETY: `pre_exec` is unsafe because the closure runs between fork and exec, where only
    // async-signal-safe work is allowed. It makes one prctl(PR_SET_PDEATHSIG) system call,
    // which allocates nothing, takes no lock and touches no memory of the parent; it is the
    // only thing done between fork and exec.
    unsafe {
        command.pre_exec(|| {
            kill_me_with_parent();
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
