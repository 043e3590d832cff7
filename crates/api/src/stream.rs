//! `GET /api/v1/stream`: the live stream over WebSocket. One JSON object per message,
//! each with `kind` (`telemetry`, `presence`, `alarm`, `command`) and `device_id`:
//!
//! ```text
//! {"kind":"telemetry","device_id":"d1","ts":1714566896789,"fields":{"temperature":21.5}}
//! {"kind":"presence","device_id":"d1","online":true,"ts":1714566896789}
//! {"kind":"alarm","device_id":"d1","alarm":{...as GET /api/v1/alarms/{id}...}}
//! {"kind":"command","device_id":"d1","command":{...as GET .../commands/{cmd}...}}
//! ```
//!
//! `?devices=a,b` and `?kinds=telemetry,alarm` filter. The token comes in the
//! `Authorization` header, or as `?token=` for browsers (which cannot set headers on a
//! WebSocket). A client that falls behind by more than the event buffer is sent
//! `{"kind":"lag","missed":N}` and closed, rather than making the server hold events for
//! it: it reconnects and reloads what it shows.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::Response;
use fleetwire_model::Role;
use fleetwire_platform::{Event, EventKinds, Subscription};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::broadcast::error::RecvError;

use crate::AppState;
use crate::alarms::AlarmBody;
use crate::commands::CommandBody;
use crate::problem::Problem;

/// How often an idle stream is pinged, so proxies keep it open and dead peers are noticed.
const PING_INTERVAL: Duration = Duration::from_secs(30);

/// Which events a client wants.
#[derive(Debug, Clone)]
pub(crate) struct Filter {
    devices: Option<HashSet<String>>,
    kinds: EventKinds,
}

impl Filter {
    fn wants_device(&self, device: &str) -> bool {
        self.devices
            .as_ref()
            .is_none_or(|devices| devices.contains(device))
    }
}

/// The stream's query: filters (or why they are wrong) and, for browsers, the token,
/// which is read even when the filters are wrong so that an unauthorized request is told
/// so first, as on every other route.
pub(crate) struct StreamQuery {
    filter: Result<Filter, Problem>,
    token: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for StreamQuery {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Self, std::convert::Infallible> {
        let query = parts.uri.query().unwrap_or_default();
        let token = form_urlencoded::parse(query.as_bytes())
            .filter(|(name, _)| name == "token")
            .last()
            .map(|(_, value)| value.into_owned());
        Ok(StreamQuery {
            filter: parse_filter(query),
            token,
        })
    }
}

/// The filters of the stream's query; the token is read apart.
fn parse_filter(query: &str) -> Result<Filter, Problem> {
    let mut filter = Filter {
        devices: None,
        kinds: EventKinds::ALL,
    };
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*name {
            "devices" => {
                filter.devices.get_or_insert_with(HashSet::new).extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|id| !id.is_empty())
                        .map(str::to_owned),
                );
            }
            "kinds" => {
                filter.kinds = EventKinds::NONE;
                for kind in value
                    .split(',')
                    .map(str::trim)
                    .filter(|kind| !kind.is_empty())
                {
                    match kind {
                        "telemetry" => filter.kinds.telemetry = true,
                        "presence" => filter.kinds.presence = true,
                        "alarm" => filter.kinds.alarm = true,
                        "command" => filter.kinds.command = true,
                        other => {
                            return Err(Problem::bad_request(format!(
                                "kinds: expected telemetry, presence, alarm or command, got {other:?}"
                            )));
                        }
                    }
                }
            }
            "token" => {}
            other => {
                return Err(Problem::bad_request(format!(
                    "unknown query parameter {other:?}: expected devices, kinds or token"
                )));
            }
        }
    }
    Ok(filter)
}

/// The live stream of events, as a WebSocket.
#[utoipa::path(
    get,
    path = "/api/v1/stream",
    tag = "stream",
    params(
        ("devices" = Option<String>, Query, description = "Only these devices (comma-separated)"),
        ("kinds" = inline(Option<crate::constraints::EventKindList>), Query, description = "Only these kinds (comma-separated): telemetry, presence, alarm, command"),
        ("token" = Option<String>, Query, description = "The API token, for clients that cannot send the Authorization header"),
    ),
    responses(
        (status = 101, description = "Switching to WebSocket: one JSON event per text message"),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 426, response = crate::openapi::UpgradeRequired),
    )
)]
pub(crate) async fn stream(
    State(app): State<AppState>,
    query: StreamQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    parts: Parts,
) -> Result<Response, Problem> {
    authorize(&app, &parts, query.token.as_deref()).await?;
    let filter = query.filter?;
    let upgrade = upgrade.map_err(|rejection| upgrade_problem(&parts, &rejection))?;
    // Only the channels of the wanted kinds: a client of alarms is not woken by every
    // telemetry write, nor dropped for falling behind them. A client of a few devices
    // gets only the telemetry batches that hold them.
    let hub = app.platform.events();
    let events = match &filter.devices {
        Some(devices) => {
            let devices: Vec<Arc<str>> = devices.iter().map(|id| Arc::from(id.as_str())).collect();
            hub.subscribe_to_devices(filter.kinds, &devices)
        }
        None => hub.subscribe(filter.kinds),
    };
    Ok(upgrade.on_upgrade(move |socket| serve(socket, events, filter)))
}

