//! The simulated sensor data of the store's benchmarks: one device's temperature, humidity,
//! battery and door sensors sampled every second, deterministic from the device number.
//!
//! It follows `fleetwire-sim`'s model (daily temperature cycle with slow noise and spikes
//! at 0.01 °C, humidity at 0.1 %, battery draining at 0.01 %, a door opening about every
//! two hours) without depending on the simulator's async stack. Shared by
//! `benches/store.rs` and `examples/storage_compare.rs` through `#[path]`.

use std::f64::consts::PI;

/// The fields of every device, in the order [`Sensor::sample`] returns them.
pub(crate) const FIELDS: [&str; 4] = ["temperature", "humidity", "battery", "door_open"];
/// One day in milliseconds.
pub(crate) const DAY_MS: i64 = 86_400_000;
/// Where simulated time starts: 2026-01-01T00:00:00Z.
pub(crate) const START_MS: i64 = 1_767_225_600_000;

/// One simulated device's sensors, sampled every second.
pub(crate) struct Sensor {
    rng: u64,
    base_temperature: f64,
    daily_amplitude: f64,
    temperature_noise: f64,
    spike: f64,
    base_humidity: f64,
    humidity_noise: f64,
    initial_battery: f64,
    drain_per_day: f64,
    is_door_open: bool,
}

impl Sensor {
    /// The sensors of device number `device`; the same number gives the same signals.
    pub(crate) fn new(device: u64) -> Sensor {
        let mut sensor = Sensor {
            rng: device.wrapping_mul(0xA076_1D64_78BD_642F) ^ 0x5EED,
            base_temperature: 0.0,
            daily_amplitude: 0.0,
            temperature_noise: 0.0,
            spike: 0.0,
            base_humidity: 0.0,
            humidity_noise: 0.0,
            initial_battery: 0.0,
            drain_per_day: 0.0,
            is_door_open: false,
        };
        sensor.base_temperature = sensor.uniform(18.0, 24.0);
        sensor.daily_amplitude = sensor.uniform(2.0, 5.0);
        sensor.base_humidity = sensor.uniform(35.0, 60.0);
        sensor.initial_battery = sensor.uniform(60.0, 100.0);
        sensor.drain_per_day = sensor.uniform(0.5, 2.0);
        sensor
    }

    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    fn normal(&mut self) -> f64 {
        (-2.0 * self.unit().ln()).sqrt() * (2.0 * PI * self.unit()).cos()
    }

    /// The four readings at `ts_ms`, one second after the previous sample, in the order
    /// of [`FIELDS`].
    pub(crate) fn sample(&mut self, ts_ms: i64) -> [f64; 4] {
        let (temperature_decay, humidity_decay): (f64, f64) =
            ((-1.0f64 / 600.0).exp(), (-1.0f64 / 900.0).exp());
        self.temperature_noise = self.temperature_noise * temperature_decay
            + 0.3 * (1.0 - temperature_decay * temperature_decay).sqrt() * self.normal();
        self.humidity_noise = self.humidity_noise * humidity_decay
            + 1.5 * (1.0 - humidity_decay * humidity_decay).sqrt() * self.normal();
        self.spike *= (-1.0f64 / 60.0).exp();
        if self.unit() < 0.002 {
            self.spike += self.uniform(6.0, 12.0);
        }
        let day_phase =
            2.0 * PI * ((ts_ms.rem_euclid(DAY_MS) as f64 / DAY_MS as f64) - 15.0 / 24.0);
        let cycle = day_phase.cos();
        let temperature = self.base_temperature
            + self.daily_amplitude * cycle
            + self.temperature_noise
            + self.spike;
        let humidity = (self.base_humidity - 2.0 * self.daily_amplitude * cycle
            + self.humidity_noise)
            .clamp(0.0, 100.0);
        let days = (ts_ms - START_MS) as f64 / DAY_MS as f64;
        let battery = (self.initial_battery - self.drain_per_day * days).max(0.0);
        let flip = if self.is_door_open {
            1.0 / 120.0
        } else {
            1.0 / 7200.0
        };
        if self.unit() < flip {
            self.is_door_open = !self.is_door_open;
        }
        [
            (temperature * 100.0).round() / 100.0,
            (humidity * 10.0).round() / 10.0,
            (battery * 100.0).round() / 100.0,
            if self.is_door_open { 1.0 } else { 0.0 },
        ]
    }
}
