//! Structured logs with `tracing`: human-readable by default, JSON lines on request.

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;
use crate::config::LogSettings;

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level`.
pub(crate) fn init(settings: &LogSettings) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(&directives)
            .with_context(|| format!("invalid RUST_LOG filter {directives:?}"))?,
        _ => EnvFilter::try_new(&settings.level).with_context(|| {
            format!(
                "invalid configuration: log.level {:?} is not a valid filter",
                settings.level
            )
        })?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    }
    .map_err(|error| anyhow::anyhow!("cannot install the logger: {error}"))
}
