//! A real SMTP server for the mail tests: `smtp_sink.py` (Python's aiosmtpd) on a port
//! of our choosing, writing each message it accepts as JSON into a directory of its own, plus
//! the same script's MIME parser for the `.eml` files of the file transport.
//!
//! ```ignore
//! let sink = SmtpSink::start(free_port()).await;                // accepts everything
//! let sink = SmtpSink::rejecting(port, "^bounce@").await;       // 550 for those recipients
//! let sink = SmtpSink::with_auth(port, "user", "secret").await; // AUTH required
//! let mail = sink.wait_for(1).await;
//! ```

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::path_str;

/// The sink and parser script.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/smtp_sink.py");

/// How long the sink may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long [`SmtpSink::wait_for`] waits. Generous: a test may wait for a retry after a
/// backoff, on a busy machine.
pub const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(60);

/// A port nothing listens on now, from the kernel (never a fixed number: any port may be taken
/// on some machine). Another process could take it before the test uses it; the kernel hands
/// out ports in turn, so that is unlikely in the moment a test needs.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("cannot bind a free port");
    listener
        .local_addr()
        .expect("a bound socket has an address")
        .port()
}

/// The `[mail]` settings that send over plain SMTP to 127.0.0.1:`port`, with retries a second
/// or two apart: for [`crate::Setup::toml`], whether a sink listens there yet or not.
pub fn mail_toml(port: u16) -> String {
    format!(
        r#"
[mail]
transport = "smtp"
backoff_base_secs = 1
backoff_max_secs = 2
[mail.smtp]
host = "127.0.0.1"
port = {port}
tls = "none"
timeout_secs = 5
"#
    )
}

/// A running SMTP sink, killed when dropped.
pub struct SmtpSink {
    /// The Python process; its standard input stays open while it should run.
    _child: Child,
    /// The port it listens on (127.0.0.1).
    port: u16,
    /// Where it writes what it receives.
    dir: TempDir,
}

impl SmtpSink {
    /// Starts a sink on `port` that accepts every message. Returns once it accepts
    /// connections.
    pub async fn start(port: u16) -> SmtpSink {
        SmtpSink::spawn(port, &[]).await
    }

    /// Starts a sink that refuses recipients matching the Python regular expression `pattern`
    /// with a permanent `550`.
    pub async fn rejecting(port: u16, pattern: &str) -> SmtpSink {
        SmtpSink::spawn(port, &["--reject", pattern]).await
    }

    /// Starts a sink that requires AUTH (without TLS) as `user` with `password`, and answers
    /// anything else with `535`.
    pub async fn with_auth(port: u16, user: &str, password: &str) -> SmtpSink {
        SmtpSink::spawn(port, &["--auth", &format!("{user}:{password}")]).await
    }

    /// Starts a sink that speaks TLS with `certs`: `"starttls"` (required before MAIL) or
    /// `"implicit"` (TLS from the first byte).
    pub async fn with_tls(port: u16, mode: &str, certs: &Certificates) -> SmtpSink {
        let args = [
            "--tls",
            mode,
            "--cert",
            path_str(&certs.cert),
            "--key",
            path_str(&certs.key),
        ];
        SmtpSink::spawn(port, &args).await
    }

