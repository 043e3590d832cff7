//! `/api/v1/devices/{id}/telemetry`: write telemetry over HTTP (the payloads of the MQTT
//! topic), read the latest values, raw points and windowed aggregates.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use fleetwire_model::DeviceId;
use fleetwire_platform::{Aggregation, TelemetryQuery};
use fleetwire_time::Timestamp;
use serde::Serialize;

use crate::AppState;
use crate::auth::{Authorized, Operator, Viewer};
use crate::constraints::{
    AggregationName, DurationText, FieldList, Instant, PlainId, TelemetryPayload,
};
use crate::devices::DevicePath;
use crate::params::{parse_duration, parse_instant};
use crate::problem::{Problem, RawBody};

/// Largest body of `POST .../telemetry`.
pub(crate) const TELEMETRY_BODY_LIMIT: usize = 1024 * 1024;

/// The newest value of one field.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct LatestValue {
    /// When it was measured, in milliseconds since the epoch.
    #[schema(example = 1_714_566_896_789_i64)]
    ts: i64,
    /// The value (booleans are 1 and 0).
    #[schema(example = 21.5)]
    value: f64,
}

/// Points of one field.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Series {
    /// The field.
    #[schema(example = "temperature")]
    field: String,
    /// `[ts, value]` pairs, oldest first; with `agg`, `ts` is the start of the window.
    #[schema(value_type = Vec<Vec<f64>>, example = json!([[1714566890000_i64, 21.5], [1714566900000_i64, 21.6]]))]
    points: Vec<(i64, f64)>,
}

/// The answer of a telemetry query.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct SeriesSet {
    /// One series per field asked for (every field of the device when none was).
    series: Vec<Series>,
}

/// What a telemetry write stored.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Written {
    /// Points written (one per field per row).
    #[schema(example = 4)]
    points: usize,
}

/// The newest value of every field of a device.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{id}/telemetry/latest",
    tag = "telemetry",
    params(("id" = inline(PlainId), Path, description = "Device id")),
    responses(
        (status = 200, description = "Field name → newest value", body = BTreeMap<String, LatestValue>,
            example = json!({"temperature": {"ts": 1714566896789_i64, "value": 21.5}})),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
pub(crate) async fn latest(
    _: Authorized<Viewer>,
    State(app): State<AppState>,
    DevicePath(id): DevicePath,
) -> Result<axum::Json<BTreeMap<String, LatestValue>>, Problem> {
    let latest = app
        .platform
        .latest_telemetry(&id)
        .await?
        .into_iter()
        .map(|(field, sample)| {
            (
                field,
                LatestValue {
                    ts: sample.timestamp.as_millis(),
                    value: sample.value,
                },
            )
        })
        .collect();
    Ok(axum::Json(latest))
}

/// The query of `GET .../telemetry`, validated.
pub(crate) struct Query {
    fields: Option<Vec<String>>,
    from: Option<i64>,
    to: Option<i64>,
    aggregation: Option<Aggregation>,
    every: Option<Duration>,
}

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        let mut query = Query {
            fields: None,
            from: None,
            to: None,
            aggregation: None,
            every: None,
        };
        let text = parts.uri.query().unwrap_or_default();
        for (name, value) in form_urlencoded::parse(text.as_bytes()) {
            let bad = |detail: String| Problem::bad_request(format!("{name}: {detail}"));
            match &*name {
                "fields" => {
                    let fields: Vec<String> = value
                        .split(',')
                        .map(str::trim)
                        .filter(|field| !field.is_empty())
                        .map(str::to_owned)
                        .collect();
                    if fields.is_empty() {
                        return Err(bad(
                            "expected field names separated by commas, got nothing".to_owned()
                        ));
                    }
                    query.fields.get_or_insert_with(Vec::new).extend(fields);
                }
                "from" => query.from = Some(parse_instant(&value).map_err(bad)?),
                "to" => query.to = Some(parse_instant(&value).map_err(bad)?),
                "agg" => {
                    query.aggregation = Some(value.parse().map_err(|_| {
                        bad(format!(
                            "expected avg, min, max, sum, count, first or last, got {value:?}"
                        ))
                    })?)
                }
                "every" => {
                    let every = parse_duration(&value).map_err(bad)?;
                    if every.is_zero() {
                        return Err(bad("expected a duration of at least 1ms, got 0".to_owned()));
                    }
                    query.every = Some(every);
                }
                other => {
                    return Err(Problem::bad_request(format!(
                        "unknown query parameter {other:?}: expected fields, from, to, agg or every"
                    )));
                }
            }
        }
        match (query.aggregation, query.every) {
            (Some(_), None) => {
                return Err(Problem::bad_request(
                    "agg needs every: the window length, such as every=1m",
                ));
            }
            (None, Some(_)) => {
                return Err(Problem::bad_request(
                    "every needs agg: how to combine each window, such as agg=avg",
                ));
            }
            _ => {}
        }
        Ok(query)
    }
}

