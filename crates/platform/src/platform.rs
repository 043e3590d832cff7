//! [`Platform`]: the handle the binary builds and the API calls, and the state its parts
//! share ([`Inner`]).
//!
//! Who owns what:
//! - the store and the registry are shared handles (each does its own locking);
//! - the writer threads own the write queue (`writer.rs`);
//! - the rules task owns the rule engine, the actions task carries out transitions,
//!   the command task watches deliveries and deadlines (`automation.rs`, `commands.rs`);
//! - the directory caches devices, `last_errors` the last rejected payload per device;
//! - the broker is set once it exists (it is built with this platform as its ingest).
//!
//! Data flow: broker / HTTP → `ingest.rs` → writer → store; the writer's observer then
//! hands each written batch to the event hub (live stream) and to the rules task, whose
//! transitions go to the actions task (alarms, webhooks, republish, commands).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use fleetwire_broker::{BoxFuture, Broker, Collector, Inbound, Ingest, Settled};
use fleetwire_formats::{Limits, Precision};
use fleetwire_model::{
    Alarm, AlarmFilter, AlarmId, Command, CommandId, Device, DeviceId, Page, Rule, RuleId, RuleSpec,
};
use fleetwire_registry::Registry;
use fleetwire_rules::Engine;
use fleetwire_store::{Stats as StoreStats, Store, Timestamp};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::automation::{self, ACTIONS_QUEUE, RULES_QUEUE, RulesInput};
use crate::batch::PointBatch;
use crate::commands::{self, CommandRequest, Commands};
use crate::directory::Directory;
use crate::error::{Error, Result};
use crate::events::{Event, EventHub};
use crate::ingest::{DeviceMessage, IngestError, IngestStats, LastErrors, WriteReport};
use crate::webhook::{WebhookConfig, WebhookStats, Webhooks};
use crate::writer::{Observer, Writer, WriterConfig, WriterStats};

/// How the platform behaves; `PlatformConfig::default()` suits a single node.
#[derive(Debug, Clone, PartialEq)]
pub struct PlatformConfig {
    /// The write queue and threads.
    pub writer: WriterConfig,
    /// Limits on payloads (fields, rows, nesting, time range).
    pub limits: Limits,
    /// Whether telemetry for an unknown device registers it: from anonymous MQTT clients
    /// (development mode) and line protocol (collectors such as Telegraf). Authenticated
    /// devices exist by definition, and the REST telemetry endpoint always wants a
    /// registered device.
    pub auto_register_devices: bool,
    /// Webhook delivery.
    pub webhooks: WebhookConfig,
}

impl Default for PlatformConfig {
    fn default() -> PlatformConfig {
        PlatformConfig {
            writer: WriterConfig::default(),
            limits: Limits::default(),
            auto_register_devices: true,
            webhooks: WebhookConfig::default(),
        }
    }
}

/// The platform's application core. Cheap to clone.
#[derive(Clone)]
pub struct Platform {
    inner: Arc<Inner>,
}

