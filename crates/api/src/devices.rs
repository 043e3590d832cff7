//! `/api/v1/devices`: register, list, show, change and delete devices, and issue their
//! MQTT credentials. The registry's types are mapped to JSON bodies here.

use std::collections::BTreeMap;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleetwire_model::{Device, DeviceFilter, DeviceId, DevicePatch, NewDevice};
use fleetwire_time::rfc3339;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{Authorized, Operator, Viewer};
use crate::constraints::{
    self, Cursor, DeviceName, DeviceType, IdPrefix, LabelFilter, Labels, PlainId,
};
use crate::problem::{Json, Problem};

/// Largest page a listing returns.
const MAX_LIMIT: u32 = 1000;

/// A device, as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Device)]
pub(crate) struct DeviceBody {
    /// Its id, also its MQTT user name: 1-128 characters of `A-Z a-z 0-9 _ . -`.
    #[schema(example = "sensor-0001")]
    id: String,
    /// Human-readable name; empty when not given.
    #[schema(example = "Boiler room")]
    name: String,
    /// Device type; empty when not given.
    #[serde(rename = "type")]
    #[schema(example = "sensor")]
    device_type: String,
    /// Free-form labels.
    #[schema(example = json!({"site": "lyon", "floor": "2"}))]
    labels: BTreeMap<String, String>,
    /// When it was registered (RFC 3339, UTC, milliseconds).
    #[schema(example = "2024-05-01T12:34:56.789Z")]
    created_at: String,
    /// When it last connected or disconnected (RFC 3339); `null` when never seen.
    #[schema(example = "2024-05-01T13:00:00.000Z")]
    last_seen: Option<String>,
    /// Whether it is connected to the broker now.
    online: bool,
    /// Attributes the device reported on `devices/{id}/attributes`, merged.
    #[schema(value_type = Object)]
    attributes: serde_json::Map<String, serde_json::Value>,
    /// Whether it has MQTT credentials (see `POST /api/v1/devices/{id}/credentials`).
    has_credentials: bool,
    /// The last payload of this device that was rejected, and why; `null` when none.
    /// Kept across restarts (written to the registry within a moment of the rejection).
    last_ingest_error: Option<IngestErrorBody>,
}

/// A rejected payload.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = IngestError)]
pub(crate) struct IngestErrorBody {
    /// When (RFC 3339).
    at: String,
    /// `mqtt`, `http` or `line_protocol`.
    source: String,
    /// Why, as the sender was told.
    #[schema(example = "field \"status\": expected a number or boolean, got a string")]
    message: String,
}

impl From<Device> for DeviceBody {
    fn from(device: Device) -> DeviceBody {
        DeviceBody {
            last_ingest_error: device.last_ingest_error.map(|stored| IngestErrorBody {
                at: rfc3339(stored.at),
                source: stored.source,
                message: stored.message,
            }),
            id: device.id.as_str().to_owned(),
            name: device.name,
            device_type: device.device_type,
            labels: device.labels,
            created_at: rfc3339(device.created_at),
            last_seen: device.last_seen.map(rfc3339),
            online: device.online,
            attributes: device.attributes,
            has_credentials: device.has_credentials,
        }
    }
}

/// What `POST /api/v1/devices` takes; every field is optional.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewDevice)]
pub(crate) struct CreateDevice {
    /// Chosen id (1-128 characters of `A-Z a-z 0-9 _ . -`); generated when absent.
    #[schema(value_type = Option<PlainId>, inline, example = "sensor-0001")]
    id: Option<String>,
    /// Name, at most 256 characters.
    #[schema(value_type = Option<DeviceName>, inline, example = "Boiler room")]
    name: Option<String>,
    /// Type, at most 64 characters.
    #[serde(rename = "type")]
    #[schema(value_type = Option<DeviceType>, inline, example = "sensor")]
    device_type: Option<String>,
    /// Labels: at most 64; keys 1-64 characters, values at most 256.
    #[schema(value_type = Option<Labels>, inline, example = json!({"site": "lyon"}))]
    labels: Option<BTreeMap<String, String>>,
}

