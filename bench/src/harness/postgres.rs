//! The PostgreSQL of a `--backend postgres` run: a private cluster started for the run, a
//! fresh database per daemon, and the baselines run on the same server (`pgbench -S`, and
//! pgbench scripts with the statements of the daemon's transactions).
//!
//! The server keeps its defaults but for where it listens (only a Unix socket in its own
//! directory): fsync stays on, so every commit the daemon or pgbench waits for costs what it
//! costs in production, and both sides pay it alike. PostgreSQL refuses to run as root, so
//! when the bench is root (CI, this machine) the server binaries run as `postgres`, in a
//! directory chowned to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};

use super::WorkDir;
use crate::stats::Samples;

/// The role the daemons and pgbench log in as; initdb makes it the superuser.
const ROLE: &str = "latchkey";
/// The port, which on a Unix socket only names the socket file (`.s.PGSQL.5432`) in the
/// cluster's own directory, so it cannot clash with another server.
const PORT: u16 = 5432;
/// How long the server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Where Debian puts the server binaries when `--pg-bin` is not given; the newest version
/// found there wins.
const DEBIAN_PG_LIB: &str = "/usr/lib/postgresql";

/// A running cluster, stopped (and its directory removed unless kept) on drop.
pub(crate) struct Cluster {
    /// The server binaries (initdb, postgres, pg_ctl, pg_isready, psql, pgbench).
    bin: PathBuf,
    /// The user the server runs as when the bench is root; `None` runs it as ourselves.
    owner: Option<&'static str>,
    /// The directory of the server's Unix socket.
    socket_dir: PathBuf,
    /// The data directory.
    data: PathBuf,
    /// The postmaster, reaped on drop.
    server: Mutex<Option<Child>>,
    /// Names databases and pgbench log files uniquely within the run.
    next: AtomicUsize,
    /// Holds data, socket, server log and pgbench's files. Declared last: it is removed
    /// only after [`Drop`] has stopped the server.
    dir: WorkDir,
}

