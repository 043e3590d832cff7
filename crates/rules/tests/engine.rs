//! The engine's lifecycle: which devices a rule watches, rules added, replaced and
//! removed at runtime without disturbing the others, devices forgotten, and alarms that
//! were open before a restart.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::ids;
use common::{Fleet, at, change, rule, rule_clear, rule_for};
use fleetwire_model::RuleMatch;
use fleetwire_rules::{RuleDefinition, RuleState, TransitionKind};

const RAISED: TransitionKind = TransitionKind::Raised;
const CLEARED: TransitionKind = TransitionKind::Cleared;

fn selected(id: &str, selector: RuleMatch) -> RuleDefinition {
    RuleDefinition {
        selector,
        ..rule(id, "temperature > 30")
    }
}

fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs
        .iter()
        .map(|&(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

#[test]
fn a_rule_watches_the_devices_its_selector_picks() {
    let mut fleet = Fleet::new([
        selected("all", RuleMatch::default()),
        selected(
            "by-id",
            RuleMatch {
                devices: ids(&["a", "c"]),
                ..Default::default()
            },
        ),
        selected(
            "by-type",
            RuleMatch {
                device_type: Some("sensor".into()),
                ..Default::default()
            },
        ),
        selected(
            "by-label",
            RuleMatch {
                labels: labels(&[("site", "north")]),
                ..Default::default()
            },
        ),
        selected(
            "by-everything",
            RuleMatch {
                devices: ids(&["a", "b"]),
                device_type: Some("sensor".into()),
                labels: labels(&[("site", "north"), ("floor", "2")]),
            },
        ),
    ]);
    fleet.device(
        "a",
        "sensor",
        &[("site", "north"), ("floor", "2"), ("extra", "x")],
    );
    fleet.device("b", "sensor", &[("site", "north")]);
    fleet.device("c", "gateway", &[("site", "south")]);
    fleet.device("d", "", &[]);
    let table: &[(&str, &[&str])] = &[
        (
            "a",
            &["all", "by-id", "by-type", "by-label", "by-everything"],
        ),
        ("b", &["all", "by-type", "by-label"]),
        ("c", &["all", "by-id"]),
        ("d", &["all"]),
    ];
    for &(device, expected) in table {
        let raised: Vec<String> = fleet
            .send(device, at(0.0), &[("temperature", 31.0)])
            .into_iter()
            .map(|transition| transition.rule.to_string())
            .collect();
        assert_eq!(raised, expected, "device {device}");
    }
}

#[test]
fn a_relabelled_device_is_matched_again() {
    let selector = RuleMatch {
        labels: labels(&[("site", "north")]),
        ..Default::default()
    };
    let mut fleet = Fleet::new([selected("north", selector)]);
    fleet.device("a", "sensor", &[("site", "south")]);
    assert_eq!(fleet.changes("a", at(0.0), &[("temperature", 31.0)]), []);
    fleet.device("a", "sensor", &[("site", "north")]);
    assert_eq!(
        fleet.changes("a", at(1.0), &[("temperature", 31.0)]),
        [change("north", "a", RAISED)]
    );
    // Moved away while raised: the alarm clears at the next message.
    fleet.device("a", "sensor", &[("site", "east")]);
    assert_eq!(
        fleet.changes("a", at(2.0), &[("temperature", 31.0)]),
        [change("north", "a", CLEARED)]
    );
    assert_eq!(fleet.changes("a", at(3.0), &[("temperature", 31.0)]), []);
}

#[test]
fn every_matching_rule_is_evaluated_once_per_message_in_rule_order() {
    let mut fleet = Fleet::new([
        rule("c", "temperature > 10"),
        rule("a", "humidity > 10"),
        rule("b", "temperature > 10 and humidity > 10"),
    ]);
    assert_eq!(
        fleet.changes("m", at(0.0), &[("temperature", 20.0), ("humidity", 20.0)]),
        [
            change("c", "m", RAISED),
            change("a", "m", RAISED),
            change("b", "m", RAISED)
        ]
    );
}

#[test]
fn replacing_a_rule_keeps_the_state_of_the_others() {
    let mut fleet = Fleet::new([
        rule_for("slow", "temperature > 30", 10),
        rule("fast", "temperature > 30"),
        rule("other", "humidity > 50"),
    ]);
    assert_eq!(
        fleet.changes("m", at(0.0), &[("temperature", 31.0), ("humidity", 60.0)]),
        [change("fast", "m", RAISED), change("other", "m", RAISED)]
    );
    let previous = fleet.engine.insert(rule("other", "humidity > 70")).unwrap();
    assert_eq!(previous.unwrap().condition, "humidity > 50");
    assert_eq!(
        fleet.state("slow", "m"),
        Some(RuleState::Pending { since_ms: at(0.0) })
    );
    assert_eq!(fleet.state("fast", "m"), Some(RuleState::Active));
    assert_eq!(
        fleet.changes("m", at(10.0), &[("temperature", 31.0)]),
        [change("slow", "m", RAISED), change("other", "m", CLEARED)],
        "slow keeps its start; other clears under its new condition; fast stays raised"
    );
}

#[test]
fn a_replaced_rule_keeps_its_raised_alarms_and_its_pending_start_if_its_logic_is_unchanged() {
    let mut fleet = Fleet::new([
        rule_for("slow", "temperature > 30", 10),
        rule("fast", "temperature > 30"),
    ]);
    fleet.changes("m", at(0.0), &[("temperature", 31.0)]);

    // Only the selector changes (to one that still picks the device): the pending
    // condition keeps its start.
    let narrower = RuleDefinition {
        selector: RuleMatch {
            devices: ids(&["m", "n"]),
            ..RuleMatch::default()
        },
        ..rule_for("slow", "temperature > 30", 10)
    };
    fleet.engine.insert(narrower).unwrap();
    // A new condition: the raised alarm stays raised, to be cleared by the new logic.
    fleet
        .engine
        .insert(rule_clear("fast", "temperature > 25", "temperature < 20"))
        .unwrap();
    assert_eq!(
        fleet.state("slow", "m"),
        Some(RuleState::Pending { since_ms: at(0.0) })
    );
    assert_eq!(fleet.changes("m", at(10.0), &[("temperature", 22.0)]), []);
    assert_eq!(fleet.state("fast", "m"), Some(RuleState::Active));
    assert_eq!(
        fleet.changes("m", at(11.0), &[("temperature", 19.0)]),
        [change("fast", "m", CLEARED)]
    );
    assert_eq!(
        fleet.engine.rule("slow").unwrap().selector.devices,
        ids(&["m", "n"])
    );
}

#[test]
fn a_replaced_rule_with_a_new_logic_restarts_its_pending_conditions() {
    let mut fleet = Fleet::new([rule_for("slow", "temperature > 30", 10)]);
    fleet.changes("m", at(0.0), &[("temperature", 31.0)]);
    fleet
        .engine
        .insert(rule_for("slow", "temperature > 30", 20))
        .unwrap();
    assert_eq!(fleet.changes("m", at(19.0), &[("temperature", 31.0)]), []);
    assert_eq!(
        fleet.state("slow", "m"),
        Some(RuleState::Pending { since_ms: at(19.0) })
    );
}

#[test]
fn a_rule_whose_selector_no_longer_picks_a_device_clears_its_alarm_there() {
    let mut fleet = Fleet::new([rule("hot", "temperature > 30")]);
    fleet.changes("a", at(0.0), &[("temperature", 31.0)]);
    fleet.changes("b", at(0.0), &[("temperature", 31.0)]);
    let only_b = RuleMatch {
        devices: ids(&["b"]),
        ..Default::default()
    };
    fleet.engine.insert(selected("hot", only_b)).unwrap();
    assert_eq!(
        fleet.changes("a", at(1.0), &[("temperature", 31.0)]),
        [change("hot", "a", CLEARED)]
    );
    assert_eq!(fleet.changes("b", at(1.0), &[("temperature", 31.0)]), []);
    assert_eq!(fleet.state("hot", "b"), Some(RuleState::Active));
}

#[test]
fn adding_a_rule_evaluates_it_from_the_next_message_on() {
    let mut fleet = Fleet::new([rule_for("slow", "temperature > 30", 10)]);
    fleet.changes("m", at(0.0), &[("temperature", 31.0)]);
    fleet
        .engine
        .insert(rule("new", "temperature > 30"))
        .unwrap();
    assert_eq!(fleet.engine.len(), 2);
    assert_eq!(
        fleet.changes("m", at(10.0), &[("humidity", 1.0)]),
        [change("slow", "m", RAISED), change("new", "m", RAISED)]
    );
}

#[test]
fn a_new_rule_sees_a_field_no_rule_read_before_from_its_next_sample_on() {
    let mut fleet = Fleet::new([rule("hot", "temperature > 30")]);
    fleet.changes("m", at(0.0), &[("temperature", 20.0), ("humidity", 95.0)]);
    fleet.engine.insert(rule("wet", "humidity > 90")).unwrap();
    assert_eq!(fleet.changes("m", at(1.0), &[("temperature", 20.0)]), []);
    assert_eq!(
        fleet.changes("m", at(2.0), &[("humidity", 95.0)]),
        [change("wet", "m", RAISED)]
    );
}

#[test]
fn removing_a_rule_drops_its_state_and_keeps_the_others() {
    let mut fleet = Fleet::new([
        rule("a", "temperature > 30"),
        rule_for("b", "temperature > 30", 10),
    ]);
    fleet.changes("m", at(0.0), &[("temperature", 31.0)]);
    let removed = fleet.engine.remove("a").unwrap();
    assert_eq!(removed.id.as_str(), "a");
    assert_eq!(fleet.engine.remove("a"), None);
    assert_eq!(fleet.state("a", "m"), None);
    assert_eq!(
        fleet.changes("m", at(10.0), &[("temperature", 10.0), ("humidity", 1.0)]),
        []
    );
    assert_eq!(fleet.state("b", "m"), Some(RuleState::Idle));

    // An id used again is a new rule.
    fleet.engine.insert(rule("a", "temperature > 30")).unwrap();
    assert_eq!(
        fleet.changes("m", at(11.0), &[("temperature", 31.0)]),
        [change("a", "m", RAISED)]
    );
    let ids: Vec<&str> = fleet
        .engine
        .rules()
        .map(|definition| definition.id.as_str())
        .collect();
    assert_eq!(ids, ["b", "a"]);
}

#[test]
fn a_forgotten_device_starts_afresh() {
    let mut fleet = Fleet::new([
        rule_for("slow", "temperature > 30", 10),
        rule("jump", "delta(pressure) > 1"),
    ]);
    fleet.changes("m", at(0.0), &[("temperature", 31.0), ("pressure", 100.0)]);
    assert_eq!(fleet.engine.device_count(), 1);
    assert!(fleet.engine.forget_device("m"));
    assert!(!fleet.engine.forget_device("m"));
    assert_eq!(fleet.engine.device_count(), 0);
    assert_eq!(fleet.state("slow", "m"), None);
    assert_eq!(
        fleet.changes("m", at(10.0), &[("temperature", 31.0), ("pressure", 110.0)]),
        [],
        "the duration restarts and delta has no previous sample"
    );
    assert_eq!(
        fleet.state("slow", "m"),
        Some(RuleState::Pending { since_ms: at(10.0) })
    );
}

#[test]
fn an_alarm_open_before_a_restart_clears_by_the_rule_and_is_not_raised_twice() {
    let mut fleet = Fleet::new([rule_clear("hot", "temperature > 30", "temperature < 28")]);
    fleet.engine.mark_active("hot", "m").unwrap();
    assert_eq!(fleet.state("hot", "m"), Some(RuleState::Active));
    assert_eq!(
        fleet.changes("m", at(0.0), &[("temperature", 35.0)]),
        [],
        "already raised"
    );
    assert_eq!(fleet.changes("m", at(1.0), &[("temperature", 29.0)]), []);
    assert_eq!(
        fleet.changes("m", at(2.0), &[("temperature", 27.0)]),
        [change("hot", "m", CLEARED)]
    );
}

#[test]
fn an_open_alarm_of_a_rule_that_no_longer_picks_the_device_clears_at_its_next_message() {
    let only_b = RuleMatch {
        devices: ids(&["b"]),
        ..Default::default()
    };
    let mut fleet = Fleet::new([selected("hot", only_b)]);
    fleet.engine.mark_active("hot", "a").unwrap();
    assert_eq!(
        fleet.changes("a", at(0.0), &[("temperature", 35.0)]),
        [change("hot", "a", CLEARED)]
    );
}

#[test]
fn marking_an_alarm_active_keeps_the_device_samples_and_other_rules() {
    let mut fleet = Fleet::new([
        rule("hot", "temperature > 30"),
        rule_for("slow", "temperature > 30", 10),
    ]);
    fleet.changes("m", at(0.0), &[("temperature", 31.0)]);
    fleet.engine.mark_active("slow", "m").unwrap();
    assert_eq!(fleet.state("hot", "m"), Some(RuleState::Active));
    assert_eq!(fleet.state("slow", "m"), Some(RuleState::Active));
    assert_eq!(
        fleet.changes("m", at(1.0), &[("humidity", 1.0)]),
        [],
        "temperature is still 31: nothing changes"
    );
    assert_eq!(
        fleet.changes("m", at(2.0), &[("temperature", 20.0)]),
        [change("hot", "m", CLEARED), change("slow", "m", CLEARED)]
    );
}

#[test]
fn the_engine_lists_its_rules_and_fields() {
    let definition = RuleDefinition {
        for_duration: Some(Duration::from_secs(5)),
        ..rule_clear("hot", "temperature > 30", "temperature < 28 and fan == 1")
    };
    let fleet = Fleet::new([definition.clone(), rule("wet", "humidity > 90")]);
    assert_eq!(fleet.engine.rule("hot"), Some(&definition));
    assert_eq!(fleet.engine.rule("cold"), None);
    assert_eq!(fleet.engine.len(), 2);
    assert!(!fleet.engine.is_empty());
    let fields = fleet.engine.fields();
    assert_eq!(fields.len(), 3, "temperature, fan, humidity");
    let fan = fields.get("fan").unwrap();
    assert_eq!(fields.name(fan), Some("fan"));
    assert_eq!(fields.get("pressure"), None);
}
