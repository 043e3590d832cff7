//! Segment files: immutable, compressed, columnar storage of the points of one time
//! partition, written by flushes and compactions.
//!
//! Layout, all integers little-endian:
//!
//! ```text
//! header (64 bytes)  magic "FWSEG\0v1", version:u32, level:u32, min_seq:u64, max_seq:u64,
//!                    partition_start:i64, partition_duration:i64, reserved, crc32 of the above
//! blocks             one compressed block (see `block`) after another
//! index              one 80-byte entry per block, sorted by (series, time): series:u32,
//!                    length:u32, offset:u64, crc32 of the block, count:u32, min_ts:i64,
//!                    max_ts:i64, sum, min, max, first, last (f64)
//! footer (24 bytes)  index_offset:u64, entry_count:u32, crc32 of the index, magic "FWSEGEND"
//! ```
//!
//! A query reads the index (kept in memory) and then only the blocks of its series and
//! time range; an aggregate over whole blocks uses the index summaries and reads nothing.
//! Blocks hold at most 8,192 points and are cut at hour boundaries once they have 256, so
//! hourly and daily windows line up with whole blocks.
//!
//! Sequence numbers order segments: a point in a segment with a higher `max_seq` replaces
//! one with the same series and timestamp in a lower one. A flush takes fresh numbers; a
//! compaction output covers `min_seq..=max_seq` of its inputs, so after a crash between
//! writing the output and deleting the inputs, the inputs are recognised as redundant.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::block::{self, Summary};
use crate::catalog::sync_directory;
use crate::error::{Error, Result, io};
use crate::types::SeriesId;

/// Directory of the segment files inside the store's directory.
pub(crate) const DIRECTORY: &str = "segments";
const MAGIC: &[u8; 8] = b"FWSEG\0v1";
const FOOTER_MAGIC: &[u8; 8] = b"FWSEGEND";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 64;
const FOOTER_LEN: usize = 24;
const ENTRY_LEN: usize = 80;
const MAX_BLOCK_POINTS: usize = 8192;
const ALIGNED_MIN_POINTS: usize = 256;
const BLOCK_ALIGNMENT_MS: i64 = 3_600_000;

/// What a segment is: its partition, sequence range and compaction level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentInfo {
    pub(crate) partition_start: i64,
    pub(crate) partition_duration: i64,
    pub(crate) min_seq: u64,
    pub(crate) max_seq: u64,
    pub(crate) level: u32,
}

impl SegmentInfo {
    fn file_name(&self) -> String {
        format!("{:016x}-{:016x}.seg", self.min_seq, self.max_seq)
    }
}

/// Where a block is and what it holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BlockMeta {
    pub(crate) series: SeriesId,
    pub(crate) offset: u64,
    pub(crate) length: u32,
    pub(crate) crc: u32,
    pub(crate) summary: Summary,
}

/// Collects the blocks of a segment being written.
#[derive(Debug)]
pub(crate) struct Builder {
    info: SegmentInfo,
    data: Vec<u8>,
    entries: Vec<BlockMeta>,
}

