//! Alarms: one open alarm per rule and device (also under concurrent raises), the
//! acknowledge and clear lifecycle, filters and pages, counts, loading the open ones.

use std::collections::BTreeSet;

use fleetwire_model::{
    Alarm, AlarmFilter, AlarmId, AlarmStatus, CLEARED_BY_RULE, DeviceId, NewAlarm, NewDevice,
    RuleId, Severity,
};
use fleetwire_registry::{Error, Registry};

use crate::backend::{TestRegistry, on_both_backends};

on_both_backends!(
    raised_alarm_reads_back_the_same,
    raising_again_returns_the_open_alarm_unchanged,
    concurrent_raises_yield_one_alarm,
    raising_after_clear_opens_a_new_alarm,
    open_alarms_are_per_rule_and_device,
    acknowledge_then_clear_records_who_and_when,
    active_alarm_clears_without_acknowledgement,
    cleared_alarm_cannot_be_acknowledged_or_cleared,
    unknown_alarm_is_not_found,
    alarm_for_unknown_device_is_not_found,
    invalid_alarm_input_is_refused,
    alarm_filters_combine_and_pages_are_newest_first,
    bad_alarm_cursors_and_limits_are_refused,
    alarm_counts_cover_open_alarms_only,
    open_alarms_lists_every_open_alarm_oldest_first,
    deleting_a_device_deletes_its_alarms,
);

fn device_id(text: &str) -> DeviceId {
    DeviceId::new(text).unwrap()
}

fn rule_id(text: &str) -> RuleId {
    RuleId::new(text).unwrap()
}

async fn create_devices(registry: &Registry, names: &[&str]) {
    for name in names {
        registry
            .create_device(NewDevice {
                id: Some(device_id(name)),
                ..NewDevice::default()
            })
            .await
            .unwrap();
    }
}

fn new_alarm(rule: &str, device: &str, severity: Severity) -> NewAlarm {
    NewAlarm {
        rule_id: rule_id(rule),
        rule_name: format!("The {rule}"),
        device_id: device_id(device),
        severity,
        values: vec![
            ("temperature".to_owned(), 31.5),
            ("humidity".to_owned(), -2.25),
        ],
    }
}

async fn raise(registry: &Registry, rule: &str, device: &str, at: i64) -> Alarm {
    let (alarm, is_new) = registry
        .raise_alarm(new_alarm(rule, device, Severity::High), at)
        .await
        .unwrap();
    assert!(is_new, "{rule}/{device} had an open alarm already");
    alarm
}

fn ids(alarms: &[Alarm]) -> Vec<AlarmId> {
    alarms.iter().map(|alarm| alarm.id.clone()).collect()
}

async fn raised_alarm_reads_back_the_same(test: TestRegistry) {
    let registry = &test.registry;
    create_devices(registry, &["boiler-7"]).await;
    let (alarm, is_new) = registry
        .raise_alarm(new_alarm("overheat", "boiler-7", Severity::Critical), 1_000)
        .await
        .unwrap();
    assert!(is_new);
    let text = alarm.id.as_str();
    assert!(text.starts_with("alm-") && text.len() == 20, "{text}");
    assert_eq!(alarm.rule_id, rule_id("overheat"));
    assert_eq!(alarm.rule_name, "The overheat");
    assert_eq!(alarm.device_id, device_id("boiler-7"));
    assert_eq!(alarm.severity, Severity::Critical);
    assert_eq!(alarm.status, AlarmStatus::Active);
    assert_eq!(
        alarm.values,
        vec![
            ("temperature".to_owned(), 31.5),
            ("humidity".to_owned(), -2.25)
        ]
    );
    assert_eq!((alarm.created_at, alarm.updated_at), (1_000, 1_000));
    assert_eq!(alarm.acknowledged_at, None);
    assert_eq!(alarm.acknowledged_by, None);
    assert_eq!(alarm.cleared_at, None);
    assert_eq!(alarm.cleared_by, None);
    assert!(alarm.clear_values.is_empty());

    assert_eq!(registry.alarm(&alarm.id).await.unwrap(), alarm);
    assert_eq!(
        registry
            .open_alarm(&rule_id("overheat"), &device_id("boiler-7"))
            .await
            .unwrap(),
        Some(alarm.clone())
    );
    assert_eq!(
        registry
            .open_alarm(&rule_id("other"), &device_id("boiler-7"))
            .await
            .unwrap(),
        None
    );
}

