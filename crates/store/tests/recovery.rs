//! Crash recovery: a copy of a running store's directory (what a crash leaves) opens with
//! every acknowledged point; a torn or garbage log tail is cut off, never a panic.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use common::{Owned, TempDir, config, copy_dir, files_with_extension, points};
use fleetwire_store::{Error, Store, Timestamp};

fn count(store: &Store, device: &str, field: &str) -> usize {
    store
        .range(
            device,
            field,
            Timestamp::from_millis(i64::MIN),
            Timestamp::from_millis(i64::MAX),
        )
        .expect("range")
        .len()
}

fn newest_wal(directory: &Path) -> std::path::PathBuf {
    files_with_extension(&directory.join("wal"), "wal")
        .pop()
        .expect("a log file")
}

#[test]
fn a_crash_image_of_a_running_store_has_every_acknowledged_point() {
    let directory = TempDir::new("crash-image");
    let store = Store::open(directory.path(), config()).expect("open");
    let first: Vec<Owned> = (0..5000)
        .map(|index| Owned::new("d", "t", index * 1000, index as f64 / 100.0))
        .collect();
    store.write(&points(&first)).expect("write");
    store.flush().expect("flush");
    let second: Vec<Owned> = (5000..8000)
        .map(|index| Owned::new("d", "t", index * 1000, index as f64 / 100.0))
        .collect();
    store.write(&points(&second)).expect("write");
    let third = [Owned::new("e", "new-series", 1, 1.0)];
    store.write(&points(&third)).expect("write");

    let image = TempDir::new("crash-image-copy");
    copy_dir(directory.path(), image.path());
    let recovered = Store::open(image.path(), config()).expect("open the crash image");
    assert_eq!(count(&recovered, "d", "t"), 8000);
    assert_eq!(count(&recovered, "e", "new-series"), 1);
    assert_eq!(
        recovered.latest("d")["t"].timestamp.as_millis(),
        7999 * 1000
    );
    drop(store);
}

#[test]
fn a_torn_last_record_at_any_byte_is_cut_off_and_everything_before_survives() {
    let directory = TempDir::new("torn");
    let store = Store::open(directory.path(), config()).expect("open");
    let before: Vec<Owned> = (0..100)
        .map(|index| Owned::new("d", "t", index, index as f64))
        .collect();
    store.write(&points(&before)).expect("write");
    let wal = newest_wal(directory.path());
    let good_length = std::fs::metadata(&wal).expect("log size").len();
    // The last record also defines a new series, so a torn definition is covered too.
    let last = [
        Owned::new("d", "t", 1000, 1.0),
        Owned::new("d", "new", 1001, 2.0),
        Owned::new("d", "t", 1002, 3.0),
    ];
    store.write(&points(&last)).expect("write");
    let full_length = std::fs::metadata(&wal).expect("log size").len();
    assert!(full_length > good_length);
    drop(store);

    for cut in good_length..full_length {
        let image = TempDir::new("torn-copy");
        copy_dir(directory.path(), image.path());
        let image_wal = newest_wal(image.path());
        OpenOptions::new()
            .write(true)
            .open(&image_wal)
            .expect("open log")
            .set_len(cut)
            .expect("truncate");
        let store = Store::open(image.path(), config()).expect("open after a torn write");
        assert_eq!(count(&store, "d", "t"), 100, "cut at byte {cut}");
        assert_eq!(count(&store, "d", "new"), 0, "cut at byte {cut}");
        assert_eq!(
            std::fs::metadata(&image_wal).expect("log size").len(),
            good_length,
            "torn tail is cut off"
        );
        // The repaired store keeps working and recovers again.
        store.write(&points(&last)).expect("write after recovery");
        drop(store);
        let store = Store::open(image.path(), config()).expect("reopen");
        assert_eq!(count(&store, "d", "t"), 102, "cut at byte {cut}");
        assert_eq!(count(&store, "d", "new"), 1, "cut at byte {cut}");
    }

    let image = TempDir::new("torn-full");
    copy_dir(directory.path(), image.path());
    let store = Store::open(image.path(), config()).expect("open intact");
    assert_eq!(count(&store, "d", "t"), 102);
}

#[test]
fn garbage_after_the_last_record_is_cut_off() {
    let directory = TempDir::new("garbage");
    let store = Store::open(directory.path(), config()).expect("open");
    let batch: Vec<Owned> = (0..10)
        .map(|index| Owned::new("d", "t", index, index as f64))
        .collect();
    store.write(&points(&batch)).expect("write");
    drop(store);
    let garbage: [&[u8]; 4] = [
        &[0xFF; 3],
        &[0x10, 0, 0, 0, 0xDE, 0xAD, 0xBE, 0xEF, 1, 2, 3],
        &[0xFF, 0xFF, 0xFF, 0x7F, 0, 0, 0, 0],
        &[0; 64],
    ];
    for junk in garbage {
        let image = TempDir::new("garbage-copy");
        copy_dir(directory.path(), image.path());
        let wal = newest_wal(image.path());
        OpenOptions::new()
            .append(true)
            .open(&wal)
            .expect("open log")
            .write_all(junk)
            .expect("append garbage");
        let store = Store::open(image.path(), config()).expect("open with garbage");
        assert_eq!(count(&store, "d", "t"), 10);
    }
}

#[test]
fn damage_before_the_newest_log_file_is_reported() {
    let directory = TempDir::new("wal-damage");
    let store = Store::open(directory.path(), config()).expect("open");
    let batch: Vec<Owned> = (0..10)
        .map(|index| Owned::new("d", "t", index, index as f64))
        .collect();
    store.write(&points(&batch)).expect("write");
    drop(store);
    // Reopening starts a new log file; the first one is now complete, not a torn tail.
    drop(Store::open(directory.path(), config()).expect("reopen"));
    let first = files_with_extension(&directory.path().join("wal"), "wal").remove(0);
    let mut bytes = std::fs::read(&first).expect("read log");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&first, bytes).expect("write log");
    let error = Store::open(directory.path(), config()).expect_err("corrupt log");
    assert!(matches!(error, Error::CorruptWal { .. }), "{error}");
    assert!(
        error.to_string().contains(&first.display().to_string()),
        "{error}"
    );
}

#[test]
fn a_crash_during_flush_leaves_a_store_that_opens_with_everything() {
    let directory = TempDir::new("crash-in-flush");
    let store = Store::open(directory.path(), config()).expect("open");
    let batch: Vec<Owned> = (0..3000)
        .map(|index| Owned::new("d", "t", index * 1000, (index % 97) as f64))
        .collect();
    store.write(&points(&batch)).expect("write");
    // Image 1: segment written but log not yet deleted = the whole directory after a flush,
    // with the pre-flush log files copied back in.
    let before_flush = TempDir::new("crash-in-flush-before");
    copy_dir(directory.path(), before_flush.path());
    store.flush().expect("flush");
    copy_dir(
        &directory.path().join("segments"),
        &before_flush.path().join("segments"),
    );
    std::fs::write(
        before_flush
            .path()
            .join("segments")
            .join("0000000000000063-0000000000000063.seg.tmp"),
        b"half a segment",
    )
    .expect("leftover temporary file");
    let store_after = Store::open(before_flush.path(), config()).expect("open");
    assert_eq!(
        count(&store_after, "d", "t"),
        3000,
        "log replay and segment hold the same points once"
    );
    assert!(
        files_with_extension(&before_flush.path().join("segments"), "tmp").is_empty(),
        "temporary file removed"
    );
    drop(store);
}
