//! DNS-rebinding defence for anonymous listeners.
//!
//! A web page on `evil.example` can make its name resolve to 127.0.0.1 after the page has
//! loaded; the browser then sends the page's requests to midge as same-origin requests, and
//! without credentials to check, an anonymous listener would answer them (publish, add rules,
//! read data). The browser still names the page's domain in `Host`, so on an anonymous
//! listener requests are served only when `Host` is an IP address, `localhost`, or a name
//! the configuration lists in `allowed_hosts` (`"*"` allows any). A request without `Host`
//! (HTTP/1.0 tools) is not from a browser and is served. A request presenting an
//! access-key signature (`bce-auth-v1`) is not held to it either: a rebound page cannot
//! sign, and the signature is checked next (wrong ones get 403). Device publishes
//! (`POST /topics/...`) are not held to it either: they always need a device's credentials.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::{debug, warn};

use crate::HttpConfig;
use crate::api::{ApiError, AppState};
use crate::serve::Throttle;

/// Which `Host` values anonymous requests may name.
#[derive(Debug)]
pub(crate) struct HostCheck {
    /// Off when the listener needs credentials (a rebound page has none to send).
    on: bool,
    any: bool,
    allowed: Vec<String>,
    /// Requests refused for their `Host`.
    pub(crate) refused: AtomicU64,
    warned: Throttle,
}

/// The host part of a `Host` value, classified.
#[derive(Debug, PartialEq, Eq)]
enum HostName<'a> {
    /// An IPv4 or (bracketed) IPv6 literal.
    Ip,
    /// A name, as sent.
    Name(&'a str),
}

/// `Host`'s host part (`name`, `name:port`, `1.2.3.4:port`, `[::1]:port`); `None` when it
/// is not a well-formed authority.
fn parse(value: &str) -> Option<HostName<'_>> {
    let value = value.trim();
    let port_ok = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = value.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_fine = after.is_empty() || after.strip_prefix(':').is_some_and(port_ok);
        return (port_fine && inside.parse::<Ipv6Addr>().is_ok()).then_some(HostName::Ip);
    }
    let host = match value.rsplit_once(':') {
        Some((host, port)) if port_ok(port) => host,
        Some(_) => return None,
        None => value,
    };
    if host.is_empty() || host.contains(':') {
        return None;
    }
    if host.parse::<Ipv4Addr>().is_ok() {
        Some(HostName::Ip)
    } else {
        Some(HostName::Name(host))
    }
}

impl HostCheck {
    pub(crate) fn new(config: &HttpConfig) -> HostCheck {
        let mut any = false;
        let mut allowed = Vec::new();
        for entry in &config.allowed_hosts {
            let entry = entry.trim();
            if entry == "*" {
                any = true;
            } else if let Some(HostName::Name(name)) = parse(entry) {
                allowed.push(name.to_ascii_lowercase());
            }
        }
        HostCheck {
            on: config.allow_anonymous,
            any,
            allowed,
            refused: AtomicU64::new(0),
            warned: Throttle::new(),
        }
    }

    /// Whether a request naming `host` may be served.
    fn allows(&self, host: &str) -> bool {
        match parse(host) {
            Some(HostName::Ip) => true,
            Some(HostName::Name(name)) => {
                name.eq_ignore_ascii_case("localhost")
                    || self.allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
            }
            None => false,
        }
    }

    /// The host a request names that may not be served, if any (its `Host` header, and the
    /// authority of an absolute request target).
    fn refused_host(&self, req: &Request) -> Option<String> {
        if !self.on || self.any {
            return None;
        }
        if let Some(value) = req.headers().get(header::HOST) {
            let Ok(text) = value.to_str() else {
                return Some(String::from_utf8_lossy(value.as_bytes()).into_owned());
            };
            if !self.allows(text) {
                return Some(text.to_owned());
            }
        }
        let authority = req.uri().authority()?;
        (!self.allows(authority.as_str())).then(|| authority.as_str().to_owned())
    }
}

/// Middleware: on an anonymous listener, 421 for a `Host` that is not an IP address,
/// `localhost` or an allowed name.
pub(crate) async fn require(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let check = &state.0.hosts;
    // signed requests, and device publishes (device credentials are always checked there;
    // a rebound page has none), are not held to it
    if crate::tsdb::sign::presented(&req).is_some() || req.uri().path().starts_with("/topics/") {
        return next.run(req).await;
    }
    let Some(host) = check.refused_host(&req) else {
        return next.run(req).await;
    };
    check.refused.fetch_add(1, Ordering::Relaxed);
    if check.warned.ready() {
        warn!(host = %host, path = %req.uri().path(), "HTTP request refused: Host is not an IP address, localhost or in allowed_hosts (DNS rebinding?)");
    } else {
        debug!(host = %host, "HTTP request refused for its Host");
    }
    let status = StatusCode::MISDIRECTED_REQUEST;
    let message = format!(
        "Host {host:?} is not served here: this listener takes anonymous requests only \
             for an IP address, localhost, or a name in [http] allowed_hosts (a defence \
             against DNS rebinding); open it by its IP address, or add the name to allowed_hosts \
             (or sign the request with an access key)"
    );
    if req.uri().path().starts_with("/v1/") {
        crate::tsdb::TsdbError::new(status, "AccessDenied", message).into_response()
    } else {
        ApiError::new(status, message).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(allowed: &[&str]) -> HostCheck {
        let mut c = HttpConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        c.allowed_hosts = allowed.iter().map(|s| (*s).to_owned()).collect();
        HostCheck::new(&c)
    }

    #[test]
    fn host_values_are_parsed() {
        assert_eq!(parse("127.0.0.1:18083"), Some(HostName::Ip));
        assert_eq!(parse("10.1.2.3"), Some(HostName::Ip));
        assert_eq!(parse("[::1]:18083"), Some(HostName::Ip));
        assert_eq!(parse("[fe80::1]"), Some(HostName::Ip));
        assert_eq!(parse("localhost:80"), Some(HostName::Name("localhost")));
        assert_eq!(parse("Midge.LAN"), Some(HostName::Name("Midge.LAN")));
        for bad in [
            "",
            ":80",
            "::1",
            "[::1",
            "[nope]:80",
            "[::1]x",
            "a:b",
            "host:80x",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        // not dotted decimal: a name, which no resolver trick makes an IP here
        assert_eq!(parse("2130706433"), Some(HostName::Name("2130706433")));
    }

    #[test]
    fn ips_localhost_and_listed_names_are_allowed() {
        let c = check(&["midge.lan", "Dash.Example.com:18083"]);
        for ok in [
            "127.0.0.1:1",
            "192.168.1.9",
            "[::1]:18083",
            "localhost",
            "LOCALHOST:18083",
            "midge.lan:18083",
            "MIDGE.lan",
            "dash.example.com",
        ] {
            assert!(c.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:18083",
            "localhost.evil.example",
            "localhost.",
            "sub.midge.lan",
            "",
            "[::1",
        ] {
            assert!(!c.allows(bad), "{bad}");
        }
    }

    #[test]
    fn a_star_or_a_password_turns_the_check_off() {
        let req = || {
            Request::builder()
                .uri("/")
                .header(header::HOST, "evil.example")
                .body(axum::body::Body::empty())
                .unwrap_or_default()
        };
        assert_eq!(
            check(&[]).refused_host(&req()).as_deref(),
            Some("evil.example")
        );
        assert_eq!(check(&["*"]).refused_host(&req()), None);
        let mut c = HttpConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        c.allow_anonymous = false;
        assert_eq!(HostCheck::new(&c).refused_host(&req()), None);
    }
}
