//! Idle plain-TCP connections without a task: after [`PARK_AFTER`] with nothing read and
//! nothing to write, a connection's task hands its socket and its few handles to the
//! [`Parker`] and ends. The parker watches the parked sockets with an epoll instance of its
//! own (one tokio registration for all of them) and the outboxes with a waker per parked
//! connection; the first byte from the client, or the first packet the router queues,
//! starts a new task for it ([`crate::connection::resume`]).
//!
//! A task with its tokio registration costs about 650 B (the task cell, 384 B, and tokio's
//! `ScheduledIo`, 256 B); a parked connection costs its slot here and a small waker, so an
//! idle connection costs about the broker's records alone (`docs/benchmarks.md`).

use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Wake, Waker};
use std::time::Duration;

use std::os::fd::AsRawFd;

use mio::unix::SourceFd;
use mio::{Events, Interest, Token};
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tracing::debug;

/// A connection idle for this long (nothing read, nothing written) gives up its task: a
/// client sending twice a second or more keeps it (starting a task again costs a few µs).
pub(crate) const PARK_AFTER: Duration = Duration::from_millis(500);
/// The same for a connection that sent nothing since its CONNECT (most idle clients): its
/// task goes soon, so that a burst of new connections does not leave its peak of tasks'
/// memory behind (freed between the connections' records, it is not given back).
pub(crate) const PARK_FRESH_AFTER: Duration = Duration::from_millis(20);

/// What a parked connection keeps: its socket and what its task needs to start again.
#[derive(Debug)]
pub(crate) struct Parked {
    pub(crate) stream: std::net::TcpStream,
    pub(crate) conn: crate::connection::ParkedConn,
}

#[derive(Debug)]
struct Slot {
    /// Generation of this slot, so a stale wake-up does not start another connection.
    generation: u32,
    /// The parked connection (kept as two fields, not an `Option<Parked>`: 64 B, not 80).
    stream: Option<std::net::TcpStream>,
    conn: Option<crate::connection::ParkedConn>,
}

#[derive(Debug, Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

#[derive(Debug)]
struct Inner {
    registry: mio::Registry,
    table: Mutex<Table>,
    /// Keys whose outbox woke them.
    woken: Mutex<Vec<u64>>,
    notify: Notify,
    /// Set when the last handle is gone: the parker's task ends.
    stopped: std::sync::atomic::AtomicBool,
}

/// The server's parker; dropping the last clone stops its task (connections still parked
/// are then dropped, which closes them).
#[derive(Debug, Clone)]
pub(crate) struct Parker {
    inner: Arc<Inner>,
    _stop: Arc<StopOnDrop>,
}

#[derive(Debug)]
struct StopOnDrop(Weak<Inner>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner
                .stopped
                .store(true, std::sync::atomic::Ordering::Relaxed);
            inner.notify.notify_one();
        }
    }
}

struct PollFd(mio::Poll);

impl std::os::fd::AsRawFd for PollFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// Wakes the parker for one parked connection (the outbox's waker while it is parked).
struct ParkWaker {
    inner: Weak<Inner>,
    key: u64,
}

impl Wake for ParkWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(inner) = self.inner.upgrade() {
            inner
                .woken
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(self.key);
            inner.notify.notify_one();
        }
    }
}

fn key(index: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(index)
}

