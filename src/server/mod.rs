//! The socket: binding, who may connect, the connection limit, framing and graceful shutdown.
//!
//! Connections are accepted here rather than by tarpc's `serde_transport::unix::listen`,
//! because that helper discards the `UnixStream` and with it the peer credentials the roles
//! are decided by.

use std::future::Future;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use latchkey_client::Latchkey;
use tarpc::server::{BaseChannel, Channel};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::LengthDelimitedCodec;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

mod admission;
mod auth;
pub(crate) mod codec;
mod config;
mod transport;

use crate::service::{Peer, Service, State};

use auth::peer_groups;
pub(crate) use auth::Auth;
pub use config::{AuthConfig, ServerConfig};

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// A daemon answers on the socket already.
    #[error("another latchkeyd is listening on {0}; stop it first")]
    InUse(PathBuf),
    /// Something that is not a socket is in the way.
    #[error("{0} exists and is not a socket; refusing to remove it")]
    NotASocket(PathBuf),
    /// The configured group does not exist.
    #[error("socket group {0:?} does not exist")]
    NoSuchGroup(String),
    /// An I/O step failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// The socket the daemon serves on.
pub struct Listening {
    /// The listener.
    pub listener: UnixListener,
    /// The socket file's group: the default app group.
    pub gid: u32,
    /// Where the socket is.
    pub path: PathBuf,
    /// Whether systemd handed the socket over (then systemd owns the file: it is neither
    /// bound nor removed here, and its mode and group come from the .socket unit).
    pub activated: bool,
}

/// Takes the socket from systemd (`LISTEN_FDS`) when started by a .socket unit, or binds the
/// configured path otherwise.
pub(crate) async fn listen(config: &ServerConfig) -> Result<Listening, BindError> {
    let io_err = |what, source| BindError::Io {
        what,
        path: config.socket.clone(),
        source,
    };
    // listen_fds() checks LISTEN_PID, so a variable inherited from a parent is ignored.
    let fd = sd_notify::listen_fds().ok().and_then(|mut fds| fds.next());
    let Some(fd) = fd else {
        let (listener, gid) = bind(config).await?;
        return Ok(Listening {
            listener,
            gid,
            path: config.socket.clone(),
            activated: false,
        });
    };
    // SAFETY: systemd passes the listening socket as this fd, open and owned by nobody else in
    // this process; listen_fds() hands each fd out once.
    let std_listener =
        unsafe { <std::os::unix::net::UnixListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    std_listener
        .set_nonblocking(true)
        .map_err(|e| io_err("cannot set non-blocking mode on the activated socket", e))?;
    let path = std_listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf))
        .unwrap_or_else(|| config.socket.clone());
    let gid = std::fs::metadata(&path)
        .map(|m| std::os::unix::fs::MetadataExt::gid(&m))
        .unwrap_or_else(|_| nix::unistd::getegid().as_raw());
    let listener = UnixListener::from_std(std_listener)
        .map_err(|e| io_err("cannot use the activated socket", e))?;
    tracing::info!(socket = %path.display(), "using the socket passed by systemd");
    Ok(Listening {
        listener,
        gid,
        path,
        activated: true,
    })
}

