//! Which node holds which client id, in a JetStream key-value bucket, and handing a
//! session over between nodes.
//!
//! The bucket `fleetwire_sessions` maps a client id (its key: [`keys::key`]) to the node
//! that holds its session. A client connecting to a node makes that node the holder
//! with a compare-and-set on the key's revision ([`Sessions::claim`]): of two nodes
//! claiming one id at once, one write fails and that node reads again, so two nodes
//! never both hold an id. The node that held it is then asked (a core NATS request on
//! `fleetwire.node.{node}.release`) to close the client's connection (5.0: 0x8E) and
//! hand its session over ([`Broker::release_session`]); its answer is the session's
//! state, which the claiming node adopts before it answers `CONNACK`.
//!
//! A holder that does not answer (dead: NATS says no one listens) cannot hand anything
//! over: the claiming node takes the session up from that node's copy of its state in
//! JetStream (`orphans.rs`), with its queue; if that node left none for the client id,
//! the client starts a new session (`CONNACK` says no session is present).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::kv;
use bytes::Bytes;
use fleetwire_broker::{Broker, Claim, Claimed, PeersError};
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::orphans::Orphans;
use crate::subject::ClusterSubjects;
use crate::{ClusterError, keys};

/// The bucket's name.
pub(crate) const BUCKET: &str = "fleetwire_sessions";

/// Compare-and-set attempts before a claim gives up (other nodes claimed the same id
/// meanwhile every time).
const ATTEMPTS: usize = 10;

/// How long a claim tries again while JetStream fails.
const CLAIM_WAIT: Duration = Duration::from_secs(5);

/// How long the node that held a session has to hand it over.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Client ids and their nodes: see the module's text.
pub(crate) struct Sessions {
    store: kv::Store,
    client: Client,
    subjects: ClusterSubjects,
    node: String,
    claiming: Arc<Claiming>,
    /// One claim or end at a time per client id on this node.
    busy: Busy,
    broker: Broker,
    /// Takes up the sessions of dead nodes.
    orphans: Arc<Orphans>,
}

/// Per-client-id locks: a session's end (its key freed) and a claim of the same client
/// id on this node never interleave, so the end cannot free a key a new connection of
/// this node has just found held here.
#[derive(Default)]
struct Busy(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Busy {
    async fn lock(&self, client_id: &str) -> BusyGuard<'_> {
        let lock = Arc::clone(self.0.lock().entry(client_id.to_owned()).or_default());
        let guard = lock.lock_owned().await;
        BusyGuard {
            busy: self,
            client_id: client_id.to_owned(),
            guard: Some(guard),
        }
    }
}

struct BusyGuard<'a> {
    busy: &'a Busy,
    client_id: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        let mut ids = self.busy.0.lock();
        drop(self.guard.take());
        // Only the map holds it (nobody waits): forget it.
        if ids
            .get(&self.client_id)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            ids.remove(&self.client_id);
        }
    }
}

/// The client ids this node is claiming (from the claim until the client is attached),
/// with how many connections claim each: a release request for one of them waits.
#[derive(Default)]
struct Claiming {
    ids: Mutex<HashMap<String, usize>>,
    done: Notify,
}

impl Claiming {
    fn hold(self: &Arc<Self>, client_id: &str) -> Hold {
        *self.ids.lock().entry(client_id.to_owned()).or_default() += 1;
        Hold {
            claiming: Arc::clone(self),
            client_id: client_id.to_owned(),
        }
    }

    /// Waits (at most `RELEASE_WAIT`) until no connection of this node is claiming
    /// `client_id`.
    async fn settled(&self, client_id: &str) {
        let _ = tokio::time::timeout(RELEASE_WAIT, async {
            loop {
                let done = self.done.notified();
                if !self.ids.lock().contains_key(client_id) {
                    return;
                }
                done.await;
            }
        })
        .await;
    }
}

/// Why this node could not become the holder of a client id.
enum NotHeld {
    /// Other nodes claimed it meanwhile, `ATTEMPTS` times in a row.
    Contended,
    /// JetStream failed (what, and its error).
    Failed(String),
}

/// A connection's claim of a client id, until it is attached (dropped).
struct Hold {
    claiming: Arc<Claiming>,
    client_id: String,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut ids = self.claiming.ids.lock();
        if let Some(count) = ids.get_mut(&self.client_id) {
            *count -= 1;
            if *count == 0 {
                ids.remove(&self.client_id);
            }
        }
        drop(ids);
        self.claiming.done.notify_waiters();
    }
}

