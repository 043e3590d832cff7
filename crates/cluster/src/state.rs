//! Each node's broker state, copied to JetStream, so that the sessions of a node that
//! dies live on: another node reads the copy and takes them up (`orphans.rs`).
//!
//! [`ReplicatedState`] is the broker's [`StateStore`] in cluster mode. Every change goes to
//! the store on this node's disk as before and, once the node joined its cluster, as a
//! record (the embedded store's framing: length, checksum, fields) to the stream
//! `FLEETWIRE_STATE`, subject `fleetwire.state.{node}.log`, through a writer of its own
//! (ordered, pipelined, batched). A change is durable once both have it, so a `PUBACK`
//! waits for both. Retained messages are left out: the cluster keeps them in their own
//! bucket.
//!
//! Snapshots follow the embedded store's (and one is written when the node joins): a
//! snapshot `g` writes `g` on `.mark` (in the log's order: what is logged after the
//! mark follows the snapshot), its records on `.snap` (each after `g`, 8 bytes), then `g`
//! on `.done` once they are all kept; then everything of the log and of older
//! snapshots before the mark is purged. Reading a copy ([`read`]) takes the last
//! complete snapshot and the log after its mark (or the whole log before the first).
//!
//! A write JetStream refused leaves a gap in the copy: from then on nothing is durable
//! (publishers are not acknowledged) until the next snapshot, asked for at once, is
//! written.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::Context;
use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use bytes::Bytes;
use fleetwire_broker::{
    BoxFuture, Change, SnapshotWriter, StateError, StateStore, Ticket, decode_records,
    encode_record,
};
use futures_util::StreamExt;
use parking_lot::Mutex;

use crate::subject::ClusterSubjects;
use crate::writer::{Write, Writer, batched};

/// The stream's name.
pub(crate) const STREAM: &str = "FLEETWIRE_STATE";

pub(crate) const WHAT: &str = "the copies of the nodes' broker state";

/// JetStream messages of the copy not acknowledged yet, at most: few, so that the
/// changes saved meanwhile go in batches (a change is small; JetStream's cost is per
/// message).
const IN_FLIGHT: usize = 8;

/// How long a snapshot waits for JetStream to keep it.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(30);

/// How long a stopping node waits for its last changes to be copied.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// How long reading a copy waits for its next message.
const READ_WAIT: Duration = Duration::from_secs(10);

/// The stream as it is created, with `replicas` (see `kept.rs`).
pub(crate) fn config(subjects: &ClusterSubjects, replicas: usize) -> stream::Config {
    stream::Config {
        name: STREAM.to_owned(),
        description: Some("Fleetwire: each node's broker state (sessions, queues)".to_owned()),
        subjects: vec![subjects.every_state()],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        num_replicas: replicas,
        ..stream::Config::default()
    }
}

/// The subjects of one node's copy.
#[derive(Clone)]
struct Subjects {
    log: String,
    snap: String,
    mark: String,
    done: String,
}

impl Subjects {
    fn new(subjects: &ClusterSubjects, node: &str) -> Subjects {
        Subjects {
            log: subjects.state(node, "log"),
            snap: subjects.state(node, "snap"),
            mark: subjects.state(node, "mark"),
            done: subjects.state(node, "done"),
        }
    }
}

/// The broker's state on this node's disk and, once the node joined, copied to
/// JetStream: see the module's text.
pub struct ReplicatedState {
    inner: Arc<dyn StateStore>,
    copy: OnceLock<Arc<Copy>>,
    /// Saves and a snapshot's start, in one order on both sides.
    order: Mutex<()>,
}

/// Where the copy goes.
struct Copy {
    writer: Writer,
    stream: stream::Stream,
    subjects: Subjects,
    runtime: tokio::runtime::Handle,
    /// Failed writes counted when the last snapshot written began: more are a gap.
    healed: AtomicU64,
    last_generation: AtomicU64,
}

impl Copy {
    fn has_gap(&self) -> bool {
        self.writer.failures() > self.healed.load(Ordering::Acquire)
    }

