//! Limits that keep one client (or one address) from taking the broker for itself:
//! connections in total and per source address, new connections per second per address
//! ([`ConnectionGate`]), a client's inbound publish rate ([`PublishBudget`]), and (in the
//! router and the session) subscriptions per client and bytes queued per session.
//!
//! A connection holds a [`ConnectionPermit`] from accept to close (parked too): dropping
//! it gives its place back, so no close path can leak one. A permit is one pointer wide.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::stats::{self, Stats};

/// The broker's limits; 0 turns a limit off.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Most open connections (all listeners together).
    pub max_connections: usize,
    /// Most open connections from one source address.
    pub max_connections_per_address: u32,
    /// New connections per second one source address may open (a burst of as many is
    /// allowed at once).
    pub connection_rate_per_address: u32,
    /// `PUBLISH` packets per second one client may send (a burst of as many at once).
    /// Past it a 5.0 client is disconnected with reason 0x96 (message rate too high); a
    /// 3.1.1 client is slowed down by not being read.
    pub publish_rate: u32,
    /// `PUBLISH` bytes per second one client may send, the same way.
    pub publish_bytes_rate: u64,
    /// Most subscriptions one session may hold; one more is refused with reason 0x97
    /// (quota exceeded; 0x80 for 3.1.1).
    pub max_subscriptions: usize,
    /// Most bytes of messages queued for one session (with `max_queued_messages`);
    /// messages past it are dropped and counted. At most `u32::MAX`.
    pub max_queued_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 100_000,
            max_connections_per_address: 10_000,
            connection_rate_per_address: 500,
            publish_rate: 5_000,
            publish_bytes_rate: 10 * 1024 * 1024,
            max_subscriptions: 1_000,
            max_queued_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// Every limit off (benchmarks, tests of something else).
    pub fn none() -> Limits {
        Limits {
            max_connections: 0,
            max_connections_per_address: 0,
            connection_rate_per_address: 0,
            publish_rate: 0,
            publish_bytes_rate: 0,
            max_subscriptions: 0,
            max_queued_bytes: 0,
        }
    }
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` reached.
    Total,
    /// `max_connections_per_address` reached for this address.
    PerAddress,
    /// `connection_rate_per_address` exceeded.
    Rate,
}

/// Counts open connections, in total and per source address, and new connections per
/// address; hands out [`ConnectionPermit`]s.
#[derive(Debug)]
pub(crate) struct ConnectionGate {
    max_total: usize,
    max_per_address: u32,
    rate: u32,
    total: AtomicUsize,
    addresses: Mutex<HashMap<IpAddr, Arc<Address>>>,
}

/// One source address's open connections and connection-rate bucket. Kept while it has
/// open connections or a bucket that is not yet full again.
#[derive(Debug)]
struct Address {
    ip: IpAddr,
    open: AtomicU32,
    bucket: Mutex<Bucket>,
    /// Weak: the gate's table holds the address.
    gate: Weak<ConnectionGate>,
}

/// A place among the broker's open connections ([`crate::Broker::admit_connection`]),
/// given back when dropped: a connection holds it from accept to close. One pointer
/// wide, since every parked connection keeps one.
#[derive(Debug)]
pub struct ConnectionPermit {
    address: Arc<Address>,
}

impl ConnectionGate {
    pub(crate) fn new(limits: &Limits) -> Arc<ConnectionGate> {
        Arc::new(ConnectionGate {
            max_total: limits.max_connections,
            max_per_address: limits.max_connections_per_address,
            rate: limits.connection_rate_per_address,
            total: AtomicUsize::new(0),
            addresses: Mutex::new(HashMap::new()),
        })
    }

    /// A permit for a new connection from `ip`, or why not (counted in `stats`).
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        stats: &Stats,
    ) -> Result<ConnectionPermit, Refusal> {
        let refused = |refusal: Refusal| {
            let counter = match refusal {
                Refusal::Total => &stats.connections_refused_total,
                Refusal::PerAddress => &stats.connections_refused_per_address,
                Refusal::Rate => &stats.connections_refused_rate,
            };
            stats::add(counter, 1);
            Err(refusal)
        };
        let previous = self.total.fetch_add(1, Ordering::Relaxed);
        if self.max_total > 0 && previous >= self.max_total {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return refused(Refusal::Total);
        }
        let address = {
            let mut addresses = self.addresses.lock();
            if addresses.len() > ADDRESSES_BEFORE_SWEEP {
                let now = Instant::now();
                addresses.retain(|_, address| !address.is_forgettable(self.rate, now));
            }
            Arc::clone(addresses.entry(ip).or_insert_with(|| {
                Arc::new(Address {
                    ip,
                    open: AtomicU32::new(0),
                    bucket: Mutex::new(Bucket::full(self.rate)),
                    gate: Arc::downgrade(self),
                })
            }))
        };
        if self.rate > 0 && !address.bucket.lock().take(self.rate, Instant::now()) {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return refused(Refusal::Rate);
        }
        let open = address.open.fetch_add(1, Ordering::Relaxed);
        if self.max_per_address > 0 && open >= self.max_per_address {
            address.open.fetch_sub(1, Ordering::Relaxed);
            self.total.fetch_sub(1, Ordering::Relaxed);
            return refused(Refusal::PerAddress);
        }
        Ok(ConnectionPermit { address })
    }

    /// Open connections now.
    pub(crate) fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }
}

/// Addresses tracked before idle ones are swept out.
const ADDRESSES_BEFORE_SWEEP: usize = 4096;

impl Address {
    /// Whether nothing would be lost by forgetting this address: no open connection and a
    /// full bucket.
    fn is_forgettable(&self, rate: u32, now: Instant) -> bool {
        self.open.load(Ordering::Relaxed) == 0 && self.bucket.lock().is_full(rate, now)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let was_last = self.address.open.fetch_sub(1, Ordering::Relaxed) == 1;
        let Some(gate) = self.address.gate.upgrade() else {
            return;
        };
        gate.total.fetch_sub(1, Ordering::Relaxed);
        if was_last && gate.rate == 0 {
            // Without a rate limit an address with no connection keeps nothing worth
            // remembering: forget it now (unless a new connection came meanwhile).
            let mut addresses = gate.addresses.lock();
            if self.address.open.load(Ordering::Relaxed) == 0 {
                addresses.remove(&self.address.ip);
            }
        }
    }
}

/// A token bucket refilled at `rate` per second, holding at most `rate` tokens.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(rate: u32) -> Bucket {
        Bucket {
            tokens: f64::from(rate),
            updated: Instant::now(),
        }
    }

    fn refill(&mut self, rate: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.updated = now;
    }

    /// Takes a token if there is one.
    fn take(&mut self, rate: u32, now: Instant) -> bool {
        self.refill(f64::from(rate), now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&self, rate: u32, now: Instant) -> bool {
        let mut copy = *self;
        copy.refill(f64::from(rate), now);
        copy.tokens >= f64::from(rate)
    }
}

/// A client's inbound publish budget: messages and bytes per second, each a token
/// bucket holding one second's worth. Lives with the running reader.
#[derive(Debug)]
pub(crate) struct PublishBudget {
    messages_per_second: f64,
    bytes_per_second: f64,
    messages: f64,
    bytes: f64,
    updated: Instant,
    /// The time messages are counted at ([`PublishBudget::read_clock`]).
    now: Instant,
    /// How long the client must not be read (3.1.1, past its budget); zero otherwise.
    pause: Duration,
}

impl PublishBudget {
    /// A full budget; `None` when both rates are off.
    pub(crate) fn new(limits: &Limits) -> Option<PublishBudget> {
        if limits.publish_rate == 0 && limits.publish_bytes_rate == 0 {
            return None;
        }
        let messages_per_second = f64::from(limits.publish_rate);
        let bytes_per_second = limits.publish_bytes_rate as f64;
        Some(PublishBudget {
            messages_per_second,
            bytes_per_second,
            messages: messages_per_second,
            bytes: bytes_per_second,
            updated: Instant::now(),
            now: Instant::now(),
            pause: Duration::ZERO,
        })
    }

    /// Reads the clock: the messages spent from now on count at this time.
    pub(crate) fn read_clock(&mut self) {
        self.now = Instant::now();
    }

    /// Asks for a pause of `pause` before the client is read again.
    pub(crate) fn pause_for(&mut self, pause: Duration) {
        self.pause = self.pause.max(pause);
    }

    /// Whether a pause is asked for.
    pub(crate) fn is_paused(&self) -> bool {
        !self.pause.is_zero()
    }

    /// The pause asked for, if any, which is then over.
    pub(crate) fn take_pause(&mut self) -> Option<Duration> {
        let pause = std::mem::take(&mut self.pause);
        (!pause.is_zero()).then_some(pause)
    }

    /// Spends one message of `bytes`; how long the client is past its budget (zero when
    /// within it). A message larger than a whole second's worth of bytes is let through
    /// once the byte bucket is full, so that it is not refused for ever.
    pub(crate) fn spend(&mut self, bytes: usize) -> Duration {
        let now = self.now;
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.updated = now;
        let mut over = 0.0_f64;
        if self.messages_per_second > 0.0 {
            self.messages =
                (self.messages + elapsed * self.messages_per_second).min(self.messages_per_second);
            self.messages -= 1.0;
            if self.messages < 0.0 {
                over = over.max(-self.messages / self.messages_per_second);
            }
        }
        if self.bytes_per_second > 0.0 {
            let cost = (bytes as f64).min(self.bytes_per_second);
            self.bytes = (self.bytes + elapsed * self.bytes_per_second).min(self.bytes_per_second);
            self.bytes -= cost;
            if self.bytes < 0.0 {
                over = over.max(-self.bytes / self.bytes_per_second);
            }
        }
        Duration::from_secs_f64(over)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_address: u32, rate: u32) -> Limits {
        Limits {
            max_connections: total,
            max_connections_per_address: per_address,
            connection_rate_per_address: rate,
            ..Limits::none()
        }
    }

    #[test]
    fn permits_count_per_address_and_in_total_and_are_given_back_when_dropped() {
        let stats = Stats::default();
        let gate = ConnectionGate::new(&limits(3, 2, 0));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let first = gate.admit(a, &stats).unwrap();
        let _second = gate.admit(a, &stats).unwrap();
        assert_eq!(gate.admit(a, &stats).unwrap_err(), Refusal::PerAddress);
        let _third = gate.admit(b, &stats).unwrap();
        assert_eq!(gate.admit(b, &stats).unwrap_err(), Refusal::Total);
        drop(first);
        assert_eq!(gate.open(), 2);
        gate.admit(a, &stats).unwrap();
        assert_eq!(stats::get(&stats.connections_refused_per_address), 1);
        assert_eq!(stats::get(&stats.connections_refused_total), 1);
    }

    #[test]
    fn an_address_past_its_connection_rate_is_refused_and_others_are_not() {
        let stats = Stats::default();
        let gate = ConnectionGate::new(&limits(0, 0, 5));
        let a: IpAddr = [10, 0, 0, 1].into();
        let admitted = (0..8).filter(|_| gate.admit(a, &stats).is_ok()).count();
        assert_eq!(admitted, 5);
        assert!(gate.admit([10, 0, 0, 2].into(), &stats).is_ok());
        assert_eq!(stats::get(&stats.connections_refused_rate), 3);
    }

    #[test]
    fn a_publisher_within_its_budget_is_never_held_back_and_one_past_it_is() {
        let mut budget = PublishBudget::new(&Limits {
            publish_rate: 10,
            publish_bytes_rate: 1000,
            ..Limits::none()
        })
        .unwrap();
        let start = Instant::now();
        budget.now = start;
        for _ in 0..10 {
            assert_eq!(budget.spend(10), Duration::ZERO);
        }
        let over = budget.spend(10);
        assert!(
            over > Duration::ZERO && over <= Duration::from_millis(100),
            "{over:?}"
        );
        // A second later the budget is whole again.
        budget.now = start + Duration::from_secs(2);
        assert_eq!(budget.spend(10), Duration::ZERO);
        // Bytes count too.
        budget.now = start + Duration::from_secs(4);
        assert_eq!(budget.spend(1000), Duration::ZERO);
        assert!(budget.spend(500) >= Duration::from_millis(400));
    }
}
