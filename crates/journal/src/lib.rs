//! Append-only logs of checksummed records with group commit, for whatever must survive
//! a crash: the store's write-ahead log and series catalog, the broker's sessions and
//! retained messages.
//!
//! - [`record`]: the framing (`length crc payload`) and the varint/string helpers
//!   payloads are written with.
//! - [`Log`]: a running log; appends get a sequence number, waits return once it is
//!   written or durable, concurrent writers share fsyncs. [`Log::durable`] is the wait for
//!   async tasks.
//! - [`replay`]: reads the files back in order, cutting off the torn tail a crash
//!   mid-write leaves, and reports damage elsewhere as [`Error::Corrupt`] naming the file.
//!
//! The crate knows nothing of what the records mean.

mod error;
mod log;
pub mod record;

pub use error::{Error, Result};
pub use log::{
    Ending, Flush, Log, Settings, UNACKNOWLEDGED_SYNC_INTERVAL, bytes, delete_before, file_path,
    list, read_records, replay, sync_directory, truncate,
};
