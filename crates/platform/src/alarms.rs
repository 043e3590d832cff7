//! [`Alarms`]: raising, acknowledging and clearing alarms, each written to the registry
//! (which keeps at most one open alarm per rule and device) and told to the live stream.
//! Used by the actions thread (raised and cleared by rules) and by the platform's verbs
//! (acknowledged and cleared by people).

use std::sync::Arc;

use fleetwire_model::{Alarm, AlarmId, DeviceId, NewAlarm, RuleId};
use fleetwire_registry::Registry;
use fleetwire_time::Timestamp;

use crate::error::{Error, Result};
use crate::events::{Event, EventHub};

/// Alarm changes, stored and published (see the module's notes).
#[derive(Clone)]
pub(crate) struct Alarms {
    registry: Registry,
    events: EventHub,
}

impl Alarms {
    pub(crate) fn new(registry: Registry, events: EventHub) -> Alarms {
        Alarms { registry, events }
    }

    /// Raises the alarm of `new`'s rule for its device, or finds the one open already;
    /// only a new one is published.
    pub(crate) async fn raise(&self, new: NewAlarm) -> Result<Arc<Alarm>> {
        let (alarm, is_new) = self
            .registry
            .raise_alarm(new, Timestamp::now().as_millis())
            .await?;
        let alarm = Arc::new(alarm);
        if is_new {
            self.events.publish(Event::Alarm(Arc::clone(&alarm)));
        }
        Ok(alarm)
    }

    /// Acknowledges an alarm on behalf of `by` (a token's name).
    pub(crate) async fn acknowledge(&self, id: &AlarmId, by: &str) -> Result<Alarm> {
        let alarm = self
            .registry
            .acknowledge_alarm(id, by, Timestamp::now().as_millis())
            .await?;
        self.events.publish(Event::Alarm(Arc::new(alarm.clone())));
        Ok(alarm)
    }

    /// Clears an alarm on behalf of `by` (a token's name, or the rule), with the values
    /// that cleared it.
    pub(crate) async fn clear(
        &self,
        id: &AlarmId,
        by: &str,
        values: Vec<(String, f64)>,
    ) -> Result<Arc<Alarm>> {
        let alarm = Arc::new(
            self.registry
                .clear_alarm(id, by, values, Timestamp::now().as_millis())
                .await?,
        );
        self.events.publish(Event::Alarm(Arc::clone(&alarm)));
        Ok(alarm)
    }

    /// Clears the open alarm of `rule` for `device`, if any: by its `cached` id when
    /// there is one (one statement), else (or when that alarm is no longer open) by
    /// looking it up.
    pub(crate) async fn clear_open(
        &self,
        rule: &RuleId,
        device: &DeviceId,
        cached: Option<AlarmId>,
        values: Vec<(String, f64)>,
    ) -> Result<Option<Arc<Alarm>>> {
        let by = fleetwire_model::CLEARED_BY_RULE;
        if let Some(id) = cached {
            match self.clear(&id, by, values.clone()).await {
                Ok(cleared) => return Ok(Some(cleared)),
                // Cleared by hand meanwhile, or gone: whatever is open now is looked up.
                Err(Error::Conflict(_) | Error::NotFound { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        match self.registry.open_alarm(rule, device).await? {
            Some(open) => Ok(Some(self.clear(&open.id, by, values).await?)),
            None => Ok(None),
        }
    }
}
