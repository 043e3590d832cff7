//! [`Platform`]: the one door of the application core. The API, the binary and the broker
//! hooks go through its verbs; each verb that touches more than one part (a device deleted:
//! registry, caches, rules, connections) does it here, so no caller coordinates parts.
//!
//! Who owns what (one owner each, none reaching back to this façade):
//! - the store and the registry are shared handles (each does its own locking);
//! - [`Ingest`] owns the write path: the writer threads, the counters and the last
//!   ingest error of every device (`ingest.rs`);
//! - the [`Directory`] caches devices for ingest and the rules (shared);
//! - [`Automation`] owns the rules and actions threads (`automation.rs`, `actions.rs`);
//! - [`Commands`] owns the commands waiting for a subscriber and their task;
//! - [`Alarms`] writes and publishes alarm changes;
//! - the [`MqttLink`] given at start reaches devices (the broker, or in a cluster the
//!   nodes they are connected to).
//!
//! Data flow: broker / HTTP → ingest → writer → store; the writer's observer then hands
//! each written batch to the event hub (live stream) and to the rules thread, whose
//! transitions go to the actions thread (alarms, webhooks, republish, commands).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fleetwire_broker::Hooks;
use fleetwire_formats::{Limits, Precision};
use fleetwire_model::{
    Alarm, AlarmFilter, AlarmId, AlarmStatus, ApiToken, Command, CommandId, Device, DeviceFilter,
    DeviceId, DevicePatch, Fingerprint, IngestErrorRecord, NewDevice, NewToken, Page,
    PinnedCertificate, Rule, RuleId, RuleSpec, Severity, TokenId,
};
use fleetwire_registry::Registry;
use fleetwire_store::{Sample, Store};
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use crate::actions::Actuators;
use crate::alarms::Alarms;
use crate::automation::{Automation, RulesChannel};
use crate::certificates;
use crate::commands::{CommandRequest, Commands};
use crate::directory::Directory;
use crate::error::{Error, Result};
use crate::events::EventHub;
use crate::ingest::{Ingest, IngestConfig, WriteReport};
use crate::mqtt::{DeviceLogins, IngestHook, MqttLink, MqttStats};
use crate::stats::{IngestRates, PlatformStats, Rates};
use crate::telemetry::{self, Series, TelemetryQuery};
use crate::webhook::{WebhookConfig, WebhookStats, Webhooks};
use crate::writer::{Writer, WriterConfig, WriterStats};

/// How long a command may wait for its answer when the caller does not say.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

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

/// What the platform is built on, given at start.
pub struct PlatformDeps {
    /// The telemetry store, open.
    pub store: Store,
    /// The registry, open.
    pub registry: Registry,
    /// How devices are reached over MQTT (in one process: the broker).
    pub mqtt: Arc<dyn MqttLink>,
    /// How the platform behaves.
    pub config: PlatformConfig,
}

/// The platform's application core. Cheap to clone.
#[derive(Clone)]
pub struct Platform {
    parts: Arc<Parts>,
}

