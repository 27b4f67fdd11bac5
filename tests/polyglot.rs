//! The Python, Node and Go clients (`client/python`, `client/node`, `client/go`) against the
//! real daemon.
//!
//! Each test starts its own `latchkeyd` in a temporary directory and runs one script from
//! `tests/polyglot/` with `python3` or `node`; the script walks the whole reset flow through
//! its client and exits non-zero at the first mismatch. The framing tests need no daemon: the
//! scripts play a fake one. On failure the test prints the script's output and the daemon's
//! log. Both interpreters are required (CI has them); a missing one fails the test.
//!
//! A separate test binary from `tests/integration/`; the daemon comes from the shared
//! harness, `latchkey-test-support`.

// The helpers of this test crate fail the test the way its #[test] functions do, by
// panicking with a message; clippy.toml allows that only inside the test functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::File;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use latchkey_test_support::{path_str, Daemon, Setup};
use tempfile::TempDir;

/// How long one script may run. The flows hash about ten passwords; a loaded CI machine
/// running the other test binaries alongside needs the margin.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts a daemon for the flows. They ask for several reset mails to one address (the
/// default cooldown, one per 60 s, would refuse the second) and sign up the concealing way.
async fn daemon() -> Daemon {
    Setup::new()
        .toml(
            "[limits]\nreset_per_email = { burst = 100, per_secs = 60 }\n\
             [signup]\nconceal_taken_addresses = true\n",
        )
        .start()
        .await
}

/// Runs `script` under `interpreter` with the socket and data directory as arguments and
/// fails the test, with the script's output, unless it succeeds (the harness adds the
/// daemon's log).
fn run_flow(daemon: &Daemon, interpreter: &str, script: &str) {
    let dir = daemon.dir();
    // The mail sender currently writes into `latchkey-data/mail` under the daemon's working
    // directory rather than into its data directory; the scripts look in both.
    let stopgap_mail_dir = dir.join("latchkey-data").join("mail");
    let args = [
        path_str(daemon.socket()),
        path_str(daemon.data_dir()),
        path_str(&stopgap_mail_dir),
    ];
    let (status, output) = run_script(interpreter, script, &args, dir);
    assert!(
        status.success(),
        "{interpreter} {script} failed ({status})\n{output}"
    );
    println!("{output}");
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
    let what = format!("{interpreter} {}", script.display());
    wait_for(&mut child, &what, &out_path)
}

