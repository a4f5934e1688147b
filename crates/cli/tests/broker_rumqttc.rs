//! midge serve against rumqttc (v4 API for 3.1.1, `rumqttc::v5` for 5.0): QoS 0, 1 and 2 with
//! hundreds of messages in flight from two publishers at once; every message arrives exactly
//! once and in order per publisher.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Midge, unique};
use tokio::sync::mpsc;
use tokio::time::timeout;

const PUBLISHERS: usize = 2;
const PER_PUBLISHER: u32 = 1000;
const WAIT: Duration = Duration::from_secs(30);

/// Checks what the subscriber got: per publisher exactly 0..PER_PUBLISHER, in order.
fn check(got: &[(u8, u32)], what: &str) {
    let mut per: HashMap<u8, Vec<u32>> = HashMap::new();
    for (p, i) in got {
        per.entry(*p).or_default().push(*i);
    }
    let want: Vec<u32> = (0..PER_PUBLISHER).collect();
    for p in 0..PUBLISHERS as u8 {
        let seq = per.remove(&p).unwrap_or_default();
        if seq != want {
            let dups = seq.len() as i64 - want.len() as i64;
            panic!(
                "{what}: publisher {p}: {} messages (difference {dups}), first out-of-place at {:?}",
                seq.len(),
                seq.iter().zip(&want).position(|(a, b)| a != b)
            );
        }
    }
    assert!(per.is_empty(), "{what}: messages from unknown publishers");
}

fn payload(publisher: u8, i: u32) -> Vec<u8> {
    let mut p = vec![publisher];
    p.extend_from_slice(&i.to_be_bytes());
    p.extend_from_slice(&[0xA5; 64]);
    p
}

fn parse(p: &[u8]) -> (u8, u32) {
    (p[0], u32::from_be_bytes([p[1], p[2], p[3], p[4]]))
}

mod v4 {
    use super::*;
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

    fn opts(port: u16) -> MqttOptions {
        let mut o = MqttOptions::new(unique("rumq4"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_inflight(500);
        o
    }

    pub(super) async fn run(port: u16, qos: QoS) {
        let topic = unique("rumqttc/v4");
        let (sub, mut sub_loop) = AsyncClient::new(opts(port), 1000);
        sub.subscribe(&topic, qos).await.unwrap();
        // wait for the SUBACK, then hand the publishes over to a channel
        timeout(WAIT, async {
            loop {
                if let Event::Incoming(Packet::SubAck(_)) = sub_loop.poll().await.unwrap() {
                    break;
                }
            }
        })
        .await
        .expect("SUBACK");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            loop {
                match sub_loop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        assert_eq!(p.qos, qos, "granted QoS");
                        if tx.send(parse(&p.payload)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => panic!("subscriber: {e}"),
                }
            }
        });
        let mut pubs = Vec::new();
        for n in 0..PUBLISHERS as u8 {
            let topic = topic.clone();
            pubs.push(tokio::spawn(async move {
                let (client, mut ev) = AsyncClient::new(opts(port), 1000);
                for i in 0..PER_PUBLISHER {
                    client
                        .publish(&topic, qos, false, payload(n, i))
                        .await
                        .unwrap();
                }
                // drive the event loop until every acknowledgement came back
                let mut acked = 0;
                while acked < PER_PUBLISHER {
                    match ev.poll().await.unwrap() {
                        Event::Outgoing(rumqttc::Outgoing::Publish(_))
                            if qos == QoS::AtMostOnce =>
                        {
                            acked += 1
                        }
                        Event::Incoming(Packet::PubAck(_)) if qos == QoS::AtLeastOnce => acked += 1,
                        Event::Incoming(Packet::PubComp(_)) if qos == QoS::ExactlyOnce => {
                            acked += 1
                        }
                        _ => {}
                    }
                }
                client.disconnect().await.unwrap();
                let _ = timeout(Duration::from_secs(2), ev.poll()).await;
            }));
        }
        for p in pubs {
            timeout(WAIT, p).await.expect("publisher finished").unwrap();
        }
        let total = PUBLISHERS * PER_PUBLISHER as usize;
        let mut got = Vec::with_capacity(total);
        while got.len() < total {
            match timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(m)) => got.push(m),
                _ => break,
            }
        }
        // and nothing more (duplicates) shortly after
        if let Ok(Some(m)) = timeout(Duration::from_millis(300), rx.recv()).await {
            got.push(m);
        }
        reader.abort();
        check(&got, &format!("3.1.1 {qos:?}"));
    }
}

mod v5 {
    use super::*;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    fn opts(port: u16) -> MqttOptions {
        let mut o = MqttOptions::new(unique("rumq5"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    pub(super) async fn run(port: u16, qos: QoS) {
        let topic = unique("rumqttc/v5");
        let (sub, mut sub_loop) = AsyncClient::new(opts(port), 1000);
        sub.subscribe(&topic, qos).await.unwrap();
        timeout(WAIT, async {
            loop {
                if let Event::Incoming(Packet::SubAck(_)) = sub_loop.poll().await.unwrap() {
                    break;
                }
            }
        })
        .await
        .expect("SUBACK");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            loop {
                match sub_loop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        assert_eq!(p.qos, qos, "granted QoS");
                        if tx.send(parse(&p.payload)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => panic!("subscriber: {e}"),
                }
            }
        });
        let mut pubs = Vec::new();
        for n in 0..PUBLISHERS as u8 {
            let topic = topic.clone();
            pubs.push(tokio::spawn(async move {
                let (client, mut ev) = AsyncClient::new(opts(port), 1000);
                for i in 0..PER_PUBLISHER {
                    client
                        .publish(&topic, qos, false, payload(n, i))
                        .await
                        .unwrap();
                }
                let mut acked = 0;
                while acked < PER_PUBLISHER {
                    match ev.poll().await.unwrap() {
                        Event::Outgoing(rumqttc::Outgoing::Publish(_))
                            if qos == QoS::AtMostOnce =>
                        {
                            acked += 1
                        }
                        Event::Incoming(Packet::PubAck(_)) if qos == QoS::AtLeastOnce => acked += 1,
                        Event::Incoming(Packet::PubComp(_)) if qos == QoS::ExactlyOnce => {
                            acked += 1
                        }
                        _ => {}
                    }
                }
                client.disconnect().await.unwrap();
                let _ = timeout(Duration::from_secs(2), ev.poll()).await;
            }));
        }
        for p in pubs {
            timeout(WAIT, p).await.expect("publisher finished").unwrap();
        }
        let total = PUBLISHERS * PER_PUBLISHER as usize;
        let mut got = Vec::with_capacity(total);
        while got.len() < total {
            match timeout(Duration::from_secs(10), rx.recv()).await {
                Ok(Some(m)) => got.push(m),
                _ => break,
            }
        }
        if let Ok(Some(m)) = timeout(Duration::from_millis(300), rx.recv()).await {
            got.push(m);
        }
        reader.abort();
        check(&got, &format!("5.0 {qos:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v311_qos_0_1_2_hundreds_in_flight_arrive_once_in_order() {
    let b = Midge::start();
    for qos in [
        rumqttc::QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce,
    ] {
        v4::run(b.port, qos).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_v5_qos_0_1_2_hundreds_in_flight_arrive_once_in_order() {
    use rumqttc::v5::mqttbytes::QoS;
    let b = Midge::start();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        v5::run(b.port, qos).await;
    }
}
