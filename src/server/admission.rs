//! Who may hold a connection (issue 19, item 1): a cap on all connections, slots kept for
//! the admin role, and caps per peer uid and per peer pid, so that no single peer, however
//! many connections it opens and leaves idle, takes every slot.
//!
//! Connections are accepted first and then admitted or closed at once: a refused client
//! learns so immediately instead of waiting in the kernel's backlog behind connections that
//! may never close.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use latchkey_client::CallerRole;

use super::config::ServerConfig;

/// Why a connection was refused; its label in `latchkey_connections_refused`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every slot is taken.
    Full,
    /// Only the slots kept for the admin role are free.
    KeptForAdmin,
    /// The peer's uid holds its share.
    PerUid,
    /// The peer's process holds its share.
    PerPid,
}

impl Refusal {
    /// The metric label and log word.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::Full => "full",
            Refusal::KeptForAdmin => "kept_for_admin",
            Refusal::PerUid => "per_uid",
            Refusal::PerPid => "per_pid",
        }
    }
}

/// The connection counts; shared by the accept loop and every admitted connection.
#[derive(Clone)]
pub(crate) struct Admission {
    /// The counts behind one lock: admission checks and updates them together.
    counts: Arc<Mutex<Counts>>,
    /// The limits.
    limits: Limits,
    /// When a refusal was last logged (Unix seconds), so a flood logs once a second.
    logged_at: Arc<AtomicU64>,
}

/// The limits, from `[server]`.
#[derive(Clone, Copy)]
struct Limits {
    total: usize,
    admin_kept: usize,
    per_uid: usize,
    per_pid: usize,
}

/// What is held now.
#[derive(Default)]
struct Counts {
    total: usize,
    per_uid: HashMap<u32, usize>,
    per_pid: HashMap<i32, usize>,
}

/// One admitted connection's hold on its slots, given back when dropped.
pub(crate) struct Ticket {
    /// Whose counts to give back.
    counts: Arc<Mutex<Counts>>,
    /// The peer.
    uid: u32,
    /// The peer's process, when the kernel reported it.
    pid: Option<i32>,
}

impl Admission {
    pub(crate) fn new(config: &ServerConfig) -> Admission {
        Admission {
            counts: Arc::default(),
            limits: Limits {
                total: config.max_connections,
                // A quarter at most, so a small max_connections (set before the reserve
                // existed) still leaves the apps most of the slots.
                admin_kept: config.admin_connections.min(config.max_connections / 4),
                per_uid: config.max_connections_per_uid,
                per_pid: config.max_connections_per_pid,
            },
            logged_at: Arc::default(),
        }
    }

    /// Admits a connection from `uid` (process `pid`) with `role`, or says why not.
    pub(crate) fn admit(
        &self,
        uid: u32,
        pid: Option<i32>,
        role: CallerRole,
    ) -> Result<Ticket, Refusal> {
        let mut counts = lock(&self.counts);
        let limits = self.limits;
        if counts.total >= limits.total {
            return Err(Refusal::Full);
        }
        if role != CallerRole::Admin && counts.total >= limits.total - limits.admin_kept {
            return Err(Refusal::KeptForAdmin);
        }
        if counts.per_uid.get(&uid).copied().unwrap_or(0) >= limits.per_uid {
            return Err(Refusal::PerUid);
        }
        if let Some(pid) = pid {
            if counts.per_pid.get(&pid).copied().unwrap_or(0) >= limits.per_pid {
                return Err(Refusal::PerPid);
            }
            *counts.per_pid.entry(pid).or_default() += 1;
        }
        *counts.per_uid.entry(uid).or_default() += 1;
        counts.total += 1;
        Ok(Ticket {
            counts: self.counts.clone(),
            uid,
            pid,
        })
    }

    /// Whether a refusal should be logged now: the first of each second.
    pub(crate) fn log_now(&self) -> bool {
        let now = crate::clock::now();
        self.logged_at.swap(now, Ordering::Relaxed) != now
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        counts.total = counts.total.saturating_sub(1);
        release(&mut counts.per_uid, self.uid);
        if let Some(pid) = self.pid {
            release(&mut counts.per_pid, pid);
        }
    }
}

/// One fewer for `key`, dropping the entry at zero so the maps hold only live peers.
fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    if let std::collections::hash_map::Entry::Occupied(mut held) = map.entry(key) {
        *held.get_mut() -= 1;
        if *held.get() == 0 {
            held.remove();
        }
    }
}

fn lock(counts: &Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    // Every change under the lock is a few integer updates that cannot panic half-way.
    counts.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(total: usize, admin_kept: usize, per_uid: usize, per_pid: usize) -> Admission {
        Admission::new(&ServerConfig {
            max_connections: total,
            admin_connections: admin_kept,
            max_connections_per_uid: per_uid,
            max_connections_per_pid: per_pid,
            ..ServerConfig::default()
        })
    }

    #[test]
    fn no_peer_takes_every_slot_and_admin_keeps_its_own() {
        let gate = admission(10, 2, 6, 4);
        assert_eq!(
            admission(7, 16, 6, 4).limits.admin_kept,
            1,
            "a quarter at most"
        );
        let app = CallerRole::App;
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(
                gate.admit(1000, Some(7), app)
                    .expect("within the pid's share"),
            );
        }
        assert_eq!(gate.admit(1000, Some(7), app).err(), Some(Refusal::PerPid));
        for _ in 0..2 {
            held.push(gate.admit(1000, Some(8), app).expect("another process"));
        }
        assert_eq!(gate.admit(1000, Some(9), app).err(), Some(Refusal::PerUid));
        for _ in 0..2 {
            held.push(gate.admit(1001, Some(20), app).expect("another uid"));
        }
        assert_eq!(
            gate.admit(1002, None, app).err(),
            Some(Refusal::KeptForAdmin)
        );
        let admin = CallerRole::Admin;
        held.push(gate.admit(0, Some(1), admin).expect("a kept slot"));
        held.push(gate.admit(0, Some(1), admin).expect("the other kept slot"));
        assert_eq!(gate.admit(0, Some(2), admin).err(), Some(Refusal::Full));
        // Closing gives the slots back, to the same peer as to others.
        held.truncate(3);
        gate.admit(1000, Some(7), app)
            .expect("the pid's slot is free again");
        assert_eq!(
            lock(&gate.counts).per_pid.get(&8),
            None,
            "no entry kept for pid 8"
        );
    }
}
