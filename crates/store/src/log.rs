//! The append-only log engine: one file `midge.store` in the data folder.
//!
//! ```text
//! header (16 bytes): magic "MIDGELOG" | version: u32 LE | flags: u32 LE (0)
//! record*          : len: u32 LE | crc32c: u32 LE | type: u8 | body   (see record.rs)
//! ```
//!
//! Appends go to the end of the file and are made durable by [`LogStore::sync`]. Compaction
//! writes the live records to `midge.store.tmp`, syncs it, renames it over the log and syncs
//! the folder (mosquitto's write-new-then-rename), so a crash at any point leaves either the
//! old or the new file whole.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use midge_core::{Message, Restored, RestoredDelivery, RestoredSession, SessionHeader, StoreOp};
use tracing::{info, warn};

use crate::record::{self, FRAME, MAX_RECORD, Rec};
use crate::state::{Key, State};
use crate::{Recovery, StoreError, StoreOptions};

/// File name of the log in the data folder.
pub const FILE_NAME: &str = "midge.store";
/// First bytes of every store file.
pub const MAGIC: &[u8; 8] = b"MIDGELOG";
/// Format version written by this build (and the newest it reads).
pub const VERSION: u32 = 1;
/// Size of the file header.
pub const HEADER_LEN: usize = 16;

/// Maps `Instant`s to wall-clock milliseconds and back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    instant: Instant,
    wall_ms: i64,
}

impl Clock {
    pub(crate) fn now() -> Clock {
        Clock::at(Instant::now(), SystemTime::now())
    }

    pub(crate) fn at(instant: Instant, wall: SystemTime) -> Clock {
        let wall_ms = wall
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Clock { instant, wall_ms }
    }

    pub(crate) fn to_wall(self, t: Instant) -> i64 {
        if t >= self.instant {
            self.wall_ms + t.duration_since(self.instant).as_millis() as i64
        } else {
            self.wall_ms - self.instant.duration_since(t).as_millis() as i64
        }
    }

    /// The `Instant` of a wall-clock time (clamped to what `Instant` can represent).
    pub(crate) fn to_instant(self, ms: i64) -> Instant {
        let diff = ms - self.wall_ms;
        if diff >= 0 {
            self.instant + Duration::from_millis(diff as u64)
        } else {
            self.instant
                .checked_sub(Duration::from_millis(diff.unsigned_abs()))
                .unwrap_or(self.instant)
        }
    }
}

/// Name of the lock file that keeps a second broker off a data folder.
pub const LOCK_NAME: &str = "midge.lock";

/// The data folder's lock: a file holding our pid, created exclusively; a lock whose process
/// is gone (the broker was killed) is taken over. Removed when the store is dropped.
#[derive(Debug)]
struct DirLock {
    path: PathBuf,
}

