//! The engine comparison of docs/persistence.md: the QoS 1 persistent workload (4 writers,
//! 64-byte messages; per message a body, a delivery and, once "acknowledged", its delete),
//! group commit (every batch waiting while the disk syncs shares one commit), against
//! midge's append-only log and redb. Prints messages/s and commits (fsync groups)/s.
//!
//! `cargo run --release -p midge-store --example engines [seconds]`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use midge_codec::{QoS, TopicName};
use midge_core::{DeliveryState, Message, SessionHeader, StoreOp};
use midge_store::{LogStore, StoreOptions};
use redb::{Database, TableDefinition};

const WRITERS: usize = 4;
const WINDOW: usize = 64;

/// One writer's message: its ops, and who to tell.
struct Item {
    writer: usize,
    ops: Vec<StoreOp>,
}

trait Engine {
    fn commit(&mut self, ops: &[StoreOp]);
    fn name(&self) -> &'static str;
}

struct Log(LogStore);
impl Engine for Log {
    fn commit(&mut self, ops: &[StoreOp]) {
        self.0.append(ops).unwrap();
        self.0.sync().unwrap();
        self.0.maybe_compact().unwrap();
    }
    fn name(&self) -> &'static str {
        "midge log (append + fdatasync)"
    }
}

const MSGS: TableDefinition<u64, &[u8]> = TableDefinition::new("msgs");
const DELIVERIES: TableDefinition<(&str, u64), (u64, u16)> = TableDefinition::new("deliveries");

struct Redb(Database);
impl Engine for Redb {
    fn commit(&mut self, ops: &[StoreOp]) {
        let tx = self.0.begin_write().unwrap();
        {
            let mut msgs = tx.open_table(MSGS).unwrap();
            let mut dels = tx.open_table(DELIVERIES).unwrap();
            for op in ops {
                match op {
                    StoreOp::Message { id, msg } => {
                        // the same bytes a log record holds: topic + payload
                        let mut b =
                            Vec::with_capacity(msg.topic.as_str().len() + msg.payload.len());
                        b.extend_from_slice(msg.topic.as_str().as_bytes());
                        b.extend_from_slice(&msg.payload);
                        msgs.insert(*id, b.as_slice()).unwrap();
                    }
                    StoreOp::Delivery {
                        client_id,
                        seq,
                        msg,
                        ..
                    } => {
                        dels.insert((client_id.as_ref(), *seq), (*msg, 1)).unwrap();
                    }
                    StoreOp::DeliveryDelete { client_id, seq } => {
                        if let Some(v) = dels.remove((client_id.as_ref(), *seq)).unwrap() {
                            let (m, _) = v.value();
                            msgs.remove(m).unwrap();
                        }
                    }
                    _ => {}
                }
            }
        }
        tx.commit().unwrap();
    }
    fn name(&self) -> &'static str {
        "redb 2 (one write transaction per group)"
    }
}

fn run(mut engine: Box<dyn Engine>, secs: u64) {
    let (tx, rx) = mpsc::channel::<Item>();
    let stop = Arc::new(AtomicBool::new(false));
    let mut acks = Vec::new();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (atx, arx) = mpsc::channel::<usize>();
        acks.push(atx);
        let tx = tx.clone();
        let stop = stop.clone();
        writers.push(std::thread::spawn(move || {
            let topic = TopicName::new(format!("bench/{w}")).unwrap();
            let mut outstanding = 0usize;
            let mut seq = (w as u64) << 40;
            let mut prev: Option<u64> = None;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let msg = Arc::new(Message::new(
                    topic.clone(),
                    vec![b'x'; 64],
                    QoS::AtLeastOnce,
                    false,
                ));
                let mut ops = vec![
                    StoreOp::Message { id: seq, msg },
                    StoreOp::Delivery {
                        client_id: "sub".into(),
                        seq,
                        msg: seq,
                        qos: QoS::AtLeastOnce,
                        retain: false,
                        sub_ids: Vec::new(),
                        state: DeliveryState::AwaitPubAck(1),
                    },
                ];
                // the previous message's PUBACK from the subscriber arrives meanwhile
                if let Some(p) = prev.replace(seq) {
                    ops.push(StoreOp::DeliveryDelete {
                        client_id: "sub".into(),
                        seq: p,
                    });
                }
                if tx.send(Item { writer: w, ops }).is_err() {
                    return;
                }
                outstanding += 1;
                while outstanding >= WINDOW {
                    match arx.recv() {
                        Ok(n) => outstanding -= n,
                        Err(_) => return,
                    }
                }
                while let Ok(n) = arx.try_recv() {
                    outstanding -= n;
                }
            }
        }));
    }
    drop(tx);
    let start = Instant::now();
    let (mut messages, mut commits) = (0u64, 0u64);
    let mut ops = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        let Ok(first) = rx.recv() else { break };
        let mut per = [0usize; WRITERS];
        per[first.writer] += 1;
        ops.clear();
        ops.extend(first.ops);
        while let Ok(i) = rx.try_recv() {
            per[i.writer] += 1;
            ops.extend(i.ops);
        }
        engine.commit(&ops);
        commits += 1;
        for (w, n) in per.iter().enumerate() {
            messages += *n as u64;
            if *n > 0 {
                let _ = acks[w].send(*n);
            }
        }
    }
    let el = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    drop(acks);
    drop(rx);
    for w in writers {
        let _ = w.join();
    }
    println!(
        "{:<45} {:>9.0} msg/s {:>7.0} commits/s {:>6.1} msgs/commit",
        engine.name(),
        messages as f64 / el,
        commits as f64 / el,
        messages as f64 / commits.max(1) as f64
    );
}

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let log = LogStore::open(StoreOptions {
        dir: dir.path().join("log"),
        ..StoreOptions::default()
    })
    .unwrap()
    .store;
    let mut log = Log(log);
    log.0
        .append(&[StoreOp::Session(Box::new(SessionHeader {
            client_id: "sub".into(),
            username: None,
            protocol: midge_codec::Protocol::V311,
            expiry_interval: u32::MAX,
            will: None,
            will_at: None,
            disconnected_at: None,
        }))])
        .unwrap();
    run(Box::new(log), secs);
    let db = Database::create(dir.path().join("redb.db")).unwrap();
    run(Box::new(Redb(db)), secs);
    println!("(data folder on {})", dir.path().display());
}