    fn write(&self, subject: &str, payload: Vec<u8>, is_batchable: bool) {
        self.writer.write(Write {
            subject: subject.to_owned(),
            headers: None,
            payload: Bytes::from(payload),
            is_batchable,
        });
    }

    /// A generation above every earlier one of this node (time-based: also across
    /// restarts).
    fn next_generation(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        let mut last = self.last_generation.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self.last_generation.compare_exchange(
                last,
                next,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// Waits until every write queued so far is settled; fails if one failed since
    /// `failures` were counted.
    async fn settled(&self, failures: u64) -> Result<(), String> {
        if let Some(last) = self.writer.last() {
            let _ = self.writer.durable(last).await;
        }
        let now = self.writer.failures();
        if now > failures {
            return Err(format!("{} writes to JetStream failed", now - failures));
        }
        Ok(())
    }
}

fn unavailable(detail: impl std::fmt::Display) -> StateError {
    StateError::Unavailable(format!("the cluster's copy of the broker state: {detail}"))
}

/// Retained messages live in the cluster's own bucket.
fn is_copied(change: &Change<'_>) -> bool {
    !matches!(
        change,
        Change::Retained { .. } | Change::RetainedCleared { .. }
    )
}

impl ReplicatedState {
    /// The state kept in `inner` (the embedded store), and copied once [`join`]ed.
    ///
    /// [`join`]: crate::join
    pub fn new(inner: Arc<dyn StateStore>) -> Arc<ReplicatedState> {
        Arc::new(ReplicatedState {
            inner,
            copy: OnceLock::new(),
            order: Mutex::new(()),
        })
    }

    /// Starts copying to `stream` as node `node` (the caller then writes a snapshot).
    pub(crate) fn attach(
        &self,
        jetstream: Context,
        stream: stream::Stream,
        subjects: &ClusterSubjects,
        node: &str,
    ) {
        let copy = Arc::new(Copy {
            writer: Writer::start(jetstream, IN_FLIGHT),
            stream,
            subjects: Subjects::new(subjects, node),
            runtime: tokio::runtime::Handle::current(),
            healed: AtomicU64::new(0),
            last_generation: AtomicU64::new(0),
        });
        let _order = self.order.lock();
        if self.copy.set(copy).is_err() {
            tracing::warn!("the broker state is copied to the cluster already");
        }
    }
}

impl StateStore for ReplicatedState {
    fn save(&self, change: Change<'_>, is_waited: bool) -> Result<Ticket, StateError> {
        let Some(copy) = self.copy.get().filter(|_| is_copied(&change)) else {
            return self.inner.save(change, is_waited);
        };
        let mut record = Vec::with_capacity(64);
        encode_record(&change, &mut record);
        let _order = self.order.lock();
        let ticket = self.inner.save(change, is_waited)?;
        copy.write(&copy.subjects.log, record, true);
        Ok(ticket)
    }

    fn durable(&self, ticket: Ticket) -> BoxFuture<'static, Result<(), StateError>> {
        let here = self.inner.durable(ticket);
        let Some(copy) = self.copy.get().cloned() else {
            return here;
        };
        // Every write queued so far: the ticket's own was queued when it was given.
        let there = copy.writer.last().map(|last| copy.writer.durable(last));
        Box::pin(async move {
            here.await?;
            if let Some(there) = there {
                there.await.map_err(|error| unavailable(error.0))?;
            }
            if copy.has_gap() {
                return Err(unavailable(
                    "JetStream refused a change: nothing is durable until the next snapshot",
                ));
            }
            Ok(())
        })
    }

    fn load(
        &self,
        apply: &mut dyn FnMut(Change<'_>) -> Result<(), String>,
    ) -> Result<(), StateError> {
        self.inner.load(apply)
    }

    fn wants_snapshot(&self) -> bool {
        self.inner.wants_snapshot() || self.copy.get().is_some_and(|copy| copy.has_gap())
    }

    fn snapshot(&self) -> Result<Box<dyn SnapshotWriter>, StateError> {
        let _order = self.order.lock();
        let inner = self.inner.snapshot()?;
        let Some(copy) = self.copy.get() else {
            return Ok(inner);
        };
        let generation = copy.next_generation();
        let failures = copy.writer.failures();
        copy.write(
            &copy.subjects.mark,
            generation.to_le_bytes().to_vec(),
            false,
        );
        Ok(Box::new(SnapshotCopy {
            inner,
            copy: Arc::clone(copy),
            generation,
            failures,
        }))
    }

    fn shutdown(&self) -> Result<(), StateError> {
        self.inner.shutdown()?;
        if let Some(copy) = self.copy.get() {
            let settled = copy.runtime.block_on(tokio::time::timeout(
                SHUTDOWN_WAIT,
                copy.settled(copy.writer.failures()),
            ));
            if !matches!(settled, Ok(Ok(()))) {
                tracing::warn!(
                    "the last changes of the broker state may not be in the cluster's copy"
                );
            }
        }
        Ok(())
    }
}

/// A snapshot written to both sides.
struct SnapshotCopy {
    inner: Box<dyn SnapshotWriter>,
    copy: Arc<Copy>,
    generation: u64,
    /// Failed writes when it began.
    failures: u64,
}

impl SnapshotWriter for SnapshotCopy {
    fn add(&mut self, change: Change<'_>) -> Result<(), StateError> {
        self.inner.add(change)?;
        if is_copied(&change) {
            let mut record = self.generation.to_le_bytes().to_vec();
            encode_record(&change, &mut record);
            self.copy.write(&self.copy.subjects.snap, record, true);
        }
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<(), StateError> {
        self.inner.finish()?;
        let copy = &self.copy;
        let generation = self.generation;
        let failures = self.failures;
        copy.runtime.block_on(async {
            let finish = async {
                copy.settled(failures).await?;
                copy.write(
                    &copy.subjects.done,
                    generation.to_le_bytes().to_vec(),
                    false,
                );
                copy.settled(failures).await?;
                // What the snapshot replaces: the log and older snapshots before its mark.
                let mark = copy
                    .stream
                    .get_last_raw_message_by_subject(&copy.subjects.mark)
                    .await
                    .map_err(|error| format!("reading the snapshot's mark: {error}"))?;
                if mark.payload.as_ref() != generation.to_le_bytes() {
                    return Err("another snapshot began meanwhile".to_owned());
                }
                for subject in [&copy.subjects.log, &copy.subjects.snap] {
                    copy.stream
                        .purge()
                        .filter(subject.as_str())
                        .sequence(mark.sequence)
                        .await
                        .map_err(|error| format!("purging {subject}: {error}"))?;
                }
                for subject in [&copy.subjects.mark, &copy.subjects.done] {
                    copy.stream
                        .purge()
                        .filter(subject.as_str())
                        .keep(1)
                        .await
                        .map_err(|error| format!("purging {subject}: {error}"))?;
                }
                Ok(())
            };
            match tokio::time::timeout(SNAPSHOT_WAIT, finish).await {
                Ok(Ok(())) => {
                    copy.healed.fetch_max(failures, Ordering::AcqRel);
                    Ok(())
                }
                Ok(Err(error)) => Err(unavailable(error)),
                Err(_) => Err(unavailable(format!(
                    "the snapshot was not kept within {SNAPSHOT_WAIT:?}"
                ))),
            }
        })
    }
}

/// Node `node`'s copy of its broker state, as framed records to load in order
/// ([`Replayed`]): its last complete snapshot and what it logged after, or its whole log
/// before its first snapshot. Empty if the node left none.
pub(crate) async fn read(
    stream: &stream::Stream,
    subjects: &ClusterSubjects,
    node: &str,
) -> Result<Vec<u8>, String> {
    let names = Subjects::new(subjects, node);
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: subjects.node_state(node),
            deliver_policy: DeliverPolicy::All,
            ..pull::OrderedConfig::default()
        })
        .await
        .map_err(|error| format!("cannot read node {node}'s state: {error}"))?;
    let mut pending = consumer.cached_info().num_pending;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|error| format!("cannot read node {node}'s state: {error}"))?;
    let mut pieces = Pieces::default();
    while pending > 0 {
        let message = match tokio::time::timeout(READ_WAIT, messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(error))) => return Err(format!("reading node {node}'s state: {error}")),
            Ok(None) | Err(_) => return Err(format!("node {node}'s state cut short")),
        };
        let info = message
            .info()
            .map_err(|error| format!("reading node {node}'s state: {error}"))?;
        pending = info.pending;
        let subject = message.subject.as_str();
        let kind = if subject == names.log {
            Kind::Log
        } else if subject == names.snap {
            Kind::Snap
        } else if subject == names.mark {
            Kind::Mark
        } else if subject == names.done {
            Kind::Done
        } else {
            continue;
        };
        pieces
            .add(kind, info.stream_sequence, &message.payload)
            .map_err(|detail| format!("node {node}'s state: {detail}"))?;
    }
    pieces
        .records()
        .map_err(|detail| format!("node {node}'s state: {detail}"))
}

