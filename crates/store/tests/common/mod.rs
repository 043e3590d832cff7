//! Helpers shared by the integration tests: temporary directories, directory copies (a
//! crash image of a running store), and a deterministic point generator.

#![allow(dead_code)] // Each test file uses a different subset.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use fleetwire_store::{Point, Sample, StoreConfig, Timestamp};

/// A directory under the system's temporary directory, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "fleetwire-store-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temporary directory");
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies a directory tree, as a crash would leave it: whatever is in the files now.
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy");
    for entry in std::fs::read_dir(from).expect("read directory") {
        let entry = entry.expect("directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

/// Files in `directory` with the given extension, sorted.
pub(crate) fn files_with_extension(directory: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(directory)
        .expect("read directory")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|found| found == extension))
        .collect();
    files.sort();
    files
}

/// Settings for tests: no background flush or compaction surprises (the compaction thread
/// starts after every flush; a test that wants it sets a small fan-in).
pub(crate) fn config() -> StoreConfig {
    StoreConfig {
        head_max_age: std::time::Duration::from_secs(3600),
        compaction_fan_in: usize::MAX,
        ..StoreConfig::default()
    }
}

/// An owned point, for building batches.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Owned {
    pub(crate) device: String,
    pub(crate) field: String,
    pub(crate) timestamp: i64,
    pub(crate) value: f64,
}

impl Owned {
    pub(crate) fn new(device: &str, field: &str, timestamp: i64, value: f64) -> Owned {
        Owned {
            device: device.to_owned(),
            field: field.to_owned(),
            timestamp,
            value,
        }
    }

    pub(crate) fn point(&self) -> Point<'_> {
        Point::new(
            &self.device,
            &self.field,
            Timestamp::from_millis(self.timestamp),
            self.value,
        )
    }
}

pub(crate) fn points(owned: &[Owned]) -> Vec<Point<'_>> {
    owned.iter().map(Owned::point).collect()
}

/// Samples as `(timestamp, value bits)`, so NaN compares equal to itself.
pub(crate) fn bits(samples: &[Sample]) -> Vec<(i64, u64)> {
    samples
        .iter()
        .map(|sample| (sample.timestamp.as_millis(), sample.value.to_bits()))
        .collect()
}

/// A small deterministic random generator (SplitMix64).
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
