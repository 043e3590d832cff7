//! Maintenance of the segment set, on the `fleetwire-compact` thread: size-tiered
//! compaction after each flush (and every maintenance interval), retention every minute,
//! and the full compaction that [`Store::compact`](crate::Store::compact) asks for.
//!
//! It runs apart from the flushing thread (`store.rs`) because a merge of many segments
//! takes seconds: on the flushing thread it kept the head from being flushed, writers
//! reached the backpressure limit and every write waited for it. `compaction_lock` allows
//! one compaction or retention pass at a time; each swaps a changed copy of the segment
//! set in within one hold of `state`'s write lock, as a flush does, so neither loses the
//! other's change.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::catalog::sync_directory;
use crate::error::{Result, io};
use crate::query::{self, Run};
use crate::segment::{Builder, Segment, SegmentInfo};
use crate::store::Inner;
use fleetwire_time::Timestamp;

use crate::types::SeriesId;

/// How often the compaction thread applies retention.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

impl Inner {
    /// [`Store::compact`](crate::Store::compact): merges the segments of every partition
    /// that has more than one.
    pub(crate) fn compact_all(&self) -> Result<()> {
        let _compaction = self.compaction_lock.lock();
        let set = Arc::clone(&self.state.read().segments);
        for segments in set.values() {
            if segments.len() > 1 {
                self.compact_segments(segments)?;
            }
        }
        Ok(())
    }
    /// Merges `inputs` (one partition, consecutive by sequence number) into one segment and
    /// swaps it in. The caller holds the compaction lock. Gives up, changing nothing, when
    /// the store starts stopping: a merge of many segments takes seconds, and shutting
    /// down should not wait for it (the next start compacts again).
    fn compact_segments(&self, inputs: &[Arc<Segment>]) -> Result<()> {
        let (Some(first), Some(last)) = (inputs.first(), inputs.last()) else {
            return Ok(());
        };
        let started = Instant::now();
        let info = SegmentInfo {
            min_seq: first.info().min_seq,
            max_seq: last.info().max_seq,
            level: inputs
                .iter()
                .map(|segment| segment.info().level)
                .max()
                .unwrap_or(0)
                + 1,
            ..*first.info()
        };
        let series: BTreeSet<SeriesId> =
            inputs.iter().flat_map(|segment| segment.series()).collect();
        let mut builder = Builder::new(info);
        for id in series {
            if self.signal.lock().is_stopping {
                tracing::debug!(
                    inputs = inputs.len(),
                    "compaction abandoned: the store is stopping"
                );
                return Ok(());
            }
            let mut runs = Vec::with_capacity(inputs.len());
            for segment in inputs {
                let mut run: Run = (Vec::new(), Vec::new());
                for block in segment.blocks(id) {
                    segment.read_block(block, &mut run.0, &mut run.1)?;
                }
                runs.push(run);
            }
            let (timestamps, values) = query::merge_runs(runs);
            builder.add_series(id, &timestamps, &values);
        }
        let output = Arc::new(builder.write(&self.segment_directory)?);
        {
            let mut state = self.state.write();
            let mut set = (*state.segments).clone();
            let key = (info.partition_start, info.partition_duration);
            if let Some(list) = set.get_mut(&key) {
                list.retain(|segment| !inputs.iter().any(|input| Arc::ptr_eq(segment, input)));
                list.push(Arc::clone(&output));
                list.sort_by_key(|segment| segment.info().min_seq);
            }
            state.segments = Arc::new(set);
        }
        for input in inputs {
            std::fs::remove_file(input.path())
                .map_err(io("removing compacted segment", input.path()))?;
        }
        sync_directory(&self.segment_directory)?;
        tracing::debug!(
            inputs = inputs.len(),
            output = %output.path().display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compacted segments"
        );
        Ok(())
    }

    /// Background compaction by size tiers: merges `compaction_fan_in` consecutive segments
    /// of the same level, so each point is rewritten about log(n) times.
    fn compact_tiers(&self) -> Result<()> {
        let fan_in = self.config.compaction_fan_in;
        loop {
            if self.signal.lock().is_stopping {
                return Ok(());
            }
            let _compaction = self.compaction_lock.lock();
            let set = Arc::clone(&self.state.read().segments);
            let candidate = set.values().find_map(|segments| {
                segments
                    .windows(fan_in)
                    .find(|window| {
                        window
                            .iter()
                            .all(|segment| segment.info().level == window[0].info().level)
                    })
                    .map(<[Arc<Segment>]>::to_vec)
            });
            match candidate {
                Some(inputs) => self.compact_segments(&inputs)?,
                None => return Ok(()),
            }
        }
    }

    pub(crate) fn retention_cutoff(&self, now: Timestamp) -> Option<i64> {
        let retention = i64::try_from(self.config.retention?.as_millis()).unwrap_or(i64::MAX);
        Some(now.as_millis().saturating_sub(retention))
    }

