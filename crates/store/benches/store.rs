//! The store's performance targets (issue 5), on simulated sensor data:
//!
//! - `ingest/sync_5000_point_batches_{1,4}_writers`: points/s written in `sync` durability
//!   by one or four writer threads with 5,000-point batches, flushes and compactions running
//!   in the background;
//! - compression: bytes per stored point on one day of a 20-device fleet at 1 s (printed);
//! - `query/latest`, `query/range_1_day_raw` (86,400 points),
//!   `query/aggregate_30_days_hourly_avg` (2.6 million points).
//!
//! Run with `cargo bench -p fleetwire-store`. The signals are those of `support/signals.rs`
//! (`fleetwire-sim`'s model), shared with `examples/storage_compare.rs`, which measures the
//! same store side by side with PostgreSQL, SQLite and DuckDB.

#[path = "support/signals.rs"]
mod signals;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use fleetwire_store::{Aggregation, Point, Store, StoreConfig, Timestamp};
use signals::{DAY_MS, FIELDS, START_MS, Sensor};

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "fleetwire-store-bench-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create bench directory");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `seconds` of a fleet of `devices` in time order, in batches of `batch` points.
fn write_fleet(store: &Store, devices: u64, fields: &[usize], seconds: i64, batch: usize) {
    let names: Vec<String> = (0..devices)
        .map(|device| format!("device-{device}"))
        .collect();
    let mut sensors: Vec<Sensor> = (0..devices).map(Sensor::new).collect();
    let mut owned: Vec<(usize, usize, i64, f64)> = Vec::with_capacity(batch + 8);
    for second in 0..seconds {
        let timestamp = START_MS + second * 1000;
        for (device, sensor) in sensors.iter_mut().enumerate() {
            let readings = sensor.sample(timestamp);
            for &field in fields {
                owned.push((device, field, timestamp, readings[field]));
            }
        }
        if owned.len() >= batch || second + 1 == seconds {
            let points: Vec<Point<'_>> = owned
                .iter()
                .map(|&(device, field, timestamp, value)| {
                    Point::new(
                        &names[device],
                        FIELDS[field],
                        Timestamp::from_millis(timestamp),
                        value,
                    )
                })
                .collect();
            store.write(&points).expect("write");
            owned.clear();
        }
    }
}

fn compression() {
    let directory = TempDir::new("compression");
    let store = Store::open(directory.path(), StoreConfig::default()).expect("open");
    let started = Instant::now();
    write_fleet(&store, 20, &[0, 1, 2, 3], 86_400, 5000);
    store.flush().expect("flush");
    store.compact().expect("compact");
    let stats = store.stats();
    println!(
        "compression/fleet_20_devices_1_day_1s: {} points, {} segment bytes, {:.3} bytes/point (written in {:.1} s)",
        stats.segment_points,
        stats.segment_bytes,
        stats.bytes_per_point(),
        started.elapsed().as_secs_f64()
    );
    for (field, name) in FIELDS.iter().enumerate() {
        let directory = TempDir::new(&format!("compression-{name}"));
        let store = Store::open(directory.path(), StoreConfig::default()).expect("open");
        write_fleet(&store, 5, &[field], 86_400, 5000);
        store.flush().expect("flush");
        store.compact().expect("compact");
        let stats = store.stats();
        println!(
            "compression/{name}: {:.3} bytes/point",
            stats.bytes_per_point()
        );
    }
}

