//! The Python and Node clients (`client/python`, `client/node`) against the real daemon.
//!
//! Each test starts its own `latchkeyd` in a temporary directory and runs one script from
//! `tests/polyglot/` with `python3` or `node`; the script walks the whole reset flow through
//! its client and exits non-zero at the first mismatch. The framing tests need no daemon: the
//! scripts play a fake one. On failure the test prints the script's output and the daemon's
//! log. Both interpreters are required (CI has them); a missing one fails the test.
//!
//! A separate test binary from `tests/integration/`, so its harness is its own, kept small.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The daemon under test.
const LATCHKEYD: &str = env!("CARGO_BIN_EXE_latchkeyd");

/// How long the daemon may take to accept connections: start-up hashes once with argon2,
/// slow in an unoptimised build on a busy machine.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long one script may run. The flows hash about ten passwords; a loaded CI machine
/// running the other test binaries alongside needs the margin.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// A running daemon in its own directory; killed when dropped.
struct Daemon {
    /// Holds the socket, the data directory, the config and the logs; removed on drop.
    dir: TempDir,
    /// The process.
    child: Child,
}

impl Daemon {
    /// Starts `latchkeyd` with its socket and data directory inside a fresh temporary
    /// directory, and waits until the socket accepts connections.
    fn start() -> Daemon {
        // A short prefix in the system temp dir keeps the socket path well below the 108-byte
        // limit of a Unix socket address.
        let dir = tempfile::Builder::new()
            .prefix("lk-poly-")
            .tempdir()
            .expect("cannot create a temporary directory");
        // The flows ask for several reset mails to one address; the default cooldown (one per
        // 60 s) would refuse the second. CI runs as root, which the daemon refuses unless told.
        let config = format!(
            "[server]\nsocket = {:?}\nallow_root = {}\n[store]\ndata_dir = {:?}\n\
             [limits]\nreset_per_email = {{ burst = 100, per_secs = 60 }}\n",
            path_str(&dir.path().join("latchkey.sock")),
            // SAFETY: geteuid has no preconditions and cannot fail.
            unsafe { libc::geteuid() } == 0,
            path_str(&dir.path().join("data")),
        );
        let config_file = dir.path().join("latchkeyd.toml");
        std::fs::write(&config_file, config).expect("cannot write the configuration");
        let log = File::create(dir.path().join("latchkeyd.log")).expect("cannot create the log");
        let child = Command::new(LATCHKEYD)
            .arg("--config")
            .arg(&config_file)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot duplicate the log file"))
            .stderr(log)
            .spawn()
            .expect("cannot start latchkeyd");
        let mut daemon = Daemon { dir, child };
        let deadline = Instant::now() + START_TIMEOUT;
        while UnixStream::connect(daemon.socket()).is_err() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!(
                    "latchkeyd exited with {status} at start-up\n{}",
                    daemon.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "latchkeyd did not accept connections within {START_TIMEOUT:?}\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("latchkey.sock")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("latchkeyd.log"));
        format!("--- latchkeyd log ---\n{}", log.unwrap_or_default())
    }

    /// Runs `script` under `interpreter` with the socket and data directory as arguments and
    /// fails the test, with the script's output and the daemon's log, unless it succeeds.
    fn run_flow(&self, interpreter: &str, script: &str) {
        let socket = self.socket();
        let data_dir = self.data_dir();
        // The mail sender currently writes into `latchkey-data/mail` under the daemon's working
        // directory rather than into its data directory; the scripts look in both.
        let stopgap_mail_dir = self.dir.path().join("latchkey-data").join("mail");
        let args = [
            path_str(&socket),
            path_str(&data_dir),
            path_str(&stopgap_mail_dir),
        ];
        let (status, output) = run_script(interpreter, script, &args, self.dir.path());
        assert!(
            status.success(),
            "{interpreter} {script} failed ({status})\n{output}\n{}",
            self.log()
        );
        println!("{output}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `interpreter tests/polyglot/SCRIPT ARGS...` in `dir` with at most [`SCRIPT_TIMEOUT`],
/// returning its status and its stdout and stderr together.
fn run_script(interpreter: &str, script: &str, args: &[&str], dir: &Path) -> (ExitStatus, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/polyglot")
        .join(script);
    let out_path = dir.join(format!("{interpreter}.out"));
    let out = File::create(&out_path).expect("cannot create the script's output file");
    let mut child = Command::new(interpreter)
        .arg(&script)
        .args(args)
        .current_dir(dir)
        // Keeps `__pycache__` directories out of the source tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("cannot duplicate the output file"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {interpreter} (is it installed?): {e}"));
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("cannot wait for the script") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = std::fs::read_to_string(&out_path).unwrap_or_default();
            panic!(
                "{interpreter} {} did not finish within {SCRIPT_TIMEOUT:?}\n{output}",
                script.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    (status, output)
}

/// A path as a string for the TOML file and the command line; test paths are UTF-8.
fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

#[test]
fn the_python_client_runs_the_whole_reset_flow() {
    Daemon::start().run_flow("python3", "flow.py");
}

#[test]
fn the_node_client_runs_the_whole_reset_flow() {
    Daemon::start().run_flow("node", "flow.js");
}

#[test]
fn the_python_client_reassembles_frames_and_survives_transport_failures() {
    let dir = TempDir::new().expect("cannot create a temporary directory");
    let (status, output) = run_script("python3", "framing.py", &[], dir.path());
    assert!(status.success(), "framing.py failed ({status})\n{output}");
}

#[test]
fn the_node_client_reassembles_frames_and_survives_transport_failures() {
    let dir = TempDir::new().expect("cannot create a temporary directory");
    let (status, output) = run_script("node", "framing.js", &[], dir.path());
    assert!(status.success(), "framing.js failed ({status})\n{output}");
}
