//! Datapoints (metric, field, tags, timestamp, value): writes, catalog, queries with
//! filters, groups, aggregators and paging, export.
//!
//! Every check is a function taking a `&SeriesStore`, so that each engine runs the same
//! ones: the `#[test]`s at the bottom open a SQLite store; another engine adds its own
//! `#[test]`s calling the same functions with its store.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;

use midge_series::points::{
    Aggregator, AggregatorKind, CompareOp, Datapoint, FieldType, PointOrder, PointQuery,
    PointResult, PointValue, Tags, ValueFilter, timestamp_ms,
};
use midge_series::{SeriesError, SeriesOptions, SeriesStore, Synchronous};

// ---------------------------------------------------------------------------------------
// helpers

fn tags(pairs: &[(&str, &str)]) -> Tags {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn pt(metric: &str, field: &str, t: &[(&str, &str)], ts: i64, value: PointValue) -> Datapoint {
    Datapoint {
        metric: metric.into(),
        field: field.into(),
        tags: tags(t),
        timestamp: ts,
        value,
    }
}

fn long(metric: &str, t: &[(&str, &str)], ts: i64, v: i64) -> Datapoint {
    pt(metric, "value", t, ts, PointValue::Long(v))
}

fn dbl(metric: &str, t: &[(&str, &str)], ts: i64, v: f64) -> Datapoint {
    pt(metric, "value", t, ts, PointValue::Double(v))
}

fn query(metric: &str) -> PointQuery {
    PointQuery {
        metric: metric.into(),
        start: 0,
        end: i64::MAX,
        ..PointQuery::default()
    }
}

fn agg(kind: AggregatorKind, sampling_ms: Option<i64>, param: Option<f64>) -> Aggregator {
    Aggregator {
        kind,
        sampling_ms,
        param,
    }
}

/// (timestamp, first value as f64) of every row of every group.
fn series_of(r: &PointResult) -> Vec<(i64, Option<f64>)> {
    r.groups
        .iter()
        .flat_map(|g| g.values.iter())
        .map(|row| {
            (
                row.timestamp,
                row.values[0].as_ref().and_then(PointValue::as_f64),
            )
        })
        .collect()
}

fn values(r: &PointResult) -> Vec<(i64, Option<PointValue>)> {
    r.groups
        .iter()
        .flat_map(|g| g.values.iter())
        .map(|row| (row.timestamp, row.values[0].clone()))
        .collect()
}

fn invalid_query(e: Result<PointResult, SeriesError>) -> String {
    match e {
        Err(SeriesError::InvalidQuery(m)) => m,
        other => panic!("expected InvalidQuery, got {other:?}"),
    }
}

/// (group tags, timestamp, values, row tags) of every row.
type Rows = Vec<(Tags, i64, Vec<Option<PointValue>>, Vec<Option<String>>)>;

/// Panics (briefly) where `paged` and `whole` first differ.
fn same_rows(paged: &Rows, whole: &Rows, what: &str) {
    if paged != whole {
        let i = paged.iter().zip(whole).take_while(|(a, b)| a == b).count();
        let around = |v: &Rows| format!("{:?}", v.get(i.saturating_sub(2)..(i + 2).min(v.len())));
        panic!(
            "{what}: {} rows paged, {} whole, first difference at {i}: {} vs {}",
            paged.len(),
            whole.len(),
            around(paged),
            around(whole)
        );
    }
}

/// Every row of a query, page by page (following `next_marker`), with the page count.
fn all_pages(store: &SeriesStore, q: &PointQuery) -> (Rows, usize) {
    let mut q = q.clone();
    let mut out = Vec::new();
    let mut pages = 0;
    loop {
        let r = store.query_points(&q).unwrap();
        pages += 1;
        let n: usize = r.groups.iter().map(|g| g.values.len()).sum();
        assert!(n <= q.limit.unwrap_or(usize::MAX), "page over the limit");
        for g in &r.groups {
            for row in &g.values {
                out.push((
                    g.tags.clone(),
                    row.timestamp,
                    row.values.clone(),
                    row.tags.clone(),
                ));
            }
        }
        assert_eq!(r.truncated, r.next_marker.is_some());
        match r.next_marker {
            Some(m) => q.marker = Some(m),
            None => return (out, pages),
        }
        assert!(pages < 10_000, "paging does not end");
    }
}

// ---------------------------------------------------------------------------------------
// the checks, engine-independent

/// Turns the engine's own aggregation back on when dropped (even by a failed check).
struct EngineAggregation;

impl EngineAggregation {
    fn off() -> EngineAggregation {
        midge_series::points::set_engine_aggregation(false);
        EngineAggregation
    }
}

impl Drop for EngineAggregation {
    fn drop(&mut self) {
        midge_series::points::set_engine_aggregation(true);
    }
}

/// Whether two value rows are the same, floats within a relative 1e-9 (sums in another
/// order).
fn close_rows(a: &Rows, b: &Rows) -> bool {
    let close = |x: &Option<PointValue>, y: &Option<PointValue>| match (x, y) {
        (Some(PointValue::Double(x)), Some(PointValue::Double(y))) => {
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        _ => x == y,
    };
    a.len() == b.len()
        && a.iter().zip(b).all(|(r, s)| {
            r.0 == s.0
                && r.1 == s.1
                && r.3 == s.3
                && r.2.len() == s.2.len()
                && r.2.iter().zip(&s.2).all(|(x, y)| close(x, y))
        })
}

/// Windowed Avg, Sum, Count, Min and Max computed by the engine give the rows of the scan
/// (the same windows, timestamps, value types, groups and pages).
pub fn engine_aggregation_gives_the_scans_rows(store: &SeriesStore) {
    use AggregatorKind as K;
    // 6 series (host h0..h5, region r0/r1), fields `a` (whole numbers) and `b` (floats and
    // whole numbers mixed), irregular times around 0 with a gap of empty windows, and
    // points at the same time in several series; metric `big`: whole numbers near 2^61.
    let mut x: u64 = 7;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut batch = Vec::new();
    for s in 0..6 {
        let host = format!("h{s}");
        let region = format!("r{}", s % 2);
        let t: &[(&str, &str)] = &[("host", &host), ("region", &region)];
        let mut ts = -60_000i64 + (rnd() % 3_000) as i64;
        while ts < 160_000 {
            if !(40_000..100_000).contains(&ts) || s == 5 {
                let a = (rnd() % 2_000) as i64 - 1_000;
                batch.push(pt("agg", "a", t, ts, PointValue::Long(a)));
                // Sums of these overflow an i64 (then they are floats).
                let big = (1i64 << 61) + (rnd() % 1_000) as i64;
                batch.push(pt("big", "value", t, ts, PointValue::Long(big)));
                let b = match rnd() % 3 {
                    0 => PointValue::Long((rnd() % 100) as i64),
                    _ => PointValue::Double((rnd() % 100_000) as f64 / 1_000.0 - 50.0),
                };
                if rnd() % 4 != 0 {
                    batch.push(pt("agg", "b", t, ts, b));
                }
            }
            ts += 500 + (rnd() % 2_500) as i64 / 500 * 500;
        }
    }
    store.write_points(&batch).unwrap();
    let mut ran = 0;
    for kind in [K::Avg, K::Sum, K::Count, K::Min, K::Max] {
        for sampling in [None, Some(7_000), Some(60_000)] {
            for (group_by, row_tags, fields) in [
                (vec![], vec![], vec!["a"]),
                (vec!["region"], vec!["host"], vec!["a", "b"]),
                (vec!["host"], vec![], vec!["b", "a"]),
            ] {
                for then in [
                    None,
                    Some(agg(K::Diff, None, None)),
                    Some(agg(K::Max, Some(20_000), None)),
                ] {
                    for order in [PointOrder::Asc, PointOrder::Desc] {
                        let mut aggregators = vec![agg(kind, sampling, None)];
                        aggregators.extend(then.clone());
                        let q = PointQuery {
                            metric: "agg".into(),
                            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
                            tags: row_tags.iter().map(|t| (*t).to_owned()).collect(),
                            group_by: group_by.iter().map(|t| (*t).to_owned()).collect(),
                            start: -45_000,
                            end: 150_000,
                            aggregators,
                            order,
                            limit: Some(100_000),
                            ..PointQuery::default()
                        };
                        let (pushed, _) = all_pages(store, &q);
                        let (scanned, _) = {
                            let _off = EngineAggregation::off();
                            all_pages(store, &q)
                        };
                        // (Diff of the one window of the whole range has no row.)
                        assert!(!pushed.is_empty() || sampling.is_none(), "{q:?}");
                        assert!(
                            close_rows(&pushed, &scanned),
                            "{q:?}:\n engine {pushed:?}\n scan {scanned:?}"
                        );
                        // Pages of 7 rows, with markers, give the same rows.
                        let paged = PointQuery {
                            limit: Some(7),
                            ..q.clone()
                        };
                        let (pages, n) = all_pages(store, &paged);
                        assert!(n > 1 || pushed.len() <= 7);
                        assert!(close_rows(&pages, &scanned), "{paged:?}: paged {pages:?}");
                        ran += 1;
                    }
                }
            }
        }
    }
    assert_eq!(ran, 5 * 3 * 3 * 3 * 2);
    // Sums of whole numbers: whole while they fit an i64, floats past it.
    for sampling in [None, Some(1_000), Some(7_000)] {
        for group_by in [vec![], vec!["host".to_owned()]] {
            let q = PointQuery {
                metric: "big".into(),
                group_by,
                start: -45_000,
                end: 150_000,
                aggregators: vec![agg(K::Sum, sampling, None)],
                limit: Some(100_000),
                ..PointQuery::default()
            };
            let (pushed, _) = all_pages(store, &q);
            let (scanned, _) = {
                let _off = EngineAggregation::off();
                all_pages(store, &q)
            };
            assert!(close_rows(&pushed, &scanned), "{q:?}");
            let kinds: Vec<bool> = pushed
                .iter()
                .map(|r| matches!(r.2[0], Some(PointValue::Long(_))))
                .collect();
            // One point per window: whole; the whole range: a float.
            if sampling == Some(1_000) && !q.group_by.is_empty() {
                assert!(kinds.iter().all(|k| *k), "{q:?}");
            }
            if sampling.is_none() {
                assert!(kinds.iter().all(|k| !*k), "{q:?}");
            }
        }
    }
}

pub fn same_key_overwrites(store: &SeriesStore) {
    let t = [("dev", "a")];
    store.write_points(&[long("m", &t, 1_000, 1)]).unwrap();
    store
        .write_points(&[long("m", &t, 1_000, 2), long("m", &t, 2_000, 3)])
        .unwrap();
    // Same key twice in one batch: the later one wins.
    store
        .write_points(&[long("m", &t, 3_000, 4), long("m", &t, 3_000, 5)])
        .unwrap();
    let r = store.query_points(&query("m")).unwrap();
    assert_eq!(
        values(&r),
        vec![
            (1_000, Some(PointValue::Long(2))),
            (2_000, Some(PointValue::Long(3))),
            (3_000, Some(PointValue::Long(5)))
        ]
    );
    assert_eq!(r.raw_count, 3);
    assert!(!r.truncated);
    // Same time, other tags: another series, not an overwrite.
    store
        .write_points(&[long("m", &[("dev", "b")], 1_000, 9)])
        .unwrap();
    let mut q = query("m");
    q.group_by = vec!["dev".into()];
    let r = store.query_points(&q).unwrap();
    assert_eq!(r.groups.len(), 2);
    assert_eq!(r.groups[1].values.len(), 1);
}

pub fn a_bad_point_stores_nothing_of_its_batch(store: &SeriesStore) {
    let batch = vec![
        long("m", &[("k", "v")], 1, 1),
        long("m", &[("k", "v")], 2, 2),
        long("m", &[("k", "")], 3, 3),
        long("m", &[("k", "v")], 4, 4),
    ];
    match store.write_points(&batch) {
        Err(SeriesError::InvalidPoint { index, .. }) => assert_eq!(index, 2),
        other => panic!("{other:?}"),
    }
    let r = store.query_points(&query("m")).unwrap();
    assert!(r.groups.is_empty(), "{r:?}");
    assert!(store.metrics().unwrap().is_empty());
    // A non-finite double, in the middle.
    let batch = vec![
        dbl("n", &[], 1, 1.0),
        dbl("n", &[], 2, f64::NAN),
        dbl("n", &[], 3, 3.0),
    ];
    match store.write_points(&batch) {
        Err(SeriesError::InvalidPoint { index, .. }) => assert_eq!(index, 1),
        other => panic!("{other:?}"),
    }
    assert!(store.metrics().unwrap().is_empty());
}

pub fn a_type_conflict_is_refused(store: &SeriesStore) {
    store.write_points(&[long("m", &[], 1, 1)]).unwrap();
    // Against the stored type, after good points of the same batch (new series, new
    // metric): nothing of it is stored.
    let batch = vec![
        long("m", &[("new", "series")], 2, 2),
        long("other", &[], 2, 2),
        pt("m", "value", &[], 3, PointValue::Text("x".into())),
    ];
    match store.write_points(&batch) {
        Err(SeriesError::InvalidPoint { index, reason }) => {
            assert_eq!(index, 2);
            assert!(reason.contains("Number"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.metrics().unwrap(), vec!["m".to_owned()]);
    assert_eq!(store.query_points(&query("m")).unwrap().raw_count, 1);
    // Within the batch.
    let batch = vec![
        pt("s", "f", &[], 1, PointValue::Text("x".into())),
        pt("s", "f", &[], 2, PointValue::Double(1.0)),
    ];
    match store.write_points(&batch) {
        Err(SeriesError::InvalidPoint { index, .. }) => assert_eq!(index, 1),
        other => panic!("{other:?}"),
    }
    // Long and Double are both Number: fine together.
    store.write_points(&[dbl("m", &[], 5, 1.5)]).unwrap();
    // The store still writes after a refused batch (ids made by it were rolled back).
    store
        .write_points(&[
            long("m", &[("new", "series")], 7, 7),
            long("other", &[], 7, 7),
        ])
        .unwrap();
    assert_eq!(
        store.metrics().unwrap(),
        vec!["m".to_owned(), "other".to_owned()]
    );
    assert_eq!(store.query_points(&query("m")).unwrap().raw_count, 3);
}

pub fn catalog_lists_metrics_fields_and_tags(store: &SeriesStore) {
    store
        .write_points(&[
            pt(
                "temp",
                "value",
                &[("room", "b"), ("floor", "1")],
                1,
                PointValue::Double(1.0),
            ),
            pt(
                "temp",
                "unit",
                &[("room", "a")],
                1,
                PointValue::Text("C".into()),
            ),
            pt("hum", "value", &[("room", "a")], 1, PointValue::Long(40)),
        ])
        .unwrap();
    assert_eq!(
        store.metrics().unwrap(),
        vec!["hum".to_owned(), "temp".to_owned()]
    );
    let fields = store.metric_fields("temp").unwrap();
    assert_eq!(
        fields.into_iter().collect::<Vec<_>>(),
        vec![
            ("unit".to_owned(), FieldType::String),
            ("value".to_owned(), FieldType::Number)
        ]
    );
    let t = store.metric_tags("temp").unwrap();
    assert_eq!(t["room"], vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(t["floor"], vec!["1".to_owned()]);
    assert!(store.metric_fields("nope").unwrap().is_empty());
    assert!(store.metric_tags("nope").unwrap().is_empty());
}

fn rooms(store: &SeriesStore) {
    let mut batch = Vec::new();
    for (room, floor, base) in [("a", "1", 10), ("b", "1", 20), ("c", "2", 30)] {
        for i in 0..3 {
            batch.push(long(
                "t",
                &[("room", room), ("floor", floor)],
                1_000 * (i + 1),
                base + i,
            ));
        }
    }
    // A series without the floor tag.
    batch.push(long("t", &[("room", "d")], 1_000, 100));
    store.write_points(&batch).unwrap();
}

pub fn tag_filter_selects_series(store: &SeriesStore) {
    rooms(store);
    let mut q = query("t");
    q.tag_filter = BTreeMap::from([("room".into(), vec!["a".into(), "c".into()])]);
    q.aggregators = vec![agg(AggregatorKind::Sum, None, None)];
    let r = store.query_points(&q).unwrap();
    assert_eq!(
        series_of(&r),
        vec![(1_000, Some((10 + 11 + 12 + 30 + 31 + 32) as f64))]
    );
    // Two keys: both must match; a series lacking a filtered key does not match.
    q.tag_filter = BTreeMap::from([
        ("room".into(), vec!["a".into(), "d".into()]),
        ("floor".into(), vec!["1".into()]),
    ]);
    let r = store.query_points(&q).unwrap();
    assert_eq!(series_of(&r), vec![(1_000, Some(33.0))]);
    q.tag_filter = BTreeMap::from([("room".into(), vec!["zz".into()])]);
    assert!(store.query_points(&q).unwrap().groups.is_empty());
}

pub fn group_by_makes_one_group_per_tag_value(store: &SeriesStore) {
    rooms(store);
    let mut q = query("t");
    q.group_by = vec!["floor".into()];
    q.aggregators = vec![agg(AggregatorKind::Sum, None, None)];
    let r = store.query_points(&q).unwrap();
    // The series without a floor tag makes a group of its own with no tag.
    type Group = (Tags, Vec<(i64, Option<f64>)>);
    let groups: Vec<Group> = r
        .groups
        .iter()
        .map(|g| {
            (
                g.tags.clone(),
                g.values
                    .iter()
                    .map(|v| {
                        (
                            v.timestamp,
                            v.values[0].as_ref().and_then(PointValue::as_f64),
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            (tags(&[]), vec![(1_000, Some(100.0))]),
            (
                tags(&[("floor", "1")]),
                vec![(1_000, Some(10.0 + 11.0 + 12.0 + 20.0 + 21.0 + 22.0))]
            ),
            (tags(&[("floor", "2")]), vec![(1_000, Some(93.0))]),
        ]
    );
    // Without aggregator, a group merges its series by time: one row per timestamp
    // while the series' values do not collide... and a row per value when they do.
    let mut q = query("t");
    q.group_by = vec!["floor".into()];
    q.tag_filter = BTreeMap::from([("floor".into(), vec!["1".into()])]);
    let r = store.query_points(&q).unwrap();
    assert_eq!(r.groups.len(), 1);
    assert_eq!(
        series_of(&r),
        vec![
            (1_000, Some(10.0)),
            (1_000, Some(20.0)),
            (2_000, Some(11.0)),
            (2_000, Some(21.0)),
            (3_000, Some(12.0)),
            (3_000, Some(22.0))
        ]
    );
    assert_eq!(r.raw_count, 6);
}

fn window_data(store: &SeriesStore) {
    // Window [0, 10s): 1, 2, 3, 10 at 1s, 2s, 3s, 4s; window [10s, 20s): 5 at 15s;
    // window [20s, 30s): nothing; [30s, 40s): 7, 9 at 30s, 39s.
    let pts = [
        (1_000, 1),
        (2_000, 2),
        (3_000, 3),
        (4_000, 10),
        (15_000, 5),
        (30_000, 7),
        (39_000, 9),
    ];
    store
        .write_points(
            &pts.iter()
                .map(|(t, v)| long("w", &[("s", "x")], *t, *v))
                .collect::<Vec<_>>(),
        )
        .unwrap();
}

fn run(store: &SeriesStore, aggs: Vec<Aggregator>) -> Vec<(i64, Option<f64>)> {
    let mut q = query("w");
    q.aggregators = aggs;
    series_of(&store.query_points(&q).unwrap())
}

pub fn every_aggregator_gives_exact_numbers(store: &SeriesStore) {
    use AggregatorKind as K;
    window_data(store);
    let s = Some(10_000);
    assert_eq!(
        run(store, vec![agg(K::Avg, s, None)]),
        vec![(0, Some(4.0)), (10_000, Some(5.0)), (30_000, Some(8.0))]
    );
    assert_eq!(
        run(store, vec![agg(K::Sum, s, None)]),
        vec![(0, Some(16.0)), (10_000, Some(5.0)), (30_000, Some(16.0))]
    );
    assert_eq!(
        run(store, vec![agg(K::Count, s, None)]),
        vec![(0, Some(4.0)), (10_000, Some(1.0)), (30_000, Some(2.0))]
    );
    assert_eq!(
        run(store, vec![agg(K::First, s, None)]),
        vec![(0, Some(1.0)), (10_000, Some(5.0)), (30_000, Some(7.0))]
    );
    assert_eq!(
        run(store, vec![agg(K::Last, s, None)]),
        vec![(0, Some(10.0)), (10_000, Some(5.0)), (30_000, Some(9.0))]
    );
    assert_eq!(
        run(store, vec![agg(K::Max, s, None)]),
        vec![(0, Some(10.0)), (10_000, Some(5.0)), (30_000, Some(9.0))]
    );
    assert_eq!(
        run(store, vec![agg(K::Min, s, None)]),
        vec![(0, Some(1.0)), (10_000, Some(5.0)), (30_000, Some(7.0))]
    );
    // Sample standard deviation: [1,2,3,10] → mean 4, squares 9+4+1+36 = 50, /3.
    let dev = run(store, vec![agg(K::Dev, s, None)]);
    assert_eq!(dev.len(), 3);
    assert!(
        (dev[0].1.unwrap() - (50.0f64 / 3.0).sqrt()).abs() < 1e-12,
        "{dev:?}"
    );
    assert_eq!(dev[1], (10_000, Some(0.0)));
    assert!((dev[2].1.unwrap() - 2.0f64.sqrt()).abs() < 1e-12);
    // Percentile 50 of [1,2,3,10] = 2.5 (linear between ranks); of [7, 9]: 8.
    assert_eq!(
        run(store, vec![agg(K::Percentile, s, Some(50.0))]),
        vec![(0, Some(2.5)), (10_000, Some(5.0)), (30_000, Some(8.0))]
    );
    assert_eq!(
        run(store, vec![agg(K::Percentile, s, Some(100.0))])[0],
        (0, Some(10.0))
    );
    // Least squares through (30s, 7), (39s, 9), evaluated at the window start 30s: 7.
    let ls = run(store, vec![agg(K::LeastSquares, s, None)]);
    assert!((ls[2].1.unwrap() - 7.0).abs() < 1e-9, "{ls:?}");
    assert_eq!(ls[1], (10_000, Some(5.0)));
    // Whole range as one window: timestamp = the first point's, except for Last: the time
    // of the point it selects (as First's is).
    assert_eq!(
        run(store, vec![agg(K::Sum, None, None)]),
        vec![(1_000, Some(37.0))]
    );
    assert_eq!(
        run(store, vec![agg(K::Last, None, None)]),
        vec![(39_000, Some(9.0))]
    );
    assert_eq!(
        run(store, vec![agg(K::First, None, None)]),
        vec![(1_000, Some(1.0))]
    );
    assert_eq!(
        run(store, vec![agg(K::Count, None, None)]),
        vec![(1_000, Some(7.0))]
    );
    // Point-wise.
    assert_eq!(
        run(store, vec![agg(K::Diff, None, None)]),
        vec![
            (2_000, Some(1.0)),
            (3_000, Some(1.0)),
            (4_000, Some(7.0)),
            (15_000, Some(-5.0)),
            (30_000, Some(2.0)),
            (39_000, Some(2.0))
        ]
    );
    assert_eq!(
        run(store, vec![agg(K::Div, None, Some(2.0))])[0..2],
        [(1_000, Some(0.5)), (2_000, Some(1.0))]
    );
    assert_eq!(
        run(store, vec![agg(K::Multiply, None, Some(3.0))])[6],
        (39_000, Some(27.0))
    );
    // Rate per second: (10 - 3) / 1 s = 7; (5 - 10) / 11 s; per 10 s sampling: ×10.
    let rate = run(store, vec![agg(K::Rate, None, None)]);
    assert_eq!(rate[2], (4_000, Some(7.0)));
    assert!((rate[3].1.unwrap() - (-5.0 / 11.0)).abs() < 1e-12);
    assert_eq!(
        run(store, vec![agg(K::Rate, s, None)])[2],
        (4_000, Some(70.0))
    );
    // Chained: Sum per 10 s, then Diff between windows.
    assert_eq!(
        run(store, vec![agg(K::Sum, s, None), agg(K::Diff, None, None)]),
        vec![(10_000, Some(-11.0)), (30_000, Some(11.0))]
    );
    // Longs stay whole where they can.
    let mut q = query("w");
    q.aggregators = vec![agg(K::Sum, s, None)];
    assert_eq!(
        values(&store.query_points(&q).unwrap())[0].1,
        Some(PointValue::Long(16))
    );
}

pub fn bad_aggregator_params_are_refused(store: &SeriesStore) {
    use AggregatorKind as K;
    window_data(store);
    for a in [
        agg(K::Div, None, Some(0.0)),
        agg(K::Div, None, None),
        agg(K::Percentile, None, Some(101.0)),
        agg(K::Percentile, None, None),
        agg(K::Avg, Some(0), None),
        agg(K::Multiply, None, None),
    ] {
        let mut q = query("w");
        q.aggregators = vec![a.clone()];
        invalid_query(store.query_points(&q));
    }
    // Text goes through Count, First, Last only.
    store
        .write_points(&[
            pt("txt", "value", &[], 1_000, PointValue::Text("b".into())),
            pt("txt", "value", &[], 2_000, PointValue::Text("a".into())),
        ])
        .unwrap();
    let mut q = query("txt");
    q.aggregators = vec![agg(K::Avg, None, None)];
    assert!(invalid_query(store.query_points(&q)).contains("strings"));
    q.aggregators = vec![agg(K::Last, None, None)];
    assert_eq!(
        values(&store.query_points(&q).unwrap()),
        vec![(2_000, Some(PointValue::Text("a".into())))]
    );
    q.aggregators = vec![agg(K::Count, None, None), agg(K::Multiply, None, Some(2.0))];
    assert_eq!(
        series_of(&store.query_points(&q).unwrap()),
        vec![(1_000, Some(4.0))]
    );
    // start after end
    let mut q = query("w");
    q.start = 10;
    q.end = 5;
    invalid_query(store.query_points(&q));
}

pub fn sampling_windows_are_aligned_on_the_epoch(store: &SeriesStore) {
    window_data(store);
    let mut q = query("w");
    q.start = 2_500; // not aligned: windows are still multiples of the sampling
    q.end = 30_000;
    q.aggregators = vec![agg(AggregatorKind::Count, Some(4_000), None)];
    let r = store.query_points(&q).unwrap();
    // 3s, 4s in [0, 4s) / [4s, 8s); 15s in [12s, 16s); 30s in [28s, 32s)
    assert_eq!(
        series_of(&r),
        vec![
            (0, Some(1.0)),
            (4_000, Some(1.0)),
            (12_000, Some(1.0)),
            (28_000, Some(1.0))
        ]
    );
    assert_eq!(r.raw_count, 4);
}

pub fn value_filter_drops_raw_values(store: &SeriesStore) {
    window_data(store);
    let mut q = query("w");
    q.value_filter = Some(ValueFilter {
        op: CompareOp::Ge,
        value: PointValue::Long(5),
    });
    let r = store.query_points(&q).unwrap();
    assert_eq!(
        series_of(&r),
        vec![
            (4_000, Some(10.0)),
            (15_000, Some(5.0)),
            (30_000, Some(7.0)),
            (39_000, Some(9.0))
        ]
    );
    q.aggregators = vec![agg(AggregatorKind::Count, None, None)];
    assert_eq!(
        series_of(&store.query_points(&q).unwrap()),
        vec![(4_000, Some(4.0))]
    );
    q.value_filter = Some(ValueFilter {
        op: CompareOp::Lt,
        value: PointValue::Double(2.5),
    });
    assert_eq!(
        series_of(&store.query_points(&q).unwrap()),
        vec![(1_000, Some(2.0))]
    );
    q.value_filter = Some(ValueFilter {
        op: CompareOp::Eq,
        value: PointValue::Long(3),
    });
    q.aggregators.clear();
    assert_eq!(
        series_of(&store.query_points(&q).unwrap()),
        vec![(3_000, Some(3.0))]
    );
}

pub fn rows_hold_one_value_per_field_and_the_asked_tags(store: &SeriesStore) {
    let t = [("dev", "a"), ("site", "x")];
    store
        .write_points(&[
            pt("env", "temp", &t, 1_000, PointValue::Double(20.5)),
            pt("env", "hum", &t, 1_000, PointValue::Long(40)),
            pt("env", "temp", &t, 2_000, PointValue::Double(21.0)),
            pt("env", "hum", &t, 3_000, PointValue::Long(41)),
            pt(
                "env",
                "temp",
                &[("dev", "b")],
                2_000,
                PointValue::Double(30.0),
            ),
        ])
        .unwrap();
    let mut q = query("env");
    q.fields = vec!["temp".into(), "hum".into(), "nope".into()];
    q.tags = vec!["dev".into(), "site".into()];
    let r = store.query_points(&q).unwrap();
    assert_eq!(
        r.fields,
        vec!["temp".to_owned(), "hum".to_owned(), "nope".to_owned()]
    );
    let rows: Vec<_> = r.groups[0]
        .values
        .iter()
        .map(|v| (v.timestamp, v.values.clone(), v.tags.clone()))
        .collect();
    let a = vec![Some("a".to_owned()), Some("x".to_owned())];
    let b = vec![Some("b".to_owned()), None];
    assert_eq!(
        rows,
        vec![
            (
                1_000,
                vec![
                    Some(PointValue::Double(20.5)),
                    Some(PointValue::Long(40)),
                    None
                ],
                a.clone()
            ),
            (
                2_000,
                vec![Some(PointValue::Double(21.0)), None, None],
                a.clone()
            ),
            (2_000, vec![Some(PointValue::Double(30.0)), None, None], b),
            (3_000, vec![None, Some(PointValue::Long(41)), None], a),
        ]
    );
    // Aggregated per field.
    q.aggregators = vec![agg(AggregatorKind::Max, None, None)];
    q.tags.clear();
    let r = store.query_points(&q).unwrap();
    assert_eq!(r.groups[0].values.len(), 1);
    assert_eq!(
        r.groups[0].values[0].values,
        vec![
            Some(PointValue::Double(30.0)),
            Some(PointValue::Long(41)),
            None
        ]
    );
}

pub fn desc_order_reverses_each_group(store: &SeriesStore) {
    window_data(store);
    let mut q = query("w");
    q.order = PointOrder::Desc;
    let got: Vec<i64> = series_of(&store.query_points(&q).unwrap())
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(
        got,
        vec![39_000, 30_000, 15_000, 4_000, 3_000, 2_000, 1_000]
    );
    q.aggregators = vec![agg(AggregatorKind::Sum, Some(10_000), None)];
    assert_eq!(
        series_of(&store.query_points(&q).unwrap()),
        vec![(30_000, Some(16.0)), (10_000, Some(5.0)), (0, Some(16.0))]
    );
}

fn many(store: &SeriesStore) -> usize {
    // 3 series in 2 groups, 250 points each at 1 s steps, colliding timestamps.
    let mut batch = Vec::new();
    for (dev, grp) in [("a", "g1"), ("b", "g1"), ("c", "g2")] {
        for i in 0..250 {
            batch.push(long("p", &[("dev", dev), ("grp", grp)], i * 1_000, i));
        }
    }
    store.write_points(&batch).unwrap();
    batch.len()
}

pub fn paging_returns_every_raw_row_once(store: &SeriesStore) {
    let total = many(store);
    for order in [PointOrder::Asc, PointOrder::Desc] {
        for group_by in [vec![], vec!["grp".to_owned()]] {
            let mut q = query("p");
            q.order = order;
            q.group_by = group_by.clone();
            q.limit = Some(1_000_000);
            let (whole, pages) = all_pages(store, &q);
            assert_eq!(pages, 1);
            assert_eq!(whole.len(), total);
            for limit in [1, 7, 100, 749] {
                q.limit = Some(limit);
                let (paged, pages) = all_pages(store, &q);
                same_rows(
                    &paged,
                    &whole,
                    &format!("order {order:?}, group_by {group_by:?}, limit {limit}"),
                );
                assert_eq!(pages, total.div_ceil(limit));
            }
        }
    }
    // With the query's tags (sub-groups merged in a group) and a value filter.
    for order in [PointOrder::Asc, PointOrder::Desc] {
        let mut q = query("p");
        q.tags = vec!["dev".into()];
        q.order = order;
        q.value_filter = Some(ValueFilter {
            op: CompareOp::Ne,
            value: PointValue::Long(10),
        });
        q.limit = Some(1_000_000);
        let (whole, _) = all_pages(store, &q);
        assert_eq!(whole.len(), total - 3);
        // Rows of one timestamp come in sub-group order, each with its series' tag.
        let first: Vec<Option<String>> = whole.iter().take(3).map(|r| r.3[0].clone()).collect();
        assert_eq!(
            first,
            vec![Some("a".into()), Some("b".into()), Some("c".into())]
        );
        q.limit = Some(13);
        same_rows(
            &all_pages(store, &q).0,
            &whole,
            &format!("tags and filter, {order:?}"),
        );
    }
}

pub fn paging_returns_every_aggregated_row_once(store: &SeriesStore) {
    use AggregatorKind as K;
    many(store);
    let s = Some(7_000);
    let pipelines = vec![
        vec![agg(K::Avg, s, None)],
        vec![agg(K::Diff, None, None)],
        vec![agg(K::Rate, None, None)],
        vec![agg(K::Sum, s, None), agg(K::Diff, None, None)],
        vec![
            agg(K::Diff, None, None),
            agg(K::Sum, Some(3_000), None),
            agg(K::Rate, Some(5_000), None),
        ],
        vec![
            agg(K::Max, Some(5_000), None),
            agg(K::Min, Some(11_000), None),
        ],
        vec![agg(K::Last, None, None)],
        vec![agg(K::Count, None, None), agg(K::Multiply, None, Some(2.0))],
    ];
    for aggs in pipelines {
        for order in [PointOrder::Asc, PointOrder::Desc] {
            // no groups; a group per series; groups split into sub-groups by `tags`
            for (group_by, tags) in [
                (vec![], vec![]),
                (vec!["dev".to_owned()], vec![]),
                (vec!["grp".to_owned()], vec!["dev".to_owned()]),
            ] {
                let mut q = query("p");
                q.aggregators = aggs.clone();
                q.order = order;
                q.group_by = group_by.clone();
                q.tags = tags.clone();
                q.value_filter = Some(ValueFilter {
                    op: CompareOp::Ne,
                    value: PointValue::Long(100),
                });
                q.limit = Some(1_000_000);
                let (whole, pages) = all_pages(store, &q);
                assert_eq!(pages, 1);
                assert!(!whole.is_empty());
                for limit in [1, 4, 9] {
                    q.limit = Some(limit);
                    let (paged, _) = all_pages(store, &q);
                    same_rows(
                        &paged,
                        &whole,
                        &format!("{aggs:?} {order:?} {group_by:?} {tags:?} limit {limit}"),
                    );
                }
            }
        }
    }
}

pub fn a_garbage_marker_is_refused(store: &SeriesStore) {
    window_data(store);
    for bad in ["x", "zz", "00", "5b5d", "not a marker at all"] {
        let mut q = query("w");
        q.marker = Some(bad.into());
        invalid_query(store.query_points(&q));
    }
    // A marker of a query with another group-by does not fit.
    let mut q = query("w");
    q.limit = Some(1);
    let m = store.query_points(&q).unwrap().next_marker.unwrap();
    q.group_by = vec!["s".into()];
    q.marker = Some(m);
    invalid_query(store.query_points(&q));
}

pub fn export_streams_every_point(store: &SeriesStore) {
    let total = many(store);
    store
        .write_points(&[pt("q", "f", &[], 5, PointValue::Text("t".into()))])
        .unwrap();
    let mut seen = Vec::new();
    let n = store
        .export_points(&[], i64::MIN, i64::MAX, &mut |p| {
            seen.push(p);
            true
        })
        .unwrap();
    assert_eq!(n as usize, total + 1);
    assert_eq!(seen.len(), total + 1);
    // Metric by metric, series by series, in time order.
    assert_eq!(seen[0].metric, "p");
    assert_eq!(seen[total].metric, "q");
    assert!(seen[..250].iter().all(|p| p.tags["dev"] == "a"));
    assert!(
        seen[..250]
            .windows(2)
            .all(|w| w[0].timestamp < w[1].timestamp)
    );
    // A time range and one metric.
    let n = store
        .export_points(&["p".into()], 10_000, 19_000, &mut |_| true)
        .unwrap();
    assert_eq!(n, 30);
    // Stopping early.
    let mut k = 0;
    let n = store
        .export_points(&[], i64::MIN, i64::MAX, &mut |_| {
            k += 1;
            k < 100
        })
        .unwrap();
    assert_eq!(n, 100);
}

pub fn series_longer_than_a_read_page(store: &SeriesStore) {
    // More points per series than one read of a cursor (2,048), two series interleaved.
    let mut batch = Vec::new();
    for i in 0..5_000 {
        batch.push(long("long", &[("dev", "a")], i * 10, i));
        batch.push(long("long", &[("dev", "b")], i * 10 + 5, -i));
    }
    store.write_points(&batch).unwrap();
    let mut q = query("long");
    q.limit = Some(10_000);
    let r = store.query_points(&q).unwrap();
    assert!(!r.truncated);
    let ts: Vec<i64> = series_of(&r).iter().map(|r| r.0).collect();
    assert_eq!(ts.len(), 10_000);
    assert!(
        ts.windows(2).all(|w| w[0] + 5 == w[1]),
        "merged in time order"
    );
    q.order = PointOrder::Desc;
    let desc: Vec<i64> = series_of(&store.query_points(&q).unwrap())
        .iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(desc, ts.iter().rev().copied().collect::<Vec<_>>());
    q.order = PointOrder::Asc;
    q.aggregators = vec![agg(AggregatorKind::Sum, Some(10_000), None)];
    // Each 10 s window holds 1,000 points of each series: a's i and b's -i cancel out.
    assert_eq!(
        series_of(&store.query_points(&q).unwrap()),
        (0..5).map(|w| (w * 10_000, Some(0.0))).collect::<Vec<_>>()
    );
    q.aggregators = vec![agg(AggregatorKind::Count, None, None)];
    assert_eq!(
        series_of(&store.query_points(&q).unwrap()),
        vec![(0, Some(10_000.0))]
    );
    assert_eq!(
        store
            .export_points(&["long".into()], i64::MIN, i64::MAX, &mut |_| true)
            .unwrap(),
        10_000
    );
    // Diff across pages of 3,000 rows: resumes from the point before each page.
    q.aggregators = vec![agg(AggregatorKind::Diff, None, None)];
    q.tag_filter = BTreeMap::from([("dev".into(), vec!["a".into()])]);
    q.limit = Some(3_000);
    let (rows, pages) = all_pages(store, &q);
    assert_eq!(pages, 2);
    assert_eq!(rows.len(), 4_999);
    assert!(rows.iter().all(|r| r.2 == vec![Some(PointValue::Long(1))]));
}

pub fn last_of_many_series_by_group(store: &SeriesStore) {
    let mut batch = Vec::new();
    for dev in 0..50 {
        for i in 0..20 {
            batch.push(long(
                "many",
                &[("dev", &format!("d{dev:02}"))],
                i * 1_000,
                dev * 100 + i,
            ));
        }
    }
    store.write_points(&batch).unwrap();
    let mut q = query("many");
    q.group_by = vec!["dev".into()];
    q.aggregators = vec![agg(AggregatorKind::Last, None, None)];
    let r = store.query_points(&q).unwrap();
    assert_eq!(r.groups.len(), 50);
    for (i, g) in r.groups.iter().enumerate() {
        assert_eq!(g.tags["dev"], format!("d{i:02}"));
        assert_eq!(g.values.len(), 1);
        assert_eq!(
            g.values[0].values[0],
            Some(PointValue::Long(i as i64 * 100 + 19))
        );
        // The time of the last point, not of the range's first.
        assert_eq!(g.values[0].timestamp, 19_000);
    }
    // By seeks: one point read per series, not twenty.
    assert_eq!(r.raw_count, 50);
    // Paged by 7 groups (markers), every row once; newest first too; and First.
    for (kind, order) in [
        (AggregatorKind::Last, PointOrder::Asc),
        (AggregatorKind::Last, PointOrder::Desc),
        (AggregatorKind::First, PointOrder::Asc),
    ] {
        let q = PointQuery {
            aggregators: vec![agg(kind, None, None)],
            order,
            ..q.clone()
        };
        let (whole, _) = all_pages(store, &q);
        assert_eq!(whole.len(), 50);
        let ts = if kind == AggregatorKind::Last {
            19_000
        } else {
            0
        };
        assert!(whole.iter().all(|r| r.1 == ts), "{whole:?}");
        let (paged, pages) = all_pages(
            store,
            &PointQuery {
                limit: Some(7),
                ..q.clone()
            },
        );
        assert_eq!(pages, 8);
        same_rows(&paged, &whole, "First/Last paged by 7");
    }
}

// ---------------------------------------------------------------------------------------
// SQLite

fn options() -> SeriesOptions {
    SeriesOptions {
        synchronous: Synchronous::Normal,
        ..SeriesOptions::default()
    }
}

fn with_sqlite(check: fn(&SeriesStore)) {
    let dir = tempfile::tempdir().unwrap();
    let store = SeriesStore::open(&dir.path().join("series.db"), options()).unwrap();
    check(&store);
}

macro_rules! sqlite_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::with_sqlite(super::$name);
                }
            )*
        }
    };
}

sqlite_tests!(
    same_key_overwrites,
    a_bad_point_stores_nothing_of_its_batch,
    a_type_conflict_is_refused,
    catalog_lists_metrics_fields_and_tags,
    tag_filter_selects_series,
    group_by_makes_one_group_per_tag_value,
    every_aggregator_gives_exact_numbers,
    bad_aggregator_params_are_refused,
    sampling_windows_are_aligned_on_the_epoch,
    value_filter_drops_raw_values,
    rows_hold_one_value_per_field_and_the_asked_tags,
    desc_order_reverses_each_group,
    paging_returns_every_raw_row_once,
    paging_returns_every_aggregated_row_once,
    a_garbage_marker_is_refused,
    export_streams_every_point,
    last_of_many_series_by_group,
    series_longer_than_a_read_page,
    engine_aggregation_gives_the_scans_rows,
);

#[test]
fn points_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("series.db");
    {
        let store = SeriesStore::open(&path, options()).unwrap();
        store
            .write_points(&[long("m", &[("k", "v")], 1_000, 1)])
            .unwrap();
    }
    let store = SeriesStore::open(&path, options()).unwrap();
    assert_eq!(
        values(&store.query_points(&query("m")).unwrap()),
        vec![(1_000, Some(PointValue::Long(1)))]
    );
    // The reopened writer finds the stored ids: same key still overwrites, types still hold.
    store
        .write_points(&[long("m", &[("k", "v")], 1_000, 2)])
        .unwrap();
    assert_eq!(
        values(&store.query_points(&query("m")).unwrap()),
        vec![(1_000, Some(PointValue::Long(2)))]
    );
    assert!(
        store
            .write_points(&[pt("m", "value", &[], 2, PointValue::Text("x".into()))])
            .is_err()
    );
}

#[test]
fn retention_prunes_old_points() {
    let dir = tempfile::tempdir().unwrap();
    let store = SeriesStore::open(
        &dir.path().join("series.db"),
        SeriesOptions {
            retention: Some(std::time::Duration::from_secs(10)),
            prune_chunk_rows: 3,
            ..options()
        },
    )
    .unwrap();
    let batch: Vec<_> = (0..20).map(|i| long("m", &[], i * 1_000, i)).collect();
    store.write_points(&batch).unwrap();
    // now = 20 s: keep ts >= 10 s
    assert_eq!(store.prune(20_000).unwrap(), 10);
    let r = store.query_points(&query("m")).unwrap();
    assert_eq!(series_of(&r).first().map(|r| r.0), Some(10_000));
    assert_eq!(r.raw_count, 10);
}

#[test]
fn timestamps_in_seconds_become_ms() {
    assert_eq!(timestamp_ms(1_700_000_000), 1_700_000_000_000);
    assert_eq!(timestamp_ms(1_700_000_000_123), 1_700_000_000_123);
    assert_eq!(timestamp_ms(0), 0);
    let dir = tempfile::tempdir().unwrap();
    let store = SeriesStore::open(&dir.path().join("series.db"), options()).unwrap();
    store
        .write_points(&[
            long("m", &[], timestamp_ms(1_700_000_000), 1),
            long("m", &[], timestamp_ms(1_700_000_000_000), 2),
        ])
        .unwrap();
    // The same instant in s and in ms: one point.
    assert_eq!(
        values(&store.query_points(&query("m")).unwrap()),
        vec![(1_700_000_000_000, Some(PointValue::Long(2)))]
    );
}

#[test]
fn an_empty_store_answers_every_call() {
    let dir = tempfile::tempdir().unwrap();
    let store = SeriesStore::open(&dir.path().join("series.db"), options()).unwrap();
    assert!(store.metrics().unwrap().is_empty());
    assert!(store.query_points(&query("m")).unwrap().groups.is_empty());
    assert_eq!(store.export_points(&[], 0, 10, &mut |_| true).unwrap(), 0);
    assert_eq!(store.prune(0).unwrap(), 0);
    store.write_points(&[]).unwrap();
}

// ---------------------------------------------------------------------------------------
// PostgreSQL: the same checks, on one server for the whole file (cargo-nextest runs each
// test in a process of its own, so a server per test would cost a start-up each), each
// check on a store in a schema of its own.

mod pg;

/// A check of a store.
type Check = fn(&SeriesStore);

/// Runs each check on a new store of `pg`, every one even after a failure; fails naming
/// those that failed (their panic messages are printed as they happen).
fn on_postgres(pg: &pg::PgServer, checks: &[(&str, Check)]) {
    let mut failed = Vec::new();
    for (name, check) in checks {
        let started = std::time::Instant::now();
        let store = SeriesStore::connect_postgres(&pg.new_schema(), options()).unwrap();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&store))) {
            Ok(()) => eprintln!("ok {name} ({:?})", started.elapsed()),
            Err(_) => {
                eprintln!("FAILED {name}");
                failed.push(*name);
            }
        }
    }
    assert!(failed.is_empty(), "failed on PostgreSQL: {failed:?}");
}

/// `&[(name, check)]` of the named checks.
macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), $name as Check)),*]
    };
}

