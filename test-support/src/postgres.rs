//! A real PostgreSQL for the tests: Debian's server binaries, one unprivileged cluster per
//! test binary in a temporary directory, on a Unix socket there and on a free loopback port,
//! and a fresh database for each test. Never a mock.
//!
//! The cluster runs as the `postgres` user when the tests run as root (PostgreSQL refuses to
//! run as root), as the tests' own user otherwise, and is stopped when the test binary exits
//! (it is started with a parent-death signal). It runs with `fsync = off`: the tests kill
//! daemons, not the server, and a test cluster need not survive a power cut; the benchmark's
//! cluster keeps fsync on.
//!
//! `LK_TEST_BACKEND=postgres` makes every [`crate::Setup`] use a database of this
//! cluster instead of sled, so the whole integration suite runs against either backend.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::{free_port, our_uid, path_str};

/// The role the daemons log in as, a superuser of the test cluster.
pub const ROLE: &str = "latchkey";

/// The role's password, for tests that connect over TCP with password authentication (over
/// the Unix socket no password is asked).
pub const PASSWORD: &str = "test-cluster-password";

/// Which backend [`crate::Setup`] gives each test, from `LK_TEST_BACKEND`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default.
    Sled,
    /// A fresh database on the test cluster.
    Postgres,
}

/// The backend the suite runs against: `LK_TEST_BACKEND` (`sled`, the default, or
/// `postgres`). Anything else fails the test rather than quietly running on sled. Not
/// `LATCHKEY_*`: the daemon reads those as settings, and its unit tests would refuse it.
pub fn backend() -> Backend {
    match std::env::var("LK_TEST_BACKEND").as_deref() {
        Err(_) | Ok("") | Ok("sled") => Backend::Sled,
        Ok("postgres") => Backend::Postgres,
        Ok(other) => panic!("LK_TEST_BACKEND={other:?}: expected sled or postgres"),
    }
}

/// The running test cluster.
pub struct Cluster {
    /// The temporary directory holding the data and the socket; removed at exit by nobody
    /// (the server owns it), so it is under the system temp dir.
    dir: PathBuf,
    /// The directory of the server's Unix socket.
    socket_dir: PathBuf,
    /// The loopback TCP port.
    port: u16,
    /// The server binaries.
    bin: PathBuf,
    /// The postmaster, while it runs.
    server: Mutex<Option<Child>>,
    /// The uid the server runs as, for files it must read.
    owner: Option<String>,
}

/// The cluster of this test binary, started on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(Cluster::start)
}

/// Where Debian puts the server binaries: `LATCHKEY_PG_BIN`, or the newest
/// `/usr/lib/postgresql/*/bin`.
fn server_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("LATCHKEY_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server in /usr/lib/postgresql/*/bin: install Debian's postgresql \
             package (./scripts/test does), or set LATCHKEY_PG_BIN"
        ),
    }
}