impl Cluster {
    /// initdb into a fresh directory and start the server; returns once it accepts
    /// connections. `bin` overrides where the server binaries are.
    pub(crate) fn start(bin: Option<&Path>, keep: bool) -> anyhow::Result<Cluster> {
        let bin = match bin {
            Some(dir) => dir.to_path_buf(),
            None => debian_bin()?,
        };
        for tool in [
            "initdb",
            "postgres",
            "pg_ctl",
            "pg_isready",
            "psql",
            "pgbench",
        ] {
            if !bin.join(tool).is_file() {
                bail!(
                    "no {tool} in {}: install PostgreSQL's server package, or pass --pg-bin DIR",
                    bin.display()
                );
            }
        }
        let dir = WorkDir::new("pg", keep)?;
        let socket_dir = dir.path.join("run");
        let data = dir.path.join("data");
        std::fs::create_dir_all(&socket_dir).context("cannot create the socket directory")?;
        let owner = rustix::process::geteuid().is_root().then_some("postgres");
        if let Some(user) = owner {
            let status = Command::new("chown")
                .arg("-R")
                .arg(format!("{user}:{user}"))
                .arg(&dir.path)
                .status()
                .context("cannot run chown")?;
            if !status.success() {
                bail!("chown of {} to {user} failed", dir.path.display());
            }
        }
        let cluster = Cluster {
            bin,
            owner,
            socket_dir,
            data,
            server: Mutex::new(None),
            next: AtomicUsize::new(0),
            dir,
        };
        // --no-sync only skips flushing the freshly made files at the end of initdb; the
        // server itself runs with fsync on.
        let out = cluster
            .server_command("initdb")
            .arg("-D")
            .arg(&cluster.data)
            .args(["-U", ROLE, "--auth-local=trust", "-E", "UTF8"])
            .args(["--locale=C.UTF-8", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .context("cannot run initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        cluster.start_server()?;
        Ok(cluster)
    }

    /// A command for the server binary `name`, run as the cluster's owner, that gets SIGQUIT
    /// (immediate shutdown) when the thread that spawned it ends.
    fn server_command(&self, name: &str) -> Command {
        let mut command = Command::new("setpriv");
        if let Some(user) = self.owner {
            command.args(["--reuid", user, "--regid", user, "--init-groups"]);
        }
        command
            .args(["--pdeathsig", "SIGQUIT"])
            .arg(self.bin.join(name))
            .current_dir(&self.dir.path)
            .env_remove("PGDATA");
        command
    }

    /// Starts the postmaster and waits until it accepts connections.
    fn start_server(&self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.log_path()).context("cannot create the server log")?;
        if let Some(user) = self.owner {
            // The log is opened by us and handed over, but pg_ctl and a curious reader may
            // want it to belong to the server's user like the rest of the directory.
            let _ = Command::new("chown")
                .arg(format!("{user}:{user}"))
                .arg(self.log_path())
                .status();
        }
        let mut command = self.server_command("postgres");
        command
            .arg("-D")
            .arg(&self.data)
            .arg("-k")
            .arg(&self.socket_dir)
            .args(["-p", &PORT.to_string(), "-c", "listen_addresses="])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        *self
            .server
            .lock()
            .map_err(|_| anyhow!("server lock poisoned"))? = Some(spawn_from_keeper(command)?);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .arg("-h")
                .arg(&self.socket_dir)
                .args(["-p", &PORT.to_string(), "-U", ROLE, "-d", "postgres"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            if let Ok(mut server) = self.server.lock() {
                if let Some(status) = server.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    bail!("postgres exited with {status}:\n{}", self.log());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "postgres did not start within {START_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server log's path.
    fn log_path(&self) -> PathBuf {
        self.dir.path.join("server.log")
    }

    /// The server's log so far, for errors.
    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The cluster's directory, for files written beside it (pgbench scripts and logs).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir.path
    }

    /// A fresh name unique in this run, with `prefix` (letters, digits and `_`).
    pub(crate) fn unique(&self, prefix: &str) -> String {
        format!("{prefix}_{}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Creates an empty database `name`.
    pub(crate) fn create_database(&self, name: &str) -> anyhow::Result<()> {
        self.psql("postgres", &format!("CREATE DATABASE {name}"))
            .map(|_| ())
    }

    /// The `[store]` settings of a daemon on `database` (the `[store]` header and the
    /// data directory are the caller's: the outbox key and the mail still live there).
    pub(crate) fn store_toml(&self, database: &str) -> String {
        format!(
            "backend = \"postgres\"\n\n[store.postgres]\nsocket_dir = {:?}\nport = {PORT}\n\
             database = {database:?}\nuser = {ROLE:?}\ntls = \"disable\"\n",
            self.socket_dir
        )
    }

    /// Runs `sql` in `database` with psql, stopping at the first error, and returns its
    /// unaligned, tuples-only output.
    pub(crate) fn psql(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let out = self
            .client_command("psql")
            .args(["-d", database, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At"])
            .arg("-c")
            .arg(sql)
            .stdin(Stdio::null())
            .output()
            .context("cannot run psql")?;
        check(&out, "psql").with_context(|| format!("psql in {database}: {}", first_line(sql)))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    }

    /// A client tool (psql, pgbench) pointed at the cluster, as ourselves: the socket
    /// trusts every local user who names the role.
    fn client_command(&self, name: &str) -> Command {
        let mut command = Command::new(self.bin.join(name));
        command
            .arg("-h")
            .arg(&self.socket_dir)
            .args(["-p", &PORT.to_string(), "-U", ROLE])
            .current_dir(&self.dir.path)
            // Only what names the server: PGOPTIONS or PGSSLMODE from the caller's shell
            // would change what is measured.
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        command
    }

    /// Fills `database` with pgbench's standard tables at scale `scale` (100 000 accounts
    /// per unit) and vacuums them, for `pgbench -S`.
    pub(crate) fn pgbench_init(&self, database: &str, scale: u32) -> anyhow::Result<()> {
        let out = self
            .client_command("pgbench")
            .args(["-i", "-q", "-s", &scale.to_string(), database])
            .stdin(Stdio::null())
            .output()
            .context("cannot run pgbench -i")?;
        check(&out, "pgbench -i")
    }

    /// One pgbench run of `secs` whole seconds on `database` with `clients` connections
    /// (prepared statements, as the daemon uses), and every transaction's latency from its
    /// per-transaction log. The samples' rate is pgbench's own tps, which leaves out the time
    /// taken to connect.
    pub(crate) fn pgbench(
        &self,
        database: &str,
        script: &Script,
        clients: usize,
        secs: u64,
        defines: &[(&str, String)],
    ) -> anyhow::Result<Samples> {
        let prefix = self.dir.path.join(self.unique("pgbench"));
        let threads = clients.clamp(1, super::cores());
        let mut command = self.client_command("pgbench");
        command
            .args(["-n", "-M", "prepared"])
            .args(["-c", &clients.to_string(), "-j", &threads.to_string()])
            .args(["-T", &secs.max(1).to_string(), "-l"])
            .arg(format!("--log-prefix={}", prefix.display()));
        match script {
            Script::SelectOnly => {
                command.arg("-S");
            }
            Script::File(path) => {
                command.arg("-f").arg(path);
            }
        }
        for (name, value) in defines {
            command.arg("-D").arg(format!("{name}={value}"));
        }
        let out = command
            .arg(database)
            .stdin(Stdio::null())
            .output()
            .context("cannot run pgbench")?;
        check(&out, "pgbench")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let failed = stat(&stdout, "number of failed transactions:").unwrap_or(0.0);
        if failed > 0.0 {
            bail!("pgbench: {failed} transactions failed:\n{stdout}");
        }
        let tps = stat(&stdout, "tps =")
            .ok_or_else(|| anyhow!("no tps in pgbench's output:\n{stdout}"))?;
        let mut nanos = Vec::new();
        let name = prefix
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        // One log per thread: PREFIX.PID for the first, PREFIX.PID.N for the others.
        for entry in std::fs::read_dir(&self.dir.path)? {
            let entry = entry?;
            let file = entry.file_name();
            let Some(file) = file.to_str() else { continue };
            if !file.starts_with(&format!("{name}.")) {
                continue;
            }
            let text = std::fs::read_to_string(entry.path())?;
            // `client transaction latency_us script epoch epoch_us`
            for line in text.lines() {
                if let Some(us) = line
                    .split_whitespace()
                    .nth(2)
                    .and_then(|f| f.parse::<u64>().ok())
                {
                    nanos.push(us * 1000);
                }
            }
            let _ = std::fs::remove_file(entry.path());
        }
        if nanos.is_empty() || tps <= 0.0 {
            bail!("pgbench logged no transactions:\n{stdout}");
        }
        let elapsed = Duration::from_secs_f64(nanos.len() as f64 / tps);
        Ok(Samples::new(nanos, elapsed))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Immediate: the data is thrown away, nothing needs a checkpoint.
        let _ = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Ok(mut server) = self.server.lock() {
            if let Some(mut child) = server.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// What a pgbench run executes.
pub(crate) enum Script {
    /// The built-in select-only script (`-S`): one primary-key read of pgbench_accounts.
    SelectOnly,
    /// A custom script file (`-f`).
    File(PathBuf),
}

/// The newest `/usr/lib/postgresql/*/bin` that holds a server.
fn debian_bin() -> anyhow::Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_PG_LIB)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        anyhow!(
            "no PostgreSQL server in {DEBIAN_PG_LIB}/*/bin: install Debian's postgresql \
             package, or pass --pg-bin DIR"
        )
    })
}

/// Spawns `command` from a thread that never ends. The postmaster's parent-death signal
/// follows the thread that spawned it, not the process, so a thread that ends (a tokio
/// worker, a scoped thread) would take the server down with it mid-run.
fn spawn_from_keeper(command: Command) -> anyhow::Result<Child> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("postmaster-keeper".into())
        .spawn(move || {
            let mut command = command;
            let _ = tx.send(command.spawn());
            loop {
                std::thread::park();
            }
        })
        .context("cannot start the postmaster's keeper thread")?;
    rx.recv()
        .context("the keeper thread did not answer")?
        .context("cannot start postgres")
}

/// Fails with the tool's stderr if it did not succeed.
fn check(out: &Output, what: &str) -> anyhow::Result<()> {
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "{what} exited with {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

/// The number after `label` on the first line of pgbench's summary that starts with it.
fn stat(output: &str, label: &str) -> Option<f64> {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The first line of a statement, for error messages.
fn first_line(sql: &str) -> &str {
    sql.lines().next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pgbench_summary_lines() {
        let out = "number of transactions actually processed: 51234\n\
                   number of failed transactions: 0 (0.000%)\n\
                   latency average = 0.312 ms\n\
                   initial connection time = 4.101 ms\n\
                   tps = 51192.448113 (without initial connection time)\n";
        assert_eq!(stat(out, "tps ="), Some(51192.448113));
        assert_eq!(stat(out, "number of failed transactions:"), Some(0.0));
        assert_eq!(stat(out, "nothing"), None);
    }
}
