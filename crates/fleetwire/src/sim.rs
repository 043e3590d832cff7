//! `fleetwire sim`: flags of the fleet simulator, a live progress line, and the final
//! summary. The simulation itself is `fleetwire_sim`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use fleetwire_mqtt_codec::{ProtocolVersion, QoS};
use fleetwire_sim::{DeviceCredential, Devices, SimConfig, SimStats, Simulator, read_credentials};

/// Simulate a fleet of devices publishing telemetry to any MQTT broker.
#[derive(Debug, Args)]
pub(crate) struct SimArgs {
    /// Broker to connect to, as HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:1883", value_name = "HOST:PORT")]
    target: String,
    /// Number of devices [default: 10, or every device of --credentials].
    #[arg(long, value_name = "N")]
    devices: Option<usize>,
    /// Seconds between two messages of one device.
    #[arg(
        long,
        default_value_t = 1.0,
        value_name = "SECS",
        conflicts_with = "rate"
    )]
    interval: f64,
    /// Messages per second over the whole fleet (sets the interval instead of --interval).
    #[arg(long, value_name = "MSGS_PER_SEC")]
    rate: Option<f64>,
    /// QoS of the telemetry messages.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    qos: u8,
    /// MQTT version: 3 (3.1.1) or 5.
    #[arg(long, default_value = "3", value_parser = ["3", "3.1.1", "4", "5"])]
    mqtt_version: String,
    /// Seconds over which the devices connect, evenly spread.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    ramp_up: f64,
    /// Stop after this many seconds [default: run until Ctrl-C].
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Device credentials, one per line: `device_id,password` or
    /// `{"device_id": "...", "password": "..."}`. Without it devices connect anonymously.
    #[arg(long, value_name = "FILE")]
    credentials: Option<PathBuf>,
    /// Register the devices (`{prefix}0001`, ...) through the HTTP API first and log in
    /// with fresh credentials; devices that exist get new credentials.
    #[arg(long, conflicts_with = "credentials")]
    create_credentials: bool,
    /// Base URL of the Fleetwire HTTP API, for --create-credentials.
    #[arg(
        long,
        env = "FLEETWIRE_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    api_url: String,
    /// API token (operator or admin) for --create-credentials [default: the data dir's
    /// admin.token].
    #[arg(
        long,
        env = "FLEETWIRE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,
    /// Data directory whose admin.token --create-credentials uses when no token is given
    /// [default: ./fleetwire-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Prefix of the anonymous devices' ids.
    #[arg(long, default_value = "sim-", value_name = "TEXT")]
    device_prefix: String,
    /// Seed of the signals: the same seed gives the same readings.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Keep-alive the devices announce, in seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    keep_alive: u16,
    /// Print the final counters as one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
    /// Worker threads of the simulator [default: one per core].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

/// Runs the simulator until Ctrl-C or `--duration`.
pub(crate) fn run(args: SimArgs) -> anyhow::Result<()> {
    init_logging();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("fleetwire-sim");
    if let Some(threads) = args.threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = builder.build().context("cannot start the async runtime")?;
    runtime.block_on(simulate(args))
}