async fn raising_again_returns_the_open_alarm_unchanged(test: TestRegistry) {
    let registry = &test.registry;
    create_devices(registry, &["boiler-7"]).await;
    let first = raise(registry, "overheat", "boiler-7", 1_000).await;
    let mut again = new_alarm("overheat", "boiler-7", Severity::Low);
    again.values = vec![("temperature".to_owned(), 99.0)];
    let (second, is_new) = registry.raise_alarm(again.clone(), 2_000).await.unwrap();
    assert!(!is_new);
    assert_eq!(second, first);
    // Acknowledged is still open.
    let acknowledged = registry
        .acknowledge_alarm(&first.id, "night-shift", 3_000)
        .await
        .unwrap();
    let (third, is_new) = registry.raise_alarm(again, 4_000).await.unwrap();
    assert!(!is_new);
    assert_eq!(third, acknowledged);
    let all = registry.list_alarms(&AlarmFilter::default()).await.unwrap();
    assert_eq!(all.items.len(), 1);
}

async fn concurrent_raises_yield_one_alarm(test: TestRegistry) {
    create_devices(&test.registry, &["boiler-7"]).await;
    // Two handles with their own connection pools, as two nodes would have.
    let other_node = test.open_again().await;
    for round in 0..5 {
        let at = 1_000 * (round + 1);
        let mut raises = tokio::task::JoinSet::new();
        for index in 0..8 {
            let registry = if index % 2 == 0 {
                test.registry.clone()
            } else {
                other_node.clone()
            };
            raises.spawn(async move {
                registry
                    .raise_alarm(new_alarm("overheat", "boiler-7", Severity::High), at)
                    .await
            });
        }
        let mut created = 0;
        let mut seen = BTreeSet::new();
        while let Some(raised) = raises.join_next().await {
            let (alarm, is_new) = raised.unwrap().unwrap();
            created += usize::from(is_new);
            seen.insert(alarm.id);
        }
        assert_eq!(created, 1, "round {round}");
        assert_eq!(seen.len(), 1, "round {round}: {seen:?}");
        let id = seen.into_iter().next().unwrap();
        test.registry
            .clear_alarm(&id, CLEARED_BY_RULE, Vec::new(), at + 1)
            .await
            .unwrap();
    }
    let all = test
        .registry
        .list_alarms(&AlarmFilter::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 5);
    other_node.close().await;
}

async fn raising_after_clear_opens_a_new_alarm(test: TestRegistry) {
    let registry = &test.registry;
    create_devices(registry, &["boiler-7"]).await;
    let first = raise(registry, "overheat", "boiler-7", 1_000).await;
    registry
        .clear_alarm(
            &first.id,
            CLEARED_BY_RULE,
            vec![("temperature".to_owned(), 27.0)],
            2_000,
        )
        .await
        .unwrap();
    let second = raise(registry, "overheat", "boiler-7", 3_000).await;
    assert_ne!(second.id, first.id);
    assert_eq!(
        registry
            .open_alarm(&rule_id("overheat"), &device_id("boiler-7"))
            .await
            .unwrap(),
        Some(second)
    );
    // The first stays, cleared, as history.
    assert_eq!(
        registry.alarm(&first.id).await.unwrap().status,
        AlarmStatus::Cleared
    );
}

