//! Points come back exactly as written — bit for bit, in time order, one per timestamp with
//! the last write winning — from the head, from segments, after compaction and after reopen.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Owned, Rng, TempDir, bits, config, points};
use fleetwire_store::{Aggregation, Durability, Error, Point, Store, StoreConfig, Timestamp};
use proptest::prelude::*;

/// What a store should hold: per series, per timestamp, the last value written.
#[derive(Default)]
struct Model(BTreeMap<(String, String), BTreeMap<i64, f64>>);

impl Model {
    fn apply(&mut self, batch: &[Owned]) {
        for point in batch {
            self.0
                .entry((point.device.clone(), point.field.clone()))
                .or_default()
                .insert(point.timestamp, point.value);
        }
    }

    fn check(&self, store: &Store, when: &str) {
        for ((device, field), expected) in &self.0 {
            let found = store
                .range(
                    device,
                    field,
                    Timestamp::from_millis(i64::MIN),
                    Timestamp::from_millis(i64::MAX),
                )
                .expect("range");
            let expected: Vec<(i64, u64)> = expected
                .iter()
                .map(|(&timestamp, value)| (timestamp, value.to_bits()))
                .collect();
            assert_eq!(bits(&found), expected, "{device}/{field} {when}");
            let latest = store.latest(device);
            let newest = expected.last().expect("non-empty series");
            let sample = latest.get(field.as_str()).expect("latest has the field");
            assert_eq!(
                (sample.timestamp.as_millis(), sample.value.to_bits()),
                *newest,
                "latest {device}/{field} {when}"
            );
        }
    }
}

fn special_points() -> Vec<Owned> {
    let values = [
        0.0,
        -0.0,
        f64::NAN,
        -f64::NAN,
        f64::from_bits(0x7FF8_0000_DEAD_BEEF),
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MIN_POSITIVE,
        f64::from_bits(1),
        f64::MAX,
        f64::MIN,
        0.1 + 0.2,
        21.37,
    ];
    let timestamps = [
        -(1i64 << 62),
        -86_400_000,
        -1,
        0,
        1,
        999,
        1_700_000_000_000,
        1 << 40,
        (1 << 62) - 7,
        1 << 62,
        5,
        3,
        2,
    ];
    values
        .iter()
        .zip(timestamps)
        .map(|(&value, timestamp)| Owned::new("device-1", "special", timestamp, value))
        .collect()
}

#[test]
fn values_and_timestamps_round_trip_bit_for_bit_everywhere() {
    let directory = TempDir::new("round-trip");
    let mut model = Model::default();
    let store = Store::open(directory.path(), config()).expect("open");

    let first = special_points();
    store.write(&points(&first)).expect("write");
    model.apply(&first);
    model.check(&store, "in the head");

    store.flush().expect("flush");
    model.check(&store, "after a flush");

    // Overwrite some timestamps, add out-of-order points, in a second segment.
    let second: Vec<Owned> = vec![
        Owned::new("device-1", "special", 0, 42.0),
        Owned::new("device-1", "special", 4, -4.0),
        Owned::new("device-1", "special", -1, f64::NAN),
        Owned::new("device-1", "special", 1 << 62, 1.0),
        Owned::new("device-2", "other", 10, 1.0),
    ];
    store.write(&points(&second)).expect("write");
    model.apply(&second);
    model.check(&store, "with overwrites in the head");
    store.flush().expect("flush");
    model.check(&store, "with overwrites in two segments");
    store.compact().expect("compact");
    model.check(&store, "after compaction");
    store.close().expect("close");

    let store = Store::open(directory.path(), config()).expect("reopen");
    model.check(&store, "after reopening");
}

