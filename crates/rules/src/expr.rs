//! The expression language of rule conditions: parsed, type-checked and compiled once
//! into an [`Expression`], a small arena of nodes with field names resolved to
//! [`FieldId`]s, evaluated without allocating against any [`Samples`].
//!
//! # Syntax
//!
//! - numbers: `30`, `-4.5`, `1e3`, `.5` (finite `f64`); booleans: `true`, `false`;
//! - fields: `temperature`, `gps.lat` (`[A-Za-z_][A-Za-z0-9_.]*`), or any other name between
//!   backticks: `` `weird-name` `` (which cannot contain a backtick). `and`, `or`, `not`,
//!   `true` and `false` are keywords, in lower case only: a field with such a name needs
//!   backticks;
//! - operators, lowest precedence first: `or` (`||`), `and` (`&&`), `not` (`!`), comparisons
//!   `< <= > >= == !=` (they do not chain: `a < b < c` is an error), `+ -`, `* / %`, unary
//!   `-`; parentheses group;
//! - functions: `abs(x)`, `min(x, ...)`, `max(x, ...)`, `delta(field)` (the field's latest
//!   value minus its previous one) and `rate(field)` (that delta per second between the two
//!   samples' timestamps). `delta` and `rate` take a field name, not an expression.
//!
//! # Types
//!
//! Fields are numbers (telemetry booleans arrive as 1 and 0). Arithmetic and `<`-style
//! comparisons take numbers; `and`, `or`, `not` take booleans; `==` and `!=` compare two
//! numbers or two booleans, and a number with a bare `true` or `false`, which then count
//! as 1 and 0: `door_open == true` holds when the field is 1. Comparing a number with any
//! other boolean (`temperature == (humidity > 3)`) is an error, as is a rule condition
//! that is not boolean (`temperature`).
//!
//! # Unknown values
//!
//! A value can be unknown: a field without a sample, `delta` or `rate` without a previous
//! sample, a division or remainder by zero, or any arithmetic result that is not finite.
//! Unknown spreads through arithmetic, comparisons, `abs`, `min` and `max`. `and` and `or`
//! follow three-valued logic (as SQL does): `false and unknown` is `false`, `true or
//! unknown` is `true`, the other combinations with an unknown are unknown; `not unknown`
//! is unknown. A condition that is unknown neither raises nor clears an alarm.
//!
//! Numbers compare exactly (`==` is `f64` equality); `%` is the remainder of truncated
//! division, with the sign of the left operand, as in C and Rust.

mod lexer;
mod parser;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::error::ExprError;

/// The deepest an expression may nest (parentheses, operators, calls), which bounds the
/// recursion of the parser and of the evaluator.
pub const MAX_DEPTH: u32 = 64;

/// The longest expression text accepted, in bytes.
pub const MAX_EXPRESSION_LEN: usize = 65_536;

/// A field name interned in a [`FieldTable`]: the slot expressions read and devices'
/// samples are kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldId(u32);

impl FieldId {
    /// The id as a number; ids are dense and start at 0.
    pub const fn as_u32(self) -> u32 {
        self.0
    }

    /// The id as an index into a slice of per-field slots.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for FieldId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "field #{}", self.0)
    }
}

/// Field names and their [`FieldId`]s. Ids are given in order of first use and never
/// change or get reused.
#[derive(Debug, Clone, Default)]
pub struct FieldTable {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, FieldId>,
}

impl FieldTable {
    /// The id of `name`, giving it the next one if it has none yet.
    pub fn intern(&mut self, name: &str) -> FieldId {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = FieldId(u32::try_from(self.names.len()).unwrap_or(u32::MAX));
        let name: Arc<str> = Arc::from(name);
        self.names.push(Arc::clone(&name));
        self.ids.insert(name, id);
        id
    }

    /// The id of `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<FieldId> {
        self.ids.get(name).copied()
    }

    /// The name of `id`, if this table gave it.
    pub fn name(&self, id: FieldId) -> Option<&str> {
        self.names.get(id.index()).map(|name| &**name)
    }

    /// The shared name of `id`, if this table gave it.
    pub(crate) fn shared_name(&self, id: FieldId) -> Option<&Arc<str>> {
        self.names.get(id.index())
    }

    /// How many names the table holds.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the table holds no name.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The static type of an expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// An `f64`.
    Number,
    /// `true` or `false`.
    Boolean,
}

impl ValueType {
    /// `a number` or `a boolean`, as error messages say.
    pub(crate) fn described(self) -> &'static str {
        match self {
            ValueType::Number => "a number",
            ValueType::Boolean => "a boolean",
        }
    }
}

/// The known result of an expression.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// The result of a number expression: always finite.
    Number(f64),
    /// The result of a boolean expression.
    Boolean(bool),
}

/// One measurement of a field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The value; telemetry booleans are 1 and 0.
    pub value: f64,
    /// When it was measured, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// Where an expression reads its fields: one device's latest and previous samples.