async fn open_alarms_are_per_rule_and_device(test: TestRegistry) {
    let registry = &test.registry;
    create_devices(registry, &["boiler-7", "boiler-8"]).await;
    let a = raise(registry, "overheat", "boiler-7", 1_000).await;
    let b = raise(registry, "overheat", "boiler-8", 1_000).await;
    let c = raise(registry, "leak", "boiler-7", 1_000).await;
    let distinct: BTreeSet<AlarmId> = [a.id, b.id, c.id].into();
    assert_eq!(distinct.len(), 3);
    assert_eq!(registry.open_alarms().await.unwrap().len(), 3);
}

async fn acknowledge_then_clear_records_who_and_when(test: TestRegistry) {
    let registry = &test.registry;
    create_devices(registry, &["boiler-7"]).await;
    let raised = raise(registry, "overheat", "boiler-7", 1_000).await;

    let acknowledged = registry
        .acknowledge_alarm(&raised.id, "night-shift", 2_000)
        .await
        .unwrap();
    assert_eq!(acknowledged.status, AlarmStatus::Acknowledged);
    assert_eq!(acknowledged.acknowledged_at, Some(2_000));
    assert_eq!(acknowledged.acknowledged_by.as_deref(), Some("night-shift"));
    assert_eq!(acknowledged.updated_at, 2_000);
    assert_eq!(acknowledged.created_at, 1_000);
    assert_eq!(acknowledged.values, raised.values);

    // Acknowledging again changes nothing, whoever asks.
    let again = registry
        .acknowledge_alarm(&raised.id, "day-shift", 2_500)
        .await
        .unwrap();
    assert_eq!(again, acknowledged);

    let cleared = registry
        .clear_alarm(
            &raised.id,
            CLEARED_BY_RULE,
            vec![("temperature".to_owned(), 27.5)],
            3_000,
        )
        .await
        .unwrap();
    assert_eq!(cleared.status, AlarmStatus::Cleared);
    assert_eq!(cleared.cleared_at, Some(3_000));
    assert_eq!(cleared.cleared_by.as_deref(), Some("rule"));
    assert_eq!(cleared.clear_values, vec![("temperature".to_owned(), 27.5)]);
    assert_eq!(cleared.updated_at, 3_000);
    assert_eq!(cleared.acknowledged_by.as_deref(), Some("night-shift"));
    assert_eq!(registry.alarm(&raised.id).await.unwrap(), cleared);
    assert_eq!(
        registry
            .open_alarm(&rule_id("overheat"), &device_id("boiler-7"))
            .await
            .unwrap(),
        None
    );
}

async fn active_alarm_clears_without_acknowledgement(test: TestRegistry) {
    let registry = &test.registry;
    create_devices(registry, &["boiler-7"]).await;
    let raised = raise(registry, "overheat", "boiler-7", 1_000).await;
    let cleared = registry
        .clear_alarm(&raised.id, "operator-anna", Vec::new(), 5_000)
        .await
        .unwrap();
    assert_eq!(cleared.status, AlarmStatus::Cleared);
    assert_eq!(cleared.cleared_by.as_deref(), Some("operator-anna"));
    assert_eq!(cleared.acknowledged_at, None);
    assert!(cleared.clear_values.is_empty());
}

async fn cleared_alarm_cannot_be_acknowledged_or_cleared(test: TestRegistry) {
    let registry = &test.registry;
    create_devices(registry, &["boiler-7"]).await;
    let raised = raise(registry, "overheat", "boiler-7", 1_000).await;
    let cleared = registry
        .clear_alarm(&raised.id, "operator-anna", Vec::new(), 2_000)
        .await
        .unwrap();
    let expected = format!(
        "alarm \"{}\" is cleared: expected an active or acknowledged alarm",
        raised.id
    );
    let error = registry
        .acknowledge_alarm(&raised.id, "night-shift", 3_000)
        .await
        .unwrap_err();
    assert!(matches!(&error, Error::Conflict(_)), "{error:?}");
    assert_eq!(error.to_string(), expected);
    let error = registry
        .clear_alarm(&raised.id, CLEARED_BY_RULE, Vec::new(), 3_000)
        .await
        .unwrap_err();
    assert!(matches!(&error, Error::Conflict(_)), "{error:?}");
    assert_eq!(error.to_string(), expected);
    // Neither touched it.
    assert_eq!(registry.alarm(&raised.id).await.unwrap(), cleared);
}