/// The two long paging checks (thousands of queries each) run on servers of their own, so
/// that cargo-nextest runs them beside the rest instead of after it.
#[test]
fn postgres_raw_paging_check_on_its_own_server() {
    on_postgres(
        &pg::PgServer::start(),
        checks!(paging_returns_every_raw_row_once,),
    );
}

#[test]
fn postgres_aggregated_paging_check_on_its_own_server() {
    on_postgres(
        &pg::PgServer::start(),
        checks!(paging_returns_every_aggregated_row_once,),
    );
}

#[test]
fn postgres_every_point_check_on_one_server() {
    let pg = pg::PgServer::start();
    on_postgres(
        &pg,
        checks!(
            same_key_overwrites,
            a_bad_point_stores_nothing_of_its_batch,
            a_type_conflict_is_refused,
            catalog_lists_metrics_fields_and_tags,
            tag_filter_selects_series,
            group_by_makes_one_group_per_tag_value,
            every_aggregator_gives_exact_numbers,
            bad_aggregator_params_are_refused,
            sampling_windows_are_aligned_on_the_epoch,
            value_filter_drops_raw_values,
            rows_hold_one_value_per_field_and_the_asked_tags,
            desc_order_reverses_each_group,
            a_garbage_marker_is_refused,
            export_streams_every_point,
            last_of_many_series_by_group,
            series_longer_than_a_read_page,
            engine_aggregation_gives_the_scans_rows,
        ),
    );

    // points survive a new connection: same key still overwrites, types still hold
    let url = pg.new_schema();
    {
        let store = SeriesStore::connect_postgres(&url, options()).unwrap();
        store
            .write_points(&[long("m", &[("k", "v")], 1_000, 1)])
            .unwrap();
    }
    let store = SeriesStore::connect_postgres(&url, options()).unwrap();
    store
        .write_points(&[long("m", &[("k", "v")], 1_000, 2)])
        .unwrap();
    assert_eq!(
        values(&store.query_points(&query("m")).unwrap()),
        vec![(1_000, Some(PointValue::Long(2)))]
    );
    assert!(
        store
            .write_points(&[pt("m", "value", &[], 2, PointValue::Text("x".into()))])
            .is_err()
    );

    // retention prunes old points (with the row tables)
    let store = SeriesStore::connect_postgres(
        &pg.new_schema(),
        SeriesOptions {
            retention: Some(std::time::Duration::from_secs(10)),
            prune_chunk_rows: 3,
            ..options()
        },
    )
    .unwrap();
    let batch: Vec<_> = (0..20).map(|i| long("m", &[], i * 1_000, i)).collect();
    store.write_points(&batch).unwrap();
    assert_eq!(store.prune(20_000).unwrap(), 10);
    let r = store.query_points(&query("m")).unwrap();
    assert_eq!(series_of(&r).first().map(|r| r.0), Some(10_000));
    assert_eq!(r.raw_count, 10);

    // an empty store answers every call
    let store = SeriesStore::connect_postgres(&pg.new_schema(), options()).unwrap();
    assert!(store.metrics().unwrap().is_empty());
    assert!(store.query_points(&query("m")).unwrap().groups.is_empty());
    assert_eq!(store.export_points(&[], 0, 10, &mut |_| true).unwrap(), 0);
    assert_eq!(store.prune(0).unwrap(), 0);
    store.write_points(&[]).unwrap();
}

