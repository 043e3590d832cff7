//! Random expressions, written with as few parentheses as precedence allows, evaluate to
//! what a straightforward reference evaluator computes from the same tree: arithmetic,
//! functions, comparisons and three-valued logic, with unknown fields, division by zero
//! and overflow.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Fleet, at, evaluate, rule};
use fleetwire_rules::{RuleState, Value};
use proptest::prelude::*;

const FIELDS: [&str; 3] = ["a", "b", "gps.lat"];

#[derive(Debug, Clone)]
enum Number {
    Constant(f64),
    Field(usize),
    Negate(Box<Number>),
    Abs(Box<Number>),
    Binary(char, Box<Number>, Box<Number>),
    Extremum(bool, Vec<Number>),
}

#[derive(Debug, Clone)]
enum Boolean {
    Literal(bool),
    Compare(&'static str, Number, Number),
    Not(Box<Boolean>),
    And(Box<Boolean>, Box<Boolean>),
    Or(Box<Boolean>, Box<Boolean>),
}

/// Binding strength, as the grammar defines it: higher binds tighter.
fn number_precedence(number: &Number) -> u8 {
    match number {
        Number::Binary('+' | '-', ..) => 5,
        Number::Binary(..) => 6,
        Number::Negate(_) => 7,
        _ => 8,
    }
}

fn boolean_precedence(boolean: &Boolean) -> u8 {
    match boolean {
        Boolean::Or(..) => 1,
        Boolean::And(..) => 2,
        Boolean::Not(_) => 3,
        Boolean::Compare(..) => 4,
        Boolean::Literal(_) => 8,
    }
}

fn wrap(text: String, is_needed: bool) -> String {
    if is_needed { format!("({text})") } else { text }
}

fn number_text(number: &Number) -> String {
    match number {
        Number::Constant(value) => format!("{value}"),
        Number::Field(index) => FIELDS[*index].to_owned(),
        Number::Negate(operand) => {
            format!(
                "-{}",
                wrap(number_text(operand), number_precedence(operand) < 7)
            )
        }
        Number::Abs(operand) => format!("abs({})", number_text(operand)),
        Number::Binary(op, left, right) => {
            let precedence = number_precedence(number);
            // Left-associative: a right operand of the same strength needs parentheses.
            let left_text = wrap(number_text(left), number_precedence(left) < precedence);
            let right_text = wrap(number_text(right), number_precedence(right) <= precedence);
            format!("{left_text} {op} {right_text}")
        }
        Number::Extremum(is_max, arguments) => {
            let arguments: Vec<String> = arguments.iter().map(number_text).collect();
            let name = if *is_max { "max" } else { "min" };
            format!("{name}({})", arguments.join(", "))
        }
    }
}

fn boolean_text(boolean: &Boolean) -> String {
    let precedence = boolean_precedence(boolean);
    match boolean {
        Boolean::Literal(value) => value.to_string(),
        Boolean::Compare(op, left, right) => {
            format!("{} {op} {}", number_text(left), number_text(right))
        }
        Boolean::Not(operand) => {
            let text = wrap(
                boolean_text(operand),
                boolean_precedence(operand) < precedence,
            );
            format!("not {text}")
        }
        Boolean::And(left, right) | Boolean::Or(left, right) => {
            let op = if matches!(boolean, Boolean::And(..)) {
                "and"
            } else {
                "or"
            };
            let left_text = wrap(boolean_text(left), boolean_precedence(left) < precedence);
            let right_text = wrap(boolean_text(right), boolean_precedence(right) <= precedence);
            format!("{left_text} {op} {right_text}")
        }
    }
}

fn known(value: f64) -> Option<f64> {
    value.is_finite().then_some(value)
}

/// The documented semantics, written plainly.
fn number_value(number: &Number, values: &[Option<f64>; 3]) -> Option<f64> {
    match number {
        Number::Constant(value) => Some(*value),
        Number::Field(index) => values[*index],
        Number::Negate(operand) => Some(-number_value(operand, values)?),
        Number::Abs(operand) => Some(number_value(operand, values)?.abs()),
        Number::Binary(op, left, right) => {
            let left = number_value(left, values)?;
            let right = number_value(right, values)?;
            known(match op {
                '+' => left + right,
                '-' => left - right,
                '*' => left * right,
                '/' => left / right,
                _ => left % right,
            })
        }
        Number::Extremum(is_max, arguments) => {
            let mut result = if *is_max {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            };
            for argument in arguments {
                let value = number_value(argument, values)?;
                result = if *is_max {
                    result.max(value)
                } else {
                    result.min(value)
                };
            }
            Some(result)
        }
    }
}

fn boolean_value(boolean: &Boolean, values: &[Option<f64>; 3]) -> Option<bool> {
    match boolean {
        Boolean::Literal(value) => Some(*value),
        Boolean::Compare(op, left, right) => {
            let left = number_value(left, values)?;
            let right = number_value(right, values)?;
            Some(match *op {
                "<" => left < right,
                "<=" => left <= right,
                ">" => left > right,
                ">=" => left >= right,
                "==" => left == right,
                _ => left != right,
            })
        }
        Boolean::Not(operand) => boolean_value(operand, values).map(|value| !value),
        Boolean::And(left, right) => {
            match (boolean_value(left, values), boolean_value(right, values)) {
                (Some(false), _) | (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            }
        }
        Boolean::Or(left, right) => {
            match (boolean_value(left, values), boolean_value(right, values)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            }
        }
    }
}

fn constant() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(1.0),
        Just(1e300),
        (0..100i32).prop_map(f64::from),
        0.0..1000.0f64,
    ]
}