async fn unknown_alarm_is_not_found(test: TestRegistry) {
    let registry = &test.registry;
    let ghost = AlarmId::new("alm-0000000000000000").unwrap();
    let is_not_found = |error: Error| matches!(error, Error::NotFound { kind: "alarm", id } if id == "alm-0000000000000000");
    assert!(is_not_found(registry.alarm(&ghost).await.unwrap_err()));
    assert!(is_not_found(
        registry
            .acknowledge_alarm(&ghost, "someone", 1)
            .await
            .unwrap_err()
    ));
    assert!(is_not_found(
        registry
            .clear_alarm(&ghost, "someone", Vec::new(), 1)
            .await
            .unwrap_err()
    ));
}

async fn alarm_for_unknown_device_is_not_found(test: TestRegistry) {
    let error = test
        .registry
        .raise_alarm(new_alarm("overheat", "ghost", Severity::Low), 1_000)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::NotFound { kind: "device", id } if id == "ghost"),
        "{error:?}"
    );
    assert!(test.registry.open_alarms().await.unwrap().is_empty());
}

async fn invalid_alarm_input_is_refused(test: TestRegistry) {
    let registry = &test.registry;
    create_devices(registry, &["boiler-7"]).await;
    let with = |change: fn(&mut NewAlarm)| {
        let mut new = new_alarm("overheat", "boiler-7", Severity::Low);
        change(&mut new);
        new
    };
    let cases: Vec<(NewAlarm, &str)> = vec![
        (
            with(|new| new.rule_name = String::new()),
            "alarm rule name: expected 1-256 characters, got 0",
        ),
        (
            with(|new| new.values = vec![("temperature".to_owned(), f64::NAN)]),
            "alarm values: field \"temperature\": expected a finite number, got NaN",
        ),
        (
            with(|new| new.values = vec![(String::new(), 1.0)]),
            "alarm values: field name: expected 1-256 characters, got 0",
        ),
        (
            with(|new| {
                new.values = (0..257).map(|index| (format!("f{index}"), 1.0)).collect();
            }),
            "alarm values: expected at most 256, got 257",
        ),
    ];
    for (new, expected) in cases {
        let error = registry.raise_alarm(new, 1_000).await.unwrap_err();
        assert!(matches!(&error, Error::Invalid(_)), "{error:?}");
        assert_eq!(error.to_string(), expected);
    }
    assert!(registry.open_alarms().await.unwrap().is_empty());

    let raised = raise(registry, "overheat", "boiler-7", 1_000).await;
    let error = registry
        .acknowledge_alarm(&raised.id, "", 2_000)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "alarm acknowledged by: expected 1-128 characters, got 0"
    );
    let error = registry
        .clear_alarm(
            &raised.id,
            CLEARED_BY_RULE,
            vec![("t".to_owned(), f64::INFINITY)],
            2_000,
        )
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "alarm clear values: field \"t\": expected a finite number, got inf"
    );
    assert_eq!(registry.alarm(&raised.id).await.unwrap(), raised);
}

/// Every page of `filter`, at `limit` alarms a page, concatenated.
async fn all_pages(registry: &Registry, filter: &AlarmFilter, limit: u32) -> Vec<Alarm> {
    let mut filter = AlarmFilter {
        limit,
        ..filter.clone()
    };
    let mut alarms = Vec::new();
    loop {
        let page = registry.list_alarms(&filter).await.unwrap();
        assert!(page.items.len() <= limit as usize);
        alarms.extend(page.items);
        match page.next_cursor {
            Some(cursor) => filter.cursor = Some(cursor),
            None => return alarms,
        }
    }
}

