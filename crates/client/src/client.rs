//! The application-facing handle ([`Client`]) and the task that drives the connection
//! ([`EventLoop`]).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use midge_codec::{
    Disconnect, Packet, Publish, QoS, ReasonCode, Subscribe, SubscribeProperties,
    SubscriptionOptions, TopicFilter, TopicName, Unsubscribe, UnsubscribeProperties, decode,
};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use crate::error::ClientError;
use crate::event::Event;
use crate::options::{ClientOptions, Direction};
use crate::state::{MqttState, StateError};
use crate::transport::{self, Stream};

/// A request from a [`Client`] handle to the event loop.
#[derive(Debug)]
enum Request {
    Publish(Publish),
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    Disconnect(Disconnect),
}

/// A cheap, cloneable handle for publishing and subscribing. Requests are queued to the
/// [`EventLoop`], which must be polled for anything to happen.
#[derive(Debug, Clone)]
pub struct Client {
    tx: mpsc::Sender<Request>,
    /// Manual acks go apart from the bounded request queue: an application that
    /// acknowledges a batch while the event loop waits for it to take the next event must
    /// not wait on that queue. Their number is bounded by our Receive Maximum.
    acks: mpsc::UnboundedSender<(QoS, u16)>,
}

impl Client {
    /// Create a client and its event loop. Nothing touches the network until
    /// [`EventLoop::poll`] is called.
    pub fn new(options: ClientOptions) -> (Client, EventLoop) {
        let (tx, rx) = mpsc::channel(options.request_capacity.max(1));
        let (acks, acks_rx) = mpsc::unbounded_channel();
        let mut state = MqttState::new(options.connect.protocol);
        if let Some(max) = options.connect.properties.receive_maximum {
            state.set_receive_maximum(max);
        }
        state.set_deliver_qos2_on_pubrel(options.qos2_deliver_on_pubrel);
        state.set_manual_acks(options.manual_acks);
        if let Some(max) = options.max_inflight {
            state.set_max_inflight(max);
        }
        let event_loop = EventLoop {
            options,
            state,
            requests: rx,
            requests_closed: false,
            acks: acks_rx,
            stream: None,
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
            last_sent: Instant::now(),
            ping_sent: None,
            reconnect_delay: None,
            backoff: None,
            closed: false,
            hooked: 0,
        };
        (Client { tx, acks }, event_loop)
    }

    /// Create a client and connect at once: returns after the server's CONNACK (which is
    /// returned too), or with the error of the first attempt. Keep polling the returned
    /// [`EventLoop`] afterwards.
    pub async fn connect(
        options: ClientOptions,
    ) -> Result<(Client, EventLoop, midge_codec::ConnAck), ClientError> {
        let (client, mut events) = Client::new(options);
        loop {
            match events.poll().await? {
                Event::Connected(connack) => return Ok((client, events, connack)),
                Event::ConnectionLost(e) => return Err(e),
                _ => {}
            }
        }
    }

    async fn send(&self, request: Request) -> Result<(), ClientError> {
        self.tx.send(request).await.map_err(|_| ClientError::Closed)
    }

    /// Queue a publish of `payload` to `topic`. Waits only when the request queue is full.
    pub async fn publish(
        &self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        let topic = TopicName::new(topic).map_err(|e| ClientError::Config(e.to_string()))?;
        let mut publish = Publish::new(topic, payload);
        publish.qos = qos;
        publish.retain = retain;
        self.send(Request::Publish(publish)).await
    }

    /// Queue a fully built PUBLISH (MQTT 5 properties included). Its packet id is assigned by
    /// the event loop.
    pub async fn publish_packet(&self, publish: Publish) -> Result<(), ClientError> {
        self.send(Request::Publish(publish)).await
    }