/// Waits for `child` at most [`SCRIPT_TIMEOUT`] (killing it then, and failing the test with
/// its output); returns its status and the output it wrote to `out_path`.
fn wait_for(child: &mut std::process::Child, what: &str, out_path: &Path) -> (ExitStatus, String) {
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("cannot wait for the child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = std::fs::read_to_string(out_path).unwrap_or_default();
            panic!("{what} did not finish within {SCRIPT_TIMEOUT:?}\n{output}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(out_path).unwrap_or_default();
    (status, output)
}

#[tokio::test]
async fn the_python_client_runs_the_whole_reset_flow() {
    run_flow(&daemon().await, "python3", "flow.py");
}

#[tokio::test]
async fn the_node_client_runs_the_whole_reset_flow() {
    run_flow(&daemon().await, "node", "flow.js");
}

/// The Go module (`client/go`, issue 17): `go test` runs its own fake-daemon tests and the
/// reset flow against this daemon, which it finds in `LATCHKEY_SOCKET`.
#[tokio::test]
async fn the_go_client_runs_the_whole_reset_flow() {
    let daemon = daemon().await;
    let dir = daemon.dir();
    let mail_dirs = std::env::join_paths([
        daemon.data_dir().join("mail"),
        dir.join("latchkey-data").join("mail"),
    ])
    .expect("mail directories join");
    let out_path = dir.join("go.out");
    let out = File::create(&out_path).expect("cannot create the output file");
    let mut child = Command::new("go")
        .args(["test", "-count=1", "-v", "./..."])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("client/go"))
        .env("LATCHKEY_SOCKET", daemon.socket())
        .env("LATCHKEY_MAIL_DIRS", mail_dirs)
        // The build cache in the test's directory: nothing written to the user's home.
        .env("GOCACHE", dir.join("gocache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("cannot duplicate the output file"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run go (scripts/install-go installs it): {e}"));
    // Blocking is fine: the daemon under test is its own process.
    let (status, output) = wait_for(&mut child, "go test in client/go", &out_path);
    assert!(status.success(), "go test failed ({status})\n{output}");
    for test in [
        "TestConcurrentCallsAreMatchedByIDWhateverTheOrderOfTheAnswers",
        "TestServerErrorsAPIErrorsCancellationAndReconnecting",
        "TestTheWholeResetFlowAgainstTheRealDaemon",
    ] {
        assert!(
            output.contains(&format!("--- PASS: {test}")),
            "{test} did not pass\n{output}"
        );
    }
    println!("{output}");
}

/// The Node package's own tests (`client/node/test/`, node's test runner): they start the
/// real daemon themselves, from `LATCHKEYD`, to restart it under traffic.
#[test]
fn the_node_package_tests_pass_against_the_real_daemon() {
    run_suite("node", &["--test", "test/"], "client/node", "# pass 4");
}

/// The Python package's own tests (`client/python/tests/`, pytest): they start the real
/// daemon themselves, from `LATCHKEYD`, to fork, preload under gunicorn and restart it.
#[test]
fn the_python_package_tests_pass_against_the_real_daemon() {
    run_suite(
        "python3",
        &["-m", "pytest", "-p", "no:cacheprovider", "-v", "tests"],
        "client/python",
        "7 passed",
    );
}

/// Runs `program args` in `dir` (relative to the repository) with `LATCHKEYD` set, and fails
/// with its output unless it succeeds and prints `expect`.
fn run_suite(program: &str, args: &[&str], dir: &str, expect: &str) {
    let tmp = TempDir::new().expect("cannot create a temporary directory");
    let out_path = tmp.path().join("suite.out");
    let out = File::create(&out_path).expect("cannot create the output file");
    let mut child = Command::new(program)
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
        .env("LATCHKEYD", latchkey_test_support::bin::latchkeyd())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("cannot duplicate the output file"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} (scripts/test installs it): {e}"));
    let what = format!("{program} {} in {dir}", args.join(" "));
    let (status, output) = wait_for(&mut child, &what, &out_path);
    assert!(status.success(), "{what} failed ({status})\n{output}");
    assert!(
        output.contains(expect),
        "{what}: no {expect:?} in\n{output}"
    );
}

/// The Flask example (`examples/flask`, issue 17) over HTTP against the real daemon.
#[test]
fn the_flask_example_signs_up_logs_in_resets_and_ends_sessions_over_http() {
    run_suite(
        "python3",
        &["-m", "pytest", "-p", "no:cacheprovider", "-v", "."],
        "examples/flask",
        "4 passed",
    );
}

/// The Express example (`examples/express`, issue 17) over HTTP against the real daemon.
#[test]
fn the_express_example_signs_up_logs_in_resets_and_ends_sessions_over_http() {
    run_suite("node", &["--test", "test/"], "examples/express", "# pass 3");
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

/// Runs `script` against a daemon that closes idle connections after 1 s.
async fn run_idle(interpreter: &str, script: &str) {
    let daemon = Setup::new()
        .toml("[server]\nidle_timeout_secs = 1\n")
        .start()
        .await;
    let (status, output) = run_script(
        interpreter,
        script,
        &[path_str(daemon.socket())],
        daemon.dir(),
    );
    assert!(
        status.success(),
        "{interpreter} {script} failed ({status})\n{output}"
    );
}

#[tokio::test]
async fn the_python_client_replaces_a_connection_the_daemon_closed_while_idle() {
    run_idle("python3", "idle.py").await;
}

#[tokio::test]
async fn the_node_client_replaces_a_connection_the_daemon_closed_while_idle() {
    run_idle("node", "idle.js").await;
}