async fn simulate(args: SimArgs) -> anyhow::Result<()> {
    let target = crate::bench::resolve(&args.target).await?;
    let devices = match &args.credentials {
        None if args.create_credentials => {
            let count = args.devices.unwrap_or(10);
            let prefix = args.device_prefix.clone();
            let (url, token, data_dir) = (
                args.api_url.clone(),
                args.token.clone(),
                args.data_dir.clone(),
            );
            let credentials = tokio::task::spawn_blocking(move || {
                register_devices(&url, token, data_dir.as_deref(), count, &prefix)
            })
            .await
            .context("registering the devices failed")??;
            Devices::Credentials(credentials)
        }
        Some(path) => {
            let mut credentials = read_credentials(path)?;
            if credentials.is_empty() {
                bail!("credentials file {} lists no device", path.display());
            }
            if let Some(count) = args.devices {
                if count > credentials.len() {
                    bail!(
                        "--devices {count} asks for more devices than the {} in {}",
                        credentials.len(),
                        path.display()
                    );
                }
                credentials.truncate(count);
            }
            Devices::Credentials(credentials)
        }
        None => Devices::Anonymous {
            count: args.devices.unwrap_or(10),
            prefix: args.device_prefix.clone(),
        },
    };
    let device_count = match &devices {
        Devices::Anonymous { count, .. } => *count,
        Devices::Credentials(credentials) => credentials.len(),
    };
    let interval = match args.rate {
        Some(rate) if rate > 0.0 && rate.is_finite() => device_count as f64 / rate,
        Some(_) => bail!("--rate must be a positive number of messages per second"),
        None => args.interval,
    };
    let config = SimConfig {
        target,
        devices,
        interval: seconds("--interval", interval)?,
        qos: if args.qos == 1 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        },
        version: parse_version(&args.mqtt_version),
        ramp_up: seconds("--ramp-up", args.ramp_up)?,
        seed: args.seed,
        keep_alive: Duration::from_secs(u64::from(args.keep_alive)),
        ..SimConfig::default()
    };
    let simulator = Simulator::new(config)?;
    let counters = simulator.counters();
    eprintln!(
        "simulating {} devices against {target}, one message every {interval:.3} s each \
         (Ctrl-C to stop)",
        simulator.device_count()
    );
    let duration = args
        .duration
        .map(|secs| seconds("--duration", secs))
        .transpose()?;
    let shutdown = async move {
        match duration {
            Some(duration) => {
                tokio::select! {
                    () = tokio::time::sleep(duration) => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    let progress = tokio::spawn(async move {
        let is_terminal = std::io::stderr().is_terminal();
        let every = if is_terminal { 1 } else { 10 };
        let started = Instant::now();
        let mut previous = counters.snapshot().published;
        let mut ticker = tokio::time::interval(Duration::from_secs(every));
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let stats = counters.snapshot();
            let rate = (stats.published - previous) as f64 / every as f64;
            previous = stats.published;
            let line = progress_line(started.elapsed(), rate, device_count, &stats);
            if is_terminal {
                eprint!("\r\x1b[K{line}");
            } else {
                eprintln!("{line}");
            }
            let _ = std::io::stderr().flush();
        }
    });
    let report = simulator.run(shutdown).await;
    progress.abort();
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let stats = &report.stats;
    let elapsed = report.elapsed.as_secs_f64();
    let summary = format!(
        "{} devices ran {elapsed:.1} s: {} messages published ({:.0} msgs/s), {} acknowledged, \
         {} rejected, {} errors, {} reconnects",
        device_count,
        stats.published,
        stats.published as f64 / elapsed.max(0.001),
        stats.acknowledged,
        stats.rejected,
        stats.errors,
        stats.reconnects
    );
    let latency = &stats.ack_latency_us;
    let summary = if latency.count > 0 {
        format!(
            "{summary}; PUBACK after p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
            latency.p50, latency.p99, latency.p999, latency.max
        )
    } else {
        summary
    };
    if args.json {
        eprintln!("{summary}");
        let json = serde_json::json!({
            "devices": device_count,
            "elapsed_s": (elapsed * 1000.0).round() / 1000.0,
            "published": stats.published,
            "acknowledged": stats.acknowledged,
            "rejected": stats.rejected,
            "errors": stats.errors,
            "reconnects": stats.reconnects,
            "last_error": stats.last_error,
            "ack_latency_us": {
                "p50": latency.p50,
                "p99": latency.p99,
                "p999": latency.p999,
                "max": latency.max,
                "count": latency.count,
            },
        });
        println!("{json}");
    } else {
        println!("{summary}");
        if let Some(error) = &stats.last_error {
            println!("last error: {error}");
        }
    }
    Ok(())
}

fn progress_line(elapsed: Duration, rate: f64, devices: usize, stats: &SimStats) -> String {
    let mut line = format!(
        "{:>6.0} s  {}/{} connected  {:>8.0} msgs/s  {} sent  {} errors",
        elapsed.as_secs_f64(),
        stats.connected,
        devices,
        rate,
        stats.published,
        stats.errors
    );
    if let Some(error) = &stats.last_error {
        line.push_str("  last: ");
        line.extend(error.chars().take(80));
    }
    line
}

/// `3`, `3.1.1` and `4` (the protocol level) mean 3.1.1; `5` means 5.0.
pub(crate) fn parse_version(text: &str) -> ProtocolVersion {
    if text == "5" {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    }
}

/// A positive, finite number of seconds from a flag.
pub(crate) fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    if !value.is_finite() || value < 0.0 {
        bail!("{flag} must be a non-negative number of seconds, got {value}");
    }
    Ok(Duration::from_secs_f64(value))
}

/// Warnings (or `RUST_LOG`) to stderr; the simulator and the load generator have no
/// configuration file.
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Registers `count` devices named like the anonymous ones (`{prefix}0001`, ...) and
/// issues each fresh credentials, four requests at a time (issuing hashes a secret with
/// argon2id, which takes the server tens of milliseconds).
fn register_devices(
    url: &str,
    token: Option<String>,
    data_dir: Option<&std::path::Path>,
    count: usize,
    prefix: &str,
) -> anyhow::Result<Vec<DeviceCredential>> {
    const WORKERS: usize = 4;
    let client = crate::admin::Client::connect(url, token, data_dir)?;
    let width = count.to_string().len().max(4);
    let ids: Vec<String> = (1..=count)
        .map(|number| format!("{prefix}{number:0width$}"))
        .collect();
    eprintln!("registering {count} devices through {url}");
    let register = |id: &String| -> anyhow::Result<DeviceCredential> {
        let body = serde_json::json!({"id": id, "type": "simulated", "labels": {"source": "fleetwire-sim"}});
        if let Err(error) = client.send("POST", "/api/v1/devices", Some(&body)) {
            // An existing device is reused: only its credentials are renewed.
            let exists = error
                .downcast_ref::<crate::admin::ApiError>()
                .is_some_and(|answer| answer.status == 409);
            if !exists {
                return Err(error.context(format!("cannot register device {id}")));
            }
        }
        let path = format!("{}/credentials", crate::admin::device_path(id));
        let answer = client
            .send("POST", &path, None)
            .with_context(|| format!("cannot issue credentials for device {id}"))?;
        let password = answer["password"]
            .as_str()
            .with_context(|| format!("the credentials of {id} carry no password"))?;
        Ok(DeviceCredential {
            device_id: id.clone(),
            password: password.to_owned(),
        })
    };
    let chunk = count.div_ceil(WORKERS).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = ids
            .chunks(chunk)
            .map(|ids| {
                scope.spawn(move || ids.iter().map(register).collect::<anyhow::Result<Vec<_>>>())
            })
            .collect();
        let mut credentials = Vec::with_capacity(count);
        for worker in workers {
            let batch = worker
                .join()
                .map_err(|_| anyhow::anyhow!("a registering thread panicked"))??;
            credentials.extend(batch);
        }
        Ok(credentials)
    })
}