    /// Queue a PUBLISH without waiting; [`ClientError::QueueFull`] when the request queue is
    /// full, [`ClientError::Closed`] when the event loop is gone.
    pub fn try_publish_packet(&self, publish: Publish) -> Result<(), ClientError> {
        self.tx
            .try_send(Request::Publish(publish))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ClientError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => ClientError::Closed,
            })
    }

    /// Subscribe to one filter.
    pub async fn subscribe(&self, filter: &str, qos: QoS) -> Result<(), ClientError> {
        let filter = TopicFilter::new(filter).map_err(|e| ClientError::Config(e.to_string()))?;
        self.subscribe_many(
            vec![(filter, SubscriptionOptions::qos(qos))],
            SubscribeProperties::default(),
        )
        .await
    }

    /// Subscribe to several filters in one SUBSCRIBE, with MQTT 5 properties.
    pub async fn subscribe_many(
        &self,
        filters: Vec<(TopicFilter, SubscriptionOptions)>,
        properties: SubscribeProperties,
    ) -> Result<(), ClientError> {
        self.send(Request::Subscribe(Subscribe {
            packet_id: 0,
            properties,
            filters,
        }))
        .await
    }

    /// Unsubscribe from several filters in one UNSUBSCRIBE.
    pub async fn unsubscribe_many(
        &self,
        filters: Vec<TopicFilter>,
        properties: UnsubscribeProperties,
    ) -> Result<(), ClientError> {
        self.send(Request::Unsubscribe(Unsubscribe {
            packet_id: 0,
            properties,
            filters,
        }))
        .await
    }

    /// Acknowledge an incoming message when [`ClientOptions::manual_acks`] is on (PUBACK for
    /// QoS 1, PUBREC for QoS 2); nothing for QoS 0. Acknowledge after the message is safe
    /// (stored, forwarded): a message never acknowledged is redelivered after a reconnect.
    ///
    /// [`ClientOptions::manual_acks`]: crate::ClientOptions::manual_acks
    /// This never waits: acks bypass the request queue (the server sends at most our
    /// Receive Maximum of unacknowledged messages, so they are bounded).
    pub async fn ack(&self, publish: &Publish) -> Result<(), ClientError> {
        if publish.qos == QoS::AtMostOnce {
            return Ok(());
        }
        self.acks
            .send((publish.qos, publish.packet_id))
            .map_err(|_| ClientError::ConnectionClosed)
    }

    /// Send DISCONNECT (normal disconnection) after everything queued before it, then close.
    pub async fn disconnect(&self) -> Result<(), ClientError> {
        self.disconnect_with(Disconnect::new(ReasonCode::NORMAL_DISCONNECTION))
            .await
    }

    /// Send this DISCONNECT (MQTT 5 reason and properties) and close.
    pub async fn disconnect_with(&self, disconnect: Disconnect) -> Result<(), ClientError> {
        self.send(Request::Disconnect(disconnect)).await
    }
}

/// Drives one connection: connects, reads and decodes, answers acks, sends keepalive pings,
/// batches queued requests into one write, and reconnects (if enabled). Call
/// [`EventLoop::poll`] in a loop.
#[derive(Debug)]
pub struct EventLoop {
    options: ClientOptions,
    state: MqttState,
    requests: mpsc::Receiver<Request>,
    requests_closed: bool,
    /// Manual acks ([`Client::ack`]).
    acks: mpsc::UnboundedReceiver<(QoS, u16)>,
    stream: Option<Stream>,
    read_buf: BytesMut,
    write_buf: BytesMut,
    last_sent: Instant,
    ping_sent: Option<Instant>,
    reconnect_delay: Option<Duration>,
    backoff: Option<Duration>,
    closed: bool,
    /// How many packets at the front of the outbox were already shown to the packet hook.
    hooked: usize,
}

/// Largest number of queued requests taken in one wake-up.
const BATCH: usize = 256;

impl EventLoop {
    /// The options this loop connects with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// Change the options used by the next (re)connect (for example `clean_start`).
    pub fn options_mut(&mut self) -> &mut ClientOptions {
        &mut self.options
    }

    /// The protocol state (in-flight counts, ...).
    pub fn state(&self) -> &MqttState {
        &self.state
    }

