//! Opening the byte stream to the remote broker: the address list with failover, TLS, and
//! mosquitto's bridge flag (`try_private`: the CONNECT's protocol level with 0x80 set).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use midge_client::{AsyncStream, Connector, TlsOptions};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tracing::{debug, info};

use crate::config::BridgeConfig;

/// How long one address may take to accept the TCP connection (and the TLS handshake).
pub(crate) const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to reach the remote, shared by every connection attempt.
#[derive(Debug)]
pub(crate) struct Dialer {
    name: String,
    addresses: Vec<(String, u16)>,
    round_robin: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Send the bridge flag in the next CONNECT.
    pub(crate) private: AtomicBool,
    /// The address that worked last (where the next attempt starts with round_robin).
    current: AtomicUsize,
    /// The address of the connection being made or last made.
    pub(crate) connected_to: std::sync::Mutex<String>,
}

/// A bridge's TLS settings (CA, certificate, key files) cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("bridge {bridge}: TLS: {source}")]
pub(crate) struct TlsSetupError {
    bridge: String,
    source: midge_client::ClientError,
}

impl Dialer {
    pub(crate) fn new(cfg: &BridgeConfig, private: bool) -> Result<Dialer, TlsSetupError> {
        let tls = match &cfg.tls {
            None => None,
            Some(t) => {
                let options = TlsOptions {
                    ca_file: t.cafile.clone(),
                    ca_path: t.capath.clone(),
                    client_cert: t.certfile.clone(),
                    client_key: t.keyfile.clone(),
                    insecure: t.insecure,
                    ..TlsOptions::default()
                };
                let config =
                    midge_client::tls_config(&options).map_err(|source| TlsSetupError {
                        bridge: cfg.name.clone(),
                        source,
                    })?;
                Some(Arc::new(config))
            }
        };
        Ok(Dialer {
            name: cfg.name.clone(),
            addresses: cfg.addresses.clone(),
            round_robin: cfg.round_robin,
            tls,
            private: AtomicBool::new(private),
            current: AtomicUsize::new(0),
            connected_to: std::sync::Mutex::new(String::new()),
        })
    }

    /// Try every address in turn, starting with the first (or, with round_robin, the one
    /// that worked last); the first that accepts is used.
    async fn open(self: Arc<Self>) -> io::Result<Box<dyn AsyncStream>> {
        let n = self.addresses.len().max(1);
        let start = if self.round_robin {
            self.current.load(Ordering::Relaxed) % n
        } else {
            0
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for k in 0..n {
            let i = (start + k) % n;
            let Some((host, port)) = self.addresses.get(i) else {
                continue;
            };
            match tokio::time::timeout(DIAL_TIMEOUT, self.dial(host, *port)).await {
                Ok(Ok(s)) => {
                    self.current.store(i, Ordering::Relaxed);
                    if let Ok(mut c) = self.connected_to.lock() {
                        *c = format!("{host}:{port}");
                    }
                    if k > 0 {
                        info!(bridge = %self.name, address = %format!("{host}:{port}"), "bridge: failed over to another address");
                    }
                    return Ok(s);
                }
                Ok(Err(e)) => {
                    debug!(bridge = %self.name, address = %format!("{host}:{port}"), error = %e, "bridge: address refused");
                    last = io::Error::new(e.kind(), format!("{host}:{port}: {e}"));
                }
                Err(_) => {
                    last = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{host}:{port}: no answer in {DIAL_TIMEOUT:?}"),
                    );
                }
            }
        }
        Err(last)
    }

    async fn dial(&self, host: &str, port: u16) -> io::Result<Box<dyn AsyncStream>> {
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        let private = self.private.load(Ordering::Relaxed);
        match &self.tls {
            None => Ok(Box::new(PrivateFlag::new(tcp, private))),
            Some(config) => {
                let name = ServerName::try_from(host.to_string())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
                let tls = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await?;
                Ok(Box::new(PrivateFlag::new(tls, private)))
            }
        }
    }
}

/// The connector midge-client calls at every (re)connect.
pub(crate) fn connector(dialer: Arc<Dialer>) -> Connector {
    Connector::new(move || dialer.clone().open())
}

/// A stream that sets bit 0x80 of the protocol level of the first packet written (the
/// CONNECT): mosquitto's way for a bridge to say it is one ("try_private").
pub(crate) struct PrivateFlag<S> {
    inner: S,
    /// Bytes written so far.
    written: usize,
    /// Where the protocol level byte is, once known; `None` after it was patched (or when
    /// nothing is to be patched).
    level_at: Option<usize>,
    pending: bool,
}

impl<S> PrivateFlag<S> {
    pub(crate) fn new(inner: S, private: bool) -> PrivateFlag<S> {
        PrivateFlag {
            inner,
            written: 0,
            level_at: None,
            pending: private,
        }
    }
}

/// Offset of the protocol level in a CONNECT starting `buf`: fixed header (1 byte and the
/// remaining length's 1-4 bytes), then the protocol name (2-byte length and the name).
pub(crate) fn level_offset(buf: &[u8]) -> Option<usize> {
    if buf.first()? & 0xF0 != 0x10 {
        return None;
    }
    let mut i = 1;
    loop {
        let b = *buf.get(i)?;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        if i > 4 {
            return None;
        }
    }
    let len = usize::from(*buf.get(i)?) << 8 | usize::from(*buf.get(i + 1)?);
    Some(i + 2 + len)
}

impl<S: AsyncRead + Unpin> AsyncRead for PrivateFlag<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PrivateFlag<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.pending && this.written == 0 && this.level_at.is_none() {
            this.level_at = level_offset(buf);
            if this.level_at.is_none() {
                this.pending = false;
            }
        }
        let patch = match this.level_at {
            Some(at) if this.pending && at >= this.written && at < this.written + buf.len() => {
                Some(at - this.written)
            }
            _ => None,
        };
        let result = match patch {
            None => Pin::new(&mut this.inner).poll_write(cx, buf),
            Some(k) => {
                let mut copy = buf.to_vec();
                if let Some(b) = copy.get_mut(k) {
                    *b |= 0x80;
                }
                Pin::new(&mut this.inner).poll_write(cx, &copy)
            }
        };
        if let Poll::Ready(Ok(n)) = &result {
            if let Some(at) = this.level_at
                && at < this.written + n
            {
                this.pending = false;
            }
            this.written += n;
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn the_bridge_flag_is_set_in_the_connect_only() {
        let mut connect = bytes_of_connect(midge_codec::Protocol::V311);
        let at = level_offset(&connect).unwrap();
        assert_eq!(connect[at], 4);
        let (a, mut b) = tokio::io::duplex(4096);
        let mut s = PrivateFlag::new(a, true);
        // written in two parts, the level in the second
        let tail = connect.split_off(at - 1);
        s.write_all(&connect).await.unwrap();
        s.write_all(&tail).await.unwrap();
        s.write_all(&[0x04]).await.unwrap();
        drop(s);
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.unwrap();
        assert_eq!(got[at], 0x84);
        assert_eq!(*got.last().unwrap(), 0x04);
    }

    fn bytes_of_connect(p: midge_codec::Protocol) -> Vec<u8> {
        let c = midge_codec::Connect::new(p, "c");
        let mut buf = midge_codec::bytes::BytesMut::new();
        midge_codec::Packet::Connect(Box::new(c))
            .encode(p, &mut buf)
            .unwrap();
        buf.to_vec()
    }
}
