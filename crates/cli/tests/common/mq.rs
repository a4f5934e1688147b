//! A blocking wrapper of the midge client for process tests that drive several clients
//! from the test's thread (the cluster tests): connect with a protocol and session shape,
//! subscribe, publish and wait for the acknowledgement, take messages with bounded waits.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use midge_client::codec::{
    ConnAck, Disconnect, Publish, ReasonCode, SubscribeProperties, SubscriptionOptions,
    TopicFilter, TopicName,
};
use midge_client::{Client, ClientError, ClientOptions, Event, Events, Protocol, QoS};

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// One midge client connection driven on a runtime, used from the test's thread.
pub struct Mq {
    pub client: Client,
    pub events: Events,
    pub rt: tokio::runtime::Handle,
    /// Events taken while waiting for another kind.
    pub backlog: VecDeque<Event>,
    pub connack: ConnAck,
    /// The connection ended (error or close event seen).
    pub ended: Option<String>,
    /// The reason code of a DISCONNECT from the server.
    pub disconnect_reason: Option<u8>,
    pub task: tokio::task::JoinHandle<()>,
}

/// How a test client connects.
#[derive(Clone, Copy)]
pub struct How {
    pub v5: bool,
    pub clean: bool,
    /// MQTT 5 session expiry interval.
    pub expiry: Option<u32>,
}

pub const V5: How = How {
    v5: true,
    clean: true,
    expiry: None,
};
pub const V311: How = How {
    v5: false,
    clean: true,
    expiry: None,
};

impl Mq {
    pub fn connect(rt: &tokio::runtime::Runtime, port: u16, id: &str, how: How) -> Mq {
        Mq::connect_with(rt, port, id, how, |_| {})
    }

