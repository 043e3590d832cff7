//! The reader's side of the ingest seam: the connection's [`Collector`], and the
//! acknowledgements that wait for its verdicts. Messages are offered as they are
//! decoded; at the end of each read they are settled together, and each verdict fixes
//! its message's `PUBACK` or `PUBREC` in the reader's outbox before it is sent.

use std::sync::Arc;

use fleetwire_mqtt_codec::{Packet, PacketId, Publish, QoS, ReasonCode};

use super::{Closed, Connection};
use crate::auth::Access;
use crate::broker::Broker;
use crate::ingest::{Collector, Hooks, Inbound, Settled, Verdict};

/// What the ingest has of one connection: its collector, and the messages it kept
/// since the last settlement.
pub(super) struct Settlement {
    /// Collects this connection's messages, if the hooks have an ingest.
    collector: Option<Box<dyn Collector>>,
    /// For each message the collector kept since the last settlement, in order: where
    /// its acknowledgement waits in the outbox (`None` for QoS 0).
    waiting: Vec<Option<PendingAck>>,
    /// An anonymous client that does not act as a user yet: the ingest may name one.
    may_act_as_user: bool,
}

/// An acknowledgement held back until the ingest has judged its message.
struct PendingAck {
    /// Index of the `PUBACK` or `PUBREC` in the outbox.
    position: usize,
    packet_id: PacketId,
    qos: QoS,
}

impl Settlement {
    /// The settlement of a connection that starts or resumes, with a fresh collector.
    pub(super) fn new(broker: &Broker, hooks: &Hooks, connection: &Connection) -> Settlement {
        // A parked connection comes back here: it keeps the user it acts as.
        let may_act_as_user = match connection.access {
            Access::Full => !broker.is_acting_as_user(connection.generation),
            Access::User(_) => false,
        };
        Settlement {
            collector: hooks.ingest.as_ref().map(|ingest| ingest.collector()),
            waiting: Vec::new(),
            may_act_as_user,
        }
    }

    /// Whether kept messages wait for their verdicts.
    pub(super) fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Offers a message of `user` to the collector; whether it kept it. For QoS 1/2,
    /// `acknowledgement` is its packet id and where its acknowledgement goes in the
    /// outbox.
    pub(super) fn offer(
        &mut self,
        publish: &Publish,
        user: Option<&Arc<str>>,
        acknowledgement: Option<(PacketId, usize)>,
    ) -> bool {
        let Some(collector) = &mut self.collector else {
            return false;
        };
        let is_kept = collector.offer(Inbound {
            topic: &publish.topic,
            payload: &publish.payload,
            qos: publish.qos,
            user,
        });
        if is_kept {
            self.waiting
                .push(acknowledgement.map(|(packet_id, position)| PendingAck {
                    position,
                    packet_id,
                    qos: publish.qos,
                }));
        }
        is_kept
    }

    /// Hands the kept messages to the ingest, waits for the verdicts, and fixes their
    /// acknowledgements in `outbox`. Fails only for a 3.1.1 client whose message could
    /// not be stored: its acknowledgement is removed, and the connection must close.
    pub(super) async fn settle(
        &mut self,
        broker: &Broker,
        hooks: &Hooks,
        connection: &Connection,
        outbox: &mut Vec<Packet>,
    ) -> Result<(), Closed> {
        let Some(collector) = &mut self.collector else {
            self.waiting.clear();
            return Ok(());
        };
        let count = self.waiting.len();
        let Settled {
            verdicts,
            acting_as,
        } = collector.settle().await;
        // An anonymous client whose message the ingest took counts, from now on, as a
        // connection of the user the ingest names (only the first one).
        if let (true, Some(user)) = (self.may_act_as_user, acting_as) {
            broker.act_as(&user, &connection.session, connection.generation, hooks);
            self.may_act_as_user = false;
        }
        let waiting = std::mem::take(&mut self.waiting);
        let is_v5 = connection.version.is_v5();
        let mut failed: Vec<usize> = Vec::new();
        for (index, ack) in waiting.into_iter().enumerate() {
            let verdict = verdicts.get(index).unwrap_or(&Verdict::Failed);
            let Some(ack) = ack else { continue };
            let reason = match verdict {
                Verdict::Accepted => continue,
                Verdict::Invalid if is_v5 => ReasonCode::PAYLOAD_FORMAT_INVALID,
                Verdict::Invalid => continue,
                Verdict::Failed => {
                    if ack.qos == QoS::ExactlyOnce {
                        // Not received after all: a resent PUBLISH must be taken again.
                        connection
                            .session
                            .state
                            .lock()
                            .incoming_qos2
                            .retain(|id| *id != ack.packet_id);
                    }
                    if !is_v5 {
                        failed.push(ack.position);
                        continue;
                    }
                    ReasonCode::UNSPECIFIED_ERROR
                }
            };
            match outbox.get_mut(ack.position) {
                Some(Packet::PubAck(puback)) => puback.reason = reason,
                Some(Packet::PubRec(pubrec)) => pubrec.reason = reason,
                _ => {}
            }
        }
        debug_assert!(verdicts.len() == count, "one verdict per message");
        if failed.is_empty() {
            return Ok(());
        }
        for position in failed.into_iter().rev() {
            outbox.remove(position);
        }
        Err(Closed::IngestFailed)
    }
}
