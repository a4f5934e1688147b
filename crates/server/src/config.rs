//! Server settings (plain data; the binary builds them from its TOML file and flags).

use std::net::SocketAddr;
use std::time::Duration;

/// One listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Address and port to bind (port 0 picks a free one).
    pub bind: SocketAddr,
}

/// Everything the server needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Listeners (at least one).
    pub listeners: Vec<ListenerConfig>,
    /// Broker limits and protocol options.
    pub broker: midge_core::Config,
    /// Maximum simultaneous network connections (0 = no limit).
    pub max_connections: usize,
    /// How long a new connection may take to send its CONNECT.
    pub connect_timeout: Duration,
    /// How often `$SYS/broker/...` is published (zero disables it).
    pub sys_interval: Duration,
    /// Outbound bytes queued for one connection before it counts as slow: QoS 0 messages to
    /// it are dropped and QoS 1/2 wait in its session until it drains.
    pub outbound_high_water: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listeners: vec![ListenerConfig {
                bind: SocketAddr::from(([127, 0, 0, 1], 1883)),
            }],
            broker: midge_core::Config::default(),
            max_connections: 0,
            connect_timeout: Duration::from_secs(10),
            sys_interval: Duration::from_secs(10),
            outbound_high_water: 1024 * 1024,
        }
    }
}