async fn alarm_filters_combine_and_pages_are_newest_first(test: TestRegistry) {
    let registry = &test.registry;
    let devices = ["boiler-1", "boiler-2", "boiler-3"];
    create_devices(registry, &devices).await;
    // 3 rules x 3 devices, several rounds: each round clears some and acknowledges
    // others; many alarms share a creation time, so ties are broken by id.
    let rules = [
        ("overheat", Severity::High),
        ("leak", Severity::Critical),
        ("drift", Severity::Low),
    ];
    let mut every = Vec::new();
    for round in 0..4_i64 {
        for (rule_index, (rule, severity)) in rules.iter().enumerate() {
            for (device_index, device) in devices.iter().enumerate() {
                let at = 1_000 * round + (rule_index as i64 % 2) * 10;
                let (alarm, _) = registry
                    .raise_alarm(new_alarm(rule, device, *severity), at)
                    .await
                    .unwrap();
                let alarm = match (round + rule_index as i64 + device_index as i64) % 3 {
                    0 if round < 3 => registry
                        .clear_alarm(&alarm.id, CLEARED_BY_RULE, Vec::new(), at + 1)
                        .await
                        .unwrap(),
                    1 => registry
                        .acknowledge_alarm(&alarm.id, "night-shift", at + 1)
                        .await
                        .unwrap(),
                    _ => alarm,
                };
                every.retain(|known: &Alarm| known.id != alarm.id);
                every.push(alarm);
            }
        }
    }
    every.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
    assert!(every.len() > 9, "{}", every.len());

    let filters = [
        AlarmFilter::default(),
        AlarmFilter {
            open_only: true,
            ..AlarmFilter::default()
        },
        AlarmFilter {
            status: Some(AlarmStatus::Active),
            ..AlarmFilter::default()
        },
        AlarmFilter {
            status: Some(AlarmStatus::Acknowledged),
            ..AlarmFilter::default()
        },
        AlarmFilter {
            status: Some(AlarmStatus::Cleared),
            ..AlarmFilter::default()
        },
        AlarmFilter {
            status: Some(AlarmStatus::Cleared),
            open_only: true,
            ..AlarmFilter::default()
        },
        AlarmFilter {
            device: Some(device_id("boiler-2")),
            ..AlarmFilter::default()
        },
        AlarmFilter {
            device: Some(device_id("boiler-2")),
            open_only: true,
            ..AlarmFilter::default()
        },
        AlarmFilter {
            rule: Some(rule_id("leak")),
            status: Some(AlarmStatus::Active),
            ..AlarmFilter::default()
        },
        AlarmFilter {
            severity: Some(Severity::Low),
            device: Some(device_id("boiler-3")),
            ..AlarmFilter::default()
        },
        AlarmFilter {
            severity: Some(Severity::High),
            rule: Some(rule_id("overheat")),
            device: Some(device_id("boiler-1")),
            open_only: true,
            ..AlarmFilter::default()
        },
    ];
    for filter in &filters {
        let expected: Vec<AlarmId> = every
            .iter()
            .filter(|alarm| {
                filter.status.is_none_or(|status| alarm.status == status)
                    && (!filter.open_only || alarm.status.is_open())
                    && filter
                        .device
                        .as_ref()
                        .is_none_or(|device| &alarm.device_id == device)
                    && filter
                        .rule
                        .as_ref()
                        .is_none_or(|rule| &alarm.rule_id == rule)
                    && filter
                        .severity
                        .is_none_or(|severity| alarm.severity == severity)
            })
            .map(|alarm| alarm.id.clone())
            .collect();
        for limit in [1, 4, 1000] {
            let listed = all_pages(registry, filter, limit).await;
            assert_eq!(ids(&listed), expected, "{filter:?}, limit {limit}");
        }
    }
    // The listed alarms are whole: the same as read one by one.
    let listed = all_pages(registry, &AlarmFilter::default(), 5).await;
    assert_eq!(listed, every);
}