impl Builder {
    pub(crate) fn new(info: SegmentInfo) -> Builder {
        Builder {
            info,
            data: vec![0; HEADER_LEN],
            entries: Vec::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds the sorted, duplicate-free points of one series. Series must come in id order.
    pub(crate) fn add_series(&mut self, series: SeriesId, timestamps: &[i64], values: &[f64]) {
        let mut start = 0;
        for index in 1..=timestamps.len() {
            let is_cut = index == timestamps.len() || {
                let length = index - start;
                length >= MAX_BLOCK_POINTS
                    || (length >= ALIGNED_MIN_POINTS
                        && timestamps[index].div_euclid(BLOCK_ALIGNMENT_MS)
                            != timestamps[index - 1].div_euclid(BLOCK_ALIGNMENT_MS))
            };
            if is_cut {
                self.add_block(series, &timestamps[start..index], &values[start..index]);
                start = index;
            }
        }
    }

    fn add_block(&mut self, series: SeriesId, timestamps: &[i64], values: &[f64]) {
        let encoded = block::encode(timestamps, values);
        self.entries.push(BlockMeta {
            series,
            offset: self.data.len() as u64,
            length: u32::try_from(encoded.len()).unwrap_or(u32::MAX),
            crc: crc32fast::hash(&encoded),
            summary: Summary::of(timestamps, values),
        });
        self.data.extend_from_slice(&encoded);
    }

    /// Writes the segment durably into `directory` (temporary file, fsync, rename,
    /// directory fsync) and returns it opened.
    pub(crate) fn write(self, directory: &Path) -> Result<Segment> {
        let Builder {
            info,
            mut data,
            entries,
        } = self;
        let header = encode_header(&info);
        data[..HEADER_LEN].copy_from_slice(&header);
        let index_offset = data.len() as u64;
        for entry in &entries {
            encode_entry(&mut data, entry);
        }
        let index_crc = crc32fast::hash(&data[index_offset as usize..]);
        data.extend_from_slice(&index_offset.to_le_bytes());
        data.extend_from_slice(
            &u32::try_from(entries.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes(),
        );
        data.extend_from_slice(&index_crc.to_le_bytes());
        data.extend_from_slice(FOOTER_MAGIC);

        let path = directory.join(info.file_name());
        let temporary = path.with_extension("seg.tmp");
        let mut file = File::create(&temporary).map_err(io("creating segment", &temporary))?;
        file.write_all(&data)
            .map_err(io("writing segment", &temporary))?;
        file.sync_all().map_err(io("syncing segment", &temporary))?;
        drop(file);
        std::fs::rename(&temporary, &path).map_err(io("renaming segment into place", &path))?;
        sync_directory(directory)?;
        let file = File::open(&path).map_err(io("opening segment", &path))?;
        Ok(Segment::from_parts(
            path,
            file,
            info,
            entries,
            data.len() as u64,
        ))
    }
}

fn encode_header(info: &SegmentInfo) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[0..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&info.level.to_le_bytes());
    header[16..24].copy_from_slice(&info.min_seq.to_le_bytes());
    header[24..32].copy_from_slice(&info.max_seq.to_le_bytes());
    header[32..40].copy_from_slice(&info.partition_start.to_le_bytes());
    header[40..48].copy_from_slice(&info.partition_duration.to_le_bytes());
    let crc = crc32fast::hash(&header[..HEADER_LEN - 4]);
    header[HEADER_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
    header
}

fn encode_entry(out: &mut Vec<u8>, entry: &BlockMeta) {
    let summary = &entry.summary;
    out.extend_from_slice(&entry.series.as_u32().to_le_bytes());
    out.extend_from_slice(&entry.length.to_le_bytes());
    out.extend_from_slice(&entry.offset.to_le_bytes());
    out.extend_from_slice(&entry.crc.to_le_bytes());
    out.extend_from_slice(&summary.count.to_le_bytes());
    out.extend_from_slice(&summary.min_timestamp.to_le_bytes());
    out.extend_from_slice(&summary.max_timestamp.to_le_bytes());
    for value in [
        summary.sum,
        summary.min,
        summary.max,
        summary.first,
        summary.last,
    ] {
        out.extend_from_slice(&value.to_bits().to_le_bytes());
    }
}

/// Little-endian fields at fixed offsets of a slice whose length was checked.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn array<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut array = [0u8; N];
        if let Some(bytes) = self.0.get(at..at + N) {
            array.copy_from_slice(bytes);
        }
        array
    }
    fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.array(at))
    }
    fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.array(at))
    }
    fn i64(&self, at: usize) -> i64 {
        i64::from_le_bytes(self.array(at))
    }
    fn f64(&self, at: usize) -> f64 {
        f64::from_bits(self.u64(at))
    }
}

/// An open segment: its index in memory, its blocks on disk.
#[derive(Debug)]
pub(crate) struct Segment {
    path: PathBuf,
    file: File,
    info: SegmentInfo,
    index: HashMap<SeriesId, Vec<BlockMeta>>,
    bytes: u64,
    points: u64,
}

