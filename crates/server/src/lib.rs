//! # midge-server
//!
//! The tokio glue around [`midge_core::Broker`]:
//!
//! ```text
//! socket -> connection task (read buffer, frame check with max packet size, decode)
//!        -> bounded channel -> router task (owns core: auth, match, enqueue)
//!        -> per-connection outbound channel -> connection task (encode many packets into
//!           one buffer, one write)
//! ```
//!
//! The router never waits on a client: outbound channels are unbounded but their queued
//! bytes are counted, and a connection past its high-water mark is reported to core as not
//! writable (QoS 0 to it is dropped and counted, QoS 1/2 waits in its session). Publishers
//! are slowed by TCP when the router's inbound channel is full.
//!
//! Listeners speak MQTT or WebSockets, each optionally over TLS (rustls: TLS 1.2 and 1.3
//! only), with their own password file, ACL file and anonymous setting. The connection task
//! is generic over its byte stream; passwords are checked there (PBKDF2 on the blocking
//! pool) before the CONNECT reaches the router; ACLs are core's [`midge_core::Authorizer`].
//! [`Server::reload`] re-reads certificates, password and ACL files (SIGHUP in `midge serve`).

mod classic_cert;
pub mod cluster;
mod config;
mod congestion;
mod connection;
mod gate;
mod outbox;
mod park;
mod router;
mod security;
mod store_task;
mod sys;
mod ws;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

pub use config::{AuthConfig, ListenerConfig, ListenerProtocol, ServerConfig, TlsConfig};
pub use midge_core::{ClientSummary, LastValue, Message};

/// The rustls server configuration the broker's TLS listeners use (TLS 1.2 and 1.3, client
/// certificates checked against `ca_file` when set), for other listeners of the same
/// process such as the HTTP API's. Errors name the file and what is wrong with it.
pub fn tls_server_config(t: &TlsConfig) -> Result<std::sync::Arc<rustls::ServerConfig>, String> {
    security::tls_acceptor(t)
}

/// Process-wide byte counters for `$SYS`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) bytes_received: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) connections: AtomicUsize,
    pub(crate) next_conn: AtomicU64,
    /// Connections refused for a bad password, a missing certificate identity or anonymous
    /// access.
    pub(crate) auth_failures: AtomicU64,
}

/// Counts one open network connection until dropped (owned by the connection's task, so
/// the count is right however the connection ends).
#[derive(Debug)]
pub(crate) struct Slot(Arc<Counters>);