/// Which part of a copy a message is.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Log,
    Snap,
    Mark,
    Done,
}

/// A node's copy as read, in stream order.
#[derive(Default)]
struct Pieces {
    /// (stream sequence, batched records) of the log.
    log: Vec<(u64, Bytes)>,
    /// (generation, record) of snapshots.
    snapshots: Vec<(u64, Bytes)>,
    /// (generation, stream sequence) of snapshots' marks.
    marks: Vec<(u64, u64)>,
    /// The last complete snapshot's generation.
    done: Option<u64>,
}

impl Pieces {
    fn add(&mut self, kind: Kind, sequence: u64, payload: &Bytes) -> Result<(), String> {
        let generation = |bytes: &[u8]| {
            bytes
                .get(..8)
                .and_then(|bytes| bytes.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| "a snapshot's generation cut short".to_owned())
        };
        match kind {
            Kind::Log => self.log.push((sequence, payload.clone())),
            Kind::Snap => {
                for record in batched(payload) {
                    let record = record.ok_or_else(|| "a snapshot cut short".to_owned())?;
                    self.snapshots
                        .push((generation(&record)?, record.slice(8..)));
                }
            }
            Kind::Mark => self.marks.push((generation(payload)?, sequence)),
            Kind::Done => self.done = Some(generation(payload)?),
        }
        Ok(())
    }

