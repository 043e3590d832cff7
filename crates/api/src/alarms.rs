//! `/api/v1/alarms`: list (filtered, newest first), show, acknowledge and clear alarms.
//! Alarms are opened and cleared by rules; people acknowledge them (and may clear them:
//! if the rule's condition still holds, it raises a new one).

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use fleetwire_model::{Alarm, AlarmFilter, AlarmId, AlarmStatus, DeviceId, RuleId, Severity};
use fleetwire_time::rfc3339;
use serde::Serialize;

use crate::AppState;
use crate::auth::{Authorized, Operator, Viewer};
use crate::constraints::{AlarmStatusFilter, Cursor, PlainId, SeverityName};
use crate::params::parse_limit;
use crate::problem::Problem;

/// An alarm, as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Alarm)]
pub(crate) struct AlarmBody {
    /// Its id.
    #[schema(example = "alm-3f2a9c0d1e4b5a67")]
    id: String,
    /// The rule that raised it.
    #[schema(example = "overheat")]
    rule_id: String,
    /// The rule's name when it was raised.
    rule_name: String,
    /// The device.
    device_id: String,
    /// `low`, `medium`, `high` or `critical`.
    severity: String,
    /// `active`, `acknowledged` or `cleared`.
    status: String,
    /// The values that raised it, by field.
    #[schema(example = json!({"temperature": 31.2}))]
    values: BTreeMap<String, f64>,
    /// The values when the rule cleared it (empty when cleared by hand or still open).
    clear_values: BTreeMap<String, f64>,
    /// When it was raised (RFC 3339).
    created_at: String,
    /// When it last changed (RFC 3339).
    updated_at: String,
    /// When it was acknowledged, and by whom (a token's name).
    acknowledged_at: Option<String>,
    /// Who acknowledged it.
    acknowledged_by: Option<String>,
    /// When it was cleared.
    cleared_at: Option<String>,
    /// Who cleared it: a token's name, or `rule`.
    cleared_by: Option<String>,
}

impl From<&Alarm> for AlarmBody {
    fn from(alarm: &Alarm) -> AlarmBody {
        AlarmBody {
            id: alarm.id.as_str().to_owned(),
            rule_id: alarm.rule_id.as_str().to_owned(),
            rule_name: alarm.rule_name.clone(),
            device_id: alarm.device_id.as_str().to_owned(),
            severity: alarm.severity.as_str().to_owned(),
            status: alarm.status.as_str().to_owned(),
            values: alarm.values.iter().cloned().collect(),
            clear_values: alarm.clear_values.iter().cloned().collect(),
            created_at: rfc3339(alarm.created_at),
            updated_at: rfc3339(alarm.updated_at),
            acknowledged_at: alarm.acknowledged_at.map(rfc3339),
            acknowledged_by: alarm.acknowledged_by.clone(),
            cleared_at: alarm.cleared_at.map(rfc3339),
            cleared_by: alarm.cleared_by.clone(),
        }
    }
}

/// One page of alarms.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AlarmPage {
    /// The alarms of this page, newest first.
    items: Vec<AlarmBody>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// The query of `GET /api/v1/alarms`.
pub(crate) struct AlarmQuery(AlarmFilter);

impl<S: Send + Sync> FromRequestParts<S> for AlarmQuery {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        let mut filter = AlarmFilter::default();
        let query = parts.uri.query().unwrap_or_default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            let bad = |detail: String| Problem::bad_request(format!("{name}: {detail}"));
            match &*name {
                "status" => {
                    if value == "open" {
                        filter.open_only = true;
                    } else {
                        filter.status = Some(AlarmStatus::parse(&value).map_err(|_| {
                            bad(format!(
                                "expected active, acknowledged, cleared or open, got {value:?}"
                            ))
                        })?);
                    }
                }
                "device" => {
                    filter.device = Some(
                        DeviceId::new(value.as_ref()).map_err(|error| bad(error.to_string()))?,
                    )
                }
                "rule" => {
                    filter.rule =
                        Some(RuleId::new(value.as_ref()).map_err(|error| bad(error.to_string()))?)
                }
                "severity" => {
                    filter.severity =
                        Some(Severity::parse(&value).map_err(|error| bad(error.to_string()))?)
                }
                "limit" => filter.limit = parse_limit(&value)?,
                "cursor" => filter.cursor = Some(value.into_owned()),
                other => {
                    return Err(Problem::bad_request(format!(
                        "unknown query parameter {other:?}: expected status, device, rule, \
                         severity, limit or cursor"
                    )));
                }
            }
        }
        Ok(AlarmQuery(filter))
    }
}