impl Slot {
    /// The server's counters.
    pub(crate) fn counters(&self) -> &Counters {
        &self.0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The durable store could not be opened (see `midge_store::StoreError`).
    #[error("{0}")]
    Store(#[from] midge_store::StoreError),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// Certificates, keys, password or ACL files could not be loaded (every problem).
    #[error("{}", .0.join("\n"))]
    Security(Vec<String>),
}

/// A running broker: its bound addresses and a handle to stop it.
#[derive(Debug)]
pub struct Server {
    addrs: Vec<SocketAddr>,
    security: Vec<Arc<security::ListenerSecurity>>,
    router: mpsc::Sender<router::RouterMsg>,
    counters: Arc<Counters>,
    local: LocalConnector,
    registry: Option<Arc<midge_auth::Registry>>,
    shutdown: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

/// Broker figures at one moment (for `/metrics` and the HTTP API).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Core's counters (messages, clients, sessions, subscriptions, retained, queued).
    pub broker: midge_core::Stats,
    /// Bytes read from clients.
    pub bytes_received: u64,
    /// Bytes written to clients.
    pub bytes_sent: u64,
    /// Open connections (network and in-process).
    pub connections: usize,
    /// Connections refused for a bad password, a missing certificate identity or anonymous
    /// access.
    pub failed_logins: u64,
    /// Size of the durable store in bytes (`None` without persistence).
    pub store_bytes: Option<u64>,
}

/// One session for the operations console ([`ServerHandle::clients`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientView {
    /// What core knows of it.
    pub summary: midge_core::ClientSummary,
    /// The connected client's address.
    pub peer: Option<SocketAddr>,
    /// When it connected (ms since the Unix epoch).
    pub connected_since_ms: Option<i64>,
    /// Its keep alive in seconds.
    pub keep_alive: Option<u16>,
    /// PUBLISH packets received from it on this connection.
    pub messages_in: Option<u64>,
    /// PUBLISH packets sent to it on this connection.
    pub messages_out: Option<u64>,
}

/// Asks a running [`Server`] for its figures (cheap to clone; does not keep a stopped server
/// alive).
#[derive(Debug, Clone)]
pub struct ServerHandle {
    router: mpsc::WeakSender<router::RouterMsg>,
    counters: Arc<Counters>,
    registry: Option<Arc<midge_auth::Registry>>,
}

/// An answer of [`ServerHandle::last_values`].
#[derive(Debug, Clone)]
pub struct LastValues {
    /// The last message of each topic matching, by topic, at most the limit asked.
    pub values: Vec<midge_core::LastValue>,
    /// How many topics matched in all.
    pub matched: usize,
    /// Topics the broker keeps at most (`[limits] last_values_topics`; 0 = none kept).
    pub max_topics: usize,
}

impl ServerHandle {
    /// The broker's figures now (asks the router; `None` once it has stopped).
    pub async fn stats(&self) -> Option<ServerStats> {
        let router = self.router.upgrade()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        router.send(router::RouterMsg::Stats(tx)).await.ok()?;
        drop(router);
        let (broker, store_bytes) = rx.await.ok()?;
        Some(ServerStats {
            broker,
            bytes_received: self.counters.bytes_received.load(Ordering::Relaxed),
            bytes_sent: self.counters.bytes_sent.load(Ordering::Relaxed),
            connections: self.counters.connections.load(Ordering::Relaxed),
            failed_logins: self.counters.auth_failures.load(Ordering::Relaxed),
            store_bytes,
        })
    }

    /// The device registry (`None`: the server runs without one).
    pub fn registry(&self) -> Option<&Arc<midge_auth::Registry>> {
        self.registry.as_ref()
    }

    /// Cut the connected clients with one of these usernames or client ids (MQTT 5 clients
    /// get DISCONNECT 0x98 Administrative action). Returns how many (`None` once stopped).
    pub async fn disconnect(
        &self,
        usernames: Vec<String>,
        client_ids: Vec<String>,
    ) -> Option<usize> {
        let router = self.router.upgrade()?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        router
            .send(router::RouterMsg::Disconnect {
                usernames,
                client_ids,
                reply,
            })
            .await
            .ok()?;
        drop(router);
        rx.await.ok()
    }

    /// Check the subscriptions of these usernames again and drop those no longer allowed.
    /// Returns how many were dropped (`None` once stopped).
    pub async fn recheck_subscriptions(&self, usernames: Vec<String>) -> Option<usize> {
        let router = self.router.upgrade()?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        router
            .send(router::RouterMsg::Recheck { usernames, reply })
            .await
            .ok()?;
        drop(router);
        rx.await.ok()
    }

    /// Carry out what a registry change means for live clients: cut the connections of
    /// disabled, deleted or rotated devices, drop the subscriptions narrowed policies no
    /// longer allow. Returns (connections cut, subscriptions dropped).
    pub async fn apply(&self, change: midge_auth::Change) -> (usize, usize) {
        let mut cut = 0;
        let mut dropped = 0;
        if !change.disconnect.is_empty() {
            cut = self
                .disconnect(change.disconnect, Vec::new())
                .await
                .unwrap_or(0);
        }
        if !change.recheck.is_empty() {
            dropped = self
                .recheck_subscriptions(change.recheck)
                .await
                .unwrap_or(0);
        }
        (cut, dropped)
    }