fn number() -> impl Strategy<Value = Number> {
    let leaf = prop_oneof![
        constant().prop_map(Number::Constant),
        (0..FIELDS.len()).prop_map(Number::Field),
    ];
    leaf.prop_recursive(6, 48, 4, |inner| {
        prop_oneof![
            inner
                .clone()
                .prop_map(|operand| Number::Negate(Box::new(operand))),
            inner
                .clone()
                .prop_map(|operand| Number::Abs(Box::new(operand))),
            (
                prop::sample::select(vec!['+', '-', '*', '/', '%']),
                inner.clone(),
                inner.clone()
            )
                .prop_map(|(op, left, right)| Number::Binary(
                    op,
                    Box::new(left),
                    Box::new(right)
                )),
            (any::<bool>(), prop::collection::vec(inner, 1..4))
                .prop_map(|(is_max, arguments)| Number::Extremum(is_max, arguments)),
        ]
    })
}

fn boolean() -> impl Strategy<Value = Boolean> {
    let operators = vec!["<", "<=", ">", ">=", "==", "!="];
    let leaf = prop_oneof![
        any::<bool>().prop_map(Boolean::Literal),
        (prop::sample::select(operators), number(), number())
            .prop_map(|(op, left, right)| Boolean::Compare(op, left, right)),
    ];
    leaf.prop_recursive(4, 16, 2, |inner| {
        prop_oneof![
            inner
                .clone()
                .prop_map(|operand| Boolean::Not(Box::new(operand))),
            (inner.clone(), inner.clone())
                .prop_map(|(left, right)| Boolean::And(Box::new(left), Box::new(right))),
            (inner.clone(), inner)
                .prop_map(|(left, right)| Boolean::Or(Box::new(left), Box::new(right))),
        ]
    })
}

/// Field values, some missing; small integers make equal values and zero divisors likely.
fn field_values() -> impl Strategy<Value = [Option<f64>; 3]> {
    let value = prop_oneof![
        1 => Just(None),
        3 => (-5..5i32).prop_map(|value| Some(f64::from(value))),
        2 => (-1e6..1e6f64).prop_map(Some),
    ];
    [value.clone(), value.clone(), value]
}

fn named(values: &[Option<f64>; 3]) -> Vec<(&'static str, f64)> {
    FIELDS
        .iter()
        .zip(values)
        .filter_map(|(name, value)| Some((*name, (*value)?)))
        .collect()
}

proptest! {
    #[test]
    fn arithmetic_matches_the_reference(tree in number(), values in field_values()) {
        let text = number_text(&tree);
        let expected = number_value(&tree, &values).map(Value::Number);
        let found = evaluate(&text, &named(&values)).unwrap();
        // Compare bits, so that -0 and 0 are told apart too.
        let bits = |value: Option<Value>| match value {
            Some(Value::Number(number)) => Some(number.to_bits()),
            _ => None,
        };
        prop_assert_eq!(bits(found), bits(expected), "{} with {:?}", text, values);
        prop_assert_eq!(found.is_some(), expected.is_some(), "{} with {:?}", text, values);
    }

    #[test]
    fn conditions_match_the_reference(tree in boolean(), values in field_values()) {
        let text = boolean_text(&tree);
        let expected = boolean_value(&tree, &values);
        let found = evaluate(&text, &named(&values)).unwrap();
        prop_assert_eq!(found, expected.map(Value::Boolean), "{} with {:?}", text, values);
    }

    #[test]
    fn the_engine_raises_exactly_when_the_reference_holds(tree in boolean(), values in field_values()) {
        let text = boolean_text(&tree);
        let mut fleet = Fleet::new([rule("random", &text)]);
        let transitions = fleet.send("m", at(0.0), &named(&values));
        let expected = boolean_value(&tree, &values) == Some(true);
        prop_assert_eq!(transitions.len(), usize::from(expected), "{} with {:?}", text, values);
        let state = if expected { RuleState::Active } else { RuleState::Idle };
        prop_assert_eq!(fleet.state("random", "m"), Some(state));
    }
}
