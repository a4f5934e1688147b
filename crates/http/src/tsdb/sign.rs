//! Signed requests: `bce-auth-v1`, Baidu Cloud's request signature, checked exactly as its
//! SDKs sign.
//!
//! ```text
//! Authorization: bce-auth-v1/{ak}/{timestamp}/{expirationSeconds}/{signedHeaders}/{signature}
//! signing key  = hex(HMAC-SHA256(secret, "bce-auth-v1/{ak}/{timestamp}/{expirationSeconds}"))
//! canonical    = METHOD "\n" encode(path, keeping '/') "\n" canonical query "\n" canonical headers
//! signature    = hex(HMAC-SHA256(signing key (its hex text), canonical))
//! ```
//!
//! The canonical query is every parameter but `authorization`, key and value encoded
//! (RFC 3986: only `A-Za-z0-9-._~` stay as they are), a bare key as `k=`, sorted, joined
//! by `&`. The canonical headers are the signed ones (those named, `;`-separated, or when
//! none are named `host`, `content-md5`, `content-length` and `content-type`) plus every
//! `x-bce-*` header, as `encode(lowercase name):encode(trimmed value)`, empty values left
//! out, sorted, joined by `\n`. The same string may come as the `authorization` query
//! parameter (pre-signed URLs). `timestamp` is UTC `2017-11-29T22:45:54Z`; a request is
//! refused once `timestamp + expirationSeconds` has passed, and when its timestamp is more
//! than [`MAX_SKEW_SECS`] ahead of this clock.

use axum::extract::Request;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::keys::Keys;

/// How far in the future a signature's timestamp may be (clocks differ).
pub(crate) const MAX_SKEW_SECS: i64 = 15 * 60;

/// Longest validity a signature may claim (a pre-signed URL for a week at most).
const MAX_EXPIRATION_SECS: i64 = 7 * 86_400;

const PREFIX: &str = "bce-auth-v1/";

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn hmac_hex(key: &[u8], data: &[u8]) -> String {
    // HMAC takes keys of any length
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(data);
    hex(&mac.finalize().into_bytes())
}

/// RFC 3986 encoding as the SDK's `normalize_string`: unreserved bytes stay, others are
/// `%XX` (uppercase); `/` stays when `keep_slash`.
pub(crate) fn encode(s: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-decoding (`+` stays a `+`).
fn decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex_at = |j: usize| b.get(j).and_then(|c| char::from(*c).to_digit(16));
        match (b.get(i), hex_at(i + 1), hex_at(i + 2)) {
            (Some(b'%'), Some(h), Some(l)) => {
                // two hex digits: below 256
                out.push(u8::try_from(h * 16 + l).unwrap_or(0));
                i += 3;
            }
            (Some(c), _, _) => {
                out.push(*c);
                i += 1;
            }
            (None, _, _) => break,
        }
    }
    out
}

/// The signature string a request presents, if any: its `Authorization` header when that
/// starts with `bce-auth-v1/`, else its `authorization` query parameter.
pub(crate) fn presented(req: &Request) -> Option<String> {
    if let Some(v) = req.headers().get(axum::http::header::AUTHORIZATION) {
        let text = String::from_utf8_lossy(v.as_bytes());
        if text.trim_start().to_ascii_lowercase().starts_with(PREFIX) {
            return Some(text.trim().to_owned());
        }
    }
    let query = req.uri().query()?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (String::from_utf8_lossy(&decode(k)).eq_ignore_ascii_case("authorization"))
            .then(|| String::from_utf8_lossy(&decode(v)).trim().to_owned())
    })
}

/// The parts of a signature string.
#[derive(Debug, PartialEq, Eq)]
struct AuthString<'a> {
    ak: &'a str,
    timestamp: &'a str,
    expiration: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

fn split(auth: &str) -> Option<AuthString<'_>> {
    let mut parts = auth.split('/');
    let version = parts.next()?;
    if !version.eq_ignore_ascii_case("bce-auth-v1") {
        return None;
    }
    let a = AuthString {
        ak: parts.next()?,
        timestamp: parts.next()?,
        expiration: parts.next()?,
        signed_headers: parts.next()?,
        signature: parts.next()?,
    };
    parts.next().is_none().then_some(a)
}

/// Seconds since the epoch of `2017-11-29T22:45:54Z` (exactly that shape).
fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    if !shape_ok {
        return None;
    }
    let ms = crate::time::parse_time(s, 0).ok()?;
    Some(ms.div_euclid(1000))
}

