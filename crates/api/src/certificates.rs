//! `/api/v1/devices/{id}/certificates`: the TLS client certificates pinned to a device.
//! A device with pinned certificates logs in over MQTT with a certificate only with one of
//! them; without any, with every certificate the client CA issued for it. Pinning and
//! unpinning disconnect the device (the platform does it).

use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use fleetwire_model::{DeviceId, Fingerprint, PinnedCertificate};
use fleetwire_time::rfc3339;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{Authorized, Operator, Viewer};
use crate::constraints::{CertificatePem, FingerprintText, PlainId};
use crate::devices::DevicePath;
use crate::problem::{Json, Problem};

/// A certificate pinned to a device, as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = PinnedCertificate)]
pub(crate) struct CertificateBody {
    /// The SHA-256 of the certificate's DER, as 64 lowercase hex digits.
    #[schema(example = "3f0c1a9e5b7d2c4e6f8a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e")]
    fingerprint: String,
    /// The subject's common name (the device id).
    #[schema(example = "sensor-0001")]
    common_name: Option<String>,
    /// When the certificate stops being valid (RFC 3339).
    #[schema(example = "2027-05-01T12:00:00.000Z")]
    not_after: Option<String>,
    /// When it was pinned (RFC 3339).
    #[schema(example = "2026-05-01T12:34:56.789Z")]
    added_at: String,
}

impl From<PinnedCertificate> for CertificateBody {
    fn from(pinned: PinnedCertificate) -> CertificateBody {
        CertificateBody {
            fingerprint: pinned.fingerprint.to_string(),
            common_name: pinned.common_name,
            not_after: pinned.not_after.map(rfc3339),
            added_at: rfc3339(pinned.added_at),
        }
    }
}

/// What `POST /api/v1/devices/{id}/certificates` takes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewPinnedCertificate)]
pub(crate) struct PinCertificate {
    /// One X.509 certificate in PEM (`-----BEGIN CERTIFICATE-----` ...), whose subject's
    /// common name is the device id. Other PEM sections (a key) are ignored.
    #[schema(value_type = CertificatePem, inline)]
    pem: String,
}

/// The certificates pinned to a device (one page: `next_cursor` is always `null`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = PinnedCertificatePage)]
pub(crate) struct CertificatePage {
    /// The pinned certificates, oldest first.
    items: Vec<CertificateBody>,
    /// Always `null`: a device's certificates fit in one page.
    next_cursor: Option<String>,
}

/// The device id and certificate fingerprint of the path, validated: 400 when either
/// breaks its syntax.
pub(crate) struct CertificatePath(DeviceId, Fingerprint);

impl<S: Send + Sync> FromRequestParts<S> for CertificatePath {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Path((device, fingerprint)) =
            Path::<(String, String)>::from_request_parts(parts, state)
                .await
                .map_err(|rejection| Problem::bad_request(rejection.body_text()))?;
        let device =
            DeviceId::new(device).map_err(|error| Problem::bad_request(error.to_string()))?;
        let fingerprint = Fingerprint::parse(&fingerprint)
            .map_err(|error| Problem::bad_request(error.to_string()))?;
        Ok(CertificatePath(device, fingerprint))
    }
}

/// Pins a client certificate to a device: from then on the device logs in with a
/// certificate only with one of its pinned ones. The device is disconnected (it
/// reconnects with a certificate that is pinned). Pinning a certificate again changes
/// nothing and answers 200.
#[utoipa::path(
    post,
    path = "/api/v1/devices/{id}/certificates",
    tag = "devices",
    params(("id" = inline(PlainId), Path, description = "Device id")),
    request_body = PinCertificate,
    responses(
        (status = 201, description = "The certificate was pinned", body = CertificateBody),
        (status = 200, description = "The certificate was pinned already; nothing changed",
            body = CertificateBody),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
        (status = 413, response = crate::openapi::PayloadTooLarge),
        (status = 415, response = crate::openapi::UnsupportedMediaType),
        (status = 422, response = crate::openapi::ValidationFailed),
    )
)]
pub(crate) async fn pin_certificate(
    caller: Authorized<Operator>,
    State(app): State<AppState>,
    DevicePath(id): DevicePath,
    Json(body): Json<PinCertificate>,
) -> Result<(StatusCode, axum::Json<CertificateBody>), Problem> {
    let (pinned, created) = app.platform.pin_certificate(&id, &body.pem).await?;
    let status = if created {
        tracing::info!(
            device = %id,
            fingerprint = %pinned.fingerprint,
            by = %caller.token.name,
            "device certificate pinned"
        );
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(CertificateBody::from(pinned))))
}

/// Lists the certificates pinned to a device, oldest first (none: any certificate the
/// client CA issued for it logs it in).
#[utoipa::path(
    get,
    path = "/api/v1/devices/{id}/certificates",
    tag = "devices",
    params(("id" = inline(PlainId), Path, description = "Device id")),
    responses(
        (status = 200, description = "The pinned certificates", body = CertificatePage),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
pub(crate) async fn list_certificates(
    _: Authorized<Viewer>,
    State(app): State<AppState>,
    DevicePath(id): DevicePath,
) -> Result<axum::Json<CertificatePage>, Problem> {
    let pinned = app.platform.certificates(&id).await?;
    Ok(axum::Json(CertificatePage {
        items: pinned.into_iter().map(CertificateBody::from).collect(),
        next_cursor: None,
    }))
}

/// Unpins a certificate and disconnects the device, so that a connection made with it
/// does not stay. The fingerprint is the SHA-256 as hex, in either case, with or without
/// `:` between pairs.
#[utoipa::path(
    delete,
    path = "/api/v1/devices/{id}/certificates/{fingerprint}",
    tag = "devices",
    params(
        ("id" = inline(PlainId), Path, description = "Device id"),
        ("fingerprint" = inline(FingerprintText), Path,
            description = "The certificate's SHA-256 fingerprint"),
    ),
    responses(
        (status = 204, description = "The certificate was unpinned"),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 404, response = crate::openapi::NotFound),
    )
)]
pub(crate) async fn unpin_certificate(
    caller: Authorized<Operator>,
    State(app): State<AppState>,
    CertificatePath(id, fingerprint): CertificatePath,
) -> Result<StatusCode, Problem> {
    app.platform.unpin_certificate(&id, &fingerprint).await?;
    tracing::info!(
        device = %id,
        %fingerprint,
        by = %caller.token.name,
        "device certificate unpinned"
    );
    Ok(StatusCode::NO_CONTENT)
}
