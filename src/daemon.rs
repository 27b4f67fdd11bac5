//! The daemon's life: start-up checks, the socket, the background tasks, systemd
//! notifications, live reload on SIGHUP, and the orderly stop.

use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use sd_notify::NotifyState;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::passwords::{HashError, Passwords};
use crate::server::{self, BindError};
use crate::service::{Live, State};
use crate::store::{Store, StoreError};
use crate::{mail, maintenance};

/// Why the daemon could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Running as root without being told to.
    #[error(
        "refusing to run as root: run latchkeyd as a dedicated user (see systemd/), or pass \
         --allow-root (or set server.allow_root = true) if you really mean it"
    )]
    Root,
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The socket could not be set up.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The store could not be opened or flushed.
    #[error("store in {path}: {source}")]
    Store {
        /// The data directory.
        path: PathBuf,
        /// What failed.
        #[source]
        source: StoreError,
    },
    /// The hasher rejected its parameters.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The mail sender cannot start (a password file missing, a template broken).
    #[error(transparent)]
    Mail(#[from] mail::SetupError),
}

/// How the daemon is run.
pub struct Options {
    /// The configuration.
    pub config: Config,
    /// The file it came from, re-read on reload.
    pub config_path: Option<PathBuf>,
    /// Allow running as root (the `--allow-root` flag).
    pub allow_root: bool,
}

/// Runs the daemon until `shutdown` completes: each message on `reloads` re-reads the
/// configuration and applies what can change live. Then finishes the calls in flight, stops
/// the background tasks, flushes the store and removes the socket.
pub async fn run(
    options: Options,
    shutdown: impl Future<Output = ()>,
    mut reloads: mpsc::Receiver<()>,
) -> Result<(), DaemonError> {
    let Options {
        config,
        config_path,
        allow_root,
    } = options;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 && !(allow_root || config.server.allow_root) {
        return Err(DaemonError::Root);
    }
    let data_dir = config.store.data_dir.clone();
    prepare_data_dir(&data_dir)?;
    let store_err = |source| DaemonError::Store {
        path: data_dir.clone(),
        source,
    };
    let store = Store::open(&data_dir, config.store.cache_bytes).map_err(store_err)?;
    let mailer = mail::Mailer::new(&config.mail, &data_dir)?;
    let metrics = Metrics::new();
    let passwords = Passwords::new(
        &config.passwords,
        config.hash_concurrency(),
        metrics.hash_wait_histogram(),
    )?;
    let listening = server::listen(&config).await?;
    let auth = server::Auth::new(&config.auth, listening.gid);
    let state = Arc::new(State {
        store: store.clone(),
        passwords,
        live: arc_swap::ArcSwap::from_pointee(Live::from_config(&config)),
        mail_wake: Arc::new(tokio::sync::Notify::new()),
        mail_templates: mailer.templates(),
        metrics,
        config,
        started: Instant::now(),
    });

    let background = CancellationToken::new();
    let tasks = [
        (
            "maintenance",
            tokio::spawn(maintenance::run(state.clone(), background.clone())),
        ),
        (
            "mail sender",
            tokio::spawn(mailer.run(store.clone(), state.mail_wake.clone(), background.clone())),
        ),
        (
            "watchdog",
            tokio::spawn(watchdog(store.clone(), background.clone())),
        ),
    ];
    let reloader = {
        let state = state.clone();
        let stop = background.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    got = reloads.recv() => match got {
                        Some(()) => reload(&state, config_path.as_deref()),
                        None => return,
                    },
                }
            }
        })
    };

    tracing::info!(
        socket = %listening.path.display(),
        data_dir = %state.config.store.data_dir.display(),
        users = store.user_count(),
        "latchkeyd {} ready",
        env!("CARGO_PKG_VERSION")
    );
    notify(&[NotifyState::Ready]);
    let socket = listening.path.clone();
    let activated = listening.activated;
    server::run(listening.listener, state, auth, async {
        shutdown.await;
        notify(&[NotifyState::Stopping]);
    })
    .await;
    background.cancel();
    for (name, task) in tasks.into_iter().chain([("reloader", reloader)]) {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "{name} task failed");
        }
    }
    if !activated {
        server::remove_socket(&socket);
    }
    store.flush_now().map_err(store_err)?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Creates the data directory owner-only if it is missing, and warns when an existing one is
