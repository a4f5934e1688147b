//! Crash test: a real broker under QoS 1 and QoS 2 load to persistent sessions (one of them
//! offline the whole time) is killed with SIGKILL at random moments and restarted on the
//! same data folder. Every message a publisher saw acknowledged (PUBACK, PUBCOMP) must reach
//! every subscriber, and no QoS 2 message may arrive twice.
//!
//! 3 rounds by default; `MIDGE_CRASH_ROUNDS=20` for the long run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::persistence::{Client, broker};
use midge_codec::{Packet, Protocol, PubAck, Publish, QoS, TopicName};

/// What one subscriber received: payload -> times counted, and (QoS 2 receivers) packet
/// ids PUBREC'd and not yet released: a client's own session state, kept across broker
/// restarts as a real client keeps it.
#[derive(Default)]
struct Received {
    counts: HashMap<String, u32>,
    awaiting_rel: HashSet<u16>,
}

struct Sub {
    id: &'static str,
    protocol: Protocol,
    qos: QoS,
    got: Arc<Mutex<Received>>,
}

fn rand_ms(lo: u64, hi: u64) -> u64 {
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let x = n
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        >> 33;
    lo + x % (hi - lo)
}

/// Receive until the connection closes, `stop` is set, or (`idle`) nothing came for that long.
fn receive(c: &mut Client, got: &Mutex<Received>, stop: &AtomicBool, idle: Option<Duration>) {
    let mut last = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Some(p) = c.recv(Duration::from_millis(100)) else {
            if c.closed {
                return;
            }
            if idle.is_some_and(|i| last.elapsed() > i) {
                return;
            }
            continue;
        };
        last = Instant::now();
        match p {
            Packet::Publish(p) => {
                let payload = String::from_utf8_lossy(&p.payload)
                    .trim_end_matches('.')
                    .to_string();
                let mut g = got.lock().unwrap();
                match p.qos {
                    QoS::ExactlyOnce => {
                        // the receiver side of exactly once: an id awaiting PUBREL is a resend
                        if g.awaiting_rel.insert(p.packet_id) {
                            *g.counts.entry(payload).or_default() += 1;
                        }
                        drop(g);
                        c.send(&Packet::PubRec(PubAck::new(p.packet_id)));
                    }
                    QoS::AtLeastOnce => {
                        *g.counts.entry(payload).or_default() += 1;
                        drop(g);
                        c.send(&Packet::PubAck(PubAck::new(p.packet_id)));
                    }
                    QoS::AtMostOnce => {
                        *g.counts.entry(payload).or_default() += 1;
                    }
                }
            }
            Packet::PubRel(r) => {
                got.lock().unwrap().awaiting_rel.remove(&r.packet_id);
                c.send(&Packet::PubComp(PubAck::new(r.packet_id)));
            }
            _ => {}
        }
    }
}

/// Publish pipelined (a window of 16) until the connection breaks or `stop`; returns the
/// payloads whose flow the broker completed (PUBACK / PUBCOMP).
fn publish_load(
    port: u16,
    protocol: Protocol,
    qos: QoS,
    tag: &str,
    stop: &AtomicBool,
) -> Vec<String> {
    let mut acked = Vec::new();
    let Some((mut c, _)) = Client::try_connect_with(port, {
        let mut k = midge_codec::Connect::new(protocol, format!("crash-pub-{tag}"));
        k.keep_alive = 0;
        k
    }) else {
        return acked;
    };
    let mut seq = 0u64;
    let mut in_flight: HashMap<u16, String> = HashMap::new();
    let mut next_id = 1u16;
    'outer: while !stop.load(Ordering::Relaxed) {
        while in_flight.len() < 16 {
            seq += 1;
            let payload = format!("{tag}-{seq}");
            let padded = format!("{payload:.<64}");
            let id = next_id;
            next_id = if next_id == 60_000 { 1 } else { next_id + 1 };
            let mut p = Publish::new(
                TopicName::new(format!("crash/{tag}")).unwrap(),
                padded.into_bytes(),
            );
            p.qos = qos;
            p.packet_id = id;
            c.send(&Packet::Publish(p));
            in_flight.insert(id, payload);
        }
        match c.recv(Duration::from_millis(500)) {
            Some(Packet::PubAck(a)) if !a.reason.is_error() => {
                if let Some(p) = in_flight.remove(&a.packet_id) {
                    acked.push(p);
                }
            }
            Some(Packet::PubRec(a)) if !a.reason.is_error() => {
                c.send(&Packet::PubRel(PubAck::new(a.packet_id)));
            }
            Some(Packet::PubComp(a)) if !a.reason.is_error() => {
                if let Some(p) = in_flight.remove(&a.packet_id) {
                    acked.push(p);
                }
            }
            Some(other) => panic!("unexpected {other:?}"),
            None if c.closed => break 'outer,
            None => {}
        }
    }
    acked
}