/// What `PATCH /api/v1/devices/{id}` takes: fields present are changed, absent ones
/// (or `null`) are left as they are.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = DevicePatch)]
pub(crate) struct UpdateDevice {
    /// New name, at most 256 characters.
    #[schema(value_type = Option<DeviceName>, inline)]
    name: Option<String>,
    /// New type, at most 64 characters.
    #[serde(rename = "type")]
    #[schema(value_type = Option<DeviceType>, inline)]
    device_type: Option<String>,
    /// New labels, replacing all the current ones.
    #[schema(value_type = Option<Labels>, inline)]
    labels: Option<BTreeMap<String, String>>,
}

/// One page of devices.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = DevicePage)]
pub(crate) struct DevicePage {
    /// The devices of this page, ordered by id.
    items: Vec<DeviceBody>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// A device's MQTT login, shown once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Credentials {
    /// The MQTT user name: the device id.
    #[schema(example = "sensor-0001")]
    username: String,
    /// The MQTT password: the device secret. It is not stored in clear and cannot be
    /// shown again.
    password: String,
}

/// The device id of the path, validated: 400 when it breaks the syntax.
pub(crate) struct DevicePath(pub(crate) DeviceId);

impl<S: Send + Sync> FromRequestParts<S> for DevicePath {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| Problem::bad_request(rejection.body_text()))?;
        DeviceId::new(id)
            .map(DevicePath)
            .map_err(|error| Problem::bad_request(error.to_string()))
    }
}

/// The query of `GET /api/v1/devices`, as a registry filter: 400 for an unknown
/// parameter or a bad value.
pub(crate) struct ListQuery(DeviceFilter);

impl<S: Send + Sync> FromRequestParts<S> for ListQuery {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        let mut filter = DeviceFilter::default();
        let mut label_filters = 0;
        let query = parts.uri.query().unwrap_or_default();
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            match &*name {
                "type" => filter.device_type = Some(value.into_owned()),
                "label" => {
                    // Counted as given, so that the document's `maxItems` holds whether
                    // or not keys repeat.
                    label_filters += 1;
                    if label_filters > constraints::MAX_LABELS {
                        return Err(Problem::bad_request(format!(
                            "label: expected at most {} label filters",
                            constraints::MAX_LABELS
                        )));
                    }
                    let Some((key, label)) = value.split_once(':') else {
                        return Err(Problem::bad_request(format!(
                            "label filter {value:?}: expected key:value"
                        )));
                    };
                    filter.labels.insert(key.to_owned(), label.to_owned());
                }
                "limit" => {
                    filter.limit = value
                        .parse()
                        .ok()
                        .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                        .ok_or_else(|| {
                            Problem::bad_request(format!(
                                "limit {value:?}: expected a number from 1 to {MAX_LIMIT}"
                            ))
                        })?;
                }
                "cursor" => filter.cursor = Some(value.into_owned()),
                "prefix" => filter.prefix = Some(value.into_owned()),
                other => {
                    return Err(Problem::bad_request(format!(
                        "unknown query parameter {other:?}: expected type, label, prefix, limit \
                         or cursor"
                    )));
                }
            }
        }
        Ok(ListQuery(filter))
    }
}

/// Registers a device.
#[utoipa::path(
    post,
    path = "/api/v1/devices",
    tag = "devices",
    request_body = CreateDevice,
    responses(
        (status = 201, description = "The device was registered", body = DeviceBody,
            headers(("Location" = String, description = "The device's URL path"))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::ValidationFailed),
    )
)]
pub(crate) async fn create_device(
    caller: Authorized<Operator>,
    State(app): State<AppState>,
    Json(body): Json<CreateDevice>,
) -> Result<Response, Problem> {
    let new = NewDevice {
        id: body.id.map(DeviceId::new).transpose()?,
        name: body.name,
        device_type: body.device_type,
        labels: body.labels.unwrap_or_default(),
    };
    let device = app.platform.create_device(new).await?;
    tracing::info!(device = %device.id, by = %caller.token.name, "device registered");
    let location = HeaderValue::try_from(format!("/api/v1/devices/{}", device.id))
        .map_err(|_| Problem::internal())?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(DeviceBody::from(device)),
    )
        .into_response())
}