    /// The retained messages matching `filter`, by topic, at most `limit` (`None` once
    /// stopped).
    pub async fn retained(
        &self,
        filter: midge_codec::TopicFilter,
        limit: usize,
    ) -> Option<Vec<Arc<midge_core::Message>>> {
        let router = self.router.upgrade()?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        router
            .send(router::RouterMsg::Retained {
                filter,
                limit,
                reply,
            })
            .await
            .ok()?;
        drop(router);
        rx.await.ok()
    }

    /// The last message of each topic matching `filter` (`$` topics are not kept), updated
    /// at `since` (ms since the Unix epoch) or later when given, by topic, at most `limit`;
    /// and how many matched in all (`None` once stopped).
    pub async fn last_values(
        &self,
        filter: midge_codec::TopicFilter,
        since: Option<i64>,
        limit: usize,
    ) -> Option<LastValues> {
        let router = self.router.upgrade()?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        router
            .send(router::RouterMsg::LastValues {
                filter,
                since,
                limit,
                reply,
            })
            .await
            .ok()?;
        drop(router);
        rx.await.ok()
    }

    /// Delete the retained messages matching `filter` (durably, as an empty retained
    /// PUBLISH would). Returns how many (`None` once stopped).
    pub async fn clear_retained(&self, filter: midge_codec::TopicFilter) -> Option<usize> {
        let router = self.router.upgrade()?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        router
            .send(router::RouterMsg::ClearRetained { filter, reply })
            .await
            .ok()?;
        drop(router);
        rx.await.ok()
    }

    /// Discard the session of `client_id` (its connection is cut first, MQTT 5: DISCONNECT
    /// 0x98). Returns whether there was one (`None` once stopped).
    pub async fn discard_session(&self, client_id: String) -> Option<bool> {
        let router = self.router.upgrade()?;
        let (reply, rx) = tokio::sync::oneshot::channel();
        router
            .send(router::RouterMsg::DiscardSession { client_id, reply })
            .await
            .ok()?;
        drop(router);
        rx.await.ok()
    }

    /// Every session, connected or not, with its connection's address, start and keep
    /// alive when connected (`None` once stopped).
    pub async fn clients(&self) -> Option<Vec<ClientView>> {
        let router = self.router.upgrade()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        router.send(router::RouterMsg::Clients(tx)).await.ok()?;
        drop(router);
        let list = rx.await.ok()?;
        Some(
            list.into_iter()
                .map(|(summary, info)| ClientView {
                    summary,
                    peer: info.map(|i| i.peer),
                    connected_since_ms: info.map(|i| i.since_ms),
                    keep_alive: info.map(|i| i.keep_alive),
                    messages_in: info.map(|i| i.msgs_in),
                    messages_out: info.map(|i| i.msgs_out),
                })
                .collect(),
        )
    }
}

/// Opens in-process connections to a running [`Server`]: rules, the HTTP API and other
/// internal clients speak MQTT through the same connection task as a socket would, over an
/// in-memory pipe (no socket, no port). They are trusted: anonymous, and not subject to the
/// listeners' password files or ACLs (publishing to `$SYS` stays refused). Cheap to clone;
/// it does not keep a stopped server alive.
#[derive(Debug, Clone)]
pub struct LocalConnector {
    inner: Arc<LocalInner>,
}

#[derive(Debug)]
struct LocalInner {
    router: mpsc::WeakSender<router::RouterMsg>,
    settings: Arc<connection::Settings>,
    counters: Arc<Counters>,
    security: Arc<security::ListenerSecurity>,
}

/// Bytes buffered in each direction of an in-process connection.
const LOCAL_PIPE_BYTES: usize = 256 * 1024;

impl LocalConnector {
    /// A new in-process connection: the returned stream is the client's end (send CONNECT
    /// first, as on a socket). Fails once the server has stopped.
    pub fn connect(&self) -> io::Result<tokio::io::DuplexStream> {
        let inner = &self.inner;
        let Some(router) = inner.router.upgrade() else {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the broker has stopped",
            ));
        };
        let (client, server) = tokio::io::duplex(LOCAL_PIPE_BYTES);
        inner.counters.connections.fetch_add(1, Ordering::Relaxed);
        let slot = Slot(inner.counters.clone());
        let id = midge_core::ConnId(inner.counters.next_conn.fetch_add(1, Ordering::Relaxed) + 1);
        let meta = connection::Meta {
            security: inner.security.clone(),
            identity: None,
        };
        let peer = SocketAddr::from(([127, 0, 0, 1], 0));
        tokio::spawn(connection::run(
            id,
            server,
            meta,
            peer,
            router,
            inner.settings.clone(),
            slot,
        ));
        Ok(client)
    }
}