    pub fn connect_with(
        rt: &tokio::runtime::Runtime,
        port: u16,
        id: &str,
        how: How,
        f: impl FnOnce(&mut ClientOptions),
    ) -> Mq {
        let mut o = ClientOptions::new("127.0.0.1", port, id);
        o.connect.protocol = if how.v5 { Protocol::V5 } else { Protocol::V311 };
        o.connect.clean_start = how.clean;
        o.connect.keep_alive = 30;
        o.connect.properties.session_expiry_interval = how.expiry;
        f(&mut o);
        let (client, events, connack) = rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(10), Client::connect(o)).await
            })
            .unwrap_or_else(|_| panic!("{id}: no CONNACK from port {port} within 10 s"))
            .unwrap_or_else(|e| panic!("{id}: connect to port {port}: {e}"));
        let _guard = rt.enter();
        let (events, task) = events.spawn(None, false);
        Mq {
            client,
            events,
            rt: rt.handle().clone(),
            backlog: VecDeque::new(),
            connack,
            ended: None,
            disconnect_reason: None,
            task,
        }
    }

    pub fn v5(rt: &tokio::runtime::Runtime, port: u16, id: &str) -> Mq {
        Mq::connect(rt, port, id, V5)
    }

    pub fn v311(rt: &tokio::runtime::Runtime, port: u16, id: &str) -> Mq {
        Mq::connect(rt, port, id, V311)
    }

    /// The first event for which `want` holds, within `limit`; others stay queued in order.
    pub fn wait(&mut self, limit: Duration, mut want: impl FnMut(&Event) -> bool) -> Option<Event> {
        if let Some(i) = self.backlog.iter().position(&mut want) {
            return self.backlog.remove(i);
        }
        let deadline = Instant::now() + limit;
        let mut skipped = Vec::new();
        let found = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.ended.is_some() {
                break None;
            }
            let got = self
                .rt
                .block_on(async { tokio::time::timeout(left, self.events.recv()).await });
            match got {
                Ok(Some(Ok(e))) => {
                    if let Event::Disconnected(d) = &e {
                        self.disconnect_reason = Some(d.reason.0);
                    }
                    if matches!(e, Event::Closed | Event::Disconnected(_)) {
                        self.ended = Some(format!("{e:?}"));
                    }
                    if want(&e) {
                        break Some(e);
                    }
                    skipped.push(e);
                }
                Ok(Some(Err(e))) => {
                    if let ClientError::ServerDisconnect(r) = &e {
                        self.disconnect_reason = Some(r.0);
                    }
                    self.ended = Some(e.to_string());
                }
                Ok(None) => self.ended = Some("event loop ended".into()),
                Err(_) => break None,
            }
        };
        self.backlog.extend(skipped);
        found
    }

    /// SUBSCRIBE one filter with these options (and a subscription identifier); the
    /// SUBACK's reason codes.
    pub fn subscribe_opts(
        &mut self,
        filter: &str,
        opts: SubscriptionOptions,
        id: Option<u32>,
    ) -> Vec<u8> {
        let c = self.client.clone();
        let f = TopicFilter::new(filter).unwrap();
        let props = SubscribeProperties {
            subscription_identifier: id,
            ..Default::default()
        };
        self.rt
            .block_on(async move { c.subscribe_many(vec![(f, opts)], props).await.unwrap() });
        match self.wait(Duration::from_secs(10), |e| matches!(e, Event::SubAck(_))) {
            Some(Event::SubAck(s)) => s.reasons.iter().map(|r| r.0).collect(),
            _ => panic!("no SUBACK for {filter:?} within 10 s ({:?})", self.ended),
        }
    }

    pub fn subscribe(&mut self, filter: &str, qos: QoS) -> Vec<u8> {
        self.subscribe_opts(filter, SubscriptionOptions::qos(qos), None)
    }

    pub fn unsubscribe(&mut self, filter: &str) {
        let c = self.client.clone();
        let f = TopicFilter::new(filter).unwrap();
        self.rt.block_on(async move {
            c.unsubscribe_many(vec![f], Default::default())
                .await
                .unwrap();
        });
        assert!(
            self.wait(Duration::from_secs(10), |e| matches!(e, Event::UnsubAck(_)))
                .is_some(),
            "no UNSUBACK for {filter:?}"
        );
    }

    /// Publish and wait for the end of the flow: the final reason code (`None`: no
    /// acknowledgement within `limit` or the connection ended).
    pub fn publish_within(&mut self, p: Publish, limit: Duration) -> Option<u8> {
        let c = self.client.clone();
        self.rt
            .block_on(async move { c.publish_packet(p).await })
            .ok()?;
        match self.wait(limit, |e| matches!(e, Event::Published { .. })) {
            Some(Event::Published { reason, .. }) => Some(reason.0),
            _ => None,
        }
    }

    /// Publish a prepared message and require a success acknowledgement within 10 s.
    pub fn send(&mut self, p: Publish) {
        let what = format!("{:?} at {:?}", p.topic.as_str(), p.qos);
        let r = self.publish_within(p, Duration::from_secs(10));
        // 0x10 (no matching subscribers) is a success too
        assert!(
            r.is_some_and(|c| c < 0x80),
            "publish {what}: acknowledgement {r:?} (None = none within 10 s; ended: {:?})",
            self.ended
        );
    }

    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        self.send(msg(topic, payload, qos, retain));
    }

    /// Messages until `n` arrived or `limit` passed.
    pub fn messages(&mut self, n: usize, limit: Duration) -> Vec<Publish> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.wait(left, |e| matches!(e, Event::Message(_))) {
                Some(Event::Message(p)) => got.push(p),
                _ => break,
            }
        }
        got
    }

    /// Every message that arrives within `limit` (to prove there is nothing more).
    pub fn drain(&mut self, limit: Duration) -> Vec<Publish> {
        self.messages(usize::MAX, limit)
    }

    /// `n` messages (10 s at most), then whatever else comes within `quiet`.
    pub fn exactly(&mut self, n: usize, quiet: Duration) -> Vec<Publish> {
        let mut got = self.messages(n, Duration::from_secs(10));
        got.extend(self.drain(quiet));
        got
    }

    /// Messages up to and including the first on `fence` (10 s at most; panics without
    /// it). What a publisher sent before the fence, on the same path, came before it.
    pub fn until(&mut self, fence: &str) -> Vec<Publish> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.wait(left, |e| matches!(e, Event::Message(_))) {
                Some(Event::Message(p)) => {
                    let end = p.topic.as_str() == fence;
                    got.push(p);
                    if end {
                        return got;
                    }
                }
                _ => panic!(
                    "fence {fence:?} not received within 10 s; got {:?}",
                    got.iter()
                        .map(|p| (p.topic.as_str().to_owned(), p.payload.clone()))
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    pub fn disconnect(self) {
        self.disconnect_with(Disconnect::new(ReasonCode(0)));
    }

    pub fn disconnect_with(self, d: Disconnect) {
        let c = self.client.clone();
        let _ = self.rt.block_on(async move {
            tokio::time::timeout(Duration::from_secs(2), c.disconnect_with(d)).await
        });
        // let the DISCONNECT go out before the loop is dropped
        let mut me = self;
        let _ = me.wait(Duration::from_secs(2), |e| matches!(e, Event::Closed));
    }
}

impl Drop for Mq {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn msg(topic: &str, payload: &[u8], qos: QoS, retain: bool) -> Publish {
    let mut p = Publish::new(TopicName::new(topic).unwrap(), payload.to_vec());
    p.qos = qos;
    p.retain = retain;
    p
}
