//! Presence and last ingest errors: queued without waiting, written in batches, flushed on
//! demand.

use std::time::Duration;

use fleetwire_model::{DeviceFilter, DeviceId, IngestErrorRecord, NewDevice};

use crate::backend::{TestRegistry, on_both_backends};

on_both_backends!(
    flushed_presence_is_stored,
    repeated_updates_keep_the_latest,
    presence_of_unknown_devices_is_ignored,
    presence_is_written_without_a_flush,
    large_backlog_is_written_completely,
    device_counts_follow_presence,
    ingest_errors_are_stored_and_survive_a_restart,
    an_older_ingest_error_does_not_replace_a_newer_one,
);

async fn create(test: &TestRegistry, name: &str) -> DeviceId {
    let id = DeviceId::new(name).unwrap();
    test.registry
        .create_device(NewDevice {
            id: Some(id.clone()),
            ..NewDevice::default()
        })
        .await
        .unwrap();
    id
}

async fn flushed_presence_is_stored(test: TestRegistry) {
    let registry = &test.registry;
    // Nothing recorded: returns at once.
    registry.flush_presence().await.unwrap();

    let id = create(&test, "blinker").await;
    registry.record_presence(&id, true, 1_000);
    registry.flush_presence().await.unwrap();
    let device = registry.device(&id).await.unwrap();
    assert!(device.online);
    assert_eq!(device.last_seen, Some(1_000));

    registry.record_presence(&id, false, 2_000);
    registry.flush_presence().await.unwrap();
    let device = registry.device(&id).await.unwrap();
    assert!(!device.online);
    assert_eq!(device.last_seen, Some(2_000));
}

async fn repeated_updates_keep_the_latest(test: TestRegistry) {
    let registry = &test.registry;
    let flappy = create(&test, "flappy").await;
    let steady = create(&test, "steady").await;
    for at in 1..=500 {
        registry.record_presence(&flappy, at % 2 == 1, at);
    }
    registry.record_presence(&steady, true, 42);
    registry.flush_presence().await.unwrap();
    let flappy = registry.device(&flappy).await.unwrap();
    assert!(!flappy.online);
    assert_eq!(flappy.last_seen, Some(500));
    assert!(registry.device(&steady).await.unwrap().online);
}

async fn presence_of_unknown_devices_is_ignored(test: TestRegistry) {
    let known = create(&test, "known").await;
    test.registry
        .record_presence(&DeviceId::new("stranger").unwrap(), true, 7);
    test.registry.record_presence(&known, true, 7);
    test.registry.flush_presence().await.unwrap();
    let page = test
        .registry
        .list_devices(&DeviceFilter::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert!(page.items[0].online);
}

async fn presence_is_written_without_a_flush(test: TestRegistry) {
    let id = create(&test, "patient").await;
    test.registry.record_presence(&id, true, 99);
    // No event to await here: the writer's own interval (50 ms) is what is under test.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !test.registry.device(&id).await.unwrap().online {
        assert!(
            tokio::time::Instant::now() < deadline,
            "presence not written within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn large_backlog_is_written_completely(test: TestRegistry) {
    let registry = &test.registry;
    let mut ids = Vec::new();
    for index in 0..1500 {
        ids.push(create(&test, &format!("fleet-{index:04}")).await);
    }
    for (at, id) in ids.iter().enumerate() {
        registry.record_presence(id, true, at as i64);
    }
    registry.flush_presence().await.unwrap();
    let mut filter = DeviceFilter {
        limit: 1000,
        ..DeviceFilter::default()
    };
    let mut online = 0;
    loop {
        let page = registry.list_devices(&filter).await.unwrap();
        online += page.items.iter().filter(|device| device.online).count();
        match page.next_cursor {
            Some(cursor) => filter.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(online, 1500);
}

async fn device_counts_follow_presence(test: TestRegistry) {
    let registry = &test.registry;
    assert_eq!(registry.count_devices().await.unwrap(), (0, 0));
    let first = create(&test, "first").await;
    let second = create(&test, "second").await;
    create(&test, "third").await;
    assert_eq!(registry.count_devices().await.unwrap(), (3, 0));
    registry.record_presence(&first, true, 1);
    registry.record_presence(&second, true, 1);
    registry.flush_presence().await.unwrap();
    assert_eq!(registry.count_devices().await.unwrap(), (3, 2));
    registry.record_presence(&second, false, 2);
    registry.flush_presence().await.unwrap();
    assert_eq!(registry.count_devices().await.unwrap(), (3, 1));
    registry.delete_device(&first).await.unwrap();
    assert_eq!(registry.count_devices().await.unwrap(), (2, 0));
}

fn ingest_error(at: i64, message: &str) -> IngestErrorRecord {
    IngestErrorRecord {
        at,
        source: "mqtt".to_owned(),
        message: message.to_owned(),
    }
}

async fn ingest_errors_are_stored_and_survive_a_restart(test: TestRegistry) {
    let id = create(&test, "garbler").await;
    assert_eq!(
        test.registry.device(&id).await.unwrap().last_ingest_error,
        None
    );
    test.registry.record_presence(&id, true, 1_000);
    test.registry
        .record_ingest_error(&id, ingest_error(1_500, "payload: expected JSON"));
    test.registry
        .record_ingest_error(&id, ingest_error(2_000, "field \"t\": expected a number"));
    // An unknown device's error goes nowhere and does not fail the batch.
    test.registry.record_ingest_error(
        &DeviceId::new("stranger").unwrap(),
        ingest_error(2_000, "nobody"),
    );
    test.registry.flush_presence().await.unwrap();
    let device = test.registry.device(&id).await.unwrap();
    assert!(device.online, "presence and the error share a batch");
    assert_eq!(
        device.last_ingest_error,
        Some(ingest_error(2_000, "field \"t\": expected a number"))
    );

    // A long message is cut, on a character boundary.
    let long = "é".repeat(IngestErrorRecord::MAX_MESSAGE_CHARS + 5);
    test.registry
        .record_ingest_error(&id, ingest_error(3_000, &long));
    test.registry.flush_presence().await.unwrap();
    let stored = test
        .registry
        .device(&id)
        .await
        .unwrap()
        .last_ingest_error
        .unwrap();
    assert_eq!(
        stored.message.chars().count(),
        IngestErrorRecord::MAX_MESSAGE_CHARS
    );
    assert!(stored.message.ends_with("é…"));

    test.registry.close().await;
    let reopened = test.open_again().await;
    assert_eq!(
        reopened.device(&id).await.unwrap().last_ingest_error,
        Some(stored)
    );
    reopened.close().await;
}

async fn an_older_ingest_error_does_not_replace_a_newer_one(test: TestRegistry) {
    // Two nodes write the same device's errors: each batch keeps the newest.
    let id = create(&test, "shared").await;
    test.registry
        .record_ingest_error(&id, ingest_error(5_000, "newer"));
    test.registry.flush_presence().await.unwrap();
    test.registry
        .record_ingest_error(&id, ingest_error(4_000, "older, written later"));
    test.registry.flush_presence().await.unwrap();
    assert_eq!(
        test.registry.device(&id).await.unwrap().last_ingest_error,
        Some(ingest_error(5_000, "newer"))
    );
}
