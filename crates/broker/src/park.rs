//! Parked connections: idle clients held by their listener, without tasks of their own.
//!
//! An attached connection runs two tasks (reader and writer) over a socket registered
//! with tokio, which costs about 3 KB even when nothing happens; most clients of an IoT
//! fleet say nothing for minutes at a time. So a connection with nothing to read or
//! write (after [`PARK_AFTER`] of silence, or right after `CONNECT` when [`MAX_FRESH`]
//! new connections are attached already) hands its socket
//! and what it needs to resume ([`Parked`], 64 bytes) to its listener's [`Lot`], and its
//! tasks end. The lot watches the parked sockets with an epoll instance of its own (mio,
//! no allocation per socket) and keeps their keep-alive deadlines in one heap, served by
//! one timer in the listener's task.
//!
//! The listener resumes a parked connection (spawns its tasks again) when its socket has
//! anything but `PINGREQ` to read (pings are answered in place), when its keep-alive
//! expires, when its session has something to send or is taken over or revoked
//! ([`Lot::wake`], reached through the session's attachment), and at shutdown.
//!
//! Locks: the lot's mutex is taken after a session's (parking and waking happen under
//! the session lock, so a wake-up cannot slip between the check that a connection is
//! idle and its parking), and nothing else is locked while it is held.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll};
use parking_lot::Mutex;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::connection::Connection;
use crate::stats::{self, Stats};

/// How long an attached connection stays silent (nothing read, nothing to write) before
/// it parks. Short enough that idle fleets cost little, long enough that a client
/// talking every few hundred milliseconds keeps its tasks.
pub(crate) const PARK_AFTER: Duration = Duration::from_secs(2);

/// New connections of one listener that stay attached after `CONNACK` (and park only
/// after [`PARK_AFTER`] of silence, like any other), so that a client's first packets
/// are served by its own tasks in the order they arrive; past this many (a storm of
/// connections) a new one parks at once. Small and bounded: each costs about 4.5 KB of
/// the broker's high-water memory while attached (64 of them: about 17 B per connection
/// over 19,000 idle ones; 1,024 cost 240 B), and idle connections cost the same per
/// connection however many there are.
pub(crate) const MAX_FRESH: usize = 64;

/// `PINGREQ` and `PINGRESP`, the same in 3.1.1 and 5.0.
const PINGREQ: [u8; 2] = [0xC0, 0x00];
const PINGRESP: [u8; 2] = [0xD0, 0x00];
/// Pings read in one go from a parked socket; more means a confused client: resume it.
const MAX_PINGS: usize = 8;

/// A parked connection: its socket and what the connection keeps for its whole life,
/// moved here whole from the running reader and back. The same pair travels with a tokio
/// socket (`S = TcpStream`) on the way in and out of the lot.
#[derive(Debug)]
pub(crate) struct Parked<S = std::net::TcpStream> {
    /// The socket; a parked one is non-blocking and watched by the lot, not by tokio.
    pub(crate) stream: S,
    pub(crate) connection: Connection,
}

impl<S> Parked<S> {
    /// When the keep-alive expires; `None` without keep-alive.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.connection.deadline()
    }

    /// The same connection over another kind of socket. If `convert` fails the socket is
    /// gone, and the connection comes back (to be closed).
    pub(crate) fn convert<T>(
        self,
        convert: impl FnOnce(S) -> io::Result<T>,
    ) -> Result<Parked<T>, (io::Error, Connection)> {
        let Parked { stream, connection } = self;
        match convert(stream) {
            Ok(stream) => Ok(Parked { stream, connection }),
            Err(error) => Err((error, connection)),
        }
    }
}

/// How long a client may stay silent: one and a half times its keep-alive.
pub(crate) fn keep_alive_limit(keep_alive: u16) -> Option<Duration> {
    (keep_alive > 0).then(|| Duration::from_millis(u64::from(keep_alive) * 1500))
}

/// Where a parked connection sits; stale once it leaves (the slot's epoch moves on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Token {
    slot: u32,
    epoch: u32,
}

impl Token {
    fn to_mio(self) -> mio::Token {
        mio::Token(((self.epoch as usize) << 32) | self.slot as usize)
    }

