//! Realistic sensor signals, as a pure and deterministic function of a seed and the
//! sample times: no clock, no I/O, no global randomness.
//!
//! Each simulated device owns one [`SignalGenerator`]. Its signals:
//! - **temperature** (°C): a per-device base of 18–24 °C, a daily cycle of 2–5 °C peaking
//!   at 15:00 UTC, slowly wandering noise (an Ornstein–Uhlenbeck process with a ten-minute
//!   memory and 0.3 °C spread), and rare spikes (about one in 500 samples, +6 to +12 °C,
//!   fading with a one-minute time constant), like a heater switched on next to the
//!   sensor;
//! - **humidity** (%): a per-device base of 35–60 %, moving against the daily temperature
//!   cycle, with its own noise, clamped to 0–100;
//! - **battery** (%): starts at 60–100 % and drains 0.5–2 % a day, never below 0;
//! - **door_open**: closed most of the time; opens about once every two hours and stays
//!   open for about two minutes (a two-state Markov process in continuous time, so the
//!   behaviour does not depend on the sampling rate).

use std::f64::consts::PI;
use std::fmt::Write;

use bytes::BytesMut;

const MS_PER_DAY: f64 = 86_400_000.0;
/// Mean reversion rate of the temperature noise, per second (ten-minute memory).
const TEMPERATURE_NOISE_RATE: f64 = 1.0 / 600.0;
/// Standard deviation of the temperature noise around the daily cycle, in °C.
const TEMPERATURE_NOISE_SPREAD: f64 = 0.3;
/// Chance that a sample starts a temperature spike.
const SPIKE_PROBABILITY: f64 = 0.002;
/// How fast a spike fades, in seconds.
const SPIKE_TIME_CONSTANT: f64 = 60.0;
/// Humidity noise: mean reversion per second, and spread in percentage points.
const HUMIDITY_NOISE_RATE: f64 = 1.0 / 900.0;
const HUMIDITY_NOISE_SPREAD: f64 = 1.5;
/// Door transitions per second: opening about every two hours, closing after about two
/// minutes.
const DOOR_OPEN_RATE: f64 = 1.0 / 7200.0;
const DOOR_CLOSE_RATE: f64 = 1.0 / 120.0;
/// Samples further apart than this are treated as this far apart (a long pause does not
/// make the noise jump).
const MAX_STEP_SECONDS: f64 = 3600.0;

/// One sample of a device's sensors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Sample time, milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// Temperature in °C.
    pub temperature: f64,
    /// Relative humidity in percent, 0–100.
    pub humidity: f64,
    /// Battery charge in percent, 0–100.
    pub battery: f64,
    /// Whether the door contact is open.
    pub is_door_open: bool,
}

impl Reading {
    /// The telemetry payload Fleetwire devices send on `devices/{id}/telemetry`:
    /// `{"ts":…,"temperature":…,"humidity":…,"battery":…,"door_open":…}`.
    pub fn to_json(&self) -> String {
        let mut json = BytesMut::with_capacity(96);
        self.write_json(&mut json);
        // Only ASCII was written.
        String::from_utf8_lossy(&json).into_owned()
    }

    /// Appends [`Reading::to_json`]'s text to `out` without allocating (beyond growing
    /// `out`): what the simulator does for every message.
    pub fn write_json(&self, out: &mut BytesMut) {
        struct Appender<'a>(&'a mut BytesMut);
        impl Write for Appender<'_> {
            fn write_str(&mut self, text: &str) -> std::fmt::Result {
                self.0.extend_from_slice(text.as_bytes());
                Ok(())
            }
        }
        // Appending to a buffer cannot fail.
        let _ = write!(
            Appender(out),
            "{{\"ts\":{},\"temperature\":{:.2},\"humidity\":{:.1},\"battery\":{:.2},\"door_open\":{}}}",
            self.ts_ms,
            self.temperature,
            self.humidity,
            self.battery,
            self.is_door_open
        );
    }
}

/// The signal state of one device. The same seed and device index with the same sample
/// times always give the same readings.
#[derive(Debug, Clone)]
pub struct SignalGenerator {
    rng: SplitMix64,
    base_temperature: f64,
    daily_amplitude: f64,
    temperature_noise: f64,
    spike: f64,
    base_humidity: f64,
    humidity_noise: f64,
    initial_battery: f64,
    drain_per_day: f64,
    first_ts_ms: Option<i64>,
    last_ts_ms: Option<i64>,
    is_door_open: bool,
}

