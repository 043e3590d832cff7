//! Devices: create, read, update, delete, attributes, listing with filters and pages,
//! reopening.

use std::collections::BTreeSet;

use fleetwire_model::{DeviceFilter, DeviceId, DevicePatch, Labels, NewDevice};
use fleetwire_registry::{Error, Registry};

use crate::backend::{TestRegistry, on_both_backends};

on_both_backends!(
    created_device_reads_back_the_same,
    missing_id_is_generated,
    taken_id_is_already_exists,
    oversized_or_malformed_fields_are_invalid,
    unknown_device_is_not_found,
    update_changes_only_the_given_fields,
    delete_removes_the_device_and_its_labels,
    merged_attributes_replace_only_their_keys,
    listing_filters_and_pages_see_every_device_once,
    last_full_page_has_no_cursor,
    bad_cursors_and_limits_are_refused,
    prefix_lists_exactly_the_ids_starting_with_it,
    reopening_keeps_devices_and_marks_them_offline,
);

fn id(text: &str) -> DeviceId {
    DeviceId::new(text).expect("a valid device id")
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect()
}

fn sensor(name: &str) -> NewDevice {
    NewDevice {
        id: Some(id(name)),
        name: Some(format!("The {name}")),
        device_type: Some("sensor".to_owned()),
        labels: labels(&[("site", "berlin"), ("floor", "2")]),
    }
}

async fn created_device_reads_back_the_same(test: TestRegistry) {
    let registry = &test.registry;
    let created = registry.create_device(sensor("boiler-7")).await.unwrap();
    assert_eq!(created.id, id("boiler-7"));
    assert_eq!(created.name, "The boiler-7");
    assert_eq!(created.device_type, "sensor");
    assert_eq!(
        created.labels,
        labels(&[("site", "berlin"), ("floor", "2")])
    );
    assert!(!created.online);
    assert_eq!(created.last_seen, None);
    assert!(created.attributes.is_empty());
    assert!(!created.has_credentials);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!((now - 60_000..=now).contains(&created.created_at));

    assert_eq!(registry.device(&created.id).await.unwrap(), created);
}

async fn missing_id_is_generated(test: TestRegistry) {
    let first = test
        .registry
        .create_device(NewDevice::default())
        .await
        .unwrap();
    let second = test
        .registry
        .create_device(NewDevice::default())
        .await
        .unwrap();
    for device in [&first, &second] {
        let text = device.id.as_str();
        assert!(text.starts_with("dev-"), "{text}");
        assert_eq!(text.len(), 20, "{text}");
        assert_eq!(device.name, "");
        assert_eq!(device.device_type, "");
    }
    assert_ne!(first.id, second.id);
    assert_eq!(test.registry.device(&first.id).await.unwrap(), first);
}

async fn taken_id_is_already_exists(test: TestRegistry) {
    test.registry.create_device(sensor("twin")).await.unwrap();
    let error = test
        .registry
        .create_device(sensor("twin"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::AlreadyExists(taken) if taken == "twin"),
        "{error:?}"
    );
}

