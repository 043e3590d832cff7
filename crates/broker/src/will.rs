//! Wills with a delay (5.0 Will Delay Interval): who holds a will between the end of its
//! connection and its publication.
//!
//! A will whose connection ends abnormally is published at once, unless it has a delay
//! and its session outlives the connection. Then it waits here as a [`PendingWill`],
//! keyed by client id, until the delay passes or the session ends (it expires, or a
//! clean start replaces it), whichever comes first, and it is dropped if the client
//! resumes the session meanwhile (MQTT-3.1.3-9). Housekeeping publishes the due ones
//! ([`Broker::publish_due_wills`], woken by [`Broker::next_will_due`]); attaching
//! ([`Broker::settle_delayed_will`]) and ending a session ([`Broker::end_delayed_will`])
//! settle the one of their client.
//!
//! Pending wills are kept in memory. Each is a small value (the will: topic, payload,
//! QoS, retain flag and properties; its session; when it is due) so that a session store
//! can save it beside its session.
//!
//! Lock order: the session table, then one session, then [`DelayedWills`] (which locks
//! nothing else). Wills are published outside these locks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fleetwire_mqtt_codec::Will;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::broker::{Broker, forwarded_properties, wall_clock};
use crate::durable::{Change, SavedMessage, StateError};
use crate::peers::PeerMessage;
use crate::session::{ClientId, Session, SessionId};

/// A will waiting for its delay to pass.
#[derive(Debug, Clone)]
pub(crate) struct PendingWill {
    /// The message, copied out of its `CONNECT` (its own allocations).
    pub(crate) will: Will,
    /// The session whose connection left it: resuming that session drops it.
    pub(crate) session: SessionId,
    /// When it is published unless its session is resumed first: the will delay, or
    /// the session expiry if that is shorter.
    pub(crate) due: Instant,
}

/// The pending wills of the broker, by client id and by due time.
#[derive(Debug, Default)]
pub(crate) struct DelayedWills {
    pending: Mutex<Pending>,
    /// Told when a will is scheduled, so that housekeeping looks at its timer again.
    scheduled: Notify,
}

#[derive(Debug, Default)]
struct Pending {
    by_client: HashMap<ClientId, PendingWill>,
    /// The same wills, in the order they are due.
    by_due: BTreeMap<(Instant, SessionId), ClientId>,
}

impl DelayedWills {
    /// Keeps `will` until it is due; returns the will it replaces (of an earlier session
    /// of the same client, which is then due at once).
    fn schedule(&self, client_id: ClientId, will: PendingWill) -> Option<PendingWill> {
        let replaced = {
            let mut pending = self.pending.lock();
            pending
                .by_due
                .insert((will.due, will.session), client_id.clone());
            let replaced = pending.by_client.insert(client_id, will);
            if let Some(old) = &replaced {
                pending.by_due.remove(&(old.due, old.session));
            }
            replaced
        };
        self.scheduled.notify_one();
        replaced
    }

    /// Takes the pending will of `client_id`, if `session` left it (any session: `None`).
    fn take(&self, client_id: &ClientId, session: Option<SessionId>) -> Option<PendingWill> {
        let mut pending = self.pending.lock();
        let is_match = pending
            .by_client
            .get(client_id)
            .is_some_and(|will| session.is_none_or(|session| will.session == session));
        if !is_match {
            return None;
        }
        let will = pending.by_client.remove(client_id)?;
        pending.by_due.remove(&(will.due, will.session));
        Some(will)
    }

    /// Takes every will due by `now`, with its client id.
    fn take_due(&self, now: Instant) -> Vec<(ClientId, PendingWill)> {
        let mut pending = self.pending.lock();
        let mut due = Vec::new();
        while let Some(entry) = pending.by_due.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let client_id = entry.remove();
            if let Some(will) = pending.by_client.remove(&client_id) {
                due.push((client_id, will));
            }
        }
        due
    }

    /// The pending will of `client_id` (for a snapshot of the durable state).
    pub(crate) fn get(&self, client_id: &ClientId) -> Option<PendingWill> {
        self.pending.lock().by_client.get(client_id).cloned()
    }

    /// When the next will is due.
    fn next_due(&self) -> Option<Instant> {
        self.pending
            .lock()
            .by_due
            .first_key_value()
            .map(|((due, _), _)| *due)
    }

    /// How many wills wait.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.pending.lock().by_client.len()
    }
}

