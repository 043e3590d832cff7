//! `fleetwire serve` and `fleetwire demo`: start a node ([`App::start`]), run until SIGTERM
//! or Ctrl-C, then stop it cleanly.

use anyhow::Context;

use crate::app::App;
use crate::config::Settings;
use crate::demo;

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
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .worker_threads(worker_threads)
        .enable_all()
        .thread_name("fleetwire");
    // The LIFO slot runs the task woken last first: of two connections with packets in
    // the same wake-up, the later one's would be handled first, and a client's PUBLISH
    // could overtake another's SUBSCRIBE sent just before it (single-threaded brokers
    // keep that order; clients and test suites rely on it). Measured: no throughput
    // difference (docs/BENCHMARKS.md). Needs `--cfg tokio_unstable` (.cargo/config.toml).
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder.build().context("cannot start the async runtime")
}

/// `demo_devices` is `Some` for the demo: the size of its simulated fleet.
async fn serve(settings: Settings, demo_devices: Option<usize>) -> anyhow::Result<()> {
    // Installed first, so a SIGTERM during start-up also shuts down cleanly.
    let signal = tokio::spawn(wait_for_signal());
    let ca_file = settings
        .tls
        .as_ref()
        .and_then(|tls| tls.files.client_ca_file.clone());
    let data_dir = settings.data_dir().to_owned();
    let running = App::start(settings).await?;
    let simulation = match demo_devices {
        Some(devices) => {
            let credentials = demo::prepare(running.platform(), devices).await?;
            let tls = match (running.mqtt_tls_addr(), running.https_addr(), &ca_file) {
                (Some(mqtt_addr), Some(http_addr), Some(ca_file)) => Some(demo::TlsTour {
                    mqtt_addr,
                    http_addr,
                    ca_file,
                    data_dir: &data_dir,
                }),
                _ => None,
            };
            demo::print_tour(
                running.mqtt_addr(),
                running.http_addr(),
                devices,
                running.admin_token(),
                tls,
            );
            (devices > 0)
                .then(|| {
                    demo::start_simulation(running.stopping(), running.mqtt_addr(), credentials)
                })
                .transpose()?
        }
        None => None,
    };

    signal.await.context("the signal handler task failed")??;
    tracing::info!("shutting down: closing connections");
    let stopped = running.stop().await;
    if let Some(simulation) = simulation {
        let _ = simulation.await;
    }
    stopped
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
