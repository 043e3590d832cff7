//! The block codec: the timestamps and values of up to a few thousand points of one series,
//! compressed into one bit stream. Hand-written because it is the heart of the engine's size
//! and speed, and small enough to own.
//!
//! Layout (most significant bit first):
//!
//! ```text
//! count:u32  first_timestamp:i64  timestamp deltas-of-deltas...  value_mode:u2  values...
//! ```
//!
//! - **Timestamps**: delta-of-delta as in Facebook's Gorilla paper, with buckets sized for
//!   millisecond clocks: `0` (same interval), `10`+7 bits, `110`+9, `1110`+12, `11110`+32,
//!   `11111`+64 (zig-zag). All arithmetic wraps, so any `i64` sequence round-trips.
//! - **Values, decimal mode** (most sensor data): when every value of the block is exactly
//!   `n / 10^k` for integers `n` (checked bit for bit, so `-0.0`, NaN and infinities never
//!   take this path), the block stores `k`, then the zig-zag differences of consecutive
//!   `n` in Rice code with a per-block parameter. A temperature printed with two decimals
//!   costs 3–4 bits instead of Gorilla's 40+, because its binary mantissa is noise.
//!   This is the idea behind ALP and `pco`'s float modes, in 100 lines.
//! - **Values, XOR mode** (anything else): Gorilla's XOR with the previous value, reusing the
//!   previous leading/trailing-zero window when it fits. Keeps every bit pattern.

use crate::bits::{BitReader, BitWriter};

/// Value encodings, stored in two bits.
const MODE_XOR: u64 = 0;
const MODE_DECIMAL: u64 = 1;
/// Largest decimal exponent tried (`10^8` is exact in `f64`, and sensors rarely print more).
const MAX_SCALE: usize = 8;
const POWERS_OF_TEN: [f64; MAX_SCALE + 1] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8];
/// Scaled integers must stay exactly representable.
const MAX_SCALED: f64 = 9_007_199_254_740_992.0;
/// Rice codes with a quotient of this many ones or more store the value raw instead.
const RICE_ESCAPE: u32 = 24;

/// Summary of a block, kept in the segment index so aggregates can skip decoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Summary {
    pub(crate) count: u32,
    pub(crate) min_timestamp: i64,
    pub(crate) max_timestamp: i64,
    pub(crate) sum: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) first: f64,
    pub(crate) last: f64,
}

impl Summary {
    /// Summary of sorted, non-empty points.
    pub(crate) fn of(timestamps: &[i64], values: &[f64]) -> Summary {
        let mut sum = 0.0;
        let mut min = f64::NAN;
        let mut max = f64::NAN;
        for &value in values {
            sum += value;
            min = min.min(value);
            max = max.max(value);
        }
        Summary {
            count: u32::try_from(values.len()).unwrap_or(u32::MAX),
            min_timestamp: timestamps.first().copied().unwrap_or(0),
            max_timestamp: timestamps.last().copied().unwrap_or(0),
            sum,
            min,
            max,
            first: values.first().copied().unwrap_or(f64::NAN),
            last: values.last().copied().unwrap_or(f64::NAN),
        }
    }
}

#[inline]
fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

