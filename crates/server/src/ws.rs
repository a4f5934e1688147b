//! MQTT over WebSocket (RFC 6455, MQTT 5 §6): the HTTP upgrade with path and subprotocol
//! checks, and [`WsStream`], which turns a WebSocket into a byte stream so the connection
//! task serves it exactly like TCP. MQTT packets may be split over binary messages and one
//! message may carry several packets: the connection's framing works on bytes, so both
//! just work. Pings are answered by tungstenite; a close frame ends the stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{self, Message, http};

/// Subprotocols we speak, as offered by MQTT clients (`mqttv3.1` by old 3.1 clients).
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Accept the WebSocket upgrade on `stream`: the request path must be `path` (or `/mqtt`
/// or `/` when `None`), and if the client offers subprotocols one must be `mqtt` or
/// `mqttv3.1`; the reply names the first such one offered.
#[allow(clippy::result_large_err)] // tungstenite's callback type
pub(crate) async fn accept<S>(stream: S, path: Option<String>) -> Result<WsStream<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let callback = move |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        let p = req.uri().path();
        let path_ok = match &path {
            Some(want) => p == want,
            None => p == "/mqtt" || p == "/",
        };
        if !path_ok {
            return Err(error_response(
                http::StatusCode::NOT_FOUND,
                format!("no MQTT endpoint at {p}"),
            ));
        }
        let offered: Vec<&str> = req
            .headers()
            .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if !offered.is_empty() {
            let Some(chosen) = offered
                .iter()
                .find(|o| SUBPROTOCOLS.iter().any(|s| s.eq_ignore_ascii_case(o)))
            else {
                return Err(error_response(
                    http::StatusCode::BAD_REQUEST,
                    "unsupported WebSocket subprotocol (use mqtt)".into(),
                ));
            };
            if let Ok(v) = http::HeaderValue::from_str(chosen) {
                resp.headers_mut()
                    .insert(http::header::SEC_WEBSOCKET_PROTOCOL, v);
            }
        }
        Ok(resp)
    };
    let ws = tokio_tungstenite::accept_hdr_async(stream, callback)
        .await
        .map_err(|e| e.to_string())?;
    Ok(WsStream {
        ws,
        pending: Vec::new(),
        pos: 0,
        closing: false,
    })
}

fn error_response(status: http::StatusCode, msg: String) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(msg));
    *r.status_mut() = status;
    r
}

/// A WebSocket as a byte stream: reads yield the bytes of binary messages, each write
/// becomes one binary message (the connection task writes every queued packet at once,
/// so many packets share a message).
#[derive(Debug)]
pub(crate) struct WsStream<S> {
    ws: WebSocketStream<S>,
    /// The binary message being read and how much of it was handed out.
    pending: Vec<u8>,
    pos: usize,
    /// The client sent a close frame: flush tungstenite's reply, then report EOF.
    closing: bool,
}

fn to_io(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.closing {
                // send the close reply tungstenite queued (a clean close for the client)
                let _ = ready!(this.ws.poll_flush_unpin(cx));
                return Poll::Ready(Ok(()));
            }
            if let Some(rest) = this.pending.get(this.pos..) {
                if !rest.is_empty() {
                    let n = rest.len().min(buf.remaining());
                    buf.put_slice(rest.get(..n).unwrap_or_default());
                    this.pos += n;
                    return Poll::Ready(Ok(()));
                }
            }
            match ready!(this.ws.poll_next_unpin(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Err(
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                )) => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
                Some(Ok(Message::Binary(data))) => {
                    this.pending = data;
                    this.pos = 0;
                }
                Some(Ok(Message::Close(_))) => this.closing = true,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text WebSocket message (MQTT needs binary messages)",
                    )));
                }
                // ping (answered by tungstenite on the next poll), pong, raw frame
                Some(Ok(_)) => {}
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.ws.poll_ready_unpin(cx)).map_err(to_io)?;
        this.ws
            .start_send_unpin(Message::Binary(buf.to_vec()))
            .map_err(to_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().ws.poll_flush_unpin(cx).map_err(to_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(self.get_mut().ws.poll_close_unpin(cx)) {
            Ok(())
            | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(to_io(e))),
        }
    }
}
