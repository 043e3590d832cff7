//! `delta(field)` is the latest sample minus the previous one; `rate(field)` is that per
//! second between the two samples' timestamps. Without a previous sample both are unknown.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Fleet, at, change, rule};
use fleetwire_rules::{RuleState, TransitionKind};

const RAISED: TransitionKind = TransitionKind::Raised;
const CLEARED: TransitionKind = TransitionKind::Cleared;

#[test]
fn delta_is_the_latest_sample_minus_the_previous_one() {
    let mut fleet = Fleet::new([rule("jump", "delta(pressure) == 3")]);
    assert_eq!(fleet.changes("m", at(0.0), &[("pressure", 100.0)]), []);
    assert_eq!(
        fleet.state("jump", "m"),
        Some(RuleState::Idle),
        "no previous sample: unknown"
    );
    assert_eq!(
        fleet.changes("m", at(1.0), &[("pressure", 103.0)]),
        [change("jump", "m", RAISED)]
    );
    assert_eq!(
        fleet.changes("m", at(2.0), &[("pressure", 104.0)]),
        [change("jump", "m", CLEARED)]
    );
}

#[test]
fn delta_can_be_negative_and_used_in_arithmetic() {
    let mut fleet = Fleet::new([
        rule("drop", "delta(level) < -5"),
        rule("swing", "abs(delta(level)) * 2 > 10"),
    ]);
    fleet.changes("m", at(0.0), &[("level", 50.0)]);
    assert_eq!(
        fleet.changes("m", at(1.0), &[("level", 44.0)]),
        [change("drop", "m", RAISED), change("swing", "m", RAISED)]
    );
}

#[test]
fn rate_is_the_delta_per_second_of_data_time() {
    let mut fleet = Fleet::new([
        rule("fast", "rate(energy) == 5"),
        rule("faster", "rate(energy) == 20"),
    ]);
    fleet.changes("m", at(0.0), &[("energy", 0.0)]);
    assert_eq!(
        fleet.changes("m", at(2.0), &[("energy", 10.0)]),
        [change("fast", "m", RAISED)]
    );
    assert_eq!(
        fleet.changes("m", at(2.5), &[("energy", 20.0)]),
        [change("fast", "m", CLEARED), change("faster", "m", RAISED)]
    );
}

#[test]
fn messages_without_the_field_keep_its_two_samples() {
    let mut fleet = Fleet::new([rule("jump", "delta(pressure) > 2")]);
    fleet.changes("m", at(0.0), &[("pressure", 100.0)]);
    assert_eq!(
        fleet.changes("m", at(1.0), &[("pressure", 103.0)]),
        [change("jump", "m", RAISED)]
    );
    assert_eq!(
        fleet.changes("m", at(2.0), &[("humidity", 40.0)]),
        [],
        "delta is still 3"
    );
}

#[test]
fn a_sample_with_the_same_timestamp_replaces_the_latest() {
    let mut fleet = Fleet::new([rule("jump", "delta(pressure) == 1")]);
    fleet.changes("m", at(0.0), &[("pressure", 100.0)]);
    fleet.changes("m", at(1.0), &[("pressure", 103.0)]);
    assert_eq!(
        fleet.changes("m", at(1.0), &[("pressure", 101.0)]),
        [change("jump", "m", RAISED)]
    );
}

#[test]
fn an_older_sample_is_ignored() {
    let mut fleet = Fleet::new([rule("jump", "delta(pressure) == 3")]);
    fleet.changes("m", at(0.0), &[("pressure", 100.0)]);
    assert_eq!(
        fleet.changes("m", at(2.0), &[("pressure", 103.0)]),
        [change("jump", "m", RAISED)]
    );
    assert_eq!(fleet.changes("m", at(1.0), &[("pressure", 500.0)]), []);
}

#[test]
fn each_device_has_its_own_history() {
    let mut fleet = Fleet::new([rule("jump", "delta(pressure) > 2")]);
    fleet.changes("a", at(0.0), &[("pressure", 100.0)]);
    assert_eq!(fleet.changes("b", at(1.0), &[("pressure", 200.0)]), []);
    assert_eq!(fleet.changes("a", at(2.0), &[("pressure", 101.0)]), []);
}
