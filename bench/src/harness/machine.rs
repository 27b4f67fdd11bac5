//! Facts about the machine and its processes, from /proc: the report's header ([`Machine`]),
//! the cores the bench may use, and a process's CPU time and page faults.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context as _};
use serde::Serialize;

/// Where the bench ran.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Machine {
    /// UTC date and time of the run.
    pub(crate) date: String,
    /// Cores available to the process.
    pub(crate) cores: usize,
    /// The CPU model from /proc/cpuinfo.
    pub(crate) cpu: String,
    /// The kernel release.
    pub(crate) kernel: String,
    /// `rustc --version`, if a rustc is on the PATH (the binaries may have been built by
    /// another).
    pub(crate) rustc: String,
    /// /proc/loadavg when the run began.
    pub(crate) load_start: String,
    /// /proc/loadavg when it ended.
    pub(crate) load_end: String,
    /// Share of CPU time the hypervisor gave to other guests during the run (steal), in
    /// percent: noise no load average shows.
    pub(crate) steal_percent: f64,
    /// /proc/stat's cpu times when the run began, for the steal share.
    #[serde(skip)]
    cpu_start: Vec<u64>,
}

impl Machine {
    /// Reads the machine's facts at the start of a run.
    pub(crate) fn read() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let rustc = Command::new("rustc")
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "rustc unknown".into());
        Machine {
            date: utc_now(),
            cores: cores(),
            cpu,
            kernel,
            rustc,
            load_start: load_average(),
            load_end: String::new(),
            steal_percent: 0.0,
            cpu_start: cpu_times(),
        }
    }

    /// Notes the load average and the steal share at the end of the run.
    pub(crate) fn finish(&mut self) {
        self.load_end = load_average();
        let end = cpu_times();
        let delta: Vec<u64> = end
            .iter()
            .zip(&self.cpu_start)
            .map(|(e, s)| e.saturating_sub(*s))
            .collect();
        let total: u64 = delta.iter().sum();
        // Fields: user nice system idle iowait irq softirq steal (guest time is already
        // counted in user and nice).
        let steal = delta.get(7).copied().unwrap_or(0);
        self.steal_percent = 100.0 * steal as f64 / total.max(1) as f64;
    }
}

/// The aggregate cpu line of /proc/stat, up to steal.
fn cpu_times() -> Vec<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| {
            stat.lines().next().map(|line| {
                line.split_whitespace()
                    .skip(1)
                    .take(8)
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// The number of cores this process may use.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// CPU time (user and system) a process has used so far and its minor page faults, from
/// /proc.
pub(crate) fn process_cpu(pid: u32) -> anyhow::Result<(Duration, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after it are fixed: utime and stime are
    // the 12th and 13th after the closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))
    };
    // utime and stime are counted in clock ticks, sysconf(_SC_CLK_TCK).
    let per_sec = rustix::param::clock_ticks_per_second().max(1) as f64;
    let cpu = Duration::from_secs_f64((ticks(11)? + ticks(12)?) as f64 / per_sec);
    Ok((cpu, ticks(7)?))
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Now as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    // A clock set before 1970 reads as the epoch.
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_date(secs as i64)
}

/// Unix seconds as `YYYY-MM-DD HH:MM UTC`.
fn utc_date(secs: i64) -> String {
    // jiff represents years -9999 to 9999; a clock beyond that is shown as it is.
    jiff::Timestamp::from_second(secs)
        .and_then(|t| jiff::fmt::strtime::format("%Y-%m-%d %H:%M UTC", t))
        .unwrap_or_else(|_| format!("Unix time {secs}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_well() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400 + 3661), "2000-02-29 01:01 UTC");
    }
}
