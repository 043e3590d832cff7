//! The engine: the compiled rules, and per device the latest samples of the fields rules
//! read and the state of every rule that watches it. It owns all of that state; the caller
//! owns the engine (one per process, behind whatever lock or task it likes) and turns the
//! [`Transition`]s it reports into alarms, webhooks and commands.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::Error;
use crate::expr::{FieldId, FieldTable, Sample, Samples};
use fleetwire_model::{DeviceInfo, RuleId};

use crate::rule::{CompiledRule, RuleDefinition};

/// Where one rule stands for one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleState {
    /// The condition does not hold (or never did).
    Idle,
    /// The condition holds since `since_ms` (data time), but not yet for the rule's `for`.
    Pending {
        /// The timestamp of the first evaluation of the current run where it held.
        since_ms: i64,
    },
    /// The alarm is raised.
    Active,
}

/// Whether an alarm was raised or cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransitionKind {
    /// The condition held (for its duration): open an alarm.
    Raised,
    /// The clear expression held, the condition stopped holding, or the device no longer
    /// matches the rule: close the alarm.
    Cleared,
}

/// A field's value at a transition.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldValue {
    /// The field name.
    pub field: Arc<str>,
    /// Its latest value.
    pub value: f64,
}

/// A rule's alarm changed for a device.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The rule.
    pub rule: RuleId,
    /// The device id.
    pub device: Arc<str>,
    /// Raised or cleared.
    pub kind: TransitionKind,
    /// The data time of the evaluation that decided it, in milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// The latest values of the fields the deciding expression reads (the condition when
    /// raised, the clear expression if any when cleared), skipping fields without a value.
    pub values: Vec<FieldValue>,
}

/// The rule engine: compiled rules and per-device state.
///
/// On every [`evaluate`](Engine::evaluate), the message's fields become the device's
/// latest samples, then every rule matching the device is evaluated once, against the
/// latest value of each field it reads, whichever message brought it. Each (rule, device)
/// pair moves `Idle → Pending → Active → Idle`:
///
/// - `Idle`: when the condition holds, the alarm is raised (without `for`) or the pair
///   becomes `Pending` since this message's time;
/// - `Pending`: when the condition holds and at least `for` has passed since it started
///   holding (`now - since >= for`, in the messages' timestamps, not the wall clock), the
///   alarm is raised; when it does not hold, back to `Idle`;
/// - `Active`: with a `clear` expression, the alarm clears when it holds (the condition
///   stopping to hold is not enough: hysteresis); without one, when the condition stops
///   holding.
///
/// An unknown result (see [`Expression`](crate::Expression)) changes nothing. `for` only
/// advances with the device's own messages: a device that goes quiet stays `Pending`.
///
/// Time never goes backwards for a device: a message older than the newest one seen is
/// evaluated at the newest time, and a field sample older than the field's latest one is
/// ignored (a sample with the same timestamp replaces it). Fields that no rule reads are
/// not kept, so a new rule sees a field from its next sample on. Non-finite values are
/// kept as unknown.
#[derive(Debug, Default)]
pub struct Engine {
    fields: FieldTable,
    /// In order of first insertion (increasing keys).
    rules: Vec<RuleEntry>,
    keys: HashMap<RuleId, u64>,
    next_key: u64,
    next_version: u64,
    /// Bumped on every change of the rule set; a device whose bindings are of an older
    /// generation recomputes them before its next evaluation.
    generation: u64,
    devices: HashMap<Arc<str>, DeviceState>,
}

#[derive(Debug)]
struct RuleEntry {
    /// Stays the same for the rule's lifetime, across replacements.
    key: u64,
    /// Changes when a replacement changes how the rule evaluates.
    version: u64,
    rule: CompiledRule,
}

/// A device's generation that no engine generation equals.
const STALE: u64 = u64::MAX;

#[derive(Debug)]
struct DeviceState {
    id: Arc<str>,
    samples: DeviceSamples,
    /// The newest message time seen.
    clock: i64,
    generation: u64,
    /// The rules matching the device, sorted by key.
    bindings: Vec<Binding>,
}

#[derive(Debug, Clone, Copy)]
struct Binding {
    /// Index into `Engine::rules`, valid while the device's generation is current.
    index: u32,
    key: u64,
    version: u64,
    state: RuleState,
}