impl DirLock {
    fn take(dir: &Path) -> Result<DirLock, StoreError> {
        let path = dir.join(LOCK_NAME);
        let me = std::process::id();
        for _ in 0..3 {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => {
                    f.write_all_at(me.to_string().as_bytes(), 0)
                        .map_err(io_err(&path))?;
                    return Ok(DirLock { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let holder = fs::read_to_string(&path)
                        .ok()
                        .and_then(|s| s.trim().parse::<u32>().ok());
                    match holder {
                        Some(pid) if pid == me || Path::new(&format!("/proc/{pid}")).exists() => {
                            return Err(StoreError::Locked { path, pid });
                        }
                        _ => {
                            // its broker is gone (SIGKILL, power cut): take the folder over
                            let _ = fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => return Err(StoreError::from_io(&path, e)),
            }
        }
        Err(StoreError::Locked { path, pid: 0 })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The embedded engine: an append-only log of CRC-checked records, compacted by rewriting
/// its live records.
#[derive(Debug)]
pub struct LogStore {
    _lock: DirLock,
    dir: PathBuf,
    path: PathBuf,
    file: File,
    /// Bytes in the file (header included).
    len: u64,
    state: State,
    clock: Clock,
    buf: BytesMut,
    opts: StoreOptions,
}

/// A store that was opened: the engine, what it recovered, and how recovery went.
#[derive(Debug)]
pub struct Opened {
    /// The engine, ready for appends.
    pub store: LogStore,
    /// The state to give to `Broker::restore`.
    pub restored: Restored,
    /// What was found and dropped.
    pub recovery: Recovery,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::from_io(path, source)
}

fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    let (magic, rest) = h.split_at_mut(8);
    magic.copy_from_slice(MAGIC);
    let (version, _flags) = rest.split_at_mut(4);
    version.copy_from_slice(&VERSION.to_le_bytes());
    h
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn le_u32(b: Option<&[u8]>) -> u32 {
    b.and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_le_bytes)
}

/// Result of scanning a log's bytes.
pub(crate) struct Scan {
    pub(crate) state: State,
    pub(crate) records: u64,
    /// Offset of the first byte not recovered, with the reason, if the file has a bad tail.
    pub(crate) bad_tail: Option<(u64, String)>,
}

/// Replay the records of a file's bytes (after its header).
pub(crate) fn scan(bytes: &Bytes) -> Scan {
    let mut state = State::default();
    let mut records = 0;
    let mut off = HEADER_LEN;
    let total = bytes.len();
    let bad_tail = loop {
        if off == total {
            break None;
        }
        let Some(frame) = bytes.get(off..off + FRAME) else {
            break Some((
                off as u64,
                format!("torn record header ({} bytes)", total - off),
            ));
        };
        let len = le_u32(frame.get(..4)) as usize;
        let crc = le_u32(frame.get(4..));
        if len == 0 || len > MAX_RECORD {
            break Some((off as u64, format!("invalid record length {len}")));
        }
        let end = off + FRAME + len;
        if end > total {
            break Some((
                off as u64,
                format!(
                    "torn record: {len} bytes announced, {} present",
                    total - off - FRAME
                ),
            ));
        }
        let body = bytes.slice(off + FRAME..end);
        if crate::crc::crc32c(&body) != crc {
            break Some((off as u64, "checksum mismatch".to_string()));
        }
        match record::decode(body) {
            Ok(rec) => {
                state.apply(
                    Key::of_rec(&rec),
                    Bytes::copy_from_slice(&bytes.slice(off..end)),
                );
                records += 1;
            }
            Err(e) => break Some((off as u64, format!("undecodable record: {e}"))),
        }
        off = end;
    };
    Scan {
        state,
        records,
        bad_tail,
    }
}

impl LogStore {
    /// Open (or create) the store in `opts.dir`, recover what it holds, expire what expired
    /// while the broker was down, and compact it into a fresh file.
    pub fn open(opts: StoreOptions) -> Result<Opened, StoreError> {
        LogStore::open_at(opts, Instant::now(), SystemTime::now())
    }

    /// [`LogStore::open`] with the clock given (tests).
    pub fn open_at(
        opts: StoreOptions,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Opened, StoreError> {
        let dir = opts.dir.clone();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let lock = DirLock::take(&dir)?;
        let path = dir.join(FILE_NAME);
        let clock = Clock::at(now, wall);
        let mut recovery = Recovery::default();
        // bytes of the existing file that hold valid records (0: no usable file)
        let mut valid_len = 0u64;
        let mut state = State::default();
        match File::open(&path) {
            Ok(mut f) => {
                let mut raw = Vec::new();
                f.read_to_end(&mut raw).map_err(io_err(&path))?;
                recovery.file_bytes = raw.len() as u64;
                let bytes = Bytes::from(raw);
                let magic_ok = bytes.get(..8) == Some(&MAGIC[..]);
                let version = bytes.get(8..12).map(|v| le_u32(Some(v)));
                match (magic_ok, version) {
                    (true, Some(v)) if v > VERSION => {
                        return Err(StoreError::NewerVersion {
                            path,
                            found: v,
                            supported: VERSION,
                        });
                    }
                    (true, Some(v)) if v >= 1 && bytes.len() >= HEADER_LEN => {
                        let scan = scan(&bytes);
                        recovery.records = scan.records;
                        valid_len = scan
                            .bad_tail
                            .as_ref()
                            .map_or(bytes.len() as u64, |(at, _)| *at);
                        if let Some((at, reason)) = scan.bad_tail {
                            let dropped = bytes.len() as u64 - at;
                            let aside =
                                dir.join(format!("{FILE_NAME}.dropped-{}-at-{at}", unix_secs()));
                            let tail = bytes.slice(at as usize..);
                            fs::write(&aside, &tail).map_err(io_err(&aside))?;
                            warn!(
                                file = %path.display(),
                                offset = at,
                                dropped_bytes = dropped,
                                records_recovered = scan.records,
                                reason = %reason,
                                saved_as = %aside.display(),
                                "store: damaged tail dropped; the records before it were recovered"
                            );
                            recovery.dropped = Some(crate::Dropped {
                                offset: at,
                                bytes: dropped,
                                reason,
                                saved_as: aside,
                            });
                        }
                        state = scan.state;
                    }
                    _ => {
                        let aside = dir.join(format!("{FILE_NAME}.unreadable-{}", unix_secs()));
                        fs::rename(&path, &aside).map_err(io_err(&path))?;
                        warn!(
                            file = %path.display(),
                            moved_to = %aside.display(),
                            "store: not a midge store (bad header); moved aside, starting empty"
                        );
                        recovery.moved_aside = Some(aside);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::from_io(&path, e)),
        }
        let restored = build_restored(&mut state, clock, &mut recovery);
        state.tidy();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut store = LogStore {
            _lock: lock,
            dir,
            path,
            file,
            len: 0,
            state,
            clock: Clock::now(),
            buf: BytesMut::with_capacity(64 * 1024),
            opts,
        };
        if let Err(e) = store.compact() {
            if !e.is_full() || valid_len < HEADER_LEN as u64 {
                return Err(e);
            }
            // no room for a compacted copy: go on appending to the valid part of the log
            warn!(error = %e, "store: disk full at start, log not compacted; appending to it");
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&store.path)
                .map_err(io_err(&store.path))?;
            f.set_len(valid_len).map_err(io_err(&store.path))?;
            store.file = f;
            store.len = valid_len;
        }
        info!(
            file = %store.path.display(),
            sessions = restored.sessions.len(),
            retained = restored.retained.len(),
            records = recovery.records,
            bytes = store.len,
            "store opened"
        );
        Ok(Opened {
            store,
            restored,
            recovery,
        })
    }

    /// Write `ops` at the end of the log (to the OS, not yet synced). On failure nothing of
    /// them stays in the file, and [`StoreError::is_full`] tells a full disk or quota.
    pub fn append(&mut self, ops: &[StoreOp]) -> Result<(), StoreError> {
        self.buf.clear();
        let clock = self.clock;
        let wall = move |t: Instant| clock.to_wall(t);
        let mut ends = Vec::with_capacity(ops.len());
        for op in ops {
            record::encode_op(&mut self.buf, op, &wall);
            ends.push(self.buf.len());
        }
        let add = self.buf.len() as u64;
        if self.opts.max_bytes != 0 && self.len + add > self.opts.max_bytes {
            return self.append_over_limit(ops, &ends);
        }
        if let Err(e) = self.file.write_all_at(&self.buf, self.len) {
            // leave no partial record behind
            let _ = self.file.set_len(self.len);
            return Err(StoreError::from_io(&self.path, e));
        }
        self.len += add;
        let mut start = 0;
        for (op, end) in ops.iter().zip(ends) {
            let rec = Bytes::copy_from_slice(self.buf.get(start..end).unwrap_or_default());
            self.state.apply(Key::of_op(op), rec);
            start = end;
        }
        Ok(())
    }

    /// The append would pass `max_bytes`: apply the ops to the live records and write them
    /// compacted if that fits (acknowledgements and deletes free space, so a full store
    /// drains); otherwise leave everything as it was and report the store full.
    fn append_over_limit(&mut self, ops: &[StoreOp], ends: &[usize]) -> Result<(), StoreError> {
        let backup = self.state.clone();
        let mut start = 0;
        for (op, &end) in ops.iter().zip(ends) {
            let rec = Bytes::copy_from_slice(self.buf.get(start..end).unwrap_or_default());
            self.state.apply(Key::of_op(op), rec);
            start = end;
        }
        self.state.tidy();
        if HEADER_LEN as u64 + self.state.live <= self.opts.max_bytes {
            if let Err(e) = self.compact() {
                self.state = backup;
                return Err(e);
            }
            return Ok(());
        }
        self.state = backup;
        Err(StoreError::Full {
            path: self.path.clone(),
            limit: self.opts.max_bytes,
        })
    }

    /// Make everything appended so far durable (fdatasync).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.file.sync_data().map_err(io_err(&self.path))
    }

    /// Compact when the file holds much more than its live records.
    pub fn maybe_compact(&mut self) -> Result<bool, StoreError> {
        let live = HEADER_LEN as u64 + self.state.live;
        if self.len > self.opts.compact_min_bytes && self.len > live.saturating_mul(2) {
            self.compact()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Rewrite the live records into a new file and rename it over the log.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        self.state.tidy();
        let tmp = self.dir.join(format!("{FILE_NAME}.tmp"));
        let mut out = Vec::with_capacity(HEADER_LEN + self.state.live as usize);
        out.extend_from_slice(&header());
        for r in self.state.records() {
            out.extend_from_slice(r);
        }
        let written = (|| -> io::Result<File> {
            let f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&tmp)?;
            f.write_all_at(&out, 0)?;
            f.sync_all()?;
            Ok(f)
        })();
        let f = match written {
            Ok(f) => f,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(StoreError::from_io(&tmp, e));
            }
        };
        fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.file = f;
        self.len = out.len() as u64;
        Ok(())
    }

    /// Bytes the store occupies on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.len
    }

    /// Bytes of live records (what a compaction would keep, header excluded).
    pub fn live_bytes(&self) -> u64 {
        self.state.live
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Decode the live records into core's image, dropping what expired (wall clock).
fn build_restored(state: &mut State, clock: Clock, recovery: &mut Recovery) -> Restored {
    let now = clock.wall_ms;
    let mut out = Restored::default();
    let mut msgs: std::collections::HashMap<u64, Arc<Message>> = Default::default();
    let mut expired_msgs = Vec::new();
    for (id, (_, rec)) in &state.msgs {
        if let Ok(Rec::Message {
            expires_at,
            mut msg,
            ..
        }) = record::decode(rec.slice(FRAME..))
        {
            if expires_at.is_some_and(|at| at <= now) {
                expired_msgs.push(*id);
                continue;
            }
            msg.expires_at = expires_at.map(|ms| clock.to_instant(ms));
            msgs.insert(*id, Arc::new(msg));
        }
    }
    let mut expired_sessions = Vec::new();
    let mut dead_deliveries = Vec::new();
    for (client_id, c) in &state.clients {
        let Some(Ok(Rec::Session {
            protocol,
            expiry,
            username,
            will_at,
            disconnected_at,
            will,
            ..
        })) = c.header.as_ref().map(|h| record::decode(h.slice(FRAME..)))
        else {
            continue;
        };
        if let Some(at) = disconnected_at {
            if expiry != u32::MAX && at + i64::from(expiry) * 1000 <= now {
                expired_sessions.push(client_id.clone());
                continue;
            }
        }
        let mut rs = RestoredSession {
            header: SessionHeader {
                client_id: client_id.clone(),
                username,
                protocol,
                expiry_interval: expiry,
                will,
                will_at: will_at.map(|ms| clock.to_instant(ms)),
                disconnected_at: disconnected_at.map(|ms| clock.to_instant(ms)),
            },
            subscriptions: Vec::new(),
            deliveries: Vec::new(),
            inbound_qos2: c.qos2.keys().copied().collect(),
        };
        for rec in c.subs.values() {
            if let Ok(Rec::Subscribe {
                filter,
                options,
                identifier,
                ..
            }) = record::decode(rec.slice(FRAME..))
            {
                rs.subscriptions.push((filter, options, identifier));
            }
        }
        for (seq, (msg_id, rec)) in &c.deliveries {
            let Some(msg) = msgs.get(msg_id) else {
                dead_deliveries.push((client_id.clone(), *seq));
                continue;
            };
            if let Ok(Rec::Delivery {
                qos,
                retain,
                state,
                sub_ids,
                ..
            }) = record::decode(rec.slice(FRAME..))
            {
                rs.deliveries.push(RestoredDelivery {
                    seq: *seq,
                    msg_id: *msg_id,
                    msg: msg.clone(),
                    qos,
                    retain,
                    sub_ids,
                    state,
                });
            }
        }
        out.sessions.push(rs);
    }
    let mut expired_retained: Vec<ByteString> = Vec::new();
    for (topic, rec) in &state.retained {
        if let Ok(Rec::Retain {
            msg: Some((expires_at, mut msg)),
            ..
        }) = record::decode(rec.slice(FRAME..))
        {
            if expires_at.is_some_and(|at| at <= now) {
                expired_retained.push(topic.clone());
                continue;
            }
            msg.expires_at = expires_at.map(|ms| clock.to_instant(ms));
            out.retained.push(msg);
        }
    }
    recovery.expired_sessions = expired_sessions.len();
    recovery.expired_messages = dead_deliveries.len() + expired_retained.len();
    for c in &expired_sessions {
        state.remove_client(c);
    }
    for (c, seq) in &dead_deliveries {
        state.remove_delivery(c, *seq);
    }
    for t in &expired_retained {
        if let Some(b) = state.retained.remove(t) {
            state.live -= b.len() as u64;
        }
    }
    let _ = expired_msgs;
    if recovery.expired_sessions > 0 || recovery.expired_messages > 0 {
        info!(
            sessions = recovery.expired_sessions,
            messages = recovery.expired_messages,
            "store: expired while the broker was down"
        );
    }
    out.sessions
        .sort_by(|a, b| a.header.client_id.cmp(&b.header.client_id));
    out.retained.sort_by(|a, b| a.topic.cmp(&b.topic));
    out
}
