//! The echo baseline: a tarpc service that does no work, served the way the daemon serves
//! its socket, in its own process (this binary re-executed with `--echo-server`), so the
//! cheap-call figures compare the daemon with the transport alone, process for process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;
use futures::StreamExt;
use tarpc::server::{BaseChannel, Channel};
use tarpc::tokio_serde::formats::Json;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::LengthDelimitedCodec;

use super::{
    die_with_parent, kill_me_with_parent, wait_for_socket, Harness, WorkDir, MAX_FRAME_BYTES,
};

/// The echo baseline: this binary, re-executed with `--echo-server`, killed on drop.
pub(crate) struct EchoProcess {
    /// The process.
    child: Child,
    /// Its socket.
    socket: PathBuf,
    /// Its directory.
    _dir: WorkDir,
}

impl EchoProcess {
    /// Starts the echo server and waits until it accepts connections.
    pub(crate) async fn start(harness: &Harness) -> anyhow::Result<EchoProcess> {
        let dir = WorkDir::new("echo", harness.keep)?;
        let socket = dir.path.join("echo.sock");
        let mut command = Command::new(std::env::current_exe()?);
        command
            .arg("--echo-server")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        die_with_parent(&mut command);
        let mut child = command.spawn().context("cannot start the echo server")?;
        wait_for_socket(&mut child, &socket, "the echo server").await?;
        Ok(EchoProcess {
            child,
            socket,
            _dir: dir,
        })
    }

    /// A new connection, framed and encoded as the daemon's client does.
    pub(crate) async fn client(&self) -> anyhow::Result<EchoClient> {
        let stream = UnixStream::connect(&self.socket).await?;
        let framed = LengthDelimitedCodec::builder()
            .max_frame_length(MAX_FRAME_BYTES)
            .new_framed(stream);
        let transport = tarpc::serde_transport::new(framed, Json::default());
        Ok(EchoClient::new(tarpc::client::Config::default(), transport).spawn())
    }

    /// `n` connections.
    pub(crate) async fn clients(&self, n: usize) -> anyhow::Result<Vec<EchoClient>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.client().await?);
        }
        Ok(out)
    }
}

impl Drop for EchoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The baseline service: the arguments and reply of `check_reset_token` in shape and size,
/// and no work.
#[tarpc::service]
pub(crate) trait Echo {
    /// Returns the token.
    async fn echo(token: String, client_ip: Option<String>) -> Result<String, String>;
}

/// The baseline's implementation.
#[derive(Clone)]
struct EchoService;

impl Echo for EchoService {
    async fn echo(
        self,
        _: tarpc::context::Context,
        token: String,
        _client_ip: Option<String>,
    ) -> Result<String, String> {
        Ok(token)
    }
}

/// Serves the echo baseline the way the daemon serves its socket (see `src/server.rs`): a
/// multi-threaded tokio runtime, length-delimited frames with the same cap, tarpc's JSON
/// transport, a spawned task per connection and per request. Runs until killed; this is the
/// whole of the process started by [`EchoProcess::start`].
pub(crate) fn serve(socket: &Path) -> anyhow::Result<()> {
    kill_me_with_parent();
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)
            .with_context(|| format!("cannot bind {}", socket.display()))?;
        loop {
            let (stream, _) = listener.accept().await?;
            let framed = LengthDelimitedCodec::builder()
                .max_frame_length(MAX_FRAME_BYTES)
                .new_framed(stream);
            let transport = tarpc::serde_transport::new(framed, Json::default());
            let channel = BaseChannel::with_defaults(transport).max_concurrent_requests(64);
            tokio::spawn(async move {
                channel
                    .execute(EchoService.serve())
                    .for_each(|call| async {
                        tokio::spawn(call);
                    })
                    .await;
            });
        }
    })
}