#[inline]
fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Encodes sorted points (timestamps strictly increasing is not required for correctness,
/// only for size). `timestamps` and `values` have the same length, at most `u32::MAX`.
pub(crate) fn encode(timestamps: &[i64], values: &[f64]) -> Vec<u8> {
    debug_assert_eq!(timestamps.len(), values.len());
    let count = timestamps.len().min(values.len()).min(u32::MAX as usize);
    let mut writer = BitWriter::with_capacity(count / 2 + 32);
    writer.write(count as u64, 32);
    if count == 0 {
        return writer.finish();
    }
    encode_timestamps(&mut writer, &timestamps[..count]);
    let values = &values[..count];
    match decimal_scale(values) {
        Some((scale, integers)) => {
            writer.write(MODE_DECIMAL, 2);
            encode_decimal(&mut writer, scale, &integers);
        }
        None => {
            writer.write(MODE_XOR, 2);
            encode_xor(&mut writer, values);
        }
    }
    writer.finish()
}

/// Decodes a block into the two vectors (appending). The error says what is malformed.
pub(crate) fn decode(
    bytes: &[u8],
    timestamps: &mut Vec<i64>,
    values: &mut Vec<f64>,
) -> Result<(), String> {
    let mut reader = BitReader::new(bytes);
    let count = reader.read(32) as usize;
    if count == 0 {
        return Ok(());
    }
    // Every point takes at least two bits, so a count beyond that is garbage, not a reason
    // to allocate gigabytes.
    if count > reader.remaining() / 2 + 1 {
        return Err(format!(
            "block claims {count} points in {} bytes",
            bytes.len()
        ));
    }
    timestamps.reserve(count);
    values.reserve(count);
    decode_timestamps(&mut reader, count, timestamps);
    match reader.read(2) {
        MODE_DECIMAL => decode_decimal(&mut reader, count, values)?,
        MODE_XOR => decode_xor(&mut reader, count, values),
        mode => return Err(format!("expected value mode 0 or 1, got {mode}")),
    }
    if reader.is_overrun() {
        return Err(format!(
            "block of {count} points ends early ({} bytes)",
            bytes.len()
        ));
    }
    Ok(())
}

fn encode_timestamps(writer: &mut BitWriter, timestamps: &[i64]) {
    let mut previous = timestamps[0];
    writer.write(previous as u64, 64);
    let mut previous_delta = 0i64;
    for &timestamp in &timestamps[1..] {
        let delta = timestamp.wrapping_sub(previous);
        let delta_of_delta = delta.wrapping_sub(previous_delta);
        previous = timestamp;
        previous_delta = delta;
        if delta_of_delta == 0 {
            writer.write_bit(false);
            continue;
        }
        let encoded = zigzag(delta_of_delta);
        if encoded < 1 << 7 {
            writer.write(0b10, 2);
            writer.write(encoded, 7);
        } else if encoded < 1 << 9 {
            writer.write(0b110, 3);
            writer.write(encoded, 9);
        } else if encoded < 1 << 12 {
            writer.write(0b1110, 4);
            writer.write(encoded, 12);
        } else if encoded < 1 << 32 {
            writer.write(0b11110, 5);
            writer.write(encoded, 32);
        } else {
            writer.write(0b11111, 5);
            writer.write(encoded, 64);
        }
    }
}

fn decode_timestamps(reader: &mut BitReader<'_>, count: usize, out: &mut Vec<i64>) {
    let mut previous = reader.read(64) as i64;
    out.push(previous);
    let mut previous_delta = 0i64;
    for _ in 1..count {
        let width = match reader.read_unary(5) {
            0 => 0,
            1 => 7,
            2 => 9,
            3 => 12,
            4 => 32,
            _ => 64,
        };
        let delta_of_delta = if width == 0 {
            0
        } else {
            unzigzag(reader.read(width))
        };
        let delta = previous_delta.wrapping_add(delta_of_delta);
        previous = previous.wrapping_add(delta);
        previous_delta = delta;
        out.push(previous);
    }
}

/// The smallest `k` such that every value is exactly `n / 10^k`, with the integers `n`.
fn decimal_scale(values: &[f64]) -> Option<(u32, Vec<i64>)> {
    let mut integers = Vec::with_capacity(values.len());
    'scales: for (scale, &factor) in POWERS_OF_TEN.iter().enumerate() {
        integers.clear();
        for &value in values {
            let scaled = (value * factor).round();
            if scaled.is_nan() || scaled.abs() >= MAX_SCALED {
                continue 'scales;
            }
            let integer = scaled as i64;
            if ((integer as f64) / factor).to_bits() != value.to_bits() {
                continue 'scales;
            }
            integers.push(integer);
        }
        return Some((scale as u32, integers));
    }
    None
}

