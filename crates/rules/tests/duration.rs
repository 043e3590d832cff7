//! `for`: the condition must hold on every evaluation for at least the duration, measured
//! in the messages' timestamps (data time), before the alarm is raised.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Fleet, at, change, rule, rule_for};
use fleetwire_rules::{RuleDefinition, RuleState, TransitionKind};

const RAISED: TransitionKind = TransitionKind::Raised;

/// `(seconds, temperature, raised?)` for one device and the rule `temperature > 30` held
/// for 10 s.
fn check(steps: &[(f64, f64, bool)]) {
    let mut fleet = Fleet::new([rule_for("hot", "temperature > 30", 10)]);
    for &(seconds, temperature, is_raised) in steps {
        let expected = if is_raised {
            vec![change("hot", "m", RAISED)]
        } else {
            vec![]
        };
        assert_eq!(
            fleet.changes("m", at(seconds), &[("temperature", temperature)]),
            expected,
            "at {seconds} s with {temperature}"
        );
    }
}

#[test]
fn raised_once_the_condition_held_for_the_duration() {
    check(&[
        (0.0, 31.0, false),
        (5.0, 32.0, false),
        (10.0, 31.5, true),
        (11.0, 33.0, false),
    ]);
}

#[test]
fn not_raised_a_moment_before_the_duration() {
    check(&[(0.0, 31.0, false), (9.999, 31.0, false), (10.0, 31.0, true)]);
}

#[test]
fn an_interruption_restarts_the_duration() {
    check(&[
        (0.0, 31.0, false),
        (5.0, 29.0, false),
        (6.0, 31.0, false),
        (15.0, 31.0, false),
        (16.0, 31.0, true),
    ]);
}

#[test]
fn time_is_the_data_time_not_the_wall_clock() {
    // Two messages an hour apart (in their timestamps), sent within microseconds.
    check(&[(0.0, 31.0, false), (3600.0, 31.0, true)]);
}

#[test]
fn the_pending_state_remembers_when_the_condition_started_holding() {
    let mut fleet = Fleet::new([rule_for("hot", "temperature > 30", 10)]);
    fleet.changes("m", at(3.0), &[("temperature", 31.0)]);
    fleet.changes("m", at(4.0), &[("temperature", 31.0)]);
    assert_eq!(
        fleet.state("hot", "m"),
        Some(RuleState::Pending { since_ms: at(3.0) })
    );
}

#[test]
fn a_device_that_goes_quiet_stays_pending() {
    let mut fleet = Fleet::new([rule_for("hot", "temperature > 30", 10)]);
    fleet.changes("quiet", at(0.0), &[("temperature", 31.0)]);
    fleet.changes("other", at(60.0), &[("temperature", 31.0)]);
    assert_eq!(
        fleet.state("hot", "quiet"),
        Some(RuleState::Pending { since_ms: at(0.0) })
    );
}

#[test]
fn messages_without_the_field_keep_the_condition_holding() {
    let mut fleet = Fleet::new([rule_for("hot", "temperature > 30", 10)]);
    assert_eq!(fleet.changes("m", at(0.0), &[("temperature", 31.0)]), []);
    assert_eq!(fleet.changes("m", at(5.0), &[("humidity", 50.0)]), []);
    assert_eq!(
        fleet.changes("m", at(10.0), &[("humidity", 51.0)]),
        [change("hot", "m", RAISED)]
    );
}

#[test]
fn a_late_message_does_not_turn_the_clock_back() {
    let mut fleet = Fleet::new([rule_for("hot", "temperature > 30", 10)]);
    assert_eq!(fleet.changes("m", at(100.0), &[("temperature", 31.0)]), []);
    // Sent late with an older timestamp: its sample is older than the latest, so ignored,
    // and the evaluation happens at the newest time seen.
    assert_eq!(fleet.changes("m", at(50.0), &[("temperature", 20.0)]), []);
    assert_eq!(
        fleet.state("hot", "m"),
        Some(RuleState::Pending {
            since_ms: at(100.0)
        })
    );
    assert_eq!(
        fleet.changes("m", at(110.0), &[("humidity", 1.0)]),
        [change("hot", "m", RAISED)]
    );
}

#[test]
fn without_a_duration_the_first_evaluation_that_holds_raises() {
    for definition in [
        rule("hot", "temperature > 30"),
        RuleDefinition {
            for_duration: Some(std::time::Duration::ZERO),
            ..rule("hot", "temperature > 30")
        },
    ] {
        let mut fleet = Fleet::new([definition]);
        assert_eq!(
            fleet.changes("m", at(0.0), &[("temperature", 31.0)]),
            [change("hot", "m", RAISED)]
        );
    }
}

#[test]
fn each_device_has_its_own_duration() {
    let mut fleet = Fleet::new([rule_for("hot", "temperature > 30", 10)]);
    fleet.changes("a", at(0.0), &[("temperature", 31.0)]);
    fleet.changes("b", at(5.0), &[("temperature", 31.0)]);
    assert_eq!(
        fleet.changes("a", at(10.0), &[("temperature", 31.0)]),
        [change("hot", "a", RAISED)]
    );
    assert_eq!(fleet.changes("b", at(10.0), &[("temperature", 31.0)]), []);
    assert_eq!(
        fleet.changes("b", at(15.0), &[("temperature", 31.0)]),
        [change("hot", "b", RAISED)]
    );
}