    /// Drive this loop in its own task and hand every event, in order, to the returned
    /// channel: the usual way to use the client (its [`Client`] handle works from anywhere).
    /// The task ends after the last event ([`Event::Closed`] or an error) or when the
    /// receiver is dropped.
    ///
    /// `capacity`: with `Some(n)` a full channel stops the loop from reading the network
    /// (backpressure to the broker); `None` never blocks (for consumers that must not hold
    /// the loop, e.g. one waiting on the loop's own acknowledgements). `yield_each` lets the
    /// consumer run before the next packet is handled, so what it prints keeps wire order.
    pub fn spawn(
        mut self,
        capacity: Option<usize>,
        yield_each: bool,
    ) -> (Events, tokio::task::JoinHandle<()>) {
        let (events, forward) = match capacity {
            Some(n) => {
                let (tx, rx) = mpsc::channel(n.max(1));
                (Events::Bounded(rx), Forward::Bounded(tx))
            }
            None => {
                let (tx, rx) = mpsc::unbounded_channel();
                (Events::Unbounded(rx), Forward::Unbounded(tx))
            }
        };
        let task = tokio::spawn(async move {
            loop {
                let event = self.poll().await;
                let end = matches!(event, Err(_) | Ok(Event::Closed));
                let sent = match &forward {
                    Forward::Bounded(tx) => tx.send(event).await.is_ok(),
                    Forward::Unbounded(tx) => tx.send(event).is_ok(),
                };
                if !sent || end {
                    return;
                }
                if yield_each {
                    tokio::task::yield_now().await;
                }
            }
        });
        (events, task)
    }

    /// Wait for the next event. Connects first when there is no connection.
    ///
    /// Without [`ClientOptions::reconnect`], a connection problem is returned as `Err` and
    /// the next call connects again at once (the session's in-flight messages are redelivered
    /// if the server kept it). With it, a lost connection is reported as
    /// [`Event::ConnectionLost`] and the next call waits the backoff delay, then reconnects.
    /// A refused CONNACK is always an `Err`.
    ///
    /// Not cancel safe: a poll dropped in the middle of a write can lose or repeat bytes of
    /// the stream. Drive the loop from its own task (or await each poll to completion) and
    /// use the [`Client`] handle, whose methods are cancel safe, from elsewhere.
    pub async fn poll(&mut self) -> Result<Event, ClientError> {
        loop {
            if let Some(event) = self.state.pop_event() {
                return Ok(event);
            }
            if self.closed {
                return Err(ClientError::Closed);
            }
            if self.stream.is_none() {
                if let Some(delay) = self.reconnect_delay.take() {
                    sleep(delay).await;
                }
                if let Err(e) = self.connect().await {
                    return self.fail(e);
                }
                continue;
            }
            if let Err(e) = self.step().await {
                return self.fail(e);
            }
        }
    }

    fn fail(&mut self, error: ClientError) -> Result<Event, ClientError> {
        tracing::debug!(%error, "connection ended");
        self.stream = None;
        self.hooked = 0;
        self.state.connection_lost();
        self.ping_sent = None;
        match self.options.reconnect {
            Some(r) if error.is_transient() => {
                let delay = self.backoff.map_or(r.min, |d| (d * 2).min(r.max));
                self.backoff = Some(delay);
                self.reconnect_delay = Some(delay);
                Ok(Event::ConnectionLost(error))
            }
            _ => Err(error),
        }
    }

    fn hook(&self, direction: Direction, packet: &Packet) {
        tracing::trace!(?direction, packet = packet.packet_type().name(), "packet");
        if let Some(hook) = &self.options.packet_hook {
            (hook.0)(direction, packet);
        }
    }

    /// Show packets newly queued in the outbox to the packet hook, in queue order, so that
    /// debug output reads "received X / sending its ack" even when writes are batched.
    fn hook_queued(&mut self) {
        let Some(hook) = self.options.packet_hook.clone() else {
            return;
        };
        let outbox = self.state.outbox();
        for packet in outbox.iter().skip(self.hooked) {
            (hook.0)(Direction::Sent, packet);
        }
        self.hooked = outbox.len();
    }

