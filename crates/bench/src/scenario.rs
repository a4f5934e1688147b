//! Publishers → broker → subscribers, with per-publisher accounting on the receiving side.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use midge_codec::{Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, Semaphore, mpsc, watch};

use crate::procstat::{ProcReport, Sampler};
use crate::progress::{Counters, Progress};
use crate::spread::Spread;
use crate::stats::Tracker;
use crate::transport::WriteHalf;
use crate::wire::{self, Frame, PayloadHeader};
use crate::{BenchError, Common};

/// Connections being set up at once (more overflows a broker's accept queue on loopback:
/// SYN retransmits of a second each).
const CONNECTS_AT_ONCE: usize = 64;

/// Write all of `buf` and flush it (TLS and WebSocket streams buffer; TCP does not).
async fn send<W: AsyncWrite + Unpin + ?Sized>(w: &mut W, buf: &[u8]) -> std::io::Result<()> {
    w.write_all(buf).await?;
    w.flush().await
}

/// What to run: how many publishers and subscribers, on which topics, how fast.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Name reported with the results (e.g. "fan-in").
    pub name: String,
    /// Publishing connections.
    pub publishers: u32,
    /// Subscribing connections.
    pub subscribers: u32,
    /// Total publish rate in msg/s across all publishers; `None` = flat out.
    pub rate: Option<f64>,
    /// Topic of each publisher; `%i` is replaced by the publisher's index.
    pub topic: String,
    /// Filters every subscriber subscribes to (each must match every publisher's topic
    /// for the loss count to be meaningful).
    pub filters: Vec<String>,
    /// QoS 1/2 messages a publisher may have unacknowledged.
    pub inflight: u32,
    /// After the publishers finish, how long a subscriber waits with nothing arriving
    /// before it stops and counts the rest as lost.
    pub drain_timeout: Duration,
    /// Subscribers stop reading for this long after subscribing (provokes broker queueing).
    pub sub_pause: Duration,
    /// Publishes encoded into one write.
    pub batch: usize,
    /// Wait this long after every client is connected and subscribed before the start
    /// signal (lets a cluster announce the new subscriptions to the other nodes).
    pub start_delay: Duration,
    /// Publishers wait while more than this many messages are published but not yet
    /// received (by every subscriber): the broker's rate with a bounded backlog, not with
    /// all of `count` queued in it (mosquitto's QoS 2 rate falls with its queue: 33k msg/s
    /// with 25k messages queued, 3k with 250k).
    pub max_backlog: Option<u64>,
    /// Publishes spread over many topics and per-subscriber wildcard filters (instead of
    /// `topic` and `filters`); each subscriber expects what its filters cover.
    pub spread: Option<Arc<Spread>>,
}

impl Scenario {
    /// `publishers` → `subscribers` on `bench/%i` / `bench/#`, flat out.
    pub fn new(name: &str, publishers: u32, subscribers: u32) -> Scenario {
        Scenario {
            name: name.to_string(),
            publishers,
            subscribers,
            rate: None,
            topic: "bench/%i".into(),
            filters: vec!["bench/#".into()],
            inflight: 256,
            drain_timeout: Duration::from_secs(3),
            sub_pause: Duration::ZERO,
            batch: 64,
            start_delay: Duration::ZERO,
            spread: None,
            max_backlog: None,
        }
    }
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Scenario name.
    pub scenario: String,
    /// Settings used.
    pub common: Common,
    /// Scenario used.
    pub spec: Scenario,
    /// Messages sent by each publisher.
    pub sent: Vec<u64>,
    /// QoS 1/2 messages acknowledged by the broker (all publishers).
    pub acked: u64,
    /// What the subscribers received, merged.
    pub tracker: Tracker,
    /// Deliveries expected (sent × subscribers), when publishers ran.
    pub expected: Option<u64>,
    /// Deliveries missing (summed over subscribers).
    pub lost: u64,
    /// Seconds from the start signal to the last publish written (or acknowledged).
    pub pub_secs: f64,
    /// Seconds from the start signal to the last message received.
    pub recv_secs: f64,
    /// Connections that failed to connect/subscribe.
    pub connect_failures: u64,
    /// Errors seen during the run (first few).
    pub errors: Vec<String>,
    /// Broker CPU and RSS, with `--target-pid`.
    pub broker: Option<ProcReport>,
}

impl RunResult {
    /// Messages published.
    pub fn total_sent(&self) -> u64 {
        self.sent.iter().sum()
    }

