//! Measures datapoints: write throughput, disk bytes per point (one series of 1M points;
//! 100 series of 10k points), the time of a 1-minute Avg over 1M points, a raw page, and
//! the last value of each of 1,000 series. The figures in `docs/series.md` come from this.
//!
//! ```sh
//! cargo run --release -p midge-series --example points_rate            # in the temp folder
//! cargo run --release -p midge-series --example points_rate -- DIR     # on another disk
//! ```

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

fn main() -> Result<(), Box<dyn Error>> {
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
