//! Measures the PostgreSQL engine: row inserts in batches of 1, 100 and 1,000
//! (`synchronous` full and normal = `synchronous_commit` on and off), typical row queries
//! on 100,000 rows, and datapoint writes and an aggregate over 100,000 points. The figures
//! of `docs/series.md` (PostgreSQL) come from this.
//!
//! ```sh
//! # a PostgreSQL 15 of its own (fsync on), as the tests start one: needs postgresql-15
//! # and root (the server runs as the user midge-pg; see scripts/test-deps.sh)
//! cargo run --release -p midge-series --example postgres_rate
//! # or a server of yours (its tables series_bench_* and midge_* are written to)
//! cargo run --release -p midge-series --example postgres_rate -- postgres://u:p@host/db
//! ```

#[path = "../tests/pg/mod.rs"]
mod pg;

use std::error::Error;
use std::time::Instant;

use midge_series::points::{Aggregator, AggregatorKind, Datapoint, PointQuery, PointValue, Tags};
use midge_series::{
    Aggregate, JsonObject, Row, RowsQuery, SeriesOptions, SeriesQuery, SeriesStore, Synchronous,
};
use serde_json::json;

fn rows(start: i64, n: usize) -> Vec<Row> {
    (0..n as i64)
        .map(|k| {
            let i = start + k;
            let data = json!({"temp": 20.0 + (i % 100) as f64 / 10.0, "hum": 40 + i % 20});
            let data = match data {
                serde_json::Value::Object(m) => m,
                _ => JsonObject::new(),
            };
            Row::new(
                1_700_000_000_000 + i * 100,
                format!("sensors/dev-{}/env", i % 100),
                format!("dev-{}", i % 100),
                data,
            )
        })
        .collect()
}

/// Rows per second inserting batches of `batch` into `table` for about 2 s.
fn insert_rate(store: &SeriesStore, table: &str, batch: usize) -> Result<f64, Box<dyn Error>> {
    let pool: Vec<Vec<Row>> = (0..8).map(|b| rows((b * batch) as i64, batch)).collect();
    store.insert(table, &rows(0, batch))?; // creates the table: not measured
    let start = Instant::now();
    let mut n = 0usize;
    for r in pool.iter().cycle() {
        store.insert(table, r)?;
        n += r.len();
        if start.elapsed().as_secs_f64() > 2.0 {
            break;
        }
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Median of `runs` timings of `f`, in ms.
fn time_ms(
    runs: usize,
    mut f: impl FnMut() -> Result<(), Box<dyn Error>>,
) -> Result<f64, Box<dyn Error>> {
    let mut t = Vec::new();
    for _ in 0..runs {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok(t.get(t.len() / 2).copied().unwrap_or(0.0))
}

fn main() -> Result<(), Box<dyn Error>> {
    let arg = std::env::args().nth(1);
    let server = arg.is_none().then(pg::PgServer::start_durable);
    let url = arg.unwrap_or_else(|| {
        server
            .as_ref()
            .map(|s| s.url("postgres"))
            .unwrap_or_default()
    });
    for (sync, name) in [(Synchronous::Full, "full"), (Synchronous::Normal, "normal")] {
        let store = SeriesStore::connect_postgres(
            &url,
            SeriesOptions {
                synchronous: sync,
                ..SeriesOptions::default()
            },
        )?;
        for batch in [1, 100, 1_000] {
            let rate = insert_rate(&store, &format!("bench_{name}_{batch}"), batch)?;
            println!("insert rows, synchronous {name}, batches of {batch}: {rate:.0} rows/s");
        }
    }

    let store = SeriesStore::connect_postgres(
        &url,
        SeriesOptions {
            synchronous: Synchronous::Normal,
            ..SeriesOptions::default()
        },
    )?;
    for b in 0..100 {
        store.insert("bench_query", &rows(b * 1_000, 1_000))?;
    }
    let newest = time_ms(9, || {
        store.rows(&RowsQuery {
            table: "bench_query".into(),
            limit: Some(1_000),
            ..RowsQuery::default()
        })?;
        Ok(())
    })?;
    println!("rows: newest 1,000 of 100,000: {newest:.1} ms");
    let one = time_ms(9, || {
        store.rows(&RowsQuery {
            table: "bench_query".into(),
            topic: Some("sensors/dev-7/env".into()),
            limit: Some(100),
            ..RowsQuery::default()
        })?;
        Ok(())
    })?;
    println!("rows: newest 100 of one topic (exact filter): {one:.1} ms");
    let wild = time_ms(9, || {
        store.rows(&RowsQuery {
            table: "bench_query".into(),
            topic: Some("sensors/+/env".into()),
            limit: Some(1_000),
            ..RowsQuery::default()
        })?;
        Ok(())
    })?;
    println!("rows: newest 1,000 through sensors/+/env (no statistics yet): {wild:.1} ms");
    // what autovacuum does within a minute or so of a bulk load
    let mut client = postgres::Client::connect(&url, postgres::NoTls)?;
    client.batch_execute("ANALYZE series_bench_query")?;
    let wild = time_ms(9, || {
        store.rows(&RowsQuery {
            table: "bench_query".into(),
            topic: Some("sensors/+/env".into()),
            limit: Some(1_000),
            ..RowsQuery::default()
        })?;
        Ok(())
    })?;
    println!("rows: newest 1,000 through sensors/+/env (analyzed): {wild:.1} ms");
    let few = time_ms(9, || {
        store.rows(&RowsQuery {
            table: "bench_query".into(),
            topic: Some("sensors/dev-7/+".into()),
            limit: Some(100),
            ..RowsQuery::default()
        })?;
        Ok(())
    })?;
    println!("rows: newest 100 through sensors/dev-7/+ (1 topic of 100): {few:.1} ms");
    let avg = time_ms(5, || {
        store.series(&SeriesQuery {
            table: "bench_query".into(),
            bucket_ms: 60_000,
            aggregate: Aggregate::Avg,
            ..SeriesQuery::new("temp")
        })?;
        Ok(())
    })?;
    println!("series: avg of temp per minute over 100,000 rows: {avg:.1} ms");

    let tags: Tags = [("dev".to_owned(), "d1".to_owned())].into();
    let point = |i: i64| Datapoint {
        metric: "bench".into(),
        field: "value".into(),
        tags: tags.clone(),
        timestamp: 1_700_000_000_000 + i * 1_000,
        value: PointValue::Double(i as f64),
    };
    let start = Instant::now();
    for b in 0..100 {
        let batch: Vec<Datapoint> = (0..1_000).map(|k| point(b * 1_000 + k)).collect();
        store.write_points(&batch)?;
    }
    let rate = 100_000.0 / start.elapsed().as_secs_f64();
    println!("write points, one series, batches of 1,000, synchronous normal: {rate:.0} points/s");
    let q = PointQuery {
        metric: "bench".into(),
        start: 0,
        end: i64::MAX,
        aggregators: vec![Aggregator {
            kind: AggregatorKind::Avg,
            sampling_ms: Some(60_000),
            param: None,
        }],
        limit: Some(10_000),
        ..PointQuery::default()
    };
    let agg = time_ms(5, || {
        store.query_points(&q)?;
        Ok(())
    })?;
    println!("points: avg per minute over 100,000 points: {agg:.1} ms");
    Ok(())
}