/// Binds the socket: removes a stale socket file (refusing if a live daemon answers on it),
/// then sets the configured mode and group. Returns the listener and the socket's group.
async fn bind(config: &ServerConfig) -> Result<(UnixListener, u32), BindError> {
    let path = config.socket.as_path();
    let io_err = |what, source| BindError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(BindError::NotASocket(path.to_path_buf()));
        }
        if UnixStream::connect(path).await.is_ok() {
            return Err(BindError::InUse(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(|e| io_err("cannot remove stale socket", e))?;
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| io_err("cannot create directory for", e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| io_err("cannot bind", e))?;
    let mode = config.socket_mode().unwrap_or(0o660);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_err("cannot set the mode of", e))?;
    let gid = match &config.socket_group {
        Some(group) => {
            let gid = group_id(group).ok_or_else(|| BindError::NoSuchGroup(group.clone()))?;
            std::os::unix::fs::chown(path, None, Some(gid))
                .map_err(|e| io_err("cannot set the group of", e))?;
            gid
        }
        None => nix::unistd::getegid().as_raw(),
    };
    Ok((listener, gid))
}

/// A group's id from its name or number. Called only at start-up: the lookup goes through
/// NSS (getgrnam_r), which may read files or ask a directory service.
fn group_id(group: &str) -> Option<u32> {
    if let Ok(gid) = group.parse() {
        return Some(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(found) => found.map(|g| g.gid.as_raw()),
        Err(e) => {
            tracing::warn!(group, error = %e, "cannot look up the socket group");
            None
        }
    }
}

/// Serves connections until `shutdown` completes, then stops accepting, lets the calls in
/// flight finish (up to the configured grace period) and returns.
pub(crate) async fn run(
    listener: UnixListener,
    state: Arc<State>,
    auth: Auth,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let accept = accept_loop(&listener, &state, &auth, config, &stop, &connections);
    tokio::select! {
        () = accept => {}
        () = shutdown => tracing::info!("shutting down: no new connections; finishing calls in flight"),
    }
    stop.cancel();
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = grace.as_secs(),
            "calls still running after the grace period; exiting anyway"
        );
    }
}

/// Accepts connections for ever, admitting each within the connection limits or closing it.
async fn accept_loop(
    listener: &UnixListener,
    state: &Arc<State>,
    auth: &Auth,
    config: &ServerConfig,
    stop: &CancellationToken,
    connections: &TaskTracker,
) {
    let admission = admission::Admission::new(config);
    let refusals = Arc::new(tokio::sync::Semaphore::new(REFUSALS_ANSWERED_AT_ONCE));
    let idle_timeout =
        (config.idle_timeout_secs > 0).then(|| Duration::from_secs(config.idle_timeout_secs));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Usually EMFILE: back off instead of spinning.
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let cred = match stream.peer_cred() {
            Ok(cred) => cred,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read peer credentials; closing connection");
                continue;
            }
        };
        let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
        let Some(role) = auth.role(uid, gid, || peer_groups(&stream, pid)) else {
            tracing::warn!(uid, gid, pid, "refused connection: peer has no role");
            let detail = format!(
                "this process (uid {uid}, gid {gid}) has no role on this socket; the \
                 daemon's [auth] settings give roles to auth.app_uids and auth.app_gids \
                 (the socket's group by default), auth.admin_uids and auth.admin_gids, \
                 auth.monitor_uids and auth.monitor_gids"
            );
            answer_refused(
                stream,
                &refusals,
                io::ErrorKind::PermissionDenied,
                detail,
                config,
            );
            continue;
        };
        let ticket = match admission.admit(uid, pid, role) {
            Ok(ticket) => ticket,
            Err(refusal) => {
                state.metrics.connection_refused(refusal.label());
                let detail = format!(
                    "connection refused: the daemon's connection limits are reached ({}); \
                     retry later, or share fewer connections",
                    refusal.label()
                );
                answer_refused(stream, &refusals, io::ErrorKind::WouldBlock, detail, config);
                if admission.log_now() {
                    tracing::warn!(
                        uid,
                        pid,
                        reason = refusal.label(),
                        "refused a connection over the connection limits (logged once a second)"
                    );
                }
                continue;
            }
        };
        tracing::debug!(uid, gid, pid, ?role, "connection");
        let service = Service {
            state: state.clone(),
            peer: Peer { uid, pid, role },
        };
        let io = UntilShutdown::new(
            stream,
            stop.clone(),
            Duration::from_secs(config.frame_timeout_secs),
            idle_timeout,
        );
        let framed = LengthDelimitedCodec::builder()
            .max_frame_length(config.max_frame_bytes)
            .new_framed(io);
        let transport = transport::Transport::new(framed, state.clone());
        let channel = BaseChannel::with_defaults(transport)
            .max_concurrent_requests(config.max_requests_per_connection);
        connections.spawn(async move {
            let serve = service.serve();
            channel
                .requests()
                .take_while(|request| {
                    if let Err(e) = request {
                        tracing::warn!("Requests stream errored out: {}", error_chain(e));
                    }
                    std::future::ready(request.is_ok())
                })
                .filter_map(|request| std::future::ready(request.ok()))
                .for_each(|request| {
                    // A call whose deadline has passed on arrival is not run at all: its
                    // caller has stopped waiting, and running it would still take rate-limit
                    // cells (issue 19, item 2: `deadline 0` calls filled a limiter for free).
                    if request.get().context.deadline > std::time::Instant::now() {
                        tokio::spawn(request.execute(serve.clone()));
                    }
                    std::future::ready(())
                })
                .await;
            drop(ticket);
            tracing::debug!(uid, pid, "connection closed");
        });
    }
}

