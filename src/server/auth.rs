//! Who may connect: each connection's role from the kernel's peer credentials (uid, primary
//! and supplementary groups) and the `[auth]` settings.

use latchkey_client::CallerRole;
use tokio::net::UnixStream;

use super::AuthConfig;

/// Decides a connection's role from its peer credentials.
#[derive(Clone, Debug)]
pub(crate) struct Auth {
    /// Uids with the admin role.
    admin_uids: Vec<u32>,
    /// Gids with the admin role.
    admin_gids: Vec<u32>,
    /// Uids with the app role.
    app_uids: Vec<u32>,
    /// Gids with the app role.
    app_gids: Vec<u32>,
    /// Uids with the monitor role.
    monitor_uids: Vec<u32>,
    /// Gids with the monitor role.
    monitor_gids: Vec<u32>,
}

impl Auth {
    /// The configured roles, with the defaults filled in: the daemon's own uid and root are
    /// admin, members of the socket's group are app.
    pub(crate) fn new(config: &AuthConfig, socket_gid: u32) -> Auth {
        let own_uid = nix::unistd::geteuid().as_raw();
        Auth {
            admin_uids: config
                .admin_uids
                .clone()
                .unwrap_or_else(|| vec![own_uid, 0]),
            admin_gids: config.admin_gids.clone(),
            app_uids: config.app_uids.clone(),
            app_gids: config.app_gids.clone().unwrap_or_else(|| vec![socket_gid]),
            monitor_uids: config.monitor_uids.clone(),
            monitor_gids: config.monitor_gids.clone(),
        }
    }

    /// The role for a peer, or `None` to refuse it: the widest role it matches (admin, then
    /// app, then monitor). `groups` gives the peer's supplementary
    /// groups; it is called only when the uid and primary gid decide nothing.
    pub(crate) fn role(
        &self,
        uid: u32,
        gid: u32,
        groups: impl FnOnce() -> Vec<u32>,
    ) -> Option<CallerRole> {
        let mut groups = Some(groups);
        let mut known: Option<Vec<u32>> = None;
        let mut in_any = |gids: &[u32]| {
            if gids.is_empty() {
                return false;
            }
            if gids.contains(&gid) {
                return true;
            }
            let known = known.get_or_insert_with(|| groups.take().map(|f| f()).unwrap_or_default());
            known.iter().any(|g| gids.contains(g))
        };
        if self.admin_uids.contains(&uid) || in_any(&self.admin_gids) {
            Some(CallerRole::Admin)
        } else if self.app_uids.contains(&uid) || in_any(&self.app_gids) {
            Some(CallerRole::App)
        } else if self.monitor_uids.contains(&uid) || in_any(&self.monitor_gids) {
            Some(CallerRole::Monitor)
        } else {
            None
        }
    }
}

/// `SO_PEERGROUPS` from asm-generic/socket.h (Linux 4.13+), the same on x86, arm and
/// riscv; libc does not export it for every target.
#[cfg(any(
    target_arch = "x86_64",
    target_arch = "x86",
    target_arch = "aarch64",
    target_arch = "arm",
    target_arch = "riscv64"
))]
const SO_PEERGROUPS: libc::c_int = 59;

/// The peer's supplementary groups. The kernel's peer credentials carry only the primary gid,
/// and an app user is usually in the socket's group as a supplementary group. `SO_PEERGROUPS`
/// gives the groups the peer had when it connected, which cannot race with pid reuse; on
/// kernels without it, `/proc/PID/status` is read instead. Neither rustix nor nix wraps
/// `SO_PEERGROUPS` (rustix 1.1 has only `SO_PEERCRED`), so this one call stays a raw
/// `getsockopt`.
pub(super) fn peer_groups(stream: &UnixStream, pid: Option<i32>) -> Vec<u32> {
    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64"
    ))]
    {
        use std::os::fd::AsRawFd;
        let gid_size = std::mem::size_of::<libc::gid_t>();
        let mut groups: Vec<libc::gid_t> = vec![0; 64];
        // The kernel caps supplementary groups at 65536; one retry with the size it asks for.
        for _ in 0..2 {
            let mut len = (groups.len() * gid_size) as libc::socklen_t;
            // SAFETY: the buffer is valid for `len` bytes and outlives the call; the kernel
            // writes at most `len` bytes and reports how many in `len`.
            let rc = unsafe {
                libc::getsockopt(
                    stream.as_raw_fd(),
                    libc::SOL_SOCKET,
                    SO_PEERGROUPS,
                    groups.as_mut_ptr().cast(),
                    &mut len,
                )
            };
            if rc == 0 {
                groups.truncate(len as usize / gid_size);
                return groups;
            }
            if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) {
                break;
            }
            groups.resize((len as usize / gid_size).clamp(1, 65536), 0);
        }
    }
    groups_from_proc(pid)
}

/// The supplementary groups of a process, from `/proc/PID/status`.
fn groups_from_proc(pid: Option<i32>) -> Vec<u32> {
    let Some(pid) = pid else { return Vec::new() };
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .map(|list| {
            list.split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