impl Parker {
    /// A parker with its task on the current runtime; `None` if epoll is not available.
    pub(crate) fn start() -> Option<Parker> {
        let poll = match mio::Poll::new() {
            Ok(p) => p,
            Err(e) => {
                debug!(error = %e, "no parker: idle connections keep their tasks");
                return None;
            }
        };
        let registry = poll.registry().try_clone().ok()?;
        // `new` is deprecated for types that do not own their descriptor; `PollFd` owns
        // the epoll instance for as long as the `AsyncFd` lives
        #[allow(deprecated)]
        let fd = AsyncFd::new(PollFd(poll)).ok()?;
        let inner = Arc::new(Inner {
            registry,
            table: Mutex::new(Table::default()),
            woken: Mutex::new(Vec::new()),
            notify: Notify::new(),
            stopped: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(run(fd, inner.clone()));
        Some(Parker {
            _stop: Arc::new(StopOnDrop(Arc::downgrade(&inner))),
            inner,
        })
    }

    /// Park a connection. It starts again (a new task) as soon as its socket is readable
    /// or its outbox has something; `Err` gives it back if it cannot be watched.
    pub(crate) fn park(&self, mut parked: Parked) -> Result<(), Parked> {
        let inner = &self.inner;
        let mut table = inner.table.lock().unwrap_or_else(PoisonError::into_inner);
        let index = match table.free.pop() {
            Some(i) => i,
            None => {
                let Ok(i) = u32::try_from(table.slots.len()) else {
                    return Err(parked);
                };
                table.slots.push(Slot {
                    generation: 0,
                    stream: None,
                    conn: None,
                });
                i
            }
        };
        let Some(slot) = table.slots.get_mut(index as usize) else {
            return Err(parked);
        };
        slot.generation = slot.generation.wrapping_add(1);
        let key = key(index, slot.generation);
        if inner
            .registry
            .register(
                &mut SourceFd(&parked.stream.as_raw_fd()),
                Token(key as usize),
                Interest::READABLE,
            )
            .is_err()
        {
            table.free.push(index);
            return Err(parked);
        }
        let waker = Waker::from(Arc::new(ParkWaker {
            inner: Arc::downgrade(inner),
            key,
        }));
        // something queued since the task last looked: it starts again at once
        if parked.conn.wait_outbox(waker) {
            inner
                .woken
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(key);
            inner.notify.notify_one();
        }
        slot.stream = Some(parked.stream);
        slot.conn = Some(parked.conn);
        Ok(())
    }

    /// Parked connections right now (for tests).
    #[cfg(test)]
    pub(crate) fn parked(&self) -> usize {
        let table = self
            .inner
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        table.slots.len() - table.free.len()
    }
}

impl Inner {
    /// Take a parked connection out (stale keys: `None`).
    fn take(&self, key: u64) -> Option<Parked> {
        let index = (key & u64::from(u32::MAX)) as u32;
        let generation = (key >> 32) as u32;
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = table.slots.get_mut(index as usize)?;
        if slot.generation != generation {
            return None;
        }
        let (Some(stream), Some(conn)) = (slot.stream.take(), slot.conn.take()) else {
            return None;
        };
        let parked = Parked { stream, conn };
        table.free.push(index);
        drop(table);
        let _ = self
            .registry
            .deregister(&mut SourceFd(&parked.stream.as_raw_fd()));
        Some(parked)
    }

    fn resume(&self, key: u64) {
        let Some(parked) = self.take(key) else {
            return;
        };
        match tokio::net::TcpStream::from_std(parked.stream) {
            Ok(stream) => {
                tokio::spawn(crate::connection::resume(stream, parked.conn));
            }
            Err(e) => {
                // the connection is dropped: its slot and outbox go, the router sees it
                // as closed when it next sends to it
                debug!(error = %e, "a parked connection could not start again");
                parked.conn.lost();
            }
        }
    }
}

async fn run(mut fd: AsyncFd<PollFd>, inner: Arc<Inner>) {
    let mut events = Events::with_capacity(256);
    let mut keys = Vec::new();
    loop {
        if inner.stopped.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        tokio::select! {
            ready = fd.readable_mut() => {
                let Ok(mut guard) = ready else { return };
                if guard.get_inner_mut().0.poll(&mut events, Some(Duration::ZERO)).is_err() {
                    events.clear();
                }
                keys.extend(events.iter().map(|e| e.token().0 as u64));
                if events.iter().count() < events.capacity() {
                    guard.clear_ready();
                }
            }
            () = inner.notify.notified() => {}
        }
        keys.append(&mut inner.woken.lock().unwrap_or_else(PoisonError::into_inner));
        for key in keys.drain(..) {
            inner.resume(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;
    use crate::{ListenerConfig, Server, ServerConfig};

    async fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut got))
            .await
            .expect("the broker answered in time")
            .expect("read");
        got
    }

    /// CONNECT (3.1.1, clean session, keep alive 0) for client id `id`, then its CONNACK.
    async fn connect(addr: SocketAddr, id: &[u8]) -> TcpStream {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut p = vec![
            0x10,
            12 + id.len() as u8,
            0,
            4,
            b'M',
            b'Q',
            b'T',
            b'T',
            4,
            2,
            0,
            0,
        ];
        p.extend_from_slice(&(id.len() as u16).to_be_bytes());
        p.extend_from_slice(id);
        s.write_all(&p).await.unwrap();
        assert_eq!(read_exact(&mut s, 4).await, [0x20, 2, 0, 0]);
        s
    }

    async fn wait_parked(parker: &Parker, n: usize) {
        for _ in 0..200 {
            if parker.parked() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} connections parked, not {n}", parker.parked());
    }

    /// A slot of the parker's table is what every parked connection costs here (with the
    /// table's slack).
    #[test]
    fn a_parked_slot_stays_small() {
        let size = std::mem::size_of::<Slot>();
        assert!(size <= 64, "a parker slot is {size} B (was 64)");
    }

    /// Idle connections give up their tasks, and a parked one still gets its messages,
    /// answers pings and is seen closing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_connections_are_parked_and_start_again_on_traffic() {
        let config = ServerConfig {
            listeners: vec![ListenerConfig::mqtt(SocketAddr::from(([127, 0, 0, 1], 0)))],
            sys_interval: Duration::ZERO,
            ..ServerConfig::default()
        };
        let server = Server::start(config).await.unwrap();
        let addr = server.local_addrs()[0];
        let parker = server
            .local
            .inner
            .settings
            .parker
            .clone()
            .expect("a parker on Linux");

        let mut sub = connect(addr, b"sub").await;
        // SUBSCRIBE t QoS 0 → SUBACK
        sub.write_all(&[0x82, 6, 0, 1, 0, 1, b't', 0])
            .await
            .unwrap();
        assert_eq!(read_exact(&mut sub, 5).await, [0x90, 3, 0, 1, 0]);
        wait_parked(&parker, 1).await;

        // a message for the parked subscriber wakes it through its outbox
        let mut publisher = connect(addr, b"pub").await;
        publisher
            .write_all(&[0x30, 5, 0, 1, b't', b'h', b'i'])
            .await
            .unwrap();
        assert_eq!(
            read_exact(&mut sub, 7).await,
            [0x30, 5, 0, 1, b't', b'h', b'i']
        );
        wait_parked(&parker, 2).await;

        // a ping from a parked client wakes it through its socket
        sub.write_all(&[0xC0, 0]).await.unwrap();
        assert_eq!(read_exact(&mut sub, 2).await, [0xD0, 0]);
        wait_parked(&parker, 2).await;

        // a parked client that goes away is seen gone
        drop(publisher);
        wait_parked(&parker, 1).await;
        for _ in 0..200 {
            if server.stats().await.unwrap().broker.clients_connected == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(server.stats().await.unwrap().broker.clients_connected, 1);

        // the server stopping closes the parked connection
        server.shutdown().await;
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(10), sub.read_to_end(&mut rest))
            .await
            .expect("closed in time");
        assert!(n.is_ok(), "EOF after the shutdown");
    }
}
