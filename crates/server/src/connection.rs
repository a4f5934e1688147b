//! One task per network connection: read and decode with the maximum packet size checked
//! from the fixed header, hand packets to the router in batches, and write everything the
//! router queued with one write per wake-up. Keep alive is enforced here (1.5 times the
//! negotiated value), because it is about the socket.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use midge_codec::{ConnAck, Connect, DecodeError, Disconnect, Packet, Protocol, ReasonCode};
use midge_core::{CloseCause, ConnId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::router::{ConnHandle, Outgoing, RouterMsg, Shared, weight};
use crate::security::ListenerSecurity;
use crate::{Counters, ServerConfig};

/// What the listener learned about a connection before MQTT starts.
#[derive(Debug)]
pub(crate) struct Meta {
    /// The listener's security settings and files.
    pub(crate) security: Arc<ListenerSecurity>,
    /// Identity (CN or first SAN) of the client's TLS certificate, if it sent one.
    pub(crate) identity: Option<String>,
}

/// Per-connection settings derived from the server config.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) max_packet_size: u32,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) low_water: usize,
}

impl From<&ServerConfig> for Settings {
    fn from(c: &ServerConfig) -> Self {
        Settings {
            max_packet_size: c.broker.max_packet_size,
            connect_timeout: c.connect_timeout,
            max_connections: c.max_connections,
            low_water: c.outbound_high_water / 2,
        }
    }
}

const READ_CHUNK: usize = 4096;
const MAX_WRITE_BUFFER: usize = 64 * 1024;
/// A connection the server ends keeps reading (and dropping) what the client still sends
/// ([`Conn::linger_close`]) until the client has been quiet for `LINGER_IDLE`, and for at
/// most `LINGER_MAX` and `LINGER_BYTES` in all.
const LINGER_IDLE: Duration = Duration::from_secs(2);
const LINGER_MAX: Duration = Duration::from_secs(10);
const LINGER_BYTES: usize = 256 * 1024;

/// Serve one connection on any byte stream: TCP, TLS, WebSocket or WebSocket over TLS
/// (monomorphised per stream type: the plain TCP path has no boxing or extra copy).
///
/// Not an `async fn`: the connection record is built here and moved into the future once,
/// so the future does not keep the arguments twice (as captured arguments and as moved
/// locals), which every idle connection would pay for.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run<S: AsyncRead + AsyncWrite + Unpin + Send + WaitReadable>(
    id: ConnId,
    stream: S,
    meta: Meta,
    peer: SocketAddr,
    router: mpsc::Sender<RouterMsg>,
    settings: Arc<Settings>,
    counters: Arc<Counters>,
    slot: crate::Slot,
) -> impl std::future::Future<Output = ()> + Send {
    let span = info_span!(
        "conn",
        listener = meta.security.config.scheme(),
        %peer,
        id = id.0,
        client = tracing::field::Empty
    );
    let conn = Conn {
        id,
        stream,
        meta,
        rbuf: BytesMut::new(),
        wbuf: BytesMut::new(),
        counters,
        settings,
        first_level: None,
        _slot: slot,
    };
    conn.serve(router).instrument(span)
}

struct Conn<S> {
    id: ConnId,
    stream: S,
    meta: Meta,
    rbuf: BytesMut,
    wbuf: BytesMut,
    counters: Arc<Counters>,
    settings: Arc<Settings>,
    /// Protocol level byte of the first packet, peeked before decoding it.
    first_level: Option<u8>,
    /// Counts this connection as open while the task lives.
    _slot: crate::Slot,
}

