//! Bit-level writing and reading, most significant bit first, for the block codec.

/// Appends bit fields to a byte vector.
#[derive(Debug, Default)]
pub(crate) struct BitWriter {
    bytes: Vec<u8>,
    /// The last `filled` bits of `pending` are waiting to be written.
    pending: u64,
    filled: u32,
}

impl BitWriter {
    pub(crate) fn with_capacity(bytes: usize) -> BitWriter {
        BitWriter {
            bytes: Vec::with_capacity(bytes),
            pending: 0,
            filled: 0,
        }
    }

    /// Writes the low `bits` bits of `value` (`bits` at most 64).
    #[inline]
    pub(crate) fn write(&mut self, value: u64, bits: u32) {
        debug_assert!(bits <= 64);
        if bits == 0 {
            return;
        }
        let value = if bits == 64 {
            value
        } else {
            value & ((1u64 << bits) - 1)
        };
        let free = 64 - self.filled;
        if bits < free {
            self.pending = (self.pending << bits) | value;
            self.filled += bits;
        } else {
            // `free` is at least 1 here: `filled` never stays at 64.
            let rest = bits - free;
            let head = if free == 64 {
                value
            } else {
                (self.pending << free) | (value >> rest)
            };
            self.bytes.extend_from_slice(&head.to_be_bytes());
            self.pending = if rest == 0 {
                0
            } else {
                value & ((1u64 << rest) - 1)
            };
            self.filled = rest;
        }
    }

    #[inline]
    pub(crate) fn write_bit(&mut self, bit: bool) {
        self.write(u64::from(bit), 1);
    }

    /// Writes `count` one bits (at most 64).
    #[inline]
    pub(crate) fn write_ones(&mut self, count: u32) {
        if count == 64 {
            self.write(u64::MAX, 64);
        } else {
            self.write((1u64 << count) - 1, count);
        }
    }

    /// The bytes written, the last one padded with zero bits.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        if self.filled > 0 {
            let aligned = self.pending << (64 - self.filled);
            let bytes = self.filled.div_ceil(8) as usize;
            self.bytes
                .extend_from_slice(&aligned.to_be_bytes()[..bytes]);
        }
        self.bytes
    }
}

/// Reads bit fields back. Reading past the end yields zero bits and marks the reader
/// overrun, which the decoder reports as corruption: malformed input never panics.
#[derive(Debug)]
pub(crate) struct BitReader<'a> {
    bytes: &'a [u8],
    position: usize,
    limit: usize,
    is_overrun: bool,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> BitReader<'a> {
        BitReader {
            bytes,
            position: 0,
            limit: bytes.len() * 8,
            is_overrun: false,
        }
    }

    /// Whether a read went past the end of the input.
    pub(crate) fn is_overrun(&self) -> bool {
        self.is_overrun || self.position > self.limit
    }

    /// Bits not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.limit.saturating_sub(self.position)
    }

    /// The 64 bits starting at the current position (zero bits past the end).
    #[inline]
    fn peek64(&self) -> u64 {
        let byte = self.position >> 3;
        let shift = (self.position & 7) as u32;
        let word = match self.bytes.get(byte..byte + 8) {
            Some(slice) => {
                let mut array = [0u8; 8];
                array.copy_from_slice(slice);
                u64::from_be_bytes(array)
            }
            None => {
                let mut array = [0u8; 8];
                if let Some(tail) = self.bytes.get(byte..) {
                    array[..tail.len()].copy_from_slice(tail);
                }
                u64::from_be_bytes(array)
            }
        };
        if shift == 0 {
            return word;
        }
        let next = self.bytes.get(byte + 8).copied().unwrap_or(0);
        (word << shift) | (u64::from(next) >> (8 - shift))
    }

    /// Reads `bits` bits (at most 64) as the low bits of the result.
    #[inline]
    pub(crate) fn read(&mut self, bits: u32) -> u64 {
        debug_assert!(bits <= 64);
        if bits == 0 {
            return 0;
        }
        let value = self.peek64() >> (64 - bits);
        self.advance(bits);
        value
    }

    #[inline]
    pub(crate) fn read_bit(&mut self) -> bool {
        self.read(1) == 1
    }

    /// Counts one bits up to `max`, consuming them and the zero bit that ends them (no zero
    /// bit follows when `max` ones were read).
    #[inline]
    pub(crate) fn read_unary(&mut self, max: u32) -> u32 {
        debug_assert!(max < 64);
        let ones = (!self.peek64()).leading_zeros().min(max);
        let consumed = if ones == max { ones } else { ones + 1 };
        self.advance(consumed);
        ones
    }

    #[inline]
    fn advance(&mut self, bits: u32) {
        self.position += bits as usize;
        if self.position > self.limit {
            self.is_overrun = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_every_width_read_back() {
        let mut writer = BitWriter::default();
        let fields: Vec<(u64, u32)> = (0..=64u32)
            .map(|bits| {
                (
                    if bits == 64 {
                        0xDEAD_BEEF_F00D_CAFE
                    } else {
                        0x5A5A_5A5A_5A5A_5A5A & ((1u64 << bits) - 1)
                    },
                    bits,
                )
            })
            .collect();
        for &(value, bits) in &fields {
            writer.write(value, bits);
            writer.write_bit(true);
        }
        let bytes = writer.finish();
        let mut reader = BitReader::new(&bytes);
        for &(value, bits) in &fields {
            assert_eq!(reader.read(bits), value, "{bits} bits");
            assert!(reader.read_bit());
        }
        assert!(!reader.is_overrun());
    }

    #[test]
    fn unary_counts_stop_at_zero_or_max() {
        let mut writer = BitWriter::default();
        writer.write_ones(3);
        writer.write_bit(false);
        writer.write_ones(5);
        writer.write(0b101, 3);
        let bytes = writer.finish();
        let mut reader = BitReader::new(&bytes);
        assert_eq!(reader.read_unary(10), 3);
        assert_eq!(reader.read_unary(5), 5);
        assert_eq!(reader.read(3), 0b101);
    }

    #[test]
    fn reading_past_the_end_is_reported() {
        let mut reader = BitReader::new(&[0xFF]);
        assert_eq!(reader.read(8), 0xFF);
        assert!(!reader.is_overrun());
        assert_eq!(reader.read(8), 0);
        assert!(reader.is_overrun());
    }
}
