//! `latchkey-webapp`: serves the example's pages until SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

/// The example web app: forgot password, reset and login pages on top of latchkeyd.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on. Port 0 picks a free port; the address bound is printed on
    /// standard output as `http://ADDRESS/`.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: String,
    /// The daemon's socket.
    #[arg(long, default_value = "latchkey.sock")]
    socket: PathBuf,
    /// Take the client IP from the right-most X-Forwarded-For entry. Only behind a reverse
    /// proxy that appends it: otherwise clients choose the IP they are rate-limited by.
    #[arg(long)]
    trust_forwarded_for: bool,
    /// Mark cookies Secure; set it whenever the app is reached over HTTPS.
    #[arg(long)]
    secure_cookies: bool,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("latchkey-webapp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let settings = latchkey_webapp::Settings {
        socket: args.socket,
        trust_forwarded_for: args.trust_forwarded_for,
        secure_cookies: args.secure_cookies,
    };
    let router = latchkey_webapp::app(settings).context("cannot make the signing keys")?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let address = listener.local_addr().context("no local address")?;
        // On stdout, alone, so scripts and tests started with port 0 can read where to go.
        println!("http://{address}/");
        tracing::info!("serving on http://{address}/");
        let mut term = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        latchkey_webapp::serve(listener, router, shutdown)
            .await
            .context("serving failed")
    })
}
