//! A value is unknown when a field has no sample, `delta`/`rate` lack a previous sample,
//! or arithmetic has no finite result (division by zero). Unknown spreads through
//! arithmetic and comparisons, `and`/`or` follow three-valued logic, and an unknown
//! condition neither raises nor clears an alarm.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Fleet, at, change, evaluate, rule, rule_clear, rule_for};
use fleetwire_rules::{RuleState, TransitionKind, Value};

#[test]
fn unknown_spreads_through_arithmetic_comparisons_and_functions() {
    // `temperature` is 25; `humidity` has no sample.
    let table: &[(&str, Option<Value>)] = &[
        ("humidity", None),
        ("humidity + 1", None),
        ("-humidity", None),
        ("humidity > 30", None),
        ("humidity == humidity", None),
        ("abs(humidity)", None),
        ("min(temperature, humidity)", None),
        ("max(humidity, 1)", None),
        ("not (humidity > 1)", None),
        ("(humidity > 1) == true", None),
        ("delta(temperature)", None),
        ("rate(temperature)", None),
        ("temperature", Some(Value::Number(25.0))),
    ];
    for (source, expected) in table {
        assert_eq!(
            evaluate(source, &[("temperature", 25.0)]).unwrap(),
            *expected,
            "{source}"
        );
    }
}

#[test]
fn division_by_zero_and_overflow_are_unknown_not_infinite() {
    for source in [
        "1 / 0",
        "0 / 0",
        "5 % 0",
        "temperature / (temperature - 25)",
        "temperature / 0 > 1",
        "1e308 * 10",
        "-1e308 - 1e308",
        "1e308 * 10 > 0",
    ] {
        assert_eq!(
            evaluate(source, &[("temperature", 25.0)]).unwrap(),
            None,
            "{source}"
        );
    }
}

#[test]
fn and_or_follow_three_valued_logic() {
    let table: &[(&str, Option<bool>)] = &[
        ("temperature > 30 and humidity > 1", Some(false)),
        ("humidity > 1 and temperature > 30", Some(false)),
        ("temperature > 20 and humidity > 1", None),
        ("humidity > 1 and humidity < 1", None),
        ("temperature > 20 or humidity > 1", Some(true)),
        ("humidity > 1 or temperature > 20", Some(true)),
        ("temperature > 30 or humidity > 1", None),
        ("humidity > 1 || humidity < 1", None),
    ];
    for (source, expected) in table {
        let expected = expected.map(Value::Boolean);
        assert_eq!(
            evaluate(source, &[("temperature", 25.0)]).unwrap(),
            expected,
            "{source}"
        );
    }
}

#[test]
fn a_rule_on_a_field_never_received_stays_idle() {
    let mut fleet = Fleet::new([rule("hot", "temperature > 30")]);
    assert_eq!(
        fleet.changes("sensor-1", at(0.0), &[("humidity", 95.0)]),
        []
    );
    assert_eq!(fleet.state("hot", "sensor-1"), Some(RuleState::Idle));
}

#[test]
fn an_unknown_condition_does_not_clear_a_raised_alarm() {
    let mut fleet = Fleet::new([rule("ratio", "load / capacity > 1")]);
    assert_eq!(
        fleet.changes("m", at(0.0), &[("load", 10.0), ("capacity", 5.0)]),
        [change("ratio", "m", TransitionKind::Raised)]
    );
    assert_eq!(
        fleet.changes("m", at(1.0), &[("capacity", 0.0)]),
        [],
        "10 / 0 is unknown"
    );
    assert_eq!(fleet.state("ratio", "m"), Some(RuleState::Active));
    assert_eq!(
        fleet.changes("m", at(2.0), &[("capacity", 20.0)]),
        [change("ratio", "m", TransitionKind::Cleared)]
    );
}

#[test]
fn an_unknown_clear_expression_does_not_clear() {
    let mut fleet = Fleet::new([rule_clear("hot", "temperature > 30", "fan == 1")]);
    assert_eq!(
        fleet.changes("m", at(0.0), &[("temperature", 31.0)]),
        [change("hot", "m", TransitionKind::Raised)]
    );
    assert_eq!(
        fleet.changes("m", at(1.0), &[("temperature", 10.0)]),
        [],
        "fan has no value"
    );
    assert_eq!(
        fleet.changes("m", at(2.0), &[("fan", 1.0)]),
        [change("hot", "m", TransitionKind::Cleared)]
    );
}

#[test]
fn an_unknown_condition_neither_interrupts_nor_completes_a_duration() {
    let mut fleet = Fleet::new([rule_for("ratio", "load / capacity > 1", 10)]);
    assert_eq!(
        fleet.changes("m", at(0.0), &[("load", 10.0), ("capacity", 5.0)]),
        []
    );
    assert_eq!(fleet.changes("m", at(5.0), &[("capacity", 0.0)]), []);
    assert_eq!(
        fleet.state("ratio", "m"),
        Some(RuleState::Pending { since_ms: at(0.0) })
    );
    assert_eq!(
        fleet.changes("m", at(12.0), &[("load", 11.0)]),
        [],
        "still unknown after 10 s"
    );
    assert_eq!(
        fleet.changes("m", at(13.0), &[("capacity", 1.0)]),
        [change("ratio", "m", TransitionKind::Raised)]
    );
}

#[test]
fn a_non_finite_sample_makes_its_field_unknown() {
    let mut fleet = Fleet::new([rule("hot", "temperature > 30")]);
    assert_eq!(
        fleet.changes("m", at(0.0), &[("temperature", 31.0)]),
        [change("hot", "m", TransitionKind::Raised)]
    );
    assert_eq!(
        fleet.changes("m", at(1.0), &[("temperature", f64::NAN)]),
        []
    );
    assert_eq!(
        fleet.changes("m", at(2.0), &[("temperature", f64::NEG_INFINITY)]),
        []
    );
    assert_eq!(fleet.state("hot", "m"), Some(RuleState::Active));
}
