//! `POST /api/v2/write`: the InfluxDB v2 write endpoint, so that Telegraf (its
//! `influxdb_v2` output), InfluxDB client libraries and scripts can write to Fleetwire.
//!
//! What InfluxDB clients send and Fleetwire accepts: line protocol in the body, gzip'd or
//! not (`Content-Encoding: gzip`, Telegraf's default), `precision` `ns` (default), `us`,
//! `ms` or `s`, `bucket` and `org` (accepted and ignored: one platform, one namespace),
//! and the token as `Authorization: Token <token>` (InfluxDB's scheme) or `Bearer`.
//! A device is the `device` tag of a line, else its measurement; a field is a series.
//! The whole body is written or none of it: a malformed line answers 400 naming its
//! number. Success is 204 No Content, as InfluxDB answers.

use std::io::Read as _;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleetwire_model::Role;
use fleetwire_platform::Precision;

use crate::AppState;
use crate::problem::{Problem, RawBody};

/// Largest body, compressed or not, and largest decompressed body.
pub(crate) const WRITE_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// The write's query.
pub(crate) struct WriteQuery {
    precision: Precision,
}

impl<S: Send + Sync> FromRequestParts<S> for WriteQuery {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Problem> {
        let mut precision = Precision::Nanoseconds;
        let text = parts.uri.query().unwrap_or_default();
        for (name, value) in form_urlencoded::parse(text.as_bytes()) {
            match &*name {
                "precision" => {
                    precision = value
                        .parse::<Precision>()
                        .map_err(|error| Problem::bad_request(format!("precision: {error}")))?;
                }
                // One namespace: buckets and organisations are accepted and ignored.
                "bucket" | "org" | "orgID" => {}
                other => {
                    return Err(Problem::bad_request(format!(
                        "unknown query parameter {other:?}: expected bucket, org or precision"
                    )));
                }
            }
        }
        Ok(WriteQuery { precision })
    }
}

/// An API token with the operator role, sent as `Token <token>` (InfluxDB) or
/// `Bearer <token>`.
pub(crate) struct InfluxToken;

impl FromRequestParts<AppState> for InfluxToken {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| {
                Problem::unauthorized(
                    "missing API token: send the header `Authorization: Token <token>`",
                )
            })?;
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| {
                scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer")
            })
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                Problem::unauthorized("expected the header `Authorization: Token <token>`")
            })?;
        let token = state
            .platform
            .authenticate_token(token)
            .await?
            .ok_or_else(|| Problem::unauthorized("the API token is unknown or revoked"))?;
        if token.role < Role::Operator {
            return Err(Problem::forbidden(format!(
                "writing needs the operator role; the token {:?} has the {} role",
                token.name,
                token.role.as_str()
            )));
        }
        Ok(InfluxToken)
    }
}

/// Writes InfluxDB line protocol (what Telegraf's `influxdb_v2` output sends).
#[utoipa::path(
    post,
    path = "/api/v2/write",
    operation_id = "write_line_protocol",
    tag = "influxdb",
    params(
        ("bucket" = Option<String>, Query, description = "Accepted and ignored"),
        ("org" = Option<String>, Query, description = "Accepted and ignored"),
        ("precision" = inline(Option<crate::constraints::PrecisionName>), Query, description = "ns (default), us, ms or s"),
    ),
    request_body(content = Option<String>, content_type = "text/plain",
        description = "Lines of InfluxDB line protocol; an empty body writes nothing",
        example = "cpu,host=h1,device=d42 usage_user=12.5,usage_idle=84.25 1714566896000000000"),
    responses(
        (status = 204, description = "Every point was written"),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 503, response = crate::openapi::Unavailable),
    )
)]
pub(crate) async fn write(
    _: InfluxToken,
    State(app): State<AppState>,
    query: WriteQuery,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, Problem> {
    let body = decoded(&headers, body)?;
    let report = app
        .platform
        .ingest_line_protocol(&body, query.precision)
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    if report.skipped_string_fields > 0 {
        // Not an error (Telegraf's inputs carry string fields), but not silent either.
        if let Ok(value) = HeaderValue::try_from(report.skipped_string_fields.to_string()) {
            response
                .headers_mut()
                .insert("x-fleetwire-skipped-string-fields", value);
        }
    }
    Ok(response)
}

/// The body, gunzipped when it says it is gzip'd; at most [`WRITE_BODY_LIMIT`] bytes.
fn decoded(headers: &HeaderMap, body: Bytes) -> Result<Bytes, Problem> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .unwrap_or("identity");
    if encoding.eq_ignore_ascii_case("identity") || encoding.is_empty() {
        return Ok(body);
    }
    if !encoding.eq_ignore_ascii_case("gzip") {
        return Err(Problem::with_status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding {encoding:?}: expected gzip or identity"),
        ));
    }
    let mut plain = Vec::with_capacity(body.len() * 4);
    let read = flate2::read::GzDecoder::new(&body[..])
        .take(WRITE_BODY_LIMIT as u64 + 1)
        .read_to_end(&mut plain);
    match read {
        Ok(length) if length > WRITE_BODY_LIMIT => Err(Problem::with_status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the decompressed body is larger than the limit of {WRITE_BODY_LIMIT} bytes"),
        )),
        Ok(_) => Ok(Bytes::from(plain)),
        Err(error) => Err(Problem::bad_request(format!(
            "the body is not valid gzip: {error}"
        ))),
    }
}
