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
use serde::{Deserialize, Serialize};

use crate::cli::{LogFormat, ServeArgs};

/// The configuration file's shape, with defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConfig {
    data_dir: PathBuf,
    allow_anonymous: bool,
    /// The admin API token; `FLEETWIRE_ADMIN_TOKEN` sets it.
    #[serde(skip_serializing_if = "Option::is_none")]
    admin_token: Option<String>,
    log: RawLog,
    mqtt: RawMqtt,
    http: RawHttp,
    registry: RawRegistry,
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
    max_packet_size: u64,
    max_queued_messages: u64,
    max_inflight: u64,
    slow_consumer_grace_ms: u64,
    connect_timeout_secs: u64,
    sys_interval_secs: u64,
    auth_failure_burst: u64,
    auth_failures_per_minute: u64,
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
}

impl Default for RawConfig {
    fn default() -> RawConfig {
        let broker = BrokerConfig::default();
        RawConfig {
            data_dir: PathBuf::from("./fleetwire-data"),
            allow_anonymous: false,
            admin_token: None,
            log: RawLog {
                format: LogFormat::Human,
                level: "info".to_owned(),
            },
            mqtt: RawMqtt {
                addr: SocketAddr::from(([0, 0, 0, 0], 1883)),
                max_packet_size: broker.max_packet_size as u64,
                max_queued_messages: broker.max_queued_messages as u64,
                max_inflight: broker.max_inflight as u64,
                slow_consumer_grace_ms: broker.slow_consumer_grace.as_millis() as u64,
                connect_timeout_secs: broker.connect_timeout.as_secs(),
                sys_interval_secs: broker.sys_interval.as_secs(),
                auth_failure_burst: u64::from(broker.auth_failure_burst),
                auth_failures_per_minute: u64::from(broker.auth_failures_per_minute),
            },
            http: RawHttp {
                addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            },
            registry: RawRegistry::default(),
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

/// Validated settings for `serve` and `demo`.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) data_dir: PathBuf,
    pub(crate) admin_token: Option<String>,
    pub(crate) mqtt_addr: SocketAddr,
    pub(crate) http_addr: SocketAddr,
    pub(crate) broker: BrokerConfig,
    /// Registry database URL; `None`: SQLite in the data dir.
    pub(crate) registry_url: Option<String>,
    pub(crate) log: LogSettings,
}

impl Settings {
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
                ..RawMqtt::default()
            },
            http: RawHttp {
                addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
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
        };
        Ok(Settings {
            data_dir: self.data_dir,
            admin_token: self.admin_token,
            mqtt_addr: self.mqtt.addr,
            http_addr: self.http.addr,
            broker,
            registry_url,
            log: LogSettings {
                format: self.log.format,
                level: self.log.level,
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