/// Lists devices ordered by id, one page at a time, optionally filtered.
#[utoipa::path(
    get,
    path = "/api/v1/devices",
    tag = "devices",
    params(
        ("type" = Option<String>, Query, description = "Only devices of this type"),
        ("label" = inline(Option<LabelFilter>), Query, explode = true,
            description = "Only devices with this label, as `key:value`; repeat for several \
                           (all must match, at most 64)"),
        ("prefix" = inline(Option<IdPrefix>), Query, description = "Only devices whose id starts with this"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "Page size (default 100)"),
        ("cursor" = inline(Option<Cursor>), Query,
            description = "The `next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "One page of devices", body = DevicePage),
        (status = 400, response = crate::openapi::BadRequest),
    )
)]
pub(crate) async fn list_devices(
    _: Authorized<Viewer>,
    State(app): State<AppState>,
    ListQuery(filter): ListQuery,
) -> Result<axum::Json<DevicePage>, Problem> {
    // The platform checks the filter too (number of labels, cursor): a bad one is a bad
    // query (400), not a bad body.
    let page = app.platform.list_devices(&filter).await?;
    Ok(axum::Json(DevicePage {
        items: page.items.into_iter().map(DeviceBody::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Shows one device.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{id}",
    tag = "devices",
    params(("id" = inline(PlainId), Path, description = "Device id")),
    responses(
        (status = 200, description = "The device", body = DeviceBody),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
pub(crate) async fn get_device(
    _: Authorized<Viewer>,
    State(app): State<AppState>,
    DevicePath(id): DevicePath,
) -> Result<axum::Json<DeviceBody>, Problem> {
    let device = app.platform.device(&id).await?;
    Ok(axum::Json(DeviceBody::from(device)))
}

/// Changes a device's name, type or labels.
#[utoipa::path(
    patch,
    path = "/api/v1/devices/{id}",
    tag = "devices",
    params(("id" = inline(PlainId), Path, description = "Device id")),
    request_body = UpdateDevice,
    responses(
        (status = 200, description = "The changed device", body = DeviceBody),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::ValidationFailed),
    )
)]
pub(crate) async fn update_device(
    caller: Authorized<Operator>,
    State(app): State<AppState>,
    DevicePath(id): DevicePath,
    Json(body): Json<UpdateDevice>,
) -> Result<axum::Json<DeviceBody>, Problem> {
    let patch = DevicePatch {
        name: body.name,
        device_type: body.device_type,
        labels: body.labels,
    };
    let device = app.platform.update_device(&id, patch).await?;
    tracing::info!(device = %id, by = %caller.token.name, "device changed");
    Ok(axum::Json(DeviceBody::from(device)))
}

/// Deletes a device and its credentials, and disconnects it from the broker.
#[utoipa::path(
    delete,
    path = "/api/v1/devices/{id}",
    tag = "devices",
    params(("id" = inline(PlainId), Path, description = "Device id")),
    responses(
        (status = 204, description = "The device was deleted"),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
pub(crate) async fn delete_device(
    caller: Authorized<Operator>,
    State(app): State<AppState>,
    DevicePath(id): DevicePath,
) -> Result<StatusCode, Problem> {
    let connections = app.platform.delete_device(&id).await?;
    tracing::info!(device = %id, by = %caller.token.name, connections, "device deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Issues new MQTT credentials for a device: the old ones stop working and the device is
/// disconnected. The password is shown only in this answer. The request has no body.
#[utoipa::path(
    post,
    path = "/api/v1/devices/{id}/credentials",
    tag = "devices",
    params(("id" = inline(PlainId), Path, description = "Device id")),
    responses(
        (status = 201, description = "New credentials; the password is not shown again",
            body = Credentials),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
pub(crate) async fn issue_credentials(
    caller: Authorized<Operator>,
    State(app): State<AppState>,
    DevicePath(id): DevicePath,
) -> Result<Response, Problem> {
    let (password, connections) = app.platform.issue_credentials(&id).await?;
    tracing::info!(
        device = %id,
        by = %caller.token.name,
        connections,
        "device credentials issued"
    );
    let credentials = Credentials {
        username: id.as_str().to_owned(),
        password,
    };
    Ok((
        StatusCode::CREATED,
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(credentials),
    )
        .into_response())
}
