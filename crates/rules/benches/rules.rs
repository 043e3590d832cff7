//! The rule engine's performance target (issue 6): at least 1,000,000 rule evaluations per
//! second for 100 rules on one core, each rule compiled once.
//!
//! - `compile/typical_condition`: parse, type-check and compile one condition;
//! - `evaluate/one_message_100_matching_rules`: one message of 4 fields against 100 rules
//!   that all match the device (throughput in rule evaluations);
//! - `evaluate/fleet_round_1000_devices`: one message from each of 1,000 devices of three
//!   types and four sites, against 100 rules selecting by nothing, type, label or id list
//!   (throughput in rule evaluations, about 40 matching rules per message).
//!
//! Run with `cargo bench -p fleetwire-rules --bench rules`. Signals are deterministic:
//! temperature around 22 °C with noise and rare spikes, humidity around 45 %, a draining
//! battery, a door opening now and then, so some rules raise and clear as they would in a
//! fleet.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use fleetwire_model::{DeviceId, DeviceInfo, RuleId, RuleMatch};
use fleetwire_rules::{Engine, Expression, FieldTable, RuleDefinition};

const TYPICAL: &str = "temperature > 30 and humidity < 80 or abs(delta(pressure)) > 5";
const START_MS: i64 = 1_767_225_600_000;
const SITES: [&str; 4] = ["north", "south", "east", "west"];
const TYPES: [&str; 3] = ["sensor", "gateway", "meter"];