impl Server {
    /// Bind every listener and start serving on the current tokio runtime.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        Server::start_with_registry(config, None).await
    }

    /// [`Server::start`] with a device registry: consulted on every configured listener
    /// before its password file for the usernames it knows, and for those devices' topics
    /// instead of the ACL files; changes to it apply at once (see [`ServerHandle::apply`]).
    /// A username both in the registry and in a listener's password file is reported.
    pub async fn start_with_registry(
        config: ServerConfig,
        registry: Option<Arc<midge_auth::Registry>>,
    ) -> Result<Server, ServerError> {
        Server::start_node(config, registry, None).await
    }

    /// [`Server::start_with_registry`] as a node of a cluster (`crate::cluster`; `None`:
    /// on its own).
    pub async fn start_node(
        config: ServerConfig,
        registry: Option<Arc<midge_auth::Registry>>,
        cluster: Option<cluster::ClusterLink>,
    ) -> Result<Server, ServerError> {
        let mut securities = Vec::new();
        let mut problems = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let index = u16::try_from(i).unwrap_or(u16::MAX);
            match security::ListenerSecurity::load(index, l) {
                Ok(mut s) => {
                    s.registry = registry.clone();
                    if let (Some(r), Some(p)) = (&registry, s.passwords()) {
                        let both: Vec<String> = p
                            .usernames()
                            .filter(|u| r.knows(u))
                            .map(str::to_owned)
                            .collect();
                        if !both.is_empty() {
                            warn!(
                                listener = %l.bind,
                                users = %both.join(", "),
                                "usernames both in the device registry and in the password file: the registry decides for them"
                            );
                        }
                    }
                    securities.push(Arc::new(s));
                }
                Err(e) => problems.extend(
                    e.into_iter()
                        .map(|p| format!("listener #{} ({}): {p}", i + 1, l.bind)),
                ),
            }
        }
        if !problems.is_empty() {
            return Err(ServerError::Security(problems));
        }
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for l in &config.listeners {
            let listener = TcpListener::bind(l.bind)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: l.bind,
                    source,
                })?;
            addrs.push(listener.local_addr().map_err(|source| ServerError::Bind {
                addr: l.bind,
                source,
            })?);
            listeners.push(listener);
        }
        let counters = Arc::new(Counters::default());
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (router_tx, router_rx) = mpsc::channel(router::CHANNEL_CAPACITY);
        let store = match &config.persistence {
            Some(opts) => Some(store_task::open(opts)?),
            None => None,
        };
        let router = tokio::spawn(router::run(
            config.clone(),
            router_rx,
            counters.clone(),
            store,
            cluster.clone(),
        ));
        // before any CONNECT: the channel keeps the order
        let _ = router_tx
            .send(router::RouterMsg::SetAuthorizer(security::authorizer(
                &securities,
                registry.as_ref(),
            )))
            .await;
        let mut settings = connection::Settings::from(&config);
        settings.claim = cluster.map(|c| cluster::ClaimHandle(c.claim));
        settings.parker = park::Parker::start();
        let settings = Arc::new(settings);
        // in-process connections come through a listener of their own, after the configured
        // ones: no ACL of theirs applies to it, and anonymous clients are allowed
        let local_index = u16::try_from(config.listeners.len()).unwrap_or(u16::MAX);
        let local_security = security::ListenerSecurity::load(
            local_index,
            &ListenerConfig::mqtt(SocketAddr::from(([127, 0, 0, 1], 0))),
        )
        .map_err(ServerError::Security)?;
        let local = LocalConnector {
            inner: Arc::new(LocalInner {
                router: router_tx.downgrade(),
                settings: settings.clone(),
                counters: counters.clone(),
                security: Arc::new(local_security),
            }),
        };
        let mut accept_tasks = Vec::new();
        for ((listener, addr), sec) in listeners
            .into_iter()
            .zip(addrs.iter().copied())
            .zip(securities.iter().cloned())
        {
            info!(%addr, scheme = sec.config.scheme(), "listening");
            accept_tasks.push(tokio::spawn(accept_loop(
                listener,
                sec,
                router_tx.clone(),
                settings.clone(),
                counters.clone(),
                shutdown_rx.clone(),
            )));
        }
        let mut shutdown_watch = shutdown_rx.clone();
        let router_handle = router_tx.clone();
        let done = tokio::spawn(async move {
            let _ = shutdown_watch.wait_for(|s| *s).await;
            for t in &accept_tasks {
                t.abort();
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            if router_tx
                .send(router::RouterMsg::Shutdown(tx))
                .await
                .is_ok()
            {
                let _ = rx.await;
            }
            drop(router_tx);
            let _ = router.await;
        });
        Ok(Server {
            addrs,
            security: securities,
            router: router_handle,
            counters,
            local,
            registry,
            shutdown,
            done,
        })
    }

    /// The router's door for a cluster (`crate::cluster`).
    pub fn cluster_port(&self) -> cluster::ClusterPort {
        cluster::ClusterPort {
            router: self.router.downgrade(),
        }
    }

    /// The addresses the listeners are bound to (useful with port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Re-read every listener's certificates, password file and ACL file. A file that fails
    /// keeps its previous version in force; the problems are returned (and should be logged).
    /// Existing connections are untouched; new TLS handshakes use the new certificates, new
    /// CONNECTs the new passwords, and every check from now on the new ACLs.
    pub async fn reload(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for s in &self.security {
            problems.extend(
                s.reload()
                    .into_iter()
                    .map(|p| format!("listener #{} ({}): {p}", s.index + 1, s.config.bind)),
            );
        }
        let _ = self
            .router
            .send(router::RouterMsg::SetAuthorizer(security::authorizer(
                &self.security,
                self.registry.as_ref(),
            )))
            .await;
        problems
    }

    /// Opens in-process connections (rules, the HTTP API, bridges).
    pub fn local_connector(&self) -> LocalConnector {
        self.local.clone()
    }

    /// A cloneable handle for asking the running broker for its figures.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            router: self.router.downgrade(),
            counters: self.counters.clone(),
            registry: self.registry.clone(),
        }
    }

    /// The broker's figures now (asks the router; `None` once it has stopped).
    pub async fn stats(&self) -> Option<ServerStats> {
        self.handle().stats().await
    }

    /// Connections refused so far for a bad username/password, a missing certificate
    /// identity or anonymous access.
    pub fn failed_logins(&self) -> u64 {
        self.counters.auth_failures.load(Ordering::Relaxed)
    }

    /// Stop: MQTT 5 clients get DISCONNECT 0x8B, every connection is closed after its
    /// queued packets are written (bounded wait), then this returns.
    pub async fn shutdown(self) {
        // the router ends when every sender is gone: ours too
        let Server {
            shutdown,
            done,
            router,
            ..
        } = self;
        drop(router);
        let _ = shutdown.send(true);
        let _ = done.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    security: Arc<security::ListenerSecurity>,
    router: mpsc::Sender<router::RouterMsg>,
    settings: Arc<connection::Settings>,
    counters: Arc<Counters>,
    _shutdown: watch::Receiver<bool>,
) {
    let mut backoff = std::time::Duration::from_millis(5);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff = std::time::Duration::from_millis(5);
                let _ = stream.set_nodelay(true);
                let max = settings.max_connections;
                if max != 0 && counters.connections.load(Ordering::Relaxed) >= max {
                    warn!(%peer, max, "connection refused: max_connections reached");
                    drop(stream);
                    continue;
                }
                counters.connections.fetch_add(1, Ordering::Relaxed);
                let id = midge_core::ConnId(counters.next_conn.fetch_add(1, Ordering::Relaxed) + 1);
                let router = router.clone();
                let settings = settings.clone();
                let slot = Slot(counters.clone());
                let security = security.clone();
                let plain = security.tls().is_none()
                    && matches!(security.config.protocol, config::ListenerProtocol::Mqtt);
                if plain {
                    // plain MQTT over TCP: the connection future is built here and spawned
                    // as is (no wrapper that would hold it twice); the slot it owns
                    // counts the connection until it ends
                    let meta = connection::Meta {
                        security,
                        identity: None,
                    };
                    tokio::spawn(connection::run(
                        id, stream, meta, peer, router, settings, slot,
                    ));
                } else {
                    // TLS and WebSocket: handshakes first, behind a box, so plain
                    // connections are not sized for the larger transports
                    tokio::spawn(Box::pin(serve_wrapped(
                        id, stream, security, peer, router, settings, slot,
                    )));
                }
            }
            Err(e) => {
                // out of file descriptors and the like: back off instead of spinning
                warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
            }
        }
    }
}

