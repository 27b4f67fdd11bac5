//! A fresh, real `latchkeyd` per test: the binary, run in its own temporary directory with a
//! cleared environment, killed when the test ends, its log printed when the test fails.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use latchkey_client::{Client, ConnectOptions};
use rustix::process::Signal;
use tempfile::TempDir;
use tokio::net::UnixStream;

use crate::run::{run, Run};
use crate::{our_uid, path_str};

/// How long the daemon may take to accept connections. Generous: start-up computes an argon2
/// hash, which takes around a second in an unoptimised build on a busy machine.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the daemon may take to exit after a signal; above its default shutdown grace
/// period of 30 s, so a daemon that waits out the whole grace period is still seen to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(40);

/// The deadline of every call made by [`Daemon::client`]. Far above the client's default:
/// hash-bound calls queue behind each other, and tests run in parallel on unoptimised builds.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A test's directory and configuration, before the daemon starts.
pub struct Setup {
    /// The test's private directory, removed when the test ends.
    dir: TempDir,
    /// The configuration to write: the paths inside `dir`, then what the test added.
    config: toml::Table,
    /// Environment variables for the daemon, besides `PATH`.
    env: Vec<(String, String)>,
    /// Whether the daemon is stopped with SIGTERM at the end of the test and must exit
    /// cleanly, instead of being killed.
    clean_stop: bool,
    /// The PostgreSQL database the daemon uses, when it does.
    database: Option<String>,
    /// The umask the daemon is started with, when the test sets one.
    umask: Option<u32>,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup::new()
    }
}

impl Setup {
    /// A fresh directory and a configuration whose socket and data directory are inside it;
    /// everything else keeps the daemon's defaults (hashing parameters included: the daemon
    /// refuses any below the OWASP floor).
    pub fn new() -> Setup {
        match crate::postgres::backend() {
            crate::postgres::Backend::Sled => Setup::sled(),
            crate::postgres::Backend::Postgres => Setup::postgres(),
        }
    }

    /// Like [`Setup::new`], on a fresh database of the test cluster, whatever
    /// `LK_TEST_BACKEND` says: for the tests of what only a shared database does.
    pub fn postgres() -> Setup {
        let cluster = crate::postgres::cluster();
        let database = cluster.create_database();
        let mut setup = Setup::sled().toml(&cluster.store_toml(&database));
        setup.database = Some(database);
        setup
    }

    /// A second host of the application `first` serves: its own directory and socket, the
    /// same database and the same outbox key file.
    pub fn another_host(first: &Daemon) -> Setup {
        let Some(database) = first.database() else {
            panic!("another host needs a daemon on PostgreSQL");
        };
        let key = first.data_dir().join("outbox.key");
        let mut setup = Setup::sled()
            .toml(&crate::postgres::cluster().store_toml(database))
            .toml(&format!(
                "[store]\noutbox_key_file = {:?}\n",
                path_str(&key)
            ));
        setup.database = Some(database.to_owned());
        setup
    }

    /// Like [`Setup::new`], on sled whatever `LK_TEST_BACKEND` says.
    pub fn sled() -> Setup {
        // A short prefix in the system temp dir keeps the socket path well below the 108-byte
        // limit of a Unix socket address.
        let dir = tempfile::Builder::new()
            .prefix("lk-")
            .tempdir()
            .expect("cannot create a temporary directory");
        // CI runs as root, which the daemon refuses unless told; elsewhere the test runs the
        // daemon as its own ordinary user, as an operator would.
        let base = format!(
            "[server]\nsocket = {:?}\nallow_root = {}\n[store]\ndata_dir = {:?}\n",
            path_str(&dir.path().join("latchkey.sock")),
            our_uid() == 0,
            path_str(&dir.path().join("data")),
        );
        let config = base.parse().expect("the base configuration is valid TOML");
        Setup {
            dir,
            config,
            env: Vec::new(),
            clean_stop: false,
            database: None,
            umask: None,
        }
    }

    /// Starts the daemon with the umask `mask` (through `sh -c 'umask ...; exec ...'`), as a
    /// shell or a service manager without `UMask=` would.
    pub fn umask(mut self, mask: u32) -> Setup {
        self.umask = Some(mask);
        self
    }