#[test]
fn the_last_write_of_a_timestamp_wins_across_head_segments_and_recovery() {
    let directory = TempDir::new("last-write-wins");
    let store = Store::open(directory.path(), config()).expect("open");
    let at = |value: f64| [Point::new("d", "f", Timestamp::from_millis(1000), value)];
    let value_now = |store: &Store| {
        let samples = store
            .range(
                "d",
                "f",
                Timestamp::from_millis(0),
                Timestamp::from_millis(2000),
            )
            .expect("range");
        assert_eq!(samples.len(), 1);
        samples[0].value
    };
    store.write(&at(1.0)).expect("write");
    store.write(&at(2.0)).expect("write");
    assert_eq!(value_now(&store), 2.0);
    store.flush().expect("flush");
    store.write(&at(3.0)).expect("write");
    assert_eq!(value_now(&store), 3.0, "head beats segment");
    store.flush().expect("flush");
    assert_eq!(value_now(&store), 3.0, "newer segment beats older");
    store.write(&at(4.0)).expect("write");
    drop(store); // no flush: the last value lives only in the log
    let store = Store::open(directory.path(), config()).expect("reopen");
    assert_eq!(value_now(&store), 4.0, "replayed log beats segments");
    assert_eq!(store.latest("d")["f"].value, 4.0);
    store.compact().expect("compact");
    store.flush().expect("flush");
    store.compact().expect("compact");
    assert_eq!(value_now(&store), 4.0, "after compaction");
    assert_eq!(
        store
            .aggregate(
                "d",
                "f",
                Timestamp::from_millis(0),
                Timestamp::from_millis(2000),
                Duration::from_secs(1),
                Aggregation::Count
            )
            .expect("count")[0]
            .value,
        1.0
    );
}

#[test]
fn latest_ignores_late_older_points_and_survives_reopen() {
    let directory = TempDir::new("latest");
    let store = Store::open(directory.path(), config()).expect("open");
    let batch = [
        Point::new("d", "temperature", Timestamp::from_millis(2000), 21.5),
        Point::new("d", "humidity", Timestamp::from_millis(2000), 40.0),
        Point::new("d", "temperature", Timestamp::from_millis(1000), 19.0),
        Point::new("other", "temperature", Timestamp::from_millis(5000), 1.0),
    ];
    store.write(&batch).expect("write");
    let latest = store.latest("d");
    assert_eq!(latest.len(), 2);
    assert_eq!(latest["temperature"].value, 21.5);
    assert_eq!(latest["temperature"].timestamp.as_millis(), 2000);
    assert!(store.latest("nobody").is_empty());
    store.flush().expect("flush");
    drop(store);
    let store = Store::open(directory.path(), config()).expect("reopen");
    let latest = store.latest("d");
    assert_eq!(latest["temperature"].value, 21.5);
    assert_eq!(latest["humidity"].value, 40.0);
}

#[test]
fn invalid_input_is_refused_and_nothing_of_the_batch_is_written() {
    let directory = TempDir::new("invalid");
    let store = Store::open(directory.path(), config()).expect("open");
    let long = "x".repeat(fleetwire_store::MAX_NAME_LEN + 1);
    let batch = [
        Point::new("d", "ok", Timestamp::from_millis(1), 1.0),
        Point::new("d", "", Timestamp::from_millis(1), 1.0),
    ];
    let error = store.write(&batch).expect_err("empty field");
    assert!(
        matches!(error, Error::InvalidPoint { index: 1, .. }),
        "{error}"
    );
    assert!(error.is_invalid_input());
    assert!(
        store
            .write(&[Point::new(&long, "f", Timestamp::from_millis(1), 1.0)])
            .is_err()
    );
    assert!(
        store.latest("d").is_empty(),
        "nothing of a refused batch is stored"
    );
    assert_eq!(store.stats().series, 0);

    let error = store
        .range(
            "d",
            "ok",
            Timestamp::from_millis(5),
            Timestamp::from_millis(1),
        )
        .expect_err("from after to");
    assert_eq!(
        error.to_string(),
        "invalid argument: expected from <= to, got from 5ms and to 1ms"
    );
    let error = store
        .aggregate(
            "d",
            "ok",
            Timestamp::from_millis(0),
            Timestamp::from_millis(1),
            Duration::ZERO,
            Aggregation::Avg,
        )
        .expect_err("zero window");
    assert!(matches!(error, Error::InvalidArgument(_)));
    assert!("median".parse::<Aggregation>().is_err());
    assert_eq!("avg".parse::<Aggregation>().expect("avg"), Aggregation::Avg);
    assert!(
        store
            .range(
                "nobody",
                "f",
                Timestamp::from_millis(0),
                Timestamp::from_millis(1)
            )
            .expect("range")
            .is_empty()
    );
}

