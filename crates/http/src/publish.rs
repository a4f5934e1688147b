//! `POST /api/v1/publish`: one in-process MQTT 5 connection, opened on first use, publishes
//! for every request (one at a time, so each request gets its own acknowledgement: PUBACK
//! for QoS 1, PUBCOMP for QoS 2, the write for QoS 0).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use midge_client::codec::{Publish, QoS, ReasonCode, TopicName};
use midge_client::{Client, ClientOptions, Connector, Event, Protocol, Transport};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Mutex, mpsc};
use tracing::{debug, warn};

use crate::api::{ApiError, AppState, JsonBody, json_response};

/// Numbers the in-process client ids of this process (`$midge/http/pub-1`, `live-2`, ...).
static NEXT_CLIENT: AtomicU64 = AtomicU64::new(1);

/// A fresh in-process client id with this prefix.
pub(crate) fn client_id(kind: &str) -> String {
    format!(
        "$midge/http/{kind}-{}",
        NEXT_CLIENT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Options for an in-process MQTT 5 connection.
pub(crate) fn local_options(connector: &Connector, id: &str) -> ClientOptions {
    let mut o = ClientOptions::new("local", 0, id);
    o.transport = Transport::Custom(connector.clone());
    o.connect = midge_client::codec::Connect::new(Protocol::V5, id);
    o.connect_timeout = Duration::from_secs(5);
    o
}

/// How long a publish may wait for its acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the publishing connection's event loop reports.
enum Outcome {
    Done(ReasonCode),
    Lost(String),
}

struct Connection {
    client: Client,
    outcomes: mpsc::Receiver<Outcome>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The shared publishing connection.
pub(crate) struct Publisher {
    connector: Connector,
    conn: Mutex<Option<Connection>>,
}

impl Publisher {
    pub(crate) fn new(connector: Connector) -> Publisher {
        Publisher {
            connector,
            conn: Mutex::new(None),
        }
    }

    async fn connect(&self) -> Result<Connection, ApiError> {
        let id = client_id("pub");
        let options = local_options(&self.connector, &id);
        let (client, mut events, _) = Client::connect(options).await.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot reach the broker: {e}"),
            )
        })?;
        debug!(client = %id, "HTTP publisher connected");
        let (tx, outcomes) = mpsc::channel(16);
        let task = tokio::spawn(async move {
            loop {
                let outcome = match events.poll().await {
                    Ok(Event::Published { reason, .. }) => Outcome::Done(reason),
                    Ok(Event::Disconnected(d)) => Outcome::Lost(format!(
                        "the broker disconnected: {}",
                        d.reason.description()
                    )),
                    Ok(Event::Closed) => Outcome::Lost("connection closed".into()),
                    Ok(Event::ConnectionLost(e)) | Err(e) => Outcome::Lost(e.to_string()),
                    Ok(_) => continue,
                };
                let end = matches!(outcome, Outcome::Lost(_));
                if tx.send(outcome).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Connection {
            client,
            outcomes,
            task,
        })
    }

    /// Publish and wait for the acknowledgement; the reason code of the final ack. A dead
    /// connection is replaced once. Run it in a task of its own: a caller that stops
    /// waiting halfway would leave an acknowledgement behind for the next request.
    pub(crate) async fn publish(&self, publish: Publish) -> Result<ReasonCode, ApiError> {
        let mut guard = self.conn.lock().await;
        for _ in 0..2 {
            if guard.is_none() {
                *guard = Some(self.connect().await?);
            }
            let Some(conn) = guard.as_mut() else {
                continue;
            };
            let mut dead = false;
            while let Ok(o) = conn.outcomes.try_recv() {
                dead |= matches!(o, Outcome::Lost(_));
            }
            if dead || conn.client.publish_packet(publish.clone()).await.is_err() {
                *guard = None;
                continue;
            }
            let why = match tokio::time::timeout(ACK_TIMEOUT, conn.outcomes.recv()).await {
                Ok(Some(Outcome::Done(reason))) => return Ok(reason),
                Ok(Some(Outcome::Lost(why))) => why,
                Ok(None) => "connection closed".to_owned(),
                Err(_) => {
                    *guard = None;
                    return Err(ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "the broker did not acknowledge the publish in time",
                    ));
                }
            };
            *guard = None;
            warn!(reason = %why, "HTTP publisher lost its connection");
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("the publish may not have reached the broker: {why}"),
            ));
        }
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot reach the broker",
        ))
    }
}

