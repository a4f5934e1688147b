//! One task per network connection: read and decode with the maximum packet size checked
//! from the fixed header, hand packets to the router in batches, and write everything the
//! router queued with one write per wake-up. Keep alive is core's: it sees every whole
//! packet and closes a silent connection itself (DISCONNECT 0x8D, then Close).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use midge_codec::{Connect, DecodeError, Packet, Protocol};
use midge_core::{CloseCause, ConnId, ConnectRefusal};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::ServerConfig;
use crate::outbox::OutboxRx;
use crate::router::{ConnHandle, Outgoing, RouterMsg, Shared, weight};
use crate::security::ListenerSecurity;

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
    pub(crate) high_water: usize,
    /// A cluster's claim on a client's session, awaited before core sees the CONNECT.
    pub(crate) claim: Option<crate::cluster::ClaimHandle>,
    /// Where idle plain-TCP connections go without a task (`None`: they keep theirs).
    pub(crate) parker: Option<crate::park::Parker>,
}

impl From<&ServerConfig> for Settings {
    fn from(c: &ServerConfig) -> Self {
        Settings {
            max_packet_size: c.broker.max_packet_size,
            connect_timeout: c.connect_timeout,
            max_connections: c.max_connections,
            high_water: c.outbound_high_water,
            claim: None,
            parker: None,
        }
    }
}

const READ_CHUNK: usize = 4096;
const MAX_WRITE_BUFFER: usize = 64 * 1024;
/// A PUBLISH payload at least this large is written from the message itself (after its
/// encoded head), not copied into the connection's write buffer: a firmware image for a
/// thousand devices is then one copy in memory, not a thousand.
const BIG_PAYLOAD: usize = 16 * 1024;
/// A connection the server ends keeps reading (and dropping) what the client still sends
/// ([`Conn::linger_close`]) until the client has been quiet for `LINGER_IDLE`, and for at
/// most `LINGER_MAX` and `LINGER_BYTES` in all.
const LINGER_IDLE: Duration = Duration::from_secs(2);
const LINGER_MAX: Duration = Duration::from_secs(10);
const LINGER_BYTES: usize = 256 * 1024;

/// Serve one connection on any byte stream: TCP, TLS, WebSocket or WebSocket over TLS
/// (monomorphised per stream type: the plain TCP path has no boxing or extra copy).
///
/// Not an `async fn`, and the handshake is built here, boxed: what the returned future
/// keeps for the connection's whole life is the connection record once (an `async fn`
/// would keep its arguments twice, as captured arguments and as moved locals) and the
/// small state of [`Conn::serve`]. Every idle connection pays for that state; a test
/// (`the_idle_connection_future_stays_small`) bounds it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run<S: AsyncRead + AsyncWrite + Unpin + Send + ReadReady>(
    id: ConnId,
    stream: S,
    meta: Meta,
    peer: SocketAddr,
    router: mpsc::Sender<RouterMsg>,
    settings: Arc<Settings>,
    slot: crate::Slot,
) -> impl std::future::Future<Output = ()> + Send {
    let span = info_span!(
        "conn",
        listener = meta.security.config.scheme(),
        %peer,
        id = id.0,
        client = tracing::field::Empty
    );
    let shared = Shared {
        peer: Some(peer),
        ..Shared::default()
    };
    let (tx, rx) = crate::outbox::outbox(shared);
    let conn = Conn::new(id, stream, rx, router, settings, slot, Protocol::V311, true);
    // The handshake runs once, behind a box: its futures (connect timeout, password check,
    // refusals) are then not part of the state every idle connection keeps.
    let handshake = Box::pin(handshake(conn, meta, tx));
    async move {
        // `let else`, not `if let`: the matched `Option` is then not kept beside `conn`
        let Some(mut conn) = handshake.await else {
            return;
        };
        if conn.serve().await {
            conn.park();
        }
    }
    .instrument(span)
}

/// An idle connection without a task ([`crate::park`]): what its task needs to go on.
#[derive(Debug)]
pub(crate) struct ParkedConn {
    id: ConnId,
    rx: OutboxRx<Outgoing, Shared>,
    router: mpsc::Sender<RouterMsg>,
    settings: Arc<Settings>,
    slot: crate::Slot,
    protocol: Protocol,
    /// The connection's span, when logging at its level (boxed: else it takes 40 B).
    span: Option<Box<tracing::Span>>,
}

