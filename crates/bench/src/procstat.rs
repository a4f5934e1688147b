//! Sampling a broker process: CPU from /proc/PID/stat, RSS from /proc/PID/status.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

/// Clock ticks per second of utime/stime (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// When it was taken.
    pub(crate) at: Instant,
    /// utime + stime in clock ticks.
    pub(crate) cpu_ticks: u64,
    /// Resident set size in KiB.
    pub(crate) rss_kb: u64,
}

/// Read /proc/PID/stat and /proc/PID/status once.
pub(crate) fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name "(...)": state is field 3, utime 14, stime 15.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Sample {
        at: Instant::now(),
        cpu_ticks: utime + stime,
        rss_kb: rss_kb(pid)?,
    })
}

/// VmRSS of a process in KiB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// What the sampler saw over a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcReport {
    /// Average CPU over the run, in percent of one core.
    pub cpu_pct: f64,
    /// RSS at the start, KiB.
    pub rss_start_kb: u64,
    /// RSS at the end, KiB.
    pub rss_end_kb: u64,
    /// Highest RSS seen, KiB.
    pub rss_max_kb: u64,
}

/// A background sampler of one process.
#[derive(Debug)]
pub(crate) struct Sampler {
    pid: u32,
    first: Option<Sample>,
    max_rss: Arc<Mutex<u64>>,
    stop: Arc<AtomicBool>,
}

impl Sampler {
    /// Start sampling `pid` every 200 ms.
    pub(crate) fn start(pid: u32) -> Sampler {
        let first = sample(pid);
        let max_rss = Arc::new(Mutex::new(first.map_or(0, |s| s.rss_kb)));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (max_rss.clone(), stop.clone());
        tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Some(x) = sample(pid) {
                    let mut g = m.lock().await;
                    *g = (*g).max(x.rss_kb);
                }
            }
        });
        Sampler {
            pid,
            first,
            max_rss,
            stop,
        }
    }

    /// Stop and summarise.
    pub(crate) async fn finish(self) -> ProcReport {
        self.stop.store(true, Ordering::Relaxed);
        let last = sample(self.pid);
        let max = *self.max_rss.lock().await;
        match (self.first, last) {
            (Some(a), Some(b)) => {
                let secs = b.at.duration_since(a.at).as_secs_f64();
                let cpu = if secs > 0.0 {
                    (b.cpu_ticks.saturating_sub(a.cpu_ticks)) as f64 / TICKS_PER_SEC / secs * 100.0
                } else {
                    0.0
                };
                ProcReport {
                    cpu_pct: cpu,
                    rss_start_kb: a.rss_kb,
                    rss_end_kb: b.rss_kb,
                    rss_max_kb: max.max(b.rss_kb),
                }
            }
            _ => ProcReport::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kb > 0);
    }
}