/// What every part of the platform shares.
pub(crate) struct Inner {
    pub(crate) config: PlatformConfig,
    pub(crate) store: Store,
    pub(crate) registry: Registry,
    pub(crate) writer: Writer,
    pub(crate) events: EventHub,
    pub(crate) directory: Arc<Directory>,
    pub(crate) last_errors: LastErrors,
    pub(crate) ingest_stats: IngestStats,
    pub(crate) writer_stats: Arc<WriterStats>,
    pub(crate) webhook_stats: Arc<WebhookStats>,
    pub(crate) webhooks: Webhooks,
    pub(crate) commands: Commands,
    rules: mpsc::Sender<RulesInput>,
    /// `(when, messages accepted, points written)` samples for [`Platform::ingest_rates`].
    rate_samples: Mutex<std::collections::VecDeque<(std::time::Instant, u64, u64)>>,
    broker: Mutex<Option<Broker>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Inner {
    /// The broker, once attached.
    pub(crate) fn broker(&self) -> Option<Broker> {
        self.broker.lock().clone()
    }
}

/// Hands written batches to the live stream and the rules task.
struct WrittenObserver {
    events: EventHub,
    rules: mpsc::Sender<RulesInput>,
}

impl Observer for WrittenObserver {
    fn written(&self, batches: Vec<Arc<PointBatch>>) {
        for batch in &batches {
            self.events.publish(Event::Telemetry(Arc::clone(batch)));
        }
        // Blocking on purpose (this is a writer thread): when rule evaluation falls
        // behind, writes wait rather than alarms being skipped.
        let _ = self.rules.blocking_send(RulesInput::Written(batches));
    }
}

/// Counters of every part, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlatformStats {
    /// Messages accepted, rejected and failed, per source (`mqtt`, `http`,
    /// `line_protocol`).
    pub ingest: Vec<SourceCounts>,
    /// String fields of line protocol skipped.
    pub skipped_string_fields: u64,
    /// Points written to the store.
    pub points_written: u64,
    /// Group writes done, and the time they took in all.
    pub store_writes: u64,
    /// Seconds spent in store writes.
    pub store_write_seconds: f64,
    /// The store's counts and sizes.
    pub store: StoreStats,
    /// Webhook deliveries: delivered, failed, retries, short-circuited, dropped.
    pub webhooks: [u64; 5],
}

/// Recent ingest rates.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct IngestRates {
    /// Messages (MQTT publishes, HTTP bodies, line protocol requests) accepted per second.
    pub messages_per_second: f64,
    /// Points written per second.
    pub points_per_second: f64,
}

/// Ingest counters of one source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceCounts {
    /// `mqtt`, `http` or `line_protocol`.
    pub source: &'static str,
    /// Messages accepted.
    pub accepted: u64,
    /// Messages rejected for their content.
    pub rejected: u64,
    /// Messages that could not be stored.
    pub failed: u64,
}

impl Platform {
    /// Starts the platform over an open store and registry: loads the rules and the open
    /// alarms, starts the writer threads and the rules, actions and command tasks (on the
    /// current Tokio runtime).
    pub async fn start(
        store: Store,
        registry: Registry,
        config: PlatformConfig,
    ) -> Result<Platform> {
        let mut engine = Engine::default();
        for rule in registry.all_rules().await? {
            if !rule.spec.enabled {
                continue;
            }
            match engine.insert(automation::definition(&rule)) {
                Ok(_) => {}
                Err(error) => tracing::error!(rule = %rule.id, %error, "stored rule skipped"),
            }
        }
        for alarm in registry.open_alarms().await? {
            // A rule deleted or disabled since: its alarms wait for a person.
            let _ = engine.mark_active(alarm.rule_id.as_str(), alarm.device_id.as_str());
        }
        let rule_count = engine.len();

        let events = EventHub::default();
        let (rules_sender, rules_receiver) = mpsc::channel(RULES_QUEUE);
        let (actions_sender, actions_receiver) = mpsc::channel(ACTIONS_QUEUE);
        let writer_stats = Arc::new(WriterStats::default());
        let writer = Writer::start(
            store.clone(),
            config.writer.clone(),
            Arc::new(WrittenObserver {
                events: events.clone(),
                rules: rules_sender.clone(),
            }),
            Arc::clone(&writer_stats),
        )
        .map_err(|error| Error::Store(format!("starting the writer threads: {error}")))?;
        let webhook_stats = Arc::new(WebhookStats::default());
        let (commands, notices) = Commands::new();
        let inner = Arc::new(Inner {
            webhooks: Webhooks::new(config.webhooks.clone(), Arc::clone(&webhook_stats)),
            config,
            directory: Arc::new(Directory::new(registry.clone())),
            store,
            registry,
            writer,
            events,
            last_errors: LastErrors::default(),
            ingest_stats: IngestStats::default(),
            writer_stats,
            webhook_stats,
            commands,
            rules: rules_sender,
            rate_samples: Mutex::new(std::collections::VecDeque::from([(
                std::time::Instant::now(),
                0,
                0,
            )])),
            broker: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&inner);
        *inner.tasks.lock() = vec![
            tokio::spawn(automation::run_rules(
                weak.clone(),
                engine,
                rules_receiver,
                actions_sender,
            )),
            tokio::spawn(automation::run_actions(weak.clone(), actions_receiver)),
            tokio::spawn(commands::run(weak, notices)),
        ];
        tracing::info!(rules = rule_count, "platform started");
        Ok(Platform { inner })
    }

    /// Lets the platform publish through `broker` (commands, republish actions). The
    /// broker serves its listener with [`Platform::mqtt_ingest`] as its ingest.
    pub fn attach_broker(&self, broker: Broker) {
        *self.inner.broker.lock() = Some(broker);
    }

    /// The broker's view of the platform: takes `devices/{id}/telemetry`, `/attributes`
    /// and `/commands/{cmd}/response`.
    pub fn mqtt_ingest(&self) -> Arc<dyn Ingest> {
        Arc::new(MqttIngest {
            inner: Arc::clone(&self.inner),
        })
    }

    /// Writes what is queued, stops the tasks and closes the store.
    pub async fn shutdown(&self) {
        let inner = Arc::clone(&self.inner);
        let _ = tokio::task::spawn_blocking(move || inner.writer.stop()).await;
        self.inner.broker.lock().take();
        let tasks = std::mem::take(&mut *self.inner.tasks.lock());
        for task in tasks {
            task.abort();
        }
        let store = self.inner.store.clone();
        match tokio::task::spawn_blocking(move || store.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "closing the telemetry store failed"),
            Err(error) => tracing::error!(%error, "closing the telemetry store failed"),
        }
    }

