//! Rust client for `latchkeyd`, the password-reset and credential sidecar.
//!
//! The daemon listens on a Unix socket and speaks tarpc with JSON bodies on u32 big-endian
//! length-delimited frames. This crate holds the one definition of that protocol (the
//! [`Latchkey`] service trait and its types, used by the daemon too) and a small typed
//! [`Client`] on top of it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), latchkey_client::Error> {
//! use latchkey_client::{Client, NewUser};
//!
//! let client = Client::connect("/run/latchkeyd/latchkeyd.sock").await?;
//! let user = client
//!     .create_user(NewUser {
//!         email: "ada@example.com".into(),
//!         name: "Ada".into(),
//!         password: "correct horse battery staple".into(),
//!         role: None,
//!         locale: None,
//!     })
//!     .await?;
//! let same = client
//!     .verify_password("ada@example.com", "correct horse battery staple", Some("203.0.113.7"))
//!     .await?;
//! assert_eq!(user.id, same.id);
//! # Ok(()) }
//! ```
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![warn(missing_docs)]

mod api;
/// The README's example, compiled with the doc tests so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
#[cfg(feature = "schema")]
mod schema;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

pub use api::*;
#[cfg(feature = "schema")]
pub use schema::schema;
use tarpc::client::RpcError;
use tarpc::context::Context;
use tarpc::tokio_serde::formats::Json;
use tokio_util::codec::LengthDelimitedCodec;

/// The largest frame the client sends or accepts unless told otherwise (the daemon's default
/// too). Larger frames close the connection.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;

/// How long a call may take unless told otherwise. Generous because hash-bound calls queue
/// behind each other when the daemon is busy.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`Client::connect`] waits for the socket.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a client call can fail with.
///
/// Whether a failed call may have taken effect, and so whether it is safe to send again:
///
/// | variant | ran? | send again? |
/// |---|---|---|
/// | [`Api`](Error::Api) | ran and refused | per the [`ApiError`] (`Unavailable`, `RateLimited`: later) |
/// | [`Throttled`](Error::Throttled), [`UnknownMethod`](Error::UnknownMethod), [`InvalidRequest`](Error::InvalidRequest), [`NoRole`](Error::NoRole), [`Connect`](Error::Connect) | did not run | `Throttled` and `Connect`: yes |
/// | [`Disconnected`](Error::Disconnected), [`TimedOut`](Error::TimedOut) | may have run | reads: yes; changes: re-read first |
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The daemon ran the call and answered with a typed error.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The daemon did not run the call: too many calls were in flight on this connection
    /// (`server.max_requests_per_connection`). Safe to send again.
    #[error("the daemon is busy on this connection; the call did not run")]
    Throttled,
    /// The daemon does not have this method: it is older than this client (its
    /// [`Health::methods`] lists what it has). The call did not run.
    #[error("the daemon does not have this method (it is older than this client): {detail}")]
    UnknownMethod {
        /// The daemon's explanation.
        detail: String,
    },
    /// The daemon could not read the request (a field it does not know how to read, from a
    /// client and daemon that disagree on a type). The call did not run.
    #[error("the daemon could not read the request: {detail}")]
    InvalidRequest {
        /// What was wrong, by field and position; never a value.
        detail: String,
    },
    /// The daemon gives this process no role on its socket (its uid and groups are in none of
    /// `auth.app_uids`, `auth.app_gids`, which default to the socket's group, nor the admin or
    /// monitor settings), so it answered the first call with this and closed the connection.
    /// Nothing ran. Fix the daemon's `[auth]` settings or the process's groups.
    #[error("{detail}")]
    NoRole {
        /// The daemon's explanation, with this process's uid and gid as it saw them.
        detail: String,
    },
    /// The daemon closed the connection without answering anything on it. Most often this
    /// process's uid and groups have no role on the socket (a daemon of protocol 2 says so
    /// with [`Error::NoRole`] unless many refused peers connect at once), or the daemon's
    /// connection limits are reached; the call then did not run. Only a daemon that crashed
    /// under the call can have run it.
    #[error(
        "the daemon closed the connection without answering anything: this process's uid or \
         groups may have no role on the socket (see auth.app_uids and auth.app_gids in the \
         daemon's configuration), or its connection limits are reached"
    )]
    ClosedUnanswered,
    /// The connection ended before the reply came (the daemon restarted or closed it). The
    /// call may or may not have taken effect. The client connects again for the next call.
    #[error("the connection to the daemon was lost before the reply came")]
    Disconnected,
    /// No reply came within the call timeout ([`ConnectOptions::call_timeout`]). The call
    /// may or may not have taken effect.
    #[error("no reply within the call timeout")]
    TimedOut,
    /// The daemon answered with a server error this client does not know.
    #[error("the daemon did not run the call: {detail}")]
    Server {
        /// The daemon's explanation.
        detail: String,
    },
    /// The socket could not be reached.
    #[error("cannot connect to {path}")]
    Connect {
        /// The socket path tried.
        path: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The daemon's typed error, if this is one.
    ///
    /// ```
    /// use latchkey_client::{ApiError, Error};
    /// let e = Error::from(ApiError::InvalidCredentials);
    /// assert_eq!(e.api(), Some(&ApiError::InvalidCredentials));
    /// ```
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the call certainly did not run, so sending it again cannot do anything twice.
    ///
    /// ```
    /// use latchkey_client::Error;
    /// assert!(Error::Throttled.did_not_run());
    /// assert!(!Error::Disconnected.did_not_run());
    /// ```
    pub fn did_not_run(&self) -> bool {
        matches!(
            self,
            Error::Throttled
                | Error::UnknownMethod { .. }
                | Error::InvalidRequest { .. }
                | Error::Server { .. }
                | Error::NoRole { .. }
                | Error::Connect { .. }
        )
    }

    /// Our error for a failed tarpc call.
    fn from_rpc(e: RpcError) -> Error {
        match e {
            RpcError::Shutdown | RpcError::Send(_) | RpcError::Channel(_) => Error::Disconnected,
            RpcError::DeadlineExceeded => Error::TimedOut,
            RpcError::Server(server) => match server.kind {
                std::io::ErrorKind::WouldBlock => Error::Throttled,
                std::io::ErrorKind::PermissionDenied => Error::NoRole {
                    detail: server.detail,
                },
                std::io::ErrorKind::NotFound => Error::UnknownMethod {
                    detail: server.detail,
                },
                std::io::ErrorKind::InvalidInput => Error::InvalidRequest {
                    detail: server.detail,
                },
                _ => Error::Server {
                    detail: server.detail,
                },
            },
        }
    }
}