/// The Rice parameter that makes `encoded` shortest, searched near the mean's bit length.
fn rice_parameter(encoded: &[u64]) -> u32 {
    let mean =
        encoded.iter().map(|&value| u128::from(value)).sum::<u128>() / encoded.len().max(1) as u128;
    let guess = 128 - mean.leading_zeros();
    let mut best = (u64::MAX, 0);
    for parameter in guess.saturating_sub(2)..=(guess + 1).min(62) {
        let bits: u64 = encoded
            .iter()
            .map(|&value| {
                let quotient = value >> parameter;
                if quotient < u64::from(RICE_ESCAPE) {
                    quotient + 1 + u64::from(parameter)
                } else {
                    u64::from(RICE_ESCAPE) + 64
                }
            })
            .sum();
        if bits < best.0 {
            best = (bits, parameter);
        }
    }
    best.1
}

fn encode_decimal(writer: &mut BitWriter, scale: u32, integers: &[i64]) {
    writer.write(u64::from(scale), 4);
    writer.write(integers[0] as u64, 64);
    let differences: Vec<u64> = integers
        .windows(2)
        .map(|pair| zigzag(pair[1] - pair[0]))
        .collect();
    let parameter = rice_parameter(&differences);
    writer.write(u64::from(parameter), 6);
    for &value in &differences {
        let quotient = value >> parameter;
        if quotient < u64::from(RICE_ESCAPE) {
            writer.write_ones(quotient as u32);
            writer.write_bit(false);
            writer.write(value, parameter);
        } else {
            writer.write_ones(RICE_ESCAPE);
            writer.write(value, 64);
        }
    }
}

fn decode_decimal(
    reader: &mut BitReader<'_>,
    count: usize,
    out: &mut Vec<f64>,
) -> Result<(), String> {
    let scale = reader.read(4) as usize;
    let Some(&factor) = POWERS_OF_TEN.get(scale) else {
        return Err(format!(
            "expected a decimal scale of at most {MAX_SCALE}, got {scale}"
        ));
    };
    let mut integer = reader.read(64) as i64;
    out.push(integer as f64 / factor);
    let parameter = reader.read(6) as u32;
    for _ in 1..count {
        let quotient = reader.read_unary(RICE_ESCAPE);
        let encoded = if quotient == RICE_ESCAPE {
            reader.read(64)
        } else {
            (u64::from(quotient) << parameter) | reader.read(parameter)
        };
        integer = integer.wrapping_add(unzigzag(encoded));
        out.push(integer as f64 / factor);
    }
    Ok(())
}

fn encode_xor(writer: &mut BitWriter, values: &[f64]) {
    let mut previous = values[0].to_bits();
    writer.write(previous, 64);
    let mut window: Option<(u32, u32)> = None;
    for &value in &values[1..] {
        let bits = value.to_bits();
        let xor = bits ^ previous;
        previous = bits;
        if xor == 0 {
            writer.write_bit(false);
            continue;
        }
        let leading = xor.leading_zeros().min(31);
        let trailing = xor.trailing_zeros();
        match window {
            Some((window_leading, window_trailing))
                if leading >= window_leading && trailing >= window_trailing =>
            {
                writer.write(0b10, 2);
                writer.write(
                    xor >> window_trailing,
                    64 - window_leading - window_trailing,
                );
            }
            _ => {
                let significant = 64 - leading - trailing;
                writer.write(0b11, 2);
                writer.write(u64::from(leading), 5);
                writer.write(u64::from(significant - 1), 6);
                writer.write(xor >> trailing, significant);
                window = Some((leading, trailing));
            }
        }
    }
}