impl Broker {
    /// Hands the will of connection `generation` of `session` to the peers, which keep
    /// it while the connection is open, so that another node publishes it if this one
    /// dies first (nothing without peers).
    pub(crate) fn hold_will(&self, session: &Session, generation: u64, will: &Will) {
        if let Some(peers) = self.peers() {
            let message = PeerMessage {
                topic: will.topic.clone(),
                payload: will.payload.clone(),
                qos: will.qos,
                is_retained: will.retain,
                properties: forwarded_properties(will.properties.clone()),
            };
            let delay = will.properties.will_delay_interval.unwrap_or(0);
            peers.will_held(session.client_id.as_str(), generation, &message, delay);
        }
    }

    /// The connection `generation` of `session`, which had a will, ended: its will is
    /// this node's business again (published, dropped or delayed here).
    pub(crate) fn release_will(&self, session: &Session, generation: u64) {
        if let Some(peers) = self.peers() {
            peers.will_released(session.client_id.as_str(), generation);
        }
    }

    /// Handles the will of connection `generation` of `session`, which ended abnormally:
    /// published now, or kept for its delay if the session outlives the connection, or
    /// dropped if another connection already resumed the session (a takeover).
    pub(crate) fn will_at_close(&self, will: Will, session: &Arc<Session>, generation: u64) {
        let delay = will.properties.will_delay_interval.unwrap_or(0);
        if delay > 0 {
            // Under the table's lock, so a clean start that replaces the session cannot
            // slip between this check and the scheduling (it settles the will after).
            let sessions = self.session_table();
            let is_current = sessions
                .get(&session.client_id)
                .is_some_and(|current| Arc::ptr_eq(current, session));
            let state = session.state.lock();
            if is_current && !state.is_attached(generation) && state.attachment.is_some() {
                tracing::debug!(client_id = %session.client_id, "will dropped: the session was resumed before its delay");
                return;
            }
            // A session that is not persistent ends when this connection detaches:
            // its will is due then.
            if is_current && state.is_persistent {
                let delay = Duration::from_secs(u64::from(delay.min(state.expiry_interval)));
                let now = Instant::now();
                let pending = PendingWill {
                    will,
                    session: session.id,
                    due: now.checked_add(delay).unwrap_or(now),
                };
                if session.is_saved.load(Ordering::Relaxed) {
                    // Survives a restart: published when due, even after a crash.
                    let _ = save_delayed_will(
                        &mut |change| {
                            self.note(change);
                            Ok(())
                        },
                        session.client_id.as_str(),
                        &pending.will,
                        pending.due,
                    );
                }
                let replaced = self
                    .delayed_wills()
                    .schedule(session.client_id.clone(), pending);
                drop((state, sessions));
                tracing::debug!(client_id = %session.client_id, ?delay, "will delayed");
                if let Some(replaced) = replaced {
                    self.publish_will(replaced.will, replaced.session);
                }
                return;
            }
        }
        tracing::debug!(client_id = %session.client_id, topic = %will.topic, "publishing will");
        self.publish_will(will, session.id);
    }

    /// Settles the pending will of a client that just attached to `session`: dropped if
    /// it was left by this very session (resumed in time), published now if it was left
    /// by one that the new connection replaced (clean start: that session ended).
    pub(crate) fn settle_delayed_will(&self, session: &Session) {
        let Some(pending) = self.delayed_wills().take(&session.client_id, None) else {
            return;
        };
        self.note_will_settled(&session.client_id);
        if pending.session == session.id {
            tracing::debug!(client_id = %session.client_id, "delayed will dropped: the session was resumed");
        } else {
            tracing::debug!(client_id = %session.client_id, "publishing delayed will: its session was replaced");
            self.publish_will(pending.will, pending.session);
        }
    }

    /// Publishes the pending will `session` left, now that the session ends (its expiry
    /// is due at the latest then).
    pub(crate) fn end_delayed_will(&self, session: &Session) {
        if let Some(pending) = self
            .delayed_wills()
            .take(&session.client_id, Some(session.id))
        {
            self.note_will_settled(&session.client_id);
            tracing::debug!(client_id = %session.client_id, "publishing delayed will: its session ended");
            self.publish_will(pending.will, pending.session);
        }
    }

    /// Publishes the wills whose delay has passed.
    pub(crate) fn publish_due_wills(&self) {
        for (client_id, pending) in self.delayed_wills().take_due(Instant::now()) {
            self.note_will_settled(&client_id);
            tracing::debug!(topic = %pending.will.topic, "publishing delayed will");
            self.publish_will(pending.will, pending.session);
        }
    }

