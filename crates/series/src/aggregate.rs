//! Bucketing and aggregation of numeric values, fed newest first.
//!
//! The store streams `(ts, value)` pairs in descending `(ts, id)` order; this module folds
//! them into buckets of a fixed width aligned on the Unix epoch and stops as soon as it
//! holds `limit` complete buckets, so memory is bounded by the limit whatever the range.

use crate::{Aggregate, Bucket};

/// Folds values (newest first) into at most `limit` buckets.
#[derive(Debug)]
pub(crate) struct Buckets {
    /// Bucket width in ms; 0 keeps every value as its own point.
    width: i64,
    aggregate: Aggregate,
    limit: usize,
    /// Finished buckets, newest first.
    done: Vec<Bucket>,
    current: Option<Acc>,
}

/// The running aggregate of one bucket.
#[derive(Debug)]
struct Acc {
    start: i64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    /// Value of the oldest row seen so far (rows come newest first, so the last one fed).
    first: f64,
    /// Value of the newest row (the first one fed).
    last: f64,
}

impl Acc {
    fn new(start: i64, v: f64) -> Acc {
        Acc {
            start,
            count: 1,
            sum: v,
            min: v,
            max: v,
            first: v,
            last: v,
        }
    }

    fn add(&mut self, v: f64) {
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.first = v;
    }

    fn finish(&self, aggregate: Aggregate) -> Bucket {
        let value = match aggregate {
            Aggregate::Avg => self.sum / self.count as f64,
            Aggregate::Min => self.min,
            Aggregate::Max => self.max,
            Aggregate::Sum => self.sum,
            Aggregate::Count => self.count as f64,
            Aggregate::First => self.first,
            Aggregate::Last => self.last,
        };
        Bucket {
            start: self.start,
            value,
            count: self.count,
            min: self.min,
            max: self.max,
        }
    }
}

impl Buckets {
    /// `width` 0 = raw points.
    pub(crate) fn new(width: u64, aggregate: Aggregate, limit: usize) -> Buckets {
        Buckets {
            width: i64::try_from(width).unwrap_or(i64::MAX),
            aggregate,
            limit,
            done: Vec::new(),
            current: None,
        }
    }

    /// Whether no more values are wanted.
    pub(crate) fn full(&self) -> bool {
        self.done.len() >= self.limit
    }

    /// Feeds one value; values must come in non-increasing `ts`. Returns false once the
    /// limit is reached and further values cannot change the result.
    pub(crate) fn push(&mut self, ts: i64, v: f64) -> bool {
        if self.full() {
            return false;
        }
        if self.width == 0 {
            self.done.push(Bucket {
                start: ts,
                value: v,
                count: 1,
                min: v,
                max: v,
            });
            return !self.full();
        }
        let start = bucket_start(ts, self.width);
        match &mut self.current {
            Some(acc) if acc.start == start => acc.add(v),
            current => {
                if let Some(acc) = current.take() {
                    self.done.push(acc.finish(self.aggregate));
                    if self.full() {
                        return false;
                    }
                }
                self.current = Some(Acc::new(start, v));
            }
        }
        true
    }

    /// The buckets in ascending time order (the newest `limit` of them).
    pub(crate) fn finish(mut self) -> Vec<Bucket> {
        if let Some(acc) = self.current.take()
            && !self.full()
        {
            self.done.push(acc.finish(self.aggregate));
        }
        self.done.reverse();
        self.done
    }
}

/// Start of the bucket of width `width` (> 0) holding `ts`: `ts` rounded down to a
/// multiple of `width` (buckets are aligned on the Unix epoch, so hours and days are UTC
/// hours and days). Saturates at `i64::MIN` for the few timestamps whose bucket would
/// start before it.
fn bucket_start(ts: i64, width: i64) -> i64 {
    ts.checked_sub(ts.rem_euclid(width)).unwrap_or(i64::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(width: u64, aggregate: Aggregate, limit: usize, points: &[(i64, f64)]) -> Vec<Bucket> {
        let mut b = Buckets::new(width, aggregate, limit);
        let mut sorted = points.to_vec();
        sorted.sort_by_key(|p| std::cmp::Reverse(p.0));
        for (ts, v) in sorted {
            if !b.push(ts, v) {
                break;
            }
        }
        b.finish()
    }

    fn triples(buckets: &[Bucket]) -> Vec<(i64, f64, u64)> {
        buckets
            .iter()
            .map(|b| (b.start, b.value, b.count))
            .collect()
    }

    const DATA: [(i64, f64); 6] = [
        (1000, 1.0),
        (1500, 3.0),
        (1999, 2.0),
        (2000, 10.0),
        (3500, -4.0),
        (3600, 0.5),
    ];

    #[test]
    fn each_aggregate_on_known_data() {
        let cases = [
            (Aggregate::Avg, [2.0, 10.0, -1.75]),
            (Aggregate::Min, [1.0, 10.0, -4.0]),
            (Aggregate::Max, [3.0, 10.0, 0.5]),
            (Aggregate::Sum, [6.0, 10.0, -3.5]),
            (Aggregate::Count, [3.0, 1.0, 2.0]),
            (Aggregate::First, [1.0, 10.0, -4.0]),
            (Aggregate::Last, [2.0, 10.0, 0.5]),
        ];
        for (agg, values) in cases {
            let got = triples(&run(1000, agg, 100, &DATA));
            let want = vec![
                (1000, values[0], 3),
                (2000, values[1], 1),
                (3000, values[2], 2),
            ];
            assert_eq!(got, want, "{agg:?}");
        }
    }

    #[test]
    fn the_limit_keeps_the_newest_buckets() {
        let got = triples(&run(1000, Aggregate::Sum, 2, &DATA));
        assert_eq!(got, vec![(2000, 10.0, 1), (3000, -3.5, 2)]);
        let raw = triples(&run(0, Aggregate::Sum, 2, &DATA));
        assert_eq!(raw, vec![(3500, -4.0, 1), (3600, 0.5, 1)]);
        assert!(run(1000, Aggregate::Sum, 0, &DATA).is_empty());
    }

    #[test]
    fn width_zero_keeps_every_point() {
        let got = triples(&run(0, Aggregate::Avg, 100, &DATA));
        let want: Vec<_> = DATA.iter().map(|&(t, v)| (t, v, 1)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn buckets_before_the_epoch_round_down() {
        assert_eq!(bucket_start(-1, 1000), -1000);
        assert_eq!(bucket_start(-1000, 1000), -1000);
        assert_eq!(bucket_start(999, 1000), 0);
        assert_eq!(bucket_start(i64::MIN + 1, 10), i64::MIN);
        assert_eq!(bucket_start(i64::MAX, i64::MAX), i64::MAX);
    }
}
