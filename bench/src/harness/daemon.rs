//! A real `latchkeyd` as a child process: its configuration, its start and stop, connections
//! to it, and what it reports about itself (memory, metrics, its log when a call fails).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use latchkey_client::{Client, ConnectOptions};
use rustix::process::{Pid, Signal};

use super::{die_with_parent, wait_for_socket, Harness, WorkDir, MAX_FRAME_BYTES};

/// The argon2id parameters written into every bench daemon's configuration and used by the
/// raw hashing baseline: the daemon's defaults (the OWASP minimum, which it refuses to go
/// below), stated here so both sides are certain to use the same.
pub(crate) const ARGON2_MEMORY_KIB: u32 = 19456;
/// See [`ARGON2_MEMORY_KIB`].
pub(crate) const ARGON2_ITERATIONS: u32 = 2;
/// See [`ARGON2_MEMORY_KIB`].
pub(crate) const ARGON2_PARALLELISM: u32 = 1;

/// The deadline of every call: far above any latency we expect, so a slow call is measured
/// rather than turned into an error.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a daemon may take to exit on SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running latchkeyd, killed on drop.
pub(crate) struct Daemon {
    /// The process.
    child: Child,
    /// Its socket.
    socket: PathBuf,
    /// Its log (stdout and stderr), shown when it dies.
    log: PathBuf,
    /// Its database on the run's PostgreSQL cluster; `None` on sled.
    database: Option<String>,
    /// Its directory; dropped after the process is killed.
    dir: WorkDir,
}

impl Daemon {
    /// Starts a daemon named `name` (for its directory and progress lines) with the bench's
    /// base settings plus the given `[reset]` and `[limits]` bodies, and waits until it
    /// accepts connections.
    pub(crate) async fn start(
        harness: &Harness,
        name: &str,
        reset: &str,
        limits: &str,
    ) -> anyhow::Result<Daemon> {
        let dir = WorkDir::new(name, harness.keep)?;
        let socket = dir.path.join("latchkey.sock");
        let root = rustix::process::geteuid().is_root();
        // On PostgreSQL, a fresh database per daemon, so no section sees another's rows. The
        // data directory still holds the outbox key and the mail.
        let (database, store) = match &harness.postgres {
            Some(cluster) => {
                let database = cluster.unique(&format!("lkb_{}", name.replace('-', "_")));
                cluster.create_database(&database)?;
                let store = cluster.store_toml(&database);
                (Some(database), store)
            }
            None => (None, String::new()),
        };
        // Calls per connection and connections (per uid and per process too: every bench
        // client is this one process) are raised so that the bench's pipelined set-up phases
        // never meet a limit meant for misbehaving clients.
        let config = format!(
            "[server]\nsocket = {socket:?}\nallow_root = {root}\nmax_connections = 1024\n\
             max_connections_per_uid = 1024\nmax_connections_per_pid = 1024\n\
             max_requests_per_connection = 1024\n\n\
             [store]\ndata_dir = {data:?}\n{store}\n\
             [passwords]\nmemory_kib = {ARGON2_MEMORY_KIB}\niterations = {ARGON2_ITERATIONS}\n\
             parallelism = {ARGON2_PARALLELISM}\n\n\
             [reset]\n{reset}\n\n[limits]\n{limits}\n{log}",
            data = dir.path.join("data"),
            log = match &harness.log_level {
                Some(level) => format!("\n[log]\nlevel = {level:?}\n"),
                None => String::new(),
            },
        );
        let config_file = dir.path.join("latchkeyd.toml");
        std::fs::write(&config_file, config).context("cannot write the daemon config")?;
        let log = dir.path.join("latchkeyd.log");
        let log_file = File::create(&log).context("cannot create the daemon log")?;
        let mut command = Command::new(&harness.daemon_exe);
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
            .with_context(|| format!("cannot start {}", harness.daemon_exe.display()))?;
        if let Err(e) = wait_for_socket(&mut child, &socket, "latchkeyd").await {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(e.context(format!("daemon log:\n{text}")));
        }
        harness.progress(&format!(
            "latchkeyd ({name}) runs as pid {} in {}",
            child.id(),
            dir.path.display()
        ));
        Ok(Daemon {
            child,
            socket,
            log,
            database,
            dir,
        })
    }

    /// The daemon's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's directory (config, log, database), for files kept beside them.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir.path
    }

    /// The daemon's database on the run's PostgreSQL cluster; `None` on sled.
    pub(crate) fn database(&self) -> Option<&str> {
        self.database.as_deref()
    }

    /// A new connection.
    pub(crate) async fn client(&self) -> anyhow::Result<Client> {
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
    pub(crate) async fn clients(&self, n: usize) -> anyhow::Result<Vec<Client>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.client().await?);
        }
        Ok(out)
    }

    /// The daemon's resident set size and its peak (VmRSS, VmHWM) in MiB, from /proc.
    pub(crate) fn rss_mib(&self) -> anyhow::Result<(f64, f64)> {
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
    pub(crate) async fn gauge(&self, client: &Client, name: &str) -> anyhow::Result<f64> {
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
    pub(crate) fn failed(&self, e: anyhow::Error) -> anyhow::Error {
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
        // away anyway. The pid is our own unreaped child, so it cannot have been reused; if
        // the signal cannot be sent, the wait below runs out and the child is killed.
        let _ = rustix::process::kill_process(Pid::from_child(&self.child), Signal::TERM);
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
