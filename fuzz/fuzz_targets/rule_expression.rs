//! Fuzz target for the rule expression language: arbitrary text as a condition.
//!
//! Compiling never panics (nor overflows the stack, whatever the nesting); an error
//! points inside the text; an expression that compiles evaluates without panicking
//! against arbitrary samples, and a condition gives a boolean or unknown.

#![no_main]

use fleetwire_rules::{Expression, FieldId, FieldTable, Sample, Samples, Value};
use libfuzzer_sys::fuzz_target;

/// Samples derived from the fuzz input: every field has a value, some a previous one.
struct Arbitrary<'a>(&'a [u8]);

impl Samples for Arbitrary<'_> {
    fn latest(&self, field: FieldId) -> Option<Sample> {
        let byte = *self.0.get(field.index() % self.0.len().max(1))?;
        Some(Sample {
            value: f64::from(byte) - 100.0,
            timestamp_ms: 1_000 * i64::from(byte),
        })
    }

    fn previous(&self, field: FieldId) -> Option<Sample> {
        let byte = *self.0.get((field.index() + 1) % self.0.len().max(1))?;
        (byte % 3 != 0).then(|| Sample {
            value: f64::from(byte) / 7.0,
            timestamp_ms: 500 * i64::from(byte),
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = FieldTable::default();
    match Expression::compile(&text, &mut fields) {
        Ok(expression) => {
            let _ = expression.evaluate(&Arbitrary(data));
        }
        Err(error) => assert!(error.position() <= text.len(), "{error}"),
    }
    let mut fields = FieldTable::default();
    if let Ok(condition) = Expression::compile_condition(&text, &mut fields) {
        match condition.evaluate(&Arbitrary(data)) {
            None | Some(Value::Boolean(_)) => {}
            Some(other) => panic!("a condition gave {other:?}"),
        }
    }
});
