//! Fleetwire's store measured the way `scripts/bench/storage` measures PostgreSQL, SQLite and
//! DuckDB (issue 5): the same dataset, the same three queries, one JSON line of results.
//!
//! The dataset is deterministic (the signals of `benches/support/signals.rs`): `--devices`
//! devices report temperature, humidity, battery and door state every second for one day,
//! and the first of them, `device-000`, also for the `--history-days - 1` days before, so
//! one series holds `--history-days` days at 1 s for the hourly aggregate.
//!
//! What it does, in order:
//! 1. generates the dataset in memory;
//! 2. writes it as `<work-dir>/points.csv` (`device,field,ts,value`, `ts` in milliseconds
//!    since the epoch, rows sorted by device, field and time: the load order that suits a
//!    B-tree or zone maps best) for the other engines, unless `--no-csv`;
//! 3. opens a store in `<work-dir>/fleetwire` with the production configuration (`sync`
//!    durability: every write returns after its fsync) and writes the points from one
//!    thread in arrival order (second by second, every device reporting that second) in
//!    batches of `--batch` points, then flushes the head and compacts, and measures the
//!    directory (segments, write-ahead log and catalog);
//! 4. runs each query until it has `--repetitions` timings or `--query-seconds` have
//!    passed (at least 10 timings), after a warm-up, and reports the median and P99:
//!    - latest: the newest value of every field of the middle device of the fleet;
//!    - range: one day of that device's temperature, raw (86,400 points);
//!    - aggregate: hourly averages of `device-000`'s temperature over every day.
//!
//! Progress goes to stderr; the last line of stdout is a JSON object with the results and
//! the exact query parameters, which the script hands to the other engines.
//!
//! ```sh
//! cargo run --release -p fleetwire-store --example storage_compare -- --work-dir /tmp/storage
//! ```

#[path = "../benches/support/signals.rs"]
mod signals;

use std::fs::File;
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use fleetwire_store::{Aggregation, Point, Store, StoreConfig, Timestamp};
use serde_json::{Value, json};
use signals::{DAY_MS, FIELDS, START_MS, Sensor};

/// Timings taken before measuring, so caches and branch predictors are warm.
const WARM_UP_RUNS: usize = 5;
/// Fewest timings of a query, whatever the time budget says.
const MIN_RUNS: usize = 10;
/// The aggregation window of the aggregate query.
const HOUR_MS: i64 = 3_600_000;

/// Flags; see the module documentation.
#[derive(Debug, Parser)]
#[command(about = "Measure Fleetwire's store on the dataset shared with scripts/bench/storage")]
struct Args {
    /// Directory for the CSV and the store (its `fleetwire` subdirectory is replaced).
    #[arg(long)]
    work_dir: PathBuf,
    /// Devices reporting during the last day.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Days of history of `device-000` (the last of them is the fleet's day).
    #[arg(long, default_value_t = 30)]
    history_days: i64,
    /// Points per `Store::write` call.
    #[arg(long, default_value_t = 5000)]
    batch: usize,
    /// Timings per query.
    #[arg(long, default_value_t = 200)]
    repetitions: usize,
    /// Time budget per query, in seconds (at least 10 timings are taken regardless).
    #[arg(long, default_value_t = 20.0)]
    query_seconds: f64,
    /// Do not write the CSV (when only Fleetwire is measured).
    #[arg(long)]
    no_csv: bool,
}

/// Every point of the benchmark, generated once and kept in memory (8 bytes a point).
struct Dataset {
    names: Vec<String>,
    /// Timestamp of each device's first reading.
    first_ms: Vec<i64>,
    /// Each device's readings, one vector per field in the order of `FIELDS`, one value a
    /// second from `first_ms`.
    readings: Vec<[Vec<f64>; 4]>,
    start_ms: i64,
    fleet_start_ms: i64,
    end_ms: i64,
}

