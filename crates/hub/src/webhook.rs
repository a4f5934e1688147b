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
    ) -> Result<Target, String> {
        let uri: Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
        let tls = match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => false,
            Some(s) if *s == Scheme::HTTPS => true,
            _ => return Err(format!("URL {url:?} must start with http:// or https://")),
        };
        let Some(host) = uri.host().map(str::to_owned) else {
            return Err(format!("URL {url:?} has no host"));
        };
        for (k, v) in &headers {
            if hyper::http::HeaderName::from_bytes(k.as_bytes()).is_err()
                || hyper::http::HeaderValue::from_str(v).is_err()
            {
                return Err(format!("bad header {k:?}"));
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
) -> Result<u16, String> {
    tokio::time::timeout(target.timeout, post_inner(target, body, tls))
        .await
        .map_err(|_| format!("no answer within {:?}", target.timeout))?
}

async fn post_inner(
    target: &Target,
    body: Bytes,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<u16, String> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("connect {}:{}: {e}", target.host, target.port))?;
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
    let req = req
        .body(Full::new(body))
        .map_err(|e| format!("request: {e}"))?;
    let status = if target.tls {
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| format!("TLS name {}: {e}", target.host))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        send(TokioIo::new(stream), req).await?
    } else {
        send(TokioIo::new(tcp), req).await?
    };
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(format!("HTTP status {status}"))
    }
}

async fn send<I>(io: I, req: Request<Full<Bytes>>) -> Result<u16, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let driver = tokio::spawn(conn);
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
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