/// The owners the façade delegates to.
struct Parts {
    store: Store,
    registry: Registry,
    events: EventHub,
    directory: Arc<Directory>,
    ingest: Arc<Ingest>,
    automation: Automation,
    commands: Arc<Commands>,
    alarms: Alarms,
    mqtt: Arc<dyn MqttLink>,
    writer_stats: Arc<WriterStats>,
    webhook_stats: Arc<WebhookStats>,
    rates: Rates,
    started: Instant,
    is_stopping: AtomicBool,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Platform {
    /// Starts the platform over an open store and registry: loads the rules and the open
    /// alarms, starts the writer threads, the rules and actions threads and the command
    /// task (on the current Tokio runtime).
    pub async fn start(deps: PlatformDeps) -> Result<Platform> {
        let PlatformDeps {
            store,
            registry,
            mqtt,
            config,
        } = deps;
        let events = EventHub::default();
        let directory = Arc::new(Directory::new(registry.clone()));
        let rules = RulesChannel::new();
        let writer_stats = Arc::new(WriterStats::default());
        let writer = Writer::start(
            store.clone(),
            config.writer.clone(),
            Arc::new(rules.observer(events.clone())),
            Arc::clone(&writer_stats),
        )
        .map_err(|source| Error::Start {
            what: "writer threads",
            source,
        })?;
        let (commands, command_task) =
            Commands::start(registry.clone(), events.clone(), Arc::clone(&mqtt)).await;
        let ingest = Arc::new(Ingest::new(
            IngestConfig {
                limits: config.limits,
                auto_register_devices: config.auto_register_devices,
            },
            registry.clone(),
            Arc::clone(&directory),
            writer,
            Arc::clone(&commands),
        ));
        let alarms = Alarms::new(registry.clone(), events.clone());
        let webhook_stats = Arc::new(WebhookStats::default());
        let automation = Automation::start(
            rules,
            &registry,
            Arc::clone(&directory),
            Actuators {
                registry: registry.clone(),
                alarms: alarms.clone(),
                webhooks: Webhooks::new(config.webhooks.clone(), Arc::clone(&webhook_stats)),
                link: Arc::clone(&mqtt),
                commands: Arc::clone(&commands),
            },
        )
        .await?;
        tracing::info!("platform started");
        Ok(Platform {
            parts: Arc::new(Parts {
                store,
                registry,
                events,
                directory,
                ingest,
                automation,
                commands,
                alarms,
                mqtt,
                writer_stats,
                webhook_stats,
                rates: Rates::default(),
                started: Instant::now(),
                is_stopping: AtomicBool::new(false),
                tasks: Mutex::new(vec![command_task]),
            }),
        })
    }

    /// What the broker calls into: device logins (secret, topic access, presence) and the
    /// ingest of `devices/{id}/telemetry`, `/attributes` and `/commands/{cmd}/response`.
    pub fn mqtt_hooks(&self) -> Hooks {
        let parts = &self.parts;
        Hooks {
            authenticator: Some(Arc::new(DeviceLogins {
                registry: parts.registry.clone(),
                events: parts.events.clone(),
            })),
            ingest: Some(Arc::new(IngestHook {
                ingest: Arc::clone(&parts.ingest),
            })),
        }
    }

    /// Whether the platform serves (false once [`Platform::begin_shutdown`] was called,
    /// or once MQTT stopped serving).
    pub fn is_ready(&self) -> bool {
        !self.parts.is_stopping.load(Ordering::Relaxed) && self.parts.mqtt.is_accepting()
    }

    /// Marks the platform as stopping (readiness turns false); writes still go on until
    /// [`Platform::shutdown`].
    pub fn begin_shutdown(&self) {
        self.parts.is_stopping.store(true, Ordering::Relaxed);
    }

    /// Writes what is queued, stops the threads and tasks, closes the store, then writes
    /// the devices' last presence and closes the registry. Call it once nothing writes
    /// any more (the listeners have stopped).
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        let parts = &self.parts;
        let ingest = Arc::clone(&parts.ingest);
        let _ = tokio::task::spawn_blocking(move || ingest.stop()).await;
        parts.automation.stop();
        for task in std::mem::take(&mut *parts.tasks.lock()) {
            task.abort();
        }
        let store = parts.store.clone();
        match tokio::task::spawn_blocking(move || store.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(
                error = &error as &dyn std::error::Error,
                "closing the telemetry store failed"
            ),
            Err(error) => tracing::error!(%error, "closing the telemetry store failed"),
        }
        parts.registry.close().await;
    }

    /// The event hub (live stream).
    pub fn events(&self) -> &EventHub {
        &self.parts.events
    }

    /// Counters of every part, for `/metrics`.
    pub fn stats(&self) -> PlatformStats {
        let parts = &self.parts;
        PlatformStats::gather(
            parts.ingest.stats(),
            &parts.writer_stats,
            &parts.webhook_stats,
            parts.store.stats(),
            parts.mqtt.stats(),
            parts.started.elapsed(),
        )
    }

    /// Messages and points accepted per second, over the last ten seconds or so.
    pub fn ingest_rates(&self) -> IngestRates {
        let parts = &self.parts;
        parts
            .rates
            .sample(parts.ingest.stats(), &parts.writer_stats)
    }

