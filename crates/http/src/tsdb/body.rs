//! Request bodies of the TSDB API: JSON (`Content-Type: application/json`, so that a web
//! page elsewhere cannot send one without a CORS preflight), optionally gzipped, within a
//! size limit before and after decompression (a gzip bomb is refused with 413 once it
//! inflates past the limit; it is never held whole).

use std::io::Read;

use axum::extract::Request;
use axum::http::{StatusCode, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::TsdbError;
use crate::BODY_READ_TIMEOUT;

/// Largest write body, compressed or inflated (`POST /v1/datapoint`).
pub(crate) const MAX_WRITE_BYTES: usize = 16 * 1024 * 1024;

fn too_large(limit: usize) -> TsdbError {
    TsdbError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "EntityTooLarge",
        format!("request body larger than {limit} bytes"),
    )
}

/// Whether reading a body with [`axum::body::to_bytes`] failed because it is larger than
/// the limit (the error's source is then http-body's `LengthLimitError`, as axum documents).
pub(crate) fn over_limit(e: &axum::Error) -> bool {
    std::error::Error::source(e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
}

/// The body of `req` as bytes (inflated when gzipped), at most `limit` bytes either way.
pub(crate) async fn read(req: Request, limit: usize) -> Result<Bytes, TsdbError> {
    let headers = req.headers();
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json {
        return Err(TsdbError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "InvalidHTTPRequest",
            "send the body as JSON with Content-Type: application/json",
        ));
    }
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    {
        None => false,
        Some(e) if e.is_empty() || e == "identity" => false,
        Some(e) if e == "gzip" || e == "x-gzip" => true,
        Some(e) => {
            return Err(TsdbError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "InvalidHTTPRequest",
                format!("Content-Encoding {e:?} is not supported (gzip is)"),
            ));
        }
    };
    let read = tokio::time::timeout(
        BODY_READ_TIMEOUT,
        axum::body::to_bytes(req.into_body(), limit),
    );
    let raw = match read.await {
        Err(_) => {
            return Err(TsdbError::new(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeout",
                format!(
                    "request body not received within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            ));
        }
        Ok(Err(e)) => {
            // the only error a complete body can give is its size; a broken connection
            // has nobody to answer
            return Err(if over_limit(&e) {
                too_large(limit)
            } else {
                TsdbError::new(
                    StatusCode::BAD_REQUEST,
                    "InvalidHTTPRequest",
                    format!("request body could not be read: {e}"),
                )
            });
        }
        Ok(Ok(b)) => b,
    };
    if !gzip {
        return Ok(raw);
    }
    tokio::task::spawn_blocking(move || inflate(&raw, limit))
        .await
        .map_err(|_| TsdbError::internal("decompression failed"))?
}

/// Inflates a gzip body, refusing more than `limit` bytes of output.
fn inflate(raw: &[u8], limit: usize) -> Result<Bytes, TsdbError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::MultiGzDecoder::new(raw)
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|e| {
            TsdbError::new(
                StatusCode::BAD_REQUEST,
                "InvalidHTTPRequest",
                format!("the gzipped body could not be inflated: {e}"),
            )
        })?;
    if out.len() > limit {
        return Err(too_large(limit));
    }
    Ok(Bytes::from(out))
}

/// A JSON body parsed as `T` (400 `MalformedJSON` with the parser's reason).
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, TsdbError> {
    serde_json::from_slice(bytes).map_err(|e| TsdbError::malformed(format!("bad JSON body: {e}")))
}
