//! HTTP ingestion for devices that cannot keep an MQTT connection open (a cellular modem
//! posting JSON every few minutes): `POST /topics/{topic}?qos=1&retain=false`, the shape of
//! AWS IoT's HTTPS publish (`POST /topics/{topic}?qos=&retain=&contentType=&messageExpiry=`),
//! the request body being the payload, as is (any content type; `Content-Encoding: gzip`
//! is inflated).
//!
//! A device signs in with HTTP Basic: its MQTT username and its secret from the device
//! registry. Users of password files cannot use this route (their topics are held to a
//! listener's ACL file, which the HTTP listener does not apply): they publish over MQTT, and
//! operators over `POST /api/v1/publish`. The device is held to its policies as on MQTT
//! (the registry's check for a PUBLISH), and its message is published through an
//! in-process MQTT 5 connection that carries the device's username and the client id
//! `{username}@http` (a client id of its own, so a live MQTT connection of the device is not
//! taken over): subscribers and rules see the device as the publisher (`username()`,
//! `clientid()`). Requests of one device are published one at a time.
//!
//! Answers: 200 `{"message": "OK", "topic", "qos", "retain", "bytes", "client_id",
//! "username"}` once the broker accepted it (PUBACK at QoS 1); 400 bad topic or query;
//! 401 (with `WWW-Authenticate`) missing or wrong credentials; 403 a disabled device or a
//! topic its policies do not let it publish to; 413 a body larger than the broker's maximum
//! packet size (or [`crate::MAX_BODY_BYTES`]); 503 without a device registry.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use midge_auth::Access;
use midge_client::codec::{Packet, Protocol, Publish, QoS, ReasonCode, TopicName};
use midge_client::{Client, Event};
use serde_json::json;
use tracing::{debug, warn};

use crate::api::{ApiError, AppState, json_response};
use crate::{BODY_READ_TIMEOUT, MAX_BODY_BYTES};

/// How long the broker has to accept a connection and acknowledge the publish.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// The client id an HTTP publish of `username` carries.
pub(crate) fn client_id(username: &str) -> String {
    format!("{username}@http")
}

/// What the query string asks for.
#[derive(Debug, PartialEq)]
struct Options {
    qos: QoS,
    retain: bool,
    content_type: Option<String>,
    message_expiry: Option<u32>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

/// Parse `qos`, `retain`, `contentType` and `messageExpiry` (AWS IoT's names); anything
/// else is refused, so that a typo is not silently ignored.
fn options(query: Option<&str>) -> Result<Options, ApiError> {
    let mut o = Options {
        qos: QoS::AtMostOnce,
        retain: false,
        content_type: None,
        message_expiry: None,
    };
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "qos" => {
                o.qos = match v.as_ref() {
                    "0" => QoS::AtMostOnce,
                    "1" => QoS::AtLeastOnce,
                    "2" => QoS::ExactlyOnce,
                    _ => return Err(bad(format!("qos {v:?}: must be 0, 1 or 2"))),
                }
            }
            "retain" => {
                o.retain = match v.as_ref() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(bad(format!("retain {v:?}: must be true or false"))),
                }
            }
            "contentType" | "content_type" => o.content_type = Some(v.into_owned()),
            "messageExpiry" | "message_expiry" => {
                o.message_expiry = Some(v.parse().map_err(|_| {
                    bad(format!(
                        "messageExpiry {v:?}: a number of seconds is expected"
                    ))
                })?)
            }
            _ => {
                return Err(bad(format!(
                    "unknown parameter {k:?}: qos, retain, contentType and messageExpiry are understood"
                )));
            }
        }
    }
    Ok(o)
}

/// Locks that make one device's requests publish one at a time (they share a client id).
fn device_lock(username: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let locks = LOCKS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = locks.lock().unwrap_or_else(|e| e.into_inner());
    // forget the locks nobody holds (keeps the map as small as the devices posting now)
    if map.len() > 1024 {
        map.retain(|_, l| Arc::strong_count(l) > 1);
    }
    map.entry(username.to_owned()).or_default().clone()
}

