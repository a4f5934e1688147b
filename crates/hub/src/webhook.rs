//! HTTP(S) webhooks: POST a rule's row as JSON. Requests run on a few workers behind a
//! bounded queue, so a slow endpoint never holds up the rules; what does not fit is dropped
//! and counted as a failure of its rule.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::http::uri::{Scheme, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a webhook action's URL or headers are refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookTargetError {
    /// Not a URL.
    #[error("bad URL {url:?}: {source}")]
    Url {
        /// The URL given.
        url: String,
        /// Why.
        source: hyper::http::uri::InvalidUri,
    },
    /// Not `http://` or `https://`.
    #[error("URL {0:?} must start with http:// or https://")]
    Scheme(String),
    /// No host to connect to.
    #[error("URL {0:?} has no host")]
    NoHost(String),
    /// A header name or value HTTP does not allow.
    #[error("bad header {0:?}")]
    Header(String),
}

/// Why a POST failed (counted as a failure of its rule).
#[derive(Debug, thiserror::Error)]
pub(crate) enum PostError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connect {host}:{port}: {source}")]
    Connect {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("TLS name {host}: {source}")]
    TlsName {
        host: String,
        source: rustls::pki_types::InvalidDnsNameError,
    },
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("HTTP status {0}")]
    Status(u16),
}

/// Where one webhook action posts.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) uri: Uri,
    host: String,
    port: u16,
    tls: bool,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) timeout: Duration,
}

impl Target {
    /// Check `url` (http or https, with a host).
    pub(crate) fn parse(
        url: &str,
        headers: Vec<(String, String)>,
        timeout: Duration,
    ) -> Result<Target, WebhookTargetError> {
        let uri: Uri = url.parse().map_err(|source| WebhookTargetError::Url {
            url: url.to_owned(),
            source,
        })?;
        let tls = match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => false,
            Some(s) if *s == Scheme::HTTPS => true,
            _ => return Err(WebhookTargetError::Scheme(url.to_owned())),
        };
        let Some(host) = uri.host().map(str::to_owned) else {
            return Err(WebhookTargetError::NoHost(url.to_owned()));
        };
        for (k, v) in &headers {
            if hyper::http::HeaderName::from_bytes(k.as_bytes()).is_err()
                || hyper::http::HeaderValue::from_str(v).is_err()
            {
                return Err(WebhookTargetError::Header(k.clone()));
            }
        }
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Target {
            uri,
            host,
            port,
            tls,
            headers,
            timeout,
        })
    }
}

/// One POST waiting for a worker.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) target: Arc<Target>,
    pub(crate) body: Bytes,
    /// Index of the rule it came from (failures are counted there).
    pub(crate) rule: usize,
}

/// POST `body`; Ok with the status code when the endpoint answered 2xx.
pub(crate) async fn post(
    target: &Target,
    body: Bytes,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<u16, PostError> {
    tokio::time::timeout(target.timeout, post_inner(target, body, tls))
        .await
        .map_err(|_| PostError::Timeout(target.timeout))?
}

async fn post_inner(
    target: &Target,
    body: Bytes,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<u16, PostError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|source| PostError::Connect {
            host: target.host.clone(),
            port: target.port,
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let path = target
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let authority = target
        .uri
        .authority()
        .map_or(target.host.clone(), |a| a.to_string());
    let mut req = Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("midge/", env!("CARGO_PKG_VERSION")),
        );
    for (k, v) in &target.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req.body(Full::new(body))?;
    let status = if target.tls {
        let name =
            rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|source| {
                PostError::TlsName {
                    host: target.host.clone(),
                    source,
                }
            })?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(PostError::Tls)?;
        send(TokioIo::new(stream), req).await?
    } else {
        send(TokioIo::new(tcp), req).await?
    };
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(PostError::Status(status))
    }
}

async fn send<I>(io: I, req: Request<Full<Bytes>>) -> Result<u16, PostError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let driver = tokio::spawn(conn);
    let result = async {
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        // read (and drop) a bounded body so the connection ends cleanly
        let _ = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await;
        Ok(status)
    }
    .await;
    driver.abort();
    result
}
