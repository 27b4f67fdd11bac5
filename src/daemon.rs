//! The daemon's life: start-up checks, the socket, the background tasks, systemd
//! notifications, live reload on SIGHUP, and the orderly stop.

use std::collections::BTreeMap;
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::limits::{Limits, LiveLimits};
use crate::mail;
use crate::maintenance::{self, Maintenance};
use crate::metrics::{Levels, Metrics};
use crate::passwords::{HashError, Passwords};
use crate::server::{self, BindError};
use crate::service::State;
use crate::store::{Probe, ProbeCell, Store, StoreError};

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
    #[error("store {place}: {source}")]
    Store {
        /// Where the store is: the data directory, or the PostgreSQL database.
        place: String,
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
    /// `metrics.listen` is not a loopback address and port.
    #[error(transparent)]
    Setting(#[from] crate::setting::BadSetting),
    /// The metrics listener could not bind its address.
    #[error("cannot listen for metrics on {address}: {source}")]
    MetricsListener {
        /// The address from `metrics.listen`.
        address: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
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
    if nix::unistd::geteuid().is_root() && !(allow_root || config.server.allow_root) {
        return Err(DaemonError::Root);
    }
    let data_dir = config.store.data_dir.clone();
    prepare_data_dir(&data_dir)?;
    let place = match config.store.backend {
        crate::store::Backend::Sled => format!("in {}", data_dir.display()),
        crate::store::Backend::Postgres => match &config.store.postgres.url {
            Some(_) => "in PostgreSQL (store.postgres.url)".to_owned(),
            None => format!("in PostgreSQL database {}", config.store.postgres.database),
        },
    };
    let store_err = |source| DaemonError::Store {
        place: place.clone(),
        source,
    };
    let store = Store::open(&config.store).await.map_err(store_err)?;
    let mailer = mail::Mailer::new(&config.mail, &data_dir)?;
    let mut metrics = Metrics::new();
    let passwords = Passwords::new(
        &config.passwords,
        config.passwords.concurrency(),
        metrics.hash_wait_histogram(),
    )?;
    let listening = server::listen(&config.server).await?;
    // Bound before READY, so a taken port fails the start-up instead of every scrape.
    let scrape_listener = match config.metrics.address()? {
        Some(address) => Some(
            crate::scrape::bind(address)
                .await
                .map_err(|source| DaemonError::MetricsListener { address, source })?,
        ),
        None => None,
    };
    let auth = server::Auth::new(&config.auth, listening.gid);
    let limits: LiveLimits = Arc::new(ArcSwap::from_pointee(Limits::new(&config.limits)));
    let started = Instant::now();
    metrics.collect(Levels {
        store: metrics.store_levels(),
        passwords: passwords.clone(),
        limits: limits.clone(),
        started,
    });
    let state = Arc::new(State {
        store: store.clone(),
        passwords,
        reset: ArcSwap::from_pointee(config.reset.clone()),
        signup: ArcSwap::from_pointee(config.signup.clone()),
        limits: limits.clone(),
        mail_wake: Arc::new(tokio::sync::Notify::new()),
        metrics,
        max_frame_bytes: config.server.max_frame_bytes,
        started,
        store_probe: Arc::new(ProbeCell::default()),
        backups: Default::default(),
    });
    let upkeep = Arc::new(Maintenance {
        store: store.clone(),
        events: Arc::new(ArcSwap::from_pointee(config.events.clone())),
        limits,
        sweep_every: std::time::Duration::from_secs(config.reset.sweep_interval_secs),
    });
    let live = Live {
        state: state.clone(),
        upkeep: upkeep.clone(),
        templates: mailer.templates(),
    };

    let background = CancellationToken::new();
    let tasks = [
        (
            "maintenance",
            tokio::spawn(maintenance::run(upkeep, background.clone())),
        ),
        (
            "mail sender",
            tokio::spawn(mailer.run(store.clone(), state.mail_wake.clone(), background.clone())),
        ),
        (
            "store monitor",
            tokio::spawn(monitor(
                store.clone(),
                state.store_probe.clone(),
                background.clone(),
            )),
        ),
    ];
    let scraper = scrape_listener.map(|listener| {
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "serving metrics over HTTP at /metrics");
        }
        tokio::spawn(crate::scrape::run(
            listener,
            state.clone(),
            background.clone(),
        ))
    });
    let reloader = {
        let stop = background.clone();
        let started_with = config.clone();
        tokio::spawn(async move {
            // What the live settings were last set to: at start, then by each reload.
            let mut applied = started_with.clone();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    got = reloads.recv() => match got {
                        Some(()) => {
                            if let Some(new) = reload(&live, &started_with, &applied, config_path.as_deref()) {
                                applied = new;
                            }
                        }
                        None => return,
                    },
                }
            }
        })
    };

    tracing::info!(
        socket = %listening.path.display(),
        data_dir = %data_dir.display(),
        store = store.backend_name(),
        "latchkeyd {} ready",
        env!("CARGO_PKG_VERSION")
    );
    notify(&[NotifyState::Ready]);
    let socket = listening.path.clone();
    let activated = listening.activated;
    server::run(listening.listener, state, auth, &config.server, async {
        shutdown.await;
        notify(&[NotifyState::Stopping]);
    })
    .await;
    background.cancel();
    let scraper = scraper.map(|task| ("metrics listener", task));
    for (name, task) in tasks
        .into_iter()
        .chain([("reloader", reloader)])
        .chain(scraper)
    {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "{name} task failed");
        }
    }
    if !activated {
        server::remove_socket(&socket);
    }
    store.close().await.map_err(store_err)?;
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

