//! Fleetwire's registry, the platform's database: devices, their credentials and pinned
//! client certificates, API tokens and presence; rules, the alarms they raise and the commands sent to devices. Stored in
//! SQLite (the embedded default, under the data dir) or PostgreSQL (for several nodes),
//! through the same code.
//!
//! ```no_run
//! use fleetwire_model::{
//!     AlarmFilter, DeviceFilter, DeviceId, NewAlarm, NewCommand, NewDevice, RuleAction,
//!     RuleMatch, RuleSpec, Severity,
//! };
//! use fleetwire_registry::Registry;
//!
//! # async fn example() -> fleetwire_registry::Result<()> {
//! let registry = Registry::open_in_dir(std::path::Path::new("./fleetwire-data")).await?;
//! let device = registry
//!     .create_device(NewDevice {
//!         id: Some(DeviceId::new("boiler-7")?),
//!         device_type: Some("sensor".to_owned()),
//!         ..NewDevice::default()
//!     })
//!     .await?;
//! let secret = registry.issue_credentials(&device.id).await?;
//! assert!(registry.verify_device_secret(&device.id, secret.as_bytes()).await?);
//!
//! let page = registry
//!     .list_devices(&DeviceFilter {
//!         device_type: Some("sensor".to_owned()),
//!         ..DeviceFilter::default()
//!     })
//!     .await?;
//! assert_eq!(page.items[0].id, device.id);
//!
//! // A rule (its expressions are compiled by the rules crate, not here)...
//! let rule = registry
//!     .create_rule(None, RuleSpec {
//!         name: "overheat".to_owned(),
//!         matcher: RuleMatch::default(),
//!         condition: "temperature > 30".to_owned(),
//!         for_ms: Some(10_000),
//!         clear: Some("temperature < 28".to_owned()),
//!         severity: Severity::High,
//!         actions: vec![RuleAction::Alarm],
//!         enabled: true,
//!     })
//!     .await?;
//! // ...raises at most one open alarm per device...
//! let now = 1_700_000_000_000;
//! let (alarm, is_new) = registry
//!     .raise_alarm(NewAlarm {
//!         rule_id: rule.id.clone(),
//!         rule_name: rule.spec.name.clone(),
//!         device_id: device.id.clone(),
//!         severity: rule.spec.severity,
//!         values: vec![("temperature".to_owned(), 31.5)],
//!     }, now)
//!     .await?;
//! assert!(is_new);
//! registry.acknowledge_alarm(&alarm.id, "night-shift", now + 1_000).await?;
//! let open = registry
//!     .list_alarms(&AlarmFilter { open_only: true, ..AlarmFilter::default() })
//!     .await?;
//! assert_eq!(open.items.len(), 1);
//!
//! // ...and commands wait for the device's answer until their deadline.
//! let command = registry
//!     .create_command(NewCommand {
//!         device_id: device.id.clone(),
//!         name: "reboot".to_owned(),
//!         params: serde_json::Value::Null,
//!         timeout_ms: 30_000,
//!     }, now)
//!     .await?;
//! registry.mark_command_delivered(&command.id, now + 5).await?;
//! registry.complete_command(&command.id, true, None, now + 800).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Storage goes through sqlx's `Any` driver: one set of queries and migrations, in SQL
//! that SQLite and PostgreSQL both accept. Device secrets are stored as argon2id hashes,
//! API tokens as BLAKE2b hashes; neither is ever stored or logged in clear. Listing uses
//! keyset pagination over indexes, so a page costs the same at the millionth device (or
//! alarm) as at the first.
//!
//! Lifecycles are guarded by the database, not by callers taking turns: at most one open
//! alarm per rule and device is a unique index, and every alarm or command transition is
//! a conditional `UPDATE`, so several API requests, the rule engine and several nodes can
//! act on the same alarm or command at once without walking it backwards.

mod alarms;
mod certificates;
mod commands;
mod credentials;
mod database;
mod devices;
mod error;
mod pagination;
mod presence;
mod random;
mod rules;
mod tokens;

pub use error::{Error, Result};