fn ingest(criterion: &mut Criterion) {
    const DEVICES: usize = 1250;
    const BATCHES_PER_ROUND: i64 = 200;
    let directory = TempDir::new("ingest");
    let store = Store::open(directory.path(), StoreConfig::default()).expect("open");
    let names: Vec<String> = (0..DEVICES)
        .map(|device| format!("device-{device}"))
        .collect();
    let mut sensors: Vec<Sensor> = (0..DEVICES as u64).map(Sensor::new).collect();
    // One second of the fleet: 1,250 devices x 4 fields = 5,000 points per batch.
    let readings: Vec<[f64; 4]> = sensors
        .iter_mut()
        .map(|sensor| sensor.sample(START_MS))
        .collect();
    let names = &names;
    let readings = &readings;
    let mut round = 0i64;

    let mut group = criterion.benchmark_group("ingest");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.throughput(Throughput::Elements(
        (BATCHES_PER_ROUND * DEVICES as i64 * 4) as u64,
    ));
    for writers in [1i64, 4] {
        group.bench_function(
            format!("sync_5000_point_batches_{writers}_writers"),
            |bencher| {
                bencher.iter_custom(|iterations| {
                    let started = Instant::now();
                    for _ in 0..iterations {
                        round += 1;
                        let base = round * BATCHES_PER_ROUND;
                        let per_writer = BATCHES_PER_ROUND / writers;
                        std::thread::scope(|scope| {
                            for writer in 0..writers {
                                let store = &store;
                                scope.spawn(move || {
                                    let mut points = Vec::with_capacity(DEVICES * 4);
                                    for batch in 0..per_writer {
                                        let second = base + writer * per_writer + batch;
                                        let timestamp = START_MS + second * 1000;
                                        points.clear();
                                        for (name, values) in names.iter().zip(readings) {
                                            for (field, &value) in FIELDS.iter().zip(values) {
                                                points.push(Point::new(
                                                    name,
                                                    field,
                                                    Timestamp::from_millis(timestamp),
                                                    value,
                                                ));
                                            }
                                        }
                                        store.write(&points).expect("write");
                                    }
                                });
                            }
                        });
                    }
                    started.elapsed()
                });
            },
        );
    }
    group.finish();
    let stats = store.stats();
    println!(
        "ingest: {} points stored in {} segments ({:.3} bytes/point), {} in the head",
        stats.segment_points,
        stats.segments,
        stats.bytes_per_point(),
        stats.head_points
    );
}

fn queries(criterion: &mut Criterion) {
    let directory = TempDir::new("queries");
    let store = Store::open(directory.path(), StoreConfig::default()).expect("open");
    let started = Instant::now();
    write_fleet(&store, 1, &[0, 1, 2, 3], 30 * 86_400, 5000);
    // Other devices, so the catalog is not trivially small.
    let others: Vec<String> = (1..1000).map(|device| format!("device-{device}")).collect();
    let points: Vec<Point<'_>> = others
        .iter()
        .map(|name| Point::new(name, "temperature", Timestamp::from_millis(START_MS), 20.0))
        .collect();
    store.write(&points).expect("write");
    store.flush().expect("flush");
    store.compact().expect("compact");
    let stats = store.stats();
    println!(
        "queries: dataset of {} points in {} segments, {:.3} bytes/point, built in {:.1} s",
        stats.segment_points,
        stats.segments,
        stats.bytes_per_point(),
        started.elapsed().as_secs_f64()
    );

    let mut group = criterion.benchmark_group("query");
    group.bench_function("latest", |bencher| {
        bencher.iter(|| store.latest(black_box("device-0")))
    });
    let day_from = Timestamp::from_millis(START_MS + 15 * DAY_MS);
    let day_to = Timestamp::from_millis(START_MS + 16 * DAY_MS);
    assert_eq!(
        store
            .range("device-0", "temperature", day_from, day_to)
            .expect("range")
            .len(),
        86_400
    );
    group.throughput(Throughput::Elements(86_400));
    group.bench_function("range_1_day_raw", |bencher| {
        bencher.iter(|| {
            store
                .range("device-0", "temperature", black_box(day_from), day_to)
                .expect("range")
        })
    });
    let month_from = Timestamp::from_millis(START_MS);
    let month_to = Timestamp::from_millis(START_MS + 30 * DAY_MS);
    assert_eq!(
        store
            .aggregate(
                "device-0",
                "temperature",
                month_from,
                month_to,
                Duration::from_secs(3600),
                Aggregation::Avg
            )
            .expect("aggregate")
            .len(),
        720
    );
    group.throughput(Throughput::Elements(30 * 86_400));
    group.bench_function("aggregate_30_days_hourly_avg", |bencher| {
        bencher.iter(|| {
            store
                .aggregate(
                    "device-0",
                    "temperature",
                    black_box(month_from),
                    month_to,
                    Duration::from_secs(3600),
                    Aggregation::Avg,
                )
                .expect("aggregate")
        })
    });
    group.throughput(Throughput::Elements(86_400));
    group.bench_function("aggregate_1_day_per_minute_max", |bencher| {
        bencher.iter(|| {
            store
                .aggregate(
                    "device-0",
                    "temperature",
                    black_box(day_from),
                    day_to,
                    Duration::from_secs(60),
                    Aggregation::Max,
                )
                .expect("aggregate")
        })
    });
    group.finish();
}

// What `criterion_group!` and `criterion_main!` expand to, without their undocumented
// `pub fn` that the `missing_docs` lint rejects.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    if std::env::args().all(|argument| argument != "--list") {
        compression();
    }
    ingest(&mut criterion);
    queries(&mut criterion);
    criterion.final_summary();
}
