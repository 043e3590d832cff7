//! Segment files: damage is detected and named, quarantine works, compaction keeps every
//! point, retention drops whole partitions, and compression meets its budget.

mod common;

use std::time::Duration;

use common::{Owned, TempDir, config, copy_dir, files_with_extension, points};
use fleetwire_store::{CorruptSegmentPolicy, Error, Store, StoreConfig, Timestamp};

const DAY: i64 = 86_400_000;

fn all(store: &Store, device: &str, field: &str) -> Vec<(i64, f64)> {
    store
        .range(
            device,
            field,
            Timestamp::from_millis(i64::MIN),
            Timestamp::from_millis(i64::MAX),
        )
        .expect("range")
        .into_iter()
        .map(|sample| (sample.timestamp.as_millis(), sample.value))
        .collect()
}

/// A store with one flushed segment, closed.
fn store_with_one_segment(name: &str) -> TempDir {
    let directory = TempDir::new(name);
    let store = Store::open(directory.path(), config()).expect("open");
    let batch: Vec<Owned> = (0..10_000)
        .map(|index| Owned::new("d", "t", index * 1000, (index % 500) as f64 / 10.0))
        .collect();
    store.write(&points(&batch)).expect("write");
    store.close().expect("close");
    directory
}

#[test]
fn a_flipped_bit_anywhere_in_a_segment_fails_the_open_with_the_file_named() {
    let directory = store_with_one_segment("corrupt");
    let segment = files_with_extension(&directory.path().join("segments"), "seg")
        .pop()
        .expect("one segment");
    let original = std::fs::read(&segment).expect("read segment");
    let positions = [
        0,
        9,
        20,
        63,
        64,
        100,
        original.len() / 2,
        original.len() - 30,
        original.len() - 10,
        original.len() - 1,
    ];
    for position in positions {
        let image = TempDir::new("corrupt-copy");
        copy_dir(directory.path(), image.path());
        let mut bytes = original.clone();
        bytes[position] ^= 0x08;
        let image_segment = image
            .path()
            .join("segments")
            .join(segment.file_name().expect("name"));
        std::fs::write(&image_segment, &bytes).expect("write damaged segment");
        let error = Store::open(image.path(), config()).expect_err("damaged segment");
        let Error::CorruptSegment { path, detail } = &error else {
            panic!("expected CorruptSegment, got {error}")
        };
        assert_eq!(path, &image_segment);
        assert!(!detail.is_empty());
        assert!(
            error
                .to_string()
                .contains(&image_segment.display().to_string())
        );
    }
    for length in [0, 10, 87, original.len() / 2, original.len() - 1] {
        let image = TempDir::new("truncated-copy");
        copy_dir(directory.path(), image.path());
        let image_segment = image
            .path()
            .join("segments")
            .join(segment.file_name().expect("name"));
        std::fs::write(&image_segment, &original[..length]).expect("write truncated segment");
        let error = Store::open(image.path(), config()).expect_err("truncated segment");
        assert!(
            matches!(error, Error::CorruptSegment { .. }),
            "{length}: {error}"
        );
    }
}

#[test]
fn quarantine_moves_a_damaged_segment_aside_and_opens() {
    let directory = store_with_one_segment("quarantine");
    let segment = files_with_extension(&directory.path().join("segments"), "seg")
        .pop()
        .expect("one segment");
    let mut bytes = std::fs::read(&segment).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&segment, bytes).expect("write");
    let config = StoreConfig {
        on_corrupt_segment: CorruptSegmentPolicy::Quarantine,
        ..config()
    };
    let store = Store::open(directory.path(), config).expect("opens with quarantine");
    assert!(all(&store, "d", "t").is_empty());
    assert!(!segment.exists());
    assert!(segment.with_extension("seg.corrupt").exists());
}