impl ParkedConn {
    /// Have `waker` woken by the next packet the router queues (or when it drops the
    /// outbox); true if there is something already.
    pub(crate) fn wait_outbox(&mut self, waker: Waker) -> bool {
        self.rx.park(waker)
    }

    /// The connection could not be watched or started again: it is closed.
    pub(crate) fn lost(self) {
        let _ = self
            .router
            .try_send(RouterMsg::Closed(self.id, CloseCause::Network));
    }
}

/// Start a parked connection again on its socket (the parker calls this on its first
/// event).
pub(crate) fn resume(
    stream: tokio::net::TcpStream,
    parked: ParkedConn,
) -> impl Future<Output = ()> + Send {
    let ParkedConn {
        id,
        rx,
        router,
        settings,
        slot,
        protocol,
        span,
    } = parked;
    // started again by traffic: active, and it waits the longer delay before parking again
    let mut conn = Conn::new(id, stream, rx, router, settings, slot, protocol, false);
    async move {
        if conn.serve().await {
            conn.park();
        }
    }
    .instrument(span.map_or_else(tracing::Span::none, |s| *s))
}

/// A connection past its handshake, and during it (inside the boxed handshake future).
struct Conn<S> {
    id: ConnId,
    stream: S,
    /// Bytes read and not yet decoded; no allocation while idle on a stream that can wait
    /// for readiness ([`ReadReady::WAITS`]).
    rbuf: BytesMut,
    /// Encoded packets being written; no allocation while idle.
    wbuf: BytesMut,
    /// What was taken from the outbox (swapped with the outbox's vector, so a busy
    /// connection reuses two allocations).
    out: Vec<Outgoing>,
    /// The router's packets for this connection, and the state shared with it.
    rx: OutboxRx<Outgoing, Shared>,
    router: mpsc::Sender<RouterMsg>,
    settings: Arc<Settings>,
    /// Counts this connection as open while the task lives; the byte counters.
    slot: crate::Slot,
    protocol: Protocol,
    /// Which of the outbox and the socket the next idle poll looks at first (alternating,
    /// so neither starves the other).
    read_first: bool,
    /// Something was read or taken from the outbox since the park timer was last set.
    active: bool,
    /// Nothing was read since the CONNECT: the connection parks after the shorter delay.
    fresh: bool,
    /// Fires [`crate::park::PARK_AFTER`] after the connection went idle (plain TCP with a
    /// parker only; boxed: a busy connection keeps it, a parked one none).
    park_timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// What woke an idle connection.
enum Event {
    /// Items were taken from the outbox into `Conn::out`.
    Outbox,
    /// The router dropped the outbox.
    RouterGone,
    /// Bytes were read into `Conn::rbuf`.
    Read(usize),
    Eof,
    Io,
    /// Idle for [`crate::park::PARK_AFTER`] with no buffer: give up the task.
    Park,
}

/// Read the CONNECT (within the connect timeout), refuse a bad one, check the password,
/// hand it to the router with the connection's outbox, and pass on the packets that came
/// with it. `None`: the connection is over.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin + Send + ReadReady>(
    mut conn: Conn<S>,
    mut meta: Meta,
    handle: ConnHandle,
) -> Option<Conn<S>> {
    // the first packet must be a CONNECT, within the connect timeout
    let mut first_level = None;
    let first = tokio::time::timeout(
        conn.settings.connect_timeout,
        conn.read_first(&mut first_level),
    )
    .await;
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
            conn.refuse_connect(&e, first_level).await;
            return None;
        }
        Ok(Err(None)) => return None,
    };
    // passwords are checked here, off the router, so it never waits on PBKDF2
    let connect = conn.authenticate(&mut meta, connect).await?;
    conn.protocol = connect.protocol;
    // in a cluster, the node holding the client's session hands it over first (the
    // server's own clients, `$midge/...`, are per node)
    if let Some(claim) = &conn.settings.claim {
        let id: &str = &connect.client_id;
        if !id.is_empty() && !id.starts_with(midge_core::INTERNAL_CLIENT_ID_PREFIX) {
            claim.0.claim(id).await;
        }
    }
    let msg = RouterMsg::Connect {
        id: conn.id,
        listener: meta.security.index,
        handle,
        connect,
    };
    if conn.router.send(msg).await.is_err() {
        return None;
    }
    // packets the client sent after CONNECT in the same read
    if !conn.rbuf.is_empty() {
        match conn.decode_all() {
            Ok(packets) if !packets.is_empty() => {
                if conn
                    .router
                    .send(RouterMsg::Packets(conn.id, packets))
                    .await
                    .is_err()
                {
                    return None;
                }
            }
            Ok(_) => {}
            Err(e) => {
                conn.fail(e).await;
                return None;
            }
        }
    }
    Some(conn)
}

