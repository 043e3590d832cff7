//! Which nodes are alive: every node says so every `BEAT` on `fleetwire.node.{id}.alive`
//! (core NATS; the payload is its id), and a node that was heard and then not for
//! `GONE_AFTER` is gone. What a gone node left (the wills of its open connections,
//! `wills.rs`) is taken care of by the others.
//!
//! Silence is all a node can see: a node cut off from NATS that long counts as gone too
//! (its clients' wills are published while they may still be connected to it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::subject::ClusterSubjects;

/// How often a node says it is alive.
const BEAT: Duration = Duration::from_secs(1);

/// How long a node may be silent before it counts as gone.
pub(crate) const GONE_AFTER: Duration = Duration::from_secs(10);

/// The other nodes heard from, and when last.
#[derive(Clone, Default)]
pub(crate) struct Nodes {
    heard: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Nodes {
    /// Starts saying that node `node` is alive and listening to the others; returns
    /// them and the ids of the nodes that go, as they go.
    pub(crate) async fn start(
        client: Client,
        subjects: &ClusterSubjects,
        node: &str,
    ) -> Result<(Nodes, mpsc::UnboundedReceiver<String>), async_nats::SubscribeError> {
        let nodes = Nodes::default();
        let mut beats = client.subscribe(subjects.every_node("alive")).await?;
        let heard = Arc::clone(&nodes.heard);
        tokio::spawn(async move {
            while let Some(beat) = beats.next().await {
                match std::str::from_utf8(&beat.payload) {
                    Ok(id) => {
                        heard.lock().insert(id.to_owned(), Instant::now());
                    }
                    Err(_) => {
                        tracing::debug!(subject = %beat.subject, "a node id that is not UTF-8, ignored")
                    }
                }
            }
        });
        let (gone, departures) = mpsc::unbounded_channel();
        let own = subjects.node(node, "alive");
        let id = Bytes::from(node.to_owned());
        let heard = Arc::clone(&nodes.heard);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(BEAT);
            loop {
                ticks.tick().await;
                if let Err(error) = client.publish(own.clone(), id.clone()).await {
                    tracing::debug!(%error, "cannot say this node is alive");
                }
                let silent = departed(&mut heard.lock(), Instant::now());
                for node in silent {
                    tracing::warn!(%node, "a node of the cluster is gone (silent for {GONE_AFTER:?})");
                    if gone.send(node).is_err() {
                        return;
                    }
                }
            }
        });
        Ok((nodes, departures))
    }

    /// When `node` was last heard from (`None`: not lately).
    pub(crate) fn last_heard(&self, node: &str) -> Option<Instant> {
        self.heard.lock().get(node).copied()
    }

    /// Whether `node` was heard from within `GONE_AFTER`.
    pub(crate) fn is_alive(&self, node: &str) -> bool {
        self.heard
            .lock()
            .get(node)
            .is_some_and(|at| at.elapsed() < GONE_AFTER)
    }
}

/// Removes from `heard` the nodes silent for `GONE_AFTER` at `now`: their ids.
fn departed(heard: &mut HashMap<String, Instant>, now: Instant) -> Vec<String> {
    let silent: Vec<String> = heard
        .iter()
        .filter(|(_, at)| now.saturating_duration_since(**at) >= GONE_AFTER)
        .map(|(node, _)| node.clone())
        .collect();
    for node in &silent {
        heard.remove(node);
    }
    silent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_gone_once_silent_for_long_enough_and_only_once() {
        let start = Instant::now();
        let mut heard = HashMap::from([
            ("a".to_owned(), start),
            ("b".to_owned(), start + Duration::from_secs(5)),
        ]);
        assert!(departed(&mut heard, start + GONE_AFTER - Duration::from_millis(1)).is_empty());
        assert_eq!(departed(&mut heard, start + GONE_AFTER), ["a"]);
        assert!(departed(&mut heard, start + GONE_AFTER).is_empty());
        assert_eq!(
            departed(&mut heard, start + GONE_AFTER + Duration::from_secs(5)),
            ["b"]
        );
        assert!(heard.is_empty());
    }
}