    /// Publish rate, msg/s.
    pub fn pub_rate(&self) -> f64 {
        rate(self.total_sent(), self.pub_secs)
    }

    /// Delivery rate (distinct messages received by all subscribers), msg/s.
    pub fn recv_rate(&self) -> f64 {
        rate(self.tracker.unique, self.recv_secs)
    }
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

struct Clock(Instant);

impl Clock {
    fn ns(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

struct PubOutcome {
    sent: u64,
    acked: u64,
    end_ns: u64,
    error: Option<StreamError>,
    writer: Option<WriteHalf>,
}

struct SubOutcome {
    tracker: Tracker,
    last_ns: u64,
    error: Option<StreamError>,
}

struct Shared {
    clock: Clock,
    counters: Arc<Counters>,
    /// Deliveries each subscriber should get (u64::MAX until the publishers are done).
    expected: Vec<AtomicU64>,
    /// Connections being set up at once.
    connect_gate: Semaphore,
    /// When the publishers finished (ns), u64::MAX before.
    pubs_done_ns: AtomicU64,
    /// Stop everything (duration over or error).
    stop: AtomicBool,
}

/// Run a scenario against the broker in `common.addr`.
pub async fn run_scenario(common: &Common, spec: &Scenario) -> Result<RunResult, BenchError> {
    if spec.publishers == 0 && spec.subscribers == 0 {
        return Err(BenchError::Config(
            "nothing to run: no publishers, no subscribers".into(),
        ));
    }
    if spec.batch == 0 || spec.inflight == 0 {
        return Err(BenchError::Config(
            "batch and inflight must be at least 1".into(),
        ));
    }
    let counters = Arc::new(Counters::default());
    let shared = Arc::new(Shared {
        clock: Clock(Instant::now()),
        counters: counters.clone(),
        expected: (0..spec.subscribers)
            .map(|_| AtomicU64::new(u64::MAX))
            .collect(),
        connect_gate: Semaphore::new(CONNECTS_AT_ONCE),
        pubs_done_ns: AtomicU64::new(u64::MAX),
        stop: AtomicBool::new(false),
    });
    // Subscriber-only runs: the count is what each subscriber should receive; they stop at
    // that count or at the end of the duration (never on an idle gap).
    if spec.publishers == 0 {
        if let Some(n) = common.count {
            for e in &shared.expected {
                e.store(n, Ordering::Relaxed);
            }
        }
    }
    let mut errors = Vec::new();
    let mut connect_failures = 0u64;

    // 1. Subscribers: connect and subscribe, all before any publisher starts.
    let (ready_tx, mut ready_rx) = mpsc::channel::<Result<(), ClientFailed>>(64);
    let mut sub_tasks = Vec::new();
    for i in 0..spec.subscribers {
        let (c, s, sh, tx) = (
            common.clone(),
            spec.clone(),
            shared.clone(),
            ready_tx.clone(),
        );
        sub_tasks.push(tokio::spawn(
            async move { subscriber(i, c, s, sh, tx).await },
        ));
    }
    drop(ready_tx);
    while let Some(r) = ready_rx.recv().await {
        if let Err(e) = r {
            connect_failures += 1;
            push_err(&mut errors, e);
        }
    }

    // 2. Publishers: connect, then wait for the start signal.
    let (start_tx, start_rx) = watch::channel(false);
    let (pready_tx, mut pready_rx) = mpsc::channel::<Result<(), ClientFailed>>(64);
    let mut pub_tasks = Vec::new();
    let total = common.count;
    for i in 0..spec.publishers {
        let my_count = total.map(|n| {
            let p = u64::from(spec.publishers);
            n / p + u64::from(u64::from(i) < n % p)
        });
        let (c, s, sh) = (common.clone(), spec.clone(), shared.clone());
        let (rx, tx) = (start_rx.clone(), pready_tx.clone());
        pub_tasks.push(tokio::spawn(async move {
            publisher(i, my_count, c, s, sh, rx, tx).await
        }));
    }
    drop(pready_tx);
    while let Some(r) = pready_rx.recv().await {
        if let Err(e) = r {
            connect_failures += 1;
            push_err(&mut errors, e);
        }
    }

    if !spec.start_delay.is_zero() {
        tokio::time::sleep(spec.start_delay).await;
    }
    let sampler = common.target_pid.map(Sampler::start);
    let (bar_total, what) = if spec.publishers > 0 {
        (total, "sent")
    } else {
        (total, "received")
    };
    let progress = Progress::start(common.progress, counters.clone(), bar_total, what);
    let start_ns = shared.clock.ns();
    let _ = start_tx.send(true);
    let stopper = common.duration.map(|d| {
        let sh = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            sh.stop.store(true, Ordering::Relaxed);
        })
    });

