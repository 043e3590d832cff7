//! Expressions that do not compile say where (byte position and 1-based column), what was
//! expected and what was found, in the exact words the API returns; rules that do not
//! compile say which rule and which of its expressions.

#![allow(clippy::unwrap_used)]

mod common;

use common::{condition_error, rule, rule_clear};
use fleetwire_rules::{Engine, Error, Expression, ExpressionPart, FieldTable};
use proptest::prelude::*;

/// Compiles each source as a condition and lists every mismatch at once.
fn check(table: &[(&str, usize, &str)]) {
    let failures: Vec<String> = table
        .iter()
        .filter_map(|&(source, position, message)| {
            match condition_error(source) {
                Some((found, found_position)) if found == message && found_position == position => None,
                Some((found, found_position)) => Some(format!(
                    "{source:?}: expected {message:?} at {position}, found {found:?} at {found_position}"
                )),
                None => Some(format!("{source:?}: expected {message:?}, but it compiled")),
            }
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn syntax_errors_name_the_position_the_expectation_and_the_token() {
    check(&[
        (
            "temperature > )",
            14,
            r#"at column 15: expected an operand, found ")""#,
        ),
        (
            "temperature > 30)",
            16,
            r#"at column 17: expected an operator or the end of the expression, found ")""#,
        ),
        (
            "temperature 30",
            12,
            r#"at column 13: expected an operator or the end of the expression, found "30""#,
        ),
        (
            "temp # 3",
            5,
            r##"at column 6: expected an operator or the end of the expression, found "#""##,
        ),
        (
            "a >= 1 AND b",
            7,
            r#"at column 8: expected an operator or the end of the expression, found "AND""#,
        ),
        (
            "a ! b",
            2,
            r#"at column 3: expected an operator or the end of the expression, found "!""#,
        ),
        (
            "and a",
            0,
            r#"at column 1: expected an operand, found "and""#,
        ),
        (
            "1 + not a",
            4,
            r#"at column 5: expected an operand, found "not""#,
        ),
        ("()", 1, r#"at column 2: expected an operand, found ")""#),
        ("é > 1", 0, r#"at column 1: expected an operand, found "é""#),
        (
            "max(a,) > 1",
            6,
            r#"at column 7: expected an operand, found ")""#,
        ),
        (
            "max(a b) > 1",
            6,
            r#"at column 7: expected "," or ")", found "b""#,
        ),
    ]);
}

#[test]
fn an_expression_that_ends_too_early_says_what_was_missing() {
    check(&[
        ("", 0, "unexpected end of expression: expected an operand"),
        (
            "   ",
            3,
            "unexpected end of expression: expected an operand",
        ),
        (
            "temperature >",
            13,
            "unexpected end of expression: expected an operand",
        ),
        (
            "temperature > 30 and",
            20,
            "unexpected end of expression: expected an operand",
        ),
        (
            "not",
            3,
            "unexpected end of expression: expected an operand",
        ),
        ("-", 1, "unexpected end of expression: expected an operand"),
        (
            "(temperature > 30",
            17,
            r#"unexpected end of expression: expected ")""#,
        ),
        ("a > (1", 6, r#"unexpected end of expression: expected ")""#),
        (
            "abs(a > 1",
            9,
            r#"unexpected end of expression: expected "," or ")""#,
        ),
        (
            "`unclosed > 3",
            13,
            r#"unexpected end of expression: expected a closing "`""#,
        ),
    ]);
}

#[test]
fn malformed_tokens_are_reported_whole() {
    check(&[
        (
            "temperature = 30",
            12,
            r#"at column 13: expected "==" to compare, found "=""#,
        ),
        (
            "x =! 3",
            2,
            r#"at column 3: expected "==" to compare, found "=""#,
        ),
        ("a & b", 2, r#"at column 3: expected "&&", found "&""#),
        ("a | b", 2, r#"at column 3: expected "||", found "|""#),
        (
            "temperature > 3.0.1",
            14,
            r#"at column 15: expected a number, found "3.0.1""#,
        ),
        (
            "2abc > 1",
            0,
            r#"at column 1: expected a number, found "2abc""#,
        ),
        ("1e > 2", 0, r#"at column 1: expected a number, found "1e""#),
        (
            "1e+ > 2",
            0,
            r#"at column 1: expected a number, found "1e+""#,
        ),
        (
            "1e999 > 1",
            0,
            r#"at column 1: expected a finite number, found "1e999""#,
        ),
        (
            "`` > 3",
            0,
            r#"at column 1: expected a field name between the backticks, found "``""#,
        ),
    ]);
}

#[test]
fn comparisons_do_not_chain() {
    check(&[
        (
            "a < b < c",
            6,
            r#"at column 7: expected "and" or "or" between two comparisons, found "<""#,
        ),
        (
            "a == b == c",
            7,
            r#"at column 8: expected "and" or "or" between two comparisons, found "==""#,
        ),
    ]);
}

#[test]
fn functions_are_checked_by_name_arity_and_argument() {
    check(&[
        (
            "foo(a) > 1",
            0,
            r#"at column 1: expected a known function (abs, min, max, delta, rate), found "foo""#,
        ),
        (
            "gps.lat(1) > 2",
            0,
            r#"at column 1: expected a known function (abs, min, max, delta, rate), found "gps.lat""#,
        ),
        (
            "abs(a, b) > 1",
            0,
            "at column 1: expected 1 argument for abs, found 2",
        ),
        (
            "abs() > 1",
            0,
            "at column 1: expected 1 argument for abs, found 0",
        ),
        (
            "min() > 1",
            0,
            "at column 1: expected at least 1 argument for min, found 0",
        ),
        (
            "delta(a + 1) > 1",
            6,
            r#"at column 7: expected a field name as the argument of delta, found "a + 1""#,
        ),
        (
            "rate(5) > 1",
            5,
            r#"at column 6: expected a field name as the argument of rate, found "5""#,
        ),
        (
            "delta(true) > 1",
            6,
            "at column 7: expected a number as the argument of delta, found a boolean",
        ),
    ]);
    assert_eq!(
        condition_error("delta((pressure)) > 1"),
        None,
        "parentheses around the field are fine"
    );
}

#[test]
fn type_errors_point_at_the_operand_of_the_wrong_type() {
    check(&[
        (
            "temperature",
            0,
            "at column 1: expected a boolean condition, found a number",
        ),
        (
            "  x",
            2,
            "at column 3: expected a boolean condition, found a number",
        ),
        (
            "temperature + 1",
            0,
            "at column 1: expected a boolean condition, found a number",
        ),
        (
            "temperature > 30 and humidity",
            21,
            r#"at column 22: expected a boolean as the operand of "and", found a number"#,
        ),
        (
            "temperature && true",
            0,
            r#"at column 1: expected a boolean as the operand of "&&", found a number"#,
        ),
        (
            "true or 1",
            8,
            r#"at column 9: expected a boolean as the operand of "or", found a number"#,
        ),
        (
            "not temperature",
            4,
            r#"at column 5: expected a boolean as the operand of "not", found a number"#,
        ),
        (
            "!x",
            1,
            r#"at column 2: expected a boolean as the operand of "!", found a number"#,
        ),
        (
            "(a > 1) + 2 > 0",
            0,
            r#"at column 1: expected a number as the operand of "+", found a boolean"#,
        ),
        (
            "-(a > 1) > 0",
            1,
            r#"at column 2: expected a number as the operand of "-", found a boolean"#,
        ),
        (
            "true > 0",
            0,
            r#"at column 1: expected a number as the operand of ">", found a boolean"#,
        ),
        (
            "door == (a > 1)",
            8,
            r#"at column 9: expected a number, like the other operand of "==", found a boolean"#,
        ),
        (
            "(a > 1) != 3",
            0,
            r#"at column 1: expected a number, like the other operand of "!=", found a boolean"#,
        ),
        (
            "abs(a > 1) > 0",
            4,
            "at column 5: expected a number as the argument of abs, found a boolean",
        ),
        (
            "max(1, true) > 0",
            7,
            "at column 8: expected a number as the argument of max, found a boolean",
        ),
    ]);
}

#[test]
fn columns_count_characters_and_positions_count_bytes() {
    check(&[(
        "`dégât` > )",
        12,
        r#"at column 11: expected an operand, found ")""#,
    )]);
}

#[test]
fn nesting_and_length_are_bounded() {
    let parentheses = format!("{}a{} > 1", "(".repeat(70), ")".repeat(70));
    let chain = format!("a{} > 1", " + a".repeat(70));
    let long = "a > 1 or ".repeat(8000) + "true";
    check(&[
        (
            &parentheses,
            65,
            "at column 66: expected an expression nested at most 64 levels deep, found a deeper one",
        ),
        (
            &chain,
            0,
            "at column 1: expected an expression nested at most 64 levels deep, found a deeper one",
        ),
        (
            &long,
            65_536,
            "at column 65537: expected an expression of at most 65536 bytes, found 72004 bytes",
        ),
    ]);
    let nested_enough = format!("{}a{} > 1", "(".repeat(60), ")".repeat(60));
    assert_eq!(condition_error(&nested_enough), None);
}

#[test]
fn a_rule_error_names_the_rule_the_expression_and_the_position() {
    let error = Engine::new([rule("overheat", "temperature > )")]).unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"rule "overheat": condition: at column 15: expected an operand, found ")""#
    );
    assert_eq!((error.position(), error.column()), (Some(14), Some(15)));
    let Error::Expression { rule, part, source } = &error else {
        panic!("expected an expression error, found {error:?}");
    };
    assert_eq!(
        (rule.as_str(), *part),
        ("overheat", ExpressionPart::Condition)
    );
    assert_eq!(source.expected(), "an operand");
    assert_eq!(source.found(), Some(r#"")""#));

    let error = rule_clear("overheat", "temperature > 30", "temperature")
        .validate()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"rule "overheat": clear: at column 1: expected a boolean condition, found a number"#
    );
    assert!(
        rule_clear("overheat", "temperature > 30", "temperature < 28")
            .validate()
            .is_ok()
    );
}

#[test]
fn a_rejected_rule_leaves_the_engine_unchanged() {
    let mut engine = Engine::new([rule("overheat", "temperature > 30")]).unwrap();
    let error = engine
        .insert(rule_clear("overheat", "temperature > 35", "humidity <"))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"rule "overheat": clear: unexpected end of expression: expected an operand"#
    );
    assert_eq!(error.position(), Some(10));
    assert_eq!(
        engine.rule("overheat").unwrap().condition,
        "temperature > 30"
    );
    assert_eq!(
        engine.fields().get("humidity"),
        None,
        "nothing of the rejected rule is kept"
    );
}

/// Rule ids and severities are the model's, checked there (`fleetwire-model`).
#[test]
fn duplicates_and_unknown_rules_are_refused() {
    let error = Engine::new([rule("a", "x > 1"), rule("a", "y > 1")]).unwrap_err();
    assert_eq!(error.to_string(), r#"rule "a" is defined twice"#);
    let mut engine = Engine::default();
    assert_eq!(
        engine
            .mark_active("missing", "sensor-1")
            .unwrap_err()
            .to_string(),
        r#"rule "missing" not found"#
    );
}

proptest! {
    /// Whatever the API is sent, compiling answers (never panics), and an error points
    /// inside the text, at a character boundary.
    #[test]
    fn any_text_compiles_or_fails_with_a_position_inside_it(
        source in prop_oneof![
            "[a-z0-9_.`()<>=!&|+*/%, -]{0,40}",
            "(temperature|humidity|abs|min|max|delta|rate|and|or|not|true|false|[0-9.e]+|[-+*/%<>=!(),`é ]){0,16}",
            any::<String>(),
        ]
    ) {
        if let Err(error) = Expression::compile(&source, &mut FieldTable::default()) {
            prop_assert!(error.position() <= source.len(), "{:?}: {}", source, error);
            prop_assert!(source.is_char_boundary(error.position()), "{:?}: {}", source, error);
            prop_assert_eq!(error.column(), source[..error.position()].chars().count() + 1);
            prop_assert!(!error.to_string().ends_with('.'));
        }
    }
}