enum ReadOutcome {
    Packets(Vec<Packet>),
    Eof,
    Failed(DecodeError),
    Io,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + WaitReadable> Conn<S> {
    async fn serve(mut self, router: mpsc::Sender<RouterMsg>) {
        // The handshake runs once, behind a box: its futures (connect timeout, password
        // check, refusals) are then not part of the state every idle connection keeps.
        let Some(connect) = Box::pin(self.handshake()).await else {
            return;
        };
        self.run_connected(router, connect).await;
    }

    /// Read the CONNECT (within the connect timeout), refuse a bad one, check the password.
    async fn handshake(&mut self) -> Option<Box<midge_codec::Connect>> {
        // the first packet must be a CONNECT, within the connect timeout
        let first = tokio::time::timeout(self.settings.connect_timeout, self.read_first()).await;
        let connect = match first {
            Err(_) => {
                debug!("no CONNECT within the connect timeout");
                return None;
            }
            Ok(Ok(Packet::Connect(c))) => c,
            Ok(Ok(other)) => {
                debug!(packet = %other.packet_type(), "first packet is not CONNECT [MQTT-3.1.0-1]");
                return None;
            }
            Ok(Err(Some(e))) => {
                self.refuse_connect(&e).await;
                return None;
            }
            Ok(Err(None)) => return None,
        };
        // passwords are checked here, off the router, so it never waits on PBKDF2
        self.authenticate(connect).await
    }

    async fn run_connected(
        &mut self,
        router: mpsc::Sender<RouterMsg>,
        connect: Box<midge_codec::Connect>,
    ) {
        let mut protocol = connect.protocol;
        let (tx, mut rx) = crate::outbox::outbox();
        let shared = Arc::new(Shared::default());
        let handle = ConnHandle {
            tx,
            shared: shared.clone(),
        };
        if router
            .send(RouterMsg::Connect {
                id: self.id,
                listener: self.meta.security.index,
                handle,
                connect,
            })
            .await
            .is_err()
        {
            return;
        }
        let mut keep_alive: Option<Duration> = None;
        let mut deadline = Instant::now() + Duration::from_secs(3600 * 24 * 365);
        let mut out = Vec::new();
        // packets the client sent after CONNECT in the same read
        if !self.rbuf.is_empty() {
            match self.decode_all(protocol) {
                Ok(packets) if !packets.is_empty() => {
                    if router
                        .send(RouterMsg::Packets(self.id, packets))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => return Box::pin(self.fail(&router, protocol, e)).await,
            }
        }
        loop {
            tokio::select! {
                n = rx.recv_all(&mut out) => {
                    if n == 0 {
                        return; // router gone
                    }
                    let mut close = false;
                    let mut weight_sum = 0;
                    for o in out.drain(..) {
                        match o {
                            Outgoing::Packet(p) => {
                                weight_sum += weight(&p);
                                if let Err(e) = p.encode(protocol, &mut self.wbuf) {
                                    debug!(error = %e, "cannot encode packet for this client; dropped");
                                }
                            }
                            Outgoing::Connected { keep_alive: ka, protocol: p, client_id } => {
                                protocol = p;
                                tracing::Span::current().record("client", &*client_id);
                                info!(client = %client_id, %protocol, keep_alive = ka, "client connected");
                                if ka > 0 {
                                    let d = Duration::from_millis(u64::from(ka) * 1500);
                                    keep_alive = Some(d);
                                    deadline = Instant::now() + d;
                                }
                            }
                            Outgoing::Close => close = true,
                        }
                    }
                    if !self.flush().await {
                        let _ = router.send(RouterMsg::Closed(self.id, CloseCause::Network)).await;
                        return;
                    }
                    let left = shared.queued.fetch_sub(weight_sum, Ordering::SeqCst) - weight_sum;
                    if left <= self.settings.low_water && shared.congested.load(Ordering::SeqCst)
                        && shared.congested.swap(false, Ordering::SeqCst)
                    {
                        let _ = router.send(RouterMsg::Drained(self.id)).await;
                    }
                    if close {
                        Box::pin(self.linger_close()).await;
                        return;
                    }
                    if rx.is_empty() {
                        // idle: hold no buffer memory
                        out = Vec::new();
                        self.wbuf = BytesMut::new();
                    }
                }
                r = self.read_packets(protocol) => {
                    match r {
                        ReadOutcome::Packets(packets) => {
                            // only a whole control packet counts as activity
                            // [MQTT-3.1.2-22]: bytes of an unfinished one do not
                            if let (Some(d), false) = (keep_alive, packets.is_empty()) {
                                deadline = Instant::now() + d;
                            }
                            if !packets.is_empty() && router.send(RouterMsg::Packets(self.id, packets)).await.is_err() {
                                return;
                            }
                        }
                        ReadOutcome::Eof | ReadOutcome::Io => {
                            debug!("connection closed by peer");
                            let _ = router.send(RouterMsg::Closed(self.id, CloseCause::Network)).await;
                            return;
                        }
                        ReadOutcome::Failed(e) => return Box::pin(self.fail(&router, protocol, e)).await,
                    }
                }
                _ = tokio::time::sleep_until(deadline), if keep_alive.is_some() => {
                    info!("keep alive timeout");
                    if protocol.is_v5() {
                        Box::pin(self.send_now(protocol, Packet::Disconnect(Disconnect::new(ReasonCode::KEEP_ALIVE_TIMEOUT)))).await;
                    }
                    let _ = router.send(RouterMsg::Closed(self.id, CloseCause::KeepAliveTimeout)).await;
                    return;
                }
            }
        }
    }

    /// Read until one whole packet is buffered and decode it (as a CONNECT decodes itself,
    /// the protocol passed is only a placeholder). `Err(None)` means EOF or I/O error.
    async fn read_first(&mut self) -> Result<Packet, Option<DecodeError>> {
        loop {
            // the first packet must be a CONNECT [MQTT-3.1.0-1]: judge it on its first byte
            // instead of buffering whatever size it announces until the connect timeout
            if let Some(&first) = self.rbuf.first() {
                if first != 0x10 {
                    debug!(
                        first_byte = first,
                        "first packet is not CONNECT [MQTT-3.1.0-1]"
                    );
                    return Err(None);
                }
            }
            self.first_level = connect_level(&self.rbuf);
            match midge_codec::decode(
                &mut self.rbuf,
                Protocol::V311,
                self.settings.max_packet_size,
            ) {
                Ok(Some(p)) => {
                    if self.rbuf.is_empty() {
                        // the CONNECT keeps its slice; the connection holds no buffer
                        self.rbuf = BytesMut::new();
                    }
                    return Ok(p);
                }
                Ok(None) => {}
                Err(e) => return Err(Some(e)),
            }
            self.rbuf.reserve(READ_CHUNK);
            match self.stream.read_buf(&mut self.rbuf).await {
                Ok(0) | Err(_) => return Err(None),
                Ok(n) => {
                    self.counters
                        .bytes_received
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
    }

    async fn read_packets(&mut self, protocol: Protocol) -> ReadOutcome {
        // wait for data before taking a buffer: an idle connection holds none
        if self.rbuf.is_empty() && self.stream.wait_readable().await.is_err() {
            return ReadOutcome::Io;
        }
        if self.rbuf.capacity() - self.rbuf.len() < 512 {
            self.rbuf.reserve(READ_CHUNK);
        }
        match self.stream.read_buf(&mut self.rbuf).await {
            Ok(0) => ReadOutcome::Eof,
            Err(_) => ReadOutcome::Io,
            Ok(n) => {
                self.counters
                    .bytes_received
                    .fetch_add(n as u64, Ordering::Relaxed);
                match self.decode_all(protocol) {
                    Ok(p) => ReadOutcome::Packets(p),
                    Err(e) => ReadOutcome::Failed(e),
                }
            }
        }
    }

    fn decode_all(&mut self, protocol: Protocol) -> Result<Vec<Packet>, DecodeError> {
        let mut packets = Vec::new();
        while let Some(p) =
            midge_codec::decode(&mut self.rbuf, protocol, self.settings.max_packet_size)?
        {
            packets.push(p);
        }
        if self.rbuf.is_empty() {
            // decoded packets share this allocation; let it go with them, so an idle
            // connection holds no read buffer
            self.rbuf = BytesMut::new();
        }
        Ok(packets)
    }

    async fn flush(&mut self) -> bool {
        if self.wbuf.is_empty() {
            return true;
        }
        let n = self.wbuf.len();
        if self.stream.write_all(&self.wbuf).await.is_err() {
            return false;
        }
        // a no-op for TCP; sends the message for WebSocket and the records for TLS
        if self.stream.flush().await.is_err() {
            return false;
        }
        self.counters
            .bytes_sent
            .fetch_add(n as u64, Ordering::Relaxed);
        self.wbuf.clear();
        if self.wbuf.capacity() > MAX_WRITE_BUFFER {
            self.wbuf = BytesMut::new();
        }
        true
    }

    async fn send_now(&mut self, protocol: Protocol, p: Packet) {
        if p.encode(protocol, &mut self.wbuf).is_ok() {
            self.flush().await;
        }
    }

    /// A decode error after CONNECT: tell an MQTT 5 client why (DISCONNECT with the reason
    /// code), let the router publish the will, and close.
    async fn fail(&mut self, router: &mpsc::Sender<RouterMsg>, protocol: Protocol, e: DecodeError) {
        info!(error = %e, "closing connection: bad packet");
        if protocol.is_v5() {
            self.send_now(
                protocol,
                Packet::Disconnect(Disconnect::new(e.reason_code())),
            )
            .await;
        }
        let _ = router
            .send(RouterMsg::Closed(self.id, CloseCause::ProtocolError))
            .await;
        self.linger_close().await;
    }

    /// End the connection without losing what was just written to it: shut down the write
    /// side (the client reads our last packets, e.g. the DISCONNECT with its reason code
    /// [MQTT-4.13.1-1] [MQTT-3.14.4-2], then EOF), then read and drop whatever the client
    /// still sends until it closes too or goes quiet (a client still acknowledging what we
    /// sent is still reading it), within [`LINGER_MAX`] and [`LINGER_BYTES`].
    ///
    /// Closing a socket at once would make the kernel answer the client's next bytes (or
    /// input still unread here) with a reset, which fails the client's writes and may
    /// discard our packets before the client has read them: a client acknowledging the
    /// PUBRECs that preceded a DISCONNECT 0x93 got EPIPE instead of the DISCONNECT.
    async fn linger_close(&mut self) {
        let _ = self.stream.shutdown().await;
        let end = Instant::now() + LINGER_MAX;
        let mut drained = 0;
        self.rbuf.clear();
        while drained < LINGER_BYTES {
            self.rbuf.reserve(READ_CHUNK);
            let quiet = end.min(Instant::now() + LINGER_IDLE);
            match tokio::time::timeout_at(quiet, self.stream.read_buf(&mut self.rbuf)).await {
                Ok(Ok(n)) if n > 0 => {
                    drained += n;
                    self.rbuf.clear();
                }
                _ => break,
            }
        }
        self.rbuf = BytesMut::new();
    }

    /// Check the CONNECT against the listener's rules: identity from the client certificate,
    /// password file, anonymous access. A refused client gets its CONNACK (0x86 / 4 for a
    /// bad username or password, 0x87 / 5 otherwise) and `None` is returned.
    async fn authenticate(&mut self, mut connect: Box<Connect>) -> Option<Box<Connect>> {
        let security = self.meta.security.clone();
        let use_identity = security
            .config
            .tls
            .as_ref()
            .is_some_and(|t| t.use_identity_as_username);
        if use_identity {
            return match self.meta.identity.take() {
                Some(identity) => {
                    connect.username = Some(identity.into());
                    connect.password = None;
                    Some(connect)
                }
                None => {
                    self.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
                    warn!("connection refused: no client certificate identity to use as username");
                    self.refuse(connect.protocol, ReasonCode::NOT_AUTHORIZED)
                        .await;
                    None
                }
            };
        }
        let allow_anonymous = security.config.auth.allow_anonymous;
        match (connect.username.clone(), security.passwords()) {
            (Some(user), Some(passwords)) => {
                let password = connect.password.clone().unwrap_or_default();
                let name = user.clone();
                let ok = tokio::task::spawn_blocking(move || passwords.verify(&name, &password))
                    .await
                    .unwrap_or(false);
                if !ok {
                    self.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
                    warn!(username = %user, client = %connect.client_id, "login failed: bad username or password");
                    self.refuse(connect.protocol, ReasonCode::BAD_USER_NAME_OR_PASSWORD)
                        .await;
                    return None;
                }
            }
            (user, passwords) if !allow_anonymous => {
                self.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
                let why = if passwords.is_none() {
                    "anonymous access is off and this listener has no password_file"
                } else {
                    "no username and anonymous access is off"
                };
                warn!(username = user.as_deref().unwrap_or(""), client = %connect.client_id, "connection refused: {why}");
                self.refuse(connect.protocol, ReasonCode::NOT_AUTHORIZED)
                    .await;
                return None;
            }
            _ => {}
        }
        Some(connect)
    }

    async fn refuse(&mut self, protocol: Protocol, reason: ReasonCode) {
        let ack = Packet::ConnAck(ConnAck {
            session_present: false,
            reason,
            properties: Default::default(),
        });
        self.send_now(protocol, ack).await;
        self.linger_close().await;
    }

    /// A CONNECT that could not be decoded: answer with a CONNACK the client can read
    /// (MQTT 5 reason code for a level-5 CONNECT, 3.x return code otherwise), then close.
    async fn refuse_connect(&mut self, e: &DecodeError) {
        info!(error = %e, "refusing connection: bad CONNECT");
        let level = self.first_level;
        let (protocol, reason) = match e {
            DecodeError::UnsupportedProtocolLevel(_) | DecodeError::InvalidProtocolName(_) => {
                (Protocol::V311, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION)
            }
            _ if level == Some(5) => (Protocol::V5, e.reason_code()),
            // 3.x has no CONNACK code for a malformed CONNECT: just close [MQTT-4.8.0-1]
            _ => {
                let _ = self.stream.shutdown().await;
                return;
            }
        };
        let ack = Packet::ConnAck(ConnAck {
            session_present: false,
            reason,
            properties: Default::default(),
        });
        self.send_now(protocol, ack).await;
        self.linger_close().await;
    }
}

/// The protocol level byte of a CONNECT at the front of `buf`, if it is there.
fn connect_level(buf: &[u8]) -> Option<u8> {
    let header = midge_codec::frame_header(buf, u32::MAX).ok()??;
    let body = buf.get(header.header_len..)?;
    let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + name_len).copied()
}

/// Waiting for a stream to become readable without holding a read buffer. Plain TCP can
/// (`readable()`); TLS and WebSocket streams keep their own buffers anyway and are simply
/// read.
pub(crate) trait WaitReadable {
    /// Resolves when a read would not block (or may; a spurious wake-up is harmless).
    fn wait_readable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send;
}

impl WaitReadable for tokio::net::TcpStream {
    fn wait_readable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send {
        self.readable()
    }
}

impl<S: Send + Sync> WaitReadable for tokio_rustls::server::TlsStream<S> {
    fn wait_readable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

/// In-process connections ([`crate::LocalConnector`]): few, so they may keep a buffer.
impl WaitReadable for tokio::io::DuplexStream {
    fn wait_readable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

impl<S: Send + Sync> WaitReadable for crate::ws::WsStream<S> {
    fn wait_readable(&self) -> impl std::future::Future<Output = std::io::Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}
