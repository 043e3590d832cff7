//! The expression language as users write it: literals, fields, operators and their
//! precedence, functions, and what each expression evaluates to.

#![allow(clippy::unwrap_used)]

mod common;

use common::evaluate;
use fleetwire_rules::{Expression, FieldTable, Value, ValueType};

/// The values every expression of these tables sees.
const FIELDS: &[(&str, f64)] = &[
    ("temperature", 25.0),
    ("humidity", 40.0),
    ("door", 1.0),
    ("x", -3.0),
    ("gps.lat", 48.5),
    ("weird-name", 7.0),
    ("and", 2.0),
];

fn number(value: f64) -> Option<Value> {
    Some(Value::Number(value))
}

fn boolean(value: bool) -> Option<Value> {
    Some(Value::Boolean(value))
}

/// Evaluates each expression over [`FIELDS`] and lists every mismatch at once.
fn check(table: &[(&str, Option<Value>)]) {
    let failures: Vec<String> = table
        .iter()
        .filter_map(|(source, expected)| match evaluate(source, FIELDS) {
            Ok(found) if found == *expected => None,
            Ok(found) => Some(format!(
                "{source:?}: expected {expected:?}, found {found:?}"
            )),
            Err(error) => Some(format!("{source:?}: expected {expected:?}, error {error}")),
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn number_literals_in_every_form() {
    check(&[
        ("30", number(30.0)),
        ("0.25", number(0.25)),
        (".5", number(0.5)),
        ("1.", number(1.0)),
        ("1e3", number(1000.0)),
        ("2E2", number(200.0)),
        ("1.5e-3", number(0.0015)),
        ("2.5e+1", number(25.0)),
        ("007", number(7.0)),
        ("-4.5", number(-4.5)),
    ]);
}

#[test]
fn fields_are_named_plainly_with_dots_or_between_backticks() {
    check(&[
        ("temperature", number(25.0)),
        ("gps.lat + 1.5", number(50.0)),
        ("`weird-name` * 2", number(14.0)),
        ("`temperature`", number(25.0)),
        ("`and` + 1", number(3.0)),
        ("x", number(-3.0)),
    ]);
}

#[test]
fn arithmetic_follows_the_usual_rules() {
    check(&[
        ("1 + 2 * 3", number(7.0)),
        ("(1 + 2) * 3", number(9.0)),
        ("10 - 4 - 3", number(3.0)),
        ("100 / 8 / 2", number(6.25)),
        ("2 * 3 % 4", number(2.0)),
        ("7 % 3", number(1.0)),
        ("-7 % 3", number(-1.0)),
        ("7.5 % 2", number(1.5)),
        ("-temperature", number(-25.0)),
        ("- -3", number(3.0)),
        ("2 - -3", number(5.0)),
        ("-2 * 3", number(-6.0)),
        ("-(2 + 3)", number(-5.0)),
        ("-x * 2", number(6.0)),
        ("temperature * 9 / 5 + 32", number(77.0)),
    ]);
}

#[test]
fn functions_abs_min_and_max() {
    check(&[
        ("abs(x)", number(3.0)),
        ("abs(-2.5)", number(2.5)),
        ("abs(temperature - 30)", number(5.0)),
        ("min(temperature, humidity, 30)", number(25.0)),
        ("max(temperature, humidity)", number(40.0)),
        ("max(x, -10)", number(-3.0)),
        ("max(1)", number(1.0)),
        ("min(abs(x), 10) + max(1, 2) * 2", number(7.0)),
        ("abs", None),
        ("min > 3", None),
    ]);
}

#[test]
fn comparisons_and_logic() {
    check(&[
        ("temperature > 20", boolean(true)),
        ("temperature >= 25", boolean(true)),
        ("temperature < 25", boolean(false)),
        ("temperature <= 25", boolean(true)),
        ("temperature == 25", boolean(true)),
        ("temperature != 25", boolean(false)),
        ("true and false", boolean(false)),
        ("true or false", boolean(true)),
        ("not false", boolean(true)),
        ("true && true", boolean(true)),
        ("false || true", boolean(true)),
        ("!true", boolean(false)),
        ("!(temperature > 30)", boolean(true)),
        ("not not true", boolean(true)),
        ("true", boolean(true)),
        ("  temperature>20\n\tand humidity<50  ", boolean(true)),
    ]);
}

#[test]
fn precedence_is_that_of_c_and_python() {
    check(&[
        // `not` binds looser than comparisons: not (temperature > 30).
        ("not temperature > 30", boolean(true)),
        // ... and tighter than `and`: (not true) and false, not not (true and false).
        ("not true and false", boolean(false)),
        ("not true or true", boolean(true)),
        ("!true || true", boolean(true)),
        // `and` binds tighter than `or`.
        ("false and true or true", boolean(true)),
        ("true or true and false", boolean(true)),
        (
            "temperature > 20 and humidity > 50 or door == 1",
            boolean(true),
        ),
        (
            "temperature > 30 or humidity > 30 and door == 0",
            boolean(false),
        ),
        // Arithmetic binds tighter than comparisons.
        ("1 + 2 * 3 == 7", boolean(true)),
        ("2 + 3 > 4 and 1 < 2", boolean(true)),
        ("temperature - 5 > 19 + 1", boolean(false)),
        ("-2 * -3 == 6", boolean(true)),
        // Parentheses override.
        ("(true or true) and false", boolean(false)),
        ("not (true and false)", boolean(true)),
    ]);
}

#[test]
fn booleans_compare_with_numbers_as_one_and_zero_only_when_literal() {
    check(&[
        ("door == true", boolean(true)),
        ("door != false", boolean(true)),
        ("door == false", boolean(false)),
        ("true == door", boolean(true)),
        ("temperature == true", boolean(false)),
        ("(temperature > 20) == true", boolean(true)),
        ("(temperature > 20) != (humidity > 50)", boolean(true)),
        ("true == true", boolean(true)),
    ]);
}

#[test]
fn an_expression_knows_its_type_and_fields() {
    let mut fields = FieldTable::default();
    let expression = Expression::compile(
        "max(humidity, temperature) > temperature + delta(pressure)",
        &mut fields,
    )
    .unwrap();
    assert_eq!(expression.value_type(), ValueType::Boolean);
    let names: Vec<&str> = expression
        .fields()
        .iter()
        .map(|&id| fields.name(id).unwrap())
        .collect();
    assert_eq!(names, ["humidity", "temperature", "pressure"]);
    assert_eq!(
        expression.to_string(),
        "max(humidity, temperature) > temperature + delta(pressure)"
    );

    let arithmetic = Expression::compile("humidity * 2", &mut fields).unwrap();
    assert_eq!(arithmetic.value_type(), ValueType::Number);
    assert_eq!(fields.len(), 3, "known names are interned once");
}

#[test]
fn a_rejected_expression_interns_no_field() {
    let mut fields = FieldTable::default();
    assert!(Expression::compile_condition("temperature + humidity", &mut fields).is_err());
    assert!(Expression::compile("pressure > ", &mut fields).is_err());
    assert!(fields.is_empty());
}
