//! The engine-independent part of datapoint queries: series selection, grouping, merging,
//! aggregators, paging (markers) and export, over any [`PointSource`].

use super::source::PointSource;
use super::{Datapoint, PointQuery, PointResult};
use crate::SeriesError;

/// Runs `q` over `src`, returning at most `limit` value rows (all groups together; the
/// caller has applied its default and maximum).
pub(crate) fn run_query(
    src: &dyn PointSource,
    q: &PointQuery,
    limit: usize,
) -> Result<PointResult, SeriesError> {
    let _ = (src, q, limit);
    Err(SeriesError::InvalidQuery(
        "datapoints: not implemented yet".into(),
    ))
}

/// Hands every point of `metrics` (all when empty) with `start <= ts <= end` to `each`,
/// metric by metric, series by series, field by field, in time order, reading `page`
/// points at a time; stops when `each` returns false. Returns how many were handed over.
pub(crate) fn export(
    src: &dyn PointSource,
    metrics: &[String],
    start: i64,
    end: i64,
    page: usize,
    each: &mut dyn FnMut(Datapoint) -> bool,
) -> Result<u64, SeriesError> {
    let _ = (src, metrics, start, end, page, each);
    Ok(0)
}
