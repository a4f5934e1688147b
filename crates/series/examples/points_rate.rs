//! Measures datapoints: write throughput, disk bytes per point (one series of 1M points;
//! 100 series of 10k points), the time of a 1-minute Avg over 1M points, a raw page, and
//! the last value of each of 1,000 series. The figures in `docs/series.md` come from this.
//!
//! ```sh
//! cargo run --release -p midge-series --example points_rate            # in the temp folder
//! cargo run --release -p midge-series --example points_rate -- DIR     # on another disk
//! cargo run --release -p midge-series --example points_rate -- --abc [RUNS]
//! ```
//!
//! `--abc` runs only the three queries of `bench/tsdb/run` (docs/benchmarks.md, "Time series:
//! midge vs InfluxDB 1.6") on the same data shapes, on the engine (no HTTP): (a) Avg per 1
//! minute over 1,000,000 points 100 ms apart; (b) 100 series × 10,000 points, tag filter
//! region in 2 of 4, group by host, Avg per 10 minutes; (c) Last of 1,000 series × 10 points,
//! group by host; then (a) with windows of 1 s and 100 ms (10 and 1 points a window, the
//! first 100,000 rows). It prints the median and the fastest of RUNS runs (default 21) of each;
//! with `MIDGE_SCAN=1` in the environment, Avg reads every point (no engine aggregation).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

use midge_series::points::{Aggregator, AggregatorKind, Datapoint, PointQuery, PointValue, Tags};
use midge_series::{SeriesOptions, SeriesStore, Synchronous};

const T0: i64 = 1_700_000_000_000;

fn options(sync: Synchronous) -> SeriesOptions {
    SeriesOptions {
        synchronous: sync,
        default_rows_per_query: 1_000,
        max_rows_per_query: 100_000,
        ..SeriesOptions::default()
    }
}

fn point(dev: usize, i: i64, step_ms: i64) -> Datapoint {
    let mut tags = Tags::new();
    tags.insert("dev".into(), format!("dev-{dev:04}"));
    tags.insert("site".into(), "plant-1".into());
    Datapoint {
        metric: "temperature".into(),
        field: "value".into(),
        tags,
        timestamp: T0 + i * step_ms,
        value: PointValue::Double(20.0 + (i % 100) as f64 / 10.0),
    }
}

