//! The tool's own ceiling: a no-op MQTT peer in-process. Publishers write to it (it only
//! acknowledges), and a subscriber reads from it (it floods pre-encoded publishes), so the
//! figures are what the load generator can push and parse with no broker in the way.

use std::net::SocketAddr;

use bytes::BytesMut;
use midge_codec::{ConnAck, Packet, Protocol, QoS, SubAck};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::conn::{ConnConfig, ConnResult, run_conn};
use crate::scenario::{RunResult, Scenario, run_scenario};
use crate::wire::{self, Frame, PayloadHeader};
use crate::{BenchError, Common};

/// Both halves of the ceiling.
#[derive(Debug, Clone)]
pub struct SinkResult {
    /// Publishers flat out into the sink.
    pub publish: RunResult,
    /// One subscriber reading a flood from the sink.
    pub subscribe: RunResult,
    /// Connections opened against the sink (CONNECT/CONNACK only).
    pub connect: ConnResult,
}

/// Start the sink on 127.0.0.1:0; every subscriber gets `feed` messages of `payload` bytes.
async fn start_sink(feed: u64, payload: usize) -> Result<SocketAddr, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = serve(s, feed, payload).await;
            });
        }
    });
    Ok(addr)
}

async fn serve(mut s: TcpStream, feed: u64, payload: usize) -> Result<(), BenchError> {
    s.set_nodelay(true)?;
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    let mut wbuf = BytesMut::with_capacity(64 * 1024);
    let mut protocol = Protocol::V311;
    loop {
        rbuf.reserve(64 * 1024);
        if s.read_buf(&mut rbuf).await? == 0 {
            return Ok(());
        }
        let mut subscribed = None;
        while let Some(f) = wire::next_frame(&mut rbuf, protocol)? {
            match f {
                Frame::Publish(p) => match p.qos {
                    1 => wire::encode_puback(&mut wbuf, protocol, p.packet_id),
                    2 => wire::encode_ack(&mut wbuf, 0x50, p.packet_id),
                    _ => {}
                },
                Frame::Other(Packet::Connect(c)) => {
                    protocol = c.protocol;
                    Packet::ConnAck(ConnAck {
                        session_present: false,
                        reason: midge_codec::ReasonCode(0),
                        properties: Default::default(),
                    })
                    .encode(protocol, &mut wbuf)?;
                }
                Frame::Other(Packet::PubRel(a)) => wire::encode_ack(&mut wbuf, 0x70, a.packet_id),
                Frame::Other(Packet::PingReq) => Packet::PingResp.encode(protocol, &mut wbuf)?,
                Frame::Other(Packet::Subscribe(sub)) => {
                    let qos = sub.filters.first().map_or(QoS::AtMostOnce, |f| f.1.qos);
                    Packet::SubAck(SubAck {
                        packet_id: sub.packet_id,
                        properties: Default::default(),
                        reasons: vec![midge_codec::ReasonCode(0); sub.filters.len()],
                    })
                    .encode(protocol, &mut wbuf)?;
                    subscribed = Some(qos);
                }
                Frame::Other(Packet::Disconnect(_)) => return Ok(()),
                Frame::Other(_) => {}
            }
        }
        if !wbuf.is_empty() {
            s.write_all(&wbuf).await?;
            wbuf.clear();
        }
        if subscribed.is_some() && feed > 0 {
            // Flood at QoS 0 (the ceiling of parsing, not of acknowledging).
            let mut seq = 0;
            while seq < feed {
                for _ in 0..256 {
                    if seq >= feed {
                        break;
                    }
                    let h = PayloadHeader {
                        publisher: 0,
                        seq,
                        sent_ns: 0,
                    };
                    wire::encode_publish(
                        &mut wbuf,
                        protocol,
                        b"bench/0",
                        QoS::AtMostOnce,
                        0,
                        h,
                        payload,
                    );
                    seq += 1;
                }
                s.write_all(&wbuf).await?;
                wbuf.clear();
            }
        }
    }
}

/// Measure the tool's ceiling: `publishers` flat out into the sink, then one subscriber
/// reading `common.count` messages from it.
pub async fn run_sink(common: &Common, publishers: u32) -> Result<SinkResult, BenchError> {
    let count = common.count.unwrap_or(1_000_000);
    let addr = start_sink(count, common.payload).await?;
    let mut c = common.clone();
    c.addr = addr;
    c.count = Some(count);
    c.target_pid = None;
    c.transport = crate::Transport::Tcp;
    let publish = run_scenario(&c, &Scenario::new("sink-pub", publishers, 0)).await?;
    let mut c0 = c.clone();
    c0.qos = QoS::AtMostOnce;
    let subscribe = run_scenario(&c0, &Scenario::new("sink-sub", 0, 1)).await?;
    let cfg = ConnConfig::new(count.min(2000));
    let connect = run_conn(&c, &cfg).await?;
    Ok(SinkResult {
        publish,
        subscribe,
        connect,
    })
}