impl<S> Conn<S> {
    /// A connection with no buffers yet; `fresh`: just accepted (it parks after the
    /// shorter delay), else started again by traffic on a parked connection.
    #[allow(clippy::too_many_arguments)]
    fn new(
        id: ConnId,
        stream: S,
        rx: OutboxRx<Outgoing, Shared>,
        router: mpsc::Sender<RouterMsg>,
        settings: Arc<Settings>,
        slot: crate::Slot,
        protocol: Protocol,
        fresh: bool,
    ) -> Conn<S> {
        Conn {
            id,
            stream,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            out: Vec::new(),
            rx,
            router,
            settings,
            slot,
            protocol,
            read_first: false,
            active: !fresh,
            fresh,
            park_timer: None,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + ReadReady> Conn<S> {
    /// The connected connection: write what the router queues, read and decode what the
    /// client sends, until either side ends it. Waiting is one poll over the outbox and
    /// the socket's readiness, so an idle connection keeps no futures and no buffers.
    ///
    /// An `async` block rather than an `async fn` (which would keep `self` twice), and every
    /// await is on a small value that a plain function prepared ([`Step`]): what is live
    /// across an await is part of every connection's state.
    ///
    /// Resolves to true when the connection should be parked ([`Conn::park`]).
    #[allow(clippy::manual_async_fn)] // on purpose, see above
    fn serve(&mut self) -> impl Future<Output = bool> + Send + '_ {
        async move {
            loop {
                let step = match std::future::poll_fn(|cx| self.poll_idle(cx)).await {
                    Event::Outbox => {
                        let (weight, end) = self.encode_outbox();
                        let written = std::future::poll_fn(|cx| self.poll_flush(cx)).await;
                        self.written(weight, end, written.is_ok())
                    }
                    Event::Read(n) => {
                        self.fresh = false;
                        self.received(n)
                    }
                    Event::Eof | Event::Io => {
                        debug!("connection closed by peer");
                        let msg = RouterMsg::Closed(self.id, CloseCause::Network);
                        to_router(&self.router, msg, false)
                    }
                    Event::RouterGone => return false,
                    Event::Park => return true,
                };
                if !step.await {
                    return false;
                }
            }
        }
    }

    /// Encode everything taken from the outbox into `wbuf`. Returns the bytes it was
    /// counted as, and how the connection ends after the write (if it does).
    fn encode_outbox(&mut self) -> (usize, End) {
        let mut weight_sum = 0;
        let mut end = End::No;
        let protocol = &mut self.protocol;
        let mut items = std::mem::take(&mut self.out);
        // with a large payload: what goes to the wire, in order (the write buffer's bytes
        // so far, then the payload itself), written before what is left in `wbuf`
        let mut wire: Vec<Outgoing> = Vec::new();
        for o in items.drain(..) {
            match o {
                Outgoing::Packet(p) => {
                    weight_sum += weight(&p);
                    let big = match &p {
                        Packet::Publish(pb) if pb.payload.len() >= BIG_PAYLOAD => {
                            Some(pb.payload.clone())
                        }
                        _ => None,
                    };
                    let encoded = match &big {
                        Some(_) => p.encode_head(*protocol, &mut self.wbuf),
                        None => p.encode(*protocol, &mut self.wbuf),
                    };
                    match (encoded, big) {
                        (Err(e), _) => {
                            debug!(error = %e, "cannot encode packet for this client; dropped");
                        }
                        (Ok(()), Some(payload)) => {
                            wire.push(Outgoing::Wire(self.wbuf.split().freeze()));
                            wire.push(Outgoing::Wire(payload));
                        }
                        (Ok(()), None) => {}
                    }
                }
                Outgoing::Connected {
                    keep_alive,
                    protocol: p,
                    client_id,
                } => {
                    *protocol = p;
                    tracing::Span::current().record("client", &*client_id);
                    info!(client = %client_id, protocol = %p, keep_alive, "client connected");
                }
                Outgoing::Close => end = End::Close,
                Outgoing::Wire(b) => wire.push(Outgoing::Wire(b)),
            }
        }
        // the emptied vector is kept for the next batch unless the wire segments need it
        self.out = if wire.is_empty() { items } else { wire };
        (weight_sum, end)
    }

    /// After a write: report a failed write, count the bytes as gone (telling the router
    /// when a congested connection drained), close if told to, and give back the buffers
    /// when nothing more is queued.
    fn written(&mut self, weight: usize, end: End, ok: bool) -> Step<'_> {
        if !ok {
            return to_router(
                &self.router,
                RouterMsg::Closed(self.id, CloseCause::Network),
                false,
            );
        }
        if end == End::Close {
            // the router already forgot this connection: no Drained
            return Step::Close(Box::pin(self.linger_close()));
        }
        if self.rx.is_empty() {
            // idle: hold no buffer memory
            self.out = Vec::new();
            self.wbuf = BytesMut::new();
        }
        if self
            .rx
            .shared()
            .congestion
            .written(weight, self.settings.high_water)
        {
            return to_router(&self.router, RouterMsg::Drained(self.id), true);
        }
        Step::Done(true)
    }

    /// `n` bytes were read: decode every whole packet and hand them to the router, or fail
    /// the connection on a bad one.
    fn received(&mut self, n: usize) -> Step<'_> {
        self.slot
            .counters()
            .bytes_received
            .fetch_add(n as u64, Ordering::Relaxed);
        let packets = match self.decode_all() {
            Ok(packets) => packets,
            Err(e) => return Step::Close(Box::pin(self.fail(e))),
        };
        if packets.is_empty() {
            return Step::Done(true);
        }
        // only a whole control packet counts as keep-alive activity [MQTT-3.1.2-22]: core
        // sees the packets, never the bytes of an unfinished one
        to_router(&self.router, RouterMsg::Packets(self.id, packets), true)
    }

