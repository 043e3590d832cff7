//! Configuration: defaults < TOML file < `FLEETWIRE_*` environment < flags.
//!
//! The raw layer ([`RawConfig`]) mirrors the file format and rejects unknown keys; it is
//! then checked into [`Settings`], the validated form the rest of the binary uses. Every
//! error names the key it is about.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use fleetwire_broker::BrokerConfig;
use fleetwire_model::{RuleId, RuleSpec};
use fleetwire_mqtt_codec::TopicFilter;
use serde::{Deserialize, Serialize};

use crate::cli::{LogFormat, ServeArgs};

/// Where persistent state goes unless `data_dir` (or `--data-dir`) says otherwise.
pub(crate) const DEFAULT_DATA_DIR: &str = "./fleetwire-data";

/// The configuration file's shape, with defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConfig {
    data_dir: PathBuf,
    allow_anonymous: bool,
    /// The admin API token; `FLEETWIRE_ADMIN_TOKEN` sets it.
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_token: Option<String>,
    /// Threads of the async runtime (connections, HTTP); 0: twice the cores, at least 4.
    worker_threads: u64,
    log: RawLog,
    mqtt: RawMqtt,
    http: RawHttp,
    tls: RawTls,
    registry: RawRegistry,
    storage: RawStorage,
    ingest: RawIngest,
    webhooks: RawWebhooks,
    cluster: RawCluster,
    /// Rules created (or replaced, by id) at every start: the documents
    /// `POST /api/v1/rules` takes, each with an `id`. Deleting one from the file does not
    /// delete the stored rule.
    rules: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStorage {
    /// `sync` (acknowledge after fsync) or `batch` (fsync every `batch_flush_ms`).
    durability: String,
    /// In `batch` durability: the longest time between a write and its fsync.
    batch_flush_ms: u64,
    /// Under steady load, the least time between two store writes, in microseconds (a
    /// write finding the writer idle goes at once); 0 writes as often as it can.
    write_linger_us: u64,
    /// Telemetry older than this is deleted, by whole days: `30d`, `12w`; empty keeps
    /// everything.
    retention: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawIngest {
    /// Whether data for an unknown device registers it (anonymous MQTT, line protocol).
    auto_register_devices: bool,
    /// Most fields in one row of telemetry.
    max_fields_per_row: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawWebhooks {
    timeout_ms: u64,
    attempts: u64,
    first_backoff_ms: u64,
    circuit_failures: u64,
    circuit_open_secs: u64,
    /// PEM bundle of the root certificates `https://` webhooks trust instead of the
    /// built-in Mozilla roots; empty: the built-in roots.
    ca_file: String,
}

impl Default for RawStorage {
    fn default() -> RawStorage {
        RawStorage {
            durability: "sync".to_owned(),
            batch_flush_ms: 100,
            write_linger_us: 1_000,
            retention: String::new(),
        }
    }
}

impl Default for RawIngest {
    fn default() -> RawIngest {
        RawIngest {
            auto_register_devices: true,
            max_fields_per_row: fleetwire_formats::Limits::default().max_fields_per_row as u64,
        }
    }
}

impl Default for RawWebhooks {
    fn default() -> RawWebhooks {
        let defaults = fleetwire_platform::WebhookConfig::default();
        RawWebhooks {
            timeout_ms: defaults.timeout.as_millis() as u64,
            attempts: u64::from(defaults.attempts),
            first_backoff_ms: defaults.first_backoff.as_millis() as u64,
            circuit_failures: u64::from(defaults.failures_to_open),
            circuit_open_secs: defaults.open_for.as_secs(),
            ca_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: LogFormat,
    /// A `tracing` filter such as `info` or `fleetwire_broker=debug`; `RUST_LOG` wins.
    level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMqtt {
    addr: SocketAddr,
    /// MQTT over TLS, when `tls.cert_file` is set.
    tls_addr: SocketAddr,
    max_packet_size: u64,
    max_queued_messages: u64,
    max_inflight: u64,
    slow_consumer_grace_ms: u64,
    connect_timeout_secs: u64,
    sys_interval_secs: u64,
    auth_failure_burst: u64,
    auth_failures_per_minute: u64,
    /// 5.0 topic aliases per connection and direction; 0 turns them off.
    topic_alias_maximum: u64,
    /// 5.0 Receive Maximum: unacknowledged QoS 1/2 messages a client may send.
    receive_maximum: u64,
    /// The longest keep-alive a 5.0 client may use, in seconds; 0: any.
    max_keep_alive: u64,
    // Limits (0 turns one off); see `fleetwire_broker::Limits`.
    /// Most open MQTT connections, all listeners together.
    max_connections: u64,
    /// Most open MQTT connections from one source address.
    max_connections_per_address: u64,
    /// New MQTT connections per second from one source address.
    connection_rate_per_address: u64,
    /// `PUBLISH` packets per second one client may send.
    publish_rate: u64,
    /// `PUBLISH` bytes per second one client may send.
    publish_bytes_rate: u64,
    /// Most subscriptions one session may hold.
    max_subscriptions: u64,
    /// Most bytes of messages queued for one session.
    max_queued_bytes: u64,
    /// Persistent sessions and retained messages survive restarts and crashes (in
    /// `{data_dir}/broker`); false keeps them in memory only.
    persistence: bool,
    /// Topic filters no client may subscribe to (see `BrokerConfig::deny_subscribe`).
    deny_subscribe: Vec<String>,
}

/// Cluster mode (issue 20, in progress): nodes sharing a NATS. Empty `nats_url`: a
/// single node, nothing extra runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCluster {
    /// NATS server URLs, comma-separated (`nats://host:4222,...`).
    nats_url: String,
    /// This node's name; empty: the host name.
    node_id: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRegistry {
    /// `sqlite://PATH` or `postgres://...`; empty: SQLite in the data dir.
    url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawHttp {
    addr: SocketAddr,
    /// HTTPS (API, dashboard, stream, MQTT over WebSocket), when `tls.cert_file` is set.
    tls_addr: SocketAddr,
}

/// The server's certificate and key, and the CA of client certificates: PEM files,
/// reloaded on `SIGHUP` and when they change. Empty: no TLS listeners.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTls {
    cert_file: String,
    key_file: String,
    client_ca_file: String,
}

impl Default for RawConfig {
    fn default() -> RawConfig {
        let broker = BrokerConfig::default();
        RawConfig {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            allow_anonymous: false,
            admin_token: None,
            worker_threads: 0,
            log: RawLog {
                format: LogFormat::Human,
                level: "info".to_owned(),
            },
            mqtt: RawMqtt {
                addr: SocketAddr::from(([0, 0, 0, 0], 1883)),
                tls_addr: SocketAddr::from(([0, 0, 0, 0], 8883)),
                max_packet_size: broker.max_packet_size as u64,
                max_queued_messages: broker.max_queued_messages as u64,
                max_inflight: broker.max_inflight as u64,
                slow_consumer_grace_ms: broker.slow_consumer_grace.as_millis() as u64,
                connect_timeout_secs: broker.connect_timeout.as_secs(),
                sys_interval_secs: broker.sys_interval.as_secs(),
                auth_failure_burst: u64::from(broker.auth_failure_burst),
                auth_failures_per_minute: u64::from(broker.auth_failures_per_minute),
                topic_alias_maximum: u64::from(broker.topic_alias_maximum),
                receive_maximum: u64::from(broker.receive_maximum),
                max_keep_alive: u64::from(broker.max_keep_alive),
                max_connections: broker.limits.max_connections as u64,
                max_connections_per_address: u64::from(broker.limits.max_connections_per_address),
                connection_rate_per_address: u64::from(broker.limits.connection_rate_per_address),
                publish_rate: u64::from(broker.limits.publish_rate),
                publish_bytes_rate: broker.limits.publish_bytes_rate,
                max_subscriptions: broker.limits.max_subscriptions as u64,
                max_queued_bytes: broker.limits.max_queued_bytes as u64,
                persistence: true,
                deny_subscribe: Vec::new(),
            },
            http: RawHttp {
                addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
                tls_addr: SocketAddr::from(([0, 0, 0, 0], 8443)),
            },
            tls: RawTls::default(),
            registry: RawRegistry::default(),
            storage: RawStorage::default(),
            ingest: RawIngest::default(),
            webhooks: RawWebhooks::default(),
            cluster: RawCluster::default(),
            rules: Vec::new(),
        }
    }
}

impl Default for RawLog {
    fn default() -> RawLog {
        RawConfig::default().log
    }
}

impl Default for RawMqtt {
    fn default() -> RawMqtt {
        RawConfig::default().mqtt
    }
}

impl Default for RawHttp {
    fn default() -> RawHttp {
        RawConfig::default().http
    }
}

/// Logging settings.
#[derive(Debug, Clone)]
pub(crate) struct LogSettings {
    pub(crate) format: LogFormat,
    pub(crate) level: String,
}

/// Cluster mode: where the NATS servers are, and this node's name.
#[derive(Debug, Clone)]
pub(crate) struct ClusterSettings {
    pub(crate) nats_url: String,
    pub(crate) node_id: String,
}

/// Where the TLS listeners listen, and the files they serve.
#[derive(Debug, Clone)]
pub(crate) struct TlsSettings {
    pub(crate) files: fleetwire_tls::TlsFiles,
    pub(crate) mqtt_addr: SocketAddr,
    pub(crate) http_addr: SocketAddr,
}

/// Validated settings of a node (`serve`, `demo`, and nodes the tests start): every
/// layer read (defaults < TOML file < environment < flags) and checked.
#[derive(Debug, Clone)]
pub struct Settings {
    pub(crate) data_dir: PathBuf,
    pub(crate) admin_token: Option<String>,
    /// Threads of the async runtime.
    pub(crate) worker_threads: usize,
    pub(crate) mqtt_addr: SocketAddr,
    pub(crate) http_addr: SocketAddr,
    /// The TLS listeners and their files; `None` without `tls.cert_file`.
    pub(crate) tls: Option<TlsSettings>,
    /// Where the TLS listeners listen once TLS is on (`mqtt.tls_addr`, `http.tls_addr`).
    tls_addrs: (SocketAddr, SocketAddr),
    pub(crate) broker: BrokerConfig,
    /// Whether the broker's sessions and retained messages are kept in
    /// `{data_dir}/broker` (`mqtt.persistence`).
    pub(crate) broker_persistence: bool,
    /// Registry database URL; `None`: SQLite in the data dir.
    pub(crate) registry_url: Option<String>,
    /// Cluster mode; `None`: a single node.
    pub(crate) cluster: Option<ClusterSettings>,
    pub(crate) log: LogSettings,
    /// The telemetry store.
    pub(crate) store: fleetwire_store::StoreConfig,
    /// Ingest, rules, webhooks.
    pub(crate) platform: fleetwire_platform::PlatformConfig,
    /// Rules of the configuration file, applied at start.
    pub(crate) rules: Vec<(RuleId, RuleSpec)>,
}

impl Settings {
    /// Settings of a node on loopback with free ports (port 0) and every default but
    /// these: its data dir and its admin token. Nothing is read from files or the
    /// environment, so tests and embedders get the same node wherever they run.
    pub fn local(data_dir: &Path, admin_token: &str) -> anyhow::Result<Settings> {
        let raw = RawConfig {
            data_dir: data_dir.to_owned(),
            admin_token: Some(admin_token.to_owned()),
            mqtt: RawMqtt {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                tls_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                ..RawMqtt::default()
            },
            http: RawHttp {
                addr: SocketAddr::from(([127, 0, 0, 1], 0)),
                tls_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            },
            ..RawConfig::default()
        };
        raw.validate()
    }

    /// The same settings with TLS listeners serving `files`, at the configured TLS
    /// addresses (loopback and free ports for [`Settings::local`]).
    pub fn with_tls(mut self, files: fleetwire_tls::TlsFiles) -> Settings {
        let (mqtt_addr, http_addr) = self.tls_addrs;
        self.tls = Some(TlsSettings {
            files,
            mqtt_addr,
            http_addr,
        });
        self
    }

    /// The data directory.
    pub(crate) fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Settings for `serve`, from all layers.
    pub(crate) fn load(
        args: &ServeArgs,
        log_format: Option<LogFormat>,
    ) -> anyhow::Result<Settings> {
        let figment = Figment::from(Serialized::defaults(RawConfig::default()));
        Settings::from_figment(figment, args, log_format)
    }

    /// Settings for `demo`: like `serve`, but on loopback, with anonymous access and its
    /// own data directory unless told otherwise.
    pub(crate) fn load_demo(
        args: &ServeArgs,
        log_format: Option<LogFormat>,
    ) -> anyhow::Result<Settings> {
        let defaults = RawConfig {
            data_dir: PathBuf::from("./fleetwire-demo-data"),
            allow_anonymous: true,
            mqtt: RawMqtt {
                addr: SocketAddr::from(([127, 0, 0, 1], 1883)),
                tls_addr: SocketAddr::from(([127, 0, 0, 1], 8883)),
                ..RawMqtt::default()
            },
            http: RawHttp {
                addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
                tls_addr: SocketAddr::from(([127, 0, 0, 1], 8443)),
            },
            ..RawConfig::default()
        };
        Settings::from_figment(
            Figment::from(Serialized::defaults(defaults)),
            args,
            log_format,
        )
    }

    fn from_figment(
        mut figment: Figment,
        args: &ServeArgs,
        log_format: Option<LogFormat>,
    ) -> anyhow::Result<Settings> {
        if let Some(path) = &args.config {
            if !path.is_file() {
                bail!("configuration file {} does not exist", path.display());
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(
            Env::prefixed("FLEETWIRE_")
                // Read by the admin CLI (`fleetwire device ...`), not settings of the server.
                .ignore(&["url", "token"])
                .split("__"),
        );
        if let Some(dir) = &args.data_dir {
            figment = figment.merge(("data_dir", dir));
        }
        if let Some(addr) = args.mqtt_addr {
            figment = figment.merge(("mqtt.addr", addr.to_string()));
        }
        if let Some(addr) = args.http_addr {
            figment = figment.merge(("http.addr", addr.to_string()));
        }
        if args.allow_anonymous {
            figment = figment.merge(("allow_anonymous", true));
        }
        if let Some(format) = log_format {
            figment = figment.merge(("log.format", format));
        }
        let raw: RawConfig = figment.extract().map_err(describe)?;
        raw.validate()
    }
}

impl RawMqtt {
    /// `deny_subscribe`, each entry checked as an MQTT topic filter.
    fn deny_subscribe(&self) -> anyhow::Result<Vec<TopicFilter>> {
        self.deny_subscribe
            .iter()
            .map(|text| {
                TopicFilter::new(text.as_str()).map_err(|error| {
                    anyhow::anyhow!(
                        "invalid configuration: mqtt.deny_subscribe: {text:?} is not a topic \
                         filter: {error}"
                    )
                })
            })
            .collect()
    }

    /// The broker's limits, each checked against what its type holds.
    fn limits(&self) -> anyhow::Result<fleetwire_broker::Limits> {
        let count = |key: &str, value: u64| {
            u32::try_from(value)
                .map_err(|_| anyhow::anyhow!("invalid configuration: {key}: at most {}", u32::MAX))
        };
        let size = |key: &str, value: u64| {
            usize::try_from(value)
                .map_err(|_| anyhow::anyhow!("invalid configuration: {key}: too large"))
        };
        Ok(fleetwire_broker::Limits {
            max_connections: size("mqtt.max_connections", self.max_connections)?,
            max_connections_per_address: count(
                "mqtt.max_connections_per_address",
                self.max_connections_per_address,
            )?,
            connection_rate_per_address: count(
                "mqtt.connection_rate_per_address",
                self.connection_rate_per_address,
            )?,
            publish_rate: count("mqtt.publish_rate", self.publish_rate)?,
            publish_bytes_rate: self.publish_bytes_rate,
            max_subscriptions: size("mqtt.max_subscriptions", self.max_subscriptions)?,
            max_queued_bytes: count("mqtt.max_queued_bytes", self.max_queued_bytes)? as usize,
        })
    }
}

impl RawTls {
    /// The TLS settings, if a certificate is configured; the files are read at start.
    fn validate(
        &self,
        mqtt_addr: SocketAddr,
        http_addr: SocketAddr,
    ) -> anyhow::Result<Option<TlsSettings>> {
        let path = |value: &str| (!value.trim().is_empty()).then(|| PathBuf::from(value.trim()));
        let (cert_file, key_file, client_ca_file) = (
            path(&self.cert_file),
            path(&self.key_file),
            path(&self.client_ca_file),
        );
        match (cert_file, key_file) {
            (None, None) if client_ca_file.is_some() => bail!(
                "invalid configuration: tls.client_ca_file needs tls.cert_file and                  tls.key_file (client certificates are checked by the TLS listeners)"
            ),
            (None, None) => Ok(None),
            (Some(_), None) => {
                bail!("invalid configuration: tls.cert_file is set but tls.key_file is not")
            }
            (None, Some(_)) => {
                bail!("invalid configuration: tls.key_file is set but tls.cert_file is not")
            }
            (Some(cert_file), Some(key_file)) => Ok(Some(TlsSettings {
                files: fleetwire_tls::TlsFiles {
                    cert_file,
                    key_file,
                    client_ca_file,
                },
                mqtt_addr,
                http_addr,
            })),
        }
    }
}

/// One readable line per problem: the key (as written in the file), what is wrong, and
/// where the value came from.
fn describe(error: figment::Error) -> anyhow::Error {
    let messages: Vec<String> = error
        .into_iter()
        .map(|error| {
            let key = error.path.join(".").to_lowercase();
            let source = error
                .metadata
                .as_ref()
                .map(|metadata| match &metadata.source {
                    Some(source) => format!(" (from {source})"),
                    None => format!(" (from {})", metadata.name),
                })
                .unwrap_or_default();
            if key.is_empty() {
                format!("{}{source}", error.kind)
            } else {
                format!("{key}: {}{source}", error.kind)
            }
        })
        .collect();
    anyhow::anyhow!("invalid configuration: {}", messages.join("; "))
}

impl RawConfig {
    fn validate(self) -> anyhow::Result<Settings> {
        let mqtt = &self.mqtt;
        // The smallest useful packet is a few bytes; the protocol's largest is 256 MiB.
        check_range(
            "mqtt.max_packet_size",
            mqtt.max_packet_size,
            64,
            268_435_460,
        )?;
        check_range(
            "mqtt.max_queued_messages",
            mqtt.max_queued_messages,
            1,
            10_000_000,
        )?;
        check_range("mqtt.max_inflight", mqtt.max_inflight, 1, 65_535)?;
        check_range(
            "mqtt.connect_timeout_secs",
            mqtt.connect_timeout_secs,
            1,
            3600,
        )?;
        check_range("mqtt.sys_interval_secs", mqtt.sys_interval_secs, 0, 86_400)?;
        check_range(
            "mqtt.auth_failure_burst",
            mqtt.auth_failure_burst,
            1,
            1_000_000,
        )?;
        check_range(
            "mqtt.auth_failures_per_minute",
            mqtt.auth_failures_per_minute,
            0,
            1_000_000,
        )?;
        check_range(
            "mqtt.topic_alias_maximum",
            mqtt.topic_alias_maximum,
            0,
            65_535,
        )?;
        check_range("mqtt.receive_maximum", mqtt.receive_maximum, 1, 65_535)?;
        check_range("mqtt.max_keep_alive", mqtt.max_keep_alive, 0, 65_535)?;
        let registry_url = match self.registry.url.trim() {
            "" => None,
            url if url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://") =>
            {
                Some(url.to_owned())
            }
            url => bail!(
                "invalid configuration: registry.url must start with sqlite:, postgres:// or \
                 postgresql://, got {:?}",
                url.split(':').next().unwrap_or_default()
            ),
        };
        if let Some(token) = &self.admin_token {
            if token.len() < 16 {
                bail!(
                    "invalid configuration: admin_token must be at least 16 characters, got {}",
                    token.len()
                );
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            bail!("invalid configuration: data_dir is empty");
        }
        check_range("worker_threads", self.worker_threads, 0, 1024)?;
        let worker_threads = match self.worker_threads {
            // More threads than cores: the writer, rules and database threads preempt
            // runtime threads under load, and the connections queued on a preempted
            // thread then wait for it; with more, smaller queues the others go on.
            0 => std::thread::available_parallelism().map_or(4, |cores| (2 * cores.get()).max(4)),
            threads => threads as usize,
        };
        let broker = BrokerConfig {
            allow_anonymous: self.allow_anonymous,
            max_packet_size: usize::try_from(mqtt.max_packet_size)
                .context("mqtt.max_packet_size")?,
            max_queued_messages: usize::try_from(mqtt.max_queued_messages)
                .context("mqtt.max_queued_messages")?,
            max_inflight: usize::try_from(mqtt.max_inflight).context("mqtt.max_inflight")?,
            slow_consumer_grace: Duration::from_millis(mqtt.slow_consumer_grace_ms),
            connect_timeout: Duration::from_secs(mqtt.connect_timeout_secs),
            sys_interval: Duration::from_secs(mqtt.sys_interval_secs),
            auth_failure_burst: u32::try_from(mqtt.auth_failure_burst)
                .context("mqtt.auth_failure_burst")?,
            auth_failures_per_minute: u32::try_from(mqtt.auth_failures_per_minute)
                .context("mqtt.auth_failures_per_minute")?,
            socket_send_buffer: None,
            limits: mqtt.limits()?,
            topic_alias_maximum: u16::try_from(mqtt.topic_alias_maximum)
                .context("mqtt.topic_alias_maximum")?,
            receive_maximum: u16::try_from(mqtt.receive_maximum).context("mqtt.receive_maximum")?,
            max_keep_alive: u16::try_from(mqtt.max_keep_alive).context("mqtt.max_keep_alive")?,
            deny_subscribe: mqtt.deny_subscribe()?,
        };
        let tls = self.tls.validate(self.mqtt.tls_addr, self.http.tls_addr)?;
        let cluster = self.cluster.validate()?;
        let store = self.storage.validate()?;
        let platform = self.platform_config()?;
        let mut rules: Vec<(RuleId, RuleSpec)> = Vec::with_capacity(self.rules.len());
        for (index, document) in self.rules.into_iter().enumerate() {
            let (id, spec) = fleetwire_api::rule_from_document(document).map_err(|error| {
                anyhow::anyhow!("invalid configuration: rules[{index}]: {error}")
            })?;
            if rules.iter().any(|(other, _)| *other == id) {
                bail!("invalid configuration: rules[{index}]: id {id:?} is used twice");
            }
            fleetwire_platform::Platform::validate_rule(Some(&id), &spec).map_err(|error| {
                anyhow::anyhow!("invalid configuration: rules[{index}]: {error}")
            })?;
            rules.push((id, spec));
        }
        Ok(Settings {
            store,
            platform,
            rules,
            data_dir: self.data_dir,
            admin_token: self.admin_token,
            worker_threads,
            mqtt_addr: self.mqtt.addr,
            broker_persistence: self.mqtt.persistence,
            http_addr: self.http.addr,
            tls,
            tls_addrs: (self.mqtt.tls_addr, self.http.tls_addr),
            broker,
            registry_url,
            cluster,
            log: LogSettings {
                format: self.log.format,
                level: self.log.level,
            },
        })
    }
}

impl RawCluster {
    fn validate(&self) -> anyhow::Result<Option<ClusterSettings>> {
        let nats_url = self.nats_url.trim();
        if nats_url.is_empty() {
            return Ok(None);
        }
        for url in nats_url.split(',').map(str::trim) {
            if url.starts_with("tls://") {
                bail!(
                    "invalid configuration: cluster.nats_url: TLS to NATS is not supported yet, \
                     use nats:// URLs (on a private network), got {url:?}"
                );
            }
            let is_nats = url
                .strip_prefix("nats://")
                .is_some_and(|rest| !rest.is_empty());
            if !is_nats {
                bail!(
                    "invalid configuration: cluster.nats_url must be NATS URLs such as \
                     nats://host:4222, comma-separated, got {url:?}"
                );
            }
        }
        let node_id = match self.node_id.trim() {
            "" => host_name(),
            node_id => node_id.to_owned(),
        };
        if node_id.chars().any(|c| c.is_whitespace() || c.is_control()) || node_id.len() > 64 {
            bail!(
                "invalid configuration: cluster.node_id must be at most 64 characters without \
                 spaces, got {node_id:?}"
            );
        }
        Ok(Some(ClusterSettings {
            nats_url: nats_url.to_owned(),
            node_id,
        }))
    }
}

/// The machine's host name (`cluster.node_id`'s default).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "fleetwire".to_owned())
}

impl RawStorage {
    fn validate(&self) -> anyhow::Result<fleetwire_store::StoreConfig> {
        let durability = match self.durability.as_str() {
            "sync" => fleetwire_store::Durability::Sync,
            "batch" => {
                check_range("storage.batch_flush_ms", self.batch_flush_ms, 1, 60_000)?;
                fleetwire_store::Durability::Batch {
                    flush_interval: Duration::from_millis(self.batch_flush_ms),
                }
            }
            other => bail!(
                "invalid configuration: storage.durability must be sync or batch, got {other:?}"
            ),
        };
        let retention = match self.retention.trim() {
            "" => None,
            text => {
                let retention = parse_days(text).ok_or_else(|| {
                    anyhow::anyhow!(
                        "invalid configuration: storage.retention must be whole days or weeks \
                         such as 30d or 12w, or empty to keep everything, got {text:?}"
                    )
                })?;
                Some(retention)
            }
        };
        Ok(fleetwire_store::StoreConfig {
            durability,
            retention,
            ..fleetwire_store::StoreConfig::default()
        })
    }
}

/// `30d` or `12w` (at least one day, since retention drops whole day partitions).
fn parse_days(text: &str) -> Option<Duration> {
    let (number, unit) = text.split_at(text.len().checked_sub(1)?);
    let number: u64 = number.parse().ok().filter(|number| *number > 0)?;
    let days = match unit {
        "d" => number,
        "w" => number.checked_mul(7)?,
        _ => return None,
    };
    Some(Duration::from_secs(days.checked_mul(86_400)?))
}

impl RawConfig {
    fn platform_config(&self) -> anyhow::Result<fleetwire_platform::PlatformConfig> {
        let ingest = &self.ingest;
        check_range(
            "ingest.max_fields_per_row",
            ingest.max_fields_per_row,
            1,
            100_000,
        )?;
        check_range(
            "storage.write_linger_us",
            self.storage.write_linger_us,
            0,
            100_000,
        )?;
        let webhooks = &self.webhooks;
        check_range("webhooks.timeout_ms", webhooks.timeout_ms, 10, 600_000)?;
        check_range("webhooks.attempts", webhooks.attempts, 1, 100)?;
        check_range(
            "webhooks.first_backoff_ms",
            webhooks.first_backoff_ms,
            1,
            600_000,
        )?;
        check_range(
            "webhooks.circuit_failures",
            webhooks.circuit_failures,
            1,
            1000,
        )?;
        check_range(
            "webhooks.circuit_open_secs",
            webhooks.circuit_open_secs,
            1,
            86_400,
        )?;
        let roots = if webhooks.ca_file.is_empty() {
            fleetwire_platform::WebhookRoots::WebPki
        } else {
            let pem = std::fs::read(&webhooks.ca_file).with_context(|| {
                format!(
                    "invalid configuration: webhooks.ca_file: cannot read {:?}",
                    webhooks.ca_file
                )
            })?;
            fleetwire_platform::WebhookRoots::from_pem(&pem).map_err(|error| {
                anyhow::anyhow!(
                    "invalid configuration: webhooks.ca_file: {:?}: {error}",
                    webhooks.ca_file
                )
            })?
        };
        Ok(fleetwire_platform::PlatformConfig {
            limits: fleetwire_formats::Limits {
                max_fields_per_row: ingest.max_fields_per_row as usize,
                ..fleetwire_formats::Limits::default()
            },
            auto_register_devices: ingest.auto_register_devices,
            writer: fleetwire_platform::WriterConfig {
                linger: Duration::from_micros(self.storage.write_linger_us),
                ..fleetwire_platform::WriterConfig::default()
            },
            webhooks: fleetwire_platform::WebhookConfig {
                timeout: Duration::from_millis(webhooks.timeout_ms),
                attempts: webhooks.attempts as u32,
                first_backoff: Duration::from_millis(webhooks.first_backoff_ms),
                failures_to_open: webhooks.circuit_failures as u32,
                open_for: Duration::from_secs(webhooks.circuit_open_secs),
                roots,
                ..fleetwire_platform::WebhookConfig::default()
            },
        })
    }
}

fn check_range(key: &str, value: u64, min: u64, max: u64) -> anyhow::Result<()> {
    if value < min || value > max {
        bail!("invalid configuration: {key} must be between {min} and {max}, got {value}");
    }
    Ok(())
}

/// Whether `path` looks like a directory we may create data in.
pub(crate) fn ensure_data_dir(path: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(path)
        .with_context(|| format!("cannot create data directory {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            // Ours to restrict only if we just made it; never loosen or fight the user.
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
        }
    }
    Ok(())
}