/// How many refused connections may be waiting for their first frame at once; past that a
/// refused connection is closed without a word, as before issue 17.
const REFUSALS_ANSWERED_AT_ONCE: usize = 16;

/// How long a refused connection is given to send its first frame.
const REFUSAL_WAIT: Duration = Duration::from_secs(2);

/// Tells a refused client why (issue 17): its first request is answered with a server error
/// of `kind` (1 PermissionDenied for a peer with no role, 10 WouldBlock over the connection
/// limits) and the connection closed, so every client can say "this uid has no role" instead
/// of reporting a bare reset. Bounded: at most [`REFUSALS_ANSWERED_AT_ONCE`] wait at once,
/// each at most [`REFUSAL_WAIT`], so refused peers cannot hold more than that.
fn answer_refused(
    stream: UnixStream,
    refusals: &Arc<tokio::sync::Semaphore>,
    kind: io::ErrorKind,
    detail: String,
    config: &ServerConfig,
) {
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    let max_frame_bytes = config.max_frame_bytes;
    tokio::spawn(async move {
        let answer = async {
            let mut framed = LengthDelimitedCodec::builder()
                .max_frame_length(max_frame_bytes)
                .new_framed(stream);
            let frame = framed.next().await?.ok()?;
            let id = match codec::decode::<latchkey_client::LatchkeyRequest>(
                &frame,
                latchkey_client::METHODS,
            ) {
                codec::Decoded::Message(tarpc::ClientMessage::Request(request)) => request.id,
                codec::Decoded::Refuse { id, .. } => id,
                _ => return None,
            };
            let reply = codec::refusal(id, tarpc::ServerError::new(kind, detail)).ok()?;
            futures::SinkExt::send(&mut framed, reply).await.ok()
        };
        let _ = tokio::time::timeout(REFUSAL_WAIT, answer).await;
        drop(permit);
    });
}

/// A client connection as the codec sees it, with two twists on the read side:
///
/// - Once shutdown starts it reports end-of-file. tarpc then stops taking requests but still
///   writes the replies of the calls in flight, and closes the connection when the last one
///   is written: the graceful part of a graceful shutdown.
/// - A frame, once begun, must arrive whole within the frame timeout, or the connection is
///   closed: a client trickling bytes cannot hold a connection slot for ever.
/// - Between frames, once nothing has arrived for the idle timeout, it reports end-of-file
///   too: the replies of calls in flight are still written, and an idle connection gives
///   its slot back. Clients connect again for their next call.
struct UntilShutdown {
    /// The connection.
    inner: UnixStream,
    /// Completes when shutdown starts.
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Shutdown has started; reads return end-of-file.
    stopped: bool,
    /// Where the incoming byte stream is in its length-prefixed frames.
    frame: FrameTracker,
    /// How long one frame may take to arrive.
    frame_timeout: Duration,
    /// The deadline of the frame being received, if one is.
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// How long the connection may stay idle between frames; `None` for ever.
    idle_timeout: Option<Duration>,
    /// When the connection counts as idle, moved on by every read that brings bytes.
    idle: Pin<Box<tokio::time::Sleep>>,
}

/// Follows the frame boundaries of the byte stream: a 4-byte big-endian length, then that many
/// bytes.
#[derive(Default)]
pub(crate) struct FrameTracker {
    /// Header bytes seen of the current frame.
    header: [u8; 4],
    /// How many of them.
    header_len: usize,
    /// Body bytes still to come.
    body_left: u64,
    /// How many frames have begun: tells whether the frame in progress began in the latest
    /// read, whose deadline then starts afresh.
    begun: u64,
}