/// How often the store is probed when systemd sets no watchdog.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// Probes the store in a loop, for `health` and for systemd's watchdog. With a watchdog set,
/// probes run at half its interval and each ping needs a probe that did not stall: if the store
/// stalls (sled 0.34.7 has reports of deadlocks under heavy load; a hung database connection),
/// the pings stop and systemd restarts the daemon. A database that refuses connections is not
/// a stall: a restart would not help, the pool reconnects by itself, so the pings go on.
async fn monitor(store: Store, probe: Arc<ProbeCell>, stop: CancellationToken) {
    let watchdog = sd_notify::watchdog_enabled();
    let period = watchdog.map_or(PROBE_EVERY, |interval| interval / 2);
    let mut last = Probe::Ok;
    loop {
        let now = store.probe(period).await;
        probe.set(now);
        if now != last {
            match now {
                Probe::Ok => tracing::info!("store reachable again"),
                Probe::Unreachable => {
                    tracing::error!("store unreachable; calls answer Unavailable until it is back")
                }
                Probe::Stalled => tracing::error!(
                    waited_ms = period.as_millis() as u64,
                    "store stalled; not pinging the watchdog"
                ),
            }
            last = now;
        }
        if watchdog.is_some() && now != Probe::Stalled {
            notify(&[NotifyState::Watchdog]);
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
    }
}

/// Settings that SIGHUP applies live, by dotted prefix; everything else needs a restart.
const LIVE: [&str; 10] = [
    "reset.",
    "signup.",
    "limits.",
    "events.",
    "mail.from",
    "mail.reply_to",
    "mail.product_name",
    "mail.default_locale",
    "mail.template_dir",
    "mail.subjects.",
];

/// What SIGHUP can change while the daemon runs.
struct Live {
    /// The reset and sign-up settings and the rate limiters, read by the service.
    state: Arc<State>,
    /// The event log's retention, read by the sweeper.
    upkeep: Arc<Maintenance>,
    /// The mail templates, subjects and sender, read by the mail sender.
    templates: mail::Templates,
}

/// Re-reads the configuration and applies the live sections, logging every changed key and
/// whether it took effect or needs a restart: `started_with` is what the daemon started on,
/// `applied` what the live settings were last set to. A file that no longer loads changes
/// nothing. Returns the configuration now applied.
fn reload(
    live: &Live,
    started_with: &Config,
    applied: &Config,
    path: Option<&Path>,
) -> Option<Config> {
    let new = match Config::load(path) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!(error = %e, "reload: the configuration does not load; keeping the current settings");
            return None;
        }
    };
    let is_live = |key: &str| LIVE.iter().any(|prefix| key.starts_with(prefix));
    // What is in force: live keys as last applied, the others as the daemon started.
    let mut before: BTreeMap<String, String> = flatten(started_with)
        .into_iter()
        .filter(|(k, _)| !is_live(k))
        .collect();
    before.extend(flatten(applied).into_iter().filter(|(k, _)| is_live(k)));
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
    match live.templates.reload(&new.mail) {
        Ok(()) => tracing::info!("reload: mail templates re-read"),
        Err(e) => {
            tracing::error!(error = %e, "reload: mail templates not reloaded; keeping the current ones")
        }
    }
    if !changed_live {
        tracing::info!("reload: no live setting changed");
    }
    if new.limits != *live.state.limits.load().config() {
        tracing::info!("reload: rate limits changed; their buckets start afresh");
        live.state.limits.store(Arc::new(Limits::new(&new.limits)));
    }
    live.state.reset.store(Arc::new(new.reset.clone()));
    live.state.signup.store(Arc::new(new.signup.clone()));
    live.upkeep.events.store(Arc::new(new.events.clone()));
    Some(new)
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