    /// The telemetry store (for queries).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The event hub (live stream).
    pub fn events(&self) -> &EventHub {
        &self.inner.events
    }

    /// Counters of every part.
    pub fn stats(&self) -> PlatformStats {
        let inner = &self.inner;
        let ingest = crate::ingest::Source::ALL
            .iter()
            .enumerate()
            .map(|(index, source)| SourceCounts {
                source: source.as_str(),
                accepted: inner.ingest_stats.accepted[index].load(Ordering::Relaxed),
                rejected: inner.ingest_stats.rejected[index].load(Ordering::Relaxed),
                failed: inner.ingest_stats.failed[index].load(Ordering::Relaxed),
            })
            .collect();
        let webhooks = &inner.webhook_stats;
        PlatformStats {
            ingest,
            skipped_string_fields: inner
                .ingest_stats
                .skipped_string_fields
                .load(Ordering::Relaxed),
            points_written: inner.writer_stats.points.load(Ordering::Relaxed),
            store_writes: inner.writer_stats.writes.load(Ordering::Relaxed),
            store_write_seconds: inner.writer_stats.write_micros.load(Ordering::Relaxed) as f64
                / 1e6,
            store: inner.store.stats(),
            webhooks: [
                webhooks.delivered.load(Ordering::Relaxed),
                webhooks.failed.load(Ordering::Relaxed),
                webhooks.retries.load(Ordering::Relaxed),
                webhooks.short_circuited.load(Ordering::Relaxed),
                webhooks.dropped.load(Ordering::Relaxed),
            ],
        }
    }

    /// Messages and points accepted per second, over the last ten seconds or so.
    pub fn ingest_rates(&self) -> IngestRates {
        let inner = &self.inner;
        let messages: u64 = inner
            .ingest_stats
            .accepted
            .iter()
            .map(|counter| counter.load(Ordering::Relaxed))
            .sum();
        let points = inner.writer_stats.points.load(Ordering::Relaxed);
        let now = std::time::Instant::now();
        let mut samples = inner.rate_samples.lock();
        if samples
            .back()
            .is_none_or(|(at, _, _)| now.duration_since(*at) >= Duration::from_secs(1))
        {
            samples.push_back((now, messages, points));
        }
        while samples.len() > 2
            && samples
                .front()
                .is_some_and(|(at, _, _)| now.duration_since(*at) > Duration::from_secs(10))
        {
            samples.pop_front();
        }
        let Some(&(since, first_messages, first_points)) = samples.front() else {
            return IngestRates::default();
        };
        let seconds = now.duration_since(since).as_secs_f64();
        if seconds < 0.5 {
            return IngestRates::default();
        }
        IngestRates {
            messages_per_second: messages.saturating_sub(first_messages) as f64 / seconds,
            points_per_second: points.saturating_sub(first_points) as f64 / seconds,
        }
    }