/// Raw points, or windowed aggregates, of some fields of a device over a time range.
///
/// `from` and `to` are milliseconds since the epoch or RFC 3339; the range is
/// `from <= ts < to`, by default the last hour. With `agg` and `every`, windows are
/// aligned to multiples of `every` since the epoch and stamped with their start.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{id}/telemetry",
    tag = "telemetry",
    params(
        ("id" = inline(PlainId), Path, description = "Device id"),
        ("fields" = inline(Option<FieldList>), Query, description = "Comma-separated field names (default: every field)"),
        ("from" = inline(Option<Instant>), Query, description = "Start, inclusive: ms since the epoch or RFC 3339 (default: `to` minus one hour); not after `to` (else 400)"),
        ("to" = inline(Option<Instant>), Query, description = "End, exclusive (default: now)"),
        ("agg" = inline(Option<AggregationName>), Query, description = "avg, min, max, sum, count, first or last; needs `every` (else 400)"),
        ("every" = inline(Option<DurationText>), Query, description = "Window length such as 10s, 5m, 1h, at least 1ms; needs `agg` (else 400); at most 1,000,000 windows over the range (else 422)"),
    ),
    responses(
        (status = 200, description = "One series per field", body = SeriesSet),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 422, response = crate::openapi::ValidationFailed),
    )
)]
pub(crate) async fn query(
    _: Authorized<Viewer>,
    State(app): State<AppState>,
    DevicePath(id): DevicePath,
    query: Query,
) -> Result<Response, Problem> {
    let query = TelemetryQuery {
        fields: query.fields,
        from: query.from.map(Timestamp::from_millis),
        to: query.to.map(Timestamp::from_millis),
        windows: query.aggregation.zip(query.every),
    };
    let series: Vec<Series> = app
        .platform
        .query_telemetry(&id, query)
        .await?
        .into_iter()
        .map(|series| Series {
            field: series.field,
            points: series
                .samples
                .into_iter()
                .map(|sample| (sample.timestamp.as_millis(), sample.value))
                .collect(),
        })
        .collect();
    Ok(json_series(&series))
}

/// Writes the answer by hand: a day of points is 86,400 pairs, and formatting them
/// directly into one buffer is several times faster than a serializer's visitor.
fn json_series(series: &[Series]) -> Response {
    let points: usize = series.iter().map(|series| series.points.len()).sum();
    let mut body = String::with_capacity(32 + points * 28);
    body.push_str("{\"series\":[");
    for (index, series) in series.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        body.push_str("{\"field\":");
        body.push_str(&serde_json::to_string(&series.field).unwrap_or_else(|_| "\"\"".into()));
        body.push_str(",\"points\":[");
        for (position, (ts, value)) in series.points.iter().enumerate() {
            if position > 0 {
                body.push(',');
            }
            if value.is_finite() {
                let _ = write!(body, "[{ts},{value}]");
            } else {
                let _ = write!(body, "[{ts},null]");
            }
        }
        body.push_str("]}");
    }
    body.push_str("]}");
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Who may write a device's telemetry: an API token with the operator role, or the
/// device itself with HTTP Basic authentication (user name = device id, password = its
/// secret), as over MQTT.
pub(crate) struct TelemetryWriter;

impl FromRequestParts<AppState> for TelemetryWriter {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let basic = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .map(|(_, credentials)| credentials.trim().to_owned());
        let Some(encoded) = basic else {
            Authorized::<Operator>::from_request_parts(parts, state).await?;
            return Ok(TelemetryWriter);
        };
        let DevicePath(id) = DevicePath::from_request_parts(parts, state).await?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| {
                Problem::unauthorized("Basic credentials are not base64 of user:password")
            })?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| Problem::unauthorized("Basic credentials are not user:password"))?;
        let user =
            DeviceId::new(user).map_err(|_| Problem::unauthorized("bad device id or secret"))?;
        if !state
            .platform
            .verify_device_secret(&user, password.as_bytes())
            .await?
        {
            return Err(Problem::unauthorized("bad device id or secret"));
        }
        if user != id {
            return Err(Problem::forbidden(format!(
                "device {user} may write only its own telemetry, not {id}'s"
            )));
        }
        Ok(TelemetryWriter)
    }
}

/// Writes telemetry of a device: the payloads of `devices/{id}/telemetry` (an object of
/// fields with an optional `ts` in ms, an array of them, or the flat form with
/// `device_id` and `timestamp` in seconds). Answers once the points are durable; a
/// payload with a field that cannot be stored is refused whole.
#[utoipa::path(
    post,
    path = "/api/v1/devices/{id}/telemetry",
    operation_id = "write_telemetry",
    tag = "telemetry",
    params(("id" = inline(PlainId), Path, description = "Device id")),
    request_body(content = inline(TelemetryPayload), content_type = "application/json",
        example = json!({"temperature": 21.5, "humidity": 40.2, "ts": 1714566896789_i64})),
    responses(
        (status = 200, description = "Stored", body = Written),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 503, response = crate::openapi::Unavailable),
    ),
    security(("bearer" = []), ("device" = []))
)]
pub(crate) async fn write(
    _: TelemetryWriter,
    State(app): State<AppState>,
    DevicePath(id): DevicePath,
    RawBody(body): RawBody,
) -> Result<axum::Json<Written>, Problem> {
    let report = app.platform.ingest_json(&id, &body).await?;
    Ok(axum::Json(Written {
        points: report.points,
    }))
}