    pub(crate) fn enforce_retention(&self, now: Timestamp) -> Result<usize> {
        let Some(cutoff) = self.retention_cutoff(now) else {
            return Ok(0);
        };
        let _compaction = self.compaction_lock.lock();
        let expired: Vec<Arc<Segment>> = {
            let mut state = self.state.write();
            let mut set = (*state.segments).clone();
            let keys: Vec<(i64, i64)> = set
                .keys()
                .filter(|(start, duration)| start.saturating_add(*duration) <= cutoff)
                .copied()
                .collect();
            let expired = keys
                .iter()
                .filter_map(|key| set.remove(key))
                .flatten()
                .collect();
            state.segments = Arc::new(set);
            expired
        };
        let partitions: BTreeSet<(i64, i64)> = expired
            .iter()
            .map(|segment| {
                (
                    segment.info().partition_start,
                    segment.info().partition_duration,
                )
            })
            .collect();
        for segment in &expired {
            std::fs::remove_file(segment.path())
                .map_err(io("removing expired segment", segment.path()))?;
        }
        if !expired.is_empty() {
            sync_directory(&self.segment_directory)?;
            tracing::info!(
                partitions = partitions.len(),
                files = expired.len(),
                cutoff,
                "retention dropped old partitions"
            );
        }
        Ok(partitions.len())
    }
    /// The `fleetwire-compact` thread: compacts after each flush (and every maintenance
    /// interval), applies retention every minute.
    pub(crate) fn compact_in_background(&self) {
        let mut last_retention: Option<Instant> = None;
        while self.wait_for_work(|signal| &mut signal.is_compaction_wanted) {
            if let Err(error) = self.compact_tiers() {
                tracing::error!(%error, "compaction failed");
            }
            if self.config.retention.is_some()
                && last_retention.is_none_or(|last| last.elapsed() >= RETENTION_INTERVAL)
            {
                last_retention = Some(Instant::now());
                if let Err(error) = self.enforce_retention(Timestamp::now()) {
                    tracing::error!(%error, "applying retention failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::{Point, Store, StoreConfig};

    /// A store in a fresh directory under the system's temporary one; the directory is
    /// removed when the returned guard drops.
    struct Opened {
        store: Option<Store>,
        directory: PathBuf,
    }

    impl Drop for Opened {
        fn drop(&mut self) {
            drop(self.store.take());
            let _ = std::fs::remove_dir_all(&self.directory);
        }
    }

    fn opened(name: &str, config: StoreConfig) -> Opened {
        let directory = std::env::temp_dir().join(format!(
            "fleetwire-store-unit-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&directory);
        let store = Store::open(&directory, config).unwrap();
        Opened {
            store: Some(store),
            directory,
        }
    }

    fn write_points(store: &Store, from: i64, count: i64) {
        let points: Vec<Point<'_>> = (from..from + count)
            .map(|index| Point {
                device: "d",
                field: "t",
                timestamp: Timestamp::from_millis(index),
                value: index as f64,
            })
            .collect();
        store.write(&points).unwrap();
    }

    /// Polls `done` for up to ten seconds.
    fn within_seconds(done: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    #[test]
    fn a_compaction_gives_up_without_a_trace_when_the_store_stops() {
        let config = StoreConfig {
            compaction_fan_in: usize::MAX,
            ..StoreConfig::default()
        };
        let opened = opened("compaction-stops", config);
        let store = opened.store.clone().unwrap();
        for batch in 0..2 {
            write_points(&store, batch * 100, 100);
            store.flush().unwrap();
        }
        let inputs: Vec<Arc<Segment>> = store
            .inner()
            .state
            .read()
            .segments
            .values()
            .flatten()
            .cloned()
            .collect();
        assert_eq!(inputs.len(), 2);
        let files = || {
            std::fs::read_dir(&store.inner().segment_directory)
                .unwrap()
                .count()
        };
        let files_before = files();

        store.inner().signal.lock().is_stopping = true;
        store.inner().compact_segments(&inputs).unwrap();
        assert_eq!(store.stats().segments, 2);
        assert_eq!(files(), files_before, "no output file left behind");
        assert_eq!(
            store
                .range(
                    "d",
                    "t",
                    Timestamp::from_millis(0),
                    Timestamp::from_millis(200)
                )
                .unwrap()
                .len(),
            200
        );
    }

    #[test]
    fn a_running_compaction_holds_back_neither_flushes_nor_writes() {
        let config = StoreConfig {
            head_max_points: 100,
            maintenance_interval: Duration::from_millis(10),
            ..StoreConfig::default()
        };
        let opened = opened("compaction-vs-flush", config);
        let store = opened.store.clone().unwrap();
        // Stands for a compaction of many segments, which takes seconds.
        let compaction = store.inner().compaction_lock.lock();

        // The background flush goes on.
        write_points(&store, 0, 150);
        assert!(
            within_seconds(|| store.stats().segment_points == 150),
            "the head was not flushed while a compaction ran: {:?}",
            store.stats()
        );

        // So does a writer past the backpressure limit, which flushes itself.
        let (sent, written) = std::sync::mpsc::channel();
        let writer = store.clone();
        std::thread::spawn(move || {
            write_points(&writer, 1000, 500);
            let _ = sent.send(writer.stats());
        });
        let stats = written.recv_timeout(Duration::from_secs(10));
        drop(compaction);
        let stats = stats.expect("a write waited for a compaction");
        assert_eq!(stats.segment_points + stats.head_points, 650);
    }
}