    /// Wait for the outbox or the socket, alternating which is looked at first; on a
    /// plain TCP connection with a parker, also for the park timer.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        self.read_first = !self.read_first;
        let event = if self.read_first {
            match self.poll_read(cx) {
                Poll::Pending => self.poll_outbox(cx),
                ready => ready,
            }
        } else {
            match self.poll_outbox(cx) {
                Poll::Pending => self.poll_read(cx),
                ready => ready,
            }
        };
        if event.is_ready() {
            self.active = true;
            return event;
        }
        if S::PARKS && self.settings.parker.is_some() {
            return self.poll_park_timer(cx);
        }
        Poll::Pending
    }

    /// Idle: set the park timer if it is not, and park when it fires with nothing done
    /// since it was set (else set it again). A connection that sent nothing since its
    /// CONNECT parks after [`crate::park::PARK_FRESH_AFTER`] (most idle clients are
    /// that), others after [`crate::park::PARK_AFTER`].
    fn poll_park_timer(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        let after = if self.fresh {
            crate::park::PARK_FRESH_AFTER
        } else {
            crate::park::PARK_AFTER
        };
        let timer = self
            .park_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if self.active || !self.rbuf.is_empty() {
                // one timer for a busy connection: checked every PARK_AFTER
                self.active = false;
                timer.as_mut().reset(Instant::now() + after);
                continue;
            }
            self.park_timer = None;
            return Poll::Ready(Event::Park);
        }
    }

    /// Give the connection to the parker and end the task (see [`crate::park`]); if it
    /// cannot be parked it is closed as a network failure would close it.
    fn park(self) {
        let Conn {
            id,
            stream,
            rx,
            router,
            settings,
            slot,
            protocol,
            ..
        } = self;
        let Some(parker) = settings.parker.clone() else {
            return;
        };
        let conn = ParkedConn {
            id,
            rx,
            router,
            settings,
            slot,
            protocol,
            span: Some(tracing::Span::current())
                .filter(|s| !s.is_none())
                .map(Box::new),
        };
        let Some(stream) = stream.into_parkable() else {
            conn.lost();
            return;
        };
        let parked = crate::park::Parked { stream, conn };
        if let Err(parked) = parker.park(parked) {
            parked.conn.lost();
        }
    }

    fn poll_outbox(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        self.rx.poll_recv_all(cx, &mut self.out).map(|n| {
            if n == 0 {
                Event::RouterGone
            } else {
                Event::Outbox
            }
        })
    }

    /// Wait for data before taking a buffer (an idle connection holds none), then read.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if self.rbuf.is_empty() {
            match self.stream.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(Event::Io),
                Poll::Ready(Ok(())) => {}
            }
        }
        if self.rbuf.capacity() - self.rbuf.len() < 512 {
            self.rbuf.reserve(READ_CHUNK);
        }
        // one poll of a read; dropping it when pending is fine (it keeps nothing, and the
        // stream has registered the waker)
        let read = std::pin::pin!(self.stream.read_buf(&mut self.rbuf)).poll(cx);
        match read {
            Poll::Pending => {
                if S::WAITS && self.rbuf.is_empty() {
                    // readiness was stale: give the buffer back until data comes
                    self.rbuf = BytesMut::new();
                }
                Poll::Pending
            }
            Poll::Ready(Ok(0)) => Poll::Ready(Event::Eof),
            Poll::Ready(Err(_)) => Poll::Ready(Event::Io),
            Poll::Ready(Ok(n)) => Poll::Ready(Event::Read(n)),
        }
    }

    /// Write all of `wbuf` and flush the stream (a no-op for TCP; sends the message for
    /// WebSocket and the records for TLS).
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // large payloads and what came before them (`encode_outbox`), in order
        let mut done = 0;
        while let Some(Outgoing::Wire(front)) = self.out.get_mut(done) {
            if front.is_empty() {
                done += 1;
                continue;
            }
            let n = match Pin::new(&mut self.stream).poll_write(cx, front) {
                Poll::Ready(r) => r?,
                Poll::Pending => {
                    self.out.drain(..done);
                    return Poll::Pending;
                }
            };
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.slot
                .counters()
                .bytes_sent
                .fetch_add(n as u64, Ordering::Relaxed);
            front.advance(n);
        }
        self.out.drain(..done);
        while !self.wbuf.is_empty() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &self.wbuf))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.slot
                .counters()
                .bytes_sent
                .fetch_add(n as u64, Ordering::Relaxed);
            self.wbuf.advance(n);
        }
        ready!(Pin::new(&mut self.stream).poll_flush(cx))?;
        if self.wbuf.capacity() > MAX_WRITE_BUFFER {
            self.wbuf = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }

    /// Read until one whole packet is buffered and decode it (as a CONNECT decodes itself,
    /// the protocol passed is only a placeholder). `Err(None)` means EOF or I/O error.
    /// `level` is the protocol level byte of the first packet, peeked before decoding it.
    async fn read_first(&mut self, level: &mut Option<u8>) -> Result<Packet, Option<DecodeError>> {
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
            *level = connect_level(&self.rbuf);
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
                    self.slot
                        .counters()
                        .bytes_received
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
    }

    fn decode_all(&mut self) -> Result<Vec<Packet>, DecodeError> {
        let mut packets = Vec::new();
        while let Some(p) =
            midge_codec::decode(&mut self.rbuf, self.protocol, self.settings.max_packet_size)?
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

    async fn send_now(&mut self, p: Packet) {
        if p.encode(self.protocol, &mut self.wbuf).is_ok() {
            let _ = std::future::poll_fn(|cx| self.poll_flush(cx)).await;
        }
    }

    /// A decode error after CONNECT: tell an MQTT 5 client why (DISCONNECT with the reason
    /// code), let the router publish the will, and close.
    async fn fail(&mut self, e: DecodeError) {
        info!(error = %e, "closing connection: bad packet");
        if let Some(disconnect) = midge_core::refuse_bad_packet(self.protocol, &e) {
            self.send_now(disconnect).await;
        }
        let _ = self
            .router
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
    /// password file, anonymous access. A refused client gets the CONNACK core picks for
    /// the [`ConnectRefusal`] (`midge_core::refuse_login`) and `None` is returned.
    async fn authenticate(
        &mut self,
        meta: &mut Meta,
        mut connect: Box<Connect>,
    ) -> Option<Box<Connect>> {
        let security = meta.security.clone();
        let counters = self.slot.counters();
        let use_identity = security
            .config
            .tls
            .as_ref()
            .is_some_and(|t| t.use_identity_as_username);
        if use_identity {
            return match meta.identity.take() {
                Some(identity) => {
                    // a device's certificate identity logs in as the device, if enabled
                    let identity = match security
                        .registry
                        .as_ref()
                        .and_then(|r| r.certificate_login(&identity))
                    {
                        Some((_, false)) => {
                            counters.auth_failures.fetch_add(1, Ordering::Relaxed);
                            warn!(identity = %identity, "connection refused: the device is disabled");
                            self.refuse(connect.protocol, ConnectRefusal::NotAuthorized)
                                .await;
                            return None;
                        }
                        Some((username, true)) => username,
                        None => identity,
                    };
                    connect.username = Some(identity.into());
                    connect.password = None;
                    Some(connect)
                }
                None => {
                    counters.auth_failures.fetch_add(1, Ordering::Relaxed);
                    warn!("connection refused: no client certificate identity to use as username");
                    self.refuse(connect.protocol, ConnectRefusal::NotAuthorized)
                        .await;
                    None
                }
            };
        }
        // the device registry first, for the usernames it knows (one lookup for the others)
        if let (Some(user), Some(registry)) = (&connect.username, &security.registry) {
            if registry.knows(user) {
                let registry = registry.clone();
                let password = connect.password.clone().unwrap_or_default();
                let name = user.clone();
                let login = tokio::task::spawn_blocking(move || registry.login(&name, &password))
                    .await
                    .unwrap_or(midge_auth::Login::BadSecret);
                let reason = match login {
                    midge_auth::Login::Accepted => return Some(connect),
                    midge_auth::Login::Unknown => None,
                    midge_auth::Login::Disabled => Some(ConnectRefusal::NotAuthorized),
                    midge_auth::Login::BadSecret => Some(ConnectRefusal::BadCredentials),
                };
                if let Some(reason) = reason {
                    counters.auth_failures.fetch_add(1, Ordering::Relaxed);
                    warn!(username = %user, client = %connect.client_id, disabled = login == midge_auth::Login::Disabled, "device login refused");
                    self.refuse(connect.protocol, reason).await;
                    return None;
                }
            }
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
                    counters.auth_failures.fetch_add(1, Ordering::Relaxed);
                    warn!(username = %user, client = %connect.client_id, "login failed: bad username or password");
                    self.refuse(connect.protocol, ConnectRefusal::BadCredentials)
                        .await;
                    return None;
                }
            }
            (user, passwords) if !allow_anonymous => {
                counters.auth_failures.fetch_add(1, Ordering::Relaxed);
                let why = if passwords.is_none() {
                    "anonymous access is off and this listener has no password_file"
                } else {
                    "no username and anonymous access is off"
                };
                warn!(username = user.as_deref().unwrap_or(""), client = %connect.client_id, "connection refused: {why}");
                self.refuse(connect.protocol, ConnectRefusal::NotAuthorized)
                    .await;
                return None;
            }
            _ => {}
        }
        Some(connect)
    }

    /// Refuse a decoded CONNECT for `cause` (core picks the code), then close.
    async fn refuse(&mut self, protocol: Protocol, cause: ConnectRefusal) {
        self.answer_and_close(protocol, midge_core::refuse_login(cause))
            .await;
    }

    async fn answer_and_close(&mut self, protocol: Protocol, ack: Packet) {
        self.protocol = protocol;
        self.send_now(ack).await;
        self.linger_close().await;
    }

    /// A CONNECT that could not be decoded: answer as core says (a CONNACK the client can
    /// read, or nothing for a malformed 3.x CONNECT), then close.
    async fn refuse_connect(&mut self, e: &DecodeError, level: Option<u8>) {
        info!(error = %e, "refusing connection: bad CONNECT");
        match midge_core::refuse_bad_connect(e, level) {
            Some((protocol, ack)) => self.answer_and_close(protocol, ack).await,
            // 3.x has no CONNACK code for a malformed CONNECT: just close
            None => {
                let _ = self.stream.shutdown().await;
            }
        }
    }
}

