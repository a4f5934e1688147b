//! Datapoints in the SQLite engine.

use std::collections::BTreeMap;

use super::{Datapoint, FieldType, PointQuery, PointResult};
use crate::SeriesError;
use crate::store::Sqlite;

impl Sqlite {
    pub(crate) fn write_points(&self, _points: &[Datapoint]) -> Result<(), SeriesError> {
        Err(SeriesError::InvalidQuery(
            "datapoints: not implemented yet".into(),
        ))
    }

    pub(crate) fn metrics(&self) -> Result<Vec<String>, SeriesError> {
        Ok(Vec::new())
    }

    pub(crate) fn metric_fields(
        &self,
        _metric: &str,
    ) -> Result<BTreeMap<String, FieldType>, SeriesError> {
        Ok(BTreeMap::new())
    }

    pub(crate) fn metric_tags(
        &self,
        _metric: &str,
    ) -> Result<BTreeMap<String, Vec<String>>, SeriesError> {
        Ok(BTreeMap::new())
    }

    pub(crate) fn query_points(&self, _q: &PointQuery) -> Result<PointResult, SeriesError> {
        Err(SeriesError::InvalidQuery(
            "datapoints: not implemented yet".into(),
        ))
    }

    pub(crate) fn export_points(
        &self,
        _metrics: &[String],
        _start: i64,
        _end: i64,
        _each: &mut dyn FnMut(Datapoint) -> bool,
    ) -> Result<u64, SeriesError> {
        Ok(0)
    }
}