#[test]
fn concurrent_writers_lose_nothing() {
    let directory = TempDir::new("concurrent");
    let store = Store::open(directory.path(), config()).expect("open");
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let store = store.clone();
            std::thread::spawn(move || {
                let device = format!("device-{thread}");
                for batch in 0..50i64 {
                    let owned: Vec<Owned> = (0..200i64)
                        .map(|index| {
                            Owned::new(
                                &device,
                                if index % 2 == 0 { "a" } else { "b" },
                                batch * 200 + index,
                                index as f64,
                            )
                        })
                        .collect();
                    store.write(&points(&owned)).expect("write");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("writer thread");
    }
    assert_eq!(store.stats().points(), 4 * 50 * 200);
    drop(store);
    let store = Store::open(directory.path(), config()).expect("reopen");
    for thread in 0..4 {
        for field in ["a", "b"] {
            let samples = store
                .range(
                    &format!("device-{thread}"),
                    field,
                    Timestamp::from_millis(0),
                    Timestamp::from_millis(i64::MAX),
                )
                .expect("range");
            assert_eq!(samples.len(), 5000, "device-{thread}/{field}");
        }
    }
}

#[test]
fn batch_durability_acknowledges_and_recovers() {
    let directory = TempDir::new("batch-mode");
    let config = StoreConfig {
        durability: Durability::Batch {
            flush_interval: Duration::from_millis(20),
        },
        ..config()
    };
    let store = Store::open(directory.path(), config.clone()).expect("open");
    let owned: Vec<Owned> = (0..1000)
        .map(|index| Owned::new("d", "f", index, index as f64))
        .collect();
    store.write(&points(&owned)).expect("write");
    store.sync().expect("sync");
    drop(store);
    let store = Store::open(directory.path(), config).expect("reopen");
    assert_eq!(
        store
            .range(
                "d",
                "f",
                Timestamp::from_millis(0),
                Timestamp::from_millis(1000)
            )
            .expect("range")
            .len(),
        1000
    );
}

#[test]
fn writes_after_close_are_refused() {
    let directory = TempDir::new("closed");
    let store = Store::open(directory.path(), config()).expect("open");
    let other = store.clone();
    store.close().expect("close");
    let error = other
        .write(&[Point::new("d", "f", Timestamp::from_millis(1), 1.0)])
        .expect_err("closed");
    assert!(matches!(error, Error::Closed), "{error}");
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Store>();
}

#[test]
fn random_workloads_match_a_reference_model() {
    let mut rng = Rng::new(7);
    let directory = TempDir::new("random-model");
    let mut model = Model::default();
    let mut store = Store::open(
        directory.path(),
        StoreConfig {
            partition_duration: Duration::from_secs(10),
            ..config()
        },
    )
    .expect("open");
    for round in 0..30 {
        let batch: Vec<Owned> = (0..rng.below(300) + 1)
            .map(|_| {
                let device = format!("d{}", rng.below(3));
                let field = format!("f{}", rng.below(3));
                let timestamp = rng.below(60_000) as i64 - 10_000;
                let value = match rng.below(4) {
                    0 => f64::from_bits(rng.next_u64()),
                    1 => (rng.below(10_000) as f64) / 100.0,
                    2 => rng.below(2) as f64,
                    _ => rng.unit() * 1e6,
                };
                Owned::new(&device, &field, timestamp, value)
            })
            .collect();
        store.write(&points(&batch)).expect("write");
        model.apply(&batch);
        match rng.below(6) {
            0 => store.flush().expect("flush"),
            1 => store.compact().expect("compact"),
            2 => {
                drop(store);
                store = Store::open(
                    directory.path(),
                    StoreConfig {
                        partition_duration: Duration::from_secs(10),
                        ..config()
                    },
                )
                .expect("reopen");
            }
            _ => {}
        }
        model.check(&store, &format!("after round {round}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_points_round_trip_through_segments(
        raw in proptest::collection::vec((0u8..3, -5_000i64..5_000, any::<u64>()), 1..400),
    ) {
        let directory = TempDir::new("proptest");
        let store = Store::open(directory.path(), StoreConfig { partition_duration: Duration::from_secs(2), ..config() }).expect("open");
        let owned: Vec<Owned> = raw.iter().map(|&(field, timestamp, value)| Owned::new("d", &format!("f{field}"), timestamp * 3, f64::from_bits(value))).collect();
        store.write(&points(&owned)).expect("write");
        store.flush().expect("flush");
        let mut model = Model::default();
        model.apply(&owned);
        model.check(&store, "after flush");
    }
}