impl Dataset {
    fn generate(devices: usize, history_days: i64) -> Dataset {
        let width = devices.saturating_sub(1).to_string().len().max(3);
        let start_ms = START_MS;
        let end_ms = START_MS + history_days * DAY_MS;
        let fleet_start_ms = end_ms - DAY_MS;
        let mut dataset = Dataset {
            names: Vec::with_capacity(devices),
            first_ms: Vec::with_capacity(devices),
            readings: Vec::with_capacity(devices),
            start_ms,
            fleet_start_ms,
            end_ms,
        };
        for device in 0..devices {
            let first_ms = if device == 0 {
                start_ms
            } else {
                fleet_start_ms
            };
            let seconds = ((end_ms - first_ms) / 1000) as usize;
            let mut sensor = Sensor::new(device as u64);
            let mut readings: [Vec<f64>; 4] = std::array::from_fn(|_| Vec::with_capacity(seconds));
            for second in 0..seconds {
                let sample = sensor.sample(first_ms + second as i64 * 1000);
                for (values, value) in readings.iter_mut().zip(sample) {
                    values.push(value);
                }
            }
            dataset.names.push(format!("device-{device:0width$}"));
            dataset.first_ms.push(first_ms);
            dataset.readings.push(readings);
        }
        dataset
    }

    fn points(&self) -> u64 {
        self.readings
            .iter()
            .flatten()
            .map(|values| values.len() as u64)
            .sum()
    }

    /// The device of the latest and range queries: the middle of the fleet.
    fn probe_device(&self) -> &str {
        &self.names[self.names.len() / 2]
    }

    fn description(&self) -> Value {
        json!({
            "devices": self.names.len(),
            "fields": FIELDS,
            "history_device": self.names[0],
            "history_days": (self.end_ms - self.start_ms) / DAY_MS,
            "interval_ms": 1000,
            "start_ms": self.start_ms,
            "fleet_start_ms": self.fleet_start_ms,
            "end_ms": self.end_ms,
            "points": self.points(),
            "series": self.readings.len() * FIELDS.len(),
        })
    }

    /// The three queries, as parameters every engine runs with.
    fn queries(&self) -> Value {
        let mut fields = FIELDS.to_vec();
        fields.sort_unstable();
        json!({
            "latest": { "device": self.probe_device(), "fields": fields },
            "range": {
                "device": self.probe_device(),
                "field": "temperature",
                "from_ms": self.fleet_start_ms,
                "to_ms": self.end_ms,
            },
            "aggregate": {
                "device": self.names[0],
                "field": "temperature",
                "from_ms": self.start_ms,
                "to_ms": self.end_ms,
                "every_ms": HOUR_MS,
                "function": "avg",
            },
        })
    }

    /// Writes `device,field,ts,value` rows sorted by device, field and time.
    fn write_csv(&self, path: &Path) -> std::io::Result<u64> {
        let mut fields: Vec<usize> = (0..FIELDS.len()).collect();
        fields.sort_unstable_by_key(|&field| FIELDS[field]);
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        writeln!(out, "device,field,ts,value")?;
        let mut rows = 0;
        for ((name, &first_ms), readings) in
            self.names.iter().zip(&self.first_ms).zip(&self.readings)
        {
            for &field in &fields {
                for (second, value) in readings[field].iter().enumerate() {
                    let timestamp = first_ms + second as i64 * 1000;
                    writeln!(out, "{name},{},{timestamp},{value}", FIELDS[field])?;
                    rows += 1;
                }
            }
        }
        out.into_inner()?.sync_all()?;
        Ok(rows)
    }

    /// Writes every point in arrival order, second by second, in batches of `batch`;
    /// returns the time each `write` took.
    fn ingest(&self, store: &Store, batch: usize) -> Vec<Duration> {
        let mut latencies = Vec::new();
        let mut points: Vec<Point<'_>> = Vec::with_capacity(batch);
        let mut write = |points: &mut Vec<Point<'_>>| {
            let started = Instant::now();
            store.write(points).expect("write a batch");
            latencies.push(started.elapsed());
            points.clear();
        };
        let mut timestamp = self.start_ms;
        while timestamp < self.end_ms {
            // Only device-000 reports before the fleet's day; the others start with it.
            let reporting = if timestamp < self.fleet_start_ms {
                1
            } else {
                self.names.len()
            };
            for device in 0..reporting {
                let second = ((timestamp - self.first_ms[device]) / 1000) as usize;
                for (field, values) in FIELDS.iter().zip(&self.readings[device]) {
                    points.push(Point::new(
                        &self.names[device],
                        field,
                        Timestamp::from_millis(timestamp),
                        values[second],
                    ));
                    if points.len() == batch {
                        write(&mut points);
                    }
                }
            }
            timestamp += 1000;
        }
        if !points.is_empty() {
            write(&mut points);
        }
        latencies
    }
}

