//! `GET /api/v1/overview`: the fleet at a glance, for the dashboard's first page: how
//! many devices are online, open alarms by severity, messages per second.

use std::collections::BTreeMap;

use axum::extract::State;
use fleetwire_model::{AlarmStatus, Severity};
use serde::Serialize;

use crate::AppState;
use crate::auth::{Authorized, Viewer};
use crate::problem::Problem;

/// Device counts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct DeviceCounts {
    /// Registered devices.
    total: u64,
    /// Devices connected now.
    online: u64,
}

/// Open alarms by severity.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AlarmCounts {
    /// Active (not yet acknowledged) alarms by severity.
    #[schema(example = json!({"low": 0, "medium": 2, "high": 1, "critical": 0}))]
    active: BTreeMap<&'static str, u64>,
    /// Acknowledged (not yet cleared) alarms by severity.
    acknowledged: BTreeMap<&'static str, u64>,
}

/// Ingest rates.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = IngestRates)]
pub(crate) struct Rates {
    /// Messages accepted per second (MQTT publishes, HTTP bodies, line protocol
    /// requests), over the last ten seconds or so.
    messages_per_second: f64,
    /// Points written per second.
    points_per_second: f64,
}

/// The fleet at a glance.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Overview {
    /// Devices.
    devices: DeviceCounts,
    /// Open alarms.
    alarms: AlarmCounts,
    /// Ingest.
    ingest: Rates,
}

/// The fleet at a glance: devices online, open alarms by severity, ingest rates.
#[utoipa::path(
    get,
    path = "/api/v1/overview",
    tag = "overview",
    responses((status = 200, description = "The fleet at a glance", body = Overview))
)]
pub(crate) async fn overview(
    _: Authorized<Viewer>,
    State(app): State<AppState>,
) -> Result<axum::Json<Overview>, Problem> {
    let (total, online) = app.platform.count_devices().await?;
    let severities = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];
    let empty = || -> BTreeMap<&'static str, u64> {
        severities
            .iter()
            .map(|severity| (severity.as_str(), 0))
            .collect()
    };
    let (mut active, mut acknowledged) = (empty(), empty());
    for (severity, status, count) in app.platform.alarm_counts().await? {
        let counts = match status {
            AlarmStatus::Active => &mut active,
            AlarmStatus::Acknowledged => &mut acknowledged,
            AlarmStatus::Cleared => continue,
        };
        *counts.entry(severity.as_str()).or_default() += count;
    }
    let rates = app.platform.ingest_rates();
    Ok(axum::Json(Overview {
        devices: DeviceCounts { total, online },
        alarms: AlarmCounts {
            active,
            acknowledged,
        },
        ingest: Rates {
            messages_per_second: rates.messages_per_second,
            points_per_second: rates.points_per_second,
        },
    }))
}