    /// MQTT counters of this node.
    pub fn mqtt_stats(&self) -> MqttStats {
        self.parts.mqtt.stats()
    }

    // ---- ingest ----

    /// `POST /api/v1/devices/{id}/telemetry`: the payloads of the MQTT topic, for a
    /// registered device. Resolves once the points are written.
    pub async fn ingest_json(&self, device: &DeviceId, body: &[u8]) -> Result<WriteReport> {
        self.parts.ingest.json(device, body).await
    }

    /// `POST /api/v2/write`: InfluxDB line protocol; all of it or nothing.
    pub async fn ingest_line_protocol(
        &self,
        body: &[u8],
        precision: Precision,
    ) -> Result<WriteReport> {
        self.parts.ingest.line_protocol(body, precision).await
    }

    // ---- telemetry ----

    /// The newest value of every field of a registered device.
    pub async fn latest_telemetry(&self, device: &DeviceId) -> Result<BTreeMap<String, Sample>> {
        self.parts.directory.resolve(device.as_str(), false).await?;
        Ok(telemetry::latest(&self.parts.store, device))
    }

    /// Raw points or windowed aggregates of a registered device's fields.
    pub async fn query_telemetry(
        &self,
        device: &DeviceId,
        query: TelemetryQuery,
    ) -> Result<Vec<Series>> {
        self.parts.directory.resolve(device.as_str(), false).await?;
        telemetry::query(&self.parts.store, device, query).await
    }

    // ---- devices ----

    /// Registers a device; rules match it from its first message.
    pub async fn create_device(&self, new: NewDevice) -> Result<Device> {
        let device = self.parts.registry.create_device(new).await?;
        self.device_changed(&device).await;
        Ok(device)
    }

    /// One device, with its newest ingest error.
    pub async fn device(&self, id: &DeviceId) -> Result<Device> {
        let device = self.parts.registry.device(id).await?;
        Ok(self.with_last_error(device))
    }

