//! Server settings (plain data; the binary builds them from its TOML file and flags).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What a listener speaks on its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListenerProtocol {
    /// MQTT directly on TCP (or TLS).
    #[default]
    Mqtt,
    /// MQTT in binary WebSocket messages (RFC 6455), for browsers; `wss` with TLS.
    WebSockets,
}

/// TLS settings of one listener (TLS 1.2 and 1.3 only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain, server certificate first (mosquitto's `certfile`).
    pub cert_file: PathBuf,
    /// PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) (mosquitto's `keyfile`).
    pub key_file: PathBuf,
    /// PEM CA certificates that client certificates must chain to (mosquitto's `cafile`).
    /// Without it clients are not asked for a certificate.
    pub ca_file: Option<PathBuf>,
    /// Refuse clients that do not present a valid certificate (needs `ca_file`).
    pub require_certificate: bool,
    /// Take the username from the client certificate (CN, else its first SAN); the
    /// CONNECT's username and password are ignored.
    pub use_identity_as_username: bool,
}

/// Who may connect through a listener and what they may do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthConfig {
    /// Allow clients without a username (or, without a password file, any client).
    pub allow_anonymous: bool,
    /// mosquitto_passwd-format password file.
    pub password_file: Option<PathBuf>,
    /// mosquitto-format ACL file; without it every client may publish and subscribe to
    /// anything (except publishing to `$SYS`).
    pub acl_file: Option<PathBuf>,
}

/// One listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// Address and port to bind (port 0 picks a free one).
    pub bind: SocketAddr,
    /// MQTT or WebSockets.
    pub protocol: ListenerProtocol,
    /// WebSocket path accepted; `None` accepts `/mqtt` and `/`.
    pub ws_path: Option<String>,
    /// TLS, if any.
    pub tls: Option<TlsConfig>,
    /// Authentication and authorization.
    pub auth: AuthConfig,
}

impl ListenerConfig {
    /// A plain MQTT listener that allows anonymous clients (the zero-config default).
    pub fn mqtt(bind: SocketAddr) -> ListenerConfig {
        ListenerConfig {
            bind,
            protocol: ListenerProtocol::Mqtt,
            ws_path: None,
            tls: None,
            auth: AuthConfig {
                allow_anonymous: true,
                password_file: None,
                acl_file: None,
            },
        }
    }

    /// `mqtt`, `mqtts`, `ws` or `wss`, for logs.
    pub fn scheme(&self) -> &'static str {
        match (self.protocol, self.tls.is_some()) {
            (ListenerProtocol::Mqtt, false) => "mqtt",
            (ListenerProtocol::Mqtt, true) => "mqtts",
            (ListenerProtocol::WebSockets, false) => "ws",
            (ListenerProtocol::WebSockets, true) => "wss",
        }
    }
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
    /// Durable state (data folder, sync mode, size limit); `None` = memory only.
    pub persistence: Option<midge_store::StoreOptions>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listeners: vec![ListenerConfig::mqtt(SocketAddr::from((
                [127, 0, 0, 1],
                1883,
            )))],
            broker: midge_core::Config::default(),
            max_connections: 0,
            connect_timeout: Duration::from_secs(10),
            sys_interval: Duration::from_secs(10),
            outbound_high_water: 1024 * 1024,
            persistence: None,
        }
    }
}
