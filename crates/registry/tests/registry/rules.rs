//! Rules: create, read, replace, delete, validation, taken ids, listing in pages.

use fleetwire_model::{
    DeviceId, NewAlarm, NewDevice, RuleAction, RuleId, RuleMatch, RuleSpec, Severity,
};
use fleetwire_registry::Error;
use serde_json::json;

use crate::backend::{TestRegistry, on_both_backends};

on_both_backends!(
    created_rule_reads_back_the_same,
    missing_rule_id_is_generated,
    taken_rule_id_is_id_taken,
    invalid_rule_specs_are_refused,
    unknown_rule_is_not_found,
    replacing_keeps_created_at_and_advances_updated_at,
    deleted_rule_is_gone_but_its_alarms_stay,
    rule_pages_see_every_rule_once_in_id_order,
    bad_rule_cursors_and_limits_are_refused,
);

pub(crate) fn rule_id(text: &str) -> RuleId {
    RuleId::new(text).expect("a valid rule id")
}

/// A rule using every part of a spec.
pub(crate) fn overheat() -> RuleSpec {
    RuleSpec {
        name: "Overheating boiler".to_owned(),
        matcher: RuleMatch {
            devices: vec![
                DeviceId::new("boiler-7").unwrap(),
                DeviceId::new("boiler-8").unwrap(),
            ],
            device_type: Some("sensor".to_owned()),
            labels: [("site".to_owned(), "berlin".to_owned())].into(),
        },
        condition: "temperature > 30\nand humidity < 80".to_owned(),
        for_ms: Some(10_000),
        clear: Some("temperature < 28".to_owned()),
        severity: Severity::High,
        actions: vec![
            RuleAction::Alarm,
            RuleAction::Webhook {
                url: "https://hooks.example.com/fleet?x=1".to_owned(),
            },
            RuleAction::Republish {
                topic: "alerts/{device}".to_owned(),
            },
            RuleAction::Command {
                name: "fan.on".to_owned(),
                params: json!({"speed": 3, "why": ["hot", null]}),
            },
        ],
        enabled: true,
    }
}

/// The smallest valid spec.
pub(crate) fn minimal(name: &str) -> RuleSpec {
    RuleSpec {
        name: name.to_owned(),
        matcher: RuleMatch::default(),
        condition: "x > 1".to_owned(),
        for_ms: None,
        clear: None,
        severity: Severity::Low,
        actions: Vec::new(),
        enabled: false,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn created_rule_reads_back_the_same(test: TestRegistry) {
    let registry = &test.registry;
    let created = registry
        .create_rule(Some(rule_id("overheat")), overheat())
        .await
        .unwrap();
    assert_eq!(created.id, rule_id("overheat"));
    assert_eq!(created.spec, overheat());
    assert_eq!(created.created_at, created.updated_at);
    let now = now_ms();
    assert!((now - 60_000..=now).contains(&created.created_at));

    assert_eq!(registry.rule(&created.id).await.unwrap(), created);
    let minimal = registry
        .create_rule(Some(rule_id("quiet")), minimal("quiet"))
        .await
        .unwrap();
    assert_eq!(registry.rule(&minimal.id).await.unwrap(), minimal);
    assert_eq!(
        registry.all_rules().await.unwrap(),
        vec![created.clone(), minimal.clone()]
    );
    // Another process (or node) reads the same.
    let reopened = test.open_again().await;
    assert_eq!(reopened.rule(&created.id).await.unwrap(), created);
}

async fn missing_rule_id_is_generated(test: TestRegistry) {
    let first = test.registry.create_rule(None, minimal("a")).await.unwrap();
    let second = test.registry.create_rule(None, minimal("b")).await.unwrap();
    for rule in [&first, &second] {
        let text = rule.id.as_str();
        assert!(text.starts_with("rule-"), "{text}");
        assert_eq!(text.len(), 21, "{text}");
        assert!(text[5..].bytes().all(|b| b.is_ascii_hexdigit()), "{text}");
    }
    assert_ne!(first.id, second.id);
    assert_eq!(test.registry.rule(&first.id).await.unwrap(), first);
}

async fn taken_rule_id_is_id_taken(test: TestRegistry) {
    let registry = &test.registry;
    registry
        .create_rule(Some(rule_id("twin")), minimal("first"))
        .await
        .unwrap();
    let error = registry
        .create_rule(Some(rule_id("twin")), minimal("second"))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::IdTaken { kind: "rule", id } if id == "twin"),
        "{error:?}"
    );
    assert_eq!(error.to_string(), "rule \"twin\" already exists");
    // The first one is untouched.
    assert_eq!(
        registry.rule(&rule_id("twin")).await.unwrap().spec.name,
        "first"
    );
}