/// Connection options for [`Client::connect_with`].
///
/// ```
/// use std::time::Duration;
/// let opts = latchkey_client::ConnectOptions {
///     call_timeout: Duration::from_secs(30),
///     ..Default::default()
/// };
/// assert_eq!(opts.max_frame_bytes, latchkey_client::DEFAULT_MAX_FRAME_BYTES);
/// ```
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// How long to wait for the socket to accept.
    pub connect_timeout: Duration,
    /// The deadline given to each call; the daemon abandons calls past it.
    pub call_timeout: Duration,
    /// The largest frame to send or accept; keep it equal to the daemon's `max_frame_bytes`.
    pub max_frame_bytes: usize,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }
}

/// A connection to `latchkeyd`. Cheap to clone; clones share the connection, and calls on it
/// run concurrently.
///
/// When the connection is lost (the daemon restarted, say), the call that noticed fails with
/// [`Error::Disconnected`] (it may or may not have taken effect: re-read before retrying a change) and
/// the client connects again, so later calls work once the daemon is back. A connection the
/// daemon closed while no call was on it (it closes idle ones, after `server.idle_timeout_secs`)
/// is replaced before the next call is sent, so that call does not fail.
#[derive(Clone, Debug)]
pub struct Client {
    /// The connection and how to make it again.
    shared: Arc<Shared>,
}

/// What clones of a [`Client`] share.
#[derive(Debug)]
struct Shared {
    /// The socket, for reconnecting.
    path: PathBuf,
    /// The options, for reconnecting.
    options: ConnectOptions,
    /// The current connection and its generation, bumped on every reconnect.
    stub: RwLock<(u64, Connection)>,
}

/// One connection: the tarpc stub, and whether the daemon has closed the socket under it.
#[derive(Clone, Debug)]
struct Connection {
    /// The stub calls are made on.
    stub: LatchkeyClient,
    /// Set once a read of the socket found its end (or failed).
    closed: Arc<AtomicBool>,
    /// Set once the daemon sent anything on this connection.
    heard: Arc<AtomicBool>,
}