/// How long a release request waits for a connection of this node that is claiming
/// the same client id to be attached (then closes it).
const RELEASE_WAIT: Duration = Duration::from_secs(5);

impl Sessions {
    /// Starts answering other nodes' release requests for `broker`'s sessions; `store`
    /// is the bucket.
    pub(crate) async fn start(
        store: kv::Store,
        client: Client,
        subjects: ClusterSubjects,
        node: &str,
        broker: Broker,
        orphans: Arc<Orphans>,
    ) -> Result<Arc<Sessions>, ClusterError> {
        let subject = subjects.node(node, "release");
        let mut requests =
            client
                .subscribe(subject)
                .await
                .map_err(|error| ClusterError::Subscribe {
                    what: "release requests",
                    detail: error.to_string(),
                })?;
        let answering = client.clone();
        let ended_broker = broker.clone();
        let claiming: Arc<Claiming> = Arc::default();
        let waiting = Arc::clone(&claiming);
        tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                let Some(reply) = request.reply else {
                    continue;
                };
                let Ok(client_id) = String::from_utf8(request.payload.to_vec()) else {
                    tracing::warn!("a release request for a client id that is not UTF-8");
                    continue;
                };
                let (broker, answering, waiting) =
                    (broker.clone(), answering.clone(), Arc::clone(&waiting));
                // Its own task: it may wait for a connection of this node to attach.
                tokio::spawn(async move {
                    waiting.settled(&client_id).await;
                    let state = broker.release_session(&client_id);
                    if let Err(error) = answering.publish(reply, state).await {
                        tracing::warn!(%error, "a released session could not be sent to the node that asked");
                    }
                });
            }
        });
        Ok(Arc::new(Sessions {
            store,
            client,
            subjects,
            node: node.to_owned(),
            claiming,
            busy: Busy::default(),
            broker: ended_broker,
            orphans,
        }))
    }

    /// The session of `client_id` ended here: frees its key if this node still holds
    /// it and no connection of this node took the client id again meanwhile (purged,
    /// expecting the revision read; the purge's marker goes after `keys::MARKER_TTL`), so that
    /// the bucket does not keep every client id ever seen (assigned ids, random ones).
    pub(crate) fn ended(self: &Arc<Self>, client_id: &str) {
        let (sessions, client_id) = (Arc::clone(self), client_id.to_owned());
        tokio::spawn(async move {
            let _busy = sessions.busy.lock(&client_id).await;
            let is_taken_again = sessions.claiming.ids.lock().contains_key(&client_id)
                || sessions.broker.has_session(&client_id);
            let Some(key) = keys::key(&client_id).filter(|_| !is_taken_again) else {
                return;
            };
            let entry = match sessions.store.entry(key.as_str()).await {
                Ok(Some(entry)) if entry.operation == kv::Operation::Put => entry,
                Ok(_) => return,
                Err(error) => {
                    tracing::debug!(%client_id, %error, "the key of an ended session stays");
                    return;
                }
            };
            if entry.value != sessions.node.as_bytes() {
                return;
            }
            if let Err(error) = keys::purge(&sessions.store, &key, Some(entry.revision)).await {
                tracing::debug!(%client_id, %error, "the key of an ended session stays");
            }
        });
    }

    /// Makes this node the holder of `client_id` if node `from` (gone) holds it: a hold
    /// that keeps other nodes' release requests for it waiting until dropped (once the
    /// session is adopted here), `None` if another node holds it.
    pub(crate) async fn take_from(
        &self,
        client_id: &str,
        from: &str,
    ) -> Result<Option<Box<dyn Send>>, String> {
        let Some(key) = keys::key(client_id) else {
            return Ok(None);
        };
        let hold = self.claiming.hold(client_id);
        let _busy = self.busy.lock(client_id).await;
        let entry = self
            .store
            .entry(key.as_str())
            .await
            .map_err(|error| error.to_string())?;
        let Some(entry) = entry.filter(|entry| {
            entry.operation == kv::Operation::Put && entry.value == from.as_bytes()
        }) else {
            return Ok(None);
        };
        match self
            .store
            .update(key.as_str(), Bytes::from(self.node.clone()), entry.revision)
            .await
        {
            Ok(_) => Ok(Some(Box::new(hold))),
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Whether this node is the one to take up every session of node `gone` (one node
    /// at a time: the one that creates its key `adopt.{node}`, until it calls
    /// [`Sessions::adopted`]): the key's revision if so.
    pub(crate) async fn wins_adoption(&self, gone: &str) -> Option<u64> {
        let key = adoption_key(gone)?;
        match self
            .store
            .create(&key, Bytes::from(self.node.clone()))
            .await
        {
            Ok(revision) => Some(revision),
            Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => None,
            Err(error) => {
                tracing::warn!(node = %gone, %error, "cannot tell which node takes up the sessions of a node that is gone");
                None
            }
        }
    }

    /// The sessions of node `gone` were taken up (`revision`: of its key).
    pub(crate) async fn adopted(&self, gone: &str, revision: u64) {
        let Some(key) = adoption_key(gone) else {
            return;
        };
        if let Err(error) = keys::purge(&self.store, &key, Some(revision)).await {
            tracing::warn!(node = %gone, %error, "the record of who takes up a gone node's sessions stays");
        }
    }

    /// At start: clears the record of a node taking up this node's sessions, if one
    /// was left (that node died meanwhile).
    pub(crate) async fn back(&self) {
        let Some(key) = adoption_key(&self.node) else {
            return;
        };
        let cleared = match self.store.entry(key.as_str()).await {
            Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                keys::purge(&self.store, &key, Some(entry.revision))
                    .await
                    .map_err(|error| error.to_string())
            }
            Ok(_) => Ok(()),
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = cleared {
            tracing::warn!(%error, "cannot clear the record that this node was taken for gone");
        }
    }

    /// The node holding `client_id` now (`None`: nobody), or why JetStream did not say.
    pub(crate) async fn holder_of(&self, client_id: &str) -> Result<Option<String>, String> {
        let Some(key) = keys::key(client_id) else {
            return Ok(None);
        };
        let entry = self
            .store
            .entry(key)
            .await
            .map_err(|error| error.to_string())?;
        Ok(entry
            .filter(|entry| entry.operation == kv::Operation::Put)
            .map(|entry| String::from_utf8_lossy(&entry.value).into_owned()))
    }

    /// The node holding `client_id` now (`None`: nobody, or JetStream did not answer).
    pub(crate) async fn holder(&self, client_id: &str) -> Option<String> {
        self.holder_of(client_id).await.ok().flatten()
    }

    /// At start: the sessions `broker` loaded from this node's disk that another node
    /// holds now (their clients reconnected there while this node was away) are
    /// dropped here; the others are held by this node.
    pub(crate) async fn reconcile(&self, broker: &Broker) -> Result<(), ClusterError> {
        let failed = |detail: String| ClusterError::JetStream {
            what: "the sessions bucket",
            detail,
        };
        let me = Bytes::from(self.node.clone());
        let (mut kept, mut dropped) = (0_u64, 0_u64);
        for client_id in broker.client_ids() {
            let Some(key) = keys::key(&client_id) else {
                continue;
            };
            let entry = self
                .store
                .entry(key.clone())
                .await
                .map_err(|error| failed(error.to_string()))?;
            match entry {
                Some(entry) if entry.operation == kv::Operation::Put && entry.value != me => {
                    broker.release_session(&client_id);
                    dropped += 1;
                }
                Some(entry) if entry.operation == kv::Operation::Put => kept += 1,
                _ => {
                    // Held by nobody: this node, unless another claimed it meanwhile
                    // (then that node asks this one to release it).
                    let _ = self.store.create(&key, me.clone()).await;
                    kept += 1;
                }
            }
        }
        if kept + dropped > 0 {
            tracing::info!(
                kept,
                dropped,
                "sessions on disk checked against the cluster"
            );
        }
        Ok(())
    }

    /// Makes this node the holder of `client_id`; if another node held it, asks it to
    /// release the session and returns its state. The claim holds the client id here
    /// until the returned hold is dropped (once the client is attached).
    pub(crate) async fn claim(&self, client_id: &str) -> Result<Claimed, PeersError> {
        let hold = self.claiming.hold(client_id);
        let busy = self.busy.lock(client_id).await;
        let claim = self.claim_id(client_id).await?;
        drop(busy);
        Ok(Claimed {
            claim,
            hold: Box::new(hold),
        })
    }

    async fn claim_id(&self, client_id: &str) -> Result<Claim, PeersError> {
        let key = keys::key(client_id).ok_or_else(|| {
            PeersError(format!(
                "client id of {} bytes: too long for the cluster",
                client_id.len()
            ))
        })?;
        // JetStream may be briefly unavailable (a stream leader being elected, a NATS
        // server going away): the claim tries again for a while before it fails.
        let deadline = Instant::now() + CLAIM_WAIT;
        let mut pause = Duration::from_millis(50);
        // A client id with no session here is most likely held by nobody (ended
        // sessions free theirs): try creating its key first, one round trip. One with a
        // session here is most likely held here: read first.
        let is_new = !self.broker.has_session(client_id);
        let holder = loop {
            match self.hold(&key, is_new).await {
                Ok(holder) => break holder,
                Err(NotHeld::Contended) => {
                    return Err(PeersError(format!(
                        "client id {client_id:?} claimed by other nodes {ATTEMPTS} times in a row"
                    )));
                }
                Err(NotHeld::Failed(error)) if Instant::now() + pause < deadline => {
                    tracing::debug!(%client_id, %error, "cannot claim the client id yet: trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(NotHeld::Failed(error)) => {
                    return Err(PeersError(format!(
                        "cannot claim client id {client_id:?}: {error}"
                    )));
                }
            }
        };
        match holder {
            None => Ok(Claim::Here),
            Some(node) => self.release_from(&node, client_id).await,
        }
    }

    /// Makes this node the holder of `key`: the node that held it before, if another.
    /// (`create_first`: try creating the key before reading it.)
    async fn hold(&self, key: &str, create_first: bool) -> Result<Option<String>, NotHeld> {
        let me = Bytes::from(self.node.clone());
        let failed =
            |what: &str, error: &dyn std::fmt::Display| NotHeld::Failed(format!("{what}: {error}"));
        if create_first {
            match self.store.create(key, me.clone()).await {
                Ok(_) => return Ok(None),
                Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(error) => return Err(failed("cannot hold it", &error)),
            }
        }
        for _ in 0..ATTEMPTS {
            let entry = self
                .store
                .entry(key)
                .await
                .map_err(|error| failed("cannot read its holder", &error))?;
            let holder = match entry {
                Some(entry) if entry.operation == kv::Operation::Put => entry,
                _ => match self.store.create(key, me.clone()).await {
                    Ok(_) => return Ok(None),
                    Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => continue,
                    Err(error) => return Err(failed("cannot hold it", &error)),
                },
            };
            if holder.value == me {
                return Ok(None);
            }
            match self.store.update(key, me.clone(), holder.revision).await {
                Ok(_) => return Ok(Some(String::from_utf8_lossy(&holder.value).into_owned())),
                Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(error) => return Err(failed("cannot take it over", &error)),
            }
        }
        Err(NotHeld::Contended)
    }

    /// Asks `node` to release the session of `client_id`.
    async fn release_from(&self, node: &str, client_id: &str) -> Result<Claim, PeersError> {
        let subject = self.subjects.node(node, "release");
        let request = self
            .client
            .request(subject, Bytes::copy_from_slice(client_id.as_bytes()));
        match tokio::time::timeout(RELEASE_TIMEOUT, request).await {
            Ok(Ok(answer)) => {
                tracing::debug!(%client_id, %node, bytes = answer.payload.len(), "session taken over from another node");
                Ok(Claim::Moved(answer.payload))
            }
            Ok(Err(error)) if error.kind() == async_nats::RequestErrorKind::NoResponders => {
                if self.orphans.take(node, client_id).await? {
                    Ok(Claim::Here)
                } else {
                    tracing::info!(%client_id, %node, "the node that held this client id is gone and left no session for it: a new session starts");
                    Ok(Claim::Moved(Bytes::new()))
                }
            }
            Ok(Err(error)) => Err(PeersError(format!(
                "node {node} did not release client {client_id:?}: {error}"
            ))),
            Err(_) => Err(PeersError(format!(
                "node {node} did not release client {client_id:?} within {RELEASE_TIMEOUT:?}"
            ))),
        }
    }
}

/// The key of the sessions bucket that says who takes up the sessions of node `node`:
/// `adopt.` and the node id escaped as a client id's key is (so no client id's key,
/// which holds no `.`, is one).
fn adoption_key(node: &str) -> Option<String> {
    Some(format!("adopt.{}", keys::key(node)?))
}