impl SignalGenerator {
    /// The generator of device number `device` in a fleet simulated with `seed`.
    pub fn new(seed: u64, device: u64) -> SignalGenerator {
        let mut rng = SplitMix64::new(seed ^ device.wrapping_mul(0xA076_1D64_78BD_642F));
        // Mix once more so neighbouring devices do not start from neighbouring states.
        rng.next_u64();
        let base_temperature = rng.uniform(18.0, 24.0);
        let daily_amplitude = rng.uniform(2.0, 5.0);
        let temperature_noise = rng.normal() * TEMPERATURE_NOISE_SPREAD;
        let base_humidity = rng.uniform(35.0, 60.0);
        let humidity_noise = rng.normal() * HUMIDITY_NOISE_SPREAD;
        let initial_battery = rng.uniform(60.0, 100.0);
        let drain_per_day = rng.uniform(0.5, 2.0);
        SignalGenerator {
            rng,
            base_temperature,
            daily_amplitude,
            temperature_noise,
            spike: 0.0,
            base_humidity,
            humidity_noise,
            initial_battery,
            drain_per_day,
            first_ts_ms: None,
            last_ts_ms: None,
            is_door_open: false,
        }
    }

    /// The reading at `ts_ms` (milliseconds since the Unix epoch). Times should not go
    /// backwards; if they do, the step counts as zero.
    pub fn sample(&mut self, ts_ms: i64) -> Reading {
        let first = *self.first_ts_ms.get_or_insert(ts_ms);
        let step = self.last_ts_ms.map_or(0.0, |last| {
            ((ts_ms - last) as f64 / 1000.0).clamp(0.0, MAX_STEP_SECONDS)
        });
        self.last_ts_ms = Some(ts_ms);

        self.temperature_noise = ornstein_uhlenbeck(
            &mut self.rng,
            self.temperature_noise,
            step,
            TEMPERATURE_NOISE_RATE,
            TEMPERATURE_NOISE_SPREAD,
        );
        self.humidity_noise = ornstein_uhlenbeck(
            &mut self.rng,
            self.humidity_noise,
            step,
            HUMIDITY_NOISE_RATE,
            HUMIDITY_NOISE_SPREAD,
        );
        self.spike *= (-step / SPIKE_TIME_CONSTANT).exp();
        if self.rng.unit() < SPIKE_PROBABILITY {
            self.spike += self.rng.uniform(6.0, 12.0);
        }
        let change_rate = if self.is_door_open {
            DOOR_CLOSE_RATE
        } else {
            DOOR_OPEN_RATE
        };
        if self.rng.unit() < 1.0 - (-change_rate * step).exp() {
            self.is_door_open = !self.is_door_open;
        }

        // Daily cycle: minimum at 03:00 UTC, maximum at 15:00 UTC.
        let day_fraction = (ts_ms as f64).rem_euclid(MS_PER_DAY) / MS_PER_DAY;
        let cycle = (2.0 * PI * (day_fraction - 0.375)).sin();
        let temperature = self.base_temperature
            + self.daily_amplitude * cycle
            + self.temperature_noise
            + self.spike;
        let humidity = (self.base_humidity - 1.5 * self.daily_amplitude * cycle
            + self.humidity_noise)
            .clamp(0.0, 100.0);
        let days = (ts_ms - first).max(0) as f64 / MS_PER_DAY;
        let battery = (self.initial_battery - self.drain_per_day * days).clamp(0.0, 100.0);
        Reading {
            ts_ms,
            temperature,
            humidity,
            battery,
            is_door_open: self.is_door_open,
        }
    }
}

