//! Opening a byte stream to the broker: TCP, TLS, WebSocket, WebSocket over TLS.

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest, http};

use crate::error::ClientError;
use crate::options::{ClientOptions, TlsOptions, TlsVersion, Transport};

/// Any byte stream.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// An open connection to the broker.
pub(crate) enum Stream {
    /// TCP or TLS: MQTT bytes directly.
    Bytes(Box<dyn Io>),
    /// WebSocket: MQTT bytes in binary messages.
    Ws(Box<WebSocketStream<Box<dyn Io>>>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stream::Bytes(_) => f.write_str("Stream::Bytes"),
            Stream::Ws(_) => f.write_str("Stream::Ws"),
        }
    }
}

fn ws_err(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

impl Stream {
    /// Read more bytes into `buf`; 0 means the server closed the stream. Cancel safe.
    pub(crate) async fn read(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Stream::Bytes(s) => {
                if buf.capacity() - buf.len() < 4096 {
                    buf.reserve(8192);
                }
                s.read_buf(buf).await
            }
            Stream::Ws(ws) => loop {
                match ws.next().await {
                    None => return Ok(0),
                    Some(Err(e)) => return Err(ws_err(e)),
                    Some(Ok(Message::Binary(data))) => {
                        if data.is_empty() {
                            continue;
                        }
                        buf.extend_from_slice(&data);
                        return Ok(data.len());
                    }
                    Some(Ok(Message::Close(_))) => return Ok(0),
                    Some(Ok(Message::Text(_))) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "text WebSocket frame from the server",
                        ));
                    }
                    Some(Ok(_)) => continue,
                }
            },
        }
    }

    /// Write all of `data` (one syscall for TCP when the kernel takes it).
    pub(crate) async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Stream::Bytes(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Stream::Ws(ws) => ws
                .send(Message::Binary(data.to_vec()))
                .await
                .map_err(ws_err),
        }
    }

    /// Close the stream politely.
    pub(crate) async fn shutdown(&mut self) {
        match self {
            Stream::Bytes(s) => {
                let _ = s.shutdown().await;
            }
            Stream::Ws(ws) => {
                // the inherent close (with a close frame), named: once futures-sink's `alloc`
                // feature is on (tokio-util turns it on), `Box<WebSocketStream>` is a Sink too
                // and `ws.close` would resolve to SinkExt::close on the box
                let _ = WebSocketStream::close(&mut **ws, None).await;
            }
        }
    }
}

/// Open the transport described by `options`.
pub(crate) async fn connect(options: &ClientOptions) -> Result<Stream, ClientError> {
    if let Transport::Custom(connector) = &options.transport {
        let s = (connector.0)().await?;
        return Ok(Stream::Bytes(Box::new(s)));
    }
    #[cfg(unix)]
    if let Transport::Unix(path) = &options.transport {
        let s = tokio::net::UnixStream::connect(path).await?;
        return Ok(Stream::Bytes(Box::new(s)));
    }
    let tcp = tcp_connect(options).await?;
    tcp.set_nodelay(true)?;
    match &options.transport {
        Transport::Tcp => Ok(Stream::Bytes(Box::new(tcp))),
        Transport::Tls(tls) => Ok(Stream::Bytes(tls_wrap(tcp, &options.host, tls).await?)),
        Transport::Ws(path) => {
            let io: Box<dyn Io> = Box::new(tcp);
            ws_wrap(io, "ws", &options.host, options.port, path).await
        }
        Transport::Wss(path, tls) => {
            let io = tls_wrap(tcp, &options.host, tls).await?;
            ws_wrap(io, "wss", &options.host, options.port, path).await
        }
        #[cfg(unix)]
        Transport::Unix(_) => Err(ClientError::Config("unreachable".into())),
        Transport::Custom(_) => Err(ClientError::Config("unreachable".into())),
    }
}