/// The canonical query string of a raw query (`authorization` left out).
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode(k);
            if k.eq_ignore_ascii_case(b"authorization") {
                return None;
            }
            Some(format!(
                "{}={}",
                encode(&k, false),
                encode(&decode(v), false)
            ))
        })
        .collect();
    pairs.sort();
    pairs.join("&")
}

/// The canonical request of `req` for the headers `signed` (lowercase names).
fn canonical_request(req: &Request, signed: &[String]) -> String {
    let path = decode(req.uri().path());
    let mut headers: Vec<String> = req
        .headers()
        .iter()
        .filter_map(|(name, value)| {
            let name = name.as_str().to_ascii_lowercase();
            if !(name.starts_with("x-bce-") || signed.contains(&name)) {
                return None;
            }
            let value = String::from_utf8_lossy(value.as_bytes());
            let value = value.trim();
            (!value.is_empty()).then(|| {
                format!(
                    "{}:{}",
                    encode(name.as_bytes(), false),
                    encode(value.as_bytes(), false)
                )
            })
        })
        .collect();
    headers.sort();
    format!(
        "{}\n{}\n{}\n{}",
        req.method().as_str(),
        encode(&path, true),
        canonical_query(req.uri().query().unwrap_or("")),
        headers.join("\n")
    )
}

/// Why a signed request is refused: the message of its 403 `AccessDenied` answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SignatureError {
    #[error(
        "malformed bce-auth-v1 signature: expected \
         bce-auth-v1/{{accessKeyId}}/{{timestamp}}/{{expirationSeconds}}/{{signedHeaders}}/{{signature}}"
    )]
    Malformed,
    #[error("bad signature timestamp {0:?}: expected UTC like 2017-11-29T22:45:54Z")]
    Timestamp(String),
    #[error("bad expiration {0:?}: expected seconds from 0 to {MAX_EXPIRATION_SECS}")]
    Expiration(String),
    #[error("the signature expired at {at} (signed {signed}, valid {valid} s)")]
    Expired {
        /// Seconds since the epoch.
        at: i64,
        /// The signature's timestamp as given.
        signed: String,
        /// Its expiration, seconds.
        valid: i64,
    },
    #[error(
        "the signature's timestamp {0} is more than {MAX_SKEW_SECS} s ahead of this server's clock"
    )]
    Ahead(String),
    #[error("unknown access key id {0:?}")]
    UnknownKey(String),
    #[error("signed header {0:?} is not in the request")]
    MissingHeader(String),
    #[error("the signature does not match")]
    Mismatch,
}

impl From<SignatureError> for super::TsdbError {
    fn from(e: SignatureError) -> Self {
        super::TsdbError::access_denied(e.to_string())
    }
}