/// The PostgreSQL list above names every check the SQLite tests run (a check added to
/// `sqlite_tests!` and not there fails here).
#[test]
fn postgres_runs_every_check_sqlite_runs() {
    let source = include_str!("points.rs");
    let list = |start: &str, end: &str| -> Vec<String> {
        let from = source.find(start).expect(start) + start.len();
        let to = from + source[from..].find(end).expect(end);
        source[from..to]
            .split(',')
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect()
    };
    let sqlite = list("sqlite_tests!(\n", ");");
    // every list of checks run on PostgreSQL
    let before_this_test = &source[..source.find("fn postgres_runs_every_check").expect("fn")];
    let postgres: Vec<String> = before_this_test
        .split("checks!(")
        .skip(1)
        .flat_map(|rest| {
            rest[..rest.find(')').expect(")")]
                .split(',')
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect::<Vec<_>>()
        })
        .collect();
    let missing: Vec<&String> = sqlite.iter().filter(|n| !postgres.contains(n)).collect();
    assert!(!sqlite.is_empty());
    assert!(missing.is_empty(), "not run on PostgreSQL: {missing:?}");
}

/// Tag values longer than a PostgreSQL index entry (~2.7 KB) are stored, listed and
/// filtered on as any other (SQLite has no such limit; PostgreSQL indexes their md5).
fn long_tag_values_are_stored_and_filtered(store: &SeriesStore) {
    // pseudo-random text: it does not compress below the limit
    let noise = |seed: u64| -> String {
        let mut x = seed;
        (0..10_000)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                char::from(b'a' + (x >> 59) as u8 % 26)
            })
            .collect()
    };
    let (long_a, long_b) = (noise(1), noise(2));
    store
        .write_points(&[
            long("m", &[("blob", &long_a)], 1_000, 1),
            long("m", &[("blob", &long_b)], 1_000, 2),
            long("m", &[("blob", &long_a)], 2_000, 3),
        ])
        .unwrap();
    assert_eq!(
        store.metric_tags("m").unwrap()["blob"],
        [long_a.clone(), long_b]
    );
    let mut q = query("m");
    q.tag_filter = BTreeMap::from([("blob".to_owned(), vec![long_a])]);
    assert_eq!(
        series_of(&store.query_points(&q).unwrap()),
        [(1_000, Some(1.0)), (2_000, Some(3.0))]
    );
}

#[test]
fn long_tag_values_on_sqlite() {
    with_sqlite(long_tag_values_are_stored_and_filtered);
}

#[test]
fn long_tag_values_on_postgres() {
    on_postgres(
        &pg::PgServer::start(),
        checks!(long_tag_values_are_stored_and_filtered,),
    );
}
