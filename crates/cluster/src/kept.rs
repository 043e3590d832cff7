//! What the cluster keeps in JetStream (the stream of QoS 1/2 messages, the copies of
//! the nodes' broker state, the buckets of retained messages, of client ids and of
//! wills), and on how many NATS servers.
//!
//! Each is kept on as many servers as the cluster has, three at most (`MAX_REPLICAS`),
//! counting, when it is created, the servers the node's NATS server told it about. A
//! node started together with its NATS servers (as Kubernetes does) may find JetStream
//! not ready yet: no meta leader, or a server known but not in the meta group yet ("no
//! suitable peers for placement"). It then tries again every second, saying why, for
//! `READY_WAIT` before it gives up. A cluster that started with a server down, or grew,
//! gets its replicas raised once the servers are there: every `RAISE_EVERY` each node
//! asks JetStream for `MAX_REPLICAS` of what has fewer (or as many as it takes) (the NATS client does not follow
//! the servers joining, so the node cannot count them; JetStream refuses while it has
//! too few servers, and that is only logged at debug level). Replicas are never
//! lowered: a server that is down is expected back, and JetStream serves without it.

use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::stream::{self, Stream};
use async_nats::jetstream::{Context, kv};
use tokio::time::Instant;

use crate::subject::ClusterSubjects;
use crate::{ClusterError, durable, keys, retained, sessions, state, wills};

/// Replicas of what the cluster keeps, at most (and at most as many as there are NATS
/// servers).
pub(crate) const MAX_REPLICAS: usize = 3;

/// How long a starting node waits for JetStream to be ready.
const READY_WAIT: Duration = Duration::from_secs(30);

/// How often a node checks whether the replicas can be raised.
const RAISE_EVERY: Duration = Duration::from_secs(10);

/// The stream and buckets, open.
pub(crate) struct Kept {
    pub(crate) messages: Stream,
    /// The copies of the nodes' broker state.
    pub(crate) states: Stream,
    pub(crate) retained: kv::Store,
    pub(crate) sessions: kv::Store,
    pub(crate) wills: kv::Store,
    /// Replicas wanted when they were opened.
    pub(crate) replicas: usize,
}

impl Kept {
    /// Opens the stream and buckets (creating those missing), waiting for JetStream to
    /// be ready, and keeps raising their replicas as NATS servers join.
    pub(crate) async fn open(
        jetstream: &Context,
        client: &Client,
        subjects: &ClusterSubjects,
    ) -> Result<Kept, ClusterError> {
        let deadline = Instant::now() + READY_WAIT;
        let kept = loop {
            let replicas = servers(client).min(MAX_REPLICAS);
            match Kept::try_open(jetstream, subjects, replicas).await {
                Ok(kept) => break kept,
                Err(error) if Instant::now() < deadline => {
                    tracing::warn!(%error, "JetStream is not ready: trying again in a second");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(error) => return Err(error),
            }
        };
        if kept.replicas < MAX_REPLICAS {
            tracing::info!(
                replicas = kept.replicas,
                "the cluster's state is kept on fewer NATS servers than {MAX_REPLICAS}: \
                 raised once more servers are there"
            );
        }
        let jetstream = jetstream.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RAISE_EVERY).await;
                raise(&jetstream, MAX_REPLICAS).await;
            }
        });
        Ok(kept)
    }

    async fn try_open(
        jetstream: &Context,
        subjects: &ClusterSubjects,
        replicas: usize,
    ) -> Result<Kept, ClusterError> {
        Ok(Kept {
            messages: open_stream(
                jetstream,
                durable::config(subjects, replicas),
                durable::WHAT,
            )
            .await?,
            states: open_stream(jetstream, state::config(subjects, replicas), state::WHAT).await?,
            retained: keys::bucket(
                jetstream,
                retained::BUCKET,
                "Fleetwire: retained MQTT messages by topic",
                replicas,
                false,
                retained::WHAT,
            )
            .await?,
            sessions: keys::bucket(
                jetstream,
                sessions::BUCKET,
                "Fleetwire: the node holding each MQTT client id",
                replicas,
                true,
                "the sessions bucket",
            )
            .await?,
            wills: keys::bucket(
                jetstream,
                wills::BUCKET,
                "Fleetwire: the wills of the connections open on each node",
                replicas,
                true,
                "the wills bucket",
            )
            .await?,
            replicas,
        })
    }
}

/// Opens the stream `config` names, or creates it so.
async fn open_stream(
    jetstream: &Context,
    config: stream::Config,
    what: &'static str,
) -> Result<Stream, ClusterError> {
    jetstream
        .get_or_create_stream(config)
        .await
        .map_err(|error| ClusterError::JetStream {
            what,
            detail: error.to_string(),
        })
}

/// The servers of the NATS cluster `client` is connected to, as far as the server it
/// talks to knows (itself included; they gossip their client URLs).
fn servers(client: &Client) -> usize {
    let mut urls = client.server_info().connect_urls;
    urls.sort();
    urls.dedup();
    urls.len().max(1)
}

/// The JetStream streams behind what the cluster keeps (a bucket `b` is `KV_b`).
fn stream_names() -> [String; 5] {
    [
        durable::STREAM.to_owned(),
        state::STREAM.to_owned(),
        format!("KV_{}", retained::BUCKET),
        format!("KV_{}", sessions::BUCKET),
        format!("KV_{}", wills::BUCKET),
    ]
}

/// Raises the replicas of every stream kept on fewer than `replicas` servers (what
/// fails is tried again at the next check).
async fn raise(jetstream: &Context, replicas: usize) {
    for name in stream_names() {
        if let Err(error) = raise_one(jetstream, &name, replicas).await {
            tracing::debug!(stream = %name, replicas, %error, "cannot raise the replicas yet");
        }
    }
}

/// Raises the replicas of stream `name` to `replicas`, or as close as JetStream takes.
async fn raise_one(jetstream: &Context, name: &str, replicas: usize) -> Result<(), String> {
    let stream = jetstream
        .get_stream(name)
        .await
        .map_err(|error| error.to_string())?;
    let config = &stream.cached_info().config;
    let from = config.num_replicas;
    let mut refused = None;
    for to in (from + 1..=replicas).rev() {
        let raised = stream::Config {
            num_replicas: to,
            ..config.clone()
        };
        match jetstream.update_stream(raised).await {
            Ok(_) => {
                tracing::info!(stream = %name, from, to, "JetStream replicas raised");
                return Ok(());
            }
            Err(error) => refused = Some(error.to_string()),
        }
    }
    refused.map_or(Ok(()), Err)
}
