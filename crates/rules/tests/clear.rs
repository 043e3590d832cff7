//! Clearing: without a `clear` expression an alarm clears when the condition stops
//! holding; with one, only when it holds (hysteresis). Transitions carry the values of the
//! fields the deciding expression reads.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Fleet, at, change, rule, rule_clear};
use fleetwire_model::RuleId;
use fleetwire_rules::{FieldValue, RuleDefinition, Transition, TransitionKind};

const RAISED: TransitionKind = TransitionKind::Raised;
const CLEARED: TransitionKind = TransitionKind::Cleared;

/// Feeds `temperature` values one second apart and checks the transition of each.
fn check(definition: RuleDefinition, steps: &[(f64, Option<TransitionKind>)]) {
    let mut fleet = Fleet::new([definition]);
    for (second, &(temperature, expected)) in steps.iter().enumerate() {
        let expected: Vec<_> = expected
            .map(|kind| change("hot", "m", kind))
            .into_iter()
            .collect();
        assert_eq!(
            fleet.changes("m", at(second as f64), &[("temperature", temperature)]),
            expected,
            "step {second}: temperature {temperature}"
        );
    }
}

#[test]
fn without_clear_the_alarm_clears_when_the_condition_stops_holding() {
    check(
        rule("hot", "temperature > 30"),
        &[
            (31.0, Some(RAISED)),
            (35.0, None),
            (29.0, Some(CLEARED)),
            (20.0, None),
            (31.0, Some(RAISED)),
        ],
    );
}

#[test]
fn with_clear_the_alarm_clears_only_when_the_clear_expression_holds() {
    check(
        rule_clear("hot", "temperature > 30", "temperature < 28"),
        &[
            (31.0, Some(RAISED)),
            (29.0, None),
            (30.5, None),
            (28.0, None),
            (27.0, Some(CLEARED)),
            (29.0, None),
            (31.0, Some(RAISED)),
        ],
    );
}

#[test]
fn the_clear_expression_is_ignored_while_no_alarm_is_raised() {
    check(
        rule_clear("hot", "temperature > 30", "temperature < 28"),
        &[(20.0, None), (10.0, None), (29.0, None)],
    );
}

#[test]
fn duration_and_clear_combine() {
    check(
        RuleDefinition {
            for_duration: Some(Duration::from_secs(2)),
            ..rule_clear("hot", "temperature > 30", "temperature < 28")
        },
        &[
            (31.0, None),
            (31.0, None),
            (31.0, Some(RAISED)),
            (29.0, None),
            (27.0, Some(CLEARED)),
            (31.0, None),
            (29.0, None),
            (31.0, None),
        ],
    );
}

fn values(transition: &Transition) -> Vec<(&str, f64)> {
    transition
        .values
        .iter()
        .map(|FieldValue { field, value }| (&**field, *value))
        .collect()
}

#[test]
fn a_raised_alarm_carries_the_condition_fields_and_a_cleared_one_the_clear_fields() {
    let mut fleet = Fleet::new([rule_clear(
        "hot",
        "temperature > 30 or humidity > 90",
        "temperature < 28 and fan == 1",
    )]);
    fleet.send("m", at(0.0), &[("fan", 0.0), ("pressure", 1013.0)]);
    let raised = fleet.send("m", at(1.0), &[("temperature", 31.5)]);
    assert_eq!(
        raised,
        [Transition {
            rule: RuleId::new("hot").unwrap(),
            device: Arc::from("m"),
            kind: RAISED,
            timestamp_ms: at(1.0),
            values: vec![FieldValue {
                field: Arc::from("temperature"),
                value: 31.5
            }],
        }],
        "humidity has no value, so it is left out"
    );
    let cleared = fleet.send(
        "m",
        at(2.0),
        &[("temperature", 27.0), ("fan", 1.0), ("humidity", 50.0)],
    );
    assert_eq!(cleared[0].kind, CLEARED);
    assert_eq!(values(&cleared[0]), [("temperature", 27.0), ("fan", 1.0)]);
}

#[test]
fn without_clear_a_cleared_alarm_carries_the_condition_fields() {
    let mut fleet = Fleet::new([rule("hot", "max(temperature, cpu) > 80")]);
    let raised = fleet.send("m", at(0.0), &[("temperature", 40.0), ("cpu", 85.0)]);
    assert_eq!(values(&raised[0]), [("temperature", 40.0), ("cpu", 85.0)]);
    let cleared = fleet.send("m", at(1.0), &[("cpu", 60.0)]);
    assert_eq!(cleared[0].kind, CLEARED);
    assert_eq!(values(&cleared[0]), [("temperature", 40.0), ("cpu", 60.0)]);
}

#[test]
fn a_reset_pair_raises_again_while_the_condition_still_holds() {
    let mut fleet = Fleet::new([rule_clear("hot", "temperature > 30", "temperature < 28")]);
    assert_eq!(
        fleet.changes("m", at(0.0), &[("temperature", 31.0)]),
        vec![change("hot", "m", RAISED)]
    );
    // Cleared by hand: the engine starts over, and the condition still holds.
    assert!(fleet.engine.reset("hot", "m"));
    assert_eq!(
        fleet.state("hot", "m"),
        Some(fleetwire_rules::RuleState::Idle)
    );
    assert_eq!(
        fleet.changes("m", at(1.0), &[("temperature", 31.5)]),
        vec![change("hot", "m", RAISED)]
    );
    assert!(!fleet.engine.reset("hot", "unknown-device"));
    assert!(!fleet.engine.reset("unknown-rule", "m"));
}
