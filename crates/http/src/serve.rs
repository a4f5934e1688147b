//! The accept loop, in place of `axum::serve` (which has no header-read timeout and no
//! connection cap, so a client sending its request head one byte a minute, or many that
//! send nothing, could hold connections forever).
//!
//! Each connection is served by hyper's HTTP/1.1 server with a timer: a request head
//! (request line and headers) must arrive within the header-read timeout, counted from the
//! connection's start and again from the end of each answer, so idle keep-alive connections
//! are closed after it too. The timeout does not run while an answer is being sent: live
//! streams (server-sent events) last as long as the browser keeps them. At most
//! `max_connections` connections are served at once; one more is answered 503 (when the
//! socket takes it at once) and closed, without waiting on the client. Shutdown stops
//! accepting, closes the listener, lets every connection finish its answer in progress and
//! then close.
//!
//! With TLS the handshake runs in the connection's own task, within the header-read
//! timeout (a client that opens a connection and never says hello is closed like one that
//! never sends a request), and counts against the connection cap from the accept on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, warn};

/// Written to a connection over the cap before it is closed.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
content-length: 55\r\n\
connection: close\r\n\
retry-after: 5\r\n\
\r\n\
{\"error\": \"too many HTTP connections, try again later\"}";

/// Pause after an accept error that is not about one connection (out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// At most one warning per this interval for each kind of refusal (the counters count all).
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The listener's connection figures (in `/metrics` and `/api/v1/stats`).
#[derive(Debug)]
pub(crate) struct Connections {
    max: usize,
    permits: Arc<Semaphore>,
    /// Connections closed at once because `max` were open.
    pub(crate) refused: AtomicU64,
    warned: Throttle,
}

impl Connections {
    pub(crate) fn new(max: usize) -> Connections {
        let max = max.max(1);
        Connections {
            max,
            permits: Arc::new(Semaphore::new(max)),
            refused: AtomicU64::new(0),
            warned: Throttle::new(),
        }
    }

    /// Connections being served now.
    pub(crate) fn open(&self) -> usize {
        self.max.saturating_sub(self.permits.available_permits())
    }
}

/// Lets one event through per [`WARN_EVERY`].
#[derive(Debug)]
pub(crate) struct Throttle {
    start: Instant,
    /// Milliseconds after `start` of the last event let through, plus one (0: none yet).
    last: AtomicU64,
}

impl Throttle {
    pub(crate) fn new() -> Throttle {
        Throttle {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// Whether this event may be logged.
    pub(crate) fn ready(&self) -> bool {
        let now = u64::try_from(self.start.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = self.last.load(Ordering::Relaxed);
        let every = u64::try_from(WARN_EVERY.as_millis()).unwrap_or(u64::MAX);
        (last == 0 || now.saturating_sub(last) >= every)
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// The HTTPS acceptor in use; replaced on reload, read once per new connection.
#[derive(Clone)]
pub(crate) struct SharedAcceptor(Arc<std::sync::RwLock<tokio_rustls::TlsAcceptor>>);

impl SharedAcceptor {
    pub(crate) fn new(a: tokio_rustls::TlsAcceptor) -> SharedAcceptor {
        SharedAcceptor(Arc::new(std::sync::RwLock::new(a)))
    }

    /// The acceptor for the next handshake.
    fn current(&self) -> tokio_rustls::TlsAcceptor {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Use `a` for handshakes from now on.
    pub(crate) fn replace(&self, a: tokio_rustls::TlsAcceptor) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = a;
    }
}

impl std::fmt::Debug for SharedAcceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedAcceptor")
    }
}

/// How long a TLS handshake may take when the header-read timeout is off.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve `app` on `listener` (over TLS with `tls`) until `stop` turns true, then finish the
/// connections.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<SharedAcceptor>,
    app: axum::Router,
    conns: Arc<Connections>,
    header_read_timeout: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    let mut running = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = running.join_next(), if !running.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) if one_connection(&e) => continue,
            Err(e) => {
                if conns.warned.ready() {
                    warn!(error = %e, "HTTP accept failed; pausing");
                }
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                continue;
            }
        };
        let Ok(permit) = conns.permits.clone().try_acquire_owned() else {
            refuse(stream, peer, &conns);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let app = app.clone();
        let stop = stop.clone();
        match tls.as_ref().map(SharedAcceptor::current) {
            None => {
                running.spawn(async move {
                    let _permit = permit;
                    one(builder, TokioIo::new(stream), app, stop, peer).await;
                });
            }
            Some(acceptor) => {
                let limit = header_read_timeout.unwrap_or(TLS_HANDSHAKE_TIMEOUT);
                running.spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => one(builder, TokioIo::new(tls), app, stop, peer).await,
                        Ok(Err(e)) => debug!(%peer, error = %e, "HTTPS handshake failed"),
                        Err(_) => debug!(%peer, "HTTPS handshake not done within the timeout"),
                    }
                });
            }
        }
    }
    // no more connections: a connect from now on is refused by the OS
    drop(listener);
    while running.join_next().await.is_some() {}
}

/// Serve one connection (plain or TLS) until it ends; at shutdown the answer in progress
/// is finished, then the connection closes.
async fn one<I>(
    builder: http1::Builder,
    io: TokioIo<I>,
    app: axum::Router,
    mut stop: watch::Receiver<bool>,
    peer: SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder.serve_connection(io, TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            r = stop.wait_for(|s| *s), if !stopping => {
                drop(r);
                conn.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            debug!(%peer, "HTTP connection closed: no request head within the header-read timeout");
        } else {
            debug!(%peer, error = %e, "HTTP connection ended");
        }
    }
}

/// Accept errors about one connection (it went away before it was accepted).
fn one_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionRefused | K::ConnectionAborted | K::ConnectionReset
    )
}

/// Close a connection over the cap at once: a 503 if the socket takes it without waiting.
fn refuse(stream: TcpStream, peer: SocketAddr, conns: &Connections) {
    let n = conns
        .refused
        .fetch_add(1, Ordering::Relaxed)
        .saturating_add(1);
    let _ = stream.try_write(TOO_MANY);
    if conns.warned.ready() {
        warn!(%peer, max = conns.max, refused_so_far = n, "HTTP connection refused: too many open");
    } else {
        debug!(%peer, "HTTP connection refused: too many open");
    }
    drop(stream);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_503_says_its_length_right() {
        let text = std::str::from_utf8(TOO_MANY).unwrap_or_default();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head:?} / {body:?}"
        );
    }

    #[test]
    fn the_throttle_lets_one_through_per_interval() {
        let t = Throttle::new();
        assert!(t.ready());
        assert!(!t.ready());
        assert!(!t.ready());
    }

    #[test]
    fn open_counts_taken_permits() {
        let c = Connections::new(0);
        assert_eq!((c.max, c.open()), (1, 0), "at least one connection");
        let p = c.permits.clone().try_acquire_owned();
        assert!(p.is_ok());
        assert_eq!(c.open(), 1);
        assert!(c.permits.clone().try_acquire_owned().is_err());
    }
}