/// How a connection ends after the write of what it took from its outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    No,
    /// The router closed it ([`Outgoing::Close`]).
    Close,
}

/// Hand a message to the router, then go on if `then` (and the router is there). The
/// channel is rarely full, so the wait for room is boxed: the `send` future is then not
/// part of every connection's state.
fn to_router(router: &mpsc::Sender<RouterMsg>, msg: RouterMsg, then: bool) -> Step<'_> {
    match router.try_send(msg) {
        Ok(()) => Step::Done(then),
        Err(mpsc::error::TrySendError::Closed(_)) => Step::Done(false),
        Err(mpsc::error::TrySendError::Full(msg)) => Step::Send(Box::pin(router.send(msg)), then),
    }
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a connection does next, as one small future: resolves to whether it goes on.
enum Step<'a> {
    /// Go on (true) or end (false) now.
    Done(bool),
    /// Wait for room in the router's channel, then go on if the flag says so.
    Send(
        BoxFuture<'a, Result<(), mpsc::error::SendError<RouterMsg>>>,
        bool,
    ),
    /// Run a closing sequence (boxed: cold), then end.
    Close(BoxFuture<'a, ()>),
}

impl Future for Step<'_> {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        match self.get_mut() {
            Step::Done(go_on) => Poll::Ready(*go_on),
            Step::Send(f, then) => f.as_mut().poll(cx).map(|r| r.is_ok() && *then),
            Step::Close(f) => f.as_mut().poll(cx).map(|()| false),
        }
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
/// (`poll_read_ready`); TLS and WebSocket streams keep their own buffers anyway and are
/// simply read.
pub(crate) trait ReadReady: Sized {
    /// Whether [`ReadReady::poll_read_ready`] really waits for data; then an idle
    /// connection gives its read buffer back.
    const WAITS: bool;

