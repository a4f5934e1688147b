//! # midge-store
//!
//! The persistence boundary of midge and its embedded default engine.
//!
//! Core describes every durable change as a [`midge_core::StoreOp`]; this crate writes them
//! to an append-only log of CRC-checked records ([`LogStore`]), makes them durable with one
//! fsync per batch (the caller batches: group commit), compacts the log by rewriting its
//! live records, and on start recovers a [`midge_core::Restored`] image for
//! `Broker::restore`: a torn or corrupt tail is cut off (and saved beside the log), a file
//! that is not a store at all is moved aside, a file from a newer format is refused.
//!
//! The format is documented in `docs/persistence.md` and in [`log`] / `record.rs`.

mod crc;
pub mod log;
mod record;
mod state;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use log::{FILE_NAME, HEADER_LEN, LogStore, MAGIC, Opened, VERSION};

/// When appended records are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// One fsync per batch the router hands over; no coalescing of batches.
    Always,
    /// Group commit: every batch waiting when the disk is free shares one fsync (default).
    Batch,
    /// Acknowledge once written to the OS; fsync every interval. A process crash loses
    /// nothing, a power cut or kernel crash loses up to the interval.
    Periodic(Duration),
}

/// Settings of the store (plain data; the binary fills it from `[persistence]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Data folder.
    pub dir: PathBuf,
    /// When to fsync.
    pub sync: SyncMode,
    /// Largest size of the log file in bytes (0 = only the disk's size); past it new writes
    /// fail as if the disk were full.
    pub max_bytes: u64,
    /// The log is compacted once it is larger than this and twice its live records.
    pub compact_min_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            dir: PathBuf::from("./data"),
            sync: SyncMode::Batch,
            max_bytes: 0,
            compact_min_bytes: 4 * 1024 * 1024,
        }
    }
}

/// A damaged tail that recovery cut off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// Offset of the first byte dropped.
    pub offset: u64,
    /// Bytes dropped.
    pub bytes: u64,
    /// Why reading stopped there.
    pub reason: String,
    /// Where the dropped bytes were saved.
    pub saved_as: PathBuf,
}

/// What recovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Size of the file found.
    pub file_bytes: u64,
    /// Valid records read.
    pub records: u64,
    /// A damaged tail that was cut off.
    pub dropped: Option<Dropped>,
    /// Where an unreadable file was moved.
    pub moved_aside: Option<PathBuf>,
    /// Sessions that expired while the broker was down.
    pub expired_sessions: usize,
    /// Messages (queued, in flight or retained) that expired while the broker was down.
    pub expired_messages: usize,
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A read, write or sync failed.
    #[error("store {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The disk is full (ENOSPC / EDQUOT).
    #[error("store {path}: disk full: {source}")]
    DiskFull {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The configured size limit was reached.
    #[error("store {path}: size limit of {limit} bytes reached")]
    Full {
        /// The file.
        path: PathBuf,
        /// `[persistence] max_bytes`.
        limit: u64,
    },
    /// Another running midge uses this data folder.
    #[error(
        "data folder {path} is in use by another midge (pid {pid}): two brokers on one store \
         would corrupt it; stop that one or choose another [persistence] dir"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The process holding it.
        pid: u32,
    },
    /// The file was written by a newer midge.
    #[error(
        "store {path} has format version {found}, this midge reads up to version {supported}: \
         upgrade midge, or move the file away to start empty"
    )]
    NewerVersion {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Newest version this build reads.
        supported: u32,
    },
}

impl StoreError {
    pub(crate) fn from_io(path: &Path, source: io::Error) -> StoreError {
        // ENOSPC = 28, EDQUOT = 122 on Linux
        if source.kind() == io::ErrorKind::StorageFull
            || matches!(source.raw_os_error(), Some(28) | Some(122))
        {
            StoreError::DiskFull {
                path: path.to_path_buf(),
                source,
            }
        } else {
            StoreError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }

    /// Whether the disk (or the configured limit) is full: new QoS 1/2 publishes must be
    /// refused until space is freed.
    pub fn is_full(&self) -> bool {
        matches!(self, StoreError::DiskFull { .. } | StoreError::Full { .. })
    }
}

#[cfg(test)]
mod tests;
