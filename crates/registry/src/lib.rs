//! Fleetwire's device registry: devices, their credentials, API tokens and presence,
//! stored in SQLite (the embedded default, under the data dir) or PostgreSQL (for several
//! nodes), through the same code.
//!
//! ```no_run
//! use fleetwire_registry::{DeviceFilter, DeviceId, NewDevice, Registry};
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
//! # Ok(())
//! # }
//! ```
//!
//! Storage goes through sqlx's `Any` driver: one set of queries and migrations, in SQL
//! that SQLite and PostgreSQL both accept. Device secrets are stored as argon2id hashes,
//! API tokens as BLAKE2b hashes; neither is ever stored or logged in clear. Listing uses
//! keyset pagination over indexes, so a page costs the same at the millionth device as at
//! the first.

mod credentials;
mod database;
mod devices;
mod error;
mod presence;
mod random;
mod tokens;
mod types;

pub use error::{Error, Result};

/// Counters of the registry's credential checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryStats {
    /// argon2id verifications run (first logins, wrong secrets, unknown devices).
    pub secret_verifications: u64,
    /// Logins answered by the verified-secret cache.
    pub secret_cache_hits: u64,
}
pub use types::{
    ApiToken, Device, DeviceFilter, DeviceId, DevicePatch, Labels, NewDevice, NewToken, Page, Role,
    TimestampMs, TokenId,
};

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: the writer writes what is queued and stops.
        self.presence.close();
    }
}

/// Now, in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> TimestampMs {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            TimestampMs::try_from(since.as_millis()).unwrap_or(TimestampMs::MAX)
        })
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
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::Internal(
                "opening the registry: expected to run inside a Tokio runtime".to_owned(),
            )
        })?;
        let (pool, backend) = database::connect(url, config.max_connections).await?;
        database::migrate(&pool).await?;
        devices::mark_all_offline(&pool).await?;
        let presence = PresenceQueue::new();
        let writer = runtime
            .spawn(Arc::clone(&presence).run_writer(pool.clone(), config.presence_flush_interval));
        Ok(Registry {
            inner: Arc::new(Inner {
                pool,
                backend,
                secrets: Secrets::new(config.max_concurrent_hashes, config.secret_cache_capacity)?,
                tokens: Tokens::new(config.token_cache_ttl, config.token_cache_capacity),
                presence,
                presence_writer: Mutex::new(Some(writer)),
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

    /// Changes the fields present in `patch`; `Error::NotFound` when unknown.
    pub async fn update_device(&self, id: &DeviceId, patch: DevicePatch) -> Result<Device> {
        devices::update(&self.inner.pool, id, patch).await
    }

    /// Deletes a device with its credentials; `Error::NotFound` when unknown.
    /// (The caller disconnects it from the broker.)
    pub async fn delete_device(&self, id: &DeviceId) -> Result<()> {
        devices::delete(&self.inner.pool, id).await?;
        self.inner.secrets.forget(id);
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

    // ---- presence ----

    /// Records that a device connected (`online = true`) or disconnected at `at`.
    /// Never waits for the database: updates are queued and written in batches.
    pub fn record_presence(&self, id: &DeviceId, online: bool, at: TimestampMs) {
        self.inner.presence.record(id, online, at);
    }

    /// Waits until every presence update recorded so far is written.
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
}

/// `sqlite://` URL of `<data_dir>/registry.db`, creating the directory when missing.
fn sqlite_url_in_dir(data_dir: &Path) -> Result<String> {
    std::fs::create_dir_all(data_dir).map_err(|error| {
        Error::Database(format!("creating data dir {}: {error}", data_dir.display()))
    })?;
    let path = std::path::absolute(data_dir.join("registry.db")).map_err(|error| {
        Error::Database(format!(
            "resolving data dir {}: {error}",
            data_dir.display()
        ))
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