/// The body of `POST /api/v1/publish`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishRequest {
    /// A topic name (no wildcards).
    topic: String,
    /// The payload as text.
    #[serde(default)]
    payload: Option<String>,
    /// The payload as JSON (sent as its compact text).
    #[serde(default)]
    json: Option<serde_json::Value>,
    /// The payload as base64 (binary payloads).
    #[serde(default)]
    payload_base64: Option<String>,
    /// QoS 0, 1 or 2 (default 0).
    #[serde(default)]
    qos: u8,
    /// Retain the message (default false).
    #[serde(default)]
    retain: bool,
}

pub(crate) async fn handler(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<PublishRequest>,
) -> Result<Response, ApiError> {
    let publish = req.message()?;
    Ok(json_response(StatusCode::OK, &send(&state, publish).await?))
}

impl PublishRequest {
    /// The topic asked for.
    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    /// The MQTT message of the request (checked: topic, QoS, one payload).
    pub(crate) fn message(self) -> Result<Publish, ApiError> {
        let req = self;
        let topic = TopicName::new(req.topic.as_str())
            .map_err(|e| ApiError::bad_request(format!("topic {:?}: {e}", req.topic)))?;
        let qos = match req.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            q => return Err(ApiError::bad_request(format!("qos {q}: must be 0, 1 or 2"))),
        };
        if qos == QoS::AtMostOnce && req.topic.starts_with("$SYS") {
            // the broker drops it without a word at QoS 0: say so here
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the broker does not accept publishes to $SYS",
            ));
        }
        let given = [
            req.payload.is_some(),
            req.json.is_some(),
            req.payload_base64.is_some(),
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(ApiError::bad_request(
                "give the payload once: payload (text), json or payload_base64",
            ));
        }
        let (payload, text) = if let Some(p) = req.payload {
            (Bytes::from(p), true)
        } else if let Some(j) = req.json {
            (Bytes::from(j.to_string()), true)
        } else if let Some(b) = req.payload_base64 {
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b.as_bytes())
                .map_err(|e| ApiError::bad_request(format!("payload_base64: {e}")))?;
            let text = std::str::from_utf8(&raw).is_ok();
            (Bytes::from(raw), text)
        } else {
            (Bytes::new(), true)
        };
        let bytes = payload.len();
        let mut publish = Publish::new(topic, payload);
        publish.qos = qos;
        publish.retain = req.retain;
        if text && bytes > 0 {
            publish.properties.payload_format_indicator = Some(1);
        }
        Ok(publish)
    }
}

/// Publish through the shared in-process connection; the answer's body, or the broker's
/// refusal as an error.
pub(crate) async fn send(
    state: &AppState,
    publish: Publish,
) -> Result<serde_json::Value, ApiError> {
    let topic = publish.topic.as_str().to_owned();
    let (qos, retain, bytes) = (publish.qos.as_u8(), publish.retain, publish.payload.len());
    let worker = state.clone();
    let reason = tokio::spawn(async move { worker.0.publisher.publish(publish).await })
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the publish failed"))??;
    if reason.is_error() {
        let status = match reason {
            ReasonCode::NOT_AUTHORIZED => StatusCode::FORBIDDEN,
            ReasonCode::TOPIC_NAME_INVALID => StatusCode::BAD_REQUEST,
            ReasonCode::PACKET_TOO_LARGE | ReasonCode::PAYLOAD_FORMAT_INVALID => {
                StatusCode::BAD_REQUEST
            }
            ReasonCode::QUOTA_EXCEEDED => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        };
        return Err(ApiError::new(
            status,
            format!(
                "the broker refused the publish: {} (0x{:02X})",
                reason.description(),
                reason.0
            ),
        ));
    }
    debug!(topic = %topic, qos, bytes, "published over HTTP");
    Ok(json!({
        "topic": topic,
        "qos": qos,
        "retain": retain,
        "bytes": bytes,
        "reason": reason.description(),
        "reason_code": reason.0,
    }))
}