    /// A page of devices (a bad filter or cursor is [`Error::InvalidQuery`]).
    pub async fn list_devices(&self, filter: &DeviceFilter) -> Result<Page<Device>> {
        let page = self
            .parts
            .registry
            .list_devices(filter)
            .await
            .map_err(|error| Error::from(error).in_query())?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|device| self.with_last_error(device))
                .collect(),
            next_cursor: page.next_cursor,
        })
    }

    /// Changes a device's name, type or labels; rules match it again.
    pub async fn update_device(&self, id: &DeviceId, patch: DevicePatch) -> Result<Device> {
        let device = self.parts.registry.update_device(id, patch).await?;
        self.device_changed(&device).await;
        Ok(self.with_last_error(device))
    }

    /// Deletes a device and its credentials, forgets it everywhere and disconnects it;
    /// how many connections were closed. (Its stored telemetry stays until retention
    /// removes it.)
    pub async fn delete_device(&self, id: &DeviceId) -> Result<usize> {
        let parts = &self.parts;
        parts.registry.delete_device(id).await?;
        parts.directory.forget(id.as_str());
        parts.ingest.forget(id.as_str());
        parts.commands.forget_device(id);
        parts.automation.device_deleted(id.as_str()).await;
        Ok(parts.mqtt.disconnect(id).await)
    }

    /// Issues new MQTT credentials: the old ones stop working and the device is
    /// disconnected. The secret, shown only here, and how many connections were closed.
    pub async fn issue_credentials(&self, id: &DeviceId) -> Result<(String, usize)> {
        let secret = self.parts.registry.issue_credentials(id).await?;
        let closed = self.parts.mqtt.disconnect(id).await;
        Ok((secret, closed))
    }

    /// Pins the one certificate in `pem` (its subject's common name must be the device
    /// id) to a device: from then on the device logs in with a certificate only with one
    /// of its pinned ones. The device is disconnected, so that no connection made with
    /// another certificate stays. Idempotent: the stored pin, and whether it is new
    /// (`false`: it was pinned already, and nothing changed, the connections included).
    /// [`Error::InvalidCertificate`] for a text that is not one such certificate,
    /// [`Error::NotFound`] for an unknown device.
    pub async fn pin_certificate(
        &self,
        device: &DeviceId,
        pem: &str,
    ) -> Result<(PinnedCertificate, bool)> {
        let new = certificates::read_pin(device, pem)?;
        let (pinned, created) = self.parts.registry.pin_certificate(device, new).await?;
        if created {
            let closed = self.parts.mqtt.disconnect(device).await;
            tracing::debug!(%device, closed, "certificate pinned: device disconnected");
        }
        Ok((pinned, created))
    }

    /// The certificates pinned to a device, oldest first (none: any certificate its CA
    /// issued for it logs it in). [`Error::NotFound`] for an unknown device.
    pub async fn certificates(&self, device: &DeviceId) -> Result<Vec<PinnedCertificate>> {
        Ok(self.parts.registry.certificates(device).await?)
    }

    /// Unpins a certificate and disconnects the device, so that a connection made with
    /// that certificate does not stay. [`Error::NotFound`] when the device is unknown or
    /// the certificate is not pinned to it.
    pub async fn unpin_certificate(
        &self,
        device: &DeviceId,
        fingerprint: &Fingerprint,
    ) -> Result<()> {
        self.parts
            .registry
            .unpin_certificate(device, fingerprint)
            .await?;
        let closed = self.parts.mqtt.disconnect(device).await;
        tracing::debug!(%device, closed, "certificate unpinned: device disconnected");
        Ok(())
    }

    /// Whether `secret` is the device's (HTTP Basic logins of devices).
    pub async fn verify_device_secret(&self, id: &DeviceId, secret: &[u8]) -> Result<bool> {
        Ok(self.parts.registry.verify_device_secret(id, secret).await?)
    }

    /// Devices registered, and how many of them are online.
    pub async fn count_devices(&self) -> Result<(u64, u64)> {
        Ok(self.parts.registry.count_devices().await?)
    }

    async fn device_changed(&self, device: &Device) {
        self.parts.directory.remember(device);
        self.parts
            .automation
            .device_changed(device.id.as_str())
            .await;
    }

    /// The device with the newest of its ingest errors: this node's, when it is newer
    /// than what the registry has (written within a second of the rejection), else the
    /// registry's (after a restart, or from another node).
    fn with_last_error(&self, mut device: Device) -> Device {
        if let Some(recent) = self.parts.ingest.last_error(device.id.as_str()) {
            let stored_at = device.last_ingest_error.as_ref().map(|stored| stored.at);
            if stored_at.is_none_or(|stored_at| stored_at <= recent.at.as_millis()) {
                device.last_ingest_error = Some(IngestErrorRecord {
                    at: recent.at.as_millis(),
                    source: recent.source.as_str().to_owned(),
                    message: recent.message,
                });
            }
        }
        device
    }

    // ---- API tokens ----

    /// The token of a bearer secret, if it is known and not revoked.
    pub async fn authenticate_token(&self, bearer: &str) -> Result<Option<ApiToken>> {
        Ok(self.parts.registry.authenticate_token(bearer).await?)
    }

    /// Creates a token; its secret is returned only here.
    pub async fn create_token(&self, new: NewToken) -> Result<(ApiToken, String)> {
        Ok(self.parts.registry.create_token(new).await?)
    }

    /// Every token (never their secrets).
    pub async fn list_tokens(&self) -> Result<Vec<ApiToken>> {
        Ok(self.parts.registry.list_tokens().await?)
    }

    /// Revokes a token.
    pub async fn revoke_token(&self, id: &TokenId) -> Result<()> {
        Ok(self.parts.registry.revoke_token(id).await?)
    }

    // ---- rules ----

    /// Checks a rule (fields, actions, expressions) without storing it; the error names
    /// the expression and the position. Needs no running platform (the configuration
    /// file's rules are checked before anything starts).
    pub fn validate_rule(id: Option<&RuleId>, spec: &RuleSpec) -> Result<()> {
        spec.check()?;
        let id = match id {
            Some(id) => id.clone(),
            None => RuleId::new("new-rule")?,
        };
        fleetwire_rules::RuleDefinition::new(id, spec)
            .validate()
            .map_err(|error| Error::InvalidExpression {
                position: error.position(),
                detail: error.to_string(),
            })
    }

    /// Creates a rule (checked first); it applies to the next message.
    pub async fn create_rule(&self, id: Option<RuleId>, spec: RuleSpec) -> Result<Rule> {
        Self::validate_rule(id.as_ref(), &spec)?;
        let rule = self.parts.registry.create_rule(id, spec).await?;
        self.parts.automation.apply(&rule).await?;
        Ok(rule)
    }

    /// Replaces a rule. Its alarm states carry over when its expressions stay the same.
    pub async fn replace_rule(&self, id: &RuleId, spec: RuleSpec) -> Result<Rule> {
        Self::validate_rule(Some(id), &spec)?;
        let rule = self.parts.registry.replace_rule(id, spec).await?;
        self.parts.automation.apply(&rule).await?;
        Ok(rule)
    }

    /// Creates a rule, or replaces the stored rule of the same id (the configuration
    /// file's rules, at every start).
    pub async fn put_rule(&self, id: &RuleId, spec: RuleSpec) -> Result<Rule> {
        match self.create_rule(Some(id.clone()), spec.clone()).await {
            // Stored already (an earlier start, or another node sharing the registry).
            Err(Error::Conflict(_)) => self.replace_rule(id, spec).await,
            other => other,
        }
    }

    /// Deletes a rule. Its open alarms stay open, for a person to clear.
    pub async fn delete_rule(&self, id: &RuleId) -> Result<()> {
        self.parts.registry.delete_rule(id).await?;
        self.parts.automation.remove(id).await
    }

    /// One rule.
    pub async fn rule(&self, id: &RuleId) -> Result<Rule> {
        Ok(self.parts.registry.rule(id).await?)
    }

    /// A page of rules.
    pub async fn list_rules(&self, limit: u32, cursor: Option<&str>) -> Result<Page<Rule>> {
        self.parts
            .registry
            .list_rules(limit, cursor)
            .await
            .map_err(|error| Error::from(error).in_query())
    }

    // ---- alarms ----

    /// One alarm.
    pub async fn alarm(&self, id: &AlarmId) -> Result<Alarm> {
        Ok(self.parts.registry.alarm(id).await?)
    }

    /// A page of alarms, newest first.
    pub async fn list_alarms(&self, filter: &AlarmFilter) -> Result<Page<Alarm>> {
        self.parts
            .registry
            .list_alarms(filter)
            .await
            .map_err(|error| Error::from(error).in_query())
    }

    /// Alarms by severity and status.
    pub async fn alarm_counts(&self) -> Result<Vec<(Severity, AlarmStatus, u64)>> {
        Ok(self.parts.registry.alarm_counts().await?)
    }

    /// Acknowledges an alarm on behalf of `by` (a token's name).
    pub async fn acknowledge_alarm(&self, id: &AlarmId, by: &str) -> Result<Alarm> {
        self.parts.alarms.acknowledge(id, by).await
    }

    /// Clears an alarm by hand. If its condition still holds, the rule raises a new one.
    pub async fn clear_alarm(&self, id: &AlarmId, by: &str) -> Result<Alarm> {
        let alarm = self.parts.alarms.clear(id, by, Vec::new()).await?;
        self.parts
            .automation
            .reset(alarm.rule_id.clone(), alarm.device_id.as_str())
            .await;
        Ok((*alarm).clone())
    }

    // ---- commands ----

    /// Sends a command to a registered device ([`Error::NotFound`] otherwise).
    pub async fn send_command(
        &self,
        device: &DeviceId,
        request: CommandRequest,
    ) -> Result<Command> {
        self.parts.directory.resolve(device.as_str(), false).await?;
        self.parts.commands.send(device, request).await
    }

    /// One command of a device.
    pub async fn command(&self, device: &DeviceId, id: &CommandId) -> Result<Command> {
        Ok(self.parts.registry.command(device, id).await?)
    }

    /// A page of a device's commands, newest first.
    pub async fn list_commands(
        &self,
        device: &DeviceId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Command>> {
        self.parts.directory.resolve(device.as_str(), false).await?;
        self.parts
            .registry
            .list_commands(device, limit, cursor)
            .await
            .map_err(|error| Error::from(error).in_query())
    }
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform").finish_non_exhaustive()
    }
}