    /// Whether an idle connection on this stream can be parked without a task
    /// ([`crate::park`]): plain TCP.
    const PARKS: bool = false;

    /// The socket to park ([`ReadReady::PARKS`] streams only).
    fn into_parkable(self) -> Option<std::net::TcpStream> {
        None
    }

    /// Ready when a read would not block (or may; a spurious wake-up is harmless).
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;
}

impl ReadReady for tokio::net::TcpStream {
    const WAITS: bool = true;
    const PARKS: bool = true;

    fn into_parkable(self) -> Option<std::net::TcpStream> {
        self.into_std().ok()
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        tokio::net::TcpStream::poll_read_ready(self, cx)
    }
}

impl<S> ReadReady for tokio_rustls::server::TlsStream<S> {
    const WAITS: bool = false;

    fn poll_read_ready(&self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// In-process connections ([`crate::LocalConnector`]): few, so they may keep a buffer.
impl ReadReady for tokio::io::DuplexStream {
    const WAITS: bool = false;

    fn poll_read_ready(&self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl<S> ReadReady for crate::ws::WsStream<S> {
    const WAITS: bool = false;

    fn poll_read_ready(&self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every idle plain-TCP connection keeps in its task. tokio puts the future in a
    /// cell with 104 B of header, scheduler and id, stage tag and trailer, aligned to
    /// 128 B: up to 280 B the cell is 384 B (it was 1,152 B with a `select!` over the
    /// outbox, the read and a keep-alive `Sleep`). Past the bound every connection costs
    /// 128 B more. (264 B in release builds, 272 B in debug ones.)
    #[tokio::test]
    async fn the_idle_connection_future_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let security = ListenerSecurity::load(0, &crate::ListenerConfig::mqtt(addr)).unwrap();
        let meta = Meta {
            security: Arc::new(security),
            identity: None,
        };
        let (router, _rx) = mpsc::channel(1);
        let settings = Arc::new(Settings {
            max_packet_size: 1024,
            connect_timeout: Duration::from_secs(1),
            max_connections: 0,
            high_water: 2048,
            claim: None,
            parker: None,
        });
        let slot = crate::Slot(Arc::new(crate::Counters::default()));
        let future = run(
            ConnId(1),
            stream,
            meta,
            peer,
            router.clone(),
            settings.clone(),
            slot,
        );
        let size = std::mem::size_of_val(&future);
        assert!(
            size <= 280,
            "the connection future is {size} B: its task cell no longer fits in 384 B"
        );
        drop((future, client));

        // a parked connection started again runs the same loop in a future of its own
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let (_tx, rx) = crate::outbox::outbox(Shared::default());
        let parked = ParkedConn {
            id: ConnId(2),
            rx,
            router,
            settings,
            slot: crate::Slot(Arc::new(crate::Counters::default())),
            protocol: Protocol::V311,
            span: None,
        };
        let future = resume(stream, parked);
        let size = std::mem::size_of_val(&future);
        assert!(
            size <= 280,
            "the resumed connection future is {size} B: its task cell no longer fits in 384 B"
        );
        drop((future, client));
    }

    /// What a parked connection keeps (besides its outbox and a waker): every idle
    /// connection pays for it, in the parker's table with its slack.
    #[test]
    fn a_parked_connection_stays_small() {
        let size = std::mem::size_of::<ParkedConn>();
        assert!(size <= 56, "ParkedConn is {size} B (was 56)");
    }
}
