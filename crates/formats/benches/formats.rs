//! Parser throughput, in points per second (criterion's elements/s):
//!
//! - `line_protocol/telegraf_cpu_3_fields`: a 5,000-line body of
//!   `cpu,host=h1,device=d42 usage_user=12.5,usage_system=3.25,usage_idle=84.25 <ns>`
//!   across 100 devices;
//! - `line_protocol/telegraf_cpu_10_fields`: Telegraf's full `cpu` input line (ten float
//!   fields, `cpu` and `host` tags), 1,000 lines;
//! - `line_protocol/with_string_fields`: lines with a string field to skip;
//! - `json/simulator_payload`: one `{"temperature":…,"humidity":…,"battery":…,"door":…}`
//!   message, as the simulator publishes (4 points), parsed per call like MQTT messages;
//! - `json/flat_form`: the `device_id` / `timestamp` flat form (2 points);
//! - `json/array_100_rows`: a 100-row array with `ts` (400 points).
//!
//! The end-to-end target is 1,000,000 points/s over HTTP on 2 cores, so the parsers should
//! do well over 5,000,000 points/s on one. Run with
//! `cargo bench -p fleetwire-formats --bench formats`.

use std::hint::black_box;

use criterion::{Criterion, Throughput};
use fleetwire_formats::{Limits, Precision, parse_line_protocol, parse_telemetry};
use fleetwire_store::Timestamp;

const START_NS: i64 = 1_700_000_000_000_000_000;
const RECEIVED_AT: Timestamp = Timestamp::from_millis(1_700_000_000_000);

/// A small deterministic generator of sensor-looking values.
struct Values(u64);

impl Values {
    fn next(&mut self, low: f64, high: f64) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let unit = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        low + unit * (high - low)
    }
}

fn telegraf_cpu_3_fields(lines: usize) -> (Vec<u8>, u64) {
    let mut values = Values(1);
    let mut body = String::new();
    for line in 0..lines {
        let user = values.next(0.0, 50.0);
        let system = values.next(0.0, 10.0);
        body.push_str(&format!(
            "cpu,host=h{},device=d{} usage_user={:.2},usage_system={:.2},usage_idle={:.2} {}\n",
            line % 7,
            line % 100,
            user,
            system,
            100.0 - user - system,
            START_NS + (line / 100) as i64 * 10_000_000_000
        ));
    }
    (body.into_bytes(), lines as u64 * 3)
}

fn telegraf_cpu_10_fields(lines: usize) -> (Vec<u8>, u64) {
    let mut values = Values(2);
    let mut body = String::new();
    for line in 0..lines {
        body.push_str(&format!(
            "cpu,cpu=cpu{},host=server-{:03} ",
            line % 8,
            line / 8
        ));
        for (index, field) in [
            "usage_guest",
            "usage_guest_nice",
            "usage_idle",
            "usage_iowait",
            "usage_irq",
            "usage_nice",
            "usage_softirq",
            "usage_steal",
            "usage_system",
            "usage_user",
        ]
        .iter()
        .enumerate()
        {
            let separator = if index == 0 { "" } else { "," };
            body.push_str(&format!("{separator}{field}={}", values.next(0.0, 100.0)));
        }
        body.push_str(&format!(" {START_NS}\n"));
    }
    (body.into_bytes(), lines as u64 * 10)
}

fn with_string_fields(lines: usize) -> (Vec<u8>, u64) {
    let mut body = String::new();
    for line in 0..lines {
        body.push_str(&format!(
            "procstat,host=h1,process_name=nginx pid={}i,cpu_usage=1.5,memory_rss=123456i,cmdline=\"/usr/sbin/nginx -g daemon off;\",result=\"success\" {START_NS}\n",
            1000 + line
        ));
    }
    (body.into_bytes(), lines as u64 * 3)
}

fn line_protocol(criterion: &mut Criterion) {
    let limits = Limits::default();
    let mut group = criterion.benchmark_group("line_protocol");
    for (name, (body, points)) in [
        ("telegraf_cpu_3_fields", telegraf_cpu_3_fields(5_000)),
        ("telegraf_cpu_10_fields", telegraf_cpu_10_fields(1_000)),
        ("with_string_fields", with_string_fields(1_000)),
    ] {
        let parsed = parse_line_protocol(&body, Precision::Nanoseconds, RECEIVED_AT, &limits)
            .expect("the bench body parses");
        assert_eq!(parsed.points.len() as u64, points);
        group.throughput(Throughput::Elements(points));
        group.bench_function(name, |bencher| {
            bencher.iter(|| {
                parse_line_protocol(
                    black_box(&body),
                    Precision::Nanoseconds,
                    RECEIVED_AT,
                    &limits,
                )
            })
        });
    }
    group.finish();
}

fn json(criterion: &mut Criterion) {
    let limits = Limits::default();
    let mut values = Values(3);
    // Different payloads per iteration would measure the generator; a ring of them keeps
    // the branch predictor honest without that.
    let simulator: Vec<Vec<u8>> = (0..64)
        .map(|_| {
            format!(
                "{{\"temperature\":{:.2},\"humidity\":{:.1},\"battery\":{:.1},\"door\":{}}}",
                values.next(18.0, 26.0),
                values.next(30.0, 60.0),
                values.next(20.0, 100.0),
                values.next(0.0, 1.0) < 0.1
            )
            .into_bytes()
        })
        .collect();
    let flat = br#"{"device_id":"sensor-0042","temperature":21.5,"humidity":40.0,"timestamp":1700000000.125}"#.to_vec();
    let array = {
        let rows: Vec<String> = (0..100)
            .map(|row| {
                format!(
                    "{{\"ts\":{},\"temperature\":{:.2},\"humidity\":{:.1},\"battery\":{:.1},\"door_open\":false}}",
                    1_700_000_000_000i64 + row * 1000,
                    values.next(18.0, 26.0),
                    values.next(30.0, 60.0),
                    values.next(20.0, 100.0)
                )
            })
            .collect();
        format!("[{}]", rows.join(",")).into_bytes()
    };

    let mut group = criterion.benchmark_group("json");
    group.throughput(Throughput::Elements(4));
    let mut next = 0;
    group.bench_function("simulator_payload", |bencher| {
        bencher.iter(|| {
            next = (next + 1) % simulator.len();
            parse_telemetry(black_box(&simulator[next]), RECEIVED_AT, &limits)
        })
    });
    group.throughput(Throughput::Elements(2));
    group.bench_function("flat_form", |bencher| {
        bencher.iter(|| parse_telemetry(black_box(&flat), RECEIVED_AT, &limits))
    });
    group.throughput(Throughput::Elements(400));
    group.bench_function("array_100_rows", |bencher| {
        bencher.iter(|| parse_telemetry(black_box(&array), RECEIVED_AT, &limits))
    });
    group.finish();
}

// What `criterion_group!` and `criterion_main!` expand to, without their undocumented
// `pub fn` that the `missing_docs` lint rejects.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    line_protocol(&mut criterion);
    json(&mut criterion);
    criterion.final_summary();
}
