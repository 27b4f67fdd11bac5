//! The `[server]` and `[auth]` settings: the socket, connection handling and who gets which
//! role.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::setting::BadSetting;

/// The socket and connection handling.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Path of the Unix socket.
    pub socket: PathBuf,
    /// Permission bits of the socket file, as an octal string.
    pub socket_mode: String,
    /// Group owning the socket (name or numeric gid); the daemon's own group when unset.
    pub socket_group: Option<String>,
    /// Connections served at once; further ones are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Of those, how many only the admin role may take, so an operator can always connect;
    /// never more than a quarter of `max_connections`.
    pub admin_connections: usize,
    /// Connections one peer uid may hold at once.
    pub max_connections_per_uid: usize,
    /// Connections one peer process may hold at once.
    pub max_connections_per_pid: usize,
    /// A connection on which nothing arrives for this long is closed (replies to calls in
    /// flight are still sent); 0 keeps idle connections for ever. Clients connect again.
    pub idle_timeout_secs: u64,
    /// Requests in flight on one connection; more are refused with a throttling error.
    pub max_requests_per_connection: usize,
    /// Largest frame accepted; a larger one closes that connection.
    pub max_frame_bytes: usize,
    /// How long one frame may take to arrive once begun; a slower one closes the connection.
    pub frame_timeout_secs: u64,
    /// On SIGTERM, how long calls in flight may take to finish before the daemon exits anyway.
    pub shutdown_grace_secs: u64,
    /// Run even as root (normally refused: run as a dedicated user).
    pub allow_root: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            socket: PathBuf::from("latchkey.sock"),
            socket_mode: "0660".into(),
            socket_group: None,
            max_connections: 256,
            admin_connections: 16,
            max_connections_per_uid: 192,
            max_connections_per_pid: 64,
            idle_timeout_secs: 300,
            max_requests_per_connection: 64,
            max_frame_bytes: 64 * 1024,
            frame_timeout_secs: 30,
            shutdown_grace_secs: 30,
            allow_root: false,
        }
    }
}

impl ServerConfig {
    /// Checks values that parse but make no sense.
    pub(crate) fn validate(&self) -> Result<(), BadSetting> {
        self.socket_mode()?;
        if self.max_connections == 0 || self.max_requests_per_connection == 0 {
            return Err(BadSetting::new(
                "server.max_connections",
                "connection and request limits must be at least 1",
            ));
        }
        if self.max_connections_per_uid == 0 || self.max_connections_per_pid == 0 {
            return Err(BadSetting::new(
                "server.max_connections_per_uid",
                "per-uid and per-pid connection limits must be at least 1",
            ));
        }
        if self.frame_timeout_secs == 0 {
            return Err(BadSetting::new(
                "server.frame_timeout_secs",
                "must be at least 1",
            ));
        }
        if self.max_frame_bytes < 1024 {
            return Err(BadSetting::new(
                "server.max_frame_bytes",
                "must be at least 1024",
            ));
        }
        Ok(())
    }

    /// The socket mode as bits.
    pub(crate) fn socket_mode(&self) -> Result<u32, BadSetting> {
        let raw = self.socket_mode.trim_start_matches("0o");
        match u32::from_str_radix(raw, 8) {
            Ok(mode) if mode <= 0o777 => Ok(mode),
            _ => Err(BadSetting::new(
                "server.socket_mode",
                format!("{raw:?} is not an octal mode such as \"0660\""),
            )),
        }
    }
}

/// Which peers get which role, by the uid and gid the kernel reports for the connecting
/// process. Anyone matching neither role is disconnected.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Uids given the admin role; unset means the daemon's own uid and root.
    pub admin_uids: Option<Vec<u32>>,
    /// Gids (primary or supplementary) given the admin role.
    pub admin_gids: Vec<u32>,
    /// Uids given the app role.
    pub app_uids: Vec<u32>,
    /// Gids (primary or supplementary) given the app role; unset means the socket's group.
    pub app_gids: Option<Vec<u32>>,
    /// Uids given the monitor role: `health` and `metrics` only, for scrapers and probes.
    pub monitor_uids: Vec<u32>,
    /// Gids (primary or supplementary) given the monitor role.
    pub monitor_gids: Vec<u32>,
}