    /// Starts the sink script with `args` after the port and directory.
    async fn spawn(port: u16, args: &[&str]) -> SmtpSink {
        let dir = tempfile::Builder::new()
            .prefix("lk-smtp-")
            .tempdir()
            .expect("cannot create the sink's directory");
        let mut command = Command::new("python3");
        command
            .arg(SCRIPT)
            .arg("--port")
            .arg(port.to_string())
            .arg("--dir")
            .arg(dir.path())
            .args(args);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // To a file, not a pipe nobody drains: aiosmtpd warns on every connection.
            .stderr(std::fs::File::create(dir.path().join("sink.log")).expect("sink log"))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 {SCRIPT}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        let ready =
            tokio::time::timeout(START_TIMEOUT, BufReader::new(stdout).read_line(&mut line)).await;
        if !matches!(ready, Ok(Ok(_)) if line.trim() == "ready") {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            let stderr = std::fs::read_to_string(dir.path().join("sink.log")).unwrap_or_default();
            panic!(
                "the SMTP sink did not start on port {port} (it needs Python 3 with aiosmtpd: \
                 `python3 -m pip install aiosmtpd`, which ./scripts/test runs)\n\
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
    pub fn received(&self) -> Vec<Received> {
        read_all(self.dir.path())
    }

    /// Waits until at least `count` messages have arrived and returns them all; fails, showing
    /// what did arrive, after [`ARRIVAL_TIMEOUT`].
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        let deadline = Instant::now() + ARRIVAL_TIMEOUT;
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            if Instant::now() > deadline {
                panic!(
                    "expected {count} messages within {ARRIVAL_TIMEOUT:?}\n     got: {}",
                    summary(&received)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A private CA and a server certificate it signed for 127.0.0.1, made with `openssl`.
pub struct Certificates {
    /// The CA certificate (PEM), for `mail.smtp.ca_file`.
    pub ca: PathBuf,
    /// The server certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
}

/// Makes a CA and a server certificate for 127.0.0.1 in `dir`. The CA is separate because
/// webpki refuses a CA certificate as a server's own.
pub async fn make_certificates(dir: &Path) -> Certificates {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || make_certificates_blocking(&dir))
        .await
        .expect("the certificate task")
}

/// [`make_certificates`], for callers that are not async (the PostgreSQL test cluster).
pub fn make_certificates_blocking(dir: &Path) -> Certificates {
    let path = |name: &str| path_str(&dir.join(name)).to_owned();
    let (ca_key, ca, key, csr, cert, ext) = (
        path("ca.key"),
        path("ca.pem"),
        path("key.pem"),
        path("server.csr"),
        path("cert.pem"),
        path("server.ext"),
    );
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .expect("cannot write the certificate extensions");
    let new_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let steps = [
        format!(
            "req -x509 {new_key} -days 2 -subj /CN=latchkey-test-ca -keyout {ca_key} -out {ca}"
        ),
        format!("req {new_key} -subj /CN=127.0.0.1 -keyout {key} -out {csr}"),
        format!(
            "x509 -req -days 2 -in {csr} -CA {ca} -CAkey {ca_key} -CAcreateserial \
             -extfile {ext} -out {cert}"
        ),
    ];
    for step in &steps {
        // Temporary paths hold no spaces, so splitting on whitespace is safe.
        let out = std::process::Command::new("openssl")
            .args(step.split_whitespace())
            .output()
            .expect("making test certificates needs the openssl command");
        assert!(
            out.status.success(),
            "openssl {step} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Certificates {
        ca: ca.into(),
        cert: cert.into(),
        key: key.into(),
    }
}

/// Parses a message file (as the file transport writes them) with the sink's parser.
pub async fn parse_eml(path: &Path) -> Received {
    let run = crate::run("python3", &[SCRIPT, "--parse", path_str(path)], None).await;
    run.assert_success();
    run.json()
}

/// One message as the sink received or the parser read it.
#[derive(Clone, Debug, Deserialize)]
pub struct Received {
    /// Every header, decoded, in order.
    pub headers: Vec<(String, String)>,
    /// The top-level content type, such as `multipart/alternative`.
    pub content_type: String,
    /// The content type of every MIME part, depth first, the message itself first.
    pub parts: Vec<String>,
    /// The decoded text/plain body.
    pub text: Option<String>,
    /// The decoded text/html body.
    pub html: Option<String>,
    /// The envelope sender (SMTP only).
    #[serde(default)]
    pub mail_from: Option<String>,
    /// The envelope recipients (SMTP only).
    #[serde(default)]
    pub rcpt_tos: Vec<String>,
}

impl Received {
    /// The value of the header `name` (any case); fails if it is absent or repeated.
    #[track_caller]
    pub fn header(&self, name: &str) -> &str {
        let found: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        match found[..] {
            [value] => value,
            _ => panic!(
                "expected one {name} header\n     got: {found:?}\nin: {:#?}",
                self.headers
            ),
        }
    }

    /// The text part; fails if there is none.
    #[track_caller]
    pub fn text(&self) -> &str {
        self.text
            .as_deref()
            .expect("the message has a text/plain part")
    }

    /// The HTML part; fails if there is none.
    #[track_caller]
    pub fn html(&self) -> &str {
        self.html
            .as_deref()
            .expect("the message has a text/html part")
    }

    /// The first `https://` link in the text part; fails if there is none.
    #[track_caller]
    pub fn link(&self) -> String {
        self.link_starting("https://")
    }

    /// The first link in the text part that starts with `prefix`; fails if there is none.
    #[track_caller]
    pub fn link_starting(&self, prefix: &str) -> String {
        let text = self.text();
        let start = text
            .find(prefix)
            .unwrap_or_else(|| panic!("no link starting {prefix} in the text part:\n{text}"));
        text[start..]
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned()
    }
}

/// The recipients and subjects of `received`, for failure messages.
pub fn summary(received: &[Received]) -> String {
    let lines: Vec<String> = received
        .iter()
        .map(|m| {
            let get = |name: &str| {
                m.headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map_or("?", |(_, v)| v.as_str())
            };
            format!("{} {:?} {}", get("To"), get("Subject"), get("Message-ID"))
        })
        .collect();
    format!("{} messages\n{}", lines.len(), lines.join("\n"))
}

/// Reads every message file in `dir`, in name order (which is arrival order).
fn read_all(dir: &Path) -> Vec<Received> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("cannot read the sink's directory")
        .map(|e| e.expect("cannot read the sink's directory").path())
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
