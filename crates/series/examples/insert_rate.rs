//! Measures insert throughput (batches of 1, 100 and 1000 rows; synchronous FULL and
//! NORMAL) and the time of typical queries on a table of a million rows. The figures in
//! `docs/series.md` come from this.
//!
//! ```sh
//! cargo run --release -p midge-series --example insert_rate            # in the temp folder
//! cargo run --release -p midge-series --example insert_rate -- DIR     # on another disk
//! cargo run --release -p midge-series --example insert_rate -- DIR 3   # 3 s per case
//! ```

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

use midge_series::{
    Aggregate, JsonObject, Row, RowsQuery, SeriesOptions, SeriesQuery, SeriesStore, Synchronous,
};
use serde_json::json;

fn data(i: i64) -> JsonObject {
    let v = json!({
        "temp": 20.0 + (i % 100) as f64 / 10.0,
        "hum": 40 + i % 20,
        "battery": "3.7",
        "ok": true
    });
    match v {
        serde_json::Value::Object(m) => m,
        _ => JsonObject::new(),
    }
}

fn make_rows(start: i64, n: usize) -> Vec<Row> {
    (0..n as i64)
        .map(|k| {
            let i = start + k;
            Row::new(
                1_700_000_000_000 + i * 100,
                format!("sensors/dev-{}/env", i % 100),
                format!("dev-{}", i % 100),
                data(i),
            )
        })
        .collect()
}

/// Time this thread has spent on a CPU, in ns (Linux; `None` elsewhere). Unlike wall time
/// it does not count waiting for an fsync or for a CPU that other processes hold.
fn cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Inserts batches of `batch` rows for about `secs`; returns (rows/s, batches/s, CPU µs
/// per row).
fn insert_rate(
    dir: &Path,
    sync: Synchronous,
    batch: usize,
    secs: f64,
) -> Result<(f64, f64, f64), Box<dyn Error>> {
    let path = dir.join(format!("insert-{sync:?}-{batch}.db"));
    let store = SeriesStore::open(
        &path,
        SeriesOptions {
            synchronous: sync,
            ..SeriesOptions::default()
        },
    )?;
    // Prepared rows for a few batches, reused (building rows is not what is measured).
    let pool: Vec<Vec<Row>> = (0..8)
        .map(|b| make_rows((b * batch) as i64, batch))
        .collect();
    let mut batches = 0usize;
    let mut start = Instant::now();
    let mut cpu_start = 0;
    for rows in pool.iter().cycle() {
        store.insert("telemetry", rows)?;
        if batches == 0 {
            // The first batch creates the table: not measured.
            start = Instant::now();
            cpu_start = cpu_ns().unwrap_or(0);
        }
        batches += 1;
        if start.elapsed().as_secs_f64() >= secs {
            break;
        }
    }
    let batches = batches - 1;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_ns().unwrap_or(0).saturating_sub(cpu_start) as f64 / 1e3;
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
    let rows = (batches * batch) as f64;
    Ok((
        rows / elapsed,
        batches as f64 / elapsed,
        cpu / rows.max(1.0),
    ))
}

fn time<T>(what: &str, f: impl FnOnce() -> Result<T, Box<dyn Error>>) -> Result<T, Box<dyn Error>> {
    let start = Instant::now();
    let out = f()?;
    println!("| {what} | {:.1} ms |", start.elapsed().as_secs_f64() * 1e3);
    Ok(out)
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let secs: f64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2.0);
    let dir = tempfile::tempdir_in(&base)?;
    println!("folder: {}\n", base.display());

    println!("| synchronous | rows per batch | rows/s | batches (commits)/s | CPU µs per row |");
    println!("|---|---|---|---|---|");
    for sync in [Synchronous::Full, Synchronous::Normal] {
        for batch in [1, 100, 1000] {
            let (rows, commits, cpu) = insert_rate(dir.path(), sync, batch, secs)?;
            println!("| {sync:?} | {batch} | {rows:.0} | {commits:.0} | {cpu:.1} |");
        }
    }

    const N: usize = 1_000_000;
    let path = dir.path().join("query.db");
    let store = SeriesStore::open(
        &path,
        SeriesOptions {
            synchronous: Synchronous::Normal,
            max_rows_per_query: 10_000,
            ..SeriesOptions::default()
        },
    )?;
    println!("\n| on {N} rows (100 topics, one row per 100 ms) | time |");
    println!("|---|---|");
    time("insert (batches of 10,000, NORMAL)", || {
        for b in 0..N / 10_000 {
            store.insert("telemetry", &make_rows((b * 10_000) as i64, 10_000))?;
        }
        Ok(())
    })?;
    let bytes = std::fs::metadata(&path)?.len()
        + std::fs::metadata(dir.path().join("query.db-wal")).map_or(0, |m| m.len());
    println!(
        "| file size | {:.0} MB ({:.0} B/row) |",
        bytes as f64 / 1e6,
        bytes as f64 / N as f64
    );
    time("rows: newest 100, no filter", || {
        Ok(store.rows(&RowsQuery {
            limit: Some(100),
            ..RowsQuery::default()
        })?)
    })?;
    time("rows: newest 100 of one topic", || {
        Ok(store.rows(&RowsQuery {
            topic: Some("sensors/dev-7/env".into()),
            limit: Some(100),
            ..RowsQuery::default()
        })?)
    })?;
    time("rows: newest 100 of `sensors/+/env`", || {
        Ok(store.rows(&RowsQuery {
            topic: Some("sensors/+/env".into()),
            limit: Some(100),
            ..RowsQuery::default()
        })?)
    })?;
    time("rows: 10,000 (the maximum) of `sensors/#`", || {
        Ok(store.rows(&RowsQuery {
            topic: Some("sensors/#".into()),
            limit: Some(10_000),
            ..RowsQuery::default()
        })?)
    })?;
    let last_hour_from = 1_700_000_000_000 + (N as i64) * 100 - 3_600_000;
    time("series: one topic, last hour, 1-min avg (360 rows)", || {
        Ok(store.series(&SeriesQuery {
            topic: Some("sensors/dev-7/env".into()),
            since: Some(last_hour_from),
            bucket_ms: 60_000,
            aggregate: Aggregate::Avg,
            ..SeriesQuery::new("temp")
        })?)
    })?;
    time(
        "series: all topics, last hour, 1-min avg (36,000 rows)",
        || {
            Ok(store.series(&SeriesQuery {
                since: Some(last_hour_from),
                bucket_ms: 60_000,
                aggregate: Aggregate::Avg,
                ..SeriesQuery::new("temp")
            })?)
        },
    )?;
    time("series: one topic, all 10,000 rows, 1-h max", || {
        Ok(store.series(&SeriesQuery {
            topic: Some("sensors/dev-7/env".into()),
            bucket_ms: 3_600_000,
            aggregate: Aggregate::Max,
            ..SeriesQuery::new("temp")
        })?)
    })?;
    time(
        "series: all 1,000,000 rows, 1-h avg of a numeric string",
        || {
            Ok(store.series(&SeriesQuery {
                bucket_ms: 3_600_000,
                aggregate: Aggregate::Avg,
                ..SeriesQuery::new("battery")
            })?)
        },
    )?;
    time("tables() (counts 1,000,000 rows)", || Ok(store.tables()?))?;
    time("topics(\"telemetry\")", || Ok(store.topics("telemetry")?))?;
    let deleted = time("delete the oldest half (chunks of 5,000)", || {
        Ok(store.delete_before("telemetry", 1_700_000_000_000 + (N as i64 / 2) * 100)?)
    })?;
    println!("\n(deleted {deleted} rows)");
    Ok(())
}