    /// Stops the daemon with SIGTERM when the test ends and fails the test unless it exits
    /// with status 0 (by default it is killed, which is quicker).
    pub fn clean_stop(mut self) -> Setup {
        self.clean_stop = true;
        self
    }

    /// Sets an environment variable for the daemon (its environment is otherwise empty).
    pub fn env(mut self, key: &str, value: &str) -> Setup {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Merges `extra` (TOML) into the configuration; its tables are merged key by key with
    /// the ones already there, so `[server]` settings can be added next to the socket path.
    pub fn toml(mut self, extra: &str) -> Setup {
        let extra: toml::Table = extra
            .parse()
            .unwrap_or_else(|e| panic!("test configuration is not valid TOML: {e}\n{extra}"));
        merge(&mut self.config, extra);
        self
    }

    /// The test's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The PostgreSQL database the daemon will use, if it uses one.
    pub fn database(&self) -> Option<&str> {
        self.database.as_deref()
    }

    /// Writes the configuration file and returns its path.
    pub fn write_config(&self) -> PathBuf {
        let path = self.dir().join("latchkeyd.toml");
        let text = toml::to_string(&self.config).expect("the configuration serialises");
        std::fs::write(&path, text).expect("cannot write the configuration file");
        path
    }

    /// Writes the configuration and starts the daemon on it.
    pub async fn start(self) -> Daemon {
        let config_file = self.write_config();
        let value = |table: &str, key: &str| {
            let value = self.config.get(table).and_then(|t| t.get(key));
            PathBuf::from(value.and_then(toml::Value::as_str).unwrap_or_default())
        };
        let mut daemon = Daemon {
            socket: value("server", "socket"),
            data_dir: value("store", "data_dir"),
            log_file: self.dir().join("latchkeyd.log"),
            config_file,
            binary: crate::bin::latchkeyd(),
            child: None,
            setup: self,
        };
        daemon.spawn().await;
        daemon
    }
}

/// Adds `from` to `into`, descending into tables present in both.
fn merge(into: &mut toml::Table, from: toml::Table) {
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(toml::Value::Table(old)), toml::Value::Table(new)) => merge(old, new),
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// A running `latchkeyd`, killed when dropped. When the test fails, the drop prints the
/// daemon's log (stdout and stderr, across restarts) after the failure message, so failure
/// messages need not include it.
pub struct Daemon {
    /// The test's directory and configuration; the directory lives as long as the daemon.
    setup: Setup,
    /// The configuration file the daemon was started with.
    config_file: PathBuf,
    /// The daemon's socket.
    socket: PathBuf,
    /// The daemon's data directory.
    data_dir: PathBuf,
    /// Where the daemon's output goes, appended to on each start.
    log_file: PathBuf,
    /// The binary started.
    binary: PathBuf,
    /// The process, while it runs.
    child: Option<Child>,
}

impl Daemon {
    /// A daemon with the default test configuration.
    pub async fn start() -> Daemon {
        Setup::new().start().await
    }