    // 3. Publishers finish: now each subscriber knows how much to expect.
    let mut sent = vec![0u64; spec.publishers as usize];
    let mut acked = 0u64;
    let mut pub_end = start_ns;
    let mut writers = Vec::new();
    for (i, t) in pub_tasks.into_iter().enumerate() {
        match t.await {
            Ok(o) => {
                if let Some(s) = sent.get_mut(i) {
                    *s = o.sent;
                }
                acked += o.acked;
                pub_end = pub_end.max(o.end_ns);
                if let Some(e) = o.error {
                    push_err(&mut errors, format!("publisher {i}: {e}"));
                }
                writers.extend(o.writer);
            }
            Err(e) => push_err(&mut errors, format!("publisher {i}: {e}")),
        }
    }
    let total_sent: u64 = sent.iter().sum();
    // What each subscriber should get: everything, or what its filters cover.
    let sub_expected: Vec<u64> = match &spec.spread {
        Some(sp) => {
            let per = sp.expected(&sent);
            (0..spec.subscribers as usize)
                .map(|k| per.get(k % per.len().max(1)).copied().unwrap_or(0))
                .collect()
        }
        None => vec![total_sent; spec.subscribers as usize],
    };
    if spec.publishers > 0 {
        for (e, &n) in shared.expected.iter().zip(&sub_expected) {
            e.store(n, Ordering::Relaxed);
        }
        shared
            .pubs_done_ns
            .store(shared.clock.ns(), Ordering::Relaxed);
    }