impl FrameTracker {
    /// Whether a frame has begun and not ended.
    pub(crate) fn in_frame(&self) -> bool {
        self.header_len > 0 || self.body_left > 0
    }

    /// Moves past `bytes`.
    pub(crate) fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = bytes
                    .len()
                    .min(usize::try_from(self.body_left).unwrap_or(usize::MAX));
                self.body_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            if self.header_len == 0 {
                self.begun += 1;
            }
            self.header[self.header_len] = bytes[0];
            self.header_len += 1;
            bytes = &bytes[1..];
            if self.header_len == 4 {
                self.body_left = u64::from(u32::from_be_bytes(self.header));
                self.header_len = 0;
            }
        }
    }
}

impl UntilShutdown {
    fn new(
        inner: UnixStream,
        stop: CancellationToken,
        frame_timeout: Duration,
        idle_timeout: Option<Duration>,
    ) -> UntilShutdown {
        // Never firing when there is no idle timeout: a day at a time, pushed on by reads.
        let idle = idle_timeout.unwrap_or(Duration::from_secs(86_400));
        UntilShutdown {
            inner,
            stop: Box::pin(stop.cancelled_owned()),
            stopped: false,
            frame: FrameTracker::default(),
            frame_timeout,
            deadline: Box::pin(tokio::time::sleep(frame_timeout)),
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl AsyncRead for UntilShutdown {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.stopped && self.stop.as_mut().poll(cx).is_ready() {
            self.stopped = true;
        }
        if self.stopped {
            return Poll::Ready(Ok(()));
        }
        let begun = self.frame.begun;
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    if let Some(idle) = this.idle_timeout {
                        this.idle.as_mut().reset(tokio::time::Instant::now() + idle);
                    }
                }
                this.frame.advance(read);
                // Each frame has its own deadline, from its first byte: a read that ends one
                // frame and begins the next starts the next one's clock.
                if this.frame.in_frame() && this.frame.begun != begun {
                    let at = tokio::time::Instant::now() + this.frame_timeout;
                    this.deadline.as_mut().reset(at);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending
                if this.frame.in_frame() && this.deadline.as_mut().poll(cx).is_ready() =>
            {
                tracing::warn!(
                    timeout_secs = this.frame_timeout.as_secs(),
                    "closing a connection whose frame did not arrive in time"
                );
                Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
            }
            Poll::Pending
                if !this.frame.in_frame()
                    && this.idle_timeout.is_some()
                    && this.idle.as_mut().poll(cx).is_ready() =>
            {
                tracing::debug!("closing an idle connection");
                this.stopped = true;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for UntilShutdown {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An error and its sources, as one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// Removes the socket file when the daemon stops, so the next start finds no stale socket.
pub fn remove_socket(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove the socket");
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::FrameTracker;

    proptest! {
        #[test]
        fn the_frame_tracker_finds_every_boundary_however_the_bytes_are_split(
            bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..6),
            cuts in prop::collection::vec(1usize..64, 0..40),
        ) {
            let mut stream = Vec::new();
            let mut ends = Vec::new();
            for body in &bodies {
                stream.extend_from_slice(&(body.len() as u32).to_be_bytes());
                stream.extend_from_slice(body);
                ends.push(stream.len());
            }
            let mut tracker = FrameTracker::default();
            let mut at = 0;
            let mut cuts = cuts.into_iter();
            while at < stream.len() {
                let step = cuts.next().unwrap_or(stream.len()).min(stream.len() - at);
                // Feed up to the next boundary at most, so every boundary is observed.
                let next_end = ends.iter().copied().find(|e| *e > at).unwrap_or(stream.len());
                let step = step.min(next_end - at);
                tracker.advance(&stream[at..at + step]);
                at += step;
                prop_assert_eq!(tracker.in_frame(), !ends.contains(&at), "at byte {}", at);
                let starts = std::iter::once(0).chain(ends.iter().copied());
                let begun = starts.filter(|start| *start < at).count() as u64;
                prop_assert_eq!(tracker.begun, begun, "frames begun by byte {}", at);
            }
        }
    }
}