/// The request body, inflated when gzipped, at most `limit` bytes either way.
async fn body(headers: &HeaderMap, req: Request, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the payload is larger than {limit} bytes"),
        )
    };
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
    {
        None => false,
        Some(e) if e.is_empty() || e == "identity" => false,
        Some(e) if e == "gzip" || e == "x-gzip" => true,
        Some(e) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Encoding {e:?} is not supported (gzip is)"),
            ));
        }
    };
    let raw = match tokio::time::timeout(
        BODY_READ_TIMEOUT,
        axum::body::to_bytes(req.into_body(), limit),
    )
    .await
    {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body was not received within {} s",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            ));
        }
        Ok(Err(e)) if crate::tsdb::over_limit(&e) => return Err(too_large()),
        Ok(Err(e)) => return Err(bad(format!("the body could not be read: {e}"))),
        Ok(Ok(b)) => b,
    };
    if !gzip {
        return Ok(raw);
    }
    let inflated = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
        flate2::read::MultiGzDecoder::new(&raw[..])
            .take(cap)
            .read_to_end(&mut out)
            .map(|_| out)
    })
    .await
    .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "inflating failed"))?
    .map_err(|e| bad(format!("the gzipped body could not be inflated: {e}")))?;
    if inflated.len() > limit {
        return Err(too_large());
    }
    Ok(Bytes::from(inflated))
}

/// Whether the content type names text (then a UTF-8 payload is marked as such).
fn is_text(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|t| {
        let t = t
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        t.starts_with("text/") || t == "application/json" || t.ends_with("+json")
    })
}

/// `POST /topics/{*topic}`.
pub(crate) async fn handler(
    State(state): State<AppState>,
    Path(topic): Path<String>,
    RawQuery(query): RawQuery,
    req: Request,
) -> Response {
    match ingest(state, topic, query, req).await {
        Ok(r) => r,
        Err(e) => e,
    }
}

async fn ingest(
    state: AppState,
    topic: String,
    query: Option<String>,
    req: Request,
) -> Result<Response, Response> {
    let Some(registry) = state.0.server.registry().cloned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server runs without a device registry: devices cannot publish over HTTP",
        )
        .into_response());
    };
    let headers = req.headers().clone();
    let username = state.0.auth.device_login(&registry, &headers).await?;
    let o = options(query.as_deref()).map_err(IntoResponse::into_response)?;
    let name = TopicName::new(topic.as_str()).map_err(|e| {
        bad(format!(
            "topic {topic:?}: {e} (give it after /topics/, levels separated by /)"
        ))
        .into_response()
    })?;
    let client_id = client_id(&username);
    if registry.check(Some(&username), &client_id, &topic, Access::Write) != Some(true) {
        warn!(username = %username, topic = %topic, "HTTP publish refused by the device's policies");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "device {username:?} may not publish to {topic:?}: none of its policies grants it"
            ),
        )
        .into_response());
    }
    let content_type = o.content_type.clone().or_else(|| {
        headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let payload = body(&headers, req, MAX_BODY_BYTES)
        .await
        .map_err(IntoResponse::into_response)?;
    let bytes = payload.len();
    let text = is_text(content_type.as_deref()) && std::str::from_utf8(&payload).is_ok();
    let mut publish = Publish::new(name, payload);
    publish.qos = o.qos;
    publish.retain = o.retain;
    if text && bytes > 0 {
        publish.properties.payload_format_indicator = Some(1);
    }
    publish.properties.content_type = o.content_type.clone().map(Into::into);
    publish.properties.message_expiry_interval = o.message_expiry;

    let connector = state.0.connector.clone();
    let lock = device_lock(&username);
    let (user, id) = (username.clone(), client_id.clone());
    // in a task of its own: a caller that goes away halfway does not cut the flow short
    let reason = tokio::spawn(async move {
        let _one_at_a_time = lock.lock().await;
        publish_as(&connector, &user, &id, publish).await
    })
    .await
    .map_err(|_| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the publish failed").into_response()
    })?
    .map_err(IntoResponse::into_response)?;
    if reason.is_error() {
        let status = match reason {
            ReasonCode::NOT_AUTHORIZED => StatusCode::FORBIDDEN,
            ReasonCode::TOPIC_NAME_INVALID => StatusCode::BAD_REQUEST,
            ReasonCode::PACKET_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            ReasonCode::QUOTA_EXCEEDED => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        return Err(ApiError::new(
            status,
            format!(
                "the broker refused the publish: {} (0x{:02X})",
                reason.description(),
                reason.0
            ),
        )
        .into_response());
    }
    debug!(username = %username, topic = %topic, bytes, "device published over HTTP");
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "message": "OK",
            "topic": topic,
            "qos": o.qos.as_u8(),
            "retain": o.retain,
            "bytes": bytes,
            "username": username,
            "client_id": client_id,
        }),
    ))
}

