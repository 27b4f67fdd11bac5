//! Latency samples and what is computed from them (rate, nearest-rank percentiles, mean and
//! variance, Welch's t), and the closed-loop driver that collects them from many concurrent
//! clients.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// Latencies of one timed run and how long it took.
pub(crate) struct Samples {
    /// Each call's latency in nanoseconds.
    nanos: Vec<u64>,
    /// The measured window.
    elapsed: Duration,
    /// Calls completed in all, warm-up included (for work per call, where the process's CPU
    /// time is read around the whole run).
    pub(crate) all: u64,
}

impl Samples {
    /// Samples from latencies in nanoseconds, in any order, over `elapsed`.
    pub(crate) fn new(mut nanos: Vec<u64>, elapsed: Duration) -> Samples {
        nanos.sort_unstable();
        let all = nanos.len() as u64;
        Samples {
            nanos,
            elapsed,
            all,
        }
    }

    /// Several windows of one side pooled: every latency, and the windows' total time.
    pub(crate) fn pooled(windows: Vec<Samples>) -> Samples {
        let elapsed = windows.iter().map(|w| w.elapsed).sum();
        let all = windows.iter().map(|w| w.all).sum();
        let mut pooled = Samples::new(windows.into_iter().flat_map(|w| w.nanos).collect(), elapsed);
        pooled.all = all;
        pooled
    }

    /// Calls per second.
    pub(crate) fn rate(&self) -> f64 {
        self.nanos.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (nearest rank) in microseconds.
    pub(crate) fn quantile_us(&self, q: f64) -> f64 {
        if self.nanos.is_empty() {
            return f64::NAN;
        }
        let rank = ((q * self.nanos.len() as f64).ceil() as usize).clamp(1, self.nanos.len());
        self.nanos[rank - 1] as f64 / 1000.0
    }

    /// The median in microseconds.
    pub(crate) fn p50(&self) -> f64 {
        self.quantile_us(0.50)
    }

    /// The 99th percentile in microseconds.
    pub(crate) fn p99(&self) -> f64 {
        self.quantile_us(0.99)
    }

    /// The slowest call in microseconds.
    pub(crate) fn max_us(&self) -> f64 {
        self.quantile_us(1.0)
    }

    /// How many latencies there are.
    pub(crate) fn len(&self) -> usize {
        self.nanos.len()
    }

    /// How many calls took longer than `us` microseconds.
    pub(crate) fn count_above_us(&self, us: f64) -> usize {
        let bound = (us * 1000.0) as u64;
        self.nanos.len() - self.nanos.partition_point(|&n| n <= bound)
    }

    /// Mean and sample variance in microseconds.
    pub(crate) fn mean_var_us(&self) -> (f64, f64) {
        let n = self.nanos.len() as f64;
        let mean = self.nanos.iter().map(|&x| x as f64 / 1000.0).sum::<f64>() / n;
        let var = self
            .nanos
            .iter()
            .map(|&x| (x as f64 / 1000.0 - mean).powi(2))
            .sum::<f64>()
            / (n - 1.0).max(1.0);
        (mean, var)
    }
}

/// Welch's t statistic of two samples.
pub(crate) fn welch_t(a: &Samples, b: &Samples) -> f64 {
    let (ma, va) = a.mean_var_us();
    let (mb, vb) = b.mean_var_us();
    (ma - mb) / (va / a.nanos.len() as f64 + vb / b.nanos.len() as f64).sqrt()
}

/// Runs `call` in a closed loop: `tasks_per_conn` tasks on each connection, each calling
/// again as soon as its previous call returns. Calls started during the warm-up are not
/// counted; the run ends when `measure` has passed or every task has returned `Ok(false)`
/// (nothing left to do), whichever comes first.
pub(crate) async fn closed_loop<C, F, Fut>(
    conns: &[C],
    tasks_per_conn: usize,
    warmup: Duration,
    measure: Duration,
    call: F,
) -> anyhow::Result<Samples>
where
    C: Clone + Send + 'static,
    F: Fn(C, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<bool>> + Send + 'static,
{
    let call = Arc::new(call);
    let start = Instant::now() + warmup;
    let end = start + measure;
    let sequence = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for conn in conns {
        for _ in 0..tasks_per_conn {
            let (conn, call, sequence) = (conn.clone(), call.clone(), sequence.clone());
            tasks.push(tokio::spawn(async move {
                let mut nanos = Vec::new();
                let mut last_done = start;
                let mut all = 0;
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    let n = sequence.fetch_add(1, Ordering::Relaxed);
                    let more = call(conn.clone(), n).await?;
                    let done = Instant::now();
                    all += 1;
                    if t0 >= start {
                        nanos.push((done - t0).as_nanos() as u64);
                        last_done = done;
                    }
                    if !more {
                        break;
                    }
                }
                anyhow::Ok((nanos, last_done, all))
            }));
        }
    }
    let mut nanos = Vec::new();
    let mut completed = 0;
    let mut last = start;
    let mut ran_out = true;
    for task in tasks {
        let (task_nanos, last_done, all) = task.await.context("a client task panicked")??;
        nanos.extend(task_nanos);
        completed += all;
        last = last.max(last_done);
        ran_out &= last_done < end;
    }
    // A run that ran out of work early is measured up to its last reply.
    let elapsed = if ran_out {
        last.saturating_duration_since(start)
    } else {
        measure
    };
    let mut samples = Samples::new(nanos, elapsed);
    samples.all = completed;
    Ok(samples)
}

/// Seconds as a duration.
pub(crate) fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let s = Samples::new((1..=100).rev().map(|us| us * 1000).collect(), secs(1.0));
        assert_eq!(s.p50(), 50.0);
        assert_eq!(s.p99(), 99.0);
        assert_eq!(s.quantile_us(1.0), 100.0);
        assert_eq!(s.rate(), 100.0);
        assert_eq!(s.max_us(), 100.0);
        assert_eq!(s.count_above_us(90.0), 10);
    }

    #[test]
    fn welch_t_matches_a_worked_example() {
        // Means 2 and 4 µs, sample variances 1 and 1, five each: t = -2 / sqrt(2/5).
        let a = Samples::new([1, 2, 2, 2, 3].map(|x| x * 1000).to_vec(), secs(1.0));
        let b = Samples::new([3, 4, 4, 4, 5].map(|x| x * 1000).to_vec(), secs(1.0));
        let t = welch_t(&a, &b);
        let expected = -2.0 / (0.5f64 / 5.0 + 0.5 / 5.0).sqrt();
        assert!((t - expected).abs() < 1e-9, "{t} != {expected}");
    }
}