/// Latest and previous sample of each interned field, indexed by [`FieldId`]; NaN marks
/// an absent or unknown value.
#[derive(Debug, Default)]
struct DeviceSamples(Vec<FieldSamples>);

#[derive(Debug, Clone, Copy)]
struct FieldSamples {
    latest: Slot,
    previous: Slot,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    value: f64,
    timestamp_ms: i64,
}

impl Slot {
    const EMPTY: Slot = Slot {
        value: f64::NAN,
        timestamp_ms: i64::MIN,
    };

    #[inline]
    fn sample(self) -> Option<Sample> {
        if self.value.is_nan() {
            None
        } else {
            Some(Sample {
                value: self.value,
                timestamp_ms: self.timestamp_ms,
            })
        }
    }
}

impl DeviceSamples {
    fn record(&mut self, field: FieldId, timestamp_ms: i64, value: f64) {
        let index = field.index();
        if index >= self.0.len() {
            let empty = FieldSamples {
                latest: Slot::EMPTY,
                previous: Slot::EMPTY,
            };
            self.0.resize(index + 1, empty);
        }
        let samples = &mut self.0[index];
        let value = if value.is_finite() { value } else { f64::NAN };
        if timestamp_ms > samples.latest.timestamp_ms {
            samples.previous = samples.latest;
            samples.latest = Slot {
                value,
                timestamp_ms,
            };
        } else if timestamp_ms == samples.latest.timestamp_ms {
            samples.latest.value = value;
        }
    }
}

impl Samples for DeviceSamples {
    #[inline]
    fn latest(&self, field: FieldId) -> Option<Sample> {
        self.0.get(field.index())?.latest.sample()
    }

    #[inline]
    fn previous(&self, field: FieldId) -> Option<Sample> {
        self.0.get(field.index())?.previous.sample()
    }
}

impl Engine {
    /// An engine with these rules, each compiled once. Fails on the first definition that
    /// does not compile, or on an id given twice.
    pub fn new(definitions: impl IntoIterator<Item = RuleDefinition>) -> Result<Engine, Error> {
        let mut engine = Engine::default();
        for definition in definitions {
            if engine.keys.contains_key(&definition.id) {
                return Err(Error::DuplicateRule(definition.id));
            }
            engine.insert(definition)?;
        }
        Ok(engine)
    }

    /// Adds a rule, or replaces the rule with the same id and returns its old definition.
    /// On error the engine is unchanged.
    ///
    /// Other rules keep their state. A replaced rule keeps its raised alarms (the clear
    /// logic of the new definition will clear them); its pending conditions restart unless
    /// the condition, `clear` and `for` are unchanged. Devices that the new selector no
    /// longer matches get a `Cleared` transition for raised alarms at their next message.
    pub fn insert(&mut self, definition: RuleDefinition) -> Result<Option<RuleDefinition>, Error> {
        let rule = CompiledRule::compile(definition, &mut self.fields)?;
        self.generation += 1;
        self.next_version += 1;
        if let Some(index) = self.index_of(rule.definition.id.as_str()) {
            let entry = &mut self.rules[index];
            if !entry.rule.has_same_logic(&rule) {
                entry.version = self.next_version;
            }
            let old = std::mem::replace(&mut entry.rule, rule);
            return Ok(Some(old.definition));
        }
        let key = self.next_key;
        self.next_key += 1;
        self.keys.insert(rule.definition.id.clone(), key);
        self.rules.push(RuleEntry {
            key,
            version: self.next_version,
            rule,
        });
        Ok(None)
    }

    /// Removes a rule and its state on every device, returning its definition. Its raised
    /// alarms get no transition: the platform closes them when it deletes the rule.
    pub fn remove(&mut self, id: &str) -> Option<RuleDefinition> {
        let index = self.index_of(id)?;
        self.keys.remove(id);
        self.generation += 1;
        Some(self.rules.remove(index).rule.definition)
    }

    /// The definition of a rule.
    pub fn rule(&self, id: &str) -> Option<&RuleDefinition> {
        let index = self.index_of(id)?;
        Some(&self.rules[index].rule.definition)
    }