    /// The test's directory: the daemon's working directory, holding its configuration and
    /// log (and, unless configured elsewhere, its socket and data directory).
    pub fn dir(&self) -> &Path {
        self.setup.dir()
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The PostgreSQL database the daemon uses, if it uses one.
    pub fn database(&self) -> Option<&str> {
        self.setup.database()
    }

    /// Everything the daemon stores, as (name, bytes): every file below its data directory
    /// and, on PostgreSQL, a `pg_dump` of its database.
    pub fn stored(&self) -> Vec<(String, Vec<u8>)> {
        let mut stored: Vec<(String, Vec<u8>)> = files_under(&self.data_dir)
            .into_iter()
            .map(|f| {
                (
                    f.display().to_string(),
                    std::fs::read(&f).unwrap_or_default(),
                )
            })
            .collect();
        if let Some(database) = self.database() {
            let dump = crate::postgres::cluster().dump(database);
            stored.push((format!("pg_dump of {database}"), dump));
        }
        stored
    }

    /// Everything the daemon has written so far, over all its runs.
    pub fn log(&self) -> String {
        std::fs::read(&self.log_file)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// A new connection.
    pub async fn client(&self) -> Client {
        let options = ConnectOptions {
            call_timeout: CALL_TIMEOUT,
            ..ConnectOptions::default()
        };
        match Client::connect_with(&self.socket, options).await {
            Ok(client) => client,
            Err(e) => panic!("cannot connect to the daemon: {e}"),
        }
    }

    /// Sends SIGTERM and waits for the daemon to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::TERM);
        self.wait().await
    }

    /// Sends `signal` to the running daemon. The pid is our own unreaped child, so it
    /// cannot have been reused by another process.
    pub fn signal(&self, signal: Signal) {
        let child = self.child.as_ref().expect("the daemon is running");
        crate::run::signal(child.id(), signal);
    }

    /// The configuration file the daemon reads (rewrite it, then send SIGHUP, to reload).
    pub fn config_file(&self) -> &Path {
        &self.config_file
    }

    /// Waits up to 10 s for the log to contain `text`.
    pub async fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(text) {
            if Instant::now() > deadline {
                panic!("the daemon log never showed {text:?}\n{}", self.log_dump());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the daemon with SIGKILL, as a crash or power cut would, and waits for it.
    pub async fn kill9(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("the daemon is running");
        child.kill().expect("cannot kill the daemon");
        self.wait().await
    }

    /// Starts the daemon again on the same directory and configuration, stopping it first
    /// with SIGTERM if it still runs.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.terminate().await;
            assert!(
                status.success(),
                "latchkeyd exited with {status} on SIGTERM"
            );
        }
        self.spawn().await;
    }

    /// Runs the `latchkey` CLI against this daemon: `latchkey --socket SOCKET ARGS...`.
    pub async fn cli(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut full = vec!["--socket", path_str(&self.socket)];
        full.extend_from_slice(args);
        run(&crate::bin::latchkey(), &full, stdin).await
    }

    /// Fails, showing the offending log line, if the daemon log contains any of `secrets`.
    #[track_caller]
    pub fn assert_log_lacks(&self, secrets: &[&str]) {
        let log = self.log();
        for secret in secrets {
            if let Some(line) = log.lines().find(|line| line.contains(secret)) {
                panic!("the daemon log contains the secret {secret:?}:\n{line}");
            }
        }
    }

    /// Starts the process and waits until its socket accepts connections.
    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "the daemon is running already");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_file)
            .expect("cannot open the daemon log");
        let mut command = match self.setup.umask {
            None => Command::new(&self.binary),
            Some(mask) => {
                let mut sh = Command::new("/bin/sh");
                sh.arg("-c")
                    .arg(format!("umask {mask:03o} && exec \"$0\" \"$@\""))
                    .arg(&self.binary);
                sh
            }
        };
        let child = command
            .arg("--config")
            .arg(&self.config_file)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.setup.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.setup.dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot duplicate the log file"))
            .stderr(log)
            .spawn()
            .expect("cannot start latchkeyd");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait() {
                panic!("latchkeyd exited with {status} before accepting connections");
            }
            if UnixStream::connect(&self.socket).await.is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "latchkeyd did not accept connections on {} within {START_TIMEOUT:?}",
                    self.socket.display(),
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the process to exit, without blocking the test's runtime.
    pub async fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = self.try_wait() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                panic!("latchkeyd did not exit within {EXIT_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The exit status, if the process has exited.
    fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        child.try_wait().expect("cannot poll the daemon process")
    }

    /// The log, framed for a failure message.
    fn log_dump(&self) -> String {
        format!(
            "--- latchkeyd log ({}) ---\n{}--- end of log ---",
            self.log_file.display(),
            self.log()
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if let Some(mut child) = self.child.take() {
            if self.setup.clean_stop && !panicking {
                crate::run::signal(child.id(), Signal::TERM);
                let status = wait_blocking(&mut child);
                assert!(
                    status.is_some_and(|s| s.success()),
                    "latchkeyd did not stop cleanly on SIGTERM: {status:?}\n{}",
                    self.log_dump()
                );
            } else {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if panicking {
            eprintln!("{}", self.log_dump());
        }
    }
}

/// Waits up to [`EXIT_TIMEOUT`] for `child` to exit, blocking the thread (a drop cannot
/// await); kills it and returns `None` if it does not.
fn wait_blocking(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + EXIT_TIMEOUT;
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Every regular file below `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}
