//! Checks on a batch of datapoints before anything of it is written (both engines call
//! [`validate_points`]).

use std::collections::HashMap;

use super::{Datapoint, FieldType, PointError, PointValue};
use crate::SeriesError;

/// Longest metric, field or tag key, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 255;

/// Why `name` cannot be a metric, field or tag key (`what` names which), if it cannot.
fn check_name(what: &'static str, name: &str) -> Result<(), PointError> {
    if name.is_empty() {
        Err(PointError::EmptyName(what))
    } else if name.len() > MAX_NAME_BYTES {
        Err(PointError::LongName {
            what,
            len: name.len(),
        })
    } else if name.chars().any(char::is_control) {
        Err(PointError::ControlCharacter {
            what,
            name: name.to_owned(),
        })
    } else {
        Ok(())
    }
}

/// Why the point cannot be stored (its names and value alone), if it cannot.
pub(crate) fn check_point(p: &Datapoint) -> Result<(), PointError> {
    check_name("metric", &p.metric)?;
    check_name("field", &p.field)?;
    for (k, v) in &p.tags {
        check_name("tag key", k)?;
        if v.is_empty() {
            return Err(PointError::EmptyTagValue(k.clone()));
        }
    }
    if let PointValue::Double(v) = p.value
        && !v.is_finite()
    {
        return Err(PointError::NotFinite(v));
    }
    Ok(())
}

/// `(metric, field)` → (index of the first point naming it, its type).
pub(crate) type BatchTypes<'p> = HashMap<(&'p str, &'p str), (usize, FieldType)>;

/// Checks every point of a batch: names (metric, field, tag keys: non-empty, at most
/// [`MAX_NAME_BYTES`] bytes, no control character), tag values (non-empty), values (a
/// Double is finite), and that points of the batch with the same metric and field have
/// values of one type (Number or String). Returns the field type each `(metric, field)`
/// of the batch has, so that the engine can compare them with the stored types (with
/// [`type_conflict`]) before it writes.
///
/// The error is [`SeriesError::InvalidPoint`] naming the first bad point's index.
pub(crate) fn validate_points(points: &[Datapoint]) -> Result<BatchTypes<'_>, SeriesError> {
    let mut types: BatchTypes<'_> = HashMap::new();
    for (index, p) in points.iter().enumerate() {
        if let Err(e) = check_point(p) {
            return Err(SeriesError::InvalidPoint {
                index,
                reason: e.to_string(),
            });
        }
        let ty = p.value.field_type();
        let first = types
            .entry((p.metric.as_str(), p.field.as_str()))
            .or_insert((index, ty));
        if first.1 != ty {
            return Err(type_conflict(index, p, first.1));
        }
    }
    Ok(types)
}

/// The error for point `index`, whose value's type differs from `expected`, the type its
/// field has (stored, or given by an earlier point of the batch).
pub(crate) fn type_conflict(index: usize, p: &Datapoint, expected: FieldType) -> SeriesError {
    SeriesError::InvalidPoint {
        index,
        reason: format!(
            "field {:?} of metric {:?} holds {} values; this value is a {}",
            p.field,
            p.metric,
            expected.as_str(),
            p.value.field_type().as_str()
        ),
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )]

    use super::*;
    use crate::points::Tags;

    fn point(metric: &str, field: &str, tags: &[(&str, &str)], value: PointValue) -> Datapoint {
        Datapoint {
            metric: metric.into(),
            field: field.into(),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<Tags>(),
            timestamp: 1,
            value,
        }
    }

    fn bad_index(points: &[Datapoint]) -> usize {
        match validate_points(points) {
            Err(SeriesError::InvalidPoint { index, .. }) => index,
            other => panic!("expected InvalidPoint, got {other:?}"),
        }
    }

    #[test]
    fn check_says_what_is_wrong_with_one_point() {
        use crate::points::check;
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        assert_eq!(
            check(&point("m", "value", &[], PointValue::Long(1))),
            Ok(())
        );
        assert_eq!(
            check(&point("", "value", &[], PointValue::Long(1))),
            Err(PointError::EmptyName("metric"))
        );
        assert_eq!(
            check(&point("m", "value", &[("k", "")], PointValue::Long(1))),
            Err(PointError::EmptyTagValue("k".into()))
        );
        assert_eq!(
            check(&point("m", &long, &[], PointValue::Long(1)))
                .unwrap_err()
                .to_string(),
            "field is 256 bytes long (at most 255)"
        );
        assert_eq!(
            check(&point("m", "value", &[("a\nb", "v")], PointValue::Long(1)))
                .unwrap_err()
                .to_string(),
            "tag key \"a\\nb\" holds a control character"
        );
        assert!(matches!(
            check(&point("m", "value", &[], PointValue::Double(f64::NAN))),
            Err(PointError::NotFinite(_))
        ));
    }

    #[test]
    fn good_points_pass_and_report_their_types() {
        let ps = [
            point("m", "value", &[("a", "b")], PointValue::Long(1)),
            point("m", "s", &[], PointValue::Text("x".into())),
        ];
        let types = validate_points(&ps).unwrap();
        assert_eq!(types[&("m", "value")], (0, FieldType::Number));
        assert_eq!(types[&("m", "s")], (1, FieldType::String));
    }

    #[test]
    fn each_bad_name_or_value_is_refused_with_its_index() {
        let ok = point("m", "f", &[("k", "v")], PointValue::Long(1));
        let long = "x".repeat(256);
        let bads = [
            point("", "f", &[], PointValue::Long(1)),
            point("m", "", &[], PointValue::Long(1)),
            point(&long, "f", &[], PointValue::Long(1)),
            point("m\n", "f", &[], PointValue::Long(1)),
            point("m", "f", &[("", "v")], PointValue::Long(1)),
            point("m", "f", &[("k\u{1}", "v")], PointValue::Long(1)),
            point("m", "f", &[("k", "")], PointValue::Long(1)),
            point("m", "f", &[], PointValue::Double(f64::NAN)),
            point("m", "f", &[], PointValue::Double(f64::INFINITY)),
        ];
        for bad in bads {
            assert_eq!(
                bad_index(&[ok.clone(), ok.clone(), bad.clone()]),
                2,
                "{bad:?}"
            );
        }
        assert!(validate_points(&[point(&"x".repeat(255), "f", &[], PointValue::Long(1))]).is_ok());
    }

    #[test]
    fn a_type_change_within_the_batch_is_refused() {
        let ps = [
            point("m", "f", &[], PointValue::Double(1.0)),
            point("m", "f", &[("k", "v")], PointValue::Long(2)),
            point("m", "f", &[], PointValue::Text("x".into())),
        ];
        assert_eq!(bad_index(&ps), 2);
        // The same field name in another metric is another field.
        let ps = [
            point("m", "f", &[], PointValue::Double(1.0)),
            point("n", "f", &[], PointValue::Text("x".into())),
        ];
        assert!(validate_points(&ps).is_ok());
    }
}