/// Rule `index` of a varied set: plain thresholds, logic, functions, `for`, `clear`.
fn definition(index: usize, selector: RuleMatch) -> RuleDefinition {
    let n = index as f64;
    let t = 24.0 + (index % 7) as f64;
    let (condition, clear, for_seconds) = match index % 10 {
        0 => (format!("temperature > {t}"), None, None),
        1 => (
            format!("temperature > {t} and humidity < {}", 50.0 + n % 5.0),
            None,
            None,
        ),
        2 => (
            format!(
                "humidity > {} or temperature < {}",
                55.0 + n % 3.0,
                15.0 + n % 4.0
            ),
            None,
            None,
        ),
        3 => (
            format!("abs(delta(temperature)) > {}", 1.0 + n % 3.0),
            None,
            None,
        ),
        4 => ("rate(battery) < -0.5".to_owned(), None, None),
        5 => (
            format!("door_open == true and temperature > {t}"),
            None,
            Some(30),
        ),
        6 => (
            format!("max(temperature, humidity / 2) > {t}"),
            Some(format!("max(temperature, humidity / 2) < {}", t - 2.0)),
            None,
        ),
        7 => (
            format!("battery < {}", 20.0 + n % 10.0),
            Some(format!("battery > {}", 25.0 + n % 10.0)),
            None,
        ),
        8 => (
            format!("not (temperature >= 15 and temperature <= {t})"),
            None,
            Some(10),
        ),
        _ => (
            format!("(temperature - 32) * 5 / 9 > {} or humidity > 70", t - 25.0),
            None,
            None,
        ),
    };
    RuleDefinition {
        id: RuleId::new(format!("rule-{index}")).expect("a plain-name id"),
        selector,
        condition,
        for_duration: for_seconds.map(Duration::from_secs),
        clear,
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One device's sensors, sampled every second.
struct Sensor {
    rng: Rng,
    second: u64,
    battery: f64,
    door_open: f64,
}

impl Sensor {
    fn new(seed: u64) -> Sensor {
        Sensor {
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            second: 0,
            battery: 100.0,
            door_open: 0.0,
        }
    }

    fn next(&mut self) -> (i64, [(&'static str, f64); 4]) {
        self.second += 1;
        let noise = self.rng.next_f64() - 0.5;
        let spike = if self.rng.next_f64() < 0.01 {
            10.0
        } else {
            0.0
        };
        let temperature = 22.0 + 3.0 * (self.second as f64 / 600.0).sin() + noise + spike;
        let humidity = 45.0 + 10.0 * (self.second as f64 / 900.0).cos() + 2.0 * noise;
        self.battery = (self.battery - 0.001).max(0.0);
        if self.rng.next_f64() < 0.005 {
            self.door_open = 1.0 - self.door_open;
        }
        let timestamp = START_MS + self.second as i64 * 1000;
        (
            timestamp,
            [
                ("temperature", temperature),
                ("humidity", humidity),
                ("battery", self.battery),
                ("door_open", self.door_open),
            ],
        )
    }
}

fn compile(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("compile");
    let mut fields = FieldTable::default();
    group.bench_function("typical_condition", |bencher| {
        bencher.iter(|| {
            Expression::compile_condition(black_box(TYPICAL), &mut fields).expect("compiles")
        })
    });
    group.finish();
}

fn evaluate(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("evaluate");

    let mut engine = Engine::new((0..100).map(|index| definition(index, RuleMatch::default())))
        .expect("rules compile");
    let labels = BTreeMap::from([("site".to_owned(), "north".to_owned())]);
    let device = DeviceInfo {
        id: DeviceId::new("sensor-1").expect("a plain-name id"),
        device_type: "sensor".to_owned(),
        labels,
    };
    let mut sensor = Sensor::new(1);
    let mut transitions = Vec::new();
    group.throughput(Throughput::Elements(100));
    group.bench_function("one_message_100_matching_rules", |bencher| {
        bencher.iter(|| {
            let (timestamp, fields) = sensor.next();
            transitions.clear();
            engine.evaluate(&device, timestamp, black_box(&fields), &mut transitions);
            black_box(transitions.len())
        })
    });

    // The fleet: 1,000 devices, rules by nothing, type, site label, or a list of 10 ids.
    let ids: Vec<DeviceId> = (0..1000)
        .map(|index| DeviceId::new(format!("device-{index:04}")).expect("a plain-name id"))
        .collect();
    let labels: Vec<BTreeMap<String, String>> = (0..1000)
        .map(|index| BTreeMap::from([("site".to_owned(), SITES[index % 4].to_owned())]))
        .collect();
    let devices: Vec<DeviceInfo> = (0..1000)
        .map(|index| DeviceInfo {
            id: ids[index].clone(),
            device_type: TYPES[index % 3].to_owned(),
            labels: labels[index].clone(),
        })
        .collect();
    let rules = (0..100).map(|index| {
        let selector = match index % 4 {
            0 => RuleMatch::default(),
            1 => RuleMatch {
                device_type: Some(TYPES[index % 3].to_owned()),
                ..RuleMatch::default()
            },
            2 => RuleMatch {
                labels: BTreeMap::from([(
                    "site".to_owned(),
                    SITES[index % 4 / 2 + index % 3].to_owned(),
                )]),
                ..RuleMatch::default()
            },
            _ => RuleMatch {
                devices: (0..10)
                    .map(|offset| ids[(index * 37 + offset * 101) % 1000].clone())
                    .collect(),
                ..RuleMatch::default()
            },
        };
        definition(index, selector)
    });
    let mut engine = Engine::new(rules).expect("rules compile");
    let matching: usize = devices
        .iter()
        .map(|device| {
            engine
                .rules()
                .filter(|rule| rule.selector.matches(device))
                .count()
        })
        .sum();
    println!(
        "evaluate/fleet_round_1000_devices: {matching} rule evaluations per round ({:.1} matching rules per message)",
        matching as f64 / 1000.0
    );
    let mut sensors: Vec<Sensor> = (0..1000).map(|index| Sensor::new(index + 7)).collect();
    group.throughput(Throughput::Elements(matching as u64));
    group.bench_function("fleet_round_1000_devices", |bencher| {
        bencher.iter(|| {
            transitions.clear();
            for (device, sensor) in devices.iter().zip(&mut sensors) {
                let (timestamp, fields) = sensor.next();
                engine.evaluate(device, timestamp, &fields, &mut transitions);
            }
            black_box(transitions.len())
        })
    });
    group.finish();
}

// What `criterion_group!` and `criterion_main!` expand to, without their undocumented
// `pub fn` that the `missing_docs` lint rejects.
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    compile(&mut criterion);
    evaluate(&mut criterion);
    criterion.final_summary();
}
