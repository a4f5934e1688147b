//! Live progress on a terminal: a bar (or spinner) with the current rates.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Counters the workers bump and the progress task reads.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) connected: AtomicU64,
}

/// A running progress display; dropping it without `finish` leaves the bar as is.
#[derive(Debug)]
pub(crate) struct Progress {
    stop: Arc<AtomicBool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Start a display of `counters` if `enabled`; `total` is the expected count of the
    /// main counter (`what`: "sent", "received" or "connected").
    pub(crate) fn start(
        enabled: bool,
        counters: Arc<Counters>,
        total: Option<u64>,
        what: &'static str,
    ) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        if !enabled {
            return Progress { stop, task: None };
        }
        let bar = match total {
            Some(n) => ProgressBar::new(n),
            None => ProgressBar::new_spinner(),
        };
        let style = match total {
            Some(_) => ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} {what} {msg}",
            ),
            None => ProgressStyle::with_template("{elapsed_precise} {spinner} {pos} {what} {msg}"),
        };
        if let Ok(style) = style {
            let style = style.with_key(
                "what",
                move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(what);
                },
            );
            bar.set_style(style.progress_chars("=> "));
        }
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64, 0u64);
            while !s.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let sent = counters.sent.load(Ordering::Relaxed);
                let recv = counters.received.load(Ordering::Relaxed);
                let conn = counters.connected.load(Ordering::Relaxed);
                let dt = last.0.elapsed().as_secs_f64().max(1e-3);
                let (ps, rs) = ((sent - last.1) as f64 / dt, (recv - last.2) as f64 / dt);
                last = (Instant::now(), sent, recv);
                bar.set_position(match what {
                    "sent" => sent,
                    "received" => recv,
                    _ => conn,
                });
                bar.set_message(format!("| pub {ps:.0}/s  recv {rs:.0}/s  conn {conn}"));
            }
            bar.finish_and_clear();
        });
        Progress {
            stop,
            task: Some(task),
        }
    }

    /// Stop and clear the display.
    pub(crate) async fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}
