//! `/api/v1/devices/{id}/commands`: send a command to a device and follow it: `pending`
//! (stored, published), `delivered` (the device acknowledged the `PUBLISH`), then
//! `succeeded` or `failed` (its answer) or `expired` (no answer in time).

use std::time::Duration;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleetwire_model::{Command, CommandId, DeviceId};
use fleetwire_platform::{CommandRequest, DEFAULT_COMMAND_TIMEOUT};
use fleetwire_time::rfc3339;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{Authorized, Operator, Viewer};
use crate::constraints::{AnyJson, CommandName, Cursor, PlainId};
use crate::devices::DevicePath;
use crate::params::Pagination;
use crate::problem::{Json, Problem};

/// What `POST .../commands` takes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewCommand)]
pub(crate) struct CommandInput {
    /// The command's name: 1-128 characters of `A-Z a-z 0-9 _ . -`.
    #[schema(value_type = CommandName, inline, example = "reboot")]
    name: String,
    /// Its parameters (a JSON object; `null` or absent for none).
    #[serde(default)]
    #[schema(value_type = Option<Object>, example = json!({"delay_s": 5}))]
    params: serde_json::Value,
    /// Seconds the device has to answer (1 to 604800, default 30).
    #[schema(minimum = 1, maximum = 604_800, example = 30)]
    timeout_s: Option<f64>,
}

/// A command, as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Command)]
pub(crate) struct CommandBody {
    /// Its id; also the last level of its topic, `devices/{device}/commands/{id}`.
    #[schema(example = "cmd-8c1d2e3f4a5b6c7d")]
    id: String,
    /// The device.
    device_id: String,
    /// Its name.
    name: String,
    /// Its parameters.
    #[schema(value_type = Object)]
    params: serde_json::Value,
    /// `pending`, `delivered`, `succeeded`, `failed` or `expired`.
    status: String,
    /// What the device answered (`result` of its response: any JSON value); `null`
    /// until then.
    #[schema(value_type = AnyJson, inline)]
    result: Option<serde_json::Value>,
    /// When it was sent (RFC 3339).
    created_at: String,
    /// When it last changed.
    updated_at: String,
    /// When it expires without an answer.
    expires_at: String,
    /// When the device acknowledged it.
    delivered_at: Option<String>,
    /// When the device answered (or it expired).
    completed_at: Option<String>,
}

impl From<&Command> for CommandBody {
    fn from(command: &Command) -> CommandBody {
        CommandBody {
            id: command.id.as_str().to_owned(),
            device_id: command.device_id.as_str().to_owned(),
            name: command.name.clone(),
            params: command.params.clone(),
            status: command.status.as_str().to_owned(),
            result: command.result.clone(),
            created_at: rfc3339(command.created_at),
            updated_at: rfc3339(command.updated_at),
            expires_at: rfc3339(command.expires_at),
            delivered_at: command.delivered_at.map(rfc3339),
            completed_at: command.completed_at.map(rfc3339),
        }
    }
}

/// One page of commands.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CommandPage {
    /// The commands of this page, newest first.
    items: Vec<CommandBody>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    next_cursor: Option<String>,
}

/// The device and command ids of the path.
pub(crate) struct CommandPath(DeviceId, CommandId);

impl<S: Send + Sync> FromRequestParts<S> for CommandPath {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Path((device, command)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| Problem::bad_request(rejection.body_text()))?;
        let device =
            DeviceId::new(device).map_err(|error| Problem::bad_request(error.to_string()))?;
        let command =
            CommandId::new(command).map_err(|error| Problem::bad_request(error.to_string()))?;
        Ok(CommandPath(device, command))
    }
}

/// Sends a command to a device: published at QoS 1 on `devices/{id}/commands/{command id}`
/// as `{"id", "name", "params"}`. A device that is offline gets it when it is back (and
/// subscribed), unless it expired first. The device answers on
/// `devices/{id}/commands/{command id}/response` with `{"status": "ok" | "error",
/// "result": ...}`.
#[utoipa::path(
    post,
    path = "/api/v1/devices/{id}/commands",
    tag = "commands",
    params(("id" = inline(PlainId), Path, description = "Device id")),
    request_body = CommandInput,
    responses(
        (status = 202, description = "Sent; follow it at the Location", body = CommandBody,
            headers(("Location" = String, description = "The command's URL path"))),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::ValidationFailed),
    )
)]
pub(crate) async fn send_command(
    caller: Authorized<Operator>,
    State(app): State<AppState>,
    DevicePath(id): DevicePath,
    Json(body): Json<CommandInput>,
) -> Result<Response, Problem> {
    let timeout = match body.timeout_s {
        None => DEFAULT_COMMAND_TIMEOUT,
        Some(seconds) if seconds.is_finite() && (1.0..=604_800.0).contains(&seconds) => {
            Duration::from_secs_f64(seconds)
        }
        Some(seconds) => {
            return Err(Problem::validation(format!(
                "timeout_s: expected 1 to 604800 seconds, got {seconds}"
            )));
        }
    };
    let params = match body.params {
        serde_json::Value::Null => serde_json::Value::Object(serde_json::Map::new()),
        params @ serde_json::Value::Object(_) => params,
        other => {
            return Err(Problem::validation(format!(
                "params: expected a JSON object, got {other}"
            )));
        }
    };
    let command = app
        .platform
        .send_command(
            &id,
            CommandRequest {
                name: body.name,
                params,
                timeout,
            },
        )
        .await?;
    tracing::info!(device = %id, command = %command.id, name = %command.name, by = %caller.token.name, "command sent");
    let location = HeaderValue::try_from(format!("/api/v1/devices/{id}/commands/{}", command.id))
        .map_err(|_| Problem::internal())?;
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        axum::Json(CommandBody::from(&command)),
    )
        .into_response())
}

/// Shows one command of a device.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{id}/commands/{cmd}",
    tag = "commands",
    params(
        ("id" = inline(PlainId), Path, description = "Device id"),
        ("cmd" = inline(PlainId), Path, description = "Command id"),
    ),
    responses(
        (status = 200, description = "The command", body = CommandBody),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
pub(crate) async fn get_command(
    _: Authorized<Viewer>,
    State(app): State<AppState>,
    CommandPath(device, command): CommandPath,
) -> Result<axum::Json<CommandBody>, Problem> {
    let command = app.platform.command(&device, &command).await?;
    Ok(axum::Json(CommandBody::from(&command)))
}

/// Lists a device's commands, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/devices/{id}/commands",
    tag = "commands",
    params(
        ("id" = inline(PlainId), Path, description = "Device id"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)"),
        ("cursor" = inline(Option<Cursor>), Query, description = "The `next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "One page of commands", body = CommandPage),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
pub(crate) async fn list_commands(
    _: Authorized<Viewer>,
    State(app): State<AppState>,
    DevicePath(id): DevicePath,
    page: Pagination,
) -> Result<axum::Json<CommandPage>, Problem> {
    let page = app
        .platform
        .list_commands(&id, page.limit, page.cursor.as_deref())
        .await?;
    Ok(axum::Json(CommandPage {
        items: page.items.iter().map(CommandBody::from).collect(),
        next_cursor: page.next_cursor,
    }))
}