/// TCP connection to the first address of the host that answers, from `bind_address` if set.
async fn tcp_connect(options: &ClientOptions) -> Result<TcpStream, ClientError> {
    let Some(local) = options.bind_address else {
        return Ok(TcpStream::connect((options.host.as_str(), options.port)).await?);
    };
    let mut last = None;
    for addr in tokio::net::lookup_host((options.host.as_str(), options.port)).await? {
        if addr.is_ipv4() != local.is_ipv4() {
            continue;
        }
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.bind(std::net::SocketAddr::new(local, 0))?;
        match socket.connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map(ClientError::Io).unwrap_or_else(|| {
        ClientError::Config(format!("no address of {} matches {local}", options.host))
    }))
}

async fn ws_wrap(
    io: Box<dyn Io>,
    scheme: &str,
    host: &str,
    port: u16,
    path: &str,
) -> Result<Stream, ClientError> {
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let host_part = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let url = format!("{scheme}://{host_part}:{port}{path}");
    let mut request = url
        .into_client_request()
        .map_err(|e| ClientError::WebSocket(e.to_string()))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        http::HeaderValue::from_static("mqtt"),
    );
    let (ws, _response) = tokio_tungstenite::client_async(request, io)
        .await
        .map_err(|e| ClientError::WebSocket(e.to_string()))?;
    Ok(Stream::Ws(Box::new(ws)))
}

async fn tls_wrap(
    tcp: TcpStream,
    host: &str,
    tls: &TlsOptions,
) -> Result<Box<dyn Io>, ClientError> {
    let config = tls_config(tls)?;
    let name = tls.server_name.as_deref().unwrap_or(host);
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|e| ClientError::Tls(format!("invalid server name {name:?}: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = connector.connect(server_name, tcp).await?;
    Ok(Box::new(stream))
}

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let file = std::fs::File::open(path)
        .map_err(|e| ClientError::Tls(format!("cannot open {}: {e}", path.display())))?;
    let mut reader = io::BufReader::new(file);
    rustls_pemfile::certs(&mut reader)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::Tls(format!("cannot read {}: {e}", path.display())))
}

fn read_key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, ClientError> {
    let file = std::fs::File::open(path)
        .map_err(|e| ClientError::Tls(format!("cannot open {}: {e}", path.display())))?;
    let mut reader = io::BufReader::new(file);
    rustls_pemfile::private_key(&mut reader)
        .map_err(|e| ClientError::Tls(format!("cannot read {}: {e}", path.display())))?
        .ok_or_else(|| ClientError::Tls(format!("no private key in {}", path.display())))
}

/// Build the rustls client configuration for `tls` (CA file or directory, else the webpki
/// roots; client certificate; insecure mode; version pin). Also used for other TLS clients
/// of midge, such as the hub's HTTPS webhooks.
pub fn tls_config(tls: &TlsOptions) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.version {
        Some(TlsVersion::Tls12) => &[&rustls::version::TLS12],
        Some(TlsVersion::Tls13) => &[&rustls::version::TLS13],
        None => rustls::ALL_VERSIONS,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| ClientError::Tls(e.to_string()))?;
    let builder = if tls.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = &tls.ca_file {
            for cert in read_certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| ClientError::Tls(format!("{}: {e}", ca.display())))?;
            }
        }
        if let Some(dir) = &tls.ca_path {
            let entries = std::fs::read_dir(dir)
                .map_err(|e| ClientError::Tls(format!("cannot read {}: {e}", dir.display())))?;
            for entry in entries.flatten() {
                let path = entry.path();
                let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                if matches!(ext, "pem" | "crt" | "cer") {
                    for cert in read_certs(&path)? {
                        let _ = roots.add(cert);
                    }
                }
            }
        }
        if tls.ca_file.is_none() && tls.ca_path.is_none() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| ClientError::Tls(e.to_string()))?,
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(ClientError::Tls(
                "a client certificate needs both a certificate and a key".into(),
            ));
        }
    };
    config.alpn_protocols = tls.alpn.clone();
    Ok(config)
}

/// Accepts any server certificate (`--insecure`).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