/// Counters of the registry's credential checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// argon2id verifications run (first logins, wrong secrets, unknown devices).
    pub secret_verifications: u64,
    /// Logins answered by the verified-secret cache.
    pub secret_cache_hits: u64,
}

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fleetwire_model::{
    Alarm, AlarmFilter, AlarmId, AlarmStatus, ApiToken, Command, CommandId, Device, DeviceFilter,
    DeviceId, DevicePatch, Fingerprint, IngestErrorRecord, NewAlarm, NewCommand, NewDevice,
    NewPinnedCertificate, NewToken, Page, PinnedCertificate, Rule, RuleId, RuleSpec, Severity,
    TokenId,
};
use fleetwire_time::TimestampMs;
use parking_lot::Mutex;
use sqlx::AnyPool;
use tokio::task::JoinHandle;

use crate::credentials::Secrets;
use crate::database::Backend;
use crate::presence::PresenceQueue;
use crate::tokens::Tokens;

/// Tunables of a registry; `RegistryConfig::default()` suits a single node.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Largest number of database connections in the pool.
    pub max_connections: u32,
    /// How long presence updates gather before they are written in one transaction.
    pub presence_flush_interval: Duration,
    /// How long an authenticated API token is remembered without asking the database
    /// (and so how long a token revoked on another node stays usable here).
    pub token_cache_ttl: Duration,
    /// Most API tokens remembered at once.
    pub token_cache_capacity: usize,
    /// Most devices whose verified secret is remembered (see `verify_device_secret`).
    pub secret_cache_capacity: usize,
    /// Most argon2id hash computations running at once; each takes 19 MiB and a core.
    pub max_concurrent_hashes: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            max_connections: 8,
            presence_flush_interval: Duration::from_millis(50),
            token_cache_ttl: Duration::from_secs(2),
            token_cache_capacity: 10_000,
            secret_cache_capacity: 1_000_000,
            max_concurrent_hashes: std::thread::available_parallelism()
                .map_or(2, |cores| cores.get()),
        }
    }
}

/// Handle on the registry; cheap to clone (an `Arc` inside), shared by the API, the broker's
/// authentication hook and the presence tracker.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    pool: AnyPool,
    backend: Backend,
    secrets: Secrets,
    tokens: Tokens,
    presence: Arc<PresenceQueue>,
    presence_writer: Mutex<Option<JoinHandle<()>>>,
    /// SQLite only: checkpoints the database's log (see `database::checkpoint_periodically`).
    checkpointer: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: the writer writes what is queued and stops.
        self.presence.close();
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.abort();
        }
    }
}

/// Now, in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> TimestampMs {
    fleetwire_time::Timestamp::now().as_millis()
}

impl Registry {
    /// Opens (creating when missing) the registry at a database URL, and runs pending
    /// migrations: `sqlite://PATH` or `postgres://USER@HOST:PORT/DB`.
    ///
    /// Every device is marked offline: this node has just started and nobody is connected
    /// to it. (That is right for one node. Several nodes sharing PostgreSQL would need each
    /// device's presence owned by the node it is connected to, so that one node restarting
    /// does not mark the others' devices offline; not done yet.)
    pub async fn open(url: &str) -> Result<Registry> {
        Registry::open_with(url, RegistryConfig::default()).await
    }

    /// Opens the embedded default: `<data_dir>/registry.db` (SQLite, WAL mode).
    pub async fn open_in_dir(data_dir: &Path) -> Result<Registry> {
        Registry::open_in_dir_with(data_dir, RegistryConfig::default()).await
    }

    /// `open_in_dir` with chosen tunables.
    pub async fn open_in_dir_with(data_dir: &Path, config: RegistryConfig) -> Result<Registry> {
        Registry::open_with(&sqlite_url_in_dir(data_dir)?, config).await
    }