/// Run the listener's handshakes (TLS, WebSocket upgrade; bounded by the connect timeout),
/// then the connection task on the resulting stream.
#[allow(clippy::too_many_arguments)]
async fn serve_wrapped(
    id: midge_core::ConnId,
    stream: tokio::net::TcpStream,
    security: Arc<security::ListenerSecurity>,
    peer: SocketAddr,
    router: mpsc::Sender<router::RouterMsg>,
    settings: Arc<connection::Settings>,
    slot: Slot,
) {
    use config::ListenerProtocol;
    let timeout = settings.connect_timeout;
    let ws_path = security.config.ws_path.clone();
    let Some(acceptor) = security.tls() else {
        let meta = connection::Meta {
            security: security.clone(),
            identity: None,
        };
        match security.config.protocol {
            ListenerProtocol::Mqtt => {
                connection::run(id, stream, meta, peer, router, settings, slot).await;
            }
            ListenerProtocol::WebSockets => {
                match tokio::time::timeout(timeout, ws::accept(stream, ws_path)).await {
                    Ok(Ok(ws)) => {
                        connection::run(id, ws, meta, peer, router, settings, slot).await;
                    }
                    Ok(Err(e)) => info!(%peer, error = %e, "WebSocket handshake failed"),
                    Err(_) => info!(%peer, "WebSocket handshake timed out"),
                }
            }
        }
        return;
    };
    let tls = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            info!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            info!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let identity = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| security::cert_identity(c.as_ref()));
    let meta = connection::Meta {
        security: security.clone(),
        identity,
    };
    match security.config.protocol {
        ListenerProtocol::Mqtt => {
            connection::run(id, tls, meta, peer, router, settings, slot).await;
        }
        ListenerProtocol::WebSockets => {
            match tokio::time::timeout(timeout, ws::accept(tls, ws_path)).await {
                Ok(Ok(ws)) => {
                    connection::run(id, ws, meta, peer, router, settings, slot).await;
                }
                Ok(Err(e)) => info!(%peer, error = %e, "WebSocket handshake failed"),
                Err(_) => info!(%peer, "WebSocket handshake timed out"),
            }
        }
    }
}