/// The socket with one addition: it notes when its read side ends, so the client can tell a
/// connection the daemon has closed before it sends a call on it.
struct Watched {
    /// The socket.
    inner: tokio::net::UnixStream,
    /// Set when a read returns end-of-file or an error.
    closed: Arc<AtomicBool>,
    /// Set when a read brings bytes.
    heard: Arc<AtomicBool>,
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let ended = match &polled {
            std::task::Poll::Ready(Ok(())) => buf.filled().len() == before && buf.remaining() > 0,
            std::task::Poll::Ready(Err(_)) => true,
            std::task::Poll::Pending => false,
        };
        if ended {
            self.closed.store(true, Ordering::Release);
        } else if polled.is_ready() {
            self.heard.store(true, Ordering::Release);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Opens one connection.
async fn open(path: &Path, options: &ConnectOptions) -> Result<Connection, Error> {
    let connect_error = |source| Error::Connect {
        path: path.display().to_string(),
        source,
    };
    let stream = tokio::time::timeout(
        options.connect_timeout,
        tokio::net::UnixStream::connect(path),
    )
    .await
    .map_err(|_| connect_error(std::io::ErrorKind::TimedOut.into()))?
    .map_err(connect_error)?;
    let closed = Arc::new(AtomicBool::new(false));
    let heard = Arc::new(AtomicBool::new(false));
    let stream = Watched {
        inner: stream,
        closed: closed.clone(),
        heard: heard.clone(),
    };
    let framed = LengthDelimitedCodec::builder()
        .max_frame_length(options.max_frame_bytes)
        .new_framed(stream);
    let transport = tarpc::serde_transport::new(framed, Json::default());
    let stub = LatchkeyClient::new(tarpc::client::Config::default(), transport).spawn();
    Ok(Connection {
        stub,
        closed,
        heard,
    })
}

impl Client {
    /// Connects with the default options.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), latchkey_client::Error> {
    /// let client = latchkey_client::Client::connect("./latchkey.sock").await?;
    /// println!("{:?}", client.health().await?);
    /// # Ok(()) }
    /// ```
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client, Error> {
        Client::connect_with(path, ConnectOptions::default()).await
    }

    /// Connects with explicit options.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), latchkey_client::Error> {
    /// use latchkey_client::{Client, ConnectOptions};
    /// let client = Client::connect_with("./latchkey.sock", ConnectOptions::default()).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with(
        path: impl AsRef<Path>,
        options: ConnectOptions,
    ) -> Result<Client, Error> {
        let stub = open(path.as_ref(), &options).await?;
        Ok(Client {
            shared: Arc::new(Shared {
                path: path.as_ref().to_path_buf(),
                options,
                stub: RwLock::new((0, stub)),
            }),
        })
    }

    /// The current connection and its generation.
    fn current(&self) -> (u64, Connection) {
        match self.shared.stub.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// A context whose deadline is this client's call timeout.
    fn context(&self) -> tarpc::context::Context {
        let mut ctx = tarpc::context::current();
        ctx.deadline = Instant::now() + self.shared.options.call_timeout;
        ctx
    }

    /// Makes one call on the current connection; if the connection turns out to be gone,
    /// connects again for the calls that follow.
    async fn call<T, Fut>(
        &self,
        call: impl FnOnce(LatchkeyClient, Context) -> Fut,
    ) -> Result<T, Error>
    where
        Fut: Future<Output = Result<Result<T, ApiError>, RpcError>>,
    {
        let (mut generation, mut connection) = self.current();
        if connection.closed.load(Ordering::Acquire) {
            // The daemon closed it while no call was on it: nothing is lost by connecting
            // again before this call instead of failing it.
            self.reconnect(generation).await;
            (generation, connection) = self.current();
        }
        let heard = connection.heard.clone();
        match call(connection.stub, self.context()).await {
            Ok(result) => Ok(result?),
            Err(e) => {
                // A request that could not even be buffered (too big a frame) is not the
                // daemon's doing; a connection that failed otherwise before the daemon sent
                // a byte was most likely refused.
                let unsent = matches!(e, RpcError::Send(_));
                let mut e = Error::from_rpc(e);
                if matches!(e, Error::Disconnected) {
                    if !unsent && !heard.load(Ordering::Acquire) {
                        e = Error::ClosedUnanswered;
                    }
                    self.reconnect(generation).await;
                }
                Err(e)
            }
        }
    }

    /// Replaces the stub of `generation` with a new connection, unless another call did so
    /// already. A failed attempt leaves the dead stub, so the next call tries again.
    async fn reconnect(&self, generation: u64) {
        if self.current().0 != generation {
            return;
        }
        let Ok(stub) = open(&self.shared.path, &self.shared.options).await else {
            return;
        };
        let mut guard = match self.shared.stub.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if guard.0 == generation {
            *guard = (generation + 1, stub);
        }
    }

    /// Liveness, version and the role this connection was given.
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// let health = client.health().await?;
    /// assert_eq!(health.status, "ok");
    /// # Ok(()) }
    /// ```
    pub async fn health(&self) -> Result<Health, Error> {
        self.call(|c, ctx| async move { c.health(ctx).await }).await
    }

    /// Creates an account; fails with `EmailTaken`, `InvalidEmail` or `WeakPassword`.
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// let user = client.create_user(latchkey_client::NewUser {
    ///     email: "ada@example.com".into(),
    ///     name: "Ada".into(),
    ///     password: "correct horse battery staple".into(),
    ///     role: None,
    ///     locale: Some("en".into()),
    /// }).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_user(&self, user: NewUser) -> Result<User, Error> {
        self.call(|c, ctx| async move { c.create_user(ctx, user, None).await })
            .await
    }

    /// Creates an account for a sign-up from `client_ip` (the end user's address as the
    /// application saw it), counted against the per-IP sign-up limit (`limits.signup_per_ip`).
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// use latchkey_client::NewUser;
    /// let user = client.create_user_from(NewUser {
    ///     email: "ada@example.com".into(),
    ///     name: "Ada".into(),
    ///     password: "correct horse battery staple".into(),
    ///     role: None,
    ///     locale: None,
    /// }, Some("203.0.113.7")).await?;
    /// # Ok(()) }
    /// ```
    pub async fn create_user_from(
        &self,
        user: NewUser,
        client_ip: Option<&str>,
    ) -> Result<User, Error> {
        let client_ip = client_ip.map(str::to_owned);
        self.call(|c, ctx| async move { c.create_user(ctx, user, client_ip).await })
            .await
    }

    /// Signs a person up from the application's sign-up form, for `client_ip` (counted
    /// against `limits.signup_per_ip`, and the address against `limits.signup_per_email`).
    /// With `signup.conceal_taken_addresses` on, every address gets
    /// [`SignUpOutcome::ConfirmationSent`] and a mail; the account is made by
    /// [`Client::confirm_sign_up`].
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// use latchkey_client::{SignUp, SignUpOutcome};
    /// let form = SignUp {
    ///     email: "ada@example.com".into(),
    ///     name: "Ada".into(),
    ///     password: "correct horse battery staple".into(),
    ///     locale: None,
    /// };
    /// match client.sign_up(form, Some("203.0.113.7")).await? {
    ///     SignUpOutcome::Created { user } => { /* sign the user in */ }
    ///     SignUpOutcome::ConfirmationSent => { /* "check your mail to finish" */ }
    ///     // Outcomes a newer daemon may add (the enum is non-exhaustive).
    ///     _ => { /* "check your mail" is the safe answer */ }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn sign_up(
        &self,
        user: SignUp,
        client_ip: Option<&str>,
    ) -> Result<SignUpOutcome, Error> {
        let client_ip = client_ip.map(str::to_owned);
        self.call(|c, ctx| async move { c.sign_up(ctx, user, client_ip).await })
            .await
    }

