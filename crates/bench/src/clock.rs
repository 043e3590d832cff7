//! The time base of send timestamps: nanoseconds since the run started, so publishers
//! and subscribers in this process agree without touching the wall clock.

use std::time::Instant;

/// A shared starting point; copies of it read the same time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    pub(crate) fn start() -> Clock {
        Clock {
            epoch: Instant::now(),
        }
    }

    /// Nanoseconds since [`Clock::start`].
    pub(crate) fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}
