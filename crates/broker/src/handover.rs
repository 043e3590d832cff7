//! Handing a client's session from one node of a cluster to another: the node that
//! held it releases it ([`Broker::release_session`]: its connection is closed as taken
//! over, 5.0 `DISCONNECT` 0x8E, and its state described), the node the client connects
//! to adopts it ([`Broker::adopt_session`]) before attaching the client. Which node holds
//! which client id is the peers' business ([`Peers::claim`]).
//!
//! [`Peers::claim`]: crate::Peers::claim

use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::broker::Broker;
use crate::durable::{Change, Ticket};

impl Broker {
    /// Gives up the session of `client_id` to another node: closes its connection (a
    /// 5.0 client is told 0x8E, session taken over), and removes the session here
    /// without ending it (no will is published, its delayed will goes with it).
    /// Returns its state for [`Broker::adopt_session`], empty if it was not persistent
    /// or there was none.
    pub fn release_session(&self, client_id: &str) -> Bytes {
        let Some(session) = self.session(client_id) else {
            return Bytes::new();
        };
        let is_persistent = {
            let mut state = session.state.lock();
            if let Some(old) = state.attachment.take() {
                old.detach_signal();
            }
            state.is_persistent
        };
        let described = if is_persistent {
            crate::restore::describe_session(self, &session)
        } else {
            Vec::new()
        };
        // Gone from here: from the table, the subscriptions (the peers hear of it) and
        // this node's durable state; its delayed will travels in `described`.
        self.remove_session(&session);
        if session.is_saved.swap(false, Ordering::Relaxed) {
            self.note(Change::SessionEnded {
                client_id: session.client_id.as_str(),
            });
        }
        self.settle_delayed_will(&session);
        tracing::debug!(%client_id, persistent = is_persistent, "session released to another node");
        Bytes::from(described)
    }

    /// The client ids of the sessions held here (connected or not).
    pub fn client_ids(&self) -> Vec<String> {
        self.all_sessions()
            .iter()
            .map(|session| session.client_id.as_str().to_owned())
            .collect()
    }

    /// Whether a session of `client_id` is here (connected or not).
    pub fn has_session(&self, client_id: &str) -> bool {
        self.session(client_id).is_some()
    }

    /// Takes over a session another node released ([`Broker::release_session`]), before
    /// its client is attached here, and saves it in this node's durable state: the
    /// returned ticket is to be waited for before the client is answered.
    pub fn adopt_session(&self, state: &[u8]) -> Result<Option<Ticket>, String> {
        if state.is_empty() {
            return Ok(None);
        }
        crate::restore::adopt(self, state)
    }
}