/// Checks the signature `auth` of `req` against the known keys at `now` (seconds); the
/// access key id when it is right, else why not.
pub(crate) fn verify(
    keys: &Keys,
    req: &Request,
    auth: &str,
    now: i64,
) -> Result<String, SignatureError> {
    let a = split(auth).ok_or(SignatureError::Malformed)?;
    let ts = parse_timestamp(a.timestamp)
        .ok_or_else(|| SignatureError::Timestamp(a.timestamp.to_owned()))?;
    let expiration: i64 = a
        .expiration
        .parse()
        .ok()
        .filter(|e| (0..=MAX_EXPIRATION_SECS).contains(e))
        .ok_or_else(|| SignatureError::Expiration(a.expiration.to_owned()))?;
    if ts + expiration < now {
        return Err(SignatureError::Expired {
            at: ts + expiration,
            signed: a.timestamp.to_owned(),
            valid: expiration,
        });
    }
    if ts > now + MAX_SKEW_SECS {
        return Err(SignatureError::Ahead(a.timestamp.to_owned()));
    }
    let secret = keys
        .secret(a.ak)
        .ok_or_else(|| SignatureError::UnknownKey(a.ak.to_owned()))?;
    let signed: Vec<String> = if a.signed_headers.is_empty() {
        ["host", "content-md5", "content-length", "content-type"]
            .map(str::to_owned)
            .to_vec()
    } else {
        a.signed_headers
            .split(';')
            .map(|h| h.trim().to_ascii_lowercase())
            .collect()
    };
    if !a.signed_headers.is_empty()
        && let Some(missing) = signed
            .iter()
            .find(|h| !h.is_empty() && !req.headers().contains_key(h.as_str()))
    {
        return Err(SignatureError::MissingHeader(missing.clone()));
    }
    let key_info = format!("bce-auth-v1/{}/{}/{}", a.ak, a.timestamp, a.expiration);
    let signing_key = hmac_hex(secret.as_bytes(), key_info.as_bytes());
    let expected = hmac_hex(
        signing_key.as_bytes(),
        canonical_request(req, &signed).as_bytes(),
    );
    let given = a.signature.to_ascii_lowercase();
    if expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        Ok(a.ak.to_owned())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Signs a request the way the SDK does (tests, examples): the `Authorization` value.
#[cfg(test)]
pub(crate) fn sign(
    ak: &str,
    secret: &str,
    timestamp: &str,
    expiration: i64,
    req: &Request,
    signed: &[&str],
) -> String {
    let key_info = format!("bce-auth-v1/{ak}/{timestamp}/{expiration}");
    let signing_key = hmac_hex(secret.as_bytes(), key_info.as_bytes());
    let list: Vec<String> = if signed.is_empty() {
        ["host", "content-md5", "content-length", "content-type"]
            .map(str::to_owned)
            .to_vec()
    } else {
        signed.iter().map(|s| (*s).to_owned()).collect()
    };
    let sig = hmac_hex(
        signing_key.as_bytes(),
        canonical_request(req, &list).as_bytes(),
    );
    format!("{key_info}/{}/{sig}", signed.join(";"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn encoding_and_canonical_query_follow_the_sdk() {
        assert_eq!(encode(b"a b/c~", false), "a%20b%2Fc~");
        assert_eq!(encode(b"/v1/metric/x y", true), "/v1/metric/x%20y");
        assert_eq!(
            canonical_query("query=&disablePresampling=False&authorization=x&database=d%2B1"),
            "database=d%2B1&disablePresampling=False&query="
        );
        assert_eq!(canonical_query("b&a=1"), "a=1&b=");
    }

    #[test]
    fn timestamps_have_one_shape() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:10Z"), Some(10));
        assert_eq!(parse_timestamp("2017-11-29T22:45:54Z"), Some(1_511_995_554));
        for bad in [
            "2017-11-29T22:45:54",
            "2017-11-29 22:45:54Z",
            "1511995554",
            "",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn auth_strings_are_split() {
        let a = split("bce-auth-v1/ak/2017-11-29T22:45:54Z/1800//abc").unwrap();
        assert_eq!(a.ak, "ak");
        assert_eq!(a.signed_headers, "");
        assert_eq!(a.signature, "abc");
        assert!(split("bce-auth-v1/ak/ts/1800/abc").is_none());
        assert!(split("bce-auth-v2/ak/ts/1800/h/abc").is_none());
        assert!(split("bce-auth-v1/ak/ts/1800/h/abc/x").is_none());
    }

    #[test]
    fn a_signature_made_like_the_sdk_verifies() {
        let keys = Keys::for_test(&[("ak1", "secret1")]);
        let req = Request::builder()
            .method("GET")
            .uri("/v1/metric?database=x")
            .header("host", "127.0.0.1:8080")
            .header("content-length", "0")
            .header("x-bce-date", "2017-11-29T22:45:54Z")
            .body(axum::body::Body::empty())
            .unwrap();
        let auth = sign("ak1", "secret1", "2017-11-29T22:45:54Z", 1800, &req, &[]);
        let now = 1_511_995_554;
        assert_eq!(verify(&keys, &req, &auth, now), Ok("ak1".to_owned()));
        assert!(matches!(
            verify(&keys, &req, &auth, now + 1801),
            Err(SignatureError::Expired { valid: 1800, .. })
        ));
        assert_eq!(
            verify(&keys, &req, &auth, now - MAX_SKEW_SECS - 1),
            Err(SignatureError::Ahead("2017-11-29T22:45:54Z".into()))
        );
        let bad = auth.replace("/1800//", "/1801//");
        assert_eq!(
            verify(&keys, &req, &bad, now),
            Err(SignatureError::Mismatch)
        );
        let other = Keys::for_test(&[("ak1", "secret2")]);
        assert_eq!(
            verify(&other, &req, &auth, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&keys, &req, &auth.replace("ak1", "ak2"), now),
            Err(SignatureError::UnknownKey("ak2".into()))
        );
        assert_eq!(
            verify(&keys, &req, "bce-auth-v1/ak1", now),
            Err(SignatureError::Malformed)
        );
    }
}