#[test]
fn compaction_merges_segments_and_keeps_every_point() {
    let directory = TempDir::new("compaction");
    let store = Store::open(directory.path(), config()).expect("open");
    let mut expected = Vec::new();
    for flush in 0..6i64 {
        // Interleaved timestamps, so segments overlap in time.
        let batch: Vec<Owned> = (0..2000i64)
            .map(|index| Owned::new("d", "t", index * 6 + flush, (index * 6 + flush) as f64))
            .collect();
        expected.extend(batch.iter().map(|point| (point.timestamp, point.value)));
        store.write(&points(&batch)).expect("write");
        store.flush().expect("flush");
    }
    expected.sort_by_key(|&(timestamp, _)| timestamp);
    assert_eq!(store.stats().segments, 6);
    assert_eq!(all(&store, "d", "t"), expected);
    store.compact().expect("compact");
    let stats = store.stats();
    assert_eq!(stats.segments, 1);
    assert_eq!(stats.segment_points, 12_000);
    assert_eq!(all(&store, "d", "t"), expected);
    drop(store);
    let store = Store::open(directory.path(), config()).expect("reopen");
    assert_eq!(all(&store, "d", "t"), expected);
    assert_eq!(
        files_with_extension(&directory.path().join("segments"), "seg").len(),
        1
    );
}

