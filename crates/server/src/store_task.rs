//! The store thread: group commit for the router.
//!
//! The router hands over the [`StoreOp`]s of each of its batches with a number and goes on
//! routing; this thread appends them and fsyncs, taking every batch that arrived while the
//! previous fsync ran into the next one (group commit: one write and one fsync for many
//! publishes), then reports the batch numbers that are durable. The router releases the
//! actions it held for them (PUBACK, PUBREC, CONNACK, SUBACK, deliveries) in their order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

use midge_core::{Restored, StoreOp};
use midge_store::{LogStore, StoreError, StoreOptions, SyncMode};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// The ops of one router batch.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) id: u64,
    pub(crate) ops: Vec<StoreOp>,
}

/// What the store thread reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Done {
    /// Every batch up to this number is durable.
    Durable(u64),
    /// These batches (inclusive range) could not be written (disk full or I/O error).
    Failed(u64, u64),
}

/// The router's side of the store thread.
#[derive(Debug)]
pub(crate) struct StoreHandle {
    tx: Option<std_mpsc::Sender<Batch>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Bytes the store occupies on disk (for `$SYS/broker/store/bytes`).
    pub(crate) bytes: Arc<AtomicU64>,
    /// Set while the disk (or the size limit) is full.
    pub(crate) full: Arc<AtomicBool>,
}

/// A store opened at start: the handle, its completion channel and what it recovered.
#[derive(Debug)]
pub(crate) struct OpenedStore {
    pub(crate) handle: StoreHandle,
    pub(crate) done: mpsc::UnboundedReceiver<Done>,
    pub(crate) restored: Restored,
}

/// Open the store (recovering its state) and start its thread.
pub(crate) fn open(opts: &StoreOptions) -> Result<OpenedStore, StoreError> {
    let opened = LogStore::open(opts.clone())?;
    if let Some(d) = &opened.recovery.dropped {
        warn!(
            offset = d.offset,
            bytes = d.bytes,
            reason = %d.reason,
            saved_as = %d.saved_as.display(),
            "store recovered with a damaged tail dropped"
        );
    }
    let bytes = Arc::new(AtomicU64::new(opened.store.disk_bytes()));
    let full = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std_mpsc::channel::<Batch>();
    let (done_tx, done) = mpsc::unbounded_channel();
    let mut worker = Worker {
        store: opened.store,
        rx,
        done: done_tx,
        sync: opts.sync,
        bytes: bytes.clone(),
        full: full.clone(),
        writes: 0,
        syncs: 0,
        ops: 0,
    };
    let thread = std::thread::Builder::new()
        .name("midge-store".into())
        .spawn(move || worker.run())
        .map_err(|source| StoreError::Io {
            path: opts.dir.clone(),
            source,
        })?;
    Ok(OpenedStore {
        handle: StoreHandle {
            tx: Some(tx),
            thread: Some(thread),
            bytes,
            full,
        },
        done,
        restored: opened.restored,
    })
}

impl StoreHandle {
    /// Hand a batch to the store thread.
    pub(crate) fn submit(&self, batch: Batch) {
        if let Some(tx) = &self.tx {
            if tx.send(batch).is_err() {
                error!("store thread is gone: durable state is no longer written");
            }
        }
    }

    /// Stop the thread after it wrote and synced everything submitted.
    pub(crate) fn close(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for StoreHandle {
    fn drop(&mut self) {
        self.close();
    }
}

struct Worker {
    store: LogStore,
    rx: std_mpsc::Receiver<Batch>,
    done: mpsc::UnboundedSender<Done>,
    sync: SyncMode,
    bytes: Arc<AtomicU64>,
    full: Arc<AtomicBool>,
    /// Writes, fsyncs and ops so far (logged at the end: group commit at a glance).
    writes: u64,
    syncs: u64,
    ops: u64,
}

impl Worker {
    fn run(&mut self) {
        let mut last_sync = Instant::now();
        let mut dirty = false;
        let mut ops = Vec::new();
        loop {
            let first = match self.sync {
                SyncMode::Periodic(every) if dirty => {
                    let wait = every.saturating_sub(last_sync.elapsed());
                    match self.rx.recv_timeout(wait) {
                        Ok(b) => Some(b),
                        Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                        Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                SyncMode::Periodic(_) | SyncMode::Batch | SyncMode::Always => {
                    match self.rx.recv() {
                        Ok(b) => Some(b),
                        Err(_) => break,
                    }
                }
            };
            let Some(first) = first else {
                // periodic mode: the interval passed
                self.sync_now();
                last_sync = Instant::now();
                dirty = false;
                continue;
            };
            let from = first.id;
            let mut to = first.id;
            ops.clear();
            ops.extend(first.ops);
            if self.sync != SyncMode::Always {
                // group commit: everything that queued up meanwhile shares this write + fsync
                while let Ok(b) = self.rx.try_recv() {
                    to = b.id;
                    ops.extend(b.ops);
                }
            }
            let written = self.store.append(&ops);
            self.writes += 1;
            self.ops += ops.len() as u64;
            let result = match written {
                Ok(()) => match self.sync {
                    SyncMode::Periodic(every) => {
                        dirty = true;
                        if last_sync.elapsed() >= every {
                            self.sync_now();
                            last_sync = Instant::now();
                            dirty = false;
                        }
                        Ok(())
                    }
                    SyncMode::Batch | SyncMode::Always => {
                        self.syncs += 1;
                        self.store.sync()
                    }
                },
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    if self.full.swap(false, Ordering::SeqCst) {
                        info!("store: space available again, QoS 1/2 publishes accepted");
                    }
                    let _ = self.done.send(Done::Durable(to));
                }
                Err(e) => {
                    if e.is_full() {
                        if !self.full.swap(true, Ordering::SeqCst) {
                            error!(error = %e, "store full: QoS 1/2 publishes are refused until space is freed");
                        }
                    } else {
                        error!(error = %e, "store write failed");
                    }
                    let _ = self.done.send(Done::Failed(from, to));
                }
            }
            if let Err(e) = self.store.maybe_compact() {
                warn!(error = %e, "store compaction failed");
            }
            self.bytes.store(self.store.disk_bytes(), Ordering::Relaxed);
        }
        self.sync_now();
        info!(
            writes = self.writes,
            fsyncs = self.syncs,
            ops = self.ops,
            bytes = self.store.disk_bytes(),
            "store closed"
        );
    }

    fn sync_now(&mut self) {
        self.syncs += 1;
        if let Err(e) = self.store.sync() {
            error!(error = %e, "store sync failed");
        }
    }
}