    // ---- ingest ----

    /// `POST /api/v1/devices/{id}/telemetry`: the payloads of the MQTT topic, for a
    /// registered device. Resolves once the points are written.
    pub async fn ingest_json(&self, device: &DeviceId, body: &[u8]) -> Result<WriteReport> {
        self.inner.ingest_json(device, body).await
    }

    /// `POST /api/v2/write`: InfluxDB line protocol; all of it or nothing.
    pub async fn ingest_line_protocol(
        &self,
        body: &[u8],
        precision: Precision,
    ) -> Result<WriteReport> {
        self.inner.ingest_line_protocol(body, precision).await
    }

    /// The last rejected payload of a device, and why.
    pub fn last_ingest_error(&self, device: &str) -> Option<IngestError> {
        self.inner.last_errors.get(device)
    }

    // ---- devices ----

    /// A registered device, from memory when it was seen before ([`Error::NotFound`]
    /// otherwise).
    pub async fn device_info(&self, device: &DeviceId) -> Result<Arc<crate::DeviceInfo>> {
        self.inner.directory.resolve(device.as_str(), false).await
    }

    /// A device was created or changed through the API: rules re-match it.
    pub fn device_changed(&self, device: &Device) {
        self.inner.directory.remember(device);
        let _ = self
            .inner
            .rules
            .try_send(RulesInput::DeviceChanged(Arc::from(device.id.as_str())));
    }

    /// A device was deleted: forget it everywhere. (Its stored telemetry stays until
    /// retention removes it.)
    pub async fn device_deleted(&self, device: &DeviceId) {
        self.inner.directory.forget(device.as_str());
        self.inner.last_errors.forget(device.as_str());
        let _ = self
            .inner
            .rules
            .send(RulesInput::DeviceDeleted(Arc::from(device.as_str())))
            .await;
    }

    /// A device connected (first connection) or disconnected (last one).
    pub fn presence(&self, device: &str, online: bool) {
        self.inner.events.publish(Event::Presence {
            device: Arc::from(device),
            online,
            at: Timestamp::now(),
        });
    }

    // ---- rules ----

    /// Checks a rule (expressions, actions) without storing it; the error names the
    /// expression and the position. Needs no running platform (the configuration file's
    /// rules are checked before anything starts).
    pub fn validate_rule(id: Option<&RuleId>, spec: &RuleSpec) -> Result<()> {
        spec.check()?;
        let rule = Rule {
            id: match id {
                Some(id) => id.clone(),
                None => RuleId::new("new-rule")?,
            },
            spec: spec.clone(),
            created_at: 0,
            updated_at: 0,
        };
        automation::definition(&rule)
            .validate()
            .map_err(|error| Error::InvalidExpression {
                position: error.position(),
                detail: error.to_string(),
            })
    }

    /// Creates a rule (validated first); it applies to the next message.
    pub async fn create_rule(&self, id: Option<RuleId>, spec: RuleSpec) -> Result<Rule> {
        Self::validate_rule(id.as_ref(), &spec)?;
        let rule = self.inner.registry.create_rule(id, spec).await?;
        self.apply_rule(&rule).await?;
        Ok(rule)
    }

    /// Replaces a rule. Its alarm states carry over when its expressions stay the same.
    pub async fn replace_rule(&self, id: &RuleId, spec: RuleSpec) -> Result<Rule> {
        Self::validate_rule(Some(id), &spec)?;
        let rule = self.inner.registry.replace_rule(id, spec).await?;
        self.apply_rule(&rule).await?;
        Ok(rule)
    }

    async fn apply_rule(&self, rule: &Rule) -> Result<()> {
        let input = if rule.spec.enabled {
            RulesInput::Upsert(Box::new(automation::definition(rule)))
        } else {
            RulesInput::Remove(rule.id.clone())
        };
        self.inner
            .rules
            .send(input)
            .await
            .map_err(|_| Error::ShuttingDown)
    }

