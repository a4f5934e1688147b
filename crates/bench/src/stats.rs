//! Per-publisher accounting on the receiving side: loss, duplicates, order, latency.

use hdrhistogram::Histogram;

use crate::wire::PayloadHeader;

/// Sequence numbers above this are treated as foreign payloads (bounds the bitsets).
const MAX_SEQ: u64 = 1 << 32;
/// Publisher indexes above this are treated as foreign payloads.
const MAX_PUBLISHERS: u32 = 1 << 20;

#[derive(Debug, Default, Clone)]
struct PubTrack {
    seen: Vec<u64>,
    next_expected: u64,
    unique: u64,
}

/// What one subscriber (or the merge of several) saw.
#[derive(Debug, Clone)]
pub struct Tracker {
    per_pub: Vec<PubTrack>,
    /// Latency in microseconds.
    pub(crate) hist: Histogram<u64>,
    /// PUBLISH packets received.
    pub received: u64,
    /// Of those, first copies of a (publisher, seq).
    pub unique: u64,
    /// Second and later copies.
    pub duplicates: u64,
    /// First copies that arrived after a later sequence number of the same publisher.
    pub out_of_order: u64,
    /// Payloads without a benchmark header.
    pub foreign: u64,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::new()
    }
}

fn new_hist() -> Histogram<u64> {
    // 1 µs .. 10 min, 3 significant digits; the bounds are valid constants.
    match Histogram::new_with_bounds(1, 600_000_000, 3) {
        Ok(h) => h,
        Err(_) => Histogram::new(3).unwrap_or_else(|_| unreachable_hist()),
    }
}

#[allow(clippy::panic)]
fn unreachable_hist() -> Histogram<u64> {
    panic!("hdrhistogram refused constant bounds")
}

impl Tracker {
    /// An empty tracker.
    pub fn new() -> Tracker {
        Tracker {
            per_pub: Vec::new(),
            hist: new_hist(),
            received: 0,
            unique: 0,
            duplicates: 0,
            out_of_order: 0,
            foreign: 0,
        }
    }

    /// Account for one received message (`now_ns` on the same clock as `sent_ns`).
    pub fn record(&mut self, header: Option<PayloadHeader>, now_ns: u64) {
        self.received += 1;
        let Some(h) = header else {
            self.foreign += 1;
            return;
        };
        if h.publisher >= MAX_PUBLISHERS || h.seq >= MAX_SEQ {
            self.foreign += 1;
            return;
        }
        let idx = h.publisher as usize;
        if self.per_pub.len() <= idx {
            self.per_pub.resize_with(idx + 1, PubTrack::default);
        }
        let Some(t) = self.per_pub.get_mut(idx) else {
            return;
        };
        let word = (h.seq / 64) as usize;
        let bit = 1u64 << (h.seq % 64);
        if t.seen.len() <= word {
            t.seen.resize((word + 1).next_power_of_two(), 0);
        }
        let Some(w) = t.seen.get_mut(word) else {
            return;
        };
        if *w & bit != 0 {
            self.duplicates += 1;
            return;
        }
        *w |= bit;
        t.unique += 1;
        self.unique += 1;
        if h.seq < t.next_expected {
            self.out_of_order += 1;
        } else {
            t.next_expected = h.seq + 1;
        }
        let lat_us = now_ns.saturating_sub(h.sent_ns) / 1000;
        self.hist.saturating_record(lat_us.max(1));
    }

    /// Distinct messages received from publisher `p`.
    pub fn unique_from(&self, p: u32) -> u64 {
        self.per_pub.get(p as usize).map_or(0, |t| t.unique)
    }

    /// Messages missing given how many each publisher sent (`sent[p]`).
    pub fn lost(&self, sent: &[u64]) -> u64 {
        sent.iter()
            .enumerate()
            .map(|(p, &n)| n.saturating_sub(self.unique_from(p as u32)))
            .sum()
    }

    /// Add another subscriber's counts and latencies (loss is computed per subscriber).
    pub fn merge_counts(&mut self, other: &Tracker) {
        self.received += other.received;
        self.unique += other.unique;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.foreign += other.foreign;
        let _ = self.hist.add(&other.hist);
    }

    /// Latency percentile in microseconds (0 when nothing was recorded).
    pub fn latency_us(&self, q: f64) -> u64 {
        if self.hist.is_empty() {
            0
        } else {
            self.hist.value_at_quantile(q)
        }
    }

    /// Largest latency in microseconds.
    pub fn latency_max_us(&self) -> u64 {
        if self.hist.is_empty() {
            0
        } else {
            self.hist.max()
        }
    }

    /// Mean latency in microseconds.
    pub fn latency_mean_us(&self) -> f64 {
        if self.hist.is_empty() {
            0.0
        } else {
            self.hist.mean()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(publisher: u32, seq: u64) -> Option<PayloadHeader> {
        Some(PayloadHeader {
            publisher,
            seq,
            sent_ns: 0,
        })
    }

    #[test]
    fn counts_loss_duplicates_and_reordering_per_publisher() {
        let mut t = Tracker::new();
        for s in [0, 1, 3, 2, 3, 5] {
            t.record(h(0, s), 1_000_000);
        }
        for s in 0..4 {
            t.record(h(2, s), 1_000_000);
        }
        t.record(None, 0);
        assert_eq!(t.received, 11);
        assert_eq!(t.unique, 9);
        assert_eq!(t.duplicates, 1);
        assert_eq!(t.out_of_order, 1);
        assert_eq!(t.foreign, 1);
        // Publisher 0 sent 7 (4 and 6 missing), publisher 1 sent 2 (both missing), 2 sent 4.
        assert_eq!(t.lost(&[7, 2, 4]), 4);
        assert_eq!(t.latency_us(0.5), 1000);
    }

    #[test]
    fn merged_trackers_add_counts() {
        let mut a = Tracker::new();
        let mut b = Tracker::new();
        a.record(h(0, 0), 5_000);
        b.record(h(0, 0), 9_000);
        b.record(h(0, 0), 9_000);
        a.merge_counts(&b);
        assert_eq!(a.received, 3);
        assert_eq!(a.unique, 2);
        assert_eq!(a.duplicates, 1);
        assert_eq!(a.latency_max_us(), 9);
    }
}