    /// `open` with chosen tunables.
    pub async fn open_with(url: &str, config: RegistryConfig) -> Result<Registry> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|error| {
            Error::internal("opening the registry: expected to run inside a Tokio runtime")(
                error.into(),
            )
        })?;
        let (pool, backend) = database::connect(url, config.max_connections).await?;
        database::migrate(&pool).await?;
        devices::mark_all_offline(&pool).await?;
        let presence = PresenceQueue::new();
        let writer = runtime
            .spawn(Arc::clone(&presence).run_writer(pool.clone(), config.presence_flush_interval));
        let checkpointer = (backend == Backend::Sqlite)
            .then(|| runtime.spawn(database::checkpoint_periodically(pool.clone())));
        Ok(Registry {
            inner: Arc::new(Inner {
                pool,
                backend,
                secrets: Secrets::new(config.max_concurrent_hashes, config.secret_cache_capacity)?,
                tokens: Tokens::new(config.token_cache_ttl, config.token_cache_capacity),
                presence,
                presence_writer: Mutex::new(Some(writer)),
                checkpointer,
            }),
        })
    }

    /// Counters of the credential checks since the registry was opened.
    pub fn stats(&self) -> RegistryStats {
        let (secret_verifications, secret_cache_hits) = self.inner.secrets.counts();
        RegistryStats {
            secret_verifications,
            secret_cache_hits,
        }
    }

    /// Whether the registry is stored in PostgreSQL (rather than SQLite).
    pub fn is_postgres(&self) -> bool {
        self.inner.backend == Backend::Postgres
    }

    /// Writes queued presence updates and closes the database connections. Other handles
    /// fail with `Error::Database` afterwards; call it once, when shutting down.
    pub async fn close(&self) {
        self.inner.presence.close();
        let writer = self.inner.presence_writer.lock().take();
        if let Some(writer) = writer {
            if let Err(error) = writer.await {
                tracing::warn!(%error, "presence writer ended abnormally");
            }
        }
        if let Some(checkpointer) = &self.inner.checkpointer {
            checkpointer.abort();
        }
        // (Closing the last SQLite connection checkpoints what is left.)
        self.inner.pool.close().await;
    }

    // ---- devices ----

    /// Registers a device; an id is generated when `new.id` is `None` (`dev-` and 16 hex
    /// digits). `Error::AlreadyExists` when the id is taken, `Error::Invalid` when a field
    /// is too long (see `NewDevice`).
    pub async fn create_device(&self, new: NewDevice) -> Result<Device> {
        devices::create(&self.inner.pool, new, now_ms()).await
    }

    /// One device; `Error::NotFound` when unknown.
    pub async fn device(&self, id: &DeviceId) -> Result<Device> {
        devices::get(&self.inner.pool, id).await
    }

    /// Devices ordered by id, filtered, one page at a time (cursor pagination: the cursor
    /// is opaque to callers; `Error::InvalidCursor` for a cursor we did not issue).
    /// `Error::Invalid` when the limit is outside 1-1000.
    pub async fn list_devices(&self, filter: &DeviceFilter) -> Result<Page<Device>> {
        devices::list(&self.inner.pool, filter).await
    }

    /// How many devices are registered, and how many of them are online: `(total,
    /// online)`. Presence is written in batches, so a connection shows here within the
    /// presence flush interval. Counts the whole table each time (for an overview page,
    /// not for every request).
    pub async fn count_devices(&self) -> Result<(u64, u64)> {
        devices::count(&self.inner.pool).await
    }

    /// Changes the fields present in `patch`; `Error::NotFound` when unknown.
    pub async fn update_device(&self, id: &DeviceId, patch: DevicePatch) -> Result<Device> {
        devices::update(&self.inner.pool, id, patch).await
    }

    /// Deletes a device with its credentials, pinned certificates, alarms and commands;
    /// `Error::NotFound` when unknown.
    /// (The caller disconnects it from the broker.)
    pub async fn delete_device(&self, id: &DeviceId) -> Result<()> {
        devices::delete(&self.inner.pool, id).await?;
        self.inner.secrets.forget(id);
        self.inner.presence.forget(id);
        Ok(())
    }

    /// Merges a JSON object into the device's reported attributes (keys in `attributes`
    /// replace existing ones). `Error::Invalid` when the merged document would exceed
    /// 64 KiB of JSON.
    pub async fn merge_attributes(
        &self,
        id: &DeviceId,
        attributes: serde_json::Map<String, serde_json::Value>,
    ) -> Result<()> {
        devices::merge_attributes(&self.inner.pool, id, attributes).await
    }

    // ---- device credentials ----

    /// Issues a new secret for the device (returned once, stored as an argon2id hash),
    /// revoking any previous one. (The caller disconnects the device from the broker.)
    pub async fn issue_credentials(&self, id: &DeviceId) -> Result<String> {
        self.inner.secrets.issue(&self.inner.pool, id).await
    }

    /// Whether `secret` is the device's current secret. Unknown devices and devices
    /// without credentials are `false`. Fast after the first success thanks to a
    /// verified-secret cache (keyed hash, invalidated on rotation and deletion); a
    /// mismatch always pays the full argon2id verification.
    pub async fn verify_device_secret(&self, id: &DeviceId, secret: &[u8]) -> Result<bool> {
        self.inner
            .secrets
            .verify(&self.inner.pool, id, secret)
            .await
    }

    // ---- pinned client certificates ----

    /// Pins a client certificate to a device: from then on the device logs in with a
    /// certificate only if it is one of its pinned ones. Idempotent: pinning the same
    /// fingerprint again returns the stored pin unchanged with `false` (`true` when it is
    /// new). `Error::NotFound` when the device is unknown. (The caller disconnects the
    /// device, so that connections made with other certificates do not stay.)
    pub async fn pin_certificate(
        &self,
        device: &DeviceId,
        new: NewPinnedCertificate,
    ) -> Result<(PinnedCertificate, bool)> {
        certificates::pin(&self.inner.pool, device, new, now_ms()).await
    }

    /// The certificates pinned to a device, oldest first (empty: any certificate its CA
    /// issued for it logs in). `Error::NotFound` when the device is unknown.
    pub async fn certificates(&self, device: &DeviceId) -> Result<Vec<PinnedCertificate>> {
        certificates::list(&self.inner.pool, device).await
    }

    /// Unpins a certificate. `Error::NotFound` when the device is unknown or the
    /// certificate is not pinned to it. (The caller disconnects the device.)
    pub async fn unpin_certificate(
        &self,
        device: &DeviceId,
        fingerprint: &Fingerprint,
    ) -> Result<()> {
        certificates::unpin(&self.inner.pool, device, fingerprint).await
    }

    /// The registry's part of a certificate login: `None` when the device is unknown,
    /// `Some(true)` when the certificate may log it in (the device has no pinned
    /// certificates, or this is one of them), `Some(false)` otherwise. One query on the
    /// primary keys, no cache, so a pin or unpin on another node counts at once.
    pub async fn certificate_admits(
        &self,
        device: &DeviceId,
        fingerprint: &Fingerprint,
    ) -> Result<Option<bool>> {
        certificates::admits(&self.inner.pool, device, fingerprint).await
    }

    // ---- presence ----

    /// Records that a device connected (`online = true`) or disconnected at `at`.
    /// Never waits for the database: updates are queued and written in batches.
    pub fn record_presence(&self, id: &DeviceId, online: bool, at: TimestampMs) {
        self.inner.presence.record(id, online, at);
    }

    /// Records the last rejected payload of a device. Never waits for the database: like
    /// presence, errors are queued (only the newest per device) and written in batches,
    /// so a flood of bad messages costs one row update per device and batch.
    pub fn record_ingest_error(&self, id: &DeviceId, error: IngestErrorRecord) {
        self.inner.presence.record_ingest_error(id, error);
    }

    /// Waits until every presence update and ingest error recorded so far is written.
    pub async fn flush_presence(&self) -> Result<()> {
        self.inner.presence.flush().await
    }

    // ---- API tokens ----

    /// Makes `token` the bootstrap admin token (replacing a previous bootstrap token).
    /// Setting the same token again keeps it as it is. `Error::Invalid` when it is empty,
    /// longer than 1024 characters or holds control characters.
    pub async fn set_bootstrap_token(&self, token: &str) -> Result<()> {
        self.inner
            .tokens
            .set_bootstrap(&self.inner.pool, token, now_ms())
            .await
    }

    /// Creates an API token; the secret token string is returned once (`fwt_` and 43
    /// base64url characters). The name `bootstrap` is reserved.
    pub async fn create_token(&self, new: NewToken) -> Result<(ApiToken, String)> {
        self.inner
            .tokens
            .create(&self.inner.pool, new, now_ms())
            .await
    }

    /// All tokens that are not revoked, bootstrap token included.
    pub async fn list_tokens(&self) -> Result<Vec<ApiToken>> {
        self.inner.tokens.list(&self.inner.pool).await
    }

    /// Revokes a token; `Error::NotFound` when unknown.
    pub async fn revoke_token(&self, id: &TokenId) -> Result<()> {
        self.inner
            .tokens
            .revoke(&self.inner.pool, id, now_ms())
            .await
    }

    /// The token a bearer string stands for, `None` when unknown or revoked.
    pub async fn authenticate_token(&self, bearer: &str) -> Result<Option<ApiToken>> {
        self.inner
            .tokens
            .authenticate(&self.inner.pool, bearer)
            .await
    }

    // ---- rules ----

    /// Stores a rule; an id is generated when `id` is `None` (`rule-` and 16 hex digits).
    /// `Error::IdTaken` when the id is taken, `Error::Invalid` when a field breaks the
    /// limits documented on `RuleSpec`. The expressions are stored as they are: check them
    /// with the rules crate first.
    pub async fn create_rule(&self, id: Option<RuleId>, spec: RuleSpec) -> Result<Rule> {
        rules::create(&self.inner.pool, id, spec, now_ms()).await
    }

    /// One rule; `Error::NotFound` when unknown.
    pub async fn rule(&self, id: &RuleId) -> Result<Rule> {
        rules::get(&self.inner.pool, id).await
    }

    /// Rules ordered by id, one page at a time (`limit` 1-1000, `cursor` from the previous
    /// page; `Error::InvalidCursor` for a cursor we did not issue).
    pub async fn list_rules(&self, limit: u32, cursor: Option<&str>) -> Result<Page<Rule>> {
        rules::list(&self.inner.pool, limit, cursor).await
    }

    /// Every rule, ordered by id: what the rule engine loads at start.
    pub async fn all_rules(&self) -> Result<Vec<Rule>> {
        rules::all(&self.inner.pool).await
    }

    /// Replaces a rule's spec; `created_at` stays, `updated_at` grows. `Error::NotFound`
    /// when unknown.
    pub async fn replace_rule(&self, id: &RuleId, spec: RuleSpec) -> Result<Rule> {
        rules::replace(&self.inner.pool, id, spec, now_ms()).await
    }

    /// Deletes a rule; its alarms stay, as history (open ones stay open until someone
    /// clears them). `Error::NotFound` when unknown.
    pub async fn delete_rule(&self, id: &RuleId) -> Result<()> {
        rules::delete(&self.inner.pool, id).await
    }

    // ---- alarms ----

    /// Opens an alarm (`alm-` and 16 hex digits) at `at`, and returns it with `true`. If
    /// the rule already has an open alarm for the device, that one is returned unchanged
    /// with `false`: concurrent raises, on this node or others, yield one alarm.
    /// `Error::NotFound` when the device does not exist, `Error::Invalid` when a field
    /// breaks the limits documented on `NewAlarm`.
    pub async fn raise_alarm(&self, new: NewAlarm, at: TimestampMs) -> Result<(Alarm, bool)> {
        alarms::raise(&self.inner.pool, new, at).await
    }

    /// One alarm; `Error::NotFound` when unknown.
    pub async fn alarm(&self, id: &AlarmId) -> Result<Alarm> {
        alarms::get(&self.inner.pool, id).await
    }

    /// The open (active or acknowledged) alarm of a rule for a device, if any.
    pub async fn open_alarm(&self, rule: &RuleId, device: &DeviceId) -> Result<Option<Alarm>> {
        alarms::open(&self.inner.pool, rule, device).await
    }

    /// Every open alarm, oldest first: what the rule engine is seeded with at start.
    pub async fn open_alarms(&self) -> Result<Vec<Alarm>> {
        alarms::all_open(&self.inner.pool).await
    }

    /// Acknowledges an active alarm (`by`: who, 1-128 characters). An acknowledged one is
    /// returned unchanged; a cleared one is `Error::Conflict`, an unknown one
    /// `Error::NotFound`.
    pub async fn acknowledge_alarm(
        &self,
        id: &AlarmId,
        by: &str,
        at: TimestampMs,
    ) -> Result<Alarm> {
        alarms::acknowledge(&self.inner.pool, id, by, at).await
    }

    /// Clears an open alarm: `by` is who (a token name, or `CLEARED_BY_RULE`), `values` the
    /// values that cleared it when the rule did (empty otherwise). A cleared one is
    /// `Error::Conflict`, an unknown one `Error::NotFound`.
    pub async fn clear_alarm(
        &self,
        id: &AlarmId,
        by: &str,
        values: Vec<(String, f64)>,
        at: TimestampMs,
    ) -> Result<Alarm> {
        alarms::clear(&self.inner.pool, id, by, values, at).await
    }

    /// Alarms newest first (by creation, then id), filtered, one page at a time.
    /// `Error::Invalid` when the limit is outside 1-1000, `Error::InvalidCursor` for a
    /// cursor we did not issue.
    pub async fn list_alarms(&self, filter: &AlarmFilter) -> Result<Page<Alarm>> {
        alarms::list(&self.inner.pool, filter).await
    }

    /// How many open alarms there are of each severity and status (combinations without
    /// any are left out), gravest first, active before acknowledged.
    pub async fn alarm_counts(&self) -> Result<Vec<(Severity, AlarmStatus, u64)>> {
        alarms::counts(&self.inner.pool).await
    }

    // ---- commands ----

    /// Creates a pending command (`cmd-` and 16 hex digits) at `at`, expiring at
    /// `at + timeout_ms`. `Error::NotFound` when the device does not exist,
    /// `Error::Invalid` when a field breaks the limits documented on `NewCommand`.
    pub async fn create_command(&self, new: NewCommand, at: TimestampMs) -> Result<Command> {
        commands::create(&self.inner.pool, new, at).await
    }

    /// One command of a device; `Error::NotFound` when unknown or another device's.
    pub async fn command(&self, device: &DeviceId, id: &CommandId) -> Result<Command> {
        commands::get(&self.inner.pool, device, id).await
    }

    /// Marks a pending command delivered; the updated command when it changed, `None` when
    /// it was not pending, had passed its deadline, or is unknown.
    pub async fn mark_command_delivered(
        &self,
        id: &CommandId,
        at: TimestampMs,
    ) -> Result<Option<Command>> {
        commands::mark_delivered(&self.inner.pool, id, at).await
    }

    /// Records the device's answer: a pending or delivered command becomes succeeded or
    /// failed, with `result` (any JSON, at most 64 KiB). `None` when it is final already
    /// (expired commands stay expired), had passed its deadline, or is unknown.
    pub async fn complete_command(
        &self,
        id: &CommandId,
        succeeded: bool,
        result: Option<serde_json::Value>,
        at: TimestampMs,
    ) -> Result<Option<Command>> {
        commands::complete(&self.inner.pool, id, succeeded, result, at).await
    }

    /// Expires every pending or delivered command whose deadline is `now` or earlier, and
    /// returns them in deadline order.
    pub async fn expire_commands(&self, now: TimestampMs) -> Result<Vec<Command>> {
        commands::expire(&self.inner.pool, now).await
    }

    /// Commands not yet delivered whose deadline is after `now`, earliest deadline first:
    /// what must be published again after a restart (undelivered messages do not survive
    /// one).
    pub async fn pending_commands(&self, now: TimestampMs) -> Result<Vec<Command>> {
        commands::pending(&self.inner.pool, now).await
    }

    /// The earliest deadline of a pending or delivered command: when `expire_commands`
    /// next has work. `None` when no command is waiting.
    pub async fn next_command_expiry(&self) -> Result<Option<TimestampMs>> {
        commands::next_expiry(&self.inner.pool).await
    }

    /// A device's commands, newest first, one page at a time (`limit` 1-1000).
    /// `Error::NotFound` when the device does not exist.
    pub async fn list_commands(
        &self,
        device: &DeviceId,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Command>> {
        commands::list(&self.inner.pool, device, limit, cursor).await
    }
}

/// `sqlite://` URL of `<data_dir>/registry.db`, creating the directory when missing.
fn sqlite_url_in_dir(data_dir: &Path) -> Result<String> {
    std::fs::create_dir_all(data_dir).map_err(|source| Error::DataDir {
        context: format!("creating {}", data_dir.display()),
        source,
    })?;
    let path =
        std::path::absolute(data_dir.join("registry.db")).map_err(|source| Error::DataDir {
            context: format!("resolving {}", data_dir.display()),
            source,
        })?;
    let Some(path) = path.to_str() else {
        return Err(Error::Invalid(format!(
            "data dir {}: expected a UTF-8 path",
            data_dir.display()
        )));
    };
    // Percent-encode all but the plainest characters: `?`, `#` or `%` in a path would
    // otherwise be read as URL syntax.
    let mut url = String::from("sqlite://");
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'/' | b'-' | b'_' | b'.' | b'~') {
            url.push(char::from(byte));
        } else {
            url.push_str(&format!("%{byte:02X}"));
        }
    }
    url.push_str("?mode=rwc");
    Ok(url)
}
