//! midge-bench: an MQTT load generator that speaks MQTT directly (midge-codec over tokio TCP,
//! batched writes) so that the tool is not the bottleneck.
//!
//! Scenarios: publishers only (`pub`), subscribers only (`sub`), publishers → subscribers
//! (`fan-in`, `fan-out`, `latency`, and publishes spread over many topics with wildcard
//! subscriptions: [`Spread`]), idle or short connections (`conn`) and a no-op sink that
//! shows the tool's own ceiling. Every connection is TCP, TLS or WebSocket ([`Transport`]).
//! Every payload carries (publisher, sequence, send time), so the receiving side counts
//! loss, duplicates and reordering per publisher and measures latency on one clock into an
//! HDR histogram.
//!
//! The library takes plain structs; the `midge bench` command maps its flags onto them.

use std::net::SocketAddr;
use std::time::Duration;

use midge_codec::{Protocol, QoS};

mod conn;
mod procstat;
mod progress;
pub mod report;
mod scenario;
mod sink;
mod spread;
mod stats;
mod transport;
pub mod wire;

pub use conn::{ConnConfig, ConnResult, run_conn};
pub use procstat::{ProcReport, rss_kb};
pub use scenario::{RunResult, Scenario, run_scenario};
pub use sink::{SinkResult, run_sink};
pub use spread::Spread;
pub use stats::Tracker;
pub use transport::{TlsSettings, Transport};

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Network I/O failed (TLS handshakes included).
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The broker sent bytes that do not decode.
    #[error("decode: {0}")]
    Decode(#[from] midge_codec::DecodeError),
    /// A packet could not be encoded.
    #[error("encode: {0}")]
    Encode(#[from] midge_codec::EncodeError),
    /// The broker answered something unexpected.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The broker refused the connection with this reason code.
    #[error("connection refused, reason code {0:#04x}")]
    Refused(u8),
    /// The broker closed the connection.
    #[error("connection closed by the broker")]
    Closed,
    /// Waited too long for a packet.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// Invalid settings.
    #[error("{0}")]
    Config(String),
}

/// Settings shared by every scenario.
#[derive(Debug, Clone)]
pub struct Common {
    /// Broker address (of the publishers, and of the subscribers unless `sub_addrs` is set).
    pub addr: SocketAddr,
    /// Brokers of the subscribers, taken in turn (subscriber i on `sub_addrs[i % len]`);
    /// empty: `addr`. Puts publishers and subscribers on different nodes of a cluster.
    pub sub_addrs: Vec<SocketAddr>,
    /// MQTT version of every connection.
    pub protocol: Protocol,
    /// QoS of publishes and subscriptions.
    pub qos: QoS,
    /// Payload size in bytes (at least the 20-byte benchmark header).
    pub payload: usize,
    /// Messages to publish in total (split across publishers), or connections to open.
    pub count: Option<u64>,
    /// Stop publishing after this long.
    pub duration: Option<Duration>,
    /// Broker process to sample (CPU, RSS).
    pub target_pid: Option<u32>,
    /// Show a live progress bar (only meaningful on a terminal).
    pub progress: bool,
    /// Client id prefix.
    pub client_prefix: String,
    /// Time allowed for each CONNECT/CONNACK.
    pub connect_timeout: Duration,
    /// TCP, TLS or WebSocket.
    pub transport: Transport,
}

impl Common {
    /// Defaults for a broker at `addr`: MQTT 3.1.1, QoS 0, 64-byte payloads.
    pub fn new(addr: SocketAddr) -> Common {
        Common {
            addr,
            sub_addrs: Vec::new(),
            protocol: Protocol::V311,
            qos: QoS::AtMostOnce,
            payload: 64,
            count: None,
            duration: None,
            target_pid: None,
            progress: false,
            client_prefix: format!("bench-{}", std::process::id()),
            connect_timeout: Duration::from_secs(10),
            transport: Transport::Tcp,
        }
    }
}

impl Common {
    /// The broker subscriber `i` connects to.
    pub fn sub_addr(&self, i: u32) -> SocketAddr {
        let n = self.sub_addrs.len().max(1);
        self.sub_addrs
            .get(i as usize % n)
            .copied()
            .unwrap_or(self.addr)
    }
}

/// A multi-threaded tokio runtime for the load generator.
pub fn runtime() -> Result<tokio::runtime::Runtime, BenchError> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_take_the_sub_brokers_in_turn_or_the_broker() {
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let mut c = Common::new(a);
        assert_eq!((c.sub_addr(0), c.sub_addr(7)), (a, a));
        let (b, d): (SocketAddr, SocketAddr) = (
            "127.0.0.1:2000".parse().unwrap(),
            "127.0.0.1:3000".parse().unwrap(),
        );
        c.sub_addrs = vec![b, d];
        let got: Vec<_> = (0..5).map(|i| c.sub_addr(i)).collect();
        assert_eq!(got, vec![b, d, b, d, b]);
    }
}