    /// A delayed will the durable state holds (at start), for the restored `session`.
    pub(crate) fn restore_delayed_will(&self, session: &Session, will: Will, due: Instant) {
        let pending = PendingWill {
            will,
            session: session.id,
            due,
        };
        if let Some(replaced) = self
            .delayed_wills()
            .schedule(session.client_id.clone(), pending)
        {
            // Two for one client cannot be saved; keep the later, as a live broker does.
            drop(replaced);
        }
    }

    /// Forgets the delayed will of `client_id` the durable state holds (at start).
    pub(crate) fn restore_will_settled(&self, client_id: &ClientId) {
        self.delayed_wills().take(client_id, None);
    }

    /// Saves that the delayed will of `client_id` is gone (published or dropped).
    fn note_will_settled(&self, client_id: &ClientId) {
        if self.state().is_some() {
            self.note(Change::WillSettled {
                client_id: client_id.as_str(),
            });
        }
    }

    /// Resolves when a pending will may be due: at the earliest due time, or when one
    /// is scheduled (look again then).
    pub(crate) async fn next_will_due(&self) {
        let wills = self.delayed_wills();
        let scheduled = wills.scheduled.notified();
        match wills.next_due() {
            Some(due) => {
                tokio::select! {
                    () = tokio::time::sleep_until(tokio::time::Instant::from_std(due)) => {}
                    () = scheduled => {}
                }
            }
            None => scheduled.await,
        }
    }
}

/// Saves the delayed will of `client_id` (due at `due`) in the durable state: as the
/// message it will be (its will delay is the due time now).
pub(crate) fn save_delayed_will(
    save: &mut dyn FnMut(Change<'_>) -> Result<(), StateError>,
    client_id: &str,
    will: &Will,
    due: Instant,
) -> Result<(), StateError> {
    let properties = forwarded_properties(will.properties.clone());
    save(Change::WillDelayed {
        client_id,
        will: SavedMessage {
            topic: &will.topic,
            payload: &will.payload,
            qos: will.qos,
            is_retained: will.retain,
            properties: &properties,
            expires_at: None,
        },
        due_at: wall_clock(due),
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use fleetwire_mqtt_codec::{Properties, QoS, TopicName};

    use super::*;

    fn pending(session: u64, due: Instant) -> PendingWill {
        PendingWill {
            will: Will {
                topic: TopicName::new("w").unwrap(),
                payload: Bytes::from_static(b"gone"),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: Properties::default(),
            },
            session: SessionId(session),
            due,
        }
    }

    #[test]
    fn wills_come_out_when_due_in_order() {
        let wills = DelayedWills::default();
        let now = Instant::now();
        let a = ClientId::new("a".into());
        let b = ClientId::new("b".into());
        wills.schedule(b.clone(), pending(2, now + Duration::from_secs(2)));
        wills.schedule(a.clone(), pending(1, now + Duration::from_secs(1)));
        assert_eq!(wills.next_due(), Some(now + Duration::from_secs(1)));
        assert!(wills.take_due(now).is_empty());
        let due = wills.take_due(now + Duration::from_secs(1));
        assert_eq!(
            due.iter().map(|(_, will)| will.session).collect::<Vec<_>>(),
            [SessionId(1)]
        );
        assert_eq!(wills.len(), 1);
        assert_eq!(wills.next_due(), Some(now + Duration::from_secs(2)));
    }

    #[test]
    fn a_will_is_taken_only_by_its_own_session_or_by_anyone() {
        let wills = DelayedWills::default();
        let now = Instant::now();
        let a = ClientId::new("a".into());
        wills.schedule(a.clone(), pending(1, now));
        assert!(wills.take(&a, Some(SessionId(2))).is_none());
        assert!(wills.take(&a, Some(SessionId(1))).is_some());
        assert_eq!((wills.len(), wills.next_due()), (0, None));
        wills.schedule(a.clone(), pending(3, now));
        assert!(wills.take(&a, None).is_some());
    }

    #[test]
    fn a_later_will_of_the_same_client_replaces_and_returns_the_earlier() {
        let wills = DelayedWills::default();
        let now = Instant::now();
        let a = ClientId::new("a".into());
        assert!(wills.schedule(a.clone(), pending(1, now)).is_none());
        let replaced = wills.schedule(a.clone(), pending(2, now + Duration::from_secs(5)));
        assert_eq!(replaced.map(|will| will.session), Some(SessionId(1)));
        assert_eq!(wills.next_due(), Some(now + Duration::from_secs(5)));
    }
}