    /// The records to load: the last complete snapshot's, then the log after its mark
    /// (the whole log before any snapshot completed).
    fn records(&self) -> Result<Vec<u8>, String> {
        let mut records = Vec::new();
        let from = match self.done {
            Some(generation) => {
                let Some(&(_, mark)) = self.marks.iter().find(|(marked, _)| *marked == generation)
                else {
                    return Err("the last snapshot has no mark".to_owned());
                };
                for (_, record) in self.snapshots.iter().filter(|(of, _)| *of == generation) {
                    records.extend_from_slice(record);
                }
                mark
            }
            None => 0,
        };
        for (_, payload) in self.log.iter().filter(|(sequence, _)| *sequence > from) {
            for write in batched(payload) {
                let write = write.ok_or_else(|| "the log cut short".to_owned())?;
                records.extend_from_slice(&write);
            }
        }
        Ok(records)
    }
}

/// A state that is read once and then kept nowhere: the scratch broker that holds a
/// dead node's sessions until they are taken up (`orphans.rs`).
pub(crate) struct Replayed(pub(crate) Vec<u8>);

impl StateStore for Replayed {
    fn save(&self, _change: Change<'_>, _is_waited: bool) -> Result<Ticket, StateError> {
        Ok(Ticket(0))
    }

    fn durable(&self, _ticket: Ticket) -> BoxFuture<'static, Result<(), StateError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn load(
        &self,
        apply: &mut dyn FnMut(Change<'_>) -> Result<(), String>,
    ) -> Result<(), StateError> {
        decode_records(&self.0, apply).map_err(StateError::Corrupt)
    }

    fn wants_snapshot(&self) -> bool {
        false
    }

    fn snapshot(&self) -> Result<Box<dyn SnapshotWriter>, StateError> {
        Err(StateError::Unavailable(
            "a scratch copy takes no snapshot".to_owned(),
        ))
    }