    // 4. Subscribers drain.
    let mut tracker = Tracker::new();
    let mut lost = 0u64;
    let mut recv_end = start_ns;
    for (i, t) in sub_tasks.into_iter().enumerate() {
        match t.await {
            Ok(Some(o)) => {
                if spec.publishers > 0 {
                    lost += match spec.spread {
                        Some(_) => sub_expected
                            .get(i)
                            .copied()
                            .unwrap_or(0)
                            .saturating_sub(o.tracker.unique),
                        None => o.tracker.lost(&sent),
                    };
                }
                tracker.merge_counts(&o.tracker);
                recv_end = recv_end.max(o.last_ns);
                if let Some(e) = o.error {
                    push_err(&mut errors, format!("subscriber {i}: {e}"));
                }
            }
            Ok(None) => {
                if spec.publishers > 0 {
                    lost += sub_expected.get(i).copied().unwrap_or(0);
                }
            }
            Err(e) => push_err(&mut errors, format!("subscriber {i}: {e}")),
        }
    }
    if let Some(s) = stopper {
        s.abort();
    }
    progress.finish().await;
    let broker = match sampler {
        Some(s) => Some(s.finish().await),
        None => None,
    };
    for mut w in writers {
        let mut b = BytesMut::new();
        let _ = Packet::Disconnect(Default::default()).encode(common.protocol, &mut b);
        let _ = send(&mut w, &b).await;
        let _ = w.shutdown().await;
    }
    let secs = |end: u64| end.saturating_sub(start_ns) as f64 / 1e9;
    Ok(RunResult {
        scenario: spec.name.clone(),
        common: common.clone(),
        spec: spec.clone(),
        expected: (spec.publishers > 0).then_some(sub_expected.iter().sum()),
        sent,
        acked,
        tracker,
        lost,
        pub_secs: secs(pub_end),
        recv_secs: secs(recv_end),
        connect_failures,
        errors,
        broker,
    })
}

fn push_err(errors: &mut Vec<String>, e: impl std::fmt::Display) {
    if errors.len() < 10 {
        errors.push(e.to_string());
    }
}

/// Why a publisher or subscriber stopped before the end of the run (listed in
/// [`RunResult::errors`]).
#[derive(Debug, thiserror::Error)]
enum StreamError {
    /// Reading from or writing to the connection failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// What the broker sent could not be decoded.
    #[error("{0}")]
    Decode(#[from] BenchError),
    /// The publisher's reader saw the connection end.
    #[error("connection lost")]
    Lost,
    /// The same, while waiting for the last acknowledgements.
    #[error("connection lost before all acknowledgements")]
    LostBeforeAcks,
    /// The broker acknowledged nothing for [`ACK_WAIT`].
    #[error("no acknowledgement for {} s", ACK_WAIT.as_secs())]
    NoAck,
    /// The broker closed the subscriber's connection.
    #[error("connection closed by the broker")]
    Closed,
}

/// Longest wait for an acknowledgement while the publisher's window is full.
const ACK_WAIT: Duration = Duration::from_secs(10);

/// A publisher or subscriber that could not connect (or subscribe): counted as a connect
/// failure and listed in [`RunResult::errors`].
#[derive(Debug, thiserror::Error)]
#[error("{role} {index}: {source}")]
struct ClientFailed {
    /// `publisher` or `subscriber`.
    role: &'static str,
    index: u32,
    source: BenchError,
}

async fn publisher(
    i: u32,
    count: Option<u64>,
    common: Common,
    spec: Scenario,
    sh: Arc<Shared>,
    mut start: watch::Receiver<bool>,
    ready: mpsc::Sender<Result<(), ClientFailed>>,
) -> PubOutcome {
    let mut out = PubOutcome {
        sent: 0,
        acked: 0,
        end_ns: 0,
        error: None,
        writer: None,
    };
    let id = format!("{}-pub-{i}", common.client_prefix);
    let permit = sh.connect_gate.acquire().await.ok();
    let connected = wire::connect(
        common.addr,
        &common.transport,
        common.protocol,
        &id,
        0,
        common.connect_timeout,
    )
    .await;
    drop(permit);
    let conn = match connected {
        Ok(c) => {
            let _ = ready.send(Ok(())).await;
            c
        }
        Err(e) => {
            let failed = ClientFailed {
                role: "publisher",
                index: i,
                source: e,
            };
            let _ = ready.send(Err(failed)).await;
            return out;
        }
    };
    drop(ready);
    let window = u64::from(
        conn.receive_maximum
            .map_or(spec.inflight, |m| spec.inflight.min(u32::from(m)))
            .min(65_535),
    );
    let protocol = conn.protocol;
    let (mut rd, mut wr) = conn.stream.split();
    let mut rbuf = conn.rbuf;
    let topic = spec.topic.replace("%i", &i.to_string()).into_bytes();
    let spread_topics: Vec<Vec<u8>> = match &spec.spread {
        Some(sp) => sp.topics.iter().map(|t| t.clone().into_bytes()).collect(),
        None => Vec::new(),
    };
    let qos = common.qos;

    // Acknowledgements: the reader counts completions and hands PUBRECs to the writer.
    let acked = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(Notify::new());
    let reader_dead = Arc::new(AtomicBool::new(false));
    let (rel_tx, mut rel_rx) = mpsc::unbounded_channel::<u16>();
    let reader = {
        let (acked, notify, dead) = (acked.clone(), notify.clone(), reader_dead.clone());
        tokio::spawn(async move {
            let r: Result<(), BenchError> = async {
                loop {
                    while let Some(f) = wire::next_frame(&mut rbuf, protocol)? {
                        match f {
                            Frame::Other(Packet::PubAck(_) | Packet::PubComp(_)) => {
                                acked.fetch_add(1, Ordering::Relaxed);
                            }
                            Frame::Other(Packet::PubRec(a)) => {
                                let _ = rel_tx.send(a.packet_id);
                            }
                            Frame::Other(Packet::Disconnect(d)) => {
                                return Err(BenchError::Protocol(format!(
                                    "DISCONNECT {:#04x}",
                                    d.reason.0
                                )));
                            }
                            _ => {}
                        }
                    }
                    notify.notify_one();
                    rbuf.reserve(4096);
                    if rd.read_buf(&mut rbuf).await? == 0 {
                        return Err(BenchError::Closed);
                    }
                }
            }
            .await;
            dead.store(true, Ordering::Relaxed);
            notify.notify_one();
            r
        })
    };

    while !*start.borrow() {
        if start.changed().await.is_err() {
            break;
        }
    }
    let t0 = Instant::now();
    let per_pub_rate = spec.rate.map(|r| r / f64::from(spec.publishers.max(1)));
    let deadline = common.duration.map(|d| t0 + d);
    let limit = count.unwrap_or(u64::MAX);
    let size = common.payload;
    let mut buf = BytesMut::with_capacity(spec.batch * (size + topic.len() + 16));
    let mut seq = 0u64;
    let mut error: Option<StreamError> = None;
    'send: while seq < limit && !sh.stop.load(Ordering::Relaxed) {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let mut allowed = (limit - seq).min(spec.batch as u64);
        if let Some(r) = per_pub_rate {
            let due = (t0.elapsed().as_secs_f64() * r) as u64 + 1;
            if due <= seq {
                let at = t0 + Duration::from_secs_f64(seq as f64 / r);
                if qos == QoS::ExactlyOnce {
                    // Answer PUBRECs while waiting for the next publish: a broker that
                    // delivers on PUBREL would otherwise wait for the publisher's next tick.
                    while let Ok(id) = rel_rx.try_recv() {
                        wire::encode_ack(&mut buf, 0x62, id);
                    }
                    if !buf.is_empty() {
                        if let Err(e) = send(&mut wr, &buf).await {
                            error = Some(e.into());
                            break 'send;
                        }
                        buf.clear();
                    }
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => {}
                        _ = notify.notified() => {}
                    }
                } else {
                    tokio::time::sleep_until(at.into()).await;
                }
                continue;
            }
            allowed = allowed.min(due - seq);
        }
        if qos != QoS::AtMostOnce {
            while let Ok(id) = rel_rx.try_recv() {
                wire::encode_ack(&mut buf, 0x62, id);
            }
            let inflight = seq - acked.load(Ordering::Relaxed);
            if inflight >= window {
                if !buf.is_empty() {
                    if let Err(e) = send(&mut wr, &buf).await {
                        error = Some(e.into());
                        break 'send;
                    }
                    buf.clear();
                }
                if reader_dead.load(Ordering::Relaxed) {
                    error = Some(StreamError::Lost);
                    break;
                }
                if tokio::time::timeout(ACK_WAIT, notify.notified())
                    .await
                    .is_err()
                {
                    error = Some(StreamError::NoAck);
                    break;
                }
                continue;
            }
            allowed = allowed.min(window - inflight);
        }
        if let Some(max) = spec.max_backlog {
            // Published but not yet delivered (all subscribers): wait while over the bound.
            let subs = u64::from(spec.subscribers);
            let backlog = sh.counters.sent.load(Ordering::Relaxed) * subs;
            if backlog > sh.counters.received.load(Ordering::Relaxed) + max * subs {
                // PUBRELs first: a broker that delivers on PUBREL needs them to catch up
                if !buf.is_empty() {
                    if let Err(e) = send(&mut wr, &buf).await {
                        error = Some(e.into());
                        break 'send;
                    }
                    buf.clear();
                }
                if reader_dead.load(Ordering::Relaxed) {
                    error = Some(StreamError::Lost);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        }
        let now = sh.clock.ns();
        for _ in 0..allowed {
            let h = PayloadHeader {
                publisher: i,
                seq,
                sent_ns: now,
            };
            let topic = match &spec.spread {
                Some(sp) => spread_topics
                    .get(sp.topic_index(i, seq, spec.publishers))
                    .unwrap_or(&topic),
                None => &topic,
            };
            wire::encode_publish(
                &mut buf,
                protocol,
                topic,
                qos,
                (seq % 65_535 + 1) as u16,
                h,
                size,
            );
            seq += 1;
        }
        if let Err(e) = send(&mut wr, &buf).await {
            // The last batch may or may not have reached the broker: count it as sent.
            error = Some(e.into());
            sh.counters.sent.fetch_add(allowed, Ordering::Relaxed);
            break;
        }
        buf.clear();
        sh.counters.sent.fetch_add(allowed, Ordering::Relaxed);
    }
    out.sent = seq;
    // QoS 1/2: wait until everything is acknowledged (and PUBRELs are sent).
    if qos != QoS::AtMostOnce && error.is_none() {
        loop {
            while let Ok(id) = rel_rx.try_recv() {
                wire::encode_ack(&mut buf, 0x62, id);
            }
            if !buf.is_empty() {
                if let Err(e) = send(&mut wr, &buf).await {
                    error = Some(e.into());
                    break;
                }
                buf.clear();
            }
            if acked.load(Ordering::Relaxed) >= seq {
                break;
            }
            if reader_dead.load(Ordering::Relaxed) {
                error = Some(StreamError::LostBeforeAcks);
                break;
            }
            if tokio::time::timeout(ACK_WAIT, notify.notified())
                .await
                .is_err()
            {
                error = Some(StreamError::NoAck);
                break;
            }
        }
    }
    out.end_ns = sh.clock.ns();
    out.acked = acked.load(Ordering::Relaxed);
    if qos == QoS::AtMostOnce || error.is_some() {
        reader.abort();
    } else {
        // Keep reading nothing further; the connection closes with DISCONNECT at the end.
        reader.abort();
    }
    out.error = error;
    out.writer = Some(wr);
    out
}

async fn subscriber(
    i: u32,
    common: Common,
    spec: Scenario,
    sh: Arc<Shared>,
    ready: mpsc::Sender<Result<(), ClientFailed>>,
) -> Option<SubOutcome> {
    let id = format!("{}-sub-{i}", common.client_prefix);
    let failed = |source| ClientFailed {
        role: "subscriber",
        index: i,
        source,
    };
    let permit = sh.connect_gate.acquire().await.ok();
    let mut conn = match wire::connect(
        common.sub_addr(i),
        &common.transport,
        common.protocol,
        &id,
        0,
        common.connect_timeout,
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(failed(e))).await;
            return None;
        }
    };
    let filters = match &spec.spread {
        Some(sp) => sp
            .filters
            .get(i as usize % sp.filters.len().max(1))
            .cloned()
            .unwrap_or_default(),
        None => spec.filters.clone(),
    };
    if let Err(e) = conn.subscribe(&filters, common.qos).await {
        let _ = ready.send(Err(failed(e))).await;
        return None;
    }
    drop(permit);
    let _ = ready.send(Ok(())).await;
    drop(ready);
    if !spec.sub_pause.is_zero() {
        tokio::time::sleep(spec.sub_pause).await;
    }
    let mut tracker = Tracker::new();
    let mut wbuf = BytesMut::with_capacity(4096);
    let mut last_ns = 0u64;
    let mut last_progress = Instant::now();
    let protocol = conn.protocol;
    let mut error = None;
    let counted = &sh.counters.received;
    loop {
        // Done?
        let expected = sh
            .expected
            .get(i as usize)
            .map_or(u64::MAX, |e| e.load(Ordering::Relaxed));
        if tracker.unique >= expected || sh.stop.load(Ordering::Relaxed) && spec.publishers == 0 {
            break;
        }
        let pubs_done = sh.pubs_done_ns.load(Ordering::Relaxed) != u64::MAX;
        if pubs_done && last_progress.elapsed() >= spec.drain_timeout {
            break;
        }
        // room for the whole of a large packet at once (1 MB payloads), not 64 KiB at a
        // time with a copy of what is there on each growth
        let room = wire::frame_len(&conn.rbuf).map_or(0, |n| n.saturating_sub(conn.rbuf.len()));
        conn.rbuf.reserve(room.max(64 * 1024));
        let n = match tokio::time::timeout(
            Duration::from_millis(100),
            conn.stream.read_buf(&mut conn.rbuf),
        )
        .await
        {
            Err(_) => continue,
            Ok(Ok(0)) => {
                error = Some(StreamError::Closed);
                break;
            }
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                error = Some(e.into());
                break;
            }
        };
        let _ = n;
        let now = sh.clock.ns();
        let before = tracker.received;
        loop {
            match wire::next_frame(&mut conn.rbuf, protocol) {
                Ok(Some(Frame::Publish(p))) => {
                    tracker.record(p.header, now);
                    match p.qos {
                        1 => wire::encode_puback(&mut wbuf, protocol, p.packet_id),
                        2 => wire::encode_ack(&mut wbuf, 0x50, p.packet_id),
                        _ => {}
                    }
                }
                Ok(Some(Frame::Other(Packet::PubRel(a)))) => {
                    wire::encode_ack(&mut wbuf, 0x70, a.packet_id);
                }
                Ok(Some(Frame::Other(Packet::PingReq))) => {}
                Ok(Some(Frame::Other(_))) => {}
                Ok(None) => break,
                Err(e) => {
                    error = Some(e.into());
                    break;
                }
            }
        }
        if error.is_some() {
            break;
        }
        let got = tracker.received - before;
        if got > 0 {
            last_ns = now;
            last_progress = Instant::now();
            counted.fetch_add(got, Ordering::Relaxed);
        }
        if !wbuf.is_empty() {
            if let Err(e) = send(&mut conn.stream, &wbuf).await {
                error = Some(e.into());
                break;
            }
            wbuf.clear();
        }
    }
    let mut b = BytesMut::new();
    if Packet::Disconnect(Default::default())
        .encode(protocol, &mut b)
        .is_ok()
    {
        let _ = send(&mut conn.stream, &b).await;
    }
    Some(SubOutcome {
        tracker,
        last_ns,
        error,
    })
}