    /// Deletes a rule. Its open alarms stay open, for a person to clear.
    pub async fn delete_rule(&self, id: &RuleId) -> Result<()> {
        self.inner.registry.delete_rule(id).await?;
        self.inner
            .rules
            .send(RulesInput::Remove(id.clone()))
            .await
            .map_err(|_| Error::ShuttingDown)
    }

    /// One rule.
    pub async fn rule(&self, id: &RuleId) -> Result<Rule> {
        Ok(self.inner.registry.rule(id).await?)
    }

    /// A page of rules.
    pub async fn list_rules(&self, limit: u32, cursor: Option<&str>) -> Result<Page<Rule>> {
        Ok(self.inner.registry.list_rules(limit, cursor).await?)
    }

    // ---- alarms ----

    /// One alarm.
    pub async fn alarm(&self, id: &AlarmId) -> Result<Alarm> {
        Ok(self.inner.registry.alarm(id).await?)
    }

    /// A page of alarms, newest first.
    pub async fn list_alarms(&self, filter: &AlarmFilter) -> Result<Page<Alarm>> {
        Ok(self.inner.registry.list_alarms(filter).await?)
    }

    /// Acknowledges an alarm on behalf of `by` (a token's name).
    pub async fn acknowledge_alarm(&self, id: &AlarmId, by: &str) -> Result<Alarm> {
        let alarm = self
            .inner
            .registry
            .acknowledge_alarm(id, by, Timestamp::now().as_millis())
            .await?;
        self.inner
            .events
            .publish(Event::Alarm(Arc::new(alarm.clone())));
        Ok(alarm)
    }

    /// Clears an alarm by hand. If its condition still holds, the rule raises a new one.
    pub async fn clear_alarm(&self, id: &AlarmId, by: &str) -> Result<Alarm> {
        let alarm = automation::clear_alarm(&self.inner, id, by, Vec::new()).await?;
        let _ = self
            .inner
            .rules
            .send(RulesInput::Reset {
                rule: alarm.rule_id.clone(),
                device: Arc::from(alarm.device_id.as_str()),
            })
            .await;
        Ok((*alarm).clone())
    }

    // ---- commands ----

    /// Sends a command to a device (registered: NotFound otherwise).
    pub async fn send_command(
        &self,
        device: &DeviceId,
        request: CommandRequest,
    ) -> Result<Command> {
        self.inner.send_command(device, request).await
    }

    /// One command of a device.
    pub async fn command(&self, device: &DeviceId, id: &CommandId) -> Result<Command> {
        Ok(self.inner.registry.command(device, id).await?)
    }

    /// A page of a device's commands, newest first.
    pub async fn list_commands(
        &self,
        device: &DeviceId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Command>> {
        Ok(self
            .inner
            .registry
            .list_commands(device, limit, cursor)
            .await?)
    }
}

/// The platform as the broker's [`Ingest`].
struct MqttIngest {
    inner: Arc<Inner>,
}

impl Ingest for MqttIngest {
    fn collector(&self) -> Box<dyn Collector> {
        Box::new(MqttCollector {
            inner: Arc::clone(&self.inner),
            kept: Vec::new(),
        })
    }
}

/// The device messages of one MQTT connection, kept (topics parsed) until the broker
/// settles them.
struct MqttCollector {
    inner: Arc<Inner>,
    kept: Vec<DeviceMessage>,
}

impl Collector for MqttCollector {
    fn offer(&mut self, message: Inbound<'_>) -> bool {
        let Some(message) = DeviceMessage::keep(message) else {
            return false;
        };
        self.kept.push(message);
        true
    }

    fn settle(&mut self) -> BoxFuture<'static, Settled> {
        let inner = Arc::clone(&self.inner);
        let batch = std::mem::take(&mut self.kept);
        Box::pin(async move { inner.ingest_mqtt(batch).await })
    }
}

/// How long a command may wait for its answer when the caller does not say.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
