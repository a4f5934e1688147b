//! Connection options: where to connect, how, and what to say in CONNECT.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use midge_codec::{Connect, MAX_PACKET_SIZE, Packet, Protocol};

/// How bytes reach the broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP (`mqtt://`, default port 1883).
    #[default]
    Tcp,
    /// TLS over TCP (`mqtts://`, default port 8883).
    Tls(TlsOptions),
    /// WebSocket (`ws://`), binary frames, subprotocol `mqtt`; the string is the path
    /// (for example `/mqtt`).
    Ws(String),
    /// WebSocket over TLS (`wss://`).
    Wss(String, TlsOptions),
    /// A Unix domain socket at this path (host and port are ignored).
    #[cfg(unix)]
    Unix(PathBuf),
    /// A byte stream opened by the application on every (re)connect: an in-process
    /// broker's local connection, a proxy, a test pipe (host and port are ignored).
    Custom(Connector),
}

/// Any byte stream a [`Connector`] may return.
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> AsyncStream for T {}

/// What a [`Connector`] returns: a boxed byte stream, or why none could be opened.
pub type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<Box<dyn AsyncStream>>> + Send>>;

/// Opens the byte stream for [`Transport::Custom`]; called once per connection attempt.
#[derive(Clone)]
pub struct Connector(pub Arc<dyn Fn() -> ConnectFuture + Send + Sync>);

impl Connector {
    /// Wrap a closure returning a future of a stream.
    pub fn new<F, Fut, S>(f: F) -> Connector
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<S>> + Send + 'static,
        S: AsyncStream + 'static,
    {
        Connector(Arc::new(move || {
            let fut = f();
            Box::pin(async move { fut.await.map(|s| Box::new(s) as Box<dyn AsyncStream>) })
        }))
    }
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Connector")
    }
}

/// Two connectors are equal when they are the same closure.
impl PartialEq for Connector {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Connector {}

/// The TLS protocol versions one may pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 only.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// TLS settings (mosquitto's `--cafile`, `--capath`, `--cert`, `--key`, `--insecure`,
/// `--tls-version`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// PEM file of trusted CA certificates. Without it and `ca_path`, the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// Directory of PEM CA certificates (every `.pem` / `.crt` file in it).
    pub ca_path: Option<PathBuf>,
    /// PEM client certificate chain.
    pub client_cert: Option<PathBuf>,
    /// PEM client private key (PKCS#8, PKCS#1 or SEC1).
    pub client_key: Option<PathBuf>,
    /// Skip all verification of the server certificate (name and chain). Testing only.
    pub insecure: bool,
    /// Pin one TLS version; both 1.2 and 1.3 are allowed otherwise.
    pub version: Option<TlsVersion>,
    /// Name to verify the certificate against, when not the host.
    pub server_name: Option<String>,
    /// ALPN protocols to offer.
    pub alpn: Vec<Vec<u8>>,
}

/// Which way a packet went, for [`PacketHook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Written to the server.
    Sent,
    /// Read from the server.
    Received,
}

/// A callback told about every packet sent and received (for `-d` style debug output).
#[derive(Clone)]
pub struct PacketHook(pub Arc<HookFn>);

/// The function type behind [`PacketHook`].
pub type HookFn = dyn Fn(Direction, &Packet) + Send + Sync;

impl PacketHook {
    /// Wrap a closure.
    pub fn new(f: impl Fn(Direction, &Packet) + Send + Sync + 'static) -> PacketHook {
        PacketHook(Arc::new(f))
    }
}

impl fmt::Debug for PacketHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PacketHook")
    }
}

/// Automatic reconnect: exponential backoff between `min` and `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// First delay.
    pub min: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            min: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

/// Everything needed to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Transport.
    pub transport: Transport,
    /// The CONNECT packet to send (protocol, client id, keep alive, clean start, will,
    /// credentials, MQTT 5 properties).
    pub connect: Connect,
    /// Time allowed for the TCP/TLS/WebSocket handshake and the CONNACK.
    pub connect_timeout: Duration,
    /// Reconnect automatically with backoff (off: errors end the poll with `Err`).
    pub reconnect: Option<Reconnect>,
    /// Largest packet accepted from the server.
    pub max_packet_size: u32,
    /// Capacity of the request channel between [`crate::Client`] handles and the event loop.
    pub request_capacity: usize,
    /// Debug hook called for every packet sent or received.
    pub packet_hook: Option<PacketHook>,
    /// Deliver incoming QoS 2 messages on PUBREL, as mosquitto's library does (default:
    /// on PUBLISH).
    pub qos2_deliver_on_pubrel: bool,
    /// Local address to bind the outgoing socket to (mosquitto's `-A`).
    pub bind_address: Option<std::net::IpAddr>,
    /// Our own cap on outgoing QoS 1/2 messages in flight (mosquitto's `-M`); the server's
    /// receive maximum applies too.
    pub max_inflight: Option<u16>,
    /// Acknowledge incoming QoS 1/2 messages only when the application calls
    /// [`crate::Client::ack`] (for example after storing them), instead of on arrival. An
    /// unacknowledged message is redelivered by the server after a reconnect if its session
    /// persists.
    pub manual_acks: bool,
}

impl ClientOptions {
    /// Options for `host:port` over TCP with a default MQTT 3.1.1 CONNECT
    /// (clean session, keep alive 60 s) for `client_id`.
    pub fn new(host: impl Into<String>, port: u16, client_id: &str) -> ClientOptions {
        ClientOptions {
            host: host.into(),
            port,
            transport: Transport::Tcp,
            connect: Connect::new(Protocol::V311, client_id),
            connect_timeout: Duration::from_secs(10),
            reconnect: None,
            max_packet_size: MAX_PACKET_SIZE,
            request_capacity: 1024,
            packet_hook: None,
            qos2_deliver_on_pubrel: false,
            bind_address: None,
            max_inflight: None,
            manual_acks: false,
        }
    }

    /// The protocol of the CONNECT.
    pub fn protocol(&self) -> Protocol {
        self.connect.protocol
    }
}
