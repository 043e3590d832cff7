//! What the engine evaluates of a rule ([`RuleDefinition`]: which devices, condition,
//! duration, clear expression, taken from the model's [`RuleSpec`]) and the compiled form.

use std::time::Duration;

use fleetwire_model::{RuleId, RuleMatch, RuleSpec};

use crate::error::{Error, ExpressionPart};
use crate::expr::{Expression, FieldTable};

/// What the engine evaluates of a rule: which devices it watches and its logic. The
/// rest of the rule model (name, severity, actions) is the platform's: the engine reports
/// transitions, the platform acts on them.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleDefinition {
    /// Its id.
    pub id: RuleId,
    /// Which devices it watches.
    pub selector: RuleMatch,
    /// The boolean expression that raises the alarm.
    pub condition: String,
    /// How long (in data time) the condition must hold before the alarm is raised; `None`
    /// (or zero) raises on the first evaluation where it holds.
    pub for_duration: Option<Duration>,
    /// The boolean expression that clears a raised alarm; without it, the alarm clears when
    /// the condition stops holding.
    pub clear: Option<String>,
}

impl RuleDefinition {
    /// The part of `spec` the engine evaluates. A negative `for` (which the model's check
    /// refuses) counts as none.
    pub fn new(id: RuleId, spec: &RuleSpec) -> RuleDefinition {
        RuleDefinition {
            id,
            selector: spec.matcher.clone(),
            condition: spec.condition.clone(),
            for_duration: spec
                .for_ms
                .map(|millis| Duration::from_millis(u64::try_from(millis).unwrap_or(0))),
            clear: spec.clear.clone(),
        }
    }

    /// Checks that the condition and the clear expression compile, without an engine:
    /// what the API calls before storing a rule.
    pub fn validate(&self) -> Result<(), Error> {
        CompiledRule::compile(self.clone(), &mut FieldTable::default()).map(drop)
    }
}

/// A rule ready to evaluate.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    pub(crate) definition: RuleDefinition,
    pub(crate) condition: Expression,
    pub(crate) clear: Option<Expression>,
    /// `for` in milliseconds, 0 when absent.
    pub(crate) for_ms: i64,
}

impl CompiledRule {
    /// Compiles both expressions, interning their fields in `fields` only when both
    /// compile.
    pub(crate) fn compile(
        definition: RuleDefinition,
        fields: &mut FieldTable,
    ) -> Result<CompiledRule, Error> {
        let compile = |source: &str, part, fields: &mut FieldTable| {
            Expression::compile_condition(source, fields).map_err(|source| Error::Expression {
                rule: definition.id.clone(),
                part,
                source,
            })
        };
        // Check everything first so that a rejected rule interns nothing.
        let mut scratch = FieldTable::default();
        compile(
            &definition.condition,
            ExpressionPart::Condition,
            &mut scratch,
        )?;
        if let Some(clear) = &definition.clear {
            compile(clear, ExpressionPart::Clear, &mut scratch)?;
        }
        let condition = compile(&definition.condition, ExpressionPart::Condition, fields)?;
        let clear = match &definition.clear {
            Some(clear) => Some(compile(clear, ExpressionPart::Clear, fields)?),
            None => None,
        };
        let for_ms = definition.for_duration.map_or(0, |duration| {
            i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
        });
        Ok(CompiledRule {
            definition,
            condition,
            clear,
            for_ms,
        })
    }

    /// Whether `other` evaluates the same way (a change of selector keeps a pending
    /// condition's start).
    pub(crate) fn has_same_logic(&self, other: &CompiledRule) -> bool {
        self.definition.condition == other.definition.condition
            && self.definition.clear == other.definition.clear
            && self.for_ms == other.for_ms
    }
}