    fn from_mio(token: mio::Token) -> Token {
        Token {
            slot: token.0 as u32,
            epoch: (token.0 >> 32) as u32,
        }
    }
}

/// The parked connections of one listener.
pub(crate) struct Lot {
    registry: mio::Registry,
    state: Mutex<LotState>,
    /// Wakes the listener: connections to resume, or an earlier keep-alive deadline.
    attention: Notify,
    /// New connections attached without parking ([`MAX_FRESH`]).
    fresh: AtomicUsize,
}

/// A new connection's place among the [`MAX_FRESH`] that stay attached after
/// `CONNACK`; given back when dropped (when the connection parks or closes).
pub(crate) struct Fresh(Arc<Lot>);

impl Drop for Fresh {
    fn drop(&mut self) {
        self.0.fresh.fetch_sub(1, Ordering::Relaxed);
    }
}

struct LotState {
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Connections taken out by [`Lot::wake`], for the listener to resume.
    woken: Vec<Parked>,
    /// Keep-alive deadlines (milliseconds after `epoch`, rounded up), earliest first. An
    /// entry is stale once its connection left or got a later deadline (a ping); stale
    /// entries are skipped when they come up.
    deadlines: BinaryHeap<Reverse<(u64, Token)>>,
    /// The deadline the listener's timer is set for.
    armed: Option<u64>,
    /// Where deadlines count from: the lot's creation.
    epoch: Instant,
    /// Shut down: nothing parks any more.
    is_closed: bool,
}

#[derive(Default)]
struct Slot {
    epoch: u32,
    parked: Option<Box<Parked>>,
}

impl std::fmt::Debug for Lot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lot").finish_non_exhaustive()
    }
}

/// The lot's epoll instance, polled by the listener's task.
pub(crate) struct Poller {
    poll: AsyncFd<Poll>,
    events: Events,
}