    /// Finishes a concealed sign-up with the token from the mailed link and the password
    /// chosen at sign-up; returns the new account, ready to sign in.
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client, token: &str) -> Result<(), latchkey_client::Error> {
    /// let user = client
    ///     .confirm_sign_up(token, "correct horse battery staple", Some("203.0.113.7"))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn confirm_sign_up(
        &self,
        token: &str,
        password: &str,
        client_ip: Option<&str>,
    ) -> Result<User, Error> {
        self.call(|c, ctx| async move {
            c.confirm_sign_up(
                ctx,
                token.to_owned(),
                password.to_owned(),
                client_ip.map(str::to_owned),
            )
            .await
        })
        .await
    }

    /// Looks an account up by id; `NotFound` if there is none.
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// let user = client.get_user(1).await?;
    /// # Ok(()) }
    /// ```
    pub async fn get_user(&self, id: UserId) -> Result<User, Error> {
        self.call(|c, ctx| async move { c.get_user(ctx, id).await })
            .await
    }

    /// Looks an account up by email; `NotFound` if there is none.
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// let user = client.find_user(" Ada@Example.com ").await?;
    /// # Ok(()) }
    /// ```
    pub async fn find_user(&self, email: &str) -> Result<User, Error> {
        self.call(|c, ctx| async move { c.find_user(ctx, email.to_owned()).await })
            .await
    }

    /// Checks a login. Every failure (wrong password, unknown email, disabled account) is
    /// `InvalidCredentials`; too many failures give `RateLimited`.
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// match client.verify_password("ada@example.com", "guess", Some("203.0.113.7")).await {
    ///     Ok(user) => println!("welcome {}", user.name),
    ///     Err(e) if e.api() == Some(&latchkey_client::ApiError::InvalidCredentials) => {}
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn verify_password(
        &self,
        email: &str,
        password: &str,
        client_ip: Option<&str>,
    ) -> Result<User, Error> {
        self.call(|c, ctx| async move {
            c.verify_password(
                ctx,
                email.to_owned(),
                password.to_owned(),
                client_ip.map(str::to_owned),
            )
            .await
        })
        .await
    }

    /// Changes a password after checking the current one. Revokes the user's reset tokens and
    /// returns the new credential epoch.
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// let changed = client.change_password(1, "old password", "a brand new password").await?;
    /// println!("drop sessions older than epoch {}", changed.credential_epoch);
    /// # Ok(()) }
    /// ```
    pub async fn change_password(
        &self,
        id: UserId,
        current_password: &str,
        new_password: &str,
    ) -> Result<PasswordChanged, Error> {
        self.call(|c, ctx| async move {
            c.change_password(
                ctx,
                id,
                current_password.to_owned(),
                new_password.to_owned(),
            )
            .await
        })
        .await
    }

    /// Enables or disables an account (admin role).
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// client.set_status(1, latchkey_client::UserStatus::Disabled).await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_status(&self, id: UserId, status: UserStatus) -> Result<User, Error> {
        self.call(|c, ctx| async move { c.set_status(ctx, id, status).await })
            .await
    }

    /// Deletes an account and its tokens (admin role).
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// client.delete_user(1).await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_user(&self, id: UserId) -> Result<(), Error> {
        self.call(|c, ctx| async move { c.delete_user(ctx, id).await })
            .await
    }

    /// Lists accounts in id order after `after` (0 for the start), at most `limit`, capped
    /// at 1000 (admin role).
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// let mut after = 0;
    /// loop {
    ///     let page = client.list_users(after, 100).await?;
    ///     let Some(last) = page.last() else { break };
    ///     after = last.id;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_users(&self, after: UserId, limit: u32) -> Result<Vec<User>, Error> {
        self.call(|c, ctx| async move { c.list_users(ctx, after, limit).await })
            .await
    }

    /// Accounts in id order after `after` (0 for the start), at most `limit`, capped at 1000,
    /// with their password hashes, in the form [`Client::import_users`] takes (admin role).
    /// The hashes are as sensitive as the database: keep what this returns as safe.
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client, other: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// let mut after = 0;
    /// loop {
    ///     let page = client.export_users(after, 500).await?;
    ///     let Some(last) = page.last() else { break };
    ///     after = last.id;
    ///     other.import_users(page.into_iter().map(|u| u.account).collect()).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn export_users(
        &self,
        after: UserId,
        limit: u32,
    ) -> Result<Vec<ExportedUser>, Error> {
        self.call(|c, ctx| async move { c.export_users(ctx, after, limit).await })
            .await
    }

    /// Reads the next piece of an online backup (admin role): `None` starts one, then pass
    /// the `session` of the chunk before until a chunk is `last`. Concatenated, the decoded
    /// `data` of every chunk is the backup file.
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// let mut session = None;
    /// loop {
    ///     let chunk = client.backup_read(session).await?;
    ///     // decode chunk.data (base64) and append it to the file
    ///     if chunk.last {
    ///         break;
    ///     }
    ///     session = Some(chunk.session);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn backup_read(&self, session: Option<u64>) -> Result<BackupChunk, Error> {
        self.call(|c, ctx| async move { c.backup_read(ctx, session).await })
            .await
    }

    /// Abandons a backup before its last chunk (admin role).
    pub async fn backup_cancel(&self, session: u64) -> Result<(), Error> {
        self.call(|c, ctx| async move { c.backup_cancel(ctx, session).await })
            .await
    }

    /// Sets a password without the current one (admin role). Revokes reset tokens and bumps
    /// the credential epoch.
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// client.set_password(1, "a temporary password for Ada").await?;
    /// # Ok(()) }
    /// ```
    pub async fn set_password(
        &self,
        id: UserId,
        new_password: &str,
    ) -> Result<PasswordChanged, Error> {
        self.call(|c, ctx| async move { c.set_password(ctx, id, new_password.to_owned()).await })
            .await
    }

    /// Starts a password reset. Succeeds for any valid address, with or without an account,
    /// so the reply reveals nothing; an active account is sent a link. `RateLimited` when the
    /// address or the client IP asked too often.
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// client.request_password_reset("ada@example.com", Some("203.0.113.7"), Some("en")).await?;
    /// // Always show: "If an account exists for that address, we sent a link."
    /// # Ok(()) }
    /// ```
    pub async fn request_password_reset(
        &self,
        email: &str,
        client_ip: Option<&str>,
        locale: Option<&str>,
    ) -> Result<(), Error> {
        self.call(|c, ctx| async move {
            c.request_password_reset(
                ctx,
                email.to_owned(),
                client_ip.map(str::to_owned),
                locale.map(str::to_owned),
            )
            .await
        })
        .await
    }

    /// Says whether a reset token is usable, without using it: call it before showing the
    /// new-password form.
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client, token: &str) -> Result<(), latchkey_client::Error> {
    /// use latchkey_client::TokenState;
    /// match client.check_reset_token(token, Some("203.0.113.7")).await?.state {
    ///     TokenState::Valid => { /* show the form */ }
    ///     TokenState::Expired => { /* "this link has expired" */ }
    ///     TokenState::Used => { /* "this link was used already" */ }
    ///     // Invalid, and any state a newer daemon adds (the enum is non-exhaustive).
    ///     _ => { /* "this link is not valid" */ }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn check_reset_token(
        &self,
        token: &str,
        client_ip: Option<&str>,
    ) -> Result<TokenCheck, Error> {
        self.call(|c, ctx| async move {
            c.check_reset_token(ctx, token.to_owned(), client_ip.map(str::to_owned))
                .await
        })
        .await
    }

    /// Uses a reset token to set a new password. With `confirm_password`, both must match.
    /// Revokes every other token of the user; returns the new credential epoch so the app can
    /// drop the user's sessions.
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client, token: &str) -> Result<(), latchkey_client::Error> {
    /// let done = client
    ///     .complete_password_reset(token, "a brand new password", Some("a brand new password"), None)
    ///     .await?;
    /// println!("user {} is now at epoch {}", done.user_id, done.credential_epoch);
    /// # Ok(()) }
    /// ```
    pub async fn complete_password_reset(
        &self,
        token: &str,
        new_password: &str,
        confirm_password: Option<&str>,
        client_ip: Option<&str>,
    ) -> Result<PasswordChanged, Error> {
        self.call(|c, ctx| async move {
            c.complete_password_reset(
                ctx,
                token.to_owned(),
                new_password.to_owned(),
                confirm_password.map(str::to_owned),
                client_ip.map(str::to_owned),
            )
            .await
        })
        .await
    }

    /// Makes a reset link for support staff (admin role). `lifetime_secs` defaults to the
    /// configured token lifetime; at most 86400.
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// use latchkey_client::UserRef;
    /// let link = client.admin_reset_link(UserRef::Email("ada@example.com".into()), Some(3600)).await?;
    /// println!("{}", link.link);
    /// # Ok(()) }
    /// ```
    pub async fn admin_reset_link(
        &self,
        user: UserRef,
        lifetime_secs: Option<u64>,
    ) -> Result<ResetLink, Error> {
        self.call(|c, ctx| async move { c.admin_reset_link(ctx, user, lifetime_secs).await })
            .await
    }

    /// Events after the cursor `after` (0 for the start), oldest first, at most `limit`,
    /// capped at 1000 (admin role).
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// let mut cursor = 0;
    /// for event in client.events(cursor, 100).await? {
    ///     cursor = event.seq;
    ///     println!("{:?} user {:?}", event.kind, event.user_id);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn events(&self, after: u64, limit: u32) -> Result<Vec<Event>, Error> {
        self.call(|c, ctx| async move { c.events(ctx, after, limit).await })
            .await
    }

    /// Outbox messages with ids above `after`, at most `limit`, capped at 1000 (admin role).
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// for m in client.outbox_list(0, 100).await? {
    ///     println!("{} {} {:?} attempts={} {:?}", m.id, m.to, m.state, m.attempts, m.last_error);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn outbox_list(&self, after: u64, limit: u32) -> Result<Vec<OutboxMessage>, Error> {
        self.call(|c, ctx| async move { c.outbox_list(ctx, after, limit).await })
            .await
    }

    /// Puts a message (typically a dead one) back in the queue, due now (admin role).
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// client.outbox_retry(42).await?;
    /// # Ok(()) }
    /// ```
    pub async fn outbox_retry(&self, id: u64) -> Result<(), Error> {
        self.call(|c, ctx| async move { c.outbox_retry(ctx, id).await })
            .await
    }

    /// Deletes a message without sending it (admin role).
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// client.outbox_drop(42).await?;
    /// # Ok(()) }
    /// ```
    pub async fn outbox_drop(&self, id: u64) -> Result<(), Error> {
        self.call(|c, ctx| async move { c.outbox_drop(ctx, id).await })
            .await
    }

    /// The credential changes after the cursor `after` (0 for the start), at most `limit`:
    /// what an application needs to end outdated sessions, readable with the app role. Page
    /// on with the reply's `next` until it is `caught_up`.
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// let page = client.credential_changes(0, 100).await?;
    /// for change in page.changes {
    ///     println!("end the sessions of {} from before {}", change.user_id, change.at);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn credential_changes(
        &self,
        after: u64,
        limit: u32,
    ) -> Result<CredentialChanges, Error> {
        self.call(|c, ctx| async move { c.credential_changes(ctx, after, limit).await })
            .await
    }

    /// Metrics in the Prometheus (OpenMetrics) text format (any role, monitor included): calls by method and
    /// outcome with latency histograms, hashing queue and wait, outbox depth, oldest message
    /// age and dead letters, limiter keys, store size, uptime.
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// print!("{}", client.metrics().await?);
    /// # Ok(()) }
    /// ```
    pub async fn metrics(&self) -> Result<String, Error> {
        self.call(|c, ctx| async move { c.metrics(ctx).await })
            .await
    }

    /// Imports accounts with existing password hashes (admin role), at most 1000 per call
    /// (and within the frame size). Each outcome is the new id or why that account was
    /// skipped (`EmailTaken`, `InvalidEmail`, `InvalidInput { field: "password_hash", .. }`).
    ///
    /// ```no_run
    /// # async fn demo(client: latchkey_client::Client) -> Result<(), latchkey_client::Error> {
    /// use latchkey_client::ImportUser;
    /// let outcomes = client.import_users(vec![ImportUser {
    ///     email: "ada@example.com".into(),
    ///     name: "Ada".into(),
    ///     role: None,
    ///     status: None,
    ///     password_hash: "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy".into(),
    ///     locale: None,
    ///     created_at: Some(1_600_000_000),
    /// }]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn import_users(&self, users: Vec<ImportUser>) -> Result<Vec<ImportOutcome>, Error> {
        self.call(|c, ctx| async move { c.import_users(ctx, users).await })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection the peer closes at once, before any answer (what a daemon does to a peer
    /// with no role when it cannot say so), is reported as such, not as a bare disconnect.
    #[tokio::test]
    async fn a_connection_closed_before_any_answer_says_the_uid_may_have_no_role() {
        let dir = std::env::temp_dir().join(format!("latchkey-client-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let path = dir.join("closes.sock");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        });
        let client = Client::connect(&path).await.expect("the socket accepts");
        let e = client
            .health()
            .await
            .expect_err("the peer closed the connection");
        assert!(matches!(e, Error::ClosedUnanswered), "{e:?}");
        assert!(e.to_string().contains("auth.app_gids"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
