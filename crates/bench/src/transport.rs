//! How the tool reaches a broker: plain TCP, TLS (rustls, with or without session
//! resumption) or MQTT over WebSocket (subprotocol `mqtt`, binary messages). Every
//! connection is a [`Stream`]; the hot paths split it into boxed halves.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use futures_util::{Sink, Stream as _};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message, http};

use crate::BenchError;

/// Session caches of a run with resumption: connection `n` uses cache `n % TLS_LANES`.
/// One shared cache would hold only 8 TLS 1.3 tickets for the server (rustls' limit per
/// server name), too few for 64 handshakes at once; one per lane (as many as the
/// handshakes `bench/compare` runs at once) gives each handshake the ticket of an earlier
/// connection of its lane.
pub(crate) const TLS_LANES: usize = 64;

/// TLS settings shared by every connection of a run.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// One rustls configuration per lane (all the same but for their session caches).
    lanes: Arc<Vec<Arc<rustls::ClientConfig>>>,
    next: Arc<AtomicUsize>,
    server_name: ServerName<'static>,
    /// Whether session resumption (tickets or session ids) is on.
    pub resume: bool,
}

impl TlsSettings {
    /// Trust the CA certificates in `cafile` (PEM), check the server's certificate for
    /// `server_name` (a DNS name or an IP address), resume earlier sessions when `resume`
    /// (full handshakes otherwise).
    pub fn new(cafile: &Path, server_name: &str, resume: bool) -> Result<TlsSettings, BenchError> {
        let bad = |what: String| BenchError::Config(format!("{}: {what}", cafile.display()));
        let file = std::fs::File::open(cafile).map_err(|e| bad(e.to_string()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut io::BufReader::new(file)) {
            roots
                .add(cert.map_err(|e| bad(e.to_string()))?)
                .map_err(|e| bad(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad("no certificate".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| BenchError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let lanes = if resume {
            (0..TLS_LANES)
                .map(|_| {
                    let mut c = config.clone();
                    c.resumption = rustls::client::Resumption::in_memory_sessions(16);
                    Arc::new(c)
                })
                .collect()
        } else {
            config.resumption = rustls::client::Resumption::disabled();
            vec![Arc::new(config)]
        };
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| BenchError::Config(format!("bad TLS server name {server_name:?}: {e}")))?;
        Ok(TlsSettings {
            lanes: Arc::new(lanes),
            next: Arc::new(AtomicUsize::new(0)),
            server_name,
            resume,
        })
    }
}

/// The transport of every connection of a run.
#[derive(Debug, Clone, Default)]
pub enum Transport {
    /// MQTT over TCP.
    #[default]
    Tcp,
    /// MQTT over TLS over TCP.
    Tls(TlsSettings),
    /// MQTT over WebSocket (ws://, subprotocol `mqtt`) at this path.
    Ws {
        /// Request path, e.g. `/mqtt`.
        path: String,
    },
}

impl Transport {
    /// A short name for reports: tcp, tls, tls-resume or ws.
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Tls(t) if t.resume => "tls-resume",
            Transport::Tls(_) => "tls",
            Transport::Ws { .. } => "ws",
        }
    }

    /// Run the transport's handshake on a connected socket; true when a TLS session was
    /// resumed.
    pub(crate) async fn open(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
    ) -> Result<(Stream, bool), BenchError> {
        match self {
            Transport::Tcp => Ok((Stream::Tcp(tcp), false)),
            Transport::Tls(t) => {
                let n = t.next.fetch_add(1, Ordering::Relaxed);
                let Some(config) = t.lanes.get(n % t.lanes.len().max(1)) else {
                    return Err(BenchError::Config("no TLS configuration".into()));
                };
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let s = connector.connect(t.server_name.clone(), tcp).await?;
                let resumed =
                    s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                Ok((Stream::Tls(Box::new(s)), resumed))
            }
            Transport::Ws { path } => {
                let mut req = format!("ws://{addr}{path}")
                    .into_client_request()
                    .map_err(|e| BenchError::Protocol(format!("WebSocket request: {e}")))?;
                req.headers_mut().insert(
                    http::header::SEC_WEBSOCKET_PROTOCOL,
                    http::HeaderValue::from_static("mqtt"),
                );
                let (ws, _) = tokio_tungstenite::client_async(req, tcp)
                    .await
                    .map_err(|e| BenchError::Protocol(format!("WebSocket handshake: {e}")))?;
                Ok((
                    Stream::Ws(Box::new(WsBytes {
                        ws,
                        pending: Vec::new(),
                        pos: 0,
                        sent: false,
                    })),
                    false,
                ))
            }
        }
    }
}

/// One connection to the broker, whatever the transport.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Ws(Box<WsBytes>),
}

/// The reading half of a split [`Stream`].
pub(crate) type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a split [`Stream`]: write, then flush (TLS and WebSocket buffer).
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

impl Stream {
    /// Split into halves that can be used from two tasks (TCP without a lock).
    pub(crate) fn split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            other => {
                let (r, w) = tokio::io::split(other);
                (Box::new(r), Box::new(w))
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Ws(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Ws(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Ws(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Ws(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A client WebSocket as a byte stream: each write is one binary message, sent (flushed)
/// before the write completes; reads yield the bytes of the binary messages received.
#[derive(Debug)]
pub(crate) struct WsBytes {
    ws: WebSocketStream<TcpStream>,
    pending: Vec<u8>,
    pos: usize,
    /// The current write's message is queued in tungstenite; only the flush is left.
    sent: bool,
}

fn to_io(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

impl AsyncRead for WsBytes {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(rest) = this.pending.get(this.pos..)
                && !rest.is_empty()
            {
                let n = rest.len().min(buf.remaining());
                buf.put_slice(rest.get(..n).unwrap_or_default());
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                None
                | Some(Err(
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                ))
                | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
                Some(Ok(Message::Binary(data))) => {
                    this.pending = data;
                    this.pos = 0;
                }
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text WebSocket message (MQTT needs binary messages)",
                    )));
                }
                // ping (answered by tungstenite), pong, raw frame
                Some(Ok(_)) => {}
            }
        }
    }
}

impl AsyncWrite for WsBytes {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.sent {
            ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(to_io)?;
            Pin::new(&mut this.ws)
                .start_send(Message::Binary(buf.to_vec()))
                .map_err(to_io)?;
            this.sent = true;
        }
        ready!(Pin::new(&mut this.ws).poll_flush(cx)).map_err(to_io)?;
        this.sent = false;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(to_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.get_mut().ws).poll_close(cx)) {
            Ok(())
            | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(to_io(e))),
        }
    }
}
