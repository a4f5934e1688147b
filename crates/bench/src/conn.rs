//! Idle connections: open N at a rate (or flat out), hold them, measure connects/s and the
//! broker's memory per connection. Or short connections (CONNECT, CONNACK, DISCONNECT,
//! close), the connect rate of a broker, over TCP, TLS (full handshakes or resumed
//! sessions) or WebSocket.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use midge_codec::Packet;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::sync::Semaphore;

use crate::procstat::{self, ProcReport, Sampler};
use crate::progress::{Counters, Progress};
use crate::wire;
use crate::{BenchError, Common};

/// How to open the connections.
#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// Connections to open.
    pub connections: u64,
    /// Connections per second; `None` = as fast as `concurrency` allows.
    pub rate: Option<f64>,
    /// Handshakes (TCP connect + CONNECT/CONNACK) in progress at once.
    pub concurrency: usize,
    /// How long to hold the connections once all are open.
    pub hold: Duration,
    /// Wait this long after the last CONNACK before reading the broker's RSS.
    pub settle: Duration,
    /// Keep alive each CONNECT asks for (seconds; 0 = none). The broker must watch a
    /// connection with keep alive, which can cost it memory per connection.
    pub keep_alive: u16,
    /// Length of each client id (padded with `x` before the counter; `None` = the short
    /// `PREFIX-conn-N`), to see what a broker keeps per byte of client id.
    pub id_len: Option<usize>,
    /// Username of each CONNECT (`%i`: the connection's number, from 0), e.g. `user%i`
    /// against a password file of `user0`..`userN`.
    pub username: Option<String>,
    /// Password of each CONNECT (`%i` as in `username`).
    pub password: Option<String>,
    /// Short connections: DISCONNECT and close right after the CONNACK (the connect
    /// rate), instead of holding them open (memory per connection).
    pub short: bool,
}

impl ConnConfig {
    /// `connections` idle connections opened as fast as 64 handshakes at once allow, keep
    /// alive 0, short client ids, no hold.
    pub fn new(connections: u64) -> ConnConfig {
        ConnConfig {
            connections,
            rate: None,
            concurrency: 64,
            hold: Duration::ZERO,
            settle: Duration::ZERO,
            keep_alive: 0,
            id_len: None,
            username: None,
            password: None,
            short: false,
        }
    }
}

/// The client id of connection `i`: `PREFIX-conn-i`, padded to `len` bytes with `x` before
/// the number (unique as long as `len` leaves room for the number).
fn client_id(prefix: &str, i: u64, len: Option<usize>) -> String {
    let base = format!("{prefix}-conn-");
    let n = i.to_string();
    match len {
        Some(len) if len > base.len() + n.len() => {
            format!("{base}{}{n}", "x".repeat(len - base.len() - n.len()))
        }
        _ => format!("{base}{n}"),
    }
}

/// The outcome of a connection run.
#[derive(Debug, Clone)]
pub struct ConnResult {
    /// Settings used.
    pub config: ConnConfig,
    /// The transport's name (tcp, tls, tls-resume, ws).
    pub common_transport: &'static str,
    /// Connections asked for.
    pub attempted: u64,
    /// CONNACKs with success.
    pub connected: u64,
    /// Failed attempts.
    pub failures: u64,
    /// Seconds from the first attempt to the last CONNACK.
    pub connect_secs: f64,
    /// Connections still open at the end of the hold (broker did not close them).
    pub alive_at_end: u64,
    /// TLS handshakes that resumed an earlier session.
    pub resumed: u64,
    /// Broker RSS before the first connection (KiB), with `--target-pid`.
    pub rss_before_kb: Option<u64>,
    /// Broker RSS with all connections open, after settling (KiB).
    pub rss_after_kb: Option<u64>,
    /// Broker CPU/RSS over the run.
    pub broker: Option<ProcReport>,
    /// First few errors.
    pub errors: Vec<String>,
}

impl ConnResult {
    /// Successful connections per second.
    pub fn connects_per_sec(&self) -> f64 {
        if self.connect_secs > 0.0 {
            self.connected as f64 / self.connect_secs
        } else {
            0.0
        }
    }

    /// (RSS after − RSS before) / connections, in bytes (held connections only).
    pub fn rss_per_conn_bytes(&self) -> Option<f64> {
        match (self.rss_before_kb, self.rss_after_kb) {
            (Some(b), Some(a)) if self.connected > 0 && !self.config.short => {
                Some((a as f64 - b as f64) * 1024.0 / self.connected as f64)
            }
            _ => None,
        }
    }
}

/// Whether a connection is still open: not readable, or readable with data (a connection
/// the broker closed reads 0 bytes). Polls the read once and does not wait.
async fn still_open<S: AsyncRead + Unpin>(s: &mut S) -> bool {
    let mut probe = [0u8; 1];
    std::future::poll_fn(|cx| {
        let mut rb = ReadBuf::new(&mut probe);
        Poll::Ready(match Pin::new(&mut *s).poll_read(cx, &mut rb) {
            Poll::Pending => true,
            Poll::Ready(Ok(())) => !rb.filled().is_empty(),
            Poll::Ready(Err(_)) => false,
        })
    })
    .await
}