    fn shutdown(&self) -> Result<(), StateError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer's batch of `writes` (as `writer.rs` sends them).
    fn batch(writes: &[Vec<u8>]) -> Bytes {
        let mut payload = Vec::new();
        for write in writes {
            payload.extend_from_slice(&(write.len() as u32).to_le_bytes());
            payload.extend_from_slice(write);
        }
        Bytes::from(payload)
    }

    /// The record of a session `client_id` ending (any change would do: its client id
    /// tells the records apart).
    fn record(client_id: &str) -> Vec<u8> {
        let mut record = Vec::new();
        encode_record(&Change::SessionEnded { client_id }, &mut record);
        record
    }

    fn snapshot_record(generation: u64, client_id: &str) -> Vec<u8> {
        let mut record = generation.to_le_bytes().to_vec();
        record.extend_from_slice(&self::record(client_id));
        record
    }

    fn client_ids(records: &[u8]) -> Vec<String> {
        let mut ids = Vec::new();
        decode_records(records, &mut |change| {
            if let Change::SessionEnded { client_id } = change {
                ids.push(client_id.to_owned());
            }
            Ok(())
        })
        .unwrap();
        ids
    }

    fn generation(generation: u64) -> Bytes {
        Bytes::copy_from_slice(&generation.to_le_bytes())
    }

    #[test]
    fn a_copy_is_its_last_complete_snapshot_and_the_log_after_its_mark() {
        let mut pieces = Pieces::default();
        // Before any snapshot completed: the whole log.
        pieces
            .add(Kind::Log, 1, &batch(&[record("a"), record("b")]))
            .unwrap();
        pieces.add(Kind::Mark, 2, &generation(7)).unwrap();
        pieces.add(Kind::Log, 3, &batch(&[record("c")])).unwrap();
        pieces
            .add(Kind::Snap, 4, &batch(&[snapshot_record(7, "s1")]))
            .unwrap();
        assert_eq!(client_ids(&pieces.records().unwrap()), ["a", "b", "c"]);
        // Snapshot 7 complete: its records, then the log after its mark (3, and what
        // follows), not before.
        pieces
            .add(Kind::Snap, 5, &batch(&[snapshot_record(7, "s2")]))
            .unwrap();
        pieces.add(Kind::Done, 6, &generation(7)).unwrap();
        pieces.add(Kind::Log, 7, &batch(&[record("d")])).unwrap();
        // A later snapshot begun, not complete: ignored, its mark too.
        pieces.add(Kind::Mark, 8, &generation(9)).unwrap();
        pieces
            .add(Kind::Snap, 9, &batch(&[snapshot_record(9, "t1")]))
            .unwrap();
        pieces.add(Kind::Log, 10, &batch(&[record("e")])).unwrap();
        assert_eq!(
            client_ids(&pieces.records().unwrap()),
            ["s1", "s2", "c", "d", "e"]
        );
    }

    #[test]
    fn a_damaged_copy_is_an_error_not_a_panic() {
        let mut pieces = Pieces::default();
        assert!(
            pieces
                .add(Kind::Mark, 1, &Bytes::from_static(b"short"))
                .is_err()
        );
        assert!(
            pieces
                .add(Kind::Snap, 2, &batch(&[b"abc".to_vec()]))
                .is_err()
        );
        pieces.add(Kind::Done, 3, &generation(5)).unwrap();
        assert!(
            pieces.records().is_err(),
            "a snapshot complete without its mark"
        );
        let mut cut = Pieces::default();
        let mut log = batch(&[record("a")]).to_vec();
        log.truncate(log.len() - 1);
        cut.add(Kind::Log, 1, &Bytes::from(log)).unwrap();
        assert!(cut.records().is_err(), "a log batch cut short");
    }

    #[test]
    fn retained_messages_are_not_copied() {
        let topic = fleetwire_mqtt_codec::TopicName::new("a/b").unwrap();
        assert!(!is_copied(&Change::RetainedCleared { topic: &topic }));
        assert!(is_copied(&Change::SessionEnded { client_id: "c" }));
    }
}