pub trait Samples {
    /// The latest sample of `field`, if there is one.
    fn latest(&self, field: FieldId) -> Option<Sample>;

    /// The sample before the latest one, for `delta` and `rate`, if there is one.
    fn previous(&self, field: FieldId) -> Option<Sample>;
}

/// A compiled expression: evaluate it as many times as needed, it never allocates.
///
/// ```
/// use fleetwire_rules::{Expression, FieldTable, FieldId, Sample, Samples, Value};
///
/// struct Reading(f64);
/// impl Samples for Reading {
///     fn latest(&self, _field: FieldId) -> Option<Sample> {
///         Some(Sample { value: self.0, timestamp_ms: 0 })
///     }
///     fn previous(&self, _field: FieldId) -> Option<Sample> {
///         None
///     }
/// }
///
/// let mut fields = FieldTable::default();
/// let hot = Expression::compile_condition("temperature > 30 and not false", &mut fields)?;
/// assert_eq!(hot.evaluate(&Reading(31.5)), Some(Value::Boolean(true)));
/// assert_eq!(hot.is_true(&Reading(12.0)), Some(false));
///
/// let error = Expression::compile_condition("temperature > )", &mut fields).unwrap_err();
/// assert_eq!(error.to_string(), r#"at column 15: expected an operand, found ")""#);
/// assert_eq!(error.position(), 14);
/// # Ok::<(), fleetwire_rules::ExprError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Expression {
    source: Box<str>,
    root: u32,
    nodes: Box<[Node]>,
    /// Argument node lists of `min` and `max`.
    arguments: Box<[u32]>,
    /// The distinct fields read, in order of first use.
    fields: Box<[FieldId]>,
    value_type: ValueType,
}

impl Expression {
    /// Compiles an expression of either type, interning its field names in `fields` (only
    /// if it compiles).
    pub fn compile(source: &str, fields: &mut FieldTable) -> Result<Expression, ExprError> {
        Expression::build(source, fields, None)
    }

    /// Compiles an expression that must be boolean, as rule conditions are.
    pub fn compile_condition(
        source: &str,
        fields: &mut FieldTable,
    ) -> Result<Expression, ExprError> {
        Expression::build(source, fields, Some(ValueType::Boolean))
    }

    fn build(
        source: &str,
        fields: &mut FieldTable,
        required: Option<ValueType>,
    ) -> Result<Expression, ExprError> {
        if source.len() > MAX_EXPRESSION_LEN {
            return Err(ExprError::new(
                source,
                MAX_EXPRESSION_LEN,
                format!("an expression of at most {MAX_EXPRESSION_LEN} bytes"),
                Some(format!("{} bytes", source.len())),
            ));
        }
        let parsed = parser::parse(source)?;
        if let Some(required) = required.filter(|&required| required != parsed.value_type) {
            let start = source.len() - source.trim_start().len();
            let expected = match required {
                ValueType::Boolean => "a boolean condition",
                ValueType::Number => "a number expression",
            };
            return Err(ExprError::new(
                source,
                start,
                expected,
                Some(parsed.value_type.described().to_owned()),
            ));
        }
        let ids: Vec<FieldId> = parsed
            .names
            .iter()
            .map(|name| fields.intern(name))
            .collect();
        let global = |local: u32| ids[local as usize].0;
        let nodes = parsed
            .nodes
            .into_iter()
            .map(|node| match node {
                Node::Field(local) => Node::Field(global(local)),
                Node::Delta(local) => Node::Delta(global(local)),
                Node::Rate(local) => Node::Rate(global(local)),
                other => other,
            })
            .collect();
        Ok(Expression {
            source: source.into(),
            root: parsed.root,
            nodes,
            arguments: parsed.arguments.into_boxed_slice(),
            fields: ids.into_boxed_slice(),
            value_type: parsed.value_type,
        })
    }

    /// The text it was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Its static type.
    pub fn value_type(&self) -> ValueType {
        self.value_type
    }

    /// The distinct fields it reads, in order of first use.
    pub fn fields(&self) -> &[FieldId] {
        &self.fields
    }

    /// Its value over `samples`, or `None` when unknown (see the module docs).
    pub fn evaluate<S: Samples + ?Sized>(&self, samples: &S) -> Option<Value> {
        let value = self.value(self.root, samples);
        if value.is_nan() {
            return None;
        }
        Some(match self.value_type {
            ValueType::Number => Value::Number(value),
            ValueType::Boolean => Value::Boolean(value != 0.0),
        })
    }

    /// Whether a boolean expression holds over `samples`, or `None` when unknown. (A number
    /// expression counts as true when it is not zero.)
    #[inline]
    pub fn is_true<S: Samples + ?Sized>(&self, samples: &S) -> Option<bool> {
        let value = self.value(self.root, samples);
        if value.is_nan() {
            None
        } else {
            Some(value != 0.0)
        }
    }