fn connect_sub(port: u16, s: &Sub, first: bool) -> Client {
    let (mut c, present) = Client::connect(port, s.protocol, s.id, false);
    if first {
        c.subscribe("crash/#", s.qos, None);
    } else {
        assert!(present, "{}: session lost across a crash", s.id);
    }
    c
}

#[test]
fn acknowledged_messages_survive_sigkill_at_random_moments() {
    let rounds: usize = std::env::var("MIDGE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let extra = "[limits]\nmax_queued_messages = 1000000\nmax_queued_bytes = 0\n";
    let subs = Arc::new(vec![
        Sub {
            id: "crash-s1-v5-q1",
            protocol: Protocol::V5,
            qos: QoS::AtLeastOnce,
            got: Default::default(),
        },
        Sub {
            id: "crash-s2-v311-q2-offline",
            protocol: Protocol::V311,
            qos: QoS::ExactlyOnce,
            got: Default::default(),
        },
        Sub {
            id: "crash-s3-v5-q2",
            protocol: Protocol::V5,
            qos: QoS::ExactlyOnce,
            got: Default::default(),
        },
    ]);
    let mut acked: Vec<(String, QoS)> = Vec::new();
    let started = Instant::now();
    for round in 0..rounds {
        let broker = broker(&data, extra);
        let port = broker.port;
        if round == 0 {
            // the offline one subscribes once and stays away until the end
            connect_sub(port, &subs[1], true).disconnect();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut sub_threads = Vec::new();
        for i in [0usize, 2] {
            let mut c = connect_sub(port, &subs[i], round == 0);
            let (subs, stop) = (subs.clone(), stop.clone());
            sub_threads.push(std::thread::spawn(move || {
                receive(&mut c, &subs[i].got, &stop, None)
            }));
        }
        let mut pubs = Vec::new();
        for (protocol, qos, tag) in [
            (Protocol::V311, QoS::AtLeastOnce, format!("r{round}-q1")),
            (Protocol::V5, QoS::ExactlyOnce, format!("r{round}-q2")),
        ] {
            let stop = stop.clone();
            pubs.push(std::thread::spawn(move || {
                (qos, publish_load(port, protocol, qos, &tag, &stop))
            }));
        }
        std::thread::sleep(Duration::from_millis(rand_ms(300, 1500)));
        broker.kill();
        stop.store(true, Ordering::Relaxed);
        for p in pubs {
            let (qos, a) = p.join().unwrap();
            acked.extend(a.into_iter().map(|p| (p, qos)));
        }
        for t in sub_threads {
            t.join().unwrap();
        }
    }
    // the last start: everyone collects what is owed to them
    let broker = broker(&data, extra);
    let stop = AtomicBool::new(false);
    for s in subs.iter() {
        let mut c = connect_sub(broker.port, s, false);
        receive(&mut c, &s.got, &stop, Some(Duration::from_secs(5)));
    }
    broker.stop();

    assert!(!acked.is_empty(), "no publish was acknowledged");
    let mut missing = Vec::new();
    for s in subs.iter() {
        let got = s.got.lock().unwrap();
        for (p, _) in &acked {
            if !got.counts.contains_key(p) {
                missing.push(format!("{}: {p}", s.id));
            }
        }
        if s.qos == QoS::ExactlyOnce {
            let twice: Vec<_> = got
                .counts
                .iter()
                .filter(|(p, n)| p.contains("-q2-") && **n > 1)
                .collect();
            assert!(
                twice.is_empty(),
                "{}: QoS 2 delivered twice: {twice:?}",
                s.id
            );
        }
    }
    eprintln!(
        "crash test: {rounds} rounds, {} acknowledged publishes ({} QoS 1, {} QoS 2), {:?}",
        acked.len(),
        acked.iter().filter(|(_, q)| *q == QoS::AtLeastOnce).count(),
        acked.iter().filter(|(_, q)| *q == QoS::ExactlyOnce).count(),
        started.elapsed()
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged deliveries lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}