/// open to others: it holds password hashes and the outbox key.
fn prepare_data_dir(dir: &Path) -> Result<(), DaemonError> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| DaemonError::DataDir {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    if let Ok(meta) = std::fs::metadata(dir) {
        let mode = meta.permissions().mode();
        if mode & 0o007 != 0 {
            tracing::warn!(
                data_dir = %dir.display(),
                mode = format!("{:o}", mode & 0o777),
                "the data directory is open to other users; it holds password hashes: chmod o-rwx it"
            );
        }
    }
    Ok(())
}

/// Tells systemd how we are, when it asked (`NOTIFY_SOCKET` set); a no-op otherwise.
fn notify(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Pings systemd's watchdog, when one is configured, at half its interval, but only while a
/// write can still be made durable: if the store stalls (sled 0.34.7 has reports of deadlocks
/// under heavy load), the pings stop and systemd restarts the daemon.
async fn watchdog(store: Store, stop: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let period = interval / 2;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        match tokio::time::timeout(period, store.durable()).await {
            Ok(Ok(())) => notify(&[NotifyState::Watchdog]),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "store flush failed; not pinging the watchdog")
            }
            Err(_) => tracing::error!(
                waited_ms = period.as_millis() as u64,
                "store flush stalled; not pinging the watchdog"
            ),
        }
    }
}

/// Settings that SIGHUP applies live, by dotted prefix; everything else needs a restart.
const LIVE: [&str; 9] = [
    "reset.",
    "limits.",
    "events.",
    "mail.from",
    "mail.reply_to",
    "mail.product_name",
    "mail.default_locale",
    "mail.template_dir",
    "mail.subjects.",
];

/// Re-reads the configuration and applies the live sections, logging every changed key and
/// whether it took effect or needs a restart. A file that no longer loads changes nothing.
fn reload(state: &State, path: Option<&Path>) {
    let new = match Config::load(path) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(error = %e, "reload: the configuration does not load; keeping the current settings");
            return;
        }
    };
    let live = state.live.load();
    let is_live = |key: &str| LIVE.iter().any(|prefix| key.starts_with(prefix));
    // What is in force: live keys as last applied, the others as the daemon started.
    let applied = flatten(&live.applied);
    let mut before: BTreeMap<String, String> = flatten(&state.config)
        .into_iter()
        .filter(|(k, _)| !is_live(k))
        .collect();
    before.extend(applied.into_iter().filter(|(k, _)| is_live(k)));
    let after = flatten(&new);
    let mut changed_live = false;
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for key in keys {
        let (old, now) = (before.get(key), after.get(key));
        if old == now {
            continue;
        }
        let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(unset)".into());
        if is_live(key) {
            changed_live = true;
            tracing::info!(key = %key, from = %show(old), to = %show(now), "reload: applied");
        } else {
            tracing::warn!(key = %key, from = %show(old), to = %show(now), "reload: changed, but needs a restart to take effect");
        }
    }
    // Template files may have changed on disk whatever the settings say: always re-read them.
    match state.mail_templates.reload(&new.mail) {
        Ok(()) => tracing::info!("reload: mail templates re-read"),
        Err(e) => {
            tracing::error!(error = %e, "reload: mail templates not reloaded; keeping the current ones")
        }
    }
    if !changed_live {
        tracing::info!("reload: no live setting changed");
    }
    let limits = if new.limits == *live.limits.config() {
        live.limits.clone()
    } else {
        tracing::info!("reload: rate limits changed; their buckets start afresh");
        Arc::new(crate::limits::Limits::new(&new.limits))
    };
    state.live.store(Arc::new(Live {
        reset: new.reset.clone(),
        events: new.events.clone(),
        limits,
        applied: new,
    }));
}

/// A configuration as dotted keys and their values, secrets redacted, for comparing.
fn flatten(config: &Config) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(value) = toml::from_str::<toml::Value>(&config.redacted_toml()) else {
        return out;
    };
    fn walk(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
        match value {
            toml::Value::Table(table) => {
                for (k, v) in table {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_owned(), other.to_string());
            }
        }
    }
    walk("", &value, &mut out);
    out
}