    /// The value of `node`: booleans are 1 and 0, unknown is NaN (which is why NaN never
    /// stands for anything else here: every result goes through [`known`]).
    fn value<S: Samples + ?Sized>(&self, node: u32, samples: &S) -> f64 {
        match self.nodes[node as usize] {
            Node::Constant(value) => value,
            Node::Field(field) => samples
                .latest(FieldId(field))
                .map_or(f64::NAN, |sample| known(sample.value)),
            Node::Delta(field) => match history(samples, FieldId(field)) {
                Some((latest, previous)) => known(latest.value - previous.value),
                None => f64::NAN,
            },
            Node::Rate(field) => match history(samples, FieldId(field)) {
                Some((latest, previous)) if latest.timestamp_ms > previous.timestamp_ms => {
                    let seconds = (latest.timestamp_ms - previous.timestamp_ms) as f64 / 1000.0;
                    known((latest.value - previous.value) / seconds)
                }
                _ => f64::NAN,
            },
            Node::Unary { op, operand } => {
                let value = self.value(operand, samples);
                match op {
                    UnaryOp::Negate => -value,
                    UnaryOp::Abs => value.abs(),
                    UnaryOp::Not if value.is_nan() => f64::NAN,
                    UnaryOp::Not => truth(value == 0.0),
                }
            }
            Node::Binary { op, left, right } => self.binary(op, left, right, samples),
            Node::Extremum {
                is_max,
                first,
                count,
            } => {
                let arguments = &self.arguments[first as usize..(first + count) as usize];
                let mut result = if is_max {
                    f64::NEG_INFINITY
                } else {
                    f64::INFINITY
                };
                for &argument in arguments {
                    let value = self.value(argument, samples);
                    if value.is_nan() {
                        return f64::NAN;
                    }
                    result = if is_max {
                        result.max(value)
                    } else {
                        result.min(value)
                    };
                }
                result
            }
        }
    }

    fn binary<S: Samples + ?Sized>(&self, op: BinaryOp, left: u32, right: u32, samples: &S) -> f64 {
        let left = self.value(left, samples);
        match op {
            // Three-valued logic; a decisive left operand skips the right one.
            BinaryOp::And => {
                if left == 0.0 {
                    return 0.0;
                }
                let right = self.value(right, samples);
                if right == 0.0 {
                    0.0
                } else if left.is_nan() || right.is_nan() {
                    f64::NAN
                } else {
                    1.0
                }
            }
            BinaryOp::Or => {
                if left == 1.0 {
                    return 1.0;
                }
                let right = self.value(right, samples);
                if right == 1.0 {
                    1.0
                } else if left.is_nan() || right.is_nan() {
                    f64::NAN
                } else {
                    0.0
                }
            }
            _ => {
                let right = self.value(right, samples);
                if left.is_nan() || right.is_nan() {
                    return f64::NAN;
                }
                match op {
                    BinaryOp::Add => known(left + right),
                    BinaryOp::Subtract => known(left - right),
                    BinaryOp::Multiply => known(left * right),
                    BinaryOp::Divide => known(left / right),
                    BinaryOp::Remainder => known(left % right),
                    BinaryOp::Less => truth(left < right),
                    BinaryOp::LessEqual => truth(left <= right),
                    BinaryOp::Greater => truth(left > right),
                    BinaryOp::GreaterEqual => truth(left >= right),
                    BinaryOp::Equal => truth(left == right),
                    BinaryOp::NotEqual => truth(left != right),
                    BinaryOp::And | BinaryOp::Or => f64::NAN,
                }
            }
        }
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.source)
    }
}

/// A finite value stays, anything else becomes unknown.
#[inline]
fn known(value: f64) -> f64 {
    if value.is_finite() { value } else { f64::NAN }
}

#[inline]
fn truth(holds: bool) -> f64 {
    if holds { 1.0 } else { 0.0 }
}

#[inline]
fn history<S: Samples + ?Sized>(samples: &S, field: FieldId) -> Option<(Sample, Sample)> {
    Some((samples.latest(field)?, samples.previous(field)?))
}

/// One node of a compiled expression; children are indices into the same arena.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Node {
    Constant(f64),
    /// A field's latest value (a local name index while parsing, then a [`FieldId`]).
    Field(u32),
    Delta(u32),
    Rate(u32),
    Unary {
        op: UnaryOp,
        operand: u32,
    },
    Binary {
        op: BinaryOp,
        left: u32,
        right: u32,
    },
    /// `min` or `max` of `arguments[first..first + count]`.
    Extremum {
        is_max: bool,
        first: u32,
        count: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnaryOp {
    Negate,
    Not,
    Abs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinaryOp {
    Or,
    And,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
    Equal,
    NotEqual,
    Add,
    Subtract,
    Multiply,
    Divide,
    Remainder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Function {
    Abs,
    Min,
    Max,
    Delta,
    Rate,
}

impl Function {
    fn name(self) -> &'static str {
        match self {
            Function::Abs => "abs",
            Function::Min => "min",
            Function::Max => "max",
            Function::Delta => "delta",
            Function::Rate => "rate",
        }
    }
}