/// One exact step of an Ornstein–Uhlenbeck process with mean 0, reversion `rate` per
/// second and stationary standard deviation `spread`.
fn ornstein_uhlenbeck(rng: &mut SplitMix64, value: f64, step: f64, rate: f64, spread: f64) -> f64 {
    let decay = (-rate * step).exp();
    value * decay + spread * (1.0 - decay * decay).sqrt() * rng.normal()
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough for noise; chosen
/// over a crate so the sequence never changes under us.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(crate) fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// Standard normal, by the Box–Muller transform.
    pub(crate) fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1], so the logarithm is finite
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-03-01T00:00:00Z.
    const START_MS: i64 = 1_709_251_200_000;
    const MINUTE_MS: i64 = 60_000;

    fn series(seed: u64, device: u64, samples: i64, step_ms: i64) -> Vec<Reading> {
        let mut generator = SignalGenerator::new(seed, device);
        (0..samples)
            .map(|index| generator.sample(START_MS + index * step_ms))
            .collect()
    }

    #[test]
    fn same_seed_and_device_give_the_same_readings() {
        assert_eq!(series(7, 3, 500, 1000), series(7, 3, 500, 1000));
    }

    #[test]
    fn devices_and_seeds_differ() {
        assert_ne!(series(7, 3, 10, 1000), series(7, 4, 10, 1000));
        assert_ne!(series(7, 3, 10, 1000), series(8, 3, 10, 1000));
    }

    #[test]
    fn a_week_of_minutes_stays_in_realistic_ranges() {
        for device in 0..20 {
            for reading in series(42, device, 7 * 24 * 60, MINUTE_MS) {
                assert!(
                    (5.0..=45.0).contains(&reading.temperature),
                    "temperature {} out of range",
                    reading.temperature
                );
                assert!((0.0..=100.0).contains(&reading.humidity));
                assert!((0.0..=100.0).contains(&reading.battery));
            }
        }
    }

    #[test]
    fn afternoons_are_warmer_than_nights() {
        let readings = series(42, 1, 7 * 24 * 60, MINUTE_MS);
        let mean_at = |hour: i64| {
            let values: Vec<f64> = readings
                .iter()
                .filter(|r| (r.ts_ms - START_MS) / (60 * MINUTE_MS) % 24 == hour)
                .map(|r| r.temperature)
                .collect();
            values.iter().sum::<f64>() / values.len() as f64
        };
        assert!(mean_at(15) > mean_at(3) + 2.0);
    }

    #[test]
    fn battery_only_drains_and_slowly() {
        let readings = series(42, 5, 3 * 24 * 60, MINUTE_MS);
        for pair in readings.windows(2) {
            assert!(pair[1].battery <= pair[0].battery);
        }
        let first = readings.first().unwrap().battery;
        let last = readings.last().unwrap().battery;
        assert!(
            first - last > 1.0 && first - last < 7.0,
            "{first} -> {last}"
        );
    }

    #[test]
    fn spikes_are_rare_but_happen() {
        let mut spikes = 0;
        let mut total = 0;
        for device in 0..20 {
            let readings = series(42, device, 24 * 60, MINUTE_MS);
            for pair in readings.windows(2) {
                total += 1;
                if pair[1].temperature - pair[0].temperature > 4.0 {
                    spikes += 1;
                }
            }
        }
        assert!(spikes > 0, "no spike in {total} samples");
        assert!(spikes * 100 < total, "{spikes} spikes in {total} samples");
    }

    #[test]
    fn door_is_mostly_closed_and_opens_sometimes() {
        let readings = series(42, 9, 7 * 24 * 60, MINUTE_MS);
        let open = readings.iter().filter(|r| r.is_door_open).count();
        let openings = readings
            .windows(2)
            .filter(|pair| !pair[0].is_door_open && pair[1].is_door_open)
            .count();
        assert!(openings >= 10, "only {openings} openings in a week");
        assert!(
            open * 10 < readings.len(),
            "open {open} of {} minutes",
            readings.len()
        );
    }

    #[test]
    fn door_behaviour_does_not_depend_on_the_sampling_rate() {
        // Open fraction is about 120 / (7200 + 120) = 1.6 % whether sampled every second
        // or every minute.
        let fraction = |step_ms: i64, samples: i64| {
            let mut open = 0usize;
            for device in 0..10 {
                open += series(1, device, samples, step_ms)
                    .iter()
                    .filter(|r| r.is_door_open)
                    .count();
            }
            open as f64 / (10 * samples) as f64
        };
        let per_second = fraction(1000, 24 * 3600);
        let per_minute = fraction(MINUTE_MS, 7 * 24 * 60);
        assert!((0.005..0.04).contains(&per_second), "{per_second}");
        assert!((0.005..0.04).contains(&per_minute), "{per_minute}");
    }

    #[test]
    fn json_has_the_telemetry_fields() {
        let reading = Reading {
            ts_ms: START_MS,
            temperature: 21.456,
            humidity: 40.04,
            battery: 99.5,
            is_door_open: true,
        };
        assert_eq!(
            reading.to_json(),
            "{\"ts\":1709251200000,\"temperature\":21.46,\"humidity\":40.0,\"battery\":99.50,\"door_open\":true}"
        );
    }
}
