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

mod config;
mod connection;
mod outbox;
mod router;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

pub use config::{ListenerConfig, ServerConfig};

/// Process-wide byte counters for `$SYS`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) bytes_received: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) connections: AtomicUsize,
    pub(crate) next_conn: AtomicU64,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
}

/// A running broker: its bound addresses and a handle to stop it.
#[derive(Debug)]
pub struct Server {
    addrs: Vec<SocketAddr>,
    shutdown: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Bind every listener and start serving on the current tokio runtime.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
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
        let router = tokio::spawn(router::run(config.clone(), router_rx, counters.clone()));
        let settings = Arc::new(connection::Settings::from(&config));
        let mut accept_tasks = Vec::new();
        for (listener, addr) in listeners.into_iter().zip(addrs.iter().copied()) {
            info!(%addr, "listening (mqtt)");
            accept_tasks.push(tokio::spawn(accept_loop(
                listener,
                router_tx.clone(),
                settings.clone(),
                counters.clone(),
                shutdown_rx.clone(),
            )));
        }
        let mut shutdown_watch = shutdown_rx.clone();
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
            shutdown,
            done,
        })
    }

    /// The addresses the listeners are bound to (useful with port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stop: MQTT 5 clients get DISCONNECT 0x8B, every connection is closed after its
    /// queued packets are written (bounded wait), then this returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.done.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    router: mpsc::Sender<router::RouterMsg>,
    settings: Arc<connection::Settings>,
    counters: Arc<Counters>,
    shutdown: watch::Receiver<bool>,
) {
    let mut backoff = std::time::Duration::from_millis(5);
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff = std::time::Duration::from_millis(5);
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
                let counters = counters.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    connection::run(
                        id,
                        stream,
                        peer,
                        router,
                        settings,
                        counters.clone(),
                        shutdown,
                    )
                    .await;
                    counters.connections.fetch_sub(1, Ordering::Relaxed);
                });
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