/// Median, P99 and friends of a set of timings, in microseconds.
fn distribution(mut samples: Vec<Duration>) -> Value {
    samples.sort_unstable();
    let micros = |duration: Duration| duration.as_secs_f64() * 1e6;
    let percentile = |fraction: f64| {
        // Nearest rank; the epsilon keeps 0.99 * 200 from rounding up to 199.
        let rank = (fraction * samples.len() as f64 - 1e-9).ceil() as usize;
        micros(samples[rank.clamp(1, samples.len()) - 1])
    };
    let total: Duration = samples.iter().sum();
    json!({
        "runs": samples.len(),
        "median_us": percentile(0.5),
        "p99_us": percentile(0.99),
        "min_us": micros(samples[0]),
        "max_us": micros(samples[samples.len() - 1]),
        "mean_us": micros(total) / samples.len() as f64,
    })
}

/// Times `query` after a warm-up, `repetitions` times or until `budget` is spent.
fn measure<T>(repetitions: usize, budget: Duration, mut query: impl FnMut() -> T) -> Value {
    for _ in 0..WARM_UP_RUNS {
        black_box(query());
    }
    let mut samples = Vec::with_capacity(repetitions);
    let started = Instant::now();
    while samples.len() < repetitions.max(1)
        && (samples.len() < MIN_RUNS || started.elapsed() < budget)
    {
        let run = Instant::now();
        black_box(query());
        samples.push(run.elapsed());
    }
    distribution(samples)
}

/// Bytes of the files under `path`, by top-level entry name.
fn sizes(path: &Path) -> std::io::Result<Vec<(String, u64)>> {
    fn total(path: &Path) -> std::io::Result<u64> {
        let metadata = std::fs::symlink_metadata(path)?;
        if !metadata.is_dir() {
            return Ok(metadata.len());
        }
        let mut bytes = 0;
        for entry in std::fs::read_dir(path)? {
            bytes += total(&entry?.path())?;
        }
        Ok(bytes)
    }
    let mut sizes = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        sizes.push((
            entry.file_name().to_string_lossy().into_owned(),
            total(&entry.path())?,
        ));
    }
    sizes.sort();
    Ok(sizes)
}

