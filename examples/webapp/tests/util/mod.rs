//! The harness of the end-to-end tests: a real SMTP server, the real daemon, the web app, and
//! (in [`browser`]) headless Chromium driven over WebDriver.
//!
//! ```ignore
//! let stack = Stack::start().await;          // SMTP sink, latchkeyd, the app
//! stack.create_user("ada@example.com", "Ada", PASSWORD).await;
//! let browser = Browser::start().await;       // chromedriver and Chromium
//! browser.open(&stack.url("/forgot")).await;
//! let mail = stack.sink.wait_for(1).await;
//! ```
//!
//! The daemon and the SMTP sink come from the workspace's shared harness,
//! `latchkey-test-support`: the real `latchkeyd` binary in a temporary directory, and a real
//! SMTP server. The app reaches the daemon only through its Unix socket.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod browser;
pub mod http;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::middleware::Next;
use latchkey_client::{Client, NewUser, User};
use latchkey_test_support::{Daemon, Setup};
use tokio::sync::oneshot;

pub use browser::Browser;
pub use latchkey_test_support::{free_port, SmtpSink};

/// One request as the app received it, for checks on what the browser sent.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The method.
    pub method: String,
    /// The path and query.
    pub uri: String,
    /// The `Referer` header, if any.
    pub referer: Option<String>,
}

/// The SMTP sink, the daemon and the app, started together and stopped when dropped.
///
/// The fields drop in order: the test's connection, then the daemon (the app was told to
/// stop first), then the sink, which may still be taking a mail.
pub struct Stack {
    /// A connection to the daemon for the test's own calls.
    client: Client,
    /// The app's address.
    app: SocketAddr,
    /// Stops the app.
    stop_app: Option<oneshot::Sender<()>>,
    /// Every request the app received, in order.
    seen: Arc<Mutex<Vec<Seen>>>,
    /// The daemon.
    daemon: Daemon,
    /// The SMTP server the daemon delivers to.
    pub sink: SmtpSink,
}

impl Stack {
    /// Starts the SMTP sink, then the daemon (mailing links to the app's address), then the
    /// app.
    pub async fn start() -> Stack {
        // The app's port goes into the daemon's link template, so bind it first.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("cannot bind the app's port");
        let app = listener
            .local_addr()
            .expect("a bound socket has an address");
        let sink = SmtpSink::start(free_port()).await;
        let daemon = start_daemon(app, sink.port()).await;

        let seen = Arc::new(Mutex::new(Vec::new()));
        let settings = latchkey_webapp::Settings::new(daemon.socket());
        let router = latchkey_webapp::app(settings)
            .expect("cannot make the app's keys")
            .layer(axum::middleware::from_fn({
                let seen = seen.clone();
                move |request: Request, next: Next| {
                    let seen = seen.clone();
                    async move {
                        let header = request.headers().get("referer");
                        let entry = Seen {
                            method: request.method().to_string(),
                            uri: request.uri().to_string(),
                            referer: header.map(|v| String::from_utf8_lossy(v.as_bytes()).into()),
                        };
                        seen.lock().expect("the request log").push(entry);
                        next.run(request).await
                    }
                }
            }));
        let (stop_app, stopped) = oneshot::channel();
        tokio::spawn(latchkey_webapp::serve(listener, router, async {
            let _ = stopped.await;
        }));

        let client = daemon.client().await;
        Stack {
            client,
            app,
            stop_app: Some(stop_app),
            seen,
            daemon,
            sink,
        }
    }

    /// The app's URL for `path`: `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app)
    }

    /// The start of every reset link the daemon mails.
    pub fn link_prefix(&self) -> String {
        self.url("/reset?token=")
    }

    /// The test's own connection to the daemon (admin role: same uid as the daemon).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Creates an account.
    pub async fn create_user(&self, email: &str, name: &str, password: &str) -> User {
        let user = NewUser {
            email: email.into(),
            name: name.into(),
            password: password.into(),
            role: None,
            locale: None,
        };
        self.client
            .create_user(user)
            .await
            .unwrap_or_else(|e| panic!("create_user({email}): {e}"))
    }

    /// Every request the app has received so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("the request log").clone()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(stop) = self.stop_app.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts the daemon with links to `app` and mail over SMTP to 127.0.0.1:`smtp_port`;
/// returns once its socket accepts connections. At the end of the test it is stopped with
/// SIGTERM and must exit cleanly. Short grace periods keep that quick; retries come a second
/// or two apart.
async fn start_daemon(app: SocketAddr, smtp_port: u16) -> Daemon {
    Setup::new()
        .clean_stop()
        .toml(&format!(
            r#"
[server]
shutdown_grace_secs = 2
[reset]
link_template = "http://{app}/reset?token={{token}}"
[mail]
transport = "smtp"
backoff_base_secs = 1
backoff_max_secs = 2
shutdown_grace_secs = 2
[mail.smtp]
host = "127.0.0.1"
port = {smtp_port}
tls = "none"
timeout_secs = 5
"#
        ))
        .start()
        .await
}

/// A stand-in for a webmail site showing one message: serves `html` at `/` on a site other
/// than the app's (`localhost`, where the app is `127.0.0.1`), so clicking a link in it is a
/// cross-site navigation, as from a real webmail. Stopped when dropped.
pub struct Webmail {
    /// Its address.
    pub url: String,
    /// Stops it.
    stop: Option<oneshot::Sender<()>>,
}

impl Webmail {
    /// Serves the mail's HTML.
    pub async fn serve(html: &str) -> Webmail {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("cannot bind the webmail's port");
        let port = listener
            .local_addr()
            .expect("a bound socket has an address")
            .port();
        let page = axum::response::Html(html.to_owned());
        let router = axum::Router::new().route("/", axum::routing::get(move || async { page }));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Webmail {
            url: format!("http://localhost:{port}/"),
            stop: Some(stop),
        }
    }
}

impl Drop for Webmail {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