fn decode_xor(reader: &mut BitReader<'_>, count: usize, out: &mut Vec<f64>) {
    let mut previous = reader.read(64);
    out.push(f64::from_bits(previous));
    let mut window = (0u32, 0u32);
    for _ in 1..count {
        if reader.read_bit() {
            if reader.read_bit() {
                let leading = reader.read(5) as u32;
                let significant = reader.read(6) as u32 + 1;
                // A corrupt stream can claim more than 64 bits; clamp and let the overrun
                // or checksum report it.
                let trailing = 64u32.saturating_sub(leading + significant);
                window = (leading, trailing);
            }
            let (leading, trailing) = window;
            let width = 64u32.saturating_sub(leading + trailing);
            let xor = reader.read(width).checked_shl(trailing).unwrap_or(0);
            previous ^= xor;
        }
        out.push(f64::from_bits(previous));
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn any_points_round_trip(points in proptest::collection::vec((any::<i64>(), any::<u64>()), 1..400)) {
            let timestamps: Vec<i64> = points.iter().map(|&(timestamp, _)| timestamp).collect();
            let values: Vec<f64> = points.iter().map(|&(_, bits)| f64::from_bits(bits)).collect();
            round_trip(&timestamps, &values);
        }

        #[test]
        fn decimal_series_round_trip(
            steps in proptest::collection::vec((-3i64..4, -2_000i64..2_000), 1..600),
            scale in 0usize..=MAX_SCALE,
            start in -1_000_000_000i64..1_000_000_000,
        ) {
            let mut timestamp = 1_700_000_000_000i64;
            let mut integer = start;
            let (mut timestamps, mut values) = (Vec::new(), Vec::new());
            for (jitter, step) in steps {
                timestamp += 1000 + jitter;
                integer += step;
                timestamps.push(timestamp);
                values.push(integer as f64 / POWERS_OF_TEN[scale]);
            }
            round_trip(&timestamps, &values);
        }
    }

    fn round_trip(timestamps: &[i64], values: &[f64]) -> Vec<u8> {
        let bytes = encode(timestamps, values);
        let (mut decoded_timestamps, mut decoded_values) = (Vec::new(), Vec::new());
        decode(&bytes, &mut decoded_timestamps, &mut decoded_values).expect("valid block");
        assert_eq!(decoded_timestamps, timestamps);
        let bits = |values: &[f64]| {
            values
                .iter()
                .map(|value| value.to_bits())
                .collect::<Vec<_>>()
        };
        assert_eq!(bits(&decoded_values), bits(values));
        bytes
    }

    #[test]
    fn special_values_keep_their_bits() {
        let values = [
            0.0,
            -0.0,
            f64::NAN,
            -f64::NAN,
            f64::from_bits(0x7FF0_0000_0000_0001),
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            f64::MAX,
            1.5,
        ];
        let timestamps: Vec<i64> = (0..values.len() as i64).collect();
        round_trip(&timestamps, &values);
    }

    #[test]
    fn extreme_timestamps_round_trip() {
        round_trip(
            &[i64::MIN, i64::MAX, 0, -1, i64::MAX, i64::MIN + 1],
            &[1.0; 6],
        );
    }

    #[test]
    fn two_decimal_temperatures_take_a_few_bits_per_point() {
        let timestamps: Vec<i64> = (0..3600)
            .map(|second| 1_700_000_000_000 + second * 1000)
            .collect();
        let values: Vec<f64> = (0..3600)
            .map(|second| ((2150.0 + (second as f64 / 300.0).sin() * 30.0).round()) / 100.0)
            .collect();
        let bytes = round_trip(&timestamps, &values);
        assert!(bytes.len() < 3600, "{} bytes for 3600 points", bytes.len());
    }

    #[test]
    fn decimal_mode_handles_large_jumps() {
        let values = [0.5, 4.5e15, -4.5e15, 0.25, 1e-8, 0.0];
        round_trip(&[1, 2, 3, 4, 5, 6], &values);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let bytes = encode(&[1, 2, 3], &[1.0, 2.0, 3.0]);
        for cut in 0..bytes.len() {
            let (mut timestamps, mut values) = (Vec::new(), Vec::new());
            let _ = decode(&bytes[..cut], &mut timestamps, &mut values);
        }
        let (mut timestamps, mut values) = (Vec::new(), Vec::new());
        assert!(decode(&[0xFF; 12], &mut timestamps, &mut values).is_err());
    }
}
