//! Errors of the TSDB API: `{"requestId","code","message"}` with the codes of Baidu
//! Cloud's common error table, and the request id again in `x-bce-request-id`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use midge_series::SeriesError;
use serde_json::json;

use crate::api::json_response;

/// The header naming the request id.
pub(crate) const REQUEST_ID: &str = "x-bce-request-id";

/// A random request id shaped like a UUID (version 4).
pub(crate) fn request_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // no randomness: a time-based id is still unique enough to find a log line
        for (d, t) in b.iter_mut().zip(crate::time::now_ms().to_be_bytes()) {
            *d = t;
        }
    }
    if let Some(v) = b.get_mut(6) {
        *v = (*v & 0x0f) | 0x40;
    }
    if let Some(v) = b.get_mut(8) {
        *v = (*v & 0x3f) | 0x80;
    }
    let h = super::sign::hex(&b);
    let part = |r: std::ops::Range<usize>| h.get(r).unwrap_or_default();
    format!(
        "{}-{}-{}-{}-{}",
        part(0..8),
        part(8..12),
        part(12..16),
        part(16..20),
        part(20..32)
    )
}

/// An error answer of the TSDB API.
#[derive(Debug)]
pub(crate) struct TsdbError {
    pub(crate) status: StatusCode,
    /// Baidu's error code (`AccessDenied`, `InvalidHTTPRequest`, ...).
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl TsdbError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        TsdbError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `InappropriateJSON`: well-formed JSON that asks for something impossible (a bad
    /// point, time, aggregator, ...).
    pub(crate) fn inappropriate(message: impl Into<String>) -> Self {
        TsdbError::new(StatusCode::BAD_REQUEST, "InappropriateJSON", message)
    }

    /// 400 `MalformedJSON`: a body that is not JSON of the expected shape.
    pub(crate) fn malformed(message: impl Into<String>) -> Self {
        TsdbError::new(StatusCode::BAD_REQUEST, "MalformedJSON", message)
    }

    /// 403 `AccessDenied`.
    pub(crate) fn access_denied(message: impl Into<String>) -> Self {
        TsdbError::new(StatusCode::FORBIDDEN, "AccessDenied", message)
    }

    /// 500 `InternalError`.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        TsdbError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    pub(crate) fn from_series(e: SeriesError) -> Self {
        match e {
            SeriesError::InvalidPoint { .. } | SeriesError::InvalidQuery(_) => {
                TsdbError::inappropriate(e.to_string())
            }
            SeriesError::DiskFull { .. } => TsdbError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "InternalError",
                e.to_string(),
            ),
            other => {
                tracing::warn!(error = %other, "series store error (TSDB API)");
                TsdbError::internal(other.to_string())
            }
        }
    }
}

impl IntoResponse for TsdbError {
    fn into_response(self) -> Response {
        let id = request_id();
        let mut r = json_response(
            self.status,
            &json!({ "requestId": id, "code": self.code, "message": self.message }),
        );
        if let Ok(v) = HeaderValue::from_str(&id) {
            r.headers_mut().insert(REQUEST_ID, v);
        }
        r
    }
}
