//! Checksummed record framing, and the little-endian/varint helpers payloads use: the
//! format of every log file (the store's write-ahead log and series catalog, the broker's
//! state log).
//!
//! A record is `length:u32le crc:u32le payload`, where `crc` is the CRC-32 of the length
//! bytes followed by the payload. A reader stops at the first record that is incomplete or
//! fails its checksum: that is where a crash tore the file.

/// Bytes before the payload.
pub const HEADER_LEN: usize = 8;

/// Appends one record holding `payload` to `out`.
pub fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    let length = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_le_bytes();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&length);
    hasher.update(payload);
    out.extend_from_slice(&length);
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.extend_from_slice(payload);
}

/// Starts a record in `out` whose payload is appended next; [`finish_frame`] fills in the
/// header. Saves copying a large payload.
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    start
}

/// Completes the record begun at `start` by [`begin_frame`].
pub fn finish_frame(out: &mut [u8], start: usize) {
    let payload_len = out.len() - start - HEADER_LEN;
    let length = u32::try_from(payload_len).unwrap_or(u32::MAX).to_le_bytes();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&length);
    hasher.update(&out[start + HEADER_LEN..]);
    out[start..start + 4].copy_from_slice(&length);
    out[start + 4..start + HEADER_LEN].copy_from_slice(&hasher.finalize().to_le_bytes());
}

/// The outcome of reading the record at some offset.
#[derive(Debug, PartialEq)]
pub enum Next<'a> {
    /// A valid record, and the offset after it.
    Record(&'a [u8], usize),
    /// The end of the data, exactly at a record boundary.
    End,
    /// An incomplete or damaged record; the text says what is wrong.
    Torn(String),
}

/// Reads the record starting at `offset` of `data`.
pub fn next(data: &[u8], offset: usize) -> Next<'_> {
    let Some(rest) = data.get(offset..) else {
        return Next::Torn(format!(
            "offset {offset} is past the end ({} bytes)",
            data.len()
        ));
    };
    if rest.is_empty() {
        return Next::End;
    }
    if rest.len() < HEADER_LEN {
        return Next::Torn(format!(
            "expected an 8-byte record header, found {} bytes",
            rest.len()
        ));
    }
    let length = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let stored_crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    let Some(payload) = rest.get(HEADER_LEN..HEADER_LEN + length) else {
        return Next::Torn(format!(
            "record header announces {length} bytes, only {} follow",
            rest.len() - HEADER_LEN
        ));
    };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&rest[..4]);
    hasher.update(payload);
    let crc = hasher.finalize();
    if crc != stored_crc {
        return Next::Torn(format!(
            "record checksum {stored_crc:#010x} does not match its {length} bytes ({crc:#010x})"
        ));
    }
    Next::Record(payload, offset + HEADER_LEN + length)
}

/// Appends `value` as an unsigned LEB128 varint.
#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Appends a length-prefixed string.
pub fn put_str(out: &mut Vec<u8>, text: &str) {
    put_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

/// Appends length-prefixed bytes.
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Reads payload fields; every method returns `None` when the payload ends too early.
#[derive(Debug)]
pub struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes, position: 0 }
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.position >= self.bytes.len()
    }

    /// One byte.
    pub fn u8(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.position)?;
        self.position += 1;
        Some(byte)
    }

    /// An unsigned LEB128 varint.
    #[inline]
    pub fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            value |= u64::from(byte & 0x7F) << shift;
            if byte < 0x80 {
                return Some(value);
            }
        }
        None
    }

    /// A little-endian `u64`.
    #[inline]
    pub fn u64_le(&mut self) -> Option<u64> {
        let bytes = self.bytes.get(self.position..self.position + 8)?;
        self.position += 8;
        let mut array = [0u8; 8];
        array.copy_from_slice(bytes);
        Some(u64::from_le_bytes(array))
    }

    /// A length-prefixed string (checked UTF-8).
    pub fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    /// Length-prefixed bytes.
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let length = usize::try_from(self.varint()?).ok()?;
        let bytes = self
            .bytes
            .get(self.position..self.position.checked_add(length)?)?;
        self.position += length;
        Some(bytes)
    }

    /// A varint that must fit in a `u32`.
    pub fn varint_u32(&mut self) -> Option<u32> {
        u32::try_from(self.varint()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_and_torn_ones_are_detected() {
        let mut data = Vec::new();
        frame(&mut data, b"hello");
        let start = begin_frame(&mut data);
        data.extend_from_slice(b"world!");
        finish_frame(&mut data, start);
        let Next::Record(first, offset) = next(&data, 0) else {
            panic!("first record")
        };
        assert_eq!(first, b"hello");
        let Next::Record(second, end) = next(&data, offset) else {
            panic!("second record")
        };
        assert_eq!(second, b"world!");
        assert_eq!(next(&data, end), Next::End);
        for cut in offset + 1..data.len() {
            assert!(
                matches!(next(&data[..cut], offset), Next::Torn(_)),
                "cut at {cut}"
            );
        }
        let mut flipped = data.clone();
        flipped[offset + HEADER_LEN] ^= 1;
        assert!(matches!(next(&flipped, offset), Next::Torn(_)));
    }

    #[test]
    fn varints_round_trip() {
        let mut out = Vec::new();
        for value in [0, 1, 127, 128, 300, u64::MAX] {
            put_varint(&mut out, value);
        }
        let mut cursor = Cursor::new(&out);
        for value in [0, 1, 127, 128, 300, u64::MAX] {
            assert_eq!(cursor.varint(), Some(value));
        }
        assert!(cursor.is_empty());
        assert_eq!(cursor.varint(), None);
    }
}
