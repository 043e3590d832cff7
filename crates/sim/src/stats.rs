//! Live counters of a running simulation, and the final report.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters shared by all devices; read them with [`SimCounters::snapshot`].
#[derive(Debug, Default)]
pub struct SimCounters {
    published: AtomicU64,
    acknowledged: AtomicU64,
    rejected: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
    connected: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Messages handed to the connections.
    pub published: u64,
    /// QoS 1 messages the broker acknowledged with success.
    pub acknowledged: u64,
    /// QoS 1 messages the broker refused (a 5.0 reason code of 0x80 or above, such as
    /// 0x99 payload format invalid).
    pub rejected: u64,
    /// Failed connection attempts, lost connections and refused messages.
    pub errors: u64,
    /// Reconnection attempts.
    pub reconnects: u64,
    /// Devices connected right now.
    pub connected: u64,
    /// The most recent error, for display.
    pub last_error: Option<String>,
}

/// What a finished simulation did.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// Counters at the end (`connected` is 0 once every device disconnected).
    pub stats: SimStats,
    /// How long it ran.
    pub elapsed: Duration,
}

impl SimCounters {
    /// Reads every counter.
    pub fn snapshot(&self) -> SimStats {
        SimStats {
            published: self.published.load(Ordering::Relaxed),
            acknowledged: self.acknowledged.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .map(|guard| guard.clone())
                .unwrap_or_default(),
        }
    }

    pub(crate) fn published(&self) {
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn acknowledged(&self) {
        self.acknowledged.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self, detail: String) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.error(detail);
    }

    pub(crate) fn error(&self, detail: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(detail);
        }
    }

    pub(crate) fn reconnecting(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connected(&self) {
        self.connected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn disconnected(&self) {
        self.connected.fetch_sub(1, Ordering::Relaxed);
    }
}