#[test]
fn background_compaction_merges_same_level_segments() {
    let directory = TempDir::new("tiers");
    let config = StoreConfig {
        compaction_fan_in: 2,
        maintenance_interval: Duration::from_millis(10),
        ..config()
    };
    let store = Store::open(directory.path(), config).expect("open");
    for flush in 0..4i64 {
        store
            .write(&points(&[Owned::new("d", "t", flush, 1.0)]))
            .expect("write");
        store.flush().expect("flush");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.stats().segments > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(store.stats().segments, 1);
    assert_eq!(all(&store, "d", "t").len(), 4);
}

#[test]
fn a_compaction_interrupted_before_deleting_its_inputs_is_finished_on_open() {
    let directory = TempDir::new("compaction-crash");
    let store = Store::open(directory.path(), config()).expect("open");
    for flush in 0..3i64 {
        store
            .write(&points(&[
                Owned::new("d", "t", flush, flush as f64),
                Owned::new("d", "t", 10, flush as f64),
            ]))
            .expect("write");
        store.flush().expect("flush");
    }
    let inputs = TempDir::new("compaction-crash-inputs");
    copy_dir(&directory.path().join("segments"), inputs.path());
    store.compact().expect("compact");
    drop(store);
    // Put the inputs back next to the output: a crash before their deletion.
    copy_dir(inputs.path(), &directory.path().join("segments"));
    assert_eq!(
        files_with_extension(&directory.path().join("segments"), "seg").len(),
        4
    );
    let store = Store::open(directory.path(), config()).expect("reopen");
    assert_eq!(
        all(&store, "d", "t"),
        vec![(0, 0.0), (1, 1.0), (2, 2.0), (10, 2.0)]
    );
    assert_eq!(
        files_with_extension(&directory.path().join("segments"), "seg").len(),
        1
    );
}

#[test]
fn retention_drops_whole_partitions_older_than_the_limit() {
    let directory = TempDir::new("retention");
    let config = StoreConfig {
        retention: Some(Duration::from_secs(2 * 86_400)),
        ..config()
    };
    let store = Store::open(directory.path(), config).expect("open");
    // Partitions already expired by the wall clock are dropped at flush; these are in the
    // future, so only `enforce_retention` with a later `now` drops them.
    let start = (Timestamp::now().as_millis() / DAY + 10) * DAY;
    let batch: Vec<Owned> = (0..5i64)
        .flat_map(|day| {
            (0..24i64).map(move |hour| {
                Owned::new("d", "t", start + day * DAY + hour * 3_600_000, day as f64)
            })
        })
        .collect();
    store.write(&points(&batch)).expect("write");
    store.flush().expect("flush");
    assert_eq!(store.stats().partitions, 5);
    // At the start of day 5, days 0 and 1 ended more than two days ago, and day 2 ends
    // exactly at the cutoff.
    let dropped = store
        .enforce_retention(Timestamp::from_millis(start + 5 * DAY))
        .expect("retention");
    assert_eq!(dropped, 3);
    let stats = store.stats();
    assert_eq!(stats.partitions, 2);
    assert_eq!(stats.segment_points, 48);
    let remaining = all(&store, "d", "t");
    assert_eq!(
        remaining.first().map(|&(timestamp, _)| timestamp),
        Some(start + 3 * DAY)
    );
    assert_eq!(
        files_with_extension(&directory.path().join("segments"), "seg").len(),
        2
    );
    drop(store);
    let store = Store::open(
        directory.path(),
        StoreConfig {
            retention: Some(Duration::from_secs(2 * 86_400)),
            ..common::config()
        },
    )
    .expect("reopen");
    assert_eq!(all(&store, "d", "t").len(), 48);
}

#[test]
fn points_already_past_retention_are_not_written_to_segments() {
    let directory = TempDir::new("retention-at-flush");
    let config = StoreConfig {
        retention: Some(Duration::from_secs(86_400)),
        ..config()
    };
    let store = Store::open(directory.path(), config).expect("open");
    let now = Timestamp::now().as_millis();
    store
        .write(&points(&[
            Owned::new("d", "t", 5 * DAY, 1.0),
            Owned::new("d", "t", now, 2.0),
        ]))
        .expect("write");
    store.flush().expect("flush");
    assert_eq!(all(&store, "d", "t"), vec![(now, 2.0)]);
}

#[test]
fn without_retention_nothing_is_dropped() {
    let directory = store_with_one_segment("no-retention");
    let store = Store::open(directory.path(), config()).expect("open");
    assert_eq!(
        store
            .enforce_retention(Timestamp::from_millis(i64::MAX))
            .expect("retention"),
        0
    );
    assert_eq!(all(&store, "d", "t").len(), 10_000);
}

#[test]
fn flushed_log_files_are_deleted() {
    let directory = TempDir::new("wal-cleanup");
    let store = Store::open(directory.path(), config()).expect("open");
    store
        .write(&points(&[Owned::new("d", "t", 1, 1.0)]))
        .expect("write");
    assert!(store.stats().wal_bytes > 0);
    store.flush().expect("flush");
    assert_eq!(
        store.stats().wal_bytes,
        0,
        "only the new, empty log file is left"
    );
    assert_eq!(
        files_with_extension(&directory.path().join("wal"), "wal").len(),
        1
    );
}

#[test]
fn a_full_head_is_flushed_in_the_background() {
    let directory = TempDir::new("auto-flush");
    let config = StoreConfig {
        head_max_points: 1000,
        maintenance_interval: Duration::from_millis(10),
        ..config()
    };
    let store = Store::open(directory.path(), config).expect("open");
    let batch: Vec<Owned> = (0..1500)
        .map(|index| Owned::new("d", "t", index, 1.0))
        .collect();
    store.write(&points(&batch)).expect("write");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.stats().segment_points == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(store.stats().segment_points, 1500);
    assert_eq!(all(&store, "d", "t").len(), 1500);
}

#[test]
fn writers_flush_themselves_when_the_background_falls_behind() {
    let directory = TempDir::new("backpressure");
    let config = StoreConfig {
        head_max_points: 100,
        maintenance_interval: Duration::from_secs(3600),
        ..config()
    };
    let store = Store::open(directory.path(), config).expect("open");
    let batch: Vec<Owned> = (0..500)
        .map(|index| Owned::new("d", "t", index, 1.0))
        .collect();
    store.write(&points(&batch)).expect("write");
    let stats = store.stats();
    assert_eq!((stats.segment_points, stats.head_points), (500, 0));
}