async fn invalid_rule_specs_are_refused(test: TestRegistry) {
    let with = |change: fn(&mut RuleSpec)| {
        let mut spec = minimal("r");
        change(&mut spec);
        spec
    };
    let cases: Vec<(RuleSpec, &str)> = vec![
        (
            with(|spec| spec.name = String::new()),
            "rule name: expected 1-256 characters, got 0",
        ),
        (
            with(|spec| spec.name = "n".repeat(257)),
            "rule name: expected 1-256 characters, got 257",
        ),
        (
            with(|spec| spec.name = "line\nbreak".to_owned()),
            "rule name: expected no control characters, got '\\n'",
        ),
        (
            with(|spec| spec.condition = String::new()),
            "rule condition: expected 1-4096 bytes, got 0",
        ),
        (
            with(|spec| spec.condition = "x".repeat(4097)),
            "rule condition: expected 1-4096 bytes, got 4097",
        ),
        (
            with(|spec| spec.condition = "x >\0 1".to_owned()),
            "rule condition: expected no NUL character, got one at byte 3",
        ),
        (
            with(|spec| spec.clear = Some(String::new())),
            "rule clear expression: expected 1-4096 bytes, got 0",
        ),
        (
            with(|spec| spec.for_ms = Some(-1)),
            "rule for: expected a duration of 0 ms or more, got -1 ms",
        ),
        (
            with(|spec| spec.matcher.device_type = Some("t".repeat(65))),
            "rule match type: expected at most 64 characters, got 65",
        ),
        (
            with(|spec| {
                spec.matcher.devices = (0..1001)
                    .map(|index| DeviceId::new(format!("d{index}")).unwrap())
                    .collect();
            }),
            "rule match devices: expected at most 1000, got 1001",
        ),
        (
            with(|spec| {
                spec.matcher.labels = [(String::new(), "x".to_owned())].into();
            }),
            "label key: expected 1-64 characters, got 0",
        ),
        (
            with(|spec| spec.actions = vec![RuleAction::Alarm; 17]),
            "rule actions: expected at most 16, got 17",
        ),
        (
            with(|spec| {
                spec.actions = vec![
                    RuleAction::Alarm,
                    RuleAction::Webhook {
                        url: "ftp://files.example.com".to_owned(),
                    },
                ];
            }),
            "rule action 1 (webhook): url \"ftp://files.example.com\": expected an http:// or https:// URL (http(s)://HOST[:PORT]/PATH)",
        ),
        (
            with(|spec| {
                spec.actions = vec![RuleAction::Republish {
                    topic: "alerts/#".to_owned(),
                }];
            }),
            "rule action 0 (republish): topic \"alerts/#\": expected a topic name without the wildcards '+' and '#'",
        ),
        (
            with(|spec| {
                spec.actions = vec![RuleAction::Republish {
                    topic: String::new(),
                }];
            }),
            "rule action 0 (republish): topic: expected 1-1024 characters, got 0",
        ),
        (
            with(|spec| {
                spec.actions = vec![RuleAction::Command {
                    name: "fan/on".to_owned(),
                    params: json!({}),
                }];
            }),
            "rule action 0 (command): command name \"fan/on\": expected 1-128 characters of A-Z, a-z, 0-9, '_', '.', '-'",
        ),
        (
            with(|spec| {
                spec.actions = vec![RuleAction::Command {
                    name: "fan".to_owned(),
                    params: json!([1, 2]),
                }];
            }),
            "rule action 0 (command): params: expected a JSON object or null, got an array",
        ),
    ];
    for (spec, expected) in cases {
        let error = test
            .registry
            .create_rule(None, spec.clone())
            .await
            .unwrap_err();
        assert!(matches!(&error, Error::Invalid(_)), "{error:?}");
        assert_eq!(error.to_string(), expected);
    }
    // Nothing of a refused rule was stored, and replacing is checked the same way.
    assert!(test.registry.all_rules().await.unwrap().is_empty());
    let stored = test.registry.create_rule(None, minimal("r")).await.unwrap();
    let error = test
        .registry
        .replace_rule(&stored.id, with(|spec| spec.name = String::new()))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Invalid(_)), "{error:?}");
    assert_eq!(test.registry.rule(&stored.id).await.unwrap(), stored);

    // Ids are checked when they are made.
    let error = RuleId::new("no spaces").unwrap_err();
    assert_eq!(
        error.to_string(),
        "rule id \"no spaces\": expected 1-128 characters of A-Z, a-z, 0-9, '_', '.', '-'"
    );
    let error = Severity::parse("severe").unwrap_err();
    assert_eq!(
        error.to_string(),
        "severity \"severe\": expected low, medium, high or critical"
    );
}