/// Connect in-process as the device, publish, wait for the acknowledgement, disconnect.
async fn publish_as(
    connector: &midge_client::Connector,
    username: &str,
    client_id: &str,
    publish: Publish,
) -> Result<ReasonCode, ApiError> {
    let unavailable = |why: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, why);
    let mut options = crate::publish::local_options(connector, client_id);
    options.connect.username = Some(username.into());
    options.reconnect = None;
    let connected = tokio::time::timeout(BROKER_TIMEOUT, Client::connect(options)).await;
    let (client, mut events, connack) = match connected {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(unavailable(format!("cannot reach the broker: {e}"))),
        Err(_) => return Err(unavailable("the broker did not answer in time".into())),
    };
    let limit = connack.properties.maximum_packet_size.unwrap_or(u32::MAX);
    // its size as the broker will read it (the packet id is given by the event loop)
    let mut sized = publish.clone();
    sized.packet_id = 1;
    let size = Packet::Publish(sized)
        .encoded_len(Protocol::V5)
        .unwrap_or(usize::MAX);
    if u32::try_from(size).map_or(true, |s| s > limit) {
        let _ = client.disconnect().await;
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the message ({size} bytes as an MQTT packet) is larger than the broker's maximum packet size ({limit} bytes)"
            ),
        ));
    }
    if client.publish_packet(publish).await.is_err() {
        return Err(unavailable("the connection to the broker closed".into()));
    }
    let outcome = tokio::time::timeout(BROKER_TIMEOUT, async {
        loop {
            match events.poll().await {
                Ok(Event::Published { reason, .. }) => return Ok(reason),
                Ok(Event::Disconnected(d)) => {
                    return Err(PublishLost::Disconnected(d.reason.description()));
                }
                Ok(Event::Closed) => return Err(PublishLost::Closed),
                Ok(Event::ConnectionLost(e)) | Err(e) => return Err(PublishLost::Client(e)),
                Ok(_) => {}
            }
        }
    })
    .await;
    let _ = client.disconnect().await;
    // let the DISCONNECT go out (the event loop writes it), without waiting long
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while !matches!(events.poll().await, Ok(Event::Closed) | Err(_)) {}
    })
    .await;
    match outcome {
        Ok(Ok(reason)) => Ok(reason),
        Ok(Err(why)) => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("the publish may not have reached the broker: {why}"),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "the broker did not acknowledge the publish in time",
        )),
    }
}

/// Why a device's publish may not have reached the broker (502).
#[derive(Debug, thiserror::Error)]
enum PublishLost {
    /// The broker sent DISCONNECT (its reason).
    #[error("the broker disconnected: {0}")]
    Disconnected(&'static str),
    #[error("connection closed")]
    Closed,
    #[error(transparent)]
    Client(midge_client::ClientError),
}

/// `WWW-Authenticate` for the device routes.
pub(crate) fn challenge() -> HeaderValue {
    HeaderValue::from_static("Basic realm=\"midge devices\", charset=\"UTF-8\"")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_read_as_aws_iot_names_it() {
        let o = options(Some(
            "qos=1&retain=true&contentType=application%2Fjson&messageExpiry=60",
        ))
        .unwrap();
        assert_eq!(o.qos, QoS::AtLeastOnce);
        assert!(o.retain);
        assert_eq!(o.content_type.as_deref(), Some("application/json"));
        assert_eq!(o.message_expiry, Some(60));
        assert_eq!(options(None).unwrap().qos, QoS::AtMostOnce);
        for q in ["qos=3", "retain=yes", "messageExpiry=-1", "qso=1"] {
            assert!(options(Some(q)).is_err(), "{q}");
        }
    }

    #[test]
    fn text_types_mark_the_payload_as_utf8() {
        assert!(is_text(Some("application/json; charset=utf-8")));
        assert!(is_text(Some("text/plain")));
        assert!(!is_text(Some("application/octet-stream")));
        assert!(!is_text(None));
    }
}