    async fn connect(&mut self) -> Result<(), ClientError> {
        let limit = self.options.connect_timeout;
        let (stream, connack) = timeout(limit, self.handshake())
            .await
            .map_err(|_| ClientError::ConnectTimeout)??;
        self.stream = Some(stream);
        match self.state.handle_connack(&connack) {
            Ok(()) => {}
            Err(StateError::Refused(reason)) => {
                self.stream = None;
                return Err(ClientError::Refused {
                    protocol: self.options.connect.protocol,
                    reason,
                    properties: Box::new(connack.properties),
                });
            }
            Err(e) => return Err(e.into()),
        }
        tracing::debug!(
            host = %self.options.host,
            port = self.options.port,
            session_present = connack.session_present,
            "connected"
        );
        self.backoff = None;
        self.last_sent = Instant::now();
        // redelivered flows and publishes queued while disconnected
        self.flush().await
    }

    async fn handshake(&mut self) -> Result<(Stream, midge_codec::ConnAck), ClientError> {
        let mut stream = transport::connect(&self.options).await?;
        self.read_buf.clear();
        self.write_buf.clear();
        let connect = Packet::Connect(Box::new(self.options.connect.clone()));
        self.hook(Direction::Sent, &connect);
        connect.encode(self.options.connect.protocol, &mut self.write_buf)?;
        stream.write_all(&self.write_buf).await?;
        self.write_buf.clear();
        loop {
            if let Some(packet) = decode(
                &mut self.read_buf,
                self.options.connect.protocol,
                self.options.max_packet_size,
            )? {
                self.hook(Direction::Received, &packet);
                return match packet {
                    Packet::ConnAck(c) => Ok((stream, c)),
                    other => Err(ClientError::NotConnAck(other.packet_type().name())),
                };
            }
            if stream.read(&mut self.read_buf).await? == 0 {
                return Err(ClientError::ConnectionClosed);
            }
        }
    }

    fn keepalive(&self) -> Option<Duration> {
        match self.options.connect.keep_alive {
            0 => None,
            k => Some(Duration::from_secs(u64::from(k))),
        }
    }

    fn handle_request(&mut self, request: Request) -> Result<(), ClientError> {
        match request {
            Request::Publish(p) => {
                self.state.publish(p)?;
            }
            Request::Subscribe(s) => {
                self.state.subscribe(s)?;
            }
            Request::Unsubscribe(u) => {
                self.state.unsubscribe(u)?;
            }
            Request::Disconnect(d) => {
                self.state.disconnect(d);
                self.closed = true;
            }
        }
        Ok(())
    }

    /// Handle whole packets from the read buffer until one gives the application an event
    /// (so events and the packet hook stay in wire order); returns whether any was handled.
    async fn process_buffered(&mut self) -> Result<bool, ClientError> {
        let mut handled = false;
        while let Some(packet) = decode(
            &mut self.read_buf,
            self.options.connect.protocol,
            self.options.max_packet_size,
        )? {
            handled = true;
            self.hook(Direction::Received, &packet);
            let disconnect = match &packet {
                Packet::Disconnect(d) => Some(d.reason),
                _ => None,
            };
            self.state.handle_packet(packet)?;
            self.hook_queued();
            if let Some(reason) = disconnect {
                self.flush().await?;
                return Err(ClientError::ServerDisconnect(reason));
            }
            if self.state.has_events() {
                break;
            }
        }
        if !self.state.ping_outstanding() {
            self.ping_sent = None;
        }
        Ok(handled)
    }