impl Lot {
    pub(crate) fn new() -> io::Result<(Arc<Lot>, Poller)> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let lot = Lot {
            registry,
            state: Mutex::new(LotState {
                slots: Vec::new(),
                free: Vec::new(),
                woken: Vec::new(),
                deadlines: BinaryHeap::new(),
                armed: None,
                epoch: Instant::now(),
                is_closed: false,
            }),
            attention: Notify::new(),
            fresh: AtomicUsize::new(0),
        };
        // Deprecated because a type's `as_raw_fd` could change or close its descriptor
        // (tokio#8587); a `Poll` keeps its epoll descriptor open and unchanged until it
        // is dropped, which is what the replacement's safety contract asks.
        #[allow(deprecated)]
        let poll = AsyncFd::with_interest(poll, tokio::io::Interest::READABLE)?;
        let poller = Poller {
            poll,
            events: Events::with_capacity(256),
        };
        Ok((Arc::new(lot), poller))
    }

    /// A place for a new connection to stay attached after `CONNACK`; `None` when
    /// [`MAX_FRESH`] are already taken: it should park at once.
    pub(crate) fn fresh(self: &Arc<Lot>) -> Option<Fresh> {
        let taken = self.fresh.fetch_add(1, Ordering::Relaxed);
        if taken >= MAX_FRESH {
            self.fresh.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Fresh(Arc::clone(self)))
    }

    /// Parks a connection; called with its session locked. Gives it back when the lot
    /// is closed (shutdown) or the socket cannot be watched.
    pub(crate) fn park(&self, parked: Box<Parked>) -> Result<Token, Box<Parked>> {
        let mut state = self.state.lock();
        if state.is_closed {
            return Err(parked);
        }
        let slot = match state.free.pop() {
            Some(slot) => slot,
            None => {
                let Ok(slot) = u32::try_from(state.slots.len()) else {
                    return Err(parked);
                };
                state.slots.push(Slot::default());
                slot
            }
        };
        let token = Token {
            slot,
            epoch: state.slots[slot as usize].epoch,
        };
        let fd = parked.stream.as_raw_fd();
        if let Err(error) =
            self.registry
                .register(&mut SourceFd(&fd), token.to_mio(), Interest::READABLE)
        {
            tracing::debug!(%error, "cannot park a connection");
            state.free.push(slot);
            return Err(parked);
        }
        if let Some(deadline) = state.deadline(&parked) {
            state.deadlines.push(Reverse((deadline, token)));
            if state.armed.is_none_or(|armed| deadline < armed) {
                self.attention.notify_one();
            }
        }
        state.slots[slot as usize].parked = Some(parked);
        Ok(token)
    }

    /// Hands the connection at `token` to the listener to resume, if it is still parked;
    /// called with its session locked.
    pub(crate) fn wake(&self, token: Token) {
        let mut state = self.state.lock();
        if let Some(parked) = state.take(token) {
            state.woken.push(*parked);
            self.attention.notify_one();
        }
    }

    /// Takes every parked connection out and parks none from now on (shutdown).
    pub(crate) fn close(&self, resume: &mut Vec<Parked>) {
        let mut state = self.state.lock();
        state.is_closed = true;
        resume.append(&mut state.woken);
        for slot in &mut state.slots {
            if let Some(parked) = slot.parked.take() {
                slot.epoch = slot.epoch.wrapping_add(1);
                resume.push(*parked);
            }
        }
        state.free.clear();
        state.slots = Vec::new();
        state.deadlines = BinaryHeap::new();
    }

    /// Stops watching the socket of a connection that is about to resume.
    pub(crate) fn forget(&self, parked: &Parked) {
        let fd = parked.stream.as_raw_fd();
        if let Err(error) = self.registry.deregister(&mut SourceFd(&fd)) {
            tracing::debug!(%error, "cannot stop watching a parked connection");
        }
    }

    /// Resolves when [`Lot::wake`] or [`Lot::park`] want the listener's attention.
    pub(crate) async fn wanted(&self) {
        self.attention.notified().await;
    }

    /// Listener side: what [`Lot::wake`] took out, plus connections whose keep-alive
    /// expired by `now`; returns the next deadline (the listener sets its timer to it).
    pub(crate) fn due(&self, now: Instant, resume: &mut Vec<Parked>) -> Option<Instant> {
        let mut state = self.state.lock();
        resume.append(&mut state.woken);
        let now = state.millis(now, false);
        while let Some(Reverse((deadline, token))) = state.deadlines.peek().copied() {
            let is_current = state
                .parked(token)
                .is_some_and(|parked| state.deadline(parked) == Some(deadline));
            if is_current && deadline > now {
                break;
            }
            state.deadlines.pop();
            if is_current {
                if let Some(parked) = state.take(token) {
                    resume.push(*parked);
                }
            }
        }
        // Stale entries pile up when clients ping or leave long before their deadline;
        // rebuild the heap before it grows past twice the live entries.
        let live = state.slots.len() - state.free.len();
        if state.deadlines.len() > 2 * live + 1024 {
            let deadlines = state
                .slots
                .iter()
                .enumerate()
                .filter_map(|(slot, entry)| {
                    let parked = entry.parked.as_ref()?;
                    let token = Token {
                        slot: slot as u32,
                        epoch: entry.epoch,
                    };
                    let deadline = state.deadline(parked)?;
                    Some(Reverse((deadline, token)))
                })
                .collect();
            state.deadlines = deadlines;
        }
        state.armed = state
            .deadlines
            .peek()
            .map(|Reverse((deadline, _))| *deadline);
        let epoch = state.epoch;
        state
            .armed
            .map(|millis| epoch + Duration::from_millis(millis))
    }

    /// Listener side: handles the sockets [`Poller::ready`] found readable. A parked
    /// client that only pinged is answered here and stays parked; any other input (or
    /// end of stream) resumes its connection.
    pub(crate) fn readable(&self, poller: &Poller, stats: &Stats, resume: &mut Vec<Parked>) {
        let mut state = self.state.lock();
        for event in poller.events.iter() {
            let token = Token::from_mio(event.token());
            let Some(parked) = state.parked_mut(token) else {
                continue;
            };
            match answer_pings(parked, stats) {
                Ok(true) => {
                    let deadline = parked.deadline();
                    if let Some(deadline) = deadline.map(|at| state.millis(at, true)) {
                        state.deadlines.push(Reverse((deadline, token)));
                    }
                }
                Ok(false) | Err(_) => {
                    if let Some(parked) = state.take(token) {
                        resume.push(*parked);
                    }
                }
            }
        }
    }
}