/// The alarm id of the path.
pub(crate) struct AlarmPath(AlarmId);

impl<S: Send + Sync> FromRequestParts<S> for AlarmPath {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| Problem::bad_request(rejection.body_text()))?;
        AlarmId::new(id)
            .map(AlarmPath)
            .map_err(|error| Problem::bad_request(error.to_string()))
    }
}

/// Lists alarms, newest first, filtered by status (`active`, `acknowledged`, `cleared`,
/// or `open` for the first two), device, rule and severity.
#[utoipa::path(
    get,
    path = "/api/v1/alarms",
    tag = "alarms",
    params(
        ("status" = inline(Option<AlarmStatusFilter>), Query, description = "active, acknowledged, cleared, or open (active or acknowledged)"),
        ("device" = inline(Option<PlainId>), Query, description = "Only this device's alarms"),
        ("rule" = inline(Option<PlainId>), Query, description = "Only this rule's alarms"),
        ("severity" = inline(Option<SeverityName>), Query, description = "low, medium, high or critical"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)"),
        ("cursor" = inline(Option<Cursor>), Query, description = "The `next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "One page of alarms", body = AlarmPage),
        (status = 400, response = crate::openapi::BadRequest),
    )
)]
pub(crate) async fn list_alarms(
    _: Authorized<Viewer>,
    State(app): State<AppState>,
    AlarmQuery(filter): AlarmQuery,
) -> Result<axum::Json<AlarmPage>, Problem> {
    let page = app
        .platform
        .list_alarms(&filter)
        .await
        .map_err(|error| match error {
            fleetwire_platform::Error::Invalid(message) => Problem::bad_request(message),
            error => Problem::from(error),
        })?;
    Ok(axum::Json(AlarmPage {
        items: page.items.iter().map(AlarmBody::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Shows one alarm.
#[utoipa::path(
    get,
    path = "/api/v1/alarms/{id}",
    tag = "alarms",
    params(("id" = inline(PlainId), Path, description = "Alarm id")),
    responses(
        (status = 200, description = "The alarm", body = AlarmBody),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
pub(crate) async fn get_alarm(
    _: Authorized<Viewer>,
    State(app): State<AppState>,
    AlarmPath(id): AlarmPath,
) -> Result<axum::Json<AlarmBody>, Problem> {
    Ok(axum::Json(AlarmBody::from(&app.platform.alarm(&id).await?)))
}

/// Acknowledges an active alarm (acknowledging it again changes nothing). The request has
/// no body.
#[utoipa::path(
    post,
    path = "/api/v1/alarms/{id}/ack",
    tag = "alarms",
    params(("id" = inline(PlainId), Path, description = "Alarm id")),
    responses(
        (status = 200, description = "The acknowledged alarm", body = AlarmBody),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
    )
)]
pub(crate) async fn acknowledge_alarm(
    caller: Authorized<Operator>,
    State(app): State<AppState>,
    AlarmPath(id): AlarmPath,
) -> Result<axum::Json<AlarmBody>, Problem> {
    let alarm = app
        .platform
        .acknowledge_alarm(&id, &caller.token.name)
        .await?;
    tracing::info!(alarm = %id, by = %caller.token.name, "alarm acknowledged");
    Ok(axum::Json(AlarmBody::from(&alarm)))
}

/// Clears an alarm by hand. If its rule's condition still holds, the rule raises a new
/// alarm. The request has no body.
#[utoipa::path(
    post,
    path = "/api/v1/alarms/{id}/clear",
    tag = "alarms",
    params(("id" = inline(PlainId), Path, description = "Alarm id")),
    responses(
        (status = 200, description = "The cleared alarm", body = AlarmBody),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 409, response = crate::openapi::Conflict),
    )
)]
pub(crate) async fn clear_alarm(
    caller: Authorized<Operator>,
    State(app): State<AppState>,
    AlarmPath(id): AlarmPath,
) -> Result<axum::Json<AlarmBody>, Problem> {
    let alarm = app.platform.clear_alarm(&id, &caller.token.name).await?;
    tracing::info!(alarm = %id, by = %caller.token.name, "alarm cleared");
    Ok(axum::Json(AlarmBody::from(&alarm)))
}
