//! # midge-client
//!
//! An async (tokio) MQTT client for MQTT 3.1, 3.1.1 and 5.0 on top of `midge-codec`:
//! QoS 0/1/2 in both directions with in-flight tracking and redelivery after a reconnect,
//! the server's receive maximum respected, keepalive pings, wills, MQTT 5 properties, and
//! TCP, TLS (rustls), WebSocket and secure WebSocket transports.
//!
//! [`Client::new`] gives a cheap cloneable [`Client`] handle and the [`EventLoop`] that owns
//! the connection ([`Client::connect`] does the same and waits for the CONNACK). Poll the event loop (in its own task or in a `select!`) to drive
//! everything; the handle queues requests to it. All queued packets are encoded into one
//! buffer and written with one call; TCP_NODELAY is set.
//!
//! The protocol logic lives in [`MqttState`], a sans-I/O state machine that can be driven
//! without a network.
//!
//! ```no_run
//! use midge_client::{Client, ClientOptions, Event, QoS};
//!
//! # async fn run() -> Result<(), midge_client::ClientError> {
//! let mut options = ClientOptions::new("127.0.0.1", 1883, "sensor-1");
//! options.connect.keep_alive = 30;
//! let (client, mut events) = Client::new(options);
//!
//! client.subscribe("floor-5/#", QoS::AtLeastOnce).await?;
//! client.publish("floor-5/temperature", QoS::ExactlyOnce, false, "21.5").await?;
//! loop {
//!     match events.poll().await? {
//!         Event::Message(m) => println!("{} {:?}", m.topic, m.payload),
//!         Event::Published { packet_id, .. } => {
//!             println!("publish {packet_id} done");
//!             client.disconnect().await?;
//!         }
//!         Event::Closed => break,
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod client;
mod error;
mod event;
mod options;
mod state;
mod transport;

pub use client::{Client, EventLoop, Events};
pub use error::{ClientError, refusal_text};
pub use event::Event;
pub use options::{
    AsyncStream, ClientOptions, ConnectFuture, Connector, Direction, HookFn, PacketHook, Reconnect,
    TlsOptions, TlsVersion, Transport,
};
pub use state::{MqttState, StateError};
pub use transport::tls_config;

pub use midge_codec as codec;
pub use midge_codec::{Protocol, QoS};