/// Writes `series` × `per_series` points (1 s apart) in batches of `batch`, series
/// interleaved within the time order as devices send; returns points/s.
fn fill(
    store: &SeriesStore,
    series: usize,
    per_series: i64,
    batch: usize,
) -> Result<f64, Box<dyn Error>> {
    let started = Instant::now();
    let mut buf = Vec::with_capacity(batch);
    let mut n = 0u64;
    for i in 0..per_series {
        for dev in 0..series {
            buf.push(point(dev, i, 1_000));
            if buf.len() == batch {
                store.write_points(&buf)?;
                n += buf.len() as u64;
                buf.clear();
            }
        }
    }
    if !buf.is_empty() {
        store.write_points(&buf)?;
        n += buf.len() as u64;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Size of the database file after the store is closed (the WAL checkpointed into it).
fn closed_size(path: &Path) -> Result<u64, Box<dyn Error>> {
    Ok(std::fs::metadata(path)?.len())
}

fn timed<T>(
    what: &str,
    runs: usize,
    mut f: impl FnMut() -> Result<T, Box<dyn Error>>,
) -> Result<T, Box<dyn Error>> {
    let mut best = f64::MAX;
    let mut out = None;
    for _ in 0..runs {
        let started = Instant::now();
        out = Some(f()?);
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!("  {what}: {:.1} ms (best of {runs})", best * 1e3);
    out.ok_or_else(|| "no run".into())
}

/// Median and fastest of `runs` runs of `f`, printed.
fn median<T>(
    what: &str,
    runs: usize,
    mut f: impl FnMut() -> Result<T, Box<dyn Error>>,
) -> Result<T, Box<dyn Error>> {
    let mut times = Vec::with_capacity(runs);
    let mut out = None;
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        out = Some(f()?);
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let med = times.get(times.len() / 2).copied().unwrap_or_default();
    let min = times.first().copied().unwrap_or_default();
    println!("  {what}: median {med:.2} ms, fastest {min:.2} ms ({runs} runs)");
    out.ok_or_else(|| "no run".into())
}

/// A random walk like bench/tsdb's (xorshift, rounded to 2 decimals).
struct Walk(u64, f64);

impl Walk {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.1 += (self.0 % 1_000) as f64 / 10_000.0 - 0.05;
        (self.1 * 100.0).round() / 100.0
    }
}

fn tsdb_point(metric: &str, tags: &[(&str, String)], ts: i64, v: f64) -> Datapoint {
    Datapoint {
        metric: metric.into(),
        field: "value".into(),
        tags: tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        timestamp: ts,
        value: PointValue::Double(v),
    }
}

fn write_all(
    store: &SeriesStore,
    points: impl Iterator<Item = Datapoint>,
) -> Result<(), Box<dyn Error>> {
    let mut buf = Vec::with_capacity(5_000);
    for p in points {
        buf.push(p);
        if buf.len() == 5_000 {
            store.write_points(&buf)?;
            buf.clear();
        }
    }
    store.write_points(&buf)?;
    Ok(())
}

fn abc(dir: &Path, runs: usize) -> Result<(), Box<dyn Error>> {
    let t0 = T0 / 600_000 * 600_000;
    let path = dir.join("abc.db");
    let store = SeriesStore::open(&path, options(Synchronous::Normal))?;
    let started = Instant::now();
    let mut w = Walk(1, 20.0);
    write_all(
        &store,
        (0..1_000_000i64).map(|i| tsdb_point("m", &[], t0 + i * 100, w.next())),
    )?;
    let mut mb = Vec::with_capacity(1_000_000);
    for s in 0..100usize {
        let mut w = Walk(2 + s as u64, 20.0 + (s % 10) as f64);
        let tags = [
            ("host", format!("h{s:03}")),
            ("region", format!("r{}", s % 4)),
        ];
        for i in 0..10_000i64 {
            mb.push(tsdb_point("mb", &tags, t0 + i * 1_000, w.next()));
        }
    }
    write_all(&store, mb.into_iter())?;
    let mut mc = Vec::with_capacity(10_000);
    let mut w = Walk(3, 50.0);
    for s in 0..1_000usize {
        let tags = [("host", format!("c{s:04}"))];
        for i in 0..10i64 {
            mc.push(tsdb_point("mc", &tags, t0 + i * 1_000, w.next()));
        }
    }
    write_all(&store, mc.into_iter())?;
    println!(
        "data of (a), (b), (c) written in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let avg = |s: i64| Aggregator {
        kind: AggregatorKind::Avg,
        sampling_ms: Some(s),
        param: None,
    };
    let qa = PointQuery {
        metric: "m".into(),
        start: t0,
        end: t0 + 1_000_000 * 100 - 1,
        aggregators: vec![avg(60_000)],
        limit: Some(100_000),
        ..PointQuery::default()
    };
    let qb = PointQuery {
        metric: "mb".into(),
        start: t0,
        end: t0 + 10_000 * 1_000 - 1,
        tag_filter: [("region".to_owned(), vec!["r0".to_owned(), "r1".to_owned()])].into(),
        group_by: vec!["host".into()],
        aggregators: vec![avg(600_000)],
        limit: Some(100_000),
        ..PointQuery::default()
    };
    let qc = PointQuery {
        metric: "mc".into(),
        start: t0,
        end: i64::MAX,
        group_by: vec!["host".into()],
        aggregators: vec![Aggregator {
            kind: AggregatorKind::Last,
            sampling_ms: None,
            param: None,
        }],
        limit: Some(100_000),
        ..PointQuery::default()
    };
    let a_small = |s: i64| PointQuery {
        aggregators: vec![avg(s)],
        ..qa.clone()
    };
    let (qa1s, qa100) = (a_small(1_000), a_small(100));
    for (label, q) in [
        ("(a)", &qa),
        ("(b)", &qb),
        ("(c)", &qc),
        ("(a) per 1 s (10 points a window)", &qa1s),
        ("(a) per 100 ms (1 point a window)", &qa100),
    ] {
        let r = median(label, runs, || Ok(store.query_points(q)?))?;
        let rows: usize = r.groups.iter().map(|g| g.values.len()).sum();
        let first = r.groups.first().and_then(|g| g.values.first());
        println!(
            "    groups {}, rows {rows}, raw points read {}, truncated {}, first {:?}",
            r.groups.len(),
            r.raw_count,
            r.truncated,
            first.map(|f| (f.timestamp, &f.values))
        );
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    if std::env::args().nth(1).as_deref() == Some("--abc") {
        let runs = match std::env::args().nth(2) {
            Some(n) => n.parse()?,
            None => 21,
        };
        // MIDGE_SCAN=1: every point read and aggregated in Rust (as before the engine
        // aggregated), to compare.
        if std::env::var("MIDGE_SCAN").is_ok_and(|v| v == "1") {
            midge_series::points::set_engine_aggregation(false);
        }
        let dir = std::env::temp_dir().join(format!("midge-points-abc-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let out = abc(&dir, runs);
        std::fs::remove_dir_all(&dir).ok();
        return out;
    }
    let dir: PathBuf = match std::env::args().nth(1) {
        Some(d) => PathBuf::from(d),
        None => std::env::temp_dir().join(format!("midge-points-rate-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;

    // An empty store's size, to subtract.
    let empty = dir.join("empty.db");
    {
        let s = SeriesStore::open(&empty, options(Synchronous::Normal))?;
        s.write_points(&[point(0, 0, 1_000)])?;
    }
    let base = closed_size(&empty)?;

    println!("write throughput (one series, 200k points):");
    for (sync, name) in [(Synchronous::Full, "FULL"), (Synchronous::Normal, "NORMAL")] {
        for batch in [1usize, 100, 1_000, 10_000] {
            let path = dir.join(format!("w-{name}-{batch}.db"));
            let store = SeriesStore::open(&path, options(sync))?;
            let total: i64 = if batch == 1 { 2_000 } else { 200_000 };
            let rate = fill(&store, 1, total, batch)?;
            println!("  synchronous {name}, batches of {batch}: {rate:.0} points/s");
            drop(store);
            std::fs::remove_file(&path).ok();
        }
    }

    println!("one series, 1,000,000 points (1 s apart), batches of 10,000, NORMAL:");
    let one = dir.join("one.db");
    {
        let store = SeriesStore::open(&one, options(Synchronous::Normal))?;
        let rate = fill(&store, 1, 1_000_000, 10_000)?;
        println!("  write: {rate:.0} points/s");
    }
    let size = closed_size(&one)?;
    println!(
        "  file: {size} bytes, {:.1} bytes/point",
        (size - base) as f64 / 1e6
    );

    println!("100 series × 10,000 points, batches of 10,000, NORMAL:");
    let hundred = dir.join("hundred.db");
    {
        let store = SeriesStore::open(&hundred, options(Synchronous::Normal))?;
        let rate = fill(&store, 100, 10_000, 10_000)?;
        println!("  write: {rate:.0} points/s");
    }
    let size = closed_size(&hundred)?;
    println!(
        "  file: {size} bytes, {:.1} bytes/point",
        (size - base) as f64 / 1e6
    );

    println!("queries on the 100 series (1M points):");
    let store = SeriesStore::open(&hundred, options(Synchronous::Normal))?;
    let merged = PointQuery {
        metric: "temperature".into(),
        start: T0,
        end: T0 + 10_000 * 1_000,
        limit: Some(20_000),
        aggregators: vec![Aggregator {
            kind: AggregatorKind::Avg,
            sampling_ms: Some(60_000),
            param: None,
        }],
        ..PointQuery::default()
    };
    let r = timed(
        "Avg per 1 minute, all 100 series merged (167 rows)",
        3,
        || Ok(store.query_points(&merged)?),
    )?;
    println!("    raw points read {}", r.raw_count);
    let grouped = PointQuery {
        group_by: vec!["dev".into()],
        ..merged.clone()
    };
    let r = timed(
        "Avg per 1 minute, grouped by dev (100 × 167 rows)",
        3,
        || Ok(store.query_points(&grouped)?),
    )?;
    println!(
        "    groups {}, raw points read {}",
        r.groups.len(),
        r.raw_count
    );
    drop(store);

    println!("queries on the 1M-point series:");
    let store = SeriesStore::open(&one, options(Synchronous::Normal))?;
    let whole = PointQuery {
        metric: "temperature".into(),
        start: T0,
        end: T0 + 1_000_000 * 1_000,
        limit: Some(20_000),
        ..PointQuery::default()
    };
    let avg = PointQuery {
        aggregators: vec![Aggregator {
            kind: AggregatorKind::Avg,
            sampling_ms: Some(60_000),
            param: None,
        }],
        ..whole.clone()
    };
    let r = timed("Avg per 1 minute over 1M points (16,667 rows)", 3, || {
        Ok(store.query_points(&avg)?)
    })?;
    let rows: usize = r.groups.iter().map(|g| g.values.len()).sum();
    println!(
        "    rows {rows}, raw points read {}, truncated {}",
        r.raw_count, r.truncated
    );
    let max = PointQuery {
        aggregators: vec![Aggregator {
            kind: AggregatorKind::Max,
            sampling_ms: None,
            param: None,
        }],
        ..whole.clone()
    };
    timed("Max over 1M points (one window)", 3, || {
        Ok(store.query_points(&max)?)
    })?;
    let raw = PointQuery {
        limit: Some(1_000),
        ..whole.clone()
    };
    let r = timed("raw, first page of 1,000", 5, || {
        Ok(store.query_points(&raw)?)
    })?;
    let next = PointQuery {
        marker: r.next_marker.clone(),
        ..raw.clone()
    };
    timed("raw, a next page of 1,000", 5, || {
        Ok(store.query_points(&next)?)
    })?;
    let mut pages = 0;
    let mut rows = 0usize;
    let mut q = PointQuery {
        limit: Some(10_000),
        ..avg.clone()
    };
    timed(
        "Avg per 1 minute, paged by 10,000 rows (all pages)",
        1,
        || {
            loop {
                let r = store.query_points(&q)?;
                pages += 1;
                rows += r.groups.iter().map(|g| g.values.len()).sum::<usize>();
                match r.next_marker {
                    Some(m) => q.marker = Some(m),
                    None => return Ok(()),
                }
            }
        },
    )?;
    println!("    {pages} pages, {rows} rows");
    let (mut pages, mut rows) = (0, 0usize);
    let mut q = PointQuery {
        limit: Some(1_000),
        order: midge_series::points::PointOrder::Desc,
        ..avg.clone()
    };
    timed(
        "Avg per 1 minute, newest first, paged by 1,000 rows (all pages)",
        1,
        || loop {
            let r = store.query_points(&q)?;
            pages += 1;
            rows += r.groups.iter().map(|g| g.values.len()).sum::<usize>();
            match r.next_marker {
                Some(m) => q.marker = Some(m),
                None => return Ok(()),
            }
        },
    )?;
    println!("    {pages} pages, {rows} rows");
    drop(store);

    println!("1,000 series × 100 points: last value of each:");
    let many = dir.join("many.db");
    let store = SeriesStore::open(&many, options(Synchronous::Normal))?;
    fill(&store, 1_000, 100, 10_000)?;
    let last = PointQuery {
        metric: "temperature".into(),
        start: 0,
        end: i64::MAX,
        group_by: vec!["dev".into()],
        aggregators: vec![Aggregator {
            kind: AggregatorKind::Last,
            sampling_ms: None,
            param: None,
        }],
        limit: Some(1_000),
        ..PointQuery::default()
    };
    let r = timed("Last, grouped by dev (1,000 groups)", 5, || {
        Ok(store.query_points(&last)?)
    })?;
    println!(
        "    groups {}, raw points read {}, truncated {}",
        r.groups.len(),
        r.raw_count,
        r.truncated
    );
    drop(store);

    if std::env::args().nth(1).is_none() {
        std::fs::remove_dir_all(&dir).ok();
    }
    Ok(())
}