async fn oversized_or_malformed_fields_are_invalid(test: TestRegistry) {
    let cases: Vec<(NewDevice, &str)> = vec![
        (
            NewDevice {
                name: Some("n".repeat(257)),
                ..NewDevice::default()
            },
            "device name: expected at most 256 characters, got 257",
        ),
        (
            NewDevice {
                device_type: Some("t".repeat(65)),
                ..NewDevice::default()
            },
            "device type: expected at most 64 characters, got 65",
        ),
        (
            NewDevice {
                labels: (0..65)
                    .map(|index| (format!("k{index}"), String::new()))
                    .collect(),
                ..NewDevice::default()
            },
            "labels: expected at most 64, got 65",
        ),
        (
            NewDevice {
                labels: labels(&[("", "x")]),
                ..NewDevice::default()
            },
            "label key: expected 1-64 characters, got 0",
        ),
        (
            NewDevice {
                labels: labels(&[(&"k".repeat(65), "x")]),
                ..NewDevice::default()
            },
            "label key: expected 1-64 characters, got 65",
        ),
        (
            NewDevice {
                labels: labels(&[("site", &"v".repeat(257))]),
                ..NewDevice::default()
            },
            "label \"site\" value: expected at most 256 characters, got 257",
        ),
        (
            NewDevice {
                name: Some("nul\0byte".to_owned()),
                ..NewDevice::default()
            },
            "device name: expected no control characters, got '\\0'",
        ),
    ];
    for (new, expected) in cases {
        let error = test.registry.create_device(new).await.unwrap_err();
        assert!(matches!(&error, Error::Invalid(_)), "{error:?}");
        assert_eq!(error.to_string(), expected);
    }
    // The limits themselves are fine, counted in characters rather than bytes.
    let at_limits = NewDevice {
        name: Some("é".repeat(256)),
        device_type: Some("t".repeat(64)),
        labels: (0..64)
            .map(|index| (format!("{index:k>64}"), "v".repeat(256)))
            .collect(),
        ..NewDevice::default()
    };
    let created = test.registry.create_device(at_limits).await.unwrap();
    assert_eq!(created.labels.len(), 64);

    let error = test
        .registry
        .update_device(
            &created.id,
            DevicePatch {
                name: Some("n".repeat(257)),
                ..DevicePatch::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Invalid(_)), "{error:?}");
    // Nothing of a refused device was stored.
    let page = test
        .registry
        .list_devices(&DeviceFilter::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
}

async fn unknown_device_is_not_found(test: TestRegistry) {
    let ghost = id("ghost");
    let is_not_found =
        |error: Error| matches!(error, Error::NotFound { kind: "device", id } if id == "ghost");
    assert!(is_not_found(
        test.registry.device(&ghost).await.unwrap_err()
    ));
    assert!(is_not_found(
        test.registry
            .update_device(&ghost, DevicePatch::default())
            .await
            .unwrap_err()
    ));
    assert!(is_not_found(
        test.registry.delete_device(&ghost).await.unwrap_err()
    ));
    assert!(is_not_found(
        test.registry
            .merge_attributes(&ghost, serde_json::Map::new())
            .await
            .unwrap_err()
    ));
    assert!(is_not_found(
        test.registry.issue_credentials(&ghost).await.unwrap_err()
    ));
}

async fn update_changes_only_the_given_fields(test: TestRegistry) {
    let registry = &test.registry;
    let created = registry.create_device(sensor("pump")).await.unwrap();

    let renamed = registry
        .update_device(
            &created.id,
            DevicePatch {
                name: Some("Main pump".to_owned()),
                ..DevicePatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.name, "Main pump");
    assert_eq!(renamed.device_type, created.device_type);
    assert_eq!(renamed.labels, created.labels);

    let relabelled = registry
        .update_device(
            &created.id,
            DevicePatch {
                device_type: Some("actuator".to_owned()),
                labels: Some(labels(&[("site", "paris")])),
                ..DevicePatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(relabelled.name, "Main pump");
    assert_eq!(relabelled.device_type, "actuator");
    assert_eq!(relabelled.labels, labels(&[("site", "paris")]));
    assert_eq!(registry.device(&created.id).await.unwrap(), relabelled);

    // The label index follows: old labels no longer match, new ones do.
    let by_label = |pairs: &[(&str, &str)]| DeviceFilter {
        labels: labels(pairs),
        ..DeviceFilter::default()
    };
    assert!(
        registry
            .list_devices(&by_label(&[("site", "berlin")]))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        registry
            .list_devices(&by_label(&[("floor", "2")]))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        registry
            .list_devices(&by_label(&[("site", "paris")]))
            .await
            .unwrap()
            .items,
        vec![relabelled]
    );
}

async fn delete_removes_the_device_and_its_labels(test: TestRegistry) {
    let registry = &test.registry;
    let created = registry.create_device(sensor("doomed")).await.unwrap();
    registry.delete_device(&created.id).await.unwrap();
    assert!(matches!(
        registry.device(&created.id).await,
        Err(Error::NotFound { .. })
    ));
    let filter = DeviceFilter {
        labels: labels(&[("site", "berlin")]),
        ..DeviceFilter::default()
    };
    assert!(
        registry
            .list_devices(&filter)
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // The id is free again, and the new device starts blank.
    let again = registry
        .create_device(NewDevice {
            id: Some(created.id.clone()),
            ..NewDevice::default()
        })
        .await
        .unwrap();
    assert!(again.labels.is_empty());
    assert!(
        registry
            .list_devices(&filter)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

async fn merged_attributes_replace_only_their_keys(test: TestRegistry) {
    let registry = &test.registry;
    let device = registry.create_device(sensor("reporter")).await.unwrap();
    let object = |value: serde_json::Value| value.as_object().cloned().unwrap();

    registry
        .merge_attributes(
            &device.id,
            object(serde_json::json!({"firmware": "1.0", "battery": 80})),
        )
        .await
        .unwrap();
    registry
        .merge_attributes(
            &device.id,
            object(serde_json::json!({"firmware": "1.1", "wifi": {"rssi": -60}})),
        )
        .await
        .unwrap();
    assert_eq!(
        registry.device(&device.id).await.unwrap().attributes,
        object(serde_json::json!({"firmware": "1.1", "battery": 80, "wifi": {"rssi": -60}}))
    );

    let huge = object(serde_json::json!({"blob": "x".repeat(70_000)}));
    let error = registry
        .merge_attributes(&device.id, huge)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Invalid(_)), "{error:?}");
    assert_eq!(
        registry.device(&device.id).await.unwrap().attributes.len(),
        3
    );

    // Concurrent merges of different keys all land.
    let merges = (0..8).map(|index| {
        let registry = registry.clone();
        let id = device.id.clone();
        tokio::spawn(async move {
            let mut attributes = serde_json::Map::new();
            attributes.insert(format!("key{index}"), serde_json::Value::from(index));
            registry.merge_attributes(&id, attributes).await
        })
    });
    for merge in merges.collect::<Vec<_>>() {
        merge.await.unwrap().unwrap();
    }
    assert_eq!(
        registry.device(&device.id).await.unwrap().attributes.len(),
        11
    );
}

/// Every page of `filter`, checking the pages are in id order and the cursor chain ends.
async fn all_pages(registry: &Registry, filter: &DeviceFilter) -> Vec<DeviceId> {
    let mut filter = filter.clone();
    let mut seen = Vec::new();
    loop {
        let page = registry.list_devices(&filter).await.unwrap();
        assert!(page.items.len() <= filter.limit as usize);
        seen.extend(page.items.into_iter().map(|device| device.id));
        match page.next_cursor {
            Some(cursor) => filter.cursor = Some(cursor),
            None => break,
        }
    }
    assert!(
        seen.windows(2).all(|pair| pair[0] < pair[1]),
        "pages out of order: {seen:?}"
    );
    seen
}

async fn listing_filters_and_pages_see_every_device_once(test: TestRegistry) {
    let registry = &test.registry;
    let mut expected: Vec<(DeviceId, String, Labels)> = Vec::new();
    for index in 0..120 {
        let device_type = ["sensor", "gateway", "actuator"][index % 3].to_owned();
        let mut device_labels = labels(&[("site", ["berlin", "paris"][index % 2])]);
        if index % 5 == 0 {
            device_labels.insert("tier".to_owned(), "gold".to_owned());
        }
        let device = registry
            .create_device(NewDevice {
                id: Some(id(&format!("d-{index:03}"))),
                device_type: Some(device_type.clone()),
                labels: device_labels.clone(),
                ..NewDevice::default()
            })
            .await
            .unwrap();
        expected.push((device.id, device_type, device_labels));
    }

    let filters = [
        (None, labels(&[])),
        (Some("sensor"), labels(&[])),
        (None, labels(&[("site", "paris")])),
        (Some("gateway"), labels(&[("site", "berlin")])),
        (None, labels(&[("site", "berlin"), ("tier", "gold")])),
        (
            Some("actuator"),
            labels(&[("site", "paris"), ("tier", "gold")]),
        ),
        (Some("nothing"), labels(&[])),
        (None, labels(&[("site", "mars")])),
    ];
    for (device_type, wanted_labels) in filters {
        let want: Vec<DeviceId> = expected
            .iter()
            .filter(|(_, expected_type, expected_labels)| {
                device_type.is_none_or(|wanted| wanted == expected_type)
                    && wanted_labels
                        .iter()
                        .all(|(key, value)| expected_labels.get(key) == Some(value))
            })
            .map(|(id, _, _)| id.clone())
            .collect();
        for limit in [1, 7, 1000] {
            let filter = DeviceFilter {
                device_type: device_type.map(str::to_owned),
                labels: wanted_labels.clone(),
                prefix: None,
                limit,
                cursor: None,
            };
            let seen = all_pages(registry, &filter).await;
            assert_eq!(
                seen.iter().collect::<BTreeSet<_>>().len(),
                seen.len(),
                "a device seen twice with {filter:?}"
            );
            assert_eq!(seen, want, "with {filter:?}");
        }
    }
}

async fn last_full_page_has_no_cursor(test: TestRegistry) {
    let empty = test
        .registry
        .list_devices(&DeviceFilter::default())
        .await
        .unwrap();
    assert!(empty.items.is_empty());
    assert_eq!(empty.next_cursor, None);

    for index in 0..10 {
        test.registry
            .create_device(NewDevice {
                id: Some(id(&format!("d{index}"))),
                ..NewDevice::default()
            })
            .await
            .unwrap();
    }
    let first = test
        .registry
        .list_devices(&DeviceFilter {
            limit: 5,
            ..DeviceFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(first.items.len(), 5);
    let second = test
        .registry
        .list_devices(&DeviceFilter {
            limit: 5,
            cursor: first.next_cursor,
            ..DeviceFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(second.items.len(), 5);
    assert_eq!(second.next_cursor, None);
}

async fn bad_cursors_and_limits_are_refused(test: TestRegistry) {
    for cursor in ["!!!", "", "bm90IGFuIGlk IHdpdGggc3BhY2Vz", "/w", "YSBi"] {
        let filter = DeviceFilter {
            cursor: Some(cursor.to_owned()),
            ..DeviceFilter::default()
        };
        let error = test.registry.list_devices(&filter).await.unwrap_err();
        assert!(
            matches!(error, Error::InvalidCursor),
            "cursor {cursor:?}: {error:?}"
        );
    }
    for limit in [0, 1001] {
        let filter = DeviceFilter {
            limit,
            ..DeviceFilter::default()
        };
        let error = test.registry.list_devices(&filter).await.unwrap_err();
        assert_eq!(error.to_string(), format!("limit {limit}: expected 1-1000"));
    }
}

async fn reopening_keeps_devices_and_marks_them_offline(test: TestRegistry) {
    let device = test
        .registry
        .create_device(sensor("survivor"))
        .await
        .unwrap();
    test.registry
        .record_presence(&device.id, true, 1_700_000_000_000);
    test.registry.flush_presence().await.unwrap();
    assert!(test.registry.device(&device.id).await.unwrap().online);
    test.registry.close().await;

    let reopened = test.open_again().await;
    let after = reopened.device(&device.id).await.unwrap();
    assert!(!after.online);
    assert_eq!(after.last_seen, Some(1_700_000_000_000));
    assert_eq!(after.labels, device.labels);
    assert_eq!(after.name, device.name);
    // The migrations ran once: opening a third time changes nothing either.
    reopened.close().await;
    let third = test.open_again().await;
    assert_eq!(
        third
            .list_devices(&DeviceFilter::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

async fn prefix_lists_exactly_the_ids_starting_with_it(test: TestRegistry) {
    let registry = &test.registry;
    for name in [
        "pump-1", "pump-10", "pump-2", "pumpkin", "pu", "valve-1", "PUMP-3",
    ] {
        registry.create_device(sensor(name)).await.unwrap();
    }
    let list = |prefix: &str, limit: u32, cursor: Option<String>| {
        let filter = DeviceFilter {
            prefix: Some(prefix.to_owned()),
            limit,
            cursor,
            ..DeviceFilter::default()
        };
        async move { registry.list_devices(&filter).await }
    };
    let ids = |page: &fleetwire_model::Page<fleetwire_model::Device>| -> Vec<String> {
        page.items
            .iter()
            .map(|device| device.id.to_string())
            .collect()
    };
    let page = list("pump-", 100, None).await.unwrap();
    assert_eq!(ids(&page), ["pump-1", "pump-10", "pump-2"]);
    assert_eq!(page.next_cursor, None);
    assert_eq!(
        ids(&list("pump", 100, None).await.unwrap()),
        ["pump-1", "pump-10", "pump-2", "pumpkin"]
    );
    // Pages of a prefix listing see every match once.
    let first = list("pump", 2, None).await.unwrap();
    assert_eq!(ids(&first), ["pump-1", "pump-10"]);
    let second = list("pump", 2, first.next_cursor).await.unwrap();
    assert_eq!(ids(&second), ["pump-2", "pumpkin"]);
    assert!(list("zzz", 100, None).await.unwrap().items.is_empty());
    assert!(matches!(
        list("pump%", 100, None).await,
        Err(Error::Invalid(message)) if message.contains("prefix")
    ));
}