impl Segment {
    fn from_parts(
        path: PathBuf,
        file: File,
        info: SegmentInfo,
        entries: Vec<BlockMeta>,
        bytes: u64,
    ) -> Segment {
        let points = entries
            .iter()
            .map(|entry| u64::from(entry.summary.count))
            .sum();
        let mut index: HashMap<SeriesId, Vec<BlockMeta>> = HashMap::new();
        for entry in entries {
            index.entry(entry.series).or_default().push(entry);
        }
        for blocks in index.values_mut() {
            blocks.sort_by_key(|block| block.summary.min_timestamp);
        }
        Segment {
            path,
            file,
            info,
            index,
            bytes,
            points,
        }
    }

    /// Opens and fully verifies a segment file: header, footer, index and every block
    /// checksum. The error names the file and what failed.
    pub(crate) fn open(path: &Path) -> Result<Segment> {
        let corrupt = |detail: String| Error::CorruptSegment {
            path: path.to_owned(),
            detail,
        };
        let data = std::fs::read(path).map_err(io("reading segment", path))?;
        if data.len() < HEADER_LEN + FOOTER_LEN {
            return Err(corrupt(format!(
                "expected at least {} bytes, the file has {}",
                HEADER_LEN + FOOTER_LEN,
                data.len()
            )));
        }
        let header = Fields(&data[..HEADER_LEN]);
        if &data[..8] != MAGIC {
            return Err(corrupt(format!(
                "expected magic {MAGIC:?} at the start, found {:?}",
                &data[..8]
            )));
        }
        let header_crc = crc32fast::hash(&data[..HEADER_LEN - 4]);
        if header_crc != header.u32(HEADER_LEN - 4) {
            return Err(corrupt(format!(
                "header checksum {:#010x} does not match its contents ({header_crc:#010x})",
                header.u32(HEADER_LEN - 4)
            )));
        }
        let version = header.u32(8);
        if version != VERSION {
            return Err(corrupt(format!(
                "expected format version {VERSION}, found {version}"
            )));
        }
        let info = SegmentInfo {
            level: header.u32(12),
            min_seq: header.u64(16),
            max_seq: header.u64(24),
            partition_start: header.i64(32),
            partition_duration: header.i64(40),
        };
        if info.partition_duration <= 0 || info.min_seq > info.max_seq {
            return Err(corrupt(format!(
                "header is inconsistent: partition duration {}, sequence range {}..={}",
                info.partition_duration, info.min_seq, info.max_seq
            )));
        }
        let footer_start = data.len() - FOOTER_LEN;
        let footer = Fields(&data[footer_start..]);
        if &data[data.len() - 8..] != FOOTER_MAGIC {
            return Err(corrupt(format!(
                "expected footer magic {FOOTER_MAGIC:?} at the end, found {:?} (truncated file?)",
                &data[data.len() - 8..]
            )));
        }
        let index_offset = footer.u64(0);
        let entry_count = footer.u32(8) as usize;
        let expected_end = (index_offset as u128) + (entry_count as u128) * (ENTRY_LEN as u128);
        if index_offset < HEADER_LEN as u64 || expected_end != footer_start as u128 {
            return Err(corrupt(format!(
                "footer places {entry_count} index entries at byte {index_offset}, which does not end at the footer (byte {footer_start})"
            )));
        }
        let index_bytes = &data[index_offset as usize..footer_start];
        let index_crc = crc32fast::hash(index_bytes);
        if index_crc != footer.u32(12) {
            return Err(corrupt(format!(
                "index checksum {:#010x} does not match its contents ({index_crc:#010x})",
                footer.u32(12)
            )));
        }
        let mut entries = Vec::with_capacity(entry_count);
        for (position, raw) in index_bytes.chunks_exact(ENTRY_LEN).enumerate() {
            let fields = Fields(raw);
            let entry = BlockMeta {
                series: SeriesId::new(fields.u32(0)),
                length: fields.u32(4),
                offset: fields.u64(8),
                crc: fields.u32(16),
                summary: Summary {
                    count: fields.u32(20),
                    min_timestamp: fields.i64(24),
                    max_timestamp: fields.i64(32),
                    sum: fields.f64(40),
                    min: fields.f64(48),
                    max: fields.f64(56),
                    first: fields.f64(64),
                    last: fields.f64(72),
                },
            };
            let end = entry.offset.saturating_add(u64::from(entry.length));
            if entry.offset < HEADER_LEN as u64 || end > index_offset {
                return Err(corrupt(format!(
                    "index entry {position} points at bytes {}..{end}, outside the block area {HEADER_LEN}..{index_offset}",
                    entry.offset
                )));
            }
            if entry.summary.count == 0 || entry.summary.min_timestamp > entry.summary.max_timestamp
            {
                return Err(corrupt(format!(
                    "index entry {position} is inconsistent: {} points from {} to {}",
                    entry.summary.count, entry.summary.min_timestamp, entry.summary.max_timestamp
                )));
            }
            let crc = crc32fast::hash(&data[entry.offset as usize..end as usize]);
            if crc != entry.crc {
                return Err(corrupt(format!(
                    "block {position} ({}, bytes {}..{end}) has checksum {crc:#010x}, the index says {:#010x}",
                    entry.series, entry.offset, entry.crc
                )));
            }
            entries.push(entry);
        }
        let file = File::open(path).map_err(io("opening segment", path))?;
        Ok(Segment::from_parts(
            path.to_owned(),
            file,
            info,
            entries,
            data.len() as u64,
        ))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn info(&self) -> &SegmentInfo {
        &self.info
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn points(&self) -> u64 {
        self.points
    }

    /// The blocks of a series, by time.
    pub(crate) fn blocks(&self, series: SeriesId) -> &[BlockMeta] {
        self.index.get(&series).map_or(&[], Vec::as_slice)
    }

    /// The series with blocks here, ascending.
    pub(crate) fn series(&self) -> Vec<SeriesId> {
        let mut series: Vec<SeriesId> = self.index.keys().copied().collect();
        series.sort_unstable();
        series
    }

    /// Reads, verifies and decodes one block, appending its points.
    pub(crate) fn read_block(
        &self,
        meta: &BlockMeta,
        timestamps: &mut Vec<i64>,
        values: &mut Vec<f64>,
    ) -> Result<()> {
        let mut bytes = vec![0u8; meta.length as usize];
        read_at(&self.file, &mut bytes, meta.offset).map_err(io("reading segment", &self.path))?;
        let corrupt = |detail: String| Error::CorruptSegment {
            path: self.path.clone(),
            detail,
        };
        let crc = crc32fast::hash(&bytes);
        if crc != meta.crc {
            return Err(corrupt(format!(
                "block of {} at byte {} has checksum {crc:#010x}, the index says {:#010x}",
                meta.series, meta.offset, meta.crc
            )));
        }
        let before = timestamps.len();
        block::decode(&bytes, timestamps, values).map_err(|detail| {
            corrupt(format!(
                "block of {} at byte {}: {detail}",
                meta.series, meta.offset
            ))
        })?;
        let decoded = timestamps.len() - before;
        if decoded != meta.summary.count as usize {
            return Err(corrupt(format!(
                "block of {} at byte {} holds {decoded} points, the index says {}",
                meta.series, meta.offset, meta.summary.count
            )));
        }
        Ok(())
    }
}

#[cfg(unix)]
fn read_at(file: &File, buffer: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buffer, offset)
}

#[cfg(windows)]
fn read_at(file: &File, mut buffer: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buffer.is_empty() {
        match file.seek_read(buffer, offset)? {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            read => {
                buffer = &mut buffer[read..];
                offset += read as u64;
            }
        }
    }
    Ok(())
}

/// The segment file names in `directory`, and leftover temporary files.
pub(crate) fn list(directory: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut segments = Vec::new();
    let mut temporary = Vec::new();
    for entry in std::fs::read_dir(directory).map_err(io("listing segments", directory))? {
        let entry = entry.map_err(io("listing segments", directory))?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".seg") {
            segments.push(path);
        } else if name.ends_with(".seg.tmp") {
            temporary.push(path);
        }
    }
    segments.sort();
    Ok((segments, temporary))
}
