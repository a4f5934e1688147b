//! Helpers of the `persistence_*` and `hub_*` tests: `midge serve` on a data folder that
//! outlives the process (restart, SIGKILL), and a small blocking MQTT client on midge-codec
//! that exposes every acknowledgement, so a test knows exactly what the broker promised.
// (lints as allowed in `common`)

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use midge_codec::bytes::{Bytes, BytesMut};
use midge_codec::{
    Connect, Packet, Protocol, PubAck, Publish, QoS, ReasonCode, Subscribe, SubscriptionOptions,
    TopicFilter, TopicName,
};

use super::Midge;

/// `midge serve` with `[persistence] dir = data` (a folder the test owns, so it outlives
/// the process), `$SYS` every second, and `extra` TOML (under `[persistence]` unless it
/// opens a table of its own); logs at info.
pub fn broker(data: &Path, extra: &str) -> Midge {
    Midge::serve()
        .config(&format!(
            "[server]\nsys_interval = 1\n[persistence]\ndir = \"{}\"\n{extra}\n",
            data.display()
        ))
        .env("RUST_LOG", "info")
        .start()
}

/// A blocking MQTT client that shows every packet.
pub struct Client {
    pub stream: TcpStream,
    pub protocol: Protocol,
    buf: BytesMut,
    /// The connection closed (or failed) during a `recv`.
    pub closed: bool,
}

impl Client {
    pub fn connect(port: u16, protocol: Protocol, id: &str, clean: bool) -> (Client, bool) {
        let mut c = Connect::new(protocol, id);
        c.clean_start = clean;
        c.keep_alive = 0;
        if protocol == Protocol::V5 && !clean {
            c.properties.session_expiry_interval = Some(3600);
        }
        Client::connect_with(port, c)
    }

    pub fn try_connect_with(port: u16, c: Connect) -> Option<(Client, midge_codec::ConnAck)> {
        let stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.set_nodelay(true).ok()?;
        let mut cl = Client {
            stream,
            protocol: c.protocol,
            buf: BytesMut::new(),
            closed: false,
        };
        cl.send(&Packet::Connect(Box::new(c)));
        match cl.recv(Duration::from_secs(10)) {
            Some(Packet::ConnAck(a)) => Some((cl, a)),
            _ => None,
        }
    }

    pub fn connect_with(port: u16, c: Connect) -> (Client, bool) {
        let (cl, a) = Client::try_connect_with(port, c).expect("CONNACK");
        assert_eq!(a.reason, ReasonCode::SUCCESS);
        (cl, a.session_present)
    }

    pub fn send(&mut self, p: &Packet) {
        let mut b = BytesMut::new();
        p.encode(self.protocol, &mut b).unwrap();
        let _ = self.stream.write_all(&b);
    }

    /// The next packet, or `None` on timeout or a closed connection.
    pub fn recv(&mut self, timeout: Duration) -> Option<Packet> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(p)) = midge_codec::decode(&mut self.buf, self.protocol, u32::MAX) {
                return Some(p);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            let mut tmp = [0u8; 16384];
            match self.stream.read(&mut tmp) {
                Ok(0) => {
                    self.closed = true;
                    return None;
                }
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None;
                }
                Err(_) => {
                    self.closed = true;
                    return None;
                }
            }
        }
    }

    pub fn subscribe(&mut self, filter: &str, qos: QoS, id: Option<u32>) {
        let props = midge_codec::SubscribeProperties {
            subscription_identifier: id,
            ..Default::default()
        };
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: 1,
            properties: props,
            filters: vec![(
                TopicFilter::new(filter.to_string()).unwrap(),
                SubscriptionOptions::qos(qos),
            )],
        }));
        match self.recv(Duration::from_secs(10)) {
            Some(Packet::SubAck(_)) => {}
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub fn publish_packet(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool, id: u16) {
        let mut p = Publish::new(
            TopicName::new(topic.to_string()).unwrap(),
            Bytes::copy_from_slice(payload),
        );
        p.qos = qos;
        p.retain = retain;
        p.packet_id = if qos == QoS::AtMostOnce { 0 } else { id };
        self.send(&Packet::Publish(p));
    }

    /// Publish and wait for the flow's end (PUBACK, or PUBREC + PUBREL + PUBCOMP).
    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool, id: u16) {
        self.publish_packet(topic, payload, qos, retain, id);
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => match self.recv(Duration::from_secs(10)) {
                Some(Packet::PubAck(a)) => assert!(!a.reason.is_error(), "{a:?}"),
                other => panic!("expected PUBACK, got {other:?}"),
            },
            QoS::ExactlyOnce => {
                match self.recv(Duration::from_secs(10)) {
                    Some(Packet::PubRec(a)) => assert!(!a.reason.is_error(), "{a:?}"),
                    other => panic!("expected PUBREC, got {other:?}"),
                }
                self.send(&Packet::PubRel(PubAck::new(id)));
                match self.recv(Duration::from_secs(10)) {
                    Some(Packet::PubComp(_)) => {}
                    other => panic!("expected PUBCOMP, got {other:?}"),
                }
            }
        }
    }

    /// Acknowledge a received PUBLISH as a well-behaved client does (QoS 2: PUBREC now).
    pub fn ack(&mut self, p: &Publish) {
        match p.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send(&Packet::PubAck(PubAck::new(p.packet_id))),
            QoS::ExactlyOnce => self.send(&Packet::PubRec(PubAck::new(p.packet_id))),
        }
    }

    pub fn disconnect(mut self) {
        self.send(&Packet::Disconnect(midge_codec::Disconnect::new(
            ReasonCode::SUCCESS,
        )));
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}