/// Open `cfg.connections` idle connections (keep alive `cfg.keep_alive`) and hold them, or
/// with `cfg.short` open and close them one after the other (`cfg.concurrency` at once).
pub async fn run_conn(common: &Common, cfg: &ConnConfig) -> Result<ConnResult, BenchError> {
    if cfg.concurrency == 0 {
        return Err(BenchError::Config("concurrency must be at least 1".into()));
    }
    let counters = Arc::new(Counters::default());
    let resumed = Arc::new(AtomicU64::new(0));
    let rss_before_kb = common.target_pid.and_then(procstat::rss_kb);
    let sampler = common.target_pid.map(Sampler::start);
    let progress = Progress::start(
        common.progress,
        counters.clone(),
        Some(cfg.connections),
        "connected",
    );
    let sem = Arc::new(Semaphore::new(cfg.concurrency));
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(cfg.connections as usize);
    for i in 0..cfg.connections {
        if let Some(r) = cfg.rate {
            let at = t0 + Duration::from_secs_f64(i as f64 / r);
            tokio::time::sleep_until(at.into()).await;
        }
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let (c, ctr, res) = (common.clone(), counters.clone(), resumed.clone());
        let (keep_alive, id_len, short) = (cfg.keep_alive, cfg.id_len, cfg.short);
        let n = i.to_string();
        let user = cfg.username.as_ref().map(|u| u.replace("%i", &n));
        let password = cfg.password.as_ref().map(|p| p.replace("%i", &n));
        tasks.push(tokio::spawn(async move {
            let id = client_id(&c.client_prefix, i, id_len);
            let credentials = user
                .as_deref()
                .map(|u| (u, password.as_deref().unwrap_or("")));
            let mut r = wire::connect_as(
                c.addr,
                &c.transport,
                c.protocol,
                &id,
                keep_alive,
                c.connect_timeout,
                credentials,
            )
            .await;
            if short && let Ok(conn) = &mut r {
                // DISCONNECT, then close: the whole cycle is part of the connect rate.
                let mut b = BytesMut::with_capacity(4);
                let bye = match Packet::Disconnect(Default::default()).encode(c.protocol, &mut b) {
                    Ok(()) => async {
                        conn.stream.write_all(&b).await?;
                        // then closed when dropped
                        conn.stream.flush().await
                    }
                    .await
                    .map_err(BenchError::from),
                    Err(e) => Err(e.into()),
                };
                if let Err(e) = bye {
                    r = Err(e);
                }
            }
            drop(permit);
            let done = Instant::now();
            if let Ok(conn) = &r {
                ctr.connected.fetch_add(1, Ordering::Relaxed);
                if conn.resumed {
                    res.fetch_add(1, Ordering::Relaxed);
                }
            }
            // A short connection is dropped (closed) here; a held one is returned.
            let r = r.map(|conn| (!short).then_some(conn));
            (r, done)
        }));
    }
    let mut conns = Vec::with_capacity(tasks.len());
    let mut failures = 0;
    let mut errors = Vec::new();
    let mut last = t0;
    for t in tasks {
        match t.await {
            Ok((Ok(c), at)) => {
                last = last.max(at);
                conns.extend(c);
            }
            Ok((Err(e), _)) => {
                failures += 1;
                if errors.len() < 10 {
                    errors.push(e.to_string());
                }
            }
            Err(e) => {
                failures += 1;
                if errors.len() < 10 {
                    errors.push(e.to_string());
                }
            }
        }
    }
    let connect_secs = last.duration_since(t0).as_secs_f64();
    tokio::time::sleep(cfg.settle).await;
    let rss_after_kb = common.target_pid.and_then(procstat::rss_kb);
    tokio::time::sleep(cfg.hold.saturating_sub(cfg.settle)).await;
    // A connection the broker closed is readable with 0 bytes; an idle one is not readable.
    let mut alive = 0;
    for c in &mut conns {
        if still_open(&mut c.stream).await {
            alive += 1;
        }
    }
    progress.finish().await;
    let broker = match sampler {
        Some(s) => Some(s.finish().await),
        None => None,
    };
    drop(conns);
    Ok(ConnResult {
        config: cfg.clone(),
        common_transport: common.transport.name(),
        attempted: cfg.connections,
        connected: counters.connected.load(Ordering::Relaxed),
        failures,
        connect_secs,
        alive_at_end: alive,
        resumed: resumed.load(Ordering::Relaxed),
        rss_before_kb,
        rss_after_kb,
        broker,
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::client_id;

    #[test]
    fn client_ids_are_padded_to_the_length_asked_and_stay_unique() {
        assert_eq!(client_id("b", 7, None), "b-conn-7");
        let a = client_id("b", 7, Some(64));
        let b = client_id("b", 17, Some(64));
        assert_eq!((a.len(), b.len()), (64, 64));
        assert_ne!(a, b);
        assert!(a.ends_with("x7") && b.ends_with("x17"), "{a} {b}");
        // too short to pad: the plain id
        assert_eq!(client_id("b", 7, Some(3)), "b-conn-7");
    }
}
