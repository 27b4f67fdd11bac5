//! One-shot runs of a binary, and what they produced, shown whole when a check fails.

use std::fmt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::io::AsyncWriteExt;

/// How long a one-shot run of a binary ([`run`]) may take before it is killed.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// What a one-shot run of a binary produced.
pub struct Run {
    /// The command line, for messages.
    command: String,
    /// How it exited.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Run {
    /// Fails with the whole run shown unless it exited with `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(
            self.status.code(),
            Some(code),
            "expected exit status {code}\n{self}"
        );
        self
    }

    /// Fails unless it exited with status 0.
    #[track_caller]
    pub fn assert_success(&self) -> &Run {
        self.assert_code(0)
    }

    /// Fails unless stdout contains `text`.
    #[track_caller]
    pub fn assert_stdout_contains(&self, text: &str) -> &Run {
        assert!(
            self.stdout.contains(text),
            "expected stdout to contain {text:?}\n{self}"
        );
        self
    }

    /// Fails unless stderr contains `text`.
    #[track_caller]
    pub fn assert_stderr_contains(&self, text: &str) -> &Run {
        assert!(
            self.stderr.contains(text),
            "expected stderr to contain {text:?}\n{self}"
        );
        self
    }

    /// Parses stdout as JSON into `T`, failing with the output shown.
    #[track_caller]
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not the expected JSON: {e}\n{self}"))
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "command: {}\n status: {}\n--- stdout ---\n{}--- stderr ---\n{}--- end ---",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `program` to completion with a cleared environment (only `PATH` kept), `args`, and
/// `stdin` as its standard input (or none). Killed after a minute.
pub async fn run(program: impl AsRef<Path>, args: &[&str], stdin: Option<&str>) -> Run {
    let program = program.as_ref();
    let command = format!("{} {}", program.display(), args.join(" "));
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .await
            .expect("cannot write to the child's stdin");
        // Dropping the pipe closes it, so the child sees end-of-file.
    }
    let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{command} did not finish within {RUN_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("cannot wait for {command}: {e}"));
    Run {
        command,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Sends `signal` to the process `pid` (one of the test's own children); fails the test if
/// it cannot.
pub fn signal(pid: u32, signal: Signal) {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .unwrap_or_else(|| panic!("{pid} is not a process id"));
    if let Err(e) = rustix::process::kill_process(pid, signal) {
        panic!("kill({pid:?}, {signal:?}): {e}");
    }
}
