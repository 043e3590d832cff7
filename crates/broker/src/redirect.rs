//! Server redirection (5.0 reason codes 0x9C "use another server" and 0x9D "server
//! moved", with a Server Reference): the broker sends its clients elsewhere, for
//! instance while a cluster drains a node.
//!
//! While a [`Redirection`] is set, every `CONNECT` is refused (5.0: `CONNACK` with the
//! reason code and the reference; 3.1.1, which cannot carry a reference: return code 3,
//! server unavailable) and the connected clients are closed the way
//! [`Broker::disconnect_user`] closes a user's: each attached session is marked revoked
//! and its reader kicked (a parked connection is resumed for it), and the reader, seeing
//! the redirection, tells a 5.0 client `DISCONNECT` with the reason code and the
//! reference. Wills are published as for any close the client did not ask for.

use std::sync::Arc;

use fleetwire_mqtt_codec::{Properties, ReasonCode};

use crate::broker::Broker;

/// Where the broker sends its clients instead of serving them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirection {
    /// The Server Reference 5.0 clients are given: the server to use instead, as the
    /// client will understand it (usually `host` or `host:port`; several may be listed,
    /// separated by spaces, MQTT 5.0 section 4.11).
    pub server_reference: String,
    /// Whether the move is for good (0x9D, server moved) or for now (0x9C, use another
    /// server).
    pub is_permanent: bool,
}

impl Redirection {
    /// The reason code of the `CONNACK` or `DISCONNECT` that redirects.
    pub(crate) fn reason_code(&self) -> ReasonCode {
        if self.is_permanent {
            ReasonCode::SERVER_MOVED
        } else {
            ReasonCode::USE_ANOTHER_SERVER
        }
    }

    /// The properties of that packet: the Server Reference.
    pub(crate) fn properties(&self) -> Properties {
        Properties {
            server_reference: Some(self.server_reference.clone()),
            ..Properties::default()
        }
    }
}

impl Broker {
    /// Sends clients to another server: from now on every `CONNECT` is refused, and
    /// every connected client is closed (see the module's documentation for what each
    /// protocol version is told). Returns how many connections were closed. A later
    /// call replaces the redirection; [`Broker::stop_redirecting`] ends it.
    pub fn redirect_all(&self, redirection: Redirection) -> usize {
        tracing::info!(
            server_reference = %redirection.server_reference,
            permanent = redirection.is_permanent,
            "redirecting clients to another server"
        );
        *self.redirection_slot().write() = Some(Arc::new(redirection));
        let mut closed = 0;
        for session in self.sessions() {
            let mut state = session.state.lock();
            if state.attachment.is_some() {
                state.is_revoked = true;
                if let Some(attachment) = &state.attachment {
                    attachment.kick();
                }
                closed += 1;
            }
        }
        closed
    }

    /// Serves clients again after [`Broker::redirect_all`].
    pub fn stop_redirecting(&self) {
        if self.redirection_slot().write().take().is_some() {
            tracing::info!("serving clients again");
        }
    }

    /// Where clients are sent instead, while [`Broker::redirect_all`] holds.
    pub fn redirection(&self) -> Option<Arc<Redirection>> {
        self.redirection_slot().read().clone()
    }
}
