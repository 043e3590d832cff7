//! Fleetwire's HTTP front-end: the REST API under `/api/v1` (devices, their MQTT
//! credentials and pinned client certificates, API tokens, telemetry, rules, alarms, commands, the WebSocket live
//! stream), InfluxDB v2 writes at `/api/v2/write`, its OpenAPI document at
//! `/api/openapi.json`, liveness (`/healthz`), readiness (`/readyz`) and Prometheus
//! metrics (`/metrics`).
//!
//! Only this crate knows HTTP and JSON: it goes through the platform's façade for
//! everything (it depends on no registry, store or broker) and maps the model's types to
//! JSON bodies. Every error is
//! `application/problem+json`; every `/api/v1` request needs `Authorization: Bearer
//! <token>` with a role high enough for it (viewer reads, operator manages devices,
//! admin manages tokens).
//!
//! ```no_run
//! # async fn run(platform: fleetwire_platform::Platform) -> std::io::Result<()> {
//! let state = fleetwire_api::ApiState { platform, metrics: Vec::new() };
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, fleetwire_api::router(state)).await
//! # }
//! ```

mod alarms;
mod auth;
mod certificates;
mod commands;
mod constraints;
mod devices;
mod influx;
mod metrics;
mod openapi;
mod overview;
mod params;
mod problem;
mod rules;
mod stream;
mod telemetry;
mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use fleetwire_platform::Platform;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::metrics::HttpMetrics;

/// Largest request body accepted, in bytes (larger ones get a 413).
pub(crate) const BODY_LIMIT: usize = 64 * 1024;

/// What the HTTP API serves: the platform (devices, tokens, telemetry, rules, alarms,
/// commands, events, counters, readiness).
#[derive(Clone)]
pub struct ApiState {
    /// The running platform.
    pub platform: Platform,
    /// More counters for `/metrics`, from parts of the node the platform does not own
    /// (the TLS listeners).
    pub metrics: Vec<Arc<dyn MetricsSource>>,
}

/// Something that adds counters and gauges to `/metrics`.
pub trait MetricsSource: Send + Sync + 'static {
    /// The samples of this moment.
    fn samples(&self) -> Vec<Sample>;
}

/// One Prometheus sample without labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// The metric's name (`fleetwire_...`; counters end in `_total`).
    pub name: &'static str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    /// One line saying what it counts.
    pub help: &'static str,
    /// The value.
    pub value: u64,
}

/// The state handlers share: the caller's [`ApiState`] plus what the router builds
/// once (the HTTP metrics table, the serialized OpenAPI document).
pub(crate) struct App {
    platform: Platform,
    extra_metrics: Vec<Arc<dyn MetricsSource>>,
    http_metrics: HttpMetrics,
    openapi_json: Bytes,
}

/// One `Arc` to clone per request.
pub(crate) type AppState = Arc<App>;

pub use rules::rule_from_document;

/// The HTTP routes, over a running platform.
pub fn router(state: ApiState) -> Router {
    let (router, document) = routes().split_for_parts();
    let document = finished(document);
    let templates = document.paths.paths.keys().map(String::as_str);
    let app = Arc::new(App {
        http_metrics: HttpMetrics::new(templates),
        openapi_json: Bytes::from(document.to_json().unwrap_or_default()),
        platform: state.platform,
        extra_metrics: state.metrics,
    });
    router
        .method_not_allowed_fallback(problem::method_not_allowed)
        .fallback(problem::unknown_route)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            metrics::track,
        ))
        .with_state(app)
}

/// Every route, each registered with its OpenAPI description.
fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(prometheus_metrics))
        .routes(routes!(serve_openapi))
        .routes(routes!(devices::list_devices, devices::create_device))
        .routes(routes!(
            devices::get_device,
            devices::update_device,
            devices::delete_device
        ))
        .routes(routes!(devices::issue_credentials))
        .routes(routes!(
            certificates::list_certificates,
            certificates::pin_certificate
        ))
        .routes(routes!(certificates::unpin_certificate))
        .routes(routes!(tokens::list_tokens, tokens::create_token))
        .routes(routes!(tokens::revoke_token))
        .routes(routes!(telemetry::latest))
        .routes(routes!(telemetry::query))
        .routes(with_body_limit(
            routes!(telemetry::write),
            telemetry::TELEMETRY_BODY_LIMIT,
        ))
        .routes(with_body_limit(
            routes!(influx::write),
            influx::WRITE_BODY_LIMIT,
        ))
        .routes(routes!(rules::list_rules, rules::create_rule))
        .routes(routes!(
            rules::get_rule,
            rules::replace_rule,
            rules::delete_rule
        ))
        .routes(routes!(alarms::list_alarms))
        .routes(routes!(alarms::get_alarm))
        .routes(routes!(alarms::acknowledge_alarm))
        .routes(routes!(alarms::clear_alarm))
        .routes(routes!(commands::list_commands, commands::send_command))
        .routes(routes!(commands::get_command))
        .routes(routes!(overview::overview))
        .routes(routes!(stream::stream))
}

/// Routes that take larger bodies than the default 64 KiB (telemetry batches, line
/// protocol from collectors).
fn with_body_limit(
    (schemas, paths, method_router): utoipa_axum::router::UtoipaMethodRouter<AppState>,
    limit: usize,
) -> utoipa_axum::router::UtoipaMethodRouter<AppState> {
    (
        schemas,
        paths,
        method_router.layer(DefaultBodyLimit::max(limit)),
    )
}

fn finished(mut document: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    openapi::finish(&mut document);
    document
}

/// The OpenAPI document of every route, as the router serves it at
/// `/api/openapi.json`.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    finished(routes().split_for_parts().1)
}

/// The process is alive and serving HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "Alive", body = String, content_type = "text/plain"))
)]
async fn healthz() -> &'static str {
    "ok\n"
}

/// The broker accepts connections (it stops being ready once shutdown begins).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = String, content_type = "text/plain"),
        (status = 503, description = "Shutting down", body = String, content_type = "text/plain"),
    )
)]
async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    if app.platform.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    }
}

/// Prometheus metrics: MQTT counters, HTTP request counts and latency histograms.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String,
        content_type = "text/plain; version=0.0.4"))
)]
async fn prometheus_metrics(State(app): State<AppState>) -> impl IntoResponse {
    let body = metrics::render(&app.platform.stats(), &app.http_metrics, &app.extra_metrics);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object))
)]
async fn serve_openapi(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        app.openapi_json.clone(),
    )
}