    /// All rule definitions, in order of first insertion.
    pub fn rules(&self) -> impl Iterator<Item = &RuleDefinition> {
        self.rules.iter().map(|entry| &entry.rule.definition)
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// How many devices the engine keeps state for.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// The field names the rules read, with their ids.
    pub fn fields(&self) -> &FieldTable {
        &self.fields
    }

    fn index_of(&self, id: &str) -> Option<usize> {
        let key = *self.keys.get(id)?;
        self.rules
            .binary_search_by_key(&key, |entry| entry.key)
            .ok()
    }

    /// Applies a message of `device` taken at `timestamp_ms` (milliseconds since the epoch)
    /// and evaluates every rule matching the device, appending the resulting transitions to
    /// `out` in rule order. Allocates only for a device seen for the first time, after a
    /// rule change, and for transitions.
    pub fn evaluate(
        &mut self,
        device: &DeviceInfo,
        timestamp_ms: i64,
        fields: &[(&str, f64)],
        out: &mut Vec<Transition>,
    ) {
        let Engine {
            fields: table,
            rules,
            generation,
            devices,
            ..
        } = self;
        let state = match devices.get_mut(device.id.as_str()) {
            Some(state) => state,
            None => devices
                .entry(Arc::from(device.id.as_str()))
                .or_insert_with_key(|id| DeviceState::new(Arc::clone(id))),
        };
        let now = state.clock.max(timestamp_ms);
        state.clock = now;
        for &(name, value) in fields {
            if let Some(field) = table.get(name) {
                state.samples.record(field, timestamp_ms, value);
            }
        }
        if state.generation != *generation {
            state.rebind(rules, device, now, table, out);
            state.generation = *generation;
        }
        let DeviceState {
            id,
            samples,
            bindings,
            ..
        } = state;
        for binding in bindings.iter_mut() {
            let rule = &rules[binding.index as usize].rule;
            if let Some(kind) = step(rule, &mut binding.state, samples, now) {
                out.push(transition(rule, id, kind, now, samples, table));
            }
        }
    }

    /// Tells the engine that a device's type or labels changed: its matching rules are
    /// recomputed at its next message.
    pub fn device_changed(&mut self, device: &str) {
        if let Some(state) = self.devices.get_mut(device) {
            state.generation = STALE;
        }
    }

    /// Drops everything the engine keeps about a device (it was deleted). Returns whether
    /// there was anything.
    pub fn forget_device(&mut self, device: &str) -> bool {
        self.devices.remove(device).is_some()
    }

    /// Records that `rule`'s alarm is open for `device`, as the alarm store says after a
    /// restart: the rule starts `Active` there and clears by its usual logic (or at the
    /// device's next message, if the rule no longer matches it).
    pub fn mark_active(&mut self, rule: &str, device: &str) -> Result<(), Error> {
        let Some(index) = self.index_of(rule) else {
            return Err(Error::UnknownRule(rule.to_owned()));
        };
        let entry = &self.rules[index];
        let state = self
            .devices
            .entry(Arc::from(device))
            .or_insert_with_key(|id| DeviceState::new(Arc::clone(id)));
        state.generation = STALE;
        match state
            .bindings
            .binary_search_by_key(&entry.key, |binding| binding.key)
        {
            Ok(position) => state.bindings[position].state = RuleState::Active,
            Err(position) => state.bindings.insert(
                position,
                Binding {
                    index: index as u32,
                    key: entry.key,
                    version: entry.version,
                    state: RuleState::Active,
                },
            ),
        }
        Ok(())
    }

    /// Starts `rule` over for `device` (its alarm was cleared by hand): the pair becomes
    /// `Idle`, so a condition that still holds raises a new alarm, after its `for`. Returns
    /// whether the pair was known.
    pub fn reset(&mut self, rule: &str, device: &str) -> bool {
        let Some(&key) = self.keys.get(rule) else {
            return false;
        };
        let Some(state) = self.devices.get_mut(device) else {
            return false;
        };
        match state
            .bindings
            .binary_search_by_key(&key, |binding| binding.key)
        {
            Ok(position) => {
                state.bindings[position].state = RuleState::Idle;
                true
            }
            Err(_) => false,
        }
    }

    /// Where `rule` stands for `device`: `None` when either is unknown to the engine,
    /// `Idle` when the rule never did anything for the device.
    pub fn state(&self, rule: &str, device: &str) -> Option<RuleState> {
        let key = *self.keys.get(rule)?;
        let state = self.devices.get(device)?;
        Some(
            state
                .bindings
                .binary_search_by_key(&key, |binding| binding.key)
                .map_or(RuleState::Idle, |position| state.bindings[position].state),
        )
    }
}

impl DeviceState {
    fn new(id: Arc<str>) -> DeviceState {
        DeviceState {
            id,
            samples: DeviceSamples::default(),
            clock: i64::MIN,
            generation: STALE,
            bindings: Vec::new(),
        }
    }

