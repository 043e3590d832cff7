//! `fleetwire serve` and `fleetwire demo`: start the listeners, run until SIGTERM or
//! Ctrl-C, then shut down cleanly.

use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use fleetwire_broker::{Broker, Hooks};
use fleetwire_model::{RuleId, RuleSpec};
use fleetwire_platform::{Error as PlatformError, Platform};
use fleetwire_registry::Registry;
use fleetwire_store::Store;
use tokio::net::TcpListener;

use crate::admin_token::{self, Origin};
use crate::config::{self, Settings};
use crate::demo;
use crate::device_auth::RegistryAuthenticator;

/// Runs the platform until a shutdown signal.
pub(crate) fn run(settings: Settings) -> anyhow::Result<()> {
    runtime(settings.worker_threads)?.block_on(serve(settings, None))
}

/// Runs the platform for a first look: loopback, anonymous, `devices` simulated devices,
/// with a tour printed.
pub(crate) fn run_demo(settings: Settings, devices: usize) -> anyhow::Result<()> {
    runtime(settings.worker_threads)?.block_on(serve(settings, Some(devices)))
}

fn runtime(worker_threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .enable_all()
        .thread_name("fleetwire")
        .build()
        .context("cannot start the async runtime")
}

/// `demo_devices` is `Some` for the demo: the size of its simulated fleet.
async fn serve(settings: Settings, demo_devices: Option<usize>) -> anyhow::Result<()> {
    // Installed first, so a SIGTERM during start-up also shuts down cleanly.
    let signal = tokio::spawn(wait_for_signal());
    config::ensure_data_dir(&settings.data_dir)?;
    let (token, origin) = admin_token::ensure(&settings.data_dir, settings.admin_token.as_deref())?;
    let token_path = settings.data_dir.join("admin.token");
    match origin {
        Origin::Created => {
            println!(
                "Admin API token (shown once; also stored in {}):\n  {token}",
                token_path.display()
            );
        }
        Origin::Existing => tracing::info!(path = %token_path.display(), "admin token loaded"),
        Origin::Configured => tracing::info!("admin token taken from the configuration"),
    }
    let registry = open_registry(&settings).await?;
    registry
        .set_bootstrap_token(&token)
        .await
        .context("cannot store the admin token in the registry")?;
    if settings.broker.allow_anonymous {
        tracing::warn!(
            "anonymous access is enabled: clients without credentials connect with full access; \
             use this only for development and testing"
        );
    }

    let listener = TcpListener::bind(settings.mqtt_addr)
        .await
        .with_context(|| format!("cannot listen for MQTT on {}", settings.mqtt_addr))?;
    let mqtt_addr = listener
        .local_addr()
        .context("cannot read the MQTT listener's address")?;
    tracing::info!(protocol = "mqtt", addr = %mqtt_addr, "listening");

    let http_listener = TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", settings.http_addr))?;
    let http_addr = http_listener
        .local_addr()
        .context("cannot read the HTTP listener's address")?;
    tracing::info!(protocol = "http", addr = %http_addr, "listening");

    let platform = start_platform(&settings, registry.clone()).await?;
    apply_configured_rules(&platform, &settings.rules).await?;
    let broker = Broker::new(settings.broker.clone());
    platform.attach_broker(broker.clone());
    let hooks = Hooks {
        authenticator: Some(Arc::new(RegistryAuthenticator::new(
            registry.clone(),
            platform.clone(),
        ))),
        ingest: Some(platform.mqtt_ingest()),
    };
    let running = broker
        .spawn(listener, hooks)
        .context("cannot start the MQTT listener")?;
    let http = tokio::spawn({
        let state = fleetwire_api::ApiState {
            broker: broker.clone(),
            registry: registry.clone(),
            platform: platform.clone(),
        };
        let stopping = broker.clone();
        async move {
            // Without TCP_NODELAY a stream event written while the previous one is not yet
            // acknowledged waits for the client's delayed ACK (up to 40 ms).
            let http_listener = http_listener.tap_io(|stream| {
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY on an HTTP connection");
                }
            });
            axum::serve(
                http_listener,
                fleetwire_api::router(state).merge(fleetwire_dashboard::router()),
            )
            .with_graceful_shutdown(async move { stopping.shutdown_requested().await })
            .await
        }
    });
    tracing::info!(data_dir = %settings.data_dir.display(), "fleetwire started");
    let simulation = match demo_devices {
        Some(devices) => {
            let credentials = demo::prepare(&platform, devices).await?;
            demo::print_tour(mqtt_addr, http_addr, devices, &token);
            (devices > 0)
                .then(|| demo::start_simulation(&broker, mqtt_addr, credentials))
                .transpose()?
        }
        None => None,
    };

    signal.await.context("the signal handler task failed")??;
    tracing::info!("shutting down: closing connections");
    broker.shutdown();
    running
        .stopped()
        .await
        .context("the MQTT listener failed")?;
    if let Some(simulation) = simulation {
        let _ = simulation.await;
    }
    http.await
        .context("the HTTP server task failed")?
        .context("the HTTP server failed")?;
    // Nothing writes any more: flush the telemetry to segments and close the store.
    platform.shutdown().await;
    // Every connection has closed: write the devices' last presence and close.
    registry.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Creates the configuration file's rules, or replaces the stored rules of the same ids,
