//! The real SMTP server the daemon delivers to: the workspace's `tests/smtp_sink.py`
//! (Python's aiosmtpd), which writes every message it accepts, decoded, as a JSON file.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The sink script, shared with the daemon's own mail tests.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/smtp_sink.py");

/// How long the sink may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long [`SmtpSink::wait_for`] waits for mail.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(30);

/// A running sink on 127.0.0.1, killed when dropped.
pub struct SmtpSink {
    /// The Python process; it also stops when its standard input closes.
    _child: Child,
    /// The port it listens on.
    port: u16,
    /// Where it writes what it receives.
    dir: TempDir,
}

/// One message as the sink received it.
#[derive(Clone, Debug, Deserialize)]
pub struct Mail {
    /// Every header, decoded, in order.
    pub headers: Vec<(String, String)>,
    /// The decoded text/plain body.
    pub text: Option<String>,
    /// The decoded text/html body.
    pub html: Option<String>,
    /// The envelope recipients.
    #[serde(default)]
    pub rcpt_tos: Vec<String>,
}

impl Mail {
    /// The first link in the text part that starts with `prefix`; fails if there is none.
    #[track_caller]
    pub fn link(&self, prefix: &str) -> String {
        let text = self.text.as_deref().unwrap_or_default();
        let start = text
            .find(prefix)
            .unwrap_or_else(|| panic!("no link starting {prefix} in the text part:\n{text}"));
        text[start..]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    /// The HTML part; fails if there is none.
    #[track_caller]
    pub fn html(&self) -> &str {
        self.html.as_deref().expect("the message has an HTML part")
    }
}

impl SmtpSink {
    /// Starts a sink on `port` accepting every message; returns once it listens.
    pub async fn start(port: u16) -> SmtpSink {
        let dir = tempfile::Builder::new()
            .prefix("lk-web-smtp-")
            .tempdir()
            .expect("cannot create the sink's directory");
        let log = std::fs::File::create(dir.path().join("sink.log")).expect("the sink's log");
        let mut child = Command::new("python3")
            .arg(SCRIPT)
            .arg("--port")
            .arg(port.to_string())
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // To a file: aiosmtpd warns on every connection and nobody drains a pipe.
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 {SCRIPT}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        let ready =
            tokio::time::timeout(START_TIMEOUT, BufReader::new(stdout).read_line(&mut line)).await;
        if !matches!(ready, Ok(Ok(_)) if line.trim() == "ready") {
            let _ = child.start_kill();
            let stderr = std::fs::read_to_string(dir.path().join("sink.log")).unwrap_or_default();
            panic!(
                "the SMTP sink did not start on port {port}; it needs Python 3 with aiosmtpd \
                 (`python3 -m pip install aiosmtpd`, which ./scripts/test runs)\n\
                 --- sink stderr ---\n{stderr}--- end ---"
            );
        }
        SmtpSink {
            _child: child,
            port,
            dir,
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every message received so far, in arrival order.
    pub fn received(&self) -> Vec<Mail> {
        read_all(self.dir.path())
    }

    /// Waits until at least `count` messages have arrived and returns them all.
    pub async fn wait_for(&self, count: usize) -> Vec<Mail> {
        let deadline = Instant::now() + ARRIVAL_TIMEOUT;
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} messages within {ARRIVAL_TIMEOUT:?}\n     got: {received:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads every message file in `dir`, in name order (arrival order); files still being
/// written are hidden dot-files.
fn read_all(dir: &Path) -> Vec<Mail> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("cannot read the sink's directory")
        .map(|entry| entry.expect("cannot read the sink's directory").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).expect("cannot read a received message");
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{} is not the sink's JSON: {e}", p.display()))
        })
        .collect()
}