impl Poller {
    /// Waits until parked sockets are ready and collects their events (possibly none).
    pub(crate) async fn ready(&mut self) -> io::Result<()> {
        let Poller { poll, events } = self;
        let mut guard = poll.readable_mut().await?;
        let polled = guard.try_io(|poll| {
            poll.get_mut().poll(events, Some(Duration::ZERO))?;
            if events.is_empty() {
                // Clears the readiness: the next call waits for new events.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(())
        });
        match polled {
            Ok(result) => result,
            Err(_would_block) => Ok(()),
        }
    }
}

impl LotState {
    /// `at` in milliseconds after the lot's epoch, rounded up for deadlines (so that
    /// none expires early) and down for the present.
    fn millis(&self, at: Instant, is_deadline: bool) -> u64 {
        let nanos = at.saturating_duration_since(self.epoch).as_nanos();
        let millis = if is_deadline {
            nanos.div_ceil(1_000_000)
        } else {
            nanos / 1_000_000
        };
        u64::try_from(millis).unwrap_or(u64::MAX)
    }

    fn deadline(&self, parked: &Parked) -> Option<u64> {
        parked.deadline().map(|at| self.millis(at, true))
    }

    fn parked(&self, token: Token) -> Option<&Parked> {
        let slot = self.slots.get(token.slot as usize)?;
        if slot.epoch != token.epoch {
            return None;
        }
        slot.parked.as_deref()
    }

    fn parked_mut(&mut self, token: Token) -> Option<&mut Parked> {
        let slot = self.slots.get_mut(token.slot as usize)?;
        if slot.epoch != token.epoch {
            return None;
        }
        slot.parked.as_deref_mut()
    }

    fn take(&mut self, token: Token) -> Option<Box<Parked>> {
        let slot = self.slots.get_mut(token.slot as usize)?;
        if slot.epoch != token.epoch {
            return None;
        }
        let parked = slot.parked.take()?;
        slot.epoch = slot.epoch.wrapping_add(1);
        self.free.push(token.slot);
        Some(parked)
    }
}

/// Answers a parked client that sent nothing but whole `PINGREQ`s; whether it did
/// (`false`: something else is waiting, or the stream ended: resume the connection).
fn answer_pings(parked: &mut Parked, stats: &Stats) -> io::Result<bool> {
    let mut peeked = [0u8; 2 * MAX_PINGS + 1];
    let count = match parked.stream.peek(&mut peeked) {
        Ok(count) => count,
        // A stale readiness event: nothing to do.
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(true),
        Err(error) => return Err(error),
    };
    let received = &peeked[..count];
    if count == 0
        || count > 2 * MAX_PINGS
        || count % 2 != 0
        || !received.chunks(2).all(|pair| pair == PINGREQ)
    {
        return Ok(false);
    }
    let mut discard = [0u8; 2 * MAX_PINGS];
    parked.stream.read_exact(&mut discard[..count])?;
    let answer: Vec<u8> = PINGRESP.repeat(count / 2);
    // The socket's send buffer is empty (the connection had nothing to write when it
    // parked), so a few bytes go at once; a partial write would corrupt the stream.
    if parked.stream.write(&answer)? != answer.len() {
        let _ = parked.stream.shutdown(std::net::Shutdown::Both);
        return Ok(false);
    }
    parked.connection.last_read = Instant::now();
    stats::add(&stats.bytes_received, count as u64);
    stats::add(&stats.bytes_sent, count as u64);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Session;

    /// What an idle connection costs is mostly these two allocations (plus the session
    /// table's entry and the lot's slot): keep them from growing unnoticed.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_parked_connection_and_its_session_stay_small() {
        // 64 bytes, plus the connection limits' permit and the 5.0 topic aliases (one
        // pointer each).
        assert!(
            size_of::<Parked>() <= 80,
            "Parked is {} bytes",
            size_of::<Parked>()
        );
        // 296 bytes, plus the count of queued bytes (the queue's byte limit).
        assert!(
            size_of::<Session>() <= 304,
            "Session is {} bytes",
            size_of::<Session>()
        );
    }

    #[test]
    fn tokens_round_trip_through_mio() {
        let token = Token {
            slot: 7,
            epoch: u32::MAX,
        };
        assert_eq!(Token::from_mio(token.to_mio()), token);
    }
}