/// before any device is served. They were checked with the rest of the configuration;
/// one the registry cannot store stops start-up, naming it.
async fn apply_configured_rules(
    platform: &Platform,
    rules: &[(RuleId, RuleSpec)],
) -> anyhow::Result<()> {
    for (id, spec) in rules {
        let applied = match platform.create_rule(Some(id.clone()), spec.clone()).await {
            // Stored already (an earlier start, or another node sharing the registry).
            Err(PlatformError::Conflict(_)) => platform.replace_rule(id, spec.clone()).await,
            other => other,
        };
        applied.with_context(|| format!("cannot apply the configuration file's rule {id}"))?;
    }
    if !rules.is_empty() {
        tracing::info!(
            rules = rules.len(),
            "rules of the configuration file applied"
        );
    }
    Ok(())
}

/// Opens the telemetry store (replaying its write-ahead log) and starts the platform.
async fn start_platform(settings: &Settings, registry: Registry) -> anyhow::Result<Platform> {
    let directory = settings.data_dir.join("telemetry");
    let config = settings.store.clone();
    let opened = tokio::task::spawn_blocking({
        let directory = directory.clone();
        move || Store::open(&directory, config)
    })
    .await
    .context("the telemetry store's opening task failed")?;
    let store = opened
        .with_context(|| format!("cannot open the telemetry store in {}", directory.display()))?;
    let stats = store.stats();
    tracing::info!(
        series = stats.series,
        segments = stats.segments,
        points = stats.segment_points + stats.head_points,
        durability = ?settings.store.durability,
        "telemetry store opened"
    );
    Platform::start(store, registry, settings.platform.clone())
        .await
        .context("cannot start the platform")
}

/// Opens the registry named by the configuration, or SQLite in the data dir.
async fn open_registry(settings: &Settings) -> anyhow::Result<Registry> {
    let registry = match &settings.registry_url {
        Some(url) => Registry::open(url).await,
        None => Registry::open_in_dir(&settings.data_dir).await,
    };
    let registry = registry.context("cannot open the device registry")?;
    match &settings.registry_url {
        Some(url) if url.starts_with("postgres") => {
            tracing::info!(backend = "postgresql", "device registry opened")
        }
        _ => tracing::info!(backend = "sqlite", "device registry opened"),
    }
    Ok(registry)
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result.context("cannot listen for Ctrl-C")?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("cannot listen for Ctrl-C")?;
    Ok(())
}