    /// Recomputes which rules match the device, keeping the state of rules that still do
    /// and clearing raised alarms of rules that exist but no longer match.
    fn rebind(
        &mut self,
        rules: &[RuleEntry],
        device: &DeviceInfo,
        now: i64,
        table: &FieldTable,
        out: &mut Vec<Transition>,
    ) {
        let old = std::mem::take(&mut self.bindings);
        let mut old_bindings = old.iter().peekable();
        for (index, entry) in rules.iter().enumerate() {
            // Both lists are sorted by key: walk the old one alongside.
            let mut previous = None;
            while let Some(binding) = old_bindings.next_if(|binding| binding.key <= entry.key) {
                if binding.key == entry.key {
                    previous = Some(*binding);
                }
            }
            let is_match = entry.rule.definition.selector.matches(device);
            let state = match previous {
                Some(binding) if !is_match => {
                    if binding.state == RuleState::Active {
                        let kind = TransitionKind::Cleared;
                        out.push(transition(
                            &entry.rule,
                            &self.id,
                            kind,
                            now,
                            &self.samples,
                            table,
                        ));
                    }
                    continue;
                }
                None if !is_match => continue,
                None => RuleState::Idle,
                Some(binding) => match binding.state {
                    RuleState::Pending { .. } if binding.version != entry.version => {
                        RuleState::Idle
                    }
                    state => state,
                },
            };
            self.bindings.push(Binding {
                index: index as u32,
                key: entry.key,
                version: entry.version,
                state,
            });
        }
    }
}

/// Evaluates one rule for one device and moves its state; returns the transition, if any.
#[inline]
fn step(
    rule: &CompiledRule,
    state: &mut RuleState,
    samples: &DeviceSamples,
    now: i64,
) -> Option<TransitionKind> {
    match *state {
        RuleState::Idle => {
            if rule.condition.is_true(samples) == Some(true) {
                if rule.for_ms <= 0 {
                    *state = RuleState::Active;
                    return Some(TransitionKind::Raised);
                }
                *state = RuleState::Pending { since_ms: now };
            }
            None
        }
        RuleState::Pending { since_ms } => match rule.condition.is_true(samples) {
            Some(true) if now.saturating_sub(since_ms) >= rule.for_ms => {
                *state = RuleState::Active;
                Some(TransitionKind::Raised)
            }
            Some(false) => {
                *state = RuleState::Idle;
                None
            }
            _ => None,
        },
        RuleState::Active => {
            let is_cleared = match &rule.clear {
                Some(clear) => clear.is_true(samples) == Some(true),
                None => rule.condition.is_true(samples) == Some(false),
            };
            if is_cleared {
                *state = RuleState::Idle;
                return Some(TransitionKind::Cleared);
            }
            None
        }
    }
}

fn transition(
    rule: &CompiledRule,
    device: &Arc<str>,
    kind: TransitionKind,
    now: i64,
    samples: &DeviceSamples,
    table: &FieldTable,
) -> Transition {
    let expression = match (&rule.clear, kind) {
        (Some(clear), TransitionKind::Cleared) => clear,
        _ => &rule.condition,
    };
    let values = expression
        .fields()
        .iter()
        .filter_map(|&field| {
            let value = samples.latest(field)?.value;
            let name = Arc::clone(table.shared_name(field)?);
            Some(FieldValue { field: name, value })
        })
        .collect();
    Transition {
        rule: rule.definition.id.clone(),
        device: Arc::clone(device),
        kind,
        timestamp_ms: now,
        values,
    }
}