fn main() {
    let args = Args::parse();
    assert!(args.devices >= 1, "--devices: expected at least 1");
    assert!(
        args.history_days >= 1,
        "--history-days: expected at least 1"
    );
    assert!(args.batch >= 1, "--batch: expected at least 1");
    let budget = Duration::from_secs_f64(args.query_seconds.max(0.0));
    std::fs::create_dir_all(&args.work_dir).expect("create the work directory");

    let started = Instant::now();
    let dataset = Dataset::generate(args.devices, args.history_days);
    let points = dataset.points();
    eprintln!(
        "generated {points} points of {} series in {:.1} s",
        dataset.readings.len() * FIELDS.len(),
        started.elapsed().as_secs_f64()
    );

    let mut csv = Value::Null;
    if !args.no_csv {
        let path = args.work_dir.join("points.csv");
        let started = Instant::now();
        let rows = dataset.write_csv(&path).expect("write the CSV");
        let bytes = std::fs::metadata(&path).map_or(0, |metadata| metadata.len());
        eprintln!(
            "wrote {rows} rows ({:.0} MiB) to {} in {:.1} s",
            bytes as f64 / 1_048_576.0,
            path.display(),
            started.elapsed().as_secs_f64()
        );
        csv = json!({ "path": path, "rows": rows, "bytes": bytes });
    }

    let directory = args.work_dir.join("fleetwire");
    if directory.exists() {
        std::fs::remove_dir_all(&directory).expect("remove the previous store");
    }
    let config = StoreConfig::default();
    let store = Store::open(&directory, config.clone()).expect("open the store");
    let started = Instant::now();
    let latencies = dataset.ingest(&store, args.batch);
    let write_seconds = started.elapsed().as_secs_f64();
    let finishing = Instant::now();
    store.flush().expect("flush");
    store.compact().expect("compact");
    let finish_seconds = finishing.elapsed().as_secs_f64();
    let ingest_seconds = started.elapsed().as_secs_f64();
    let batches = latencies.len();
    eprintln!(
        "wrote {points} points in {batches} batches in {write_seconds:.1} s ({:.0} points/s), flushed and compacted in {finish_seconds:.1} s",
        points as f64 / write_seconds
    );

    let stats = store.stats();
    assert_eq!(stats.points(), points, "the store holds every point once");
    let parts = sizes(&directory).expect("measure the store's directory");
    let bytes: u64 = parts.iter().map(|(_, bytes)| bytes).sum();
    eprintln!(
        "store: {bytes} bytes on disk, {:.3} bytes/point ({} segments, {:.3} segment bytes/point)",
        bytes as f64 / points as f64,
        stats.segments,
        stats.bytes_per_point()
    );

    let queries = dataset.queries();
    let device = dataset.probe_device();
    let latest = store.latest(device);
    assert_eq!(latest.len(), FIELDS.len(), "latest has every field");
    let latest_check = json!({
        "rows": latest.len(),
        "sum": latest.values().map(|sample| sample.value).sum::<f64>(),
        "max_ts": latest.values().map(|sample| sample.timestamp.as_millis()).max(),
    });
    let latest_timing = measure(args.repetitions, budget, || store.latest(device));

    let (day_from, day_to) = (
        Timestamp::from_millis(dataset.fleet_start_ms),
        Timestamp::from_millis(dataset.end_ms),
    );
    let range = store
        .range(device, "temperature", day_from, day_to)
        .expect("range");
    assert_eq!(range.len(), 86_400, "one day at 1 s");
    let range_check = json!({
        "rows": range.len(),
        "sum": range.iter().map(|sample| sample.value).sum::<f64>(),
    });
    let range_timing = measure(args.repetitions, budget, || {
        store
            .range(device, "temperature", black_box(day_from), day_to)
            .expect("range")
    });

    let history = &dataset.names[0];
    let (all_from, all_to) = (
        Timestamp::from_millis(dataset.start_ms),
        Timestamp::from_millis(dataset.end_ms),
    );
    let hourly = |from: Timestamp| {
        store
            .aggregate(
                history,
                "temperature",
                from,
                all_to,
                Duration::from_millis(HOUR_MS as u64),
                Aggregation::Avg,
            )
            .expect("aggregate")
    };
    let aggregate = hourly(all_from);
    assert_eq!(
        aggregate.len() as i64,
        args.history_days * 24,
        "one average an hour"
    );
    let aggregate_check = json!({
        "rows": aggregate.len(),
        "sum": aggregate.iter().map(|sample| sample.value).sum::<f64>(),
    });
    let aggregate_timing = measure(args.repetitions, budget, || hourly(black_box(all_from)));

    let mut results = json!({
        "latest": latest_timing,
        "range": range_timing,
        "aggregate": aggregate_timing,
    });
    for (name, check) in [
        ("latest", latest_check),
        ("range", range_check),
        ("aggregate", aggregate_check),
    ] {
        results[name]["check"] = check;
        eprintln!(
            "{name}: median {:.1} µs, p99 {:.1} µs over {} runs",
            results[name]["median_us"].as_f64().unwrap_or(f64::NAN),
            results[name]["p99_us"].as_f64().unwrap_or(f64::NAN),
            results[name]["runs"]
        );
    }
    store.close().expect("close the store");

    let report = json!({
        "engine": "fleetwire",
        "version": format!("fleetwire-store {}", env!("CARGO_PKG_VERSION")),
        "dataset": dataset.description(),
        "query_parameters": queries,
        "csv": csv,
        "ingest": {
            "method": format!("Store::write from one thread, {}-point batches in arrival order, sync durability (fsync per batch), then flush and compaction", args.batch),
            "points": points,
            "batches": batches,
            "seconds": ingest_seconds,
            "points_per_sec": points as f64 / ingest_seconds,
            "write_seconds": write_seconds,
            "write_points_per_sec": points as f64 / write_seconds,
            "finish_seconds": finish_seconds,
            "batch_latency": distribution(latencies),
        },
        "size": {
            "bytes": bytes,
            "bytes_per_point": bytes as f64 / points as f64,
            "parts": parts.iter().map(|(name, bytes)| (name.clone(), json!(bytes))).collect::<serde_json::Map<_, _>>(),
            "segments": stats.segments,
            "segment_bytes_per_point": stats.bytes_per_point(),
            "counted": "the store's directory: segments, write-ahead log and catalog",
        },
        "queries": results,
        "config": {
            "durability": format!("{:?}", config.durability),
            "partition_duration_s": config.partition_duration.as_secs(),
            "head_max_points": config.head_max_points,
        },
    });
    println!("{report}");
}