    /// One wake-up: bytes from the server, queued requests, or the keepalive timer.
    async fn step(&mut self) -> Result<(), ClientError> {
        // packets already read (with the CONNACK, or behind one that gave an event) first;
        // their acks are written together once the buffer holds no more whole packets
        if !self.read_buf.is_empty() && self.process_buffered().await? {
            if self.state.has_events() {
                return Ok(());
            }
            return self.flush().await;
        }
        // never wait with unwritten packets
        self.flush().await?;
        let keepalive = self.keepalive();
        let deadline = match (keepalive, self.ping_sent) {
            (Some(k), Some(sent)) => sent + k,
            (Some(k), None) => self.last_sent + k,
            (None, _) => Instant::now() + Duration::from_secs(86_400),
        };
        let Some(stream) = self.stream.as_mut() else {
            return Err(ClientError::ConnectionClosed);
        };
        let requests_open = !self.requests_closed;
        tokio::select! {
            read = stream.read(&mut self.read_buf) => {
                if read? == 0 {
                    return Err(ClientError::ConnectionClosed);
                }
                self.process_buffered().await?;
            }
            request = self.requests.recv(), if requests_open => {
                match request {
                    Some(r) => {
                        self.handle_request(r)?;
                        let mut n = 1;
                        while n < BATCH && !self.closed {
                            match self.requests.try_recv() {
                                Ok(r) => self.handle_request(r)?,
                                Err(_) => break,
                            }
                            n += 1;
                        }
                    }
                    None => self.requests_closed = true,
                }
            }
            Some((qos, packet_id)) = self.acks.recv() => {
                self.state.ack(qos, packet_id);
                while let Ok((qos, packet_id)) = self.acks.try_recv() {
                    self.state.ack(qos, packet_id);
                }
            }
            _ = sleep_until(deadline), if keepalive.is_some() => {
                if self.ping_sent.is_some() {
                    return Err(ClientError::KeepAliveTimeout);
                }
                self.state.ping();
                self.ping_sent = Some(Instant::now());
            }
        }
        self.flush().await?;
        if self.closed {
            if let Some(stream) = self.stream.as_mut() {
                stream.shutdown().await;
            }
            self.stream = None;
            self.state.connection_lost();
            self.state.push_event(Event::Closed);
        }
        Ok(())
    }

    /// Encode every queued packet into one buffer and write it at once.
    async fn flush(&mut self) -> Result<(), ClientError> {
        if self.state.outbox().is_empty() {
            return Ok(());
        }
        let protocol = self.options.connect.protocol;
        let mut qos0 = 0usize;
        self.hook_queued();
        self.hooked = 0;
        while let Some(packet) = self.state.outbox().pop_front() {
            if let Packet::Publish(p) = &packet {
                if p.qos == QoS::AtMostOnce {
                    qos0 += 1;
                }
            }
            packet.encode(protocol, &mut self.write_buf)?;
        }
        let Some(stream) = self.stream.as_mut() else {
            self.write_buf.clear();
            return Err(ClientError::ConnectionClosed);
        };
        let result = stream.write_all(&self.write_buf).await;
        self.write_buf.clear();
        result?;
        self.last_sent = Instant::now();
        for _ in 0..qos0 {
            self.state.push_event(Event::Published {
                packet_id: 0,
                qos: QoS::AtMostOnce,
                reason: ReasonCode::SUCCESS,
            });
        }
        Ok(())
    }
}

/// The events of an [`EventLoop`] driven by [`EventLoop::spawn`], in order.
#[derive(Debug)]
pub enum Events {
    /// A bounded channel (backpressure).
    Bounded(mpsc::Receiver<Result<Event, ClientError>>),
    /// An unbounded channel.
    Unbounded(mpsc::UnboundedReceiver<Result<Event, ClientError>>),
}

impl Events {
    /// The next event; `None` after the last one.
    pub async fn recv(&mut self) -> Option<Result<Event, ClientError>> {
        match self {
            Events::Bounded(rx) => rx.recv().await,
            Events::Unbounded(rx) => rx.recv().await,
        }
    }
}

enum Forward {
    Bounded(mpsc::Sender<Result<Event, ClientError>>),
    Unbounded(mpsc::UnboundedSender<Result<Event, ClientError>>),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// An application acknowledging a batch must not wait on the event loop: it may be
    /// the one waiting for the application to take its next event.
    #[tokio::test]
    async fn manual_acks_never_wait_on_the_request_queue() {
        let mut options = ClientOptions::new("127.0.0.1", 1, "acker");
        options.manual_acks = true;
        options.request_capacity = 1;
        let (client, _event_loop) = Client::new(options);
        let mut p = Publish::new(midge_codec::TopicName::new("t").unwrap(), Bytes::new());
        p.qos = QoS::AtLeastOnce;
        let acks = async {
            for id in 1..=5_000u16 {
                p.packet_id = id;
                client.ack(&p).await?;
            }
            Ok::<(), ClientError>(())
        };
        let done = tokio::time::timeout(Duration::from_secs(5), acks).await;
        assert!(matches!(done, Ok(Ok(()))), "{done:?}");
    }
}