async fn unknown_rule_is_not_found(test: TestRegistry) {
    let ghost = rule_id("ghost");
    let is_not_found =
        |error: Error| matches!(error, Error::NotFound { kind: "rule", id } if id == "ghost");
    assert!(is_not_found(test.registry.rule(&ghost).await.unwrap_err()));
    assert!(is_not_found(
        test.registry
            .replace_rule(&ghost, minimal("x"))
            .await
            .unwrap_err()
    ));
    assert!(is_not_found(
        test.registry.delete_rule(&ghost).await.unwrap_err()
    ));
}

async fn replacing_keeps_created_at_and_advances_updated_at(test: TestRegistry) {
    let registry = &test.registry;
    let created = registry
        .create_rule(Some(rule_id("overheat")), minimal("before"))
        .await
        .unwrap();
    // Two replacements within the same millisecond still give distinct, growing times.
    let first = registry
        .replace_rule(&created.id, overheat())
        .await
        .unwrap();
    let second = registry
        .replace_rule(&created.id, minimal("after"))
        .await
        .unwrap();
    assert_eq!(first.spec, overheat());
    assert_eq!(first.created_at, created.created_at);
    assert!(first.updated_at > created.updated_at);
    assert!(second.updated_at > first.updated_at);
    assert_eq!(second.created_at, created.created_at);
    assert_eq!(registry.rule(&created.id).await.unwrap(), second);
}

async fn deleted_rule_is_gone_but_its_alarms_stay(test: TestRegistry) {
    let registry = &test.registry;
    let device = registry
        .create_device(NewDevice {
            id: Some(DeviceId::new("boiler-7").unwrap()),
            ..NewDevice::default()
        })
        .await
        .unwrap();
    let rule = registry
        .create_rule(Some(rule_id("overheat")), overheat())
        .await
        .unwrap();
    let (alarm, _) = registry
        .raise_alarm(
            NewAlarm {
                rule_id: rule.id.clone(),
                rule_name: rule.spec.name.clone(),
                device_id: device.id.clone(),
                severity: rule.spec.severity,
                values: vec![("temperature".to_owned(), 31.0)],
            },
            1_000,
        )
        .await
        .unwrap();
    registry.delete_rule(&rule.id).await.unwrap();
    assert!(matches!(
        registry.rule(&rule.id).await.unwrap_err(),
        Error::NotFound { kind: "rule", .. }
    ));
    assert!(registry.all_rules().await.unwrap().is_empty());
    assert_eq!(registry.alarm(&alarm.id).await.unwrap(), alarm);
    assert!(matches!(
        registry.delete_rule(&rule.id).await.unwrap_err(),
        Error::NotFound { kind: "rule", .. }
    ));
    // The id is free again.
    registry
        .create_rule(Some(rule.id.clone()), minimal("reborn"))
        .await
        .unwrap();
}

async fn rule_pages_see_every_rule_once_in_id_order(test: TestRegistry) {
    let registry = &test.registry;
    let mut expected = Vec::new();
    // Created out of order: the listing sorts by id, not by creation.
    for index in [
        3, 17, 0, 24, 9, 11, 5, 20, 1, 14, 7, 22, 2, 19, 8, 12, 4, 23, 6, 16,
    ] {
        let id = rule_id(&format!("rule-{index:02}"));
        registry
            .create_rule(Some(id.clone()), minimal(&format!("r{index}")))
            .await
            .unwrap();
        expected.push(id);
    }
    expected.sort();
    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = registry.list_rules(7, cursor.as_deref()).await.unwrap();
        pages.push(page.items.len());
        seen.extend(page.items.into_iter().map(|rule| rule.id));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, vec![7, 7, 6]);
    assert_eq!(seen, expected);
    // A last page that is exactly full has no cursor.
    let page = registry.list_rules(20, None).await.unwrap();
    assert_eq!(page.items.len(), 20);
    assert_eq!(page.next_cursor, None);
    let all: Vec<RuleId> = registry
        .all_rules()
        .await
        .unwrap()
        .into_iter()
        .map(|rule| rule.id)
        .collect();
    assert_eq!(all, expected);
}

async fn bad_rule_cursors_and_limits_are_refused(test: TestRegistry) {
    for limit in [0, 1001] {
        let error = test.registry.list_rules(limit, None).await.unwrap_err();
        assert_eq!(error.to_string(), format!("limit {limit}: expected 1-1000"));
    }
    // Not base64url; base64url of a string that is no rule id.
    for cursor in ["!!!", "aGVsbG8gd29ybGQ"] {
        let error = test
            .registry
            .list_rules(10, Some(cursor))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::InvalidCursor), "{cursor}: {error:?}");
    }
}