impl Cluster {
    /// initdb into a fresh directory and start the server; waits until it accepts connections.
    /// Tests that stop the server start their own cluster with this; the others share
    /// [`cluster`].
    pub fn start() -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("lk-pg-")
            .tempdir()
            .expect("cannot create the cluster's directory")
            .keep();
        let data = dir.join("data");
        let socket_dir = dir.join("run");
        std::fs::create_dir(&socket_dir).expect("cannot create the socket directory");
        let owner = (our_uid() == 0).then(|| "postgres".to_owned());
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, PASSWORD).expect("cannot write the password file");
        if let Some(user) = &owner {
            let chown = Command::new("chown")
                .args(["-R", &format!("{user}:{user}"), path_str(&dir)])
                .status()
                .expect("cannot run chown");
            assert!(chown.success(), "chown of the cluster directory failed");
        }
        let bin = server_bin();
        let cluster = Cluster {
            dir: dir.clone(),
            socket_dir,
            port: free_port(),
            bin,
            server: Mutex::new(None),
            owner,
        };
        let initdb = cluster
            .command("initdb")
            .args(["-D", path_str(&data), "-U", ROLE, "--auth-local=trust"])
            .args(["--auth-host=scram-sha-256", "--pwfile", path_str(&pwfile)])
            .args(["-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
            .stdout(Stdio::null())
            .output()
            .expect("cannot run initdb");
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        cluster.make_certificates();
        cluster.start_server();
        cluster
    }

    /// A private CA and a server certificate it signed for 127.0.0.1, so that TCP connections
    /// can be checked with `tls = "verify-full"`; the key is the server's, mode 0600.
    fn make_certificates(&self) {
        let certs = crate::smtp::make_certificates_blocking(&self.dir);
        std::fs::set_permissions(
            &certs.key,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("cannot chmod the server key");
        if let Some(user) = &self.owner {
            let chown = Command::new("chown")
                .args([
                    &format!("{user}:{user}"),
                    path_str(&certs.key),
                    path_str(&certs.cert),
                ])
                .status()
                .expect("cannot run chown");
            assert!(chown.success(), "chown of the server key failed");
        }
    }

    /// The CA that signed the server's certificate, for `store.postgres.ca_file`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A command for the server binary `name`, run as the cluster's owner, that receives
    /// SIGQUIT (immediate shutdown) when this test binary exits.
    fn command(&self, name: &str) -> Command {
        let mut command = Command::new("setpriv");
        if let Some(user) = &self.owner {
            command.args(["--reuid", user, "--regid", user, "--init-groups"]);
        }
        command
            .args(["--pdeathsig", "SIGQUIT"])
            .arg(self.bin.join(name))
            .current_dir(&self.dir)
            .env_remove("PGDATA");
        command
    }

    /// Starts the postmaster and waits until it accepts connections.
    fn start_server(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .expect("cannot open the server log");
        // Started from a thread that lives as long as the process: the parent-death signal
        // follows the thread that spawned the child, not the process.
        let mut command = self.command("postgres");
        command
            .args(["-D", path_str(&self.dir.join("data"))])
            .args(["-k", path_str(&self.socket_dir)])
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=400"])
            .args(["-c", "shared_buffers=64MB", "-c", "ssl=on"])
            .args([
                "-c",
                &format!("ssl_cert_file={}", path_str(&self.dir.join("cert.pem"))),
            ])
            .args([
                "-c",
                &format!("ssl_key_file={}", path_str(&self.dir.join("key.pem"))),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot duplicate the log"))
            .stderr(log);
        let child = spawn_from_keeper(command);
        *self.server.lock().expect("server lock") = Some(child);
        self.wait_ready();
    }

    /// Waits until the server accepts connections, or fails showing its log.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args([
                    "-h",
                    path_str(&self.socket_dir),
                    "-p",
                    &self.port.to_string(),
                ])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if Instant::now() > deadline {
                panic!("PostgreSQL did not start:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// The directory of the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The loopback TCP port (password authentication: [`PASSWORD`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a fresh, empty database and returns its name.
    pub fn create_database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let name = format!(
            "lk_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// Runs `sql` in `database` with psql and returns its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                path_str(&self.socket_dir),
                "-p",
                &self.port.to_string(),
            ])
            .args([
                "-U",
                ROLE,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ])
            .output()
            .expect("cannot run psql");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    }

    /// Everything in `database`, as `pg_dump` writes it (plain SQL, data and schema).
    pub fn dump(&self, database: &str) -> Vec<u8> {
        let out = Command::new(self.bin.join("pg_dump"))
            .args([
                "-h",
                path_str(&self.socket_dir),
                "-p",
                &self.port.to_string(),
            ])
            .args(["-U", ROLE, "-d", database])
            .output()
            .expect("cannot run pg_dump");
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The `[store]` configuration of a daemon on `database`, over the Unix socket.
    pub fn store_toml(&self, database: &str) -> String {
        format!(
            "[store]\nbackend = \"postgres\"\n[store.postgres]\nsocket_dir = {:?}\nport = {}\n\
             database = {database:?}\nuser = {ROLE:?}\ntls = \"disable\"\n",
            path_str(&self.socket_dir),
            self.port,
        )
    }

    /// Stops the server with a fast shutdown (what `systemctl stop` does), for outage tests.
    pub fn stop(&self) {
        let status = self
            .command("pg_ctl")
            .args([
                "-D",
                path_str(&self.dir.join("data")),
                "-m",
                "fast",
                "-w",
                "stop",
            ])
            .stdout(Stdio::null())
            .status()
            .expect("cannot run pg_ctl");
        assert!(status.success(), "pg_ctl stop failed:\n{}", self.log());
        if let Some(mut child) = self.server.lock().expect("server lock").take() {
            let _ = child.wait();
        }
    }

    /// Freezes every process of the server (SIGSTOP), as a hung machine or a stuck disk
    /// would: connections stay open and nothing answers.
    pub fn pause(&self) {
        self.signal_all("-STOP");
    }

    /// Lets the server run again after [`Cluster::pause`].
    pub fn resume(&self) {
        self.signal_all("-CONT");
    }

    /// Sends `signal` to the postmaster and every process it started.
    fn signal_all(&self, signal: &str) {
        let pid = match self.server.lock().expect("server lock").as_ref() {
            Some(child) => child.id().to_string(),
            None => panic!("the server is not running"),
        };
        // Children first, so none is started by a postmaster that is still running.
        let _ = Command::new("pkill").args([signal, "-P", &pid]).status();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Starts the server again after [`Cluster::stop`].
    pub fn restart(&self) {
        self.start_server();
    }
}

/// Spawns `command` from a thread that never ends, so that its parent-death signal fires only
/// when the whole test binary exits.
fn spawn_from_keeper(command: Command) -> Child {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut command = command;
        let _ = tx.send(command.spawn());
        loop {
            std::thread::park();
        }
    });
    rx.recv()
        .expect("the keeper thread answers")
        .expect("cannot start postgres")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.server.lock().map(|s| s.is_some()).unwrap_or(false) {
            let _ = self
                .command("pg_ctl")
                .args([
                    "-D",
                    path_str(&self.dir.join("data")),
                    "-m",
                    "immediate",
                    "stop",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
