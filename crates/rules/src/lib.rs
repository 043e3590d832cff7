//! Fleetwire's rule engine: conditions over device telemetry, with durations and
//! hysteresis, deciding when an alarm is raised and when it clears.
//!
//! A rule ([`RuleDefinition`], the engine's part of the model's `RuleSpec`) selects
//! devices (by id, type, labels), holds a condition such as `temperature > 30 and
//! humidity < 80` in a small expression language (see [`Expression`] for the syntax, the
//! types and what "unknown" means), optionally a `for` duration and a `clear` expression. The [`Engine`] compiles each
//! rule once, keeps the latest samples of every device and the state of every (rule,
//! device) pair, and on each message reports the [`Transition`]s: alarm raised, alarm
//! cleared. Executing the actions (opening the alarm, calling the webhook, sending the
//! command) is the platform's job.
//!
//! ```text
//! message (device, ts, fields) ──▶ latest samples of the device
//!                                      │ every rule matching the device (cached per device)
//!                                      ▼
//!                     Idle ──true──▶ Pending ──true for `for`──▶ Active ──clear──▶ Idle
//!                                      │                              │
//!                                      └──────── Transition ◀─────────┘ (raised / cleared)
//! ```
//!
//! The crate is pure and synchronous: no I/O, no clock (time is the data's timestamps), no
//! JSON. Its only domain vocabulary is the model's (rule ids, device matches and facts). Evaluation does not allocate except to report a transition.
//!
//! ```
//! use std::time::Duration;
//! use fleetwire_model::{DeviceId, DeviceInfo, RuleId, RuleMatch};
//! use fleetwire_rules::{Engine, RuleDefinition, TransitionKind};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let overheat = RuleDefinition {
//!     id: RuleId::new("overheat")?,
//!     selector: RuleMatch::default(), // every device
//!     condition: "temperature > 30".to_owned(),
//!     for_duration: Some(Duration::from_secs(10)),
//!     clear: Some("temperature < 28".to_owned()),
//! };
//! let mut engine = Engine::new([overheat])?;
//! let device = DeviceInfo::new(DeviceId::new("sensor-1")?);
//! let mut transitions = Vec::new();
//!
//! let start = 1_700_000_000_000;
//! engine.evaluate(&device, start, &[("temperature", 31.0)], &mut transitions);
//! assert!(transitions.is_empty()); // holds, but not for 10 s yet
//! engine.evaluate(&device, start + 10_000, &[("temperature", 32.5)], &mut transitions);
//! assert_eq!(transitions[0].kind, TransitionKind::Raised);
//! assert_eq!(transitions[0].values[0].value, 32.5);
//!
//! transitions.clear();
//! engine.evaluate(&device, start + 11_000, &[("temperature", 29.0)], &mut transitions);
//! assert!(transitions.is_empty()); // below 30 but not below 28: still raised
//! engine.evaluate(&device, start + 12_000, &[("temperature", 27.5)], &mut transitions);
//! assert_eq!(transitions[0].kind, TransitionKind::Cleared);
//!
//! // A bad expression is refused with its position, for the API's 422 answer.
//! let mut broken = engine.rule("overheat").cloned().expect("the rule exists");
//! broken.condition = "temperature > > 30".to_owned();
//! let error = engine.insert(broken).unwrap_err();
//! assert_eq!(
//!     error.to_string(),
//!     r#"rule "overheat": condition: at column 15: expected an operand, found ">""#
//! );
//! assert_eq!(error.position(), Some(14));
//! # Ok(())
//! # }
//! ```

mod engine;
mod error;
mod expr;
mod rule;

pub use engine::{Engine, FieldValue, RuleState, Transition, TransitionKind};
pub use error::{Error, ExprError, ExpressionPart, Result};
pub use expr::{
    Expression, FieldId, FieldTable, MAX_DEPTH, MAX_EXPRESSION_LEN, Sample, Samples, Value,
    ValueType,
};
pub use rule::RuleDefinition;