/// Why a request is not a WebSocket handshake, as a problem: 426 with `Upgrade:
/// websocket` for a plain HTTP request (one that asks for no upgrade, such as `curl`'s),
/// axum's own status (400 for a malformed handshake, 405 for a method other than GET)
/// otherwise.
fn upgrade_problem(parts: &Parts, rejection: &WebSocketUpgradeRejection) -> Problem {
    let asks_for_websocket = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("websocket"));
    if asks_for_websocket {
        return Problem::with_status(rejection.status(), rejection.body_text());
    }
    Problem::upgrade_required(
        "this is a WebSocket endpoint: connect with a WebSocket client (the request needs \
         `Connection: Upgrade` and `Upgrade: websocket`)",
    )
}

/// A viewer token from the header, else from `?token=`.
async fn authorize(app: &AppState, parts: &Parts, token: Option<&str>) -> Result<(), Problem> {
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = header.or(token) else {
        return Err(Problem::unauthorized(
            "missing API token: send `Authorization: Bearer <token>` or ?token=",
        ));
    };
    let token = app
        .platform
        .authenticate_token(token)
        .await?
        .ok_or_else(|| Problem::unauthorized("the API token is unknown or revoked"))?;
    if token.role < Role::Viewer {
        return Err(Problem::forbidden("this needs the viewer role"));
    }
    Ok(())
}

async fn serve(socket: WebSocket, mut events: Subscription, filter: Filter) {
    let (mut sink, mut incoming) = socket.split();
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    let mut out = Vec::new();
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    render(&event, &filter, &mut out);
                    for text in out.drain(..) {
                        if sink.send(Message::Text(Utf8Bytes::from(text))).await.is_err() {
                            return;
                        }
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    let notice = format!("{{\"kind\":\"lag\",\"missed\":{missed}}}");
                    let _ = sink.send(Message::Text(Utf8Bytes::from(notice))).await;
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: 1008,
                            reason: Utf8Bytes::from_static("too slow: events were dropped"),
                        })))
                        .await;
                    return;
                }
                Err(RecvError::Closed) => {
                    let _ = sink.send(Message::Close(None)).await;
                    return;
                }
            },
            message = incoming.next() => match message {
                // Pings are answered by the library; anything else from the client is
                // ignored, until it closes.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The JSON messages of one event for this client (a telemetry batch gives one message
/// per device and timestamp).
fn render(event: &Event, filter: &Filter, out: &mut Vec<String>) {
    match event {
        Event::Telemetry(batch) if filter.kinds.telemetry => {
            for row in batch.rows() {
                if !filter.wants_device(row.device) {
                    continue;
                }
                let mut text = String::with_capacity(64 + row.device.len());
                text.push_str("{\"kind\":\"telemetry\",\"device_id\":");
                push_json_string(&mut text, row.device);
                let _ = write!(text, ",\"ts\":{},\"fields\":{{", row.timestamp.as_millis());
                for (index, (field, value)) in row.fields().enumerate() {
                    if index > 0 {
                        text.push(',');
                    }
                    push_json_string(&mut text, field);
                    if value.is_finite() {
                        let _ = write!(text, ":{value}");
                    } else {
                        text.push_str(":null");
                    }
                }
                text.push_str("}}");
                out.push(text);
            }
        }
        Event::Presence { device, online, at }
            if filter.kinds.presence && filter.wants_device(device) =>
        {
            let mut text = String::from("{\"kind\":\"presence\",\"device_id\":");
            push_json_string(&mut text, device);
            let _ = write!(text, ",\"online\":{online},\"ts\":{}}}", at.as_millis());
            out.push(text);
        }
        Event::Alarm(alarm)
            if filter.kinds.alarm && filter.wants_device(alarm.device_id.as_str()) =>
        {
            let body = serde_json::json!({
                "kind": "alarm",
                "device_id": alarm.device_id.as_str(),
                "alarm": AlarmBody::from(&**alarm),
            });
            out.push(body.to_string());
        }
        Event::Command(command)
            if filter.kinds.command && filter.wants_device(command.device_id.as_str()) =>
        {
            let body = serde_json::json!({
                "kind": "command",
                "device_id": command.device_id.as_str(),
                "command": CommandBody::from(&**command),
            });
            out.push(body.to_string());
        }
        _ => {}
    }
}

fn push_json_string(out: &mut String, text: &str) {
    match serde_json::to_string(text) {
        Ok(quoted) => out.push_str(&quoted),
        Err(_) => out.push_str("\"\""),
    }
}