async fn bad_alarm_cursors_and_limits_are_refused(test: TestRegistry) {
    for limit in [0, 1001] {
        let error = test
            .registry
            .list_alarms(&AlarmFilter {
                limit,
                ..AlarmFilter::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(&error, Error::Invalid(_)), "{error:?}");
        assert_eq!(error.to_string(), format!("limit {limit}: expected 1-1000"));
    }
    // Not base64url; no separator; no number before it; a bad id after it.
    for cursor in ["!!!", "YWxtLTE", "eDphbG0tMQ", "MTI6YSBi"] {
        let error = test
            .registry
            .list_alarms(&AlarmFilter {
                cursor: Some(cursor.to_owned()),
                ..AlarmFilter::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(error, Error::InvalidCursor), "{cursor}: {error:?}");
    }
}

async fn alarm_counts_cover_open_alarms_only(test: TestRegistry) {
    let registry = &test.registry;
    assert!(registry.alarm_counts().await.unwrap().is_empty());
    create_devices(registry, &["d1", "d2", "d3"]).await;
    let raise_with = |rule: &'static str, device: &'static str, severity| async move {
        registry
            .raise_alarm(new_alarm(rule, device, severity), 1_000)
            .await
            .unwrap()
            .0
    };
    raise_with("r1", "d1", Severity::Critical).await;
    raise_with("r1", "d2", Severity::Critical).await;
    let acknowledged = raise_with("r1", "d3", Severity::Critical).await;
    registry
        .acknowledge_alarm(&acknowledged.id, "someone", 2_000)
        .await
        .unwrap();
    raise_with("r2", "d1", Severity::Low).await;
    let cleared = raise_with("r3", "d1", Severity::Medium).await;
    registry
        .clear_alarm(&cleared.id, "someone", Vec::new(), 2_000)
        .await
        .unwrap();
    assert_eq!(
        registry.alarm_counts().await.unwrap(),
        vec![
            (Severity::Critical, AlarmStatus::Active, 2),
            (Severity::Critical, AlarmStatus::Acknowledged, 1),
            (Severity::Low, AlarmStatus::Active, 1),
        ]
    );
}

async fn open_alarms_lists_every_open_alarm_oldest_first(test: TestRegistry) {
    let registry = &test.registry;
    assert!(registry.open_alarms().await.unwrap().is_empty());
    create_devices(registry, &["d1", "d2"]).await;
    let late = raise(registry, "r1", "d1", 3_000).await;
    let early = raise(registry, "r1", "d2", 1_000).await;
    let acknowledged = raise(registry, "r2", "d1", 2_000).await;
    let acknowledged = registry
        .acknowledge_alarm(&acknowledged.id, "someone", 2_500)
        .await
        .unwrap();
    let cleared = raise(registry, "r2", "d2", 500).await;
    registry
        .clear_alarm(&cleared.id, "someone", Vec::new(), 600)
        .await
        .unwrap();
    assert_eq!(
        registry.open_alarms().await.unwrap(),
        vec![early, acknowledged, late]
    );
}

async fn deleting_a_device_deletes_its_alarms(test: TestRegistry) {
    let registry = &test.registry;
    create_devices(registry, &["doomed", "kept"]).await;
    let doomed = raise(registry, "overheat", "doomed", 1_000).await;
    let kept = raise(registry, "overheat", "kept", 1_000).await;
    registry.delete_device(&device_id("doomed")).await.unwrap();
    assert!(matches!(
        registry.alarm(&doomed.id).await.unwrap_err(),
        Error::NotFound { kind: "alarm", .. }
    ));
    assert_eq!(registry.open_alarms().await.unwrap(), vec![kept]);
}
